"""A fuzzing FastCGI client against a live ``bridge fcgi``.

Connections of a few kinds, mixed at random: well-formed requests (several
ids multiplexed, records cut at random bytes, random padding, GET_VALUES and
unknown types in between), aborted ones, truncated ones, and well-formed
starts that turn into garbage.  Bounded by a number of connections and
seconds (more with ``CI=true``, far more with ``BRIDGE_FUZZ=long``).

Checked: every well-formed request gets its response and END_REQUEST; a
connection that sent garbage is closed, and only that one (a well-formed
connection opened before it is served every 200 connections and at the
end); the server is still up
at the end and holds as many descriptors as before (/proc/PID/fd of the
server and its children).  The seed is in every failure message;
``BRIDGE_FUZZ_SEED=N`` replays it.
"""
from __future__ import annotations

import os
import random
import shutil
import socket
import struct
import time
from pathlib import Path

import pytest

from bridge.fastcgi import protocol as p
from support import public_tmpdir
from support.fastcgi import Client, get_params, parse_replies, start_bridge_fcgi

BUDGETS = {"dev": (100, 5.0), "ci": (1000, 30.0), "long": (100_000, 600.0)}


def budget() -> tuple:
    if os.environ.get("BRIDGE_FUZZ") == "long":
        return BUDGETS["long"]
    return BUDGETS["ci" if os.environ.get("CI", "").lower() == "true" else "dev"]


def process_tree(pid: int) -> list:
    out = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        for child in children:
            out += process_tree(int(child))
    return out


def descriptors(pid: int) -> int:
    total = 0
    for each in process_tree(pid):
        try:
            total += len(os.listdir(f"/proc/{each}/fd"))
        except FileNotFoundError:
            pass
    return total


@pytest.fixture(scope="module")
def server():
    tmp = public_tmpdir("bridge-fuzz-")
    sock = str(tmp / "app.sock")
    proc = start_bridge_fcgi(f"unix:{sock}", "--threads", "4", "--fcgi-max-params", "4k")
    yield type("Server", (), {"sock": sock, "proc": proc})
    proc.stop()
    shutil.rmtree(tmp, ignore_errors=True)


def record(rng: random.Random, rtype: int, request_id: int, content: bytes) -> bytes:
    padding = rng.choice([0, 0, -len(content) & 7, rng.randrange(256)])
    return struct.pack(">BBHHBB", 1, rtype, request_id, len(content), padding, 0) + content + bytes(padding)


def stream(rng: random.Random, rtype: int, request_id: int, data: bytes) -> list:
    """``data`` as records of ``rtype`` cut at random places, then the empty record."""
    out = []
    pos = 0
    while pos < len(data):
        n = rng.randint(1, max(1, len(data) - pos))
        out.append(record(rng, rtype, request_id, data[pos:pos + n]))
        pos += n
    out.append(record(rng, rtype, request_id, b""))
    return out


def well_formed(rng: random.Random, ids: list, keep: bool) -> tuple:
    """(records of several requests interleaved, {id: body})."""
    per_id = {}
    bodies = {}
    for request_id in ids:
        body = rng.randbytes(rng.choice([0, 1, 100, 5000]))
        params = get_params("/echo", method="POST", CONTENT_LENGTH=str(len(body)),
                            HTTP_X_FUZZ="x" * rng.randrange(300))
        recs = [record(rng, p.BEGIN_REQUEST, request_id, p.encode_begin_request(p.RESPONDER, p.KEEP_CONN if keep else 0))]
        recs += stream(rng, p.PARAMS, request_id, p.encode_pairs(params))
        recs += stream(rng, p.STDIN, request_id, body)
        per_id[request_id] = recs
        bodies[request_id] = body
    merged = []
    queues = [list(recs) for recs in per_id.values()]
    while queues:
        q = rng.choice(queues)
        if rng.random() < 0.2:
            # Management records between (never after) the requests' records:
            # without keep_conn the server closes once it has answered.
            merged.append(rng.choice([
                record(rng, p.GET_VALUES, 0, p.encode_pairs([(p.MAX_CONNS, b""), (p.MPXS_CONNS, b"")])),
                record(rng, rng.randrange(12, 256), 0, rng.randbytes(rng.randrange(9))),
            ]))
        merged.append(q.pop(0))
        if not q:
            queues.remove(q)
    return merged, bodies


def send_in_pieces(rng: random.Random, sock: socket.socket, data: bytes) -> None:
    pos = 0
    while pos < len(data):
        n = rng.choice([1, 7, 64, 1000, len(data)])
        sock.sendall(data[pos:pos + n])
        pos += n


