# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""condafleet.proxy.netrc_entry run as a module: real files, check/diff mode, hostile inputs and files."""

from __future__ import annotations

import hashlib
import json
import netrc
import os
import shutil
import stat
import subprocess
import sys
import tempfile

import pytest

from modulerun import call_module, run_adhoc

HOST = "conda.corp.example"
NOBODY = 65534
HOSTILE = ["pass word", 'q"uote', "back\\slash", "#hash", "ünïcødé", "$(touch /tmp/pwned)", "`id`", "a;b", "", "'"]
OTHER = b"# hand-written\nmachine other.example login o password other-secret account other-acct\n" \
        b"macdef init\ncd /pub\n\n"


def sha(path) -> str | None:
    return hashlib.sha256(open(path, "rb").read()).hexdigest() if os.path.lexists(path) else None


def leftovers(directory) -> list[str]:
    return [name for name in os.listdir(directory) if name.endswith(".tmp")]


def netrc_of(path):
    return netrc.netrc(str(path)).hosts


def args(path, **extra):
    base = dict(machine=HOST, login="svc", password="s3cr3t pw", path=str(path))
    base.update(extra)
    return base


# ----------------------------------------------------------------------------- the main paths


def test_create_check_idempotence_and_absent_round_trip(tmp_path):
    path = tmp_path / ".netrc"
    path.write_bytes(OTHER)
    os.chmod(path, 0o600)
    original = path.read_bytes()

    predicted = call_module("netrc_entry", args(path), check=True)
    assert predicted["changed"] and path.read_bytes() == original
    applied = call_module("netrc_entry", args(path))
    assert applied["changed"] and not applied["failed"] if "failed" in applied else applied["changed"]
    assert netrc_of(path)[HOST] == ("svc", "", "s3cr3t pw")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert call_module("netrc_entry", args(path), check=True)["changed"] is False
    assert call_module("netrc_entry", args(path))["changed"] is False

    removed_check = call_module("netrc_entry", dict(machine=HOST, state="absent", path=str(path)), check=True)
    assert removed_check["changed"] and HOST in path.read_text()
    assert call_module("netrc_entry", dict(machine=HOST, state="absent", path=str(path)))["changed"]
    assert path.read_bytes() == original
    assert call_module("netrc_entry", dict(machine=HOST, state="absent", path=str(path)))["changed"] is False


