"""bridge.http.tls: the server context refuses TLS 1.0/1.1 itself, whatever the system policy."""
from __future__ import annotations

import ssl
import subprocess
import warnings

import pytest

from bridge.http.tls import TLSSession, make_context


@pytest.fixture(scope="module")
def cert(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    done = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                           "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "key.pem",
                           "-out", "cert.pem", "-days", "2", "-subj", "/CN=localhost"],
                          cwd=d, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return d


def handshake(server_ctx: ssl.SSLContext, maximum: ssl.TLSVersion) -> str:
    """A client capped at ``maximum`` against ``server_ctx``, in memory; the version agreed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)      # TLSv1/TLSv1_1 names
        client_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client_ctx.check_hostname = False
        client_ctx.verify_mode = ssl.CERT_NONE
        client_ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        client_ctx.minimum_version = ssl.TLSVersion.TLSv1
        client_ctx.maximum_version = maximum
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(incoming, outgoing, server_side=False)
    server = TLSSession(server_ctx)
    for _ in range(10):
        try:
            client.do_handshake()
            return client.version()
        except ssl.SSLWantReadError:
            pass
        server.feed(outgoing.read())            # raises ssl.SSLError when it refuses
        incoming.write(server.pending_output())
    raise AssertionError("no handshake after 10 rounds")


def permissive(ctx: ssl.SSLContext) -> ssl.SSLContext:
    """The server context as a system with security level 0 would make it."""
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    return ctx


def test_server_context_minimum_is_tls_1_2(cert):
    ctx = make_context(str(cert / "cert.pem"), str(cert / "key.pem"))
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2


def test_a_tls_1_1_client_is_refused_even_where_the_system_policy_allows_it(cert):
    ctx = permissive(make_context(str(cert / "cert.pem"), str(cert / "key.pem")))
    # The local OpenSSL can do TLS 1.1 when nothing forbids it, so the refusal is ours:
    bare = permissive(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    bare.load_cert_chain(str(cert / "cert.pem"), str(cert / "key.pem"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        bare.minimum_version = ssl.TLSVersion.TLSv1
        assert handshake(bare, ssl.TLSVersion.TLSv1_1) == "TLSv1.1"
        with pytest.raises(ssl.SSLError, match="(?i)unsupported protocol|version"):
            handshake(ctx, ssl.TLSVersion.TLSv1_1)
        with pytest.raises(ssl.SSLError, match="(?i)unsupported protocol|version"):
            handshake(ctx, ssl.TLSVersion.TLSv1)


def test_tls_1_2_and_1_3_clients_are_served(cert):
    ctx = make_context(str(cert / "cert.pem"), str(cert / "key.pem"))
    assert handshake(ctx, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    assert handshake(ctx, ssl.TLSVersion.TLSv1_3) == "TLSv1.3"
