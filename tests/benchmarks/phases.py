"""Where bridge's time per request goes: CPU, system calls, context switches, phases.

Run (from the repository root; the venv is the benchmark's, see benchenv)::

    /usr/bin/python3 tests/benchmarks/phases.py                                 # http, benchapp /hello
    /usr/bin/python3 tests/benchmarks/phases.py --app flaskapp:app --path /page
    /usr/bin/python3 tests/benchmarks/phases.py --mode fcgi                     # nginx -> bridge fcgi
    ... --markdown tests/benchmarks/results/phases-http-hello.md               # also a snippet for docs

The server always runs this tree's ``src`` (PYTHONPATH), whatever version of
bridge the shared venv holds, with one process x 4 threads.  Two parts:

**1. Live: a real server under wrk** (keep-alive, 16 connections, a few seconds
per measurement; with ``--mode fcgi`` a private nginx in front, no keep-conn).
Each figure comes from its own wrk run so that no tool disturbs another:

* *CPU µs/request*: utime+stime of the server process (all its threads) from
  /proc/PID/stat over the run, divided by the requests wrk completed.  The
  same for nginx's worker in fcgi mode.  This is the figure every other one
  is scaled to.
* *Context switches/request*: voluntary and involuntary, summed over
  /proc/PID/task/*/status.  Voluntary ones are the hand-offs (epoll wait,
  a pool thread waiting for work, the GIL); involuntary ones are preemption.
* *System calls/request by kind*: ``perf stat -e 'syscalls:sys_enter_*' -p PID``
  wrapped around the wrk run.  These are in-kernel tracepoint *counts* (no
  stop per call, unlike strace), so the overhead is small and, more to the
  point, the counts are exact; the table shows the CPU µs/request measured
  under perf beside the clean figure so the overhead can be judged.  Where
  perf cannot open the tracepoints, ``strace -f -c`` is the fallback: its
  counts are right, its timings are not (each call stops the process twice).
* *Phases*: ``py-spy record --gil --rate 500 --format raw`` (blocking: it
  stops the process for each sample, 500 times a second, which cost no
  measurable throughput here).  ``--gil`` keeps one sample per tick of the
  thread that holds the GIL, i.e. of Python running.  A phase's µs/request
  is its share of those samples times the *user* CPU per request from
  /proc (py-spy's own time base, a sample per 2 ms, leans high when deep
  stacks make each stop long: it is printed as a check); the kernel's row
  is the *system* CPU per request: the kernel's side of the system calls
  (loopback TCP does the receiver's work inside the sender's writev).  The
  user time spent handing the GIL over (a few %) is spread over the
  phases.  Threads in a system call hold no GIL, so the "syscalls" phase
  is only the Python side of the calls; the kernel's row is theirs.
  Without ``--gil`` py-spy 0.4 on this machine counts pool
  threads asleep in epoll_wait as running (its idle test failed: up to 60 %
  of samples were ``epoll.poll`` lines while /proc showed 0.3 cores busy)
  and slowed the server 1.5-4x; ``--idle`` would add the sleepers on
  purpose; ``--nonblocking`` read torn stacks (a third of the samples on a
  one-line dict lookup) and many errors.  Each stack is put in one phase by
  :func:`classify` (read its docstring).  With a few hundred samples a
  phase's figure is ±1 µs or so.

**2. In-process: instructions per request per phase** (``valgrind --tool=callgrind``).
Wall-clock and CPU time on 2 shared cores move by 10-20 % between runs;
instruction counts move by well under 1 %, so they are what an A/B of a
small change should be judged on.  The same request bytes wrk or nginx
send are fed to the very objects bridge's server uses (``HTTPConnection``
with ``bridge.http.protocol.Connection``, or the FastCGI ``Handler`` with
``bridge.fastcgi.protocol.ServerConnection``), with the module-level
``_readv``/``_writev``/``_write`` replaced by in-memory stand-ins, in loops of N
requests, one loop per phase:

* ``parse``: the protocol object takes the bytes and yields the request
  (HTTP: ``receive_data`` + ``next_event`` for the head and its end;
  FastCGI: ``receive_data`` of BEGIN_REQUEST, PARAMS, STDIN).
* ``environ``: HTTP ``HTTPConnection._environ`` (``request_environ``); FastCGI
  ``fix_script_name_and_path_info`` + ``make_environ``, as ``Handler._run``.
* ``app``: the app alone, called with a do-nothing ``start_response``, its
  iterable consumed and closed.
* ``response``: ``bridge.wsgi.call_app`` with the real transport (start_response
  checks, head serialisation, framing) minus the ``app`` loop.
* ``full``: the whole path from the readable event (``on_readable``) on; for
  FastCGI a new Handler per request, as nginx without keep-conn opens a
  connection per request.  ``glue`` = full - the four above: the
  connection's own bookkeeping between them.

os.getppid() between loops makes callgrind dump its counters
(``--dump-before=getppid``), so each loop's instructions are read
separately.  These counts exclude the kernel (system calls), the worker's
epoll loop, the thread pool's hand-off and the GIL: the live part is the
one that sees those.

Reading the output: the biggest row of the phase table times the requests/s
you want is the budget to cut; a syscall kind with more than one call per
request (beyond read, write and epoll_wait) is a candidate; voluntary
context switches well above 1 per request are hand-offs between threads.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SRC = ROOT / "src"
APPS = HERE / "apps"
VENV_PYTHON = Path(os.environ.get("BRIDGE_BENCH_VENV", "/tmp/wsgi-bridge-bench-venv")) / "bin" / "python"
THREADS = 4
CONNECTIONS = 16
PHASES = ("read/parse", "environ", "app", "response", "syscalls", "worker/pool", "other")

# --------------------------------------------------------------------------
# Bucketing py-spy stacks into phases (pure: tested in tests/unit)

# Functions of bridge's modules, by the phase they belong to.  A module
# listed with None puts all its functions in that phase unless named here.
_FUNCTION_PHASES = {
    "bridge/http/protocol.py": ({"response_head", "chunk_parts", "end_response", "frame", "status_line",
                                 "error_response", "send_continue", "raw_body"}, "response", "read/parse"),
    "bridge/fastcgi/protocol.py": ({"stdout", "stdout_buffers", "stderr", "end_request", "respond",
                                    "respond_buffers", "_end_streams", "_end_bytes", "data_to_send", "_get"},
                                   "response", "read/parse"),
    "bridge/fastcgi/records.py": ({"single_record", "record_padding", "record_header", "encode_record",
                                   "frame_buffers", "encode_pairs", "_encode_length", "_as_bytes",
                                   "encode_end_request", "encode_unknown_type"},
                                  "response", "read/parse"),
}
_FILE_PHASES = {
    "bridge/http/readers.py": "read/parse",
    "bridge/http/events.py": "read/parse",
    "bridge/http/environ.py": "environ",
    "bridge/abnf.py": "response",        # http_date for the Date line
}
_SERVER_FUNCTIONS = {
    "read/parse": {"on_readable", "_readable", "_read_now", "_receive_body", "_read_wait", "_tls_feed",
                   "_events", "_dispatch", "read_body", "_buffer", "_thread_buffer"},
    "environ": {"_environ", "fix_script_name_and_path_info", "_path_from_uri", "make_environ",
                "decode_path", "remove_dot_segments", "apply_script_name", "empty_input"},
    "response": {"send_head", "send_body", "finish", "abort", "send_file", "_send", "_send_raw",
                 "_send_blocking", "_send_buffers", "_send_replies", "_flush_err", "_check_incoming",
                 "start_response", "write", "_count", "_send_head", "send_complete", "_check_status",
                 "_check_headers", "merge_content_length", "single_content_length", "encode_headers",
                 "status_has_body", "date_lines", "call_app", "_fail", "_send_file_wrapper"},
    # The connection's glue between the phases: its own lines are "other",
    # not the phase of the frame that called it (on_readable is read/parse).
    "other": {"_serve", "_respond", "_run", "_task", "_task_done", "_log_access", "_drain", "_linger"},
}
# The leaf line calls into the kernel: one of these C functions.
_SYSCALL_LINE = re.compile(
    r"(?<![\w.])(_readv|_writev|_write|_read)\s*\("
    r"|\bos\.(read|readv|write|writev|sendfile|pread|close|set_blocking)\s*\("
    r"|\.(recv|recv_into|recvmsg|send|sendall|sendmsg|accept|accept4|poll|select|epoll_wait|shutdown"
    r"|setsockopt|getsockopt|close|dup)\s*\(")
_APP_ENTRY = {"call_app", "_follow_internal_redirects"}


def _bridge_path(path: str) -> str | None:
    """``bridge/...`` of a frame's file, or None if it is not bridge's."""
    index = path.rfind("bridge/")
    if index < 0 or "/site-packages/bridge/" not in path and not path.startswith("bridge/") \
            and "/src/bridge/" not in path:
        return None
    return path[index:]


def frame_phase(function: str, path: str) -> str | None:
    """The phase a bridge frame belongs to by itself, or None (not bridge's, or glue).

    ``function`` may be qualified (py-spy writes ``HTTPConnection._send``).
    """
    rel = _bridge_path(path)
    if rel is None:
        return None
    function = function.rpartition(".")[2]
    if rel in _FUNCTION_PHASES:
        names, named_phase, rest = _FUNCTION_PHASES[rel]
        return named_phase if function in names else rest
    if rel in _FILE_PHASES:
        return _FILE_PHASES[rel]
    if rel.startswith("bridge/server/"):
        return "worker/pool"
    for phase, names in _SERVER_FUNCTIONS.items():
        if function in names:
            return phase
    return None


def classify(frames: list, line_text=None) -> str:
    """The phase of one sampled stack; ``frames`` root first, each (function, path, line).

    Walking from the root, the deepest frame with a phase decides, with one
    exception: below the app's entry (the first frame outside bridge that
    ``call_app`` calls) everything is ``app`` unless it is bridge code the app
    called back (``start_response`` and ``write``: response; ``wsgi.input``:
    read/parse).  Stdlib frames (threading, queue, selectors) take the phase
    of the bridge frame above them, so a pool thread waiting on its queue is
    worker/pool.  If the leaf is a bridge or stdlib line calling into the
    kernel (``line_text(path, line)`` tells its source), the stack is
    ``syscalls`` whatever the phase around it.  Bridge's connection glue
    (``_serve``, ``_respond``, ``_run``...) is ``other``, as is a stack
    with no phase at all.
    """
    phase = None
    in_app = False
    after_entry = False
    for function, path, _line in frames:
        own = frame_phase(function, path)
        is_bridge = _bridge_path(path) is not None
        if after_entry and not is_bridge and not in_app:
            in_app = True
            phase = "app"
        if in_app:
            if own in ("response", "read/parse"):
                phase = own
            continue
        if own is not None:
            phase = own
        after_entry = is_bridge and function.rpartition(".")[2] in _APP_ENTRY
    if frames and line_text is not None:
        function, path, line = frames[-1]
        text = line_text(path, line) or ""
        if _SYSCALL_LINE.search(text) and (phase != "app" or _bridge_path(path) is not None):
            return "syscalls"
    return phase or "other"


_FRAME = re.compile(r"^(?P<function>.*?) \((?P<path>.*):(?P<line>\d+)\)$")


def parse_raw(text: str) -> list:
    """py-spy's ``--format raw`` (collapsed stacks): [(frames root first, count)]."""
    stacks = []
    for row in text.splitlines():
        row = row.strip()
        if not row:
            continue
        stack, _, count = row.rpartition(" ")
        if not count.isdigit():
            continue
        frames = []
        for part in stack.split(";"):
            m = _FRAME.match(part)
            if m:
                frames.append((m["function"], m["path"], int(m["line"])))
        stacks.append((frames, int(count)))
    return stacks


