"""The status page and the ping path, answered before the app (both gateways).

``--status-path /bridge-status`` shows the whole pool -- not just the worker
that happens to answer -- because every worker reads the shared scoreboard
(:mod:`bridge.server.scoreboard`): pool size, idle and busy workers and
threads, accepted connections, requests served, listen queue, max active
threads, slow requests, and each worker's requests in flight with their
durations.  JSON for tools (``?json`` or ``Accept: application/json``),
a small HTML page for people (``?html`` or a browser's ``Accept``),
OpenMetrics / Prometheus text for scrapers (``?format=openmetrics`` or
their ``Accept``; :mod:`bridge.server.metrics`), in the spirit of PHP-FPM's
``pm.status_path``.  Only ``--status-allow`` addresses
may read it (the page names URLs being requested); others get 403.

``--ping-path /ping`` answers ``pong`` to anyone: a health check for nginx
upstreams and load balancers that costs no app code.
"""
from __future__ import annotations

import ipaddress
import json
import os
import socket
import struct
import time
from html import escape

from bridge.config import ConfigError
from bridge.server.metrics import CONTENT_TYPES, choose_format, render as render_metrics
from bridge.server.scoreboard import DURATION_BUCKETS, READY, STATE_NAMES
from bridge.server.sockdiag import unix_listen_queues

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Optional

__all__ = ["wrap", "snapshot", "set_context", "render_html", "listen_queue"]


class _Context:
    board = None            # the Scoreboard
    listeners: list = []    # this process's listening sockets
    config = None
    mode = "single"         # "single" or "prefork"
    pid = 0


CONTEXT = _Context()


def set_context(board, listeners: list, config, mode: str) -> None:
    CONTEXT.board = board
    CONTEXT.listeners = listeners
    CONTEXT.config = config
    CONTEXT.mode = mode
    CONTEXT.pid = os.getpid()


# Linux struct tcp_info: 8 one-byte fields, then u32 rto, ato, snd_mss, rcv_mss,
# unacked, sacked...  On a listening socket, tcpi_unacked is the number of
# connections waiting in the accept queue and tcpi_sacked the backlog.
_TCP_INFO_QUEUE = struct.Struct("<II")
_TCP_INFO_QUEUE_OFFSET = 24


def listen_queue(listeners: list) -> tuple:
    """``(waiting, backlog)`` summed over the listeners; ``(None, None)`` if none can say.

    TCP listeners answer ``TCP_INFO``; unix ones, which have no such option,
    are asked through sock_diag netlink (:mod:`bridge.server.sockdiag`, what
    ``ss -xl`` shows).
    """
    waiting = backlog = 0
    known = False
    unix = []
    for listener in listeners:
        sock = getattr(listener, "sock", listener)
        try:
            if sock.fileno() < 0:
                continue
            family = sock.family
        except (OSError, AttributeError, ValueError):
            continue
        if family == socket.AF_UNIX:
            unix.append(sock)
            continue
        try:
            raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
        except (OSError, AttributeError):
            continue
        if len(raw) >= _TCP_INFO_QUEUE_OFFSET + 8:
            w, b = _TCP_INFO_QUEUE.unpack_from(raw, _TCP_INFO_QUEUE_OFFSET)
            waiting += w
            backlog += b
            known = True
    if unix:
        for w, b in unix_listen_queues(unix).values():
            waiting += w
            backlog += b
            known = True
    return (waiting, backlog) if known else (None, None)


def snapshot() -> dict:
    """The pool's state as a JSON-ready dict."""
    board = CONTEXT.board
    if board is None:
        raise RuntimeError("no scoreboard in this process")
    header = board.header()
    workers = board.workers()
    config = CONTEXT.config
    threads = board.threads
    now = time.time()
    t = _worker_totals(header, workers)
    busy_threads = t["busy_threads"]
    ready = t["idle_workers"] + t["busy_workers"]
    duration_sum, counts = board.histogram()
    waiting, backlog = listen_queue(CONTEXT.listeners)
    workers_min = getattr(config, "workers_min", None) or getattr(config, "workers", 1)
    workers_max = getattr(config, "workers_max", None) or getattr(config, "workers", 1)
    return {
        "pool": "dynamic" if workers_max > workers_min else "static",
        "mode": CONTEXT.mode,
        "master_pid": header["master_pid"] or None,
        "started": round(header["started"], 3),
        "uptime": round(now - header["started"], 3),
        "reloads": header["reloads"],
        "workers": ready,
        "workers_target": header["target"] or len(workers),
        "workers_min": workers_min,
        "workers_max": workers_max,
        "idle_workers": t["idle_workers"],
        "busy_workers": t["busy_workers"],
        "threads_per_worker": threads,
        "busy_threads": busy_threads,
        "idle_threads": max(0, ready * threads - busy_threads),
        "max_active_threads": max(t["max_active"], busy_threads),
        "accepted_connections": t["accepted"],
        "requests": t["requests"],
        "slow_requests": t["slow"],
        "max_children_reached": header["pool_full"],
        "worker_restarts": header["worker_exits"],
        "request_duration": _duration_histogram(duration_sum, counts),
        "listen_queue": waiting,
        "listen_queue_max": backlog,
        "listeners": [getattr(l, "name", "?") for l in CONTEXT.listeners],
        "answered_by": CONTEXT.pid,
        "processes": [_process(w, now) for w in workers],
    }


