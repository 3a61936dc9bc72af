# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""env_proxy on Windows: the same variables, set in the registry with ansible.windows.win_environment.

POSIX hosts run the module. Windows hosts get the variables the module would write
(``variables_from_params``, the same code) at machine level (``scope: system``) or for
the connecting account (``scope: user``); win_environment broadcasts WM_SETTINGCHANGE so
new processes see them.
"""

from __future__ import annotations

from ansible.module_utils.common.text.converters import to_native
from ansible.plugins.action.normal import ActionModule as NormalAction
from ansible_collections.condafleet.proxy.plugins.module_utils._envfiles import (
    argument_spec,
    secret_forms,
    spec_from_params,
    variables_from_params,
)
from ansible_collections.condafleet.proxy.plugins.module_utils._methods import refuse_system_password
from ansible_collections.condafleet.proxy.plugins.module_utils._proxyurl import mask_secrets
from ansible_collections.condafleet.proxy.plugins.plugin_utils._controller_edit import (
    masked,
    refuse_root,
    validate_args,
)

# Options that only make sense for files on POSIX hosts.
_FILE_OPTIONS = ("path", "format", "target_os", "owner", "group", "mode", "follow", "backup")


def windows_environment_args(params: dict) -> dict:
    """The win_environment arguments for the validated env_proxy ``params``."""
    variables = variables_from_params(params)
    present = params["state"] == "present"
    return {
        "level": "machine" if params["scope"] == "system" else "user",
        # win_environment removes a variable given an empty value
        "variables": dict((name, value if present else "") for name, value in variables),
    }


class ActionModule(NormalAction):
    def run(self, tmp=None, task_vars=None):
        if getattr(self._connection._shell, "SHELL_FAMILY", "") != "powershell":
            return super().run(tmp, task_vars)
        result = {"changed": False}
        try:
            params = validate_args(argument_spec(), dict(self._task.args))
            given = [name for name in _FILE_OPTIONS if self._task.args.get(name) not in (None, False)]
            if given:
                raise ValueError("%s cannot be used on Windows hosts, where env_proxy sets registry variables"
                                 % ", ".join(given))
            refuse_root(params)
            if params.get("user") and params["scope"] == "user":
                raise ValueError("on Windows, user-level variables can only be set for the connecting account: "
                                 "connect as %s instead of using user" % params["user"])
            spec = spec_from_params(params)
            refuse_system_password("env", params, spec.has_literal_password)
            module_args = windows_environment_args(params)
        except ValueError as exc:
            return dict(result, failed=True, msg=mask_secrets(to_native(exc)))
        # the passwords only (every variable's whole value was masked, no_proxy included)
        secrets = secret_forms(spec_from_params(params).secrets)
        res = self._execute_module(module_name="ansible.windows.win_environment", module_args=module_args,
                                   task_vars=task_vars)
        self._remove_tmp_path(self._connection._shell.tmpdir)
        result.update(
            changed=bool(res.get("changed")),
            level=module_args["level"],
            variables=dict((name, mask_secrets(value)) for name, value in module_args["variables"].items()),
        )
        if res.get("failed"):
            result.update(failed=True, msg=res.get("msg", "win_environment failed"))
        if "diff" in res:
            result["diff"] = res["diff"]
        return masked(result, secrets)
