"""docs/http.md shows the nginx config the tests load and the options the code declares."""
from __future__ import annotations

import re

from bridge.config import load_declarations, option_table
from support import ROOT

DOC = ROOT / "docs" / "http.md"


def test_http_doc_shows_every_nginx_config_the_tests_load_verbatim():
    doc = DOC.read_text()
    for conf in sorted((ROOT / "docs" / "nginx").glob("http-*.conf")):
        assert conf.read_text().rstrip("\n") in doc, f"{conf.name} is not shown verbatim in docs/http.md"


def test_http_doc_option_table_is_the_generated_one():
    doc = DOC.read_text()
    start = doc.index("<!-- generated from src/bridge/http/options.py -->")
    table = doc[doc.index("\n", start) + 1:doc.index("<!-- end generated -->", start)]
    names = re.findall(r'setting\("(\w+)"', (ROOT / "src" / "bridge" / "http" / "options.py").read_text())
    declared = load_declarations()
    heads = tuple("| " + ", ".join(f"`{f}`" for f in declared[n].flags) + " |" for n in names)
    rows = option_table("http").splitlines()
    assert table.splitlines() == rows[:2] + [r for r in rows if r.startswith(heads)]


def test_static_files_are_not_gzipped_on_the_fly_but_their_precompressed_siblings_are_served():
    """http.md: --gzip compresses the app's responses, never --static files; precompress them."""
    import gzip
    import shutil
    import subprocess

    import requests

    from support import Process, bridge_env, free_port, public_tmpdir, wait_for_port
    from support.doc_commands import doc_command, doc_commands

    d = public_tmpdir("bridge-http-static-")
    public = d / "public"
    public.mkdir()
    css = ("body { color: #333; margin: 0 auto; }\n" * 200).encode()
    (public / "app.css").write_bytes(css)
    (public / "notes.txt").write_bytes(b"plain text, never precompressed\n" * 100)
    port = free_port()
    argv = doc_command("docs/http.md", "http-static-gzip", literal={"myapp:app": "bridge.demo:app"})
    server = Process(argv + ["--bind", f"127.0.0.1:{port}"], env=bridge_env(), cwd=str(d))
    try:
        wait_for_port(port, proc=server.proc)
        accept = {"Accept-Encoding": "gzip"}
        url = f"http://127.0.0.1:{port}"
        # Not precompressed yet: the file goes out as it is, --gzip or not.
        r = requests.get(f"{url}/static/app.css", headers=accept, stream=True, timeout=10)
        assert r.status_code == 200 and "Content-Encoding" not in r.headers
        assert r.raw.read() == css
        # The app's own responses are compressed.
        r = requests.get(f"{url}/", headers=accept, stream=True, timeout=10)
        assert r.status_code == 200 and r.headers.get("Content-Encoding") == "gzip"
        # The guide's precompress command, as written, in the directory it names.
        [find] = doc_commands("docs/http.md", "http-precompress")
        subprocess.run(["/bin/sh", "-c", find], cwd=str(d), check=True, timeout=60)
        r = requests.get(f"{url}/static/app.css", headers=accept, stream=True, timeout=10)
        assert r.status_code == 200 and r.headers.get("Content-Encoding") == "gzip"
        assert gzip.decompress(r.raw.read()) == css
        r = requests.get(f"{url}/static/notes.txt", headers=accept, stream=True, timeout=10)
        assert "Content-Encoding" not in r.headers     # .txt is not in the guide's list
    finally:
        server.stop()
        shutil.rmtree(d, ignore_errors=True)
