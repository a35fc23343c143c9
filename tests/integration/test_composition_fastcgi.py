"""FastCGIApp for real: a PHP site behind php-fpm and Python apps behind ``bridge fcgi``.

The front is ``bridge http`` started with the commands of docs/composition.md;
php-fpm runs the pool config docs/composition-php-fpm.conf.  Load balancing
and failover use several backends, stopping one in the middle of a run.
"""
import hashlib
import os
import time
from pathlib import Path

import pytest
import requests

from support import bridge_command, free_port, public_tmpdir
from support.composition import DOC, PHP, SITE, start_bridge
from support.doc_commands import doc_command
from support.php_fpm import php_docroot, start_php_fpm


def wait_for_log(process, text, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in process.output():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(scope="module")
def php_root():
    root = php_docroot(PHP)
    yield root
    import shutil
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def fpm():
    server = start_php_fpm(children=4)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def site(fpm, php_root):
    port = free_port()
    argv = doc_command(DOC, "php", site=SITE, php_socket=fpm.socket, php_root=php_root, port=port)
    # one more mount, for the timeout test only (not in the docs)
    argv += ["--mount", f"/slow=fcgi://unix:{fpm.socket}?document_root={php_root}&timeout=0.5"]
    proc = start_bridge(argv, port=port)
    proc.url = f"http://127.0.0.1:{port}"
    yield proc
    proc.stop()


# -- php-fpm ---------------------------------------------------------------------


def test_php_gets_the_body_the_form_and_nginx_style_server_variables(site, php_root):
    r = requests.post(site.url + "/legacy/echo.php/extra/path?a=1&b=two", data={"k": "v", "z": "2"},
                      headers={"X-Custom": "yes", "Proxy": "http://evil.example:3128"})
    assert r.status_code == 200, site.output()
    assert r.headers["Content-Type"] == "application/json"
    assert r.headers["X-Backend"].startswith("php-fpm ")
    data = r.json()
    assert data["post"] == {"k": "v", "z": "2"}
    assert data["get"] == {"a": "1", "b": "two"}
    assert data["body_length"] == len("k=v&z=2")
    server = data["server"]
    assert server["SCRIPT_NAME"] == "/legacy/echo.php"
    assert server["PATH_INFO"] == "/extra/path"
    assert server["SCRIPT_FILENAME"] == f"{php_root}/echo.php"
    assert server["DOCUMENT_ROOT"] == str(php_root)
    assert server["REQUEST_URI"] == "/legacy/echo.php/extra/path?a=1&b=two"
    assert server["REQUEST_METHOD"] == "POST"
    assert server["GATEWAY_INTERFACE"] == "CGI/1.1"
    assert server["CONTENT_TYPE"] == "application/x-www-form-urlencoded"
    assert server["HTTP_X_CUSTOM"] == "yes"
    assert "HTTP_PROXY" not in server
    assert server["PHP_SELF"] == "/legacy/echo.php/extra/path"


def test_a_large_upload_streams_to_php_intact(site):
    body = os.urandom(4 << 20)
    r = requests.post(site.url + "/legacy/echo.php", data=body,
                      headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 200
    assert r.json()["body_length"] == len(body)
    assert r.json()["body_md5"] == hashlib.md5(body).hexdigest()


def test_a_chunked_upload_reaches_php_with_a_content_length(site):
    def chunks():
        yield b"first,"
        yield b"second"
    r = requests.post(site.url + "/legacy/echo.php", data=chunks(),
                      headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 200
    assert r.json()["body_length"] == 12
    assert r.json()["server"]["CONTENT_LENGTH"] == "12"


def test_concurrent_requests_on_pooled_connections_never_mix_up_answers(site):
    from concurrent.futures import ThreadPoolExecutor

    def one(i):
        body = os.urandom(1000 + i * 37)
        r = requests.post(f"{site.url}/legacy/echo.php?n={i}", data=body,
                          headers={"Content-Type": "application/octet-stream"})
        return i, r.status_code, r.json(), hashlib.md5(body).hexdigest()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(64)))
    for i, status, data, md5 in results:
        assert status == 200
        assert data["get"] == {"n": str(i)}
        assert data["body_md5"] == md5


def test_a_large_php_response_streams_to_the_client(site):
    r = requests.get(site.url + "/legacy/stream.php?n=3000", stream=True)
    assert r.status_code == 200
    lines = list(r.iter_lines())
    assert len(lines) == 3000
    assert lines[0].startswith(b"line 0 ") and lines[-1].startswith(b"line 2999 ")
    assert all(len(line) == 1023 for line in lines)


def test_php_status_and_redirects_reach_the_client(site):
    assert requests.get(site.url + "/legacy/echo.php?status=418").status_code == 418
    r = requests.get(site.url + "/legacy/redirect.php", allow_redirects=False)
    assert r.status_code == 301
    assert r.headers["Location"] == "/new/place"


def test_a_directory_runs_its_index_php(site):
    r = requests.get(site.url + "/legacy/sub/")
    assert r.status_code == 200
    assert r.text == "index of sub: /legacy/sub/index.php\n"


def test_a_missing_php_script_is_php_fpms_404(site):
    r = requests.get(site.url + "/legacy/missing.php")
    assert r.status_code == 404


def test_php_warnings_go_to_bridges_error_log(site):
    r = requests.get(site.url + "/legacy/echo.php?stderr=legacy+page+complains")
    assert r.status_code == 200
    assert "PHP message" not in r.text
    assert wait_for_log(site, "PHP message: legacy page complains")


def test_a_ported_page_is_served_by_the_python_app_and_the_rest_by_php(site):
    r = requests.get(site.url + "/legacy/report.php?year=2024")
    assert r.json()["app"] == "newsite"
    assert (r.json()["script_name"], r.json()["path_info"]) == ("/legacy/report.php", "")
    assert requests.get(site.url + "/legacy/echo.php").headers["X-Backend"].startswith("php-fpm")
    assert requests.get(site.url + "/").json()["app"] == "newsite"


def test_a_php_backend_too_slow_is_a_504(site):
    r = requests.get(site.url + "/slow/slow.php?sleep=2")
    assert r.status_code == 504
    assert wait_for_log(site, "did not answer GET /slow/slow.php within 0.5s (504)")


def test_one_of_two_php_fpm_pools_stopped_mid_run_loses_no_request(php_root):
    pools = [start_php_fpm(children=1), start_php_fpm(children=1)]
    port = free_port()
    front = start_bridge(bridge_command(
        "http", "--mount", f"/legacy=fcgi://unix:{pools[0].socket}?document_root={php_root}",
        "--mount", f"/legacy=fcgi://unix:{pools[1].socket}", "--bind", f"127.0.0.1:{port}"), port=port)
    url = f"http://127.0.0.1:{port}/legacy/echo.php"
    masters = []
    try:
        for i in range(12):
            if i == 6:
                pools[0].stop()
            r = requests.get(url)
            assert r.status_code == 200, front.output()
            worker = int(r.headers["X-Backend"].split()[1])
            masters.append(int(Path(f"/proc/{worker}/status").read_text().split("PPid:")[1].split()[0]))
        assert set(masters[:6]) == {pools[0].pid, pools[1].pid}
        assert set(masters[6:]) == {pools[1].pid}
        assert "taken out" in front.output()
    finally:
        front.stop()
        for pool in pools:
            pool.stop()


# -- bridge fcgi backends: balancing and failover ---------------------------------


@pytest.fixture
def balanced():
    tmp = public_tmpdir("bridge-balance-")
    sockets = {f"b{i}": tmp / f"b{i}.sock" for i in (1, 2, 3)}
    port = free_port()
    values = dict(site=SITE, port=port, **sockets)
    backends = [start_bridge(doc_command(DOC, "balanced", i, **values), socket=sockets[f"b{i + 1}"])
                for i in range(3)]
    front = start_bridge(doc_command(DOC, "balanced", 3, **values), port=port)
    front.url = f"http://127.0.0.1:{port}"
    front.backends = backends
    front.values = values
    yield front
    front.stop()
    for b in front.backends:
        b.stop()
    import shutil
    shutil.rmtree(tmp, ignore_errors=True)


def test_requests_are_spread_round_robin_over_bridge_fcgi_backends(balanced):
    pids = []
    for _ in range(9):
        r = requests.get(balanced.url + "/py/some/where?x=1")
        assert r.status_code == 200, balanced.output()
        data = r.json()
        assert (data["script_name"], data["path_info"], data["query"]) == ("/py", "/some/where", "x=1")
        pids.append(data["pid"])
    assert sorted(set(pids)) == sorted(b.pid for b in balanced.backends)
    assert all(pids.count(pid) == 3 for pid in set(pids))


def test_a_body_is_forwarded_to_a_bridge_backend(balanced):
    body = os.urandom(300_000)
    r = requests.put(balanced.url + "/py/upload", data=body)
    assert r.json()["method"] == "PUT" and r.json()["body_length"] == len(body)


def test_a_backend_stopped_mid_run_is_taken_out_and_back_after_retry_after(balanced):
    stopped = balanced.backends[1]
    seen_after = []
    for i in range(30):
        if i == 10:
            stopped.stop()
        r = requests.get(balanced.url + "/py/x")
        assert r.status_code == 200, balanced.output()
        if i > 10:
            seen_after.append(r.json()["pid"])
    assert stopped.pid not in seen_after
    assert len(set(seen_after)) == 2
    assert wait_for_log(balanced, "b2.sock taken out for 1s")
    # restarted: back in the rotation once retry_after has passed
    values = balanced.values
    balanced.backends[1] = start_bridge(doc_command(DOC, "balanced", 1, **values), socket=values["b2"])
    time.sleep(1.1)
    pids = {requests.get(balanced.url + "/py/x").json()["pid"] for _ in range(6)}
    assert balanced.backends[1].pid in pids
    assert wait_for_log(balanced, "b2.sock is back")


def test_no_backend_left_is_a_502_naming_each_one(balanced):
    for b in balanced.backends:
        b.stop()
    r = requests.get(balanced.url + "/py/x")
    assert r.status_code == 502
    assert "sock" not in r.text
    assert wait_for_log(balanced, "no FastCGI backend could take GET /py/x")
    log = balanced.output()
    assert all(f"b{i}.sock" in log for i in (1, 2, 3))
