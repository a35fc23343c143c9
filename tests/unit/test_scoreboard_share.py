"""The scoreboard's open-connection counts: what a pre-fork worker balances its accepts on."""
from __future__ import annotations

from bridge.server.scoreboard import BOOTING, READY, STOPPING, Scoreboard


def test_fewest_open_is_the_least_loaded_ready_sibling_never_the_asker():
    board = Scoreboard(4, 2)
    for i, (state, count) in enumerate([(READY, 9), (READY, 5), (READY, 7), (READY, 2)]):
        board.reset(i, 100 + i, 1, state)
        board.slot(i).publish_open(count)
    assert board.fewest_open(3) == (5, 1)   # its own 2 does not count
    assert board.slot(1).fewest_open_elsewhere() == (2, 3)


def test_workers_not_ready_are_not_siblings_to_leave_connections_to():
    board = Scoreboard(3, 1)
    board.reset(0, 10, 1, READY)
    board.slot(0).publish_open(6)
    board.reset(1, 11, 1, BOOTING)          # accepts nothing yet
    board.reset(2, 12, 1, STOPPING)         # accepts nothing any more
    assert board.fewest_open(0) is None
    board.reset(1, 11, 1, READY)
    assert board.fewest_open(0) == (0, 1)


def test_the_open_count_does_not_touch_the_slot_fields_beside_it():
    board = Scoreboard(1, 1)
    board.reset(0, 42, 3, READY)
    slot = board.slot(0)
    slot.beat(accepted=17, busy=1)
    slot.publish_open(4_000_000_000)
    info = board.read_slot(0)
    assert (info["pid"], info["generation"], info["state"], info["accepted"], info["max_busy"]) == (42, 3, READY, 17, 1)


def test_a_nudge_makes_that_slots_descriptor_readable_and_no_other():
    import os
    import select
    board = Scoreboard(3, 1)
    try:
        board.slot(0).nudge(2)
        board.slot(1).nudge(2)
        readable = [i for i, fd in enumerate(board.nudges) if select.select([fd], [], [], 0)[0]]
        assert readable == [2]
        assert os.eventfd_read(board.slot(2).nudge_fd) == 2
    finally:
        board.close()


def test_a_sibling_paused_for_long_is_not_one_to_leave_connections_to(monkeypatch):
    # Its threads all stuck (or out of descriptors): a connection left to it
    # waits for the deferral to end, one accept per ACCEPT_DEFER.
    from bridge.server import scoreboard
    board = Scoreboard(3, 4)
    for i, count in enumerate([30, 4, 9]):
        board.reset(i, 10 + i, 1, READY)
        board.slot(i).publish_open(count)
    now = [1000.0]
    monkeypatch.setattr(scoreboard, "_monotonic", lambda: now[0])
    board.slot(1).publish_accepting(False)
    assert board.fewest_open(0) == (4, 1)       # paused for a moment: a burst
    now[0] += scoreboard.PAUSED_TOO_LONG / 2
    board.slot(1).publish_accepting(False)      # paused again: still since 1000
    now[0] += scoreboard.PAUSED_TOO_LONG
    assert board.fewest_open(0) == (9, 2)
    board.slot(1).publish_accepting(True)
    assert board.fewest_open(0) == (4, 1)
