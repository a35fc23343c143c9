"""Listening sockets: from ``--bind``, from systemd, or inherited on fd 0.

Every way a FastCGI or HTTP server gets its socket ends here, as a
:class:`Listener`:

* ``unix:/run/app.sock`` -- a unix socket, made with ``--socket-mode``.  A
  socket file left by a dead server (nobody answers a connect) is replaced;
  a live one, or any file that is not a socket, is refused.
* ``127.0.0.1:8000``, ``0.0.0.0:8000``, ``[::1]:8000``, ``[::]:8000``,
  ``localhost:8000`` (every address the name resolves to), ``8000``
  (loopback only: exposing a port to the network should be a choice).
* ``fd://N`` -- a socket already open on file descriptor N.
* systemd socket activation (``LISTEN_FDS``/``LISTEN_PID``, fds from 3,
  sd_listen_fds(3)), else a listening socket on fd 0: the FastCGI
  convention (FastCGI 1.0 §2.2) used by spawn-fcgi and mod_fcgid.

Errors are :class:`BindError` with a message naming the bind and what to do.
"""
from __future__ import annotations

import errno
import os
import socket
import stat

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Iterable, Optional

__all__ = ["BindError", "Listener", "open_listeners", "inherited_listeners",
           "listeners_for", "parse_bind", "NO_SOCKET_MESSAGE", "access_report"]

#: sd_listen_fds(3): passed descriptors start at 3.
SD_LISTEN_FDS_START = 3

NO_SOCKET_MESSAGE = (
    "no socket to listen on: use --bind unix:/run/app.sock or --bind 127.0.0.1:9000, "
    "or run under spawn-fcgi, mod_fcgid or systemd socket activation "
    "(which pass a listening socket)")


class BindError(Exception):
    """A listening socket could not be opened; the message says which and why."""


class Listener:
    """One listening socket and how to print it.

    ``kind`` is ``"unix"`` or ``"tcp"``; ``name`` is ``"127.0.0.1:8000"``,
    ``"[::1]:8000"`` or ``"unix:/path"``.  ``close()`` unlinks a unix socket
    file this process created (never one it inherited).
    """

    __slots__ = ("sock", "kind", "name", "path", "owned", "inherited")

    def __init__(self, sock: socket.socket, kind: str, name: str, *,
                 path: Optional[str] = None, owned: bool = False, inherited: bool = False) -> None:
        self.sock = sock
        self.kind = kind
        self.name = name
        self.path = path
        self.owned = owned
        self.inherited = inherited

    def fileno(self) -> int:
        return self.sock.fileno()

    def url(self, scheme: str = "http") -> str:
        """``http://127.0.0.1:8000`` for TCP, ``unix:/path`` for a unix socket."""
        return self.name if self.kind == "unix" else f"{scheme}://{self.name}"

    def close(self, unlink: bool = True) -> None:
        """Close the socket; remove its file when this process made it and ``unlink``."""
        try:
            self.sock.close()
        finally:
            if unlink and self.owned and self.path:
                self.owned = False
                try:
                    os.unlink(self.path)
                except OSError:
                    pass

    def __repr__(self) -> str:
        return f"<Listener {self.name}>"


