# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The three methods applied on a POSIX host, each planned before anything is written.

Each ``plan_*`` function takes the validated options of one method's module
(``condarc_proxy``, ``env_proxy``, ``netrc_entry``), reads and renders every file the method
edits, and returns a :class:`Plan`; nothing is written until :meth:`Plan.commit`. The three
modules plan and commit one method (:func:`run_module`). ``conda_proxy`` plans every method
for every account first, so a file it cannot parse fails the task before any file of the
host changes, then commits them in one module execution.
"""

from __future__ import annotations

import os
import platform
import shutil
import typing as t

from ansible_collections.condafleet.proxy.plugins.module_utils import _condarc, _envfiles, _netrc, _paths
from ansible_collections.condafleet.proxy.plugins.module_utils._fileio import (
    Account,
    FileEdit,
    FileRefused,
    plan_edit,
    read_target,
    release_locks,
    resolve_account,
)

if t.TYPE_CHECKING:  # pragma: no cover
    from ansible.module_utils.basic import AnsibleModule


class MethodFailed(Exception):
    """A method cannot be applied. ``msg`` is masked; ``result`` is what the module returns with it."""

    def __init__(self, msg: str, result: dict | None = None) -> None:
        super().__init__(msg)
        self.msg = msg
        self.result = result or {}


class Plan:
    """The files of one method for one account, read and rendered, and what the module returns for them."""

    def __init__(self, module: AnsibleModule, params: dict, edits: list[FileEdit], result: dict,
                 mask: t.Callable[[str], str]) -> None:
        self.module = module
        self.params = params
        self.edits = edits
        self.result = result
        self.mask = mask
        self.outcomes: list[dict] = []

    def commit(self) -> dict:
        """Write the files; returns the module's result. Raises :class:`MethodFailed` when a write fails."""
        self.outcomes = []
        try:
            for edit in self.edits:
                self.outcomes.append(edit.commit(self.module))
        except (FileRefused, ValueError) as exc:
            raise MethodFailed(self.mask(str(exc)), self.failure_result())
        return self.finish(self.outcomes)

    # --- per method -----------------------------------------------------------------------------------
    def failure_result(self) -> dict:
        """What the module returns when writing a file failed (``outcomes`` holds the files written before)."""
        return dict(self.result, changed=any(outcome["changed"] for outcome in self.outcomes))

    def finish(self, outcomes: list[dict]) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def diff(self) -> t.Any:
        """The one-method module's ``diff`` return: one entry for a one-file method (asked in diff mode only:
        masking a whole file costs a parse of it)."""
        return self.edits[0].diff(self.mask)

    def changed_diffs(self) -> list[dict]:
        """A diff entry for each file whose content changes."""
        return [edit.diff(self.mask) for edit in self.edits if edit.content_changes]


def run_module(module: AnsibleModule, planner: t.Callable[[AnsibleModule, dict], Plan]) -> t.NoReturn:
    """The whole of a one-method module: plan, commit, exit (or fail with the masked message)."""
    try:
        plan = planner(module, module.params)
        result = plan.commit()
    except MethodFailed as exc:
        module.fail_json(msg=exc.msg, **exc.result)
    finally:
        release_locks()
    if module._diff:
        result["diff"] = plan.diff()
    module.exit_json(**result)


# --------------------------------------------------------------------------------------------
# .condarc


class CondarcPlan(Plan):
    def __init__(self, module, params, edits, result, spec: _condarc.CondarcSpec) -> None:
        super().__init__(module, params, edits, result, spec.mask)
        self.spec = spec

    def finish(self, outcomes):
        # the path written (a followed link's target, as RV(link_target) also says)
        result = dict(self.result, **outcomes[0])
        self._warn_readable_password(result["path"])
        return result

    def _warn_readable_password(self, path: str) -> None:
        """A literal password in a file the task's own ``mode`` leaves readable by others (scope=system
        with world_readable_password is that on purpose)."""
        if (not self.spec.has_literal_password or self.params.get("mode") is None or self.module.check_mode
                or self.params.get("world_readable_password")):
            return
        try:
            mode = os.stat(path).st_mode & 0o777
        except OSError:
            return
        if mode & 0o077:
            self.module.warn(
                "%s holds a proxy password and is readable by others (mode %04o, as the task's mode says); "
                "use mode: '0600' or a ${VAR} reference for proxy_password" % (path, mode)
            )


