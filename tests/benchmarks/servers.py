"""The servers of the benchmark: private nginx and Apache, bridge and its peers.

Each peer is started the way its own documentation shows, with the same
app (apps/benchapp.py, or a realistic app of apps/: ``module:app`` is a
parameter of every start), the same process count and, where it has
threads, the same thread count.  A peer that cannot start is reported missing; the
run goes on.
"""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import load
from benchenv import which
from procs import Proc, free_port, port_open, public_dir, run, wait_until

HERE = Path(__file__).resolve().parent
CONF = HERE / "conf"
THREADS = 4  # threads per process for every server that has threads
HELLO = b"Hello, world!\n"
APP = "benchapp:app"  # the default app; every app of apps/ answers /hello with HELLO


def fill(template: str, **values) -> str:
    """``{name}`` placeholders replaced (nginx's own braces are left alone)."""
    for key, value in values.items():
        template = template.replace("{" + key + "}", str(value))
    return template


@dataclass
class Context:
    python: Path          # the venv interpreter every Python server runs on
    work: Path            # public temp dir of this run
    apps: Path            # copy of apps/ that nobody/www-data can read
    bin: Path             # compiled C programs
    logs: Path
    built: dict = field(default_factory=dict)  # name -> path or error

    def env(self) -> dict:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(self.apps)
        env["PYTHONUNBUFFERED"] = "1"
        env.pop("PYTHONHOME", None)
        return env

    def venv_bin(self, name: str) -> Path:
        return self.python.parent / name


