"""CGI with a warm app: the cgi-bin script relays its request to a per-app FastCGI daemon.

Plain CGI imports the app on every request (a small Flask app 229 ms, a
Django site 397 ms here).  With ``run(APP, warm=True)`` (or ``bridge cgi
--warm APP``) the script instead connects to a unix socket private to this
user, script and app, sends the CGI request as one FastCGI request (the
meta-variables as PARAMS, stdin as STDIN), copies STDOUT to its stdout
unchanged and STDERR to its stderr (Apache's error log), and exits.  The
daemon (:mod:`bridge.warm_daemon`, a ``bridge fcgi`` with the app loaded
once) is started by the first request that finds nobody listening, and
goes away by itself: after an idle time, or when the app's code or the
script changes (the next request starts a new one).

Correct first: when no daemon can be used (no private directory, no
permission to fork, the app fails to start there) the request is served in
this process as plain CGI, and the reason is logged once per
``RETRY_AFTER`` seconds, not per request.  A daemon that dies mid-request
gives that request a 502 (or cuts a response already started short).

The relay is every request's cost, so this module imports only ``os`` and
``sys`` (already loaded by the interpreter) and the C module ``_socket``
(``socket.py`` costs ~5 ms: enum, selectors); ``pwd`` only to find the home
directory, and :mod:`bridge.warm_start` (the lock, the double fork) only
when nobody listens.  FastCGI records are framed here, in a dozen lines,
because importing :mod:`bridge.fastcgi.protocol` costs more than the whole
relay (``__future__``, ``struct``, ``io`` and 900 lines to unmarshal); a
unit test checks the two agree byte for byte.

Nothing here relies on an environment variable suexec strips (HOME,
PYTHONPATH...): the directory comes from the uid's passwd entry, and the
daemon gets its settings on its command line.
"""
import os
import sys

import _socket

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Iterable, Mapping, Optional, Union

# FastCGI 1.0 §8: the record types and role the relay speaks.
VERSION_1 = 1
BEGIN_REQUEST = 1
END_REQUEST = 3
PARAMS = 4
STDIN = 5
STDOUT = 6
STDERR = 7
RESPONDER = 1
#: §3.3: contentLength is 16 bits.
MAX_CONTENT = 0xFFFF
#: The relay's one request on its connection.
REQUEST_ID = 1

#: sun_path is 108 bytes with the terminating NUL (unix(7)).
MAX_SOCKET_PATH = 107

BAD_GATEWAY = (b"Status: 502 Bad Gateway\r\n"
               b"Content-Type: text/plain; charset=utf-8\r\n"
               b"Content-Length: 12\r\n\r\n"
               b"Bad Gateway\n")

#: The keyword arguments of ``run()`` that are the relay's, not the gateway's.
WARM_OPTIONS = ("warm", "warm_dir", "warm_idle", "warm_threads")


class WarmUnavailable(Exception):
    """The daemon cannot be used for this request; the message says why (for the log)."""

    #: The failure marker file of the place it happened at, when known.
    marker: "Optional[str]" = None


# --------------------------------------------------------------------------
# FastCGI framing (§3.3 records, §3.4 name-value pairs, §5.1 BEGIN_REQUEST)


def encode_record(rtype: int, content: bytes = b"") -> bytes:
    """Records of ``rtype`` for request 1 carrying ``content``, each padded to 8 bytes.

    The same bytes as ``bridge.fastcgi.protocol.encode_record(rtype, 1,
    content)`` (tests/unit/test_warm.py compares them): content past 65535
    bytes is split; empty content is the one empty record that ends a stream.
    """
    out = []
    pos = 0
    end = len(content)
    while True:
        n = min(end - pos, MAX_CONTENT)
        pad = -n & 7
        out.append(bytes((VERSION_1, rtype, 0, REQUEST_ID, n >> 8, n & 0xFF, pad, 0)))
        out.append(content[pos:pos + n])
        out.append(bytes(pad))
        pos += n
        if pos >= end:
            return b"".join(out)


def _length(n: int) -> bytes:
    # §3.4: one byte below 128, else four with the high bit set.
    return bytes((n,)) if n < 0x80 else (n | 0x80000000).to_bytes(4, "big")


def encode_pairs(pairs: "Iterable[tuple]") -> bytes:
    """Name-value pairs (bytes, bytes) as the content of PARAMS records (§3.4)."""
    out: list = []
    for name, value in pairs:
        out += (_length(len(name)), _length(len(value)), name, value)
    return b"".join(out)


