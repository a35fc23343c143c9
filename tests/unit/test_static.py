"""bridge.middleware.Static called directly, as a WSGI server would (no network)."""
import collections
import gzip
import io
import os
import threading

import pytest

from bridge import httputil
from bridge.middleware.static import FileSlice, Static
from bridge.wsgi import FileWrapper, call_app, make_environ

CSS = b"body { color: red }\n" * 50


def fallback_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"app:" + environ["PATH_INFO"].encode("latin-1")]


@pytest.fixture()
def site(tmp_path):
    root = tmp_path / "site"
    root.mkdir()
    (root / "app.css").write_bytes(CSS)
    (root / "data.bin").write_bytes(bytes(range(256)) * 40)
    (root / "empty.txt").write_bytes(b"")
    (root / "page.html").write_text("<p>hi</p>")
    (root / "sub").mkdir()
    (root / "sub" / "index.html").write_text("<h1>index</h1>")
    (root / "sub" / "x.json").write_text("{}")
    (root / "nodir").mkdir()
    (root / ".env").write_text("SECRET=1")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("[core]")
    (root / "pkg.tar.gz").write_bytes(gzip.compress(b"tar"))
    (root / "%2e%2e").write_text("a file literally named %2e%2e")
    (tmp_path / "secret.txt").write_text("outside")
    os.symlink(tmp_path / "secret.txt", root / "link-out.txt")
    os.symlink(tmp_path, root / "dir-out")
    os.symlink(root / "app.css", root / "link-in.css")
    os.symlink(root / ".env", root / "env-link.txt")
    return root


def run(app, path, method="GET", **headers):
    environ = make_environ({"REQUEST_METHOD": method, "PATH_INFO": path, "SCRIPT_NAME": "",
                            **{"HTTP_" + k.upper(): v for k, v in headers.items()}},
                           input=io.BytesIO(), errors=io.StringIO(), multithread=False, multiprocess=False)
    captured = {}

    def start_response(status, hdrs, exc_info=None):
        captured["status"], captured["headers"] = status, hdrs
        return lambda data: None

    result = app(environ, start_response)
    try:
        body = b"".join(result)
    finally:
        if hasattr(result, "close"):
            result.close()
    return captured["status"], dict(captured["headers"]), body, environ


def static(site, **kw):
    return Static(fallback_app, {"/s": str(site)}, **kw)


# -- plain GET ---------------------------------------------------------------

def test_get_serves_the_file_with_type_length_and_validators(site):
    status, headers, body, _ = run(static(site), "/s/app.css")
    st = os.stat(site / "app.css")
    assert status == "200 OK" and body == CSS
    assert headers["Content-Type"] == "text/css; charset=utf-8"
    assert headers["Content-Length"] == str(len(CSS))
    assert headers["Last-Modified"] == httputil.http_date(st.st_mtime)
    assert headers["ETag"] == f'"{st.st_mtime_ns:x}-{st.st_size:x}"'
    assert httputil.parse_etag(headers["ETag"])[0] is False      # strong
    assert headers["Cache-Control"] == "no-cache"
    assert headers["Accept-Ranges"] == "bytes"


def test_binary_and_json_types_carry_no_charset(site):
    assert run(static(site), "/s/data.bin")[1]["Content-Type"] == "application/octet-stream"
    assert run(static(site), "/s/sub/x.json")[1]["Content-Type"] == "application/json"
    assert run(static(site), "/s/page.html")[1]["Content-Type"] == "text/html; charset=utf-8"


def test_a_file_asked_by_its_compressed_name_is_not_labelled_as_its_content(site):
    status, headers, body, _ = run(static(site), "/s/pkg.tar.gz")
    assert headers["Content-Type"] == "application/gzip"
    assert "Content-Encoding" not in headers


def test_max_age_sets_public_cache_control(site):
    assert run(static(site, max_age=3600), "/s/app.css")[1]["Cache-Control"] == "public, max-age=3600"


def test_paths_outside_the_prefix_go_to_the_app(site):
    app = static(site)
    assert run(app, "/other")[2] == b"app:/other"
    assert run(app, "/sx/app.css")[2] == b"app:/sx/app.css"        # whole segments only
    assert run(app, "/")[2] == b"app:/"


