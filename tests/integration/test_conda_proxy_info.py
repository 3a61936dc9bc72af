# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""conda_proxy_info against a real account, its real login shell, real proxies, a real channel and real conda.

A throwaway account (created and deleted here, home in a temp dir) gets its files from the
collection's own modules or writes them itself; the info module must then read them the way conda does,
prove the request goes through the proxy (the proxy's log shows it), and name what is wrong when it fails.

The account may be hostile: its files, links and variables must never make the module (run as root) read
root's files or send root's credentials. The module checks as the account, so the tests look at what a
listener the account points the module at receives, and at who opened each connection (``/proc/net/tcp``).
Real conda (``../shared/real-conda``) and two squids with different proxy accounts show which of conda's
requests goes through which proxy.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import stat
import subprocess
import tempfile
import threading
import time
import uuid

import pytest

import realconda
from accounts import throwaway_account
from modulerun import run_adhoc
from servers import (LOOPBACK, AccountSquid, ChannelServer, ProxyOnlyChannelServer, require, socket_owner_uid,
                     write_channel)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creates a throwaway account (needs root)")


@pytest.fixture
def account():
    """A throwaway account whose home it can reach (pytest's tmp dirs are private to root)."""
    with throwaway_account("cfi") as entry:
        yield entry


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
    assert result["conda"] == {"path": str(fake), "found_by": "conda_executable",
                               "proxy_servers": {"http": tinyproxy.url}}
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
    files, servers, ssl_verify, problems = merged_settings([str(system), str(tmp_path / "missing"), str(user)])
    assert problems == []
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


# --- helpers for the tests below ----------------------------------------------------------------------------


def home_file(account, relative: str, text: str, mode: int = 0o644, append: bool = False,
              owner: int | None = None) -> str:
    """A file in the account's home, owned by the account (or ``owner``), as the account would have written it."""
    path = os.path.join(account.pw_dir, relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a" if append else "w") as handle:
        handle.write(text)
    uid = account.pw_uid if owner is None else owner
    os.chown(path, uid, account.pw_gid if owner is None else 0)
    os.chmod(path, mode)
    return path


def as_account(account, command: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """``command`` in a fresh login shell of the account (``su -``), without stdin, as a user would run it."""
    return subprocess.run(["su", "-", account.pw_name, "-c", command], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout, check=False)


class RecordingListener:
    """A listener on 127.0.0.1 that answers every request with a tiny 200 and keeps, per connection, the uid that
    opened it (``/proc/net/tcp``) and every byte it received: what a hostile account's own listener would get."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind((LOOPBACK, 0))
        self.sock.listen(8)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.received = []  # (uid, bytes)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return "http://%s:%d" % (LOOPBACK, self.port)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, peer = self.sock.accept()
            except OSError:
                continue
            with conn:
                uid = socket_owner_uid(peer[:2], (LOOPBACK, self.port))
                conn.settimeout(2)
                data = b""
                try:
                    while b"\r\n\r\n" not in data and len(data) < 65536:
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        data += chunk
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
                except OSError:
                    pass
                self.received.append((uid, data))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@pytest.fixture
def listener():
    with RecordingListener() as server:
        yield server


@pytest.fixture(scope="module")
def conda_path():
    return realconda.require()


@pytest.fixture
def package_channel(tmp_path):
    """``package_channel(only_uid)``: real conda's package channel, answering only ``only_uid``'s connections
    that carry the channel login ``reader`` (from the account's .netrc)."""
    started = []

    def start(only_uid: int) -> ProxyOnlyChannelServer:
        root = tmp_path / ("channel%d" % len(started))
        root.mkdir()
        realconda.write_package_channel(str(root), "fleet-channel")
        server = ProxyOnlyChannelServer(str(root), {"reader": "chan-pw"}, only_uid=only_uid).__enter__()
        started.append(server)
        server.channel_url = server.url + "/fleet-channel"
        server.repodata_url = server.channel_url + "/noarch/repodata.json"
        return server

    yield start
    for server in started:
        server.__exit__(None, None, None)


def account_squid(accounts: dict):
    require("/usr/sbin/squid", "/usr/lib/squid/basic_ncsa_auth", "openssl")
    return AccountSquid(accounts)


TARBALL = "/fleet-channel/noarch/%s-1.0-0.tar.bz2" % realconda.PACKAGE


# --- conda's two precedences, seen with real conda, and verify failing on a conflict ---------------------------


def test_real_conda_fetches_repodata_through_the_env_proxy_and_packages_through_proxy_servers(
        account, conda_path, package_channel):
    """The experiment behind the model: ~/.condarc names squid C (proxy account px-condarc), the login shell's
    http_proxy names squid E (px-env), both right. Real conda's repodata.json.zst request goes through E,
    the package download through C. conda_proxy_info reports both routes and fails naming the conflict."""
    with account_squid({"px-condarc": "cond-pw"}) as squid_c, account_squid({"px-env": "env-pw"}) as squid_e:
        channel = package_channel(squid_c.uid)
        home_file(account, ".condarc", "proxy_servers:\n  http: %s\n" % squid_c.url_with("px-condarc", "cond-pw"))
        home_file(account, ".netrc", "machine 127.0.0.1 login reader password chan-pw\n", mode=0o600)
        home_file(account, ".profile", "export http_proxy='%s'\n" % squid_e.url_with("px-env", "env-pw"), append=True)
        create = as_account(account, "CONDA_SOLVER=classic %s create -y -p ~/env --override-channels -c %s %s"
                            % (conda_path, channel.channel_url, realconda.PACKAGE))
        assert create.returncode == 0, (create.stdout + create.stderr)[-3000:]
        via_env, via_condarc = squid_e.entries(), squid_c.entries()
        assert any(row["url"].endswith("/noarch/repodata.json.zst") and row["user"] == "px-env" for row in via_env), \
            via_env
        assert not any(row["url"].endswith(".zst") for row in via_condarc), via_condarc
        assert any(row["url"].endswith(TARBALL) and row["user"] == "px-condarc" and row["status"] == "200"
                   for row in via_condarc), via_condarc
        assert not any(row["url"].endswith(TARBALL) for row in via_env), via_env

        result, raw = run_adhoc("conda_proxy_info", {"user": account.pw_name, "url": channel.repodata_url,
                                                     "conda_executable": conda_path})
        assert result.get("failed"), raw
        assert result["requests"]["repodata"] == {"proxy": "http://px-env:********@127.0.0.1:%d" % squid_e.port,
                                                  "source": "env", "setting": "http_proxy"}
        assert result["requests"]["packages"] == {"proxy": "http://px-condarc:********@127.0.0.1:%d" % squid_c.port,
                                                  "source": "condarc", "setting": "proxy_servers http"}
        assert [p["outcome"] for p in result["probes"]] == ["ok", "ok"]
        assert [p["used_for"] for p in result["probes"]] == [["repodata"], ["packages"]]
        assert result["conflicts"][0]["scheme"] == "http" and result["conflicts"][0]["variable"] == "http_proxy"
        assert "conflict for http:// URLs" in result["msg"] and "conda would use both" in result["msg"]
        assert "cond-pw" not in raw and "env-pw" not in raw


def test_stale_login_shell_proxy_fails_verify_naming_the_conflict_as_real_conda_fails(
        account, conda_path, package_channel):
    """Issue 9 point 2: .condarc right, a stale https_proxy/http_proxy with a wrong password in ~/.profile.
    Real conda gets a 407 for repodata, prompts and dies with EOFError; conda_proxy_info used to report ok
    (source condarc). Now it fails, naming the conflicting variable and the 407 with conda's prompt."""
    with account_squid({"px-alice": "right-pw"}) as squid:
        channel = package_channel(squid.uid)
        configure("condarc_proxy", {"user": account.pw_name, "http": squid.url, "https": squid.url,
                                    "proxy_username": "px-alice", "proxy_password": "right-pw"})
        home_file(account, ".netrc", "machine 127.0.0.1 login reader password chan-pw\n", mode=0o600)
        stale = squid.url_with("px-alice", "stale-pw")
        home_file(account, ".profile", "export http_proxy='%s'\nexport https_proxy='%s'\n" % (stale, stale),
                  append=True)
        search = as_account(account, "CONDA_SOLVER=classic %s search --override-channels -c %s %s"
                            % (conda_path, channel.channel_url, realconda.PACKAGE))
        output = search.stdout + search.stderr
        assert search.returncode != 0 and "http proxy username" in output and "EOFError" in output, output[-3000:]

        result, raw = run_adhoc("conda_proxy_info", {"user": account.pw_name, "url": channel.repodata_url,
                                                     "conda_executable": conda_path})
        assert result.get("failed"), raw
        variables = {c["scheme"]: c["variable"] for c in result["conflicts"]}
        assert variables == {"http": "http_proxy", "https": "https_proxy"}
        assert "conflict for http:// URLs" in result["msg"] and "http_proxy=http://px-alice:********@" in result["msg"]
        assert "407" in result["msg"] and "http proxy username:" in result["msg"] and "EOFError" in result["msg"]
        by_kind = {tuple(p["used_for"]): p for p in result["probes"]}
        assert by_kind[("repodata",)]["outcome"] == "proxy_auth_required"
        assert by_kind[("packages",)]["outcome"] == "ok"
        assert result["conda"]["proxy_servers"] == {"http": "http://px-alice:********@127.0.0.1:%d" % squid.port,
                                                    "https": "http://px-alice:********@127.0.0.1:%d" % squid.port}
        assert "right-pw" not in raw and "stale-pw" not in raw


# --- the check runs as the account --------------------------------------------------------------------------


def test_probe_connects_as_the_account_not_as_root(account, listener):
    """Issue 9 point 3: the request to the URL is made by a process of the account (the peer's uid)."""
    result, raw = run_adhoc("conda_proxy_info", {"user": account.pw_name, "url": listener.url + "/x/repodata.json",
                                                 "require_proxy": False})
    assert not result.get("failed"), raw
    assert [uid for uid, _data in listener.received] == [account.pw_uid]


@pytest.fixture
def root_secret():
    """A root-only file (0600 root) in a directory every account can traverse, holding a .netrc entry for
    127.0.0.1 and a .condarc proxy with a password: what a hostile account would like root to read for it."""
    base = tempfile.mkdtemp(prefix="condafleet-rootsecret-", dir="/var/tmp")
    os.chmod(base, 0o755)
    secret = "R00T-" + uuid.uuid4().hex
    path = os.path.join(base, "secret")
    with open(path, "w") as handle:
        handle.write("machine 127.0.0.1 login root password %s\n" % secret)
    os.chmod(path, 0o600)
    condarc = os.path.join(base, "proxy.yml")  # a name conda loads from $CONDARC (.condarc, condarc, *.yml)
    with open(condarc, "w") as handle:
        handle.write("proxy_servers:\n  http: http://root:%s@127.0.0.1:9\n" % secret)
    os.chmod(condarc, 0o600)
    try:
        yield path, condarc, secret
    finally:
        shutil.rmtree(base, ignore_errors=True)


def assert_no_secret(secret: str, raw: str, listener) -> None:
    forms = (secret, base64.b64encode(("root:%s" % secret).encode()).decode())
    for form in forms:
        assert form not in raw
        for _uid, data in listener.received:
            assert form.encode() not in data, data


def test_hostile_account_cannot_make_the_module_read_or_send_roots_files(account, listener, root_secret, channel):
    """Issue 10 point 4: ~/.netrc linked to a root-only file, NETRC and CONDARC naming root-only files, and
    proxy_servers pointing at the account's own listener with ssl_verify false. Nothing of root's reaches the
    listener or the result, every connection comes from the account's uid, and the unreadable CONDARC is named."""
    secret_path, secret_condarc, secret = root_secret
    home_file(account, ".condarc", "proxy_servers:\n  http: %s\n  https: %s\nssl_verify: false\n"
              % (listener.url, listener.url))
    os.symlink(secret_path, os.path.join(account.pw_dir, ".netrc"))
    result, raw = run_adhoc("conda_proxy_info", {"user": account.pw_name, "url": channel.repodata_url})
    assert_no_secret(secret, raw, listener)
    assert not result.get("failed"), raw  # the listener answers 200: a working "proxy"
    assert "cannot be read by the account" in " ".join(result["warnings_found"])

    home_file(account, ".profile", "export NETRC='%s'\nexport REQUESTS_CA_BUNDLE='%s'\n" % (secret_path, secret_path),
              append=True)
    result, raw = run_adhoc("conda_proxy_info", {"user": account.pw_name, "url": channel.repodata_url})
    assert not result.get("failed"), raw
    assert_no_secret(secret, raw, listener)

    home_file(account, ".profile", "export CONDARC='%s'\n" % secret_condarc, append=True)
    result, raw = run_adhoc("conda_proxy_info", {"user": account.pw_name, "url": channel.repodata_url})
    assert result.get("failed"), raw
    expected = "conda fails with PermissionError for %s: cannot read %s" % (account.pw_name, secret_condarc)
    assert expected in result["msg"]
    assert_no_secret(secret, raw, listener)
    assert listener.received and {uid for uid, _data in listener.received} == {account.pw_uid}


# --- bounded reads, unreadable files, odd values ------------------------------------------------------------


def test_fifo_at_netrc_and_at_condarc_finish_at_once_with_a_clear_message(account, channel, tinyproxy):
    """Issue 10 point 7: a FIFO with no writer at ~/.netrc or $CONDARC used to hang the module forever."""
    configure("condarc_proxy", {"user": account.pw_name, "http": tinyproxy.url, "proxy_username": tinyproxy.username,
                                "proxy_password": tinyproxy.password})
    fifo = os.path.join(account.pw_dir, "proxy.yml")
    os.mkfifo(fifo)
    os.chown(fifo, account.pw_uid, account.pw_gid)
    home_file(account, ".profile", "export CONDARC=%s\n" % fifo, append=True)
    start = time.monotonic()
    result, raw = run_adhoc("conda_proxy_info", {"user": account.pw_name, "url": channel.repodata_url})
    assert time.monotonic() - start < 20
    assert not result.get("failed"), raw  # conda skips a search-path entry that is not a regular file
    assert "%s is a FIFO, not a regular file: conda skips it" % fifo in result["warnings_found"]

    netrc = os.path.join(account.pw_dir, ".netrc")
    os.mkfifo(netrc)
    os.chown(netrc, account.pw_uid, account.pw_gid)
    start = time.monotonic()
    result, raw = run_adhoc("conda_proxy_info", {"user": account.pw_name, "url": channel.repodata_url})
    assert time.monotonic() - start < 20
    assert result.get("failed"), raw
    assert "%s is not a regular file (a FIFO)" % netrc in result["msg"]


@pytest.mark.parametrize("profile,expected", [
    ("yes condafleet | head -c 100000000\n", "wrote more than 4194304 bytes"),
    ("sleep 600\n", "did not finish within 3s"),
])
def test_login_shell_that_floods_or_never_ends_is_stopped(account, profile, expected):
    """Issue 10 point 7: the account's ~/.profile is not allowed to make the module wait or grow without bound."""
    home_file(account, ".profile", profile, append=True)
    start = time.monotonic()
    result, raw = run_adhoc("conda_proxy_info", {"user": account.pw_name, "timeout": 3})
    assert time.monotonic() - start < 25
    assert result.get("failed") and expected in result["msg"], raw[-3000:]
    left = subprocess.run(["pgrep", "-u", str(account.pw_uid), "-a"], capture_output=True, text=True, check=False)
    running = [line for line in left.stdout.splitlines() if "<defunct>" not in line]  # killed, not yet reaped
    assert running == [], "processes of the account left running: %s" % running


def test_unreadable_condarc_is_named_as_real_conda_fails(account, conda_path):
    """Issue 9 point 3: a .condarc the account cannot read makes conda fail with PermissionError; the module
    says so instead of reading it as root (and then blaming conda's output)."""
    condarc = home_file(account, ".condarc", "proxy_servers:\n  http: http://127.0.0.1:3128\n", mode=0o600, owner=0)
    conda = as_account(account, "%s config --show proxy_servers --json" % conda_path)
    assert conda.returncode != 0 and "PermissionError" in conda.stdout + conda.stderr, conda.stdout + conda.stderr
    result, raw = run_adhoc("conda_proxy_info", {"user": account.pw_name, "conda_executable": conda_path})
    assert result.get("failed"), raw
    assert result["msg"].startswith("conda fails with PermissionError for %s: cannot read %s"
                                    % (account.pw_name, condarc)), result["msg"]


@pytest.mark.parametrize("body,expected", [
    ("proxy_servers: {http: 3128}\n", "proxy_servers http is a number 3128"),
    ("proxy_servers: [http://127.0.0.1:3128]\n", "proxy_servers is a list"),
    ("proxy_servers:\n  http:\n    nested: 1\n", "proxy_servers http is a map"),
])
def test_odd_proxy_servers_types_are_explained_without_a_traceback(account, body, expected):
    """Issue 10 point 10: these used to crash the module with a traceback."""
    home_file(account, ".condarc", body)
    result, raw = run_adhoc("conda_proxy_info", {"user": account.pw_name})
    assert result.get("failed"), raw
    assert expected in result["msg"], result["msg"]
    assert "Traceback" not in raw and "module_stderr" not in result


def test_variable_in_proxy_url_expanded_with_the_accounts_login_environment(account, tinyproxy, channel):
    """Issue 9 point 4: unset: named; a raw password (not percent-encoded): InvalidURL named; encoded: works."""
    home_file(account, ".condarc", "proxy_servers:\n  http: http://fleet:${CF_PROXY_PW}@127.0.0.1:%d\n"
              % tinyproxy.port)
    result, raw = run_adhoc("conda_proxy_info", {"user": account.pw_name, "url": channel.repodata_url})
    assert result.get("failed"), raw
    assert "uses ${CF_PROXY_PW}, which is not set in %s's login environment" % account.pw_name in result["msg"]

    home_file(account, ".profile", "export CF_PROXY_PW='p@ss:w/rd'\n", append=True)
    result, raw = run_adhoc("conda_proxy_info", {"user": account.pw_name, "url": channel.repodata_url})
    assert result.get("failed"), raw
    assert "the value of ${CF_PROXY_PW} makes the proxy URL invalid" in result["msg"]
    assert "InvalidURL" in result["msg"] and "percent-encoded" in result["msg"]
    assert "p@ss:w/rd" not in raw and "ss:w/rd" not in raw  # the raw password's tail is masked too

    home_file(account, ".profile", "export CF_PROXY_PW='%s'\n" % tinyproxy.password, append=True)
    result, raw = run_adhoc("conda_proxy_info", {"user": account.pw_name, "url": channel.repodata_url})
    assert not result.get("failed"), raw
    assert result["probe"]["outcome"] == "ok" and "repodata.json" in tinyproxy.log()


def test_conda_found_in_the_accounts_mambaforge_and_compared_with_variables_expanded(account, conda_path):
    """Issue 9 point 3: a conda outside the old short list is found, run as the account, and its answer (with
    ${VAR} expanded by conda from the login environment) agrees with the files."""
    os.makedirs(os.path.join(account.pw_dir, "mambaforge", "bin"))
    os.symlink(conda_path, os.path.join(account.pw_dir, "mambaforge", "bin", "conda"))
    home_file(account, ".condarc", "proxy_servers:\n  http: http://fleet:${CF_PROXY_PW}@127.0.0.1:3128\n")
    home_file(account, ".profile", "export CF_PROXY_PW=s3cret%40x\n", append=True)
    result, raw = run_adhoc("conda_proxy_info", {"user": account.pw_name})
    assert not result.get("failed"), raw
    assert result["conda"] == {"path": os.path.join(account.pw_dir, "mambaforge", "bin", "conda"),
                               "found_by": "install location",
                               "proxy_servers": {"http": "http://fleet:********@127.0.0.1:3128"}}
    assert "s3cret" not in raw


# --- the role's verify step ---------------------------------------------------------------------------------


def test_role_verify_step_asks_the_conda_given_per_account(account, tinyproxy, channel, tmp_path):
    """conda_proxy_verify_conda_executable, a mapping of account to conda path or one path for all, reaches
    conda_proxy_info: the role's verify step runs that conda as the account and passes. The conda here is a
    stand-in that records who ran it (what is tested is the role passing the path through)."""
    import sys

    marker = os.path.join(account.pw_dir, "conda-ran-as")
    servers = {"http": tinyproxy.url_with(tinyproxy.username, tinyproxy.password)}
    servers["https"] = servers["http"]  # the role sets https to the http proxy when it is not given
    fake = home_file(account, "tools/conda", "#!/bin/sh\nid -u >> %s\necho '%s'\n"
                     % (marker, json.dumps({"proxy_servers": servers})), mode=0o755)
    role = {"conda_proxy_methods": ["condarc"], "conda_proxy_scope": "user", "conda_proxy_users": [account.pw_name],
            "conda_proxy_http": tinyproxy.url, "conda_proxy_username": tinyproxy.username,
            "conda_proxy_password": tinyproxy.password, "conda_proxy_verify": True,
            "conda_proxy_verify_url": channel.repodata_url}
    include = {"ansible.builtin.include_role": {"name": "condafleet.proxy.conda_proxy"}}
    tasks = [dict(include, vars=dict(role, conda_proxy_verify_conda_executable={account.pw_name: fake})),
             dict(include, vars=dict(role, conda_proxy_verify_conda_executable=fake))]
    playbook = tmp_path / "verify.yml"
    playbook.write_text(json.dumps([{"hosts": "localhost", "gather_facts": False, "tasks": tasks}]))
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_INVENTORY_UNPARSED_WARNING="0")
    proc = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), str(playbook),
                           "-c", "local", "-i", "localhost,", "-e", "ansible_python_interpreter=%s" % sys.executable],
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    with open(marker) as handle:
        assert handle.read().split() == [str(account.pw_uid)] * 2
    assert tinyproxy.log().count("repodata.json") >= 2
    assert tinyproxy.password not in proc.stdout + proc.stderr
