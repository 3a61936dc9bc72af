# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What condarc_proxy writes, read by its real consumers.

PyYAML and ruamel.yaml (the round-trip loader conda uses) must read exactly the requested
map, conda's ``#!final`` reading must see the marker, and a ``requests`` session configured
the way conda configures it from the file must reach a local channel through a real,
authenticating proxy, while a bypassed host goes direct.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest
import requests
import yaml
from ruamel.yaml import YAML

from modulerun import call_module, run_adhoc

PROXY_ENV = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY",
             "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NETRC")
OTHER = b"# fleet defaults\nchannels:\n  - conda-forge\nchannel_priority: strict  #!final\n"


@pytest.fixture(autouse=True)
def no_proxy_environment(monkeypatch):
    """Only the file may decide the proxy: no proxy variables inherited from the test runner."""
    for name in PROXY_ENV:
        monkeypatch.delenv(name, raising=False)


def conda_load(path):
    """Read a .condarc like conda: ruamel.yaml round trip, values through os.path.expandvars, key flags."""
    with open(str(path)) as handle:
        data = YAML(typ="rt").load(handle)
    flags = {}
    for key in data:
        try:
            comment = data.ca.items[key][2].value.strip()
        except (AttributeError, KeyError, TypeError):
            comment = None
        flags[key] = comment.strip("!#") if comment else None
    servers = {k: os.path.expandvars(v) for k, v in (data.get("proxy_servers") or {}).items()}
    return data, servers, flags


def conda_session(proxy_servers: dict) -> requests.Session:
    """The proxy part of conda's CondaSession: the proxy_servers map goes into session.proxies."""
    session = requests.Session()
    session.proxies.update(proxy_servers)
    return session


def test_pyyaml_and_ruamel_read_exactly_the_requested_map(tmp_path, monkeypatch):
    path = tmp_path / ".condarc"
    path.write_bytes(OTHER)
    ca = tmp_path / "corp-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    result = call_module("condarc_proxy", dict(
        path=str(path), http="http://proxy.example:3128", https="http://proxy.example:3128",
        servers={"https://conda.anaconda.org": "http://fast.example:8080"}, bypass=["repo.internal", "10.0.0.7"],
        proxy_username="fleet user", proxy_password="${FLEET_PROXY_PASSWORD}", ssl_verify=str(ca), final=True))
    assert result["changed"] and not result.get("failed")
    wanted = {
        "http": "http://fleet%20user:${FLEET_PROXY_PASSWORD}@proxy.example:3128",
        "https": "http://fleet%20user:${FLEET_PROXY_PASSWORD}@proxy.example:3128",
        "https://conda.anaconda.org": "http://fleet%20user:${FLEET_PROXY_PASSWORD}@fast.example:8080",
        "http://repo.internal": "", "https://repo.internal": "", "http://10.0.0.7": "", "https://10.0.0.7": "",
    }
    loaded = yaml.safe_load(path.read_bytes())
    assert loaded == {"channels": ["conda-forge"], "channel_priority": "strict", "proxy_servers": wanted, "ssl_verify": str(ca)}
    monkeypatch.setenv("FLEET_PROXY_PASSWORD", "from the environment")
    data, servers, flags = conda_load(path)
    assert dict(data["proxy_servers"]) == wanted
    assert servers["http"] == "http://fleet%20user:from the environment@proxy.example:3128"
    assert data["ssl_verify"] == str(ca)
    assert flags == {"channels": None, "channel_priority": "final", "proxy_servers": "final", "ssl_verify": "final"}


