"""Signals against every process layout: alone, master + workers, and --reload's supervisor.

What an operator (or a terminal) sends must do what docs/operations.md
says whichever process gets it, and nothing bridge does with signals while
it starts may leak into the processes the app starts.
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time

import pytest
import requests

from support import Process, bridge_env, free_port, public_tmpdir, wait_for_port
from support.http_proc import APP, BridgeHTTP
from support.prefork import wait_for as wait_until
from support.procs import children_of, kill_marked, new_marker, processes_with

#: HUP, USR1, TTIN and TTOU as bits of /proc/PID/status's signal masks.
HELD_SIGNALS = sum(1 << (signum - 1) for signum in (signal.SIGHUP, signal.SIGUSR1, signal.SIGTTIN, signal.SIGTTOU))

LAYOUTS = {
    "alone": (),
    "master": ("--workers", "2"),
    "preload": ("--workers", "2", "--preload"),
    "reload": ("--reload",),
    "reload-master": ("--reload", "--workers", "2"),
}

HELPER_APP = '''\
import os
import subprocess
import threading

OUT = os.environ["HELPER_OUT"]


def start_helper(tag):
    helper = subprocess.Popen(["sleep", "120"])
    with open(os.path.join(OUT, f"{tag}-{os.getpid()}-{helper.pid}"), "w") as f:
        f.write(str(helper.pid))


start_helper("import")
starter = threading.Thread(target=start_helper, args=("thread",))
starter.start()
starter.join()


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
'''


def status_masks(pid: int) -> dict:
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("SigBlk", "SigIgn"):
                fields[name] = int(value.strip(), 16)
    return fields


def holding_signals(pids) -> dict:
    """Those of ``pids`` with HUP/USR1/TTIN/TTOU blocked (a process gone meanwhile is not)."""
    found = {}
    for pid in pids:
        try:
            blocked = status_masks(pid)["SigBlk"]
        except OSError:
            continue
        if blocked & HELD_SIGNALS:
            found[pid] = hex(blocked)
    return found


@pytest.mark.parametrize("layout", list(LAYOUTS), ids=list(LAYOUTS))
def test_processes_the_app_starts_while_imported_get_no_blocked_or_ignored_signals(layout):
    """A helper the app launches at import (or from a thread it starts then) sees HUP and USR1.

    While the app is imported bridge holds HUP/USR1/TTIN/TTOU back for its
    own handlers.  Holding them with a blocked mask (or SIG_IGN) leaked into
    every such helper -- both survive exec -- so a helper reloaded with
    HUP never heard it.
    """
    d = public_tmpdir("bridge-masks-")
    (d / "helper_app.py").write_text(HELPER_APP)
    out = d / "helpers"
    out.mkdir()
    marker = new_marker()
    try:
        with BridgeHTTP("--chdir", str(d), *LAYOUTS[layout], app="helper_app:app",
                        env={"HELPER_OUT": str(out), "BRIDGE_TEST_MARK": marker}) as server:
            assert requests.get(server.url + "/", timeout=10).text == "ok"
            # Each worker imports the app, unless the master (--preload) or
            # the supervisor's child (--reload) did it before forking them.
            imports = 2 if layout == "master" else 1
            wait_until(lambda: len(list(out.iterdir())) >= 2 * imports, what="the helpers")
            for record in sorted(out.iterdir()):
                masks = status_masks(int(record.read_text()))
                assert masks["SigBlk"] & HELD_SIGNALS == 0, (record.name, hex(masks["SigBlk"]))
                assert masks["SigIgn"] & HELD_SIGNALS == 0, (record.name, hex(masks["SigIgn"]))
            # And bridge's own processes handle them (nothing left blocked either).
            wait_until(lambda: not holding_signals([server.pid, *children_of(server.pid)]),
                       what="bridge's processes to have nothing blocked")
    finally:
        kill_marked(marker)


@pytest.mark.parametrize("signals", [("SIGINT", "SIGINT"), ("SIGQUIT",)], ids=["second-int", "quit"])
@pytest.mark.parametrize("layout", ["reload", "reload-master"])
def test_the_reload_supervisor_stops_at_once_on_a_second_int_or_on_quit(layout, signals):
    """As the master does: INT waits for requests in flight; a second INT, or QUIT, does not."""
    marker = new_marker()
    try:
        with BridgeHTTP(*LAYOUTS[layout], env={"BRIDGE_TEST_MARK": marker}) as server:
            wait_until(lambda: "Reloading on change" in server.output(), what="the supervisor's loop")
            results: list = []

            def slow_request():
                try:
                    results.append(requests.get(server.url + "/stream?n=2&delay=60", timeout=90).status_code)
                except requests.RequestException as exc:
                    results.append(type(exc).__name__)
            client = threading.Thread(target=slow_request, daemon=True)
            client.start()
            time.sleep(0.5)      # the request is in flight
            if len(signals) == 2:
                server.send_signal(signal.SIGINT)
                time.sleep(1.0)
                assert server.process.proc.poll() is None, "the first INT must wait for the request in flight"
            started = time.monotonic()
            server.send_signal(getattr(signal, signals[-1]))
            wait_until(lambda: server.process.proc.poll() is not None, timeout=5,
                       what=f"the supervisor to stop on {'+'.join(signals)}:\n{server.output()}")
            assert time.monotonic() - started < 5
            wait_until(lambda: not processes_with(marker), timeout=5, what="every child to end")
    finally:
        kill_marked(marker)


@pytest.mark.parametrize("layout", ["reload", "reload-master"])
def test_children_stop_when_the_reload_supervisor_is_killed(layout):
    """SIGKILL on the supervisor: its children stop too, instead of serving on with nobody to stop them."""
    marker = new_marker()
    try:
        with BridgeHTTP(*LAYOUTS[layout], env={"BRIDGE_TEST_MARK": marker}) as server:
            wait_until(lambda: "Reloading on change" in server.output(), what="the supervisor's loop")
            assert len(processes_with(marker)) >= 2
            server.send_signal(signal.SIGKILL)
            wait_until(lambda: not processes_with(marker), timeout=15,
                       what=f"the children to stop:\n{server.output()}")
            assert "supervisor (pid %d) is gone" % server.pid in server.output()
    finally:
        kill_marked(marker)


def test_usr1_during_a_reload_reaches_the_new_child_and_reopens_the_supervisors_log():
    """logrotate's USR1 while a reload is under way: every process writes to the new files after it."""
    d = public_tmpdir("bridge-reload-logs-")
    access, errors = d / "access.log", d / "error.log"
    with BridgeHTTP("--reload", "--access-log", str(access), "--error-log", str(errors)) as server:
        wait_until(lambda: errors.exists() and "Reloading on change" in errors.read_text(),
                   what="the supervisor's loop")
        server.send_signal(signal.SIGHUP)
        wait_until(lambda: errors.read_text().count("Listening on") == 2, what="the new child")
        access.rename(d / "access.log.1")
        errors.rename(d / "error.log.1")
        server.send_signal(signal.SIGUSR1)      # the old child may still be the current one
        wait_until(lambda: len(children_of(server.pid)) == 1, what="the old child to stop")
        assert requests.get(server.url + "/version?after", timeout=10).status_code == 200
        wait_until(lambda: access.exists() and "?after" in access.read_text(),
                   what="the new child's access line in the new file")
        server.send_signal(signal.SIGHUP)
        wait_until(lambda: errors.exists() and "SIGHUP: reloading" in errors.read_text(),
                   what="the supervisor's line in the new file")
    assert "?after" not in (d / "access.log.1").read_text()


