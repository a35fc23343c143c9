"""gunicorn's names for the same settings, and its ``-k`` answered in one line (issue 17).

The aliases are extra flags of the one declaration (bridge.config.setting),
so --help, the parser and the docs' tables show them without a second rule.
"""
from __future__ import annotations

import subprocess

import pytest

from bridge.cli import build_parser
from support import bridge_command, bridge_env


def run(*args):
    return subprocess.run(bridge_command(*args), env=bridge_env(), capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("args, name, value", [
    (["--access-logfile", "/tmp/a.log"], "access_log", "/tmp/a.log"),
    (["--error-logfile", "/tmp/e.log"], "error_log", "/tmp/e.log"),
    (["--log-file", "/tmp/e.log"], "error_log", "/tmp/e.log"),
    (["-c", "/etc/b.toml"], "config", "/etc/b.toml"),
    (["--check-config"], "check_config", True),
    (["-w", "3"], "workers", "3"),
    (["-b", "127.0.0.1:1"], "bind", ["127.0.0.1:1"]),
])
def test_gunicorns_flag_sets_the_same_setting(args, name, value):
    parsed = build_parser().parse_args(["http", "bridge.demo:app", *args])
    assert getattr(parsed, name) == value


def test_the_aliases_are_in_help():
    out = run("http", "--help").stdout
    for flag in ("--access-logfile", "--error-logfile", "--log-file", "--check-config", "-c FILE",
                 "--config FILE", "-k [CLASS], --worker-class [CLASS]"):
        assert flag in out, flag


@pytest.mark.parametrize("command", ["http", "fcgi"])
@pytest.mark.parametrize("args", [["-k", "gevent"], ["--worker-class", "sync"], ["--worker-class=gthread"], ["-k"]])
def test_worker_class_is_answered_in_one_line_not_a_usage_dump(command, args):
    proc = run(command, "bridge.demo:app", *args)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "usage:" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith(f"bridge {command}: {args[0].split('=')[0]}")
    assert "one worker model" in proc.stderr and "--workers" in proc.stderr and "--threads" in proc.stderr