def phase_shares(stacks: list, line_text=None) -> Counter:
    """Samples per phase."""
    totals: Counter = Counter()
    for frames, count in stacks:
        totals[classify(frames, line_text)] += count
    return totals


_SOURCES: dict = {}     # path -> its lines, read once per run


def source_line(path: str, line: int) -> str:
    """A line of a frame's file (bridge from this tree's src, the rest as py-spy named it)."""
    rel = _bridge_path(path)
    candidate = SRC / rel if rel else Path(path)
    lines = _SOURCES.get(candidate)
    if lines is None:
        try:
            lines = candidate.read_text(errors="replace").splitlines()
        except OSError:
            lines = []
        _SOURCES[candidate] = lines
    return lines[line - 1] if 0 < line <= len(lines) else ""


# --------------------------------------------------------------------------
# Part 2: the in-process loops (run in a child under callgrind)

HTTP_REQUEST = b"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n"


def _fcgi_request(path: str, keep_conn: bool) -> bytes:
    """What nginx sends with tests/benchmarks/conf/fastcgi_params for a GET."""
    import struct
    from bridge.fastcgi import records
    params = {
        "QUERY_STRING": "", "REQUEST_METHOD": "GET", "CONTENT_TYPE": "", "CONTENT_LENGTH": "",
        "SCRIPT_NAME": "", "PATH_INFO": path, "REQUEST_URI": path, "DOCUMENT_URI": path,
        "SERVER_PROTOCOL": "HTTP/1.1", "REQUEST_SCHEME": "http", "GATEWAY_INTERFACE": "CGI/1.1",
        "SERVER_SOFTWARE": "nginx/1.22.1", "REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": "51234",
        "SERVER_ADDR": "127.0.0.1", "SERVER_PORT": "8080", "SERVER_NAME": "localhost",
        "HTTP_HOST": "127.0.0.1:8080",
    }
    begin = struct.pack(">HB5x", 1, 1 if keep_conn else 0)
    return b"".join([records.encode_record(records.BEGIN_REQUEST, 1, begin),
                     records.encode_record(records.PARAMS, 1, records.encode_pairs(params)),
                     records.encode_record(records.PARAMS, 1, b""),
                     records.encode_record(records.STDIN, 1, b"")])


