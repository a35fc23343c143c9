"""The status page as OpenMetrics / Prometheus text, and the scoreboard's duration histogram."""
from __future__ import annotations

import io
import json
import time
from types import SimpleNamespace

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_prometheus

from bridge.server import status
from bridge.server.metrics import OPENMETRICS, PROMETHEUS, choose_format, render
from bridge.server.scoreboard import DURATION_BUCKETS, READY, Scoreboard

ENV = {"REQUEST_METHOD": "GET", "REQUEST_URI": "/x"}


def finish_one(slot, thread: int, seconds_ago: float) -> None:
    slot.request_started(thread, time.monotonic() - seconds_ago, ENV)
    slot.request_finished(thread)


def bucket_of(seconds: float) -> int:
    return next((i for i, b in enumerate(DURATION_BUCKETS) if seconds <= b), len(DURATION_BUCKETS))


# --------------------------------------------------------------------------
# The histogram in shared memory


def test_each_thread_records_its_durations_and_the_board_adds_every_worker():
    board = Scoreboard(4, 2)
    a, b = board.slot(board.claim(101, 1)), board.slot(board.claim(102, 1))
    finish_one(a, 0, 7.0)        # far from any bound: a slow test run cannot move it
    finish_one(a, 1, 7.0)
    finish_one(b, 0, 30.0)
    total, counts = board.histogram()
    assert sum(counts) == 3
    assert counts[bucket_of(7.0)] == 2 and counts[len(DURATION_BUCKETS)] == 1
    assert 44.0 <= total < 60.0
    assert board.read_slot(a.index)["requests"] == 2


def test_a_gone_workers_histogram_and_exit_stay_in_the_pool_totals():
    board = Scoreboard(4, 2)
    index = board.claim(101, 1)
    finish_one(board.slot(index), 0, 7.0)
    before = board.histogram()
    board.release(index)
    assert board.histogram() == before
    assert board.header()["worker_exits"] == 1 and board.header()["gone_requests"] == 1
    # A new worker in the freed slot starts from zero; the pool's total goes on.
    again = board.slot(board.claim(103, 2))
    finish_one(again, 1, 7.0)
    assert sum(board.histogram()[1]) == 2


def test_a_slot_object_made_again_in_the_same_process_continues_the_counts():
    board = Scoreboard(2, 1)
    index = board.claim(101, 1)
    finish_one(board.slot(index), 0, 7.0)
    finish_one(board.slot(index), 0, 7.0)
    assert sum(board.histogram()[1]) == 2


def test_pool_full_is_counted_once_per_episode_not_per_tick():
    board = Scoreboard(2, 1)
    for full in (False, True, True, True, False, False, True, False):
        board.note_pool_full(full)
    assert board.header()["pool_full"] == 2


# --------------------------------------------------------------------------
# The text formats, read by prometheus_client's own parsers


@pytest.fixture
def pool():
    board = Scoreboard(4, 2)
    board.write_header(master_pid=1, target=2, generation=1)
    slots = [board.slot(board.claim(pid, 1)) for pid in (101, 102)]
    for s in slots:
        s.set_state(READY)
    finish_one(slots[0], 0, 0.0)
    finish_one(slots[1], 1, 7.0)
    slots[1].request_started(0, time.monotonic(), ENV)       # in flight
    board.note_pool_full(True)
    config = SimpleNamespace(workers=2, threads=2)
    status.set_context(board, [], config, "prefork")
    yield board
    status.set_context(None, [], None, "single")


