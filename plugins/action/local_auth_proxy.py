# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""local_auth_proxy on Windows: px for the connecting account, from the controller.

POSIX hosts run the module. On Windows px authenticates with the logged-on account's own credentials through
SSPI (Kerberos or NTLM single sign-on), so nothing secret is written and cntlm is not used: ``auth`` is
``kerberos``, ``ntlm`` (both without ``username``/``password``) or ``none``. With ansible.windows modules:
``win_shell`` reads px's version from the venv (and creates it / runs pip when it differs), ``win_copy`` writes
``px.ini`` under ``%LOCALAPPDATA%\\condafleet\\auth-proxy``, ``win_regedit`` registers px in the account's ``Run``
key so it starts, hidden (``pythonw``), at every logon. ``state=absent`` removes the ``Run`` value and the file.
"""

from __future__ import annotations

import base64
import os
import tempfile

from ansible import constants as C
from ansible.module_utils.common.text.converters import to_native
from ansible.plugins.action.normal import ActionModule as NormalAction
from ansible_collections.condafleet.proxy.plugins.module_utils import _authproxy
from ansible_collections.condafleet.proxy.plugins.module_utils._combined import validate_args
from ansible_collections.condafleet.proxy.plugins.plugin_utils._controller_edit import run_action
from ansible_collections.condafleet.proxy.plugins.plugin_utils._local_proxy import CLIENT_KEY

CONFIG_DIR = "%LOCALAPPDATA%\\condafleet\\auth-proxy"
DEFAULT_VENV = "%LOCALAPPDATA%\\condafleet\\px"
RUN_KEY = "HKCU:\\Software\\Microsoft\\Windows\\CurrentVersion\\Run"
POSIX_ONLY = ("user", "service_user", "cntlm_path", "follow")


def powershell_quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def version_script(venv: str) -> str:
    """PowerShell printing px's version in ``venv`` (nothing when there is none); reads only."""
    return ("$py = Join-Path ([Environment]::ExpandEnvironmentVariables(%s)) 'Scripts\\python.exe'\n"
            "if (Test-Path -LiteralPath $py) { & $py -c \"import importlib.metadata as m; print(m.version('px-proxy'))\" "
            "2>$null }\n" % powershell_quote(venv))


def install_script(venv: str, python: str, pip_args: list) -> str:
    """PowerShell creating ``venv`` with ``python`` when missing, then pip installing px (``pip_args``)."""
    return ("$ErrorActionPreference = 'Stop'\n"
            "$venv = [Environment]::ExpandEnvironmentVariables(%s)\n"
            "$py = Join-Path $venv 'Scripts\\python.exe'\n"
            "if (-not (Test-Path -LiteralPath $py)) { & %s -m venv $venv; if ($LASTEXITCODE) { throw 'venv failed' } }\n"
            "& $py %s\n"
            "if ($LASTEXITCODE) { throw 'pip install of px failed' }\n"
            % (powershell_quote(venv), powershell_quote(python), " ".join(powershell_quote(a) for a in pip_args)))


