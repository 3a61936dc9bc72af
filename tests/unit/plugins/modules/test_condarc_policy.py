# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The condarc_policy module on real files: check mode, diff, idempotence, absent, scopes, bad input, bad files."""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import time
import uuid

import pytest
import yaml

from modulerun import call_module, run_adhoc

from ansible_collections.condafleet.proxy.plugins.module_utils import _condarc

EXISTING = b"# team settings\r\nchannels:\r\n  - conda-forge\r\nauto_update_conda: false  #!final\r\n"
POLICY = dict(allowlist_channels=["https://repo.example.com/conda-forge"], channel_priority="strict",
              safety_checks="enabled", disallowed_packages=["pycrypto"], exclude_newer="7d", final=True)


def sha(path) -> str | None:
    try:
        with open(str(path), "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()
    except FileNotFoundError:
        return None


def run(path, check=False, diff=False, **args):
    return call_module("condarc_policy", dict(args, path=str(path)), check=check, diff=diff)


@pytest.fixture(params=[True, False], ids=["pyyaml", "stdlib"])
def pyyaml(request, monkeypatch):
    monkeypatch.setattr(_condarc, "HAS_PYYAML", request.param)
    return request.param


@pytest.fixture
def account():
    """A real, throw-away local account with its home in a directory others can traverse (needs root)."""
    if os.geteuid() != 0 or not shutil.which("useradd"):
        pytest.skip("needs root and useradd to create a test account")
    base = tempfile.mkdtemp(prefix="condafleet-policy-")
    os.chmod(base, 0o755)
    name = "cfp%s" % uuid.uuid4().hex[:8]
    home = os.path.join(base, name)
    for _attempt in range(20):  # useradd takes a lock on /etc/passwd; a parallel worker may hold it
        proc = subprocess.run(["useradd", "-m", "-d", home, "-s", "/bin/sh", name], capture_output=True, text=True,
                              check=False)
        if proc.returncode == 0:
            break
        time.sleep(0.2)
    else:
        pytest.fail("useradd failed: %s" % proc.stderr)
    yield pwd.getpwnam(name)
    for _attempt in range(20):
        if subprocess.run(["userdel", name], capture_output=True, check=False).returncode == 0:
            break
        time.sleep(0.2)
    shutil.rmtree(base, ignore_errors=True)


def test_check_apply_idempotent_absent_restores_the_original_bytes(tmp_path, pyyaml):
    path = tmp_path / ".condarc"
    path.write_bytes(EXISTING)
    original = sha(path)
    checked = run(path, check=True, diff=True, **POLICY)
    assert checked["changed"] is True and not checked.get("failed") and sha(path) == original
    applied = run(path, diff=True, **POLICY)
    assert applied["changed"] is True and applied["diff"] == checked["diff"]
    assert applied["diff"]["before"] == EXISTING.decode()
    assert path.read_bytes() == EXISTING + (
        b"allowlist_channels:  #!final\r\n  - https://repo.example.com/conda-forge\r\n"
        b"disallowed_packages:  #!final\r\n  - pycrypto\r\n"
        b"channel_priority: strict  #!final\r\nsafety_checks: enabled  #!final\r\nexclude_newer: '7d'  #!final\r\n")
    assert applied["policy"] == {"allowlist_channels": ["https://repo.example.com/conda-forge"],
                                 "channel_priority": "strict", "safety_checks": "enabled",
                                 "disallowed_packages": ["pycrypto"], "exclude_newer": "7d"}
    assert applied["final"] == applied["keys"] == ["allowlist_channels", "disallowed_packages", "channel_priority",
                                                   "safety_checks", "exclude_newer"]
    assert run(path, **POLICY)["changed"] is False
    assert run(path, check=True, **POLICY)["changed"] is False
    partly_locked = dict(POLICY)
    partly_locked["final"] = ["safety_checks"]
    unlocked = run(path, **partly_locked)
    assert unlocked["changed"] is True and unlocked["final"] == ["safety_checks"]
    assert b"channel_priority: strict\r\n" in path.read_bytes()

    absent = dict(allowlist_channels=[], channel_priority="strict", safety_checks="enabled",
                  disallowed_packages=[], exclude_newer="x")
    assert run(path, check=True, state="absent", **absent)["changed"] is True and sha(path) != original
    removed = run(path, state="absent", **absent)
    assert removed["changed"] is True and removed["policy"] == {}
    assert sha(path) == original
    assert run(path, state="absent", **absent)["changed"] is False


def test_missing_file_is_created_and_deleted_again(tmp_path):
    path = tmp_path / ".condarc"
    result = run(path, channels=["https://repo.example.com/c"], diff=True)
    assert result["changed"] is True and result["diff"]["before_header"].endswith("(absent)")
    assert path.read_bytes() == b"channels:\n  - https://repo.example.com/c\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert run(path, state="absent", channels=[])["changed"] is True and not path.exists()


def test_absent_removes_exactly_the_keys_named(tmp_path):
    path = tmp_path / ".condarc"
    path.write_bytes(b"channels:\n  - a\nsafety_checks: enabled\nchannel_priority: strict\n")
    result = run(path, state="absent", safety_checks="enabled")
    assert result["changed"] is True and result["keys"] == ["safety_checks"]
    assert path.read_bytes() == b"channels:\n  - a\nchannel_priority: strict\n"


@pytest.mark.parametrize("args, message", [
    (dict(channel_alias="repo.example.com"), "needs a scheme"),
    (dict(channels=["repo.example.com/conda-forge"]), "without a scheme"),
    (dict(safety_checks="paranoid"), "safety_checks"),
    (dict(channel_priority="strictest"), "channel_priority"),
    (dict(exclude_newer="soon"), "exclude_newer"),
    (dict(custom_channels={"internal": "repo.example.com"}), "needs a scheme"),
    (dict(extra_safety_checks="maybe"), "extra_safety_checks"),
    (dict(channels=["a"], final=["allowlist_channels"]), "not set by this task"),
    (dict(), "at least one of"),
])
def test_bad_input_fails_clearly_and_changes_nothing(tmp_path, args, message):
    path = tmp_path / ".condarc"
    path.write_bytes(EXISTING)
    before = os.stat(path)
    result = run(path, **dict(args, channel_priority=args.get("channel_priority", "strict")) if args else {})
    assert result.get("failed") and message in result["msg"], result
    assert path.read_bytes() == EXISTING and os.stat(path).st_mtime_ns == before.st_mtime_ns
    assert sorted(os.listdir(tmp_path)) == [".condarc"]


@pytest.mark.parametrize("content, line", [
    (b"channels:\n\t- a\n", 2),
    (b"channels: [a\n", 1),
    (b"safety_checks: warn\nsafety_checks: enabled\n", 2),
])
def test_unparsable_file_fails_with_its_line_and_stays_untouched(tmp_path, pyyaml, content, line):
    path = tmp_path / ".condarc"
    path.write_bytes(content)
    result = run(path, **POLICY)
    assert result.get("failed") and "%s: line %d:" % (path, line) in result["msg"], result
    assert "nothing was changed" in result["msg"]
    assert path.read_bytes() == content


def test_scope_system_is_world_readable_and_locked(tmp_path, monkeypatch):
    system = tmp_path / "etc" / "conda"
    (tmp_path / "etc").mkdir()
    monkeypatch.setattr(_condarc, "SYSTEM_DIR", str(system))
    checked = call_module("condarc_policy", dict(scope="system", **POLICY), check=True)
    assert checked["changed"] is True and not system.exists()
    result = call_module("condarc_policy", dict(scope="system", **POLICY))
    assert result["path"] == str(system / ".condarc")
    assert stat.S_IMODE((system / ".condarc").stat().st_mode) == 0o644
    os.chmod(system / ".condarc", 0o600)
    fixed = call_module("condarc_policy", dict(scope="system", **POLICY))
    assert fixed["changed"] is True and stat.S_IMODE((system / ".condarc").stat().st_mode) == 0o644
    removed = call_module("condarc_policy", dict(scope="system", state="absent", **POLICY))
    assert removed["changed"] is True and not (system / ".condarc").exists()


def test_scope_prefix(tmp_path):
    env = tmp_path / "envs" / "build"
    (env / "conda-meta").mkdir(parents=True)
    result = call_module("condarc_policy", dict(scope="prefix", prefix=str(env), channel_priority="strict"))
    assert result["path"] == str(env / ".condarc")
    assert (env / ".condarc").read_bytes() == b"channel_priority: strict\n"
    missing = call_module("condarc_policy", dict(scope="prefix", prefix=str(tmp_path / "nope"), channel_priority="strict"))
    assert missing["failed"] and "does not exist" in missing["msg"] and not (tmp_path / "nope").exists()


def test_backup_and_mode(tmp_path):
    path = tmp_path / ".condarc"
    path.write_bytes(EXISTING)
    result = run(path, backup=True, mode="0640", safety_checks="enabled")
    assert result["changed"] is True and os.path.isfile(result["backup_file"])
    with open(result["backup_file"], "rb") as handle:
        assert handle.read() == EXISTING
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    os.chmod(path, 0o644)
    again = run(path, mode="0640", safety_checks="enabled")
    assert again["changed"] is True and again["attributes_changed"] == {"mode": "0640"}


def test_user_scope_for_another_account(account):
    result = call_module("condarc_policy", dict(user=account.pw_name, channels=["conda-forge"]))
    path = os.path.join(account.pw_dir, ".condarc")
    assert result["path"] == path and result["changed"] is True
    info = os.stat(path)
    assert (info.st_uid, info.st_gid) == (account.pw_uid, account.pw_gid)
    assert yaml.safe_load(open(path)) == {"channels": ["conda-forge"]}


def test_adhoc_through_the_ansible_cli(tmp_path):
    """The module as a user runs it: argument spec choices, check mode and the result through the real CLI."""
    path = tmp_path / ".condarc"
    result, _raw = run_adhoc("condarc_policy", dict(path=str(path), safety_checks="enabled", final=True), check=True,
                             diff=True)
    assert result["changed"] is True and not path.exists()
    result, _raw = run_adhoc("condarc_policy", dict(path=str(path), safety_checks="enabled", final=True))
    assert result["changed"] is True and path.read_bytes() == b"safety_checks: enabled  #!final\n"
    refused, _raw = run_adhoc("condarc_policy", dict(path=str(path), safety_checks="on"))
    assert refused.get("failed") and "safety_checks" in refused["msg"]
    assert path.read_bytes() == b"safety_checks: enabled  #!final\n"