def test_requests_go_through_tinyproxy_and_bypass_goes_direct(tmp_path, channel, tinyproxy):
    path = tmp_path / ".condarc"
    path.write_bytes(OTHER)
    result = call_module("condarc_proxy", dict(
        path=str(path), http=tinyproxy.url, https=tinyproxy.url, bypass=["localhost"],
        proxy_username=tinyproxy.username, proxy_password=tinyproxy.password))
    assert result["changed"] and tinyproxy.password not in str(result)
    servers = conda_load(path)[1]
    session = conda_session(servers)

    proxied = session.get(channel.repodata_url, timeout=20)
    assert proxied.status_code == 200 and proxied.json()["info"]["subdir"] == "noarch"
    log = tinyproxy.log()
    assert "/fleet-channel/noarch/repodata.json" in log, log
    proxied_count = log.count("/fleet-channel/noarch/repodata.json")

    direct_url = channel.repodata_url.replace("127.0.0.1", "localhost")
    served_before = len(channel.requests)
    direct = session.get(direct_url, timeout=20)
    assert direct.status_code == 200
    assert len(channel.requests) == served_before + 1  # the channel saw it ...
    assert tinyproxy.log().count("/fleet-channel/noarch/repodata.json") == proxied_count  # ... the proxy did not

    # the credentials in the file are what made the proxied request work
    call_module("condarc_proxy", dict(path=str(path), http=tinyproxy.url, https=tinyproxy.url, bypass=["localhost"]))
    anonymous = conda_load(path)[1]
    assert conda_session(anonymous).get(channel.repodata_url, timeout=20).status_code == 407

    call_module("condarc_proxy", dict(path=str(path), state="absent"))
    assert path.read_bytes() == OTHER


def test_hostile_password_through_squid(tmp_path, channel, squid_factory):
    # ASCII only: requests sends Basic credentials latin-1 encoded, squid compares UTF-8 bytes;
    # non-ASCII passwords are checked at the file level (unit tests read them back exactly).
    password = "p@ss:w/o%rd #x y'\"$(id)`;\\"
    squid = squid_factory("fleet", password)
    path = tmp_path / ".condarc"
    call_module("condarc_proxy", dict(path=str(path), http=squid.url, proxy_username="fleet", proxy_password=password))
    servers = conda_load(path)[1]
    response = conda_session(servers).get(channel.repodata_url, timeout=30)
    assert response.status_code == 200, response.text[:200]
    deadline = time.monotonic() + 10  # squid writes its access log a moment after answering
    while "/fleet-channel/noarch/repodata.json" not in squid.log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert re.search(r"TCP_\w+/200 .*/fleet-channel/noarch/repodata\.json fleet ", squid.log()), squid.log()


def test_every_module_runs_on_a_python_with_only_the_standard_library(tmp_path):
    """A managed node's Python with nothing installed (a bare venv): the modules do not need PyYAML."""
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True, timeout=120)
    python = str(bare / "bin" / "python")
    probe = subprocess.run([python, "-c", "import yaml"], capture_output=True, check=False, timeout=60)
    assert probe.returncode != 0, "the bare venv must not see PyYAML"
    interpreter = {"ansible_python_interpreter": python}
    condarc = tmp_path / ".condarc"
    condarc.write_text("channels:  # kept\n  - conda-forge\n")
    calls = [
        ("condarc_proxy", {"path": str(condarc), "http": "http://proxy.corp.example:3128", "bypass": ["mirror.corp.example"]}),
        ("env_proxy", {"path": str(tmp_path / "proxy.sh"), "format": "sh", "http_proxy": "http://proxy.corp.example:3128"}),
        ("netrc_entry", {"path": str(tmp_path / ".netrc"), "machine": "repo.corp.example", "login": "u", "password": "p w"}),
    ]
    for module, args in calls:
        result, raw = run_adhoc(module, args, extra_vars=interpreter)
        assert result.get("changed") and not result.get("failed"), raw
        result, raw = run_adhoc(module, args, extra_vars=interpreter)
        assert result.get("changed") is False, raw
    assert yaml.safe_load(condarc.read_text())["proxy_servers"]["http"] == "http://proxy.corp.example:3128"
    assert condarc.read_text().startswith("channels:  # kept\n  - conda-forge\n")
