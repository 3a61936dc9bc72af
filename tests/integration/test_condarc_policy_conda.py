# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Real conda, run by a non-root account, enforces the policy condarc_policy writes (issue 12, item 2).

As in test_real_conda.py: the module runs as root through the real ansible CLI, in a private mount namespace over a
copy of ``/etc`` (:class:`realconda.PrivateEtc`), so ``/etc/conda/.condarc`` is the copy's and the machine's own is
never touched; then a throwaway account runs the real conda from a fresh login shell. Channels are served on
127.0.0.1.

* ``allowlist_channels`` locked with ``#!final`` in the system file, through the proxy: the same system file holds
  ``proxy_servers`` (condarc_proxy: a real squid with Basic auth, the shared proxy account) and the policy
  (condarc_policy). Both channels answer only connections squid opened (:class:`servers.ProxyOnlyChannelServer`),
  so the allowed channel working proves the route, and squid's log names the proxy account of its requests.
  ``conda search -c <other>`` and a ``~/.condarc`` adding the other channel (to ``channels`` and to its own
  ``allowlist_channels``) are refused by conda itself with ``ChannelNotAllowed``: neither squid nor the other
  channel sees a request. Without the lock the account's file extends the allowlist and the other channel is
  reached through squid too.
* ``disallowed_packages``: ``conda create`` refuses the package (``DisallowedPackageError``).
* ``safety_checks: enabled`` + ``extra_safety_checks: true``: a package whose file has the size but not the SHA256
  its ``info/paths.json`` records is refused (``SafetyError``); conda compares the SHA256 only with
  ``extra_safety_checks`` (``conda/core/path_actions.py``), and with the default ``warn`` installs it anyway.
* ``exclude_newer``: a cutoff before the package's timestamp hides it from ``conda create`` (``PackagesNotFound``).
* The module is idempotent and ``state=absent`` gives the system file its original bytes back.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile

import pytest

import realconda
from servers import AccountSquid, ChannelServer, ProxyOnlyChannelServer, require
from test_real_conda import CHANNEL_ACCOUNTS, PROXY_ACCOUNTS, Host, mask, proxied

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="creates accounts and mount namespaces (needs root)"),
              pytest.mark.slow]

ALLOWED, OTHER = "allowed-channel", "other-channel"
TAMPERED = "fleet-tampered"
# A system file the admin already had: every byte of it must survive present + absent.
ORIGINAL = (b"# site settings (kept by condarc_policy)\nauto_update_conda: false  #!final\n"
            b"report_errors: false\n")


def build_tampered_package(dest: str) -> tuple[str, dict]:
    """A package whose one file differs from the SHA256 its ``info/paths.json`` records, with the same size (one
    byte changed after the package was "signed off"); the tarball's own checksums in the repodata are right, so
    only conda's check of the extracted files can notice."""
    good = b"hello from a package that was altered after it was built\n"
    bad = good.replace(b"hello", b"HELLO")
    assert len(bad) == len(good)
    name, version = TAMPERED, "1.0"
    index = {"name": name, "version": version, "build": "0", "build_number": 0, "depends": [],
             "license": "CC0-1.0", "noarch": "generic", "subdir": "noarch", "timestamp": 1767225600000}
    paths = {"paths": [{"_path": realconda.PACKAGE_FILE, "path_type": "hardlink",
                        "sha256": hashlib.sha256(good).hexdigest(), "size_in_bytes": len(good)}], "paths_version": 1}
    members = {"info/index.json": json.dumps(index).encode(), "info/paths.json": json.dumps(paths).encode(),
               "info/files": (realconda.PACKAGE_FILE + "\n").encode(), realconda.PACKAGE_FILE: bad}
    filename = "%s-%s-0.tar.bz2" % (name, version)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:bz2") as tar:
        for member, data in members.items():
            info = tarfile.TarInfo(member)
            info.size, info.mode, info.mtime = len(data), 0o644, 1767225600
            tar.addfile(info, io.BytesIO(data))
    blob = buffer.getvalue()
    with open(os.path.join(dest, filename), "wb") as handle:
        handle.write(blob)
    return filename, dict(index, md5=hashlib.md5(blob).hexdigest(), sha256=hashlib.sha256(blob).hexdigest(),
                          size=len(blob))


