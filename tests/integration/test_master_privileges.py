"""The master as root (issue 21, items 2 and 5-8): pid file, --user, logs, signals at start.

Real ``bridge http|fcgi`` processes started as root with ``--user nobody``,
files owned by root with mode 0600, links planted where the master writes,
signals sent while the app is still being imported.
"""
from __future__ import annotations

import os
import signal
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from support import Process, bridge_command, bridge_env, free_port, public_tmpdir, wait_for_port
from support.prefork import children, get, wait_for

NOBODY = 65534


def need_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("this test needs root (the CI runs as root)")


@pytest.fixture
def tmp():
    path = public_tmpdir("bridge-priv-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def procs():
    started = []

    def start(argv, **kw):
        p = Process(argv, env=bridge_env(**kw.pop("env", {})), **kw)
        started.append(p)
        return p
    yield start
    for p in started:
        kids = children(p.pid)
        p.stop(signal.SIGTERM, timeout=20)
        for pid in kids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def root_only(path: Path, text: str = "secret\n") -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def uids(pid: int) -> set:
    line = [x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("Uid:")][0]
    return set(map(int, line.split()[1:]))


# -- item 2: the pid file ----------------------------------------------------------------------


PLANT_AND_EXEC = (
    "import os, sys\n"
    "os.symlink(sys.argv[1], f'{sys.argv[2]}.{os.getpid()}.tmp')\n"
    "os.execv(sys.executable, [sys.executable, '-m', 'bridge', *sys.argv[3:]])\n"
)


def test_master_never_writes_its_pid_through_a_link_at_the_temporary_name(tmp, procs):
    """The old code wrote PATH.PID.tmp with open(..., 'w'): exec keeps the pid, so plant it."""
    target = root_only(tmp / "root-only")
    pidfile = tmp / "run" / "bridge.pid"
    pidfile.parent.mkdir(mode=0o755)
    port = free_port()
    p = procs([sys.executable, "-c", PLANT_AND_EXEC, str(target), str(pidfile),
               "http", "support.pm_apps:app", "--bind", f"127.0.0.1:{port}", "--workers", "1",
               "--pid", str(pidfile)])
    wait_for_port(port, proc=p.proc)
    assert target.read_text() == "secret\n"
    assert pidfile.read_text() == f"{p.pid}\n"
    p.proc.send_signal(signal.SIGTERM)
    assert p.proc.wait(30) == 0
    assert not pidfile.exists()


@pytest.mark.parametrize("setup, message", [
    ("world-writable", "is writable by others"),
    ("link", "is a symbolic link"),
])
def test_an_unsafe_pid_path_stops_the_start_with_one_line_and_status_2(tmp, procs, setup, message):
    target = root_only(tmp / "root-only")
    run = tmp / "run"
    run.mkdir()
    if setup == "world-writable":
        run.chmod(0o777)
    else:
        os.symlink(target, run / "bridge.pid")
    p = procs(bridge_command("http", "support.pm_apps:app", "--bind", f"127.0.0.1:{free_port()}",
                             "--workers", "1", "--pid", str(run / "bridge.pid")))
    assert p.proc.wait(30) == 2
    out = p.output().strip()
    assert message in out and "\n" not in out, out
    assert target.read_text() == "secret\n"


# -- item 7: files opened before the workers switch users --------------------------------


def openssl(*args: str, cwd) -> None:
    out = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


@pytest.fixture
def root_only_certs(tmp):
    """A certificate and key readable by root only, in a root-only directory (/etc/ssl/private)."""
    d = tmp / "private"
    d.mkdir(mode=0o700)
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "server.key", "-out", "server.pem", "-days", "2", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=IP:127.0.0.1", cwd=d)
    for name in ("server.key", "server.pem"):
        (d / name).chmod(0o600)
    return d


def https_get(port: int, cafile: Path, path: str = "/") -> tuple:
    import http.client
    import ssl
    ctx = ssl.create_default_context(cafile=str(cafile))
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_root_only_key_and_access_log_work_with_user_nobody(tmp, procs, root_only_certs):
    need_root()
    logs = tmp / "log"
    logs.mkdir(mode=0o700)
    port = free_port()
    p = procs(bridge_command("http", "support.priv_apps:app", "--bind", f"127.0.0.1:{port}",
                             "--workers", "2", "--user", "nobody",
                             "--certfile", str(root_only_certs / "server.pem"),
                             "--keyfile", str(root_only_certs / "server.key"),
                             "--access-log", str(logs / "access.log")))
    wait_for_port(port, proc=p.proc)
    answers = {}
    for _ in range(10):
        status, body = wait_for(lambda: _try(https_get, port, root_only_certs / "server.pem"),
                                what=f"an HTTPS answer\n{p.output()}")
        assert status == 200
        pid, imported_as, serving_as = map(int, body.split())
        answers[pid] = (imported_as, serving_as)
    assert set(answers.values()) == {(NOBODY, NOBODY)}
    workers = children(p.pid)
    assert len(workers) == 2 and all(uids(w) == {NOBODY} for w in workers)
    assert uids(p.pid) == {0}                       # the master keeps root
    assert "GET / HTTP/1.1\" 200" in (logs / "access.log").read_text()
    out = p.output()
    assert "starting another" not in out and "crash loop" not in out, out


def _try(fn, *args):
    try:
        return fn(*args)
    except OSError:
        return None


def test_preload_imports_the_app_as_the_workers_user(tmp, procs):
    need_root()
    port = free_port()
    p = procs(bridge_command("http", "support.priv_apps:app", "--bind", f"127.0.0.1:{port}",
                             "--workers", "1", "--user", "nobody", "--preload"))
    wait_for_port(port, proc=p.proc)
    status, body = wait_for(lambda: _try(get, port, "/"), what=f"an answer\n{p.output()}")
    pid, imported_as, serving_as = map(int, body.split())
    assert (imported_as, serving_as) == (NOBODY, NOBODY)
    assert uids(p.pid) == {0}


def test_numeric_user_without_a_passwd_entry_is_accepted(tmp, procs):
    need_root()
    import pwd
    uid = 54321
    with pytest.raises(KeyError):
        pwd.getpwuid(uid)
    port = free_port()
    p = procs(bridge_command("http", "support.priv_apps:app", "--bind", f"127.0.0.1:{port}",
                             "--workers", "1", "--user", str(uid)))
    wait_for_port(port, proc=p.proc)
    status, body = wait_for(lambda: _try(get, port, "/"), what=f"an answer\n{p.output()}")
    assert status == 200 and int(body.split()[2]) == uid
    [worker] = children(p.pid)
    status_text = Path(f"/proc/{worker}/status").read_text()
    gids = [x for x in status_text.splitlines() if x.startswith("Gid:")][0].split()[1:]
    groups = [x for x in status_text.splitlines() if x.startswith("Groups:")][0].split()[1:]
    assert set(map(int, gids)) == {uid} and groups == []


@pytest.mark.parametrize("args, message", [
    (["--access-log", "/nonexistent-dir/access.log"], "cannot open --access-log"),
    (["--user", "no-such-user-here"], "--user no-such-user-here: no such user"),
    (["--group", "no-such-group-here"], "--group no-such-group-here: no such group"),
])
def test_a_start_that_cannot_work_exits_2_with_one_line(procs, args, message):
    p = procs(bridge_command("http", "support.priv_apps:app", "--bind", f"127.0.0.1:{free_port()}",
                             "--workers", "2", *args))
    assert p.proc.wait(30) == 2
    out = p.output().strip()
    assert message in out and "\n" not in out, out


def test_an_app_the_workers_user_cannot_read_stops_the_master_with_status_2(tmp, procs):
    need_root()
    private = tmp / "private"
    private.mkdir(mode=0o700)
    (private / "secret_app.py").write_text("def app(environ, start_response):\n    return []\n")
    p = procs(bridge_command("http", "secret_app:app", "--pythonpath", str(private),
                             "--bind", f"127.0.0.1:{free_port()}", "--workers", "2",
                             "--user", "nobody"))
    assert p.proc.wait(30) == 2
    assert "crash loop" not in p.output()


# -- item 8: the pid file is removed on every clean exit, and a reused number is no master ---


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT, signal.SIGQUIT])
def test_pid_file_in_a_root_owned_directory_is_removed_with_user_nobody(tmp, procs, stop):
    need_root()
    run = tmp / "run"
    run.mkdir(mode=0o755)
    pidfile = run / "bridge.pid"
    port = free_port()
    p = procs(bridge_command("fcgi", "support.priv_apps:app", "--bind", f"127.0.0.1:{port}",
                             "--workers", "1", "--user", "nobody", "--pid", str(pidfile)))
    wait_for_port(port, proc=p.proc)
    wait_for(lambda: children(p.pid) and all(uids(w) == {NOBODY} for w in children(p.pid)),
             what="a worker running as nobody")
    assert pidfile.read_text() == f"{p.pid}\n"
    p.proc.send_signal(stop)
    assert p.proc.wait(30) == 0
    assert not pidfile.exists(), p.output()


