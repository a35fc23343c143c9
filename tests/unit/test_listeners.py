"""Listening sockets: every --bind form, stale unix sockets, inherited descriptors."""
from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import textwrap

import pytest

from bridge.server.listeners import (BindError, NO_SOCKET_MESSAGE, open_listeners,
                                     parse_bind, set_socket_file)
from support import SRC


def close_all(listeners):
    for listener in listeners:
        listener.close()


def connects(listener) -> bool:
    with socket.socket(listener.sock.family, socket.SOCK_STREAM) as c:
        c.settimeout(5)
        c.connect(listener.sock.getsockname())
        return True


def test_unix_socket_gets_the_requested_mode_and_is_removed_on_close(tmp_path):
    path = tmp_path / "app.sock"
    [listener] = open_listeners([f"unix:{path}"], socket_mode=0o660)
    assert listener.kind == "unix" and listener.name == f"unix:{path}"
    assert stat.S_ISSOCK(os.stat(path).st_mode)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
    assert connects(listener)
    listener.close()
    assert not path.exists()


@pytest.mark.parametrize("swap", ["symlink", "hardlink", "regular file"])
def test_socket_mode_and_owner_never_reach_what_replaced_the_socket(tmp_path, swap):
    """A user owning the socket's directory swaps the socket between bind and chmod/chown."""
    target = tmp_path / "root-only"
    target.write_text("secret\n")
    target.chmod(0o600)
    path = tmp_path / "app.sock"
    if swap == "symlink":
        os.symlink(target, path)
    elif swap == "hardlink":
        os.link(target, path)
    else:
        path.write_text("x")
    with pytest.raises(OSError):
        set_socket_file(str(path), mode=0o666, uid=65534, gid=65534)
    st = os.stat(target)
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.geteuid()


def test_set_socket_file_changes_the_socket_itself(tmp_path):
    path = tmp_path / "app.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
        set_socket_file(str(path), mode=0o640, uid=-1, gid=os.getegid())
        assert stat.S_IMODE(os.lstat(path).st_mode) == 0o640


def test_stale_unix_socket_is_replaced(tmp_path):
    path = str(tmp_path / "app.sock")
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(path)           # left behind by a server that died: nobody listens
    dead.close()
    [listener] = open_listeners([f"unix:{path}"])
    assert connects(listener)
    listener.close()


def test_unix_socket_in_use_by_a_live_server_is_refused(tmp_path):
    path = tmp_path / "app.sock"
    [live] = open_listeners([f"unix:{path}"])
    try:
        with pytest.raises(BindError, match="in use by a running server"):
            open_listeners([f"unix:{path}"])
        assert connects(live)
    finally:
        live.close()


def test_existing_file_that_is_not_a_socket_is_refused_and_kept(tmp_path):
    path = tmp_path / "important.txt"
    path.write_text("keep me")
    with pytest.raises(BindError, match="not a socket; refusing to replace it"):
        open_listeners([f"unix:{path}"])
    assert path.read_text() == "keep me"


def test_unix_socket_in_missing_directory_says_so(tmp_path):
    with pytest.raises(BindError, match="directory does not exist"):
        open_listeners([f"unix:{tmp_path}/no/such/app.sock"])


def test_ipv4_and_ipv6_loopback_binds():
    listeners = open_listeners(["127.0.0.1:0", "[::1]:0"])
    try:
        v4, v6 = listeners
        assert v4.kind == v6.kind == "tcp"
        assert v4.name.startswith("127.0.0.1:") and v4.url() == "http://" + v4.name
        assert v6.name.startswith("[::1]:") and v6.sock.family == socket.AF_INET6
        assert connects(v4) and connects(v6)
    finally:
        close_all(listeners)


def test_ipv4_and_ipv6_wildcards_on_the_same_port_together():
    from support import free_port
    port = free_port()
    listeners = open_listeners([f"0.0.0.0:{port}", f"[::]:{port}"])
    try:
        assert [l.name for l in listeners] == [f"0.0.0.0:{port}", f"[::]:{port}"]
    finally:
        close_all(listeners)


def test_localhost_binds_what_the_name_resolves_to():
    listeners = open_listeners(["localhost:0"])
    try:
        assert listeners and all(l.kind == "tcp" for l in listeners)
        assert all(connects(l) for l in listeners)
    finally:
        close_all(listeners)


