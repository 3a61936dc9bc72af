# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""`make demo` end to end: demo/run_demo.py as a user runs it (not through make), outcome asserted.

The demo builds and installs the collection, starts a real authenticating proxy and channel on
127.0.0.1, applies the three modules twice and proves the result from a fresh login shell: with real
conda (``conda search`` + ``conda create``) when ``../shared/real-conda`` is there, else with the
conda-like fetch; it says which. Here it runs with each proxy it can use (tinyproxy when installed;
proxy.py always, the no-root path), and once forced to the conda-like fetch.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

import realconda

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO = os.path.join(REPO, "demo", "run_demo.py")
# What `make demo` uses by default here: real conda exactly when ../shared/real-conda is beside the checkout.
AUTO_CONDA = "real conda" if realconda.installer() else "conda-like fetch"
MODULES = ("condarc_proxy", "env_proxy", "netrc_entry")
# Known secrets, hostile enough to show encoding: '@' and ':' in the channel password (netrc and the
# Basic header carry them as-is). tinyproxy's config syntax limits proxy passwords to [-a-z0-9._].
PROXY_PASSWORD = "px-demo.4711-secret"
CHANNEL_PASSWORD = "ch@n:nel-4711-secret"


def _runs():
    """(proxy, --conda): each proxy with the default choice, and the conda-like fallback once."""
    yield pytest.param("tinyproxy", "auto", marks=pytest.mark.skipif(
        not (shutil.which("tinyproxy") or os.path.exists("/usr/bin/tinyproxy")),
        reason="not installed: tinyproxy (run `make lab-deps` as root)"))
    yield pytest.param("proxypy", "auto")
    yield pytest.param("proxypy", "like")


def _pids_of(name: str) -> set[int]:
    """Pids of running processes whose command line mentions ``name`` (to prove nothing was left behind)."""
    pids = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as handle:
                if name.encode() in handle.read():
                    pids.add(int(entry))
        except OSError:
            continue
    return pids


@pytest.mark.slow
@pytest.mark.parametrize("proxy,conda", list(_runs()))
def test_demo_end_to_end(proxy, conda, tmp_path):
    missing = [m for m in MODULES if not os.path.exists(os.path.join(REPO, "plugins", "modules", m + ".py"))]
    if missing:
        pytest.skip("module(s) not written yet: %s" % ", ".join(missing))
    work = tmp_path / "work"
    outcome_file = tmp_path / "outcome.json"
    env = dict(os.environ, CONDAFLEET_DEMO_PROXY_PASSWORD=PROXY_PASSWORD,
               CONDAFLEET_DEMO_CHANNEL_PASSWORD=CHANNEL_PASSWORD)
    proc = subprocess.run([sys.executable, DEMO, "--workdir", str(work), "--proxy", proxy, "--conda", conda,
                           "--json", str(outcome_file)], env=env, capture_output=True, text=True, timeout=300, check=False)
    output = proc.stdout + proc.stderr
    outcome = json.loads(outcome_file.read_text())
    assert proc.returncode == 0, output
    assert outcome["ok"] is True

    # The installed tarball ran, twice: everything changed once, then nothing.
    assert outcome["tarball"].startswith("condafleet-proxy-")
    assert outcome["collections_path"] == str(work / "collections")
    first, second = outcome["recap"]
    assert (first["changed"], first["failed"]) == (3, 0)
    assert (second["changed"], second["failed"]) == (0, 0)

    # The proxy really demands credentials; the login shell got the variables and both clients got through.
    assert outcome["proxy"] == proxy
    assert outcome["proxy_without_credentials"] == "407"
    # The direct request is really made, with the right credentials, and refused because it is direct.
    assert outcome["direct_request"] == {"status": "403", "body": "direct access refused: use the proxy"}
    assert "-> HTTP 403 (direct access refused: use the proxy)" in proc.stdout
    assert outcome["shell"]["shell_http_proxy"] == "set"
    assert outcome["shell"]["shell_https_proxy"] == "set"
    assert outcome["shell"]["shell_no_proxy"] == "localhost,.corp.example"
    assert outcome["curl_status"] == "200"
    assert outcome["netrc_mode"] == "0600"

    # It says which conda it used, and that one worked through the proxy.
    used = AUTO_CONDA if conda == "auto" else "conda-like fetch"
    assert outcome["conda"]["kind"] == used
    if used == "real conda":
        assert "  conda      : REAL conda (conda 26." in proc.stdout
        assert (outcome["conda_search"], outcome["conda_create"], outcome["conda_installed"]) == ("0", "0", "yes")
        # curl once, conda at least once more (search; create may use its cache); the package through the proxy.
        assert outcome["proxy_log_hits"] >= 2 and outcome["channel_via_hits"] >= 2
        assert outcome["proxy_log_tarball_hits"] == 1 and outcome["channel_tarball_via_hits"] == 1
    else:
        assert "  conda      : conda-like fetch, not conda (" in proc.stdout
        assert outcome["python_result"] == {"status": 200, "proxied": ["http", "https"], "subdir": "noarch"}
        assert outcome["proxy_log_hits"] == 2 and outcome["channel_via_hits"] == 2
    # Every request the channel saw came through the proxy.
    assert outcome["channel_direct_hits"] == 0
    assert outcome["channel_via"] and all(via for via in outcome["channel_via"])

    # Summary printed, no secret anywhere in the output or the outcome, nothing left running or on disk.
    assert "condafleet.proxy demo: OK" in proc.stdout
    blob = output + outcome_file.read_text()
    for secret in (PROXY_PASSWORD, CHANNEL_PASSWORD, "ch%40n%3Anel-4711-secret"):
        assert secret not in blob
    assert outcome["proxy_stopped"] is True
    assert _pids_of(str(work)) == set()
    assert not work.exists()

    # The playbook runs without a warning (a module that forgets no_log on an option named *password*...).
    assert first["warnings"] == [] and second["warnings"] == []

    # What --keep leaves holds the passwords only in private files (the modules' own rule for an account's files
    # with a literal password, umask 077 for the demo's own), and the summary lists them; proxy.py's command line
    # is the one exposure left, and the summary says so instead of "warnings: none".
    held = outcome["secret_files"]
    for path in ("home/.condarc", "home/.profile", "home/.netrc", "demo-vars.json"):
        assert held.get(path) == "0600", held
    assert set(held.values()) == {"0600"}, held
    assert "  secrets    : held by <work>/demo-vars.json (0600), <work>/home/.condarc (0600)" in proc.stdout
    if proxy == "tinyproxy":
        assert held["tinyproxy/tinyproxy.conf"] == "0600"
        assert "  warnings   : none\n" in proc.stdout
    else:
        assert "  warnings   : proxy.py gets the demo proxy's password on its command line" in proc.stdout


