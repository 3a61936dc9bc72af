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

import errno
import os
import pwd
import grp
import stat
import tempfile
import typing as t

if t.TYPE_CHECKING:  # pragma: no cover
    from ansible.module_utils.basic import AnsibleModule


class FileRefused(Exception):
    """The file cannot be edited safely; the message names it and says why."""


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
    except OSError:
        raise FileRefused("%s is a symlink to %s, which does not exist; set follow=true to create it" % (path, real))
    if owner != account.uid:
        raise FileRefused(
            "%s is a symlink to %s, owned by uid %d, not by %s; refusing to follow it (set follow=true to allow)"
            % (path, real, owner, account.name)
        )
    return real


def read_existing(path: str) -> bytes | None:
    """The bytes of ``path``, or ``None`` when it does not exist. Never follows a symlink."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return None
        if exc.errno == errno.ELOOP:
            raise FileRefused("%s is a symlink; refusing to follow it" % path)
        raise FileRefused("cannot read %s: %s" % (path, exc.strerror))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise FileRefused("%s is not a regular file" % path)
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


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
            raise FileRefused("cannot create directory %s: %s" % (directory, exc.strerror))
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
        fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=".%s." % os.path.basename(path), suffix=".tmp")
    except OSError as exc:
        raise FileRefused("cannot write %s: %s" % (path, exc.strerror))
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
                result["backup_file"] = module.backup_local(path)
            if after is None:
                try:
                    os.unlink(path)
                except OSError as exc:
                    raise FileRefused("cannot remove %s: %s" % (path, exc.strerror))
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
    before any file is written, then commits them one by one.
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

    @property
    def content_changes(self) -> bool:
        return self.before != self.after

    def commit(self, module: AnsibleModule) -> dict:
        """Write the file (and its missing directories when ``make_parents``); the :func:`apply_edit` result."""
        dir_changed = False
        if self.make_parents and self.after is not None:
            dir_changed = ensure_directory(module, os.path.dirname(self.real), self.account, 0o755, module.check_mode)
        result = apply_edit(module, self.real, self.before, self.after, self.account, self.params, self.default_mode,
                            self.enforce_mode)
        result["changed"] = result["changed"] or dir_changed
        if self.real != self.path:
            result["link_target"] = self.real
        return result

    def diff(self, mask: t.Callable[[str], str]) -> dict:
        return text_diff(self.path, self.before, self.after, mask)


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
    real = resolve_target(path, account, bool(params.get("follow")))
    before = read_existing(real)
    return FileEdit(path, real, before, render(before), account, params, **options)
