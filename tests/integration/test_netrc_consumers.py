# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The .netrc written by condafleet.proxy.netrc_entry, read by its real consumers.

Python's ``netrc`` (explicit path and the default ``~/.netrc`` with its permission
check), ``curl --netrc-file`` and Python ``requests`` against a local site that
requires Basic auth.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import shutil

import pytest

from modulerun import call_module

HOSTILE = 'p@ss w"rd \\ #1 $(id) `id`; ünï'
# requests sends Basic credentials encoded as latin-1, the test site expects UTF-8: the shared
# curl/requests round trip uses an ASCII password; non-ASCII is covered by curl and Python's netrc.
HOSTILE_ASCII = 'p@ss w"rd \\ #1 $(id) `id`; x'
EXISTING = b"# kept\nmachine other.example login o password o\nmacdef init\ncd /pub\n\n"


def require(program: str) -> None:
    if not shutil.which(program):
        pytest.skip("not installed: %s" % program)


def clean_env(**extra) -> dict:
    """The environment of a fresh consumer: no proxies, no inherited NETRC."""
    env = {key: value for key, value in os.environ.items()
           if key.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "netrc", "curl_home")}
    env.update(extra)
    return env


def python_default_netrc(home) -> list:
    """``netrc.netrc()`` with no argument in a process whose HOME is ``home`` (owner and 0600 checks apply)."""
    code = "import json, netrc; print(json.dumps(netrc.netrc().authenticators('127.0.0.1')))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env=clean_env(HOME=str(home)), check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def curl_status(netrc_file, url) -> str:
    proc = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10",
                           "--netrc-file", str(netrc_file), url], capture_output=True, text=True, timeout=30,
                          env=clean_env(), check=False)
    return proc.stdout


def requests_status(url, **env) -> int:
    code = "import requests, sys; print(requests.get(sys.argv[1], timeout=10).status_code)"
    proc = subprocess.run([sys.executable, "-c", code, url], capture_output=True, text=True, timeout=60,
                          env=clean_env(**env), check=False)
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout)


def test_python_netrc_reads_exact_values_from_path_and_default_location(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    path = home / ".netrc"
    path.write_bytes(EXISTING)
    os.chmod(path, 0o644)  # too open for Python's default-location check: the module must fix it
    result = call_module("netrc_entry", dict(machine="127.0.0.1", login="svc user", password=HOSTILE,
                                             account="acct #2", path=str(path)))
    assert result["changed"] and result["mode_fixed"]
    import netrc

    assert netrc.netrc(str(path)).authenticators("127.0.0.1") == ("svc user", "acct #2", HOSTILE)
    assert python_default_netrc(home) == ["svc user", "acct #2", HOSTILE]


def test_curl_and_requests_authenticate_then_fail_after_absent(tmp_path, basic_auth_site):
    require("curl")
    site = basic_auth_site("svc", HOSTILE_ASCII)
    url = site.url + "/private"
    home = tmp_path / "home"
    home.mkdir()
    path = home / ".netrc"
    path.write_bytes(EXISTING)
    assert curl_status(path, url) == "401"

    assert call_module("netrc_entry", dict(machine="127.0.0.1", login="svc", password=HOSTILE_ASCII, path=str(path)))[
        "changed"]
    assert curl_status(path, url) == "200"
    assert requests_status(url, NETRC=str(path)) == 200
    assert requests_status(url, HOME=str(home)) == 200

    assert call_module("netrc_entry", dict(machine="127.0.0.1", state="absent", path=str(path)))["changed"]
    assert path.read_bytes() == EXISTING
    assert curl_status(path, url) == "401"
    assert requests_status(url, NETRC=str(path)) == 401


@pytest.mark.parametrize("password", ["plain", "with space", 'dq"', "bs\\", "#lead", "", "ünï"])
def test_curl_reads_each_quoting_case(tmp_path, basic_auth_site, password):
    require("curl")
    site = basic_auth_site("u", password)
    path = tmp_path / "netrc"
    call_module("netrc_entry", dict(machine="127.0.0.1", login="u", password=password, path=str(path)))
    assert curl_status(path, site.url + "/") == "200"


def test_entries_in_one_task_authenticate_curl_requests_and_python_netrc(tmp_path, basic_auth_site):
    """The role's form: every entry of an account in one netrc_entry task, each read back by the real clients."""
    require("curl")
    channel = basic_auth_site("svc", HOSTILE_ASCII)
    mirror = basic_auth_site("mirror", "mirror pw #2")
    home = tmp_path / "home"
    home.mkdir()
    path = home / ".netrc"
    path.write_bytes(EXISTING)
    # Two sites on 127.0.0.1 and localhost: one entry each, told apart by the clients by host name.
    entries = [dict(machine="127.0.0.1", login="svc", password=HOSTILE_ASCII),
               dict(machine="localhost", login="mirror", password="mirror pw #2", account="acct #9")]
    result = call_module("netrc_entry", dict(entries=entries, path=str(path)))
    assert result["changed"] and [entry["changed"] for entry in result["entries"]] == [True, True]
    channel_url = channel.url + "/private"
    mirror_url = mirror.url.replace("127.0.0.1", "localhost") + "/private"
    assert curl_status(path, channel_url) == "200"
    assert curl_status(path, mirror_url) == "200"
    assert requests_status(channel_url, NETRC=str(path)) == 200
    assert requests_status(mirror_url, HOME=str(home)) == 200
    import netrc

    assert netrc.netrc(str(path)).authenticators("localhost") == ("mirror", "acct #9", "mirror pw #2")
    assert python_default_netrc(home) == ["svc", "", HOSTILE_ASCII]

    assert call_module("netrc_entry", dict(entries=entries, path=str(path)))["changed"] is False
    assert call_module("netrc_entry", dict(entries=entries, state="absent", path=str(path)))["changed"]
    assert path.read_bytes() == EXISTING
    assert curl_status(path, channel_url) == "401" and curl_status(path, mirror_url) == "401"
