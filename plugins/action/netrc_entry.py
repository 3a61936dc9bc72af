# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""netrc_entry on hosts that cannot run Python modules (Windows): edit ``~/_netrc`` from the controller.

POSIX hosts run the module. See plugin_utils/_controller_edit.py for the flow.
"""

from __future__ import annotations

from ansible_collections.condafleet.proxy.plugins.module_utils import _netrc
from ansible_collections.condafleet.proxy.plugins.plugin_utils._controller_edit import ControllerFileEdit, HostKind


class ActionModule(ControllerFileEdit):
    posix_mode = "0600"
    _steps: tuple = ()

    def argument_spec(self) -> dict:
        return _netrc.argument_spec()

    def default_path(self, params: dict, host: HostKind) -> str:
        # requests reads ~/_netrc on Windows (after ~/.netrc, which Windows tools rarely create)
        return "~/_netrc" if host.windows else "~/.netrc"

    def render(self, before, params):
        # One entry or the list of `entries`, applied in order like the module does.
        after, self._steps = _netrc.plan_netrc_entries(before, _netrc.specs_from_params(params))
        return after

    def secrets(self, params: dict) -> list:
        return _netrc.secrets_of(_netrc.specs_from_params(params))

    def mask(self, text: str) -> str:
        return _netrc.mask_netrc(text)

    def result_extras(self, params: dict, after) -> dict:
        # The module's warnings for values that must be written quoted (readers that cannot read them).
        warnings = _netrc.quoting_warnings(params)
        extras: dict = {"warnings": warnings} if warnings else {}
        if params.get("entries") is not None:
            # The module's RV(entries), from the steps of the last render.
            extras["entries"] = _netrc.entries_result(self._steps)
        else:
            extras["machine"] = params.get("machine") if not params.get("default") else "default"
        return extras
