# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The corporate-proxy lab of issue 14 (tests/support/corpauth.py), each part proven with a real client.

A non-root account with a Kerberos ticket from the lab's MIT KDC fetches a channel file through squid requiring
Negotiate (``curl --proxy-negotiate -U :``) and squid logs its principal; without the ticket the same request
gets 407. curl speaks NTLM to the squid requiring it, which logs the NTLM user. A PAC file is served and fetched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid

import pytest

from accounts import throwaway_account
from corpauth import KRB5_PROGRAMS, NEGOTIATE_HELPER, NTLM_HELPER, REALM, Kdc, NegotiateSquid, NtlmSquid, \
    NtlmV2Squid, PacServer, pac_script
from servers import LOOPBACK, _Server, require

pytestmark = pytest.mark.slow

CHANNEL_FILE = "/fleet-channel/noarch/repodata.json"


def fetch(proxy: str, url: str, *options: str) -> subprocess.CompletedProcess:
    """curl through ``proxy``: stdout is the HTTP status, the body is thrown away."""
    return subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "20",
                           "--proxy", proxy, *options, url], capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def kdc():
    require(*KRB5_PROGRAMS)
    with Kdc() as server:
        yield server


@pytest.fixture
def negotiate_squid(kdc):
    require("/usr/sbin/squid", NEGOTIATE_HELPER, "curl")
    with NegotiateSquid(kdc) as proxy:
        yield proxy


@pytest.mark.skipif(os.geteuid() != 0, reason="creates an account (needs root)")
def test_ticket_holder_passes_negotiate_squid_and_is_logged(kdc, negotiate_squid, channel):
    url = channel.url + CHANNEL_FILE
    with throwaway_account("krb") as account:
        principal = kdc.add_user(account.pw_name, "t1ck#t pw:%s" % account.pw_uid)
        kdc.kinit_as(account, principal, "t1ck#t pw:%s" % account.pw_uid)
        listed = kdc.as_account(account, "klist")
        assert principal in listed.stdout, listed.stderr

        for proxy in (negotiate_squid.localhost_url, negotiate_squid.url):
            command = "curl -sS -o /dev/null -w '%%{http_code}' --max-time 20 --proxy %s --proxy-negotiate -U : %s" % (
                proxy, url)
            with_ticket = kdc.as_account(account, command)
            assert with_ticket.stdout == "200", (proxy, with_ticket.stdout, with_ticket.stderr)
        users = {entry["user"] for entry in negotiate_squid.entries() if entry["status"] == "200"}
        assert users == {principal}, negotiate_squid.log()
        assert principal.endswith("@" + REALM)

        kdc.kdestroy_as(account)
        assert not os.path.exists(kdc.ccache_for(account))
        without_ticket = kdc.as_account(account, command)
        assert without_ticket.stdout == "407", (without_ticket.stdout, without_ticket.stderr)