def test_longest_prefix_wins(site, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "app.css").write_bytes(b"other")
    app = Static(fallback_app, [("/s", str(site)), ("/s/deep", str(other))])
    assert run(app, "/s/deep/app.css")[2] == b"other"
    assert run(app, "/s/app.css")[2] == CSS


def test_missing_file_under_the_prefix_is_404_not_the_app(site):
    status, _, body, _ = run(static(site), "/s/nope.css")
    assert status == "404 Not Found" and body == b"Not Found\n"


def test_without_an_app_everything_else_is_404(site):
    assert run(Static(None, {"/s": str(site)}), "/x")[0] == "404 Not Found"


def test_empty_file_is_200_with_length_zero(site):
    status, headers, body, _ = run(static(site), "/s/empty.txt", range="bytes=0-10")
    assert status == "200 OK" and headers["Content-Length"] == "0" and body == b""


def test_prefix_given_as_root_serves_everything(site):
    app = Static(fallback_app, {"/": str(site)})
    assert run(app, "/app.css")[2] == CSS


def test_bad_configuration_is_refused(site, tmp_path):
    with pytest.raises(ValueError, match="not a directory"):
        Static(None, {"/s": str(tmp_path / "missing")})
    with pytest.raises(ValueError, match="must start with"):
        Static(None, {"s": str(site)})
    with pytest.raises(ValueError, match="negative"):
        Static(None, {"/s": str(site)}, max_age=-1)


# -- methods -----------------------------------------------------------------

def test_head_gives_get_headers_without_body(site):
    get = run(static(site), "/s/app.css")
    head = run(static(site), "/s/app.css", method="HEAD")
    assert head[0] == "200 OK" and head[2] == b""
    assert head[1] == get[1]


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "BREW"])
def test_other_methods_get_405_with_allow(site, method):
    status, headers, _, _ = run(static(site), "/s/app.css", method=method)
    assert status == "405 Method Not Allowed" and headers["Allow"] == "GET, HEAD"


# -- conditional requests ----------------------------------------------------

def validators(site):
    _, headers, _, _ = run(static(site), "/s/app.css")
    return headers["ETag"], headers["Last-Modified"]


def test_if_none_match_with_the_etag_gives_304_without_body(site):
    etag, _ = validators(site)
    status, headers, body, _ = run(static(site), "/s/app.css", if_none_match=etag)
    assert status == "304 Not Modified" and body == b""
    assert headers["ETag"] == etag and headers["Cache-Control"] == "no-cache"
    assert "Content-Length" not in headers and "Content-Type" not in headers


@pytest.mark.parametrize("template", ['"x", {etag}', "W/{etag}", "*", '{etag},"y"'])
def test_if_none_match_lists_weak_tags_and_star(site, template):
    etag, _ = validators(site)
    assert run(static(site), "/s/app.css", if_none_match=template.format(etag=etag))[0] == "304 Not Modified"


def test_if_none_match_other_tag_gives_200(site):
    assert run(static(site), "/s/app.css", if_none_match='"nope"')[0] == "200 OK"


def test_if_modified_since_gives_304_when_not_modified_and_200_when_older(site):
    _, last_modified = validators(site)
    assert run(static(site), "/s/app.css", if_modified_since=last_modified)[0] == "304 Not Modified"
    assert run(static(site), "/s/app.css", if_modified_since="Thu, 01 Jan 1970 00:00:00 GMT")[0] == "200 OK"
    assert run(static(site), "/s/app.css", if_modified_since="garbage")[0] == "200 OK"


def test_if_none_match_wins_over_if_modified_since(site):
    _, last_modified = validators(site)
    status = run(static(site), "/s/app.css", if_none_match='"other"', if_modified_since=last_modified)[0]
    assert status == "200 OK"