def test_a_pid_file_naming_an_unrelated_live_process_does_not_block_a_start(tmp, procs):
    run = tmp / "run"
    run.mkdir(mode=0o755)
    pidfile = run / "bridge.pid"
    with subprocess.Popen(["sleep", "60"]) as sleeper:
        try:
            pidfile.write_text(f"{sleeper.pid}\n")
            port = free_port()
            p = procs(bridge_command("http", "support.priv_apps:app", "--bind", f"127.0.0.1:{port}",
                                     "--workers", "1", "--pid", str(pidfile)))
            wait_for_port(port, proc=p.proc)
            assert pidfile.read_text() == f"{p.pid}\n"
            second = procs(bridge_command("http", "support.priv_apps:app", "--bind",
                                          f"127.0.0.1:{free_port()}", "--workers", "1",
                                          "--pid", str(pidfile)))
            assert second.proc.wait(30) == 2
            assert f"process {p.pid} is still running" in second.output()
        finally:
            sleeper.kill()


# -- item 5: SIGUSR1 after logrotate, with --user ------------------------------------------


def rotate_like_logrotate_create(path: Path, mode: int = 0o640) -> None:
    """What the guide's logrotate block does with ``create MODE root root`` (logrotate's default)."""
    os.rename(path, path.with_name(path.name + ".1"))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    os.fchown(fd, 0, 0)
    os.close(fd)


