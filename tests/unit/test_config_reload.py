"""SIGHUP with ``--config``: what the master takes from the file read again, what it keeps.

The master's HUP step (``Master._reread_settings``) on a real Config and
Scoreboard, without forking: the file is rewritten, the step runs, and the
master's settings and log say what happened.
"""
from __future__ import annotations

import logging
import os

import pytest

from bridge.config import Config
from bridge.server.master import Master
from bridge.server.scoreboard import Scoreboard


def builder(app, config, prepared=None):
    raise AssertionError("no worker is started here")


@pytest.fixture
def master(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="bridge")
    logging.getLogger("bridge").propagate = True

    def make(text, cli=None, preload=False):
        path = tmp_path / "bridge.toml"
        path.write_text(text)
        config = Config.build("http", {"config": str(path), "app": "bridge.demo:app", **(cli or {})},
                              environ={})
        m = Master(config, builder, app=(lambda e, s: []) if preload else None)
        m.board = Scoreboard(m._slots_needed(), m.threads)
        m.path = path
        return m
    yield make
    logging.getLogger("bridge").propagate = False


def reread(m, text):
    m.path.write_text(text)
    m._reread_settings()


def test_workers_threads_and_timeouts_from_the_file_read_again_apply(master):
    m = master("workers = 2\nthreads = 2\ntimeout = 30\n")
    old_board = m.board
    reread(m, "workers = 3\nthreads = 5\ntimeout = 10\nmax_requests = 100\n")
    assert (m.target, m.threads, m.timeout, m.max_requests) == (3, 5, 10.0, 100)
    assert m.config.threads == 5 and m.config.origins["threads"] == "file"
    assert m.board is not old_board and m.board.threads == 5     # new workers record 5 threads
    assert m.config_before is not None and m.config_before.threads == 2


def test_what_needs_a_restart_is_logged_one_line_each_and_kept(master, caplog):
    m = master('bind = ["127.0.0.1:8001"]\nbacklog = 100\nthreads = 2\n')
    m.config.bind = ["127.0.0.1:8001"]
    reread(m, 'bind = ["127.0.0.1:8002"]\nbacklog = 200\npid = "/tmp/x.pid"\nthreads = 3\n')
    lines = [r.getMessage() for r in caplog.records if "needs a restart" in r.getMessage()]
    assert [line.split(" ")[1] for line in lines] == ["bind", "backlog", "pid"]
    assert all(line.count("\n") == 0 for line in lines)
    assert (m.config.bind, m.config.backlog, m.config.pid) == (["127.0.0.1:8001"], 100, None)
    assert m.config.threads == 3


def test_a_value_a_command_adjusted_at_start_is_kept_without_a_restart_warning(master, caplog):
    m = master("threads = 2\n")
    m.config.bind = ["127.0.0.1:8000"]          # bridge http's default, set by its main()
    reread(m, "threads = 3\n")
    assert m.config.bind == ["127.0.0.1:8000"]
    assert not [r for r in caplog.records if "needs a restart" in r.getMessage()]


def test_with_preload_what_is_loaded_with_the_app_needs_a_restart(master, caplog):
    m = master("gzip = false\nthreads = 2\n", preload=True)
    reread(m, "gzip = true\nthreads = 4\n")
    assert m.config.gzip is False and m.threads == 4
    assert any("gzip changed" in r.getMessage() and "--preload" in r.getMessage()
               for r in caplog.records)
    m = master("gzip = false\n")
    reread(m, "gzip = true\n")
    assert m.config.gzip is True                 # without --preload: the new workers wrap it


def test_the_command_line_still_beats_the_file_read_again(master):
    m = master("workers = 2\n", cli={"workers": "2"})
    reread(m, "workers = 4\n")
    assert m.target == 2 and m.config.workers == 2


@pytest.mark.parametrize("text, words", [
    ("threads = ", "not valid TOML"),
    ('threads = "many"', "threads: expected a whole number"),
    ("thread = 3", "did you mean 'threads'"),
    ("workers = 0", "workers"),
])
def test_a_bad_file_on_hup_is_logged_and_the_settings_in_force_are_kept(master, caplog, text, words):
    m = master("threads = 2\n")
    before = m.config
    reread(m, text + "\n")
    assert m.config is before and m.threads == 2
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and words in errors[0] and str(m.path) in errors[0]
    assert errors[0].endswith("the settings in force are kept")


def test_an_unreadable_file_on_hup_keeps_the_settings(master, caplog):
    m = master("threads = 2\n")
    m.path.unlink()
    m._reread_settings()
    assert m.threads == 2
    assert any("cannot read the config file" in r.getMessage() for r in caplog.records)