def test_if_match_and_if_unmodified_since_give_412(site):
    etag, last_modified = validators(site)
    assert run(static(site), "/s/app.css", if_match='"other"')[0] == "412 Precondition Failed"
    assert run(static(site), "/s/app.css", if_match=etag)[0] == "200 OK"
    assert run(static(site), "/s/app.css", if_match="W/" + etag)[0] == "412 Precondition Failed"
    assert run(static(site), "/s/app.css", if_unmodified_since="Thu, 01 Jan 1970 00:00:00 GMT")[0] == "412 Precondition Failed"
    assert run(static(site), "/s/app.css", if_unmodified_since=last_modified)[0] == "200 OK"


# -- ranges ------------------------------------------------------------------

DATA = bytes(range(256)) * 40


@pytest.mark.parametrize("spec, first, last", [
    ("bytes=0-99", 0, 99), ("bytes=100-", 100, len(DATA) - 1), ("bytes=-100", len(DATA) - 100, len(DATA) - 1),
    ("bytes=5000-999999", 5000, len(DATA) - 1), ("bytes=7-7", 7, 7),
])
def test_single_range_gives_206_with_exact_bytes(site, spec, first, last):
    status, headers, body, _ = run(static(site), "/s/data.bin", range=spec)
    assert status == "206 Partial Content"
    assert headers["Content-Range"] == f"bytes {first}-{last}/{len(DATA)}"
    assert headers["Content-Length"] == str(last - first + 1)
    assert body == DATA[first:last + 1]


def test_unsatisfiable_range_gives_416_with_the_size(site):
    status, headers, _, _ = run(static(site), "/s/data.bin", range=f"bytes={len(DATA)}-")
    assert status == "416 Range Not Satisfiable"
    assert headers["Content-Range"] == f"bytes */{len(DATA)}"


def test_several_ranges_are_answered_with_the_whole_file(site):
    status, headers, body, _ = run(static(site), "/s/data.bin", range="bytes=0-1,10-20")
    assert status == "200 OK" and body == DATA and "Content-Range" not in headers


def test_malformed_range_is_ignored(site):
    assert run(static(site), "/s/data.bin", range="bytes=9-1")[0] == "200 OK"
    assert run(static(site), "/s/data.bin", range="lines=1-2")[0] == "200 OK"


def test_range_is_ignored_for_head(site):
    status, headers, body, _ = run(static(site), "/s/data.bin", method="HEAD", range="bytes=0-9")
    assert status == "200 OK" and headers["Content-Length"] == str(len(DATA)) and body == b""


def test_if_range_with_current_etag_or_date_applies_the_range(site):
    _, headers, _, _ = run(static(site), "/s/data.bin")
    for validator in (headers["ETag"], headers["Last-Modified"]):
        assert run(static(site), "/s/data.bin", range="bytes=0-9", if_range=validator)[0] == "206 Partial Content"


def test_if_range_with_stale_or_weak_validator_gives_the_whole_file(site):
    _, headers, _, _ = run(static(site), "/s/data.bin")
    for validator in ('"stale"', "W/" + headers["ETag"], "Thu, 01 Jan 1970 00:00:00 GMT"):
        status, _, body, _ = run(static(site), "/s/data.bin", range="bytes=0-9", if_range=validator)
        assert status == "200 OK" and body == DATA


# -- precompressed siblings ----------------------------------------------------

@pytest.fixture()
def precompressed(site):
    (site / "app.css.gz").write_bytes(gzip.compress(CSS))
    (site / "app.css.br").write_bytes(b"brotli-bytes")
    return site


def test_gzip_sibling_served_with_content_encoding_and_vary(precompressed):
    status, headers, body, _ = run(static(precompressed), "/s/app.css", accept_encoding="gzip, deflate")
    assert status == "200 OK" and gzip.decompress(body) == CSS
    assert headers["Content-Encoding"] == "gzip"
    assert headers["Vary"] == "Accept-Encoding"
    assert headers["Content-Type"] == "text/css; charset=utf-8"
    assert headers["Content-Length"] == str(len(body))


def test_brotli_preferred_when_accepted(precompressed):
    _, headers, body, _ = run(static(precompressed), "/s/app.css", accept_encoding="gzip, br")
    assert headers["Content-Encoding"] == "br" and body == b"brotli-bytes"


