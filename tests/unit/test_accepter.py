"""The accepter (bridge.server.accepter): accept errors and arming, over real listeners."""
from __future__ import annotations

import errno
import logging
import select
import socket
import threading
import time

from bridge.server.accepter import RESOURCE_PAUSE, Accepter


class _Listener:
    name = "test"
    kind = "tcp"

    def __init__(self, sock) -> None:
        self.sock = sock


class _FailingSocket:
    def __init__(self, *errors) -> None:
        self.errors = list(errors)

    def accept(self):
        raise OSError(self.errors.pop(0), "failed")


def _accepter(listeners, lone=True):
    return Accepter(listeners, lone=lone, lock=threading.Lock(), log=logging.getLogger("test.accepter"))


def test_an_aborted_connection_is_skipped_and_the_next_one_tried():
    accepter = _accepter([])
    sock = _FailingSocket(errno.ECONNABORTED, errno.EAGAIN)
    assert accepter.accept(_Listener(sock), lambda: 0) is None
    assert sock.errors == []


def test_out_of_descriptors_pauses_accepting_for_a_while():
    accepter = _accepter([])
    assert accepter.accept(_Listener(_FailingSocket(errno.ENFILE)), lambda: 3) is None
    assert accepter.paused and accepter.resume_at > 0
    assert accepter.resume_at - RESOURCE_PAUSE <= time.monotonic()


def test_arm_pause_and_queued_over_a_real_listener():
    server = socket.create_server(("127.0.0.1", 0))
    client = None
    epoll, loop_epoll = select.epoll(), select.epoll()
    try:
        listener = _Listener(server)
        accepter = _accepter([listener], lone=False)
        accepter.open(epoll, loop_epoll)
        accepter.arm()
        assert not accepter.queued()
        client = socket.create_connection(server.getsockname())
        assert [fd for fd, _ in epoll.poll(5)] == [server.fileno()]
        assert accepter.queued()
        accepter.pause()
        assert accepter.paused and epoll.poll(0) == []
        sock, _ = accepter.accept(listener, lambda: 0)
        sock.close()
        assert accepter.accept(listener, lambda: 0) is None    # none waiting
    finally:
        if client is not None:
            client.close()
        epoll.close()
        loop_epoll.close()
        server.close()


def test_the_loop_listens_only_while_asked():
    server = socket.create_server(("127.0.0.1", 0))
    epoll, loop_epoll = select.epoll(), select.epoll()
    try:
        accepter = _accepter([_Listener(server)])
        accepter.open(epoll, loop_epoll)
        accepter.loop_listen(True)
        client = socket.create_connection(server.getsockname())
        assert [fd for fd, _ in loop_epoll.poll(5)] == [server.fileno()]
        accepter.pause()                    # pausing also stops the loop's accepting
        assert not accepter.loop_accepting and loop_epoll.poll(0) == []
        client.close()
    finally:
        epoll.close()
        loop_epoll.close()
        server.close()
