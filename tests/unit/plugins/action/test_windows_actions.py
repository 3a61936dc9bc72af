# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The action plugins' Windows path, against a simulated Windows connection.

No Windows host runs here, so the connection is simulated: a PowerShell shell family, and
a small in-memory host that answers ``ansible.windows.slurp``/``win_file``/``win_environment``
and the ``win_copy`` action the way those modules do (their messages are copied from their
sources). What is asserted is what this collection decides: the paths Windows uses, that the
bytes written are the same bytes the POSIX module writes, idempotence, check mode, masking,
and the registry variables. The same controller path runs for real against a POSIX host in
the molecule default scenario (h3, ``conda_proxy_edit_on_controller``).
"""

from __future__ import annotations

import base64
import importlib
from unittest import mock

import pytest
import yaml
from ansible.playbook.play_context import PlayContext
from ansible.playbook.task import Task

from modulerun import call_module

SECRET = "p@ss w'rd;$(x)"


class WindowsHost:
    """Files and registry variables of one simulated Windows host."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.env: dict[str, dict[str, str]] = {"machine": {}, "user": {}}
        self.calls: list[tuple[str, dict]] = []

    def execute_module(self, module_name=None, module_args=None, task_vars=None, **kwargs):
        self.calls.append((module_name, dict(module_args)))
        if module_name == "ansible.windows.slurp":
            path = module_args["src"]
            if path not in self.files:
                return {"failed": True, "msg": "Path %s is not found" % path}
            return {"content": base64.b64encode(self.files[path]).decode(), "encoding": "base64"}
        if module_name == "ansible.windows.win_file":
            existed = self.files.pop(module_args["path"], None) is not None
            return {"changed": existed}
        if module_name == "ansible.windows.win_environment":
            level, changed = self.env[module_args["level"]], False
            for name, value in module_args["variables"].items():
                if value:
                    changed |= level.get(name) != value
                    level[name] = value
                else:
                    changed |= level.pop(name, None) is not None
            return {"changed": changed, "diff": {"before": {}, "after": dict(level)}}
        raise AssertionError("unexpected module %s" % module_name)

    def copy_action(self, name, task=None, **kwargs):
        assert name == "ansible.windows.win_copy", name
        host = self

        class Copy:
            def run(self, task_vars=None):
                with open(task.args["src"], "rb") as handle:
                    data = handle.read()
                host.calls.append((name, dict(task.args)))
                backup = {"backup_file": task.args["dest"] + ".bak"} if task.args.get("backup") else {}
                changed = host.files.get(task.args["dest"]) != data
                host.files[task.args["dest"]] = data
                return dict(changed=changed, **backup)

        return Copy()


def make_action(module: str, task: Task, host: WindowsHost):
    """The collection's action plugin ``module`` for ``task`` on the simulated host; the action plugins it runs
    (win_copy, or the three methods' plugins for conda_proxy) are served the same way."""
    plugin = importlib.import_module("ansible_collections.condafleet.proxy.plugins.action.%s" % module)
    connection = mock.MagicMock()
    connection._shell.SHELL_FAMILY = "powershell"
    connection._shell.tmpdir = None
    loader = mock.MagicMock()

    def get_action(name, task=None, **kwargs):
        if name.startswith("condafleet.proxy."):
            return make_action(name.rpartition(".")[2], task, host)
        return host.copy_action(name, task=task)

    loader.action_loader.get.side_effect = get_action
    action = plugin.ActionModule(task, connection, PlayContext(), loader=None, templar=None)
    action._shared_loader_obj = loader  # ansible-core 2.19 ignores the constructor's shared_loader_obj
    action._execute_module = mock.MagicMock(side_effect=host.execute_module)
    return action


def run_action(module: str, args: dict, host: WindowsHost, check: bool = False, diff: bool = False) -> dict:
    task = Task()
    task.action = "condafleet.proxy.%s" % module
    task.args = dict(args)
    task.check_mode = check
    task.diff = diff
    return make_action(module, task, host).run(task_vars={})


def written_by_posix_module(module: str, args: dict, tmp_path) -> bytes:
    path = tmp_path / "posix-file"
    result = call_module(module, dict(args, path=str(path)))
    assert not result.get("failed"), result
    return path.read_bytes()