def request_head(params: "Iterable[tuple]") -> bytes:
    """BEGIN_REQUEST (responder, connection closed after it), PARAMS, end of PARAMS."""
    begin = encode_record(BEGIN_REQUEST, bytes((0, RESPONDER, 0, 0, 0, 0, 0, 0)))
    return begin + encode_record(PARAMS, encode_pairs(params)) + encode_record(PARAMS)


def cgi_params(environ: "Optional[Mapping[bytes, bytes]]" = None) -> list:
    """The CGI meta-variables as PARAMS pairs, bytes as the web server gave them.

    PATH_INFO is always sent: RFC 3875 §4.1.5 makes an absent one the same
    as an empty one, but a FastCGI server without it derives the path from
    REQUEST_URI (nginx's stock params), which would move the script's own
    path into PATH_INFO.
    """
    environ = os.environb if environ is None else environ
    pairs = list(environ.items())
    if b"PATH_INFO" not in environ:
        pairs.append((b"PATH_INFO", b""))
    return pairs


# --------------------------------------------------------------------------
# where the daemon lives


def _checked_dir(path: str, uid: int, create: bool = True) -> str:
    """``path`` if it is a directory of ``uid`` that nobody else may enter; made if missing.

    lstat, so a symlink (planted in /tmp by another user, say) is refused,
    not followed.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        if not create:
            raise WarmUnavailable(f"{path} does not exist") from None
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise WarmUnavailable(f"cannot create {path}: {exc.strerror}") from None
        st = os.lstat(path)
    except OSError as exc:
        raise WarmUnavailable(f"cannot use {path}: {exc.strerror}") from None
    if st.st_mode & 0o170000 != 0o040000:
        raise WarmUnavailable(f"{path} is not a directory (a symlink?)")
    if st.st_uid != uid:
        raise WarmUnavailable(f"{path} belongs to uid {st.st_uid}, not to this script's uid {uid}")
    if st.st_mode & 0o077:
        raise WarmUnavailable(f"{path} has mode {st.st_mode & 0o777:o}: others may enter it (must be 700)")
    return path


def private_dir(explicit: "Optional[str]" = None) -> str:
    """The directory for this user's daemon sockets: mode 0700, owned by the user.

    ``explicit`` (``warm_dir=``) or else, in order: ``$XDG_RUNTIME_DIR/bridge-warm``
    when that is the user's own runtime directory; ``~/.cache/bridge-warm``
    when the home directory (from the passwd entry: suexec drops HOME) is
    the user's and writable; ``/tmp/bridge-warm-UID``.  An existing path
    owned by someone else, or open to others, is refused, never repaired.
    """
    uid = os.getuid()
    if explicit:
        return _checked_dir(explicit, uid)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        try:
            _checked_dir(runtime, uid, create=False)
            return _checked_dir(runtime + "/bridge-warm", uid)
        except WarmUnavailable:
            pass
    import pwd
    try:
        home = pwd.getpwuid(uid).pw_dir
        st = os.stat(home)
        if st.st_uid == uid and os.access(home, os.W_OK):
            cache = home.rstrip("/") + "/.cache"
            try:
                os.mkdir(cache, 0o700)
            except FileExistsError:
                pass
            if os.lstat(cache).st_uid == uid:
                return _checked_dir(cache + "/bridge-warm", uid)
    except (KeyError, OSError, WarmUnavailable):
        pass
    return _checked_dir(f"/tmp/bridge-warm-{uid}", uid)


def app_key(script: str, app: str, pythonpath: "Iterable[str]" = ()) -> str:
    """The daemon's name: a hash of uid, interpreter, script, app and path.

    Two scripts, two apps or two users never share a daemon; the same
    script always finds its own.
    """
    try:
        from _blake2 import blake2b
    except ImportError:      # an interpreter built without it
        from hashlib import blake2b
    material = "\0".join((str(os.getuid()), sys.executable, script, app, *pythonpath))
    return blake2b(material.encode("utf-8", "surrogateescape"), digest_size=12).hexdigest()


def script_path() -> str:
    """The cgi-bin script: SCRIPT_FILENAME (Apache sets it, suexec keeps it), else argv[0].

    For ``bridge cgi --warm`` run from a shell script, argv[0] is the
    ``bridge`` command; SCRIPT_FILENAME is still the file Apache ran, the
    one whose edits should restart the daemon.
    """
    name = os.environ.get("SCRIPT_FILENAME") or (sys.argv[0] if sys.argv and sys.argv[0] else "-")
    return os.path.abspath(name)


class Place:
    """The files of one app's daemon in the private directory: socket, lock, log, marker."""

    __slots__ = ("dir", "key", "socket", "lock", "log", "marker", "died")

    def __init__(self, directory: str, key: str) -> None:
        self.dir = directory
        self.key = key
        base = f"{directory}/{key}"
        self.socket = base + ".sock"
        self.lock = base + ".lock"
        self.log = base + ".log"
        self.marker = base + ".failed"
        self.died = base + ".died"


