# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""conda_proxy_info's Windows path against the simulated Windows host of test_windows_actions.py, with a registry:
the Internet Settings (WinINET) proxy reported, and found to override .condarc for repodata exactly when conda's
environment has no proxy variable (the decision itself is judged against CPython's and requests' Windows code in
tests/unit/plugins/module_utils/test__probe_wininet.py)."""

from __future__ import annotations

import pytest

from test_windows_actions import WindowsHost, run_action

from ansible_collections.condafleet.proxy.plugins.plugin_utils._windows_info import (
    INTERNET_SETTINGS,
    MACHINE_ENVIRONMENT,
    USER_ENVIRONMENT,
)

PASSWORD = "Win-s3cret-pw"
CONDARC = ("proxy_servers:\n  http: http://fleet:%s@proxy.corp.example:3128\n"
           "  https: http://fleet:%s@proxy.corp.example:3128\n" % (PASSWORD, PASSWORD)).encode()
URL = "https://conda.anaconda.org/conda-forge/noarch/repodata.json"


class RegistryHost(WindowsHost):
    """The simulated host, with registry keys answered as ansible.windows.win_reg_stat does."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: dict[str, dict] = {}

    def execute_module(self, module_name=None, module_args=None, task_vars=None, **kwargs):
        if module_name == "ansible.windows.win_reg_stat":
            self.calls.append((module_name, dict(module_args)))
            values = self.keys.get(module_args["path"])
            level = {MACHINE_ENVIRONMENT: "machine", USER_ENVIRONMENT: "user"}.get(module_args["path"])
            if level:  # what win_environment wrote is in the registry too
                values = dict(values or {}, **self.env[level])
            if values is None:
                return {"changed": False, "exists": False}
            return {"changed": False, "exists": True, "sub_keys": [],
                    "properties": dict((name, {"value": value, "raw_value": value,
                                               "type": "REG_DWORD" if isinstance(value, int) else "REG_SZ"})
                                       for name, value in values.items())}
        return super().execute_module(module_name, module_args, task_vars, **kwargs)


@pytest.fixture
def host():
    host = RegistryHost()
    host.files["%USERPROFILE%\\.condarc"] = CONDARC
    host.keys[MACHINE_ENVIRONMENT] = {"Path": "C:\\Windows", "OS": "Windows_NT"}
    host.keys[USER_ENVIRONMENT] = {"TEMP": "C:\\Users\\alice\\AppData\\Local\\Temp"}
    host.keys[INTERNET_SETTINGS] = {"ProxyEnable": 0, "ProxyServer": "winproxy.corp.example:8080"}
    return host


def test_wininet_disabled_condarc_holds(host):
    result = run_action("conda_proxy_info", {"url": URL}, host)
    assert not result.get("failed"), result
    assert result["condarc_files"] == ["%USERPROFILE%\\.condarc"]
    assert result["wininet"] == {"enabled": False, "proxy_server": "winproxy.corp.example:8080",
                                 "proxy_override": None, "auto_config_url": None, "used_by_conda": False}
    assert result["requests"]["repodata"]["source"] == "condarc"
    assert result["requests"]["packages"]["proxy"] == "http://fleet:********@proxy.corp.example:3128"
    assert PASSWORD not in repr(result)
    # read only: no write module, and every read was a slurp or a registry read
    assert set(name for name, _args in host.calls) == {"ansible.windows.slurp", "ansible.windows.win_reg_stat"}


def test_wininet_proxy_overrides_condarc_for_repodata_and_the_task_fails(host):
    host.keys[INTERNET_SETTINGS]["ProxyEnable"] = 1
    result = run_action("conda_proxy_info", {"url": URL}, host)
    assert result["failed"] is True
    assert result["wininet"]["used_by_conda"] is True
    assert result["requests"]["repodata"] == {"proxy": "http://winproxy.corp.example:8080", "source": "wininet",
                                              "setting": "WinINET ProxyServer"}
    assert result["requests"]["packages"]["source"] == "condarc"
    assert result["conflicts"][0]["variable"] == "WinINET ProxyServer"
    assert "Internet Settings (WinINET) name http://winproxy.corp.example:8080" in result["msg"]
    assert "condafleet.proxy.env_proxy" in result["msg"]
    assert PASSWORD not in repr(result)


@pytest.mark.parametrize("variables", [{"HTTPS_PROXY": "http://fleet:%s@proxy.corp.example:3128" % PASSWORD,
                                        "HTTP_PROXY": "http://fleet:%s@proxy.corp.example:3128" % PASSWORD},
                                       {"https_proxy": "http://fleet:%s@proxy.corp.example:3128" % PASSWORD,
                                        "http_proxy": "http://fleet:%s@proxy.corp.example:3128" % PASSWORD}])
