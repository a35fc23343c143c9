"""The access log: Apache LogFormat directives, escaping, reopen after rotation."""
from __future__ import annotations

import os
import re

import pytest

from bridge.http.accesslog import COMBINED, AccessLog, Record, compile_format


def record(**over) -> Record:
    environ = {"REMOTE_ADDR": "192.0.2.1", "REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": "/p",
               "QUERY_STRING": "a=1", "SERVER_PROTOCOL": "HTTP/1.1", "HTTP_REFERER": "http://r/",
               "HTTP_USER_AGENT": 'curl "8"', "REMOTE_USER": "bob", "SERVER_PORT": "80"}
    values = dict(environ=environ, status="200 OK", headers=[("Content-Type", "text/plain")],
                  bytes_sent=1234, start=1700000000.0, duration=0.0123, request_line="GET /p?a=1 HTTP/1.1")
    values.update(over)
    return Record(**values)


def format_with(fmt: str, rec: Record) -> str:
    return "".join(p if isinstance(p, str) else p(rec) for p in compile_format(fmt))


def test_combined_format_line():
    line = format_with(COMBINED, record())
    assert re.fullmatch(r'192\.0\.2\.1 - bob \[\d\d/Nov/2023:\d\d:\d\d:\d\d [+-]\d{4}\] "GET /p\?a=1 HTTP/1\.1" '
                        r'200 1234 "http://r/" "curl \\"8\\""', line), line


def test_directives():
    rec = record()
    assert format_with("%m %U%q %H %s %>s %B %b %D %T %p %{Content-Type}o %{X-None}i %%", rec) == \
        "GET /p?a=1 HTTP/1.1 200 200 1234 1234 12300 0 80 text/plain - %"
    assert format_with("%b", record(bytes_sent=0)) == "-"
    assert format_with("%{REMOTE_USER}e", rec) == "bob"


def test_control_characters_are_escaped():
    assert format_with("%r", record(request_line="GET /\x01\xe9 HTTP/1.1")) == "GET /\\x01\\xe9 HTTP/1.1"


@pytest.mark.parametrize("bad", ["%", "%Z", "%{Referer", "%{X}z"])
def test_bad_formats_are_refused_with_a_clear_message(bad):
    with pytest.raises(ValueError, match="access log format"):
        compile_format(bad)


def test_reopen_writes_to_a_new_file_after_rotation(tmp_path):
    path = tmp_path / "access.log"
    log = AccessLog(str(path), "%m %U")
    log.log(record())
    os.rename(path, tmp_path / "access.log.1")
    log.log(record(environ={"REQUEST_METHOD": "POST", "PATH_INFO": "/after-rename"}))
    log.reopen()
    log.log(record(environ={"REQUEST_METHOD": "PUT", "PATH_INFO": "/new"}))
    log.close()
    assert (tmp_path / "access.log.1").read_text() == "GET /p\nPOST /after-rename\n"
    assert path.read_text() == "PUT /new\n"
