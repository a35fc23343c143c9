"""The sweep's schedule and choices (bridge.server.sweeper), over socket pairs."""
from __future__ import annotations

import socket

from bridge.server.pool import Connection
from bridge.server.sweeper import Sweeper, longest_idle


class _Handler:
    idle_deadline = None

    def close(self) -> None:
        pass


def test_sweeps_are_due_four_times_a_second_or_finer_for_short_idle_timeouts():
    assert Sweeper(None, 0.0).every == 0.25
    assert Sweeper(0.2, 0.0).every == 0.05
    assert Sweeper(0.001, 0.0).every == 0.02
    sweeper = Sweeper(None, 10.0)
    assert not sweeper.due(10.1)
    assert sweeper.due(10.25)
    assert not sweeper.due(10.3)        # the next one is 0.25 s after that
    assert sweeper.due(10.5)


def test_room_is_made_from_the_longest_idle_connections_without_input():
    pairs = [socket.socketpair() for _ in range(4)]
    try:
        conns = []
        for i, (server, _) in enumerate(pairs):
            conn = Connection(server, _Handler())
            conn.busy = False
            conn.idle_since = 100.0 - i     # the last one has been idle the longest
            conns.append(conn)
        conns[0].busy = True                # serving: never a candidate
        pairs[3][1].sendall(b"GET / HTTP/1.1\r\n")   # its next request arrived
        assert longest_idle(conns, limit=2) == [conns[2]]
        assert longest_idle(conns, limit=3) == [conns[2], conns[1]]
    finally:
        for a, b in pairs:
            a.close()
            b.close()


def test_room_is_never_made_from_a_connection_whose_handler_holds_a_request():
    pairs = [socket.socketpair() for _ in range(2)]
    try:
        conns = []
        for i, (server, _) in enumerate(pairs):
            conn = Connection(server, _Handler())
            conn.busy = False
            conn.idle_since = float(i)
            conns.append(conn)
        conns[0].handler.holds_request = True   # an upload arriving, no thread on it now
        assert longest_idle(conns) == [conns[1]]
    finally:
        for a, b in pairs:
            a.close()
            b.close()