# --------------------------------------------------------------------------
# the relay


def connect(path: str) -> "Optional[_socket.socket]":
    """A connection to the daemon, or None when nobody listens there (ENOENT, ECONNREFUSED).

    The daemon must run as this uid (SO_PEERCRED): with the directory
    private that is already so, and this keeps it so if it is not.
    """
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        return None
    except OSError as exc:
        sock.close()
        raise WarmUnavailable(f"cannot connect to {path}: {exc.strerror}") from None
    if peer_uid(sock) != os.getuid():
        sock.close()
        raise WarmUnavailable(f"{path} is served by another user")
    return sock


def peer_uid(sock: "_socket.socket") -> int:
    """The uid of the process at the other end of a unix socket (``struct ucred``: pid, uid, gid)."""
    cred = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)
    return int.from_bytes(cred[4:8], sys.byteorder)


def _write_all(fd: int, data: "Union[bytes, memoryview]") -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _send_body(sock: "_socket.socket", environ: "Mapping[bytes, bytes]") -> None:
    """Stdin as STDIN records: CONTENT_LENGTH bytes, or to EOF for a chunked body (no length).

    Never past CONTENT_LENGTH (RFC 3875 §4.2: under mod_cgid stdin is a
    socket that need not end there).  Apache passes a chunked body
    de-chunked without CONTENT_LENGTH and then closes stdin, as the plain
    gateway's ``InputToEOF`` explains; the daemon collects it.
    """
    length = environ.get(b"CONTENT_LENGTH")
    try:
        left = max(int(length), 0) if length else None
    except ValueError:
        left = 0
    if left is None:
        left = -1 if b"chunked" in environ.get(b"HTTP_TRANSFER_ENCODING", b"").lower() else 0
    while left:
        data = os.read(0, 1 << 18 if left < 0 else min(left, 1 << 18))
        if not data:
            break
        if left > 0:
            left -= len(data)
        sock.sendall(encode_record(STDIN, data))
    sock.sendall(encode_record(STDIN))


def relay(sock: "_socket.socket", environ: "Optional[Mapping[bytes, bytes]]" = None,
          place: "Optional[Place]" = None) -> int:
    """Send this CGI request over ``sock``, copy the response out; 0 (Apache has its answer).

    The daemon reads the whole body before the app runs, so sending all of
    stdin before reading cannot deadlock.  STDOUT goes to fd 1 as it
    arrives (a streaming app streams), STDERR to fd 2.  The connection
    ending before END_REQUEST means the daemon died: a 502 if nothing was
    sent yet, else the response stays cut short, which is how the web
    server and the client learn it was incomplete.  Two such deaths within
    RETRY_AFTER seconds (``place`` keeps the count) are a crash loop: plain
    CGI for a while, as when the daemon cannot start.
    """
    environ = os.environb if environ is None else environ
    started = False
    try:
        try:
            sock.sendall(request_head(cgi_params(environ)))
            _send_body(sock, environ)
        except OSError:
            pass          # the daemon went away (or answered early): read what it said
        buf = bytearray()
        while True:
            try:
                data = sock.recv(1 << 18)
            except OSError:
                data = b""
            if not data:
                break
            buf += data
            pos = 0
            end = len(buf)
            while end - pos >= 8:
                rtype = buf[pos + 1]
                rid = buf[pos + 2] << 8 | buf[pos + 3]
                clen = buf[pos + 4] << 8 | buf[pos + 5]
                stop = pos + 8 + clen + buf[pos + 6]
                if stop > end:
                    break
                if rid == REQUEST_ID:
                    if rtype == STDOUT and clen:
                        started = True
                        _write_all(1, memoryview(buf)[pos + 8:pos + 8 + clen])
                    elif rtype == STDERR and clen:
                        _write_all(2, memoryview(buf)[pos + 8:pos + 8 + clen])
                    elif rtype == END_REQUEST:
                        return 0
                pos = stop
            del buf[:pos]
    except BrokenPipeError:
        return 0          # Apache (the client) went away: nobody to answer
    finally:
        sock.close()
    _write_all(2, b"bridge warm: the daemon closed the connection before the end of the response"
                  b" (it died or was killed); " + (b"response cut short\n" if started else b"502\n"))
    if not started:
        _write_all(1, BAD_GATEWAY)
    if place is not None:
        _note_death(place)
    return 0