def samples(families) -> dict:
    out = {}
    for family in families:
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.mark.parametrize("flavor,parser", [(OPENMETRICS, parse_openmetrics), (PROMETHEUS, parse_prometheus)])
def test_both_formats_parse_and_say_what_the_json_says(pool, flavor, parser):
    data = status.snapshot()
    text = render(data, flavor)
    families = {f.name: f for f in parser(text)}
    got = samples(families.values())
    assert got[("bridge_requests_total", ())] == data["requests"] == 2
    assert got[("bridge_requests_in_flight", ())] == 1
    assert got[("bridge_workers", (("state", "busy"),))] == 1
    assert got[("bridge_workers", (("state", "idle"),))] == 1
    assert got[("bridge_threads", (("state", "busy"),))] == 1
    assert got[("bridge_threads", (("state", "idle"),))] == 3
    assert got[("bridge_max_children_reached_total", ())] == 1
    assert got[("bridge_worker_restarts_total", ())] == 0
    assert got[("bridge_request_duration_seconds_count", ())] == 2
    assert got[("bridge_request_duration_seconds_bucket", (("le", "+Inf"),))] == 2
    assert got[("bridge_request_duration_seconds_bucket", (("le", "10.0"),))] == 2
    assert got[("bridge_request_duration_seconds_bucket", (("le", "5.0"),))] == 1
    assert got[("bridge_request_duration_seconds_bucket", (("le", "0.005"),))] == 1
    kinds = {name: f.type for name, f in families.items()}
    assert kinds["bridge_request_duration_seconds"] == "histogram"
    assert kinds["bridge_requests"] == kinds["bridge_worker_restarts"] == "counter"
    assert "bridge_listen_queue" not in kinds     # no TCP listener here: absent, not 0
    assert text.endswith("# EOF\n") == (flavor == OPENMETRICS)


def test_json_has_the_histogram_and_the_new_counters(pool):
    data = json.loads(json.dumps(status.snapshot()))
    assert data["request_duration"]["count"] == 2
    assert list(data["request_duration"]["buckets"])[-1] == "+Inf"
    assert data["max_children_reached"] == 1 and data["worker_restarts"] == 0


@pytest.mark.parametrize("query,accept,expected", [
    ("format=openmetrics", "", OPENMETRICS),
    ("openmetrics", "", OPENMETRICS),
    ("format=prometheus", "", PROMETHEUS),
    ("", "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
         "text/plain;version=0.0.4;q=0.5,*/*;q=0.1", OPENMETRICS),     # what Prometheus sends
    ("", "text/plain; version=0.0.4", PROMETHEUS),
    ("", "text/plain", None), ("", "*/*", None), ("", "application/json", None),
    ("json", "application/openmetrics-text", OPENMETRICS),
    ("format=json", "application/openmetrics-text", None),
])
def test_format_comes_from_the_query_then_accept(query, accept, expected):
    assert choose_format(query, accept) == expected


def test_status_app_answers_metrics_with_the_right_content_type(pool):
    app = status.wrap(lambda e, s: [], SimpleNamespace(status_path="/st", ping_path=None, status_allow=["127.0.0.1"]))
    for query, accept, ctype in (("format=openmetrics", "", "application/openmetrics-text; version=1.0.0"),
                                 ("", "text/plain; version=0.0.4", "text/plain; version=0.0.4")):
        seen = {}
        body = b"".join(app({"PATH_INFO": "/st", "QUERY_STRING": query, "HTTP_ACCEPT": accept,
                             "REMOTE_ADDR": "127.0.0.1", "wsgi.errors": io.StringIO()},
                            lambda st, h: seen.update(status=st, headers=dict(h))))
        assert seen["status"] == "200 OK" and seen["headers"]["Content-Type"].startswith(ctype)
        assert b"bridge_requests_total 2" in body


# --------------------------------------------------------------------------
# The listen queue, TCP and unix


def test_listen_queue_counts_connections_waiting_on_tcp_and_unix_listeners(tmp_path):
    import os
    import socket
    path = f"/tmp/bridge-lq-{os.getpid()}.sock"
    tcp = socket.socket()
    unix = socket.socket(socket.AF_UNIX)
    clients = []
    try:
        tcp.bind(("127.0.0.1", 0))
        tcp.listen(16)
        unix.bind(path)
        unix.listen(8)
        assert status.listen_queue([tcp, unix]) == (0, 24)
        for _ in range(3):
            c = socket.create_connection(tcp.getsockname())
            clients.append(c)
        for _ in range(2):
            c = socket.socket(socket.AF_UNIX)
            c.connect(path)
            clients.append(c)
        # The TCP handshake completes in the kernel; poll a moment for the queue to show it.
        deadline = time.monotonic() + 5
        while status.listen_queue([tcp]) != (3, 16) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert status.listen_queue([tcp]) == (3, 16)
        assert status.listen_queue([unix]) == (2, 8)
        assert status.listen_queue([tcp, unix]) == (5, 24)
        unix.accept()[0].close()
        assert status.listen_queue([unix]) == (1, 8)
    finally:
        for c in clients:
            c.close()
        tcp.close()
        unix.close()
        os.unlink(path)


def test_listen_queue_is_unknown_without_listeners():
    assert status.listen_queue([]) == (None, None)