NETRC_ARGS = {"machine": "repo.corp.example", "login": "alice", "password": SECRET}


def test_netrc_goes_to_underscore_netrc_in_the_profile_with_the_posix_bytes(tmp_path):
    host = WindowsHost()
    result = run_action("netrc_entry", NETRC_ARGS, host, diff=True)
    assert result["changed"] and not result.get("failed"), result
    assert result["path"] == "%USERPROFILE%\\_netrc"
    assert host.files["%USERPROFILE%\\_netrc"] == written_by_posix_module("netrc_entry", NETRC_ARGS, tmp_path)
    assert SECRET not in repr(result)
    assert "********" in result["diff"]["after"]


def test_netrc_second_run_changes_nothing_and_writes_nothing():
    host = WindowsHost()
    run_action("netrc_entry", NETRC_ARGS, host)
    host.calls.clear()
    result = run_action("netrc_entry", NETRC_ARGS, host)
    assert result["changed"] is False
    assert [name for name, _args in host.calls] == ["ansible.windows.slurp"]


def test_netrc_check_mode_predicts_and_writes_nothing():
    host = WindowsHost()
    result = run_action("netrc_entry", NETRC_ARGS, host, check=True)
    assert result["changed"] is True
    assert host.files == {}


def test_netrc_keeps_other_entries_and_absent_restores_the_bytes():
    host = WindowsHost()
    original = b"# fleet\r\nmachine other.example login bob password hunter2\r\n"
    host.files["%USERPROFILE%\\_netrc"] = original
    run_action("netrc_entry", NETRC_ARGS, host)
    assert host.files["%USERPROFILE%\\_netrc"].startswith(original)
    result = run_action("netrc_entry", dict(NETRC_ARGS, state="absent"), host, diff=True)
    assert result["changed"] is True
    assert host.files["%USERPROFILE%\\_netrc"] == original
    assert "hunter2" not in repr(result), "other entries' passwords are masked too"


def test_netrc_absent_of_the_only_entry_removes_the_file_with_win_file():
    host = WindowsHost()
    run_action("netrc_entry", NETRC_ARGS, host)
    run_action("netrc_entry", dict(NETRC_ARGS, state="absent"), host)
    assert host.files == {}
    assert host.calls[-1] == ("ansible.windows.win_file", {"path": "%USERPROFILE%\\_netrc", "state": "absent"})


def test_netrc_for_another_user_and_explicit_tilde_path():
    host = WindowsHost()
    assert run_action("netrc_entry", dict(NETRC_ARGS, user="bob"), host)["path"] == "C:\\Users\\bob\\_netrc"
    assert run_action("netrc_entry", dict(NETRC_ARGS, path="~/.netrc"), host)["path"] == "%USERPROFILE%\\.netrc"


def test_netrc_backup_is_passed_to_win_copy():
    host = WindowsHost()
    host.files["%USERPROFILE%\\_netrc"] = b"machine x login y password z\n"
    result = run_action("netrc_entry", dict(NETRC_ARGS, backup=True), host)
    assert result["backup_file"] == "%USERPROFILE%\\_netrc.bak"


@pytest.mark.parametrize("args,message", [
    (dict(NETRC_ARGS, owner="alice"), "cannot be used on Windows"),
    (dict(NETRC_ARGS, password="a\nb"), "password"),
    ({"login": "x"}, "machine"),
])
def test_netrc_refused_arguments_fail_before_touching_the_host(args, message):
    host = WindowsHost()
    result = run_action("netrc_entry", args, host)
    assert result["failed"] and message in result["msg"], result
    assert [name for name, _args in host.calls if name != "ansible.windows.slurp"] == []
    assert "a\nb" not in repr(result)


ENV_ARGS = {"http_proxy": "http://proxy.corp.example:3128", "https_proxy": "http://proxy.corp.example:3128",
            "no_proxy": [".corp.example", "localhost"], "proxy_username": "fleet", "proxy_password": SECRET,
            "world_readable_password": True}