def _consume(app, env) -> None:
    def start_response(status, headers, exc_info=None):
        return lambda data: None
    body = app(env, start_response)
    try:
        for _ in body:
            pass
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()


class _Regions:
    """Labels of the stretches between callgrind dumps, in order."""

    def __init__(self) -> None:
        self.labels = ["setup"]

    def next(self, label: str) -> None:
        os.getppid()    # callgrind --dump-before=getppid ends the stretch before it
        self.labels.append(label)


def _gc_off() -> None:
    """The loops keep N requests alive; the collector would walk them again and
    again and charge that to whichever loop it fell in.  Off, except in the
    last loop (``full, gc on``), which shows what collection costs a request."""
    gc.collect()
    gc.disable()


def _fake_reader(payload: bytes):
    def readv(fd, buffers):
        buf = buffers[0]
        buf[:len(payload)] = payload
        return len(payload)
    return readv


def _fake_writev(fd, parts):
    n = 0
    for p in parts:
        n += len(p)
    return n


def _http_loops(app, app_spec: str, path: str, n: int, regions: _Regions) -> None:
    import socket
    from bridge.cli import build_parser
    from bridge.config import Config
    import bridge.http.server as hs
    from bridge.http.protocol import Connection
    from bridge.wsgi import call_app
    args, _ = build_parser().parse_known_args(["http", app_spec, "--threads", str(THREADS)])
    config = Config.build("http", {k: v for k, v in vars(args).items() if k != "command"})
    factory = hs.factory_builder(app, config)
    ctx = factory.context
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    client = socket.create_connection(listener.getsockname())
    sock, addr = listener.accept()
    payload = HTTP_REQUEST.replace(b"{path}", path.encode())
    hs._readv = _fake_reader(payload)
    hs._writev = _fake_writev
    main = factory(sock, addr, None, None)
    for _ in range(200):    # warm: caches, first-call paths, the app's lazy setup
        main.on_readable()
    _gc_off()
    conns = [Connection(ctx.limits) for _ in range(n)]
    requests = []
    regions.next("parse")
    for conn in conns:
        conn.receive_data(payload)
        requests.append(conn.next_event())
        conn.next_event()
    regions.next("prep")
    environs = []
    regions.next("environ")
    for request in requests:
        environs.append(main._environ(request))
    regions.next("prep")
    for env in environs:
        env["wsgi.input_terminated"] = True
    copies = [dict(env) for env in environs]
    regions.next("app")
    for env in environs:
        _consume(app, env)
    regions.next("prep")
    handlers = []
    for conn in conns:
        h = factory(sock, addr, None, None)
        h.conn = conn
        handlers.append(h)
    regions.next("app+response")
    for env, h in zip(copies, handlers):
        call_app(app, env, h)
    regions.next("prep")
    regions.next("full")
    for _ in range(n):
        main.on_readable()
    regions.next("prep")
    gc.enable()
    regions.next("full, gc on")
    for _ in range(n):
        main.on_readable()
    regions.next("teardown")
    client.close()
    sock.close()
    listener.close()


