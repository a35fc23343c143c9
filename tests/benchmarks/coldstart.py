"""What one CGI request costs: process start to exit, measured with hyperfine,
and where bridge's share goes, from ``python -X importtime``."""
from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path

from benchenv import BASE_PYTHON, which
from procs import run

CGI_ENV = {
    "GATEWAY_INTERFACE": "CGI/1.1", "REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": "/hello",
    "QUERY_STRING": "", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
    "REMOTE_ADDR": "127.0.0.1", "SERVER_SOFTWARE": "hyperfine",
}


def commands(python: Path, cgi_bin: Path, c_program: Path | None) -> list[tuple[str, str]]:
    """(label, command line) pairs; the first is the 1.0 of the ratios."""
    bridge = python.parent / "bridge"
    cmds = [
        ("python -c pass", f"{python} -c pass"),
        ("python -S -c pass", f"{python} -S -c pass"),
        (f"{BASE_PYTHON} -c pass", f"{BASE_PYTHON} -c pass"),
        ("bridge cgi bridge.demo:app", f"{bridge} cgi bridge.demo:app"),
        ("bridge cgi benchapp:app", f"{bridge} cgi benchapp:app"),
        # The same without pip's console-script launcher (which imports re).
        ("python -m bridge cgi bridge.demo:app", f"{python} -m bridge cgi bridge.demo:app"),
        ("cgi-bin/bridge_hello.py (run(app))", f"{cgi_bin / 'bridge_hello.py'}"),
        ("cgi-bin/wsgiref_hello.py (CGIHandler)", f"{cgi_bin / 'wsgiref_hello.py'}"),
        ("cgi-bin/hello.sh", f"{cgi_bin / 'hello.sh'}"),
    ]
    if c_program is not None:
        cmds.append(("cgi-bin/hello-c", str(c_program)))
    return cmds


def hyperfine(python: Path, cgi_bin: Path, c_program: Path | None, apps: Path, out: Path, quick: bool) -> dict:
    binary = which("hyperfine")
    if binary is None:
        return {"error": "hyperfine is not installed (apt-get install hyperfine)"}
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(apps), "LANG": "C.UTF-8", **CGI_ENV}
    cmds, failed = [], []
    for label, cmd in commands(python, cgi_bin, c_program):
        # A command that does not answer the request would be timed failing: try each once.
        if "pass" not in label:
            result = subprocess.run(shlex.split(cmd), env=env, capture_output=True, timeout=30)
            if result.returncode != 0 or b"Hello, world!" not in result.stdout:
                reason = (result.stderr or result.stdout).decode(errors="replace").strip().splitlines()
                failed.append({"label": label, "reason": f"exit {result.returncode}: {(reason or [''])[-1][:200]}"})
                continue
        cmds.append((label, cmd))
    args = [binary, "-N", "--warmup", "3" if quick else "10", "--runs", "15" if quick else "100",
            "--export-json", out, "--style", "none"]
    for label, cmd in cmds:
        args += ["-n", label, cmd]
    result = run(args, env=env, check=False, timeout=600)
    if result.returncode != 0:
        return {"error": f"hyperfine failed: {result.stderr.strip()[-500:]}", "failed": failed}
    data = json.loads(out.read_text())
    rows = []
    base = data["results"][0]["mean"]
    for r in data["results"]:
        rows.append({"label": r["command"], "mean_ms": r["mean"] * 1000, "stddev_ms": (r["stddev"] or 0) * 1000,
                     "min_ms": r["min"] * 1000, "ratio": r["mean"] / base})
    shown = " ".join(a if " " not in a else repr(a) for a in map(str, args))
    return {"command": shown, "env": CGI_ENV, "rows": rows, "failed": failed}


IMPORT_LINE = re.compile(r"import time:\s+(\d+)\s+\|\s+(\d+)\s+\|(\s*)(\S+)")


def importtime(python: Path, apps: Path, app: str = "bridge.demo:app", script: Path | None = None) -> dict:
    """Top-level imports of ``bridge cgi APP`` (or of a cgi-bin ``script``) by cumulative
    time (µs), from -X importtime."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(apps), **CGI_ENV}
    if script is not None:
        args = [python, "-X", "importtime", script]
    else:
        args = [python, "-X", "importtime", python.parent / "bridge", "cgi", app]
    result = run(args, env=env, check=False, timeout=60)
    top = []
    total = 0
    for line in result.stderr.splitlines():
        m = IMPORT_LINE.match(line)
        if not m:
            continue
        self_us, cumulative, indent, name = int(m[1]), int(m[2]), len(m[3]), m[4]
        total += self_us
        if indent <= 1:
            top.append({"module": name, "cumulative_us": cumulative})
    top.sort(key=lambda r: -r["cumulative_us"])
    return {"command": " ".join(map(str, args)), "total_us": total, "top": top[:12],
            "response_ok": "Hello" in result.stdout or "Status: 200" in result.stdout,
            "stderr_tail": "" if top else result.stderr[-500:]}