def _worker_totals(header: dict, workers: list) -> dict:
    """Counts over the live workers, added to what gone workers left in the header."""
    t = {"busy_workers": 0, "idle_workers": 0, "busy_threads": 0,
         "requests": header["gone_requests"], "accepted": header["gone_accepted"],
         "slow": header["gone_slow"], "max_active": header["max_active"]}
    for w in workers:
        busy = len(w["running"])
        t["busy_threads"] += busy
        if w["state"] == READY:
            t["busy_workers" if busy else "idle_workers"] += 1
        t["requests"] += w["requests"]
        t["accepted"] += w["accepted"]
        t["slow"] += w["slow"]
        t["max_active"] = max(t["max_active"], w["max_busy"])
    return t


def _process(w: dict, now: float) -> dict:
    """One worker's entry in the snapshot's ``processes``, from its scoreboard slot."""
    return {
        "pid": w["pid"], "state": STATE_NAMES.get(w["state"], str(w["state"])),
        "generation": w["generation"], "started": round(w["started"], 3),
        "uptime": round(now - w["started"], 3) if w["started"] else None,
        "accepted_connections": w["accepted"], "open_connections": w["open"],
        "requests": w["requests"], "busy_threads": len(w["running"]), "slow_requests": w["slow"],
        "requests_in_flight": [
            {"thread": r["thread"], "request": r["request"], "duration": round(r["duration"], 3)}
            for r in w["running"]],
    }


def _duration_histogram(total: float, counts: list) -> dict:
    """JSON form of the histogram: cumulative counts per upper bound, as Prometheus has them."""
    buckets = {}
    running = 0
    for bound, n in zip((*(repr(b) for b in DURATION_BUCKETS), "+Inf"), counts):
        running += n
        buckets[bound] = running
    return {"buckets": buckets, "count": running, "sum": round(total, 6)}


def render_html(data: dict) -> str:
    rows = "".join(_process_row(p) for p in data["processes"])
    summary = "".join(
        f"<tr><th>{escape(k.replace('_', ' '))}</th><td>{escape(str(v))}</td></tr>"
        for k, v in data.items() if k not in ("processes", "listeners", "request_duration"))
    return ("<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>bridge status</title>"
            "<style>body{font-family:sans-serif}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}</style></head><body>"
            f"<h1>bridge status</h1><p>{escape(', '.join(data['listeners']))}</p>"
            f"<table>{summary}</table><h2>Workers</h2><table><tr><th>pid</th><th>state</th>"
            "<th>generation</th><th>requests</th><th>connections</th><th>busy threads</th>"
            f"<th>requests in flight</th></tr>{rows}</table></body></html>\n")


def _process_row(p: dict) -> str:
    running = "<br>".join(f"{escape(r['request'])} ({r['duration']:.3f} s)"
                          for r in p["requests_in_flight"]) or "-"
    return (f"<tr><td>{p['pid']}</td><td>{escape(p['state'])}</td><td>{p['generation']}</td>"
            f"<td>{p['requests']}</td><td>{p['accepted_connections']}</td>"
            f"<td>{p['busy_threads']}</td><td>{running}</td></tr>")


def _allow_list(entries: list) -> Callable[[str], bool]:
    networks = []
    allow_all = False
    for entry in entries or ():
        for part in str(entry).split(","):
            part = part.strip()
            if not part:
                continue
            if part == "*":
                allow_all = True
                continue
            try:
                networks.append(ipaddress.ip_network(part, strict=False))
            except ValueError:
                raise ConfigError(f"--status-allow {part!r}: not an address or network") from None

    def allowed(addr: str) -> bool:
        if allow_all:
            return True
        try:
            ip = ipaddress.ip_address((addr or "").split("%", 1)[0])
        except ValueError:
            return False
        mapped = getattr(ip, "ipv4_mapped", None)
        return any(ip in n or (mapped is not None and mapped in n) for n in networks)
    return allowed


def wrap(app: Callable, config) -> Callable:
    """The app with ``--status-path`` and ``--ping-path`` answered in front of it."""
    status_path: Optional[str] = getattr(config, "status_path", None) or None
    ping_path: Optional[str] = getattr(config, "ping_path", None) or None
    allowed = _allow_list(getattr(config, "status_allow", None) or [])

    def status_app(environ, start_response):
        path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
        if path == ping_path:
            body = b"pong\n"
            start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8"),
                                      ("Content-Length", str(len(body))),
                                      ("Cache-Control", "no-store")])
            return [body]
        if path != status_path:
            return app(environ, start_response)
        if not allowed(environ.get("REMOTE_ADDR", "")):
            body = b"Forbidden\n"
            start_response("403 Forbidden", [("Content-Type", "text/plain; charset=utf-8"),
                                             ("Content-Length", str(len(body)))])
            return [body]
        try:
            data = snapshot()
        except Exception as exc:
            environ["wsgi.errors"].write(f"bridge status page: {exc}\n")
            body = b"Status unavailable\n"
            start_response("503 Service Unavailable", [("Content-Type", "text/plain; charset=utf-8"),
                                                       ("Content-Length", str(len(body)))])
            return [body]
        query = environ.get("QUERY_STRING", "")
        accept = environ.get("HTTP_ACCEPT", "")
        flavor = choose_format(query, accept)
        if flavor is not None:
            body = render_metrics(data, flavor).encode("utf-8")
            start_response("200 OK", [("Content-Type", CONTENT_TYPES[flavor]),
                                      ("Content-Length", str(len(body))), ("Cache-Control", "no-store")])
            return [body]
        as_html = "html" in query.split("&") or ("json" not in query.split("&")
                                                 and "text/html" in accept)
        if as_html:
            body = render_html(data).encode("utf-8")
            ctype = "text/html; charset=utf-8"
        else:
            body = (json.dumps(data, indent=1) + "\n").encode("utf-8")
            ctype = "application/json"
        start_response("200 OK", [("Content-Type", ctype), ("Content-Length", str(len(body))),
                                  ("Cache-Control", "no-store")])
        return [body]

    return status_app
