"""The start-up lines that say who may connect to a unix socket (issue 17).

nginx's EACCES on connect() is logged by nginx only; bridge never sees the
attempt.  So bridge says at start-up what the socket's mode and owner are,
whether the web server's user (www-data on Debian) may connect, and warns
when a root process with no --user serves a unix socket.
"""
from __future__ import annotations

import grp
import os
import pwd

import pytest

from bridge.server import listeners as listeners_module
from bridge.server.listeners import access_report, open_listeners
from support import public_tmpdir


@pytest.fixture
def sockdir():
    directory = public_tmpdir("bridge-sockaccess-")
    yield directory
    for entry in directory.iterdir():
        entry.unlink()
    directory.rmdir()


def report(directory, mode=None, group=None, user="someone"):
    opened = open_listeners([f"unix:{directory}/app.sock"], socket_mode=mode)
    try:
        if group is not None:
            os.chown(directory / "app.sock", -1, grp.getgrnam(group).gr_gid)
        return access_report(opened, user=user)
    finally:
        for listener in opened:
            listener.close()


def web_user():
    for name in listeners_module.WEB_SERVER_USERS:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    pytest.fail("no web server user (www-data) on this machine: install nginx first", pytrace=False)


def test_a_socket_only_its_owner_may_write_is_a_warning_naming_the_flags_that_fix_it(sockdir):
    if os.geteuid() != 0:
        pytest.fail("needs root to make a socket another user cannot open", pytrace=False)
    os.chmod(sockdir, 0o755)
    lines = report(sockdir, mode=0o644)
    [(level, text)] = lines
    assert level == "warning"
    assert text.startswith(f"unix:{sockdir}/app.sock: mode 0644, owner root:root; "
                           f"directory {sockdir}: mode 0755, owner root:root; ")
    assert f"{web_user().pw_name} (the web server's user) cannot connect" in text
    assert "--socket-mode 0660 --group " in text


def test_mode_0660_without_the_web_servers_group_is_still_refused(sockdir):
    lines = report(sockdir, mode=0o660)
    assert lines[0][0] == "warning" and "cannot connect" in lines[0][1]


def test_mode_0660_and_the_web_servers_group_may_connect(sockdir):
    group = grp.getgrgid(web_user().pw_gid).gr_name
    [(level, text)] = report(sockdir, mode=0o660, group=group)
    assert level == "info"
    assert f"mode 0660, owner root:{group}" in text and text.endswith(f"{web_user().pw_name} may connect")


def test_mode_0666_may_connect_but_not_through_a_closed_directory(sockdir):
    assert report(sockdir, mode=0o666)[0][0] == "info"
    os.chmod(sockdir, 0o700)
    [(level, text)] = report(sockdir, mode=0o666)
    assert level == "warning" and f"it may not enter {sockdir} (mode 0700, owner root:root)" in text


def test_mode_0666_in_a_0750_directory_of_the_web_servers_group_may_connect(sockdir):
    # docs/nginx.md's other way: the directory keeps everyone else out.
    os.chown(sockdir, -1, web_user().pw_gid)
    os.chmod(sockdir, 0o750)
    [(level, text)] = report(sockdir, mode=0o666)
    assert level == "info" and text.endswith(" may connect"), text
    os.chown(sockdir, -1, 0)
    [(level, text)] = report(sockdir, mode=0o666)
    assert level == "warning" and f"it may not enter {sockdir} (mode 0750" in text


def test_root_with_a_unix_socket_and_no_user_is_warned_once(sockdir, monkeypatch):
    monkeypatch.setattr(listeners_module.os, "geteuid", lambda: 0)
    lines = report(sockdir, mode=0o666, user=None)
    warnings = [text for level, text in lines if "running as root" in text]
    assert warnings == ["running as root with a unix socket and no --user: the app runs as root; "
                        "give it a user of its own (--user myproject) and the socket to the web "
                        "server's group (--group www-data)"]
    assert not [text for _, text in report(sockdir, mode=0o666, user="www-data") if "running as root" in text]
    monkeypatch.setattr(listeners_module.os, "geteuid", lambda: 1000)
    assert not [text for _, text in report(sockdir, mode=0o666, user=None) if "running as root" in text]


def test_tcp_listeners_get_no_line():
    opened = open_listeners(["127.0.0.1:0"])
    try:
        assert access_report(opened, user=None) == []
    finally:
        for listener in opened:
            listener.close()
