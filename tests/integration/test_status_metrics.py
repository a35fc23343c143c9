"""The status page scraped as OpenMetrics / Prometheus text from a real 2-worker ``bridge http`` under load."""
from __future__ import annotations

import http.client
from concurrent.futures import ThreadPoolExecutor

from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_prometheus

from support import bridge_command, free_port
from support.composition import start_bridge
from support.prefork import wait_for

#: What Prometheus itself sends when it scrapes.
PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
                     "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")


def request(port: int, path: str, headers: dict | None = None) -> tuple:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers={"Connection": "close", **(headers or {})})
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type"), response.read()
    finally:
        conn.close()


def scrape(port: int, how: str = "accept") -> dict:
    if how == "accept":
        status, ctype, body = request(port, "/bridge-status", {"Accept": PROMETHEUS_ACCEPT})
        assert ctype.startswith("application/openmetrics-text; version=1.0.0")
        families = parse_openmetrics(body.decode())
    else:
        status, ctype, body = request(port, "/bridge-status?format=prometheus")
        assert ctype.startswith("text/plain; version=0.0.4")
        families = parse_prometheus(body.decode())
    assert status == 200
    values = {}
    for family in families:
        for s in family.samples:
            values[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return values


def one(values: dict, name: str, **labels) -> float:
    return values[(name, tuple(sorted(labels.items())))]


def serving(values: dict) -> float:
    """Workers serving (the one answering the scrape is busy with it)."""
    return one(values, "bridge_workers", state="idle") + one(values, "bridge_workers", state="busy")


def test_metrics_move_under_load_and_add_up_every_worker():
    port = free_port()
    proc = start_bridge(bridge_command("http", "support.pm_apps:app", "--bind", f"127.0.0.1:{port}",
                                       "--workers", "2", "--threads", "1", "--max-requests", "150",
                                       "--status-path", "/bridge-status"), port=port)
    try:
        wait_for(lambda: serving(scrape(port)) == 2, what="2 workers serving")
        before = scrape(port)
        failures = []

        def hit(path):
            status = request(port, path)[0]
            if status != 200:
                failures.append(status)
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(hit, ["/"] * 400))
        # Then 8 slow requests at once: both workers' thread busy for seconds, the pool full.
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(hit, ["/sleep?s=1.5"] * 8))
        assert not failures
        after = wait_for(lambda: (lambda v: v if serving(v) == 2 else None)(scrape(port, "prometheus")),
                         what="2 workers serving after the load")
    finally:
        proc.stop()

    def delta(name, **labels):
        return one(after, name, **labels) - one(before, name, **labels)
    # The 408 requests, plus the scrapes in between; workers restarted by
    # --max-requests 150 keep theirs in the pool's totals.
    assert delta("bridge_requests_total") >= 408
    assert delta("bridge_accepted_connections_total") >= 408
    assert one(after, "bridge_worker_restarts_total") >= 2
    assert delta("bridge_request_duration_seconds_count") >= 408
    assert one(after, "bridge_request_duration_seconds_count") == one(
        after, "bridge_request_duration_seconds_bucket", le="+Inf")
    assert delta("bridge_request_duration_seconds_sum") > 0
    assert one(after, "bridge_max_children_reached_total") >= 1
    assert one(after, "bridge_threads", state="idle") + one(after, "bridge_threads", state="busy") == 2
    assert one(after, "bridge_listen_queue_max") > 0 and one(after, "bridge_listen_queue") >= 0
