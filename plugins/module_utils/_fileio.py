# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Reading and atomically writing the files the modules edit, for one account.

The one place where the modules touch the file system. Every edit goes through
:func:`apply_edit`: it compares rendered bytes with the original, writes a temp file
in the target's directory and moves it into place, so a file is never left
half-written or emptied, and never follows a symlink into a file the account does
not own unless the caller allows it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import grp
import os
import pwd
import stat
import tempfile
import time
import typing as t

if t.TYPE_CHECKING:  # pragma: no cover
    from ansible.module_utils.basic import AnsibleModule


class FileRefused(Exception):
    """The file cannot be edited safely; the message names it and says why."""


# The largest file read: a .netrc of 10,000 entries is about 0.6 MiB. Anything bigger is refused before it is parsed.
MAX_FILE_BYTES = 8 << 20
# Temp files are ``.<name>.condafleet.<random>.tmp``: recognisable, so a run removes those a killed run left.
TEMP_MARK = "condafleet"
# How long a run waits for another run of this collection editing files in the same directory.
LOCK_TIMEOUT = 60.0


class Account:
    """The account whose files are edited: the ``user`` option, or the one running the module."""

    def __init__(self, name: str, uid: int, gid: int, home: str) -> None:
        self.name = name
        self.uid = uid
        self.gid = gid
        self.home = home

    @property
    def group(self) -> str:
        try:
            return grp.getgrgid(self.gid).gr_name
        except KeyError:
            return str(self.gid)

    @property
    def groups(self) -> list[int]:
        """The account's supplementary groups, as a login would get them."""
        try:
            return os.getgrouplist(self.name, self.gid)
        except (OSError, KeyError):
            return [self.gid]

    @property
    def is_other(self) -> bool:
        """True when the module runs as another account (root configuring a user)."""
        return self.uid != os.geteuid()


def resolve_account(user: str | None) -> Account:
    """Look up ``user`` (or the effective user when ``None``) in the password database."""
    try:
        entry = pwd.getpwnam(user) if user else pwd.getpwuid(os.geteuid())
    except KeyError:
        raise FileRefused("user %r does not exist on this host" % user)
    if user and entry.pw_uid != os.geteuid() and os.geteuid() != 0:
        raise FileRefused("configuring user %r needs root (become: true)" % user)
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)


def _account_of_uid(uid: int, gid: int) -> Account:
    try:
        entry = pwd.getpwuid(uid)
        return Account(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)
    except KeyError:  # an owner without an account: its uid and the directory's group
        return Account(str(uid), uid, gid, "/")


# --------------------------------------------------------------------------------------------
# Whose identity touches a path


def controlling_account(path: str) -> Account | None:
    """The account that controls the directories leading to ``path``, or ``None`` when root alone does.

    Walks every component from ``/`` without following a symlink the walk has not vetted: the first
    directory (or link) owned by an account other than root hands the path to that account, which
    could swap anything below it; a root-owned link is followed (only root made it). A root-owned
    directory that other accounts may write (others, or a group other than root's) without the sticky
    bit is refused: any of them could swap entries in it. Only meaningful when running as root; otherwise ``None`` (the kernel already
    applies the running account's rights).
    """
    if os.geteuid() != 0:
        return None
    pending = [part for part in os.path.dirname(os.path.abspath(path)).split("/") if part]
    current = "/"
    hops = 0
    while pending:
        part = pending.pop(0)
        if part == "..":
            current = os.path.dirname(current) or "/"
            continue
        if part == ".":
            continue
        candidate = os.path.join(current, part)
        try:
            info = os.lstat(candidate)
        except OSError:
            return None  # missing from here on: created by the identity found so far (root)
        if info.st_uid != 0:
            return _account_of_uid(info.st_uid, info.st_gid)
        if stat.S_ISLNK(info.st_mode):
            hops += 1
            if hops > 40:
                raise FileRefused("%s: too many levels of symbolic links" % path)
            target = os.readlink(candidate)
            pending = [p for p in target.split("/") if p] + pending
            current = "/" if target.startswith("/") else current
            continue
        if not stat.S_ISDIR(info.st_mode):
            return None  # not a directory: the read or the write fails with its own message
        others_write = info.st_mode & 0o002 or (info.st_mode & 0o020 and info.st_gid != 0)
        if others_write and not info.st_mode & stat.S_ISVTX:
            raise FileRefused(
                "%s is writable by other accounts (mode %04o, no sticky bit): refusing to edit %s as root below it"
                % (candidate, info.st_mode & 0o7777, path))
        current = candidate
    return None


