# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The lab itself works: three hosts over SSH, their OSes, accounts, and the proxy-only channel.

These prove the claims the role's verify step relies on: a host reaches the channel *only*
through the lab's squid, and only with the right credentials -- so a passing verify means the
proxy settings made it work.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

import pytest

import lab as labmod  # tests/lab, put on sys.path by conftest.py

pytestmark = [pytest.mark.lab, pytest.mark.xdist_group("lab")]

ANSIBLE = os.path.join(os.path.dirname(sys.executable), "ansible")


def ansible(state: dict, pattern: str, module: str, args: str = "") -> dict:
    """``ansible <pattern> -m <module>`` against the lab inventory; returns ``{host: result}``."""
    env = dict(os.environ, ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
               ANSIBLE_NOCOLOR="1", ANSIBLE_HOST_KEY_CHECKING="0")
    cmd = [ANSIBLE, pattern, "-i", state["inventory"], "-m", module]
    if args:
        cmd += ["-a", args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, check=False)
    assert "{" in proc.stdout, proc.stdout + proc.stderr
    data = json.loads(proc.stdout[proc.stdout.index("{"):])
    return data["plays"][0]["tasks"][0]["hosts"]


def ssh(state: dict, host: str, command: str, user: str = "root") -> subprocess.CompletedProcess:
    """Run ``command`` on a lab host over real SSH (through the controller namespace)."""
    ctl = state["prefix"] + "-ctl"
    control_dir = state["control_path_dir"]  # one SSH connection per host and user, reused
    cmd = ["ssh", "-i", state["key"], "-o", "ControlMaster=auto", "-o", "ControlPersist=30",
           "-o", "ControlPath=%s/t-%%C" % control_dir, "-o", "ProxyCommand=ip netns exec %s nc %%h %%p" % ctl,
           "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
           "-o", "BatchMode=yes", "-o", "ConnectTimeout=10", "%s@%s" % (user, state["hosts"][host]["address"]), command]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


def curl(state: dict, host: str, url: str, *options: str) -> tuple[int, str]:
    """``curl`` on the host: returns (exit status, HTTP status as printed by ``-w``)."""
    command = "curl -sS -o /dev/null -w '%{http_code}' --max-time 5 " + " ".join(shlex.quote(o) for o in options)
    proc = ssh(state, host, command + " " + shlex.quote(url))
    return proc.returncode, proc.stdout.strip()


HOSTS = ("h1", "h2", "h3")


def test_ansible_reaches_every_host_over_ssh(lab):
    results = ansible(lab, "all", "ansible.builtin.ping")
    assert sorted(results) == list(HOSTS)
    for host, result in results.items():
        assert result.get("ping") == "pong", (host, result)


def test_os_facts_show_each_hosts_debian_release(lab):
    results = ansible(lab, "all", "ansible.builtin.setup", "filter=ansible_distribution*")
    releases = {h: r["ansible_facts"]["ansible_distribution_release"] for h, r in results.items()}
    assert releases["h2"] == "bookworm"
    assert releases["h3"] == "trixie"
    with open("/etc/os-release") as handle:  # h1 shares the machine's filesystem
        machine = dict(line.rstrip("\n").split("=", 1) for line in handle if "=" in line)
    assert releases["h1"] == machine.get("VERSION_CODENAME", "").strip('"')
    for host in HOSTS:
        assert results[host]["ansible_facts"]["ansible_distribution"] == "Debian"


@pytest.mark.parametrize("host", HOSTS)
def test_lab_users_log_in_with_bash(lab, host):
    for user in labmod.USERS:
        proc = ssh(lab, host, 'echo "$(id -un) $SHELL $HOME"', user=user)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split() == [user, "/bin/bash", "/home/" + user]


def test_h1_has_private_etc_root_and_home(lab):
    """Accounts created on h1 live in its own /etc overlay, not in the machine's."""
    with open("/etc/passwd") as handle:
        machine_users = {line.split(":")[0] for line in handle}
    proc = ssh(lab, "h1", "getent passwd alice bob | cut -d: -f1; ls /home; hostname")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["alice", "bob", "alice", "bob", "h1"]
    assert not {"alice", "bob"} & machine_users
    assert not os.path.exists("/home/alice")


