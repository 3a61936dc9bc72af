# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The conda_security role on this machine: ansible-playbook on localhost (local connection), everything in a temp dir.

The policy file goes below ``conda_security_root``; the prefix and the installer cache are paths in the temp dir
(conda writes its prefix into what it installs, so the installer takes no root). The installer is the test
installer of test_installer_behind_squid.py (a Miniconda-style self-extracting script installing the real conda of
``../shared/real-conda``), served directly on 127.0.0.1 (``conda_security_installer_proxy: ''``; the proxy path
is that file's business).

* converge, rerun with ``changed=0`` and no second download, check mode changing nothing (on a fresh host too);
* the system file read back by PyYAML, every key ``#!final``, the admin's own lines kept;
* the prefix audited clean, then a recorded file altered: the host fails, or with report-only the report names it;
* each step skippable (the policy-only run needs no real conda and runs everywhere);
* the audit skipped on a Windows (PowerShell) connection, where conda_integrity cannot run.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import shutil
import subprocess
import tempfile
import threading

import pytest
import yaml

from realconda import CONDA_VERSION, build_installer
from test_role_local import run_playbook

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REAL_CONDA = os.path.join(REPO, "..", "shared", "real-conda")
INSTALLER = "Testconda3-latest-Linux-x86_64.sh"
MIRROR = "https://repo.corp.example/conda-forge"
ADMIN = b"# site settings, kept by the role\nauto_update_conda: false\n"
EXPECTED_POLICY = {
    "channels": [MIRROR],
    "allowlist_channels": [MIRROR],
    "disallowed_packages": ["pycrypto"],
    "channel_priority": "strict",
    "safety_checks": "enabled",
    "extra_safety_checks": True,
    "exclude_newer": "7d",
}


def policy_vars(root: str) -> dict:
    return {
        "conda_security_root": root,
        "conda_security_channels": [MIRROR],
        "conda_security_allowlist_channels": [MIRROR],
        "conda_security_disallowed_packages": ["pycrypto"],
        "conda_security_channel_priority": "strict",
        "conda_security_exclude_newer": "7d",
    }


def play(tmp_path, params: dict, *args: str) -> tuple[dict, dict, str]:
    """The role once on localhost, then its report; returns (stats, conda_security_report or the failed task's
    result, raw output)."""
    playbook = tmp_path / "security.yml"
    playbook.write_text(yaml.safe_dump([{
        "name": "conda_security on a sandbox", "hosts": "localhost", "gather_facts": False,
        "roles": [dict({"role": "condafleet.proxy.conda_security"}, **params)],
        "tasks": [{"name": "Report", "ansible.builtin.debug": {"var": "conda_security_report"}}],
    }]))
    data, raw = run_playbook(playbook, *args)
    results = {entry["task"]["name"]: entry["hosts"].get("localhost", {}) for entry in data["plays"][0]["tasks"]}
    report = results.get("Report", {}).get("conda_security_report")
    if report is None:  # the host failed: the failed task's own result
        report = next((result for result in results.values() if result.get("failed")), {})
    return data["stats"]["localhost"], report, raw


def files_under(path: str) -> dict:
    tree = {}
    for dirpath, _dirs, names in os.walk(path):
        for name in names:
            full = os.path.join(dirpath, name)
            if os.path.isfile(full) and not os.path.islink(full):
                with open(full, "rb") as handle:
                    tree[os.path.relpath(full, path)] = handle.read()
    return tree


def read_policy(root: str) -> tuple[bytes, dict]:
    with open(os.path.join(root, "etc/conda/.condarc"), "rb") as handle:
        data = handle.read()
    return data, yaml.safe_load(data)


@pytest.fixture
def work():
    """A 0755 temp dir (the installer and the audit refuse what another account could swap)."""
    base = tempfile.mkdtemp(prefix="condafleet-security-", dir="/var/tmp")
    os.chmod(base, 0o755)
    os.makedirs(os.path.join(base, "root"))
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def served_installer():
    """The test installer on 127.0.0.1: (url, sha256, conda version, log of the paths requested)."""
    if not os.path.isfile(os.path.join(REAL_CONDA, "install.sh")):
        pytest.skip("real conda needed for the installer: ../shared/real-conda/install.sh is absent from this "
                    "checkout's parent (the policy-only test still runs)")
    base = tempfile.mkdtemp(prefix="condafleet-security-installers-", dir="/var/tmp")
    os.chmod(base, 0o755)
    sha256 = build_installer(os.path.join(base, INSTALLER))
    log = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 -- http.server's naming
            log.append(self.path)
            super().do_GET()

        def log_message(self, fmt, *args) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=base))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield "http://127.0.0.1:%d/%s" % (httpd.server_address[1], INSTALLER), sha256, CONDA_VERSION, log
    finally:
        httpd.shutdown()
        httpd.server_close()
        shutil.rmtree(base, ignore_errors=True)


