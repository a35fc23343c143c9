"""``..`` never crosses a mount boundary, end to end, through every gateway.

``--mount /admin=... --mount /=...`` behind a front server that denies
``/admin/``: for each encoded or doubled dot-segment form, either the front
server refuses it, or it reaches the *public* app with the path the front
server routed on: never the admin app.  Gateways: ``bridge http`` directly
and behind nginx's ``proxy_pass``; nginx → ``bridge fcgi`` with the
documented config (docs/composition-nginx.conf and the stock
``fastcgi_params``: bridge re-decodes the raw ``$request_uri``); and
``bridge cgi --mount`` under Apache's mod_cgid.
"""
from __future__ import annotations

import json
import shutil
import socket

import pytest

from support import ROOT, bridge_command, free_port, public_tmpdir
from support.apache import public_bridge_python, start_apache
from support.composition import start_bridge
from support.http_server import read_response
from support.nginx import include_file, start_nginx

MOUNTS = ["--mount", "/admin=support.mount_apps:admin", "--mount", "/=support.mount_apps:public"]

#: (request path, the path the public app must see when it is passed on)
FORMS = [
    ("/admin/../public/page", "/public/page"),
    ("/admin/%2e%2e/public", "/public"),
    ("/admin/%2E%2E/public", "/public"),
    ("/admin/.%2e/public", "/public"),
    ("/admin/%2e./public", "/public"),
    ("/admin/./..//public", "//public"),
    ("/admin/x/../../public", "/public"),
    ("/admin/..", "/"),
    ("/admin/%2e%2e", "/"),
    ("/admin/..%2fpublic", "/public"),
    ("/admin%2f..%2fpublic", "/public"),
    ("/../../admin/../public", "/public"),
]

#: ``..`` after an empty segment: nginx (merge_slashes on, the default)
#: resolves ``/admin//../x`` to ``/x`` and lets it pass ``location /admin/``;
#: without merging it is ``/admin/x``.  bridge refuses it (400) everywhere.
AMBIGUOUS = ["/admin//../x", "/admin/%2f../x", "/admin/x//..//../y", "/admin//x/../../y"]