def test_q_zero_refuses_a_sibling(precompressed):
    _, headers, body, _ = run(static(precompressed), "/s/app.css", accept_encoding="br;q=0, gzip;q=0")
    assert "Content-Encoding" not in headers and body == CSS
    assert headers["Vary"] == "Accept-Encoding"


def test_identity_client_gets_the_original_with_vary(precompressed):
    _, headers, body, _ = run(static(precompressed), "/s/app.css")
    assert body == CSS and "Content-Encoding" not in headers and headers["Vary"] == "Accept-Encoding"


def test_each_encoding_has_its_own_etag(precompressed):
    plain = run(static(precompressed), "/s/app.css")[1]["ETag"]
    gz = run(static(precompressed), "/s/app.css", accept_encoding="gzip")[1]["ETag"]
    assert plain != gz
    assert run(static(precompressed), "/s/app.css", accept_encoding="gzip", if_none_match=plain)[0] == "200 OK"
    status, headers, _, _ = run(static(precompressed), "/s/app.css", accept_encoding="gzip", if_none_match=gz)
    assert status == "304 Not Modified" and headers["Vary"] == "Accept-Encoding"


def test_no_vary_when_there_is_no_sibling(site):
    assert "Vary" not in run(static(site), "/s/data.bin", accept_encoding="gzip")[1]


def test_sibling_symlink_out_of_the_directory_is_not_served(site, tmp_path):
    (tmp_path / "evil.gz").write_bytes(b"evil")
    os.symlink(tmp_path / "evil.gz", site / "page.html.gz")
    _, headers, body, _ = run(static(site), "/s/page.html", accept_encoding="gzip")
    assert body == b"<p>hi</p>" and "Content-Encoding" not in headers


# -- safety --------------------------------------------------------------------

# PATH_INFO as a server hands it over: already percent-decoded once.
REFUSED_404 = [
    "/s/../secret.txt", "/s/sub/../../secret.txt", "/s/./app.css", "/s/..", "/s/sub/..",
    "/s/%2e%2e/secret.txt",            # double-encoded: "%2e%2e" is a literal name, not ".."
    "/s/%2e%2e%2fsecret.txt", "/s/..%2fsecret.txt", "/s/%252e%252e/secret.txt",
    "/s/..\\secret.txt", "/s/sub\\..\\..\\secret.txt", "/s/\\etc\\passwd",
    "/s//etc/passwd", "/s//" + os.path.abspath("/etc/passwd"), "/s/sub//x.json",
    "/s/link-out.txt", "/s/dir-out/secret.txt", "/s/env-link.txt",
    "/s/.env", "/s/.git/config", "/s/.git/", "/s/sub/.hidden",
    "/s/", "/s", "/s/sub", "/s/sub/", "/s/nodir/",
    "/s/app.css/", "/s/app.css/..",
]


@pytest.mark.parametrize("path", REFUSED_404)
def test_paths_that_leave_the_directory_or_are_hidden_give_404(site, path):
    status, _, body, _ = run(static(site), path)
    assert status == "404 Not Found", path
    assert b"outside" not in body and b"SECRET" not in body


@pytest.mark.parametrize("path", ["/s/app.css\0.png", "/s/\0", "/s/%00"[:3] + "\0"])
def test_nul_byte_gives_400(site, path):
    assert run(static(site), path)[0] == "400 Bad Request"


def test_literal_percent_name_is_served_as_a_name(site):
    status, _, body, _ = run(static(site, hidden=True), "/s/%2e%2e")
    assert status == "200 OK" and body == b"a file literally named %2e%2e"


def test_symlink_inside_the_directory_is_followed(site):
    assert run(static(site), "/s/link-in.css")[2] == CSS


def test_hidden_files_served_when_asked(site):
    assert run(static(site, hidden=True), "/s/.env")[2] == b"SECRET=1"
    assert run(static(site, hidden=True), "/s/../secret.txt")[0] == "404 Not Found"


def test_non_latin1_path_info_is_a_bad_request(site):
    assert run(static(site), "/s/\u20ac")[0] == "400 Bad Request"


def test_utf8_file_names_are_found(site):
    (site / "café.txt").write_bytes(b"latte")
    path = "/s/" + "café.txt".encode("utf-8").decode("latin-1")
    assert run(static(site), path)[2] == b"latte"