def record_package_file(prefix: str) -> str:
    """A package record in conda-meta for one installed file, as conda writes it (the test installer records no
    files of its own); returns the file's path."""
    relative = "share/fleet-hello/hello.txt"
    data = b"hello from a recorded package\n"
    os.makedirs(os.path.join(prefix, "share/fleet-hello"))
    with open(os.path.join(prefix, relative), "wb") as handle:
        handle.write(data)
    digest = hashlib.sha256(data).hexdigest()
    record = {"name": "fleet-hello", "version": "1.0", "build": "0", "build_number": 0, "files": [relative],
              "paths_data": {"paths_version": 1, "paths": [
                  {"_path": relative, "path_type": "hardlink", "sha256": digest, "sha256_in_prefix": digest,
                   "size_in_bytes": len(data)}]}}
    with open(os.path.join(prefix, "conda-meta/fleet-hello-1.0-0.json"), "w") as handle:
        json.dump(record, handle)
    return os.path.join(prefix, relative)


@pytest.mark.slow
def test_install_policy_audit_converge_rerun_check_and_a_finding(tmp_path, work, served_installer):
    url, sha256, version, log = served_installer
    root, prefix, cache = os.path.join(work, "root"), os.path.join(work, "opt", "conda"), os.path.join(work, "cache")
    params = dict(policy_vars(root), conda_security_installer_url=url, conda_security_installer_sha256=sha256,
                  conda_security_version=version, conda_security_prefix=prefix,
                  conda_security_installer_cache_dir=cache, conda_security_installer_proxy="")

    # Check mode on a fresh host: it says what it would do, writes nothing, audits no prefix that is not there.
    stats, report, raw = play(tmp_path, params, "--check")
    assert stats["failures"] == 0, raw
    assert (report["install"], report["audit"], report["policy_changed"]) == ("install", "skipped", True), report
    assert not os.path.exists(prefix) and files_under(root) == {} and files_under(work) == {}
    assert not [path for path in log if path.endswith(INSTALLER)]  # nothing downloaded

    # Converge: installed from the verified installer, policy written, the prefix audited clean.
    stats, report, raw = play(tmp_path, params)
    assert stats["failures"] == 0 and stats["changed"] >= 2, raw
    assert report["install"] == "install" and report["version"] == version and report["downloaded"] is True, report
    assert report["policy_changed"] is True and report["policy_file"] == os.path.join(root, "etc/conda/.condarc")
    assert report["audit"] == "clean" and report["audit_counts"]["altered"] == 0, report
    conda = subprocess.run([os.path.join(prefix, "bin/conda"), "--version"], capture_output=True, text=True,
                           check=False)
    assert conda.returncode == 0 and version in conda.stdout + conda.stderr
    assert os.path.isfile(os.path.join(cache, sha256 + ".sh"))

    data, policy = read_policy(root)
    assert policy == EXPECTED_POLICY
    assert sorted(report["policy_final"]) == sorted(EXPECTED_POLICY)
    key_lines = [line for line in data.decode().splitlines() if line and not line.startswith(" ")]
    assert len(key_lines) == len(EXPECTED_POLICY) and all(line.endswith("#!final") for line in key_lines), data

    # Rerun: nothing changes, nothing is downloaded again; check mode neither.
    written = files_under(root)
    stats, report, raw = play(tmp_path, params)
    assert (stats["failures"], stats["changed"]) == (0, 0), raw
    assert (report["install"], report["downloaded"], report["audit"]) == ("keep", False, "clean"), report
    assert len([path for path in log if path.endswith(INSTALLER)]) == 1, log
    stats, report, raw = play(tmp_path, params, "--check")
    assert (stats["failures"], stats["changed"]) == (0, 0), raw
    assert report["audit"] == "clean" and files_under(root) == written

    # A recorded file altered in the prefix: the host fails and names it; report-only lists it in the report.
    hello = record_package_file(prefix)
    stats, report, raw = play(tmp_path, params)
    assert (stats["failures"], stats["changed"]) == (0, 0) and report["audit"] == "clean", raw
    with open(hello, "ab") as handle:
        handle.write(b"tampered\n")
    stats, failed, raw = play(tmp_path, params)
    assert stats["failures"] == 1 and hello in failed.get("altered", []), raw
    stats, report, raw = play(tmp_path, dict(params, conda_security_audit_report_only=True))
    assert stats["failures"] == 0 and report["audit"] == "findings", raw
    assert report["altered"] == [hello] and report["audit_counts"]["altered"] == 1, report