@contextlib.contextmanager
def acting_as(account: Account | None) -> t.Iterator[None]:
    """Run the block with ``account``'s uid, gid and groups as the effective identity (root only).

    Every file operation inside is then checked by the kernel as if the account did it: a symlink,
    hard link or renamed temp file the account planted can give it nothing it could not reach itself.
    The real and saved uid stay root (the account cannot signal or trace this process), so the
    identity is switched back afterwards. Nothing inside may import a module: the payload
    Ansible unpacked is private to root.
    """
    if account is None or os.geteuid() != 0 or account.uid == 0:
        yield
        return
    groups, egid = os.getgroups(), os.getegid()
    try:
        limit = os.sysconf("SC_NGROUPS_MAX")  # 16 on macOS
    except (ValueError, OSError):
        limit = 16
    os.setgroups(account.groups[:limit])
    os.setegid(account.gid)
    os.seteuid(account.uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(egid)
        os.setgroups(groups)


# --------------------------------------------------------------------------------------------
# Locks: concurrent runs of this collection editing files in one directory take turns


class _Locks:
    """Advisory ``flock`` locks on directories, held until :func:`release_locks`."""

    held: dict = {}

    @classmethod
    def take(cls, directory: str) -> None:
        try:
            fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except OSError:
            return  # the write will fail with its own message
        info = os.fstat(fd)
        key = (info.st_dev, info.st_ino)
        if key in cls.held:
            os.close(fd)
            return
        deadline = time.monotonic() + LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES) or time.monotonic() > deadline:
                    os.close(fd)
                    raise FileRefused("another run is editing files in %s and did not finish within %d seconds"
                                      % (directory, LOCK_TIMEOUT))
                time.sleep(0.02)
        cls.held[key] = fd

    @classmethod
    def release(cls) -> None:
        for fd in cls.held.values():
            try:
                os.close(fd)  # closing the descriptor drops the flock
            except OSError:
                pass
        cls.held = {}


def release_locks() -> None:
    """Let other runs edit the directories this run locked (at the end of a module run)."""
    _Locks.release()


def _existing_directory(path: str) -> str:
    directory = os.path.dirname(path) or "."
    while not os.path.isdir(directory):
        parent = os.path.dirname(directory)
        if parent == directory:
            break
        directory = parent
    return directory


def denied(message: str, error: int = errno.EACCES) -> FileRefused:
    """The refusal for a file the account running the module may not read or write (``error``: the errno).
    Without root that is a file of root's, as every scope=system file is: the message then names the fix."""
    if error not in (errno.EACCES, errno.EPERM) or os.geteuid() == 0:
        return FileRefused(message)
    return FileRefused("%s; %s is not root: run the task with become: true (scope=system files belong to root)"
                       % (message, _account_of_uid(os.geteuid(), os.getegid()).name))


def _remove_stale_temp_files(directory: str, name: str) -> None:
    """Temp files of ``name`` that a killed run of this collection left (this run holds the lock)."""
    prefix = ".%s.%s." % (name, TEMP_MARK)
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for entry in names:
        if entry.startswith(prefix) and entry.endswith(".tmp"):
            try:
                os.unlink(os.path.join(directory, entry))
            except OSError:
                pass


# --------------------------------------------------------------------------------------------
# Reading


