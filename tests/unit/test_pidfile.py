"""The master's pid file (bridge.server.pidfile): no link followed, no stale number trusted."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bridge.server.pidfile import PidFile, PidFileError


@pytest.fixture
def piddir(tmp_path):
    d = tmp_path / "run"
    d.mkdir(mode=0o755)
    return d


def write_target(tmp_path):
    target = tmp_path / "root-only"
    target.write_text("secret\n")
    target.chmod(0o600)
    return target


def test_pid_file_is_written_locked_and_removed(piddir):
    pf = PidFile(str(piddir / "bridge.pid"))
    pf.acquire(os.getpid())
    assert (piddir / "bridge.pid").read_text() == f"{os.getpid()}\n"
    assert oct((piddir / "bridge.pid").stat().st_mode & 0o777) == "0o644"
    assert os.listdir(piddir) == ["bridge.pid"]          # no temporary file left
    pf.release()
    assert os.listdir(piddir) == []


def test_a_link_planted_at_the_pid_path_is_refused_and_its_target_untouched(piddir, tmp_path):
    target = write_target(tmp_path)
    os.symlink(target, piddir / "bridge.pid")
    with pytest.raises(PidFileError, match="symbolic link"):
        PidFile(str(piddir / "bridge.pid")).acquire(os.getpid())
    assert target.read_text() == "secret\n"
    assert os.path.islink(piddir / "bridge.pid")


@pytest.mark.parametrize("name", ["{path}.{pid}.tmp", "{path}.tmp", ".bridge.pid.tmp"])
def test_links_planted_at_likely_temporary_names_are_never_written_through(piddir, tmp_path, name):
    target = write_target(tmp_path)
    path = str(piddir / "bridge.pid")
    link = name.format(path=path, pid=os.getpid())
    os.symlink(target, link if link.startswith("/") else piddir / link)
    pf = PidFile(path)
    pf.acquire(os.getpid())
    assert target.read_text() == "secret\n"
    assert (piddir / "bridge.pid").read_text() == f"{os.getpid()}\n"
    pf.release()


def test_a_fifo_at_the_pid_path_is_refused_without_hanging(piddir):
    os.mkfifo(piddir / "bridge.pid")
    with pytest.raises(PidFileError, match="not a regular file"):
        PidFile(str(piddir / "bridge.pid")).acquire(os.getpid())


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o757])
def test_a_directory_writable_by_others_is_refused(piddir, mode):
    piddir.chmod(mode)
    with pytest.raises(PidFileError, match="writable by others"):
        PidFile(str(piddir / "bridge.pid")).acquire(os.getpid())
    assert os.listdir(piddir) == []


def test_a_sticky_world_writable_directory_is_accepted(piddir):
    piddir.chmod(0o1777)
    pf = PidFile(str(piddir / "bridge.pid"))
    pf.acquire(os.getpid())
    pf.release()


def test_a_directory_owned_by_another_user_is_refused(piddir):
    if os.geteuid() != 0:
        pytest.fail("this test needs root (the CI runs as root)")
    os.chown(piddir, 65534, -1)
    with pytest.raises(PidFileError, match="belongs to uid 65534"):
        PidFile(str(piddir / "bridge.pid")).acquire(os.getpid())


def test_the_pid_of_an_unrelated_live_process_does_not_block_a_start(piddir):
    with subprocess.Popen(["sleep", "30"]) as sleeper:
        try:
            (piddir / "bridge.pid").write_text(f"{sleeper.pid}\n")
            pf = PidFile(str(piddir / "bridge.pid"))
            pf.acquire(os.getpid())
            assert (piddir / "bridge.pid").read_text() == f"{os.getpid()}\n"
            pf.release()
        finally:
            sleeper.kill()


def test_a_file_held_by_a_live_master_blocks_a_second_start(piddir):
    path = str(piddir / "bridge.pid")
    first = PidFile(path)
    first.acquire(os.getpid())
    # The lock is per open file: another process must see it held.
    code = ("import sys; from bridge.server.pidfile import PidFile, PidFileError\n"
            "try: PidFile(sys.argv[1]).acquire(1)\n"
            "except PidFileError as e: print(e); sys.exit(3)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True,
                          env=env, timeout=30)
    assert done.returncode == 3, done
    assert f"process {os.getpid()} is still running" in done.stdout
    first.release()


def test_release_leaves_a_file_that_replaced_ours(piddir):
    path = piddir / "bridge.pid"
    pf = PidFile(str(path))
    pf.acquire(os.getpid())
    os.unlink(path)
    path.write_text("12345\n")                    # another master's, written since
    pf.release()
    assert path.read_text() == "12345\n"


def test_a_held_file_with_odd_content_is_reported_without_echoing_it(piddir):
    path = piddir / "bridge.pid"
    first = PidFile(str(path))
    first.acquire(os.getpid())
    with open(path, "w") as f:                 # same inode, still locked
        f.write("12\n\x1b[2J[INFO] forged")
    code = ("import sys; from bridge.server.pidfile import PidFile, PidFileError\n"
            "try: PidFile(sys.argv[1]).acquire(1)\n"
            "except PidFileError as e: print(e); sys.exit(3)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                          text=True, env=env, timeout=30)
    assert done.returncode == 3 and "process ? is still running" in done.stdout
    assert "\x1b" not in done.stdout and done.stdout.count("\n") == 1
    first.release()
