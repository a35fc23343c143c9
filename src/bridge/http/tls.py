"""TLS for ``bridge http`` with the standard library's ``ssl``, over memory BIOs.

The worker owns the plain socket (its descriptor is what epoll watches), so
TLS is layered on top with :class:`ssl.SSLObject` and two
:class:`ssl.MemoryBIO`: raw bytes read from the socket go in, plaintext comes
out, and what TLS wants to send is taken from the outgoing BIO and written by
the connection's own send path.  No wrapped socket, no hidden buffering that
epoll cannot see: after :meth:`TLSSession.feed` every decrypted byte has been
handed over.
"""
from __future__ import annotations

import ssl

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional


def make_context(certfile: str, keyfile: Optional[str] = None,
                 ca_certs: Optional[str] = None) -> ssl.SSLContext:
    """A server context: modern defaults, ALPN http/1.1, client certificates with ``ca_certs``.

    TLS 1.2 is the minimum, set here rather than left to the system's OpenSSL
    policy (a permissive ``openssl.cnf`` or security level 0 would otherwise
    let TLS 1.0/1.1 through): RFC 8996 deprecates both.
    """
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(certfile, keyfile or None)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"cannot load --certfile {certfile!r}"
                         f"{f' / --keyfile {keyfile!r}' if keyfile else ''}: {why(exc)}") from None
    if ca_certs:
        try:
            ctx.load_verify_locations(ca_certs)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"cannot load --ca-certs {ca_certs!r}: {why(exc)}") from None
        ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.set_alpn_protocols(["http/1.1"])
    except NotImplementedError:   # pragma: no cover - OpenSSL without ALPN
        pass
    return ctx


def why(exc: OSError) -> str:
    """A load failure in a user's words: ``No such file or directory``, not ``[Errno 2] ...``."""
    if isinstance(exc, ssl.SSLError):
        reason = str(exc.reason or "").replace("_", " ").lower()
        return f"not a usable PEM file{f' ({reason})' if reason else ''}"
    return exc.strerror or str(exc)


class TLSSession:
    """One server-side TLS session over memory buffers (sans-I/O)."""

    __slots__ = ("obj", "incoming", "outgoing", "handshaken", "closed")

    def __init__(self, context: ssl.SSLContext) -> None:
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = context.wrap_bio(self.incoming, self.outgoing, server_side=True)
        self.handshaken = False
        self.closed = False

    def feed(self, raw: bytes) -> bytes:
        """Raw bytes from the peer → the plaintext they complete (maybe ``b""``).

        ``raw == b""`` is the peer's EOF.  Raises ``ssl.SSLError`` on a broken
        or refused handshake.  Anything TLS wants to send back (handshake,
        alerts) is left in :meth:`pending_output`.
        """
        if raw:
            self.incoming.write(raw)
        else:
            self.incoming.write_eof()
        if not self.handshaken:
            try:
                self.obj.do_handshake()
            except ssl.SSLWantReadError:
                return b""
            self.handshaken = True
        parts = []
        read = self.obj.read
        while True:
            try:
                data = read(65536)
            except ssl.SSLWantReadError:
                break
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                self.closed = True
                break
            if not data:
                self.closed = True
                break
            parts.append(data)
        return b"".join(parts)

    def encrypt(self, data) -> bytes:
        """Plaintext → the TLS records to send."""
        self.obj.write(data)
        return self.outgoing.read()

    def pending_output(self) -> bytes:
        return self.outgoing.read()

    def close_notify(self) -> bytes:
        """The close_notify alert to send before closing (best effort)."""
        try:
            self.obj.unwrap()
        except (ssl.SSLError, ValueError):
            pass
        return self.outgoing.read()

    def environ(self) -> dict:
        """mod_ssl-style variables for the app: HTTPS, SSL_PROTOCOL, SSL_CIPHER, client certificate."""
        env = {"HTTPS": "on"}
        obj = self.obj
        version = obj.version()
        if version:
            env["SSL_PROTOCOL"] = version
        cipher = obj.cipher()
        if cipher:
            env["SSL_CIPHER"] = cipher[0]
        try:
            cert = obj.getpeercert()
        except ValueError:
            cert = None
        if cert:
            env["SSL_CLIENT_VERIFY"] = "SUCCESS"
            env["SSL_CLIENT_S_DN"] = _dn(cert.get("subject", ()))
            env["SSL_CLIENT_I_DN"] = _dn(cert.get("issuer", ()))
            for rdn in cert.get("subject", ()):
                for key, value in rdn:
                    if key == "commonName":
                        env["SSL_CLIENT_S_DN_CN"] = value
        else:
            env["SSL_CLIENT_VERIFY"] = "NONE"
        return env


_SHORT = {"commonName": "CN", "organizationName": "O", "organizationalUnitName": "OU",
          "countryName": "C", "stateOrProvinceName": "ST", "localityName": "L",
          "emailAddress": "emailAddress"}


def _dn(rdns) -> str:
    # RFC 4514 order: most specific first.
    return ",".join("+".join(f"{_SHORT.get(k, k)}={v}" for k, v in rdn) for rdn in reversed(rdns))
