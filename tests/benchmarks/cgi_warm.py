#!/usr/bin/env python3
"""CGI group: a Flask page and the Django admin login page through Apache, four ways.

    .venv-test/bin/python tests/benchmarks/cgi_warm.py                        # about 4 minutes
    .venv-test/bin/python tests/benchmarks/cgi_warm.py --seconds 3 --rounds 3
    .venv-test/bin/python tests/benchmarks/cgi_warm.py --startup-only      # hyperfine only

Builds a virtual environment of /usr/bin/python3 in a public temporary
directory with Flask and Django (``pip install flask django``: benchmark
dependencies only, never test or run-time ones) and a copy of this
checkout's bridge, generates a minimal Django project there (admin, auth,
contenttypes, sessions, messages; an SQLite database in the temporary
directory, ``migrate`` run once before measuring; DEBUG off), starts a
private Apache (tests/support/apache.py; mod_cgid and mod_fcgid, event
MPM), and drives each way of serving each page with wrk at 1 and 4
connections: requests/s and the 50th/99th percentile latency, and the
floor of Apache's CGI itself the same way: a shell script and a static C
program that print a 5-byte page (one fork and exec per request, no
Python at all; ``cc`` builds the C one).  Then the relay's own start-up
against ``python3 -c pass`` with hyperfine.

The four ways, for each app (``flask_app:app``, ``djsite.wsgi:application``):

- plain CGI: ``run(APP)``, the app imported per request;
- warm relay: ``run(APP, warm=True)``;
- cgi-fcgi relay: ``#!/usr/bin/cgi-fcgi -f`` with ``-connect SOCKET SCRIPT``;
- mod_fcgid: the plain script under ``SetHandler fcgid-script``.

The machine is shared, so each measurement runs ``--rounds`` times, the
order of the cases reversed every other round (a neighbour's burst then
falls on different cases), and the tables give the median of the rounds.

Not part of run.py (CI's --quick run): it needs Flask and Django from the
package index.  No figure is asserted.  Compare the rows of one run, not
runs.
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

#: The Django project: a settings module as small as the admin allows, the
#: admin's URLs, and the WSGI module ``django-admin startproject`` writes.
DJANGO_SETTINGS = '''\
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "benchmark-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "djsite.urls"
TEMPLATES = [{
    "BACKEND": "django.template.backends.django.DjangoTemplates",
    "DIRS": [],
    "APP_DIRS": True,
    "OPTIONS": {"context_processors": [
        "django.template.context_processors.request",
        "django.contrib.auth.context_processors.auth",
        "django.contrib.messages.context_processors.messages",
    ]},
}]
WSGI_APPLICATION = "djsite.wsgi.application"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "db.sqlite3"}}
USE_TZ = True
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
'''

DJANGO_URLS = '''\
from django.contrib import admin
from django.urls import path

urlpatterns = [path("admin/", admin.site.urls)]
'''

DJANGO_WSGI = '''\
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djsite.settings")
application = get_wsgi_application()
'''

PLAIN = '''\
#!{python}
from bridge import run
run({app!r})
'''

WARM = '''\
#!{python}
from bridge import run
run({app!r}, warm=True, warm_dir={warm!r})
'''

#: The floor of Apache's CGI: one fork and exec per request, no Python.
HELLO = '''\
#!/bin/sh
printf 'Content-Type: text/plain\\r\\n\\r\\nhello'
'''

#: The same in C, linked statically: no interpreter, no dynamic loader, so
#: what remains is Apache's own cost of a CGI request.
HELLO_C = r'''
#include <unistd.h>
int main(void)
{
    static const char page[] = "Content-Type: text/plain\r\n\r\nhello";
    return write(1, page, sizeof page - 1) == sizeof page - 1 ? 0 : 1;
}
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

#: name -> (app spec, page below the script)
APPS = {"Flask": ("flask_app:app", "/"), "Django": ("djsite.wsgi:application", "/admin/login/")}
WAYS = (("plain CGI", "/cgi-bin/{key}-plain.cgi"), ("warm relay", "/cgi-bin/{key}-warm.cgi"),
        ("cgi-fcgi relay", "/cgi-bin/{key}-relay.fcgi"), ("mod_fcgid", "/fcgi-bin/{key}-app.py"))
FLOORS = (("shell hello CGI", "/cgi-bin/hello.cgi"), ("static C hello CGI", "/cgi-bin/hello-c.cgi"))


def log(message: str) -> None:
    print(f"[cgi-warm] {message}", flush=True)


def build_venv(base: Path) -> Path:
    venv = base / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "flask", "django"], check=True)
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             check=True, capture_output=True, text=True).stdout.strip()
    shutil.copytree(SRC / "bridge", Path(purelib) / "bridge",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    # The Django project is found through a .pth file: every script and
    # daemon of this venv imports ``djsite`` without a path of its own.
    (Path(purelib) / "djsite-benchmark.pth").write_text(str(make_django_project(base, python)) + "\n")
    subprocess.run([str(python), "-m", "compileall", "-q", purelib], check=True)
    return python


def make_django_project(base: Path, python: Path) -> Path:
    """``base/django/djsite``: settings, urls, wsgi; the database migrated once, as www-data will read it."""
    project = base / "django"
    package = project / "djsite"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "settings.py").write_text(DJANGO_SETTINGS)
    (package / "urls.py").write_text(DJANGO_URLS)
    (package / "wsgi.py").write_text(DJANGO_WSGI)
    env = {**os.environ, "PYTHONPATH": str(project), "DJANGO_SETTINGS_MODULE": "djsite.settings"}
    subprocess.run([str(python), "-m", "django", "migrate", "-v", "0"], check=True, env=env, cwd=project)
    subprocess.run([str(python), "-m", "compileall", "-q", str(project)], check=True)
    return project


def make_site(base: Path, python: Path) -> dict:
    cgi_bin, fcgi_bin = base / "cgi-bin", base / "fcgi-bin"
    for d in (cgi_bin, fcgi_bin):
        d.mkdir()
    warm = private_dir_for(base / "warm")
    relay = private_dir_for(base / "relay")
    (cgi_bin / "flask_app.py").write_text(FLASK_APP)
    (fcgi_bin / "flask_app.py").write_text(FLASK_APP)
    (base / "flask_app.py").write_text(FLASK_APP)
    cgi_fcgi = shutil.which("cgi-fcgi") or "/usr/bin/cgi-fcgi"
    for name, (app, _) in APPS.items():
        key = name.lower()
        (base / f"{key}-relay-app.py").write_text(PLAIN.format(python=python, app=app))
        (cgi_bin / f"{key}-plain.cgi").write_text(PLAIN.format(python=python, app=app))
        (cgi_bin / f"{key}-warm.cgi").write_text(WARM.format(python=python, app=app, warm=str(warm)))
        (cgi_bin / f"{key}-relay.fcgi").write_text(CGI_FCGI.format(
            cgi_fcgi=cgi_fcgi, sock=relay / f"{key}.sock", script=base / f"{key}-relay-app.py"))
        (fcgi_bin / f"{key}-app.py").write_text(PLAIN.format(python=python, app=app))
    (cgi_bin / "hello.cgi").write_text(HELLO)
    (base / "hello.c").write_text(HELLO_C)
    subprocess.run(["cc", "-O2", "-static", "-o", str(cgi_bin / "hello-c.cgi"), str(base / "hello.c")], check=True)
    # The database is written by a login POST or a session save, never by
    # the page measured, but www-data gets it (and its directory) anyway.
    for path in (base / "django", base / "django" / "db.sqlite3"):
        os.chown(path, *www_data())
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
    os.chmod(base / "django" / "db.sqlite3", 0o644)
    return {"warm": warm, "relay": relay, "cgi_bin": cgi_bin}


def www_data() -> tuple:
    import pwd
    entry = pwd.getpwnam("www-data")
    return entry.pw_uid, entry.pw_gid


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


def startup_env(script: Path, app_page: str) -> dict:
    return {"PATH": "/usr/bin:/bin", "GATEWAY_INTERFACE": "CGI/1.1", "REQUEST_METHOD": "GET",
            "PATH_INFO": app_page, "SCRIPT_NAME": "/cgi-bin/warm.cgi", "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
            "SCRIPT_FILENAME": str(script)}


HELLO_APP = '''\
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return [b"hello"]
'''


def hyperfine(python: Path, site: dict, runs: int, rounds: int) -> dict:
    """Each warm script (its daemon started first) against ``python3 -c pass``, wall and CPU time.

    The relay's own cost is the row of a 5-byte app (the daemon's work is
    then a few hundred microseconds); the Flask and Django rows add their
    page.  ``python -c pass`` of the benchmark's venv is there too: the
    scripts run that interpreter, whose site-packages (Flask, Django) cost
    something before bridge is imported.  Run as root, with a warm
    directory of its own (the Apache one belongs to www-data).  hyperfine
    runs one command's runs after another's, so each round reverses the
    order; the result is the median of the rounds' medians.
    """
    root_warm = Path(tempfile.mkdtemp(prefix="bw-h-"))
    out = root_warm / "h.json"
    commands = [("/usr/bin/python3 -c pass", "/usr/bin/python3 -c pass", None, "/"),
                ("venv python -c pass", f"{python} -c pass", None, "/")]
    try:
        shutil.copy(site["cgi_bin"] / "flask_app.py", root_warm / "flask_app.py")
        (root_warm / "hello_app.py").write_text(HELLO_APP)
        for name, (app, page) in (("hello", ("hello_app:app", "/")), *APPS.items()):
            script = root_warm / f"{name.lower()}-warm.cgi"
            script.write_text(WARM.format(python=python, app=app, warm=str(root_warm / "w")))
            script.chmod(0o755)
            subprocess.run([str(script)], env=startup_env(script, page), cwd=root_warm, check=True,
                           capture_output=True)
            label = "warm relay, 5-byte app" if name == "hello" else f"warm relay, {name} page"
            commands.append((label, str(script), script, page))
        per_round = {label: [] for label, *_ in commands}
        for r in range(rounds):
            for label, command, script, page in (commands if r % 2 == 0 else list(reversed(commands))):
                env = startup_env(script or commands[2][2], page)
                subprocess.run(["hyperfine", "-N", "-w", "10", "-r", str(runs), "--export-json", str(out), command],
                               env=env, cwd=root_warm, check=True, capture_output=True)
                result = json.loads(out.read_text())["results"][0]
                per_round[label].append({"min": min(result["times"]) * 1000,
                                         "median": statistics.median(result["times"]) * 1000,
                                         "cpu": (result["user"] + result["system"]) * 1000})
    finally:
        stop_daemons(root_warm / "w")
        shutil.rmtree(root_warm, ignore_errors=True)
    return {label: {"min_ms": min(x["min"] for x in results),
                    "median_ms": statistics.median(x["median"] for x in results),
                    "cpu_ms": statistics.median(x["cpu"] for x in results),
                    "rounds_median_ms": [round(x["median"], 2) for x in results]}
            for label, results in per_round.items()}


def cases() -> list:
    """(app, way, path) for every cell, the shell floor last."""
    out = []
    for name, (_, page) in APPS.items():
        for way, script in WAYS:
            out.append((name, way, script.format(key=name.lower()) + page))
    out.extend(("-", way, path) for way, path in FLOORS)
    return out


def wait_for_quiet(base: Path, timeout: float = 60.0) -> None:
    """Wait until no CGI process of the last cell is still running.

    wrk stops at its deadline, but the scripts Apache already started run
    to their end: a plain CGI Django request left in flight costs the next
    cell half a second of both cores.  The daemons (their command line
    names the cgi-bin script after ``--watch``) are not waited for.
    """
    marker = f"{base}/cgi-bin/".encode()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = False
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
                except OSError:
                    continue
                if marker in cmdline and b"bridge.warm_daemon" not in cmdline:
                    busy = True
                    break
        if not busy:
            return
        time.sleep(0.05)


def median_row(samples: list) -> dict:
    def med(key):
        values = [s[key] for s in samples if s[key] is not None]
        return statistics.median(values) if values else None
    return {"rps": med("rps"), "p50_ms": med("p50_ms"), "p99_ms": med("p99_ms"),
            "non_2xx": sum(s["non_2xx"] for s in samples), "rounds": len(samples)}


def fmt(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def summary(table: dict, start: dict) -> list:
    """The issue's three targets, each as a sentence with its figures."""
    lines = []
    def cell(app, way, conns):
        return table.get((app, way, conns), {})
    for conns in (1, 4):
        plain, warm = cell("Django", "plain CGI", conns), cell("Django", "warm relay", conns)
        if plain.get("rps") and warm.get("rps"):
            lines.append(f"Django, {conns} conn: warm relay {warm['rps']:.1f} req/s vs plain CGI "
                         f"{plain['rps']:.1f} req/s = {warm['rps'] / plain['rps']:.1f}x (target >= 10x)")
    base = start.get("/usr/bin/python3 -c pass")
    for label, r in start.items():
        if base and label != "/usr/bin/python3 -c pass":
            lines.append(f"{label}: median {r['median_ms']:.2f} ms, min {r['min_ms']:.2f} ms, CPU {r['cpu_ms']:.2f} ms "
                         f"vs python3 -c pass {base['median_ms']:.2f} / {base['min_ms']:.2f} / {base['cpu_ms']:.2f} ms "
                         f"= {r['median_ms'] / base['median_ms']:.2f}x / {r['min_ms'] / base['min_ms']:.2f}x / "
                         f"{r['cpu_ms'] / base['cpu_ms']:.2f}x (target <= 1.5x)")
    for app in APPS:
        for conns in (1, 4):
            relay, fcgid = cell(app, "cgi-fcgi relay", conns), cell(app, "mod_fcgid", conns)
            if relay.get("p50_ms") and fcgid.get("p50_ms"):
                lines.append(f"{app}, {conns} conn: cgi-fcgi relay p50 {relay['p50_ms']:.2f} ms vs mod_fcgid "
                             f"{fcgid['p50_ms']:.2f} ms = {relay['p50_ms'] / fcgid['p50_ms']:.1f}x; "
                             f"req/s {relay['rps'] / fcgid['rps']:.2f} of mod_fcgid (target within 2x)")
    for way, _ in FLOORS:
        floor, fcgid = cell("-", way, 1), cell("Flask", "mod_fcgid", 1)
        if floor.get("p50_ms") and fcgid.get("p50_ms"):
            lines.append(f"Apache CGI floor ({way}, 1 conn) p50 {floor['p50_ms']:.2f} ms = "
                         f"{floor['p50_ms'] / fcgid['p50_ms']:.2f}x Flask's mod_fcgid p50; req/s "
                         f"{floor['rps']:.0f} = {floor['rps'] / fcgid['rps']:.2f} of mod_fcgid's (a floor p50 above "
                         f"0.5x of mod_fcgid's leaves no relay run as a CGI script within 2x)")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="wrk duration per cell")
    parser.add_argument("--rounds", type=int, default=2, help="rounds, order reversed every other one")
    parser.add_argument("--runs", type=int, default=60, help="hyperfine runs per command and round")
    parser.add_argument("--startup-rounds", type=int, default=6, help="hyperfine rounds, order reversed every other one")
    parser.add_argument("--startup-only", action="store_true", help="only the relay's start-up (no Apache)")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bw-bench-", dir="/tmp"))
    base.chmod(0o755)
    apache = None
    load_start = os.getloadavg()
    try:
        log("building a venv with Flask and Django, migrating the Django database")
        python = build_venv(base)
        site = make_site(base, python)
        if args.startup_only:
            start = hyperfine(python, site, args.runs, args.startup_rounds)
            for line in summary({}, start):
                print(f"- {line}")
            return 0
        apache = start_apache(CONF.format(root=base), modules=("cgid", "fcgid"), log_level="warn")
        all_cases = cases()
        for _, _, path in all_cases:
            subprocess.run(["curl", "-sf", "-o", "/dev/null", f"http://127.0.0.1:{apache.port}{path}"],
                           check=True, timeout=60)        # starts the daemons / fcgid processes
        samples = {}
        for r in range(args.rounds):
            order = all_cases if r % 2 == 0 else list(reversed(all_cases))
            for app, way, path in order:
                for conns in ((1, 4) if r % 2 == 0 else (4, 1)):
                    wait_for_quiet(base)
                    result = wrk(apache.port, path, conns, args.seconds)
                    samples.setdefault((app, way, conns), []).append(result)
                    log(f"round {r + 1} {app:6s} {way:15s} c={conns}: {result['rps']:8.1f} req/s  "
                        f"p50 {result['p50_ms']} ms  p99 {result['p99_ms']} ms"
                        f"{'  non-2xx ' + str(result['non_2xx']) if result['non_2xx'] else ''}")
        table = {key: median_row(v) for key, v in samples.items()}
        log("relay start-up (hyperfine)")
        start = hyperfine(python, site, args.runs, args.startup_rounds)
        load_end = os.getloadavg()
        print()
        print(f"median of {args.rounds} rounds, {args.seconds:g} s per cell; load average "
              f"{load_start[0]:.1f} at start, {load_end[0]:.1f} at end (2 cores)")
        print()
        print("| app | way | conns | req/s | p50 ms | p99 ms |")
        print("|---|---|---|---|---|---|")
        for app, way, _ in all_cases:
            for conns in (1, 4):
                r = table[(app, way, conns)]
                errors = f" ({r['non_2xx']} non-2xx)" if r["non_2xx"] else ""
                print(f"| {app} | {way}{errors} | {conns} | {fmt(r['rps'])} | {fmt(r['p50_ms'], 2)} | "
                      f"{fmt(r['p99_ms'], 2)} |")
        print()
        print("| command | min ms | median ms | CPU ms (user+sys) | each round's median |")
        print("|---|---|---|---|---|")
        for command, r in start.items():
            print(f"| {command} | {r['min_ms']:.2f} | {r['median_ms']:.2f} | {r['cpu_ms']:.2f} | "
                  f"{r['rounds_median_ms']} |")
        print()
        for line in summary(table, start):
            print(f"- {line}")
        results = HERE / "results"
        results.mkdir(exist_ok=True)
        (results / "cgi_warm.json").write_text(json.dumps({
            "load_average": {"start": load_start, "end": load_end}, "seconds": args.seconds,
            "rounds": args.rounds,
            "load": [{"app": k[0], "way": k[1], "conns": k[2], **v, "samples": samples[k]} for k, v in table.items()],
            "startup": start}, indent=1))
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
