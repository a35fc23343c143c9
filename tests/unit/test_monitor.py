"""The monitor's looks and pace (bridge.server.monitor), with a pool that is not running."""
from __future__ import annotations

import threading

from bridge.server.monitor import MONITOR_INTERVAL, MONITOR_LINGER, MONITOR_MAX, MONITOR_QUIET, Monitor
from bridge.server.pool import Pool


def test_a_thread_in_the_same_request_at_two_looks_lets_one_more_in_once():
    pool = Pool(3, threading.Lock())
    monitor = Monitor(pool)
    pool.serving[0] = 5
    assert not monitor.look()           # first sight of request 5
    assert monitor.look()               # still in it: blocked
    assert pool.extra == 1 and pool.granted[0] == 5
    assert monitor.look()
    assert pool.extra == 1              # each request lets one thread in at most
    pool.serving[0] = 6                 # the next request: not blocked yet
    assert not monitor.look()


def test_quiet_looks_slow_the_pace_and_a_blocked_thread_sets_it_back():
    pool = Pool(2, threading.Lock())
    monitor = Monitor(pool)
    now = 0.0
    for _ in range(MONITOR_QUIET * 8):
        monitor.step(now, finished=0)
        now += monitor.interval
    assert monitor.interval == MONITOR_MAX
    pool.serving[1] = 3
    monitor.step(now, finished=0)
    monitor.step(now + MONITOR_MAX, finished=0)
    assert monitor.interval == MONITOR_INTERVAL


def test_the_monitor_sleeps_after_the_linger_and_stays_awake_while_a_request_runs():
    pool = Pool(2, threading.Lock())
    monitor = Monitor(pool)
    assert monitor.step(0.0, finished=1) is not None and not monitor.asleep
    assert monitor.step(MONITOR_LINGER * 2, finished=1) is None
    assert monitor.asleep
    pool.serving[0] = 4
    assert monitor.step(MONITOR_LINGER * 3, finished=1) is not None
    assert not monitor.asleep
