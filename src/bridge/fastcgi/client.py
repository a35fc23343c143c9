"""Kept for code written against 0.1's docs: the FastCGI client is :mod:`bridge.upstream.fastcgi`."""
from bridge.upstream.fastcgi import Backend, FastCGIApp, parse_address

__all__ = ["FastCGIApp", "Backend", "parse_address"]
