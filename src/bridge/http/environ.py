"""The WSGI environ of ``bridge http``: per worker, per connection, per request.

Work is done as early as it can be: :class:`ServerContext` turns the settings
into ready objects once per worker process (limits, trusted proxies, TLS
context, access log, the constant part of the environ); its
:meth:`~ServerContext.connection_environ` adds what a connection fixes
(addresses, whether the peer is a trusted proxy); :func:`request_environ`
only copies that template and adds the request's own variables.
"""
from __future__ import annotations

import io
import logging
import socket
import threading

from bridge.http.events import Request
from bridge.http.forwarded import TrustedProxies, apply_forwarded
from bridge.http.readers import Limits
from bridge.wsgi import InputStream, apply_script_name, decode_path, make_environ, remove_dot_segments

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Optional

log = logging.getLogger("bridge.http")


def _env_key(name: str) -> str:
    """Lower-case field name → environ key ("" = not passed to the app)."""
    if "_" in name:
        # "X_Forwarded_For" must not pass for "X-Forwarded-For" (they map to
        # the same key): drop names with underscores, as nginx does by default.
        return ""
    if name == "content-type":
        return "CONTENT_TYPE"
    if name == "content-length":
        return "CONTENT_LENGTH"
    return "HTTP_" + name.upper().replace("-", "_")


_ENV_KEYS: dict = {}
_PROTOCOLS = {"1.1": "HTTP/1.1", "1.0": "HTTP/1.0"}


class ErrorStream:
    """``wsgi.errors``: what the app writes goes to the error log (``bridge.http``)."""

    def write(self, text: str) -> int:
        text = str(text)
        if text.strip():
            log.error("%s", text.rstrip("\n"))
        return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        pass


class _EmptyInput:
    """``wsgi.input`` of a request without a body (stateless, shared)."""

    def read(self, size: int = -1) -> bytes:
        return b""

    def readline(self, size: int = -1) -> bytes:
        return b""

    def readlines(self, hint: int = -1) -> list:
        return []

    def __iter__(self):
        return iter(())

    def close(self) -> None:
        pass


EMPTY_INPUT = _EmptyInput()


class HTTPInput(InputStream):
    """``wsgi.input`` with --stream-request-body: the body, read from the connection as the app asks for it."""

    def __init__(self, connection) -> None:
        super().__init__()
        self._connection = connection

    def _fill(self, n: int) -> bytes:
        return self._connection.read_body()



class BodyMemory:
    """The bytes of request bodies one worker process holds in memory, all connections together.

    ``--body-spool-threshold`` bounds one body; without a bound on their sum,
    N clients that each send a body just under it and never finish hold N
    times that (200 connections x 1 MB took a worker from 34 MB to 262 MB of
    RSS; the default descriptor limit allows thousands).  nginx keeps 16 KiB
    per body in memory for the same reason.  Past ``limit`` a body goes to
    its temporary file instead: disk, bounded by --limit-request-body.
    """

    __slots__ = ("limit", "used", "lock")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.lock = threading.Lock()

    def take(self, n: int) -> bool:
        """Reserve ``n`` bytes; False (nothing reserved) when that would pass the limit."""
        with self.lock:
            if self.used + n > self.limit:
                return False
            self.used += n
            return True

    def give(self, n: int) -> None:
        with self.lock:
            self.used -= n


class ReceivedBody:
    """A request body received before the app runs (the default).

    In memory up to ``threshold`` bytes (and while the worker's
    :class:`BodyMemory` allows), beyond it in an unlinked temporary file, as
    the FastCGI server keeps STDIN: a client that sends slowly costs a
    buffer, never a pool thread.  :meth:`stream` is the app's
    ``wsgi.input``, positioned at the start.
    """

    __slots__ = ("parts", "size", "file", "threshold", "memory", "held")

    def __init__(self, threshold: int, memory: Optional[BodyMemory] = None) -> None:
        self.parts: list = []
        self.size = 0
        self.file = None
        self.threshold = threshold
        self.memory = memory
        self.held = 0           # bytes reserved in ``memory``

    def add(self, data: bytes) -> None:
        self.size += len(data)
        if self.file is not None:
            self.file.write(data)
            return
        self.parts.append(data)
        memory = self.memory
        if self.size > self.threshold or (memory is not None and not memory.take(len(data))):
            import tempfile
            self.file = tempfile.TemporaryFile(prefix="bridge-body-")
            self.file.writelines(self.parts)
            self.parts = []
            self._release()
        elif memory is not None:
            self.held += len(data)

    def _release(self) -> None:
        if self.held:
            self.memory.give(self.held)
            self.held = 0

    def stream(self):
        if self.file is not None:
            self.file.flush()
            self.file.seek(0)
            return self.file
        parts = self.parts
        return io.BytesIO(parts[0] if len(parts) == 1 else b"".join(parts))

    def close(self) -> None:
        self.parts = []
        self._release()
        if self.file is not None:
            try:
                self.file.close()
            except OSError:
                pass


