"""``--mount`` on the other two gateways: nginx → ``bridge fcgi``, and ``bridge cgi``.

nginx runs docs/composition-nginx.conf, bridge the "nginx" command of
docs/composition.md: one FastCGI app behind nginx routing to the new app,
the cgi-bin scripts and php-fpm.
"""
import shutil
import subprocess

import pytest
import requests

from support import ROOT, bridge_command, bridge_env, free_port, public_tmpdir, require_binary
from support.composition import CGI_BIN, DOC, PHP, SITE, start_bridge
from support.doc_commands import doc_command
from support.nginx import include_file, start_nginx
from support.php_fpm import php_docroot, start_php_fpm


@pytest.fixture(scope="module")
def behind_nginx():
    require_binary("nginx")
    php_root = php_docroot(PHP)
    fpm = start_php_fpm(children=2)
    tmp = public_tmpdir("bridge-compose-nginx-")
    sock = tmp / "site.sock"
    bridge = start_bridge(doc_command(DOC, "nginx", site=SITE, cgi_bin=CGI_BIN, php_socket=fpm.socket,
                                      php_root=php_root, socket=sock), socket=sock)
    port = free_port()
    nginx = start_nginx(include_file(ROOT / "docs" / "composition-nginx.conf", port=port, socket=sock,
                                     fastcgi_params="/etc/nginx/fastcgi_params"), port)
    yield nginx.url, bridge
    nginx.stop()
    bridge.stop()
    fpm.stop()
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(php_root, ignore_errors=True)


def test_nginx_to_bridge_fcgi_reaches_the_new_app(behind_nginx):
    url, _ = behind_nginx
    data = requests.get(url + "/shop/cart?id=3").json()
    assert (data["app"], data["script_name"], data["path_info"], data["query"]) == \
        ("newsite", "", "/shop/cart", "id=3")


def test_nginx_to_bridge_fcgi_runs_a_cgi_script(behind_nginx):
    url, _ = behind_nginx
    r = requests.post(url + "/cgi-bin/hello.sh/p?q=1", data=b"via nginx", headers={"Proxy": "http://evil:1"})
    assert r.status_code == 200
    assert "script_name=/cgi-bin/hello.sh" in r.text and "path_info=/p" in r.text
    assert "proxy=unset" in r.text and "body=via nginx" in r.text


def test_nginx_to_bridge_fcgi_to_php_fpm(behind_nginx):
    url, _ = behind_nginx
    r = requests.post(url + "/legacy/echo.php/x?a=1", data={"k": "v"})
    assert r.status_code == 200
    server = r.json()["server"]
    assert (server["SCRIPT_NAME"], server["PATH_INFO"]) == ("/legacy/echo.php", "/x")
    assert r.json()["post"] == {"k": "v"}


def run_cgi_gateway(*args, **env):
    base = bridge_env(GATEWAY_INTERFACE="CGI/1.1", SERVER_PROTOCOL="HTTP/1.1", SERVER_NAME="localhost",
                      SERVER_PORT="80", REMOTE_ADDR="127.0.0.1", QUERY_STRING="", SCRIPT_NAME="/site.cgi")
    base.update(env)
    return subprocess.run(bridge_command("cgi", *args), env=base, input=b"", capture_output=True, timeout=30)


def test_bridge_cgi_mounts_a_cgi_bin_without_a_positional_app():
    out = run_cgi_gateway("--mount", f"/cgi-bin=cgi:{CGI_BIN}", REQUEST_METHOD="GET",
                          PATH_INFO="/cgi-bin/guestbook.pl/x")
    assert out.returncode == 0
    assert out.stdout.startswith(b"Status: 200 OK\r\n"), out.stdout + out.stderr
    assert b"<p>path_info=/x</p>" in out.stdout


def test_bridge_cgi_mount_with_an_app_at_the_root():
    out = run_cgi_gateway("newsite:app", "--pythonpath", str(SITE), "--mount", f"/cgi-bin=cgi:{CGI_BIN}",
                          REQUEST_METHOD="GET", PATH_INFO="/about")
    assert out.stdout.startswith(b"Status: 200 OK\r\n"), out.stdout + out.stderr
    assert b'"script_name": "/site.cgi", "path_info": "/about"' in out.stdout
