# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The role conda_proxy with conda_proxy_auth (issue 14): the corporate proxy behind a local authenticating proxy.

Real parts only: an MIT KDC and squid requiring Negotiate (tests/support/corpauth.py), a squid requiring Basic,
real px from the wheelhouse, real conda run by a non-root account from a fresh login shell, all inside a private
``/etc`` (the role's system files, the accounts, the service account and ``/etc/krb5.conf`` never touch the
machine). systemd is not running here: the role writes the unit, the test starts the unit's own ``ExecStart`` as
its user, then reruns the role with ``conda_proxy_verify``.
"""

from __future__ import annotations

import json
import os
import sys

import pytest

import realconda
from servers import AccountSquid, ChannelServer, free_port, require, stop_process
from test_local_auth_proxy import COLLECTIONS, Host, files_holding
# the fixtures of the module-level test, shared
from test_local_auth_proxy import host, venv_dir, wheelhouse  # noqa: F401 pylint: disable=unused-import

corpauth = pytest.importorskip("corpauth")

pytestmark = pytest.mark.slow

KERBEROS_PASSWORD = "Kerb3ros-pw@role"
BASIC_PASSWORD = "R0le-B@sic-pw"
PLAYBOOK = """\
- name: The role with a local authenticating proxy
  hosts: localhost
  gather_facts: false
  roles:
    - role: condafleet.proxy.conda_proxy