def make_context(python: Path) -> Context:
    work = public_dir("bridge-bench-")
    apps = work / "apps"
    shutil.copytree(HERE / "apps", apps, ignore=shutil.ignore_patterns("__pycache__"))
    for path in [apps, *apps.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    (work / "bin").mkdir(mode=0o755)
    (work / "logs").mkdir(mode=0o755)
    ctx = Context(python=python, work=work, apps=apps, bin=work / "bin", logs=work / "logs")
    build_native(ctx)
    return ctx


def build_native(ctx: Context) -> None:
    cc = which("cc") or which("gcc")
    builds = {"fcgi_hello": (HERE / "native" / "fcgi_hello.c", ["-lfcgi"]),
              "hello-c": (HERE / "native" / "cgi_hello.c", []),
              "fairload": (HERE / "native" / "fairload.c", ["-lpthread"])}
    for name, (source, libs) in builds.items():
        if cc is None:
            ctx.built[name] = "no C compiler (apt-get install gcc)"
            continue
        out = ctx.bin / name
        result = run([cc, "-O2", "-o", out, source, *libs], check=False, timeout=120)
        if result.returncode == 0:
            out.chmod(0o755)
            ctx.built[name] = out
        else:
            hint = " (apt-get install libfcgi-dev)" if "-lfcgi" in libs else ""
            ctx.built[name] = f"build failed{hint}: {result.stderr.strip().splitlines()[-1:]}"


# --- nginx and Apache --------------------------------------------------------


class FrontEnd:
    """What the nginx and Apache front ends share: their error log and stop."""

    def error_log_size(self) -> int:
        try:
            return (self.dir / "error.log").stat().st_size
        except OSError:
            return 0

    def error_log_since(self, offset: int) -> str:
        try:
            with open(self.dir / "error.log", "rb") as f:
                f.seek(offset)
                return f.read(4_000_000).decode(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        self.proc.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Nginx(FrontEnd):
    def __init__(self, ctx: Context, server_block: str, name: str) -> None:
        self.dir = public_dir("bridge-bench-nginx-")
        for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (self.dir / sub).mkdir()
            (self.dir / sub).chmod(0o777)
        self.port = free_port()
        conf = self.dir / "nginx.conf"
        conf.write_text(fill((CONF / "nginx.conf").read_text(), dir=self.dir,
                             server=fill(server_block, port=self.port, conf=CONF)))
        self.conf_text = conf.read_text()
        binary = which("nginx")
        if binary is None:
            raise RuntimeError("nginx is not installed (apt-get install nginx)")
        self.proc = Proc([binary, "-c", conf, "-p", self.dir, "-e", self.dir / "error.log"],
                         log=ctx.logs / f"nginx-{name}.log")
        wait_until(lambda: port_open(self.port), 15, self.proc, "nginx")
        self.url = f"http://127.0.0.1:{self.port}"


class Apache(FrontEnd):
    def __init__(self, ctx: Context) -> None:
        binary = which("apache2") or which("httpd")
        if binary is None:
            raise RuntimeError("Apache is not installed (apt-get install apache2)")
        self.dir = public_dir("bridge-bench-apache-")
        self.port = free_port()
        cgi_bin = self.dir / "cgi-bin"
        cgi_bin.mkdir(mode=0o755)
        self.scripts: dict[str, str] = {}   # name -> path under /cgi-bin/, or why missing
        for source in sorted((HERE / "cgi-bin").iterdir()):
            target = cgi_bin / source.name
            target.write_text(fill(source.read_text(), python=ctx.python, apps=ctx.apps))
            target.chmod(0o755)
        if isinstance(ctx.built.get("hello-c"), Path):
            shutil.copy(ctx.built["hello-c"], cgi_bin / "hello-c")
            (cgi_bin / "hello-c").chmod(0o755)
        self.cgi_bin = cgi_bin
        conf = self.dir / "httpd.conf"
        conf.write_text(fill((CONF / "apache.conf").read_text(), dir=self.dir, port=self.port))
        self.proc = Proc([binary, "-d", self.dir, "-f", conf, "-DFOREGROUND"],
                         log=ctx.logs / "apache.log", env={"PATH": os.environ.get("PATH", ""), "LANG": "C"})
        wait_until(lambda: port_open(self.port), 20, self.proc, "Apache")
        self.url = f"http://127.0.0.1:{self.port}"


# --- the peers ---------------------------------------------------------------

@dataclass
class Launched:
    proc: Proc
    command: str

    def worker_pids(self) -> list[int]:
        """The processes that run the app: a master's children, or the process itself."""
        from procs import children
        if self.proc.extra_pids:
            return list(self.proc.extra_pids)
        kids = children(self.proc.pid)
        return kids or [self.proc.pid]


@dataclass
class Peer:
    name: str
    mode: str                      # "fcgi" or "http"
    workers: tuple                 # the worker counts it runs with
    start: Callable                # (ctx, workers, bind, app) -> Launched; bind is a socket path or a port
    bridge: bool = False
    ceiling: bool = False          # a reference, not a ratio baseline
    description: str = ""
    apps: bool = False             # serves any WSGI app (module:app), not only benchapp's routes


def _python_server(ctx: Context, name: str, args: list) -> Launched:
    proc = Proc(args, log=ctx.logs / f"{name}.log", env=ctx.env(), cwd=str(ctx.apps))
    return Launched(proc, " ".join(str(a) for a in args))


def _bridge_args(ctx: Context, command: str, workers: int, bind: str, app: str) -> list:
    args = [ctx.python, "-m", "bridge", command, app, "--bind", bind, "--threads", THREADS]
    if command == "fcgi":
        args += ["--socket-mode", "0666"]
    if workers > 1:
        args += ["--workers", workers]
    return args


def start_bridge_fcgi(ctx, workers, sock, app=APP):
    return _python_server(ctx, "bridge-fcgi", _bridge_args(ctx, "fcgi", workers, f"unix:{sock}", app))


def start_flup_threaded(ctx, workers, sock, app=APP):
    return _python_server(ctx, "flup-threaded", [ctx.python, ctx.apps / "flup_server.py", "threaded", sock, THREADS])


def start_flup_prefork(ctx, workers, sock, app=APP):
    return _python_server(ctx, "flup-prefork", [ctx.python, ctx.apps / "flup_server.py", "prefork", sock, workers])


def _uwsgi(ctx, workers, socket_option, app):
    binary = ctx.venv_bin("uwsgi")
    if not binary.exists():
        raise RuntimeError("uWSGI is not installed in the venv (pip install uwsgi needs gcc and python3-dev)")
    return [binary, *socket_option, "--master", "--processes", workers, "--threads", THREADS,
            "--module", app, "--pythonpath", ctx.apps, "--listen", "1024",
            "--disable-logging", "--die-on-term", "--need-app"]


def start_uwsgi_fcgi(ctx, workers, sock, app=APP):
    return _python_server(ctx, "uwsgi-fcgi", _uwsgi(ctx, workers, ["--fastcgi-socket", sock, "--chmod-socket=666"], app))


def start_libfcgi(ctx, workers, sock, app=APP):
    binary = ctx.built.get("fcgi_hello")
    if not isinstance(binary, Path):
        raise RuntimeError(f"the libfcgi responder is not built: {binary}")
    spawn = which("spawn-fcgi")
    if spawn is None:
        raise RuntimeError("spawn-fcgi is not installed (apt-get install spawn-fcgi)")
    pidfile = ctx.work / "spawn-fcgi.pid"
    pidfile.unlink(missing_ok=True)
    args = [spawn, "-s", sock, "-M", "0666", "-F", workers, "-P", pidfile, "--", binary]
    proc = Proc(args, log=ctx.logs / "libfcgi.log")
    proc.popen.wait(15)
    if proc.popen.returncode != 0:
        raise RuntimeError(f"spawn-fcgi failed: {proc.tail()}")
    proc.extra_pids = [int(p) for p in pidfile.read_text().split()]
    return Launched(proc, " ".join(str(a) for a in args))


def start_bridge_http(ctx, workers, port, app=APP):
    return _python_server(ctx, "bridge-http", _bridge_args(ctx, "http", workers, f"127.0.0.1:{port}", app))


def _gunicorn(ctx, workers, port, worker_class, app):
    binary = ctx.venv_bin("gunicorn")
    if not binary.exists():
        raise RuntimeError("gunicorn is not installed in the venv")
    args = [binary, "--workers", workers, "--worker-class", worker_class, "--bind", f"127.0.0.1:{port}",
            "--pythonpath", ctx.apps, "--log-level", "warning", app]
    if worker_class == "gthread":
        args[5:5] = ["--threads", THREADS]
    return args


def start_gunicorn_gthread(ctx, workers, port, app=APP):
    return _python_server(ctx, "gunicorn-gthread", _gunicorn(ctx, workers, port, "gthread", app))


def start_gunicorn_sync(ctx, workers, port, app=APP):
    return _python_server(ctx, "gunicorn-sync", _gunicorn(ctx, workers, port, "sync", app))


def start_waitress(ctx, workers, port, app=APP):
    binary = ctx.venv_bin("waitress-serve")
    if not binary.exists():
        raise RuntimeError("waitress is not installed in the venv")
    return _python_server(ctx, "waitress", [binary, "--host", "127.0.0.1", "--port", port,
                                            "--threads", THREADS, app])


def start_uwsgi_http(ctx, workers, port, app=APP):
    return _python_server(ctx, "uwsgi-http", _uwsgi(ctx, workers, ["--http11-socket", f"127.0.0.1:{port}"], app))


def start_granian(ctx, workers, port, app=APP):
    # WSGI apps run on granian's blocking threads: N processes x THREADS
    # threads, as every other peer (its Rust runtime's I/O thread aside).
    binary = ctx.venv_bin("granian")
    if not binary.exists():
        raise RuntimeError("granian is not installed in the venv (pip install granian)")
    return _python_server(ctx, "granian", [binary, "--interface", "wsgi", "--host", "127.0.0.1", "--port", port,
                                           "--workers", workers, "--blocking-threads", THREADS,
                                           "--no-access-log", "--log-level", "warning", app])


def start_wsgiref(ctx, workers, port, app=APP):
    return _python_server(ctx, "wsgiref", [ctx.python, ctx.apps / "wsgiref_server.py", port])


def start_nothing(ctx, workers, bind, app=APP):
    return None


PEERS = [
    Peer("nginx-return-200", "fcgi", (1,), start_nothing, ceiling=True,
         description="nginx answers itself (`return 200`): the absolute ceiling"),
    Peer("flup-threaded", "fcgi", (1,), start_flup_threaded,
         description="flup.server.fcgi.WSGIServer, one process, its default pool (a thread per connection)"),
    Peer("flup-prefork", "fcgi", (2,), start_flup_prefork,
         description="flup.server.fcgi_fork.WSGIServer, N single-threaded processes"),
    Peer("uwsgi", "fcgi", (1, 2), start_uwsgi_fcgi, apps=True,
         description=f"uWSGI --fastcgi-socket, N processes x {THREADS} threads"),
    Peer("libfcgi-c", "fcgi", (1, 2), start_libfcgi, ceiling=True,
         description="a C libfcgi responder under spawn-fcgi, N processes: the native horizon"),
    Peer("bridge", "fcgi", (1, 2), start_bridge_fcgi, bridge=True, apps=True,
         description=f"bridge fcgi, N processes x {THREADS} threads"),
    Peer("gunicorn-gthread", "http", (1, 2), start_gunicorn_gthread, apps=True,
         description=f"gunicorn -k gthread, N workers x {THREADS} threads"),
    Peer("gunicorn-sync", "http", (1, 2), start_gunicorn_sync,
         description="gunicorn -k sync, N workers"),
    Peer("waitress", "http", (1,), start_waitress,
         description=f"waitress-serve, one process, {THREADS} threads"),
    Peer("uwsgi", "http", (1, 2), start_uwsgi_http, apps=True,
         description=f"uWSGI --http11-socket, N processes x {THREADS} threads"),
    Peer("granian", "http", (1, 2), start_granian, apps=True,
         description=f"granian --interface wsgi (Rust), N processes x {THREADS} blocking threads"),
    Peer("wsgiref", "http", (1,), start_wsgiref,
         description="wsgiref.simple_server, one thread, HTTP/1.0"),
    Peer("bridge", "http", (1, 2), start_bridge_http, bridge=True, apps=True,
         description=f"bridge http, N processes x {THREADS} threads"),
]


class Running:
    """A peer with its nginx in front (FastCGI, or HTTP via proxy_pass), or alone (HTTP direct)."""

    def __init__(self, ctx: Context, peer: Peer, workers: int, variant: str, app: str = APP) -> None:
        self.peer, self.workers, self.variant, self.app = peer, workers, variant, app
        self.launched: Optional[Launched] = None
        self.nginx: Optional[Nginx] = None
        self.nginx_conf = ""
        tag = f"{peer.mode}-{peer.name}-w{workers}-{variant}-{app.split(':')[0]}"
        try:
            if peer.mode == "fcgi":
                if peer.ceiling and peer.start is start_nothing:
                    block = (CONF / "ceiling.conf").read_text()
                else:
                    sock = ctx.work / f"{tag}.sock"
                    self.launched = peer.start(ctx, workers, sock, app)
                    keep = variant == "keepconn"
                    block = fill((CONF / "fastcgi.conf").read_text(), upstream=f"unix:{sock}",
                                 keepalive="keepalive 32;" if keep else "",
                                 keep_conn="fastcgi_keep_conn on;" if keep else "")
                self.nginx = Nginx(ctx, block, tag)
                self.nginx_conf = self.nginx.conf_text
                self.port = self.nginx.port
            else:
                upstream = free_port()
                self.launched = peer.start(ctx, workers, upstream, app)
                if variant == "proxy":
                    self.nginx = Nginx(ctx, fill((CONF / "proxy.conf").read_text(), upstream_port=upstream), tag)
                    self.nginx_conf = self.nginx.conf_text
                    self.port = self.nginx.port
                else:
                    self.port = upstream
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        proc = self.launched.proc if self.launched and not self.launched.proc.extra_pids else None

        def ready() -> bool:
            try:
                status, body = load.get(self.port, "/hello", timeout=2)
            except OSError:
                return False
            return status == 200 and body == HELLO
        wait_until(ready, 30, proc, self.peer.name)

    @property
    def command(self) -> str:
        return self.launched.command if self.launched else "(nginx only)"

    def cpu_seconds(self) -> dict:
        """CPU time so far of the server's processes and of nginx's."""
        from procs import children, cpu_seconds
        out = {}
        if self.launched is not None:
            proc = self.launched.proc
            out["server"] = cpu_seconds(sorted({proc.pid, *children(proc.pid), *proc.extra_pids}))
        if self.nginx is not None:
            out["nginx"] = cpu_seconds([self.nginx.proc.pid, *children(self.nginx.proc.pid)])
        return out

    def log_tail(self) -> str:
        return self.launched.proc.tail() if self.launched else ""

    def error_log_size(self) -> int:
        return self.nginx.error_log_size() if self.nginx else 0

    def error_log_since(self, offset: int) -> str:
        return self.nginx.error_log_since(offset) if self.nginx else ""

    def stop(self) -> None:
        if self.nginx is not None:
            self.nginx.stop()
            self.nginx = None
        if self.launched is not None:
            self.launched.proc.stop()
            self.launched = None
        time.sleep(0.2)  # let sockets and CPU settle before the next peer
