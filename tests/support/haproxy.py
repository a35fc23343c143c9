"""A private HAProxy for integration tests: its own config in a temp dir, foreground (-db), stopped by PID."""
from __future__ import annotations

from support import ROOT, Process, free_port, public_tmpdir, require_binary, wait_for_port

CONF = ROOT / "docs" / "haproxy" / "proxy-protocol.cfg"
TLS_CONF = ROOT / "docs" / "haproxy" / "proxy-protocol-tls.cfg"


class HAProxy:
    """docs/haproxy/proxy-protocol.cfg with its placeholders filled: ``port`` sends
    PROXY v1, ``port_v2`` v2, both on 127.0.0.1 and ::1, to ``backend``."""

    def __init__(self, backend: str, conf=CONF, check_ssl: bool = False, pem: str = "") -> None:
        self.port = free_port()
        self.port_v2 = free_port()
        self.directory = public_tmpdir("bridge-haproxy-")
        text = conf.read_text().replace("{port}", str(self.port)).replace("{port_v2}", str(self.port_v2))
        text = text.replace("{pem}", pem)
        self.conf = self.directory / "haproxy.cfg"
        text = text.replace("{backend}", backend)
        if check_ssl:     # bridge --certfile: the health checks speak TLS too
            text = text.replace(" inter 1s", " inter 1s check-ssl verify none")
        self.conf.write_text(text)
        self.process = Process([require_binary("haproxy"), "-db", "-f", str(self.conf)],
                               log=self.directory / "haproxy.log")
        try:
            wait_for_port(self.port, proc=self.process.proc)
            if "{port_v2}" in conf.read_text():
                wait_for_port(self.port_v2, proc=self.process.proc)
        except Exception:
            self.process.stop()
            raise RuntimeError(f"haproxy did not start:\n{self.process.output()}")

    def output(self) -> str:
        return self.process.output()

    def stop(self) -> None:
        self.process.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