def read_until_closed(client: Client, timeout: float = 10.0) -> bool:
    client.sock.settimeout(timeout)
    try:
        while client.sock.recv(65536):
            pass
    except (ConnectionResetError, BrokenPipeError):
        pass
    return True


def check_answers(client: Client, bodies: dict, context: str) -> None:
    want = set(bodies)
    client.read_until(lambda recs: want <= {r for t, r, _ in recs if t == p.END_REQUEST})
    replies = parse_replies(client.records)
    for request_id, body in bodies.items():
        reply = replies.get(request_id)
        assert reply is not None and reply.protocol_status == p.REQUEST_COMPLETE, f"{context}: no END_REQUEST for {request_id}"
        status, headers, got = reply.head_and_body()
        assert status == "200 OK" and got == body, f"{context}: request {request_id} answered {status}"


def one_connection(rng: random.Random, server, context: str) -> None:
    kind = rng.choice(["good", "good", "good", "abort", "truncated", "garbage"])
    ids = rng.sample(range(1, 9), rng.randint(1, 3))
    keep = kind != "good" or rng.random() < 0.5 or len(ids) > 1
    records, bodies = well_formed(rng, ids, keep)
    with Client(server.sock) as client:
        if kind == "good":
            send_in_pieces(rng, client.sock, b"".join(records))
            check_answers(client, bodies, context)
        elif kind == "abort":
            cut = rng.randrange(1, len(records))
            send_in_pieces(rng, client.sock, b"".join(records[:cut]))
            for request_id in ids:
                client.send(record(rng, p.ABORT_REQUEST, request_id, b""))
            # Each began request ends (answered, or aborted): one END_REQUEST each.
            begun = {r for r in ids if any(rec[1] == p.BEGIN_REQUEST and struct.unpack(">H", rec[2:4])[0] == r
                                           for rec in records[:cut])}
            client.read_until(lambda recs: begun <= {r for t, r, _ in recs if t == p.END_REQUEST})
            ends = [r for t, r, _ in client.records if t == p.END_REQUEST]
            assert sorted(ends) == sorted(begun), f"{context}: END_REQUEST for {ends}, began {begun}"
        elif kind == "truncated":
            data = b"".join(records)
            client.send(data[:rng.randrange(1, len(data))])
            client.sock.shutdown(socket.SHUT_WR)
            read_until_closed(client)
        else:
            cut = rng.randrange(0, len(records))
            garbage = bytes([rng.choice([0, 2, 0xFF])]) + rng.randbytes(rng.randrange(7, 64))
            client.send(b"".join(records[:cut]) + garbage)
            assert read_until_closed(client), f"{context}: garbage did not close the connection"


def bystander_served(bystander: Client, context: str) -> None:
    body = b"still here"
    reply = bystander.request(get_params("/echo", method="POST", CONTENT_LENGTH=str(len(body))), body,
                              keep_conn=True)
    assert reply.head_and_body()[2] == body, f"{context}: the bystander connection was not served"


def test_a_fuzzing_client_cannot_take_the_server_down_or_leak_descriptors(server):
    seed = int(os.environ.get("BRIDGE_FUZZ_SEED") or int.from_bytes(os.urandom(4), "big"))
    rng = random.Random(seed)
    connections, seconds = budget()
    with Client(server.sock) as warm:   # the first request loads the app: count after it
        assert warm.request(get_params("/warm")).head_and_body()[0] == "200 OK"
    before = descriptors(server.proc.pid)
    # A well-formed connection kept open through all the garbage is served
    # every 200 connections and at the end.
    bystander = Client(server.sock)
    deadline = time.monotonic() + seconds
    done = 0
    try:
        while done < connections and time.monotonic() < deadline:
            context = f"seed {seed}, connection {done}"
            try:
                one_connection(rng, server, context)
            except OSError as exc:
                raise AssertionError(f"{context}: {exc!r}") from exc
            done += 1
            if done % 200 == 0:    # also within --idle-timeout (60 s), in a long run
                bystander_served(bystander, f"seed {seed}, after {done} connections")
        bystander_served(bystander, f"seed {seed}, after {done} connections")
    finally:
        bystander.close()
    assert server.proc.proc.poll() is None, f"seed {seed}: the server exited\n{server.proc.output()[-3000:]}"
    # Descriptors come back once the server has noticed every close.
    settle = time.monotonic() + 10
    while descriptors(server.proc.pid) > before and time.monotonic() < settle:
        time.sleep(0.05)
    assert descriptors(server.proc.pid) <= before, (
        f"seed {seed}: {descriptors(server.proc.pid)} descriptors after {done} connections, {before} before")
    assert "Traceback" not in server.proc.output(), f"seed {seed}:\n{server.proc.output()[-3000:]}"
    print(f"seed {seed}: {done} connections")
