# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The local authenticating proxy under a real systemd (issue 14): enabled, started, restarted, back after a reboot.

A Debian bookworm host booting systemd 252 (tests/support/sdhost.py: ``systemd-nspawn --boot``), reached by the
role over SSH, with the corporate network of tests/support/corplab.py in its network namespace on 127.0.0.1
(a KDC, squid requiring Negotiate, squid requiring Basic, a channel only the squids resolve).

System scope (Basic): the role installs px from wheels on the host, writes the hardened unit for the service
account, and systemd enables and starts it; real conda as bob from an SSH login reaches the channel through it,
squid logs px's account; px killed, systemd restarts it; the host rebooted, it is running again; absent stops,
disables and removes it. NTLM the same way through cntlm, with only the password's hash on the host.

User scope (Kerberos): alice has no session, so the role enables her unit on disk and says it starts at her next
login; lingering on, her manager starts it without any task; with her ticket, real conda finds the channel through
it and squid logs ``alice@CONDAFLEET.TEST``; absent stops and disables it through her own manager.
"""

from __future__ import annotations

import os
import secrets
import shlex
import subprocess
import time

import pytest

import realconda
import sdhost
from corplab import SCAN_COMMAND, WHEELS_ON_HOST, WORKSTATION_PLAY, CorpNet, needles
from modulerun import run_playbook

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.xdist_group("systemd_host")]

CHANNEL_HOST = "channel.corp.condafleet.test"
SYSTEM_PORT = 3130
USER_PORT = 3129
NTLM_PORT = 3131
UNIT = "condafleet-auth-proxy.service"

PREPARE = WORKSTATION_PLAY

ROLE = """\
- name: conda behind the corporate proxy through a local px
  hosts: all
  gather_facts: false
  roles:
    - role: condafleet.proxy.conda_proxy
