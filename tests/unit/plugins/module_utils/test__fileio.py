# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""_fileio: whose identity touches a path, bounded reads, directory locks, stale temp files, pruning.

The identity tests need root (they hand directories to the ``nobody`` account); the attacks themselves, with a
real second account and the modules end to end, are in tests/integration/test_hostile_account.py.
"""

from __future__ import annotations

import multiprocessing
import os
import pwd
import stat
import time

import pytest

from ansible_collections.condafleet.proxy.plugins.module_utils import _fileio

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="hands directories to another account (needs root)")


@pytest.fixture
def nobody():
    entry = pwd.getpwnam("nobody")
    return _fileio.Account(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)


@pytest.fixture
def tree(tmp_path):
    """A root-owned 0755 base the other account can enter (pytest's own tmp dirs are private to root)."""
    os.chmod(tmp_path, 0o755)
    for parent in list(tmp_path.parents)[:3]:
        if parent.stat().st_uid == 0 and not parent.stat().st_mode & 0o001:
            os.chmod(parent, parent.stat().st_mode | 0o711)
    return tmp_path


@ROOT_ONLY
def test_the_first_directory_an_account_owns_hands_the_path_to_it(tree, nobody):
    home = tree / "home"
    (home / "sub").mkdir(parents=True)
    os.chown(home, nobody.uid, nobody.gid)
    assert _fileio.controlling_account(str(home / "sub" / ".condarc")).uid == nobody.uid
    assert _fileio.controlling_account(str(tree / ".condarc")) is None


@ROOT_ONLY
def test_a_link_the_account_owns_hands_the_path_to_it_and_roots_link_is_followed(tree, nobody):
    (tree / "etc-like").mkdir()
    home = tree / "home"
    home.mkdir()
    os.chown(home, nobody.uid, nobody.gid)
    os.symlink(str(tree / "etc-like"), str(home / ".config"))
    os.lchown(str(home / ".config"), nobody.uid, nobody.gid)
    assert _fileio.controlling_account(str(home / ".config" / "x" / "f")).uid == nobody.uid
    os.symlink(str(home), str(tree / "rootlink"))  # made by root: followed, then the home decides
    assert _fileio.controlling_account(str(tree / "rootlink" / "f")).uid == nobody.uid


@ROOT_ONLY
def test_a_root_directory_others_may_write_without_sticky_bit_is_refused(tree):
    (tree / "open").mkdir()
    os.chmod(tree / "open", 0o777)
    with pytest.raises(_fileio.FileRefused, match="writable by other accounts"):
        _fileio.controlling_account(str(tree / "open" / "f"))
    os.chmod(tree / "open", 0o1777)  # /tmp-like: entries stay their owners'
    assert _fileio.controlling_account(str(tree / "open" / "f")) is None


@ROOT_ONLY
def test_acting_as_an_account_the_kernel_refuses_roots_file_and_identity_comes_back(tree, nobody):
    victim = tree / "victim"
    victim.write_bytes(b"root only\n")
    os.chmod(victim, 0o600)
    with _fileio.acting_as(nobody):
        assert os.geteuid() == nobody.uid
        with pytest.raises(_fileio.FileRefused, match="Permission denied"):
            _fileio.read_existing(str(victim))
    assert os.geteuid() == 0 and os.getegid() == 0
    assert _fileio.read_existing(str(victim)) == b"root only\n"


def test_a_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / ".netrc"
    os.mkfifo(fifo)
    started = time.monotonic()
    with pytest.raises(_fileio.FileRefused, match="not a regular file"):
        _fileio.read_existing(str(fifo))
    assert time.monotonic() - started < 1


def test_a_file_over_the_limit_is_refused_with_the_limit_named(tmp_path, monkeypatch):
    big = tmp_path / ".netrc"
    big.write_bytes(b"x" * 2048)
    monkeypatch.setattr(_fileio, "MAX_FILE_BYTES", 1024)
    with pytest.raises(_fileio.FileRefused, match="over the 0 MiB limit|2048 bytes"):
        _fileio.read_existing(str(big))


def test_a_hard_linked_file_is_refused_where_root_would_edit_it(tmp_path):
    target = tmp_path / "shared"
    target.write_bytes(b"data\n")
    os.link(target, tmp_path / ".condarc")
    assert _fileio.read_existing(str(tmp_path / ".condarc")) == b"data\n"
    with pytest.raises(_fileio.FileRefused, match="2 hard links"):
        _fileio.read_existing(str(tmp_path / ".condarc"), single_link=True)


def test_a_symlink_is_never_read_through(tmp_path):
    (tmp_path / "real").write_bytes(b"x")
    os.symlink(str(tmp_path / "real"), str(tmp_path / "link"))
    with pytest.raises(_fileio.FileRefused, match="symlink"):
        _fileio.read_existing(str(tmp_path / "link"))


def _hold_lock(directory: str, ready, release) -> None:
    _fileio._Locks.take(directory)
    ready.set()
    release.wait(10)
    _fileio.release_locks()


def test_a_second_run_waits_for_the_directory_lock_and_gives_up_with_a_message(tmp_path, monkeypatch):
    ready, release = multiprocessing.Event(), multiprocessing.Event()
    holder = multiprocessing.Process(target=_hold_lock, args=(str(tmp_path), ready, release))
    holder.start()
    try:
        assert ready.wait(10)
        monkeypatch.setattr(_fileio, "LOCK_TIMEOUT", 0.3)
        with pytest.raises(_fileio.FileRefused, match="another run is editing files in"):
            _fileio._Locks.take(str(tmp_path))
        release.set()
        holder.join(10)
        _fileio._Locks.take(str(tmp_path))  # free again
    finally:
        release.set()
        holder.join(10)
        _fileio.release_locks()


def test_stale_temp_files_of_a_killed_run_are_removed_and_nothing_else(tmp_path):
    account = _fileio.resolve_account(None)
    (tmp_path / "..netrc.condafleet.abc123.tmp").write_bytes(b"half")  # "." + the name, as mkstemp makes it
    (tmp_path / ".netrc.other.tmp").write_bytes(b"not ours")
    (tmp_path / "..condarc.condafleet.x.tmp").write_bytes(b"another file's")
    try:
        real, before, _identity = _fileio.read_target(str(tmp_path / ".netrc"), account, False)
    finally:
        _fileio.release_locks()
    assert before is None and real == str(tmp_path / ".netrc")
    assert sorted(os.listdir(tmp_path)) == ["..condarc.condafleet.x.tmp", ".netrc.other.tmp"]


def test_pruning_stops_at_a_directory_with_something_left_and_never_removes_the_stop(tmp_path):
    deep = tmp_path / "home" / ".config" / "fish" / "conf.d"
    deep.mkdir(parents=True)
    (tmp_path / "home" / ".config" / "keep").write_bytes(b"")
    removed = _fileio.prune_empty_directories(str(deep), str(tmp_path / "home"), check_mode=False)
    assert removed == [str(deep), str(deep.parent)]
    assert (tmp_path / "home" / ".config").is_dir()
    empty = tmp_path / "home2" / ".conda"
    empty.mkdir(parents=True)
    assert _fileio.prune_empty_directories(str(empty), str(tmp_path / "home2"), check_mode=False) == [str(empty)]
    assert (tmp_path / "home2").is_dir()
    assert stat.S_ISDIR(os.stat(tmp_path / "home2").st_mode)


def test_a_backup_never_goes_through_a_link_planted_at_its_name(tmp_path, monkeypatch):
    """The backup name is predictable (pid and second): a symlink there is skipped, not followed."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep\n")
    target = tmp_path / ".netrc"
    target.write_bytes(b"old\n")
    os.chmod(target, 0o600)
    monkeypatch.setattr(_fileio.time, "strftime", lambda fmt, *args: "2026-12-01@10:00:00~")
    planted = "%s.%d.2026-12-01@10:00:00~" % (target, os.getpid())
    os.symlink(str(victim), planted)
    name = _fileio.write_backup(str(target), b"old\n")
    assert name == "%s.%d.2026-12-01@10:00:00.1~" % (target, os.getpid())
    assert victim.read_bytes() == b"keep\n" and os.path.islink(planted)
    with open(name, "rb") as handle:
        assert handle.read() == b"old\n"
    assert stat.S_IMODE(os.stat(name).st_mode) == 0o600


@ROOT_ONLY
def test_a_directory_writable_by_a_group_other_than_roots_is_refused(tree, nobody):
    (tree / "shared").mkdir()
    os.chmod(tree / "shared", 0o775)
    assert _fileio.controlling_account(str(tree / "shared" / "f")) is None  # group root: admins only
    os.chown(tree / "shared", 0, nobody.gid)
    with pytest.raises(_fileio.FileRefused, match="writable by other accounts"):
        _fileio.controlling_account(str(tree / "shared" / "f"))


def _read_as(uid: int, gid: int, path: str, queue) -> None:
    os.setgid(gid)
    os.setuid(uid)
    try:
        _fileio.read_existing(path)
        queue.put("read")
    except _fileio.FileRefused as exc:
        queue.put(str(exc))


@ROOT_ONLY
def test_a_refusal_without_root_names_become(tmp_path, nobody):
    """A file of root's the (non-root) account running the module may not read: the message says what to do."""
    os.chmod(tmp_path, 0o755)
    secret = tmp_path / ".condarc"
    secret.write_text("proxy_servers: {}\n")
    secret.chmod(0o600)
    queue = multiprocessing.get_context("fork").Queue()
    child = multiprocessing.get_context("fork").Process(target=_read_as, args=(nobody.uid, nobody.gid, str(secret), queue))
    child.start()
    child.join(30)
    assert queue.get(timeout=5) == ("cannot read %s: Permission denied; nobody is not root: run the task with become: "
                                    "true (scope=system files belong to root)" % secret)
    # As root, or for any other error, the message stays as it was.
    assert str(_fileio.denied("cannot write x: Permission denied")) == "cannot write x: Permission denied"


def test_denied_adds_nothing_to_other_errors():
    import errno

    assert str(_fileio.denied("cannot write x: No space left on device", errno.ENOSPC)) == \
        "cannot write x: No space left on device"
