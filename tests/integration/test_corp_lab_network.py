# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Issue 14 in the lab's network: the role with ``conda_proxy_auth: kerberos`` over SSH on a Debian workstation.

A lab of its own (tests/lab/lab.py) and its corporate network (tests/support/corplab.py) in the controller's
namespace: an MIT KDC, squid requiring Negotiate (keytab from that KDC), squid requiring NTLM (``ntlm_fake_auth``)
and squid checking NTLMv2, a PAC file, a channel reached directly. h2 (Debian bookworm, its own root) is the
workstation: the play gives it the realm's ``krb5.conf``, the company's names and a directory of px wheels (no
PyPI in the lab), alice types her password into ``kinit`` over SSH, and the role (over SSH, as root) installs px,
writes alice's user unit and points conda, pip and her shell at ``http://127.0.0.1:PORT``. The lab has no systemd:
the test starts the unit's own ExecStart as alice on h2, as ``systemctl --user`` would.

Then real conda, as alice from a fresh login shell on h2: ``conda search`` and ``conda create`` from the lab's
channel, which px sends (as the PAC file says) to the Negotiate squid, the only place that channel's name resolves
and the only uid the channel answers; squid logs alice's principal. A second channel the PAC file marks DIRECT is
reached without any squid. Every file on h2 is scanned for alice's password: none holds it. Her ticket destroyed,
the role's verify step names it; ``conda_proxy_state: absent`` takes it all back.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import subprocess
from urllib.parse import urlsplit

import pytest

import lab as labmod  # tests/lab, put on sys.path by conftest.py
import realconda
from corplab import PROXY_NAME, SCAN_COMMAND, WHEELS_ON_HOST, WORKSTATION_PLAY, CorpNet, needles
from modulerun import run_playbook
from servers import require
from test_local_auth_proxy import unit_start_script

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.xdist_group("corp_lab_network")]

HOST = "h2"
ACCOUNT = "alice"
PX_PORT = 3129

PREPARE = WORKSTATION_PLAY

ROLE = """\
- name: conda behind the corporate proxy, through px with alice's Kerberos ticket
  hosts: {host}
  gather_facts: false
  roles:
    - role: condafleet.proxy.conda_proxy
""".format(host=HOST)


def ssh(state: dict, command: str, user: str = "root", stdin: str | None = None, timeout: float = 120
        ) -> subprocess.CompletedProcess:
    """``command`` on h2 over real SSH (through the controller namespace); stdin closed unless given."""
    cmd = ["ssh", "-i", state["key"], "-o", "ProxyCommand=ip netns exec %s-ctl nc %%h %%p" % state["prefix"],
           "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
           "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "%s@%s" % (user, state["hosts"][HOST]["address"]),
           command]
    return subprocess.run(cmd, input=stdin if stdin is not None else "", capture_output=True, text=True,
                          timeout=timeout, check=False)


