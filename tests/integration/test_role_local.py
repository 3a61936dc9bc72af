# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The role on this machine, without root: ansible-playbook on localhost with a sandbox ``conda_proxy_root``.

The multi-host lab (test_molecule_lab.py) needs root; this runs everywhere and covers the role's own
logic per OS family: converge, idempotent rerun, check mode with zero changes, the files read back by
their consumers, and ``conda_proxy_state: absent`` returning every pre-existing file to its bytes.
"""

from __future__ import annotations

import json
import netrc
import os
import re
import plistlib
import subprocess
import sys

import pytest
import yaml

BIN = os.path.dirname(sys.executable)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PASSWORD = "p@ss w'o\"rd $(id)"
NETRC_PASSWORD = "n3trc pw"
HOME = os.path.expanduser("~")


def role_vars(root: str, family: str, **extra) -> dict:
    params = {
        "conda_proxy_root": root,
        "conda_proxy_os_family": family,
        "conda_proxy_http": "http://proxy.corp.example:3128",
        "conda_proxy_username": "fleet",
        "conda_proxy_password": PASSWORD,
        "conda_proxy_world_readable_password": True,
        "conda_proxy_no_proxy": ["localhost", ".corp.example"],
        "conda_proxy_bypass": ["mirror.corp.example"],
        "conda_proxy_lock": True,
        "conda_proxy_netrc_entries": [
            {"machine": "repo.corp.example", "login": "reader", "password": NETRC_PASSWORD},
            {"machine": "conda.corp.example", "login": "svc", "password": NETRC_PASSWORD},
        ],
    }
    params.update(extra)
    return params


def run_playbook(path, *args: str) -> tuple[dict, str]:
    """``ansible-playbook`` on localhost (local connection) with the JSON callback; returns (its report, raw output)."""
    cmd = [os.path.join(BIN, "ansible-playbook"), "-i", "localhost,", "-c", "local", str(path),
           "-e", "ansible_python_interpreter=%s" % sys.executable, *args]
    env = dict(os.environ, ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json", ANSIBLE_NOCOLOR="1",
               ANSIBLE_COLLECTIONS_PATH=os.path.join(REPO, "collections"), ANSIBLE_LOCALHOST_WARNING="0")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, check=False)
    return json.loads(proc.stdout[proc.stdout.index("{"):]), proc.stdout + proc.stderr


def play(tmp_path, params: dict, check: bool = False, *args: str) -> tuple[dict, str]:
    """Run the role once on localhost; returns (stats of localhost, raw output)."""
    playbook = tmp_path / "play.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": "Role on a sandbox root", "hosts": "localhost", "gather_facts": False,
        "roles": [dict({"role": "condafleet.proxy.conda_proxy"}, **params)],
    }]))
    data, raw = run_playbook(playbook, *(["--check"] if check else []), *args)
    return data["stats"]["localhost"], raw


def files_under(root: str) -> dict:
    tree = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            full = os.path.join(dirpath, name)
            with open(full, "rb") as handle:
                tree[os.path.relpath(full, root)] = (os.stat(full).st_mode & 0o777, handle.read())
    return tree


@pytest.fixture
def sandbox(tmp_path):
    """A root holding the connecting account's home and two files the role must give back byte for byte."""
    root = tmp_path / "root"
    os.makedirs(str(root) + HOME)
    (root / "etc").mkdir()
    (root / "etc" / "environment").write_bytes(b'PATH="/usr/local/bin:/usr/bin:/bin"\n')
    with open(str(root) + HOME + "/.netrc", "wb") as handle:
        handle.write(b"machine other.example login keep password me\n")
    os.chmod(str(root) + HOME + "/.netrc", 0o600)
    return str(root)


@pytest.mark.parametrize("family", ["", "Linux", "Darwin"], ids=["detected", "Linux", "Darwin"])
def test_converge_rerun_check_and_absent_on_a_sandbox_root(tmp_path, sandbox, family):
    original = files_under(sandbox)
    params = role_vars(sandbox, family)

    stats, raw = play(tmp_path, params)
    assert stats["failures"] == 0 and stats["changed"] > 0, raw
    assert PASSWORD not in raw and NETRC_PASSWORD not in raw
    stats, raw = play(tmp_path, params)
    assert (stats["failures"], stats["changed"]) == (0, 0), raw
    stats, raw = play(tmp_path, params, check=True)
    assert (stats["failures"], stats["changed"]) == (0, 0), raw

    # Read back by the consumers: conda's YAML loader, Python's netrc, the shells' files, launchd's plist.
    with open(os.path.join(sandbox, "etc/conda/.condarc")) as handle:
        condarc = yaml.safe_load(handle)
    assert condarc["proxy_servers"]["http"].startswith("http://fleet:p%40ss%20w%27o%22rd%20%24%28id%29@proxy")
    assert condarc["proxy_servers"]["http://mirror.corp.example"] == ""
    hosts = netrc.netrc(sandbox + HOME + "/.netrc").hosts
    assert hosts["repo.corp.example"] == ("reader", "", NETRC_PASSWORD) and "other.example" in hosts
    if family == "Darwin":
        with open(os.path.join(sandbox, "Library/LaunchAgents/com.condafleet.proxy.plist"), "rb") as handle:
            agent = plistlib.load(handle)
        assert "https_proxy" in " ".join(agent["ProgramArguments"])
    else:
        with open(os.path.join(sandbox, "etc/environment")) as handle:
            assert 'no_proxy="localhost,.corp.example"' in handle.read()

    # Removal needs only what names each .netrc entry: no login, no password.
    machines_only = [{"machine": entry["machine"]} for entry in params["conda_proxy_netrc_entries"]]
    stats, raw = play(tmp_path, dict(params, conda_proxy_state="absent", conda_proxy_netrc_entries=machines_only))
    assert stats["failures"] == 0 and stats["changed"] > 0, raw
    assert files_under(sandbox) == original