@pytest.fixture(scope="module")
def conda_path():
    return realconda.require()


@pytest.fixture(scope="module")
def channels():
    """Two channels with the real package (``allowed-channel`` also with the tampered one) on 127.0.0.1."""
    root = tempfile.mkdtemp(prefix="condafleet-policy-channels-")
    os.chmod(root, 0o755)
    for name in (ALLOWED, OTHER):
        realconda.write_package_channel(root, name)
    noarch = os.path.join(root, ALLOWED, "noarch")
    filename, record = build_tampered_package(noarch)
    with open(os.path.join(noarch, "repodata.json")) as handle:
        repodata = json.load(handle)
    repodata["packages"][filename] = record
    with open(os.path.join(noarch, "repodata.json"), "w") as handle:
        json.dump(repodata, handle)
    with ChannelServer(root) as server:
        server.allowed, server.other = server.url + "/" + ALLOWED, server.url + "/" + OTHER
        yield server
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def squid():
    """squid on 127.0.0.1 requiring Basic proxy auth; its access log names the proxy account of each request."""
    require("/usr/sbin/squid", "/usr/lib/squid/basic_ncsa_auth", "openssl")
    with AccountSquid(PROXY_ACCOUNTS) as proxy:
        yield proxy


@pytest.fixture
def proxied_channels(squid, tmp_path):
    """``allowed`` and ``other``, each a channel server of its own that answers only squid's connections (with
    the channel login of the account's ``.netrc``) and logs every request it receives, refused ones included."""
    servers = {}
    try:
        for name in (ALLOWED, OTHER):
            root = tmp_path / name
            root.mkdir()
            realconda.write_package_channel(str(root), name)
            server = ProxyOnlyChannelServer(str(root), CHANNEL_ACCOUNTS, only_uid=squid.uid).__enter__()
            servers[name] = server
            server.channel_url = server.url + "/" + name
        yield servers[ALLOWED], servers[OTHER]
    finally:
        for server in servers.values():
            server.__exit__(None, None, None)


@pytest.fixture
def host(conda_path):
    base = tempfile.mkdtemp(prefix="condafleet-policy-", dir="/var/tmp")
    os.chmod(base, 0o755)
    try:
        yield Host(base, conda_path)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def system_file(host: Host) -> str:
    return host.etc.file("/etc/conda/.condarc")


def write_system_file(host: Host, data: bytes) -> None:
    path = system_file(host)
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o644)


def output(proc) -> str:
    return (proc.stdout + proc.stderr)[-3000:]


def search(host: Host, account, channel: str):
    return host.conda(account, "search --override-channels -c %s %s" % (channel, realconda.PACKAGE))


