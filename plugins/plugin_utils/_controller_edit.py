# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this plugin util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Edit a file of a host that cannot run the Python modules (Windows) from the controller.

The action plugins of the file modules use :class:`ControllerFileEdit`: on a POSIX host
they run the module as usual; on a Windows host (or when the variable
``condafleet_proxy_edit_on_controller`` is true, which lets a Linux lab host exercise this
path for real) they read the file with ``slurp``, compute the new content with the same
module_utils the module uses, and write it with the copy action (``ansible.windows.win_copy``
on Windows), so every OS gets byte-identical files.
"""

from __future__ import annotations

import base64
import os
import tempfile
import typing as t

from ansible import constants as C
from ansible.module_utils.common.text.converters import to_native
from ansible.module_utils.parsing.convert_bool import boolean
from ansible.plugins.action.normal import ActionModule as NormalAction
from ansible_collections.condafleet.proxy.plugins.module_utils._combined import validate_args
from ansible_collections.condafleet.proxy.plugins.module_utils._condarc import CONDARC_NAME, SYSTEM_DIR

FORCE_VAR = "condafleet_proxy_edit_on_controller"
# conda's system directory on Windows (C:/ProgramData/conda, as conda's search path names it).
WINDOWS_CONDA_DIR = "C:\\ProgramData\\conda"

# Options the module handles that the controller-side path cannot honour the same way.
_POSIX_ONLY = ("owner", "group", "seuser", "serole", "setype", "selevel", "unsafe_writes", "attributes")


class HostKind:
    """What the controller-side path talks to: real Windows, or a POSIX host forced onto this path."""

    def __init__(self, windows: bool) -> None:
        self.windows = windows
        self.slurp = "ansible.windows.slurp" if windows else "ansible.legacy.slurp"
        self.copy = "ansible.windows.win_copy" if windows else "ansible.legacy.copy"
        self.file = "ansible.windows.win_file" if windows else "ansible.legacy.file"
        self.sep = "\\" if windows else "/"

    def home(self, user: str | None) -> str:
        if self.windows:
            return "C:\\Users\\%s" % user if user else "%USERPROFILE%"
        return "~%s" % user if user else "~"

    def join(self, *parts: str) -> str:
        return self.sep.join(p.rstrip("\\/") for p in parts[:-1]) + self.sep + parts[-1]

    def expand_home(self, path: str, user: str | None) -> str:
        """``~/x`` -> the account's home on that OS (``%USERPROFILE%`` is expanded by the Windows modules);
        on Windows also ``~name/x`` -> ``C:\\Users\\name\\x`` (POSIX hosts expand ``~name`` themselves)."""
        if path == "~" or path.startswith("~/") or path.startswith("~\\"):
            rest = path[2:]
            return self.join(self.home(user), rest.replace("/", self.sep)) if rest else self.home(user)
        if self.windows and path.startswith("~"):
            name, _sep, rest = path[1:].replace("/", "\\").partition("\\")
            return self.join(self.home(name), rest) if rest else self.home(name)
        return path


def on_controller(action: NormalAction, task_vars: dict) -> HostKind | None:
    """The :class:`HostKind` when ``action``'s task must edit from the controller, else ``None``."""
    windows = getattr(action._connection._shell, "SHELL_FAMILY", "") == "powershell"
    if windows:
        return HostKind(True)
    forced = task_vars.get(FORCE_VAR, False)
    if isinstance(forced, str) and action._templar is not None:
        # task_vars hold variables as defined: "{{ conda_proxy_edit_on_controller }}" is still a template here
        forced = action._templar.template(forced)
    if boolean(forced, strict=False):
        return HostKind(False)
    return None


def condarc_default_path(params: dict, host: HostKind) -> str:
    """The .condarc a condarc_proxy or condarc_policy task edits on ``host`` without ``path``: the system
    directory of its OS, the prefix, or the account's home (``~/``, which :meth:`HostKind.expand_home` resolves)."""
    scope = params.get("scope") or "user"
    if scope == "system":
        return host.join(WINDOWS_CONDA_DIR if host.windows else SYSTEM_DIR, CONDARC_NAME)
    if scope == "prefix":
        return host.join(params["prefix"], CONDARC_NAME)
    return "~/" + CONDARC_NAME


