"""bridge.server.logs: a reopen that fails is logged and survived (issue 21, item 5)."""
from __future__ import annotations

import logging
import os
import types

from bridge.http.accesslog import AccessLog
from bridge.server.logs import on_reopen, forget_reopen, reopen_logs, setup_logging


def config(path):
    return types.SimpleNamespace(error_log=str(path), log_level="info")


def test_error_log_reopen_that_fails_is_logged_to_the_old_file_and_raises_nothing(tmp_path):
    path = tmp_path / "error.log"
    logger = setup_logging(config(path))
    try:
        os.rename(path, tmp_path / "error.log.1")
        path.mkdir()                         # nothing can open it as a file, root included
        assert reopen_logs() is False
        logging.getLogger("bridge.server").info("still here")
        old = (tmp_path / "error.log.1").read_text()
        assert f"cannot reopen {path}" in old and "still writing to the file open before" in old
        assert "still here" in old
    finally:
        for h in list(logger.handlers):
            logger.removeHandler(h)
            h.close()


def test_access_log_reopen_that_fails_keeps_the_old_descriptor(tmp_path):
    err = tmp_path / "error.log"
    logger = setup_logging(config(err))
    access = AccessLog(str(tmp_path / "access.log"))
    on_reopen(access.reopen)
    try:
        os.rename(tmp_path / "access.log", tmp_path / "access.log.1")
        (tmp_path / "access.log").mkdir()
        assert reopen_logs() is False
        os.write(access.fd, b"line\n")
        assert (tmp_path / "access.log.1").read_text() == "line\n"
        assert f"cannot reopen {tmp_path / 'access.log'}" in err.read_text()
        os.rmdir(tmp_path / "access.log")
        assert reopen_logs() is True             # the next rotation works again
        os.write(access.fd, b"next\n")
        assert (tmp_path / "access.log").read_text() == "next\n"
    finally:
        forget_reopen(access.reopen)
        access.close()
        for h in list(logger.handlers):
            logger.removeHandler(h)
            h.close()


# -- as root with --user: no link followed, nothing but a regular file handed over -----------


import pytest  # noqa: E402

from bridge.server import logs  # noqa: E402


@pytest.fixture
def guarded():
    if os.geteuid() != 0:
        pytest.fail("this test needs root (the CI runs as root)")
    logs.set_workers_user(65534)
    yield
    logs.set_workers_user(None)
    logs._guarded[0] = False


def secret(tmp_path):
    target = tmp_path / "shadow"
    target.write_text("root only\n")
    target.chmod(0o600)
    return target


def test_guarded_open_refuses_a_link_and_leaves_its_target_alone(tmp_path, guarded):
    target = secret(tmp_path)
    os.symlink(target, tmp_path / "error.log")
    with pytest.raises(OSError):
        logs.open_log(str(tmp_path / "error.log"))
    st = target.stat()
    assert st.st_uid == 0 and st.st_mode & 0o777 == 0o600 and target.read_text() == "root only\n"


def test_guarded_open_refuses_a_second_name_of_another_file(tmp_path, guarded):
    target = secret(tmp_path)
    os.link(target, tmp_path / "error.log")
    with pytest.raises(OSError, match="single name"):
        logs.open_log(str(tmp_path / "error.log"))
    assert target.stat().st_uid == 0


def test_guarded_open_of_a_fifo_neither_hangs_nor_opens(tmp_path, guarded):
    os.mkfifo(tmp_path / "error.log")
    with pytest.raises(OSError):
        logs.open_log(str(tmp_path / "error.log"))


def test_guarded_open_hands_a_root_file_to_the_workers_user(tmp_path, guarded):
    path = tmp_path / "error.log"
    path.write_text("")
    path.chmod(0o400)
    fd = logs.open_log(str(path))
    os.close(fd)
    st = path.stat()
    assert st.st_uid == 65534 and st.st_mode & 0o600 == 0o600