# --------------------------------------------------------------------------
# Per worker: what every connection shares


class ServerContext:
    """Settings turned into ready objects once per worker process."""

    def __init__(self, app: Callable, config, prepared=None) -> None:
        self.app = app
        self.limits = Limits(
            request_line=getattr(config, "limit_request_line", 8190),
            fields=getattr(config, "limit_request_fields", 100),
            field_size=getattr(config, "limit_request_field_size", 8190),
            body=getattr(config, "limit_request_body", 1 << 30),
            header_size=getattr(config, "limit_request_header_size", 64 * 1024),
        )
        self.header_timeout = getattr(config, "header_timeout", 10.0) or None
        self.keepalive = getattr(config, "keepalive", 5.0) or None
        self.io_timeout = getattr(config, "io_timeout", 30.0) or None
        self.body_timeout = getattr(config, "body_timeout", 60.0) or None
        self.spool_threshold = getattr(config, "body_spool_threshold", 1 << 20)
        self.body_memory = BodyMemory(getattr(config, "body_memory", 64 << 20))
        self.stream_body = bool(getattr(config, "stream_request_body", False))
        self.trusted = TrustedProxies(getattr(config, "forwarded_allow_ips", "127.0.0.1") or "")
        self.forwarded_host = bool(getattr(config, "forwarded_host", False))
        self.proxy_protocol = bool(getattr(config, "proxy_protocol", False))
        self.proxy_allowed = TrustedProxies(getattr(config, "proxy_allow_ips", "127.0.0.1,::1") or "",
                                            "--proxy-allow-ips")
        self.script_name = getattr(config, "script_name", None)
        if prepared is None:        # one process, or a test: no master opened them
            from bridge.http.prepared import prepare
            prepared = prepare(config)
        self.tls_context = prepared.tls_context
        self.access_log = prepared.access_log
        from bridge import __version__
        self.base = make_environ(
            {"SCRIPT_NAME": "", "SERVER_SOFTWARE": f"wsgi-bridge/{__version__}"},
            input=EMPTY_INPUT, errors=ErrorStream(),
            multithread=getattr(config, "threads", 4) > 1,
            multiprocess=getattr(config, "workers", 1) > 1,
            url_scheme="https" if self.tls_context else "http")

    def connection_environ(self, sock: socket.socket, addr, listener) -> tuple:
        """The per-connection environ template and whether the peer is a trusted proxy."""
        env = dict(self.base)
        if listener is not None and getattr(listener, "kind", "tcp") == "unix" or not addr \
                or not isinstance(addr, tuple):
            env["REMOTE_ADDR"] = "127.0.0.1"
            env["SERVER_NAME"] = "localhost"
            env["SERVER_PORT"] = "443" if self.tls_context else "80"
            return env, True, True   # a local process (nginx): trusted
        host = addr[0]
        if host.startswith("::ffff:") and "." in host:
            host = host[7:]
        env["REMOTE_ADDR"] = host
        env["REMOTE_PORT"] = str(addr[1])
        try:
            local = sock.getsockname()
        except OSError:
            local = None
        if isinstance(local, tuple):
            env["SERVER_NAME"] = local[0][7:] if local[0].startswith("::ffff:") else local[0]
            env["SERVER_PORT"] = str(local[1])
        else:
            env["SERVER_NAME"] = "localhost"
            env["SERVER_PORT"] = "443" if self.tls_context else "80"
        return env, self.trusted.trusts(host), False

    def apply_proxy_header(self, env: dict, header, unix: bool) -> bool:
        """Put what a PROXY protocol header says into the connection's environ template.

        Returns whether the client it names is a trusted proxy for
        X-Forwarded-*: the header replaces the peer, so the forwarded headers
        are trusted only when *that* client is listed in
        --forwarded-allow-ips.  (Judging them by the load balancer's own
        address would let any client behind it choose its REMOTE_ADDR.)
        LOCAL and UNKNOWN headers name no client: the connection's own
        addresses and trust stand.
        """
        source = header.source
        if source is None:
            return self.trusted.trusts(None if unix else env.get("REMOTE_ADDR"))
        env["REMOTE_ADDR"] = source[0]
        env["REMOTE_PORT"] = str(source[1])
        destination = header.destination
        if destination is not None and not unix:
            # What the client connected to (the balancer's front end), as
            # SERVER_NAME/SERVER_PORT are the local address of a direct connection.
            env["SERVER_NAME"] = destination[0]
            env["SERVER_PORT"] = str(destination[1])
        tls = header.tls
        if tls is not None and self.tls_context is None:
            # The client spoke TLS to the balancer (HAProxy send-proxy-v2-ssl),
            # which passes plaintext on: the app must build https:// URLs.
            env["wsgi.url_scheme"] = "https"
            env["HTTPS"] = "on"
            if tls["version"]:
                env["SSL_PROTOCOL"] = tls["version"]
            if tls["cipher"]:
                env["SSL_CIPHER"] = tls["cipher"]
        return self.trusted.trusts(source[0])


