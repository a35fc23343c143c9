"""Every settings error is one line: ``bridge COMMAND: OPTION: what is wrong``, in the user's words.

Issue 17: the option and the value are named, one prefix for every message,
never Python's exception text ("invalid literal for int() with base 10"),
never argparse's usage dump.  One table of bad values per kind of setting,
checked in-process on :meth:`Config.build` (flag and ``BRIDGE_*`` forms),
then the same lines through the real command.
"""
from __future__ import annotations

import subprocess

import pytest

from bridge.config import Config, ConfigError, load_declarations
from bridge.logtext import counted
from support import bridge_command, bridge_env

#: (command, setting, bad value, the message for the flag form)
BAD_VALUES = [
    # int
    ("http", "threads", "zero", "--threads: 'zero' is not a whole number"),
    ("http", "threads", "1.5", "--threads: '1.5' is not a whole number"),
    ("http", "threads", "", "--threads: '' is not a whole number"),
    ("fcgi", "workers", "0", "--workers 0: must be at least 1"),
    ("http", "max_requests", "-3", "--max-requests -3: must not be negative"),
    # float
    ("http", "timeout", "abc", "--timeout: 'abc' is not a number"),
    ("http", "timeout", "nan", "--timeout: 'nan' is not a number"),
    ("http", "keepalive", "inf", "--keep-alive: 'inf' is not a number"),
    ("http", "graceful_timeout", "-1", "--graceful-timeout -1: must not be negative"),
    # size
    ("http", "limit_request_body", "10X", "--limit-request-body: '10X' is not a size in bytes "
                                          "such as 65536, 64k, 10M or 1G"),
    ("fcgi", "fcgi_max_params", "k", "--fcgi-max-params: 'k' is not a size in bytes "
                                     "such as 65536, 64k, 10M or 1G"),
    ("fcgi", "fcgi_max_body", "-1k", "--fcgi-max-body -1k: must not be negative"),
    # octal
    ("fcgi", "socket_mode", "999", "--socket-mode: '999' is not an octal file mode such as 0660"),
    ("fcgi", "socket_mode", "rw-rw----", "--socket-mode: 'rw-rw----' is not an octal file mode "
                                         "such as 0660"),
    ("fcgi", "socket_mode", "177777", "--socket-mode: '177777' is not an octal file mode such as 0660"),
    ("fcgi", "socket_mode", "-1", "--socket-mode: '-1' is not an octal file mode such as 0660"),
    # choices
    ("http", "log_level", "loud", "--log-level: 'loud' is not one of debug, info, warning, "
                                  "error, critical"),
    # a converter of its own
    ("http", "gzip_level", "x", "--gzip-level: 'x' is not a compression level from 1 to 9"),
    ("http", "gzip_level", "10", "--gzip-level: '10' is not a compression level from 1 to 9"),
    ("http", "static", "/s=/nonexistent-dir", "--static: '/nonexistent-dir' is not a directory"),
]

PYTHON_WORDS = ("invalid literal", "could not convert", "base 10", "base 8", "int()", "float()",
                "Traceback", "Error:")


def setting_flag(name: str) -> str:
    return load_declarations()[name].flags[0]


@pytest.mark.parametrize("command,name,raw,message", BAD_VALUES,
                         ids=[f"{n}={r!r}" for _, n, r, _ in BAD_VALUES])
def test_a_bad_flag_value_names_the_option_and_the_value(command, name, raw, message):
    setting = load_declarations()[name]
    given = [raw] if setting.multiple else raw
    with pytest.raises(ConfigError) as caught:
        Config.build(command, {name: given}, environ={})
    assert str(caught.value) == message
    assert not any(word in str(caught.value) for word in PYTHON_WORDS)


@pytest.mark.parametrize("command,name,raw,message", BAD_VALUES,
                         ids=[f"{n}={r!r}" for _, n, r, _ in BAD_VALUES])
