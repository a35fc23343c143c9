"""Whether fd 0 is a listening socket: how a FastCGI program knows it was started as one.

FastCGI 1.0 §2.2: the web server (mod_fcgid, spawn-fcgi) starts the program
with its listening socket as fd 0.  :func:`bridge.run` asks on every start,
CGI requests included, so this module imports only what the interpreter has
loaded already (``os``, ``stat``), and ``_socket`` once fd 0 is a socket at
all: not ``socket``, which costs ~5 ms (enum, selectors), since under
mod_cgid fd 0 of every CGI request is a (connected) socket.
:mod:`bridge.server.listeners` asks the same question.
"""
import os
import stat

__all__ = ["fd0_is_listening_socket"]


def fd0_is_listening_socket() -> bool:
    """True when fd 0 is a listening socket (the FastCGI convention, spec §2.2)."""
    try:
        if not stat.S_ISSOCK(os.fstat(0).st_mode):
            return False
    except OSError:
        return False
    import _socket   # lazy, CGI path: a C extension, loaded only when fd 0 is a socket
    try:
        s = _socket.socket(fileno=os.dup(0))
    except OSError:
        return False
    try:
        return s.type == _socket.SOCK_STREAM and bool(s.getsockopt(_socket.SOL_SOCKET, _socket.SO_ACCEPTCONN))
    except OSError:
        return False
    finally:
        s.close()
