# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""condarc_policy's Windows path, against the simulated Windows host of test_windows_actions.py: the paths Windows
uses, the same bytes the POSIX module writes, idempotence, check mode, absent, and refusals before any write."""

from __future__ import annotations

import pytest

from test_windows_actions import WindowsHost, run_action, written_by_posix_module

POLICY = {"channels": ["https://repo.corp.example/conda-forge"], "allowlist_channels":
          ["https://repo.corp.example/conda-forge"], "channel_priority": "strict", "safety_checks": "enabled",
          "extra_safety_checks": True, "disallowed_packages": ["pycrypto"], "exclude_newer": "7d",
          "final": ["allowlist_channels", "safety_checks"]}


@pytest.mark.parametrize("extra,path", [
    ({}, "%USERPROFILE%\\.condarc"),
    ({"scope": "system"}, "C:\\ProgramData\\conda\\.condarc"),
    ({"user": "bob"}, "C:\\Users\\bob\\.condarc"),
    ({"scope": "prefix", "prefix": "C:\\envs\\py311"}, "C:\\envs\\py311\\.condarc"),
])
def test_paths_and_bytes_match_the_posix_module(extra, path, tmp_path):
    host = WindowsHost()
    args = dict(POLICY, **extra)
    result = run_action("condarc_policy", args, host, diff=True)
    assert result["changed"] and not result.get("failed"), result
    assert result["path"] == path
    assert result["final"] == ["allowlist_channels", "safety_checks"] and result["policy"]["exclude_newer"] == "7d"
    posix_args = {k: v for k, v in args.items() if k not in ("scope", "prefix", "user")}
    assert host.files[path] == written_by_posix_module("condarc_policy", dict(posix_args, mode="0644"), tmp_path)
    assert result["diff"]["after"] == host.files[path].decode()
    assert run_action("condarc_policy", args, host)["changed"] is False


def test_check_mode_predicts_and_writes_nothing():
    host = WindowsHost()
    result = run_action("condarc_policy", POLICY, host, check=True)
    assert result["changed"] is True and host.files == {}


def test_keeps_the_rest_of_an_existing_file_and_absent_restores_it():
    host = WindowsHost()
    original = b"\xef\xbb\xbf# team\r\nproxy_servers:  #!final\r\n  https: http://p:3128  # main\r\nssl_verify: true\r\n"
    host.files["%USERPROFILE%\\.condarc"] = original
    run_action("condarc_policy", POLICY, host)
    assert host.files["%USERPROFILE%\\.condarc"].startswith(original)
    assert b"safety_checks: enabled  #!final\r\n" in host.files["%USERPROFILE%\\.condarc"]
    absent = {key: value for key, value in POLICY.items() if key != "final"}
    result = run_action("condarc_policy", dict(absent, state="absent"), host)
    assert result["changed"] is True and result["policy"] == {}
    assert host.files["%USERPROFILE%\\.condarc"] == original


def test_absent_of_the_only_keys_removes_the_file_with_win_file():
    host = WindowsHost()
    run_action("condarc_policy", {"channel_priority": "strict"}, host)
    run_action("condarc_policy", {"channel_priority": "strict", "state": "absent"}, host)
    assert host.files == {}
    assert host.calls[-1] == ("ansible.windows.win_file", {"path": "%USERPROFILE%\\.condarc", "state": "absent"})


@pytest.mark.parametrize("args,message", [
    ({"channel_alias": "repo.corp.example"}, "needs a scheme"),
    ({"channels": ["repo.corp.example/conda-forge"]}, "without a scheme"),
    ({"safety_checks": "paranoid"}, "safety_checks"),
    ({"exclude_newer": "soon"}, "exclude_newer"),
    ({"channel_priority": "strict", "owner": "bob"}, "cannot be used on Windows"),
    ({"channel_priority": "strict", "scope": "system", "path": "C:\\x"}, "mutually exclusive"),
])
def test_refused_arguments_fail_before_touching_the_host(args, message):
    host = WindowsHost()
    result = run_action("condarc_policy", args, host)
    assert result["failed"] and message in result["msg"], result
    assert host.calls == []


def test_unparsable_file_fails_and_stays_untouched():
    host = WindowsHost()
    broken = b"channels:\n\t- a\n"
    host.files["%USERPROFILE%\\.condarc"] = broken
    result = run_action("condarc_policy", POLICY, host)
    assert result["failed"] and "line 2" in result["msg"], result
    assert host.files["%USERPROFILE%\\.condarc"] == broken
    assert [name for name, _args in host.calls] == ["ansible.windows.slurp"]
