# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Real conda, run by non-root accounts, is the judge of what the collection writes (issue 9).

Each test configures a host with the collection's own modules (``ansible localhost -m``, as root) and then, as
each throwaway account from a fresh login shell (``su - NAME``), runs the real conda built from
``../shared/real-conda``: ``conda search`` and a real ``conda create`` of a tiny package. The route is proven from
both ends: squid (Basic auth, one proxy account per credential) logs the proxy account of every request (``%un``),
and the channel answers only connections that squid's uid opened (``/proc/net/tcp``) and logs the channel login
that came from the account's ``.netrc``. A conda that went direct, or sent no or other credentials, fails.

System scope is the real thing: every command runs in a private mount namespace over a copy of ``/etc``
(:class:`realconda.PrivateEtc`), so ``useradd``, ``/etc/conda/.condarc``, ``/etc/environment`` and
``/etc/profile.d`` are the copy's, and the machine's own files are never written.
"""

from __future__ import annotations

import json
import os
import pwd
import random
import shutil
import stat
import subprocess
import sys
import tempfile
from typing import NamedTuple
from urllib.parse import quote

import pytest

import realconda
from servers import AccountSquid, ProxyOnlyChannelServer, require

pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="creates accounts and mount namespaces (needs root)"),
              pytest.mark.slow]

SUPPORT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "support")
COLLECTIONS = os.path.join(os.path.dirname(os.path.dirname(SUPPORT)), "collections")
CHANNEL = "fleet-channel"
TARBALL = "/%s/noarch/%s-1.0-0.tar.bz2" % (CHANNEL, realconda.PACKAGE)
# Hostile on purpose: every character that must be percent-encoded in a URL, and a '#' for .netrc.
PROXY_ACCOUNTS = {"fleet": "px@fl:ee/t%1", "px-alice": "a#l:ic@e/2", "px-bob": "b%o@b:3"}
CHANNEL_ACCOUNTS = {"reader": "ch#an@l:pw/%9", "reader-alice": "rd@a:1", "reader-bob": "rd/b#2"}
# ``ansible localhost -m`` inside the namespace: tests/support/modulerun.py's run_adhoc, result as JSON.
ADHOC = ("import json, sys; sys.path.insert(0, sys.argv[1]); from modulerun import run_adhoc; "
         "result, raw = run_adhoc(sys.argv[2], json.loads(sys.argv[3]), env=json.loads(sys.argv[4])); "
         "print(json.dumps({'result': result, 'raw': raw}))")


def mask(text: str) -> str:
    """``text`` without any of the run's secrets (raw or percent-encoded), for assertion messages."""
    for secret in sorted(list(PROXY_ACCOUNTS.values()) + list(CHANNEL_ACCOUNTS.values()), key=len, reverse=True):
        for form in (secret, quote(secret, safe="")):
            text = text.replace(form, "********")
    return text


class Account(NamedTuple):
    name: str
    uid: int
    home: str