def test_the_accounts_proxy_variables_win_over_the_registry(host, variables):
    """What env_proxy writes on Windows (user-level variables): the registry is then not consulted."""
    host.keys[INTERNET_SETTINGS]["ProxyEnable"] = 1
    host.keys[USER_ENVIRONMENT].update(variables)
    result = run_action("conda_proxy_info", {"url": URL}, host)
    assert not result.get("failed"), result
    assert result["wininet"]["used_by_conda"] is False
    assert result["requests"]["repodata"]["source"] == "env"
    assert result["environment"]["HTTPS_PROXY"] == "http://fleet:********@proxy.corp.example:3128"
    assert PASSWORD not in repr(result)


def test_no_proxy_alone_also_keeps_the_registry_out(host):
    host.keys[INTERNET_SETTINGS]["ProxyEnable"] = 1
    host.keys[MACHINE_ENVIRONMENT]["NO_PROXY"] = "localhost"
    result = run_action("conda_proxy_info", {"url": URL}, host)
    assert not result.get("failed"), result
    assert result["requests"]["repodata"]["source"] == "condarc"


def test_override_bypasses_the_registry_proxy_for_the_channel(host):
    host.keys[INTERNET_SETTINGS].update(ProxyEnable=1, ProxyOverride="<local>;conda.anaconda.org")
    result = run_action("conda_proxy_info", {"url": URL}, host)
    assert not result.get("failed"), result
    assert result["requests"]["repodata"]["source"] == "condarc"


def test_pac_only_is_reported_as_ignored_by_conda(host):
    host.keys[INTERNET_SETTINGS] = {"ProxyEnable": 0, "AutoConfigURL": "http://wpad.corp.example/proxy.pac"}
    result = run_action("conda_proxy_info", {"url": URL}, host)
    assert not result.get("failed"), result
    assert any("does not evaluate PAC files" in text for text in result["warnings_found"])


def test_no_proxy_anywhere_fails_with_require_proxy(host):
    del host.files["%USERPROFILE%\\.condarc"]
    result = run_action("conda_proxy_info", {"url": URL}, host)
    assert result["failed"] is True and "no proxy would be used" in result["msg"]
    assert not run_action("conda_proxy_info", {"url": URL, "require_proxy": False}, host).get("failed")


def test_system_condarc_is_read_and_machine_variables_are_overridden_by_the_accounts(host):
    del host.files["%USERPROFILE%\\.condarc"]
    host.files["C:\\ProgramData\\conda\\.condarc"] = CONDARC
    host.keys[MACHINE_ENVIRONMENT]["HTTPS_PROXY"] = "http://machine:1"
    host.keys[USER_ENVIRONMENT]["HTTPS_PROXY"] = "http://fleet:%s@proxy.corp.example:3128" % PASSWORD
    host.keys[USER_ENVIRONMENT]["HTTP_PROXY"] = "http://fleet:%s@proxy.corp.example:3128" % PASSWORD
    result = run_action("conda_proxy_info", {"url": URL}, host)
    assert not result.get("failed"), result
    assert result["condarc_files"] == ["C:\\ProgramData\\conda\\.condarc"]
    assert result["requests"]["repodata"]["setting"] == "HTTPS_PROXY"


def test_user_is_refused_with_the_way_to_get_that_view(host):
    result = run_action("conda_proxy_info", {"user": "bob"}, host)
    assert result["failed"] is True and "become_user" in result["msg"]
    assert host.calls == []


def test_an_unusable_override_pattern_is_a_clear_failure(host):
    host.keys[INTERNET_SETTINGS].update(ProxyEnable=1, ProxyOverride="[corp")
    result = run_action("conda_proxy_info", {"url": URL}, host)
    assert result["failed"] is True and "ProxyOverride" in result["msg"]


def test_conda_proxy_verify_on_windows_reads_the_view_and_names_the_registry_proxy(host):
    """conda_proxy's verify on a Windows host: the files and variables it just wrote, read back with the registry
    proxy; the env method's variables win over WinINET, without them the registry's proxy fails the task."""
    del host.files["%USERPROFILE%\\.condarc"]
    host.keys[INTERNET_SETTINGS]["ProxyEnable"] = 1
    args = {"http": "http://proxy.corp.example:3128", "https": "http://proxy.corp.example:3128", "verify": True,
            "verify_url": URL}
    result = run_action("conda_proxy", args, host)
    assert not result.get("failed"), result
    assert result["verify"][0]["wininet"]["used_by_conda"] is False
    assert result["verify"][0]["requests"]["repodata"]["proxy"] == "http://proxy.corp.example:3128"

    bare = RegistryHost()
    bare.keys[INTERNET_SETTINGS] = {"ProxyEnable": 1, "ProxyServer": "winproxy.corp.example:8080"}
    result = run_action("conda_proxy", dict(args, methods=["condarc"]), bare)
    assert result["failed"] is True and result["msg"].startswith("verify: conflict for http:// URLs")
    assert result["verify"][0]["requests"]["repodata"]["source"] == "wininet"