def test_env_sets_machine_variables_in_both_cases_with_encoded_credentials():
    host = WindowsHost()
    result = run_action("env_proxy", ENV_ARGS, host, diff=True)
    assert result["changed"] and result["level"] == "machine"
    machine = host.env["machine"]
    assert set(machine) == {"http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"}
    assert machine["https_proxy"] == "http://fleet:p%40ss%20w%27rd%3B%24%28x%29@proxy.corp.example:3128"
    assert machine["NO_PROXY"] == ".corp.example,localhost"
    assert SECRET not in repr(result) and "p%40ss" not in repr(result)
    assert run_action("env_proxy", ENV_ARGS, host)["changed"] is False


def test_env_user_scope_and_absent_remove_exactly_the_variables():
    host = WindowsHost()
    host.env["user"]["PATH"] = "C:\\keep"
    run_action("env_proxy", dict(ENV_ARGS, scope="user"), host)
    assert "http_proxy" in host.env["user"]
    result = run_action("env_proxy", dict(ENV_ARGS, scope="user", state="absent"), host)
    assert result["changed"] and host.env["user"] == {"PATH": "C:\\keep"}


@pytest.mark.parametrize("args,message", [
    (dict(ENV_ARGS, path="C:\\x"), "path"),
    (dict(ENV_ARGS, scope="user", user="bob"), "connecting account"),
    (dict(ENV_ARGS, http_proxy="not a url"), "http_proxy"),
])
def test_env_refused_arguments(args, message):
    host = WindowsHost()
    result = run_action("env_proxy", args, host)
    assert result["failed"] and message in result["msg"], result
    assert host.calls == []


CONDARC_ARGS = {"http": "http://proxy.corp.example:3128", "https": "http://proxy.corp.example:3128",
                "bypass": ["mirror.corp.example"], "proxy_username": "fleet", "proxy_password": SECRET}


@pytest.mark.parametrize("extra,path", [
    ({}, "%USERPROFILE%\\.condarc"),
    ({"scope": "system", "final": True, "world_readable_password": True}, "C:\\ProgramData\\conda\\.condarc"),
    ({"user": "bob"}, "C:\\Users\\bob\\.condarc"),
    ({"scope": "prefix", "prefix": "C:\\envs\\py311"}, "C:\\envs\\py311\\.condarc"),
])
def test_condarc_paths_and_bytes_match_the_posix_module(extra, path, tmp_path):
    host = WindowsHost()
    args = dict(CONDARC_ARGS, **extra)
    result = run_action("condarc_proxy", args, host, diff=True)
    assert result["changed"] and not result.get("failed"), result
    assert result["path"] == path
    posix_args = {k: v for k, v in args.items() if k not in ("scope", "prefix", "user", "world_readable_password")}
    assert host.files[path] == written_by_posix_module("condarc_proxy", dict(posix_args, mode="0644"), tmp_path)
    assert SECRET not in repr(result) and "p%40ss" not in repr(result)
    assert result["proxy_servers"]["https"] == "http://fleet:********@proxy.corp.example:3128"
    assert run_action("condarc_proxy", args, host)["changed"] is False


def test_condarc_keeps_the_rest_of_an_existing_file_and_absent_restores_it():
    host = WindowsHost()
    original = b"\xef\xbb\xbfchannels:\r\n  - conda-forge  # main\r\nssl_verify: true\r\n"
    host.files["%USERPROFILE%\\.condarc"] = original
    run_action("condarc_proxy", CONDARC_ARGS, host)
    assert host.files["%USERPROFILE%\\.condarc"].startswith(original)
    run_action("condarc_proxy", dict(CONDARC_ARGS, state="absent"), host)
    assert host.files["%USERPROFILE%\\.condarc"] == original


def test_condarc_unparsable_file_fails_and_stays_untouched():
    host = WindowsHost()
    broken = b"channels:\n\t- defaults\n"
    host.files["%USERPROFILE%\\.condarc"] = broken
    result = run_action("condarc_proxy", CONDARC_ARGS, host)
    assert result["failed"] and "line 2" in result["msg"], result
    assert host.files["%USERPROFILE%\\.condarc"] == broken


