# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""condarc_proxy on hosts that cannot run Python modules (Windows): edit .condarc from the controller.

POSIX hosts run the module. On Windows, conda reads ``%USERPROFILE%\\.condarc`` (user scope) and
``C:\\ProgramData\\conda\\.condarc`` (system scope). See plugin_utils/_controller_edit.py for the flow.
"""

from __future__ import annotations

from ansible_collections.condafleet.proxy.plugins.module_utils import _condarc
from ansible_collections.condafleet.proxy.plugins.module_utils._proxyurl import mask_secrets
from ansible_collections.condafleet.proxy.plugins.module_utils._methods import refuse_system_password
from ansible_collections.condafleet.proxy.plugins.plugin_utils._controller_edit import ControllerFileEdit, HostKind, condarc_default_path


class ActionModule(ControllerFileEdit):
    def argument_spec(self) -> dict:
        return _condarc.argument_spec()

    def constraints(self) -> dict:
        return {"mutually_exclusive": _condarc.MUTUALLY_EXCLUSIVE, "required_if": _condarc.REQUIRED_IF}

    def default_path(self, params: dict, host: HostKind) -> str:
        return condarc_default_path(params, host)

    def resolve(self, params: dict, host: HostKind) -> dict:
        """conda does not expand ``~`` in ``ssl_verify``: write the account's home, as the module does. A literal
        password in the system file is refused as the module refuses it."""
        refuse_system_password("condarc", params, _condarc.spec_from_params(params).has_literal_password,
                               self.default_path(params, host))
        ssl_verify = params.get("ssl_verify")
        if isinstance(ssl_verify, str) and ssl_verify.startswith("~"):
            if host.windows:
                ssl_verify = host.expand_home(ssl_verify, params.get("user"))
            else:
                if params.get("user") and (ssl_verify == "~" or ssl_verify.startswith("~/")):
                    ssl_verify = "~%s%s" % (params["user"], ssl_verify[1:])
                # One remote `echo ~name`, only when the value starts with ~ (as the copy action does for dest).
                ssl_verify = self._remote_expand_user(ssl_verify)
                if ssl_verify.startswith("~"):
                    raise ValueError("ssl_verify: %s names no account on this host" % params["ssl_verify"])
            params = dict(params, ssl_verify=ssl_verify)
        return params

    def render(self, before, params):
        return _condarc.render_condarc(before, _condarc.spec_from_params(params))

    def secrets(self, params: dict) -> list:
        return sorted(_condarc.spec_from_params(params).secrets, key=len, reverse=True)

    def mask(self, text: str) -> str:
        return mask_secrets(text)

    def result_extras(self, params: dict, after) -> dict:
        spec = _condarc.spec_from_params(params)
        present = spec.state == "present"
        return {"proxy_servers": spec.masked_proxy_servers() if present else {},
                "ssl_verify": spec.ssl_verify if present else None}