def both_workers_serve(port: int, pid: int) -> set:
    """The two workers' pids once the status page shows both ready (a later USR1 finds them serving)."""
    import json

    def ready() -> set:
        answer = _try(get, port, "/bridge-status?json")
        if not answer or answer[0] != 200:
            return set()
        return {w["pid"] for w in json.loads(answer[1])["processes"] if w["state"] == "ready"}
    seen = wait_for(lambda: len(ready()) == 2 and ready(), what="both workers ready")
    # After a reload the old generation may still be finishing its graceful
    # stop: wait for it to leave, then no other child may be there.
    wait_for(lambda: children(pid) <= seen, timeout=15, what="only the ready workers left")
    assert seen == children(pid)
    return seen


def test_usr1_after_logrotate_create_makes_root_owned_files_works_with_user_nobody(tmp, procs):
    need_root()
    command = "http"
    logs = tmp / "log"
    logs.mkdir(mode=0o755)
    error, access = logs / "error.log", logs / "access.log"
    port = free_port()
    extra = ["--access-log", str(access)]
    p = procs(bridge_command(command, "support.priv_apps:app", "--bind", f"127.0.0.1:{port}",
                             "--workers", "2", "--user", "nobody", "--error-log", str(error),
                             "--pid", str(tmp / "bridge.pid"), "--status-path", "/bridge-status",
                             *extra))
    wait_for_port(port, proc=p.proc)
    workers = both_workers_serve(port, p.pid)
    for _ in range(3):
        rotate_like_logrotate_create(error)
        rotate_like_logrotate_create(access)
        # postrotate: kill -USR1 $(cat PIDFILE)
        os.kill(int((tmp / "bridge.pid").read_text()), signal.SIGUSR1)
        wait_for(lambda: "log files reopened" in error.read_text(), what=f"reopened\n{p.output()}")
        assert p.proc.poll() is None
    assert error.stat().st_uid == NOBODY
    assert children(p.pid) == workers                       # no worker died either
    # Every process has dropped the rotated files and holds the new ones.
    def open_logs(pid: int) -> set:
        names = set()
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                names.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
            except OSError:
                pass
        return {n for n in names if n.startswith(str(logs))}
    wanted = {str(error), str(access)}
    wait_for(lambda: all(open_logs(w) == wanted for w in workers | {p.pid}),
             what="every process on the new files")
    for _ in range(4):
        status, body = wait_for(lambda: _try(get, port, "/err"), what="an answer")
        assert f"app line from {body.split()[0].decode()}" in error.read_text()
    assert '"GET /err HTTP/1.1" 200' in access.read_text()
    assert access.stat().st_uid == NOBODY
    assert "cannot reopen" not in error.read_text() + p.output()


