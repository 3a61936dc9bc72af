# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The env_proxy module on real files in a sandbox root: check mode, idempotence, diff, absent, Darwin."""

from __future__ import annotations

import json
import os
import plistlib
import pwd
import stat
import subprocess
import sys

import pytest

from modulerun import call_module, run_adhoc, tree

PASSWORD = "p@ss:w'o\"rd $(touch /tmp/pwned) `id` ;|&\\ %41 é"
ENCODED = "p%40ss%3Aw%27o%22rd%20%24%28touch%20%2Ftmp%2Fpwned%29%20%60id%60%20%3B%7C%26%5C%20%2541%20%C3%A9"
ME = pwd.getpwuid(os.geteuid())


@pytest.fixture
def sandbox(tmp_path):
    """A root with a Debian-like /etc: /etc/environment empty, /etc/zsh/zshenv with content, fish and systemd dirs."""
    root = tmp_path / "root"
    (root / "etc/zsh").mkdir(parents=True)
    (root / "etc/zsh/zshenv").write_bytes(b"# /etc/zsh/zshenv: system-wide .zshenv file for zsh(1).\n")
    (root / "etc/environment").write_bytes(b"")
    (root / "etc/fish/conf.d").mkdir(parents=True)
    (root / "etc/profile.d").mkdir(parents=True)
    return root


def args(root, **extra):
    base = dict(http_proxy="http://proxy.example:3128", https_proxy="http://proxy.example:3128",
                no_proxy=["localhost", "127.0.0.1", ".corp.example"], proxy_username="fleet",
                proxy_password=PASSWORD, root=str(root), target_os="Linux", world_readable_password=True)
    base.update(extra)
    return base


def test_system_scope_check_apply_idempotent_absent(sandbox):
    original = tree(sandbox)
    checked = call_module("env_proxy", args(sandbox), check=True)
    assert checked["changed"] is True and not checked.get("failed")
    assert tree(sandbox) == original  # check mode writes nothing
    applied = call_module("env_proxy", args(sandbox))
    assert [f["path"] for f in applied["files"] if f["changed"]] == [f["path"] for f in checked["files"] if f["changed"]]
    paths = {os.path.relpath(f["path"], str(sandbox)): f for f in applied["files"]}
    assert set(paths) == {"etc/environment", "etc/profile.d/condafleet-proxy.sh", "etc/zsh/zshenv",
                          "etc/fish/conf.d/condafleet-proxy.fish", "etc/environment.d/90-condafleet-proxy.conf"}
    env = (sandbox / "etc/environment").read_text()
    assert 'http_proxy="http://fleet:%s@proxy.example:3128"' % ENCODED in env
    assert 'NO_PROXY="localhost,127.0.0.1,.corp.example"' in env
    assert applied["variables"]["HTTPS_PROXY"] == "http://fleet:********@proxy.example:3128"

    again = call_module("env_proxy", args(sandbox))
    assert again["changed"] is False and not any(f["changed"] for f in again["files"])
    assert call_module("env_proxy", args(sandbox), check=True)["changed"] is False

    removed_check = call_module("env_proxy", dict(state="absent", root=str(sandbox), target_os="Linux"), check=True)
    assert removed_check["changed"] is True
    removed = call_module("env_proxy", dict(state="absent", root=str(sandbox), target_os="Linux"))
    assert removed["changed"] is True
    after = tree(sandbox)
    # Created files are gone, pre-existing ones (the empty /etc/environment too) are back to their bytes;
    # only the directory the module created for environment.d stays.
    assert {k: v for k, v in after.items() if k != "etc/environment.d"} == original
    assert call_module("env_proxy", dict(state="absent", root=str(sandbox), target_os="Linux"))["changed"] is False


def test_skips_programs_not_installed(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "emptybin"))
    result = call_module("env_proxy", args(tmp_path, proxy_password=None, proxy_username=None))
    skipped = {os.path.basename(f["path"]): f["skipped"] for f in result["files"] if f.get("skipped")}
    assert skipped == {"zshenv": "zsh is not installed", "condafleet-proxy.fish": "fish is not installed",
                       "90-condafleet-proxy.conf": "systemd is not installed"}
    assert (tmp_path / "etc/environment").exists() and (tmp_path / "etc/profile.d/condafleet-proxy.sh").exists()


def test_diff_is_a_list_per_file_and_masks_the_password(sandbox):
    result = call_module("env_proxy", args(sandbox), diff=True)
    assert isinstance(result["diff"], list) and len(result["diff"]) == 5
    text = json.dumps(result)
    for secret in (PASSWORD, ENCODED, "p%40ss"):
        assert secret not in text
    assert "********" in result["diff"][0]["after"]


def test_user_scope_files_in_a_sandbox_home(tmp_path):
    home = tmp_path / ME.pw_dir.lstrip("/")
    home.mkdir(parents=True)
    (home / ".bash_login").write_bytes(b"echo hi\n")
    result = call_module("env_proxy", args(tmp_path, scope="user"))
    assert not result.get("failed"), result
    written = sorted(os.path.relpath(f["path"], str(home)) for f in result["files"] if not f.get("skipped"))
    assert written == [".bash_login", ".config/environment.d/90-condafleet-proxy.conf",
                       ".config/fish/conf.d/condafleet-proxy.fish", ".zshenv"]
    assert not (home / ".profile").exists()
    assert (home / ".bash_login").read_bytes().startswith(b"echo hi\n")


