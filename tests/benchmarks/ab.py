"""A/B of bridge source trees through the benchmark's nginx: the tool behind
docs/performance.md's before/after tables.

On a small shared machine one round of a case moves by 20-40 %, so a change is
judged on medians of several short rounds, the trees taking turns::

    git worktree add /tmp/before HEAD~1
    /usr/bin/python3 tests/benchmarks/ab.py --trees before=/tmp/before/src,after=src \\
        --variant keepconn --workers 2 --conc 256 --rounds 6 --duration 3

Each round starts ``bridge fcgi`` (the benchmark venv's interpreter, the tree
first on ``PYTHONPATH``) behind a private nginx with the harness's config
(or, with ``--mode http``, ``bridge http`` that wrk talks to directly),
drives it with wrk, and reads the CPU that bridge and nginx used per request
from /proc.  The trees take turns in both orders (ABBA: A B, B A, A B, ...),
so a drift of the machine during the run favours neither.  ``--app`` picks
the app (``flaskapp:app --route /page`` for the Flask page).  ``NAME=SRC@N`` runs that tree with N worker processes.
Precompile the trees (``python -m compileall -q SRC``) when the environment
sets PYTHONDONTWRITEBYTECODE, or every start compiles bridge.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import load  # noqa: E402
import servers  # noqa: E402
from procs import Proc, children, cpu_seconds, free_port, port_open, wait_until  # noqa: E402
from servers import CONF, Nginx, fill  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trees", required=True, help="NAME=SRC[@WORKERS],... (src directories)")
    p.add_argument("--mode", choices=("fcgi", "http"), default="fcgi",
                   help="fcgi: behind nginx; http: wrk straight to bridge http")
    p.add_argument("--app", default="benchapp:app", help="module:callable from tests/benchmarks/apps")
    p.add_argument("--variant", choices=("close", "keepconn"), default="close")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default for every tree)")
    p.add_argument("--threads", type=int, default=servers.THREADS)
    p.add_argument("--conc", type=int, default=16, help="wrk connections")
    p.add_argument("--route", default="/hello")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--duration", type=float, default=3.0, help="seconds per round")
    p.add_argument("--venv", default="/tmp/wsgi-bridge-bench-venv")
    return p.parse_args(argv)


def one_round(ctx, name: str, src: str, workers: int, args) -> dict:
    sock = ctx.work / f"ab-{name}.sock"
    env = ctx.env()
    env["PYTHONPATH"] = f"{src}:{ctx.apps}"
    port = free_port()
    bind = f"unix:{sock}" if args.mode == "fcgi" else f"127.0.0.1:{port}"
    command = [ctx.python, "-m", "bridge", args.mode, args.app, "--bind", bind, "--threads", args.threads]
    if args.mode == "fcgi":
        command += ["--socket-mode", "0666"]
    if workers > 1:
        command += ["--workers", workers]
    server = Proc(command, log=ctx.logs / f"ab-{name}.log", env=env, cwd=str(ctx.apps))
    keep = args.variant == "keepconn"
    nginx = None
    try:
        if args.mode == "fcgi":
            block = fill((CONF / "fastcgi.conf").read_text(), upstream=f"unix:{sock}",
                         keepalive="keepalive 32;" if keep else "",
                         keep_conn="fastcgi_keep_conn on;" if keep else "")
            nginx = Nginx(ctx, block, f"ab-{name}")
            port, url = nginx.port, nginx.url
        else:
            url = f"http://127.0.0.1:{port}"
        wait_until(lambda: port_open(port) and load.get(port, "/hello", timeout=2)[0] == 200,
                   30, server, name)
        time.sleep(0.3)
        pids = {"bridge": [server.pid, *children(server.pid)]}
        if nginx is not None:
            pids["nginx"] = [nginx.proc.pid, *children(nginx.proc.pid)]
        before = {k: cpu_seconds(v) for k, v in pids.items()}
        row = load.wrk(url + args.route, args.conc, args.duration)
        used = {k: cpu_seconds(v) - before[k] for k, v in pids.items()}
        n = max(row["requests"], 1)
        row.update({f"{k}_us": 1e6 * v / n for k, v in used.items()})
        row.setdefault("nginx_us", 0.0)
        return row
    finally:
        if nginx is not None:
            nginx.stop()
        server.stop()
        time.sleep(0.3)


def parse_trees(spec: str, workers: int) -> list:
    """``NAME=SRC[@WORKERS],...`` as (name, absolute src, workers) triples."""
    trees = []
    for item in spec.split(","):
        name, eq, rest = item.partition("=")
        src, _, count = rest.partition("@")
        if not eq or not name or not src:
            raise ValueError(f"--trees wants NAME=SRC[@WORKERS], got {item!r}")
        trees.append((name, str(Path(src).resolve()), int(count or workers)))
    return trees


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        trees = parse_trees(args.trees, args.workers)
    except ValueError as exc:
        print(f"ab.py: {exc}", file=sys.stderr)
        return 2
    python = Path(args.venv) / "bin" / "python"
    if not python.exists():
        print(f"no {python}: run tests/benchmarks/run.py once (it builds the venv)", file=sys.stderr)
        return 2
    ctx = servers.make_context(python)
    rows: dict = {name: [] for name, _, _ in trees}
    try:
        for r in range(args.rounds):
            for name, src, workers in (trees if r % 2 == 0 else trees[::-1]):
                row = one_round(ctx, name, src, workers, args)
                rows[name].append(row)
                print(f"round {r} {name}: {row['rps']:,.0f} req/s, p50 {row['p50_ms']:.2f} ms, "
                      f"p99 {row['p99_ms']:.2f} ms, errors {row['wrk_errors'] or 0}, CPU/request "
                      f"bridge {row['bridge_us']:.0f} us, nginx {row['nginx_us']:.0f} us", flush=True)
    finally:
        shutil.rmtree(ctx.work, ignore_errors=True)
    print(f"\n{args.mode} {args.variant} c{args.conc} {args.app} {args.route}, {args.rounds} rounds x {args.duration:g} s, medians:")
    for name, got in rows.items():
        med = {k: statistics.median(row[k] for row in got)
               for k in ("rps", "p50_ms", "p99_ms", "bridge_us", "nginx_us")}
        print(f"  {name}: {med['rps']:,.0f} req/s, p50 {med['p50_ms']:.2f} ms, p99 {med['p99_ms']:.1f} ms, "
              f"bridge {med['bridge_us']:.0f} us/request, nginx {med['nginx_us']:.0f} us/request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