def refuse_root(params: dict) -> None:
    """The controller-side paths edit the host's own files: with a sandbox ``root`` they would miss the sandbox
    and change the real files (or, on Windows, the registry), so a root other than ``/`` is refused."""
    if params.get("root") not in (None, "/"):
        raise ValueError("root cannot be used when the files are edited from the controller (Windows hosts, or %s set)"
                         % FORCE_VAR)


class ControllerFileEdit(NormalAction):
    """Base action plugin: run the module on POSIX, edit the file from the controller on Windows.

    Subclasses define :meth:`argument_spec`, :meth:`default_path`, :meth:`render`,
    :meth:`secrets`, :meth:`mask`, and optionally :attr:`posix_mode`.
    """

    # False: on a POSIX host the module pipelines like any other (True made every task create and remove a
    # remote temporary directory, three extra commands per host). The controller path needs no directory of
    # its own: slurp pipelines, and the copy action it hands the file to makes and removes its own.
    TRANSFERS_FILES = False
    posix_mode: str | None = None

    # --- subclass hooks -------------------------------------------------------------------------------
    def argument_spec(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def constraints(self) -> dict:
        """The module's mutually_exclusive/required_if/... rules, as ArgumentSpecValidator keywords."""
        return {}

    def default_path(self, params: dict, host: HostKind) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def render(self, before: bytes | None, params: dict) -> bytes | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def secrets(self, params: dict) -> list[str]:
        return []

    def mask(self, text: str) -> str:
        return text

    def result_extras(self, params: dict, after: bytes | None) -> dict:
        return {}

    def resolve(self, params: dict, host: HostKind) -> dict:
        """Validated parameters, with what the host must resolve (``~`` in a value written to the file)."""
        return params

    # --- the flow ---------------------------------------------------------------------------------------
    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        host = on_controller(self, task_vars)
        if host is None:
            return super().run(tmp, task_vars)
        result = {"changed": False}
        params: dict | None = None
        try:
            params = validate_args(self.argument_spec(), dict(self._task.args), file_args=True, **self.constraints())
            refuse_root(params)
            params = self.resolve(params, host)
            unsupported = [name for name in _POSIX_ONLY if params.get(name) not in (None, False)]
            if host.windows and unsupported:
                raise ValueError("%s cannot be used on Windows hosts" % ", ".join(unsupported))
            # The option's own default is the POSIX one; a path the task did not give follows the host's OS.
            path = self._task.args.get("path") or self.default_path(params, host)
            path = host.expand_home(path, params.get("user"))
            if params.get("user") and params.get("backup") and not host.windows:
                raise ValueError("backup cannot be used with user when the files are edited from the controller: "
                                 "the copy runs as root, in a directory the account controls")
            before = self._read(path, host, task_vars, params.get("user"))
            after = self.render(before, params)
        except ValueError as exc:
            return self._finish(dict(result, failed=True, msg=self.mask(to_native(exc))), params)
        result.update(path=path, **self.result_extras(params, after))
        if self._task.diff:
            result["diff"] = self._diff(path, before, after)
        if before == after:
            return self._finish(result, params)
        result["changed"] = True
        if self._task.check_mode:
            return self._finish(result, params)
        written = self._write(path, after, params, host, task_vars)
        if written.get("failed"):
            return self._finish(dict(result, failed=True, msg=written.get("msg", "writing %s failed" % path)), params)
        if written.get("backup_file"):
            result["backup_file"] = written["backup_file"]
        return self._finish(result, params)

    def _finish(self, result: dict, params: dict | None) -> dict:
        self._remove_tmp_path(self._connection._shell.tmpdir)
        try:
            secrets = self.secrets(params) if params else []
        except ValueError:  # the arguments were refused before any secret was derived from them
            secrets = []
        if secrets:
            result = masked(result, secrets)
        return result

    def _diff(self, path: str, before: bytes | None, after: bytes | None) -> dict:
        def _text(data):
            return "" if data is None else self.mask(data.decode("utf-8", errors="replace"))

        return {
            "before_header": path if before is not None else "%s (absent)" % path,
            "after_header": path if after is not None else "%s (absent)" % path,
            "before": _text(before),
            "after": _text(after),
        }

    def _read(self, path: str, host: HostKind, task_vars: dict, user: str | None = None) -> bytes | None:
        if user and not host.windows:
            return self._read_as(path, user, task_vars)
        res = self._execute_module(module_name=host.slurp, module_args={"src": path}, task_vars=task_vars)
        if res.get("failed"):
            msg = to_native(res.get("msg", ""))
            if "not found" in msg.lower() or "no such file" in msg.lower():
                return None
            raise ValueError("cannot read %s: %s" % (path, msg))
        return base64.b64decode(res["content"])

    def _read_as(self, path: str, user: str, task_vars: dict) -> bytes | None:
        """Read an account's file on a POSIX host with that account's identity (``setpriv``), bounded in time:
        a symlink it planted to one of root's files, or a FIFO, gives it nothing (``slurp`` runs as root)."""
        script = ('exec timeout 20 setpriv --reuid="$1" --regid="$(id -g -- "$1")" --init-groups -- '
                  'sh -c \'test -e "$1" || exit 3; test -f "$1" || { echo "not a regular file" >&2; exit 4; }; '
                  'exec base64 -- "$1"\' sh "$2"')
        # command skips itself in check mode; this read changes nothing, and check mode needs what is there
        check_mode, self._task.check_mode = self._task.check_mode, False
        try:
            res = self._execute_module(module_name="ansible.legacy.command",
                                       module_args={"argv": ["sh", "-c", script, "sh", user, path]}, task_vars=task_vars)
        finally:
            self._task.check_mode = check_mode
        if res.get("rc") == 3:
            return None
        if res.get("rc") != 0:
            raise ValueError("cannot read %s as %s: %s" % (path, user, to_native(res.get("stderr") or res.get("msg"))))
        return base64.b64decode(res.get("stdout", ""))

    def _write(self, path: str, after: bytes | None, params: dict, host: HostKind, task_vars: dict) -> dict:
        if after is None:
            return self._execute_module(module_name=host.file, module_args={"path": path, "state": "absent"},
                                        task_vars=task_vars)
        local_dir = tempfile.mkdtemp(dir=C.DEFAULT_LOCAL_TMP)
        try:
            local = os.path.join(local_dir, "content")
            fd = os.open(local, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(after)
            args = {"src": local, "dest": path, "backup": bool(params.get("backup"))}
            if not host.windows:
                mode = params.get("mode") or self.posix_mode
                if mode:
                    args["mode"] = mode
                if params.get("user"):
                    args["owner"] = params["user"]
            return run_action(self, host.copy, args, task_vars)
        finally:
            try:
                os.unlink(os.path.join(local_dir, "content"))
            except OSError:
                pass
            os.rmdir(local_dir)


def run_action(parent: NormalAction, name: str, args: dict, task_vars: dict) -> dict:
    """Run the action plugin ``name`` with ``args`` as part of ``parent``'s task (same host, check and diff mode)."""
    task = parent._task.copy()
    task.args = args
    # A plugin that runs its module (env_proxy on a POSIX host) runs the one its task names.
    task.action = name
    action = parent._shared_loader_obj.action_loader.get(
        name,
        task=task,
        connection=parent._connection,
        play_context=parent._play_context,
        loader=parent._loader,
        templar=parent._templar,
        shared_loader_obj=parent._shared_loader_obj,
    )
    return action.run(task_vars=task_vars)


def masked(value: t.Any, secrets: list[str]) -> t.Any:
    """``value`` with every secret string replaced by the mask, recursively."""
    from ansible_collections.condafleet.proxy.plugins.module_utils._proxyurl import MASK

    if isinstance(value, str):
        for secret in secrets:
            if secret:
                value = value.replace(secret, MASK)
        return value
    if isinstance(value, dict):
        return {k: masked(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v, secrets) for v in value]
    return value
