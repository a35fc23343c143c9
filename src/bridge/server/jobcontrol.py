"""Terminal job control versus the server's TTIN/TTOU (one worker more / fewer).

A terminal sends a background job TTOU when it writes (with ``stty
tostop``) and TTIN when it reads; the default action stops the job until
``fg``.  bridge handles both signals for its own use, so it must tell the
terminal's from an operator's ``kill -TTIN`` and, for the terminal's, stop as
the default action would: a handled TTOU makes the refused write fail with
EINTR and be retried for ever (100 % CPU).
"""
from __future__ import annotations

import os
import signal
import termios
import time

__all__ = ["JOB_CONTROL", "JOB_CONTROL_LEFTOVERS", "stopped_by_the_terminal"]

#: Job control's signals: a handler for them must see the interrupted call
#: (no SA_RESTART), or a write a terminal refuses restarts in the kernel for
#: ever without the handler ever running (see :func:`stopped_by_the_terminal`).
JOB_CONTROL = (signal.SIGTTIN, signal.SIGTTOU)

#: After a stop for job control, TTIN/TTOU for this long are leftovers of
#: the calls refused before it (a thread retrying its write), not news.
JOB_CONTROL_LEFTOVERS = 1.0
_job_control = {"busy": False, "resumed": float("-inf")}


def stopped_by_the_terminal(signum: int, *, reads_stdin: bool = True) -> bool:
    """TTIN/TTOU from a terminal's job control: act as their default action would (stop).

    A background job writing to a terminal set ``tostop`` (or reading from
    it) gets TTOU (TTIN); with a handler, the refused call is retried for
    ever (100 % CPU).  Told apart from an operator's ``kill -TTIN``: the
    process has a controlling terminal, is not in its foreground group, and
    the terminal would send it -- TTOU only with ``tostop`` set, TTIN only
    when stdin is that terminal and the process may read it (``reads_stdin``:
    not a master or a supervisor, which never run the app's code).  The
    stop is the kernel's default one, raised as SIGTSTP: discarded, as it
    should be, in an orphaned process group (nobody could ``fg`` it).  Safe in a
    Python-level handler: system calls only, no lock.
    """
    if signum not in JOB_CONTROL:
        return False
    # Python may run this handler again, nested, at any call below (a thread
    # retrying a refused write sends TTOU after TTOU): the nested runs are
    # the same news and are dropped, and no run that looked before a stop
    # acts on what it saw after it.  No call before the flag is set.
    if _job_control["busy"]:
        return True
    _job_control["busy"] = True
    try:
        if time.monotonic() - _job_control["resumed"] < JOB_CONTROL_LEFTOVERS:
            return True
        if not _sent_by_the_terminal(signum, reads_stdin):
            return False
        # TSTP's default action is the same stop, and its handler stays
        # as it is (changing TTOU's here would make Python report the
        # pending ones as "ignored due to race condition").
        stop = signal.SIGTSTP if signal.getsignal(signal.SIGTSTP) == signal.SIG_DFL else signal.SIGSTOP
        try:
            signal.raise_signal(stop)       # stopped here until SIGCONT
        finally:
            _job_control["resumed"] = time.monotonic()
        return True
    finally:
        _job_control["busy"] = False


def _sent_by_the_terminal(signum: int, reads_stdin: bool) -> bool:
    if signum == signal.SIGTTIN and not reads_stdin:
        return False
    try:
        tty = os.open("/dev/tty", os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False                # no controlling terminal: an operator's signal
    try:
        if os.tcgetpgrp(tty) == os.getpgrp():
            return False            # in the foreground the terminal sends neither
        if signum == signal.SIGTTOU:
            return bool(termios.tcgetattr(tty)[3] & termios.TOSTOP)
        os.tcgetpgrp(0)             # OSError unless stdin is the controlling terminal
        return True
    except (OSError, termios.error):
        return False
    finally:
        os.close(tty)