def raw_get(port: int, target: str, prefix: str = "") -> tuple:
    """GET ``prefix + target`` byte for byte (an HTTP library would normalise it first)."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as c:
        c.sendall(f"GET {prefix}{target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
                  .encode("latin-1"))
        status, _, body = read_response(c)
    return int(status.split()[1]), body


def assert_never_admin(status: int, body: bytes, expected: str, *, front: bool) -> None:
    if front and status in (400, 403, 404):
        return    # the front server refused it itself (nginx: ".." above the root is a 400)
    assert status == 200, (status, body)
    seen = json.loads(body)
    assert seen["app"] == "public", seen
    assert seen["script_name"] + seen["path_info"] == expected, seen


@pytest.fixture(scope="module")
def http_bridge():
    port = free_port()
    proc = start_bridge(bridge_command("http", *MOUNTS, "--bind", f"127.0.0.1:{port}"), port=port)
    yield port
    proc.stop()


@pytest.mark.parametrize("target, expected", FORMS)
def test_bridge_http_routes_dot_segments_out_of_the_mount(http_bridge, target, expected):
    status, body = raw_get(http_bridge, target)
    assert_never_admin(status, body, expected, front=False)


def test_bridge_http_still_reaches_the_admin_mount_directly(http_bridge):
    status, body = raw_get(http_bridge, "/admin/x/../y")
    assert status == 200 and json.loads(body)["app"] == "admin"
    assert json.loads(body)["path_info"] == "/y"


DENY_ADMIN = "    location /admin/ { deny all; }\n"


def with_admin_denied(conf: str) -> str:
    head, sep, rest = conf.partition("    location / {")
    assert sep, conf
    return head + DENY_ADMIN + sep + rest


@pytest.fixture(scope="module")
def nginx_proxy(http_bridge):
    port = free_port()
    conf = ("server {\n    listen 127.0.0.1:%d;\n    location / {\n"
            "        proxy_pass http://127.0.0.1:%d;\n    }\n}\n" % (port, http_bridge))
    nginx = start_nginx(with_admin_denied(conf), port)
    yield port
    nginx.stop()


@pytest.mark.parametrize("target, expected", FORMS)
def test_nginx_proxy_pass_deny_rule_holds_for_dot_segments(nginx_proxy, target, expected):
    status, body = raw_get(nginx_proxy, target)
    assert_never_admin(status, body, expected, front=True)


def test_nginx_proxy_pass_denies_the_admin_mount(nginx_proxy):
    assert raw_get(nginx_proxy, "/admin/x")[0] == 403


@pytest.fixture(scope="module")
def nginx_fcgi():
    tmp = public_tmpdir("bridge-dots-fcgi-")
    sock = tmp / "site.sock"
    bridge = start_bridge(bridge_command("fcgi", *MOUNTS, "--bind", f"unix:{sock}", "--socket-mode", "666"), socket=sock)
    port = free_port()
    conf = include_file(ROOT / "docs" / "composition-nginx.conf", port=port, socket=sock,
                        fastcgi_params="/etc/nginx/fastcgi_params")
    nginx = start_nginx(with_admin_denied(conf), port)
    yield port
    nginx.stop()
    bridge.stop()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.parametrize("target, expected", FORMS)
def test_nginx_fastcgi_deny_rule_holds_for_dot_segments(nginx_fcgi, target, expected):
    status, body = raw_get(nginx_fcgi, target)
    assert_never_admin(status, body, expected, front=True)


def test_nginx_fastcgi_denies_the_admin_mount(nginx_fcgi):
    assert raw_get(nginx_fcgi, "/admin/x")[0] == 403


@pytest.fixture(scope="module")
def apache_cgi():
    python = public_bridge_python()
    root = public_tmpdir("bridge-dots-cgi-")
    apps = root / "apps"
    apps.mkdir()
    shutil.copy(ROOT / "tests" / "support" / "mount_apps.py", apps / "mount_apps.py")
    cgi_bin = root / "cgi-bin"
    cgi_bin.mkdir()
    script = cgi_bin / "site.cgi"
    mounts = " ".join(MOUNTS).replace("support.mount_apps", "mount_apps")
    script.write_text(f"#!/bin/sh\nexec {python} -m bridge cgi --pythonpath {apps} {mounts}\n")
    for d in (root, apps, cgi_bin):
        d.chmod(0o755)
    (apps / "mount_apps.py").chmod(0o644)
    script.chmod(0o755)
    apache = start_apache(f"""
ScriptAlias /site "{cgi_bin}/site.cgi"
<Directory "{cgi_bin}">
    Options +ExecCGI
    Require all granted
</Directory>
<Location "/site/admin/">
    Require all denied
</Location>
""")
    yield apache.port
    apache.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("target, expected", FORMS)
def test_apache_cgi_deny_rule_holds_for_dot_segments(apache_cgi, target, expected):
    status, body = raw_get(apache_cgi, target, prefix="/site")
    if status == 200:
        seen = json.loads(body)
        assert seen["app"] == "public", seen
        assert seen["script_name"] == "/site" and not seen["path_info"].startswith("/admin"), seen
    else:
        assert status in (400, 403, 404), (status, body)


def test_apache_cgi_denies_the_admin_mount_and_serves_the_rest(apache_cgi):
    assert raw_get(apache_cgi, "/admin/x", prefix="/site")[0] == 403
    status, body = raw_get(apache_cgi, "/public/x", prefix="/site")
    assert status == 200 and json.loads(body)["app"] == "public"


@pytest.mark.parametrize("target", AMBIGUOUS)
def test_a_dot_dot_after_an_empty_segment_never_reaches_the_admin_mount(
        http_bridge, nginx_proxy, nginx_fcgi, apache_cgi, target):
    assert raw_get(http_bridge, target)[0] == 400
    for port, prefix in ((nginx_proxy, ""), (nginx_fcgi, ""), (apache_cgi, "/site")):
        status, body = raw_get(port, target, prefix=prefix)
        assert status in (400, 403, 404) or json.loads(body)["app"] == "public", (port, status, body)
