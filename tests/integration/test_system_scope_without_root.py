# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A non-root account running a scope=system task is told it needs become, not just "Permission denied".

The module really runs as a throwaway account: root's ansible becomes it (``su``), as a task without
``become`` runs as the login account. Nothing is written: the files are root's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from accounts import throwaway_account  # tests/support

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
PROXY = "http://proxy.corp.example:3128"
HINT = "is not root: run the task with become: true (scope=system files belong to root)"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (a throwaway account to run the module as)")


@pytest.fixture(scope="module")
def account():
    with throwaway_account("cfs") as entry:
        yield entry


def as_account(account, module: str, args: dict) -> dict:
    """``ansible localhost -m condafleet.proxy.<module>`` with the module running as ``account``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(ANSIBLE_COLLECTIONS_PATH=os.path.join(REPO, "collections"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_LOCALHOST_WARNING="False", ANSIBLE_INVENTORY_UNPARSED_WARNING="False",
               ANSIBLE_LOAD_CALLBACK_PLUGINS="True", ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json",
               # the module's temp files must be reachable by the account (root's ~/.ansible is not)
               ANSIBLE_REMOTE_TMP=os.path.join(os.path.dirname(account.pw_dir), "ansible-tmp"))
    cmd = [os.path.join(BIN, "ansible"), "localhost", "-c", "local", "-b", "--become-method", "su",
           "--become-user", account.pw_name, "-e", "ansible_python_interpreter=/usr/bin/python3",
           "-m", "condafleet.proxy." + module, "-a", json.dumps(args)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
                          check=False)
    try:
        result = json.loads(proc.stdout)["plays"][0]["tasks"][0]["hosts"]["localhost"]
    except (ValueError, KeyError, IndexError):
        pytest.fail("no JSON result:\n%s\n%s" % (proc.stdout[-3000:], proc.stderr[-3000:]))
    return result


@pytest.mark.parametrize("module,args,path", [
    ("condarc_proxy", {"scope": "system", "http": PROXY, "https": PROXY}, "/etc/conda/.condarc"),
    ("condarc_policy", {"scope": "system", "channels": ["conda-forge"]}, "/etc/conda/.condarc"),
    ("env_proxy", {"scope": "system", "http_proxy": PROXY}, "/etc/environment"),
    ("conda_proxy", {"http": PROXY, "methods": ["condarc", "env"]}, "/etc/conda/.condarc"),
])
def test_system_scope_without_root_says_become(account, module, args, path):
    before = os.path.exists(path) and open(path, "rb").read()
    result = as_account(account, module, args)
    assert result.get("failed") is True, result
    assert result["msg"].startswith(("cannot write %s: " % path, ".condarc: cannot write %s: " % path)), result["msg"]
    assert "%s %s" % (account.pw_name, HINT) in result["msg"]
    assert (os.path.exists(path) and open(path, "rb").read()) == before


def test_a_root_file_the_account_cannot_read_says_become(account):
    """The same hint when it is the read that is refused (a 0600 .condarc of root's, here by path)."""
    base = tempfile.mkdtemp(prefix="condafleet-rootfile-", dir="/var/tmp")  # pytest's tmp dirs are private to root
    try:
        os.chmod(base, 0o755)
        condarc = os.path.join(base, ".condarc")
        with open(condarc, "w") as handle:
            handle.write("channels:\n  - defaults\n")
        os.chmod(condarc, 0o600)
        result = as_account(account, "condarc_proxy", {"path": condarc, "http": PROXY})
        assert result.get("failed") is True, result
        assert result["msg"] == "cannot read %s: Permission denied; %s %s" % (condarc, account.pw_name, HINT)
        with open(condarc) as handle:
            assert handle.read() == "channels:\n  - defaults\n"
    finally:
        shutil.rmtree(base)