def test_demo_refuses_a_non_empty_workdir(tmp_path):
    (tmp_path / "something").write_text("x")
    proc = subprocess.run([sys.executable, DEMO, "--workdir", str(tmp_path)], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 2
    assert "is not empty" in proc.stderr
    assert (tmp_path / "something").read_text() == "x"


def test_demo_says_when_real_conda_is_absent(monkeypatch):
    """Without ../shared/real-conda (a clone elsewhere) the demo falls back and names the missing script."""
    sys.path.insert(0, os.path.dirname(DEMO))
    try:
        import run_demo
    finally:
        sys.path.remove(os.path.dirname(DEMO))
    monkeypatch.setattr(realconda, "INSTALLER", "/nonexistent/shared/real-conda/install.sh")
    chosen = run_demo.choose_conda("auto")
    assert chosen["kind"] == "conda-like fetch"
    assert chosen["reason"] == "/nonexistent/shared/real-conda/install.sh is absent"
    with pytest.raises(run_demo.DemoError, match="--conda real needs /nonexistent/shared/real-conda/install.sh"):
        run_demo.choose_conda("real")


def _run_demo_module():
    sys.path.insert(0, os.path.dirname(DEMO))
    try:
        import run_demo
    finally:
        sys.path.remove(os.path.dirname(DEMO))
    return run_demo


def test_a_secret_readable_by_others_is_a_warning(tmp_path):
    """The summary never says "warnings: none" while a file holding a secret is readable by others."""
    run_demo = _run_demo_module()
    home = tmp_path / "home"
    home.mkdir()
    (home / ".profile").write_text("export http_proxy='http://fleet:%s@127.0.0.1:3128'\n" % "p%40ss")
    (home / ".profile").chmod(0o644)
    (home / ".netrc").write_text("machine 127.0.0.1 login reader password ch@n\n")
    (home / ".netrc").chmod(0o600)
    (home / ".bashrc").write_text("nothing secret\n")
    (home / ".bashrc").chmod(0o644)
    outcome = {"recap": [{"warnings": []}, {"warnings": []}], "proxy": "tinyproxy",
               "secret_files": run_demo.secret_files(str(tmp_path), run_demo.Secrets("p@ss", "ch@n"))}
    assert outcome["secret_files"] == {"home/.profile": "0644", "home/.netrc": "0600"}
    text = run_demo.summary(outcome)
    assert "  warnings   : home/.profile holds a secret and is readable by others (mode 0644)\n" in text
    assert "<work>/home/.netrc (0600), <work>/home/.profile (0644)" in text
    assert "p@ss" not in text and "ch@n" not in text
