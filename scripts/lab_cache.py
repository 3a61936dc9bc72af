# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""``make lab-cache`` (run by ``make test`` before pytest): build what the lab caches, where its progress shows.

The lab's Debian roots (debootstrap, about a minute per suite, once) and real conda (from ../shared/real-conda)
are otherwise built inside a pytest fixture, whose output pytest captures: a long silence. Built here first,
with a line per phase; the tests then find them cached. Never fails ``make test``: what cannot be built is
said, and the tests that need it report it themselves.
"""

from __future__ import annotations

import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "lab"))
sys.path.insert(0, os.path.join(REPO, "tests", "support"))

import lab  # noqa: E402  (tests/lab is not a package)
import realconda  # noqa: E402
import sdhost  # noqa: E402


def say(message: str) -> None:
    print("lab-cache: %s" % message, flush=True)


def debian_roots() -> None:
    suites = [suite for _name, suite in lab.HOSTS if suite]
    mirror = lab.debian_mirror()
    missing = [suite for suite in suites
               if not os.path.exists(os.path.join(lab.CACHE_DIR, lab.cache_key(suite, mirror), "complete"))]
    if not missing:
        say("Debian roots (%s) cached in %s" % (", ".join(suites), lab.CACHE_DIR))
        return
    say("building the lab's Debian roots (%s) with debootstrap in parallel: about a minute or two, once"
        % ", ".join(missing))
    started = time.monotonic()
    lab.bootstrap_all(missing, mirror)
    say("Debian roots ready in %.0f s" % (time.monotonic() - started))


def systemd_root() -> None:
    """The root of the host that boots systemd (tests/support/sdhost.py): the lab's packages and systemd."""
    if sdhost.unavailable():
        say("no systemd host root: %s" % sdhost.unavailable())
        return
    mirror = lab.debian_mirror()
    if os.path.exists(os.path.join(lab.CACHE_DIR, lab.cache_key(sdhost.SUITE, mirror, sdhost.PACKAGES), "complete")):
        say("systemd host root (%s) cached in %s" % (sdhost.SUITE, lab.CACHE_DIR))
        return
    say("building the systemd host's root (%s with systemd) with debootstrap: about a minute, once" % sdhost.SUITE)
    started = time.monotonic()
    lab.bootstrap_root(sdhost.SUITE, mirror, packages=sdhost.PACKAGES)
    say("systemd host root ready in %.0f s" % (time.monotonic() - started))


def real_conda() -> None:
    if realconda.installer() is None:
        say("no real conda (%s is absent): the tests that need it skip" % realconda.INSTALLER)
        return
    if os.access(os.path.join(realconda.CACHE, "bin", "conda"), os.X_OK):
        say("real conda cached in %s" % realconda.CACHE)
        return
    source = os.path.dirname(realconda.INSTALLER)
    say("building real conda from %s into %s: about half a minute, once" % (source, realconda.CACHE))
    started = time.monotonic()
    realconda.install()
    say("real conda ready in %.0f s" % (time.monotonic() - started))


def main() -> int:
    if os.geteuid() != 0:
        say("not root: nothing to build (the lab tests need root and skip)")
        return 0
    missing = lab.missing_programs()
    if missing:
        say("not installed: %s (make lab-deps); the lab tests skip" % ", ".join(missing))
        return 0
    for step in (debian_roots, systemd_root, real_conda):
        try:
            step()
        except Exception as exc:  # noqa: BLE001 -- said here; the tests that need it report it again
            say("%s failed: %s" % (step.__name__.replace("_", " "), exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
