# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""condafleet.proxy.local_auth_proxy run in-process: refusals before anything is written, check mode, secrets.

The real service, px and the squids are in tests/integration/test_local_auth_proxy.py."""

from __future__ import annotations

import json
import os

import pytest

from modulerun import call_module

SECRET = "Unit-S3cret'pw"


def files_under(root) -> list[str]:
    return sorted(os.path.join(d, f) for d, _dirs, names in os.walk(str(root)) for f in names)


@pytest.mark.parametrize("args, message", [
    (dict(auth="basic", upstream=["u:" + SECRET + "@proxy:8080"], username="a", password=SECRET), "credentials"),
    (dict(auth="basic", upstream=["proxy:8080"], username="a", password=SECRET), "service_user"),
    (dict(auth="ntlm", upstream=["proxy:8080"], username="a", password=SECRET, service_user="daemon",
          pac_url="http://wpad/p.pac"), "exactly one"),
    (dict(auth="ntlm", pac_url="http://wpad/p.pac", username="a", password=SECRET, service_user="daemon"), "PAC"),
    (dict(auth="ntlm", upstream=["proxy:8080"], username="a", service_user="daemon"), "exactly one of password"),
    (dict(auth="ntlm", upstream=["proxy:8080"], username="a", ntlm_hash="xyz", service_user="daemon"), "32 hex"),
    (dict(auth="kerberos", upstream=["proxy:8080"], password=SECRET), "nothing secret"),
    (dict(auth="basic", upstream=["proxy:8080"], listen_port=80, service_user="daemon"), "listen_port"),
    (dict(auth="basic", upstream=["proxy:8080"], service_user="root", username="a", password=SECRET), "not be root"),
    (dict(auth="basic", upstream=["proxy:8080"], service_user="daemon", username="a b", password=SECRET), "username"),
    (dict(auth="basic", upstream=["proxy:8080"], service_user="daemon", username="a", password="x\ny"), "newline"),
    (dict(auth="none", upstream=["proxy:8080"], service_name="../evil"), "service_name"),
    (dict(state="present"), "needs auth"),
])
def test_refused_before_anything_is_written(tmp_path, args, message):
    args = dict(args, config_dir=str(tmp_path / "conf"), venv=str(tmp_path / "venv"))
    result = call_module("local_auth_proxy", args)
    assert result.get("failed") and message in result["msg"], result
    assert SECRET not in json.dumps(result)
    assert files_under(tmp_path) == []


def test_check_mode_predicts_without_writing_and_masks_the_diff(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("a system service for another account needs root")
    args = dict(auth="basic", upstream=["proxy.corp.example:8080"], service_user="daemon", username="svc",
                password=SECRET, config_dir=str(tmp_path / "conf"), venv=str(tmp_path / "venv"), service_name="cf-unit-test")
    result = call_module("local_auth_proxy", args, check=True, diff=True)
    assert not result.get("failed"), result
    assert result["changed"] and result["px_version"] == "0.13.0" and not result["pip_ran"]
    assert files_under(tmp_path) == [] and not os.path.exists("/etc/systemd/system/cf-unit-test.service")
    text = json.dumps(result)
    assert SECRET not in text and "PX_PASSWORD=********" in text
    assert "listen = 127.0.0.1" in text and "User=daemon" in text


def test_ntlm_check_mode_diff_shows_no_hash(tmp_path):
    if os.geteuid() != 0 or not os.access("/usr/sbin/cntlm", os.X_OK):
        pytest.skip("needs root and cntlm")
    from ansible_collections.condafleet.proxy.plugins.module_utils import _authproxy

    args = dict(auth="ntlm", upstream=["proxy.corp.example:8080"], service_user="daemon", username="svc",
                ntlm_domain="CORP", password=SECRET, config_dir=str(tmp_path / "conf"), service_name="cf-unit-test")
    result = call_module("local_auth_proxy", args, check=True, diff=True)
    assert not result.get("failed"), result
    text = json.dumps(result)
    assert _authproxy.ntlm_digest("ntlmv2", "svc", "CORP", SECRET) not in text and SECRET not in text
    assert "PassNTLMv2\\t********" in text and result["engine"] == "cntlm"
    assert files_under(tmp_path) == []