"""


def run_role(host: Host, role_vars: dict, check: bool = False, verbosity: int = 0) -> tuple[dict, str]:
    """The role as root through ansible-playbook in the private /etc; ``(task result, raw output)``."""
    playbook = os.path.join(host.base, "play.yml")
    with open(playbook, "w") as handle:
        handle.write(PLAYBOOK)
    extra = os.path.join(host.base, "vars.json")
    with open(extra, "w") as handle:
        json.dump(dict(role_vars, ansible_python_interpreter=sys.executable), handle)
    command = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,", "-c", "local",
               playbook, "-e", "@" + extra] + (["--check"] if check else []) + (["-" + "v" * verbosity] if verbosity else [])
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLLECTIONS, ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json",
               ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_NOCOLOR="1", ANSIBLE_LOCALHOST_WARNING="0")
    proc = host.etc.run(command, timeout=600, env=env)
    raw = proc.stdout + proc.stderr
    assert "{" in proc.stdout, raw[-3000:]
    data = json.loads(proc.stdout[proc.stdout.index("{"):])
    tasks = data["plays"][0]["tasks"]
    return tasks[-1]["hosts"]["localhost"], raw


def test_kerberos_role_points_conda_at_px_and_verify_tells_a_lost_ticket(host, wheelhouse, venv_dir, tmp_path):
    require(*corpauth.KRB5_PROGRAMS)
    require("/usr/sbin/squid", corpauth.NEGOTIATE_HELPER, "setpriv", "systemd-analyze")
    conda = realconda.require()
    alice = host.add_account("alice")
    root = str(tmp_path / "channel")
    os.makedirs(root)
    realconda.write_package_channel(root)
    port = free_port()
    with corpauth.Kdc() as kdc, corpauth.NegotiateSquid(kdc) as squid, ChannelServer(root) as channel:
        kdc.write_krb5_conf(host.etc.file("/etc/krb5.conf"))
        principal = kdc.add_user("alice", KERBEROS_PASSWORD)
        kdc.kinit_as(alice, "alice", KERBEROS_PASSWORD, wrap=host.etc.argv)
        channel_url = channel.url + "/fleet-channel"
        role_vars = dict(conda_proxy_http="http://localhost:%d" % squid.port, conda_proxy_scope="user",
                         conda_proxy_users=["alice"], conda_proxy_methods=["condarc", "env"],
                         conda_proxy_auth="kerberos", conda_proxy_auth_port=port, conda_proxy_auth_venv=venv_dir,
                         conda_proxy_auth_px_source=wheelhouse,
                         conda_proxy_verify_url=channel_url + "/noarch/repodata.json",
                         conda_proxy_verify_conda_executable=conda)

        predicted, raw = run_role(host, role_vars, check=True)
        assert predicted["changed"] and not predicted.get("failed"), raw[-3000:]
        assert not os.path.exists(os.path.join(alice.pw_dir, ".condarc")) and not os.path.exists(venv_dir)

        applied, raw = run_role(host, role_vars)
        assert applied["changed"] and not applied.get("failed"), raw[-3000:]
        proxy = applied["local_proxy"]
        assert proxy["proxy_url"] == "http://127.0.0.1:%d" % port and proxy["scope"] == "user"
        # the local proxy's warning reaches the task's result (no systemd here: the unit is not started)
        assert any("systemd is not running" in text for text in applied.get("warnings", [])), applied.get("warnings")
        condarc_path = os.path.join(alice.pw_dir, ".condarc")
        with open(condarc_path) as handle:
            condarc = handle.read()
        # px asks for alice's name and its own key (kept in its 0600 .env): the others cannot borrow her ticket
        with open(os.path.join(os.path.dirname(proxy["client_key_file"]), ".env")) as handle:
            key = handle.read().split("PX_CLIENT_PASSWORD='")[1].split("'")[0]
        assert proxy["client_username"] == "alice" and "client_key" not in proxy and "_condafleet_client_key" not in proxy
        assert "http://alice:%s@127.0.0.1:%d" % (key, port) in condarc and "localhost:%d" % squid.port not in condarc
        assert oct(os.stat(condarc_path).st_mode & 0o777) == "0o600"
        assert key not in raw

        again, raw = run_role(host, role_vars)
        assert again["changed"] is False and again["local_proxy"]["pip_ran"] is False, raw[-3000:]

        host.verify_unit(proxy["unit_path"], user_unit=True)
        service = host.run_unit(proxy["unit_path"], port, account="alice")
        host.add_account("mallory")
        borrowed = host.login("mallory", "curl -sS -o /dev/null -w '%%{http_code}' --noproxy '' --proxy "
                              "http://127.0.0.1:%d %s/noarch/repodata.json" % (port, channel_url))
        assert borrowed.stdout == "407", borrowed.stdout + borrowed.stderr
        verified, raw = run_role(host, dict(role_vars, conda_proxy_verify=True))
        assert not verified.get("failed") and verified["changed"] is False, raw[-3000:]
        assert verified["verify"][0]["probe"]["outcome"] == "ok"
        assert verified["verify"][0]["requests"]["repodata"]["proxy"].endswith("@127.0.0.1:%d" % port)

        search = host.login("alice", "CONDA_SOLVER=classic %s search --override-channels -c %s %s"
                            % (conda, channel_url, realconda.PACKAGE), timeout=180)
        assert search.returncode == 0 and realconda.PACKAGE in search.stdout, search.stdout + search.stderr
        assert {row["user"] for row in squid.entries() if "fleet-channel" in row["url"]} == {principal}
        assert files_holding([host.etc.path, alice.pw_dir, venv_dir], (KERBEROS_PASSWORD,)) == []

        # The ticket gone (and px reconnecting, as at the next login): verify names it, conda never prompts.
        kdc.kdestroy_as(alice, wrap=host.etc.argv)
        stop_process(service)
        host.run_unit(proxy["unit_path"], port, account="alice")
        failed, raw = run_role(host, dict(role_vars, conda_proxy_verify=True))
        assert failed.get("failed") is True, raw[-3000:]
        assert failed["verify"][0]["probe"]["outcome"] == "upstream_auth_failed"
        assert "klist" in failed["msg"]

        removed, raw = run_role(host, dict(role_vars, conda_proxy_state="absent"))
        assert removed["changed"] and not removed.get("failed"), raw[-3000:]
        assert not os.path.exists(proxy["unit_path"]) and not os.path.exists(os.path.join(alice.pw_dir, ".condarc"))


def test_basic_role_keeps_the_password_in_the_service_file_only(host, wheelhouse, venv_dir, tmp_path):
    require("/usr/sbin/squid", "setpriv", "systemd-analyze", "curl")
    conda = realconda.require()
    bob = host.add_account("bob")
    root = str(tmp_path / "channel")
    os.makedirs(root)
    realconda.write_package_channel(root)
    port = free_port()
    with AccountSquid({"fleet-px": BASIC_PASSWORD}) as squid, ChannelServer(root) as channel:
        channel_url = channel.url + "/fleet-channel"
        role_vars = dict(conda_proxy_http="http://127.0.0.1:%d" % squid.port, conda_proxy_username="fleet-px",
                         conda_proxy_password=BASIC_PASSWORD, conda_proxy_methods=["condarc", "env"],
                         conda_proxy_auth="basic", conda_proxy_auth_port=port, conda_proxy_auth_venv=venv_dir,
                         conda_proxy_auth_px_source=wheelhouse, conda_proxy_users=["bob"],
                         conda_proxy_verify_url=channel_url + "/noarch/repodata.json",
                         conda_proxy_verify_conda_executable=conda)
        applied, raw = run_role(host, role_vars, verbosity=3)  # -vvv: module arguments, connection commands
        assert applied["changed"] and not applied.get("failed"), raw[-3000:]
        assert "EXEC" in raw and BASIC_PASSWORD not in raw
        proxy = applied["local_proxy"]
        holding = files_holding([host.etc.path, bob.pw_dir, venv_dir], (BASIC_PASSWORD,))
        assert holding == [host.path(proxy["credential_path"])], holding
        info = os.stat(host.path(proxy["credential_path"]))
        assert oct(info.st_mode & 0o777) == "0o600"
        with open(host.etc.file("/etc/passwd")) as handle:
            service_line = [line for line in handle if line.startswith("condafleet-proxy:")]
        assert service_line and service_line[0].rstrip().endswith("/usr/sbin/nologin")
        assert info.st_uid == int(service_line[0].split(":")[2])
        with open(host.etc.file("/etc/conda/.condarc")) as handle:
            assert "http://127.0.0.1:%d" % port in handle.read()

        host.verify_unit(proxy["unit_path"], user_unit=False)
        host.run_unit(proxy["unit_path"], port)
        verified, raw = run_role(host, dict(role_vars, conda_proxy_verify=True))
        assert not verified.get("failed") and verified["changed"] is False, raw[-3000:]
        assert {row["user"] for row in squid.entries() if "fleet-channel" in row["url"]} == {"fleet-px"}
        search = host.login("bob", "CONDA_SOLVER=classic %s search --override-channels -c %s %s"
                            % (conda, channel_url, realconda.PACKAGE), timeout=180)
        assert search.returncode == 0 and realconda.PACKAGE in search.stdout, search.stdout + search.stderr


def test_pac_role_sends_one_channel_through_squid_and_the_other_direct(host, wheelhouse, venv_dir, tmp_path):
    """conda_proxy_pac_url: px follows the PAC file for every request conda makes; "localhost" goes through the
    Basic squid (logged with px's account), "127.0.0.1" directly (not in squid's log), both found by real conda."""
    require("/usr/sbin/squid", "setpriv", "systemd-analyze")
    conda = realconda.require()
    host.add_account("carol")
    roots = [str(tmp_path / name) for name in ("proxied", "direct")]
    for root in roots:
        os.makedirs(root)
        realconda.write_package_channel(root)
    port = free_port()
    with AccountSquid({"fleet-px": BASIC_PASSWORD}) as squid, ChannelServer(roots[0]) as proxied, \
            ChannelServer(roots[1]) as direct, \
            corpauth.PacServer(corpauth.pac_script({"localhost": "PROXY 127.0.0.1:%d" % squid.port})) as pac:
        through = "http://localhost:%d/fleet-channel" % proxied.port
        role_vars = dict(conda_proxy_pac_url=pac.pac_url, conda_proxy_auth="basic", conda_proxy_username="fleet-px",
                         conda_proxy_password=BASIC_PASSWORD, conda_proxy_methods=["condarc", "env"],
                         conda_proxy_auth_port=port, conda_proxy_auth_venv=venv_dir,
                         conda_proxy_auth_px_source=wheelhouse, conda_proxy_users=["carol"],
                         conda_proxy_verify_url=through + "/noarch/repodata.json",
                         conda_proxy_verify_conda_executable=conda)
        applied, raw = run_role(host, role_vars)
        assert applied["changed"] and not applied.get("failed"), raw[-3000:]
        host.run_unit(applied["local_proxy"]["unit_path"], port)
        verified, raw = run_role(host, dict(role_vars, conda_proxy_verify=True))
        assert not verified.get("failed") and verified["changed"] is False, raw[-3000:]
        for url in (through, "http://127.0.0.1:%d/fleet-channel" % direct.port):
            search = host.login("carol", "CONDA_SOLVER=classic %s search --override-channels -c %s %s"
                                % (conda, url, realconda.PACKAGE), timeout=180)
            assert search.returncode == 0 and realconda.PACKAGE in search.stdout, search.stdout + search.stderr
        logged = [row["url"] for row in squid.entries()]
        assert any(":%d/fleet-channel" % proxied.port in url for url in logged), logged
        assert not any(":%d/" % direct.port in url for url in logged), logged
        assert direct.requests and pac.requests
