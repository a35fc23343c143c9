"""The pool's parking and queues (bridge.server.pool), without sockets or threads running."""
from __future__ import annotations

import threading
import time

from bridge.server.pool import Pool, Task


def _claim_all(item):
    return item


def test_take_serves_the_backlog_then_tasks_then_ready_events_in_order():
    pool = Pool(2, threading.Lock())
    task = Task(lambda: None)
    pool.ready.extend(["ready-1", "ready-2"])
    pool.tasks.append(task)
    pool.backlog.append("accepted-by-the-loop")
    taken = [pool.take(_claim_all) for _ in range(4)]
    assert taken == ["accepted-by-the-loop", task, "ready-1", "ready-2"]
    assert pool.idle == 0


def test_take_skips_stale_ready_events_and_counts_the_thread_idle_once():
    pool = Pool(1, threading.Lock())
    pool.ready.extend(["stale", "stale", "fresh"])
    assert pool.take(lambda item: None if item == "stale" else item) == "fresh"
    assert pool.idle == 0
    pool.ready.extend(["stale", "stale"])
    assert pool.take(lambda item: None) is None     # nothing left: the caller polls
    assert pool.idle == 1


def test_a_thread_let_in_for_a_blocked_request_parks_when_that_request_ends():
    pool = Pool(3, threading.Lock())
    pool.serving[0] = 7
    assert pool.let_in(0, 7)
    assert pool.extra == 1 and pool.slots._value == 2
    assert not pool.let_in(0, 8)                    # not the request running any more
    pool.serving[1] = 9
    assert not pool.finish(1, 9)                    # no grant for that one: keeps running
    assert pool.finish(0, 7)                        # the grant's request ended: park
    assert pool.extra == 0 and pool.serving[0] == 0 and pool.granted[0] == 0


def test_let_in_stops_at_the_pool_size_and_when_exiting():
    pool = Pool(2, threading.Lock())
    pool.serving[:] = [1, 2]
    assert pool.let_in(0, 1)
    assert not pool.let_in(1, 2)                    # one running + one let in = 2 threads
    pool = Pool(2, threading.Lock())
    pool.serving[0] = 1
    pool.exit()
    assert not pool.let_in(0, 1)


def test_exit_lets_every_parked_thread_leave():
    pool = Pool(3, threading.Lock())
    assert pool.wait_for_turn()                     # the one running thread
    left = []
    pool.start(lambda i: left.append(pool.wait_for_turn()))
    pool.exit()
    assert pool.join(5.0, time.monotonic)
    assert left == [False, False, False]