BLOCKED_LAUNCH = """
import os, signal, sys
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGHUP, signal.SIGUSR1, signal.SIGTTIN, signal.SIGTTOU])
os.execv(sys.executable, [sys.executable, "-m", "bridge", *sys.argv[1:]])
"""


@pytest.mark.parametrize("layout", ["alone", "master", "reload", "reload-master"])
def test_a_server_started_with_signals_blocked_unblocks_the_ones_it_handles(layout):
    """A launcher (a shell, a supervisor) may leave HUP/USR1 blocked: bridge would never see them."""
    port = free_port()
    marker = new_marker()
    proc = Process([sys.executable, "-c", BLOCKED_LAUNCH, "http", APP, "--bind", f"127.0.0.1:{port}",
                    *LAYOUTS[layout]], env=bridge_env(BRIDGE_TEST_MARK=marker))
    try:
        wait_for_port(port, proc=proc.proc)
        expected = {"alone": 1, "master": 3, "reload": 2, "reload-master": 4}[layout]
        wait_until(lambda: len(processes_with(marker)) == expected, what="the processes")
        if "--reload" in LAYOUTS[layout]:
            wait_until(lambda: "Reloading on change" in proc.output(), what="the supervisor's loop")
        # (A worker being forked has them blocked for an instant: the fork's window.)
        wait_until(lambda: not holding_signals(processes_with(marker)),
                   what="no process with HUP/USR1/TTIN/TTOU blocked")
        if layout == "reload-master":
            # TTIN to the supervisor is passed on: the master starts one more worker.
            before = len(processes_with(marker))
            proc.proc.send_signal(signal.SIGTTIN)
            wait_until(lambda: len(processes_with(marker)) == before + 1, what="a third worker")
        if "--reload" in LAYOUTS[layout]:
            proc.proc.send_signal(signal.SIGHUP)
            wait_until(lambda: "SIGHUP: reloading" in proc.output(), what="the reload on HUP")
        assert proc.stop(signal.SIGTERM) == 0
    finally:
        proc.stop(signal.SIGKILL)
        kill_marked(marker)


