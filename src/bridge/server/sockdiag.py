"""Listen queues of unix sockets, from the kernel's sock_diag netlink interface (what ``ss -xl`` reads).

``TCP_INFO`` gives a TCP listener's accept queue to its owner, but a unix
socket has no such option, and behind nginx the listener is usually a unix
socket.  ``NETLINK_SOCK_DIAG`` answers for unix sockets too, without
privileges: one ``SOCK_DIAG_BY_FAMILY`` dump of the listening ones with
``UDIAG_SHOW_RQLEN``, matched to our sockets by inode.  For a listening
socket the kernel reports the accept queue as ``rqueue`` and its length
(the backlog granted) as ``wqueue`` (linux/unix_diag.h, net/unix/diag.c).
Anything unexpected (no netlink in a sandbox, another kernel) gives an empty
answer: the status page then leaves the queue out rather than guess.
"""
from __future__ import annotations

import os
import socket
import struct

__all__ = ["unix_listen_queues"]

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_DONE, NLMSG_ERROR = 3, 2
TCP_LISTEN = 10
UDIAG_SHOW_RQLEN = 0x10
UNIX_DIAG_RQLEN = 4

_NLMSGHDR = struct.Struct("=IHHII")          # len, type, flags, seq, pid
_UNIX_DIAG_REQ = struct.Struct("=BBHIIIII")  # family, protocol, pad, states, ino, show, cookie[2]
_UNIX_DIAG_MSG = struct.Struct("=BBBBIII")   # family, type, state, pad, ino, cookie[2]
_RTATTR = struct.Struct("=HH")               # len, type
_RQLEN = struct.Struct("=II")                # rqueue, wqueue


def _align(n: int) -> int:
    return (n + 3) & ~3


def unix_listen_queues(socks: list) -> dict:
    """``{fileno: (waiting, backlog)}`` for those of ``socks`` (unix listening sockets) the kernel reports."""
    inodes = {}
    for sock in socks:
        try:
            inodes[os.fstat(sock.fileno()).st_ino] = sock.fileno()
        except (OSError, ValueError):
            continue
    if not inodes:
        return {}
    try:
        nl = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG)
    except (OSError, AttributeError):
        return {}
    found: dict = {}
    try:
        nl.settimeout(1.0)
        request = _UNIX_DIAG_REQ.pack(socket.AF_UNIX, 0, 0, 1 << TCP_LISTEN, 0, UDIAG_SHOW_RQLEN, 0xFFFFFFFF,
                                      0xFFFFFFFF)
        header = _NLMSGHDR.pack(_NLMSGHDR.size + len(request), SOCK_DIAG_BY_FAMILY,
                                NLM_F_REQUEST | NLM_F_DUMP, 1, 0)
        nl.sendto(header + request, (0, 0))
        while True:
            data = nl.recv(65536)
            if not data or not _parse(data, inodes, found):
                break
    except OSError:
        return found
    finally:
        nl.close()
    return found


def _parse(data: bytes, inodes: dict, found: dict) -> bool:
    """Read one netlink datagram into ``found``; False once the dump is over."""
    pos = 0
    while pos + _NLMSGHDR.size <= len(data):
        length, kind, _, _, _ = _NLMSGHDR.unpack_from(data, pos)
        if length < _NLMSGHDR.size or pos + length > len(data):
            return False
        if kind in (NLMSG_DONE, NLMSG_ERROR):
            return False
        body = pos + _NLMSGHDR.size
        if kind == SOCK_DIAG_BY_FAMILY and length >= _NLMSGHDR.size + _UNIX_DIAG_MSG.size:
            ino = _UNIX_DIAG_MSG.unpack_from(data, body)[4]
            fd = inodes.get(ino)
            attr = body + _UNIX_DIAG_MSG.size
            end = pos + length
            while fd is not None and attr + _RTATTR.size <= end:
                alen, atype = _RTATTR.unpack_from(data, attr)
                if alen < _RTATTR.size:
                    break
                if atype == UNIX_DIAG_RQLEN and alen >= _RTATTR.size + _RQLEN.size:
                    found[fd] = _RQLEN.unpack_from(data, attr + _RTATTR.size)
                    break
                attr += _align(alen)
        pos += _align(length)
    return True
