# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""`make clean-machine` removes what the tests put outside the checkout, and nothing else.

Every location is a make variable, pointed here at a sandbox laid out like the real ones (the real lab cache
is in use by other runs and is never touched: the test checks it is still there).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REAL_LAB_CACHE = "/var/cache/condafleet-lab"

REMOVED = [
    "lab-cache/bookworm-0123456789ab/root/etc/os-release",
    "lab-cache/real-conda/bin/conda",
    "lab-run/cfl000000/h1.log",
    "var-tmp/condafleet-cfh-abc/home/.netrc",
    "var-tmp/condafleet-tests-protected-hardlinks.lock",
    "installers/636b209b.sh",
    "home/.ansible/test/cache/get_pip_24_2.py",
    "home/.ansible/test/venv/sanity.pylint/bin/python",
    "home/.ansible/tmp/molecule.DW5A.default/state.yml",
    "home/.ansible/tmp/cflm1a2b3c-x7y8/inventory.yml",
    "home/.cache/condafleet-sanity/123/ansible_collections/condafleet/proxy/galaxy.yml",
    "home/.cache/condafleet/real-conda/bin/conda",
]
KEPT = [
    "var-tmp/other-project/file",
    "var-tmp/systemd-private-x/file",
    "home/.ansible/collections/ansible_collections/community/general/MANIFEST.json",
    "home/.ansible/tmp/ansible-local-1234/file",
    "home/.ansible/test/cache/unrelated.json",
    "home/.cache/pip/http/x",
    "home/.condarc",
]


def _layout(base) -> None:
    for relative in REMOVED + KEPT:
        path = base / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x\n")


def _make(base, *extra: str) -> subprocess.CompletedProcess:
    variables = ["LAB_CACHE=%s" % (base / "lab-cache"), "LAB_RUN=%s" % (base / "lab-run"),
                 "TEST_TMP=%s" % (base / "var-tmp"), "INSTALLER_CACHE=%s" % (base / "installers"),
                 "ANSIBLE_DIR=%s" % (base / "home" / ".ansible"), "USER_CACHE=%s" % (base / "home" / ".cache")]
    env = dict(os.environ, HOME=str(base / "home"))
    env.pop("XDG_CACHE_HOME", None)
    return subprocess.run(["make", "--no-print-directory", "-C", REPO, "clean-machine", *variables, *extra], env=env,
                          capture_output=True, text=True, timeout=120, check=False)


def _present(base) -> set[str]:
    return {relative for relative in REMOVED + KEPT if (base / relative).exists()}


def test_dry_run_lists_and_removes_nothing(tmp_path):
    real_before = os.path.exists(REAL_LAB_CACHE)
    _layout(tmp_path)
    proc = _make(tmp_path, "DRY_RUN=1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _present(tmp_path) == set(REMOVED + KEPT)
    listed = [line.split()[2] for line in proc.stdout.splitlines() if line.startswith("would remove ")]
    assert str(tmp_path / "lab-cache") in listed and str(tmp_path / "home" / ".ansible" / "test" / "venv") in listed
    assert os.path.exists(REAL_LAB_CACHE) == real_before


def test_removes_only_what_the_tests_left(tmp_path):
    real_before = os.path.exists(REAL_LAB_CACHE)
    _layout(tmp_path)
    proc = _make(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _present(tmp_path) == set(KEPT)
    assert not (tmp_path / "lab-cache").exists() and not (tmp_path / "installers").exists()
    assert "clean-machine: removed 11 path(s)" in proc.stdout, proc.stdout
    assert os.path.exists(REAL_LAB_CACHE) == real_before
    # Again: nothing left to remove, still success.
    proc = _make(tmp_path)
    assert proc.returncode == 0 and "removed 0 path(s)" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"), reason="needs root and ip (a network namespace)")
def test_refuses_while_a_lab_runs(tmp_path):
    """A lab's hosts run on the cached roots: with its namespace up, nothing is removed."""
    _layout(tmp_path)
    prefix = "cflt" + secrets.token_hex(3)
    (tmp_path / "lab-run" / prefix).mkdir()
    subprocess.run(["ip", "netns", "add", prefix + "-ctl"], check=True)
    try:
        proc = _make(tmp_path)
    finally:
        subprocess.run(["ip", "netns", "delete", prefix + "-ctl"], check=True)
    assert proc.returncode != 0
    assert "a lab is running (%s" % prefix in proc.stderr
    assert "lab.py down --prefix %s" % prefix in proc.stderr
    assert _present(tmp_path) == set(REMOVED + KEPT)
