# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Throwaway accounts for the tests that configure another account as root (the threat model's hostile user)."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import uuid


@contextlib.contextmanager
def throwaway_account(prefix: str):
    """A new account ``<prefix><random>`` with a home in a root-owned 0755 directory under /var/tmp (pytest's own
    tmp dirs are private to root, and a home must be reachable as on a real host). Yields its password entry; on
    the way out every process it still runs is killed by pid, then the account and its home go."""
    name = prefix + uuid.uuid4().hex[:8]
    base = tempfile.mkdtemp(prefix="condafleet-%s-" % prefix, dir="/var/tmp")
    os.chmod(base, 0o755)
    home = os.path.join(base, name)
    subprocess.run(["useradd", "-m", "-d", home, "-s", "/bin/bash", name], check=True, capture_output=True)
    try:
        yield pwd.getpwnam(name)
    finally:
        pids = subprocess.run(["pgrep", "-u", name], capture_output=True, text=True, check=False).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (OSError, ValueError):
                pass
        subprocess.run(["userdel", "-f", name], capture_output=True, check=False)
        shutil.rmtree(base, ignore_errors=True)
