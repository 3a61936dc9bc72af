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

import gc
import os
import tempfile

from ansible import constants as C
from ansible.module_utils.common.text.converters import to_native
from ansible.plugins.action.normal import ActionModule as NormalAction
from ansible_collections.condafleet.proxy.plugins.module_utils import _combined
from ansible_collections.condafleet.proxy.plugins.module_utils._proxyurl import mask_secrets
from ansible_collections.condafleet.proxy.plugins.plugin_utils import _local_proxy
from ansible_collections.condafleet.proxy.plugins.plugin_utils._controller_edit import (
    WINDOWS_CONDA_DIR,
    HostKind,
    on_controller,
    refuse_root,
    run_action,
    validate_args,
)
from ansible_collections.condafleet.proxy.plugins.plugin_utils._windows_info import windows_info

DEFAULT_VERIFY_URL = "https://conda.anaconda.org/conda-forge/noarch/repodata.json"


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
        # This runs in a worker forked for this one task and host. A full garbage collection there walks every
        # object inherited from the controller's process, copying its pages (under Mitogen, whose per-task scan
        # of the installed collections tips the worker into one, ~60 ms per host: docs/performance.md); what the
        # worker inherited is not its garbage to collect.
        gc.freeze()
        task_vars = task_vars or {}
        host = on_controller(self, task_vars)
        if self._task.args.get("local_proxy"):
            result = self._with_local_proxy(tmp, host, task_vars)
        elif host is None:
            result = super().run(tmp, task_vars)
        else:
            result = self._from_controller(host, task_vars)
        if self._task.args.get("verify") and not result.get("failed"):
            result = self._verify(result, host, task_vars)
        return result

    def _with_local_proxy(self, tmp, host: HostKind | None, task_vars: dict) -> dict:
        """local_proxy: px or cntlm on 127.0.0.1 with the corporate proxy as its upstream (before the methods; after
        them with state=absent), the methods pointed at it with no credentials."""
        try:
            if host is not None and not host.windows:
                raise ValueError("local_proxy runs a service on the host: not with the files edited from the controller "
                                 "on a POSIX host")
            params = validate_args(_combined.argument_spec(), dict(self._task.args))
            planned = _local_proxy.plan(params, dict(self._task.args), windows=host is not None)
        except ValueError as exc:
            return {"failed": True, "changed": False,
                    "msg": "local_proxy: %s; nothing was changed on this host" % mask_secrets(to_native(exc))}
        result: dict = {"changed": False}
        if params["state"] == "present":
            failed = self._deploy_local_proxy(planned, result, task_vars)
            if failed:
                return failed
            planned.with_client_key(result.get("local_proxy") or {})
        task_args = self._task.args
        self._task.args = planned.method_args
        try:
            methods = super().run(tmp, task_vars) if host is None else self._from_controller(host, task_vars)
        finally:
            self._task.args = task_args
        merged = dict(methods, local_proxy=result.get("local_proxy"), changed=result["changed"] or bool(methods.get("changed")))
        for key in ("warnings", "deprecations"):  # the local proxy's (systemd not running...) before the methods'
            if result.get(key):
                merged[key] = result[key] + list(methods.get(key) or [])
        result = merged
        if params["state"] == "absent" and not methods.get("failed"):
            return self._local_auth_proxy(planned, result, task_vars) or result
        return result

    def _local_auth_proxy(self, planned, result: dict, task_vars: dict, note: str = "") -> dict | None:
        """Run local_auth_proxy (its action plugin: Windows from the controller) into ``result["local_proxy"]``;
        the failed result, or None."""
        outcome = run_action(self, "condafleet.proxy.local_auth_proxy", planned.proxy_args, task_vars)
        return self._local_proxy_outcome(result, outcome, note)

    def _local_proxy_outcome(self, result: dict, outcome: dict, note: str = "") -> dict | None:
        if outcome.get("failed"):
            outcome.pop(_local_proxy.CLIENT_KEY, None)  # (handed over on success only; never into a result)
        self._lift(result, outcome)
        result["local_proxy"] = outcome
        result["changed"] = result["changed"] or bool(outcome.get("changed"))
        if outcome.get("failed"):
            return dict(result, failed=True, msg="local_proxy: %s%s" % (outcome.get("msg", "local_auth_proxy failed"), note))
        return None

    def _deploy_local_proxy(self, planned, result: dict, task_vars: dict) -> dict | None:
        """The service account, then local_auth_proxy; for NTLM, when it says cntlm is missing (before writing
        anything), the cntlm package and local_auth_proxy again: a rerun pays for no package manager. Returns the
        failed result, or None."""
        if planned.service_user:
            failed = self._step(result, "ansible.legacy.user", {
                "name": planned.service_user, "system": True, "create_home": False, "shell": "/usr/sbin/nologin"},
                task_vars, planned)
            if failed or result.get("local_proxy"):
                return failed
        if planned.needs_cntlm:
            outcome = run_action(self, "condafleet.proxy.local_auth_proxy", planned.proxy_args, task_vars)
            if not outcome.get("cntlm_missing"):
                return self._local_proxy_outcome(result, outcome, "; the methods were not changed")
            # the package action plugin picks the host's package manager (apt, dnf, ...), as the package task does
            failed = self._step(result, "ansible.legacy.package", {"name": "cntlm", "state": "present"}, task_vars,
                                planned)
            if failed or result.get("local_proxy"):
                return failed
        return self._local_auth_proxy(planned, result, task_vars, note="; the methods were not changed")

    def _step(self, result: dict, name: str, args: dict, task_vars: dict, planned) -> dict | None:
        """One step before local_auth_proxy (the service account, the cntlm package): the failed result, or None.
        In check mode a step that would change something ends the task's plan there (``result["local_proxy"]``)."""
        if name == "ansible.legacy.package":
            outcome = run_action(self, name, args, task_vars)
        else:
            outcome = self._execute_module(module_name=name, module_args=args, task_vars=task_vars)
        self._lift(result, outcome)
        result["changed"] = result["changed"] or bool(outcome.get("changed"))
        if outcome.get("failed"):
            return dict(result, failed=True, msg="local_proxy: %s: %s" % (name, outcome.get("msg", "failed")))
        if self._task.check_mode and outcome.get("changed"):
            # local_auth_proxy's check needs what this step would make (the account, cntlm): say so, stop here
            result["local_proxy"] = {"changed": True, "proxy_url": planned.proxy_url,
                                     "msg": "not checked: %s would first be %s" % (
                                         args["name"], "created" if name.endswith("user") else "installed")}
        return None

    def _from_controller(self, host: HostKind, task_vars: dict) -> dict:
        """The methods through their own action plugins (Windows, or the controller-side path forced)."""
        result = {"changed": False, "target_os": "Windows" if host.windows else None, "edited_from": "controller",
                  "ca": [], "condarc": [], "env": [], "netrc": []}
        # Every option the methods' plugins would refuse is refused before the first of them writes anything.
        try:
            params = validate_args(_combined.argument_spec(), dict(self._task.args))
            _combined.check_ca_certificates(params)
            if params["ca_certificates"] is not None and params["scope"] == "user" and not host.windows:
                raise ValueError("ca_certificates with scope=user cannot be written from the controller on a POSIX "
                                 "host (the copy would run as root in the accounts' homes); let the module write it")
            calls = [call for call in _combined.method_calls(params) if call.method != "ca"]
            refuse_root(params)
            refused = _windows_refusals(params) if host.windows else []
            if refused:
                raise ValueError("; ".join(refused))
            for call in calls:
                if call.method == "condarc" and host.windows and call.args.get("ssl_verify") == _combined.CA_SYSTEM_PATH:
                    call.args["ssl_verify"] = host.join(WINDOWS_CONDA_DIR, _combined.CA_NAME)
                try:
                    call.check()
                except ValueError as exc:
                    raise ValueError(call.describe(exc))
        except ValueError as exc:
            return dict(result, failed=True, msg="%s; nothing was changed on this host" % mask_secrets(to_native(exc)))
        if not result["target_os"]:
            result["target_os"] = params["target_os"]
        diffs = []
        if params["ca_certificates"] is not None:
            failed = self._deploy_ca(params, host, task_vars, result)
            if failed:
                return failed
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

    def _deploy_ca(self, params: dict, host: HostKind, task_vars: dict, result: dict) -> dict | None:
        """ca_certificates from the controller: the system directory, or (Windows) each account's profile; with
        state=absent the file goes. Returns the failed result, or None."""
        owners = [""] if params["scope"] == "system" else (list(dict.fromkeys(params["users"])) or [""])
        present = params["state"] == "present"
        pem = params["ca_certificates"].encode("utf-8")
        pem += b"" if pem.endswith(b"\n") else b"\n"
        for user in owners:
            if params["scope"] == "system":
                path = host.join(WINDOWS_CONDA_DIR if host.windows else "/etc/conda", _combined.CA_NAME)
            else:
                path = host.join(host.home(user or None), ".conda", _combined.CA_NAME)
            if present:
                directory = {"path": path.rsplit(host.sep, 1)[0], "state": "directory"}
                if not host.windows:
                    directory["mode"] = "0755"
                made = self._execute_module(module_name=host.file, module_args=directory, task_vars=task_vars)
                if made.get("failed"):
                    return dict(result, failed=True, msg="corporate CA: %s" % made.get("msg"))
                outcome = self._copy_content(host, path, pem, task_vars)
            else:
                outcome = self._execute_module(module_name=host.file, module_args={"path": path, "state": "absent"},
                                               task_vars=task_vars)
            outcome.pop("diff", None)
            self._lift(result, outcome)
            result["ca"].append({"user": user or None, "path": path, "changed": bool(outcome.get("changed"))})
            result["changed"] = result["changed"] or bool(outcome.get("changed"))
            if outcome.get("failed"):
                return dict(result, failed=True, msg="corporate CA: %s" % outcome.get("msg", "copy failed"))
        return None

    def _copy_content(self, host: HostKind, path: str, content: bytes, task_vars: dict) -> dict:
        """``content`` to ``path`` with the copy action of the host's OS (from a private local file, as the
        methods' plugins write theirs)."""
        local_dir = tempfile.mkdtemp(dir=C.DEFAULT_LOCAL_TMP)
        local = os.path.join(local_dir, "content")
        try:
            fd = os.open(local, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(content)
            args = {"src": local, "dest": path}
            if not host.windows:
                args["mode"] = "0644"
            return run_action(self, host.copy, args, task_vars)
        finally:
            if os.path.exists(local):
                os.unlink(local)
            os.rmdir(local_dir)

    def _verify(self, result: dict, host: HostKind | None, task_vars: dict) -> dict:
        """conda_proxy_info for each account after the configuration: a request through the proxy conda would use,
        run as that account on the host. Fails the task with its message when one fails."""
        args = self._task.args
        if args.get("state", "present") != "present":
            return result
        if host is not None and host.windows:
            # No request from a Windows host: conda's view read from the controller, the registry's proxy included
            outcome = windows_info(self, {"url": args.get("verify_url") or DEFAULT_VERIFY_URL}, task_vars)
            self._lift(result, outcome)
            result["verify"] = [dict(outcome, user=None)]
            if outcome.get("failed"):
                return dict(result, failed=True, msg="verify: %s" % outcome.get("msg", "conda_proxy_info failed"))
            return result
        conda = args.get("verify_conda_executable")
        result["verify"] = []
        for user in list(dict.fromkeys(args.get("users") or [])) or [""]:
            module_args = {"url": args.get("verify_url") or DEFAULT_VERIFY_URL,
                           "timeout": args.get("verify_timeout") or 20}
            if user:
                module_args["user"] = user
            executable = conda.get(user) if isinstance(conda, dict) else conda
            if executable:
                module_args["conda_executable"] = executable
            outcome = self._execute_module(module_name="condafleet.proxy.conda_proxy_info", module_args=module_args,
                                           task_vars=task_vars)
            self._lift(result, outcome)
            result["verify"].append(dict(outcome, user=user or None))
            if outcome.get("failed"):
                return dict(result, failed=True, msg="verify%s: %s" % (" of %s" % user if user else "",
                                                                       outcome.get("msg", "conda_proxy_info failed")))
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