def _check_condarc_target(spec: _condarc.CondarcSpec, path: str, root: str, pending: t.Collection[str] = ()) -> None:
    """Refuse, before anything is read or written, targets that cannot be right."""
    if spec.scope == "prefix" and not os.path.isdir(spec.prefix):
        raise FileRefused("prefix %s does not exist (scope=prefix edits an existing conda environment)" % spec.prefix)
    parent = os.path.dirname(path)
    if spec.scope != "system" and root == "/" and not os.path.isdir(parent):
        raise FileRefused("cannot write %s: directory %s does not exist" % (path, parent))
    if spec.state == "present" and isinstance(spec.ssl_verify, str) and spec.ssl_verify != "truststore":
        ca = _paths.under_root(root, spec.ssl_verify)
        if ca not in pending and not os.path.exists(ca):
            raise _condarc.CondarcSpecError(
                "ssl_verify: the CA bundle %s does not exist on this host (conda would fail every request)" % spec.ssl_verify
            )


_VAR_REFERENCE = "proxy_password: '${VAR}' (expanded from each account's environment; the variable must hold the " \
    "percent-encoded password), "


def system_password_refusal(why: str, reference: bool = True) -> str:
    """Why scope=system with a literal proxy password is refused (``why``: who must read the files), and the ways
    that work (``reference``: a ``${VAR}`` password is one of them)."""
    return (
        "scope=system with a literal proxy password: %s, so every local account could read the password. Use "
        "%sscope=user (each account's own files, mode 0600), or world_readable_password=true to accept that every "
        "local account can read it" % (why, _VAR_REFERENCE if reference else "")
    )


def refuse_system_password(method: str, params: dict, literal_password: bool, path: str = "") -> None:
    """Raise ValueError when scope=system would write a literal password to files every account reads, unless
    ``world_readable_password`` says so (``method``: condarc or env; ``path``: the system .condarc)."""
    if (params.get("scope") != "system" or params.get("path") or not literal_password
            or params.get("state", "present") != "present" or params.get("world_readable_password")):
        return
    if method == "condarc":
        raise ValueError(system_password_refusal(
            "conda needs %s readable by every account that runs conda (one only root can read makes every "
            "non-root conda command fail with PermissionError)" % (path or "the system .condarc")))
    raise ValueError(system_password_refusal(
        "every account's login reads /etc/environment and the shells' system files (on Windows, the machine "
        "environment)", reference=False))


def condarc_mode(spec: _condarc.CondarcSpec) -> dict:
    """The mode of a .condarc: every account must read the system file (0644, also when it was made private
    before); an account's own file holding a literal password is private (0600) whatever mode it had."""
    if spec.state != "present":
        return {}
    if spec.scope == "system":
        return dict(default_mode=0o644, enforce_mode=True)
    if spec.has_literal_password:
        return dict(default_mode=0o600, enforce_mode=True)
    return dict(default_mode=0o644)


def _condarc_prune_stop(spec: _condarc.CondarcSpec, home: str, root: str) -> str | None:
    """Below which directory an emptied .condarc's directories go with it: /etc for /etc/conda, the home for
    ~/.conda and ~/.config/conda; never for an explicit path or a prefix."""
    if spec.state != "absent" or spec.path or spec.scope == "prefix":
        return None
    return _paths.under_root(root, "/etc" if spec.scope == "system" else home)


def plan_condarc(module: AnsibleModule, params: dict, pending: t.Collection[str] = ()) -> CondarcPlan:
    """condarc_proxy: the ``proxy_servers`` and ``ssl_verify`` keys of one ``.condarc``. ``pending``: files this
    run writes before the .condarc (conda_proxy's CA), which ``ssl_verify`` may name before they exist."""
    module.no_log_values.update(_condarc.secrets_in_params(params))
    try:
        spec = _condarc.spec_from_params(params)
    except ValueError as exc:
        raise MethodFailed(str(exc))
    module.no_log_values.update(spec.secrets)
    path = None
    try:
        account = resolve_account(params["user"])
        root = params["root"]
        if isinstance(spec.ssl_verify, str) and spec.ssl_verify.startswith("~"):
            # conda does not expand ~ in ssl_verify: write the account's absolute path
            spec.ssl_verify = _paths.expand_home(spec.ssl_verify, account.home, "ssl_verify")
        path = _paths.under_root(root, _condarc.condarc_path(spec, account.home))
        _check_condarc_target(spec, path, root, pending)
        refuse_system_password("condarc", params, spec.has_literal_password, path)
        edit = plan_edit(
            path, account, params, lambda before: _condarc.render_condarc(before, spec),
            make_parents=(spec.scope == "system" or root != "/") and spec.state == "present" and not spec.path,
            prune_until=_condarc_prune_stop(spec, account.home, root),
            **condarc_mode(spec),
        )
    except _condarc.ParseError as exc:
        raise MethodFailed("%s: line %d: %s" % (path, exc.line, spec.mask(exc.reason)), {"path": path})
    except (ValueError, FileRefused) as exc:
        raise MethodFailed(spec.mask(str(exc)), {"path": path})
    present = spec.state == "present"
    result = {"path": path, "proxy_servers": spec.masked_proxy_servers() if present else {},
              "ssl_verify": spec.ssl_verify if present else None}
    return CondarcPlan(module, params, [edit], result, spec)