def test_explicit_path_and_format(tmp_path):
    target = tmp_path / "proxy.fish"
    result = call_module("env_proxy", dict(path=str(target), format="fish", case="lower",
                                           http_proxy="http://p:1", extra={"CF_X": "a'b\\c"}))
    assert result["changed"] and [f["path"] for f in result["files"]] == [str(target)]
    assert "set -gx CF_X 'a\\'b\\\\c'\n" in target.read_text()
    assert "HTTP_PROXY" not in target.read_text()


def test_broken_block_fails_naming_file_and_line_and_touches_nothing(sandbox):
    broken = b"A=1\n# BEGIN condafleet.proxy env_proxy\nhttp_proxy=x\n"
    (sandbox / "etc/environment").write_bytes(broken)
    original = tree(sandbox)
    result = call_module("env_proxy", args(sandbox))
    assert result["failed"]
    assert "etc/environment: line 2" in result["msg"]
    assert tree(sandbox) == original


def test_pam_env_hash_is_refused_before_any_write(sandbox):
    original = tree(sandbox)
    result = call_module("env_proxy", args(sandbox, extra={"CF_CA": "/etc/ssl/a#b.pem"}))
    assert result["failed"] and "etc/environment" in result["msg"] and "'#'" in result["msg"]
    assert tree(sandbox) == original


def test_backup_and_mode(sandbox):
    (sandbox / "etc/environment").write_bytes(b"LANG=C\n")
    result = call_module("env_proxy", args(sandbox, backup=True, mode="0640"))
    entry = [f for f in result["files"] if f["path"].endswith("etc/environment")][0]
    assert os.path.exists(entry["backup_file"])
    assert stat.S_IMODE(os.stat(entry["path"]).st_mode) == 0o640


def test_forced_darwin_with_root_and_the_launchd_script_sets_exact_values(tmp_path):
    root = tmp_path / "mac"
    hostile = "v'a\"l $(id) `id` ;\\ é"
    result = call_module("env_proxy", dict(target_os="Darwin", root=str(root), http_proxy="http://p:3128",
                                           proxy_username="u", proxy_password=PASSWORD, extra={"CF_X": hostile},
                                           world_readable_password=True))
    assert not result.get("failed"), result
    assert sorted(os.path.relpath(f["path"], str(root)) for f in result["files"]) == [
        "Library/LaunchAgents/com.condafleet.proxy.plist", "etc/profile", "etc/zshenv"]
    with open(root / "Library/LaunchAgents/com.condafleet.proxy.plist", "rb") as handle:
        agent = plistlib.load(handle)
    assert agent["RunAtLoad"] is True
    argv = agent["ProgramArguments"]
    # Run the agent's command with a fake launchctl first on PATH that records its argv.
    fakebin = tmp_path / "bin"
    fakebin.mkdir()
    record = tmp_path / "record.jsonl"
    (fakebin / "launchctl").write_text("#!%s\nimport json, sys\nwith open(%r, 'a') as f:\n"
                                       "    f.write(json.dumps(sys.argv[1:]) + '\\n')\n" % (sys.executable, str(record)))
    (fakebin / "launchctl").chmod(0o755)
    assert argv[0] == "/bin/sh"
    subprocess.run(argv, env={"PATH": "%s:/usr/bin:/bin" % fakebin}, check=True, timeout=30)
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    url = "http://u:%s@p:3128" % ENCODED
    assert calls == [["setenv", "http_proxy", url], ["setenv", "HTTP_PROXY", url], ["setenv", "CF_X", hostile]]
    assert call_module("env_proxy", dict(target_os="Darwin", root=str(root), http_proxy="http://p:3128",
                                         proxy_username="u", proxy_password=PASSWORD, world_readable_password=True,
                                         extra={"CF_X": hostile}))["changed"] is False
    gone = call_module("env_proxy", dict(state="absent", target_os="Darwin", root=str(root)))
    assert gone["changed"] and not (root / "Library/LaunchAgents/com.condafleet.proxy.plist").exists()
    assert not (root / "etc/zshenv").exists() and not (root / "etc/profile").exists()


def test_adhoc_diff_vvv_never_shows_the_password(sandbox):
    result, raw = run_adhoc("env_proxy", args(sandbox, extra={"CF_URL": "http://u:InUrlS3cret@h:1"}),
                            diff=True, verbosity=3)
    assert result["changed"] is True, raw
    for secret in (PASSWORD, ENCODED, "p%40ss%3Aw", "InUrlS3cret", "w'o"):
        assert secret not in raw, secret
    assert "********" in raw
    again, raw2 = run_adhoc("env_proxy", args(sandbox, extra={"CF_URL": "http://u:InUrlS3cret@h:1"}), check=True,
                            diff=True, verbosity=3)
    assert again["changed"] is False and PASSWORD not in raw2 and ENCODED not in raw2