class _State:
    accepting = True

    def request_started(self, environ) -> None:
        pass

    def request_finished(self) -> None:
        pass


class _NoSocket:
    def fileno(self) -> int:
        return -1

    def close(self) -> None:
        pass

    def shutdown(self, how) -> None:
        pass


def _fcgi_loops(app, app_spec: str, path: str, n: int, regions: _Regions) -> None:
    import bridge.fastcgi.server as fs
    from bridge.fastcgi import protocol as fcgi
    from bridge.wsgi import call_app, make_environ
    server = fs.FastCGIServer(app, threads=THREADS, workers=1)
    payload = _fcgi_request(path, keep_conn=False)
    fs._readv = _fake_reader(payload)
    fs._writev = _fake_writev
    fs._write = lambda fd, data: len(data)
    state = _State()
    sock = _NoSocket()

    def one_connection() -> None:
        h = server.handler(sock, None, None, state)
        h.on_readable()
        h.close()
    for _ in range(200):
        one_connection()
    _gc_off()
    conns = [fcgi.ServerConnection(**server.conn_options) for _ in range(n)]
    ready = []
    regions.next("parse")
    for conn in conns:
        ready.append(conn.receive_data(payload)[0].request)
    regions.next("prep")
    handlers = []
    for conn in conns:
        h = server.handler(sock, None, None, state)
        h.conn = conn
        h.exchange = fs.Exchange(h, True)
        handlers.append(h)
    params = [dict(r.params) for r in ready]
    environs = []
    regions.next("environ")
    for p, request, h in zip(params, ready, handlers):
        fs.fix_script_name_and_path_info(p, server.script_name)
        env = make_environ(p, input=request.stdin, errors=h.exchange, multithread=server.multithread,
                           multiprocess=server.multiprocess, input_terminated=True)
        env["fastcgi.role"] = request.role_name
        environs.append(env)
    regions.next("prep")
    copies = [dict(env) for env in environs]
    regions.next("app")
    for env in environs:
        _consume(app, env)
    regions.next("prep")
    for request, h in zip(ready, handlers):
        h.exchange.start(request)
    regions.next("app+response")
    for env, h in zip(copies, handlers):
        call_app(app, env, h.exchange)
    regions.next("prep")
    regions.next("full")
    for _ in range(n):
        one_connection()
    regions.next("prep")
    gc.enable()
    regions.next("full, gc on")
    for _ in range(n):
        one_connection()
    regions.next("teardown")