# --------------------------------------------------------------------------------------------
# .condarc channel and package policy (condarc_policy)


class PolicyPlan(Plan):
    def finish(self, outcomes):
        return dict(self.result, **outcomes[0])


def plan_policy(module: AnsibleModule, params: dict) -> PolicyPlan:
    """condarc_policy: the channel and package policy keys of one ``.condarc``, edited like plan_condarc's."""
    from ansible_collections.condafleet.proxy.plugins.module_utils import _policy

    try:
        spec = _policy.spec_from_params(params)
    except ValueError as exc:
        raise MethodFailed(str(exc))
    path = None
    try:
        account = resolve_account(params["user"])
        root = params["root"]
        path = _paths.under_root(root, _condarc.condarc_path(spec, account.home))
        if spec.scope == "prefix" and not os.path.isdir(spec.prefix):
            raise FileRefused("prefix %s does not exist (scope=prefix edits an existing conda environment)"
                              % spec.prefix)
        parent = os.path.dirname(path)
        if spec.scope != "system" and root == "/" and not os.path.isdir(parent):
            raise FileRefused("cannot write %s: directory %s does not exist" % (path, parent))
        edit = plan_edit(
            path, account, params, lambda before: _policy.render_policy(before, spec),
            make_parents=(spec.scope == "system" or root != "/") and spec.state == "present" and not spec.path,
            prune_until=_condarc_prune_stop(spec, account.home, root),
            **condarc_mode(spec),
        )
    except _condarc.ParseError as exc:
        raise MethodFailed("%s: line %d: %s; nothing was changed" % (path, exc.line, exc.reason), {"path": path})
    except (ValueError, FileRefused) as exc:
        raise MethodFailed(str(exc), {"path": path})
    return PolicyPlan(module, params, [edit], dict(_policy.policy_result(spec), path=path), lambda text: text)


# --------------------------------------------------------------------------------------------
# Environment files

_BIN_DIRS = ("/bin", "/usr/bin", "/usr/local/bin", "/opt/homebrew/bin")
_SYSTEMD_MARKERS = (
    "/usr/lib/systemd/user-environment-generators/30-systemd-environment-d-generator",
    "/lib/systemd/user-environment-generators/30-systemd-environment-d-generator",
    "/usr/lib/systemd/systemd",
    "/lib/systemd/systemd",
)


def detect_installed(target_os: str, scope: str, home: str, root: str) -> set:
    """What is on the host: shells (on PATH, in root's bin dirs, or with an /etc dir) and existing candidates."""
    under_root = _paths.under_root
    found = set()
    for shell in ("bash", "zsh", "fish"):
        if (shutil.which(shell) or os.path.isdir(under_root(root, "/etc/" + shell))
                or (root != "/" and any(os.path.exists(under_root(root, d + "/" + shell)) for d in _BIN_DIRS))):
            found.add(shell)
    if shutil.which("systemctl") or any(os.path.exists(under_root(root, m)) for m in _SYSTEMD_MARKERS):
        found.add("systemd")
    for path in _envfiles.probe_paths(target_os, scope, home, root):
        if os.path.lexists(path):
            found.add(path)
    return found


def host_os(target_os: str) -> str:
    """``target_os``, or this host's (``platform.system()``) for ``auto``."""
    return platform.system() if target_os == "auto" else target_os


def _env_prune_stop(params: dict, home: str, root: str) -> str | None:
    """Below which directory the directories of a removed environment file go when left empty: the home in user
    scope (~/.config/fish/conf.d, ~/.config/environment.d), none for system files (/etc/fish/conf.d belongs to
    the fish package) or an explicit path."""
    if params["state"] != "absent" or params["path"] or params["scope"] != "user":
        return None
    return home