def test_several_binds_at_once(tmp_path):
    listeners = open_listeners(["127.0.0.1:0", f"unix:{tmp_path}/a.sock", "[::1]:0"])
    try:
        assert [l.kind for l in listeners] == ["tcp", "unix", "tcp"]
    finally:
        close_all(listeners)


def test_port_in_use_is_a_clear_error_and_nothing_stays_open(tmp_path):
    [busy] = open_listeners(["127.0.0.1:0"])
    try:
        with pytest.raises(BindError, match="another process listens there"):
            open_listeners([f"unix:{tmp_path}/first.sock", busy.name])
        assert not (tmp_path / "first.sock").exists()   # the first bind was undone
    finally:
        busy.close()


def test_fd_bind_adopts_an_open_socket():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))        # bound, not listening yet: adopted and put to listen
    fd = s.detach()
    [listener] = open_listeners([f"fd://{fd}"])
    try:
        assert listener.kind == "tcp" and connects(listener)
    finally:
        listener.close()


def test_fd_bind_of_a_non_socket_is_refused():
    r, w = os.pipe()
    try:
        with pytest.raises(BindError, match="is not a socket"):
            open_listeners([f"fd://{r}"])
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.parametrize("bind, message", [
    ("::1:8000", "brackets"),
    ("[::1]", "no port"),
    ("localhost", "no port"),
    ("127.0.0.1:http", "not a number"),
    ("127.0.0.1:70000", "out of range"),
    ("unix:", "needs a path"),
    ("fd://x", "file descriptor number"),
])
def test_malformed_binds_are_explained(bind, message):
    with pytest.raises(BindError, match=message):
        parse_bind(bind)


def test_bare_port_means_loopback_only():
    assert parse_bind("8000") == ("tcp", "127.0.0.1", 8000)


def run_child(code: str, **popen) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (own fd 0 / fd 3 / environment)."""
    env = dict(os.environ, PYTHONPATH=str(SRC))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=30, **popen)


def test_systemd_socket_activation_fds_from_3_are_used():
    result = run_child("""
        import os, socket
        from bridge.server.listeners import inherited_listeners
        a = socket.socket(); a.bind(("127.0.0.1", 0)); a.listen()
        b = socket.socket(socket.AF_UNIX); b.bind("\\0bridge-test-%d" % os.getpid()); b.listen()
        os.dup2(a.fileno(), 3); os.dup2(b.fileno(), 4)
        os.environ.update(LISTEN_FDS="2", LISTEN_PID=str(os.getpid()))
        ls = inherited_listeners()
        print([l.kind for l in ls], [l.sock.fileno() for l in ls], "LISTEN_FDS" in os.environ)
    """)
    assert result.stdout.strip() == "['tcp', 'unix'] [3, 4] False", result.stderr


def test_systemd_fds_meant_for_another_process_are_ignored():
    result = run_child("""
        import os
        from bridge.server.listeners import inherited_listeners
        os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getppid()))
        print(inherited_listeners())
    """, stdin=subprocess.DEVNULL)
    assert result.stdout.strip() == "[]", result.stderr


@pytest.mark.parametrize("family", ["unix", "inet"])
def test_listening_socket_on_fd_0_is_found(family):
    result = run_child(f"""
        import os, socket
        from bridge.server.listeners import listeners_for
        if "{family}" == "unix":
            s = socket.socket(socket.AF_UNIX); s.bind("\\0bridge-fd0-%d" % os.getpid())
        else:
            s = socket.socket(); s.bind(("127.0.0.1", 0))
        s.listen()
        os.dup2(s.fileno(), 0)
        [l] = listeners_for([])
        print(l.kind, l.inherited)
    """)
    expected = "unix True" if family == "unix" else "tcp True"
    assert result.stdout.strip() == expected, result.stderr


def test_no_bind_and_nothing_inherited_says_how_to_run_it():
    result = run_child("""
        from bridge.server.listeners import listeners_for, BindError
        try:
            listeners_for([])
        except BindError as exc:
            print(exc)
    """, stdin=subprocess.DEVNULL)
    out = result.stdout.strip()
    assert out == NO_SOCKET_MESSAGE
    assert "--bind" in out and "spawn-fcgi" in out and "systemd" in out
    assert "non-socket" not in out


def test_connected_socket_on_fd_0_is_not_mistaken_for_a_listener():
    result = run_child("""
        import os, socket
        from bridge.server.listeners import inherited_listeners
        a, b = socket.socketpair()
        os.dup2(a.fileno(), 0)
        print(inherited_listeners())
    """)
    assert result.stdout.strip() == "[]", result.stderr