def test_unreadable_file_is_404_and_logged(site, monkeypatch):
    (site / "locked.txt").write_text("x")
    real_open = os.open

    def deny(path, *args, **kwargs):
        if os.fsdecode(path).endswith("locked.txt"):
            raise PermissionError(13, "Permission denied")
        return real_open(path, *args, **kwargs)
    monkeypatch.setattr(os, "open", deny)   # the tests may run as root, who reads everything
    status, _, _, environ = run(static(site), "/s/locked.txt")
    assert status == "404 Not Found"
    assert "cannot open" in environ["wsgi.errors"].getvalue()


def test_fifo_is_not_served(site):
    os.mkfifo(site / "pipe")
    assert run(static(site), "/s/pipe")[0] == "404 Not Found"


# -- directories ----------------------------------------------------------------

def test_directory_index_only_when_enabled(site):
    assert run(static(site), "/s/sub/")[0] == "404 Not Found"
    status, headers, body, _ = run(static(site, index=True), "/s/sub/")
    assert status == "200 OK" and body == b"<h1>index</h1>"


def test_directory_without_slash_redirects_when_index_enabled(site):
    environ_path = "/s/sub"
    status, headers, _, _ = run(static(site, index=True), environ_path)
    assert status == "301 Moved Permanently" and headers["Location"] == "/s/sub/"


def test_directory_without_index_file_is_404_even_with_index(site):
    assert run(static(site, index=True), "/s/nodir/")[0] == "404 Not Found"


# -- file_wrapper / sendfile ----------------------------------------------------

class SendfileTransport:
    def __init__(self):
        self.head = None
        self.sent = []

    def send_head(self, status, headers, body, end):
        self.head = (status, headers, body, end)

    def send_body(self, data):
        self.sent.append(("body", data))

    def send_file(self, fd, offset, count):
        self.sent.append(("file", os.pread(fd, count, offset)))

    def finish(self):
        self.sent.append(("finish",))

    def abort(self):
        self.sent.append(("abort",))


def call(app, path, transport, **headers):
    environ = make_environ({"REQUEST_METHOD": "GET", "PATH_INFO": path,
                            **{"HTTP_" + k.upper(): v for k, v in headers.items()}},
                           input=io.BytesIO(), errors=io.StringIO(), multithread=False, multiprocess=False)
    return call_app(app, environ, transport)


def test_file_goes_out_through_sendfile(site):
    transport = SendfileTransport()
    response = call(static(site), "/s/data.bin", transport)
    assert transport.sent == [("file", DATA), ("finish",)]
    assert response.bytes_sent == len(DATA) and not response.failed


def test_range_goes_out_through_sendfile_at_its_offset(site):
    transport = SendfileTransport()
    call(static(site), "/s/data.bin", transport, range="bytes=1000-1099")
    assert transport.head[0] == "206 Partial Content"
    assert transport.sent == [("file", DATA[1000:1100]), ("finish",)]


class IterTransport:
    """A transport without send_file (like CGI): the wrapper is iterated."""

    def __init__(self):
        self.body = b""

    def send_head(self, status, headers, body, end):
        self.status = status
        self.body += body

    def send_body(self, data):
        self.body += data

    def finish(self):
        pass

    def abort(self):
        raise AssertionError("aborted")


def test_range_without_sendfile_iterates_exactly_the_slice(site):
    transport = IterTransport()
    response = call(static(site), "/s/data.bin", transport, range="bytes=10-7009")
    assert transport.status == "206 Partial Content" and transport.body == DATA[10:7010]
    assert not response.failed


def test_under_cgi_a_range_is_read_from_the_file_not_sent_whole(site):
    from bridge.cgi.gateway import run_cgi
    out = io.BytesIO()
    run_cgi(static(site), stdin=io.BytesIO(), stdout=out, stderr=io.StringIO(),
            environ={"GATEWAY_INTERFACE": "CGI/1.1", "REQUEST_METHOD": "GET", "PATH_INFO": "/s/data.bin",
                     "HTTP_RANGE": "bytes=100-199"})
    head, _, body = out.getvalue().partition(b"\r\n\r\n")
    assert head.startswith(b"Status: 206 Partial Content\r\n")
    assert b"Content-Range: bytes 100-199/10240" in head and body == DATA[100:200]