IMPORTING_APP = '''\
import ctypes
import os
import os
import signal
import threading
import time

OUT = os.environ["IMPORT_OUT"]


def mark(name, text=""):
    with open(os.path.join(OUT, f"{name}-{os.getpid()}"), "w") as f:
        f.write(text)


if os.environ.get("OWN_USR1"):
    signal.signal(signal.SIGUSR1, lambda signum, frame: mark("app-usr1"))
# A blocking call in C, as a database driver's connect would make: a
# signal must not fail it with EINTR.
r, w = os.pipe()
threading.Thread(target=lambda: (time.sleep(1.5), os.write(w, b"x")), daemon=True).start()
mark("importing")
libc = ctypes.CDLL(None, use_errno=True)
n = libc.read(r, ctypes.create_string_buffer(1), 1)
mark("read", f"{n} {ctypes.get_errno()}")


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
'''


def start_importing(layout: str, *args: str, **env: str):
    """``bridge http`` on IMPORTING_APP; returns (process, port, markers dir, app dir)."""
    d = public_tmpdir("bridge-importing-")
    (d / "importing_app.py").write_text(IMPORTING_APP)
    out = d / "marks"
    out.mkdir()
    port = free_port()
    proc = Process([sys.executable, "-m", "bridge", "http", "importing_app:app", "--bind", f"127.0.0.1:{port}",
                    "--chdir", str(d), *LAYOUTS[layout], *args], env=bridge_env(IMPORT_OUT=str(out), **env))
    return proc, port, out, d


def marks(out, name: str) -> list:
    return [p for p in out.iterdir() if p.name.startswith(name + "-")]


@pytest.mark.parametrize("layout", ["alone", "master"])
def test_a_signal_during_the_apps_import_does_not_fail_its_blocking_calls(layout):
    """USR1 (logrotate) while the app's import waits in a C call: the call goes on, no EINTR."""
    proc, port, out, _ = start_importing(layout)
    importers = 2 if layout == "master" else 1
    try:
        wait_until(lambda: len(marks(out, "importing")) == importers, what="the import to start")
        time.sleep(0.3)
        proc.proc.send_signal(signal.SIGUSR1)
        wait_until(lambda: len(marks(out, "read")) == importers, what="the blocking read to return")
        results = [p.read_text().split()[0] for p in marks(out, "read")]
        assert results == ["1"] * importers, f"read() returned {results} (-1: EINTR)\n{proc.output()}"
        wait_for_port(port, proc=proc.proc)
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=10).text == "ok"
        assert proc.stop(signal.SIGTERM) == 0
    finally:
        proc.stop(signal.SIGKILL)