class ActionModule(NormalAction):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        if getattr(self._connection._shell, "SHELL_FAMILY", "") != "powershell":
            # The per-account px's client key goes only to the conda_proxy action plugin that asks for it (to write
            # it into the account's own files), never into a task's result.
            args = dict(self._task.args)
            wanted = args.pop(CLIENT_KEY, False)
            self._task.args = args
            result = super().run(tmp, task_vars)
            key = result.pop("client_key", None)
            if wanted and key and not result.get("failed"):
                result[CLIENT_KEY] = key
            return result
        self._vars = task_vars or {}
        try:
            result = self._windows(validate_args(_authproxy.argument_spec(), dict(self._task.args)))
        except ValueError as exc:
            result = {"changed": False, "failed": True, "msg": to_native(exc)}
        self._remove_tmp_path(self._connection._shell.tmpdir)
        return result

    def _module(self, name: str, args: dict, read_only: bool = False) -> dict:
        check_mode = self._task.check_mode
        if read_only:  # win_shell skips itself in check mode; this one only reads, and check mode needs it
            self._task.check_mode = False
        try:
            return self._execute_module(module_name=name, module_args=args, task_vars=self._vars)
        finally:
            self._task.check_mode = check_mode

    def _windows(self, params: dict) -> dict:
        given = [name for name in POSIX_ONLY if params.get(name)]
        if given:
            raise ValueError("%s cannot be used on Windows hosts: px runs for the connecting account, at its logon"
                             % ", ".join(given))
        auth, present = params["auth"], params["state"] == "present"
        if present and auth not in ("kerberos", "ntlm", "none"):
            raise ValueError("auth=%s is not offered on Windows hosts: px uses the logged-on account's own Windows "
                             "credentials (auth=kerberos or auth=ntlm, single sign-on, nothing written), or auth=none"
                             % auth)
        if params["username"] or params["password"] or params["ntlm_hash"]:
            raise ValueError("on Windows px logs in with the logged-on account's credentials (SSPI): give no username, "
                             "password or ntlm_hash, nothing secret is written")
        port = _authproxy.check_port(params["listen_port"])
        venv = DEFAULT_VENV if params["venv"] in (None, "/opt/condafleet/px") else params["venv"]
        config = (params["config_dir"] or CONFIG_DIR).rstrip("\\") + "\\px.ini"
        name = params["service_name"]
        result = {"changed": False, "proxy_url": "http://%s:%d" % (_authproxy.LOOPBACK, port), "scope": "user",
                  "engine": "px", "unit_path": "%s\\%s" % (RUN_KEY, name), "config_path": config,
                  "credential_path": None, "files": [], "backup_files": [], "venv": venv, "px_version": None,
                  "pip_ran": False, "service": {"manager": "run-key", "started": False, "enabled": False,
                                                "stopped": False}}
        if not present:
            return self._absent(result, config, name)
        upstream = ["%s:%d" % _authproxy.parse_upstream(entry) for entry in params["upstream"]]
        pac = _authproxy.check_pac_url(params["pac_url"]) if params["pac_url"] else None
        if bool(upstream) == bool(pac):
            raise ValueError("give exactly one of upstream (the proxies, host:port) and pac_url")
        ini = _authproxy.render_px_ini(auth, port, upstream, pac, _authproxy.check_no_proxy(params["no_proxy"]),
                                       None, params["pac_reload"])

        have = self._module("ansible.windows.win_shell", {"_raw_params": version_script(venv)}, read_only=True)
        if have.get("failed"):
            raise ValueError("cannot read px's version in %s: %s" % (venv, have.get("msg") or have.get("stderr")))
        result["px_version"] = (have.get("stdout") or "").strip() or None
        if result["px_version"] != params["px_version"]:
            result.update(changed=True, pip_ran=not self._task.check_mode)
            if not self._task.check_mode:
                pip = _authproxy.pip_install_argv("python", params["px_version"], params["px_source"],
                                                  params["pip_index_url"])[1:]
                done = self._module("ansible.windows.win_shell",
                                    {"_raw_params": install_script(venv, params["python"] or "py", pip)})
                if done.get("failed"):
                    return dict(result, failed=True, msg="installing px into %s failed: %s"
                                % (venv, done.get("stderr") or done.get("msg")))
                result["px_version"] = params["px_version"]

        written = self._file(config, ini)
        result["files"].append({"path": config, "changed": bool(written.get("changed"))})
        command = '"%s\\Scripts\\pythonw.exe" -m px --config="%s"' % (venv, config)
        run_value = {"path": RUN_KEY, "name": name, "data": command, "type": "expandstring", "state": "present"}
        registered = self._module("ansible.windows.win_regedit", run_value)
        for outcome in (written, registered):
            if outcome.get("failed"):
                return dict(result, failed=True, msg=outcome.get("msg", "failed"))
        result["service"]["enabled"] = True
        result["changed"] = result["changed"] or bool(written.get("changed")) or bool(registered.get("changed"))
        if result["changed"]:
            result["warnings"] = ["px starts at the account's next logon (the Run key); to use it now, log off and on "
                                  "or run: %s" % command]
        return result

    def _file(self, path: str, content: bytes) -> dict:
        before = self._module("ansible.windows.slurp", {"src": path}, read_only=True)
        if not before.get("failed") and base64.b64decode(before["content"]) == content:
            return {"changed": False}
        if self._task.check_mode:
            return {"changed": True}
        local_dir = tempfile.mkdtemp(dir=C.DEFAULT_LOCAL_TMP)
        local = os.path.join(local_dir, "content")
        try:
            with open(local, "wb") as handle:
                handle.write(content)
            return run_action(self, "ansible.windows.win_copy", {"src": local, "dest": path}, self._vars)
        finally:
            os.unlink(local)
            os.rmdir(local_dir)

    def _absent(self, result: dict, config: str, name: str) -> dict:
        for module, args in (("ansible.windows.win_regedit", {"path": RUN_KEY, "name": name, "state": "absent"}),
                             ("ansible.windows.win_file", {"path": config, "state": "absent"})):
            outcome = self._module(module, args)
            if outcome.get("failed"):
                return dict(result, failed=True, msg=outcome.get("msg", "%s failed" % module))
            result["changed"] = result["changed"] or bool(outcome.get("changed"))
        result["files"].append({"path": config, "changed": result["changed"]})
        return result