def test_file_slice_stops_at_its_length(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"0123456789")
    s = FileSlice(os.open(p, os.O_RDONLY), 2, 5)
    assert s.tell() == 2
    assert b"".join(FileWrapper(s, 2)) == b"23456"
    assert s.read() == b""
    s.close()


# -- the flags, the hook and the docs (all three middlewares) ----------------------

from pathlib import Path  # noqa: E402

DOCS = Path(__file__).resolve().parents[2] / "docs"
MIDDLEWARE_SETTINGS = ("static", "static_max_age", "static_index", "static_hidden", "gzip",
                       "gzip_min_size", "gzip_types", "gzip_level", "lint")


def test_flags_build_static_around_gzip(site):
    from bridge.config import Config
    from bridge.middleware.gzip import Gzip
    from bridge.middleware.options import wrap_app
    config = Config.build("http", {"static": [f"/s={site}"], "gzip": True, "gzip_types": "text/*, application/x-mine",
                                   "static_max_age": "60", "static_index": True}, environ={})
    app = wrap_app(fallback_app, config)
    assert isinstance(app, Static) and isinstance(app.app, Gzip) and app.app.app is fallback_app
    assert [t.strip() for t in app.app.types] == ["text/*", "application/x-mine"]
    assert app.cache_control == "public, max-age=60" and app.index
    assert run(app, "/s/app.css")[2] == CSS


def test_no_flags_leave_the_app_alone():
    from bridge.config import Config
    from bridge.middleware.options import wrap_app
    assert wrap_app(fallback_app, Config.build("cgi", {}, environ={})) is fallback_app


def test_static_without_an_app_serves_files_and_404s_the_rest(site):
    from bridge.config import Config
    from bridge.middleware.options import wrap_app
    app = wrap_app(None, Config.build("http", {"static": [f"/={site}"]}, environ={}))
    assert run(app, "/app.css")[2] == CSS


@pytest.mark.parametrize("raw, message", [
    ("/s", "PREFIX=DIR"), ("s=/tmp", "must start with '/'"), ("/s=/no/such/dir", "not a directory"),
])
def test_bad_static_flag_is_one_clear_error(raw, message):
    from bridge.config import Config, ConfigError
    with pytest.raises(ConfigError, match=message):
        Config.build("http", {"static": [raw]}, environ={})


def test_static_mounts_from_the_environment(site, tmp_path):
    from bridge.config import Config
    config = Config.build("fcgi", {}, environ={"BRIDGE_STATIC": f"/a={site},/b={tmp_path}"})
    assert config.static == [("/a", str(site)), ("/b", str(tmp_path))]


