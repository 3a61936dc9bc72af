# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""condarc_policy on hosts that cannot run Python modules (Windows): edit .condarc from the controller.

POSIX hosts run the module. On Windows, conda reads ``%USERPROFILE%\\.condarc`` (user scope) and
``C:\\ProgramData\\conda\\.condarc`` (system scope). See plugin_utils/_controller_edit.py for the flow;
the bytes are rendered by the same module_utils the module uses.
"""

from __future__ import annotations

from ansible_collections.condafleet.proxy.plugins.module_utils import _policy
from ansible_collections.condafleet.proxy.plugins.plugin_utils._controller_edit import ControllerFileEdit, HostKind, condarc_default_path


class ActionModule(ControllerFileEdit):
    def argument_spec(self) -> dict:
        return _policy.argument_spec()

    def constraints(self) -> dict:
        return {"mutually_exclusive": _policy.MUTUALLY_EXCLUSIVE, "required_if": _policy.REQUIRED_IF}

    def default_path(self, params: dict, host: HostKind) -> str:
        return condarc_default_path(params, host)

    def resolve(self, params: dict, host: HostKind) -> dict:
        _policy.spec_from_params(params)  # refuse bad values before the host is read
        return params

    def render(self, before, params):
        return _policy.render_policy(before, _policy.spec_from_params(params))

    def result_extras(self, params: dict, after) -> dict:
        return _policy.policy_result(_policy.spec_from_params(params))