@pytest.mark.parametrize("host", HOSTS)
def test_channel_is_reachable_only_through_the_authenticating_proxy(lab, host):
    vars_ = labmod.lab_vars(lab)
    url = vars_["lab_channel_repodata_url"]
    proxy = vars_["lab_proxy_url"]
    creds = "%s:%s" % (vars_["lab_proxy_username"], vars_["lab_proxy_password"])

    # Directly: the channel's name does not resolve on the host, and its port on the controller is closed.
    status, code = curl(lab, host, url)
    assert status != 0 and code != "200", (status, code)
    status, code = curl(lab, host, "http://%s:%d/" % (vars_["lab_proxy_host"], labmod.CHANNEL_PORT))
    assert status != 0 and code != "200", (status, code)

    # Through squid without credentials: 407; with them but without the channel's own: 401; with both: 200.
    channel = "%s:%s" % (vars_["lab_channel_login"], vars_["lab_channel_password"])
    assert curl(lab, host, url, "--proxy", proxy, "--user", channel) == (0, "407")
    assert curl(lab, host, url, "--proxy", proxy, "--proxy-user", creds) == (0, "401")
    assert curl(lab, host, url, "--proxy", proxy, "--proxy-user", creds, "--user", channel) == (0, "200")
    # The percent-encoded URL form works too (the password holds @ : % / #).
    assert curl(lab, host, url, "--proxy", vars_["lab_proxy_url_with_credentials"], "--user", channel) == (0, "200")

    with open(vars_["lab_proxy_access_log"]) as handle:
        log = handle.read()
    assert "TCP_DENIED/407" in log
    assert vars_["lab_proxy_username"] in log and url in log
    address = lab["hosts"][host]["address"]
    lines = [line.split() for line in log.splitlines()]
    # squid's native fields, the proxy account (%un) eighth: time elapsed client result bytes method URL account
    assert [f[7] for f in lines if f[2] == address and f[3] == "TCP_MISS/200"] != []
    assert {f[7] for f in lines if f[2] == address and f[3] == "TCP_MISS/200"} == {vars_["lab_proxy_username"]}

    # The channel: each request came from squid's uid, forwarded for this host; 401 without its login, 200 with.
    with open(vars_["lab_channel_log"]) as handle:
        entries = [json.loads(line) for line in handle if line.strip()]
    mine = [e for e in entries if e.get("forwarded_for") == address]
    assert {e["peer_uid"] for e in mine} == {vars_["lab_squid_uid"]}
    assert {(e["login"], e["status"]) for e in mine} == {(None, 401), (vars_["lab_channel_login"], 200)}


@pytest.mark.parametrize("host", HOSTS)
def test_https_channel_is_reachable_only_through_a_squid_tunnel_and_trusted_only_with_the_lab_ca(lab, host):
    """The channel over HTTPS: a CONNECT tunnel through squid (its SSL_ports allow the channel's TLS port, not the
    HTTP one), a certificate for its name that only the lab's CA makes trusted, and the same credentials."""
    vars_ = labmod.lab_vars(lab)
    url = vars_["lab_channel_https_repodata_url"]
    proxy = vars_["lab_proxy_url"]
    creds = "%s:%s" % (vars_["lab_proxy_username"], vars_["lab_proxy_password"])
    channel = "%s:%s" % (vars_["lab_channel_login"], vars_["lab_channel_password"])
    with open(vars_["lab_channel_ca"]) as handle:
        ca = handle.read()
    assert "PRIVATE KEY" not in ca
    attempts = {  # name: curl options; each prints "<HTTP status> <CONNECT status> <curl exit status>"
        "direct": ["--cacert", "$ca", "--user", channel],
        "trusted": ["--cacert", "$ca", "--proxy", proxy, "--proxy-user", creds, "--user", channel],
        "system_store": ["--proxy", proxy, "--proxy-user", creds, "--user", channel],
        "no_proxy_credentials": ["--cacert", "$ca", "--proxy", proxy, "--user", channel],
        "no_channel_credentials": ["--cacert", "$ca", "--proxy", proxy, "--proxy-user", creds],
    }
    script = 'ca=$(mktemp); trap \'rm -f "$ca"\' EXIT; printf %s ' + shlex.quote(ca) + ' > "$ca"\n'
    for name, options in attempts.items():
        quoted = " ".join('"$ca"' if o == "$ca" else shlex.quote(o) for o in options)
        script += "printf '%%s ' %s; curl -sS -o /dev/null -w '%%{http_code} %%{http_connect}' --max-time 5 %s %s 2>/dev/null;" \
                  " echo \" $?\"\n" % (name, quoted, shlex.quote(url))
    # A tunnel to the channel's plain HTTP port: squid refuses CONNECT outside SSL_ports, credentials or not.
    script += ("printf 'http_port_tunnel '; curl -sS -o /dev/null -w '%%{http_code} %%{http_connect}' --max-time 5 "
               "--proxytunnel --proxy %s --proxy-user %s --user %s %s 2>/dev/null; echo \" $?\"\n"
               % (shlex.quote(proxy), shlex.quote(creds), shlex.quote(channel), shlex.quote(vars_["lab_channel_repodata_url"])))
    proc = ssh(lab, host, script)
    results = {line.split()[0]: line.split()[1:] for line in proc.stdout.splitlines()}
    assert sorted(results) == sorted(list(attempts) + ["http_port_tunnel"]), proc.stdout + proc.stderr
    assert results["direct"][2] != "0" and results["direct"][0] != "200", results  # the name does not resolve
    assert results["trusted"] == ["200", "200", "0"], results
    assert results["system_store"][1:] == ["200", "60"], results  # tunnel up, certificate refused (curl 60)
    assert results["no_proxy_credentials"][1] == "407" and results["no_proxy_credentials"][2] != "0", results
    assert results["no_channel_credentials"] == ["401", "200", "0"], results
    assert results["http_port_tunnel"][1] == "403" and results["http_port_tunnel"][2] != "0", results

    # squid's lines from this host: the tunnels it opened for the proxy account, the refused one to the HTTP port.
    address = lab["hosts"][host]["address"]
    tls_host = "%s:%d" % (labmod.CHANNEL_HOST, labmod.CHANNEL_TLS_PORT)
    with open(vars_["lab_proxy_access_log"]) as handle:
        lines = [line.split() for line in handle if line.split()[2:3] == [address]]
    tunnels = [f for f in lines if f[5] == "CONNECT" and f[6] == tls_host and f[3] == "TCP_TUNNEL/200"]
    assert {f[7] for f in tunnels} == {vars_["lab_proxy_username"]}, lines
    assert [f for f in lines if f[5] == "CONNECT" and f[6] == tls_host and f[3] == "TCP_DENIED/407"], lines
    assert [f for f in lines if f[5] == "CONNECT" and f[6] == "%s:%d" % (labmod.CHANNEL_HOST, labmod.CHANNEL_PORT)
            and f[3] == "TCP_DENIED/403"], lines
    # The channel's TLS lines for those tunnels (squid's local port, the last field, is the peer port it saw).
    ports = {int(f[-1]) for f in tunnels}
    with open(vars_["lab_channel_log"]) as handle:
        entries = [json.loads(line) for line in handle if line.strip()]
    mine = [e for e in entries if e["tls"] and e["peer_port"] in ports]
    assert {e["peer_uid"] for e in mine} == {vars_["lab_squid_uid"]}, mine
    assert {(e["login"], e["status"]) for e in mine if "event" not in e} == {
        (None, 401), (vars_["lab_channel_login"], 200)}, mine
    refused = [e for e in mine if e.get("event") == "tls_handshake_failed"]
    assert refused and all("UNKNOWN_CA" in e["error"] for e in refused), mine


