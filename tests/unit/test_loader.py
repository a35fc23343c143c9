"""The app loader: module:callable, module:factory(), module alone, where modules are found,
and one clear line (exit status 2) for every way APP can be wrong.

In-process tests drive bridge.loader.load_app; the exit-status tests run the
real command (``python -m bridge check APP``) in a subprocess.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from bridge.loader import AppLoadError, load_app
from support import bridge_command, bridge_env

APP_MODULE = textwrap.dedent('''\
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"from app"]

    application = app

    def make_app():
        return app

    def failing_factory():
        raise RuntimeError("factory exploded")

    not_callable = 42

    class Holder:
        inner = staticmethod(app)
''')


@pytest.fixture()
def isolated(tmp_path, monkeypatch):
    """A private sys.path, sys.modules and working directory for one test."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(sys, "modules", dict(sys.modules))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_module(directory, name="loadme", text=APP_MODULE):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.py").write_text(text)
    return directory


def test_module_colon_callable(isolated):
    write_module(isolated)
    assert load_app("loadme:app").__name__ == "app"


def test_module_colon_factory_call_builds_the_app(isolated):
    write_module(isolated)
    assert load_app("loadme:make_app()").__name__ == "app"


def test_module_alone_means_module_colon_application(isolated):
    write_module(isolated)
    assert load_app("loadme") is load_app("loadme:application")


def test_dotted_attribute_path(isolated):
    write_module(isolated)
    assert load_app("loadme:Holder.inner").__name__ == "app"


def test_package_module(isolated):
    write_module(isolated / "pkg" / "sub", "web")
    (isolated / "pkg" / "__init__.py").write_text("")
    (isolated / "pkg" / "sub" / "__init__.py").write_text("")
    assert load_app("pkg.sub.web:app").__name__ == "app"


def test_the_working_directory_is_on_sys_path(isolated):
    write_module(isolated)
    sys.path[:] = [p for p in sys.path if p not in ("", ".", str(isolated))]
    assert callable(load_app("loadme:app"))
    assert sys.path[0] == str(isolated)


def test_pythonpath_directories_are_searched(isolated):
    write_module(isolated / "elsewhere")
    write_module(isolated / "second", "other")
    assert callable(load_app("loadme:app", pythonpath=[str(isolated / "elsewhere")]))
    assert callable(load_app("other:app", pythonpath=["second"]))   # relative to the cwd


def test_chdir_changes_directory_and_puts_it_on_sys_path(isolated):
    write_module(isolated / "project")
    assert callable(load_app("loadme:app", chdir=str(isolated / "project")))
    import os
    assert os.getcwd() == str(isolated / "project")


@pytest.mark.parametrize("spec, message", [
    ("no_such_module_xyz:app", "module 'no_such_module_xyz' not found"),
    ("loadme:missing", "module 'loadme' has no attribute 'missing'"),
    ("loadme:not_callable", "not a callable WSGI application"),
    ("loadme:not_callable()", "is not callable, so it cannot be a factory"),
    ("loadme:failing_factory()", "factory loadme:failing_factory() raised RuntimeError: factory exploded"),
    ("bad-name:app", "is not module:callable"),
    ("loadme:1app", "is not module:callable"),
    ("", "no application given"),
])
def test_a_bad_app_is_one_clear_error(isolated, spec, message):
    write_module(isolated)
    with pytest.raises(AppLoadError) as info:
        load_app(spec)
    assert message in str(info.value).splitlines()[0]


def test_a_missing_dependency_of_the_app_is_not_reported_as_the_app_missing(isolated):
    write_module(isolated, text="import dependency_that_is_not_installed\napp = None\n")
    with pytest.raises(AppLoadError) as info:
        load_app("loadme:app")
    first = str(info.value).splitlines()[0]
    assert "importing 'loadme' failed" in first and "dependency_that_is_not_installed" in first
    assert "Traceback" in str(info.value)


def test_an_app_module_that_raises_on_import_reports_its_traceback(isolated):
    write_module(isolated, text="x = 1 / 0\n")
    with pytest.raises(AppLoadError) as info:
        load_app("loadme:app")
    assert "ZeroDivisionError" in str(info.value).splitlines()[0]
    assert "Traceback" in str(info.value)


def test_a_missing_chdir_is_one_clear_error(isolated):
    with pytest.raises(AppLoadError, match="cannot change to directory"):
        load_app("loadme:app", chdir=str(isolated / "nope"))


# --------------------------------------------------------------------------
# through the command: one line on stderr, exit status 2

def run_check(spec, cwd, *args):
    return subprocess.run(bridge_command("check", *args, spec), cwd=cwd, env=bridge_env(),
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("spec, message", [
    ("no_such_module_xyz:app", "bridge check: module 'no_such_module_xyz' not found"),
    ("loadme:missing", "bridge check: module 'loadme' has no attribute 'missing'"),
    ("loadme:not_callable", "bridge check: loadme:not_callable is an int, not a callable WSGI application"),
])
def test_command_with_a_bad_app_prints_one_line_and_exits_2(tmp_path, spec, message):
    write_module(tmp_path)
    proc = run_check(spec, tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [proc.stderr.strip()]          # exactly one line
    assert proc.stderr.strip().startswith(message)
    assert proc.stdout == ""


def test_command_with_a_failing_factory_exits_2_with_its_traceback(tmp_path):
    write_module(tmp_path)
    proc = run_check("loadme:failing_factory()", tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert lines[0] == "bridge check: factory loadme:failing_factory() raised RuntimeError: factory exploded"
    assert "Traceback (most recent call last):" in proc.stderr
    assert lines[-1] == "RuntimeError: factory exploded"


def test_command_finds_the_app_in_the_working_directory(tmp_path):
    write_module(tmp_path)
    assert run_check("loadme:app", tmp_path).returncode == 0


def test_command_pythonpath_and_chdir_options(tmp_path):
    write_module(tmp_path / "lib")
    write_module(tmp_path / "proj", "projapp")
    assert run_check("loadme:app", tmp_path, "--pythonpath", "lib").returncode == 0
    assert run_check("projapp:app", tmp_path, "--chdir", str(tmp_path / "proj")).returncode == 0
