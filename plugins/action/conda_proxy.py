# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""conda_proxy on hosts that cannot run Python modules (Windows): the three methods' action plugins in turn.

POSIX hosts run the module: one execution for every method and account. On Windows (or with
``condafleet_proxy_edit_on_controller``) the task runs ``condarc_proxy``, ``env_proxy`` and
``netrc_entry`` with the arguments the module would plan (``_combined.method_calls``), each
through its own action plugin, and returns their results in the module's shape.
"""

from __future__ import annotations

from ansible.module_utils.common.text.converters import to_native
from ansible.plugins.action.normal import ActionModule as NormalAction
from ansible_collections.condafleet.proxy.plugins.module_utils import _combined
from ansible_collections.condafleet.proxy.plugins.module_utils._proxyurl import mask_secrets
from ansible_collections.condafleet.proxy.plugins.plugin_utils._controller_edit import (
    FORCE_VAR,
    on_controller,
    refuse_root,
    run_action,
    validate_args,
)


def _windows_refusals(params: dict) -> list[str]:
    """What env_proxy's Windows path would refuse half-way through the task, said before anything is written."""
    if "env" not in params["methods"]:
        return []
    refused = []
    if params["target_os"] != "auto":
        refused.append("target_os cannot be used on Windows hosts, where the environment variables go to the registry")
    if params["scope"] == "user" and params["users"]:
        refused.append("on Windows, user-level variables can only be set for the connecting account: connect as "
                       "each of %s instead of using users" % ", ".join(params["users"]))
    return refused


class ActionModule(NormalAction):
    # As for the three methods' plugins: the module pipelines on POSIX hosts without a remote temporary directory.
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        host = on_controller(self, task_vars)
        if host is None:
            return super().run(tmp, task_vars)
        result = {"changed": False, "target_os": "Windows" if host.windows else None, "edited_from": "controller",
                  "condarc": [], "env": [], "netrc": []}
        # Every option the methods' plugins would refuse is refused before the first of them writes anything.
        try:
            params = validate_args(_combined.argument_spec(), dict(self._task.args))
            if params["ca_certificates"] is not None:
                raise ValueError("ca_certificates is written by the module on the hosts that run it; when the files "
                                 "are edited from the controller (Windows hosts, %s) copy the CA with "
                                 "ansible.windows.win_copy or ansible.builtin.copy and give its path in ssl_verify"
                                 % FORCE_VAR)
            calls = _combined.method_calls(params)
            refuse_root(params)
            refused = _windows_refusals(params) if host.windows else []
            if refused:
                raise ValueError("; ".join(refused))
            for call in calls:
                try:
                    call.check()
                except ValueError as exc:
                    raise ValueError(call.describe(exc))
        except ValueError as exc:
            return dict(result, failed=True, msg="%s; nothing was changed on this host" % mask_secrets(to_native(exc)))
        if not result["target_os"]:
            result["target_os"] = params["target_os"]
        diffs = []
        for call in calls:
            try:
                outcome = run_action(self, "condafleet.proxy." + call.module, call.args, task_vars)
            except Exception as exc:  # an AnsibleError of the connection: keep what was applied before it
                outcome = {"failed": True, "msg": to_native(exc)}
            diff = outcome.pop("diff", [])
            if outcome.get("changed"):
                diffs.extend(diff if isinstance(diff, list) else [diff])
            self._lift(result, outcome)
            result[call.method].append(dict(outcome, user=call.user or None))
            result["changed"] = result["changed"] or bool(outcome.get("changed"))
            if call.method == "env" and outcome.get("target_os"):
                result["target_os"] = outcome["target_os"]
            if outcome.get("failed"):
                return dict(result, failed=True,
                            msg=mask_secrets(call.describe(ValueError(outcome.get("msg") or "%s failed" % call.module))))
        if self._task.diff:
            result["diff"] = diffs
        return result

    @staticmethod
    def _lift(result: dict, outcome: dict) -> None:
        """Move what Ansible reads at the top of a task result (warnings, facts) out of a method's result."""
        for key in ("warnings", "deprecations"):
            if outcome.get(key):
                result.setdefault(key, []).extend(outcome.pop(key))
        if outcome.get("ansible_facts"):
            result.setdefault("ansible_facts", {}).update(outcome.pop("ansible_facts"))
        for key in [key for key in outcome if key == "invocation" or key.startswith("_ansible")]:
            del outcome[key]