def test_a_reopen_that_fails_is_logged_and_nothing_stops(tmp, procs):
    need_root()
    logs = tmp / "log"
    logs.mkdir(mode=0o755)
    error = logs / "error.log"
    port = free_port()
    p = procs(bridge_command("http", "support.priv_apps:app", "--bind", f"127.0.0.1:{port}",
                             "--workers", "2", "--user", "nobody", "--error-log", str(error),
                             "--status-path", "/bridge-status"))
    wait_for_port(port, proc=p.proc)
    workers = both_workers_serve(port, p.pid)
    os.rename(error, logs / "error.log.1")
    error.mkdir()                    # nobody can open a file there, root included
    p.proc.send_signal(signal.SIGUSR1)
    old = logs / "error.log.1"
    wait_for(lambda: old.read_text().count("cannot reopen") >= 3, what="3 failures logged")
    assert p.proc.poll() is None and children(p.pid) == workers
    assert wait_for(lambda: _try(get, port, "/"), what="an answer")[0] == 200


# -- item 6: a signal while the app is still being imported ---------------------------------


def slow_import_env(marker: Path) -> dict:
    return {"BRIDGE_TEST_IMPORT_MARKER": str(marker), "BRIDGE_TEST_IMPORT_DELAY": "1.5"}


def importing(marker: Path) -> set:
    return {int(name.split(".")[1]) for name in os.listdir(marker) if name.startswith("importing.")}


@pytest.mark.parametrize("signals", [(signal.SIGUSR1,), (signal.SIGHUP,),
                                     (signal.SIGUSR1, signal.SIGHUP, signal.SIGTTIN)])
@pytest.mark.parametrize("mode", ["single", "workers", "preload"])
def test_a_signal_during_the_app_import_is_survived_and_then_the_app_serves(tmp, procs, mode,
                                                                            signals):
    marker = tmp / "marker"
    marker.mkdir(mode=0o777)
    port = free_port()
    args = {"single": [], "workers": ["--workers", "2"], "preload": ["--workers", "2", "--preload"]}
    p = procs(bridge_command("http", "support.priv_apps:app", "--bind", f"127.0.0.1:{port}",
                             *args[mode]), env=slow_import_env(marker))
    # Workers import after the fork: wait until each has started its import.
    wait_for(lambda: len(importing(marker)) >= (2 if mode == "workers" else 1),
             what=f"import started\n{p.output()}")
    if mode == "workers":
        for pid in importing(marker):
            os.kill(pid, signal.SIGUSR1)      # as the master forwards it
    for signum in signals:
        p.proc.send_signal(signum)
    wait_for_port(port, proc=p.proc, timeout=30)
    status, body = wait_for(lambda: _try(get, port, "/"), what=f"an answer\n{p.output()}")
    assert status == 200 and p.proc.poll() is None
    out = p.output()
    assert "killed by" not in out and "crash loop" not in out, out