def test_locked_allowlist_through_the_proxy_refuses_other_channels_and_absent_restores_the_file(
        host, squid, proxied_channels):
    allowed, other = proxied_channels
    write_system_file(host, ORIGINAL)
    alice = host.add_account("cfpla" + os.urandom(2).hex())
    # The proxy, in the system file (the shared proxy account, accepted as world-readable), and the channel login.
    proxy = {"scope": "system", "http": squid.url, "https": squid.url, "proxy_username": "fleet",
             "proxy_password": PROXY_ACCOUNTS["fleet"], "world_readable_password": True}
    host.configure("condarc_proxy", proxy)
    host.configure("netrc_entry", {"user": alice.name, "machine": "127.0.0.1", "login": "reader",
                                   "password": CHANNEL_ACCOUNTS["reader"]})
    with open(system_file(host), "rb") as handle:
        with_proxy = handle.read()
    assert with_proxy.startswith(ORIGINAL) and b"\nproxy_servers:" in with_proxy, "no proxy in the system file"

    policy = {"scope": "system", "channels": [allowed.channel_url], "allowlist_channels": [allowed.channel_url],
              "final": ["allowlist_channels"]}
    result = host.configure("condarc_policy", policy)
    assert result["changed"] is True and result["final"] == ["allowlist_channels"]
    with open(system_file(host), "rb") as handle:
        assert handle.read() == with_proxy + ("channels:\n  - %s\nallowlist_channels:  #!final\n  - %s\n"
                                              % (allowed.channel_url, allowed.channel_url)).encode()
    assert host.configure("condarc_policy", policy)["changed"] is False  # idempotent

    # The allowed channel works, searched and through channels from the system file; only through squid (the
    # channel refuses any other connection), as the proxy account, with the channel login.
    found = search(host, alice, allowed.channel_url)
    assert found.returncode == 0 and realconda.PACKAGE in found.stdout, mask(output(found))
    via_system = host.conda(alice, "search %s" % realconda.PACKAGE)
    assert via_system.returncode == 0 and ALLOWED in via_system.stdout, mask(output(via_system))
    rows = proxied(squid, allowed)
    assert any(row["url"].endswith("/%s/noarch/repodata.json" % ALLOWED) and row["status"] == "200"
               for row in rows), rows
    assert {row["user"] for row in rows} == {"fleet"}, rows
    assert allowed.log and {(entry["peer_uid"], entry["login"]) for entry in allowed.log} == {
        (squid.uid, "reader")}, allowed.log

    # Another channel on the command line is refused by conda itself: no request left for it.
    refused = search(host, alice, other.channel_url)
    assert refused.returncode != 0 and "ChannelNotAllowed" in output(refused), mask(output(refused))
    # The account's own ~/.condarc adds the other channel, and tries to extend the allowlist: still refused.
    host.write_file(alice, ".condarc", "channels:\n  - %s\nallowlist_channels:\n  - %s\n"
                    % (other.channel_url, other.channel_url))
    shown = host.conda(alice, "config --show allowlist_channels --json")
    assert json.loads(shown.stdout)["allowlist_channels"] == [allowed.channel_url], mask(output(shown))
    via_condarc = host.conda(alice, "search %s" % realconda.PACKAGE)
    assert via_condarc.returncode != 0 and "ChannelNotAllowed" in output(via_condarc), mask(output(via_condarc))
    assert search(host, alice, other.channel_url).returncode != 0
    assert other.log == [] and other.requests == [], other.log
    assert proxied(squid, other) == [], proxied(squid, other)

    # Without the lock, the account's file extends the allowlist and the other channel works, through squid too:
    # #!final is what holds (and the other channel would have answered).
    unlocked = host.configure("condarc_policy", dict(policy, final=False))
    assert unlocked["changed"] is True and unlocked["final"] == []
    reached = search(host, alice, other.channel_url)
    assert reached.returncode == 0 and realconda.PACKAGE in reached.stdout, mask(output(reached))
    assert {row["user"] for row in proxied(squid, other)} == {"fleet"}, proxied(squid, other)
    assert other.log and {entry["peer_uid"] for entry in other.log} == {squid.uid}, other.log

    # absent removes exactly the keys named: the admin's file is back, byte for byte.
    removed = host.configure("condarc_policy", {"scope": "system", "state": "absent", "channels": [],
                                                "allowlist_channels": []})
    assert removed["changed"] is True
    with open(system_file(host), "rb") as handle:
        assert handle.read() == with_proxy
    assert host.configure("condarc_policy", {"scope": "system", "state": "absent", "channels": [],
                                             "allowlist_channels": []})["changed"] is False
    host.configure("condarc_proxy", {"scope": "system", "state": "absent"})
    with open(system_file(host), "rb") as handle:
        assert handle.read() == ORIGINAL