def test_ansible_doc_renders():
    ansible_doc = os.path.join(os.path.dirname(sys.executable), "ansible-doc")
    out = subprocess.run([ansible_doc, "-j", "condafleet.proxy.env_proxy"], capture_output=True, text=True, timeout=120,
                         check=False)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)["condafleet.proxy.env_proxy"]["doc"]
    from ansible_collections.condafleet.proxy.plugins.module_utils._envfiles import argument_spec

    assert set(argument_spec()) <= set(doc["options"])
    text = subprocess.run([ansible_doc, "condafleet.proxy.env_proxy"], capture_output=True, text=True, timeout=120,
                          check=False)
    assert text.returncode == 0 and "EXAMPLES" in text.stdout


def test_user_option_files_and_new_dirs_owned_by_that_user(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("configuring another account needs root")
    nobody = pwd.getpwnam("nobody")
    result = call_module("env_proxy", dict(scope="user", user="nobody", root=str(tmp_path), target_os="Linux",
                                           http_proxy="http://p:1"))
    assert not result.get("failed"), result
    home = tmp_path / nobody.pw_dir.lstrip("/")
    written = [f["path"] for f in result["files"] if not f.get("skipped")]
    assert str(home / ".profile") in written
    for path in written + [str(home / ".config"), str(home / ".config/fish"), str(home)]:
        assert os.stat(path).st_uid == nobody.pw_uid, path


def test_absent_removes_the_directories_it_left_empty_in_the_home(tmp_path):
    """~/.config/fish/conf.d and ~/.config/environment.d were made for the managed files: they go with them;
    a directory holding anything else, and the home itself, stay."""
    home = tmp_path / ME.pw_dir.lstrip("/")
    home.mkdir(parents=True)
    (home / ".config").mkdir()
    (home / ".config" / "user-dirs.dirs").write_bytes(b"XDG_DESKTOP_DIR=$HOME\n")
    args = dict(scope="user", root=str(tmp_path), target_os="Linux", http_proxy="http://p:1")
    written = call_module("env_proxy", args)
    assert not written.get("failed") and (home / ".config/fish/conf.d").is_dir(), written
    gone = call_module("env_proxy", dict(args, state="absent"))
    removed = sorted(d for f in gone["files"] for d in f.get("directories_removed", []))
    assert not (home / ".config/fish").exists() and not (home / ".config/environment.d").exists(), gone
    assert str(home / ".config/fish/conf.d") in removed
    assert sorted(os.listdir(home / ".config")) == ["user-dirs.dirs"] and home.is_dir()


def test_symlink_into_a_file_the_user_does_not_own_is_refused(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to configure another account")
    nobody = pwd.getpwnam("nobody")
    home = tmp_path / nobody.pw_dir.lstrip("/")
    home.mkdir(parents=True)
    victim = tmp_path / "shadow-like"
    victim.write_bytes(b"root only\n")
    (home / ".profile").symlink_to(victim)
    result = call_module("env_proxy", dict(scope="user", user="nobody", root=str(tmp_path), target_os="Linux",
                                           http_proxy="http://p:1"))
    assert result["failed"] and "symlink" in result["msg"]
    assert victim.read_bytes() == b"root only\n"
    assert not (home / ".zshenv").exists()


def test_system_scope_with_a_literal_password_is_refused_unless_world_readable(sandbox):
    """Every account's login reads the system files: a password there is every local account's to read."""
    before = tree(sandbox)
    result = call_module("env_proxy", args(sandbox, world_readable_password=False))
    assert result["failed"] and "world_readable_password=true" in result["msg"] and "scope=user" in result["msg"]
    assert PASSWORD not in json.dumps(result) and ENCODED not in json.dumps(result)
    assert tree(sandbox) == before
    # Environment files hold values: a ${VAR} would be sent to the proxy as those characters.
    reference = call_module("env_proxy", args(sandbox, world_readable_password=False, proxy_password="${PROXY_PW}"))
    assert reference["failed"] and "${VAR} reference" in reference["msg"], reference
    assert tree(sandbox) == before


def test_user_scope_files_holding_a_password_are_private(tmp_path):
    """A literal password in an account's own files: 0600, also for a ~/.profile that was 0644."""
    home = tmp_path / ME.pw_dir.lstrip("/")
    home.mkdir(parents=True)
    (home / ".profile").write_bytes(b"# ~/.profile\n")
    os.chmod(home / ".profile", 0o644)
    result = call_module("env_proxy", args(tmp_path, scope="user", world_readable_password=False))
    assert not result.get("failed"), result
    written = [f for f in result["files"] if "skipped" not in f]
    assert written and all(stat.S_IMODE(os.stat(f["path"]).st_mode) == 0o600 for f in written), written
    no_password = call_module("env_proxy", args(tmp_path / "other", scope="user", proxy_password=None,
                                                proxy_username=None))
    assert all(stat.S_IMODE(os.stat(f["path"]).st_mode) == 0o644
               for f in no_password["files"] if "skipped" not in f)
