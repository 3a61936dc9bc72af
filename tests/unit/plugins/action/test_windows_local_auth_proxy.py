# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""local_auth_proxy's Windows path against the simulated Windows host of test_windows_actions.py: px's venv
checked and installed once, px.ini with the POSIX renderer's bytes, the Run key, idempotence, check mode,
absent, and refusals (nothing secret is written on Windows: px uses the account's own credentials)."""

from __future__ import annotations

import pytest

from test_windows_actions import WindowsHost, run_action

from ansible_collections.condafleet.proxy.plugins.action.local_auth_proxy import CONFIG_DIR, RUN_KEY
from ansible_collections.condafleet.proxy.plugins.module_utils import _authproxy

ARGS = {"auth": "kerberos", "upstream": ["proxy.corp.example:8080"], "listen_port": 3130}
INI = CONFIG_DIR + "\\px.ini"


class PxHost(WindowsHost):
    """The simulated host, with a venv whose px version win_shell reports and a registry for win_regedit."""

    def __init__(self) -> None:
        super().__init__()
        self.px_version = ""
        self.run: dict[str, str] = {}
        self.pip_runs = 0
        self.check = False  # win_regedit supports check mode: it predicts and writes nothing

    def execute_module(self, module_name=None, module_args=None, task_vars=None, **kwargs):
        if module_name == "ansible.windows.win_shell":
            self.calls.append((module_name, dict(module_args)))
            script = module_args["_raw_params"]
            if "pip" in script:
                self.pip_runs += 1
                self.px_version = script.split("px-proxy==")[1].split("'")[0]
                return {"changed": True, "rc": 0, "stdout": "", "stderr": ""}
            return {"changed": True, "rc": 0, "stdout": self.px_version + "\r\n" if self.px_version else "", "stderr": ""}
        if module_name == "ansible.windows.win_regedit":
            self.calls.append((module_name, dict(module_args)))
            assert module_args["path"] == RUN_KEY
            if module_args.get("state") == "absent":
                return {"changed": self.run.pop(module_args["name"], None) is not None}
            changed = self.run.get(module_args["name"]) != module_args["data"]
            if not self.check:
                self.run[module_args["name"]] = module_args["data"]
            return {"changed": changed}
        return super().execute_module(module_name, module_args, task_vars, **kwargs)


def test_installs_once_writes_the_posix_ini_and_registers_the_run_key():
    host = PxHost()
    result = run_action("local_auth_proxy", ARGS, host)
    assert result["changed"] and not result.get("failed"), result
    assert result["proxy_url"] == "http://127.0.0.1:3130" and result["pip_ran"] and host.pip_runs == 1
    assert host.files[INI] == _authproxy.render_px_ini("kerberos", 3130, ["proxy.corp.example:8080"])
    assert host.run["condafleet-auth-proxy"].endswith('pythonw.exe" -m px --config="%s"' % INI)
    assert any("next logon" in text for text in result["warnings"])

    again = run_action("local_auth_proxy", ARGS, host)
    assert again["changed"] is False and again["pip_ran"] is False and host.pip_runs == 1, again


def test_check_mode_reads_but_installs_and_writes_nothing():
    host = PxHost()
    host.check = True
    result = run_action("local_auth_proxy", ARGS, host, check=True)
    assert result["changed"] is True and host.pip_runs == 0 and host.files == {} and host.run == {}
    # the read-only version check did run (win_shell skips itself in check mode otherwise)
    assert [name for name, _args in host.calls][0] == "ansible.windows.win_shell"


def test_absent_removes_the_run_value_and_the_file():
    host = PxHost()
    run_action("local_auth_proxy", ARGS, host)
    removed = run_action("local_auth_proxy", {"state": "absent"}, host)
    assert removed["changed"] and host.run == {} and INI not in host.files
    assert run_action("local_auth_proxy", {"state": "absent"}, host)["changed"] is False


@pytest.mark.parametrize("args,words", [
    (dict(ARGS, auth="basic"), "not offered on Windows"),
    (dict(ARGS, auth="ntlm", username="bob", password="pw"), "no username, password"),
    (dict(ARGS, service_user="svc"), "service_user cannot be used on Windows"),
    (dict(ARGS, pac_url="http://wpad/proxy.pac"), "exactly one of upstream"),
])
def test_refusals_touch_nothing(args, words):
    host = PxHost()
    result = run_action("local_auth_proxy", args, host)
    assert result["failed"] and words in result["msg"], result
    assert host.files == {} and host.run == {} and host.pip_runs == 0


def test_conda_proxy_local_proxy_on_windows_points_every_method_at_px():
    """The role's one task on a Windows host: px registered for the connecting account, then .condarc and the
    account's variables name http://127.0.0.1:PORT and nothing else; rerun unchanged; absent undoes both."""
    host = PxHost()
    args = {"http": "http://proxy.corp.example:8080", "scope": "user", "methods": ["condarc", "env"],
            "local_proxy": {"auth": "kerberos", "listen_port": 3130}}
    result = run_action("conda_proxy", args, host)
    assert result["changed"] and not result.get("failed"), result
    assert result["local_proxy"]["proxy_url"] == "http://127.0.0.1:3130"
    condarc = host.files["%USERPROFILE%\\.condarc"].decode()
    assert "http://127.0.0.1:3130" in condarc and "proxy.corp.example" not in condarc
    assert host.env["user"]["HTTPS_PROXY"] == "http://127.0.0.1:3130"
    assert "condafleet-auth-proxy" in host.run
    assert run_action("conda_proxy", args, host)["changed"] is False

    removed = run_action("conda_proxy", dict(args, state="absent"), host)
    assert removed["changed"] and host.run == {} and "%USERPROFILE%\\.condarc" not in host.files


def test_conda_proxy_local_proxy_on_windows_refuses_credentials_and_basic():
    host = PxHost()
    for local, extra, words in [({"auth": "basic"}, {}, "not offered on Windows"),
                                ({"auth": "ntlm"}, {"proxy_username": "bob"}, "give no users, proxy_username")]:
        result = run_action("conda_proxy", dict({"http": "http://proxy.corp.example:8080", "local_proxy": local},
                                                **extra), host)
        assert result["failed"] and words in result["msg"], result
    assert host.files == {} and host.run == {}
