# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""conda_installer on Windows: the ``.exe`` installer, verified and run from the controller with ansible.windows.

POSIX hosts (Linux, macOS) run the module. On a Windows host (PowerShell shell family) this plugin takes the
same decisions with the same code (``module_utils/_installer.py``) and does the work with ansible.windows
modules: ``win_stat``/``win_find`` read the prefix, ``win_uri`` fetches a checksum file, ``win_get_url`` downloads
the installer to ``<cache>\\<sha256>.exe`` with the digest checked (it downloads to its own temp file and fails,
naming both digests, before anything reaches the cache; a cached file with the right digest is not downloaded
again), ``win_command`` runs it as ``/S /InstallationType=... /RegisterPython=0 /AddToPath=0 /D=PREFIX``, and
``win_file`` removes a prefix whose install failed.
"""

from __future__ import annotations

import os
import tempfile

from ansible import constants as C
from ansible.module_utils.common.text.converters import to_native
from ansible.plugins.action.normal import ActionModule as NormalAction
from ansible_collections.condafleet.proxy.plugins.module_utils import _installer
from ansible_collections.condafleet.proxy.plugins.module_utils._condarc import read_proxy_settings
from ansible_collections.condafleet.proxy.plugins.module_utils._probe import mask_proxy_url
from ansible_collections.condafleet.proxy.plugins.module_utils._proxyurl import secrets_in
from ansible_collections.condafleet.proxy.plugins.plugin_utils._controller_edit import masked, run_action, validate_args

try:
    from urllib.parse import unquote, urlsplit, urlunsplit
except ImportError:  # pragma: no cover
    pass

WINDOWS_SYSTEM_CONDARC = "C:\\ProgramData\\conda\\.condarc"
WINDOWS_USER_CONDARC = "%USERPROFILE%\\.condarc"


class Refused(Exception):
    """The task fails with this message (after removing what this run made)."""


def split_proxy(proxy: str) -> dict:
    """win_get_url's proxy options for a proxy URL: the credentials go to proxy_username/proxy_password."""
    parts = urlsplit(proxy)
    args = {"use_proxy": True}
    netloc = parts.hostname or ""
    if parts.port:
        netloc += ":%d" % parts.port
    args["proxy_url"] = urlunsplit((parts.scheme, netloc, "", "", ""))
    if parts.username:
        args["proxy_username"] = unquote(parts.username)
    if parts.password:
        args["proxy_password"] = unquote(parts.password)
    return args


