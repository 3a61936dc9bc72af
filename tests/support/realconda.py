# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A real conda for the tests: built once from ``../shared/real-conda`` (conda's own source), cached.

conda is the judge of what the collection writes: tests run ``<prefix>/bin/conda`` as non-root accounts
from fresh login shells. The install is a venv on ``/usr/bin/python3`` that every account can read.
Tests that need it skip, naming the install script, only when ``../shared/real-conda`` is absent.
"""

from __future__ import annotations

import fcntl
import os
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
INSTALLER = os.path.join(os.path.dirname(REPO), "shared", "real-conda", "install.sh")
# Root: next to the lab's other caches (`make clean-machine` removes it); others: their own cache.
CACHE = ("/var/cache/condafleet-lab/real-conda" if os.geteuid() == 0
         else os.path.join(os.path.expanduser("~"), ".cache", "condafleet", "real-conda"))


def installer() -> str | None:
    """The install script, or ``None`` when this checkout has no ``../shared/real-conda`` beside it."""
    return INSTALLER if os.path.isfile(INSTALLER) else None


def install(dest: str = CACHE, timeout: float = 300) -> str:
    """Install (once; concurrent callers wait on a lock) and return the path of ``conda``."""
    script = installer()
    if script is None:
        raise FileNotFoundError("real conda not available: %s is absent" % INSTALLER)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    os.chmod(os.path.dirname(dest), 0o755)
    with open(dest + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        conda = os.path.join(dest, "bin", "conda")
        if not os.access(conda, os.X_OK):
            subprocess.run(["bash", script, dest], check=True, capture_output=True, timeout=timeout)
    return conda


def require() -> str:
    """The path of a real conda; skips the test, naming the script, when ``../shared/real-conda`` is absent."""
    import pytest

    if installer() is None:
        pytest.skip("real conda needed: ../shared/real-conda/install.sh is absent from this checkout's parent")
    return install()