def child_main(mode: str, app_spec: str, path: str, n: int) -> None:
    """The payload callgrind runs; prints the region labels as JSON."""
    from bridge.loader import load_app
    app = load_app(app_spec)
    regions = _Regions()
    (_http_loops if mode == "http" else _fcgi_loops)(app, app_spec, path, n, regions)
    print("REGIONS " + json.dumps(regions.labels), flush=True)


def child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = f"{SRC}:{APPS}"
    env.pop("PYTHONHOME", None)
    return env


def instructions(python: Path, mode: str, app_spec: str, path: str, n: int) -> dict:
    """Instructions per request per phase, from callgrind's dumps (see the module doc)."""
    out = Path(tempfile.mkdtemp(prefix="bridge-phases-cg-"))
    try:
        args = ["valgrind", "--tool=callgrind", "--dump-before=getppid",
                f"--callgrind-out-file={out}/cg.out", str(python), str(Path(__file__).resolve()),
                "--child", mode, app_spec, path, str(n)]
        result = subprocess.run(args, capture_output=True, text=True, env=child_env(), cwd=str(APPS),
                                timeout=1800, stdin=subprocess.DEVNULL)
        line = next((l for l in result.stdout.splitlines() if l.startswith("REGIONS ")), None)
        if result.returncode != 0 or line is None:
            raise RuntimeError(f"callgrind run failed ({result.returncode}): {result.stderr[-2000:]}")
        labels = json.loads(line[len("REGIONS "):])
        counts = {}
        for file in out.iterdir():
            text = file.read_text(errors="replace")
            part = re.search(r"^part: (\d+)$", text, re.M)
            total = re.search(r"^summary: (\d+)$", text, re.M) or re.search(r"^totals: (\d+)$", text, re.M)
            if part and total:
                counts[int(part[1])] = int(total[1])
        per = {}
        for index, label in enumerate(labels, start=1):
            if label not in ("setup", "prep", "teardown"):
                per[label] = counts[index] / n
        per["response"] = per["app+response"] - per["app"]
        per["glue"] = per["full"] - per["parse"] - per["environ"] - per["app+response"]
        per["gc"] = per["full, gc on"] - per["full"]
        return {"n": n, "per_request": per, "command": " ".join(args)}
    finally:
        for file in out.iterdir():
            file.unlink()
        out.rmdir()


# --------------------------------------------------------------------------
# Part 1: the live server


def user_sys_seconds(pids: list) -> tuple:
    """(user, system) CPU seconds so far of ``pids``, all threads (/proc/PID/stat)."""
    tick = os.sysconf("SC_CLK_TCK")
    user = system = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2:].split()   # the name may hold spaces
        user += int(fields[11])
        system += int(fields[12])
    return user / tick, system / tick


def _task_switches(pid: int) -> tuple:
    voluntary = involuntary = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0, 0
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for row in f:
                    if row.startswith("voluntary_ctxt_switches:"):
                        voluntary += int(row.split()[1])
                    elif row.startswith("nonvoluntary_ctxt_switches:"):
                        involuntary += int(row.split()[1])
        except OSError:
            pass
    return voluntary, involuntary


