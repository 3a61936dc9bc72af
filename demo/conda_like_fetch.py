# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Fetch a channel's repodata.json the way conda does, from ~/.condarc and ~/.netrc only.

conda (conda/gateways/connection/session.py) reads ``proxy_servers`` from its config, passes each
value through ``os.path.expandvars``, hands the map to a ``requests`` session and lets requests find
the channel credentials in ``~/.netrc``. The proxy environment variables are ignored here on purpose
(``trust_env`` off), so a success proves that .condarc alone routes the request through the proxy.

Usage: python conda_like_fetch.py URL  -> prints one JSON line: status, proxied schemes, subdir.
"""

from __future__ import annotations

import json
import os
import sys

import requests
import yaml


def main() -> int:
    url = sys.argv[1]
    with open(os.path.expanduser("~/.condarc")) as handle:
        condarc = yaml.safe_load(handle) or {}
    proxies = {key: os.path.expandvars(value) for key, value in (condarc.get("proxy_servers") or {}).items()}
    auth = requests.utils.get_netrc_auth(url, raise_errors=True)
    if not proxies.get("http"):
        print(json.dumps({"error": "no proxy_servers.http in ~/.condarc"}))
        return 2
    if auth is None:
        print(json.dumps({"error": "no ~/.netrc entry for the channel host"}))
        return 2
    session = requests.Session()
    session.trust_env = False  # only what .condarc and .netrc say, not the shell's proxy variables
    response = session.get(url, proxies=proxies, auth=auth, timeout=20)
    result = {"status": response.status_code, "proxied": sorted(proxies)}
    if response.ok:
        result["subdir"] = response.json().get("info", {}).get("subdir")
    print(json.dumps(result))
    return 0 if response.ok else 1


if __name__ == "__main__":
    sys.exit(main())
