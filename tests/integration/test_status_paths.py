"""``--status-path`` and ``--ping-path`` on a real ``bridge http``, whatever serves the rest."""
from __future__ import annotations

import json

import pytest

from support import bridge_command, free_port
from support.composition import start_bridge
from support.prefork import get

APPS = "support.mount_apps"
SHAPES = {
    "app-only": [f"{APPS}:public"],
    "mounts-only": ["--mount", f"/admin={APPS}:admin", "--mount", f"/={APPS}:public"],
    "app-and-mounts": [f"{APPS}:public", "--mount", f"/admin={APPS}:admin"],
}


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_bridges_own_paths_are_answered_before_any_mount(shape, workers):
    port = free_port()
    proc = start_bridge(bridge_command("http", *SHAPES[shape], "--bind", f"127.0.0.1:{port}",
                                       "--workers", workers, "--status-path", "/bridge-status",
                                       "--ping-path", "/ping"), port=port)
    try:
        assert get(port, "/ping") == (200, b"pong\n")
        status, body = get(port, "/bridge-status?json")
        assert status == 200 and json.loads(body)["mode"] == ("single" if workers == "1" else "prefork")
        status, body = get(port, "/admin/x" if "mount" in shape else "/x")
        assert status == 200 and json.loads(body)["app"] == ("admin" if "mount" in shape else "public")
    finally:
        proc.stop()
