"""What ``bridge http`` opens before any worker exists: the TLS key and the access log.

With ``--user``, the workers switch users before they build their
connection factory.  A root-only key (mode 0600, the normal case) or a
root-owned access log would then fail in every worker, again and again
(issue 21, item 7).  So the master, still root, reads the certificate and key
into an ``ssl.SSLContext`` and opens the access log once; the workers inherit
both through ``fork``, as nginx's and gunicorn's do.  The master calls
:func:`prepare` again on SIGHUP, so a renewed certificate is picked up by the
next generation of workers.

The master's copy of the access log is also what it reopens (as root) on
SIGUSR1, handing the new file to the workers' user so that each worker can
then reopen it too (see :mod:`bridge.server.logs`).
"""
from __future__ import annotations

import ssl

from bridge.http.accesslog import AccessLog
from bridge.http.tls import make_context
from bridge.server.logs import forget_reopen, on_reopen

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional

__all__ = ["Prepared", "prepare"]


class Prepared:
    """The TLS context and access log of one configuration, opened once."""

    def __init__(self, tls_context: Optional[ssl.SSLContext], access_log: Optional[AccessLog]) -> None:
        self.tls_context = tls_context
        self.access_log = access_log

    def close(self) -> None:
        """Drop this process's copy (the master, once a newer set replaced it)."""
        if self.access_log is not None:
            forget_reopen(self.access_log.reopen)
            self.access_log.close()
            self.access_log = None


def prepare(config) -> Prepared:
    """Open what ``config`` names; ``ValueError`` (one line) when a file cannot be used."""
    tls_context = None
    certfile = getattr(config, "certfile", None)
    if certfile:
        tls_context = make_context(certfile, getattr(config, "keyfile", None),
                                   getattr(config, "ca_certs", None))
    access_log = None
    if getattr(config, "access_log", None):
        try:
            access_log = AccessLog(config.access_log, getattr(config, "access_log_format", None))
        except OSError as exc:
            raise ValueError(f"cannot open --access-log {config.access_log!r}: "
                             f"{exc.strerror or exc}") from None
        on_reopen(access_log.reopen)
    return Prepared(tls_context, access_log)
