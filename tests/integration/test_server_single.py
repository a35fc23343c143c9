"""One-process servers (no --workers): signals, sockets and start-up errors, from outside."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess

import pytest

from support import Process, bridge_command, bridge_env, free_port, public_tmpdir, wait_for_port
from support.prefork import children, get, wait_for


def start(*args: str, command: str = "http", port: int | None = None, log=None) -> tuple:
    port = port or free_port()
    proc = Process(bridge_command(command, "support.pm_apps:app", "--bind", f"127.0.0.1:{port}",
                                  "--status-path", "/bridge-status", *args), env=bridge_env(), log=log)
    wait_for_port(port, proc=proc.proc)
    return proc, port


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(bridge_command(*args), env=bridge_env(), capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def test_one_process_serves_without_a_master():
    proc, port = start()
    try:
        status, body = get(port, "/")
        assert status == 200 and body.strip() == str(proc.pid).encode()
        assert children(proc.pid) == set()
        assert f"Listening on http://127.0.0.1:{port} (4 threads, pid {proc.pid})" in proc.output()
        assert get(port, "/bridge-status")[0] == 200
    finally:
        proc.stop()


def test_term_finishes_the_request_in_flight_then_exits_0():
    import threading
    proc, port = start()
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("r", get(port, "/sleep?s=1")))
    t.start()
    wait_for(lambda: '"GET /sleep' in get(port, "/bridge-status?json")[1].decode(), what="in flight")
    proc.proc.send_signal(signal.SIGTERM)
    t.join(30)
    assert result["r"][0] == 200
    assert proc.proc.wait(30) == 0


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGQUIT])
def test_int_and_quit_stop_the_server_with_status_0(signum):
    proc, port = start()
    assert get(port, "/")[0] == 200
    proc.proc.send_signal(signum)
    assert proc.proc.wait(30) == 0


def test_hup_and_ttin_do_not_kill_a_single_process_they_say_what_is_needed():
    proc, port = start()
    try:
        proc.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "SIGHUP ignored" in proc.output(), what="warning")
        proc.proc.send_signal(signal.SIGTTIN)
        wait_for(lambda: "SIGTTIN ignored" in proc.output(), what="warning")
        assert "--workers N" in proc.output()
        assert get(port, "/")[0] == 200
    finally:
        proc.stop()


def test_usr1_reopens_the_error_log():
    tmp = public_tmpdir("bridge-single-log-")
    logfile = tmp / "error.log"
    proc, port = start("--error-log", str(logfile))
    try:
        wait_for(lambda: logfile.exists() and "Listening on" in logfile.read_text(), what="log")
        os.rename(logfile, tmp / "error.log.1")
        proc.proc.send_signal(signal.SIGUSR1)
        wait_for(logfile.exists, what="log file reopened")
        proc.proc.send_signal(signal.SIGHUP)         # something that logs, after the reopen
        wait_for(lambda: logfile.exists() and "SIGHUP ignored" in logfile.read_text(), what="new log")
    finally:
        proc.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def test_stale_unix_socket_from_a_killed_server_is_replaced_on_restart():
    tmp = public_tmpdir("bridge-single-sock-")
    path = tmp / "app.sock"
    argv = bridge_command("fcgi", "support.pm_apps:app", "--bind", f"unix:{path}")
    first = Process(argv, env=bridge_env())
    wait_for(lambda: path.exists(), what="socket")
    first.stop(signal.SIGKILL)                   # leaves the socket file behind
    assert path.exists()
    second = Process(argv, env=bridge_env())
    try:
        wait_for(lambda: "Listening on" in second.output(), what="second server up")
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(path))
    finally:
        second.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def test_unix_socket_of_a_running_server_is_not_stolen():
    tmp = public_tmpdir("bridge-single-sock-")
    path = tmp / "app.sock"
    first = Process(bridge_command("fcgi", "support.pm_apps:app", "--bind", f"unix:{path}"),
                    env=bridge_env())
    try:
        wait_for(lambda: "Listening on" in first.output(), what="first server up")
        result = run("fcgi", "support.pm_apps:app", "--bind", f"unix:{path}")
        assert result.returncode == 2
        assert "in use by a running server" in result.stderr
        assert first.proc.poll() is None
    finally:
        first.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def test_port_in_use_is_one_clear_line_and_status_2():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        result = run("http", "support.pm_apps:app", "--bind", f"127.0.0.1:{port}")
    assert result.returncode == 2
    assert "another process listens there" in result.stderr
    assert "Traceback" not in result.stderr


def test_fcgi_without_a_socket_says_how_to_run_it():
    result = run("fcgi", "support.pm_apps:app")
    assert result.returncode == 2
    assert "--bind" in result.stderr and "spawn-fcgi" in result.stderr
    assert "non-socket" not in result.stderr and "Traceback" not in result.stderr


def _context_switches(pid: int) -> int:
    """Voluntary context switches of every thread of ``pid`` so far (each one a wake-up)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total


@pytest.mark.parametrize("command", ["http", "fcgi"])
def test_idle_worker_wakes_only_a_few_times_a_second(command):
    import time
    proc, port = start(command=command)     # the default --threads 4
    try:
        if command == "http":
            for _ in range(10):
                assert get(port, "/")[0] == 200
        time.sleep(0.5)
        before = _context_switches(proc.pid)
        time.sleep(1.0)
        # A sweep 4 times a second and the heartbeat; before, the monitor
        # polled every 5 ms forever (about 200 a second).
        assert _context_switches(proc.pid) - before < 20
    finally:
        proc.stop()