class Live:
    """A bridge server (and its nginx in fcgi mode) running the app under test."""

    def __init__(self, python: Path, mode: str, app_spec: str, path: str) -> None:
        sys.path.insert(0, str(HERE))
        import servers
        from procs import public_dir
        self.work = public_dir("bridge-phases-")
        for sub in ("logs", "apps"):
            (self.work / sub).mkdir(mode=0o755)
        self.ctx = servers.Context(python=python, work=self.work, apps=APPS, bin=self.work, logs=self.work / "logs")
        self.server = self.nginx = None
        try:
            self._start(servers, python, mode, app_spec, path)
        except BaseException:
            self.stop()     # nothing the run started may outlive it
            raise

    def _start(self, servers, python: Path, mode: str, app_spec: str, path: str) -> None:
        from procs import Proc, children, free_port, port_open, wait_until
        env = child_env()
        args = [python, "-m", "bridge", mode, app_spec, "--threads", THREADS]
        if mode == "fcgi":
            sock = self.work / "bridge.sock"
            args += ["--bind", f"unix:{sock}", "--socket-mode", "0666"]
            self.server = Proc(args, log=self.work / "logs" / "bridge.log", env=env, cwd=str(APPS))
            wait_until(sock.exists, 30, self.server, "bridge fcgi")
            block = servers.fill((servers.CONF / "fastcgi.conf").read_text(), upstream=f"unix:{sock}",
                                 keepalive="", keep_conn="")
            self.nginx = servers.Nginx(self.ctx, block, "phases")
            self.url = f"{self.nginx.url}{path}"
            kids = children(self.nginx.proc.pid)
            self.nginx_pids = kids or [self.nginx.proc.pid]
        else:
            port = free_port()
            args += ["--bind", f"127.0.0.1:{port}"]
            self.server = Proc(args, log=self.work / "logs" / "bridge.log", env=env, cwd=str(APPS))
            wait_until(lambda: port_open(port), 30, self.server, "bridge http")
            self.url = f"http://127.0.0.1:{port}{path}"
            self.nginx_pids = []
        self.command = " ".join(str(a) for a in args)
        kids = children(self.server.pid)
        self.pid = kids[0] if len(kids) == 1 else self.server.pid
        self._check()

    def _check(self) -> None:
        import urllib.request
        with urllib.request.urlopen(self.url, timeout=10) as response:
            if response.status != 200:
                raise RuntimeError(f"{self.url} answered {response.status}")

    def stop(self) -> None:
        import shutil
        if self.nginx is not None:
            self.nginx.stop()
        if self.server is not None:
            self.server.stop()
        shutil.rmtree(self.work, ignore_errors=True)


def _wrk(url: str, seconds: float, wrapper: list | None = None) -> tuple:
    """(requests completed, requests/s, the command) of one wrk run, optionally under ``wrapper``."""
    args = ["wrk", "-t", "2", "-c", str(CONNECTIONS), "-d", f"{seconds:g}s", "--timeout", "2s", url]
    result = subprocess.run([*(wrapper or []), *args], capture_output=True, text=True,
                            timeout=seconds + 120, stdin=subprocess.DEVNULL)
    m = re.search(r"(\d+) requests in ([\d.]+)(m?s)", result.stdout)
    if not m:
        raise RuntimeError(f"wrk failed: {result.stdout[-500:]} {result.stderr[-500:]}")
    elapsed = float(m[2]) / (1000 if m[3] == "ms" else 1)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: .*", result.stdout)
    if errors:
        raise RuntimeError(f"wrk saw errors: {errors[0]}")
    return int(m[1]), int(m[1]) / elapsed, " ".join(args), result


def measure_cpu(live: Live, seconds: float) -> dict:
    from procs import cpu_seconds
    (u0, s0), nginx0 = user_sys_seconds([live.pid]), cpu_seconds(live.nginx_pids)
    v0, i0 = _task_switches(live.pid)
    requests, rps, command, _ = _wrk(live.url, seconds)
    (u1, s1), nginx1 = user_sys_seconds([live.pid]), cpu_seconds(live.nginx_pids)
    v1, i1 = _task_switches(live.pid)
    return {"requests": requests, "rps": rps, "wrk": command,
            "cpu_us": (u1 - u0 + s1 - s0) / requests * 1e6,
            "user_us": (u1 - u0) / requests * 1e6, "sys_us": (s1 - s0) / requests * 1e6,
            "nginx_cpu_us": (nginx1 - nginx0) / requests * 1e6 if live.nginx_pids else None,
            "voluntary": (v1 - v0) / requests, "involuntary": (i1 - i0) / requests}


