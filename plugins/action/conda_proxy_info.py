# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""conda_proxy_info: the module on POSIX hosts; on a Windows host, conda's view read from the controller
(``plugin_utils/_windows_info.py``), the registry's (WinINET) proxy included."""

from __future__ import annotations

from ansible.module_utils.common.text.converters import to_native
from ansible.plugins.action.normal import ActionModule as NormalAction
from ansible_collections.condafleet.proxy.plugins.module_utils._combined import validate_args
from ansible_collections.condafleet.proxy.plugins.module_utils._probe import info_argument_spec
from ansible_collections.condafleet.proxy.plugins.plugin_utils._controller_edit import masked
from ansible_collections.condafleet.proxy.plugins.plugin_utils._windows_info import UNSUPPORTED, WindowsView


class ActionModule(NormalAction):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        if getattr(self._connection._shell, "SHELL_FAMILY", "") != "powershell":
            return super().run(tmp, task_vars)
        return windows_info(self, dict(self._task.args), task_vars or {})


def windows_info(action: NormalAction, args: dict, task_vars: dict) -> dict:
    """conda_proxy_info's result for a Windows host (slurp and win_reg_stat only read, in check mode too)."""

    def execute(module_name: str, module_args: dict) -> dict:
        return action._execute_module(module_name=module_name, module_args=module_args, task_vars=task_vars)

    view = WindowsView(execute)
    result: dict = {"changed": False}
    try:
        params = validate_args(info_argument_spec(), args)
        unsupported = [name for name in UNSUPPORTED if params.get(name)]
        if unsupported:
            raise ValueError("%s cannot be used on Windows hosts: the view is the connecting account's (its HKCU "
                             "registry hive); connect, or use become_user, as the account" % ", ".join(unsupported))
        context = action._play_context
        result.update(user=(context.become_user if context.become else context.remote_user) or None,
                      conda=dict(path=None, found_by=None, proxy_servers=None), **view.gather(params))
    except ValueError as exc:
        result.update(failed=True, msg=to_native(exc))
    if view.problems and not result.get("failed"):
        result.update(failed=True, msg="; ".join(view.problems), problems=view.problems)
    action._remove_tmp_path(action._connection._shell.tmpdir)
    return masked(result, [secret for secret in view.secrets if secret])
