# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""conda_proxy_info against a real account, its real login shell, a real tinyproxy and a real channel.

A throwaway account (created and deleted here, home in a temp dir) gets its files from the
collection's own modules; the info module must then read them the way conda does, prove the
request goes through the proxy (the proxy's log shows it), and name what is wrong when it fails.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import uuid

import pytest

from modulerun import run_adhoc
from servers import ChannelServer, require, write_channel

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creates a throwaway account (needs root)")


@pytest.fixture
def account():
    """A throwaway account whose home it can reach (pytest's tmp dirs are private to root)."""
    name = "cfi" + uuid.uuid4().hex[:8]
    base = tempfile.mkdtemp(prefix="condafleet-info-", dir="/var/tmp")
    os.chmod(base, 0o755)
    home = os.path.join(base, name)
    subprocess.run(["useradd", "-m", "-d", home, "-s", "/bin/bash", name], check=True, capture_output=True)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", "-f", name], capture_output=True, check=False)
        shutil.rmtree(base, ignore_errors=True)


def configure(module: str, args: dict) -> None:
    result, raw = run_adhoc(module, args)
    assert not result.get("failed"), raw


def test_condarc_proxy_is_used_and_the_proxy_sees_the_request(account, tinyproxy, channel):
    configure("condarc_proxy", {"user": account.pw_name, "http": tinyproxy.url, "https": tinyproxy.url,
                                "proxy_username": tinyproxy.username, "proxy_password": tinyproxy.password})
    result, raw = run_adhoc("conda_proxy_info", {"user": account.pw_name, "url": channel.repodata_url}, verbosity=3)
    assert not result.get("failed"), raw
    assert result["condarc_files"] == [os.path.join(account.pw_dir, ".condarc")]
    assert result["probe"]["outcome"] == "ok" and result["probe"]["source"] == "condarc"
    assert result["probe"]["proxy"] == "http://fleet:********@127.0.0.1:%d" % tinyproxy.port
    assert "repodata.json" in tinyproxy.log()
    assert tinyproxy.password not in raw


def test_env_variables_from_the_login_shell_are_used_when_condarc_has_none(account, tinyproxy, channel):
    configure("env_proxy", {"scope": "user", "user": account.pw_name, "http_proxy": tinyproxy.url,
                            "https_proxy": tinyproxy.url, "proxy_username": tinyproxy.username,
                            "proxy_password": tinyproxy.password})
    result, raw = run_adhoc("conda_proxy_info", {"user": account.pw_name, "url": channel.repodata_url})
    assert not result.get("failed"), raw
    assert result["probe"]["source"] == "env" and result["probe"]["outcome"] == "ok"
    assert result["environment"]["http_proxy"] == "http://fleet:********@127.0.0.1:%d" % tinyproxy.port


def test_wrong_credentials_fail_with_407_explained(account, tinyproxy, channel):
    configure("condarc_proxy", {"user": account.pw_name, "http": tinyproxy.url, "proxy_username": "fleet",
                                "proxy_password": "wrong"})
    result, raw = run_adhoc("conda_proxy_info", {"user": account.pw_name, "url": channel.repodata_url})
    assert result.get("failed")
    # tinyproxy answers 401 to wrong credentials and 407 to none
    assert result["probe"]["outcome"] in ("proxy_auth_required", "http_error"), result
    configure("condarc_proxy", {"user": account.pw_name, "http": tinyproxy.url})
    result, raw = run_adhoc("conda_proxy_info", {"user": account.pw_name, "url": channel.repodata_url})
    assert result["failed"] and result["probe"]["outcome"] == "proxy_auth_required"
    assert "407" in result["msg"] and "credentials" in result["msg"]


def test_unreachable_proxy_is_named(account, channel):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    configure("condarc_proxy", {"user": account.pw_name, "http": "http://127.0.0.1:%d" % port})
    result, _raw = run_adhoc("conda_proxy_info", {"user": account.pw_name, "url": channel.repodata_url})
    assert result["failed"] and result["probe"]["outcome"] == "proxy_unreachable"
    assert "could not be reached" in result["msg"]


def test_no_proxy_configured_fails_unless_allowed(account, channel):
    result, _raw = run_adhoc("conda_proxy_info", {"user": account.pw_name, "url": channel.repodata_url})
    assert result["failed"] and "no proxy would be used" in result["msg"]
    result, raw = run_adhoc("conda_proxy_info", {"user": account.pw_name, "url": channel.repodata_url,
                                                 "require_proxy": False})
    assert not result.get("failed"), raw
    assert result["probe"] == dict(result["probe"], source="none", outcome="ok", proxy=None)


def test_conda_disagreeing_with_the_files_fails(account, tinyproxy):
    """conda itself cannot be installed here (PyPI only has conda 4.3 from 2017), so a stand-in executable
    answers `conda config --show proxy_servers --json`; what is tested is the module's comparison."""
    configure("condarc_proxy", {"user": account.pw_name, "http": tinyproxy.url})
    import pathlib

    fake = pathlib.Path(account.pw_dir) / "conda"
    fake.write_text("#!/bin/sh\necho '{\"proxy_servers\": {\"http\": \"%s\"}}'\n" % tinyproxy.url)
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    result, raw = run_adhoc("conda_proxy_info", {"user": account.pw_name, "conda_executable": str(fake)})
    assert not result.get("failed"), raw
    assert result["conda"] == {"path": str(fake), "proxy_servers": {"http": tinyproxy.url}}
    fake.write_text("#!/bin/sh\necho '{\"proxy_servers\": {}}'\n")
    result, _raw = run_adhoc("conda_proxy_info", {"user": account.pw_name, "conda_executable": str(fake)})
    assert result["failed"] and "conda reports proxy_servers" in result["msg"]


def test_merges_system_and_user_files_with_final(account, tmp_path):
    """#!final in an earlier file stops a later one from overriding, key by key as conda merges maps."""
    from ansible_collections.condafleet.proxy.plugins.modules.conda_proxy_info import merged_settings

    system = tmp_path / "system.condarc"
    user = tmp_path / "user.condarc"
    system.write_text("proxy_servers:  #!final\n  http: http://locked:1\nssl_verify: /ca.pem\n")
    user.write_text("proxy_servers:\n  http: http://mine:2\n  https: http://mine:3\nssl_verify: false\n")
    files, servers, ssl_verify = merged_settings([str(system), str(tmp_path / "missing"), str(user)])
    assert files == [str(system), str(user)]
    assert servers == {"http": "http://locked:1"}
    assert ssl_verify is False
    system.write_text("proxy_servers:\n  http: http://sys:1\n")
    assert merged_settings([str(system), str(user)])[1] == {"http": "http://mine:2", "https": "http://mine:3"}
    user.write_text("proxy_servers: [unparsable\n")
    assert merged_settings([str(system), str(user)])[1] == {"http": "http://sys:1"}


def test_tls_failure_is_named_and_ssl_verify_in_the_home_fixes_it(account, tinyproxy, tmp_path):
    """An HTTPS channel whose certificate no default trust store accepts, reached through the proxy
    (CONNECT): verify names the TLS failure; with the CA in ``ssl_verify: ~/...`` the request succeeds,
    and the file holds the account's absolute path (conda does not expand ``~``)."""
    require("openssl")
    root = tmp_path / "channel"
    write_channel(str(root))
    with ChannelServer(str(root), tls_dir=str(tmp_path)) as channel:
        url = channel.url + "/fleet-channel/noarch/repodata.json"
        configure("condarc_proxy", {"user": account.pw_name, "https": tinyproxy.url,
                                    "proxy_username": tinyproxy.username, "proxy_password": tinyproxy.password})
        result, _raw = run_adhoc("conda_proxy_info", {"user": account.pw_name, "url": url})
        assert result["failed"] and result["probe"]["outcome"] == "tls_error", result
        assert "TLS verification failed" in result["msg"] and "ssl_verify" in result["msg"]

        ca = os.path.join(account.pw_dir, ".conda", "corp-ca.pem")
        os.makedirs(os.path.dirname(ca))
        shutil.copy(channel.ca_path, ca)
        configure("condarc_proxy", {"user": account.pw_name, "https": tinyproxy.url, "ssl_verify": "~/.conda/corp-ca.pem",
                                    "proxy_username": tinyproxy.username, "proxy_password": tinyproxy.password})
        with open(os.path.join(account.pw_dir, ".condarc")) as handle:
            assert "ssl_verify: %s\n" % ca in handle.read()
        result, raw = run_adhoc("conda_proxy_info", {"user": account.pw_name, "url": url})
        assert not result.get("failed"), raw
        assert result["ssl_verify"] == ca and result["probe"]["outcome"] == "ok"
        assert "CONNECT" in tinyproxy.log() and channel.requests == ["/fleet-channel/noarch/repodata.json"]
