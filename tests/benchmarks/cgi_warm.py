#!/usr/bin/env python3
"""CGI group: a Flask page through Apache, plain CGI vs warm relay vs cgi-fcgi relay vs mod_fcgid.

    .venv-test/bin/python tests/benchmarks/cgi_warm.py            # about 1.5 minutes
    .venv-test/bin/python tests/benchmarks/cgi_warm.py --seconds 2

Builds a virtual environment of /usr/bin/python3 in a public temporary
directory with Flask (``pip install flask``: a benchmark dependency only,
never a test or run-time one) and a copy of this checkout's bridge, starts
a private Apache (tests/support/apache.py; mod_cgid and mod_fcgid, event
MPM), and drives each way of serving the same page with wrk at 1 and 4
connections: requests/s and the 50th/99th percentile latency.  Then the
relay's own start-up against ``python3 -c pass`` with hyperfine.

The four ways, all one cgi-bin directory and one app (``flask_app:app``):

- plain CGI: ``run("flask_app:app")``, the app imported per request;
- warm relay: ``run("flask_app:app", warm=True)``;
- cgi-fcgi relay: ``#!/usr/bin/cgi-fcgi -f`` with ``-connect SOCKET SCRIPT``;
- mod_fcgid: the plain script under ``SetHandler fcgid-script``.

Not part of run.py (CI's --quick run): it needs Flask from the package
index.  No figure is asserted.  On a shared machine the figures are noisy:
compare the rows of one run, not runs.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support import SRC  # noqa: E402
from support.apache import start_apache  # noqa: E402
from support.warm import private_dir_for, stop_daemons  # noqa: E402

FLASK_APP = '''\
from flask import Flask, render_template_string

app = Flask(__name__)
PAGE = """<!doctype html><title>{{ title }}</title><h1>{{ title }}</h1>
<ul>{% for item in items %}<li>{{ item }}</li>{% endfor %}</ul>"""


@app.route("/")
def index():
    return render_template_string(PAGE, title="Hello from Flask", items=range(20))
'''

PLAIN = '''\
#!{python}
from bridge import run
run("flask_app:app")
'''

WARM = '''\
#!{python}
from bridge import run
run("flask_app:app", warm=True, warm_dir={warm!r})
'''

CGI_FCGI = '''\
#!{cgi_fcgi} -f
-connect {sock} {script}
'''

CONF = '''\
ScriptAlias /cgi-bin/ "{root}/cgi-bin/"
<Directory "{root}/cgi-bin">
    Options +ExecCGI
    Require all granted
</Directory>
FcgidMaxProcessesPerClass 1
FcgidIdleTimeout 300
ScriptAlias /fcgi-bin/ "{root}/fcgi-bin/"
<Directory "{root}/fcgi-bin">
    SetHandler fcgid-script
    Options +ExecCGI
    Require all granted
</Directory>
'''

WAYS = (("plain CGI", "/cgi-bin/plain.cgi/"), ("warm relay", "/cgi-bin/warm.cgi/"),
        ("cgi-fcgi relay", "/cgi-bin/relay.fcgi/"), ("mod_fcgid", "/fcgi-bin/app.py/"))


def log(message: str) -> None:
    print(f"[cgi-warm] {message}", flush=True)


def build_venv(base: Path) -> Path:
    venv = base / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "flask"], check=True)
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             check=True, capture_output=True, text=True).stdout.strip()
    shutil.copytree(SRC / "bridge", Path(purelib) / "bridge",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    subprocess.run([str(python), "-m", "compileall", "-q", purelib], check=True)
    return python


def make_site(base: Path, python: Path) -> dict:
    cgi_bin, fcgi_bin = base / "cgi-bin", base / "fcgi-bin"
    for d in (cgi_bin, fcgi_bin):
        d.mkdir()
    warm = private_dir_for(base / "warm")
    relay = private_dir_for(base / "relay")
    (cgi_bin / "flask_app.py").write_text(FLASK_APP)
    (fcgi_bin / "flask_app.py").write_text(FLASK_APP)
    (base / "relay-app.py").write_text(PLAIN.format(python=python))
    (base / "flask_app.py").write_text(FLASK_APP)
    (cgi_bin / "plain.cgi").write_text(PLAIN.format(python=python))
    (cgi_bin / "warm.cgi").write_text(WARM.format(python=python, warm=str(warm)))
    (cgi_bin / "relay.fcgi").write_text(CGI_FCGI.format(cgi_fcgi=shutil.which("cgi-fcgi") or "/usr/bin/cgi-fcgi",
                                                        sock=relay / "app.sock", script=base / "relay-app.py"))
    (fcgi_bin / "app.py").write_text(PLAIN.format(python=python))
    for d in (cgi_bin, fcgi_bin):
        subprocess.run(["/usr/bin/python3", "-m", "compileall", "-q", str(d)], check=True)
    subprocess.run(["/usr/bin/python3", "-m", "compileall", "-q", str(base / "flask_app.py")], check=True)
    for dirpath, _, filenames in os.walk(base):
        if Path(dirpath) in (warm, relay) or Path(dirpath).parent in (warm, relay):
            continue
        os.chmod(dirpath, 0o755)
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.chmod(path, 0o755 if name.endswith((".cgi", ".fcgi", ".py")) or os.access(path, os.X_OK) else 0o644)
    return {"warm": warm, "relay": relay, "cgi_bin": cgi_bin}


def wrk(port: int, path: str, conns: int, seconds: float) -> dict:
    out = subprocess.run(["wrk", "-t", str(min(conns, 2)), "-c", str(conns), "-d", f"{max(1, round(seconds))}s", "--latency",
                          "--timeout", "10s", f"http://127.0.0.1:{port}{path}"],
                         capture_output=True, text=True, timeout=seconds + 60).stdout
    def ms(label: str) -> float | None:
        m = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            return None
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": float(rps.group(1)) if rps else 0.0, "p50_ms": ms("50%"), "p99_ms": ms("99%"),
            "non_2xx": int(errors.group(1)) if errors else 0}


def hyperfine(python: Path, site: dict, runs: int) -> dict:
    env = {"PATH": "/usr/bin:/bin", "GATEWAY_INTERFACE": "CGI/1.1", "REQUEST_METHOD": "GET",
           "PATH_INFO": "/", "SCRIPT_NAME": "/cgi-bin/warm.cgi", "QUERY_STRING": "",
           "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
           "SCRIPT_FILENAME": str(site["cgi_bin"] / "warm.cgi")}
    out = Path(tempfile.mkdtemp()) / "h.json"
    # as root, with a warm dir of its own (the Apache one belongs to www-data)
    root_warm = Path(tempfile.mkdtemp(prefix="bw-h-"))
    script = root_warm / "warm.cgi"
    script.write_text(WARM.format(python=python, warm=str(root_warm / "w")))
    script.chmod(0o755)
    shutil.copy(site["cgi_bin"] / "flask_app.py", root_warm / "flask_app.py")
    env["SCRIPT_FILENAME"] = str(script)
    subprocess.run([str(script)], env=env, cwd=root_warm, check=True, capture_output=True)
    try:
        subprocess.run(["hyperfine", "-N", "-w", "20", "-r", str(runs), "--export-json", str(out),
                        "/usr/bin/python3 -c pass", str(script)], env=env, cwd=root_warm, check=True,
                       capture_output=True)
        results = json.loads(out.read_text())["results"]
    finally:
        stop_daemons(root_warm / "w")
        shutil.rmtree(root_warm, ignore_errors=True)
    rows = {}
    for r in results:
        times = sorted(r["times"])
        rows[r["command"]] = {"min_ms": times[0] * 1000, "median_ms": statistics.median(times) * 1000}
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="wrk duration per case")
    parser.add_argument("--runs", type=int, default=300, help="hyperfine runs")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bw-bench-", dir="/tmp"))
    base.chmod(0o755)
    apache = None
    try:
        log("building a venv with Flask")
        python = build_venv(base)
        site = make_site(base, python)
        apache = start_apache(CONF.format(root=base), modules=("cgid", "fcgid"), log_level="warn")
        rows = []
        for name, path in WAYS:
            subprocess.run(["curl", "-sf", "-o", "/dev/null", f"http://127.0.0.1:{apache.port}{path}"],
                           check=True, timeout=60)        # starts the daemon / fcgid process
            for conns in (1, 4):
                r = wrk(apache.port, path, conns, args.seconds)
                rows.append({"way": name, "conns": conns, **r})
                log(f"{name:15s} c={conns}: {r['rps']:8.1f} req/s  p50 {r['p50_ms']} ms  p99 {r['p99_ms']} ms"
                    f"{'  non-2xx ' + str(r['non_2xx']) if r['non_2xx'] else ''}")
        log("relay start-up (hyperfine)")
        start = hyperfine(python, site, args.runs)
        print()
        print("| way | conns | req/s | p50 ms | p99 ms |")
        print("|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['way']} | {r['conns']} | {r['rps']:.1f} | {r['p50_ms']} | {r['p99_ms']} |")
        print()
        print("| command | min ms | median ms |")
        print("|---|---|---|")
        for command, r in start.items():
            print(f"| `{command}` | {r['min_ms']:.2f} | {r['median_ms']:.2f} |")
        results = HERE / "results"
        results.mkdir(exist_ok=True)
        (results / "cgi_warm.json").write_text(json.dumps({"load": rows, "startup": start}, indent=1))
        return 0
    finally:
        if apache is not None:
            apache.stop()
        stop_daemons(base / "warm")
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if str(base).encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                        os.kill(int(entry), 9)
                except OSError:
                    pass
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
