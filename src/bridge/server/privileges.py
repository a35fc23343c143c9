"""``--user`` / ``--group``: who the workers run as, and the switch itself.

The master keeps the user it was started as (root) and only the workers
switch, right after ``fork`` and before they import the app: nginx, PHP-FPM
and gunicorn do the same.  The master keeps root for what only it does,
never for client data: reopening root-owned log files on SIGUSR1 (item 5 of
issue 21), removing the pid file from a root-owned directory on exit (item
8), and opening the TLS key and the logs once, before any worker exists, so
that a root-only 0600 key works (item 7).

A numeric ``--user`` with no passwd entry is accepted, as ``chown`` accepts
it: its group is ``--group`` or else the group with the same number, and it
gets no supplementary groups (the numbering systemd's DynamicUser= uses).
"""
from __future__ import annotations

import contextlib
import grp
import os
import pwd

from bridge.config import shown

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Iterator, Optional

__all__ = ["Identity", "resolve", "switch_to", "effective"]


class Identity:
    """The uid, gid and supplementary-group source (a user name) the workers take."""

    __slots__ = ("uid", "gid", "name")

    def __init__(self, uid: Optional[int], gid: Optional[int], name: Optional[str]) -> None:
        self.uid = uid
        self.gid = gid
        self.name = name

    def __repr__(self) -> str:
        return f"Identity(uid={self.uid}, gid={self.gid}, name={self.name!r})"

    @property
    def changes_anything(self) -> bool:
        return ((self.uid is not None and self.uid != os.geteuid())
                or (self.gid is not None and self.gid != os.getegid()))


def resolve(user: Optional[str], group: Optional[str]) -> Optional[Identity]:
    """``--user``/``--group`` as numbers, looked up once at start; LookupError says which.

    Raises ``OSError`` when a switch is asked for without root.
    """
    if not user and not group:
        return None
    uid = gid = None
    name = None
    if user:
        user = str(user)
        if user.isdigit():
            uid = int(user)
            try:
                pw = pwd.getpwuid(uid)
            except KeyError:
                gid = uid
            else:
                gid, name = pw.pw_gid, pw.pw_name
        else:
            try:
                pw = pwd.getpwnam(user)
            except KeyError:
                raise LookupError(f"--user {shown(user)}: no such user") from None
            uid, gid, name = pw.pw_uid, pw.pw_gid, pw.pw_name
    if group:
        group = str(group)
        if group.isdigit():
            gid = int(group)
        else:
            try:
                gid = grp.getgrnam(group).gr_gid
            except KeyError:
                raise LookupError(f"--group {shown(group)}: no such group") from None
    identity = Identity(uid, gid, name)
    if os.geteuid() != 0 and identity.changes_anything:
        raise OSError("--user/--group: switching users needs root")
    return identity


def switch_to(identity: Optional[Identity]) -> None:
    """Become ``identity`` for good (a worker, after fork): groups, then gid, then uid."""
    if identity is None or not identity.changes_anything:
        return
    if identity.gid is not None:
        if identity.name and identity.uid is not None:
            os.initgroups(identity.name, identity.gid)
        else:
            os.setgroups([])
        os.setgid(identity.gid)
    if identity.uid is not None:
        os.setuid(identity.uid)
        if identity.uid != 0:
            try:
                os.setuid(0)
            except PermissionError:
                pass
            else:
                raise OSError("--user: the switch did not hold (root could be regained)")


@contextlib.contextmanager
def effective(identity: Optional[Identity]) -> Iterator[None]:
    """Run a block with ``identity``'s effective ids, then come back (``--preload`` import).

    The files the import creates belong to the workers' user and root-only
    files are out of its reach.  It is not a sandbox: code that means harm
    could switch back, since the real uid stays root.
    """
    if identity is None or not identity.changes_anything or os.geteuid() != 0:
        yield
        return
    groups = os.getgroups()
    if identity.gid is not None:
        os.setgroups([] if identity.name is None or identity.uid is None
                     else os.getgrouplist(identity.name, identity.gid))
        os.setegid(identity.gid)
    if identity.uid is not None:
        os.seteuid(identity.uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(os.getgid())
        os.setgroups(groups)