def test_a_usr1_taken_by_the_apps_own_handler_during_its_import_still_reopens_the_logs():
    """The app sets a USR1 handler while imported, and logrotate's USR1 comes then: the worker still reopens."""
    d = public_tmpdir("bridge-own-usr1-")
    access = d / "access.log"
    proc, port, out, _ = start_importing("master", "--access-log", str(access), OWN_USR1="1")
    try:
        wait_until(lambda: len(marks(out, "importing")) == 2, what="the workers' imports to start")
        wait_until(access.exists, what="the access log")
        access.rename(d / "access.log.1")
        proc.proc.send_signal(signal.SIGUSR1)
        wait_until(lambda: len(marks(out, "app-usr1")) == 2, what="the app's handler to take it")
        wait_until(lambda: len(marks(out, "read")) == 2, what="the imports to end")
        wait_for_port(port, proc=proc.proc)
        for _ in range(4):      # each worker, whichever accepts
            assert requests.get(f"http://127.0.0.1:{port}/?after", timeout=10).text == "ok"
        wait_until(lambda: access.exists() and access.read_text().count("?after") == 4,
                   what="every access line in the new file")
        assert "?after" not in (d / "access.log.1").read_text()
        assert "the app set its own SIGUSR1 handler while it was imported" in proc.output()
        assert proc.stop(signal.SIGTERM) == 0
    finally:
        proc.stop(signal.SIGKILL)


@pytest.mark.parametrize("layout", list(LAYOUTS), ids=list(LAYOUTS))
def test_the_apps_own_signal_handler_is_replaced_with_a_warning_in_every_layout(layout):
    """Whoever imports the app -- the process, a worker, the master, --reload's child -- the log says so."""
    proc, port, out, _ = start_importing(layout, OWN_USR1="1")
    try:
        wait_for_port(port, timeout=20, proc=proc.proc)
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=10).text == "ok"
        wait_until(lambda: "the app set its own SIGUSR1 handler while it was imported" in proc.output(),
                   what=f"the warning:\n{proc.output()}")
        assert proc.stop(signal.SIGTERM) == 0
    finally:
        proc.stop(signal.SIGKILL)


BACKGROUND_JOB = '''\
import fcntl, os, pty, signal, sys, termios, time
result, tostop, output, stdin, argv = sys.argv[1], sys.argv[2] == "tostop", sys.argv[3], sys.argv[4], sys.argv[5:]
here = os.path.dirname(result)
master_fd, slave_fd = pty.openpty()
os.setsid()                         # this launcher: a shell, its session and the terminal's foreground
fcntl.ioctl(slave_fd, termios.TIOCSCTTY, 0)
for s in (signal.SIGTTOU, signal.SIGTTIN, signal.SIGTSTP):
    signal.signal(s, signal.SIG_IGN)
child = os.fork()
if child == 0:
    os.setpgid(0, 0)                # a background job: not the terminal's foreground group
    for s in (signal.SIGTTOU, signal.SIGTTIN, signal.SIGTSTP):
        signal.signal(s, signal.SIG_DFL)
    out = slave_fd if output == "tty" else os.open(output, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.dup2(slave_fd if stdin == "tty" else os.open(os.devnull, os.O_RDONLY), 0)
    os.execv(sys.executable, [sys.executable, "-m", "bridge", *argv])
with open(result, "w") as f:
    f.write(f"pid {child}\\n")
os.set_blocking(master_fd, False)
tostop_at = time.monotonic() + 2.0
while True:
    if tostop_at and time.monotonic() > tostop_at:
        if tostop:
            attrs = termios.tcgetattr(slave_fd)
            attrs[3] |= termios.TOSTOP
            termios.tcsetattr(slave_fd, termios.TCSANOW, attrs)
        tostop_at = 0
        with open(result, "a") as f:
            f.write("ready\\n")
    try:
        screen = os.read(master_fd, 65536)
        with open(os.path.join(here, "screen"), "ab") as f:
            f.write(screen)
    except OSError:
        pass
    if os.path.exists(os.path.join(here, "fg")):     # the shell's fg
        os.unlink(os.path.join(here, "fg"))
        os.tcsetpgrp(slave_fd, child)
        os.killpg(child, signal.SIGCONT)
        with open(result, "a") as f:
            f.write("resumed\\n")
    pid, status = os.waitpid(child, os.WUNTRACED | os.WNOHANG)
    if pid and os.WIFSTOPPED(status):
        with open(result, "a") as f:
            f.write(f"stopped by {os.WSTOPSIG(status)}\\n")
    elif pid:
        break
    time.sleep(0.05)
'''