def measure_syscalls(live: Live, seconds: float) -> dict:
    """System calls per request by kind: perf's tracepoint counts, else strace -c."""
    from procs import cpu_seconds
    out = live.work / "perf.csv"
    wrapper = ["perf", "stat", "-x", ",", "-o", str(out), "-e", "syscalls:sys_enter_*", "-p", str(live.pid), "--"]
    cpu0 = cpu_seconds([live.pid])
    try:
        requests, _, _, _ = _wrk(live.url, seconds, wrapper)
        counts = {}
        for row in out.read_text().splitlines():
            fields = row.split(",")
            if len(fields) > 2 and fields[0].strip().isdigit() and "sys_enter_" in fields[2]:
                if int(fields[0]):
                    counts[fields[2].split("sys_enter_", 1)[1]] = int(fields[0])
        if not counts:
            raise RuntimeError(f"perf counted nothing: {out.read_text()[-500:]}")
        tool = "perf stat -e 'syscalls:sys_enter_*' -p PID (tracepoint counts)"
    except (RuntimeError, OSError, FileNotFoundError) as exc:
        print(f"perf failed ({exc}); falling back to strace -c", file=sys.stderr)
        counts, requests = _strace_counts(live, seconds)
        tool = "strace -f -c -p PID (counts only; strace slows every call)"
    cpu1 = cpu_seconds([live.pid])
    return {"tool": tool, "requests": requests, "cpu_us_under_tool": (cpu1 - cpu0) / requests * 1e6,
            "per_request": {k: v / requests for k, v in sorted(counts.items(), key=lambda kv: -kv[1])}}