def test_docs_flag_table_is_the_declared_settings():
    from bridge.config import load_declarations
    declared = load_declarations()
    text = (DOCS / "middleware.md").read_text()
    table = text.split("<!-- generated", 1)[1].split("<!-- end generated -->", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    expected = []
    for name in MIDDLEWARE_SETTINGS:
        s = declared[name]
        default = "" if s.default in (None, [], "", False) else f"`{s.default}`"
        expected.append(f"| {', '.join(f'`{f}`' for f in s.flags)} | `{s.env}` | {default} | {s.help} |")
    assert rows == expected


@pytest.mark.parametrize("conf", ["middleware-nginx.conf", "middleware-nginx-fcgi.conf"])
def test_docs_show_the_nginx_configs_the_tests_load(conf):
    text = (DOCS / "middleware.md").read_text()
    assert "```nginx\n" + (DOCS / conf).read_text() + "```" in text


# -- the walk: what is opened is what was checked ---------------------------------

@pytest.fixture()
def links(site, tmp_path):
    """Symlinks of every kind inside the served directory (``site``)."""
    (site / "css").mkdir()
    (site / "css" / "main.css").write_bytes(CSS)
    os.symlink("css/main.css", site / "rel-in.css")               # relative, stays inside
    os.symlink("css", site / "css-dir")                           # a directory, inside
    os.symlink("../css/main.css", site / "sub" / "up-in.css")     # climbs, stays inside
    os.symlink("../site/app.css", site / "out-and-back.css")      # leaves, comes back by name
    os.symlink("../secret.txt", site / "rel-out.txt")             # relative, leaves
    os.symlink("/etc", site / "etc")                              # absolute, leaves
    os.symlink(str(site / "css"), site / "abs-css")               # absolute, inside
    os.symlink("loop-b", site / "loop-a")
    os.symlink("loop-a", site / "loop-b")
    os.symlink(".env", site / "dot-rel.txt")                      # to a dot-file
    os.symlink(".git/config", site / "through-dot.txt")           # through a dot-directory
    os.symlink("missing.txt", site / "dangling.txt")
    os.symlink("app.css", site / "page2.html.gz")                 # a sibling that is a link, inside
    return site


@pytest.mark.parametrize("path", [
    "/s/rel-in.css", "/s/css-dir/main.css", "/s/sub/up-in.css", "/s/abs-css/main.css",
    "/s/link-in.css",
])
def test_symlinks_that_resolve_inside_the_directory_are_followed(links, path):
    status, _, body, _ = run(static(links), path)
    assert (status, body) == ("200 OK", CSS)


@pytest.mark.parametrize("path", [
    "/s/rel-out.txt", "/s/etc/passwd", "/s/etc/hostname", "/s/dir-out/secret.txt", "/s/link-out.txt",
    "/s/out-and-back.css",        # refused: ".." may not climb above the directory, even to come back
    "/s/loop-a", "/s/dangling.txt", "/s/dot-rel.txt", "/s/through-dot.txt", "/s/env-link.txt",
])
def test_symlinks_that_leave_the_directory_or_reach_a_dot_file_give_404(links, path):
    status, _, body, _ = run(static(links), path)
    assert status == "404 Not Found", path
    assert body == b"Not Found\n"


def test_a_sibling_that_is_a_symlink_inside_the_directory_is_served(links):
    (links / "page2.html").write_text("<p>two</p>")
    status, headers, body, _ = run(static(links), "/s/page2.html", accept_encoding="gzip")
    assert headers.get("Content-Encoding") == "gzip" and body == CSS


def test_no_descriptor_is_left_open_whatever_the_answer(links):
    app = static(links, index=True)
    paths = ["/s/app.css", "/s/rel-in.css", "/s/etc/passwd", "/s/loop-a", "/s/sub", "/s/sub/",
             "/s/nodir/", "/s/missing", "/s/app.css/", "/s/pipe", "/s/page.html"]
    os.mkfifo(links / "pipe")
    (links / "page.html.gz").write_bytes(b"gz")
    before = len(os.listdir("/proc/self/fd"))
    for path in paths:
        for headers in ({}, {"accept_encoding": "gzip"}, {"if_none_match": "*"}, {"range": "bytes=0-1"}):
            run(app, path, **headers)
            run(app, path, method="HEAD", **headers)
    assert len(os.listdir("/proc/self/fd")) == before


def test_swapping_a_directory_for_a_symlink_never_serves_the_outside_file(tmp_path):
    """The race of issue 21 item 3: ``d`` flips between a directory holding
    ``f`` and a symlink to a directory outside the root holding another ``f``.
    Each request may get the inside file or a 404, never the outside one."""
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    (root / "d" / "f").write_bytes(b"inside\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f").write_bytes(b"OUTSIDE\n")
    aside = tmp_path / "aside"
    stop = threading.Event()

    def swap():
        while not stop.is_set():
            os.rename(root / "d", aside)
            os.symlink(outside, root / "d")
            os.unlink(root / "d")
            os.rename(aside, root / "d")

    app = Static(None, {"/s": str(root)})
    swapper = threading.Thread(target=swap)
    swapper.start()
    seen = collections.Counter()
    try:
        for _ in range(4000):
            status, _, body, _ = run(app, "/s/d/f")
            seen[status, body] += 1
            if b"OUTSIDE" in body:
                break
    finally:
        stop.set()
        swapper.join()
    assert ("200 OK", b"OUTSIDE\n") not in seen, dict(seen)