def test_usr1_forwarded_to_workers_importing_during_a_hup_reload_kills_none(tmp, procs):
    marker = tmp / "marker"
    marker.mkdir(mode=0o777)
    port = free_port()
    p = procs(bridge_command("http", "support.priv_apps:app", "--bind", f"127.0.0.1:{port}",
                             "--workers", "2", "--status-path", "/bridge-status"),
              env=slow_import_env(marker))
    old = both_workers_serve(port, p.pid)
    for name in os.listdir(marker):
        os.unlink(marker / name)
    p.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: len(importing(marker)) == 2, what="the new generation importing")
    p.proc.send_signal(signal.SIGUSR1)     # the master forwards it to all four
    wait_for(lambda: "reload complete" in p.output(), timeout=30, what="reload complete")
    new = both_workers_serve(port, p.pid)
    assert not new & old
    assert "killed by" not in p.output(), p.output()


def test_a_link_planted_in_a_log_directory_the_workers_own_is_not_followed_on_usr1(tmp, procs):
    """CVE-2016-1247's shape: the workers' user owns the log directory and plants a link."""
    need_root()
    logs = tmp / "log"
    logs.mkdir(mode=0o755)
    os.chown(logs, NOBODY, -1)
    target = root_only(tmp / "shadow")
    error = logs / "error.log"
    port = free_port()
    p = procs(bridge_command("http", "support.priv_apps:app", "--bind", f"127.0.0.1:{port}",
                             "--workers", "1", "--user", "nobody", "--error-log", str(error),
                             "--access-log", str(logs / "access.log")))
    wait_for_port(port, proc=p.proc)
    wait_for(lambda: _try(get, port, "/"), what="an answer")
    for name in ("error.log", "access.log"):
        os.rename(logs / name, logs / f"{name}.1")
        os.symlink(target, logs / name)
    p.proc.send_signal(signal.SIGUSR1)
    wait_for(lambda: (logs / "error.log.1").read_text().count("cannot reopen") >= 2,
             what="the refusals logged")
    st = target.stat()
    assert (st.st_uid, st.st_mode & 0o777, target.read_text()) == (0, 0o600, "secret\n")
    assert p.proc.poll() is None
    assert wait_for(lambda: _try(get, port, "/"), what="still serving")[0] == 200


def test_hup_reads_a_renewed_root_only_certificate_for_the_new_workers(tmp, procs, root_only_certs):
    need_root()
    import ssl
    d = root_only_certs
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", "new.key", "-out", "new.pem", "-days", "2", "-subj", "/CN=renewed",
            "-addext", "subjectAltName=IP:127.0.0.1", cwd=d)
    port = free_port()
    p = procs(bridge_command("http", "support.priv_apps:app", "--bind", f"127.0.0.1:{port}",
                             "--workers", "1", "--user", "nobody",
                             "--certfile", str(d / "server.pem"), "--keyfile", str(d / "server.key")))
    wait_for_port(port, proc=p.proc)
    wait_for(lambda: _try(https_get, port, d / "server.pem"), what="an HTTPS answer")
    os.replace(d / "new.pem", d / "server.pem")         # what certbot's renewal does
    os.replace(d / "new.key", d / "server.key")
    (d / "server.key").chmod(0o600)
    p.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload complete" in p.output(), timeout=30, what="reload complete")
    renewed = (d / "server.pem").read_text().strip()
    wait_for(lambda: (_try(ssl.get_server_certificate, ("127.0.0.1", port)) or "").strip() == renewed,
             what="the renewed certificate served")
    assert wait_for(lambda: _try(https_get, port, d / "server.pem"), what="renewed")[0] == 200