@pytest.mark.parametrize("host", ("h2", "h3"))
def test_python_requests_reaches_the_channel_through_the_proxy(lab, host):
    vars_ = labmod.lab_vars(lab)
    script = (
        "import requests, sys; p = sys.argv[1]; u = sys.argv[2]; a = (sys.argv[4], sys.argv[5]);"
        "print(requests.get(u, proxies={'http': p}, auth=a, timeout=5).status_code,"
        " requests.get(u, proxies={'http': sys.argv[3]}, auth=a, timeout=5).status_code,"
        " requests.get(u, proxies={'http': p}, timeout=5).status_code)"
    )
    proc = ssh(lab, host, "python3 -c %s %s %s %s %s %s" % (
        shlex.quote(script), shlex.quote(vars_["lab_proxy_url_with_credentials"]),
        shlex.quote(vars_["lab_channel_repodata_url"]), shlex.quote(vars_["lab_proxy_url"]),
        shlex.quote(vars_["lab_channel_login"]), shlex.quote(vars_["lab_channel_password"])))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["200", "407", "401"]


def test_channel_refuses_connections_that_squid_did_not_open(lab):
    """Even from the controller namespace, with the right credentials: only squid's uid gets an answer."""
    vars_ = labmod.lab_vars(lab)
    url = "http://127.0.0.1:%d/%s/noarch/repodata.json" % (labmod.CHANNEL_PORT, labmod.CHANNEL_NAME)
    proc = subprocess.run(labmod.in_ns(lab["prefix"] + "-ctl", "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                                       "--max-time", "5", "--user",
                                       "%s:%s" % (vars_["lab_channel_login"], vars_["lab_channel_password"]), url),
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.stdout == "403", proc.stdout + proc.stderr
    # The same over HTTPS, the certificate trusted.
    tls_url = "https://%s:%d/%s/noarch/repodata.json" % (labmod.CHANNEL_HOST, labmod.CHANNEL_TLS_PORT, labmod.CHANNEL_NAME)
    proc = subprocess.run(labmod.in_ns(lab["prefix"] + "-ctl", "curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}",
                                       "--max-time", "5", "--cacert", vars_["lab_channel_ca"], "--resolve",
                                       "%s:%d:127.0.0.1" % (labmod.CHANNEL_HOST, labmod.CHANNEL_TLS_PORT), "--user",
                                       "%s:%s" % (vars_["lab_channel_login"], vars_["lab_channel_password"]), tls_url),
                          capture_output=True, text=True, timeout=30, check=False)
    assert proc.stdout == "403", proc.stdout + proc.stderr


@pytest.mark.parametrize("host", HOSTS)
def test_real_conda_runs_as_each_account_where_the_python_matches(lab, host):
    """h1 sees the machine's venv, h2 (same Python) has it bound read-only, h3 (another Python) has none."""
    vars_ = labmod.lab_vars(lab)
    if not vars_["lab_real_conda"]:
        pytest.skip(vars_["lab_real_conda_skip"])
    conda = vars_["lab_real_conda"]
    if host == "h3":
        assert host not in vars_["lab_real_conda_hosts"]
        return
    assert host in vars_["lab_real_conda_hosts"]
    for user in labmod.USERS:
        proc = ssh(lab, host, "%s --version && touch %s/x" % (shlex.quote(conda), shlex.quote(os.path.dirname(conda))),
                   user=user)
        assert proc.stdout.startswith("conda 26."), proc.stdout + proc.stderr
        assert proc.returncode != 0  # not writable by the accounts
    if host == "h2":
        proc = ssh(lab, host, "touch %s/x" % shlex.quote(os.path.dirname(conda)))
        assert proc.returncode != 0 and "Read-only file system" in proc.stderr, proc.stderr


def test_down_leaves_no_namespace_mount_or_process(tmp_path, lab_available):
    """A lab of its own, with a stray process started over SSH, is gone entirely after ``down``."""
    state_dir = str(tmp_path / "lab")
    state = labmod.up(state_dir)
    try:
        stray = ssh(state, "h2", "setsid sleep 300 </dev/null >/dev/null 2>&1 & echo $!")
        assert stray.returncode == 0, stray.stderr
        stray_pid = int(stray.stdout.split()[-1])
        stray_start = labmod.proc_starttime(stray_pid)
        assert stray_start is not None
        namespaces = list(state["namespaces"])
        assert set(namespaces) <= set(labmod.netns_list())
    finally:
        report = labmod.down(state_dir)

    assert report["leftovers"] == []
    assert not set(namespaces) & set(labmod.netns_list())
    assert not [n for n in labmod.netns_list() if n.startswith(state["prefix"] + "-")]
    with open("/proc/mounts") as handle:
        mounts = handle.read()
    assert state["prefix"] not in mounts and state["run_dir"] not in mounts
    assert labmod.mount_namespaces_holding(state["run_dir"]) == []
    for record in state["processes"]:
        assert labmod.proc_starttime(record["pid"]) != record["starttime"], record
    assert labmod.proc_starttime(stray_pid) != stray_start  # gone (or an unreaped zombie of init)
    assert not os.path.exists(state["run_dir"])
    assert not os.path.exists(os.path.join(state_dir, "inventory.yml"))


def test_a_failed_up_tears_down_what_it_started(tmp_path, lab_available, monkeypatch):
    """Set-up failing after squid and the namespaces started leaves nothing behind."""
    def hosts_fail(lab, roots, pubkey):
        raise labmod.LabError("injected failure while starting the hosts")

    monkeypatch.setattr(labmod, "_hosts", hosts_fail)
    state_dir = str(tmp_path / "lab")
    with pytest.raises(labmod.LabError, match="injected"):
        labmod.up(state_dir)
    with open(os.path.join(state_dir, "state.json")) as handle:
        state = json.load(handle)
    assert {r["role"] for r in state["processes"]} == {"channel", "squid"}
    assert labmod.leftovers(state["prefix"], state["run_dir"], state["processes"]) == []


def test_up_and_down_remove_leftovers_of_an_earlier_run_with_the_same_prefix(tmp_path, lab_available):
    """An earlier run whose state file is lost is cleaned by prefix: by the next ``up`` and by ``down``."""
    prefix = "cflt" + labmod.default_prefix(str(tmp_path))[3:]
    first = labmod.up(str(tmp_path / "first"), prefix=prefix)
    try:
        second = labmod.up(str(tmp_path / "second"), prefix=prefix)  # first's state dir is never used again
        assert all(labmod.proc_starttime(r["pid"]) != r["starttime"] for r in first["processes"])
        assert all(labmod.proc_starttime(r["pid"]) == r["starttime"] for r in second["processes"])
    finally:
        report = labmod.down(None, prefix=prefix)
    assert report["leftovers"] == []
    assert sorted(report["namespaces_deleted"]) == sorted(second["namespaces"])
    assert labmod.leftovers(prefix, first["run_dir"], first["processes"] + second["processes"]) == []
