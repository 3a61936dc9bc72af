# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The documentation site builds (antsibull-docs lint + Sphinx with warnings fatal), and a broken reference fails it.

The real build script (scripts/build-docs.sh, what `make docs` runs) runs against a scratch copy of the checkout,
so parallel workers never share docs/build and a deliberately broken page never touches the real tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# The venv running pytest (make test), else the checkout's.
VENV = Path(sys.prefix) if (Path(sys.prefix) / "bin" / "antsibull-docs").exists() else REPO / ".venv"
MODULES = ["conda_proxy", "condarc_proxy", "env_proxy", "netrc_entry", "conda_proxy_info"]
GUIDES = ["quickstart", "method_condarc", "method_env", "method_netrc", "os_notes", "troubleshooting",
          "hardening", "large_fleets", "fleet_report", "auth_proxy", "security", "lockdown", "performance"]

pytestmark = pytest.mark.slow


def _checkout_copy(tmp_path: Path) -> Path:
    """What the build script reads: the collection's content (linked) and docs/ + the script (copied)."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    for entry in ("galaxy.yml", "README.md", "COPYING", "LICENSES", "meta", "plugins", "roles", "changelogs"):
        if (REPO / entry).exists():
            os.symlink(REPO / entry, repo / entry)
    (repo / "docs").mkdir()
    shutil.copytree(REPO / "docs" / "docsite", repo / "docs" / "docsite")
    shutil.copytree(REPO / "docs" / "intersphinx", repo / "docs" / "intersphinx")
    shutil.copy2(REPO / "scripts" / "build-docs.sh", repo / "scripts" / "build-docs.sh")
    return repo


def _build(repo: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, VENV=str(VENV))
    env.pop("ANSIBLE_COLLECTIONS_PATH", None)
    return subprocess.run(
        ["bash", str(repo / "scripts" / "build-docs.sh"), *args],
        env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300, check=False,
    )


def test_site_builds_with_every_page(tmp_path):
    repo = _checkout_copy(tmp_path)
    result = _build(repo)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "build succeeded" in output and "warning" not in output.lower().split("build succeeded")[-1]

    html = repo / "docs" / "build" / "site" / "build" / "html"
    for module in MODULES:
        page = (html / f"{module}_module.html").read_text(encoding="utf-8")
        # Rendered from DOCUMENTATION, EXAMPLES and RETURN.
        assert f"condafleet.proxy.{module} module" in page
        assert "Examples" in page and "Return Values" in page
    role = (html / "conda_proxy_role.html").read_text(encoding="utf-8")
    assert "conda_proxy_http" in role and "conda_proxy_verify" in role  # from meta/argument_specs.yml
    for guide in GUIDES:
        assert (html / "docsite" / f"{guide}.html").is_file(), guide
    index = (html / "index.html").read_text(encoding="utf-8")
    assert "docsite/quickstart.html" in index
    # Cross references from the guides resolved into links to the generated pages.
    condarc_guide = (html / "docsite" / "method_condarc.html").read_text(encoding="utf-8")
    assert "condarc_proxy_module.html#ansible-collections-condafleet-proxy-condarc-proxy-module-parameter-bypass" in condarc_guide
    # Links into the Ansible docsite come from the offline inventory, not from a network fetch.
    env_page = (html / "env_proxy_module.html").read_text(encoding="utf-8")
    assert "https://docs.ansible.com/projects/ansible/devel/reference_appendices/common_return_values.html" in env_page


def test_unknown_option_in_a_guide_fails_the_lint(tmp_path):
    repo = _checkout_copy(tmp_path)
    page = repo / "docs" / "docsite" / "rst" / "method_condarc.rst"
    page.write_text(page.read_text(encoding="utf-8")
                    + "\nSee :ansopt:`condafleet.proxy.condarc_proxy#module:no_such_option`.\n", encoding="utf-8")
    result = _build(repo, "--lint-only")
    assert result.returncode != 0
    assert "no_such_option" in result.stdout + result.stderr


def test_broken_sphinx_reference_fails_the_build(tmp_path):
    repo = _checkout_copy(tmp_path)
    page = repo / "docs" / "docsite" / "rst" / "os_notes.rst"
    page.write_text(page.read_text(encoding="utf-8")
                    + "\nSee :ref:`ansible_collections.condafleet.proxy.docsite.no_such_page`.\n", encoding="utf-8")
    result = _build(repo)
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "no_such_page" in output


@pytest.mark.parametrize("module", MODULES)
def test_ansible_doc_renders_each_module(module):
    """`ansible-doc condafleet.proxy.<module>` works for users who never open the site."""
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(REPO / "collections"))
    if not (REPO / "collections" / "ansible_collections" / "condafleet" / "proxy").exists():
        pytest.skip("collections/ tree not created (pytest-ansible or `make collections` creates it)")
    result = subprocess.run([str(VENV / "bin" / "ansible-doc"), f"condafleet.proxy.{module}"], env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "EXAMPLES:" in result.stdout and "RETURN VALUES:" in result.stdout