def test_condarc_scope_and_path_are_mutually_exclusive_on_windows_too():
    result = run_action("condarc_proxy", dict(CONDARC_ARGS, scope="user", path="C:\\x\\.condarc"), WindowsHost())
    assert result["failed"] and "mutually exclusive" in result["msg"]


@pytest.mark.parametrize("extra,ca", [
    ({"ssl_verify": "~/.conda/ca.pem"}, "%USERPROFILE%\\.conda\\ca.pem"),
    ({"ssl_verify": "~/.conda/ca.pem", "user": "bob"}, "C:\\Users\\bob\\.conda\\ca.pem"),
    ({"ssl_verify": "~alice/.conda/ca.pem"}, "C:\\Users\\alice\\.conda\\ca.pem"),
    ({"ssl_verify": "%USERPROFILE%\\.conda\\ca.pem"}, "%USERPROFILE%\\.conda\\ca.pem"),
])
def test_condarc_ssl_verify_in_a_home_is_written_as_the_windows_path(extra, ca):
    host = WindowsHost()
    result = run_action("condarc_proxy", dict(CONDARC_ARGS, **extra), host)
    assert result["changed"] and result["ssl_verify"] == ca, result
    written = yaml.safe_load(host.files[result["path"]].decode())
    assert written["ssl_verify"] == ca


NETRC_ENTRIES = [
    {"machine": "repo.corp.example", "login": "alice", "password": SECRET},
    {"machine": "mirror.corp.example", "login": "alice", "password": "mirror-" + SECRET, "account": "acct-9"},
]


def test_netrc_entries_in_one_task_write_the_posix_bytes_and_mask_every_secret(tmp_path):
    host = WindowsHost()
    result = run_action("netrc_entry", {"entries": NETRC_ENTRIES}, host, diff=True)
    assert result["changed"] and not result.get("failed"), result
    assert [(entry["machine"], entry["changed"]) for entry in result["entries"]] == [
        ("repo.corp.example", True), ("mirror.corp.example", True)]
    written = host.files["%USERPROFILE%\\_netrc"]
    assert written == written_by_posix_module("netrc_entry", {"entries": NETRC_ENTRIES}, tmp_path)
    for secret in (SECRET, "acct-9"):
        assert secret not in repr(result)
    assert [name for name, _args in host.calls] == ["ansible.windows.slurp", "ansible.windows.win_copy"]

    host.calls.clear()
    again = run_action("netrc_entry", {"entries": NETRC_ENTRIES}, host, check=True)
    assert again["changed"] is False and not any(entry["changed"] for entry in again["entries"])
    assert [name for name, _args in host.calls] == ["ansible.windows.slurp"]


def test_netrc_entries_mixed_with_machine_are_refused_without_a_write():
    host = WindowsHost()
    result = run_action("netrc_entry", dict(NETRC_ARGS, entries=NETRC_ENTRIES), host)
    assert result.get("failed") and "mutually exclusive" in result["msg"], result
    assert host.files == {} and SECRET not in repr(result)


COMBINED_ARGS = {"http": "http://proxy.corp.example:3128", "https": "http://proxy.corp.example:3128",
                 "no_proxy": ["localhost", ".corp.example"], "proxy_username": "fleet", "proxy_password": SECRET,
                 "netrc_entries": NETRC_ENTRIES, "world_readable_password": True}


def test_conda_proxy_applies_the_three_methods_as_the_one_method_plugins_do():
    host, reference = WindowsHost(), WindowsHost()
    result = run_action("conda_proxy", COMBINED_ARGS, host, diff=True)
    assert result["changed"] and not result.get("failed"), result
    assert result["edited_from"] == "controller" and result["target_os"] == "Windows"
    assert [r["user"] for r in result["condarc"] + result["env"] + result["netrc"]] == [None, None, None]
    run_action("condarc_proxy", {"scope": "system", "http": COMBINED_ARGS["http"], "https": COMBINED_ARGS["https"],
                                 "proxy_username": "fleet", "proxy_password": SECRET,
                                 "world_readable_password": True}, reference)
    run_action("env_proxy", {"http_proxy": COMBINED_ARGS["http"], "https_proxy": COMBINED_ARGS["https"],
                             "no_proxy": COMBINED_ARGS["no_proxy"], "proxy_username": "fleet",
                             "proxy_password": SECRET, "world_readable_password": True}, reference)
    run_action("netrc_entry", {"entries": NETRC_ENTRIES}, reference)
    assert host.files == reference.files and host.env == reference.env
    assert set(host.files) == {"C:\\ProgramData\\conda\\.condarc", "%USERPROFILE%\\_netrc"}
    assert host.env["machine"]["HTTPS_PROXY"].startswith("http://fleet:")
    assert SECRET not in repr(result) and "acct-9" not in repr(result)
    assert len(result["diff"]) >= 2

    again = run_action("conda_proxy", COMBINED_ARGS, host, check=True)
    assert again["changed"] is False, again


