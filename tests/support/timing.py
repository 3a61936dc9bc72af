# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A bound on how long a block may run: the input-bound tests fail instead of hanging the suite."""

from __future__ import annotations

import contextlib
import signal


class _TookTooLong(Exception):
    pass


@contextlib.contextmanager
def finishes_within(seconds: float):
    """Fail (instead of hanging the suite) when the block runs longer than ``seconds``.

    SIGALRM also interrupts a long ``re`` match: the regex engine checks for signals.
    """

    def _expired(_signum, _frame):
        raise _TookTooLong("took longer than %ss" % seconds)

    previous = signal.signal(signal.SIGALRM, _expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    expired = False
    try:
        yield
    except _TookTooLong:
        expired = True  # raised anywhere, even inside a C call: report it from here, without that traceback
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    if expired:
        raise AssertionError("took longer than %ss" % seconds)
