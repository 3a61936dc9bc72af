# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Three ways of running the collection's modules from tests.

* :func:`call_module` runs a module's ``main()`` in-process with ``patch_module_args``
  (fast; for the many edge cases).
* :func:`run_adhoc` runs ``ansible localhost -m condafleet.proxy.<module>`` as a user
  would, through the real ansible CLI, module transfer and result masking included.
* :func:`run_playbook` runs a playbook against an inventory (the lab's hosts over SSH) and reads the JSON
  callback's output.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

from ansible.module_utils.testing import patch_module_args


def call_module(module: str, args: dict, check: bool = False, diff: bool = False) -> dict:
    """Run ``plugins/modules/<module>.py`` in-process; returns the result (``failed`` set on failure)."""
    mod = importlib.import_module("ansible_collections.condafleet.proxy.plugins.modules.%s" % module)
    full = dict(args, _ansible_check_mode=check, _ansible_diff=diff, _ansible_remote_tmp="/tmp", _ansible_keep_remote_files=False)
    from io import StringIO
    from unittest import mock

    out = StringIO()
    with patch_module_args(full), mock.patch.object(sys, "stdout", out):
        try:
            mod.main()
        except SystemExit:
            pass
    text = out.getvalue()
    return json.loads(text[text.index("{"):])


def tree(root) -> dict:
    """Every file under ``root`` with its bytes (directories as None): to compare a whole sandbox."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(str(root)):
        for name in dirnames:
            out[os.path.relpath(os.path.join(dirpath, name), str(root))] = None
        for name in filenames:
            with open(os.path.join(dirpath, name), "rb") as handle:
                out[os.path.relpath(os.path.join(dirpath, name), str(root))] = handle.read()
    return out


def run_adhoc(module: str, args: dict, check: bool = False, diff: bool = False, verbosity: int = 0,
              env: dict | None = None, extra_vars: dict | None = None) -> tuple[dict, str]:
    """Run the module with ``ansible localhost -m``; returns ``(result, raw stdout+stderr)``."""
    cmd = [os.path.join(os.path.dirname(sys.executable), "ansible"), "localhost", "-m",
           "condafleet.proxy.%s" % module, "-a", json.dumps(args), "-c", "local",
           "-e", "ansible_python_interpreter=%s" % sys.executable]
    if extra_vars:
        cmd += ["-e", json.dumps(extra_vars)]
    if check:
        cmd.append("--check")
    if diff:
        cmd.append("--diff")
    if verbosity:
        cmd.append("-" + "v" * verbosity)
    full_env = dict(os.environ, ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json",
                    ANSIBLE_NOCOLOR="1", ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_INVENTORY_UNPARSED_WARNING="0")
    full_env.update(env or {})
    proc = subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=120, check=False)
    raw = proc.stdout + proc.stderr
    data = json.loads(proc.stdout[proc.stdout.index("{"):])
    result = data["plays"][0]["tasks"][0]["hosts"]["localhost"]
    return result, raw


def run_playbook(inventory: str, workdir: str, text: str, variables: dict, host: str, check: bool = False,
                 timeout: float = 900) -> tuple[dict | None, str]:
    """``ansible-playbook`` of ``text`` with ``variables`` (a 0600 file under ``workdir``, never the command line)
    against ``inventory``; returns ``(the last task's result on host, raw output)``."""
    path = os.path.join(workdir, "play.yml")
    with open(path, "w") as handle:
        handle.write(text)
    extra = os.path.join(workdir, "vars.json")
    with open(os.open(extra, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
        json.dump(variables, handle)
    bindir = os.path.dirname(sys.executable)
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PATH=bindir + os.pathsep + os.environ.get("PATH", ""),
               ANSIBLE_COLLECTIONS_PATH=os.path.join(repo, "collections"), ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json",
               ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_NOCOLOR="1", ANSIBLE_HOST_KEY_CHECKING="0",
               ANSIBLE_RETRY_FILES_ENABLED="0")
    proc = subprocess.run([os.path.join(bindir, "ansible-playbook"), "-i", inventory, path, "-e", "@" + extra]
                          + (["--check"] if check else []), cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    raw = proc.stdout + proc.stderr
    assert "{" in proc.stdout, raw[-5000:]
    data = json.loads(proc.stdout[proc.stdout.index("{"):])
    tasks = data["plays"][-1]["tasks"]
    return (tasks[-1]["hosts"].get(host) if tasks else None), raw