@pytest.mark.skipif(os.geteuid() != 0, reason="creates an account in a private /etc (needs root)")
def test_ticket_holder_with_the_system_krb5_conf(kdc, negotiate_squid, channel):
    """An account of a private ``/etc`` (as the real-conda tests make them), whose ``/etc/krb5.conf`` names the lab's
    realm: ``kinit`` and then curl from a fresh login shell with no ``KRB5_CONFIG`` at all."""
    require("unshare", "useradd")
    import realconda

    base = tempfile.mkdtemp(prefix="condafleet-krbetc-", dir="/var/tmp")
    try:
        os.chmod(base, 0o755)
        etc = realconda.PrivateEtc(base)
        kdc.write_krb5_conf(etc.file("/etc/krb5.conf"))
        name = "krbetc" + uuid.uuid4().hex[:6]
        made = etc.run(["useradd", "-m", "-d", os.path.join(base, name), "-s", "/bin/bash", name])
        assert made.returncode == 0, made.stderr
        principal = kdc.add_user(name, "sys-krb5 pw")
        kdc.kinit_as(name, principal, "sys-krb5 pw", wrap=etc.argv)
        command = "env | grep -c ^KRB5 ; curl -sS -o /dev/null -w '%%{http_code}' --max-time 20 --proxy %s " \
                  "--proxy-negotiate -U : %s" % (negotiate_squid.localhost_url, channel.url + CHANNEL_FILE)
        got = etc.run(["su", "-", name, "-c", command], timeout=60, stdin=subprocess.DEVNULL)
        assert got.stdout.split() == ["0", "200"], (got.stdout, got.stderr)
        assert [entry["user"] for entry in negotiate_squid.entries() if entry["status"] == "200"] == [principal]
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_negotiate_squid_refuses_without_negotiate(negotiate_squid, channel):
    url = channel.url + CHANNEL_FILE
    assert fetch(negotiate_squid.url, url).stdout == "407"
    # Basic credentials are not a way in: the squid offers Negotiate only.
    assert fetch(negotiate_squid.url, url, "--proxy-user", "someone:pw").stdout == "407"
    assert not [entry for entry in negotiate_squid.entries() if entry["status"] == "200"]


def test_ticket_of_another_realm_is_refused(kdc, negotiate_squid, channel, tmp_path):
    """A ticket from a second KDC (same realm name, other keys) does not open the squid: the keytab is checked."""
    with Kdc() as stranger:
        principal = stranger.add_user("mallory", "m4llory")
        env = dict(os.environ, KRB5_CONFIG=stranger.krb5_conf, KRB5CCNAME="FILE:%s" % (tmp_path / "cc"))
        subprocess.run(["kinit", principal], input="m4llory\n", env=env, capture_output=True, text=True, timeout=60,
                       check=True)
        # The stranger's krb5.conf names the stranger's KDC, so the service ticket comes from there.
        stranger.service_keytab(str(tmp_path / "unused.keytab"))
        proc = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "20",
                               "--proxy", negotiate_squid.localhost_url, "--proxy-negotiate", "-U", ":",
                               channel.url + CHANNEL_FILE], env=env, capture_output=True, text=True, timeout=60,
                              check=False)
        assert proc.stdout == "407", (proc.stdout, proc.stderr)


def test_ntlm_squid_takes_curl_ntlm_and_logs_the_user(channel):
    require("/usr/sbin/squid", NTLM_HELPER, "curl")
    url = channel.url + CHANNEL_FILE
    with NtlmSquid() as proxy:
        assert fetch(proxy.url, url).stdout == "407"
        ok = fetch(proxy.url, url, "--proxy-ntlm", "-U", "ntlmuser:any-password")
        assert ok.stdout == "200", ok.stderr
        users = [entry["user"] for entry in proxy.entries() if entry["status"] == "200"]
        # ntlm_fake_auth checks no password and names the user as the client sent it.
        assert len(users) == 1 and "ntlmuser" in users[0], proxy.log()


NTLM_PASSWORD = "Ntlm pw:9#%"  # ASCII: curl, libcurl (px) and cntlm hash a non-ASCII password wrongly


def test_ntlmv2_squid_checks_the_password(channel):
    require("/usr/sbin/squid", "curl")
    url = channel.url + CHANNEL_FILE
    with NtlmV2Squid({"bob": NTLM_PASSWORD}) as proxy:
        assert fetch(proxy.url, url, "--proxy-ntlm", "-U", "CORP\\bob:%s" % NTLM_PASSWORD).stdout == "200"
        assert fetch(proxy.url, url, "--proxy-ntlm", "-U", "bob:%s" % NTLM_PASSWORD).stdout == "200"  # default domain
        assert fetch(proxy.url, url, "--proxy-ntlm", "-U", "CORP\\bob:wrong").stdout == "407"
        assert fetch(proxy.url, url, "--proxy-ntlm", "-U", "CORP\\eve:%s" % NTLM_PASSWORD).stdout == "407"
        assert fetch(proxy.url, url, "--proxy-user", "bob:%s" % NTLM_PASSWORD).stdout == "407"  # no Basic
        users = [entry["user"] for entry in proxy.entries() if entry["status"] == "200"]
        assert users == ["CORP\\bob", "CORP\\bob"], proxy.log()
        with open(os.path.join(proxy.workdir, "ntlm-hashes")) as handle:
            assert NTLM_PASSWORD not in handle.read()


