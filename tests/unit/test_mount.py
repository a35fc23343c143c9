"""bridge.mount: longest prefix on segment boundaries, PEP 3333 SCRIPT_NAME/PATH_INFO, 404."""
import io
import sys

import pytest
from hypothesis import given, settings, strategies as st

import bridge
from bridge.config import Config
from bridge.loader import AppLoadError
from bridge.upstream.mount import Mount, mount, normalize_prefix


def named(name):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"{name} {environ['SCRIPT_NAME']!r} {environ['PATH_INFO']!r}".encode()]
    return app


def call(app, path, script_name=""):
    environ = {"REQUEST_METHOD": "GET", "SCRIPT_NAME": script_name, "PATH_INFO": path,
               "wsgi.input": io.BytesIO(), "wsgi.errors": sys.stderr}
    seen = {}

    def start_response(status, headers, exc_info=None):
        seen["status"] = status
        seen["headers"] = headers
    body = b"".join(app(environ, start_response))
    return seen["status"], body.decode()


SITE = mount({"/": named("root"), "/api": named("api"), "/api/v2": named("v2"),
              "/legacy/": named("legacy")})


def test_longest_prefix_wins():
    assert call(SITE, "/api/v2/users") == ("200 OK", "v2 '/api/v2' '/users'")
    assert call(SITE, "/api/v1/users") == ("200 OK", "api '/api' '/v1/users'")


def test_prefix_matches_only_on_a_segment_boundary():
    assert call(SITE, "/apiary") == ("200 OK", "root '' '/apiary'")
    assert call(SITE, "/api/v20") == ("200 OK", "api '/api' '/v20'")


def test_exact_prefix_leaves_an_empty_path_info():
    assert call(SITE, "/api") == ("200 OK", "api '/api' ''")
    assert call(SITE, "/api/") == ("200 OK", "api '/api' '/'")


def test_trailing_slash_in_the_prefix_is_ignored():
    assert call(SITE, "/legacy/x.cgi") == ("200 OK", "legacy '/legacy' '/x.cgi'")


def test_root_app_keeps_the_whole_path():
    assert call(SITE, "/") == ("200 OK", "root '' '/'")
    assert call(SITE, "") == ("200 OK", "root '' ''")


def test_outer_script_name_is_kept_in_front_of_the_prefix():
    assert call(SITE, "/api/x", script_name="/site") == ("200 OK", "api '/site/api' '/x'")


def test_no_matching_prefix_is_a_404():
    app = mount({"/api": named("api")})
    status, body = call(app, "/other")
    assert status == "404 Not Found"
    assert body == "Not Found\n"


def test_nested_mounts_shift_twice():
    inner = mount({"/users": named("users")})
    outer = mount({"/api": inner})
    assert call(outer, "/api/users/7") == ("200 OK", "users '/api/users' '/7'")


@pytest.mark.parametrize("prefix", ["api", "/a//b", "/a/../b", "/./x", "/a?b"])
def test_bad_prefixes_are_refused_with_a_reason(prefix):
    with pytest.raises(ValueError, match="prefix"):
        mount({prefix: named("x")})


def test_same_prefix_twice_is_refused():
    with pytest.raises(ValueError, match="twice"):
        Mount([("/a", named("x")), ("/a/", named("y"))])


def test_a_mounted_app_must_be_callable():
    with pytest.raises(TypeError, match="not callable"):
        mount({"/a": 42})


def test_bridge_exports_mount_lazily():
    assert isinstance(bridge.mount({"/": named("x")}), Mount)


def test_an_app_can_be_named_like_on_the_command_line():
    app = mount({"/demo": "bridge.demo:app"})
    assert callable(app.apps["/demo"])


def test_an_app_that_cannot_be_loaded_is_a_one_line_error():
    with pytest.raises(AppLoadError, match="no_such_module"):
        mount({"/x": "no_such_module:app"})


segment = st.text(alphabet="abcxyz-._~%0", min_size=1, max_size=4).filter(lambda s: s not in (".", ".."))
path = st.lists(segment, max_size=4).map(lambda parts: "".join("/" + p for p in parts))


@settings(max_examples=200, deadline=None)
@given(prefixes=st.lists(path.filter(bool), min_size=1, max_size=4, unique_by=normalize_prefix),
       request_path=path, trailing=st.booleans())
