"""Starting the daemon of a warm cgi-bin script: one starter under a lock, detached, waited for.

:mod:`bridge.warm` (the relay, every request's cost) imports this only when
nobody listens on the app's socket, or to remember a failure: the lock,
the double fork and the readiness pipe cost nothing to a request that
finds its daemon.  Same rule for imports as the relay (``fcntl``,
``select``, ``time`` where used), since the request that starts the
daemon also waits for it.

It imports nothing of :mod:`bridge.warm` (that would make the two one
module): the relay passes its ``Place`` and its ``connect``, and turns
:class:`StartFailed` into its own ``WarmUnavailable``.
"""
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import _socket
    from typing import Callable, Optional

    from bridge.warm import Place

#: Defaults of the daemon: idle seconds before it exits, pool threads.
DEFAULT_IDLE = 300.0
DEFAULT_THREADS = 4

#: Seconds the request that starts the daemon waits for it to load the app
#: (and the others wait for that request) before serving as plain CGI.
START_TIMEOUT = 60.0
#: After a failure to use the daemon, requests within this many seconds go
#: straight to plain CGI, silently: the reason was logged once, and a crash
#: loop does not cost every request a fork and a wait.
RETRY_AFTER = 30.0
#: The daemon's log is moved to ``.log.1`` when a start finds it larger.
LOG_LIMIT = 1 << 20
#: Request meta-variables (RFC 3875 §4.1, and what Apache adds) the daemon
#: must not inherit from the request that started it: they belong to that
#: one request, and every request brings its own as PARAMS.
REQUEST_VARIABLES = frozenset((
    b"AUTH_TYPE", b"CONTENT_LENGTH", b"CONTENT_TYPE", b"GATEWAY_INTERFACE", b"PATH_INFO",
    b"PATH_TRANSLATED", b"QUERY_STRING", b"REMOTE_ADDR", b"REMOTE_HOST", b"REMOTE_IDENT",
    b"REMOTE_PORT", b"REMOTE_USER", b"REQUEST_METHOD", b"REQUEST_URI", b"REQUEST_SCHEME",
    b"SCRIPT_NAME", b"SCRIPT_FILENAME", b"SCRIPT_URI", b"SCRIPT_URL", b"SERVER_NAME",
    b"SERVER_ADDR", b"SERVER_PORT", b"SERVER_PROTOCOL", b"SERVER_SOFTWARE", b"SERVER_ADMIN",
    b"SERVER_SIGNATURE", b"DOCUMENT_ROOT", b"CONTEXT_DOCUMENT_ROOT", b"CONTEXT_PREFIX",
    b"HTTPS", b"UNIQUE_ID"))
REQUEST_PREFIXES = (b"HTTP_", b"SSL_", b"REDIRECT_")


class StartFailed(Exception):
    """The daemon could not be started or waited for; the message says why (for the log).

    An empty message: a failure already logged less than RETRY_AFTER ago.
    """


def lock(path: str, timeout: float) -> int:
    """An exclusive flock on ``path`` within ``timeout`` seconds, as an fd; StartFailed if not."""
    import fcntl
    import time
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StartFailed(f"cannot open the lock file {path}: {exc.strerror}") from None
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise StartFailed(f"another request held {path} for over {timeout:.0f} s") from None
            time.sleep(0.02)


def recently_failed(marker: str) -> bool:
    """A failure was logged less than RETRY_AFTER seconds ago (the marker file's mtime)."""
    import time
    try:
        st = os.lstat(marker)
    except OSError:
        return False
    return own_file(st) and time.time() - st.st_mtime < RETRY_AFTER


def own_file(st: os.stat_result) -> bool:
    """A regular file of this uid with one name: a hard link planted at a /tmp path
    (possible where fs.protected_hardlinks is 0) points at a file the script must not touch."""
    return st.st_mode & 0o170000 == 0o100000 and st.st_uid == os.getuid() and st.st_nlink == 1


def note_failure(marker: str, reason: str) -> bool:
    """Record the failure in ``marker``; False when it was recorded recently (do not log again)."""
    if recently_failed(marker):
        return False
    touch(marker, reason + "\n")
    return True