class EnvPlan(Plan):
    def __init__(self, module, params, edits, result, mask, layout: list) -> None:
        super().__init__(module, params, edits, result, mask)
        # RV(files) in candidate order: the entry of a skipped candidate, or the format of the next edit
        self.layout = layout

    def failure_result(self) -> dict:
        return self.finish(self.outcomes)

    def finish(self, outcomes):
        files = []
        written = iter(zip(self.edits, outcomes))
        for item in self.layout:
            if isinstance(item, dict):
                files.append(item)
                continue
            try:
                edit, outcome = next(written)
            except StopIteration:  # a write failed: the files before it
                break
            entry = dict(path=edit.path, format=item, changed=outcome["changed"])
            for key in ("backup_file", "attributes_changed", "link_target", "directories_removed"):
                if key in outcome:
                    entry[key] = outcome[key]
            files.append(entry)
        return dict(self.result, files=files, changed=any(entry["changed"] for entry in files))

    def diff(self):
        return self.changed_diffs()


def plan_env(module: AnsibleModule, params: dict) -> EnvPlan:
    """env_proxy: the managed block of every file the shells and session managers of the OS read."""
    # Every form of every password in the options is a secret before anything is validated: a refused URL is
    # echoed in the task's invocation otherwise.
    module.no_log_values.update(_envfiles.secret_forms(_envfiles.secrets_in_params(params)))
    if params["proxy_password"]:
        if _condarc.is_var_reference(params["proxy_password"]):
            raise MethodFailed("proxy_password is a ${VAR} reference: conda expands those in .condarc, but shells, "
                               "PAM and launchd read environment files as values. Give the password itself "
                               "(scope=user keeps it in each account's 0600 files), or leave the env method out")
    try:
        spec = _envfiles.spec_from_params(params)
    except ValueError as exc:
        raise MethodFailed(_envfiles.mask_text(str(exc), []))
    module.no_log_values.update(_envfiles.secret_forms(spec.secrets))

    def mask(text: str) -> str:
        return _envfiles.mask_text(text, spec.secrets)

    target_os = host_os(params["target_os"])
    root = params["root"] or "/"
    result = dict(changed=False, files=[], variables={}, target_os=target_os)
    if not os.path.isabs(root):
        raise MethodFailed("root must be an absolute path, got %s" % root, result)
    if spec.state == "present":
        result["variables"] = dict((name, mask(value)) for name, value in spec.variables)

    edits, layout = [], []
    try:
        account = resolve_account(params["user"])
        # Files under the home are owned by the account; system files by whoever runs the module.
        home_account = Account(account.name, account.uid, account.gid, _paths.under_root(root, account.home))
        runner = resolve_account(None)

        if params["path"]:
            path = _paths.under_root(root, _paths.expand_home(params["path"], account.home))
            owner = home_account if params["path"].startswith("~") or params["scope"] == "user" else runner
            targets = [(path, params["format"], None, owner)]
        else:
            if target_os not in ("Linux", "Darwin"):
                raise MethodFailed("env_proxy has no file layout for %s; give path and format" % target_os, result)
            owner = home_account if params["scope"] == "user" else runner
            if spec.state == "present":
                installed = detect_installed(target_os, params["scope"], account.home, root)
                chosen = _envfiles.env_candidates(target_os, params["scope"], account.home, root, installed)
            else:
                chosen = [(p, f, None) for p, f, _needs
                          in _envfiles.all_candidates(target_os, params["scope"], account.home, root)
                          if os.path.lexists(p)]
            targets = [(p, f, reason, owner) for p, f, reason in chosen]

        literal_password = spec.has_literal_password
        try:
            refuse_system_password("env", params, literal_password)
        except ValueError as exc:
            raise MethodFailed(str(exc), result)

        # Read and render every file first: a broken file fails the task before anything is written.
        for path, fmt, reason, owner in targets:
            if reason is not None:
                layout.append(dict(path=path, format=fmt, changed=False, skipped=reason))
                continue
            real, before, identity = read_target(path, owner, params["follow"])
            try:
                after = _envfiles.render(before, spec, fmt)
            except _envfiles.ParseError as exc:
                raise MethodFailed(mask("%s: %s; fix or remove the managed block by hand, nothing was changed"
                                        % (real, exc)), result)
            except ValueError as exc:
                raise MethodFailed(mask("%s: %s; nothing was changed" % (path, exc)), result)
            # An account's own file holding a literal password is private, as its .condarc and .netrc are.
            private = literal_password and owner is home_account
            edits.append(FileEdit(path, real, before, after, owner, params, make_parents=True, identity=identity,
                                  default_mode=0o600 if private else 0o644, enforce_mode=private,
                                  prune_until=_env_prune_stop(params, home_account.home, root)))
            layout.append(fmt)
    except (FileRefused, _paths.PathError) as exc:
        raise MethodFailed(mask(str(exc)), result)
    return EnvPlan(module, params, edits, result, mask, layout)


