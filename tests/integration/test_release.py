# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Release hygiene: the built tarball installs offline and works from the installed copy, not the checkout.

Also: changelog fragments lint, the execution environment file passes ansible-builder's own schema check
(`ansible-builder create`, no image build), and the example playbooks parse against the installed collection.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
VENV = Path(sys.prefix) if (Path(sys.prefix) / "bin" / "ansible-galaxy").exists() else REPO / ".venv"
BIN = VENV / "bin"
VERSION = yaml.safe_load((REPO / "galaxy.yml").read_text(encoding="utf-8"))["version"]

pytestmark = pytest.mark.slow


def _run(args, cwd, env=None, timeout=300):
    result = subprocess.run([str(a) for a in args], cwd=str(cwd), env=env, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, "%s\n%s\n%s" % (args, result.stdout[-4000:], result.stderr[-4000:])
    return result


def _isolated_env(collections_path: Path, home: Path) -> dict:
    """Only the install dir holds condafleet.proxy; Galaxy points at a closed loopback port so any fetch fails."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(
        ANSIBLE_COLLECTIONS_PATH=str(collections_path),
        ANSIBLE_GALAXY_SERVER="http://127.0.0.1:9/",
        ANSIBLE_LOCAL_TEMP=str(home / "tmp"),
        ANSIBLE_REMOTE_TEMP=str(home / "remote-tmp"),
        ANSIBLE_HOME=str(home / "ansible-home"),
        ANSIBLE_NOCOLOR="1",
        PATH="%s:%s" % (BIN, os.environ.get("PATH", "")),
    )
    return env


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """Build the tarball from the checkout and install it into a fresh collections path."""
    base = tmp_path_factory.mktemp("release")
    dist, install, work = base / "dist", base / "installed", base / "work"
    for d in (dist, install, work):
        d.mkdir()
    env = _isolated_env(install, base)
    _run([BIN / "ansible-galaxy", "collection", "build", REPO, "--output-path", dist], cwd=work, env=env)
    tarball = dist / ("condafleet-proxy-%s.tar.gz" % VERSION)
    assert tarball.is_file()
    _run([BIN / "ansible-galaxy", "collection", "install", tarball, "-p", install], cwd=work, env=env)
    return {"tarball": tarball, "install": install, "work": work, "env": env,
            "tree": install / "ansible_collections" / "condafleet" / "proxy"}


def test_tarball_ships_the_collection_and_nothing_generated(installed):
    with tarfile.open(installed["tarball"]) as tar:
        names = set(tar.getnames())
    manifest = json.loads(tar_member(installed["tarball"], "MANIFEST.json"))
    assert manifest["collection_info"]["namespace"] == "condafleet"
    assert manifest["collection_info"]["version"] == VERSION
    for needed in ("plugins/modules/condarc_proxy.py", "plugins/modules/env_proxy.py",
                   "plugins/modules/netrc_entry.py", "plugins/module_utils/_fileio.py", "meta/runtime.yml",
                   "docs/docsite/extra-docs.yml"):
        assert needed in names, needed
    for name in names:
        assert not name.startswith((".venv", "collections/", "docs/build", "tests/output", ".git/")), name
        assert "__pycache__" not in name, name


def tar_member(tarball: Path, name: str) -> str:
    with tarfile.open(tarball) as tar:
        return tar.extractfile(name).read().decode("utf-8")


def test_galaxy_lists_only_the_installed_copy(installed):
    listing = _run([BIN / "ansible-galaxy", "collection", "list", "condafleet.proxy", "--format", "json"],
                   cwd=installed["work"], env=installed["env"]).stdout
    found = json.loads(listing)
    paths = [path for path, colls in found.items() if "condafleet.proxy" in colls]
    assert paths == [str(installed["install"] / "ansible_collections")], found
    assert found[paths[0]]["condafleet.proxy"]["version"] == VERSION


PLAYBOOK = """\
- name: Use condafleet.proxy from the installed tarball, FQCNs only
  hosts: localhost
  connection: local
  gather_facts: false
  vars:
    home: "{{ sandbox }}/home"
  tasks:
    - name: Create the sandbox home
      ansible.builtin.file:
        path: "{{ home }}"
        state: directory
        mode: "0755"

    - name: .condarc proxy_servers
      condafleet.proxy.condarc_proxy:
        path: "{{ home }}/.condarc"
        http: http://proxy.corp.example:3128
        https: http://proxy.corp.example:3128
        bypass: [conda.corp.example]
        proxy_username: svc-conda
        proxy_password: "p@ss:w#rd"
      register: condarc

    - name: .netrc entry
      condafleet.proxy.netrc_entry:
        path: "{{ home }}/.netrc"
        machine: conda.corp.example
        login: svc-conda
        password: "channel secret"
      register: netrc

    - name: Environment variables in one explicit sh file
      condafleet.proxy.env_proxy:
        path: "{{ home }}/proxy.sh"
        format: sh
        http_proxy: http://proxy.corp.example:3128
        https_proxy: http://proxy.corp.example:3128
        no_proxy: [localhost, .corp.example]
      register: env

    - name: All three changed on the first run, none on the second
      ansible.builtin.assert:
        that:
          - condarc is changed == (first_run | bool)
          - netrc is changed == (first_run | bool)
          - env is changed == (first_run | bool)
"""


def _write_inventory(work: Path) -> Path:
    inventory = work / "inventory.ini"
    inventory.write_text("localhost ansible_connection=local ansible_python_interpreter=%s\n" % sys.executable,
                         encoding="utf-8")
    return inventory


def test_playbook_runs_from_the_installed_copy(installed, tmp_path):
    work, env = installed["work"], installed["env"]
    playbook = tmp_path / "release.yml"
    playbook.write_text(PLAYBOOK, encoding="utf-8")
    inventory = _write_inventory(tmp_path)
    sandbox = tmp_path / "sandbox"
    args = [BIN / "ansible-playbook", "-i", inventory, playbook, "-e", "sandbox=%s" % sandbox]
    first = _run(args + ["-e", "first_run=true", "-vvv"], cwd=work, env=env)

    # The modules shipped to the node came from the install dir, never from the checkout.
    used = {p for p in re.findall(r"Using module file (\S+)", first.stdout) if "condafleet" in p}
    assert used, first.stdout[-3000:]
    for path in used:
        assert path.startswith(str(installed["tree"])), path
        assert not path.startswith(str(REPO)), path
    assert {Path(p).name for p in used} >= {"condarc_proxy.py", "netrc_entry.py", "env_proxy.py"}
    # The password never shows, raw or percent-encoded, even at -vvv.
    for secret in ("p@ss:w#rd", "p%40ss%3Aw%23rd", "channel secret"):
        assert secret not in first.stdout + first.stderr

    condarc = yaml.safe_load((sandbox / "home" / ".condarc").read_text(encoding="utf-8"))
    assert condarc["proxy_servers"]["https"] == "http://svc-conda:p%40ss%3Aw%23rd@proxy.corp.example:3128"
    assert condarc["proxy_servers"]["https://conda.corp.example"] == ""
    assert oct((sandbox / "home" / ".netrc").stat().st_mode & 0o777) == "0o600"
    shell = subprocess.run(["sh", "-c", '. "$1" && printf %s "$https_proxy|$NO_PROXY"', "sh",
                            str(sandbox / "home" / "proxy.sh")], capture_output=True, text=True, check=True)
    assert shell.stdout == "http://proxy.corp.example:3128|localhost,.corp.example"

    # Idempotent from the installed copy too: the second run changes nothing.
    second = _run(args + ["-e", "first_run=false"], cwd=work, env=env)
    assert re.search(r"localhost\s+:\s+ok=\d+\s+changed=0\s", second.stdout), second.stdout[-2000:]


ROLE_PLAYBOOK = """\
- name: The role from the installed tarball, into a sandbox root
  hosts: localhost
  connection: local
  gather_facts: false
  roles:
    - role: condafleet.proxy.conda_proxy
      vars:
        conda_proxy_root: "{{ sandbox }}"
        conda_proxy_scope: system
        conda_proxy_os_family: Linux
        conda_proxy_methods: [condarc, env]
        conda_proxy_http: http://proxy.corp.example:3128
        conda_proxy_no_proxy: [localhost]
"""


def test_role_runs_from_the_installed_copy(installed, tmp_path):
    if not (installed["tree"] / "roles" / "conda_proxy" / "meta" / "argument_specs.yml").is_file():
        pytest.skip("the role condafleet.proxy.conda_proxy is not in this build")
    playbook = tmp_path / "role.yml"
    playbook.write_text(ROLE_PLAYBOOK, encoding="utf-8")
    sandbox = tmp_path / "root"
    sandbox.mkdir()
    result = _run([BIN / "ansible-playbook", "-i", _write_inventory(tmp_path), playbook,
                   "-e", "sandbox=%s" % sandbox, "-vvv"], cwd=installed["work"], env=installed["env"])
    used = {p for p in re.findall(r"Using module file (\S+)", result.stdout) if "condafleet" in p}
    assert used and all(p.startswith(str(installed["tree"])) for p in used), used
    condarc = yaml.safe_load((sandbox / "etc" / "conda" / ".condarc").read_text(encoding="utf-8"))
    assert condarc["proxy_servers"]["http"] == "http://proxy.corp.example:3128"


def test_examples_parse_against_the_installed_collection(installed, tmp_path):
    playbooks = [REPO / "examples" / "ansible-pull" / "local.yml", REPO / "examples" / "site.yml"]
    for playbook in playbooks:
        assert playbook.is_file(), playbook
        _run([BIN / "ansible-playbook", "--syntax-check", "-i", REPO / "examples" / "inventory" / "hosts.yml",
              playbook], cwd=installed["work"], env=installed["env"])
    # The fleet ansible.cfg is valid and sets what the docs say it sets.
    dump = _run([BIN / "ansible-config", "dump", "--only-changed", "-t", "all"], cwd=REPO / "examples",
                env=dict(installed["env"], ANSIBLE_CONFIG=str(REPO / "examples" / "ansible.cfg"))).stdout
    assert re.search(r"DEFAULT_FORKS\(.*\) = 50", dump), dump
    assert re.search(r"pipelining\(.*\) = True", dump, re.IGNORECASE), dump


def test_changelog_fragments_lint():
    _run([BIN / "antsibull-changelog", "lint"], cwd=REPO)


def test_execution_environment_passes_ansible_builder(installed, tmp_path):
    """ansible-builder validates the v3 schema and writes the build context; the tarball goes into it."""
    ee = tmp_path / "ee"
    (ee / "meta").mkdir(parents=True)
    (ee / "build").mkdir()
    shutil.copy2(REPO / "execution-environment.yml", ee)
    definition = yaml.safe_load((ee / "execution-environment.yml").read_text(encoding="utf-8"))
    assert definition["version"] == 3
    for key in ("galaxy", "python", "system"):
        shutil.copy2(REPO / definition["dependencies"][key], ee / definition["dependencies"][key])
    shutil.copy2(installed["tarball"], ee / "build")
    context = tmp_path / "context"
    _run([BIN / "ansible-builder", "create", "--file", ee / "execution-environment.yml", "--context", context,
          "--output-filename", "Containerfile"], cwd=ee)
    containerfile = (context / "Containerfile").read_text(encoding="utf-8")
    assert "FROM $EE_BASE_IMAGE AS base" in containerfile
    assert "ansible-galaxy collection install --offline --no-deps" in containerfile
    assert (context / "_build" / "condafleet" / installed["tarball"].name).is_file()
    assert "ansible.windows" in (context / "_build" / "requirements.yml").read_text(encoding="utf-8")
    assert "pywinrm" in (context / "_build" / "requirements.txt").read_text(encoding="utf-8")

    # A broken definition is refused by the same check.
    definition["dependencies"]["no_such_key"] = "x"
    (ee / "execution-environment.yml").write_text(yaml.safe_dump(definition), encoding="utf-8")
    broken = subprocess.run([str(BIN / "ansible-builder"), "create", "--file", str(ee / "execution-environment.yml"),
                             "--context", str(tmp_path / "context2")], cwd=str(ee), capture_output=True, text=True,
                            timeout=120, check=False)
    assert broken.returncode != 0
    assert "no_such_key" in broken.stdout + broken.stderr
