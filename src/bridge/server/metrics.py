"""The status page as OpenMetrics / Prometheus text, for a scraper.

PHP-FPM's status page speaks OpenMetrics since 8.1 (``?openmetrics``); this
is the same page (:func:`bridge.server.status.snapshot`, the whole pool
from the shared scoreboard) in the two text formats scrapers read:

* OpenMetrics 1.0 (``application/openmetrics-text; version=1.0.0``): what
  Prometheus asks for first; counters are declared without ``_total`` and
  sampled with it, and the text ends with ``# EOF``.
* Prometheus text 0.0.4 (``text/plain; version=0.0.4``): the older format,
  for tools that only read it; counters are declared with ``_total``.

Everything is rendered from the snapshot dict, so the JSON, the HTML and
the metrics cannot disagree.  What each number measures is in its HELP line.
"""
from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional

__all__ = ["render", "choose_format", "OPENMETRICS", "PROMETHEUS", "CONTENT_TYPES"]

OPENMETRICS = "openmetrics"
PROMETHEUS = "prometheus"
CONTENT_TYPES = {
    OPENMETRICS: "application/openmetrics-text; version=1.0.0; charset=utf-8",
    PROMETHEUS: "text/plain; version=0.0.4; charset=utf-8",
}

#: (name, type, help, key in the snapshot); counters are named without _total.
_SIMPLE = (
    ("bridge_requests", "counter", "Requests served (finished) by the pool since it started.", "requests"),
    ("bridge_requests_in_flight", "gauge", "Requests running now (busy pool threads).", "busy_threads"),
    ("bridge_accepted_connections", "counter", "Connections accepted by the pool since it started.",
     "accepted_connections"),
    ("bridge_slow_requests", "counter", "Requests that ran longer than --slowlog.", "slow_requests"),
    ("bridge_max_children_reached", "counter",
     "Times the pool became full: every thread busy and no room to start a worker "
     "(--workers, or --workers-max); seen by the master 4 times a second, not counted without one.",
     "max_children_reached"),
    ("bridge_worker_restarts", "counter",
     "Worker processes that exited while the master ran (--max-requests, --timeout, crashes, "
     "reloads, pool shrinking).", "worker_restarts"),
    ("bridge_reloads", "counter", "Reloads (SIGHUP) since start.", "reloads"),
    ("bridge_workers_target", "gauge", "Worker processes the pool is sized to now.", "workers_target"),
    ("bridge_threads_per_worker", "gauge", "Pool threads in each worker process.", "threads_per_worker"),
    ("bridge_max_active_threads", "gauge", "Most pool threads busy at once since start.",
     "max_active_threads"),
    ("bridge_start_time_seconds", "gauge", "When the pool started (Unix time).", "started"),
)
_QUEUE = (
    ("bridge_listen_queue", "Connections waiting in the listeners' accept queues (TCP_INFO for TCP, "
     "sock_diag for unix sockets: ss -l Recv-Q).", "listen_queue"),
    ("bridge_listen_queue_max", "Accept queue length of the listeners (the backlog the kernel "
     "granted: ss -l Send-Q).", "listen_queue_max"),
)


def choose_format(query: str, accept: str) -> Optional[str]:
    """OPENMETRICS, PROMETHEUS or None (the page's other formats) from the query and Accept.

    ``?format=openmetrics`` / ``?format=prometheus`` (``?openmetrics`` as
    PHP-FPM writes it); otherwise ``Accept: application/openmetrics-text``
    (Prometheus' first choice), or ``text/plain`` with ``version=0.0.4``.  A
    bare ``text/plain`` or ``*/*`` keeps the JSON default: curl asks for
    ``*/*``.
    """
    params = query.split("&")
    if "format=openmetrics" in params or "openmetrics" in params:
        return OPENMETRICS
    if "format=prometheus" in params:
        return PROMETHEUS
    if any(p.startswith("format=") for p in params):
        return None
    accept = accept.lower()
    if "application/openmetrics-text" in accept:
        return OPENMETRICS
    if "text/plain" in accept and "version=0.0.4" in accept:
        return PROMETHEUS
    return None


def _number(value) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


def render(data: dict, flavor: str) -> str:
    """The metrics text of a status snapshot, in ``flavor`` (OPENMETRICS or PROMETHEUS)."""
    om = flavor == OPENMETRICS
    out = []
    add = out.append

    def family(name: str, kind: str, help_text: str) -> str:
        declared = name + "_total" if kind == "counter" and not om else name
        add(f"# HELP {declared} {help_text}")
        add(f"# TYPE {declared} {kind}")
        return name + "_total" if kind == "counter" else name

    for name, kind, help_text, key in _SIMPLE:
        value = data.get(key)
        if value is None:
            continue
        sample = family(name, kind, help_text)
        add(f"{sample} {_number(value)}")
    sample = family("bridge_workers", "gauge", "Worker processes serving, by state (idle: no request running).")
    add(f'{sample}{{state="idle"}} {data["idle_workers"]}')
    add(f'{sample}{{state="busy"}} {data["busy_workers"]}')
    sample = family("bridge_threads", "gauge", "Pool threads of the serving workers, by state.")
    add(f'{sample}{{state="idle"}} {data["idle_threads"]}')
    add(f'{sample}{{state="busy"}} {data["busy_threads"]}')
    for name, help_text, key in _QUEUE:
        if data.get(key) is not None:
            sample = family(name, "gauge", help_text)
            add(f"{sample} {data[key]}")
    duration = data.get("request_duration")
    if duration:
        family("bridge_request_duration_seconds", "histogram",
               "Time from the app's call to the end of its response, per request, over every worker.")
        for bound, count in duration["buckets"].items():
            add(f'bridge_request_duration_seconds_bucket{{le="{bound}"}} {count}')
        add(f"bridge_request_duration_seconds_count {duration['count']}")
        add(f"bridge_request_duration_seconds_sum {_number(duration['sum'])}")
    if om:
        add("# EOF")
    return "\n".join(out) + "\n"