# --------------------------------------------------------------------------------------------
# .netrc


class NetrcPlan(Plan):
    def __init__(self, module, params, edits, result, mask, steps: list) -> None:
        super().__init__(module, params, edits, result, mask)
        self.steps = steps

    def finish(self, outcomes):
        outcome = outcomes[0]
        result = dict(self.result, **outcome)
        result["duplicates_removed"] = sum(step[1].duplicates_removed for step in self.steps)
        result["password_kept"] = any(step[1].password_kept for step in self.steps)
        if self.params["entries"] is not None:
            result["entries"] = _netrc.entries_result(self.steps)
        result["mode_fixed"] = "mode" in outcome.get("attributes_changed", {})
        return result


def _quoted_options(params: dict) -> list[str]:
    """A warning for each value (``entries[N].password`` in list form) that must be written quoted: why, and
    which readers (rattler, Python 3.10 and older, old curl) cannot read it then."""
    return _netrc.quoting_warnings(params)


def plan_netrc(module: AnsibleModule, params: dict) -> NetrcPlan:
    """netrc_entry: one ``.netrc`` entry, or the list of ``entries``, in one file."""
    try:
        specs = _netrc.specs_from_params(params)
    except ValueError as exc:
        raise MethodFailed(str(exc))
    secrets = _netrc.secrets_of(specs)
    module.no_log_values.update(secrets)
    for warning in _quoted_options(params):
        module.warn(warning)

    result = dict(changed=False, mode_fixed=False, duplicates_removed=0, password_kept=False)
    if params["entries"] is None:
        result["machine"] = specs[0].label
    steps: list = []

    def render(before):
        after, planned = _netrc.plan_netrc_entries(before, specs)
        steps.extend(planned)
        return after

    def mask(text):
        return _netrc.mask_netrc(text, secrets)

    path = params["path"]
    try:
        account = resolve_account(params["user"])
        path = _paths.under_root(params["root"], _paths.expand_home(path, account.home))
        result["path"] = path
        parent = os.path.dirname(path)
        if not os.path.isdir(parent):
            raise FileRefused("cannot edit %s: directory %s does not exist" % (path, parent))
        edit = plan_edit(path, account, params, render, default_mode=0o600, enforce_mode=True)
    except _netrc.ParseError as exc:
        raise MethodFailed("%s: cannot parse line %d: %s; the file was left unchanged" % (path, exc.line, exc.message),
                           result)
    except (ValueError, FileRefused) as exc:
        raise MethodFailed(str(exc), result)
    return NetrcPlan(module, params, [edit], result, mask, steps)


# --------------------------------------------------------------------------------------------
# The corporate CA (conda_proxy's ca_certificates)


class CaPlan(Plan):
    def finish(self, outcomes):
        return dict(self.result, **outcomes[0])


def plan_ca(module: AnsibleModule, params: dict) -> CaPlan:
    """conda_proxy's ``ca_certificates``: the PEM file ``ssl_verify`` points to, in ``params["path"]`` (``~/``: the
    account's home), owned by the account in its home; with ``state=absent`` the file goes, and its directory
    when that is left empty."""
    path = params["path"]
    present = params["state"] == "present"
    try:
        account = resolve_account(params["user"])
        path = _paths.under_root(params["root"], _paths.expand_home(path, account.home))
        pem = params.get("ca_certificates") or ""
        content = (pem if pem.endswith("\n") else pem + "\n").encode("utf-8") if present else None
        stop = _paths.under_root(params["root"], account.home if params["path"].startswith("~") else "/etc")
        edit = plan_edit(path, account, {}, lambda before: content, default_mode=0o644, enforce_mode=True,
                         make_parents=True, prune_until=None if present else stop)
    except (ValueError, FileRefused) as exc:
        raise MethodFailed(str(exc), {"path": path})
    return CaPlan(module, params, [edit], {"path": path}, lambda text: text)
