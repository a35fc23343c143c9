"""The load generators: wrk for GETs, native/fairload.c for GETs when the
spread of requests over the connections matters (saturated cases), a small
threaded Python client for uploads.

All of them only ever talk to 127.0.0.1 and stop after a fixed duration.
"""
from __future__ import annotations

import http.client
import json
import os
import threading
import time
from pathlib import Path

from procs import run

LUA = Path(__file__).resolve().parent / "conf" / "report.lua"
WRK_TIMEOUT = "2s"


def wrk_command(url: str, connections: int, duration: float) -> list:
    threads = 1 if connections < 2 else 2
    return ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration:g}s",
            "--timeout", WRK_TIMEOUT, "-s", str(LUA), url]


def wrk(url: str, connections: int, duration: float) -> dict:
    """One wrk run: requests/s, latencies in ms, wrk's error counts."""
    args = wrk_command(url, connections, duration)
    result = run(args, timeout=duration + 60, check=False)
    line = next((l for l in result.stdout.splitlines() if l.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed ({result.returncode}): {result.stderr.strip() or result.stdout.strip()}")
    return _figures("wrk", json.loads(line[len("WRKJSON "):]), " ".join(args), duration)


def _figures(tool: str, raw: dict, command: str, duration: float) -> dict:
    """The figures both load tools report, from their JSON line (the same fields)."""
    seconds = raw["duration_us"] / 1e6 or duration
    errors = {k: raw[k] for k in ("connect", "read", "write", "status", "timeout") if raw[k]}
    return {
        "tool": tool,
        "command": command,
        "requests": raw["requests"],
        "rps": raw["requests"] / seconds,
        "p50_ms": raw["p50"] / 1000,
        "p90_ms": raw["p90"] / 1000,
        "p99_ms": raw["p99"] / 1000,
        "max_ms": raw["max"] / 1000,
        "mb_per_s": raw["bytes"] / seconds / 1e6,
        "wrk_errors": errors,
    }


def fairload_command(binary, port: int, path: str, connections: int, duration: float) -> list:
    threads = 1 if connections < 2 else 2  # as wrk_command: the same client CPU for the same case
    return [binary, "127.0.0.1", str(port), path, str(connections), f"{duration:g}", str(threads)]


def fairload(binary, port: int, path: str, connections: int, duration: float) -> dict:
    """One fairload run: wrk's figures plus how the requests were shared among the connections."""
    args = fairload_command(binary, port, path, connections, duration)
    result = run(args, timeout=duration + 60, check=False)
    line = next((l for l in result.stdout.splitlines() if l.startswith("FAIRJSON ")), None)
    if line is None:
        raise RuntimeError(f"fairload failed ({result.returncode}): {result.stderr.strip() or result.stdout.strip()}")
    return parse_fairload(line, args)


def parse_fairload(line: str, args: list) -> dict:
    raw = json.loads(line[len("FAIRJSON "):])
    figures = _figures("fairload", raw, " ".join(str(a) for a in args), 1.0)
    figures["per_conn"] = {"min": raw["conn_min"], "median": raw["conn_median"], "max": raw["conn_max"],
                           "zero": raw["zero_conns"]}
    return figures


def upload(port: int, path: str, size: int, connections: int, duration: float) -> dict:
    """POSTs ``size`` random bytes to an echo URL from ``connections`` keep-alive
    clients for ``duration`` seconds; every answer must be the body, byte-exact."""
    body = os.urandom(size)
    deadline = time.monotonic() + duration
    lock = threading.Lock()
    latencies: list[float] = []
    errors = {"status": 0, "mismatch": 0, "socket": 0}
    samples: list[str] = []

    def client() -> None:
        conn = None
        for _ in range(1_000_000):  # bounded; the deadline ends it long before
            if time.monotonic() >= deadline:
                break
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            started = time.perf_counter()
            try:
                conn.request("POST", path, body=body, headers={"Content-Type": "application/octet-stream"})
                response = conn.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException) as exc:
                with lock:
                    errors["socket"] += 1
                    if len(samples) < 3:
                        samples.append(f"{type(exc).__name__}: {exc}")
                conn.close()
                conn = None
                continue
            elapsed = time.perf_counter() - started
            with lock:
                if response.status != 200:
                    errors["status"] += 1
                elif data != body:
                    errors["mismatch"] += 1
                    if len(samples) < 3:
                        samples.append(f"echo of {len(body)} bytes came back as {len(data)} bytes")
                else:
                    latencies.append(elapsed)
            if response.will_close:
                conn.close()
                conn = None
        if conn is not None:
            conn.close()

    started = time.monotonic()
    threads = [threading.Thread(target=client, daemon=True) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(duration + 60)
    seconds = time.monotonic() - started
    latencies.sort()
    done = len(latencies)

    def pct(p: float) -> float:
        return latencies[min(done - 1, int(done * p))] * 1000 if done else 0.0

    return {
        "tool": "python-upload",
        "command": f"upload.py POST {size} bytes to {path}, {connections} keep-alive clients, {duration:g}s",
        "requests": done,
        "rps": done / seconds,
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
        "max_ms": latencies[-1] * 1000 if done else 0.0,
        "mb_per_s": done * size / seconds / 1e6,
        "wrk_errors": {k: v for k, v in errors.items() if v},
        "error_samples": samples,
    }


def get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def get_many(port: int, path: str, count: int) -> int:
    """``count`` GETs on one keep-alive connection (bounded); returns how many got a 200."""
    ok = 0
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for _ in range(count):
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            ok += response.status == 200
            if response.will_close:
                conn.close()
        except (OSError, http.client.HTTPException):
            conn.close()
    conn.close()
    return ok
