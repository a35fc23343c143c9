"""The master's ``--pid`` file: never written through a link, locked while the master lives.

The master usually runs as root, and the pid directory may be writable by
someone else (issue 21, item 2).  Every step is chosen so that nothing planted
in that directory can make root write, read or remove another file:

* The directory is opened once (``O_DIRECTORY``) and everything after is
  relative to that descriptor, so renaming a parent directory mid-way changes
  nothing.  It is refused when someone other than root or the master's own
  user could replace entries in it: owned by another user, or writable by
  group or others without the sticky bit (nginx and PHP-FPM expect a
  root-owned ``/run`` directory the same way).  A sticky directory such as
  ``/tmp`` is accepted: there, nobody else can remove or rename our file, and
  the steps below never follow what another user planted.
* A new file is made under a random name with ``O_CREAT | O_EXCL |
  O_NOFOLLOW`` (an entry planted under that name makes the open fail, never
  write through it), written, then ``rename``\\ d over the path: ``rename``
  replaces a link at the path, it never writes to its target.
* A pid file left by an earlier master is opened with ``O_NOFOLLOW |
  O_NONBLOCK`` (no link, no FIFO that would hang the start) and must be a
  regular file.
* The master holds an exclusive ``flock`` on its pid file for its whole life.
  A pid file whose lock nobody holds is stale, whatever process now has that
  number: ``kill(pid, 0)`` alone cannot tell a reused pid from a live master
  (item 8).  Workers close the descriptor right after ``fork`` so that only
  the master holds the lock.
* On exit the file is removed only if the path still names the file this
  master wrote (same device and inode), with ``unlink`` relative to the
  directory descriptor.  The master keeps root when ``--user`` is given
  (only the workers switch, as nginx, PHP-FPM and gunicorn do), so it may
  remove it from a root-owned directory.
"""
from __future__ import annotations

import errno
import fcntl
import os
import secrets
import stat

__all__ = ["PidFile", "PidFileError"]

#: A pid file is a number and a newline; anything longer is not ours.
MAX_SIZE = 64


class PidFileError(OSError):
    """The pid file cannot be written safely; the message is one line for the operator."""


class PidFile:
    """``--pid PATH``: :meth:`acquire` at start, :meth:`release` on exit."""

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self.dirname, self.name = os.path.split(self.path)
        self.dir_fd = -1
        self.fd = -1

    def acquire(self, pid: int) -> None:
        """Refuse if a live master holds the file; otherwise write ``pid`` and lock it."""
        if not self.name:
            raise PidFileError(f"--pid {self.path}: not a file name")
        try:
            self.dir_fd = os.open(self.dirname or "/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise PidFileError(f"--pid {self.path}: cannot open its directory: "
                               f"{exc.strerror}") from None
        try:
            self._check_directory()
            self._refuse_if_held()
            self._write(pid)
        except BaseException:
            self.close()
            raise

    def _check_directory(self) -> None:
        st = os.fstat(self.dir_fd)
        if st.st_uid not in (0, os.geteuid()):
            raise PidFileError(f"--pid {self.path}: the directory {self.dirname} belongs to "
                               f"uid {st.st_uid}; refusing (use a directory owned by root or "
                               f"by the user starting bridge)")
        if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
            raise PidFileError(f"--pid {self.path}: the directory {self.dirname} is writable by "
                               f"others (mode {stat.S_IMODE(st.st_mode):04o}); refusing")

    def _refuse_if_held(self) -> None:
        try:
            fd = os.open(self.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         dir_fd=self.dir_fd)
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise PidFileError(f"--pid {self.path} is a symbolic link; refusing") from None
            raise PidFileError(f"--pid {self.path}: {exc.strerror}") from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise PidFileError(f"--pid {self.path} exists and is not a regular file; refusing")
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                other = os.read(fd, MAX_SIZE).strip()
                other = other.decode() if other.isdigit() else "?"    # never echo odd bytes
                raise PidFileError(f"--pid {self.path}: process {other} is still "
                                   f"running (another bridge master holds the file)") from None
        finally:
            os.close(fd)

    def _write(self, pid: int) -> None:
        tmp = f".{self.name}.{secrets.token_hex(8)}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, 0o644, dir_fd=self.dir_fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.fchmod(fd, 0o644)         # readable by tools whatever the umask
            os.write(fd, f"{pid}\n".encode())
            os.rename(tmp, self.name, src_dir_fd=self.dir_fd, dst_dir_fd=self.dir_fd)
        except BaseException:
            os.close(fd)
            try:
                os.unlink(tmp, dir_fd=self.dir_fd)
            except OSError:
                pass
            raise
        self.fd = fd

    def release(self) -> None:
        """Remove the file if the path still names ours; close the descriptors."""
        if self.fd >= 0:
            try:
                mine = os.fstat(self.fd)
                there = os.stat(self.name, dir_fd=self.dir_fd, follow_symlinks=False)
                if (mine.st_dev, mine.st_ino) == (there.st_dev, there.st_ino):
                    os.unlink(self.name, dir_fd=self.dir_fd)
            except OSError:
                pass
        self.close()

    def close(self) -> None:
        """Close the descriptors without removing anything (a forked worker calls this)."""
        for fd in (self.fd, self.dir_fd):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.fd = self.dir_fd = -1
