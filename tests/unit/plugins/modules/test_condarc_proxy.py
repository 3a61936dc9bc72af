# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The condarc_proxy module on real files: check mode, diff, idempotence, absent, scopes, hostile files.

Runs the module in-process (``call_module``) for the many cases and through the real
``ansible`` CLI (``run_adhoc``) to prove that no password reaches the output.
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
import time
import uuid
from urllib.parse import quote, unquote, urlsplit

import pytest
import yaml

from modulerun import call_module, run_adhoc

from ansible_collections.condafleet.proxy.plugins.module_utils import _condarc

PASSWORD = "p@ss:w'o\"rd $(touch /tmp/pwned) `id` ;|&\\ %41 #/é"
ENCODED = quote(PASSWORD, safe="")
EXISTING = b"# team settings\r\nchannels:\r\n  - conda-forge\r\nauto_update_conda: false  #!final\r\n"


def sha(path) -> str | None:
    try:
        with open(str(path), "rb") as handle:
            return hashlib.sha256(handle.read()).hexdigest()
    except FileNotFoundError:
        return None


def leftovers(directory) -> list:
    """Temp files the write path could leave behind."""
    return [name for name in os.listdir(str(directory)) if name.endswith(".tmp") or name.startswith(".condarc.")]


def run(path, check=False, diff=False, **args):
    return call_module("condarc_proxy", dict(args, path=str(path)), check=check, diff=diff)


def assert_no_secret(text: str) -> None:
    for secret in (PASSWORD, ENCODED, "p@ss:w", "p%40ss", "pwned) `id`"):
        assert secret not in text


@pytest.fixture(params=[True, False], ids=["pyyaml", "stdlib"])
def pyyaml(request, monkeypatch):
    monkeypatch.setattr(_condarc, "HAS_PYYAML", request.param)
    return request.param