class Host:
    """This machine as a fresh host: a private ``/etc`` (accounts, system files) and homes under ``base``."""

    def __init__(self, base: str, conda: str) -> None:
        self.base = base
        self.conda_path = conda
        self.etc = realconda.PrivateEtc(base)

    def add_account(self, name: str) -> Account:
        """``useradd -m`` in the private ``/etc``, with a uid and group of its own that no real account has."""
        for _attempt in range(50):
            uid = random.randrange(200000, 900000)
            try:
                pwd.getpwuid(uid)
            except KeyError:
                break
        else:
            raise RuntimeError("no free uid found in 50 tries")
        home = os.path.join(self.base, name)
        for command in (["groupadd", "-g", str(uid), name],
                        ["useradd", "-m", "-d", home, "-u", str(uid), "-g", str(uid), "-s", "/bin/bash", name]):
            proc = self.etc.run(command)
            assert proc.returncode == 0, proc.stderr
        return Account(name, uid, home)

    def adhoc(self, module: str, args: dict) -> dict:
        """Run ``condafleet.proxy.<module>`` as root through the real ansible CLI, inside the private ``/etc``."""
        env = {"ANSIBLE_COLLECTIONS_PATH": COLLECTIONS}
        proc = self.etc.run([sys.executable, "-c", ADHOC, SUPPORT, module, json.dumps(args), json.dumps(env)],
                            timeout=180)
        assert proc.returncode == 0, mask(proc.stdout + proc.stderr)[-3000:]
        outcome = json.loads(proc.stdout)
        for secret in list(PROXY_ACCOUNTS.values()) + list(CHANNEL_ACCOUNTS.values()):
            assert secret not in outcome["raw"] and quote(secret, safe="") not in outcome["raw"], "secret in output"
        return outcome["result"]

    def configure(self, module: str, args: dict) -> dict:
        result = self.adhoc(module, args)
        assert not result.get("failed"), mask(json.dumps(result, indent=1))
        return result

    def login(self, account: Account, command: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """``command`` in a fresh login shell of ``account`` (``su -``: PAM, /etc/environment, profiles), no stdin."""
        return self.etc.run(["su", "-", account.name, "-c", command], timeout=timeout, stdin=subprocess.DEVNULL)

    def conda(self, account: Account, arguments: str) -> subprocess.CompletedProcess:
        return self.login(account, "CONDA_SOLVER=classic %s %s" % (self.conda_path, arguments))

    def write_file(self, account: Account, relative: str, text: str, mode: int | None = None,
                   append: bool = False) -> str:
        """A file in the account's home, owned by it, as the account itself would have written it.

        ``mode`` ``None`` keeps an existing file's mode (0644 for a new one)."""
        path = os.path.join(account.home, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        existed = os.path.exists(path)
        with open(path, "a" if append else "w") as handle:
            handle.write(text)
        os.chown(path, account.uid, account.uid)
        os.chown(os.path.dirname(path), account.uid, account.uid)
        if mode is not None or not existed:
            os.chmod(path, 0o644 if mode is None else mode)
        return path


@pytest.fixture(scope="module")
def conda_path():
    return realconda.require()


@pytest.fixture
def host(conda_path):
    """A host whose accounts' homes every account can reach (pytest's tmp dirs are private to root)."""
    base = tempfile.mkdtemp(prefix="condafleet-realconda-", dir="/var/tmp")
    os.chmod(base, 0o755)
    try:
        yield Host(base, conda_path)
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def squid():
    """squid on 127.0.0.1 with every proxy account of :data:`PROXY_ACCOUNTS`; its log names the account.

    One for the module (stopping squid takes seconds); each test reads only the log lines after its start."""
    require("/usr/sbin/squid", "/usr/lib/squid/basic_ncsa_auth", "openssl")
    with AccountSquid(PROXY_ACCOUNTS) as proxy:
        yield proxy


@pytest.fixture
def channel_factory(squid, tmp_path):
    """``channel_factory(tls=False)``: the package channel, reachable only through squid, logins from .netrc."""
    started = []

    def start(tls: bool = False) -> ProxyOnlyChannelServer:
        root = tmp_path / ("channel-tls" if tls else "channel")
        root.mkdir()
        realconda.write_package_channel(str(root), CHANNEL)
        tls_dir = None
        if tls:
            tls_dir = str(tmp_path / "tls")
            os.makedirs(tls_dir)
        server = ProxyOnlyChannelServer(str(root), CHANNEL_ACCOUNTS, only_uid=squid.uid, tls_dir=tls_dir).__enter__()
        started.append(server)
        server.channel_url = server.url + "/" + CHANNEL
        return server

    yield start
    for server in started:
        server.__exit__(None, None, None)


def proxied(squid, channel, since: int = 0) -> list[dict]:
    """squid's log lines from line ``since`` on that are about ``channel`` (squid is shared by the module's tests)."""
    where = "127.0.0.1:%d" % channel.port
    return [row for row in squid.entries()[since:] if where in row["url"]]


def netrc_entry(login: str) -> dict:
    return {"machine": "127.0.0.1", "login": login, "password": CHANNEL_ACCOUNTS[login]}


def assert_conda_installs(host: Host, account: Account, squid, channel, proxy_user: str, channel_login: str) -> None:
    """As ``account``: ``conda search`` and ``conda create`` succeed, the package's file is in the new prefix, and
    every request of theirs went through squid as ``proxy_user`` and reached the channel as ``channel_login``."""
    squid_before, channel_before = len(squid.entries()), len(channel.log)
    search = host.conda(account, "search --override-channels -c %s %s" % (channel.channel_url, realconda.PACKAGE))
    assert search.returncode == 0, mask(search.stdout + search.stderr)[-3000:]
    assert realconda.PACKAGE in search.stdout and CHANNEL in search.stdout, mask(search.stdout)
    prefix = os.path.join(account.home, "env")
    create = host.conda(account, "create -y -p %s --solver classic --override-channels -c %s %s"
                        % (prefix, channel.channel_url, realconda.PACKAGE))
    assert create.returncode == 0, mask(create.stdout + create.stderr)[-3000:]
    installed = os.path.join(prefix, realconda.PACKAGE_FILE)
    assert os.path.isfile(installed), mask(create.stdout)
    assert os.stat(installed).st_uid == account.uid

    rows = proxied(squid, channel, squid_before)
    assert rows, "squid saw no request from %s" % account.name
    assert {row["user"] for row in rows} == {proxy_user}, rows
    if channel.url.startswith("https"):
        assert {row["method"] for row in rows} == {"CONNECT"}, rows
    else:
        assert any(row["url"].endswith(TARBALL) and row["status"] == "200" for row in rows), rows
        assert any(row["url"].endswith("/noarch/repodata.json") for row in rows), rows
    seen = channel.log[channel_before:]
    assert {entry["peer_uid"] for entry in seen} == {squid.uid}, seen
    assert {entry["login"] for entry in seen} == {channel_login}, seen
    assert {"path": TARBALL, "login": channel_login, "peer_uid": squid.uid, "status": 200} in seen, seen


def test_system_scope_with_a_world_readable_password(host, squid, channel_factory):
    """(a) The whole host in one module run: /etc/conda/.condarc and the system environment files hold the shared
    proxy account (accepted as world-readable), each account's ~/.netrc the channel credentials."""
    channel = channel_factory()
    alice, bob = host.add_account("cfrca" + os.urandom(2).hex()), host.add_account("cfrcb" + os.urandom(2).hex())
    host.configure("conda_proxy", {
        "scope": "system", "users": [alice.name, bob.name], "http": squid.url, "https": squid.url,
        "proxy_username": "fleet", "proxy_password": PROXY_ACCOUNTS["fleet"], "world_readable_password": True,
        "netrc_entries": [netrc_entry("reader")]})
    condarc = host.etc.file("/etc/conda/.condarc")
    assert stat.S_IMODE(os.stat(condarc).st_mode) & 0o004, "every account running conda must be able to read it"
    for account in (alice, bob):
        # The env method reached the login shell too (so repodata, which follows it, uses the same proxy).
        shell = host.login(account, 'echo "${http_proxy%%@*}" "${https_proxy%%@*}"')
        assert shell.stdout.split() == ["http://fleet:%s" % quote(PROXY_ACCOUNTS["fleet"], safe="")] * 2, "no env"
        assert_conda_installs(host, account, squid, channel, "fleet", "reader")


def test_system_scope_with_a_variable_reference(host, squid, channel_factory):
    """(b) No password in any system file: /etc/conda/.condarc holds ``${CONDAFLEET_PROXY_PASSWORD}``, which conda
    expands from the account's environment; the variable holds the percent-encoded password (~/.profile here).

    Only the condarc and netrc methods: /etc/environment is read by pam_env, which does not expand ``${VAR}``, and
    a proxy variable in the environment would win over proxy_servers for repodata anyway."""
    channel = channel_factory()
    alice, bob = host.add_account("cfrva" + os.urandom(2).hex()), host.add_account("cfrvb" + os.urandom(2).hex())
    host.configure("conda_proxy", {
        "scope": "system", "methods": ["condarc", "netrc"], "users": [alice.name, bob.name], "http": squid.url,
        "https": squid.url, "proxy_username": "fleet", "proxy_password": "${CONDAFLEET_PROXY_PASSWORD}",
        "netrc_entries": [netrc_entry("reader")]})
    with open(host.etc.file("/etc/conda/.condarc")) as handle:
        text = handle.read()
    assert "${CONDAFLEET_PROXY_PASSWORD}" in text and quote(PROXY_ACCOUNTS["fleet"], safe="") not in text
    for account in (alice, bob):
        host.write_file(account, ".profile", "export CONDAFLEET_PROXY_PASSWORD='%s'\n"
                        % quote(PROXY_ACCOUNTS["fleet"], safe=""), mode=0o600, append=True)
        assert_conda_installs(host, account, squid, channel, "fleet", "reader")


def test_system_scope_variable_unset_gets_407_and_a_prompt(host, squid, channel_factory):
    """(b, the other side) The same files, but the account never set the variable: conda expands it to nothing
    and sends the proxy account with an empty password, squid answers 407, and conda prompts
    ``http proxy username:`` on a stdin it does not have and crashes with ``EOFError``."""
    channel = channel_factory()
    alice = host.add_account("cfrua" + os.urandom(2).hex())
    host.configure("conda_proxy", {
        "scope": "system", "methods": ["condarc", "netrc"], "users": [alice.name], "http": squid.url,
        "proxy_username": "fleet", "proxy_password": "${CONDAFLEET_PROXY_PASSWORD}",
        "netrc_entries": [netrc_entry("reader")]})
    search = host.conda(alice, "search --override-channels -c %s %s" % (channel.channel_url, realconda.PACKAGE))
    output = search.stdout + search.stderr
    assert search.returncode != 0
    assert "http proxy username: " in output and "EOFError" in output, mask(output)[-3000:]
    # ``fleet:`` with an empty password: squid logs the account and refuses every request.
    rows = proxied(squid, channel)
    assert rows and {(row["user"], row["status"]) for row in rows} == {("fleet", "407")}, rows
    assert channel.log == []


def test_user_scope_each_account_its_own_proxy_account(host, squid, channel_factory):
    """(c) Each account's own files with a literal password: its own proxy account and channel login, every file
    holding a secret readable by the account alone (0600), and conda working for each."""
    channel = channel_factory()
    accounts = {"alice": host.add_account("cfrsa" + os.urandom(2).hex()),
                "bob": host.add_account("cfrsb" + os.urandom(2).hex())}
    for who, account in accounts.items():
        host.configure("conda_proxy", {
            "scope": "user", "users": [account.name], "http": squid.url, "https": squid.url,
            "proxy_username": "px-" + who, "proxy_password": PROXY_ACCOUNTS["px-" + who],
            "netrc_entries": [netrc_entry("reader-" + who)]})
    for who, account in accounts.items():
        for name in (".condarc", ".netrc"):
            info = os.stat(os.path.join(account.home, name))
            assert (stat.S_IMODE(info.st_mode), info.st_uid) == (0o600, account.uid), name
        secret = quote(PROXY_ACCOUNTS["px-" + who], safe="")
        for dirpath, _dirs, files in os.walk(account.home):
            for name in files:
                path = os.path.join(dirpath, name)
                with open(path, "rb") as handle:
                    if secret.encode() in handle.read():
                        assert stat.S_IMODE(os.stat(path).st_mode) & 0o077 == 0, "%s holds the password" % path
        assert_conda_installs(host, account, squid, channel, "px-" + who, "reader-" + who)


def test_https_channel_through_connect_with_the_corporate_ca(host, squid, channel_factory):
    """(d) An HTTPS channel whose certificate only the corporate CA vouches for, through squid's CONNECT: conda
    trusts it through ``ssl_verify: /etc/conda/corp-ca.pem`` (deployed world-readable) and nothing else."""
    channel = channel_factory(tls=True)
    ca = host.etc.file("/etc/conda/corp-ca.pem")
    os.makedirs(os.path.dirname(ca), mode=0o755, exist_ok=True)
    shutil.copy(channel.ca_path, ca)
    os.chmod(ca, 0o644)
    alice = host.add_account("cfrta" + os.urandom(2).hex())
    host.configure("conda_proxy", {
        "scope": "system", "users": [alice.name], "http": squid.url, "https": squid.url,
        "proxy_username": "fleet", "proxy_password": PROXY_ACCOUNTS["fleet"], "world_readable_password": True,
        "ssl_verify": "/etc/conda/corp-ca.pem", "netrc_entries": [netrc_entry("reader")]})
    assert_conda_installs(host, alice, squid, channel, "fleet", "reader")
    # The CA is what makes it work: conda with the default trust store refuses the channel.
    untrusted = host.login(alice, "CONDA_SOLVER=classic CONDA_SSL_VERIFY=true CONDA_REMOTE_MAX_RETRIES=0 "
                           "%s search --override-channels -c %s %s"
                           % (host.conda_path, channel.channel_url, realconda.PACKAGE))
    assert untrusted.returncode != 0
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted.stdout + untrusted.stderr, mask(untrusted.stderr)[-2000:]


@pytest.mark.parametrize("tls", [False, True], ids=["http-channel-stale-http_proxy", "https-channel-stale-https_proxy"])
def test_stale_proxy_variable_beats_a_right_condarc(host, squid, channel_factory, tls):
    """(e) ~/.condarc is right, but the login shell still exports an old proxy URL with a wrong password.

    What conda 26.7 really does, request by request (squid's log): the sharded-repodata probe
    (``repodata_shards.msgpack.zst``) goes through ``proxy_servers`` and its right credentials, but
    ``repodata.json(.zst)`` goes through the environment's proxy, which wins (requests lets it override the
    session's proxies) - the wrong password gets a 407 and no repodata reaches conda. Then:

    * HTTP channel: conda prompts ``http proxy username:`` on stdin; with none it crashes with ``EOFError``.
    * HTTPS channel (CONNECT): no prompt; after 3 retries ``ProxyError: Conda cannot proceed due to an error
      in your proxy configuration`` with ``Tunnel connection failed: 407 Proxy Authentication Required``.
    Either way the command fails, whatever ``.condarc`` says; removing the variable makes it work."""
    channel = channel_factory(tls=tls)
    alice = host.add_account("cfrea" + os.urandom(2).hex())
    args = {"scope": "user", "methods": ["condarc", "netrc"], "users": [alice.name], "http": squid.url,
            "https": squid.url, "proxy_username": "px-alice", "proxy_password": PROXY_ACCOUNTS["px-alice"],
            "netrc_entries": [netrc_entry("reader-alice")]}
    if tls:
        with open(channel.ca_path) as handle:
            host.write_file(alice, ".conda/corp-ca.pem", handle.read())
        args["ssl_verify"] = "~/.conda/corp-ca.pem"
    host.configure("conda_proxy", args)
    variable = "https_proxy" if tls else "http_proxy"
    host.write_file(alice, ".profile", "export %s='%s'\n" % (variable, squid.url_with("px-alice", "stale-password")),
                    append=True)
    squid_before = len(squid.entries())
    search = host.conda(alice, "search --override-channels -c %s %s" % (channel.channel_url, realconda.PACKAGE))
    output = search.stdout + search.stderr
    assert search.returncode != 0, mask(output)
    if tls:
        assert "ProxyError" in output and "Tunnel connection failed: 407" in output, mask(output)[-3000:]
        assert "proxy username" not in output
    else:
        assert "http proxy username: " in output and "EOFError" in output, mask(output)[-3000:]
    rows = proxied(squid, channel, squid_before)
    refused = [row for row in rows if row["status"] == "407"]
    assert refused and {row["user"] for row in refused} == {"px-alice"}, rows
    if not tls:  # in plain HTTP squid's log shows which request took which route
        assert {row["url"].rsplit("/", 1)[1] for row in refused} == {"repodata.json.zst"}, rows
        assert {row["url"].rsplit("/", 1)[1] for row in rows if row["status"] != "407"} == {
            "repodata_shards.msgpack.zst"}, rows
    assert not [entry for entry in channel.log if "repodata.json" in entry["path"]], channel.log

    # The same account without the stale variable: the .condarc alone works (the files were right all along).
    host.write_file(alice, ".profile", "unset %s\n" % variable, append=True)
    assert_conda_installs(host, alice, squid, channel, "px-alice", "reader-alice")


def test_final_system_proxy_wins_over_the_account_condarc(host, squid, channel_factory):
    """``final: true`` writes conda's ``#!final`` into /etc/conda/.condarc: an account's own ~/.condarc naming
    another proxy no longer counts, for conda itself; without it, the account's file wins."""
    channel = channel_factory()
    alice = host.add_account("cfrfa" + os.urandom(2).hex())
    args = {"scope": "system", "methods": ["condarc", "netrc"], "users": [alice.name], "http": squid.url,
            "https": squid.url, "proxy_username": "fleet", "proxy_password": PROXY_ACCOUNTS["fleet"],
            "world_readable_password": True, "final": True, "netrc_entries": [netrc_entry("reader")]}
    host.configure("conda_proxy", args)
    host.write_file(alice, ".condarc", "proxy_servers:\n  http: http://127.0.0.1:9\n  https: http://127.0.0.1:9\n",
                    mode=0o600)
    assert_conda_installs(host, alice, squid, channel, "fleet", "reader")

    host.configure("conda_proxy", dict(args, final=False))
    shown = host.conda(alice, "config --show proxy_servers --json")
    assert shown.returncode == 0, mask(shown.stderr)[-2000:]
    assert json.loads(shown.stdout)["proxy_servers"] == {"http": "http://127.0.0.1:9", "https": "http://127.0.0.1:9"}


def test_root_only_system_condarc_breaks_every_non_root_conda(host):
    """A ``0600 root`` /etc/conda/.condarc (what system scope used to write for a literal password): every
    non-root conda command fails with PermissionError; conda does not skip a file it cannot read."""
    condarc = host.etc.file("/etc/conda/.condarc")
    os.makedirs(os.path.dirname(condarc), mode=0o755)
    with open(condarc, "w") as handle:
        handle.write("proxy_servers:\n  http: http://127.0.0.1:9\n")
    os.chmod(condarc, 0o600)
    alice = host.add_account("cfrpa" + os.urandom(2).hex())
    shown = host.conda(alice, "config --show proxy_servers")
    assert shown.returncode != 0
    assert "PermissionError" in shown.stdout + shown.stderr and "/etc/conda/.condarc" in shown.stdout + shown.stderr, (
        shown.stdout + shown.stderr)[-2000:]
    os.chmod(condarc, 0o644)
    shown = host.conda(alice, "config --show proxy_servers")
    assert shown.returncode == 0 and "127.0.0.1:9" in shown.stdout, shown.stderr[-2000:]
