# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Fixtures shared by every test: real servers on loopback and module runners."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "support"))

from servers import BasicAuthServer, ChannelServer, Squid, TinyProxy, require, write_channel  # noqa: E402


@pytest.fixture
def channel(tmp_path_factory):
    """A conda-style channel served on 127.0.0.1; ``.url`` + ``/fleet-channel/noarch/repodata.json``."""
    root = str(tmp_path_factory.mktemp("channel"))
    write_channel(root)
    with ChannelServer(root) as server:
        server.repodata_url = server.url + "/fleet-channel/noarch/repodata.json"
        yield server


@pytest.fixture
def tinyproxy():
    require("tinyproxy")
    with TinyProxy() as proxy:
        yield proxy


@pytest.fixture
def squid_factory():
    """``squid_factory(username, password)`` starts a squid requiring those credentials."""
    require("/usr/sbin/squid", "openssl")
    started = []

    def start(username: str = "fleet", password: str = "s3cret") -> Squid:
        proxy = Squid(username, password).start()
        started.append(proxy)
        return proxy

    yield start
    for proxy in started:
        proxy.stop()


@pytest.fixture
def basic_auth_site():
    """``basic_auth_site(username, password)`` starts a site answering 200 only to those credentials."""
    started = []

    def start(username: str, password: str) -> BasicAuthServer:
        server = BasicAuthServer(username, password).__enter__()
        started.append(server)
        return server

    yield start
    for server in started:
        server.__exit__(None, None, None)


# The machine's own files that a leaking test would hit: every test must use sandboxes instead.
GUARDED_FILES = (
    "/etc/conda/.condarc", "/etc/environment", "/etc/profile.d/condafleet-proxy.sh", "/etc/zsh/zshenv", "/etc/zshenv",
    "/etc/fish/conf.d/condafleet-proxy.fish", "/etc/environment.d/90-condafleet-proxy.conf",
    os.path.expanduser("~/.condarc"), os.path.expanduser("~/.netrc"), os.path.expanduser("~/.profile"),
    os.path.expanduser("~/.zshenv"), os.path.expanduser("~/.ansible/collections/ansible_collections/condafleet"),
)


def _fingerprint() -> dict:
    import hashlib

    prints = {}
    for path in GUARDED_FILES:
        if os.path.isdir(path):
            prints[path] = "directory"
        elif os.path.exists(path):
            with open(path, "rb") as handle:
                prints[path] = hashlib.sha256(handle.read()).hexdigest()
    return prints


@pytest.fixture(scope="session", autouse=True)
def machine_files_untouched():
    """Fail the run if any test changed the machine's real proxy files or installed the collection globally."""
    before = _fingerprint()
    yield
    after = _fingerprint()
    changed = sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))
    assert not changed, "tests changed the machine's own files (use a sandbox): %s" % changed
