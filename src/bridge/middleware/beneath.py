"""Open a file under a directory so that what is opened is what was checked.

Why: checking ``os.path.realpath(root/path)`` and then opening the name
again is a race (time of check to time of use).  Between the two, anyone who
can write in the tree can replace a directory with a symlink to ``/etc``,
and the second lookup follows it: the check passed for one file, another is
served (issue 21, item 3: ``/etc/passwd`` after about 100 requests).

How: the path is walked one component at a time from a descriptor of the
root, each component opened with ``O_NOFOLLOW`` relative to the descriptor
of the directory before it (``openat``), so the kernel never follows a
symlink on its own and every step starts from a directory we hold.  Linux's
``openat2(RESOLVE_BENEATH)`` does the same in one call but is not in the
standard library.  The caller then works only with the returned descriptor
(``fstat`` for type, size, validators; ``sendfile`` from it).

Symlinks inside the tree are resolved by this walk itself, never by the
kernel: the link's target is read (``readlinkat``) and its components walked
the same way, from the directory holding the link.  So a link can only lead
to a file under the root:

* ``..`` never climbs above the root (a link ``../../etc`` is refused, not
  clamped);
* an absolute target is followed only when it spells the root's own real
  path (``/srv/site/css/app.css`` under root ``/srv/site``), and is walked
  from the root descriptor again;
* at most ``MAX_SYMLINKS`` (40, Linux's limit) links per walk;
* with ``hidden=False`` no component, whether from the request or from a
  link's target, may start with a dot.

What a swap in the middle of the walk can achieve is only a different file
under the root, or a refusal: never a file outside it.
"""
from __future__ import annotations

import errno
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import List, Optional, Tuple

__all__ = ["open_beneath", "MAX_SYMLINKS"]

#: Links followed in one walk before giving up (Linux's MAXSYMLINKS).
MAX_SYMLINKS = 40

# Directories on the way only need search permission: O_PATH where the
# platform has it (Linux), a plain read-only open elsewhere.
_DIR_FLAGS = (getattr(os, "O_PATH", 0) or os.O_RDONLY) | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# The final component is opened for reading; O_NONBLOCK so a FIFO does not
# block the open (its fstat then says it is no regular file), O_NOCTTY so a
# terminal never becomes ours.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC

# What open(O_NOFOLLOW) answers for a symlink: ELOOP for the last component,
# ENOTDIR when O_DIRECTORY (or O_PATH) met the link itself.
_MAYBE_LINK = (errno.ELOOP, errno.ENOTDIR, errno.EMLINK)
# Errors that mean "no such file here", not "something is broken".
_ABSENT = (errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG, errno.ELOOP, errno.EINVAL)


def open_beneath(root: bytes, parts: List[bytes], *, hidden: bool = False
                 ) -> Optional[Tuple[int, List[bytes]]]:
    """Open ``root/parts`` for reading without leaving ``root`` (see module doc).

    ``root`` is the real path of the directory (symlinks in it were resolved
    once, by whoever configured it); ``parts`` are path components, ``b""``
    and ``b"."`` ignored.  Returns ``(fd, names)``: a descriptor the caller
    must close, and the components under ``root`` that were actually opened
    (links resolved), or None when there is no such file under ``root``.
    Other ``OSError`` (permission, descriptor exhaustion) is raised.
    """
    root_fd = os.open(root, _DIR_FLAGS & ~os.O_NOFOLLOW)
    stack: List[Tuple[int, bytes]] = [(root_fd, b"")]
    todo = _pending(parts)
    links = 0
    try:
        while todo:
            name = todo.pop()
            if name == b"..":
                if len(stack) == 1:
                    return None            # above the root
                os.close(stack.pop()[0])
                continue
            if not hidden and name.startswith(b"."):
                return None
            last = not todo
            try:
                fd = os.open(name, _FILE_FLAGS if last else _DIR_FLAGS, dir_fd=stack[-1][0])
            except OSError as exc:
                if exc.errno not in _MAYBE_LINK:
                    if exc.errno in _ABSENT:
                        return None
                    raise
                target = _readlink(name, stack[-1][0])
                if target is None:
                    return None            # not a link: a file where a directory was wanted
                links += 1
                if links > MAX_SYMLINKS:
                    return None
                if target.startswith(b"/"):
                    if target != root and not target.startswith(root + b"/"):
                        return None        # an absolute link out of the tree
                    while len(stack) > 1:
                        os.close(stack.pop()[0])
                    target = target[len(root):]
                todo.extend(_pending([target]))
                continue
            if last:
                names = [n for _, n in stack[1:]] + [name]
                return fd, names
            stack.append((fd, name))
        # The walk ended on a directory (no parts, or a link/.. leading to one).
        fd = os.open(b".", _FILE_FLAGS, dir_fd=stack[-1][0])
        return fd, [n for _, n in stack[1:]]
    finally:
        for dir_fd, _ in stack:
            os.close(dir_fd)


def _pending(parts: List[bytes]) -> List[bytes]:
    """Components still to walk, last first (a stack), without empty and ``.`` ones."""
    out = []
    for part in parts:
        out.extend(p for p in part.split(b"/") if p and p != b".")
    out.reverse()
    return out


def _readlink(name: bytes, dir_fd: int) -> Optional[bytes]:
    """The target of the link ``name`` in ``dir_fd``, or None if it is no link (any more)."""
    try:
        target = os.readlink(name, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in _ABSENT:
            return None
        raise
    return target or None