def test_one_module_execution_for_the_three_methods_and_a_broken_file_stops_them_all(tmp_path, sandbox):
    params = role_vars(sandbox, "")
    stats, raw = play(tmp_path, params, False, "-vvv")
    assert stats["failures"] == 0 and stats["changed"] > 0, raw
    # per host: the role's only module execution writes .condarc, the environment files and .netrc
    used = re.findall(r"Using module file (\S+)", raw)
    assert [os.path.basename(path) for path in used] == ["conda_proxy.py"], used

    # a .netrc that does not parse: the role fails and none of the other files change
    with open(sandbox + HOME + "/.netrc", "ab") as handle:
        handle.write(b"macdef\n")
    written = files_under(sandbox)
    stats, raw = play(tmp_path, dict(params, conda_proxy_http="http://other-proxy.corp.example:3128"))
    assert stats["failures"] == 1 and ".netrc: " in raw and "nothing was changed on this host" in raw, raw
    assert files_under(sandbox) == written


def mitogen_env() -> dict:
    """Ansible settings that run the play with Mitogen's mitogen_linear strategy (mitogen is in the dev pins)."""
    mitogen = pytest.importorskip("ansible_mitogen", reason="mitogen is not installed (requirements/dev.txt pins it)")
    return {"ANSIBLE_STRATEGY_PLUGINS": os.path.join(os.path.dirname(mitogen.__file__), "plugins", "strategy"),
            "ANSIBLE_STRATEGY": "mitogen_linear"}


def test_under_mitogen_converge_rerun_and_a_broken_file_fails_cleanly(tmp_path, sandbox, monkeypatch):
    """Mitogen runs modules inside a persistent interpreter on the host: the role must converge, rerun unchanged,
    and fail on a file it cannot parse with nothing changed, exactly as with the linear strategy."""
    for name, value in mitogen_env().items():
        monkeypatch.setenv(name, value)
    params = role_vars(sandbox, "")
    stats, raw = play(tmp_path, params, False, "-vvv")
    assert stats["failures"] == 0 and stats["changed"] > 0, raw
    # Mitogen replaces the local connection: none of its "ESTABLISH LOCAL CONNECTION" or "EXEC" lines at -vvv
    assert "ESTABLISH LOCAL CONNECTION" not in raw and "<localhost> EXEC" not in raw, raw[-3000:]
    stats, raw = play(tmp_path, params)
    assert (stats["failures"], stats["changed"]) == (0, 0), raw
    with open(sandbox + HOME + "/.netrc", "ab") as handle:
        handle.write(b"macdef\n")
    written = files_under(sandbox)
    stats, raw = play(tmp_path, dict(params, conda_proxy_http="http://other-proxy.corp.example:3128"))
    assert stats["failures"] == 1 and ".netrc: " in raw and "nothing was changed on this host" in raw, raw
    assert files_under(sandbox) == written
    assert PASSWORD not in raw and NETRC_PASSWORD not in raw


def test_check_mode_on_a_fresh_host_predicts_changes_and_writes_nothing(tmp_path, sandbox):
    original = files_under(sandbox)
    stats, raw = play(tmp_path, role_vars(sandbox, "Linux"), check=True)
    assert stats["failures"] == 0 and stats["changed"] > 0, raw
    assert files_under(sandbox) == original


def test_per_account_ca_under_a_sandbox_root_goes_to_the_home_in_the_sandbox(tmp_path, sandbox):
    """The module writes the CA itself: in user scope, ~/.conda of the account inside the sandbox root, named by
    ssl_verify as the path seen from inside it; absent removes both."""
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    original = files_under(sandbox)
    stats, raw = play(tmp_path, role_vars(sandbox, "Linux", conda_proxy_scope="user", conda_proxy_ca_bundle=str(ca)))
    assert stats["failures"] == 0, raw
    deployed = os.path.join(sandbox, HOME.lstrip("/"), ".conda", "condafleet-proxy-ca.pem")
    with open(deployed) as handle:
        assert handle.read() == ca.read_text()
    with open(os.path.join(sandbox, HOME.lstrip("/"), ".condarc")) as handle:
        assert "ssl_verify: %s/.conda/condafleet-proxy-ca.pem" % HOME in handle.read()
    stats, raw = play(tmp_path, role_vars(sandbox, "Linux", conda_proxy_scope="user", conda_proxy_ca_bundle=str(ca),
                                          conda_proxy_state="absent"))
    assert stats["failures"] == 0, raw
    assert files_under(sandbox) == original


def test_the_role_is_one_task_per_host(tmp_path, sandbox):
    """The performance shape (docs/performance.md): argument validation and one conda_proxy task, nothing skipped,
    nothing included; the Darwin layout comes from conda_proxy_os_family through that task alone."""
    playbook = tmp_path / "play.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": "Role on a sandbox root", "hosts": "localhost", "gather_facts": False,
        "roles": [dict({"role": "condafleet.proxy.conda_proxy"}, **role_vars(sandbox, "Darwin"))],
    }]))
    data, raw = run_playbook(playbook)
    tasks = [task["task"]["name"] for task in data["plays"][0]["tasks"]]
    assert len(tasks) == 2 and tasks[1].endswith("Put conda behind the proxy"), tasks
    assert os.path.exists(os.path.join(sandbox, "Library/LaunchAgents/com.condafleet.proxy.plist")), raw