def resolve_target(path: str, account: Account, follow: bool) -> str:
    """The path to read and write for ``path``.

    A symlink is followed when ``follow`` is set or when it points to a file the
    account owns (a dotfiles repository); writing goes to the link's target so the
    link survives. A link into anybody else's file, or a dangling link, is refused.
    """
    if not os.path.islink(path):
        return path
    real = os.path.realpath(path)
    if follow:
        return real
    try:
        owner = os.stat(real).st_uid
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise FileRefused("%s is a symlink to %s, which %s cannot reach; refusing to follow it"
                              % (path, real, account.name))
        raise FileRefused("%s is a symlink to %s, which does not exist; set follow=true to create it" % (path, real))
    if owner != account.uid:
        raise FileRefused(
            "%s is a symlink to %s, owned by uid %d, not by %s; refusing to follow it (set follow=true to allow)"
            % (path, real, owner, account.name)
        )
    return real


def read_existing(path: str, single_link: bool = False) -> bytes | None:
    """The bytes of ``path``, or ``None`` when it does not exist. Never follows a symlink, never blocks on a
    FIFO, refuses a file over :data:`MAX_FILE_BYTES`, and with ``single_link`` one with other hard links."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return None
        if exc.errno == errno.ELOOP:
            raise FileRefused("%s is a symlink; refusing to follow it" % path)
        raise denied("cannot read %s: %s" % (path, exc.strerror), exc.errno)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FileRefused("%s is not a regular file" % path)
        if single_link and info.st_nlink > 1:
            raise FileRefused("%s has %d hard links; refusing to edit a file shared with other paths as root"
                              % (path, info.st_nlink))
        if info.st_size > MAX_FILE_BYTES:
            raise FileRefused("%s is %d bytes, over the %d MiB limit of the files this collection edits; "
                              "nothing was changed" % (path, info.st_size, MAX_FILE_BYTES >> 20))
        chunks = []
        size = 0
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            size += len(chunk)
            if size > MAX_FILE_BYTES:  # grew while being read
                raise FileRefused("%s is over the %d MiB limit of the files this collection edits; nothing was "
                                  "changed" % (path, MAX_FILE_BYTES >> 20))
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_target(path: str, account: Account, follow: bool) -> tuple:
    """``(real, before, identity)`` for ``path``: the file to edit (a followed link's target), its bytes, and
    the account whose identity reads and writes it (``None``: the one running the module).

    Takes this run's lock on the file's directory and removes temp files a killed run left there.
    """
    identity = controlling_account(path)
    with acting_as(identity):
        real = resolve_target(path, account, follow)
    if identity is None and real != path:
        identity = controlling_account(real)
    with acting_as(identity):
        directory = _existing_directory(real)
        _Locks.take(directory)
        if directory == os.path.dirname(real):
            _remove_stale_temp_files(directory, os.path.basename(real))
        before = read_existing(real, single_link=identity is None and os.geteuid() == 0)
    return real, before, identity


def ensure_directory(module: AnsibleModule, path: str, account: Account, mode: int, check_mode: bool) -> bool:
    """Create ``path`` and missing parents, owned by ``account`` when under its home. Returns changed."""
    if os.path.isdir(path):
        return False
    missing = []
    current = path
    while current and not os.path.isdir(current):
        if os.path.lexists(current):
            raise FileRefused("%s exists and is not a directory" % current)
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    if check_mode:
        return True
    home = os.path.realpath(account.home) + os.sep
    for directory in reversed(missing):
        try:
            os.mkdir(directory, mode)
        except OSError as exc:
            raise denied("cannot create directory %s: %s" % (directory, exc.strerror), exc.errno)
        if account.is_other and (os.path.realpath(directory) + os.sep).startswith(home):
            os.chown(directory, account.uid, account.gid)
    return True


def file_attributes(
    module: AnsibleModule, params: dict, path: str, account: Account, default_mode: int | None, existing: bool,
    enforce_mode: bool,
) -> dict:
    """File attributes for ``path``: mode/owner/group from ``params`` (the task's), defaulting to the account.

    ``default_mode`` applies to a new file, or to every file when ``enforce_mode`` is set
    (a ``.netrc`` must be private whatever mode it had).
    """
    args = module.load_file_common_arguments(params, path=path)
    if args.get("mode") is None and default_mode is not None and (enforce_mode or not existing):
        args["mode"] = default_mode
    if account.is_other:
        if args.get("owner") is None:
            args["owner"] = account.name
        if args.get("group") is None:
            args["group"] = account.group
    return args


def _write_atomic(module: AnsibleModule, path: str, content: bytes) -> None:
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        raise FileRefused("cannot write %s: directory %s does not exist" % (path, directory))
    try:
        fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=".%s.%s." % (os.path.basename(path), TEMP_MARK),
                                        suffix=".tmp")
    except OSError as exc:
        raise denied("cannot write %s: %s" % (path, exc.strerror), exc.errno)
    module.add_cleanup_file(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        # atomic_move gives a *new* file 0666 & ~umask after the rename; a tight umask keeps
        # the file private until set_fs_attributes_if_different applies the wanted mode.
        old_umask = os.umask(0o077)
        try:
            module.atomic_move(tmp_name, path)
        finally:
            os.umask(old_umask)
    except FileRefused:
        raise
    except Exception as exc:  # atomic_move raises plain Exception
        try:
            os.unlink(tmp_name)
        except OSError:
            pass
        raise FileRefused("cannot write %s: %s" % (path, exc))


def write_backup(path: str, content: bytes) -> str:
    """A copy of ``content`` (the bytes just read) beside ``path``, named as ``backup_local`` names backups
    (``NAME.PID.YYYY-MM-DD@HH:MM:SS~``), created new and never through a link: a name taken already (a symlink
    an account planted there) gets a counter instead of being followed. Mode 0600 until the original's is copied."""
    stamp = time.strftime("%Y-%m-%d@%H:%M:%S~", time.localtime())
    base = "%s.%d.%s" % (path, os.getpid(), stamp)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    for attempt in range(100):
        name = base if attempt == 0 else "%s.%d~" % (base[:-1], attempt)
        try:
            fd = os.open(name, flags, 0o600)
        except OSError as exc:
            if exc.errno == errno.EEXIST:
                continue
            raise FileRefused("cannot back up %s to %s: %s" % (path, name, exc.strerror))
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(content)
                try:
                    os.fchmod(handle.fileno(), stat.S_IMODE(os.lstat(path).st_mode))
                except OSError:
                    pass
        except OSError as exc:
            raise FileRefused("cannot back up %s to %s: %s" % (path, name, exc.strerror))
        return name
    raise FileRefused("cannot back up %s: 100 names beside it are taken" % path)


def apply_edit(
    module: AnsibleModule,
    path: str,
    before: bytes | None,
    after: bytes | None,
    account: Account,
    params: dict,
    default_mode: int | None = 0o644,
    enforce_mode: bool = False,
) -> dict:
    """Make ``path`` hold ``after`` (``None``: remove it) when it differs from ``before``.

    ``params`` are the task's options: ``backup`` and the file attributes (mode, owner...). Honours check
    mode. Returns ``changed``, ``backup_file`` when one was made, and ``attributes_changed`` when
    mode/owner/group were corrected (a looser mode fixed).
    """
    result = {"path": path, "changed": False}
    content_changed = before != after
    if content_changed:
        result["changed"] = True
        if not module.check_mode:
            if params.get("backup") and before is not None:
                result["backup_file"] = write_backup(path, before)
            if after is None:
                try:
                    os.unlink(path)
                except OSError as exc:
                    raise denied("cannot remove %s: %s" % (path, exc.strerror), exc.errno)
            else:
                _write_atomic(module, path, after)
    if after is not None and (before is not None or not module.check_mode):
        attr_diff = {"before": {}, "after": {}}
        args = file_attributes(module, params, path, account, default_mode, before is not None, enforce_mode)
        if module.set_fs_attributes_if_different(args, False, diff=attr_diff):
            result["changed"] = True
            if before is not None:
                result["attributes_changed"] = attr_diff["after"]
    return result


def text_diff(path: str, before: bytes | None, after: bytes | None, mask: t.Callable[[str], str]) -> dict:
    """An Ansible diff entry for one file, every secret passed through ``mask``."""

    def _text(data: bytes | None) -> str:
        return "" if data is None else mask(data.decode("utf-8", errors="replace"))

    return {
        "before_header": path if before is not None else "%s (absent)" % path,
        "after_header": path if after is not None else "%s (absent)" % path,
        "before": _text(before),
        "after": _text(after),
    }


class FileEdit:
    """One file read and rendered but not written yet (see :func:`plan_edit`).

    A module plans every file it edits first, so that a file it cannot parse fails the task
    before any file is written, then commits them one by one. ``identity`` is the account whose
    identity reads and writes the file (see :func:`read_target`); ``prune_until``: when the file is
    removed, its parent directories that are left empty are removed too, up to that directory.
    """

    def __init__(
        self,
        path: str,
        real: str,
        before: bytes | None,
        after: bytes | None,
        account: Account,
        params: dict,
        default_mode: int | None = 0o644,
        enforce_mode: bool = False,
        make_parents: bool = False,
        identity: Account | None = None,
        prune_until: str | None = None,
    ) -> None:
        self.path = path
        self.real = real
        self.before = before
        self.after = after
        self.account = account
        self.params = params
        self.default_mode = default_mode
        self.enforce_mode = enforce_mode
        self.make_parents = make_parents
        self.identity = identity
        self.prune_until = prune_until
        if self.content_changes:
            self._check_writable()

    def _check_writable(self) -> None:
        """Refuse at planning time a file its identity cannot write (a directory of root's that a link in the
        account's home leads to): the task fails before any file is written, not half-way."""
        with acting_as(self.identity):
            directory = _existing_directory(self.real)
            if not os.access(directory, os.W_OK | os.X_OK, effective_ids=os.access in os.supports_effective_ids):
                who = self.identity or _account_of_uid(os.geteuid(), os.getegid())
                message = "cannot write %s: %s is not writable by %s" % (self.real, directory, who.name)
                raise FileRefused(message) if self.identity is not None else denied(message)

    @property
    def content_changes(self) -> bool:
        return self.before != self.after

    def commit(self, module: AnsibleModule) -> dict:
        """Write the file (and its missing directories when ``make_parents``); the :func:`apply_edit` result."""
        dir_changed = False
        with acting_as(self.identity):
            if self.make_parents and self.after is not None:
                dir_changed = ensure_directory(module, os.path.dirname(self.real), self.account, 0o755,
                                               module.check_mode)
            result = apply_edit(module, self.real, self.before, self.after, self.account, self.params,
                                self.default_mode, self.enforce_mode)
            if self.after is None and self.before is not None and self.prune_until:
                removed = prune_empty_directories(os.path.dirname(self.real), self.prune_until, module.check_mode)
                if removed:
                    result["directories_removed"] = removed
        result["changed"] = result["changed"] or dir_changed
        if self.real != self.path:
            result["link_target"] = self.real
        return result

    def diff(self, mask: t.Callable[[str], str]) -> dict:
        return text_diff(self.path, self.before, self.after, mask)


def prune_empty_directories(directory: str, stop: str, check_mode: bool) -> list:
    """Remove ``directory`` and its parents while they are empty, below ``stop`` (never ``stop`` itself).

    What ``state=absent`` leaves after removing the last file a directory held: the module made those
    directories for that file. A directory with anything left in it, or outside ``stop``, stays.
    """
    stop = os.path.normpath(stop)
    removed = []
    current = os.path.normpath(directory)
    while current != stop and current.startswith(stop.rstrip("/") + "/"):
        try:
            if os.listdir(current):
                break
            if not check_mode:
                os.rmdir(current)
        except OSError:
            break
        removed.append(current)
        current = os.path.dirname(current)
    return removed


def plan_edit(
    path: str,
    account: Account,
    params: dict,
    render: t.Callable[[bytes | None], bytes | None],
    **options: t.Any,
) -> FileEdit:
    """Read ``path`` (following a link as :func:`resolve_target` allows) and let ``render`` compute its new bytes.

    ``render`` gets the current bytes (``None``: no file) and returns the wanted bytes
    (``None``: no file). It raises ``ValueError`` for content it cannot parse; that
    propagates before anything is written. ``options`` are :class:`FileEdit`'s.
    """
    real, before, identity = read_target(path, account, bool(params.get("follow")))
    return FileEdit(path, real, before, render(before), account, params, identity=identity, **options)
