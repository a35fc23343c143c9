"""``bridge http -c FILE``: a real server reading its file, and again on SIGHUP, under load.

A client loop sends requests the whole time (support.prefork.Load counts
every non-2xx answer and every socket error); the file is edited, HUP is
sent, and the status page shows the new value while not one request fails.
"""
from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest

from support import Process, bridge_command, bridge_env, free_port, wait_for_port
from support.prefork import Load, children, get, wait_for


DOCS = Path(__file__).resolve().parents[2] / "docs"


class FileServer:
    """``bridge http -c FILE ARGS`` with the status page on, its log kept."""

    def __init__(self, tmp_path: Path, text: str, *args: str) -> None:
        self.port = free_port()
        self.file = tmp_path / "bridge.toml"
        self.write(text)
        self.log = tmp_path / "bridge.log"
        self.process = Process(bridge_command("http", "-c", str(self.file), *args),
                               env=bridge_env(), log=self.log)
        wait_for_port(self.port, proc=self.process.proc)

    def write(self, text: str) -> None:
        self.file.write_text(text.format(port=self.port))

    def status(self) -> dict:
        import json
        status, body = get(self.port, "/bridge-status?json", timeout=10)
        assert status == 200
        return json.loads(body)

    def ready(self) -> list:
        return [p for p in self.status()["processes"] if p["state"] == "ready"]

    def hup_and_wait(self, reloads: int, threads: int, workers: int) -> None:
        os.kill(self.process.pid, signal.SIGHUP)
        wait_for(lambda: (lambda s: s["reloads"] == reloads and s["threads_per_worker"] == threads
                          and len([p for p in s["processes"] if p["state"] == "ready"]) == workers
                          and {p["generation"] for p in s["processes"]} == {reloads + 1})(self.status()),
                 30, f"reload {reloads} with {threads} threads x {workers} workers\n{self.output()}")

    def output(self) -> str:
        return self.process.output()

    def stop(self) -> None:
        kids = children(self.process.pid)
        self.process.stop(signal.SIGTERM, timeout=20)
        for pid in kids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


FILE = '''app = "support.pm_apps:app"
bind = ["127.0.0.1:{port}"]
status_path = "/bridge-status"
threads = 2
'''


@pytest.fixture
def server(tmp_path):
    started = []

    def start(text, *args):
        s = FileServer(tmp_path, text, *args)
        started.append(s)
        return s
    yield start
    for s in started:
        s.stop()


def test_hup_under_load_applies_the_edited_file_and_logs_a_bind_change_as_needing_a_restart(server):
    s = server(FILE, "--workers", "2")
    wait_for(lambda: len(s.ready()) == 2, 30, "2 workers ready")
    assert s.status()["threads_per_worker"] == 2
    load = Load(s.port, "/", threads=3, retry_reused=True)
    try:
        load.wait_for_requests(30)
        other = free_port()
        s.write(FILE.replace("threads = 2", "threads = 5\nworkers = 3")
                    .replace("{port}", str(other)))
        s.hup_and_wait(reloads=1, threads=5, workers=2)      # --workers 2 beats the file's 3
        load.wait_for_requests(30)
    finally:
        load.stop()
    assert load.failures == [], load.failures[:10]
    out = s.output()
    assert f"bind changed in {s.file} but needs a restart to take effect; still " \
           f"['127.0.0.1:{s.port}']" in out
    assert "threads = 5" in out and "workers = 3" not in out


def test_hup_changes_the_number_of_workers_and_a_bad_file_keeps_serving(server):
    s = server(FILE + "workers = 1\n")     # one worker: with a file, still a master to read it on HUP
    wait_for(lambda: len(s.ready()) == 1, 30, "1 worker ready")
    load = Load(s.port, "/", threads=3, retry_reused=True)
    try:
        load.wait_for_requests(30)
        s.write(FILE.replace("threads = 2", "threads = 3") + "workers = 3\n")
        s.hup_and_wait(reloads=1, threads=3, workers=3)
        wait_for(lambda: len(children(s.process.pid)) == 3, 30, "the old workers gone")
        load.wait_for_requests(30)
        s.write(FILE + "workers = \n")               # a save half-way through an edit
        s.hup_and_wait(reloads=2, threads=3, workers=3)
        load.wait_for_requests(30)
    finally:
        load.stop()
    assert load.failures == [], load.failures[:10]
    assert f"SIGHUP: {s.file}: not valid TOML: " in s.output()
    assert "the settings in force are kept" in s.output()


def test_operations_doc_files_are_valid_for_their_command(tmp_path):
    """Each config file docs/operations.md shows passes the file check of its command."""
    from bridge.config import Config
    doc = (DOCS / "operations.md").read_text()
    blocks = doc.split("```toml\n")[1:]
    assert len(blocks) >= 3
    for block in blocks:
        text = block[:block.index("```")]
        command = re.match(r"# bridge (\w+)", text).group(1)     # its first line says which
        path = tmp_path / "doc.toml"
        path.write_text(text.replace("/srv/app/static", str(tmp_path)))
        config = Config.build(command, {"config": str(path)}, environ={})
        assert set(config.origins.values()) >= {"file", "default"}
