# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The collection as users meet it: ansible-doc renders each module; the built tarball installs offline.

Network access is made impossible for the galaxy commands (their proxy variables point at a closed
port on 127.0.0.1), so passing proves they work offline.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
import sys
import tarfile

import pytest

# Read-only modules that fail a host on findings (an audit, like assert): no state, and no _info suffix since
# they are not for gathering facts.
AUDITS = ("conda_integrity",)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
MODULES = sorted(
    os.path.splitext(os.path.basename(path))[0]
    for path in glob.glob(os.path.join(REPO, "plugins", "modules", "*.py"))
    if not os.path.basename(path).startswith("_")
)
# What must never end up in the tarball (local state, caches, the symlink tree back into the checkout).
NOT_SHIPPED = (".venv/", "collections/", "tests/output/", ".git/", ".pytest_cache/", ".hypothesis/", "__pycache__/")


def offline_env(**extra: str) -> dict:
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_HOME=extra.pop("ANSIBLE_HOME", os.environ.get("ANSIBLE_HOME", "")))
    if not env["ANSIBLE_HOME"]:
        del env["ANSIBLE_HOME"]
    closed = "http://127.0.0.1:9"  # discard port: nothing listens, any download attempt fails at once
    env.update(http_proxy=closed, https_proxy=closed, HTTP_PROXY=closed, HTTPS_PROXY=closed, no_proxy="", NO_PROXY="")
    env.update(extra)
    return env


def run(cmd: list[str], env: dict, cwd: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=180, check=False)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """Build the tarball from this checkout and install it into a fresh collections path, offline."""
    work = tmp_path_factory.mktemp("galaxy")
    env = offline_env(ANSIBLE_HOME=str(work / "ansible-home"))
    build = run([os.path.join(BIN, "ansible-galaxy"), "collection", "build", REPO, "--output-path", str(work / "dist")],
                env, cwd=str(work))
    assert build.returncode == 0, build.stdout + build.stderr
    tarballs = glob.glob(str(work / "dist" / "condafleet-proxy-*.tar.gz"))
    assert len(tarballs) == 1, build.stdout
    fresh = work / "fresh-collections"
    # Only the fresh path is configured: otherwise galaxy sees the checkout's collections/ tree (which
    # pytest-ansible put on ANSIBLE_COLLECTIONS_PATH) and says "already installed" without installing.
    env = dict(env, ANSIBLE_COLLECTIONS_PATH=str(fresh), ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="False")
    install = run([os.path.join(BIN, "ansible-galaxy"), "collection", "install", "--offline", "-p", str(fresh),
                   tarballs[0]], env, cwd=str(work))
    assert install.returncode == 0, install.stdout + install.stderr
    assert (fresh / "ansible_collections" / "condafleet" / "proxy" / "MANIFEST.json").is_file(), install.stdout
    return {"tarball": tarballs[0], "path": str(fresh), "env": env}


def test_tarball_ships_the_collection_and_nothing_local(installed):
    with tarfile.open(installed["tarball"]) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile("MANIFEST.json"))
    assert manifest["collection_info"]["namespace"] == "condafleet"
    assert manifest["collection_info"]["name"] == "proxy"
    assert "galaxy.yml" not in names  # build turns it into MANIFEST.json
    for required in ("meta/runtime.yml", "README.md", "FILES.json"):
        assert required in names
    for module in MODULES:
        assert "plugins/modules/%s.py" % module in names
    leaked = [name for name in names for bad in NOT_SHIPPED if (name + "/").startswith(bad) or "/" + bad in name + "/"]
    assert leaked == []


def test_no_placeholder_link_reaches_a_user(installed):
    """Galaxy and the docs site show repository/documentation/homepage/issues as links: real ones or none."""
    with tarfile.open(installed["tarball"]) as tar:
        info = json.load(tar.extractfile("MANIFEST.json"))["collection_info"]
    links = {key: info.get(key) for key in ("repository", "documentation", "homepage", "issues")}
    for key, url in links.items():
        assert url is None or not any(fake in url for fake in (".invalid", "example.", "localhost")), (key, url)