def test_each_step_skippable_policy_alone_keeps_the_admin_file(tmp_path, work):
    """Runs without real conda: no installer, no audit, the policy merged into an existing system file."""
    root = os.path.join(work, "root")
    os.makedirs(os.path.join(root, "etc/conda"))
    with open(os.path.join(root, "etc/conda/.condarc"), "wb") as handle:
        handle.write(ADMIN)
    params = dict(policy_vars(root), conda_security_install=False, conda_security_audit=False,
                  conda_security_prefix=os.path.join(work, "absent"))

    stats, report, raw = play(tmp_path, params, "--check")
    assert (stats["failures"], stats["changed"]) == (0, 1), raw
    assert read_policy(root)[0] == ADMIN  # check mode wrote nothing

    stats, report, raw = play(tmp_path, params)
    assert stats["failures"] == 0 and stats["changed"] == 1 and stats["skipped"] == 2, raw
    assert (report["install"], report["audit"], report["policy_changed"]) == ("skipped", "skipped", True), report
    assert not os.path.exists(os.path.join(work, "absent"))
    data, policy = read_policy(root)
    assert data.startswith(ADMIN) and policy == dict(EXPECTED_POLICY, auto_update_conda=False)

    stats, report, raw = play(tmp_path, params)
    assert (stats["failures"], stats["changed"]) == (0, 0) and report["policy_changed"] is False, raw
    stats, report, raw = play(tmp_path, params, "--check")
    assert (stats["failures"], stats["changed"]) == (0, 0), raw
    assert read_policy(root)[0] == data

    # Every step off: nothing runs, nothing is written.
    stats, report, raw = play(tmp_path, dict(params, conda_security_policy=False))
    assert (stats["failures"], stats["changed"], stats["skipped"]) == (0, 0, 3), raw
    assert report["policy_changed"] is None and read_policy(root)[0] == data


def test_audit_is_skipped_on_a_windows_connection_and_runs_elsewhere(tmp_path, work):
    """conda_integrity reads POSIX hosts only: a PowerShell shell (how the action plugins tell Windows) skips it."""
    params = {"conda_security_install": False, "conda_security_policy": False,
              "conda_security_prefix": os.path.join(work, "no-prefix")}
    stats, report, raw = play(tmp_path, params, "-e", "ansible_shell_type=powershell")
    assert (stats["failures"], stats["skipped"]) == (0, 3) and report["audit"] == "skipped", raw
    stats, failed, raw = play(tmp_path, params)
    assert stats["failures"] == 1 and "is not a conda prefix" in failed.get("msg", ""), raw
