"""The bucketing of profiler stacks into phases (tests/benchmarks/phases.py).

A wrong bucket would send the next optimisation to the wrong place, so the
rules a reader relies on are pinned here: the deepest phase wins, the app's
own frames stay "app" however deep, bridge code the app calls back is
counted where it belongs, and a leaf line calling into the kernel is a
system call.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import phases  # noqa: E402

WORKER = [("Thread.run", "threading.py", 975),
          ("Worker._serve", "bridge/server/worker.py", 582),
          ("HTTPConnection.on_readable", "bridge/http/server.py", 321),
          ("HTTPConnection._serve", "bridge/http/server.py", 443),
          ("HTTPConnection._respond", "bridge/http/server.py", 557)]
APP = [("call_app", "bridge/wsgi.py", 441), ("dispatch", "/venv/site-packages/flask/app.py", 10),
       ("render", "/venv/site-packages/jinja2/environment.py", 20)]


def lines(text):
    return lambda path, line: text


def test_the_deepest_bridge_frame_with_a_phase_decides():
    parse = WORKER[:4] + [("Connection.next_event", "bridge/http/protocol.py", 245),
                          ("parse_head", "bridge/http/readers.py", 210)]
    assert phases.classify(parse) == "read/parse"
    head = WORKER + [("call_app", "bridge/wsgi.py", 451), ("HTTPConnection.send_head", "bridge/http/server.py", 765),
                     ("Connection.response_head", "bridge/http/protocol.py", 350)]
    assert phases.classify(head) == "response"
    assert phases.classify(WORKER + [("HTTPConnection._environ", "bridge/http/server.py", 518)]) == "environ"


def test_the_connection_glue_is_other_not_the_phase_of_its_caller():
    assert phases.classify(WORKER) == "other"


def test_frames_below_the_app_entry_are_app_however_deep():
    assert phases.classify(WORKER + APP) == "app"
    assert phases.classify(WORKER + APP + [("escape", "/venv/site-packages/markupsafe/__init__.py", 5)]) == "app"


def test_bridge_code_the_app_calls_back_counts_where_it_belongs():
    called_back = WORKER + APP + [("Response.start_response", "bridge/wsgi.py", 250)]
    assert phases.classify(called_back) == "response"
    reading = WORKER + APP + [("InputStream.read", "/x/site-packages/bridge/wsgi.py", 620),
                              ("HTTPConnection.read_body", "/x/site-packages/bridge/http/server.py", 610)]
    assert phases.classify(reading) == "read/parse"


def test_a_leaf_line_calling_into_the_kernel_is_a_syscall_whatever_the_phase():
    send = WORKER + [("call_app", "bridge/wsgi.py", 451), ("HTTPConnection.send_head", "bridge/http/server.py", 770),
                     ("HTTPConnection._send", "bridge/http/server.py", 246)]
    assert phases.classify(send, lines("            n = _writev(self.fd, parts)")) == "syscalls"
    assert phases.classify(send, lines("        rest = None")) == "response"
    poll = [("Worker._poll", "bridge/server/worker.py", 520)]
    assert phases.classify(poll, lines("            events = self._epoll.poll(-1, POLL_BATCH)")) == "syscalls"
    assert phases.classify(poll) == "worker/pool"


def test_the_app_s_own_io_is_app_not_bridge_s_syscalls():
    app_read = WORKER + APP + [("load", "/venv/site-packages/jinja2/loaders.py", 30)]
    assert phases.classify(app_read, lines("        data = os.read(fd, 4096)")) == "app"


def test_frames_outside_bridge_that_only_look_like_it_are_not_bridge():
    assert phases.frame_phase("parse_head", "/home/x/mybridge/http/readers.py") is None
    assert phases.frame_phase("parse_head", "/x/site-packages/bridge/http/readers.py") == "read/parse"


def test_py_spy_raw_lines_are_parsed_root_first_with_counts():
    raw = ("Thread.run (threading.py:975);Worker._serve (bridge/server/worker.py:582) 12\n"
           "f (a (b).py:3);g (/p/q.py:4) 3\n\n")
    stacks = phases.parse_raw(raw)
    assert stacks == [([("Thread.run", "threading.py", 975), ("Worker._serve", "bridge/server/worker.py", 582)], 12),
                      ([("f", "a (b).py", 3), ("g", "/p/q.py", 4)], 3)]
    assert phases.phase_shares(stacks) == {"worker/pool": 12, "other": 3}
