# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""``make venv``'s ``pip install``, saying what it does and how far it is (pip --quiet says nothing for a minute).

Usage: python scripts/pip_install.py PIP [pip install arguments...]

One line per phase of pip's own output (resolving and downloading with a count of the packages so far,
installing, done), and a line every PROGRESS_EVERY seconds while a phase goes on. When pip
fails, the end of its output is shown. Standard library only: it runs before the venv has anything.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

PROGRESS_EVERY = 10.0


def pinned(args: list[str]) -> int:
    """How many packages the ``-c`` constraints files pin: the expected total of a fresh install."""
    total = 0
    for flag, value in zip(args, args[1:]):
        if flag == "-c":
            with open(value) as handle:
                total += sum(1 for line in handle if "==" in line.split("#", 1)[0])
    return total


def main(argv: list[str]) -> int:
    pip, args = argv[0], argv[1:]
    total = pinned(args)
    started = time.monotonic()
    state = {"phase": "starting pip", "count": 0, "last": started}
    lock = threading.Lock()

    def say(message: str) -> None:
        print("venv: [%3.0f s] %s" % (time.monotonic() - started, message), flush=True)
        state["last"] = time.monotonic()

    def describe() -> str:
        if state["phase"] == "resolving":
            return "resolving and downloading: %d packages so far" % state["count"]
        return state["phase"]

    stop = threading.Event()

    def heartbeat() -> None:
        while not stop.wait(1.0):
            with lock:
                if time.monotonic() - state["last"] >= PROGRESS_EVERY:
                    say(describe() + " ...")

    proc = subprocess.Popen([pip, "install", "--disable-pip-version-check", "--progress-bar", "off"] + args,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                            errors="replace", env=dict(os.environ, PYTHONUNBUFFERED="1"))
    ticker = threading.Thread(target=heartbeat, daemon=True)
    ticker.start()
    tail: list[str] = []
    warnings: list[str] = []
    try:
        for line in proc.stdout:
            tail = (tail + [line])[-60:]
            with lock:
                if line.startswith("WARNING:"):
                    warnings.append(line.strip())
                elif line.startswith(("Collecting ", "Requirement already satisfied: ")):
                    if state["phase"] != "resolving":
                        state["phase"] = "resolving"
                        say("resolving and downloading packages (%d pinned; about a minute on a fresh machine)" % total)
                    state["count"] += 1
                elif line.startswith("Installing collected packages:"):
                    count = len(line.split(":", 1)[1].split(","))
                    state["phase"] = "installing %d packages into the venv (ansible is the big one)" % count
                    say(state["phase"])
                elif line.startswith("Successfully installed"):
                    state["phase"] = "done"
                    say("installed %d packages" % len(line.split()[2:]))
        proc.wait()
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if proc.returncode == 0 and state["phase"] != "done":
        say("done: everything was installed already")
    if warnings and proc.returncode == 0:
        print("venv: pip warned %d time(s), first: %s" % (len(warnings), warnings[0]), flush=True)
    if proc.returncode != 0:
        sys.stderr.write("".join(tail))
        print("venv: pip install failed (exit %d); its output ends above" % proc.returncode, file=sys.stderr)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
