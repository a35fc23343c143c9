"""The ``bridge`` command line, built from the declared settings.

Sub-commands: ``cgi``, ``fcgi``, ``http`` (serve APP) and ``check`` (try APP
once under a WSGI checker).  Each runner is imported only when chosen, so
``bridge cgi`` does not pay for the HTTP server's imports.
"""
from __future__ import annotations

import sys

from bridge import __version__
from bridge.config import COMMANDS, SERVERS, WORKER_MODEL, Config, ConfigError, load_declarations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional, Sequence

RUNNERS = {
    "cgi": ("bridge.cgi.gateway", "main", "run APP once as a CGI script (RFC 3875): environ from the CGI meta-variables, response on stdout"),
    "fcgi": ("bridge.fastcgi.server", "main", "serve APP over FastCGI behind nginx or Apache"),
    "http": ("bridge.http.server", "main", "serve APP over HTTP/1.1"),
    "check": ("bridge.check", "main", "load APP, send it one request (GET /, or --path/--method/--data/--header) under a WSGI checker, report what is wrong"),
}


def build_parser():
    import argparse

    class Parser(argparse.ArgumentParser):
        """argparse with bridge's one-line errors: ``bridge http: ...``, no usage dump.

        The usage text says nothing the message does not; ``--help`` is
        named instead.  A sub-command's parser has ``prog`` ``bridge http``,
        so its errors carry the command's prefix like every other message.
        """

        def error(self, message: str):
            self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")

    parser = Parser(
        prog="bridge",
        description="Serve a WSGI application as CGI, FastCGI or HTTP/1.1. "
                    "Every option can also be set as a BRIDGE_* environment variable.")
    parser.add_argument("--version", action="version", version=f"wsgi-bridge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    declarations = load_declarations()
    for command in COMMANDS:
        module, _, summary = RUNNERS[command]
        p = sub.add_parser(command, help=summary, description=summary)
        groups: dict = {}
        for s in declarations.values():
            if command not in s.commands:
                continue
            group = groups.get(s.section)
            if group is None:
                group = groups[s.section] = p.add_argument_group(s.section)
            facts = [] if s.flag_only else [f"env {s.env}"]
            if s.default not in (None, [], "", False):
                facts.append(f"default {s.default}")
            help_text = f"{s.help} [{', '.join(facts)}]" if facts else s.help
            help_text = help_text.replace("%", "%%")   # argparse %-formats help (log formats have %h...)
            if s.positional:
                group.add_argument(s.name, metavar=s.metavar or s.name.upper(), nargs="?",
                                   default=None, help=help_text)
            elif s.is_flag:
                group.add_argument(*s.flags, dest=s.name, action="store_const", const=True,
                                   default=None, help=help_text)
            elif s.multiple:
                group.add_argument(*s.flags, dest=s.name, action="append", default=None,
                                   metavar=s.metavar, help=help_text)
            else:
                group.add_argument(*s.flags, dest=s.name, default=None, metavar=s.metavar,
                                   help=help_text)
        if command in SERVERS:
            groups.get("processes", p).add_argument(
                "-k", "--worker-class", nargs="?", metavar="CLASS", action=worker_class_action(),
                help="gunicorn's option, answered with why bridge has none: one worker model, "
                     "--workers processes x --threads threads")
    return parser


def worker_class_action():
    """gunicorn's ``-k``/``--worker-class``: one line saying why there is none, exit 2.

    Rather than argparse's "unrecognized arguments" and its usage text, the
    person coming from gunicorn learns what to set instead.
    """
    import argparse

    class WorkerClass(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            given = f"{option_string} {values}" if values else option_string
            sys.stderr.write(f"{parser.prog}: {given}: {WORKER_MODEL}\n")
            raise SystemExit(2)
    return WorkerClass


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    command = args.command
    if unknown:
        return fail(command, f"unrecognized arguments: {' '.join(unknown)} (see bridge {command} --help)")
    values = {k: v for k, v in vars(args).items() if k != "command"}
    try:
        config = Config.build(command, values)
    except ConfigError as exc:
        return fail(command, str(exc))
    if not getattr(config, "app", None) and not getattr(config, "mount", None) and not getattr(config, "static", None):
        return fail(command, "no application given (APP is module:callable, e.g. bridge.demo:app)")
    module_name, func, _ = RUNNERS[command]
    if getattr(config, "check_config", False):
        from bridge.checkconfig import check_command
        return check_command(config, module_name)
    if command == "cgi" and getattr(config, "warm", False):
        module_name, func = "bridge.warm", "main"
    import importlib
    runner = getattr(importlib.import_module(module_name), func)
    try:
        return runner(config) or 0
    except KeyboardInterrupt:
        return 0


def fail(command: str, message: str) -> int:
    """Say what is wrong on one line with the one prefix, ``bridge COMMAND:``; exit status 2."""
    sys.stderr.write(f"bridge {command}: {message}\n")
    return 2