def parse_bind(bind: str) -> tuple:
    """``("unix", path)``, ``("tcp", host, port)`` or ``("fd", n)``; BindError if malformed."""
    raw = bind.strip()
    if raw.startswith("unix:"):
        path = raw[5:]
        if path.startswith("//"):          # unix:///run/app.sock
            path = path[2:]
        if not path:
            raise BindError(f"--bind {bind!r}: unix: needs a path, e.g. unix:/run/app.sock")
        return ("unix", os.path.abspath(path))
    if raw.startswith("/"):
        return ("unix", raw)
    if raw.startswith("fd://"):
        try:
            fd = int(raw[5:])
        except ValueError:
            raise BindError(f"--bind {bind!r}: fd:// needs a file descriptor number, e.g. fd://3") from None
        if fd < 0:
            raise BindError(f"--bind {bind!r}: file descriptor must not be negative")
        return ("fd", fd)
    for prefix in ("tcp://", "http://"):
        if raw.startswith(prefix):
            raw = raw[len(prefix):]
    if raw.startswith("["):
        host, sep, rest = raw[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise BindError(f"--bind {bind!r}: an IPv6 address is written [::1]:8000")
        port_text = rest[1:] if rest else ""
    elif raw.count(":") > 1:
        raise BindError(f"--bind {bind!r}: put an IPv6 address in brackets, e.g. [{raw}]:8000")
    elif ":" in raw:
        host, _, port_text = raw.partition(":")
    elif raw.isdigit():
        host, port_text = "127.0.0.1", raw
    else:
        host, port_text = raw, ""
    if not port_text:
        raise BindError(f"--bind {bind!r}: no port (write HOST:PORT, e.g. 127.0.0.1:8000)")
    try:
        port = int(port_text)
    except ValueError:
        raise BindError(f"--bind {bind!r}: port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise BindError(f"--bind {bind!r}: port {port} is out of range 0-65535")
    return ("tcp", host or "0.0.0.0", port)


def open_listeners(binds: Iterable[str], *, socket_mode: Optional[int] = None,
                   backlog: int = 2048) -> list:
    """Open every bind; on any failure close those already opened and raise BindError."""
    parsed = [(b, parse_bind(b)) for b in binds]
    v4_ports = {p[2] for _, p in parsed if p[0] == "tcp" and ":" not in p[1]}
    opened: list = []
    try:
        for bind, spec in parsed:
            if spec[0] == "unix":
                opened.append(_open_unix(bind, spec[1], socket_mode, backlog))
            elif spec[0] == "fd":
                opened.append(_from_fd(spec[1], backlog, source=f"--bind {bind}"))
            else:
                # [::]:P and 0.0.0.0:P together: the v6 one must be v6-only, or
                # the second bind fails with "address in use" (dual stack).
                opened.extend(_open_tcp(bind, spec[1], spec[2], backlog,
                                        v6only=spec[2] in v4_ports))
    except BaseException:
        for listener in opened:
            listener.close()
        raise
    return opened


def _open_unix(bind: str, path: str, mode: Optional[int], backlog: int) -> Listener:
    _remove_stale_socket(bind, path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            sock.bind(path)
        except OSError as exc:
            raise BindError(_explain(bind, exc)) from None
        try:
            if mode is not None:
                # Before listen(): nobody can connect while the mode is still the umask's.
                set_socket_file(path, mode=mode)
            sock.listen(backlog)
        except OSError as exc:
            os.unlink(path)
            raise BindError(_explain(bind, exc)) from None
    except BaseException:
        sock.close()
        raise
    return Listener(sock, "unix", "unix:" + path, path=path, owned=True)


def set_socket_file(path: str, *, mode: Optional[int] = None, uid: int = -1, gid: int = -1) -> None:
    """chmod/chown the socket file at ``path``, never anything a link or a swap put there.

    The master is often root and the socket's directory may be writable by
    another user, who could replace the socket with a link to a root-only file
    between ``bind`` and ``chmod`` (issue 21, item 2).  ``fchmod`` on the
    socket's own descriptor does not reach the file on Linux, and there is
    no ``lchmod``; so the path is opened with ``O_PATH | O_NOFOLLOW``, the
    descriptor is checked to be a socket, and the change is made through
    ``/proc/self/fd/N``, which names exactly that inode.
    """
    fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            raise OSError(f"{path} is no longer the socket bridge made; refusing to change it")
        inode = f"/proc/self/fd/{fd}"
        if mode is not None:
            os.chmod(inode, mode)
        if uid != -1 or gid != -1:
            os.chown(inode, uid, gid)
    finally:
        os.close(fd)


def _remove_stale_socket(bind: str, path: str) -> None:
    """Replace a socket file nobody listens on; refuse anything else."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise BindError(_explain(bind, exc)) from None
    if not stat.S_ISSOCK(st.st_mode):
        raise BindError(f"--bind {bind}: {path} exists and is not a socket; "
                        f"refusing to replace it (remove it or choose another path)")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        try:
            os.unlink(path)            # stale: left by a server that died
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise BindError(f"--bind {bind}: cannot remove the stale socket {path}: "
                            f"{exc.strerror}") from None
        return
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.ETIMEDOUT) or isinstance(exc, socket.timeout):
            raise BindError(f"--bind {bind}: {path} is in use by a running server "
                            f"(its listen queue is full)") from None
        raise BindError(_explain(bind, exc)) from None
    finally:
        probe.close()
    raise BindError(f"--bind {bind}: {path} is in use by a running server "
                    f"(stop it, or choose another path)")


def _open_tcp(bind: str, host: str, port: int, backlog: int, v6only: bool = False) -> list:
    literal = _is_ip_literal(host)
    try:
        infos = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0,
                                   socket.AI_PASSIVE | (socket.AI_NUMERICHOST if literal else 0))
    except socket.gaierror as exc:
        raise BindError(f"--bind {bind}: cannot resolve {host!r}: {exc.strerror}") from None
    seen = set()
    listeners: list = []
    errors: list = []
    for family, type_, proto, _, addr in infos:
        key = (family, addr[0])
        if key in seen:
            continue
        seen.add(key)
        sock = socket.socket(family, type_, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY,
                                1 if (v6only or len(infos) > 1) else 0)
            if len(listeners) and port == 0:
                # localhost:0 -> the same kernel-chosen port on every address.
                addr = (addr[0], listeners[0].sock.getsockname()[1], *addr[2:])
            sock.bind(addr)
            sock.listen(backlog)
            _defer_accept(sock)
        except OSError as exc:
            sock.close()
            # "localhost" may resolve to ::1 on a host without IPv6: skip that one.
            if not literal and exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                errors.append(exc)
                continue
            for listener in listeners:
                listener.close()
            raise BindError(_explain(bind, exc)) from None
        listeners.append(Listener(sock, "tcp", _tcp_name(sock)))
    if not listeners:
        raise BindError(_explain(bind, errors[0]) if errors else f"--bind {bind}: no address")
    return listeners


def _defer_accept(sock: socket.socket) -> None:
    """Wake the accept loop only when the client has sent something (like nginx's ``deferred``).

    Both protocols are client-speaks-first, so a connection that sends
    nothing never costs the worker a thread; after the timeout the kernel
    hands it over anyway and the idle deadline applies.
    """
    opt = getattr(socket, "TCP_DEFER_ACCEPT", None)
    if opt is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, opt, 1)
        except OSError:
            pass


def _is_ip_literal(host: str) -> bool:
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
            return True
        except OSError:
            pass
    return False


def _tcp_name(sock: socket.socket) -> str:
    addr = sock.getsockname()
    if sock.family == socket.AF_INET6:
        return f"[{addr[0]}]:{addr[1]}"
    return f"{addr[0]}:{addr[1]}"


def _explain(bind: str, exc: OSError) -> str:
    hint = {
        errno.EADDRINUSE: " (another process listens there; stop it or choose another address)",
        errno.EACCES: " (permission denied: ports below 1024 need root, and a unix socket "
                      "needs a directory you may write to)",
        errno.EADDRNOTAVAIL: " (that address is not one of this machine's)",
        errno.ENOENT: " (the directory does not exist)",
    }.get(exc.errno, "")
    return f"--bind {bind}: {exc.strerror or exc}{hint}"


def _from_fd(fd: int, backlog: int, *, source: str, inherited: bool = False) -> Listener:
    """Adopt an open socket; listen on it if it is bound but not yet listening."""
    try:
        st = os.fstat(fd)
    except OSError as exc:
        raise BindError(f"{source}: file descriptor {fd} is not open ({exc.strerror})") from None
    if not stat.S_ISSOCK(st.st_mode):
        raise BindError(f"{source}: file descriptor {fd} is not a socket")
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise BindError(f"{source}: file descriptor {fd}: {exc.strerror}") from None
    if sock.type != socket.SOCK_STREAM:
        sock.detach()
        raise BindError(f"{source}: file descriptor {fd} is not a stream socket")
    if not _is_listening(sock):
        try:
            sock.listen(backlog)
        except OSError as exc:
            sock.detach()
            raise BindError(f"{source}: file descriptor {fd} is not a listening socket "
                            f"({exc.strerror})") from None
    return _describe(sock, inherited=inherited)


def _is_listening(sock: socket.socket) -> bool:
    try:
        return bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
    except OSError:
        return False


def _describe(sock: socket.socket, *, inherited: bool) -> Listener:
    if sock.family == socket.AF_UNIX:
        path = sock.getsockname()
        if isinstance(path, bytes):      # abstract namespace
            path = "@" + path[1:].decode("latin-1")
        return Listener(sock, "unix", f"unix:{path or '(unnamed)'}", path=path or None,
                        owned=False, inherited=inherited)
    return Listener(sock, "tcp", _tcp_name(sock), inherited=inherited)


def inherited_listeners(environ: Optional[dict] = None) -> list:
    """Sockets this process was started with: systemd's, else a listening fd 0, else []."""
    env = os.environ if environ is None else environ
    fds = env.get("LISTEN_FDS")
    if fds is not None and env.get("LISTEN_PID") == str(os.getpid()):
        # sd_listen_fds(3) with unset_environment=1: children must not take them too.
        for key in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
            env.pop(key, None)
        try:
            count = int(fds)
        except ValueError:
            raise BindError(f"LISTEN_FDS={fds!r} is not a number") from None
        result = []
        for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count):
            os.set_inheritable(fd, False)
            result.append(_from_fd(fd, 2048, source=f"systemd socket fd {fd}", inherited=True))
        return result
    if fd0_is_listening_socket():
        # Keep fd 0 itself pointing at the socket (as the convention expects) but
        # serve from a duplicate, so closing the listener never frees fd 0 for reuse.
        return [_from_fd(os.dup(0), 2048, source="fd 0", inherited=True)]
    return []


def fd0_is_listening_socket() -> bool:
    """True when fd 0 is a listening stream socket (spawn-fcgi, mod_fcgid), unix or inet."""
    from bridge import _fd0_is_listening_socket   # the one check, kept import-light for CGI
    return _fd0_is_listening_socket()


def listeners_for(binds: Iterable[str], *, socket_mode: Optional[int] = None,
                  backlog: int = 2048) -> list:
    """``--bind`` if given, else the inherited sockets, else BindError(:data:`NO_SOCKET_MESSAGE`).

    This replaces the bare ``accept()`` on fd 0 that fails with "Socket
    operation on non-socket" when a FastCGI program is run by hand.
    """
    binds = list(binds or ())
    if binds:
        return open_listeners(binds, socket_mode=socket_mode, backlog=backlog)
    inherited = inherited_listeners()
    if inherited:
        return inherited
    raise BindError(NO_SOCKET_MESSAGE)


# -- who may connect: said once at start-up ----------------------------------------

def access_report(listeners: Iterable[Listener], *, user: Optional[str] = None) -> list:
    """Start-up log lines, ``(level, text)``, saying who may connect to each unix socket.

    When nginx cannot open the socket it logs ``connect() ... failed (13:
    Permission denied)`` in *its* error log and answers 502; bridge never
    sees the attempt, so the one place bridge can help is here: the socket's
    mode and owner, and its directory's (a connect needs write permission on
    the socket and search permission on every directory above it), with
    what a web server's user needs when only the owner may connect.  And a
    root master with no ``--user`` runs the app as root: the socket is then
    root's, so a plain ``sudo bridge ... --group www-data`` serves the app
    with every privilege; that gets a warning.
    """
    lines = []
    unix = [listener for listener in listeners if listener.kind == "unix" and listener.path]
    for listener in unix:
        lines.append(_socket_access(listener.path))
    if unix and os.geteuid() == 0 and not user:
        lines.append(("warning", "running as root with a unix socket and no --user: the app runs "
                                 "as root; give it a user of its own (--user myproject) and the "
                                 "socket to the web server's group (--group www-data)"))
    return lines


#: The users web servers run as, in the order looked for (Debian/Ubuntu, Fedora/RHEL nginx,
#: Arch, RHEL httpd): the first one this machine has is the one the start-up line speaks of.
WEB_SERVER_USERS = ("www-data", "nginx", "http", "apache")


def _socket_access(path: str) -> tuple:
    directory = os.path.dirname(path) or "."
    try:
        st = os.stat(path)
        dst = os.stat(directory)
    except OSError as exc:
        return ("warning", f"unix:{path}: cannot read its mode and owner ({exc.strerror})")
    text = (f"unix:{path}: mode {stat.S_IMODE(st.st_mode):04o}, owner {_owner(st)}; "
            f"directory {directory}: mode {stat.S_IMODE(dst.st_mode):04o}, owner {_owner(dst)}")
    web = _web_server_user()
    if web is None:
        return ("info", text)
    refused = _connect_refused(path, web)
    if refused:
        return ("warning", f"{text}; {web.pw_name} (the web server's user) cannot connect: "
                           f"{refused}")
    return ("info", f"{text}; {web.pw_name} may connect")


def _web_server_user():
    import pwd
    for name in WEB_SERVER_USERS:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    return None


def _connect_refused(path: str, user) -> Optional[str]:
    """Why ``user`` would get EACCES connecting to the socket at ``path``, or None.

    connect(2) on a unix socket needs write permission on the socket file and
    search (x) permission on every directory above it (path_resolution(7)).
    """
    if user.pw_uid == 0:
        return None
    try:
        groups = set(os.getgrouplist(user.pw_name, user.pw_gid))
    except OSError:
        groups = {user.pw_gid}

    def allowed(st: os.stat_result, bit: int) -> bool:
        if st.st_uid == user.pw_uid:
            return bool(st.st_mode & (bit << 6))
        if st.st_gid in groups:
            return bool(st.st_mode & (bit << 3))
        return bool(st.st_mode & bit)

    directory = os.path.dirname(path)
    parents = []
    while directory and directory not in parents:
        parents.append(directory)
        directory = os.path.dirname(directory)
    for directory in reversed(parents):
        try:
            dst = os.stat(directory)
        except OSError:
            return None
        if not allowed(dst, 0o1):
            return (f"it may not enter {directory} (mode {stat.S_IMODE(dst.st_mode):04o}, owner "
                    f"{_owner(dst)}); put the socket in a directory it may enter "
                    f"(see docs/nginx.md, quick start)")
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not allowed(st, 0o2):
        return (f"the socket needs write permission for it: --socket-mode 0660 "
                f"--group {_group_name(user.pw_gid)}")
    return None


def _group_name(gid: int) -> str:
    import grp
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _owner(st: os.stat_result) -> str:
    """``user:group`` by name, or by number when there is no such entry."""
    import grp
    import pwd
    try:
        user = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        user = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return f"{user}:{group}"