def test_installed_copy_lists_every_module(installed):
    if not MODULES:
        pytest.skip("no module in plugins/modules yet")
    env = dict(installed["env"], ANSIBLE_COLLECTIONS_PATH=installed["path"], ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="False")
    env.pop("ANSIBLE_COLLECTIONS_PATHS", None)  # pytest-ansible may set the old plural name, which would win
    proc = run([os.path.join(BIN, "ansible-doc"), "-t", "module", "-l", "condafleet.proxy"], env)
    assert proc.returncode == 0, proc.stderr
    listed = {line.split()[0] for line in proc.stdout.splitlines() if line.strip()}
    assert listed == {"condafleet.proxy.%s" % module for module in MODULES}
    assert "[WARNING]" not in proc.stderr, proc.stderr
    # ...and it is really the installed copy that answered, not the checkout.
    proc = run([os.path.join(BIN, "ansible-galaxy"), "collection", "list", "condafleet.proxy", "-p", installed["path"],
                "--format", "json"], env)
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout)
    assert list(found) == [os.path.join(installed["path"], "ansible_collections")]
    assert found[os.path.join(installed["path"], "ansible_collections")]["condafleet.proxy"]["version"]


@pytest.mark.parametrize("module", MODULES or [pytest.param("none", marks=pytest.mark.skip("no module yet"))])
def test_ansible_doc_renders(module):
    """`ansible-doc condafleet.proxy.<module>` renders, from the checkout (pytest-ansible's collections tree)."""
    env = dict(os.environ, ANSIBLE_NOCOLOR="1")
    fqcn = "condafleet.proxy.%s" % module
    proc = run([os.path.join(BIN, "ansible-doc"), "-t", "module", fqcn], env)
    assert proc.returncode == 0, proc.stderr
    assert "[WARNING]" not in proc.stderr and "ERROR" not in proc.stderr, proc.stderr
    text = proc.stdout
    for heading in ("OPTIONS", "ATTRIBUTES", "EXAMPLES", "RETURN VALUES"):
        assert heading in text, "%s has no %s section" % (fqcn, heading)
    assert fqcn in text
    proc = run([os.path.join(BIN, "ansible-doc"), "-t", "module", "--json", fqcn], env)
    doc = json.loads(proc.stdout)[fqcn]
    assert doc["doc"]["short_description"]
    assert doc["doc"]["options"]
    if not module.endswith("_info") and module not in AUDITS:
        assert "state" in doc["doc"]["options"]
    assert doc["examples"].count(fqcn) >= 1  # EXAMPLES use the FQCN
    assert doc["return"], "%s documents no return values" % fqcn


def _checkout(root):
    """A minimal checkout: galaxy.yml, a few top-level entries and scripts/link-collection.sh."""
    root.mkdir()
    (root / "galaxy.yml").write_text("namespace: condafleet\nname: proxy\nversion: 0.1.0\n")
    (root / "plugins" / "modules").mkdir(parents=True)
    (root / ".hidden").write_text("")
    (root / "scripts").mkdir()
    with open(os.path.join(REPO, "scripts", "link-collection.sh")) as src:
        (root / "scripts" / "link-collection.sh").write_text(src.read())
    return root


def _links(checkout) -> dict:
    tree = checkout / "collections" / "ansible_collections" / "condafleet" / "proxy"
    return {entry.name: os.readlink(entry) for entry in tree.iterdir()}


def test_link_collection_builds_the_tree_pytest_ansible_builds(tmp_path):
    """`make collections` and pytest-ansible must agree, and the refresh must see new/removed entries."""
    from pytest_ansible.units import _resolve_collections_dir

    theirs = _checkout(tmp_path / "theirs")
    _resolve_collections_dir(theirs, "condafleet", "proxy")
    ours = _checkout(tmp_path / "ours")
    subprocess.run(["bash", str(ours / "scripts" / "link-collection.sh")], check=True)
    expected = {name: target.replace(str(theirs), str(ours)) for name, target in _links(theirs).items()}
    assert _links(ours) == expected
    assert "collections" not in expected and ".hidden" in expected

    # pytest-ansible would not notice these (it only builds a missing tree); the refresh does.
    (ours / "roles").mkdir()
    (ours / ".hidden").unlink()
    subprocess.run(["bash", str(ours / "scripts" / "link-collection.sh")], check=True)
    links = _links(ours)
    assert links["roles"] == str(ours / "roles")
    assert ".hidden" not in links
    assert set(links) == {entry.name for entry in ours.iterdir()} - {"collections"}
