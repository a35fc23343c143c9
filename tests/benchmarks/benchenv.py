"""The one interpreter every Python server runs on, and the facts of this machine.

A virtual environment made with Debian's ``/usr/bin/python3`` (never a pyenv
shim: it is about 2x slower and www-data cannot run it) holds bridge and its
peers.  It lives in a public temp dir so Apache's CGI scripts (www-data) can
run it; bridge is reinstalled whenever its sources change.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
from pathlib import Path

from procs import run

ROOT = Path(__file__).resolve().parents[2]
BASE_PYTHON = "/usr/bin/python3"
DEFAULT_VENV = Path(os.environ.get("BRIDGE_BENCH_VENV", "/tmp/wsgi-bridge-bench-venv"))
# The peers, each by its PyPI name.  uWSGI compiles from source (gcc and the
# python3-dev headers), with the python plugin built in; granian is a wheel
# (Rust).  The frameworks of the realistic-app group come with them: all
# benchmark dependencies, never bridge's.
PEERS = ["flup", "gunicorn", "waitress", "uwsgi", "granian"]
FRAMEWORKS = ["flask", "django"]
OPTIONAL = ["py-spy"]  # profiling only; its absence costs nothing but the profile


def _log(message: str) -> None:
    print(f"[bench] {message}", flush=True)


def _pip(python: Path, *args: str, check: bool = True):
    return run([python, "-m", "pip", "install", "--disable-pip-version-check", "-q", *args],
               timeout=900, check=check)


def sources_digest() -> str:
    h = hashlib.sha256()
    for path in sorted((ROOT / "src").rglob("*.py")) + [ROOT / "pyproject.toml"]:
        h.update(str(path.relative_to(ROOT)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def ensure_venv(venv: Path = DEFAULT_VENV) -> Path:
    """The venv's python, with bridge (current sources), the peers and py-spy installed."""
    python = venv / "bin" / "python"
    if not Path(BASE_PYTHON).exists():
        raise RuntimeError(f"{BASE_PYTHON} is missing: the benchmark runs every server on Debian's python3")
    if not python.exists():
        _log(f"creating {venv} with {BASE_PYTHON}")
        run([BASE_PYTHON, "-m", "venv", venv], timeout=300)
        venv.chmod(0o755)
    marker = venv / "bench-installed.json"
    state = json.loads(marker.read_text()) if marker.exists() else {}
    wanted = PEERS + FRAMEWORKS
    missing = [p for p in wanted if p not in state.get("peers", [])]
    if missing:
        _log(f"installing {' '.join(missing)} into {venv} (uWSGI compiles: a minute or two)")
        result = _pip(python, *missing, check=False)
        if result.returncode != 0:
            # One peer that fails to build must not cost the others: try them one by one.
            for name in missing:
                if _pip(python, name, check=False).returncode != 0:
                    _log(f"could not install {name}: it will be reported missing")
        state["peers"] = [p for p in wanted if _installed(python, p)]
    if not state.get("optional_tried"):
        for name in OPTIONAL:
            _pip(python, name, check=False)
        state["optional_tried"] = True
    if not state.get("wheel"):
        _pip(python, "wheel")  # to build bridge without build isolation (no download per run)
        state["wheel"] = True
    digest = sources_digest()
    if state.get("bridge") != digest:
        users = _running_from(venv)
        if users:
            # Another checkout's run on the same venv: its servers would run
            # these sources from now on (give each checkout its own --venv).
            _log(f"warning: {len(users)} running program(s) use {venv}; reinstalling bridge from {ROOT} "
                 f"changes the code they load (pass --venv to keep runs apart):")
            for cmd in users[:4]:
                _log(f"    {cmd}")
        _log(f"installing bridge from {ROOT} into {venv}")
        _pip(python, "--no-deps", "--force-reinstall", "--no-build-isolation", str(ROOT))
        state["bridge"] = digest
    marker.write_text(json.dumps(state))
    return python


def _running_from(venv: Path) -> list[str]:
    """Command lines of the running programs started from the venv's bin/."""
    prefix = str(venv / "bin") + "/"
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if cmd.startswith(prefix) or f" {prefix}" in cmd[:300]:
            found.append(cmd.strip()[:120])
    return found


def _installed(python: Path, dist: str) -> bool:
    code = f"import importlib.metadata as m; m.version({dist!r})"
    return subprocess.run([str(python), "-c", code], capture_output=True).returncode == 0


def versions(python: Path) -> dict:
    code = ("import importlib.metadata as m, json\n"
            "out = {}\n"
            "for d in ('wsgi-bridge', 'flup', 'gunicorn', 'waitress', 'uWSGI', 'granian', 'Flask', 'Django',\n"
            "          'py-spy'):\n"
            "    try: out[d] = m.version(d)\n"
            "    except Exception: out[d] = None\n"
            "print(json.dumps(out))")
    return json.loads(run([python, "-c", code]).stdout)


def _first_line(args: list) -> str:
    try:
        result = subprocess.run(args, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc})"
    text = (result.stdout + result.stderr).strip().splitlines()
    return text[0] if text else ""


def machine_facts(python: Path) -> dict:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    base = Path(BASE_PYTHON)
    commit = _first_line(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"],
                           capture_output=True, text=True).stdout.strip()
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory": mem,
        "kernel": platform.release(),
        "interpreter": f"{python} (venv of {base} -> {base.resolve()})",
        "python_version": run([python, "-c", "import sys; print(sys.version.replace(chr(10), ' '))"]).stdout.strip(),
        "nginx": _first_line(["nginx", "-v"]),
        "apache": _first_line(["apache2", "-v"]),
        "wrk": _first_line(["wrk", "-v"]),
        "hyperfine": _first_line(["hyperfine", "--version"]),
        "packages": versions(python),
        "bridge_commit": commit + (" (with uncommitted changes in src/)" if dirty else ""),
    }


def which(name: str) -> str | None:
    return shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def neighbours() -> list[str]:
    """Other programs that load this machine now (test runs, other benchmarks): the
    figures of a run made while they ran are not to be trusted."""
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if any(word in cmd for word in ("wrk ", "pytest", " -m bridge ", "gunicorn", "uwsgi", "nginx: master",
                                        "hyperfine", "apache2")):
            found.append(cmd[:120])
    return found