class ActionModule(NormalAction):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        if getattr(self._connection._shell, "SHELL_FAMILY", "") != "powershell":
            return super().run(tmp, task_vars)
        self._vars = task_vars or {}
        self._secrets: list = []
        result: dict = {"changed": False}
        try:
            params = validate_args(_installer.argument_spec(), dict(self._task.args),
                                   required_if=_installer.REQUIRED_IF)
            if params.get("proxy"):
                self._secrets = secrets_in(params["proxy"]) + [unquote(s) for s in secrets_in(params["proxy"])]
            result.update(prefix=params["prefix"], wanted_version=params["version"])
            self._windows(params, result)
        except (ValueError, Refused) as exc:
            result.update(failed=True, msg=to_native(exc))
            result["changed"] = bool(result.get("changed")) and not result.get("failed")
        self._remove_tmp_path(self._connection._shell.tmpdir)
        return masked(result, [s for s in self._secrets if s])

    # --- helpers --------------------------------------------------------------------------------------------
    def _module(self, name: str, args: dict, check_mode: bool | None = None) -> dict:
        saved = self._task.check_mode
        if check_mode is not None:
            self._task.check_mode = check_mode
        try:
            return self._execute_module(module_name=name, module_args=args, task_vars=self._vars)
        finally:
            self._task.check_mode = saved

    def _exists(self, path: str) -> bool:
        res = self._module("ansible.windows.win_stat", {"path": path, "get_checksum": False})
        if res.get("failed"):
            raise Refused("cannot read %s: %s" % (path, res.get("msg")))
        return bool(res.get("stat", {}).get("exists"))

    def _version(self, prefix: str) -> str | None:
        res = self._module("ansible.windows.win_find", {"paths": prefix + "\\conda-meta", "patterns": ["conda-*.json"]})
        if res.get("failed"):
            return None
        return _installer.version_from_conda_meta([f.get("filename", "") for f in res.get("files", [])])

    def _read(self, path: str) -> bytes | None:
        import base64

        res = self._module("ansible.windows.slurp", {"src": path})
        if res.get("failed"):
            return None
        return base64.b64decode(res.get("content", ""))

    def _condarc_proxy(self, url: str, warnings: list) -> tuple:
        """The proxy conda would use on the host, from the system and the connecting account's ``.condarc``."""
        settings = []
        for path in (WINDOWS_SYSTEM_CONDARC, WINDOWS_USER_CONDARC):
            data = self._read(path)
            if data is None:
                continue
            try:
                settings.append(read_proxy_settings(data))
            except ValueError as exc:
                warnings.append("%s cannot be parsed (conda skips it too): %s" % (path, exc))
        servers, _ssl_verify = _installer.merge_settings(settings)
        return _installer.choose_proxy(url, None, servers, {})

    def _remove(self, path: str) -> None:
        res = self._module("ansible.windows.win_file", {"path": path, "state": "absent"})
        if res.get("failed"):
            raise Refused("cannot remove %s: %s" % (path, res.get("msg")))

    def _uninstall(self, prefix: str) -> None:
        """Run the prefix's own uninstaller (it unregisters what the installer registered), then remove the rest."""
        found = self._module("ansible.windows.win_find", {"paths": prefix, "patterns": ["Uninstall-*.exe"]})
        for item in found.get("files", [])[:1]:
            self._module("ansible.windows.win_command", {"cmd": '"%s" /S _?=%s' % (item["path"], prefix)})
        self._remove(prefix)

    # --- the flow -------------------------------------------------------------------------------------------
    def _windows(self, params: dict, result: dict) -> None:
        prefix = params["prefix"].rstrip("\\")
        problem = _installer.windows_prefix_problem(prefix)
        if problem:
            raise ValueError(problem)
        connecting = self._vars.get("ansible_user") or self._play_context.remote_user
        if params.get("user") and params["user"] != connecting:
            raise ValueError("on Windows, conda_installer installs for the connecting account only (JustMe): connect "
                             "as %s instead of using user" % params["user"])
        all_users = params["all_users"] if params["all_users"] is not None else not params.get("user")
        marker = prefix + "\\" + _installer.MARKER
        exists = self._exists(prefix)
        installed = self._version(prefix) if exists else None
        managed = exists and self._exists(marker)
        result.update(prefix=prefix, previous_version=installed, version=installed)

        if params["state"] == "absent":
            action = _installer.plan("absent", exists, installed, None, False, managed)
            result["action"] = action
            if action == "remove":
                result.update(changed=True, version=None)
                if not self._task.check_mode:
                    self._uninstall(prefix)
            return

        url = _installer.validate_url(params["url"])
        name = _installer.installer_name(url)
        given = _installer.normalize_sha256(params["sha256"]) if params["sha256"] else None
        if given is None and not params["checksum_url"]:
            raise ValueError("state=present needs sha256 or checksum_url: an installer is never run unverified")
        warnings: list = []
        if params["proxy"] is not None:
            proxy, source = _installer.choose_proxy(url, params["proxy"], {}, {})
        else:
            proxy, source = self._condarc_proxy(url, warnings)
            if proxy is None and source == "none":
                source = "system"  # win_get_url then uses the account's Internet Settings proxy, as conda would
        if proxy:
            self._secrets += secrets_in(proxy) + [unquote(s) for s in secrets_in(proxy)]
        web = {"validate_certs": params["validate_certs"], "url_timeout": params["download_timeout"]}
        if proxy:
            web.update(split_proxy(proxy))
        elif params["proxy"] == "":
            web["use_proxy"] = False
        result.update(proxy=mask_proxy_url(proxy) if proxy else None, proxy_source=source)
        if warnings:
            result["warnings"] = warnings

        if params["checksum_url"]:
            _installer.validate_url(params["checksum_url"], "checksum_url")
        if given is not None:
            result["sha256"] = given
        result["downloaded"] = False
        action = _installer.plan("present", exists, installed, params["version"], params["replace"], managed)
        result["action"] = action
        if action == "keep":
            return
        if action == "report":
            result.setdefault("warnings", []).append(
                "%s holds conda %s, not the wanted %s; left as it is (replace=true replaces it)"
                % (prefix, installed, params["version"]))
            return

        if params["checksum_url"]:
            # read-only, so also in check mode: the digest names the cache file
            got = self._module("ansible.windows.win_uri", dict(web, url=params["checksum_url"], return_content=True),
                               check_mode=False)
            if got.get("failed"):
                raise Refused("cannot fetch %s: %s" % (params["checksum_url"], got.get("msg")))
            listed = _installer.digest_from_checksum_file(to_native(got.get("content", "")), name)
            if given is not None and given != listed:
                raise ValueError("sha256 %s and the digest %s lists for %s (%s) disagree; nothing was downloaded"
                                 % (given, params["checksum_url"], name, listed))
            given = listed
        sha256 = given
        cache_dir = params["cache_dir"] or (_installer.WINDOWS_SYSTEM_CACHE if all_users
                                            else _installer.WINDOWS_USER_CACHE)
        cache_file = cache_dir.rstrip("\\") + "\\" + _installer.cache_file_name(sha256, windows=True)
        result.update(sha256=sha256, cache_file=cache_file, downloaded=False)

        stat = self._module("ansible.windows.win_stat", {"path": cache_file, "get_checksum": True,
                                                         "checksum_algorithm": "sha256"})
        cached = bool(stat.get("stat", {}).get("exists")) and stat["stat"].get("checksum", "").lower() == sha256
        result.update(cached=cached, changed=True)
        if self._task.check_mode:
            result["would_download"] = not cached
            return

        directory = self._module("ansible.windows.win_file", {"path": cache_dir, "state": "directory"})
        if directory.get("failed"):
            raise Refused("cannot create %s: %s" % (cache_dir, directory.get("msg")))
        got = self._module("ansible.windows.win_get_url", dict(web, url=url, dest=cache_file, checksum=sha256,
                                                               checksum_algorithm="sha256"))
        if got.get("failed"):
            msg = to_native(got.get("msg", ""))
            result["changed"] = False
            if "did not match" in msg:
                raise Refused("refusing to run %s: its SHA256 does not match %s (%s); nothing was kept or installed"
                              % (name, sha256, msg))
            raise Refused("cannot download %s: %s" % (url, msg))
        result["downloaded"] = bool(got.get("changed"))
        installer = got.get("dest") or cache_file

        if action == "replace":
            self._uninstall(prefix)
        try:
            ran = self._module("ansible.windows.win_command",
                               {"cmd": _installer.windows_install_command(installer, prefix, all_users)})
            if ran.get("rc") != 0 or ran.get("failed"):
                raise Refused("the installer %s failed (rc=%s); the prefix was removed: %s"
                              % (name, ran.get("rc"), to_native(ran.get("stderr") or ran.get("msg") or "")[-500:]))
            conda = prefix + "\\Scripts\\conda.exe"
            checked = self._module("ansible.windows.win_command", {"argv": [conda, "--version"]})
            if checked.get("rc") != 0 or checked.get("failed"):
                raise Refused("the installer %s finished but %s --version fails; the prefix was removed" % (name, conda))
            version = _installer.parse_conda_version(to_native(checked.get("stdout", ""))) or self._version(prefix)
            if params["version"] is not None and not _installer.same_version(version, params["version"]):
                raise Refused("the installer %s installed conda %s, not the wanted %s; the prefix was removed"
                              % (name, version, params["version"]))
            self._write_marker(marker, _installer.marker_content(name, sha256, version, url))
        except Refused:
            self._remove(prefix)
            raise
        result.update(version=version, installer_output=[line for line in to_native(
            ran.get("stdout", "")).splitlines() if line.strip()][-20:])

    def _write_marker(self, path: str, content: bytes) -> None:
        local_dir = tempfile.mkdtemp(dir=C.DEFAULT_LOCAL_TMP)
        local = os.path.join(local_dir, "marker.json")
        try:
            with open(local, "wb") as handle:
                handle.write(content)
            res = run_action(self, "ansible.windows.win_copy", {"src": local, "dest": path}, self._vars)
        finally:
            try:
                os.unlink(local)
            except OSError:
                pass
            os.rmdir(local_dir)
        if res.get("failed"):
            raise Refused("cannot write %s: %s" % (path, res.get("msg")))
