"""The ``bridge`` command: --help, --version, sub-commands, ``python -m bridge``, BRIDGE_* variables.

The command runs for real (``python -m bridge`` and the installed ``bridge``
console script) in a subprocess; settings precedence is also checked
in-process on bridge.config.Config.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

import bridge
from bridge.config import COMMANDS, Config, ConfigError, load_declarations
from support import bridge_command, bridge_env


def bridge_cli(*args, env=None, cwd=None):
    return subprocess.run(bridge_command(*args), env=env or bridge_env(), cwd=cwd,
                          capture_output=True, text=True, timeout=60)


def test_help_lists_every_sub_command():
    proc = bridge_cli("--help")
    assert proc.returncode == 0
    for command in ("cgi", "fcgi", "http", "check"):
        assert command in proc.stdout
    assert "BRIDGE_" in proc.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_each_sub_command_has_help_with_its_settings_and_their_variables(command):
    proc = bridge_cli(command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert "APP" in proc.stdout
    assert "--pythonpath" in proc.stdout and "BRIDGE_PYTHONPATH" in proc.stdout
    assert "--chdir" in proc.stdout and "BRIDGE_CHDIR" in proc.stdout


def test_version():
    proc = bridge_cli("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"wsgi-bridge {bridge.__version__}"


def test_the_console_script_is_the_same_command():
    script = shutil.which("bridge", path=os.path.dirname(sys.executable))
    assert script, f"no 'bridge' console script next to {sys.executable}: pip install -e . first"
    proc = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == f"wsgi-bridge {bridge.__version__}"


def test_no_sub_command_is_a_usage_error():
    proc = bridge_cli()
    assert proc.returncode == 2 and "COMMAND (see bridge --help)" in proc.stderr


def test_an_unknown_sub_command_is_a_usage_error():
    proc = bridge_cli("serve", "bridge.demo:app")
    assert proc.returncode == 2 and "invalid choice" in proc.stderr


def test_no_app_is_one_clear_line_and_status_2():
    proc = bridge_cli("check", env=bridge_env(BRIDGE_APP=""))
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("bridge check: no application given (APP is module:callable, "
                                   "e.g. bridge.demo:app)")


def test_check_sub_command_runs_the_demo_app():
    proc = bridge_cli("check", "bridge.demo:app")
    assert proc.returncode == 0, proc.stderr
    assert "GET / -> 200 OK" in proc.stdout and "no problems found" in proc.stdout


def test_app_from_the_bridge_app_variable():
    proc = bridge_cli("check", env=bridge_env(BRIDGE_APP="bridge.demo:app"))
    assert proc.returncode == 0, proc.stderr


def test_bridge_pythonpath_variable_is_a_comma_separated_list(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "envapp.py").write_text(
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [b'ok']\n")
    proc = bridge_cli("check", "envapp:app", env=bridge_env(BRIDGE_PYTHONPATH=f"{tmp_path / 'a'},{tmp_path / 'b'}"))
    assert proc.returncode == 0, proc.stderr


def test_an_invalid_setting_value_from_the_environment_is_a_usage_error():
    proc = bridge_cli("check", "bridge.demo:app", env=bridge_env(BRIDGE_LOG_LEVEL="loud"))
    assert proc.returncode == 2
    assert proc.stderr.startswith("bridge check: BRIDGE_LOG_LEVEL: 'loud' is not one of")


def test_command_line_beats_environment_beats_default():
    load_declarations()
    env = {"BRIDGE_LOG_LEVEL": "debug", "BRIDGE_CHDIR": "/srv"}
    config = Config.build("check", {"log_level": "error"}, environ=env)
    assert config.log_level == "error"          # command line
    assert config.chdir == "/srv"               # environment
    assert config.pythonpath == []              # default
    assert Config.build("check", {}, environ={}).log_level == "info"


def test_settings_of_other_commands_are_not_in_a_commands_config():
    config = Config.build("cgi", {}, environ={})
    assert not hasattr(config, "error_log")     # declared for fcgi/http only
    with pytest.raises(ConfigError):
        Config.build("check", {"log_level": "loud"}, environ={})
