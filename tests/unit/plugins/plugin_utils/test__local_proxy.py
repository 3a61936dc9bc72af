# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""conda_proxy's local_proxy plan: the corporate proxy becomes the local proxy's upstream, the methods get
http://127.0.0.1:PORT and no credential, and what cannot work is refused before anything runs."""

from __future__ import annotations

import pytest

from ansible_collections.condafleet.proxy.plugins.module_utils._combined import argument_spec, validate_args
from ansible_collections.condafleet.proxy.plugins.plugin_utils._local_proxy import plan


def planned(**args):
    params = validate_args(argument_spec(), dict(args))
    return plan(params, dict(args))


def test_basic_moves_the_credentials_to_the_local_proxy_only():
    result = planned(http="http://fleet:p%40ss@proxy.corp.example:3128", netrc_entries=[],
                     local_proxy={"auth": "basic", "listen_port": 3999})
    assert result.proxy_args["upstream"] == ["proxy.corp.example:3128"]
    assert (result.proxy_args["username"], result.proxy_args["password"]) == ("fleet", "p@ss")
    assert result.proxy_args["service_user"] == result.service_user == "condafleet-proxy"
    assert result.method_args["http"] == result.method_args["https"] == "http://127.0.0.1:3999"
    assert "local_proxy" not in result.method_args and "p@ss" not in repr(result.method_args)
    assert not result.needs_cntlm


def test_ntlm_needs_cntlm_and_prefers_a_given_hash():
    result = planned(http="http://proxy.corp.example:8080", proxy_username="bob", proxy_password="pw",
                     local_proxy={"auth": "ntlm", "ntlm_domain": "CORP", "ntlm_hash": "0" * 32})
    assert result.needs_cntlm
    assert result.proxy_args["ntlm_hash"] == "0" * 32 and "password" not in result.proxy_args
    assert result.method_args["https"] == "http://127.0.0.1:3128"
    assert "proxy_password" not in result.method_args


def test_kerberos_is_one_account_in_user_scope_without_credentials():
    result = planned(http="http://proxy.corp.example:3128", scope="user", users=["alice"],
                     local_proxy={"auth": "kerberos", "listen_port": 3200})
    assert result.proxy_args["user"] == "alice" and result.service_user is None
    for bad, words in [(dict(scope="system", users=["alice"]), "scope=user"),
                       (dict(scope="user", users=["alice", "bob"]), "one account"),
                       (dict(scope="user", users=["alice"], proxy_username="x"), "Kerberos ticket")]:
        with pytest.raises(ValueError, match=words):
            planned(http="http://proxy.corp.example:3128", local_proxy={"auth": "kerberos"}, **bad)


def test_pac_instead_of_an_upstream_and_never_both():
    result = planned(local_proxy={"pac_url": "http://wpad.corp.example/proxy.pac"})
    assert result.proxy_args["pac_url"] == "http://wpad.corp.example/proxy.pac" and "upstream" not in result.proxy_args
    with pytest.raises(ValueError, match="exactly one"):
        planned(http="http://proxy:3128", local_proxy={"pac_url": "http://wpad/proxy.pac"})
    with pytest.raises(ValueError, match="exactly one"):
        planned(local_proxy={"auth": "none"})


def test_https_upstream_and_missing_username_are_refused():
    with pytest.raises(ValueError, match="http:// URL"):
        planned(https="https://proxy.corp.example:443", local_proxy={"auth": "none"})
    with pytest.raises(ValueError, match="needs proxy_username"):
        planned(http="http://proxy.corp.example:3128", local_proxy={"auth": "basic"})
    with pytest.raises(ValueError, match="logs in nowhere"):
        planned(http="http://u:p@proxy.corp.example:3128", local_proxy={"auth": "none"})


def test_absent_creates_nothing():
    result = planned(http="http://proxy.corp.example:3128", proxy_username="bob", state="absent",
                     local_proxy={"auth": "ntlm", "ntlm_hash": "1" * 32})
    assert result.service_user is None and not result.needs_cntlm
    assert result.proxy_args["state"] == "absent"
