# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this plugin util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""conda_proxy_info on a Windows host: conda's view, read from the controller with ansible.windows modules.

What differs from POSIX is where conda's requests take "the environment's proxies" from: with no ``*_proxy``
variable in conda's environment, Python's ``urllib.request.getproxies()`` falls back to the Internet Settings
(WinINET) proxy of the registry, which then overrides ``.condarc`` for every ``repodata.json.zst`` request
(see ``module_utils/_probe.py``). So the view reads:

* the ``.condarc`` files of conda's Windows search path (``ansible.windows.slurp``);
* the machine's and the account's environment variables from the registry (``win_reg_stat``): a new logon
  session (and so a new conda) gets the machine's, overridden by the account's;
* the account's Internet Settings (``win_reg_stat`` of ``HKCU``): ``ProxyEnable``, ``ProxyServer``,
  ``ProxyOverride``, ``AutoConfigURL``.

It makes no request from the host (the POSIX module's probe has no Windows twin) and reads the connecting
account's ``HKCU``: another account's view is had by connecting (or ``become_user``) as that account.
"""

from __future__ import annotations

import base64
import re

from ansible.module_utils.common.text.converters import to_native
from ansible_collections.condafleet.proxy.plugins.module_utils._combined import validate_args
from ansible_collections.condafleet.proxy.plugins.module_utils._probe import (
    REQUEST_KINDS,
    CondarcMerge,
    any_proxy_variable,
    info_argument_spec,
    mask_proxy_url,
    scheme_conflict,
    select_proxy_setting,
    source_of,
    wininet_proxies,
)
from ansible_collections.condafleet.proxy.plugins.module_utils._proxyurl import secrets_in
from ansible_collections.condafleet.proxy.plugins.plugin_utils._controller_edit import masked

try:
    from urllib.parse import urlsplit
except ImportError:  # pragma: no cover
    pass

INTERNET_SETTINGS = "HKCU:\\Software\\Microsoft\\Windows\\CurrentVersion\\Internet Settings"
USER_ENVIRONMENT = "HKCU:\\Environment"
MACHINE_ENVIRONMENT = "HKLM:\\SYSTEM\\CurrentControlSet\\Control\\Session Manager\\Environment"
WININET_VALUES = ("ProxyEnable", "ProxyServer", "ProxyOverride", "AutoConfigURL")

# conda/base/constants.py SEARCH_PATH on Windows (the condarc.d directories are not listed here: see the docs).
SYSTEM_CONDARCS = ("C:\\ProgramData\\conda\\.condarc", "C:\\ProgramData\\conda\\condarc")
HOME_CONDARCS = (".config\\conda\\.condarc", ".config\\conda\\condarc", ".conda\\.condarc", ".conda\\condarc",
                 ".condarc")

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
                   "SSL_CERT_FILE", "CONDARC")

UNSUPPORTED = ("user", "conda_executable")


class WindowsView:
    """Gathers what conda on a Windows host reads, through ``execute(module_name, module_args)``."""

    def __init__(self, execute) -> None:
        self._execute = execute
        self.secrets: list = []
        self.warnings: list = []
        self.problems: list = []

    # --- reading ---------------------------------------------------------------------------------------------
    def registry(self, path: str) -> dict:
        """``{name: value}`` of a registry key's properties; ``{}`` when the key does not exist."""
        res = self._execute("ansible.windows.win_reg_stat", {"path": path})
        if res.get("failed"):
            raise ValueError("cannot read the registry key %s: %s" % (path, to_native(res.get("msg", ""))))
        return dict((name, item.get("value")) for name, item in (res.get("properties") or {}).items()
                    if isinstance(item, dict))

    def file(self, path: str) -> bytes | None:
        res = self._execute("ansible.windows.slurp", {"src": path})
        if res.get("failed"):
            msg = to_native(res.get("msg", ""))
            if "not found" in msg.lower() or "does not exist" in msg.lower():
                return None
            raise ValueError("cannot read %s: %s" % (path, msg))
        return base64.b64decode(res["content"])

    def environment(self) -> dict:
        """A new logon session's variables: the machine's, then the account's over them; names upper case,
        as Python's ``os.environ`` has them on Windows."""
        env = {}
        for path in (MACHINE_ENVIRONMENT, USER_ENVIRONMENT):
            for name, value in self.registry(path).items():
                if isinstance(value, str):
                    env[name.upper()] = value
        return env

    # --- the view --------------------------------------------------------------------------------------------
    def gather(self, params: dict) -> dict:
        env = self.environment()
        wininet = dict((name, value) for name, value in self.registry(INTERNET_SETTINGS).items()
                       if name in WININET_VALUES)
        for value in list(env.values()) + [str(wininet.get("ProxyServer", ""))]:
            self.secrets.extend(secrets_in(value))

        merge = CondarcMerge(self.warnings)
        paths = list(SYSTEM_CONDARCS)
        if env.get("XDG_CONFIG_HOME"):
            paths += ["%s\\conda\\%s" % (env["XDG_CONFIG_HOME"].rstrip("\\/"), name) for name in (".condarc", "condarc")]
        paths += ["%%USERPROFILE%%\\%s" % name for name in HOME_CONDARCS]
        if env.get("CONDARC"):
            paths.append(env["CONDARC"])
        for path in paths:
            data = self.file(path)
            if data is not None:
                merge.add(path, data)
        servers = dict((key, value) for key, value in merge.proxy_servers.items())
        for value in servers.values():
            self.secrets.extend(secrets_in(value or ""))
        self.problems.extend(merge.problems)

        used = bool(wininet_proxies(wininet)) and not any_proxy_variable(env)
        result = dict(
            condarc_files=merge.files,
            proxy_servers=dict((key, mask_proxy_url(value) if value else value) for key, value in servers.items()),
            ssl_verify=merge.ssl_verify,
            environment=dict((name, mask_proxy_url(env[name])) for name in PROXY_VARIABLES if env.get(name)),
            wininet=dict(enabled=bool(wininet.get("ProxyEnable")),
                         proxy_server=mask_proxy_url(str(wininet["ProxyServer"])) if "ProxyServer" in wininet else None,
                         proxy_override=wininet.get("ProxyOverride"),
                         auto_config_url=wininet.get("AutoConfigURL"),
                         used_by_conda=used),
            warnings_found=self.warnings,
            conflicts=[],
        )
        if wininet.get("AutoConfigURL") and not used:
            self.warnings.append(
                "Internet Settings name a PAC file (AutoConfigURL %s): conda (Python's urllib) does not evaluate "
                "PAC files, only ProxyServer" % wininet["AutoConfigURL"])

        url = params.get("url")
        try:
            for scheme in ("http", "https"):
                sample = url if url and urlsplit(url).scheme.lower() == scheme else "%s://conda.anaconda.org/" % scheme
                conflict = scheme_conflict(scheme, sample, servers, env, wininet)
                if conflict:
                    setting = conflict.pop("setting")
                    result["conflicts"].append(conflict)
                    self.problems.append(self._conflict_message(scheme, conflict, setting))
            if url:
                result["requests"] = self._requests(url, servers, env, wininet, params)
        except re.error as exc:  # a ProxyOverride entry such as "[": requests raises it on every request
            self.problems.append("Internet Settings ProxyOverride %r is not a pattern requests can use; conda's requests "
                                 "fail with: %s" % (wininet.get("ProxyOverride"), exc))
        return result

    def _requests(self, url: str, servers: dict, env: dict, wininet: dict, params: dict) -> dict:
        seen = {}
        for kind in REQUEST_KINDS:
            proxy, setting = select_proxy_setting(url, servers, env, kind, wininet)
            seen[kind] = dict(proxy=mask_proxy_url(proxy) if proxy else None, source=source_of(setting),
                              setting=setting)
        if params.get("require_proxy") and any(item["proxy"] is None for item in seen.values()):
            self.problems.append(
                "no proxy would be used for %s (%s): neither .condarc proxy_servers, the environment's proxy "
                "variables nor the Internet Settings proxy cover it"
                % (url, ", ".join(kind for kind, item in seen.items() if item["proxy"] is None)))
        return seen

    @staticmethod
    def _conflict_message(scheme: str, conflict: dict, setting: str) -> str:
        where = conflict["variable"]
        if where == "WinINET ProxyServer":
            fix = ("set the proxy variables for the account (condafleet.proxy.env_proxy; they win over the registry) "
                   "or align Internet Settings with proxy_servers")
            told = "Internet Settings (WinINET) name %s" % conflict["environment"]
        else:
            fix = "make both name the same proxy and credentials, or remove %s" % where
            told = "the environment sets %s=%s" % (where, conflict["environment"])
        return ("conflict for %s:// URLs: %s, but .condarc has %s %s. conda would use both: repodata.json.zst is "
                "fetched through the first (that request passes no proxies=, and requests lets the environment's "
                "proxy, on Windows the registry's when no variable is set, override proxy_servers), packages "
                "through proxy_servers. To fix it, %s"
                % (scheme, told, setting, conflict["proxy_servers"] or "'' (a direct connection)", fix))


def windows_info(action, args: dict, task_vars: dict) -> dict:
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
