"""docs/middleware-nginx.conf, the "let nginx do it" equivalent, answers like the middleware.

The same requests go to nginx (files and gzip done by nginx, the app over
FastCGI) and to ``bridge http --static /static=DIR --static-max-age 3600
--gzip``; the client must see the same thing where the docs say they agree.
"""
import gzip
import os
import subprocess

import pytest
import requests

from support import public_tmpdir
from support.middleware import front_door
from support.middleware_apps import TEXT

CSS = b"".join(b".c%d { color: red }\n" % i for i in range(300))


@pytest.fixture(scope="module")
def root():
    base = public_tmpdir("bridge-nginx-eq-")
    root = base / "site"
    root.mkdir()
    root.chmod(0o755)
    (root / "hello.txt").write_bytes(b"hello from the docs config\n")
    (root / "app.css").write_bytes(CSS)
    (root / "app.css.gz").write_bytes(gzip.compress(CSS))
    (root / ".env").write_bytes(b"TOP-SECRET")
    (base / "secret.txt").write_bytes(b"TOP-SECRET")
    os.symlink(base / "secret.txt", root / "link.txt")
    yield root
    subprocess.run(["rm", "-rf", str(base)], check=False)


@pytest.fixture(scope="module")
def doors(root):
    nginx = front_door("nginx-fcgi", "support.middleware_apps:app",
                       nginx_conf="docs/middleware-nginx.conf", root=root)
    bridge = front_door("http", "support.middleware_apps:app", "--static", f"/static={root}",
                        "--static-max-age", "3600", "--gzip")
    yield {"nginx": nginx, "bridge": bridge}
    nginx.stop()
    bridge.stop()


def both(doors, method, path, **headers):
    out = {}
    for name, door in doors.items():
        r = requests.request(method, door.url + path, headers=headers, stream=True, timeout=10)
        r.raw_body = r.raw.read()
        out[name] = r
    return out


def test_file_with_caching_headers(doors):
    for name, r in both(doors, "GET", "/static/hello.txt").items():
        assert r.status_code == 200 and r.raw_body == b"hello from the docs config\n", name
        assert r.headers["Cache-Control"] == "public, max-age=3600", name
        assert r.headers["Last-Modified"] and r.headers["ETag"], name


def test_revalidation_gives_304(doors):
    for name, door in doors.items():
        etag = requests.get(door.url + "/static/hello.txt", timeout=10).headers["ETag"]
        r = requests.get(door.url + "/static/hello.txt", headers={"If-None-Match": etag}, timeout=10)
        assert r.status_code == 304 and r.content == b"", name


def test_single_range_and_unsatisfiable_range(doors):
    for name, r in both(doors, "GET", "/static/hello.txt", Range="bytes=6-9").items():
        assert r.status_code == 206 and r.raw_body == b"from", name
        assert r.headers["Content-Range"] == "bytes 6-9/27", name
    for name, r in both(doors, "GET", "/static/hello.txt", Range="bytes=100-").items():
        assert r.status_code == 416 and r.headers["Content-Range"] == "bytes */27", name


def test_precompressed_sibling(doors):
    for name, r in both(doors, "GET", "/static/app.css", **{"Accept-Encoding": "gzip"}).items():
        assert r.headers["Content-Encoding"] == "gzip", name
        assert gzip.decompress(r.raw_body) == CSS, name
        assert "Accept-Encoding" in r.headers.get("Vary", ""), name


def test_hidden_and_escaping_files_are_not_served(doors):
    for path in ("/static/.env", "/static/link.txt", "/static/", "/static/../secret.txt"):
        for name, r in both(doors, "GET", path).items():
            assert r.status_code in (400, 403, 404), (name, path, r.status_code)
            assert b"TOP-SECRET" not in r.raw_body, (name, path)


def test_post_to_a_file_is_405(doors):
    for name, r in both(doors, "POST", "/static/hello.txt").items():
        assert r.status_code == 405, name


def test_app_response_compressed_for_gzip_clients_only(doors):
    for name, r in both(doors, "GET", "/text", **{"Accept-Encoding": "gzip"}).items():
        assert r.headers["Content-Encoding"] == "gzip" and gzip.decompress(r.raw_body) == TEXT, name
        assert "Accept-Encoding" in r.headers["Vary"], name
    for name, r in both(doors, "GET", "/text", **{"Accept-Encoding": "identity"}).items():
        assert "Content-Encoding" not in r.headers and r.raw_body == TEXT, name