@pytest.mark.parametrize("extra,message", [
    ({"scope": "user", "users": ["bob"]}, "connect as each of bob instead of using users"),
    ({"target_os": "Linux"}, "target_os cannot be used on Windows hosts"),
    ({"netrc_entries": [{"machine": "a.example", "default": True}]}, ".netrc: "),
    ({"http": "ftp://proxy.corp.example:21"}, ".condarc: "),
    ({"world_readable_password": False}, "world_readable_password=true"),
    ({"ca_certificates": "not a certificate"}, "ca_certificates must hold PEM certificates"),
])
def test_conda_proxy_refuses_before_the_first_method_writes(extra, message):
    """What a later method would refuse fails the task before an earlier one has written anything."""
    host = WindowsHost()
    result = run_action("conda_proxy", dict(COMBINED_ARGS, **extra), host)
    assert result.get("failed") and message in result["msg"], result
    assert result["msg"].endswith("nothing was changed on this host")
    assert host.files == {} and host.env == {"machine": {}, "user": {}} and host.calls == []
    assert SECRET not in repr(result)


def test_conda_proxy_reports_variables_unmasked_but_the_password_and_a_rerun_diffs_nothing():
    host = WindowsHost()
    result = run_action("conda_proxy", COMBINED_ARGS, host, diff=True)
    variables = result["env"][0]["variables"]
    assert variables["no_proxy"] == "localhost,.corp.example", variables
    assert variables["HTTP_PROXY"] == "http://fleet:********@proxy.corp.example:3128", variables
    assert run_action("conda_proxy", COMBINED_ARGS, host, diff=True)["diff"] == []


def test_conda_proxy_root_is_refused_on_windows_before_any_write():
    host = WindowsHost()
    result = run_action("conda_proxy", dict(COMBINED_ARGS, root="/sandbox"), host)
    assert result.get("failed") and "root cannot be used" in result["msg"], result
    assert host.files == {} and host.env == {"machine": {}, "user": {}}


CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def test_conda_proxy_deploys_the_ca_and_points_ssl_verify_at_it_then_absent_removes_both():
    """ca_certificates on Windows: C:\\ProgramData\\conda (system scope) with win_file and win_copy; the system
    .condarc names it; state=absent removes the CA and ssl_verify."""
    host = WindowsHost()
    result = run_action("conda_proxy", dict(COMBINED_ARGS, ca_certificates=CA_PEM), host)
    assert result["changed"] and not result.get("failed"), result
    ca = "C:\\ProgramData\\conda\\condafleet-proxy-ca.pem"
    assert host.files[ca] == CA_PEM.encode() and result["ca"] == [{"user": None, "path": ca, "changed": True}]
    assert b"ssl_verify: 'C:\\ProgramData\\conda\\condafleet-proxy-ca.pem'" in host.files[
        "C:\\ProgramData\\conda\\.condarc"] or b"ssl_verify: C:" in host.files["C:\\ProgramData\\conda\\.condarc"]
    assert run_action("conda_proxy", dict(COMBINED_ARGS, ca_certificates=CA_PEM), host)["changed"] is False
    gone = run_action("conda_proxy", dict(COMBINED_ARGS, ca_certificates="", state="absent"), host)
    assert gone["changed"] and ca not in host.files, gone
    assert b"ssl_verify" not in host.files.get("C:\\ProgramData\\conda\\.condarc", b"")