def _note_death(place: "Place") -> None:
    from bridge.warm_start import RETRY_AFTER, recently_failed, touch
    if recently_failed(place.died):
        _log_fallback(place.marker, f"the daemon died during two requests within {RETRY_AFTER:.0f} s "
                                    f"(a crash loop?), see {place.log}")
    touch(place.died, "died\n")


# --------------------------------------------------------------------------
# entry points


def warm_connection(app: str, options: dict) -> tuple:
    """``(connection, place)`` for this app's daemon, started if need be; WarmUnavailable if none."""
    pythonpath = [os.path.abspath(p) for p in options.get("pythonpath") or ()]
    script = script_path()
    directory = private_dir(options.get("warm_dir"))
    place = Place(directory, app_key(script, app, pythonpath))
    if len(place.socket.encode()) > MAX_SOCKET_PATH:
        raise WarmUnavailable(f"the socket path {place.socket} is too long for a unix socket")
    try:
        sock = connect(place.socket)
        if sock is None:
            sock = start_daemon(place, app, script, options)
        return sock, place
    except WarmUnavailable as exc:
        exc.marker = place.marker
        raise
    except OSError as exc:       # fork, pipe, ...: anything the OS refuses
        unavailable = WarmUnavailable(f"cannot start the daemon: {exc}")
        unavailable.marker = place.marker
        raise unavailable from None


def start_daemon(place: "Place", app: str, script: str, options: dict) -> "_socket.socket":
    """:func:`bridge.warm_start.start_or_wait` (imported only now), its failure as WarmUnavailable."""
    from bridge.warm_start import StartFailed, start_or_wait
    try:
        return start_or_wait(place, app, script, options, connect)
    except StartFailed as exc:
        raise WarmUnavailable(str(exc)) from None


def serve(app: "Union[str, Callable]", **options) -> int:
    """``run(app, warm=True)`` and ``bridge cgi --warm APP``: relay to the daemon, else plain CGI.

    ``options``: ``warm_dir`` (where the sockets live), ``warm_idle``
    (seconds before an unused daemon exits), ``warm_threads`` (its pool),
    and the gateway's ``pythonpath``, ``chdir``, ``script_name``.
    """
    if "GATEWAY_INTERFACE" not in os.environ:
        from bridge.cgi.gateway import serve_one
        return serve_one(app, **_gateway_options(options))
    if not isinstance(app, str):
        _log_fallback(None, "warm=True needs the app by name ('module:callable'), "
                            "so the daemon can load it; serving as plain CGI")
    else:
        try:
            sock, place = warm_connection(app, options)
        except WarmUnavailable as exc:
            if str(exc):
                _log_fallback(getattr(exc, "marker", None) or _spare_marker(app), str(exc))
        except OSError as exc:       # fork, pipe, ...: anything the OS refuses
            _log_fallback(_spare_marker(app), f"cannot start the daemon: {exc}")
        else:
            return relay(sock, place=place)
    from bridge.cgi.gateway import run_cgi
    return run_cgi(app, **_gateway_options(options))


def _gateway_options(options: dict) -> dict:
    return {k: v for k, v in options.items() if k not in WARM_OPTIONS}


def _spare_marker(app: str) -> str:
    """Where to remember a failure when there is no private directory: beside where it would be."""
    return f"/tmp/bridge-warm-{os.getuid()}-{app_key(script_path(), app)}.failed"


def _log_fallback(marker: "Optional[str]", reason: str) -> None:
    """The reason on stderr (Apache's error log), once per RETRY_AFTER when a marker can be kept."""
    from bridge.warm_start import note_failure
    if marker is None or note_failure(marker, reason):
        try:
            _write_all(2, f"bridge warm: serving as plain CGI: {reason}\n".encode("utf-8", "replace"))
        except OSError:
            pass


def main(config) -> int:
    """``bridge cgi --warm APP [options]`` through the full command line."""
    return serve(config.app, warm=True, warm_dir=config.warm_dir, warm_idle=config.warm_idle,
                 warm_threads=config.warm_threads, script_name=config.script_name,
                 pythonpath=config.pythonpath, chdir=config.chdir)
