"""Settings of ``bridge cgi --warm`` (declared once; the CLI, BRIDGE_* variables and docs come from here).

``bridge cgi --warm APP`` alone never loads these (bridge.main goes straight
to :mod:`bridge.warm`); they are for the full command line and the docs.
``run(APP, warm=True, ...)`` takes the same names as keyword arguments.
"""
from bridge.config import non_negative, positive_int, setting

C = ("cgi",)

setting("warm", "--warm", type=bool, default=False, commands=C, section="warm",
        help="relay each request to a FastCGI daemon that keeps the app loaded, started by the "
             "first request and gone after --warm-idle (docs/cgi.md, \"A warm app\")")
setting("warm_dir", "--warm-dir", metavar="DIR", commands=C, section="warm",
        help="directory (mode 0700, yours) for the daemon's socket, lock and log (default: "
             "$XDG_RUNTIME_DIR/bridge-warm, ~/.cache/bridge-warm or /tmp/bridge-warm-UID)")
setting("warm_idle", "--warm-idle", type=float, default=300.0, metavar="SECONDS", commands=C,
        section="warm", validate=non_negative,
        help="the daemon exits after this long without a request (0: never)")
setting("warm_threads", "--warm-threads", type=int, default=4, metavar="N", commands=C,
        section="warm", validate=positive_int, help="threads of the daemon (one process)")
