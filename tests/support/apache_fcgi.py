"""The FastCGI tests' way to start a private Apache (mod_proxy_fcgi, mod_fcgid).

A thin adapter over :func:`support.apache.start_apache` (the one Apache
launcher): ``start_apache(body, port, modules)`` with the site config
``body`` read from a file under apache/ (``support.nginx.include_file``).
"""
from __future__ import annotations

from pathlib import Path

from support import apache


def start_apache(body: str, port: int, modules: list, *, directory: Path | None = None,
                 log_level: str = "warn") -> apache.Apache:
    """Apache with ``modules`` (names like ``proxy_fcgi``) and ``body`` as its site config."""
    return apache.start_apache(body, port=port, modules=("authn_core", *modules),
                               directory=directory, log_level=log_level)
