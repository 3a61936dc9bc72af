# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""conda_proxy_info: the module on POSIX hosts; on a Windows host, conda's view read from the controller
(``plugin_utils/_windows_info.py``), the registry's (WinINET) proxy included."""

from __future__ import annotations

from ansible.plugins.action.normal import ActionModule as NormalAction
from ansible_collections.condafleet.proxy.plugins.plugin_utils._windows_info import windows_info


class ActionModule(NormalAction):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        if getattr(self._connection._shell, "SHELL_FAMILY", "") != "powershell":
            return super().run(tmp, task_vars)
        return windows_info(self, dict(self._task.args), task_vars or {})