TTY_APP = '''\
import os


def app(environ, start_response):
    if environ["PATH_INFO"] == "/tty":      # as getpass() does: the terminal, whatever stderr is
        with open("/dev/tty", "w") as tty:
            tty.write("a prompt\\n")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
'''


class BackgroundJob:
    """``bridge ARGS &`` typed in an interactive shell: a background job on a terminal (a pty)."""

    def __init__(self, *args: str, tostop: bool, output: str = "tty", stdin: str = "null", cwd=None) -> None:
        self.dir = public_tmpdir("bridge-job-")
        self.result = self.dir / "result"
        self.marker = new_marker()
        self.launcher = Process([sys.executable, "-c", BACKGROUND_JOB, str(self.result),
                                 "tostop" if tostop else "-", output, stdin, *args],
                                env=bridge_env(BRIDGE_TEST_MARK=self.marker), cwd=cwd)
        wait_until(lambda: self.result.exists() and "ready" in self.result.read_text(), what="the job")
        self.pid = int(self.result.read_text().split()[1])

    def stopped(self) -> bool:
        return "stopped by" in self.result.read_text()

    def screen(self) -> str:
        path = self.dir / "screen"
        return path.read_text(errors="replace") if path.exists() else ""

    def fg(self) -> None:
        """As the shell's ``fg``: the job becomes the terminal's foreground and continues."""
        (self.dir / "fg").touch()
        wait_until(lambda: "resumed" in self.result.read_text(), what="fg")

    def close(self) -> None:
        kill_marked(self.marker)
        self.launcher.stop(signal.SIGKILL)


@pytest.mark.parametrize("layout", ["alone", "master", "reload"])
def test_a_background_job_that_may_not_write_to_its_terminal_stops_instead_of_spinning(layout):
    """``bridge http ... &`` on a terminal with ``stty tostop``: the next log line stops it (fg resumes it).

    With a handler for TTOU the refused write was retried for ever, at 100 % CPU.
    """
    port = free_port()
    job = BackgroundJob("http", APP, "--bind", f"127.0.0.1:{port}", *LAYOUTS[layout], tostop=True)
    try:
        wait_for_port(port)
        if "--reload" in LAYOUTS[layout]:
            wait_until(lambda: len(processes_with(job.marker)) >= 3, what="the supervisor's child")
        os.kill(job.pid, signal.SIGHUP)     # a log line: a warning, a reload
        wait_until(job.stopped, timeout=10, what=f"the job to be stopped: {job.result.read_text()}")
        assert job.result.read_text().split("stopped by ")[1].split()[0] == str(int(signal.SIGTSTP))
    finally:
        job.close()


