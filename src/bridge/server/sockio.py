"""Reading what a connection's peer has sent, without waiting for more.

Accepted sockets stay in blocking mode with a timeout (``io_timeout``) for
the app's sends and body reads.  Handlers read what is available *now* with
:func:`recv_available` / :func:`recv_available_into`, not with
``sock.recv(n, MSG_DONTWAIT)``: on a socket with a timeout CPython polls for
readability *before* calling recv(), so that call waits for the whole
timeout when nothing has arrived.  A socket with a timeout is O_NONBLOCK at
the OS level, so a plain read(2) on its descriptor returns at once.
"""
from __future__ import annotations

import os
import socket

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional

__all__ = ["NO_TIMEOUT", "recv_available", "recv_available_into"]

_os_read = os.read
_os_readv = os.readv

#: Stands for "no limit" on sockets: the descriptor must stay O_NONBLOCK (see
#: recv_available), which settimeout(None) would undo.
NO_TIMEOUT = 365 * 24 * 3600.0


def recv_available(sock: socket.socket, bufsize: int = 65536) -> Optional[bytes]:
    """What the peer has sent, without waiting: data, ``b""`` at EOF, ``None`` if nothing yet.

    Raises ``OSError`` (e.g. ``ConnectionResetError``) when the connection broke.
    """
    if _is_tls(sock):
        return _tls_recv(sock, bufsize)
    try:
        return _os_read(sock.fileno(), bufsize)
    except BlockingIOError:
        return None


def recv_available_into(sock: socket.socket, buffer) -> Optional[int]:
    """Like :func:`recv_available` into a writable buffer: bytes read, 0 at EOF, ``None`` if nothing."""
    if _is_tls(sock):
        data = _tls_recv(sock, len(buffer))
        if data is None:
            return None
        buffer[:len(data)] = data
        return len(data)
    try:
        return _os_readv(sock.fileno(), (buffer,))
    except BlockingIOError:
        return None


def _is_tls(sock) -> bool:
    return type(sock) is not socket.socket and hasattr(sock, "pending")


def _tls_recv(sock, bufsize: int) -> Optional[bytes]:
    import ssl
    timeout = sock.gettimeout()
    sock.settimeout(0.0)
    try:
        return sock.recv(bufsize)
    except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
        return None
    finally:
        sock.settimeout(timeout)
