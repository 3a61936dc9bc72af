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
    on_controller,
    run_action,
    validate_args,
)


class ActionModule(NormalAction):
    # As for the three methods' plugins: the module pipelines on POSIX hosts without a remote temporary directory.
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        host = on_controller(self, task_vars)
        if host is None:
            return super().run(tmp, task_vars)
        try:
            params = validate_args(_combined.argument_spec(), dict(self._task.args))
        except ValueError as exc:
            return {"failed": True, "changed": False, "msg": mask_secrets(to_native(exc))}
        result = {"changed": False, "target_os": "Windows" if host.windows else None, "edited_from": "controller",
                  "condarc": [], "env": [], "netrc": []}
        diffs = []
        for call in _combined.method_calls(params):
            outcome = run_action(self, "condafleet.proxy." + call.module, call.args, task_vars)
            diff = outcome.pop("diff", [])
            diffs.extend(diff if isinstance(diff, list) else [diff])
            result[call.method].append(dict(outcome, user=call.user or None))
            result["changed"] = result["changed"] or bool(outcome.get("changed"))
            if call.method == "env" and not result["target_os"]:
                result["target_os"] = outcome.get("target_os")
            if outcome.get("failed"):
                return dict(result, failed=True,
                            msg=call.describe(ValueError(outcome.get("msg") or "%s failed" % call.module)))
        if not result["target_os"]:
            result["target_os"] = params["target_os"] if params["target_os"] != "auto" else None
        if self._task.diff:
            result["diff"] = diffs
        return result