def test_script_name_plus_path_info_is_always_the_request_path(prefixes, request_path, trailing):
    request_path += "/" if trailing else ""
    table = {p: named(p) for p in prefixes}
    app = mount(table)
    status, body = call(app, request_path)
    if status.startswith("404"):
        assert not any(request_path == p or request_path.startswith(p + "/") for p in prefixes)
        return
    name, script_name, path_info = body.split(" ")
    script_name, path_info = eval(script_name), eval(path_info)
    assert script_name + path_info == request_path
    assert script_name == name
    # it is the longest matching prefix
    longer = [p for p in prefixes if len(p) > len(name)
              and (request_path == p or request_path.startswith(p + "/"))]
    assert not longer
    assert path_info == "" or path_info.startswith("/")


# --mount on the command line ------------------------------------------------


def test_mount_option_builds_the_map_with_app_at_the_root():
    from bridge.loader import load_from_config
    config = Config.build("http", {"app": "bridge.demo:app",
                                   "mount": ["/a=bridge.demo:app", "/b/c=bridge.demo:app"]}, environ={})
    app = load_from_config(config)
    assert isinstance(app, Mount)
    assert sorted(app.apps) == ["", "/a", "/b/c"]


def test_mount_option_works_without_a_positional_app():
    from bridge.loader import load_from_config
    config = Config.build("fcgi", {"mount": ["/a=bridge.demo:app"]}, environ={})
    app = load_from_config(config)
    assert call(app, "/nothing-here")[0] == "404 Not Found"


def test_mount_option_from_the_environment():
    config = Config.build("http", {}, environ={"BRIDGE_MOUNT": "/a=x:app,/b=y:app"})
    assert config.mount == [("/a", "x:app"), ("/b", "y:app")]


def test_mount_option_without_equals_sign_is_a_config_error():
    from bridge.config import ConfigError
    with pytest.raises(ConfigError, match="PREFIX=APP"):
        Config.build("http", {"mount": ["/a"]}, environ={})


def test_mount_option_refuses_a_second_root(capsys):
    from bridge.loader import load_from_config
    config = Config.build("http", {"app": "bridge.demo:app", "mount": ["/=bridge.demo:app"]}, environ={})
    with pytest.raises(SystemExit):
        load_from_config(config)
    assert "root" in capsys.readouterr().err


def test_mount_option_only_lets_fastcgi_backends_share_a_prefix(capsys):
    from bridge.loader import load_from_config
    config = Config.build("http", {"mount": ["/a=bridge.demo:app", "/a=bridge.demo:app"]}, environ={})
    with pytest.raises(SystemExit):
        load_from_config(config)
    assert "load balanced" in capsys.readouterr().err


def test_the_docs_option_table_is_the_generated_one():
    from pathlib import Path
    from bridge.config import option_table
    doc = (Path(__file__).resolve().parents[2] / "docs" / "composition.md").read_text()
    start = doc.index("<!-- generated from src/bridge/upstream/options.py")
    table = doc[doc.index("\n", start) + 1:doc.index("<!-- end generated -->")]
    generated = option_table().splitlines()
    assert table.splitlines() == generated[:2] + [row for row in generated if row.startswith("| `--mount`")]


@pytest.mark.parametrize("spec, message", [
    ("fcgi://unix:/run/x.sock?bogus=1", "unknown FastCGI mount option 'bogus'"),
    ("fcgi://nohost", "not HOST:PORT or unix:/PATH"),
    ("fcgi://unix:/x.sock?timeout=soon", "could not convert"),
    ("cgi:/no/such/cgi-bin", "does not exist"),
    ("cgi:{tmp}/plain.txt", "not executable"),
])
def test_a_bad_fastcgi_or_cgi_mount_is_a_one_line_error(spec, message, tmp_path):
    from bridge.upstream.mount import resolve
    (tmp_path / "plain.txt").write_text("#!/bin/sh\n")
    (tmp_path / "plain.txt").chmod(0o644)
    spec = spec.replace("{tmp}", str(tmp_path))
    with pytest.raises(AppLoadError, match="cannot mount") as info:
        resolve(spec)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_fastcgi_mount_options_and_extra_backends_reach_the_app():
    from bridge.upstream.mount import resolve
    app = resolve("fcgi://unix:/a.sock?document_root=/srv/www&timeout=5&balance=least_busy",
                  extra=["fcgi://127.0.0.1:9000"])
    assert [b.name for b in app.backends] == ["unix:/a.sock", "127.0.0.1:9000"]
    assert (app.document_root, app.timeout, app.balance) == ("/srv/www", 5.0, "least_busy")