def _strace_counts(live: Live, seconds: float) -> tuple:
    out = live.work / "strace.txt"
    strace = subprocess.Popen(["strace", "-f", "-c", "-o", str(out), "-p", str(live.pid)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        requests, _, _, _ = _wrk(live.url, seconds)
    finally:
        strace.send_signal(signal.SIGINT)
        strace.wait(30)
    counts = {}
    for row in out.read_text().splitlines():
        fields = row.split()
        if len(fields) >= 5 and fields[0].replace(".", "").isdigit() and fields[-1] != "total":
            calls = fields[3]
            if calls.isdigit():
                counts[fields[-1]] = int(calls)
    return counts, requests


PYSPY_RATE = 500


def measure_profile(live: Live, python: Path, seconds: float) -> dict:
    """py-spy ``--gil`` samples, bucketed by phase: each phase's share of them.

    ``gil_us`` is py-spy's own estimate of Python time per request (a
    sample per 1/rate s, over the requests of the window): it leans high
    when deep stacks make each stop long, so the table scales the shares
    by the user CPU time /proc measured instead, and shows both.
    """
    from procs import cpu_seconds
    out = live.work / "pyspy.txt"
    spy = python.parent / "py-spy"
    args = [str(spy), "record", "--pid", str(live.pid), "--rate", str(PYSPY_RATE), "--gil",
            "--format", "raw", "--duration", str(int(seconds)), "--output", str(out)]
    load = subprocess.Popen(["wrk", "-t", "2", "-c", str(CONNECTIONS), "-d", f"{int(seconds) + 3}s",
                             "--timeout", "2s", live.url], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)
    try:
        time.sleep(0.5)
        cpu0, t0 = cpu_seconds([live.pid]), time.monotonic()
        spy_run = subprocess.run(args, capture_output=True, timeout=seconds + 60)
        cpu1, t1 = cpu_seconds([live.pid]), time.monotonic()
    finally:
        wrk_out, _ = load.communicate(timeout=seconds + 60)
    rps = re.search(r"Requests/sec:\s*([\d.]+)", wrk_out)
    if not out.exists() or not rps:
        raise RuntimeError(f"py-spy or wrk failed: {spy_run.stderr.decode(errors='replace')[-500:]} {wrk_out[-300:]}")
    rps = float(rps[1])
    stacks = parse_raw(out.read_text())
    shares = phase_shares(stacks, source_line)
    leaves: dict = {}
    for frames, count in stacks:
        if frames:
            f, p, l = frames[-1]
            phase = classify(frames, source_line)
            leaves.setdefault(phase, Counter())[f"{f} ({_bridge_path(p) or Path(p).name}:{l})"] += count
    samples = sum(shares.values())
    seconds_sampled = int(seconds)
    per_sample_us = 1e6 / PYSPY_RATE / (rps * seconds_sampled)
    cpu_us = (cpu1 - cpu0) / (rps * (t1 - t0)) * 1e6
    return {"samples": samples, "shares": dict(shares), "rps": rps, "cpu_us": cpu_us,
            "gil_us": samples * per_sample_us, "command": " ".join(args),
            "top_leaves": {phase: c.most_common(4) for phase, c in leaves.items()}}


# --------------------------------------------------------------------------
# Output


def render(result: dict) -> str:
    lines = []
    case = result["case"]
    lines.append(f"### bridge {case['mode']}, {case['app']} {case['path']} (1 process x {THREADS} threads, "
                 f"wrk -c{CONNECTIONS} keep-alive{', nginx in front, no keep-conn' if case['mode'] == 'fcgi' else ''})")
    lines.append("")
    cpu = result.get("cpu")
    if cpu:
        lines.append("| measure | per request |")
        lines.append("|---|---|")
        lines.append(f"| requests/s (this run, not a benchmark) | {cpu['rps']:.0f} |")
        lines.append(f"| server CPU, user + sys | {cpu['user_us']:.1f} + {cpu['sys_us']:.1f} = "
                     f"{cpu['cpu_us']:.1f} µs |")
        if cpu["nginx_cpu_us"] is not None:
            lines.append(f"| nginx worker CPU | {cpu['nginx_cpu_us']:.1f} µs |")
        lines.append(f"| context switches, voluntary / involuntary | {cpu['voluntary']:.2f} / {cpu['involuntary']:.2f} |")
        lines.append("")
    sc = result.get("syscalls")
    if sc:
        lines.append(f"System calls per request ({sc['tool']}; server CPU under it "
                     f"{sc['cpu_us_under_tool']:.1f} µs/request):")
        lines.append("")
        lines.append("| syscall | per request |")
        lines.append("|---|---|")
        total = 0.0
        for name, value in sc["per_request"].items():
            total += value
            if value >= 0.01:
                lines.append(f"| {name} | {value:.2f} |")
        lines.append(f"| **all** | **{total:.2f}** |")
        lines.append("")
    prof = result.get("profile")
    if prof and cpu:
        lines.append(f"Phases: py-spy --gil, {prof['samples']} samples at {PYSPY_RATE}/s; a phase's µs is its "
                     f"share of the samples times the user CPU per request ({cpu['user_us']:.1f} µs); the "
                     f"kernel's row is the system CPU per request:")
        lines.append("")
        lines.append("| phase | % of Python samples | µs/request |")
        lines.append("|---|---|---|")
        samples = prof["samples"] or 1
        for phase in PHASES:
            share = prof["shares"].get(phase, 0) / samples
            lines.append(f"| {phase} | {share * 100:.1f} | {share * cpu['user_us']:.1f} |")
        lines.append(f"| kernel: the syscalls' work (sys time) | | {cpu['sys_us']:.1f} |")
        lines.append("")
        lines.append(f"Check: the samples stand for {prof['gil_us']:.1f} µs/request of GIL time against "
                     f"{prof['cpu_us']:.1f} µs of CPU in their window ({prof['rps']:.0f} requests/s under py-spy).")
        lines.append("")
        lines.append("Hottest lines by phase (share of GIL samples):")
        lines.append("")
        for phase in PHASES:
            top = prof["top_leaves"].get(phase)
            if top:
                lines.append(f"- {phase}: " + "; ".join(f"`{leaf}` {count * 100 / samples:.1f} %"
                                                       for leaf, count in top[:3]))
        lines.append("")
    ins = result.get("instructions")
    if ins:
        per = ins["per_request"]
        lines.append(f"Instructions per request, in-process (callgrind, N={ins['n']}; no kernel, "
                     "no epoll loop, no thread hand-off):")
        lines.append("")
        lines.append("| phase | instructions/request | % of full |")
        lines.append("|---|---|---|")
        for label in ("parse", "environ", "app", "response", "glue", "full", "gc"):
            lines.append(f"| {label} | {per[label]:,.0f} | {per[label] * 100 / per['full']:.0f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        mode, app_spec, path, n = argv[1:5]
        child_main(mode, app_spec, path, int(n))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--app", default="benchapp:app")
    parser.add_argument("--path", default="/hello")
    parser.add_argument("--mode", choices=("http", "fcgi"), default="http")
    parser.add_argument("--seconds", type=float, default=4.0, help="each wrk run (default 4)")
    parser.add_argument("-n", type=int, default=0, help="requests per callgrind loop (default 1000, Flask 300)")
    parser.add_argument("--skip-live", action="store_true")
    parser.add_argument("--skip-instructions", action="store_true")
    parser.add_argument("--markdown", type=Path, help="also write the tables there")
    parser.add_argument("--json", type=Path, help="also write the raw figures there")
    args = parser.parse_args(argv)
    python = VENV_PYTHON
    if not python.exists():
        sys.path.insert(0, str(HERE))
        from benchenv import ensure_venv
        python = ensure_venv()
    result = {"case": {"mode": args.mode, "app": args.app, "path": args.path}}
    if not args.skip_live:
        live = Live(python, args.mode, args.app, args.path)
        try:
            result["server_command"] = live.command
            _wrk(live.url, 1)       # warm: threads started, caches filled
            result["cpu"] = measure_cpu(live, args.seconds)
            result["syscalls"] = measure_syscalls(live, args.seconds)
            result["profile"] = measure_profile(live, python, args.seconds)
        finally:
            live.stop()
    if not args.skip_instructions:
        n = args.n or (300 if "flask" in args.app or "django" in args.app else 1000)
        result["instructions"] = instructions(python, args.mode, args.app, args.path, n)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1, default=str))
    text = render(result)
    print(text)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