def test_disallowed_package_is_refused_by_conda(host, channels):
    alice = host.add_account("cfpda" + os.urandom(2).hex())
    host.configure("condarc_policy", {"scope": "system", "disallowed_packages": [realconda.PACKAGE], "final": True})
    prefix = os.path.join(alice.home, "env")
    create = host.conda(alice, "create -y -p %s --override-channels -c %s %s"
                        % (prefix, channels.allowed, realconda.PACKAGE))
    assert create.returncode != 0 and "DisallowedPackageError" in output(create), output(create)
    assert not os.path.exists(os.path.join(prefix, realconda.PACKAGE_FILE))
    # The same command installs it once the key is gone.
    host.configure("condarc_policy", {"scope": "system", "state": "absent", "disallowed_packages": []})
    create = host.conda(alice, "create -y -p %s --override-channels -c %s %s"
                        % (prefix, channels.allowed, realconda.PACKAGE))
    assert create.returncode == 0 and os.path.isfile(os.path.join(prefix, realconda.PACKAGE_FILE)), output(create)


def test_safety_checks_enabled_refuses_a_tampered_package(host, channels):
    alice = host.add_account("cfpsa" + os.urandom(2).hex())
    host.configure("condarc_policy", {"scope": "system", "safety_checks": "enabled", "extra_safety_checks": True,
                                      "final": True})
    refused_prefix = os.path.join(alice.home, "refused")
    create = host.conda(alice, "create -y -p %s --override-channels -c %s %s"
                        % (refused_prefix, channels.allowed, TAMPERED))
    assert create.returncode != 0, output(create)
    assert "SafetyError" in output(create) and "sha256 mismatch" in output(create), output(create)
    assert not os.path.exists(os.path.join(refused_prefix, realconda.PACKAGE_FILE))

    # conda's default (warn) installs the very same package, with a warning: the policy is what refused it.
    host.configure("condarc_policy", {"scope": "system", "safety_checks": "warn", "extra_safety_checks": True})
    warned_prefix = os.path.join(alice.home, "warned")
    create = host.conda(alice, "create -y -p %s --override-channels -c %s %s"
                        % (warned_prefix, channels.allowed, TAMPERED))
    assert create.returncode == 0, output(create)
    assert "sha256 mismatch" in output(create)
    assert os.path.isfile(os.path.join(warned_prefix, realconda.PACKAGE_FILE))

    # safety_checks: enabled alone checks sizes only: conda compares the SHA256 with extra_safety_checks.
    host.configure("condarc_policy", {"scope": "system", "safety_checks": "enabled", "extra_safety_checks": False})
    size_only_prefix = os.path.join(alice.home, "size-only")
    create = host.conda(alice, "create -y -p %s --override-channels -c %s %s"
                        % (size_only_prefix, channels.allowed, TAMPERED))
    assert create.returncode == 0 and "sha256 mismatch" not in output(create), output(create)


def test_exclude_newer_hides_packages_published_after_the_cutoff(host, channels):
    """The package's timestamp is 2026-01-01: a cutoff the day before hides it from conda, the day after not."""
    alice = host.add_account("cfpea" + os.urandom(2).hex())
    dry_run = "create -y --dry-run -p %s --override-channels -c %s %s" % (
        os.path.join(alice.home, "env"), channels.allowed, realconda.PACKAGE)
    host.configure("condarc_policy", {"scope": "system", "exclude_newer": "2025-12-30", "final": True})
    hidden = host.conda(alice, dry_run)
    assert hidden.returncode != 0 and "PackagesNotFound" in output(hidden), output(hidden)
    host.configure("condarc_policy", {"scope": "system", "exclude_newer": "2026-01-02", "final": True})
    shown = host.conda(alice, dry_run)
    assert shown.returncode == 0, output(shown)