def test_a_bad_environment_value_names_the_variable_and_the_value(command, name, raw, message):
    if raw == "":
        return          # an empty variable means "not set"
    setting = load_declarations()[name]
    with pytest.raises(ConfigError) as caught:
        Config.build(command, {}, environ={setting.env: raw})
    text = str(caught.value)
    flag = setting_flag(name)
    if message.startswith(flag + ":"):      # the value was not of the type: quoted after the name
        assert text == setting.env + message[len(flag):]
    else:                                   # a validator's verdict: NAME=value
        assert text == f"{setting.env}={message[len(flag) + 1:]}"


def test_a_bad_yes_or_no_in_the_environment_says_what_is_accepted():
    with pytest.raises(ConfigError) as caught:
        Config.build("http", {}, environ={"BRIDGE_GZIP": "maybe"})
    assert str(caught.value) == "BRIDGE_GZIP: 'maybe' is not yes or no (1/0, true/false, on/off)"


def test_a_value_that_could_hide_in_the_message_is_quoted():
    with pytest.raises(ConfigError) as caught:
        Config.build("fcgi", {"workers": "0"}, environ={"BRIDGE_THREADS": "0\x1b[2J"})
    assert "\x1b" not in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        Config.build("fcgi", {}, environ={"BRIDGE_WORKERS": " 0"})
    assert str(caught.value) == "BRIDGE_WORKERS=' 0': must be at least 1"


def test_a_scripts_run_keywords_are_named_as_the_script_wrote_them():
    # run(app, threads=0) under mod_fcgid: the script has no --threads flag.
    with pytest.raises(ConfigError) as caught:
        Config.build("fcgi", {"threads": 0}, environ={}, keywords=True)
    assert str(caught.value) == "run(): threads=0: must be at least 1"
    with pytest.raises(ConfigError) as caught:
        Config.build("fcgi", {"threads": "zero"}, environ={}, keywords=True)
    assert str(caught.value) == "run(): threads: 'zero' is not a whole number"


def test_a_scripts_run_keyword_that_is_no_setting_of_the_command_is_named():
    with pytest.raises(ConfigError) as caught:
        Config.build("fcgi", {"thread": 8}, environ={}, keywords=True)
    assert str(caught.value) == "run(): no setting named 'thread' (did you mean threads?)"
    with pytest.raises(ConfigError) as caught:
        Config.build("fcgi", {"access_log": "/x"}, environ={}, keywords=True)
    assert str(caught.value) == "run(): access_log is not a setting of bridge fcgi"


def test_good_values_still_convert():
    config = Config.build("fcgi", {"socket_mode": "0660", "fcgi_max_params": "64k", "threads": "8",
                                   "timeout": "2.5", "log_level": "debug"},
                          environ={"BRIDGE_FCGI_ERRORS_TO_LOG": "yes"})
    assert (config.socket_mode, config.fcgi_max_params, config.threads, config.timeout,
            config.log_level, config.fcgi_errors_to_log) == (0o660, 65536, 8, 2.5, "debug", True)


