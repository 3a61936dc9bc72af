# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The molecule scenarios under extensions/molecule/, each on its own multi-host lab."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile

import pytest

import lab as labmod  # tests/lab, put on sys.path by conftest.py
import realconda  # tests/support, put on sys.path by the root conftest

pytestmark = [pytest.mark.lab, pytest.mark.slow]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)


# The sequence of molecule.yml, one command a step, so that the check step can be held to zero changes
# (molecule itself only reports them).
STEPS = ("destroy", "create", "prepare", "converge", "idempotence", "check", "verify", "side-effect", "destroy")
RECAP = re.compile(r"^(?P<host>\S+)\s*:\s*ok=\d+\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)\s+failed=(?P<failed>\d+)", re.M)


def _molecule(step: str, scenario: str, env: dict) -> str:
    proc = subprocess.run([os.path.join(BIN, "molecule"), step, "-s", scenario], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, "molecule %s -s %s failed:\n%s" % (step, scenario, output[-30000:])
    return output


def _assert_real_conda_ran(output: str) -> None:
    """verify ran real conda as each account on h1 and h2, over HTTP and HTTPS, and the negatives that prove the CA
    is what makes HTTPS work, each step checked (or said why not, when ../shared/real-conda is absent)."""
    if realconda.installer() is None:
        assert "real conda steps skipped" in output, output[-30000:]
        return
    tasks = ("Run conda search and conda create over HTTP and HTTPS from a fresh login shell as %s",
             "Check that conda found and installed the package over HTTP and HTTPS as %s",
             "Check that conda refused the channel's certificate without the deployed CA, as %s",
             "Check squid carried every request on this host for the proxy account, conda run by %s",
             "Check the channel saw the netrc credentials on every request, only through squid, conda run by %s")
    for user in labmod.USERS:
        for name in tasks:
            task = "TASK [%s]" % (name % user)
            assert task in output, task + "\n" + output[-30000:]
            block = output.split(task, 1)[1].split("TASK [", 1)[0]
            assert sorted(re.findall(r"^ok: \[(h\d)\]", block, re.M)) == ["h1", "h2"], block


@pytest.mark.parametrize("scenario", ["default", "user_scope"])
def test_molecule_scenario(scenario, tmp_path, lab_available):
    # A prefix of this run's own, so a parallel run or a leftover lab cannot interfere.
    prefix = "cflm" + hashlib.sha256(str(tmp_path).encode()).hexdigest()[:6]
    # And an ephemeral directory of its own: molecule's default (~/.ansible/tmp/molecule.<hash of the project
    # directory's *name*>.<scenario>) is shared by every checkout called main, and with it the lab's state file.
    # Beside molecule's own, under ~ (/root: h1 has its own, so the CA key create.yml makes there is never on a
    # host); short (SSH control sockets live in it: 108 bytes of sun_path); kept when the test fails, for its logs.
    base = os.path.expanduser("~/.ansible/tmp")
    os.makedirs(base, mode=0o700, exist_ok=True)
    ephemeral = tempfile.mkdtemp(prefix=prefix + "-", dir=base)
    env = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""), CONDAFLEET_LAB_PREFIX=prefix,
               MOLECULE_EPHEMERAL_DIRECTORY=ephemeral,
               ANSIBLE_NOCOLOR="1", NO_COLOR="1", ANSIBLE_FORCE_COLOR="0",
               ANSIBLE_COLLECTIONS_PATH=os.path.join(REPO, "collections"))
    try:
        for step in STEPS:
            output = _molecule(step, scenario, env)
            if step == "verify":
                _assert_real_conda_ran(output)
            if step == "check":
                recaps = RECAP.findall(output)
                assert recaps, output[-4000:]
                assert [r for r in recaps if r[0] != "localhost" and (r[1] != "0" or r[3] != "0")] == [], \
                    "check mode on the converged fleet must change nothing:\n" + output[-30000:]
    finally:
        # destroy runs even when a step fails; this also covers molecule itself dying mid-way.
        report = labmod.down(None, prefix=prefix)
    assert report["leftovers"] == [], report
    assert not [n for n in labmod.netns_list() if n.startswith(prefix + "-")]
    shutil.rmtree(ephemeral)