def touch(path: str, text: str) -> None:
    """Write ``text`` to ``path`` if it is (or becomes) a regular file of this uid; else nothing.

    O_NONBLOCK and the fstat: a FIFO, another user's file or a hard link
    planted at a /tmp path neither blocks the script nor receives the text.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o600)
    except OSError:
        return
    try:
        st = os.fstat(fd)
        if own_file(st):
            os.ftruncate(fd, 0)
            os.write(fd, text.encode("utf-8", "replace"))
    except OSError:
        pass
    finally:
        os.close(fd)


def daemon_environ() -> dict:
    """The script's environment without the request's variables (the daemon outlives it).

    What the web server set for the script (``SetEnv``, PATH, LANG, TZ)
    stays: the app's import may depend on it, as it does under plain CGI.
    Each request's own variables arrive as its PARAMS.  bridge's directory
    is added to PYTHONPATH when it is not there, so the daemon finds the
    same bridge as the script, however the script found it.
    """
    env = {k: v for k, v in os.environb.items()
           if k not in REQUEST_VARIABLES and not k.startswith(REQUEST_PREFIXES)}
    home = os.path.dirname(os.path.dirname(os.path.abspath(__file__))).encode()
    path = env.get(b"PYTHONPATH", b"")
    if home not in path.split(b":"):
        env[b"PYTHONPATH"] = home + b":" + path if path else home
    return env


def daemon_argv(place: "Place", app: str, script: str, ready_fd: int, options: dict) -> list:
    """``python -m bridge.warm_daemon ...``: everything it needs on its command line (suexec-proof)."""
    argv = [sys.executable, "-m", "bridge.warm_daemon", "--app", app, "--socket", place.socket,
            "--lock", place.lock, "--watch", script, "--ready-fd", str(ready_fd),
            "--idle", str(float(DEFAULT_IDLE if options.get("warm_idle") is None else options["warm_idle"])),
            "--threads", str(int(options.get("warm_threads") or DEFAULT_THREADS))]
    for entry in options.get("pythonpath") or ():
        argv += ["--pythonpath", os.path.abspath(entry)]
    # The script's own directory is on its sys.path (an app beside it).
    if sys.path and sys.path[0]:
        argv += ["--pythonpath", os.path.abspath(sys.path[0])]
    if options.get("chdir"):
        argv += ["--chdir", options["chdir"]]
    if options.get("script_name"):
        argv += ["--script-name", options["script_name"]]
    return argv


def rotate(log: str) -> None:
    try:
        if os.lstat(log).st_size > LOG_LIMIT:
            os.replace(log, log + ".1")
    except OSError:
        pass


def spawn_daemon(place: "Place", app: str, script: str, options: dict,
                 timeout: float = START_TIMEOUT) -> None:
    """Start the daemon detached and wait until it listens; StartFailed with the reason if not.

    Double fork and setsid: the daemon is no child of this script (Apache
    reaps only the script) and in no session or process group of Apache's
    (a CGI timeout kills the script's group).  Its stdin is /dev/null and
    stdout/stderr its log file, so no descriptor of Apache's pipes stays
    open: Apache would otherwise wait for the daemon before ending the
    response.  It reports "ready" (or why not) on a pipe once the app is
    loaded and the socket is bound.
    """
    rotate(place.log)
    rfd, wfd = os.pipe()
    argv = daemon_argv(place, app, script, wfd, options)
    env = daemon_environ()
    pid = os.fork()
    if pid == 0:        # pragma: no cover (a forked child)
        try:
            os.close(rfd)
            os.setsid()
            if os.fork():
                os._exit(0)
            null = os.open(os.devnull, os.O_RDWR)
            log = os.open(place.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            os.dup2(null, 0)
            os.dup2(log, 1)
            os.dup2(log, 2)
            os.closerange(3, wfd)
            os.closerange(wfd + 1, 65536)
            os.set_inheritable(wfd, True)
            os.execve(sys.executable, argv, env)
        finally:
            os._exit(127)
    os.close(wfd)
    try:
        os.waitpid(pid, 0)
        answer = read_ready(rfd, timeout)
    finally:
        os.close(rfd)
    if not answer.startswith(b"ready"):
        reason = answer.decode("utf-8", "replace").strip() or "it exited before it was ready"
        raise StartFailed(f"the daemon did not start: {reason} (log: {place.log})")


def read_ready(fd: int, timeout: float) -> bytes:
    import select
    import time
    deadline = time.monotonic() + timeout
    answer = b""
    while b"\n" not in answer:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return b"not ready after %d s" % timeout
        data = os.read(fd, 4096)
        if not data:
            break
        answer += data
    return answer


def start_or_wait(place: "Place", app: str, script: str, options: dict,
                  connect: "Callable[[str], Optional[_socket.socket]]") -> "_socket.socket":
    """A connection to a daemon this request started, or that another one started meanwhile.

    ``connect``: the relay's (a connection, or None when nobody listens).

    One starter at a time, under an flock on the lock file: the others wait
    for it (up to START_TIMEOUT), then find the socket listening.  Under the
    lock a socket file nobody answers on is stale (its daemon died) and is
    removed before the new daemon binds.
    """
    if recently_failed(place.marker):
        raise StartFailed("")      # logged when it failed; plain CGI until RETRY_AFTER
    fd = lock(place.lock, START_TIMEOUT + 5)
    try:
        sock = connect(place.socket)
        if sock is not None:
            return sock
        if recently_failed(place.marker):      # the starter we waited for failed
            raise StartFailed("")
        try:
            os.unlink(place.socket)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise StartFailed(f"cannot remove the stale socket {place.socket}: {exc.strerror}") from None
        spawn_daemon(place, app, script, options)
        sock = connect(place.socket)
        if sock is None:
            raise StartFailed(f"the daemon said it was ready but {place.socket} refuses connections")
        return sock
    finally:
        os.close(fd)      # releases the flock