def as_alice(state: dict, command: str, stdin: str | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    """``command`` in a fresh login shell of alice on h2."""
    return ssh(state, "su - %s -c %s" % (ACCOUNT, shlex.quote(command)), stdin=stdin, timeout=timeout)


def playbook(run: dict, text: str, extra: dict | None = None, check: bool = False) -> tuple[dict | None, str]:
    """``ansible-playbook`` over SSH against the lab; ``(the last task's result on h2, raw output)``."""
    return run_playbook(run["state"]["inventory"], run["base"], text, dict(run["vars"], **(extra or {})), HOST, check)


def start_px(run: dict, unit_path: str) -> int:
    """The user unit's ExecStart, run as alice on h2 in its WorkingDirectory with its Environment, the way
    ``systemctl --user start`` would; returns its pid once it listens."""
    unit = ssh(run["state"], "cat %s" % shlex.quote(unit_path))
    assert unit.returncode == 0, unit.stderr
    script = unit_start_script(unit.stdout.encode())
    started = ssh(run["state"], (
        "setpriv --reuid={a} --regid={a} --init-groups --reset-env /bin/sh -c {s} >>/run/px-{a}.log 2>&1 </dev/null &"
        " echo $!; for i in $(seq 150); do python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {p}), 1)'"
        " 2>/dev/null && exit 0; sleep 0.2; done; cat /run/px-{a}.log; exit 1"
    ).format(a=ACCOUNT, s=shlex.quote(script), p=PX_PORT))
    assert started.returncode == 0, started.stdout + started.stderr
    pid = int(started.stdout.split()[0])
    run["px_pids"].append(pid)
    return pid


def stop_px(run: dict, pid: int) -> None:
    ssh(run["state"], "kill %d; for i in $(seq 50); do kill -0 %d 2>/dev/null || exit 0; sleep 0.1; done; kill -9 %d"
        % (pid, pid, pid))
    run["px_pids"].remove(pid)


@pytest.fixture(scope="module")
def corp_run(tmp_path_factory):
    """The lab and its corporate network up, h2 prepared, alice's ticket, the role converged and its px started."""
    if labmod.unavailable():
        pytest.skip(labmod.unavailable())
    require("/usr/sbin/krb5kdc", "/usr/sbin/kadmin.local", "/usr/lib/squid/negotiate_kerberos_auth",
            "/usr/lib/squid/ntlm_fake_auth")
    wheelhouse = os.path.join(labmod.CACHE_DIR, "px-wheels")
    if not os.path.isdir(wheelhouse):
        pytest.skip("no px wheelhouse at %s (make lab-cache)" % wheelhouse)
    base = str(tmp_path_factory.mktemp("corp_lab"))
    state_dir = os.path.join(base, "lab")
    state = labmod.up(state_dir)
    run = {"base": base, "state": state, "px_pids": []}
    try:
        lab_vars = labmod.lab_vars(state)
        if HOST not in lab_vars["lab_real_conda_hosts"]:
            pytest.skip("h2 cannot run the real conda: %s" % (lab_vars["lab_real_conda_skip"] or "another Python"))
        password = "Kerb-%s@%s:%%/#%s" % (secrets.token_hex(3), secrets.token_hex(2), secrets.token_hex(2))
        ntlm_password = "Ntlm-%s" % secrets.token_hex(4)
        corp_dir = os.path.join(base, "corp")
        os.makedirs(corp_dir)
        corp = CorpNet(state["prefix"] + "-ctl", lab_vars["lab_proxy_host"], corp_dir, labmod.CHANNEL_HOST,
                       kerberos={ACCOUNT: password}, ntlm={"carol": ntlm_password})
        corp.start()
        try:
            channel = lab_vars["lab_channel_url"]
            run.update(corp=corp, password=password, ntlm_password=ntlm_password, lab_vars=lab_vars, vars={
                "corp_hosts": HOST, "corp_address": corp.state["address"], "corp_krb5_conf": corp.state["krb5_conf"],
                "corp_wheelhouse": wheelhouse,
                "conda_proxy_pac_url": corp.state["pac"]["url"], "conda_proxy_auth": "kerberos",
                "conda_proxy_scope": "user", "conda_proxy_users": [ACCOUNT],
                "conda_proxy_methods": ["condarc", "env", "netrc"],
                "conda_proxy_netrc_entries": [{"machine": labmod.CHANNEL_HOST, "login": lab_vars["lab_channel_login"],
                                               "password": lab_vars["lab_channel_password"]}],
                "conda_proxy_auth_port": PX_PORT, "conda_proxy_auth_px_source": WHEELS_ON_HOST,
                "conda_proxy_verify_url": lab_vars["lab_channel_repodata_url"],
                "conda_proxy_verify_conda_executable": lab_vars["lab_real_conda"],
            })
            prepared, raw = playbook(run, PREPARE)
            assert prepared and not prepared.get("failed"), raw[-5000:]
            kinit = as_alice(state, "kinit %s" % ACCOUNT, stdin=password + "\n", timeout=60)
            assert kinit.returncode == 0, kinit.stdout + kinit.stderr
            run["kinit"] = kinit
            run["predicted"] = playbook(run, ROLE, check=True)
            run["applied"] = playbook(run, ROLE)
            run["again"] = playbook(run, ROLE)
            applied = run["applied"][0]
            assert applied and applied["changed"] and not applied.get("failed"), run["applied"][1][-5000:]
            run["px_pid"] = start_px(run, applied["local_proxy"]["unit_path"])
            run["verified"] = playbook(run, ROLE, {"conda_proxy_verify": True})
            run["channel"] = channel
            yield run
        finally:
            for pid in list(run["px_pids"]):
                stop_px(run, pid)
            corp.stop()
    finally:
        report = labmod.down(state_dir)
        assert not report["leftovers"], report


def test_check_mode_predicts_and_writes_nothing(corp_run):
    predicted, raw = corp_run["predicted"]
    assert predicted["changed"] and not predicted.get("failed"), raw[-5000:]
    # the real run changed; the rerun did not, and did not run pip again
    again, raw = corp_run["again"]
    assert again["changed"] is False and again["local_proxy"]["pip_ran"] is False, raw[-5000:]


def test_everything_alice_sees_points_at_px_on_loopback(corp_run):
    proxy = corp_run["applied"][0]["local_proxy"]
    assert proxy["proxy_url"] == "http://127.0.0.1:%d" % PX_PORT and proxy["scope"] == "user"
    shown = as_alice(corp_run["state"], "cat ~/.condarc; echo; env | grep -i _proxy= | sort", timeout=60)
    assert shown.returncode == 0, shown.stderr
    # alice's name and her px's own client key (another account on h2 cannot borrow her ticket)
    assert proxy["client_username"] == ACCOUNT
    assert "@127.0.0.1:%d" % PX_PORT in shown.stdout and "http://%s:" % ACCOUNT in shown.stdout
    assert PROXY_NAME not in shown.stdout and corp_run["corp"].state["address"] not in shown.stdout
    assert "https_proxy=http://%s:" % ACCOUNT in shown.stdout
    bob = ssh(corp_run["state"], "curl -sS -o /dev/null -w '%%{http_code}' --noproxy '' --proxy http://127.0.0.1:%d %s"
              % (PX_PORT, corp_run["lab_vars"]["lab_channel_repodata_url"]), user="bob")
    assert bob.stdout == "407", bob.stdout + bob.stderr
    # px listens on loopback only: h2's listening sockets on the port, and the lab's network finds it closed
    listening = ssh(corp_run["state"], "cat /proc/net/tcp /proc/net/tcp6")
    port = ":%04X" % PX_PORT
    local = {fields[1] for fields in (line.split() for line in listening.stdout.splitlines())
             if len(fields) > 3 and fields[3] == "0A" and fields[1].endswith(port)}
    assert local == {"0100007F" + port}, listening.stdout
    outside = subprocess.run(["ip", "netns", "exec", corp_run["state"]["prefix"] + "-ctl", "nc", "-z", "-w", "3",
                              corp_run["state"]["hosts"][HOST]["address"], str(PX_PORT)],
                             capture_output=True, timeout=30, check=False)
    assert outside.returncode != 0


def test_verify_passes_through_px(corp_run):
    verified, raw = corp_run["verified"]
    assert not verified.get("failed") and verified["changed"] is False, raw[-5000:]
    assert verified["verify"][0]["probe"]["outcome"] == "ok"
    assert verified["verify"][0]["requests"]["repodata"]["proxy"].endswith("@127.0.0.1:%d" % PX_PORT)


def test_real_conda_searches_and_creates_through_the_negotiate_squid(corp_run):
    conda = corp_run["lab_vars"]["lab_real_conda"]
    corp = corp_run["corp"]
    before = len(corp.entries("negotiate"))
    search = as_alice(corp_run["state"], "CONDA_SOLVER=classic %s search --override-channels -c %s %s"
                      % (conda, corp_run["channel"], realconda.PACKAGE))
    assert search.returncode == 0 and realconda.PACKAGE in search.stdout, search.stdout + search.stderr
    create = as_alice(corp_run["state"], "%s create -y -p ~/env --solver classic --override-channels -c %s %s && "
                      "test -f ~/env/%s" % (conda, corp_run["channel"], realconda.PACKAGE, realconda.PACKAGE_FILE))
    assert create.returncode == 0, create.stdout + create.stderr
    rows = [row for row in corp.entries("negotiate")[before:] if labmod.CHANNEL_HOST in row["url"]]
    assert rows, corp.entries("negotiate")
    principal = "%s@%s" % (ACCOUNT, corp.state["realm"])
    assert {row["user"] for row in rows} == {principal}, rows
    assert any(row["url"].endswith(".tar.bz2") or row["url"].endswith(".conda") for row in rows), rows
    # the channel answered squid (its only allowed uid) with alice's .netrc login
    with open(corp_run["lab_vars"]["lab_channel_log"]) as handle:
        logins = {json.loads(line)["login"] for line in handle if line.strip()}
    assert corp_run["lab_vars"]["lab_channel_login"] in logins


def test_the_pac_file_sends_the_direct_channel_around_every_squid(corp_run):
    conda = corp_run["lab_vars"]["lab_real_conda"]
    corp = corp_run["corp"]
    direct = corp.state["direct"]["url"]
    search = as_alice(corp_run["state"], "CONDA_SOLVER=classic %s search --override-channels -c %s %s"
                      % (conda, direct, realconda.PACKAGE))
    assert search.returncode == 0 and realconda.PACKAGE in search.stdout, search.stdout + search.stderr
    port = ":%d/" % urlsplit(direct).port
    for squid in ("negotiate", "ntlm", "ntlmv2"):
        assert not [row for row in corp.entries(squid) if port in row["url"]], squid


def test_ntlm_squids_in_the_lab_network_log_the_ntlm_user(corp_run):
    corp, state, lab_vars = corp_run["corp"], corp_run["state"], corp_run["lab_vars"]
    channel = "%s:%s" % (lab_vars["lab_channel_login"], lab_vars["lab_channel_password"])
    # ntlm_fake_auth takes any password and logs the user as the client sent it; the NTLMv2 squid checks the hash
    for squid, user, password in (("ntlm", "dave", "any-password"),
                                  ("ntlmv2", "CORP\\carol", corp_run["ntlm_password"])):
        command = ("curl -sS -o /dev/null -w '%%{http_code}' --max-time 20 --proxy %s --proxy-ntlm -U %s -u %s %s"
                   % (corp.state[squid]["url"], shlex.quote("%s:%s" % (user, password)), shlex.quote(channel),
                      lab_vars["lab_channel_repodata_url"]))
        fetched = ssh(state, command)
        assert fetched.stdout == "200", (squid, fetched.stdout, fetched.stderr)
        users = {row["user"] for row in corp.entries(squid) if row["method"] == "GET" and row["user"] != "-"}
        assert users == {user} if squid == "ntlmv2" else len(users) == 1 and user in users.pop(), corp.entries(squid)
    wrong = ssh(state, "curl -sS -o /dev/null -w '%%{http_code}' --max-time 20 --proxy %s --proxy-ntlm -U %s %s"
                % (corp.state["ntlmv2"]["url"], shlex.quote("CORP\\carol:wrong"), lab_vars["lab_channel_repodata_url"]))
    assert wrong.stdout == "407", wrong.stdout + wrong.stderr


def test_no_file_on_the_workstation_holds_the_password(corp_run):
    """grep over every file h2 sees (its root, /run, /tmp, the real conda bound in), not /proc, /sys, /dev."""
    scan = ssh(corp_run["state"], SCAN_COMMAND, stdin=needles(corp_run["password"]), timeout=600)
    assert scan.stdout.splitlines() == ["scanned"], scan.stdout + scan.stderr
    # the scan itself finds what it looks for: the realm's krb5.conf names the KDC's address
    probe = ssh(corp_run["state"], "grep -rlsaF --devices=skip %s /etc" % shlex.quote(corp_run["corp"].state["address"]))
    assert "/etc/krb5.conf" in probe.stdout.split(), probe.stdout + probe.stderr


def test_a_lost_ticket_is_named_by_verify_then_absent_takes_it_back(corp_run):
    state = corp_run["state"]
    as_alice(state, "kdestroy -q", timeout=60)
    # px holds the upstream connection it authenticated; at the next login it starts anew
    stop_px(corp_run, corp_run["px_pid"])
    start_px(corp_run, corp_run["applied"][0]["local_proxy"]["unit_path"])
    failed, raw = playbook(corp_run, ROLE, {"conda_proxy_verify": True})
    assert failed.get("failed") is True, raw[-5000:]
    assert failed["verify"][0]["probe"]["outcome"] == "upstream_auth_failed", failed["verify"]
    assert "klist" in failed["msg"]
    search = as_alice(state, "CONDA_SOLVER=classic %s search --override-channels -c %s %s"
                      % (corp_run["lab_vars"]["lab_real_conda"], corp_run["channel"], realconda.PACKAGE), timeout=240)
    assert search.returncode != 0 and "Password" not in search.stdout + search.stderr

    for pid in list(corp_run["px_pids"]):
        stop_px(corp_run, pid)
    removed, raw = playbook(corp_run, ROLE, {"conda_proxy_state": "absent"})
    assert removed["changed"] and not removed.get("failed"), raw[-5000:]
    left = ssh(state, "ls -a /home/%s; test -e %s && echo unit-left"
               % (ACCOUNT, corp_run["applied"][0]["local_proxy"]["unit_path"]))
    assert ".condarc" not in left.stdout.split() and "unit-left" not in left.stdout, left.stdout


def test_ntlm_on_a_host_without_cntlm_goes_to_the_package_manager(corp_run):
    """h2 has no cntlm: local_auth_proxy says so before writing anything, and the role hands the cntlm package to
    the package action plugin, which picks apt. The lab has no Debian mirror, so apt fails, saying why."""
    state, corp = corp_run["state"], corp_run["corp"]
    role_vars = {"conda_proxy_auth": "ntlm", "conda_proxy_http": corp.state["ntlmv2"]["url"],
                 "conda_proxy_username": "carol", "conda_proxy_password": corp_run["ntlm_password"],
                 "conda_proxy_auth_ntlm_domain": "CORP", "conda_proxy_auth_port": PX_PORT + 1,
                 "conda_proxy_scope": "system", "conda_proxy_pac_url": "", "conda_proxy_users": ["bob"]}
    assert ssh(state, "command -v cntlm || ls /usr/sbin/cntlm").returncode != 0
    failed, raw = playbook(corp_run, ROLE, role_vars)
    assert failed.get("failed") is True, raw[-5000:]
    assert failed["msg"].startswith("local_proxy: ansible.legacy.package: "), failed["msg"]
    assert "interpreter line" not in failed["msg"] and "apt" in failed["msg"].lower(), failed["msg"]
    written = ssh(state, "ls /etc/condafleet/auth-proxy /etc/systemd/system/condafleet-auth-proxy.service 2>&1")
    assert "No such file" in written.stdout and "cntlm.conf" not in written.stdout, written.stdout