def test_new_file_is_0600_and_absent_deletes_it(tmp_path):
    path = tmp_path / ".netrc"
    assert call_module("netrc_entry", args(path), check=True)["changed"] and not path.exists()
    assert call_module("netrc_entry", args(path))["changed"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert call_module("netrc_entry", dict(machine=HOST, state="absent", path=str(path)))["changed"]
    assert not path.exists() and leftovers(tmp_path) == []


def test_diff_masks_every_password_and_account(tmp_path):
    path = tmp_path / ".netrc"
    path.write_bytes(OTHER + b'machine conda.corp.example login svc password "old secret"\n')
    result = call_module("netrc_entry", args(path, password="new secret", account="acct-secret"), diff=True)
    text = json.dumps(result)
    for secret in ("old secret", "new secret", "other-secret", "other-acct", "acct-secret"):
        assert secret not in text
    assert "********" in result["diff"]["before"] and "********" in result["diff"]["after"]
    assert "machine other.example" in result["diff"]["after"]


def test_update_password_on_create(tmp_path):
    path = tmp_path / ".netrc"
    path.write_bytes(b"machine conda.corp.example login old password users-own\n")
    os.chmod(path, 0o600)
    result = call_module("netrc_entry", args(path, login="new", update_password="on_create"))
    assert result["changed"] and result["password_kept"]
    assert netrc_of(path)[HOST] == ("new", "", "users-own")
    assert call_module("netrc_entry", args(path, login="new", update_password="on_create"))["changed"] is False
    assert call_module("netrc_entry", args(path, login="new"))["changed"]
    assert netrc_of(path)[HOST] == ("new", "", "s3cr3t pw")


def test_looser_mode_is_fixed_and_reported(tmp_path):
    path = tmp_path / ".netrc"
    assert call_module("netrc_entry", args(path))["changed"]
    os.chmod(path, 0o644)
    before = path.read_bytes()
    result = call_module("netrc_entry", args(path), check=True)
    assert result["changed"] and result["mode_fixed"] and stat.S_IMODE(os.stat(path).st_mode) == 0o644
    result = call_module("netrc_entry", args(path))
    assert result["changed"] and result["mode_fixed"] and path.read_bytes() == before
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again = call_module("netrc_entry", args(path))
    assert again["changed"] is False and again["mode_fixed"] is False


def test_duplicates_default_crlf_and_backup(tmp_path):
    path = tmp_path / ".netrc"
    original = (b"machine conda.corp.example login a password 1\r\nmachine other login o password o\r\n"
                b"machine CONDA.corp.example login b password 2\r\ndefault login anonymous password guest\r\n")
    path.write_bytes(original)
    result = call_module("netrc_entry", args(path, backup=True))
    assert result["duplicates_removed"] == 1 and result["changed"]
    assert open(result["backup_file"], "rb").read() == original
    assert path.read_bytes() == (b'machine conda.corp.example login svc password "s3cr3t pw"\r\n'
                                 b"machine other login o password o\r\ndefault login anonymous password guest\r\n")
    new = call_module("netrc_entry", args(path, machine="new.example"))
    assert new["changed"]
    assert path.read_bytes().endswith(b"machine new.example login svc password \"s3cr3t pw\"\r\n"
                                      b"default login anonymous password guest\r\n")


def test_default_entry(tmp_path):
    path = tmp_path / ".netrc"
    path.write_bytes(OTHER)
    result = call_module("netrc_entry", dict(default=True, login="anonymous", password="guest@", path=str(path)))
    assert result["changed"] and result["machine"] == "default"
    assert netrc_of(path)["default"] == ("anonymous", "", "guest@")
    both = call_module("netrc_entry", dict(default=True, machine="x", login="a", path=str(path)))
    assert both["failed"] and "mutually exclusive" in both["msg"]


@pytest.mark.parametrize("password", HOSTILE)
def test_hostile_passwords_are_read_back_exactly(tmp_path, password):
    path = tmp_path / ".netrc"
    path.write_bytes(OTHER)
    assert call_module("netrc_entry", args(path, password=password))["changed"]
    hosts = netrc_of(path)
    assert hosts[HOST] == ("svc", "", password) and hosts["other.example"][2] == "other-secret"
    assert call_module("netrc_entry", args(path, password=password))["changed"] is False
    assert not os.path.exists("/tmp/pwned")


@pytest.mark.parametrize("password", ["two\nlines", "nul\x00", "esc\x1b"])
def test_control_characters_are_refused_without_touching_the_file(tmp_path, password):
    path = tmp_path / ".netrc"
    path.write_bytes(OTHER)
    digest = sha(path)
    result = call_module("netrc_entry", args(path, password=password))
    assert result["failed"] and "password" in result["msg"] and "control character" in result["msg"]
    assert sha(path) == digest and leftovers(tmp_path) == []


# ----------------------------------------------------------------------------- hostile files


@pytest.mark.parametrize(
    "content, line",
    [
        (b"machine a login b\ngarbage here\n", 2),
        (b"machine a login b password\n", 1),
        (b'machine a\n login "unterminated\n', 2),
        (b"# ok\n\nmacdef\nbody\n\n", 3),
        (b"\x00\x01\x02 binary \xff\xfe", 1),
    ],
)
def test_unparsable_file_fails_naming_file_and_line_and_stays_byte_for_byte(tmp_path, content, line):
    path = tmp_path / ".netrc"
    path.write_bytes(content)
    os.chmod(path, 0o644)
    digest = sha(path)
    result = call_module("netrc_entry", args(path), diff=True)
    assert result["failed"] and str(path) in result["msg"] and "line %d" % line in result["msg"]
    assert sha(path) == digest and stat.S_IMODE(os.stat(path).st_mode) == 0o644 and leftovers(tmp_path) == []


def test_symlink_to_own_file_is_edited_in_place(tmp_path):
    real = tmp_path / "dotfiles" / "netrc"
    real.parent.mkdir()
    real.write_bytes(OTHER)
    link = tmp_path / ".netrc"
    link.symlink_to(real)
    result = call_module("netrc_entry", args(link))
    assert result["changed"] and result["link_target"] == str(real)
    assert os.path.islink(link) and netrc_of(real)[HOST] == ("svc", "", "s3cr3t pw")


def test_symlink_into_a_file_the_user_does_not_own_is_refused(tmp_path):
    victim = tmp_path / "root-owned"
    victim.write_bytes(OTHER)
    link = tmp_path / ".netrc"
    link.symlink_to(victim)
    digest = sha(victim)
    result = call_module("netrc_entry", args(link, user="nobody"))
    assert result["failed"] and "refusing to follow" in result["msg"]
    assert sha(victim) == digest and os.path.islink(link) and leftovers(tmp_path) == []


def test_missing_parent_directory_fails_and_creates_nothing(tmp_path):
    path = tmp_path / "missing" / ".netrc"
    result = call_module("netrc_entry", args(path))
    assert result["failed"] and "does not exist" in result["msg"]
    assert not (tmp_path / "missing").exists()


def test_tilde_is_the_home_of_user(tmp_path):
    result = call_module("netrc_entry", args("~/.netrc", user="nobody"), check=True)
    # nobody's home is /nonexistent: the path follows the account, not $HOME of the caller.
    assert result["failed"] and "/nonexistent" in result["msg"]


def _as_nobody(module_args: dict) -> dict:
    """Run the module in a child process that has dropped to uid nobody (a real non-root run)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            result = call_module("netrc_entry", module_args)
        except BaseException as exc:  # report anything to the parent
            result = {"failed": True, "msg": "child: %r" % exc}
        os.write(write_fd, json.dumps(result).encode())
        os._exit(0)
    os.close(write_fd)
    chunks = []
    while True:
        chunk = os.read(read_fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(read_fd)
    os.waitpid(pid, 0)
    return json.loads(b"".join(chunks) or b"{}")


@pytest.fixture
def nobody_dir():
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to another uid")
    call_module("netrc_entry", dict(machine="warm.up", login="x", path="/nonexistent-dir/.netrc"))  # imports
    directory = tempfile.mkdtemp(prefix="netrc-nobody-")
    os.chown(directory, NOBODY, NOBODY)
    yield directory
    shutil.rmtree(directory)


def test_as_a_user_a_symlink_into_a_root_owned_file_is_refused(nobody_dir):
    victim = os.path.join(nobody_dir, "root-file")
    with open(victim, "wb") as handle:
        handle.write(OTHER)
    link = os.path.join(nobody_dir, ".netrc")
    os.symlink(victim, link)
    os.chown(link, NOBODY, NOBODY, follow_symlinks=False)
    digest = sha(victim)
    result = _as_nobody(args(link))
    assert result["failed"] and "refusing to follow" in result["msg"], result
    assert sha(victim) == digest and leftovers(nobody_dir) == []


def test_as_a_user_a_read_only_directory_fails_cleanly(nobody_dir):
    readonly = os.path.join(nobody_dir, "ro")
    os.mkdir(readonly)
    path = os.path.join(readonly, ".netrc")
    with open(path, "wb") as handle:
        handle.write(OTHER)
    os.chown(path, NOBODY, NOBODY)
    os.chmod(path, 0o600)
    os.chown(readonly, NOBODY, NOBODY)
    os.chmod(readonly, 0o555)
    digest = sha(path)
    result = _as_nobody(args(path))
    assert result["failed"] and path in result["msg"], result
    assert sha(path) == digest and leftovers(readonly) == []


# ----------------------------------------------------------------------------- through the real CLI


def test_adhoc_with_diff_and_vvv_never_shows_a_password(tmp_path):
    path = tmp_path / ".netrc"
    path.write_bytes(OTHER)
    password = 'Adh0c "pass" #1'
    result, raw = run_adhoc("netrc_entry", args(path, password=password, account="acct-77"), diff=True, verbosity=3)
    assert result["changed"] is True
    for secret in (password, "Adh0c", "acct-77", "other-secret", "other-acct"):
        assert secret not in raw
    assert netrc_of(path)[HOST] == ("svc", "acct-77", password)
    result, raw = run_adhoc("netrc_entry", dict(machine=HOST, state="absent", path=str(path)), diff=True, verbosity=3)
    assert result["changed"] is True and path.read_bytes() == OTHER
    assert "Adh0c" not in raw and "acct-77" not in raw and "other-secret" not in raw


def test_ansible_doc_renders():
    ansible_doc = os.path.join(os.path.dirname(sys.executable), "ansible-doc")
    proc = subprocess.run([ansible_doc, "condafleet.proxy.netrc_entry"], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, ANSIBLE_NOCOLOR="1"), check=False)
    assert proc.returncode == 0, proc.stderr
    for word in ("update_password", "on_create", "duplicates_removed", "mode_fixed", "machine"):
        assert word in proc.stdout


# ----------------------------------------------------------------------------- entries: several in one task


ENTRIES = [
    dict(machine=HOST, login="svc", password="s3cr3t pw"),
    dict(machine="mirror.corp.example", login="mirror", password='m#rr "pw"', account="acct-9"),
    dict(default=True, login="anonymous", password="guest-pw"),
]


def test_entries_write_the_same_bytes_as_one_task_per_entry(tmp_path):
    one_by_one = tmp_path / "one-by-one"
    together = tmp_path / "together"
    for path in (one_by_one, together):
        path.write_bytes(OTHER)
    for entry in ENTRIES:
        assert call_module("netrc_entry", dict(entry, path=str(one_by_one)))["changed"]

    predicted = call_module("netrc_entry", dict(entries=ENTRIES, path=str(together)), check=True)
    assert predicted["changed"] and together.read_bytes() == OTHER
    applied = call_module("netrc_entry", dict(entries=ENTRIES, path=str(together)))
    assert applied["changed"] and "machine" not in applied
    assert [(entry["machine"], entry["changed"]) for entry in applied["entries"]] == [
        (HOST, True), ("mirror.corp.example", True), ("default", True)]
    assert together.read_bytes() == one_by_one.read_bytes()
    assert stat.S_IMODE(os.stat(together).st_mode) == 0o600
    assert netrc_of(together)["mirror.corp.example"] == ("mirror", "acct-9", 'm#rr "pw"')

    again = call_module("netrc_entry", dict(entries=ENTRIES, path=str(together)), check=True)
    assert again["changed"] is False and not any(entry["changed"] for entry in again["entries"])
    assert call_module("netrc_entry", dict(entries=ENTRIES, path=str(together)))["changed"] is False

    one_changed = [ENTRIES[0], dict(ENTRIES[1], password="rotated")]
    result = call_module("netrc_entry", dict(entries=one_changed, path=str(together)))
    assert [entry["changed"] for entry in result["entries"]] == [False, True]

    removed = call_module("netrc_entry", dict(entries=ENTRIES, state="absent", path=str(together)))
    assert removed["changed"] and together.read_bytes() == OTHER
    assert call_module("netrc_entry", dict(entries=ENTRIES, state="absent", path=str(together)))["changed"] is False


def test_entries_diff_masks_every_password_and_account(tmp_path):
    path = tmp_path / ".netrc"
    path.write_bytes(OTHER)
    result = call_module("netrc_entry", dict(entries=ENTRIES, path=str(path)), check=True, diff=True)
    text = json.dumps(result)
    for secret in ("s3cr3t pw", 'm#rr \\"pw\\"', "m#rr", "acct-9", "guest-pw", "other-secret", "other-acct"):
        assert secret not in text, secret
    assert result["diff"]["after"].count("********") >= 5
    assert path.read_bytes() == OTHER


def test_entries_with_update_password_on_create_keep_existing_passwords(tmp_path):
    path = tmp_path / ".netrc"
    path.write_bytes(b"machine conda.corp.example login old password users-own\n")
    result = call_module("netrc_entry", dict(entries=ENTRIES[:2], update_password="on_create", path=str(path)))
    assert result["changed"] and result["password_kept"]
    assert [entry["password_kept"] for entry in result["entries"]] == [True, False]
    assert netrc_of(path)[HOST] == ("svc", "", "users-own")
    assert netrc_of(path)["mirror.corp.example"][2] == 'm#rr "pw"'


@pytest.mark.parametrize("bad, message", [
    (dict(entries=ENTRIES, machine=HOST), "mutually exclusive"),
    (dict(entries=[ENTRIES[0], dict(ENTRIES[0], machine=HOST.upper())]), "entries[2]"),
    (dict(entries=[ENTRIES[2], ENTRIES[2]]), "entries[2]"),
    (dict(entries=[dict(login="x", password="y")]), "entries[1]: one of machine or default=true"),
    (dict(entries=[dict(machine="x", login="a", password="new\nline")]), "entries[1]: password"),
])
def test_bad_entries_are_refused_without_touching_the_file(tmp_path, bad, message):
    path = tmp_path / ".netrc"
    path.write_bytes(OTHER)
    result = call_module("netrc_entry", dict(bad, path=str(path)))
    assert result.get("failed") and message in result["msg"], result
    assert path.read_bytes() == OTHER


def test_empty_entries_change_nothing(tmp_path):
    path = tmp_path / ".netrc"
    assert call_module("netrc_entry", dict(entries=[], path=str(path)))["changed"] is False
    assert not path.exists()


def test_adhoc_entries_with_diff_and_vvv_never_show_a_password(tmp_path):
    path = tmp_path / ".netrc"
    path.write_bytes(OTHER)
    result, raw = run_adhoc("netrc_entry", dict(entries=ENTRIES, path=str(path)), diff=True, verbosity=3)
    assert result["changed"] is True
    for secret in ("s3cr3t pw", "m#rr", "acct-9", "guest-pw", "other-secret", "other-acct"):
        assert secret not in raw, secret
    assert netrc_of(path)[HOST] == ("svc", "", "s3cr3t pw")


# ----------------------------------------------------------------------------- bare tokens, quoting warnings, account


def call_warned(module_args: dict, **kwargs) -> tuple[dict, list[str]]:
    """``call_module`` and the warnings the module raised (Ansible prints a repeated warning only once per process,
    so they are taken where the module raises them)."""
    from unittest import mock

    from ansible.module_utils.basic import AnsibleModule

    raised: list[str] = []
    original = AnsibleModule.warn

    def warn(self, warning, *args, **kw):
        raised.append(warning)
        return original(self, warning, *args, **kw)

    with mock.patch.object(AnsibleModule, "warn", warn):
        result = call_module("netrc_entry", module_args, **kwargs)
    return result, raised


def test_a_password_every_reader_reads_bare_is_written_bare_without_warning(tmp_path):
    path = tmp_path / ".netrc"
    result, warnings = call_warned(args(path, password="ch#an@l:pw/%9"))
    assert result["changed"] and warnings == [], result
    assert path.read_bytes() == b"machine %s login svc password ch#an@l:pw/%%9\n" % HOST.encode()
    assert netrc_of(path)[HOST] == ("svc", "", "ch#an@l:pw/%9")


@pytest.mark.parametrize("password, reason, whole_file", [
    ("s3cr3t pw", "it holds a space or tab", True),
    ("#lead", "it starts with #", False),
    ("back\\slash", "it holds a backslash", False),
    ("ünï", "it holds a non-ASCII character", True),
    ("", "it is empty", False),
])
def test_a_quoted_password_warns_naming_the_readers_that_cannot_read_it(tmp_path, password, reason, whole_file):
    path = tmp_path / ".netrc"
    result, [warning] = call_warned(args(path, password=password))
    assert result["changed"] and netrc_of(path)[HOST] == ("svc", "", password)
    assert warning.startswith("password must be written quoted in the .netrc (%s)" % reason)
    for reader in ("rattler (pixi, py-rattler)", "Python 3.10 and older", "curl before 7.84"):
        assert reader in warning
    assert ("reject the whole file" in warning) is whole_file


def test_entries_warn_once_per_quoted_value_naming_the_element(tmp_path):
    path = tmp_path / ".netrc"
    _result, warnings = call_warned(dict(entries=ENTRIES, path=str(path)))
    assert [warning.split(" ", 1)[0] for warning in warnings] == ["entries[1].password", "entries[2].password"]


def test_a_file_quoted_by_an_older_version_is_rewritten_bare_and_reports_changed(tmp_path):
    path = tmp_path / ".netrc"
    old = b'machine %s login svc password "ch#an@l:pw/%%9"\n' % HOST.encode()
    path.write_bytes(OTHER + old)
    os.chmod(path, 0o600)
    result = call_module("netrc_entry", args(path, password="ch#an@l:pw/%9"), diff=True)
    assert result["changed"] is True
    assert "ch#an" not in json.dumps(result)
    assert path.read_bytes() == OTHER + b"machine %s login svc password ch#an@l:pw/%%9\n" % HOST.encode()
    assert call_module("netrc_entry", args(path, password="ch#an@l:pw/%9"))["changed"] is False


def test_a_file_quoted_by_an_older_version_that_must_stay_quoted_is_left_alone(tmp_path):
    path = tmp_path / ".netrc"
    path.write_bytes(OTHER + b'machine %s login svc password "s3cr3t pw"\n' % HOST.encode())
    os.chmod(path, 0o600)
    digest = sha(path)
    result = call_module("netrc_entry", args(path))
    assert result["changed"] is False and sha(path) == digest


@pytest.mark.parametrize("extra", [
    dict(state="bogus"),  # refused by Ansible's own argument validation
    dict(password="two\nlines"),  # refused by the module before it registers its secrets
])
def test_account_is_never_shown_even_when_the_arguments_are_refused(tmp_path, extra):
    single = call_module("netrc_entry", args(tmp_path / ".netrc", account="acct-leak-77", **extra))
    assert single["failed"] and "acct-leak-77" not in json.dumps(single), single
    entry = dict(machine=HOST, login="svc", password="pw", account="acct-leak-78")
    entry.update({key: value for key, value in extra.items() if key != "state"})
    listed = call_module("netrc_entry", dict(entries=[entry], path=str(tmp_path / ".netrc"),
                                             state=extra.get("state", "present")))
    assert listed["failed"] and "acct-leak-78" not in json.dumps(listed), listed


def test_windows_action_writes_the_same_bare_bytes_and_the_same_warnings(tmp_path):
    helpers = _windows_action_helpers()
    for password, account in (("ch#an@l:pw/%9", "acct-1"), ("s3cr3t pw", "acct #1")):
        host = helpers.WindowsHost()
        task_args = dict(machine=HOST, login="svc", password=password, account=account)
        result = helpers.run_action("netrc_entry", task_args, host)
        posix_path = tmp_path / ("posix-" + account)
        _posix, warnings = call_warned(dict(task_args, path=str(posix_path)))
        assert host.files["%USERPROFILE%\\_netrc"] == posix_path.read_bytes()
        assert result.get("warnings", []) == warnings
        assert password not in json.dumps(result) and account not in json.dumps(result)
    assert b"password ch#an@l:pw/%9 account acct-1" in (tmp_path / "posix-acct-1").read_bytes()


def _windows_action_helpers():
    """The simulated Windows host of tests/unit/plugins/action/test_windows_actions.py."""
    import importlib.util

    location = os.path.join(os.path.dirname(os.path.dirname(__file__)), "action", "test_windows_actions.py")
    spec = importlib.util.spec_from_file_location("condafleet_windows_action_helpers", location)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