def test_the_http_check_runs_on_the_file_read_again(master, caplog):
    from bridge.http.server import factory_builder
    m = master("threads = 2\n")
    m.factory_builder = factory_builder
    reread(m, 'threads = 3\ncertfile = "/no/such/cert.pem"\n')
    assert m.threads == 2
    assert any("cannot load --certfile" in r.getMessage() for r in caplog.records)


def test_a_failed_reload_puts_the_settings_before_it_back(master):
    m = master("threads = 2\n")
    reread(m, "threads = 6\n")
    assert m.threads == 6
    m._restore_settings()
    assert m.threads == 2 and m.config.threads == 2 and m.board.threads == 2


def test_a_new_error_log_is_opened_by_the_master(master, tmp_path):
    m = master("threads = 2\n")
    reread(m, f'error_log = "{tmp_path / "new.log"}"\n')
    try:
        logging.getLogger("bridge.server").warning("after the reload")
        assert "after the reload" in (tmp_path / "new.log").read_text()
    finally:
        for handler in list(logging.getLogger("bridge").handlers):
            logging.getLogger("bridge").removeHandler(handler)
            handler.close()


def test_any_failure_reading_the_file_on_hup_is_logged_and_the_master_carries_on(master, caplog,
                                                                                 monkeypatch):
    m = master("threads = 2\n")

    def broken():
        raise RuntimeError("unexpected")
    monkeypatch.setattr(m.config, "reread", broken)
    m._reread_settings()
    assert m.threads == 2
    assert any("unexpected; the settings in force are kept" in r.getMessage() for r in caplog.records)


def test_the_pool_totals_survive_a_new_scoreboard_and_the_old_workers_exits():
    from bridge.server.scoreboard import Scoreboard
    old = Scoreboard(4, 2)
    a, b = old.claim(101, 1), old.claim(102, 1)
    for index in (a, b):
        slot = old.slot(index)
        slot.request_started(0, 1.0, {"REQUEST_METHOD": "GET", "PATH_INFO": "/"})
        slot.request_finished(0)
    old.release(a)                                   # gone before the HUP
    new = Scoreboard(4, 5)
    new.carry_over(old)
    old.release(b, into=new)                         # gone after it
    header, (_, counts) = new.header(), new.histogram()
    assert (header["gone_requests"], header["worker_exits"], sum(counts)) == (2, 2, 2)
    assert new.threads == 5


def test_a_config_file_other_users_can_write_is_warned_about_at_every_hup(master, caplog):
    m = master("workers = 2\n")
    m.path.chmod(0o666)
    reread(m, "workers = 3\n")
    assert "can be changed by other users" in caplog.text and "writable by every user" in caplog.text
    caplog.clear()
    m.path.chmod(0o644)
    reread(m, "workers = 4\n")
    assert "other users" not in caplog.text


def _eventfds_open() -> int:
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            count += "eventfd" in os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            pass
    return count


def test_a_scoreboard_replaced_at_hup_closes_its_nudge_descriptors_once_its_last_worker_is_gone(master):
    """Each HUP that changes --threads made a board with one eventfd per slot and
    never closed the old one's: the master and every later worker carried 16
    more descriptors per such HUP (112 eventfds after 6 HUPs, seen live)."""
    from bridge.server.master import WorkerProc
    m = master("workers = 2\nthreads = 2\n")
    before = _eventfds_open()
    old = m.board
    slot = old.claim(0, m.generation)
    w = WorkerProc(4242, slot, m.generation, old)
    m.workers[w.pid] = w
    reread(m, "workers = 2\nthreads = 3\n")     # a new board; the old worker keeps its own
    if m.board is old:
        m._new_board()
    assert m.board is not old
    m.workers.pop(w.pid)
    m._release(w)
    m.board.close()
    assert _eventfds_open() == before - old.slots     # neither board's are left


def test_a_worker_forked_while_an_older_board_is_in_use_closes_that_boards_descriptors(master):
    """The master closed an old board once its last worker left, but a worker
    forked meanwhile had inherited its eventfds and kept them for life (112
    after six threads-changing HUPs during long requests, seen in review)."""
    from bridge.server.master import WorkerProc
    m = master("workers = 2\nthreads = 2\n")
    old = m.board
    w = WorkerProc(4242, old.claim(0, m.generation), m.generation, old)
    m.workers[w.pid] = w
    reread(m, "workers = 2\nthreads = 3\n")
    if m.board is old:
        m._new_board()
    assert m.board is not old
    with_both = _eventfds_open()
    m._close_older_boards()             # what a new worker does first
    assert _eventfds_open() == with_both - old.slots
    assert m.board.nudges, "the worker's own board keeps its descriptors"
    m.workers.pop(w.pid)
    m.board.close()
