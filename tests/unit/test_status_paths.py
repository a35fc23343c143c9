"""bridge's own paths (--status-path, --ping-path) are answered before any mount or middleware.

Built the way a command builds its app (``load_from_config``), for each way
of giving the app: a positional APP only, ``--mount`` options only, both,
and with ``--static`` in front.
"""
import io
import json

import pytest

from bridge.config import Config
from bridge.loader import load_from_config

APPS = "support.mount_apps"
CONFIGS = {
    "app-only": {"app": f"{APPS}:public"},
    "mounts-only": {"mount": [f"/admin={APPS}:admin", f"/={APPS}:public"]},
    "mounts-without-root": {"mount": [f"/admin={APPS}:admin"]},
    "app-and-mounts": {"app": f"{APPS}:public", "mount": [f"/admin={APPS}:admin"]},
    "status-under-a-mount": {"app": f"{APPS}:public", "mount": [f"/ops={APPS}:admin"],
                             "status_path": "/ops/status", "ping_path": "/ops/ping"},
}


def call(app, path, remote="127.0.0.1"):
    out = {}
    environ = {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": path, "QUERY_STRING": "json",
               "REMOTE_ADDR": remote, "wsgi.input": io.BytesIO(), "wsgi.errors": io.StringIO()}

    def start_response(status, headers, exc_info=None):
        out["status"], out["headers"] = status, dict(headers)
    body = b"".join(app(environ, start_response))
    return out["status"], out["headers"], body


@pytest.fixture
def board():
    from bridge.server import status
    from bridge.server.scoreboard import READY, Scoreboard
    b = Scoreboard(2, 1)
    b.write_header(master_pid=1, target=1)
    b.slot(b.claim(101, 1)).set_state(READY)
    saved = (status.CONTEXT.board, status.CONTEXT.listeners, status.CONTEXT.config, status.CONTEXT.mode)
    status.set_context(b, [], None, "single")
    yield b
    status.CONTEXT.board, status.CONTEXT.listeners, status.CONTEXT.config, status.CONTEXT.mode = saved


@pytest.mark.parametrize("static", [False, True], ids=["plain", "with-static"])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_status_and_ping_are_answered_whatever_serves_the_rest(board, tmp_path, name, static):
    values = {"status_path": "/bridge-status", "ping_path": "/ping", **CONFIGS[name]}
    if static:
        (tmp_path / "ping").write_text("a file that must not shadow the ping path")
        values["static"] = [f"/={tmp_path}"]
    app = load_from_config(Config.build("http", values, environ={}))
    status, headers, body = call(app, values["ping_path"])
    assert (status, body) == ("200 OK", b"pong\n")
    status, headers, body = call(app, values["status_path"])
    assert status == "200 OK" and headers["Content-Type"] == "application/json", body
    assert json.loads(body)["workers"] == 1
    assert call(app, values["status_path"], remote="192.0.2.9")[0] == "403 Forbidden"
    if not static:   # (a Static at "/" answers the rest itself, 404 for files it lacks)
        # Everything else still reaches the apps.
        for prefix, spec in (m.split("=") for m in CONFIGS[name].get("mount", [])):
            status, _, body = call(app, prefix.rstrip("/") + "/x")
            assert status == "200 OK" and json.loads(body)["app"] == spec.rpartition(":")[2]


def test_without_any_app_the_loader_still_refuses_to_start():
    with pytest.raises(SystemExit):
        load_from_config(Config.build("http", {"status_path": "/s", "ping_path": "/p"}, environ={}))
