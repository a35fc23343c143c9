"""bridge.server.process: what a dead worker leaves behind is found by its session and killed."""
import os
import subprocess
import time

from bridge.server.process import kill_session, session_members
from support.procs import kill_marked, new_marker, wait_gone


def test_everything_left_in_a_dead_workers_session_is_killed_however_deep():
    marker = new_marker()
    # A stand-in worker: a session leader with a child that started a background
    # child, which started another (a CGI script's `sleep 300 &`, one level deeper).
    worker = subprocess.Popen(
        ["/bin/sh", "-c", "export MARK=$0; sh -c 'sleep 300 & sh -c \"sleep 301\" & wait' & sleep 302",
         marker], start_new_session=True)
    try:
        for _ in range(250):
            if len(session_members(worker.pid)) >= 5:
                break
            time.sleep(0.02)
        assert len(session_members(worker.pid)) >= 5
        worker.kill()            # the worker dies first, as when the master kills it
        worker.wait()
        assert kill_session(worker.pid) >= 4
        assert wait_gone(marker, 5) == []
        assert session_members(worker.pid) == {}
    finally:
        kill_marked(marker)


def test_the_callers_own_session_and_init_are_never_swept():
    assert kill_session(os.getsid(0)) == 0
    assert kill_session(1) == 0
    assert os.getpid() in session_members(os.getsid(0))
