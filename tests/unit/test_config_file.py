"""``--config FILE``: TOML keys are the declared settings; flag > BRIDGE_* > file > default.

In-process on bridge.config.Config.build (the rule lives there and in
bridge.configfile), plus the real command for the one-line error and exit 2.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bridge.config import Config, ConfigError
from support import bridge_command, bridge_env


def build(tmp_path, text, command="http", cli=None, env=None, name="bridge.toml"):
    path = tmp_path / name
    path.write_text(text)
    return Config.build(command, {"config": str(path), **(cli or {})}, environ=env or {})


def error_of(tmp_path, text, command="http", **kw) -> str:
    with pytest.raises(ConfigError) as info:
        build(tmp_path, text, command, **kw)
    message = str(info.value)
    assert "\n" not in message
    return message


# -- natural TOML forms ---------------------------------------------------------

def test_each_kind_of_setting_is_read_in_its_natural_toml_form(tmp_path):
    (tmp_path / "public").mkdir()
    config = build(tmp_path, f'''
app = "bridge.demo:app"
workers = 4
graceful_timeout = 5          # an int where a float is declared
gzip = true
bind = ["unix:/run/app/app.sock", "127.0.0.1:8001"]
static = {{"/static" = "{tmp_path / 'public'}"}}
limit_request_body = "10M"
socket_mode = 0o660
user = 33
''')
    assert config.app == "bridge.demo:app"
    assert config.workers == 4
    assert config.graceful_timeout == 5.0
    assert config.gzip is True
    assert config.bind == ["unix:/run/app/app.sock", "127.0.0.1:8001"]
    assert config.static == [("/static", str(tmp_path / "public"))]
    assert config.limit_request_body == 10 << 20
    assert config.socket_mode == 0o660
    assert config.user == "33"


def test_one_string_for_a_list_and_prefix_equals_strings_for_a_mapping_are_accepted(tmp_path):
    config = build(tmp_path, f'bind = "127.0.0.1:8001"\nstatic = ["/s={tmp_path}"]\nsocket_mode = "0660"\n')
    assert config.bind == ["127.0.0.1:8001"]
    assert config.static == [("/s", str(tmp_path))]
    assert config.socket_mode == 0o660


def test_a_mount_table_entry_may_list_backends_to_balance(tmp_path):
    config = build(tmp_path, '[http.mount]\n"/api" = ["fcgi://127.0.0.1:9001", "fcgi://127.0.0.1:9002"]\n'
                             '"/hello" = "bridge.demo:app"\n')
    assert config.mount == [("/api", "fcgi://127.0.0.1:9001"), ("/api", "fcgi://127.0.0.1:9002"),
                            ("/hello", "bridge.demo:app")]


def test_a_command_table_wins_over_the_top_and_other_commands_tables_are_left_alone(tmp_path):
    text = 'threads = 8\nkeepalive = 2\n[http]\nthreads = 16\n[fcgi]\nthreads = 2\nfcgi_max_body = "1M"\n'
    http = build(tmp_path, text, "http")
    fcgi = build(tmp_path, text, "fcgi")
    assert (http.threads, http.keepalive, http.origins["threads"]) == (16, 2.0, "file")
    assert (fcgi.threads, fcgi.fcgi_max_body) == (2, 1 << 20)
    assert not hasattr(fcgi, "keepalive")       # an http setting at the top: left to bridge http


def test_the_file_is_named_by_bridge_config_too(tmp_path):
    path = tmp_path / "b.toml"
    path.write_text("workers = 3\n")
    config = Config.build("http", {}, environ={"BRIDGE_CONFIG": str(path)})
    assert (config.workers, config.origins["workers"], config.config) == (3, "file", str(path))


# -- precedence, per kind of setting ----------------------------------------------

@pytest.mark.parametrize("name, file_text, env_value, flag_value, expected", [
    ("workers", "workers = 3", "5", "7", (7, 5, 3, 1)),
    ("gzip", "gzip = true", "no", True, (True, False, True, False)),
    ("bind", 'bind = ["127.0.0.1:3"]', "127.0.0.1:5", ["127.0.0.1:7"],
     (["127.0.0.1:7"], ["127.0.0.1:5"], ["127.0.0.1:3"], [])),
    ("static", 'static = {"/f" = "/"}', "/e=/", ["/c=/"],
     ([("/c", "/")], [("/e", "/")], [("/f", "/")], [])),
], ids=["scalar", "bool", "multiple", "mapping"])
def test_command_line_beats_environment_beats_file_beats_default(tmp_path, name, file_text,
                                                                  env_value, flag_value, expected):
    env = {f"BRIDGE_{name.upper()}": env_value}
    flag = {name: flag_value}
    cases = [(flag, env, "flag"), ({}, env, "env"), ({}, {}, "file")]
    for (cli, environ, origin), want in zip(cases, expected):
        config = build(tmp_path, file_text + "\n", cli=cli, env=environ)
        assert (getattr(config, name), config.origins[name]) == (want, origin)
    default = Config.build("http", {}, environ={})
    assert (getattr(default, name), default.origins[name]) == (expected[3], "default")


# -- every family of error: one line naming the file, the key and what is wrong ----------

@pytest.mark.parametrize("text, message", [
    ("wokers = 3", "{path}: wokers: unknown setting; did you mean 'workers'?"),
    ("access-log = '-'", "{path}: access-log: unknown setting; did you mean 'access_log'?"),
    ("accesslog = '-'", "{path}: accesslog: unknown setting; did you mean 'access_log'?"),
    ("[http]\nthreds = 2", "{path}: [http] threds: unknown setting; did you mean 'threads'?"),
    ("[htp]\nthreads = 2", "{path}: htp: unknown setting; did you mean 'http'?"),
    ("zzzzzz = 1", "{path}: zzzzzz: unknown setting"),
    ("[http]\nfcgi_max_body = 5", "{path}: [http] fcgi_max_body: not a setting of 'bridge http'"),
    ("config = 'other.toml'", "{path}: config: --config is given on the command line"),
    ("http = 5", "{path}: http: expected a table of settings"),
    ("worker_class = 'gevent'", "{path}: worker_class: unknown setting; bridge has one worker model"),
], ids=["typo", "dash", "gunicorn-name", "typo-in-table", "table-typo", "no-suggestion",
        "other-command", "per-invocation", "table-expected", "worker-class"])
def test_an_unknown_key_is_named_with_the_nearest_valid_name(tmp_path, text, message):
    got = error_of(tmp_path, text + "\n")
    assert got.startswith(message.format(path=tmp_path / "bridge.toml")), got


@pytest.mark.parametrize("text, message", [
    ('threads = "four"', "threads: expected a whole number, got the string 'four'"),
    ("threads = 2.5", "threads: expected a whole number, got the number 2.5"),
    ("threads = true", "threads: expected a whole number, got true"),
    ('gzip = "yes"', "gzip: expected true or false, got the string 'yes'"),
    ("keepalive = [1]", "keepalive: expected a number, got a list"),
    ("bind = 5.5", "bind: expected a list of strings, got the number 5.5"),
    ("bind = {a = 1}", "bind: expected a list of strings, got a table"),
    ("static = true", "static: expected a table such as"),
    ('static = {"/s" = 1}', "static: '/s': expected a string, got the number 1"),
    ("log_level = 3.0", "log_level: expected a string, got the number 3.0"),
    ("socket_mode = 660", "socket_mode: 660 is not a file mode"),
    ("[http]\ncertfile = []", "[http] certfile: expected a string, got a list"),
], ids=["string-for-int", "float-for-int", "bool-for-int", "string-for-bool", "list-for-float",
        "number-for-list", "table-for-list", "bool-for-mapping", "number-in-mapping",
        "number-for-string", "decimal-mode", "in-a-table"])
def test_a_value_of_the_wrong_type_is_named_with_what_was_expected(tmp_path, text, message):
    got = error_of(tmp_path, text + "\n")
    assert got.startswith(f"{tmp_path / 'bridge.toml'}: {message}"), got


@pytest.mark.parametrize("text, words", [
    ("workers = 0", ["workers", "at least 1"]),
    ('log_level = "loud"', ["log_level", "loud", "is not one of"]),
    ('static = {"/s" = "/no/such/dir"}', ["static", "is not a directory"]),
    ('static = {"s" = "/"}', ["static", "must start with '/'"]),
    ('limit_request_body = "lots"', ["limit_request_body", "lots"]),
    ("gzip_level = 12", ["gzip_level", "12"]),
], ids=["range", "choice", "missing-dir", "bad-prefix", "bad-size", "bad-level"])
def test_a_bad_value_names_the_file_and_the_key(tmp_path, text, words):
    got = error_of(tmp_path, text + "\n")
    assert got.startswith(str(tmp_path / "bridge.toml") + ": ")
    for word in words:
        assert word in got, got


def test_bad_toml_syntax_is_reported_with_its_line(tmp_path):
    got = error_of(tmp_path, "workers = 2\n\nthreads = \n")
    assert got.startswith(f"{tmp_path / 'bridge.toml'}: not valid TOML: ")
    assert "line 3" in got


def test_an_unreadable_file_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"missing\.toml: cannot read the config file: No such file"):
        Config.build("http", {"config": str(tmp_path / "missing.toml")}, environ={})
    with pytest.raises(ConfigError, match=r": cannot read the config file: Is a directory"):
        Config.build("http", {"config": str(tmp_path)}, environ={})
    (tmp_path / "latin1.toml").write_bytes(b"user = '\xe9'\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        Config.build("http", {"config": str(tmp_path / "latin1.toml")}, environ={})


def test_without_tomllib_the_message_says_what_to_install(tmp_path, monkeypatch):
    (tmp_path / "b.toml").write_text("workers = 2\n")
    monkeypatch.setitem(sys.modules, "tomllib", None)      # Python 3.10: import fails
    monkeypatch.setitem(sys.modules, "tomli", None)
    with pytest.raises(ConfigError) as info:
        Config.build("http", {"config": str(tmp_path / "b.toml")}, environ={})
    assert str(info.value) == (f"{tmp_path / 'b.toml'}: reading a config file needs Python 3.11 "
                               f"or later, or the tomli package on this Python (pip install tomli)")


def test_without_tomllib_tomli_is_used_when_installed(tmp_path, monkeypatch):
    # A stand-in with tomli's API (load, TOMLDecodeError): Python 3.10 has no
    # tomllib to lend, and the fallback must be proved on every Python CI runs.
    import types
    read = []

    def load(f):
        read.append(f.read())
        return {"workers": 2}
    tomli = types.ModuleType("tomli")
    tomli.load = load
    tomli.TOMLDecodeError = ValueError
    (tmp_path / "b.toml").write_text("workers = 2\n")
    monkeypatch.setitem(sys.modules, "tomllib", None)
    monkeypatch.setitem(sys.modules, "tomli", tomli)
    assert Config.build("http", {"config": str(tmp_path / "b.toml")}, environ={}).workers == 2
    assert read == [b"workers = 2\n"]


def test_without_a_config_file_neither_tomllib_nor_the_file_reader_is_imported():
    code = ("import sys; from bridge.config import Config; Config.build('http', {}, environ={}); "
            "print(sorted(m for m in ('tomllib', 'tomli', 'bridge.configfile') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], env=bridge_env(), capture_output=True,
                          text=True, timeout=60)
    assert proc.stdout.strip() == "[]", proc.stderr


def test_the_command_says_a_file_error_on_one_line_and_exits_2(tmp_path):
    (tmp_path / "b.toml").write_text("[http]\nwokers = 3\n")
    for args in (["-c", str(tmp_path / "b.toml")], ["--config", str(tmp_path / "b.toml")]):
        proc = subprocess.run(bridge_command("http", "bridge.demo:app", *args), env=bridge_env(),
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2
        assert proc.stderr == (f"bridge http: {tmp_path / 'b.toml'}: [http] wokers: unknown setting; "
                               f"did you mean 'workers'?\n")


def test_bridge_cgi_reads_the_file_named_by_bridge_config(tmp_path):
    (tmp_path / "b.toml").write_text('app = "bridge.demo:app"\n[cgi]\nscript_name = "/x"\n')
    env = bridge_env(BRIDGE_CONFIG=str(tmp_path / "b.toml"), GATEWAY_INTERFACE="CGI/1.1",
                     REQUEST_METHOD="GET", SERVER_PROTOCOL="HTTP/1.1", SERVER_NAME="example.org",
                     SERVER_PORT="80", SCRIPT_NAME="", PATH_INFO="/x/hello", QUERY_STRING="")
    proc = subprocess.run(bridge_command("cgi"), env=env, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(b"Status: 200 OK"), proc.stdout


# -- --check-config ------------------------------------------------------------------

def check_config(*args, env=None):
    return subprocess.run(bridge_command(*args, "--check-config"), env=bridge_env(**(env or {})),
                          capture_output=True, text=True, timeout=60)


def test_check_config_prints_every_setting_with_its_origin_and_exits_0(tmp_path):
    from bridge.config import load_declarations
    (tmp_path / "b.toml").write_text('app = "bridge.demo:app"\nworkers = 3\n[http]\nkeepalive = 2\n')
    proc = check_config("http", "-c", str(tmp_path / "b.toml"), "--threads", "6",
                        env={"BRIDGE_IO_TIMEOUT": "9"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    lines = {}
    for line in proc.stdout.splitlines()[1:-1]:
        left, _, origin = line.rpartition("  # ")
        name = left.lstrip("# ").split(" ")[0]
        lines[name] = (left.strip(), origin)
    http = [s.name for s in load_declarations().values() if "http" in s.commands and not s.flag_only]
    assert sorted(lines) == sorted(http)
    path = tmp_path / "b.toml"
    assert lines["app"] == ('app = "bridge.demo:app"', f"file {path}")
    assert lines["workers"] == ("workers = 3", f"file {path}")
    assert lines["keepalive"] == ("keepalive = 2.0", f"file {path}")
    assert lines["threads"] == ("threads = 6", "flag")
    assert lines["io_timeout"] == ("io_timeout = 9.0", "env BRIDGE_IO_TIMEOUT")
    assert lines["backlog"] == ("backlog = 2048", "default")
    assert lines["user"] == ("# user is not set", "default")
    # what http listens on without --bind, not an empty list
    assert lines["bind"] == ('bind = ["127.0.0.1:8000"]', "default")
    assert proc.stdout.splitlines()[-1] == "# bridge http: the settings are valid and the app loads"


def test_the_check_config_report_read_back_as_a_file_gives_the_same_settings(tmp_path):
    from bridge.config import load_declarations
    from bridge.configfile import report
    (tmp_path / "public").mkdir()
    config = Config.build("http", {"app": "bridge.demo:app", "socket_mode": "0640",
                                   "static": [f"/s={tmp_path / 'public'}"],
                                   "mount": ["/api=fcgi://127.0.0.1:9", "/api=fcgi://127.0.0.1:10"],
                                   "access_log_format": '%h "%r" \\ é'}, environ={})
    (tmp_path / "again.toml").write_text(report(config, load_declarations()))
    again = Config.build("http", {"config": str(tmp_path / "again.toml")}, environ={})
    for s in load_declarations().values():
        if "http" in s.commands and s.in_file:
            assert getattr(again, s.name) == getattr(config, s.name), s.name


@pytest.mark.parametrize("args, message", [
    (["nosuchmodule:app"], "module 'nosuchmodule' not found"),
    (["bridge.demo:app", "--certfile", "/no/such.pem"], "bridge http: cannot load --certfile"),
    (["bridge.demo:app", "--user", "nosuchuser"], "bridge http: --user nosuchuser: no such user"),
    (["bridge.demo:app", "--workers", "0"], "--workers"),
], ids=["app", "tls", "user", "setting"])
def test_check_config_exits_2_with_the_problem(args, message):
    proc = check_config("http", *args)
    assert proc.returncode == 2
    assert message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr


def test_check_config_is_a_command_line_flag_only():
    from bridge.config import SETTINGS, load_declarations, option_table
    load_declarations()
    config = Config.build("http", {}, environ={"BRIDGE_CHECK_CONFIG": "1"})
    assert config.check_config is False
    assert "BRIDGE_CHECK_CONFIG" not in option_table()
    assert not SETTINGS["check_config"].in_file


def test_what_a_terminal_would_act_on_is_quoted_in_a_message(tmp_path):
    got = error_of(tmp_path, '"\\u001b[31mred" = 1\n')
    assert "\x1b" not in got and "'\\x1b[31mred': unknown setting" in got


@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_a_number_that_is_not_finite_is_refused(tmp_path, value):
    got = error_of(tmp_path, f"timeout = {value}\n")
    assert f"timeout: expected a number, got the number {value}" in got


def test_arrays_nested_past_the_parsers_depth_are_one_line(tmp_path):
    got = error_of(tmp_path, "bind = " + "[" * 100000 + "]" * 100000 + "\n")
    assert "not valid TOML" in got


def test_reading_a_good_file_does_not_import_what_only_errors_need(tmp_path):
    (tmp_path / "b.toml").write_text("workers = 2\n")
    code = (f"import sys; from bridge.config import Config; "
            f"Config.build('http', {{'config': {str(tmp_path / 'b.toml')!r}}}, environ={{}}); "
            f"print('difflib' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], env=bridge_env(), capture_output=True,
                          text=True, timeout=60)
    assert proc.stdout.strip() == "False", proc.stderr


def test_a_config_file_other_users_can_change_is_named_with_the_reason(tmp_path):
    from bridge.configfile import others_can_write
    me = os.geteuid()
    safe = tmp_path / "safe"
    safe.mkdir()
    safe.chmod(0o755)
    good = safe / "bridge.toml"
    good.write_text("workers = 2\n")
    good.chmod(0o644)
    assert others_can_write(str(good), euid=me) is None
    good.chmod(0o646)
    assert "writable by every user" in others_can_write(str(good), euid=me)
    good.chmod(0o644)
    # Owned by someone who is neither root nor the server (as root: chown; else: another euid).
    other = 65534 if me == 0 else me
    if me == 0:
        os.chown(good, other, -1)
    assert f"owned by uid {other}" in others_can_write(str(good), euid=0 if me == 0 else me + 1)
    if me == 0:
        os.chown(good, 0, -1)
    # The directory (of the link or of its target) lets anyone replace the file.
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    (open_dir / "bridge.toml").symlink_to(good)
    assert f"{open_dir} is writable by every user" in others_can_write(str(open_dir / "bridge.toml"), euid=me)
    safe.chmod(0o777)
    assert f"{safe} is writable by every user" in others_can_write(str(good), euid=me)