def run_bridge(*args, **env):
    return subprocess.run(bridge_command(*args), env=bridge_env(**env), capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("args,line", [
    (("http", "--threads", "zero", "bridge.demo:app"),
     "bridge http: --threads: 'zero' is not a whole number"),
    (("fcgi", "--socket-mode", "999", "bridge.demo:app"),
     "bridge fcgi: --socket-mode: '999' is not an octal file mode such as 0660"),
    (("check", "--log-level", "loud", "bridge.demo:app"),
     "bridge check: --log-level: 'loud' is not one of debug, info, warning, error, critical"),
    (("http", "--bogus", "bridge.demo:app"),
     "bridge http: unrecognized arguments: --bogus (see bridge http --help)"),
    (("http", "bridge.demo:app", "--threads"),
     "bridge http: argument --threads: expected one argument (see bridge http --help)"),
    (("http", "--status-path", "/s", "--status-allow", "bogus", "bridge.demo:app"),
     "bridge http: --status-allow 'bogus': not an address or network"),
    (("check", "no_such_module_here:app"),
     "bridge check: module 'no_such_module_here' not found (sys.path starts with "),
    # checked at start-up, still one line with the prefix
    (("http", "--bind", "127.0.0.1:0", "--user", "nosuchuser", "bridge.demo:app"),
     "bridge http: --user nosuchuser: no such user"),
    (("fcgi", "--bind", "127.0.0.1:0", "--group", "nosuchgroup", "bridge.demo:app"),
     "bridge fcgi: --group nosuchgroup: no such group"),
    (("http", "--bind", "127.0.0.1:0", "--gzip", "--gzip-types", "bad type", "bridge.demo:app"),
     "bridge http: --gzip-types: gzip type 'bad type' is not type/subtype"),
    (("fcgi", "--bind", "127.0.0.1:0", "--fcgi-web-server-addrs", "bogus", "bridge.demo:app"),
     "bridge fcgi: --fcgi-web-server-addrs: 'bogus' is not an IP address or network"),
    (("fcgi", "--bind", "127.0.0.1:0", "--workers", "2", "--fcgi-web-server-addrs", "10.0.0.0/99",
      "bridge.demo:app"),
     "bridge fcgi: --fcgi-web-server-addrs: '10.0.0.0/99' is not an IP address or network"),
    (("fcgi", "--bind", "127.0.0.1:0", "--user", "no such\x1b[2J", "bridge.demo:app"),
     "bridge fcgi: --user 'no such\\x1b[2J': no such user"),
    (("fcgi", "--bind", "127.0.0.1:0", "--error-log", "/nonexistent-dir/error.log", "bridge.demo:app"),
     "bridge fcgi: --error-log /nonexistent-dir/error.log: No such file or directory"),
    (("http", "--bind", "127.0.0.1:0", "--access-log", "/nonexistent-dir/a.log", "bridge.demo:app"),
     "bridge http: cannot open --access-log '/nonexistent-dir/a.log': No such file or directory"),
    (("http", "--bind", "127.0.0.1:0", "--certfile", "/nonexistent-dir/c.pem", "bridge.demo:app"),
     "bridge http: cannot load --certfile '/nonexistent-dir/c.pem': No such file or directory"),
    (("http", "--bind", "127.0.0.1:0", "--certfile", "/etc/hostname", "bridge.demo:app"),
     "bridge http: cannot load --certfile '/etc/hostname': not a usable PEM file"),
    (("http", "--bind", "127.0.0.1:0", "--workers-min", "3", "--workers-max", "2", "bridge.demo:app"),
     "bridge http: --workers-min 3 is more than --workers-max 2"),
])
def test_the_command_says_it_on_one_line_with_its_prefix(args, line):
    proc = run_bridge(*args)
    assert proc.returncode == 2
    assert proc.stderr.startswith(line), proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert "usage:" not in proc.stderr and "Traceback" not in proc.stderr


def test_a_bad_fcgi_web_server_addrs_variable_is_one_line_before_serving():
    proc = run_bridge("fcgi", "--bind", "127.0.0.1:0", "bridge.demo:app",
                      FCGI_WEB_SERVER_ADDRS="127.0.0.1,nope")
    assert (proc.returncode, proc.stderr) == (
        2, "bridge fcgi: FCGI_WEB_SERVER_ADDRS: 'nope' is not an IP address or network\n")


def test_an_environment_value_error_has_the_command_prefix_too():
    proc = run_bridge("http", "bridge.demo:app", BRIDGE_THREADS="zero")
    assert (proc.returncode, proc.stderr) == (2, "bridge http: BRIDGE_THREADS: 'zero' is not a whole number\n")


def test_a_server_that_served_one_request_says_1_request():
    import signal
    import urllib.request
    from support import Process, free_port, wait_for_port
    port = free_port()
    proc = Process(bridge_command("http", "--bind", f"127.0.0.1:{port}", "bridge.demo:app"),
                   env=bridge_env())
    try:
        wait_for_port(port, proc=proc.proc)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/hello", timeout=10) as resp:
            assert resp.status == 200
        # (wait_for_port's probe connection sent no request: it is not counted)
    finally:
        proc.stop(signal.SIGTERM)
    assert "Stopped (1 request served)" in proc.output(), proc.output()


def test_counts_in_log_lines_are_pluralised():
    assert [counted(n, "request") for n in (0, 1, 2)] == ["0 requests", "1 request", "2 requests"]
    assert counted(1, "process", "processes") == "1 process"
    assert counted(3, "process", "processes") == "3 processes"