@pytest.fixture
def shared_dir():
    """A directory other accounts can traverse (pytest's tmp_path is private to root)."""
    path = tempfile.mkdtemp(prefix="condafleet-condarc-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def account(shared_dir):
    """A real, throw-away local account with its home in ``shared_dir`` (needs root)."""
    if os.geteuid() != 0 or not shutil.which("useradd"):
        pytest.skip("needs root and useradd to create a test account")
    name = "cfc%s" % uuid.uuid4().hex[:8]
    home = os.path.join(shared_dir, name)
    for _attempt in range(20):  # useradd takes a lock on /etc/passwd; a parallel worker may hold it
        proc = subprocess.run(["useradd", "-m", "-d", home, "-s", "/bin/sh", name], capture_output=True, text=True, check=False)
        if proc.returncode == 0:
            break
        time.sleep(0.2)
    else:
        pytest.fail("useradd failed: %s" % proc.stderr)
    os.chmod(home, 0o755)
    yield pwd.getpwnam(name)
    for _attempt in range(20):
        if subprocess.run(["userdel", name], capture_output=True, check=False).returncode == 0:
            break
        time.sleep(0.2)


def as_account(entry, module_args: dict, timeout: float = 60.0) -> dict:
    """Run the module in a forked child that has dropped to ``entry``'s uid/gid: a real non-root run."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 0
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)
            os.environ["HOME"] = entry.pw_dir
            result = call_module("condarc_proxy", module_args)
            os.write(write_fd, json.dumps(result).encode())
        except BaseException as exc:  # report anything to the parent
            os.write(write_fd, json.dumps({"child_error": repr(exc)}).encode())
            code = 1
        finally:
            os._exit(code)
    os.close(write_fd)
    deadline = time.monotonic() + timeout
    while True:
        done, _status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("module run as %s did not finish" % entry.pw_name)
        time.sleep(0.05)
    with os.fdopen(read_fd, "rb") as handle:
        return json.loads(handle.read() or b"{}")


# --------------------------------------------------------------------------------------------
# the main cycle


def test_check_apply_idempotent_absent_on_missing_file(tmp_path):
    path = tmp_path / ".condarc"
    args = dict(http="http://proxy.example:3128", https="http://proxy.example:3128", bypass=["repo.internal"])
    checked = run(path, check=True, diff=True, **args)
    assert checked["changed"] is True and not checked.get("failed")
    assert not path.exists()
    applied = run(path, diff=True, **args)
    assert applied["changed"] is True
    assert applied["diff"] == checked["diff"]  # check mode predicted exactly this
    assert applied["diff"]["before"] == "" and applied["diff"]["before_header"].endswith("(absent)")
    assert path.read_bytes() == applied["diff"]["after"].encode()
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert yaml.safe_load(path.read_bytes()) == {"proxy_servers": {
        "http": "http://proxy.example:3128", "https": "http://proxy.example:3128",
        "http://repo.internal": "", "https://repo.internal": ""}}
    assert applied["proxy_servers"]["http://repo.internal"] == ""
    again = run(path, diff=True, **args)
    assert again["changed"] is False
    assert run(path, check=True, **args)["changed"] is False

    removed_check = run(path, check=True, state="absent")
    assert removed_check["changed"] is True and path.exists()
    removed = run(path, state="absent", diff=True)
    assert removed["changed"] is True and not path.exists()
    assert removed["diff"]["after_header"].endswith("(absent)")
    assert removed["proxy_servers"] == {}
    assert run(path, state="absent")["changed"] is False


def test_present_then_absent_restores_original_bytes(tmp_path, pyyaml):
    path = tmp_path / ".condarc"
    path.write_bytes(EXISTING)
    original = sha(path)
    applied = run(path, http="http://p:3128", ssl_verify=False, final=True)
    assert applied["changed"] is True and applied["ssl_verify"] is False
    assert path.read_bytes() == EXISTING + b"proxy_servers:  #!final\r\n  http: http://p:3128\r\nssl_verify: false  #!final\r\n"
    assert run(path, http="http://p:3128", ssl_verify=False, final=True)["changed"] is False
    assert run(path, check=True, state="absent", ssl_verify=False)["changed"] is True
    assert sha(path) != original
    assert run(path, state="absent", ssl_verify=False)["changed"] is True
    assert sha(path) == original
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_password_is_encoded_masked_and_file_private(tmp_path):
    path = tmp_path / ".condarc"
    result = run(path, diff=True, http="http://proxy.example:3128", https="http://proxy.example:3128",
                 proxy_username="fleet", proxy_password=PASSWORD)
    assert result["changed"] is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    written = yaml.safe_load(path.read_bytes())["proxy_servers"]
    for url in written.values():
        assert unquote(urlsplit(url).password) == PASSWORD
        assert ENCODED in url
    text = json.dumps(result)
    assert_no_secret(text)
    assert "********" in result["diff"]["after"]
    assert result["proxy_servers"]["http"].endswith("@proxy.example:3128")


def test_password_reference_is_kept_and_file_not_private(tmp_path):
    path = tmp_path / ".condarc"
    run(path, https="http://proxy:3128", proxy_username="svc", proxy_password="${PROXY_PASS}")
    assert yaml.safe_load(path.read_bytes()) == {"proxy_servers": {"https": "http://svc:${PROXY_PASS}@proxy:3128"}}
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_readable_existing_file_with_password_becomes_private(tmp_path, capfd):
    """An account's .condarc holding a literal password is 0600 whatever mode it had; a mode the task asks for
    that others can read is honoured, with a warning."""
    path = tmp_path / ".condarc"
    path.write_bytes(b"channels: [a]\n")
    os.chmod(str(path), 0o644)
    result = run(path, http="http://proxy:3128", proxy_username="u", proxy_password="s3cret-pw")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert result["attributes_changed"]["mode"] == "0600"
    assert "readable by others" not in capfd.readouterr().err + json.dumps(result.get("warnings", []))
    loose = run(path, http="http://proxy:3128", proxy_username="u", proxy_password="s3cret-pw", mode="0644")
    warned = capfd.readouterr().err + json.dumps(loose.get("warnings", []))
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert "holds a proxy password and is readable by others (mode 0644" in warned
    assert "s3cret-pw" not in json.dumps(loose) + warned


def test_system_scope_with_a_literal_password_is_refused_unless_world_readable(tmp_path):
    """conda needs /etc/conda/.condarc readable by every account: a password there is everybody's."""
    refused = call_module("condarc_proxy", dict(scope="system", root=str(tmp_path), http="http://proxy:3128",
                                                proxy_username="u", proxy_password="s3cret-pw"))
    assert refused["failed"] and "PermissionError" in refused["msg"] and "world_readable_password" in refused["msg"]
    assert "s3cret-pw" not in json.dumps(refused) and not (tmp_path / "etc").exists()
    system = tmp_path / "etc/conda/.condarc"
    system.parent.mkdir(parents=True)
    system.write_bytes(b"channels: [a]\n")
    os.chmod(str(system), 0o600)  # made private by an earlier version: conda fails for every other account
    done = call_module("condarc_proxy", dict(scope="system", root=str(tmp_path), http="http://proxy:3128",
                                             proxy_username="u", proxy_password="s3cret-pw",
                                             world_readable_password=True))
    assert not done.get("failed") and stat.S_IMODE(system.stat().st_mode) == 0o644, done
    reference = call_module("condarc_proxy", dict(scope="system", root=str(tmp_path / "ref"), http="http://proxy:3128",
                                                  proxy_username="u", proxy_password="${PROXY_PW}"))
    assert not reference.get("failed") and reference["changed"], reference


def test_absent_removes_the_system_directory_it_left_empty(tmp_path):
    args = dict(scope="system", root=str(tmp_path), http="http://proxy:3128")
    assert call_module("condarc_proxy", args)["changed"]
    gone = call_module("condarc_proxy", dict(args, state="absent"))
    assert gone["changed"] and gone["directories_removed"] == [str(tmp_path / "etc/conda")]
    assert os.listdir(str(tmp_path / "etc")) == []
    (tmp_path / "etc/conda").mkdir()
    (tmp_path / "etc/conda/condarc.d").mkdir()
    assert call_module("condarc_proxy", args)["changed"]
    assert "directories_removed" not in call_module("condarc_proxy", dict(args, state="absent"))
    assert (tmp_path / "etc/conda/condarc.d").is_dir()


# --------------------------------------------------------------------------------------------
# every option


def test_scope_user_for_another_account_uses_its_home(account):
    result = call_module("condarc_proxy", dict(user=account.pw_name, http="http://p:1"))
    path = os.path.join(account.pw_dir, ".condarc")
    assert result["path"] == path and result["changed"] is True
    info = os.stat(path)
    assert (info.st_uid, info.st_gid) == (account.pw_uid, account.pw_gid)
    tilde = call_module("condarc_proxy", dict(user=account.pw_name, path="~/.config-condarc", http="http://p:1"))
    assert tilde["path"] == os.path.join(account.pw_dir, ".config-condarc")
    assert os.stat(tilde["path"]).st_uid == account.pw_uid


def test_scope_system_creates_the_directory(tmp_path, monkeypatch):
    system = tmp_path / "etc" / "conda"
    (tmp_path / "etc").mkdir()
    monkeypatch.setattr(_condarc, "SYSTEM_DIR", str(system))
    checked = call_module("condarc_proxy", dict(scope="system", http="http://p:1", final=True), check=True)
    assert checked["changed"] is True and not system.exists()
    result = call_module("condarc_proxy", dict(scope="system", http="http://p:1", final=True))
    assert result["path"] == str(system / ".condarc")
    assert stat.S_IMODE(system.stat().st_mode) == 0o755
    assert (system / ".condarc").read_bytes() == b"proxy_servers:  #!final\n  http: http://p:1\n"
    assert call_module("condarc_proxy", dict(scope="system", http="http://p:1", final=True))["changed"] is False


def test_scope_prefix(tmp_path):
    env = tmp_path / "envs" / "build"
    (env / "conda-meta").mkdir(parents=True)
    result = call_module("condarc_proxy", dict(scope="prefix", prefix=str(env), https="http://p:1"))
    assert result["path"] == str(env / ".condarc") and (env / ".condarc").exists()
    missing = call_module("condarc_proxy", dict(scope="prefix", prefix=str(tmp_path / "nope"), https="http://p:1"))
    assert missing["failed"] and "does not exist" in missing["msg"]
    assert not (tmp_path / "nope").exists()


def test_scope_and_path_are_mutually_exclusive(tmp_path):
    result = call_module("condarc_proxy", dict(scope="system", path=str(tmp_path / "x"), http="http://p:1"))
    assert result["failed"] and "mutually exclusive" in result["msg"]


@pytest.mark.parametrize("check", [False, True])
def test_missing_parent_directory_fails_clearly(tmp_path, check):
    path = tmp_path / "missing" / ".condarc"
    result = run(path, check=check, http="http://p:1")
    assert result["failed"] and "directory %s does not exist" % (tmp_path / "missing") in result["msg"]
    assert not (tmp_path / "missing").exists()


def test_servers_and_bypass(tmp_path):
    path = tmp_path / ".condarc"
    run(path, https="http://p:1", servers={"https://conda.anaconda.org": "http://fast:8080"}, bypass=["10.1.2.3"])
    assert yaml.safe_load(path.read_bytes())["proxy_servers"] == {
        "https": "http://p:1", "https://conda.anaconda.org": "http://fast:8080",
        "http://10.1.2.3": "", "https://10.1.2.3": ""}
    bad = run(path, https="http://p:1", bypass=[".corp.example"])
    assert bad["failed"] and "env_proxy" in bad["msg"]


def test_ssl_verify_values(tmp_path):
    path = tmp_path / ".condarc"
    ca = tmp_path / "corp-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    missing = run(path, ssl_verify=str(tmp_path / "nope.pem"))
    assert missing["failed"] and "does not exist on this host" in missing["msg"] and not path.exists()
    assert run(path, ssl_verify=str(ca))["changed"] is True
    assert yaml.safe_load(path.read_bytes()) == {"ssl_verify": str(ca)}
    assert run(path, ssl_verify="truststore")["ssl_verify"] == "truststore"
    assert run(path, ssl_verify="no")["ssl_verify"] is False
    assert yaml.safe_load(path.read_bytes()) == {"ssl_verify": False}
    assert run(path, ssl_verify=False)["changed"] is False
    # absent without naming ssl_verify keeps it
    assert run(path, state="absent")["changed"] is False and path.exists()


def test_backup(tmp_path):
    path = tmp_path / ".condarc"
    path.write_bytes(EXISTING)
    result = run(path, http="http://p:1", backup=True)
    assert result["backup_file"] and open(result["backup_file"], "rb").read() == EXISTING
    assert "backup_file" not in run(path, http="http://p:1", backup=True)


def test_mode_owner_group(tmp_path, account):
    path = tmp_path / ".condarc"
    run(path, http="http://p:1", mode="0640", owner=account.pw_name)
    info = path.stat()
    assert stat.S_IMODE(info.st_mode) == 0o640 and info.st_uid == account.pw_uid
    changed = run(path, http="http://p:1", mode="0600")
    assert changed["changed"] is True and changed["attributes_changed"]["mode"] == "0600"


# --------------------------------------------------------------------------------------------
# hostile inputs and files


@pytest.mark.parametrize(
    "args, message",
    [
        (dict(http="http://proxy:3128\nssl_verify: false"), "control character"),
        (dict(http="http://proxy:3128\x00"), "control character"),
        (dict(https="http://proxy:3128", proxy_username="u", proxy_password="pw\nx: 1"), "control character"),
        (dict(http="http://pro xy:1"), "spaces"),
        (dict(servers={"https://h.example:8443": "http://p:1"}), "not an exact host"),
    ],
)
def test_hostile_inputs_are_refused(tmp_path, args, message):
    path = tmp_path / ".condarc"
    result = run(path, **args)
    assert result["failed"] and message in result["msg"]
    assert not path.exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("password", ["it's", 'say "x"', "$(rm -rf ~)", "`id`", "a;b", "back\\slash", "ünï 密码",
                                      "a@b:c%d#e/f g"])
def test_hostile_passwords_read_back_exactly(tmp_path, password):
    path = tmp_path / ".condarc"
    result = run(path, http="http://proxy:3128", proxy_username="u", proxy_password=password)
    assert not result.get("failed")
    url = yaml.safe_load(path.read_bytes())["proxy_servers"]["http"]
    assert unquote(urlsplit(url).password) == password


HOSTILE_FILES = [
    (b"channels: [a\nproxy_servers: {}\n", 1),
    (b"a: 1\nchannels:\n\t- x\n", 3),
    (b"a: 1\nproxy_servers:\n  http: x\nproxy_servers:\n  https: y\n", 4),
    (b"- a\n- b\n", 1),
    (b"a: 'unterminated\n", 1),
    (b"a: 1\n\xff\n", 2),
]


@pytest.mark.parametrize("content, line", HOSTILE_FILES)
def test_hostile_files_fail_with_line_and_stay_untouched(tmp_path, pyyaml, content, line):
    path = tmp_path / ".condarc"
    path.write_bytes(content)
    before = sha(path)
    for check in (True, False):
        result = run(path, check=check, http="http://p:1", proxy_username="u", proxy_password=PASSWORD)
        assert result["failed"]
        assert result["msg"].startswith("%s: line %d: " % (path, line))
        assert_no_secret(result["msg"])
    assert sha(path) == before
    assert leftovers(tmp_path) == []


def test_symlink_to_own_file_is_followed_and_kept(tmp_path):
    target = tmp_path / "dotfiles" / "condarc"
    target.parent.mkdir()
    target.write_bytes(b"channels: [a]\n")
    link = tmp_path / ".condarc"
    link.symlink_to(target)
    result = run(link, http="http://p:1")
    assert result["link_target"] == str(target)
    # path is the file written, and the stat fields describe it, not the link (as netrc_entry reports it)
    assert result["path"] == str(target) and result["state"] == "file", result
    assert link.is_symlink()
    assert target.read_bytes() == b"channels: [a]\nproxy_servers:\n  http: http://p:1\n"


def test_symlink_into_a_root_file_is_refused_for_another_user(shared_dir, account):
    victim = os.path.join(shared_dir, "root-owned")
    with open(victim, "wb") as handle:
        handle.write(b"root: data\n")
    link = os.path.join(account.pw_dir, ".condarc")
    os.symlink(victim, link)
    before = sha(victim)
    # root configuring the account
    result = call_module("condarc_proxy", dict(user=account.pw_name, http="http://p:1"))
    assert result["failed"] and "refusing to follow" in result["msg"]
    # the account itself, really running as that uid
    own = as_account(account, dict(http="http://p:1"))
    assert own.get("failed") and "refusing to follow" in own["msg"], own
    assert sha(victim) == before and os.path.islink(link)
    assert leftovers(account.pw_dir) == []


def test_read_only_directory_fails_and_keeps_the_file(shared_dir, account):
    locked = os.path.join(shared_dir, "locked")
    os.mkdir(locked, 0o755)  # owned by root: the account cannot create the temp file here
    path = os.path.join(locked, ".condarc")
    with open(path, "wb") as handle:
        handle.write(EXISTING)
    os.chown(path, account.pw_uid, account.pw_gid)
    before = sha(path)
    result = as_account(account, dict(path=path, http="http://p:1"))
    assert result.get("failed") and "cannot write %s" % path in result["msg"], result
    assert sha(path) == before and leftovers(locked) == []


def test_dangling_symlink_is_refused(tmp_path):
    link = tmp_path / ".condarc"
    link.symlink_to(tmp_path / "nowhere")
    result = run(link, http="http://p:1")
    assert result["failed"] and "does not exist" in result["msg"]
    assert not (tmp_path / "nowhere").exists()


# --------------------------------------------------------------------------------------------
# through the real ansible CLI


def test_adhoc_diff_vvv_never_shows_the_password(tmp_path):
    path = tmp_path / ".condarc"
    path.write_bytes(EXISTING)
    args = dict(path=str(path), http="http://proxy.example:3128", https="http://proxy.example:3128",
                proxy_username="fleet", proxy_password=PASSWORD, final=True)
    checked, raw_check = run_adhoc("condarc_proxy", args, check=True, diff=True, verbosity=3)
    assert checked["changed"] is True and path.read_bytes() == EXISTING
    result, raw = run_adhoc("condarc_proxy", args, diff=True, verbosity=3)
    assert result["changed"] is True, raw
    for output in (raw_check, raw):
        assert_no_secret(output)
    assert "proxy_servers:  #!final" in raw
    url = yaml.safe_load(path.read_bytes())["proxy_servers"]["https"]
    assert unquote(urlsplit(url).password) == PASSWORD
    # a failure message on a broken file does not leak either
    path.write_bytes(b"a: 1\na: 2\n")
    failed, raw_failed = run_adhoc("condarc_proxy", args, diff=True, verbosity=3)
    assert failed.get("failed") and "line 2" in failed["msg"]
    assert_no_secret(raw_failed)