def test_an_app_writing_to_the_terminal_from_a_background_job_stops_it_instead_of_spinning():
    """The app opens /dev/tty (getpass does) while bridge's own output goes to a file: still the terminal's TTOU."""
    port = free_port()
    d = public_tmpdir("bridge-ttyapp-")
    (d / "tty_app.py").write_text(TTY_APP)
    job = BackgroundJob("http", "tty_app:app", "--bind", f"127.0.0.1:{port}", "--chdir", str(d),
                        tostop=True, output=str(d / "out.log"))
    try:
        wait_for_port(port)
        client = threading.Thread(target=lambda: body_or_error(f"http://127.0.0.1:{port}/tty"), daemon=True)
        client.start()
        wait_until(job.stopped, timeout=10, what=f"the job to be stopped: {job.result.read_text()}")
        assert "SIGTTOU ignored" not in (d / "out.log").read_text()
    finally:
        job.close()


def test_a_job_stopped_by_its_terminal_serves_on_after_fg_without_a_leftover_signal():
    """fg: the writes the terminal refused go through, and their leftover TTOUs are no operator's.

    A thread retrying its write sends TTOU after TTOU; those still pending
    when the job resumes were taken for new ones: a warning (one process),
    one worker fewer (a master), or a second stop.
    """
    port = free_port()
    d = public_tmpdir("bridge-fg-")
    (d / "tty_app.py").write_text(TTY_APP)
    job = BackgroundJob("http", "tty_app:app", "--bind", f"127.0.0.1:{port}", "--chdir", str(d), tostop=True)
    try:
        wait_for_port(port)
        answers: list = []
        client = threading.Thread(target=lambda: answers.append(body_or_error(f"http://127.0.0.1:{port}/tty")),
                                  daemon=True)
        client.start()
        wait_until(job.stopped, timeout=10, what=f"the job to be stopped: {job.result.read_text()}")
        job.fg()
        client.join(15)
        assert answers == ["ok"]
        assert requests.get(f"http://127.0.0.1:{port}/", timeout=10).text == "ok"
        time.sleep(0.5)
        assert job.result.read_text().count("stopped by") == 1, job.result.read_text()
        assert "a prompt" in job.screen()
        assert "ignored" not in job.screen(), job.screen()
    finally:
        job.close()


@pytest.mark.parametrize("output, stdin", [("tty", "tty"), ("file", "null")])
def test_an_operators_ttin_to_a_background_master_adds_a_worker(output, stdin):
    """Job control aside, ``kill -TTIN`` to a master that is a background job means one worker more.

    Without ``tostop`` the terminal never sends TTOU, and a master never
    reads its stdin (an interactive shell's ``&`` job keeps the terminal
    there): neither signal can be the terminal's.
    """
    port = free_port()
    d = public_tmpdir("bridge-ttin-")
    job = BackgroundJob("http", APP, "--bind", f"127.0.0.1:{port}", "--workers", "2", tostop=False,
                        output="tty" if output == "tty" else str(d / "out.log"), stdin=stdin)
    try:
        wait_for_port(port)
        wait_until(lambda: len(processes_with(job.marker)) == 4, what="the master and its 2 workers")
        os.kill(job.pid, signal.SIGTTIN)
        wait_until(lambda: len(processes_with(job.marker)) == 5, what="a third worker")
        assert not job.stopped()
        assert requests.get(f"http://127.0.0.1:{port}/version", timeout=10).status_code == 200
    finally:
        job.close()


def body_or_error(url: str) -> str:
    try:
        return requests.get(url, timeout=20).text
    except requests.RequestException as exc:
        return type(exc).__name__


def test_a_child_whose_supervisor_was_killed_during_its_import_exits_quietly():
    """``kill -9`` on the --reload supervisor while its child imports: the child says so and exits, no traceback."""
    marker = new_marker()
    proc, port, out, _ = start_importing("reload", BRIDGE_TEST_MARK=marker)
    try:
        wait_until(lambda: len(marks(out, "importing")) == 1, what="the child's import to start")
        proc.proc.send_signal(signal.SIGKILL)
        wait_until(lambda: not processes_with(marker), what="the child to exit")
        output = proc.output()
        assert "supervisor (pid %d) is gone: not serving" % proc.pid in output, output
        assert "Traceback" not in output, output
    finally:
        kill_marked(marker)
        proc.stop(signal.SIGKILL)
