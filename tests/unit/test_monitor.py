"""The monitor's looks and pace (bridge.server.monitor), with a pool that is not running."""
from __future__ import annotations

import threading

from bridge.server.monitor import (MONITOR_INTERVAL, MONITOR_LINGER, MONITOR_LONG, MONITOR_MAX, MONITOR_QUIET, Monitor,
                                  thread_cpu_clock)
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


def _monitor_with_cpu(threads: int, cpu: dict) -> tuple:
    pool = Pool(threads, threading.Lock())
    return pool, Monitor(pool, cpu=lambda i: cpu.get(i))


def test_a_thread_computing_through_two_looks_is_not_blocked_and_lets_no_thread_in():
    """A page that outlasts a look's interval on the CPU is not waiting for
    anything: another thread would only fight it for the GIL."""
    cpu = {0: 1.000}
    pool, monitor = _monitor_with_cpu(2, cpu)
    pool.serving[0] = 5
    assert not monitor.look(10.000)
    cpu[0] = 1.0009                     # 0.9 ms of CPU in 1 ms
    assert not monitor.look(10.001)
    assert pool.extra == 0


def test_a_thread_off_the_cpu_between_two_looks_is_blocked():
    cpu = {0: 1.000}
    pool, monitor = _monitor_with_cpu(2, cpu)
    pool.serving[0] = 5
    monitor.look(10.000)
    cpu[0] = 1.0001                     # 0.1 ms of CPU in 1 ms: waiting on I/O or a sleep
    assert monitor.look(10.001)
    assert pool.extra == 1 and pool.granted[0] == 5


def test_a_request_computing_past_monitor_long_lets_one_thread_in_for_the_others():
    cpu = {0: 0.0}
    pool, monitor = _monitor_with_cpu(2, cpu)
    pool.serving[0] = 7
    now = 10.0
    monitor.look(now)
    while now < 10.0 + MONITOR_LONG:
        assert pool.extra == 0
        now += MONITOR_INTERVAL
        cpu[0] += MONITOR_INTERVAL      # on the CPU all the time
        monitor.look(now)
    assert pool.extra == 1 and pool.granted[0] == 7


def test_without_a_cpu_clock_a_thread_in_the_same_request_at_two_looks_counts_as_blocked():
    pool, monitor = _monitor_with_cpu(2, {})
    pool.serving[1] = 3
    monitor.look(1.0)
    assert monitor.look(1.001)
    assert pool.extra == 1


def test_each_pool_thread_has_a_cpu_clock_the_monitor_can_read():
    clock = thread_cpu_clock()
    assert clock is not None
    import time
    assert time.clock_gettime(clock) > 0