class Cntlm(_Server):
    """cntlm (the Debian package) on loopback with only the ``PassNTLMv2`` hash in its configuration."""

    name = "cntlm"

    def __init__(self, upstream_port: int, user: str, domain: str, password_hash: str) -> None:
        super().__init__()
        self.conf = os.path.join(self.workdir, "cntlm.conf")
        with open(self.conf, "w") as handle:
            handle.write("Username %s\nDomain %s\nPassNTLMv2 %s\nAuth NTLMv2\nProxy %s:%d\n"
                         % (user, domain, password_hash, LOOPBACK, upstream_port))
        os.chmod(self.conf, 0o600)

    def command(self) -> list[str]:
        return ["cntlm", "-f", "-l", "%s:%d" % (LOOPBACK, self.port), "-c", self.conf]


def test_cntlm_hash_passes_ntlmv2_squid(channel):
    """cntlm with the ``PassNTLMv2`` hash that ``cntlm -H`` prints (the password on stdin) answers the checking
    squid's NTLMv2 challenge; a hash of another password is refused."""
    require("/usr/sbin/squid", "cntlm", "curl")
    url = channel.url + CHANNEL_FILE
    printed = subprocess.run(["cntlm", "-H", "-u", "bob", "-d", "CORP"], input=NTLM_PASSWORD + "\n",
                             capture_output=True, text=True, timeout=30, check=True).stdout
    password_hash = next(line.split()[1] for line in printed.splitlines() if line.startswith("PassNTLMv2 "))
    with NtlmV2Squid({"bob": NTLM_PASSWORD}) as proxy:
        with Cntlm(proxy.port, "bob", "CORP", password_hash) as local:
            assert fetch(local.url, url).stdout == "200", local.workdir
        with Cntlm(proxy.port, "bob", "CORP", "0" * 32) as local:
            assert fetch(local.url, url).stdout == "407"
        assert [entry["user"] for entry in proxy.entries() if entry["status"] == "200"] == ["CORP\\bob"]


def test_pac_file_is_served():
    routes = {"channel.corp.test": "PROXY 127.0.0.1:3128", "direct.corp.test": "DIRECT"}
    script = pac_script(routes)
    with PacServer(script) as server:
        got = subprocess.run(["curl", "-sS", "-D", "-", "--max-time", "10", "--noproxy", "*", server.pac_url],
                             capture_output=True, text=True, timeout=30, check=False)
        assert got.returncode == 0, got.stderr
        headers, body = got.stdout.split("\n\n", 1)  # text mode: CRLF read as LF
        assert body == script
        assert "application/x-ns-proxy-autoconfig" in headers
        missing = fetch("", server.url + "/wpad.dat", "--noproxy", "*")
        assert missing.stdout == "404"
        assert server.requests == ["/proxy.pac", "/wpad.dat"]


def test_pac_script_routes_each_host():
    """The PAC file is JavaScript: a real engine (node) sends the listed host to the proxy, the rest direct."""
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.skip("not installed: node (to evaluate the PAC file)")
    script = pac_script({"a.corp.test": "PROXY 127.0.0.1:3128"})
    probe = script + "".join("console.log(FindProxyForURL('http://%s/x', '%s'));" % (host, host)
                             for host in ("a.corp.test", "b.corp.test"))
    out = subprocess.run([node, "-e", probe], capture_output=True, text=True, timeout=30, check=True).stdout
    assert out.splitlines() == ["PROXY 127.0.0.1:3128", "DIRECT"]