def request_environ(base: dict, request: Request, ctx: ServerContext, trusted: bool, unix: bool) -> dict:
    """The environ of one request: the connection's template plus what the request says.

    Raises :class:`bridge.wsgi.AmbiguousPath` for a path whose ``..``
    follows ``//`` (the server answers 400).
    """
    env = base.copy()
    env["REQUEST_METHOD"] = request.method
    path = request.path
    if "%" in path:
        path = decode_path(path.encode("latin-1"))
    # RFC 3986 §5.2.4 after decoding, before any routing (REQUEST_URI stays raw).
    env["PATH_INFO"] = remove_dot_segments(path) if "/." in path else path
    env["QUERY_STRING"] = request.query
    env["REQUEST_URI"] = env["RAW_URI"] = request.target
    env["SERVER_PROTOCOL"] = _PROTOCOLS.get(request.http_version) or "HTTP/" + request.http_version
    keys = _ENV_KEYS
    for name, value in request.headers:
        key = keys.get(name)
        if key is None:
            key = _env_key(name)
            if len(keys) < 1024:
                keys[name] = key
        if not key:
            continue
        old = env.get(key)
        if old is None:
            env[key] = value
        else:
            # RFC 9110 §5.3: repeated fields combine with commas; a
            # Cookie list is the exception (RFC 6265 §5.4 uses "; ").
            env[key] = old + ("; " if key == "HTTP_COOKIE" else ", ") + value
    if request.host is not None:
        env["HTTP_HOST"] = request.host
    if request.content_length is not None:
        env["CONTENT_LENGTH"] = str(request.content_length)
    if "HTTP_PROXY" in env:
        del env["HTTP_PROXY"]   # httpoxy (CVE-2016-5385)
    if trusted and ("HTTP_X_FORWARDED_FOR" in env or "HTTP_X_FORWARDED_PROTO" in env
                         or "HTTP_X_FORWARDED_HOST" in env or "HTTP_FORWARDED" in env):
        apply_forwarded(env, ctx.trusted, ctx.forwarded_host)
    if unix:
        host = env.get("HTTP_HOST")
        if host:
            name, colon, port = host.rpartition(":")
            if colon and port.isdigit() and not name.endswith(":"):
                env["SERVER_NAME"], env["SERVER_PORT"] = name, port
            else:
                env["SERVER_NAME"] = host
                env["SERVER_PORT"] = "443" if env["wsgi.url_scheme"] == "https" else "80"
    if ctx.script_name:
        apply_script_name(env, ctx.script_name)
    return env