"""


def playbook(run: dict, text: str, extra: dict | None = None) -> tuple[dict, str]:
    """``ansible-playbook`` over SSH; ``(the last task's result, raw output)``."""
    return run_playbook(run["host"].inventory, run["base"], text, dict(run["vars"], **(extra or {})), run["host"].name)


def wait_for(what: str, check, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("%s: not after %.0f s" % (what, timeout))
        time.sleep(0.3)


def main_pid(host: sdhost.SystemdHost, user: str | None = None) -> int:
    if user:  # as the account, through its manager's socket; no login (a login would start the manager itself)
        command = ("uid=$(id -u {u}); setpriv --reuid={u} --regid={u} --init-groups --reset-env env "
                   "XDG_RUNTIME_DIR=/run/user/$uid systemctl --user show -p MainPID --value {unit}").format(u=user, unit=UNIT)
    else:
        command = "systemctl show -p MainPID --value %s" % UNIT
    out = host.ssh(command).stdout.strip()
    return int(out) if out.isdigit() else 0


def conda_as(run: dict, user: str, args: str) -> subprocess.CompletedProcess:
    """Real conda as ``user`` from an SSH login (a PAM session, the account's login shell)."""
    return run["host"].ssh("CONDA_SOLVER=classic %s %s" % (run["conda"], args), user=user, timeout=300)


@pytest.fixture(scope="module")
def sd_run(tmp_path_factory):
    reason = sdhost.unavailable()
    if reason:
        pytest.skip(reason)
    wheelhouse = os.path.join(sdhost.labmod.CACHE_DIR, "px-wheels")
    if not os.path.isdir(wheelhouse):
        pytest.skip("no px wheelhouse at %s (make lab-cache)" % wheelhouse)
    conda = realconda.require()
    base = str(tmp_path_factory.mktemp("systemd_host"))
    kerberos_password = "Kerb-%s@%s:%%/#" % (secrets.token_hex(3), secrets.token_hex(2))
    basic_password = "Basic-%s@%s:%%/#" % (secrets.token_hex(3), secrets.token_hex(2))
    ntlm_password = "Ntlm-%s:%s#" % (secrets.token_hex(3), secrets.token_hex(2))  # ASCII: cntlm hashes it right
    with sdhost.SystemdHost(base, real_conda=os.path.dirname(os.path.dirname(conda))) as host:
        corp_dir = os.path.join(base, "corp")
        os.makedirs(corp_dir)
        with CorpNet(host.ns, "127.0.0.1", corp_dir, CHANNEL_HOST, kerberos={"alice": kerberos_password},
                     basic={"fleet-px": basic_password}, ntlm={"carol": ntlm_password}, serve_channel=True) as corp:
            run = {"base": base, "host": host, "corp": corp, "conda": conda, "kerberos_password": kerberos_password,
                   "basic_password": basic_password, "ntlm_password": ntlm_password,
                   "channel": corp.state["channel"]["url"],
                   "vars": {"corp_hosts": "all", "corp_address": "127.0.0.1", "corp_krb5_conf": corp.state["krb5_conf"],
                            "corp_wheelhouse": wheelhouse,
                            "conda_proxy_methods": ["condarc", "env"], "conda_proxy_auth_px_source": WHEELS_ON_HOST,
                            "conda_proxy_verify_url": corp.state["channel"]["url"] + "/noarch/repodata.json",
                            "conda_proxy_verify_conda_executable": conda}}
            prepared, raw = playbook(run, PREPARE)
            assert not prepared.get("failed") and not prepared.get("unreachable"), raw[-5000:]
            yield run


def assert_no_file_holds(host: sdhost.SystemdHost, *passwords: str) -> None:
    scan = host.ssh(SCAN_COMMAND, stdin=needles(*passwords), timeout=600)
    assert scan.stdout.splitlines() == ["scanned"], scan.stdout + scan.stderr


def test_system_service_enabled_started_restarted_and_back_after_reboot(sd_run):
    host, corp = sd_run["host"], sd_run["corp"]
    role_vars = {"conda_proxy_auth": "basic", "conda_proxy_http": corp.state["basic"]["url"],
                 "conda_proxy_username": "fleet-px", "conda_proxy_password": sd_run["basic_password"],
                 "conda_proxy_auth_port": SYSTEM_PORT, "conda_proxy_users": ["bob"]}
    applied, raw = playbook(sd_run, ROLE, role_vars)
    assert applied["changed"] and not applied.get("failed"), raw[-5000:]
    service = applied["local_proxy"]["service"]
    assert service["manager"] == "systemd" and service["enabled"] and service["started"], (service, host.ssh(
        "systemctl is-enabled %s; ls -la /etc/systemd/system/multi-user.target.wants/; hostname; uptime; "
        "journalctl --no-pager | grep -i condafleet | head -20" % UNIT).stdout, applied["local_proxy"])
    assert host.ssh("systemctl is-enabled %s && systemctl is-active %s" % (UNIT, UNIT)).stdout.split() == \
        ["enabled", "active"]
    assert host.ssh("systemctl show -p User --value %s" % UNIT).stdout.strip() == "condafleet-proxy"
    again, raw = playbook(sd_run, ROLE, role_vars)
    assert again["changed"] is False, raw[-5000:]

    verified, raw = playbook(sd_run, ROLE, dict(role_vars, conda_proxy_verify=True))
    assert not verified.get("failed") and verified["changed"] is False, raw[-5000:]
    search = conda_as(sd_run, "bob", "search --override-channels -c %s %s" % (sd_run["channel"], realconda.PACKAGE))
    assert search.returncode == 0 and realconda.PACKAGE in search.stdout, search.stdout + search.stderr
    assert {row["user"] for row in corp.entries("basic") if CHANNEL_HOST in row["url"]} == {"fleet-px"}
    holding = host.ssh("grep -rlsF -e %s /etc /opt /var /home /root /tmp" % shlex.quote(sd_run["basic_password"]))
    credential = applied["local_proxy"]["credential_path"]
    assert holding.stdout.split() == [credential], holding.stdout  # px's Basic password: its service's file only
    assert host.ssh("stat -c '%%a %%U' %s" % credential).stdout.split() == ["600", "condafleet-proxy"]

    # killed: systemd starts it again (Restart=on-failure, RestartSec=2s)
    first = main_pid(host)
    assert first
    host.ssh("kill -9 %d" % first)
    wait_for("px restarted by systemd", lambda: main_pid(host) not in (0, first), timeout=30)
    # rebooted: enabled, so running again with no task
    host.reboot()
    assert host.ssh("systemctl is-active %s" % UNIT).stdout.strip() == "active"
    verified, raw = playbook(sd_run, ROLE, dict(role_vars, conda_proxy_verify=True))
    assert not verified.get("failed") and verified["changed"] is False, raw[-5000:]

    removed, raw = playbook(sd_run, ROLE, dict(role_vars, conda_proxy_state="absent"))
    assert removed["changed"] and not removed.get("failed"), raw[-5000:]
    gone = host.ssh("systemctl is-enabled %s; systemctl is-active %s; test -e /etc/systemd/system/%s && echo left"
                    % (UNIT, UNIT, UNIT))
    assert "enabled" not in gone.stdout.split() and "active" not in gone.stdout.split() and "left" not in gone.stdout, \
        gone.stdout


def test_ntlm_through_cntlm_as_a_system_service_with_only_the_hash_on_the_host(sd_run):
    host, corp = sd_run["host"], sd_run["corp"]
    role_vars = {"conda_proxy_auth": "ntlm", "conda_proxy_http": corp.state["ntlmv2"]["url"],
                 "conda_proxy_username": "carol", "conda_proxy_password": sd_run["ntlm_password"],
                 "conda_proxy_auth_ntlm_domain": "CORP", "conda_proxy_auth_port": NTLM_PORT,
                 "conda_proxy_users": ["bob"]}
    applied, raw = playbook(sd_run, ROLE, role_vars)
    assert applied["changed"] and not applied.get("failed"), raw[-5000:]
    assert applied["local_proxy"]["engine"] == "cntlm"
    assert host.ssh("systemctl is-enabled %s && systemctl is-active %s" % (UNIT, UNIT)).stdout.split() == \
        ["enabled", "active"]
    verified, raw = playbook(sd_run, ROLE, dict(role_vars, conda_proxy_verify=True))
    # the probe keeps its connection to cntlm open, as conda does: squid offers NTLM only on such a connection
    assert not verified.get("failed") and verified["changed"] is False, raw[-5000:]
    search = conda_as(sd_run, "bob", "search --override-channels -c %s %s" % (sd_run["channel"], realconda.PACKAGE))
    assert search.returncode == 0 and realconda.PACKAGE in search.stdout, search.stdout + search.stderr
    # the 407s are the NTLM handshakes
    assert {row["user"] for row in corp.entries("ntlmv2") if CHANNEL_HOST in row["url"] and row["status"] != "407"} \
        == {"CORP\\carol"}
    assert_no_file_holds(host, sd_run["ntlm_password"])
    first = main_pid(host)
    host.ssh("kill -9 %d" % first)
    wait_for("cntlm restarted by systemd", lambda: main_pid(host) not in (0, first), timeout=30)
    removed, raw = playbook(sd_run, ROLE, dict(role_vars, conda_proxy_state="absent"))
    assert removed["changed"] and not removed.get("failed"), raw[-5000:]
    assert host.ssh("systemctl is-active %s" % UNIT).stdout.strip() != "active"


def test_user_unit_enabled_without_a_session_starts_with_lingering_and_carries_the_ticket(sd_run):
    host, corp = sd_run["host"], sd_run["corp"]
    role_vars = {"conda_proxy_auth": "kerberos", "conda_proxy_http": corp.state["negotiate"]["url"],
                 "conda_proxy_scope": "user", "conda_proxy_users": ["alice"], "conda_proxy_auth_port": USER_PORT}
    uid = host.ssh("id -u alice").stdout.strip()
    assert not host.ssh("test -e /run/user/%s/systemd/private && echo running" % uid).stdout.strip()
    applied, raw = playbook(sd_run, ROLE, role_vars)
    assert applied["changed"] and not applied.get("failed"), raw[-5000:]
    assert any("no systemd user manager running" in text and "next login" in text
               for text in applied.get("warnings", [])), applied.get("warnings")
    wants = host.ssh("readlink /home/alice/.config/systemd/user/default.target.wants/%s" % UNIT).stdout.strip()
    assert wants == applied["local_proxy"]["unit_path"], wants
    again, raw = playbook(sd_run, ROLE, role_vars)
    assert again["changed"] is False, raw[-5000:]

    # lingering on: alice's manager starts and, the unit enabled, px with it
    host.ssh("loginctl enable-linger alice")
    wait_for("alice's px started by her manager", lambda: main_pid(host, "alice"), timeout=60)
    kinit = host.ssh("kinit alice", user="alice", stdin=sd_run["kerberos_password"] + "\n")
    assert kinit.returncode == 0, kinit.stdout + kinit.stderr
    verified, raw = playbook(sd_run, ROLE, dict(role_vars, conda_proxy_verify=True))
    assert not verified.get("failed") and verified["changed"] is False, raw[-5000:]
    assert not verified.get("warnings"), verified.get("warnings")
    search = conda_as(sd_run, "alice", "search --override-channels -c %s %s" % (sd_run["channel"], realconda.PACKAGE))
    assert search.returncode == 0 and realconda.PACKAGE in search.stdout, search.stdout + search.stderr
    principals = {row["user"] for row in corp.entries("negotiate") if CHANNEL_HOST in row["url"]}
    assert principals == {"alice@%s" % corp.state["realm"]}, principals
    assert_no_file_holds(host, sd_run["kerberos_password"])

    removed, raw = playbook(sd_run, ROLE, dict(role_vars, conda_proxy_state="absent"))
    assert removed["changed"] and not removed.get("failed"), raw[-5000:]
    assert main_pid(host, "alice") == 0
    left = host.ssh("ls /home/alice/.config/systemd/user/default.target.wants/ 2>&1; ls -a /home/alice")
    assert UNIT not in left.stdout and ".condarc" not in left.stdout.split(), left.stdout
