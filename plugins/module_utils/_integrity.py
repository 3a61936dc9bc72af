# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Checking a conda prefix's installed files against what conda recorded in ``conda-meta/*.json``.

What conda records (conda/core/path_actions.py): for every linked file ``paths_data.paths[]`` has ``_path``,
``path_type``, the package's ``sha256`` and ``size_in_bytes``, and ``sha256_in_prefix``, the digest of the
file as installed. For a file with a ``prefix_placeholder`` conda rewrites the placeholder while linking, so
only ``sha256_in_prefix`` describes the installed file (and ``size_in_bytes`` stays the package file's size);
for the other files both digests are the same. ``conda doctor`` (health_checks/altered_files.py) compares
``sha256_in_prefix`` too and leaves ``.pyc``/``.pyo`` files alone.

Every file is looked at with ``lstat`` first; a file is hashed only when its size cannot already tell (sizes
differ: altered, without reading it). Nothing follows a symlink: a recorded path whose directories lead out of
the prefix is reported, never read. An optional :class:`StatCache` remembers digests keyed on size, mtime,
ctime, inode and device, so a rerun hashes only what changed.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import json
import os
import stat
import time

# conda-meta records: the biggest packages (thousands of files) are a few MiB.
MAX_RECORD_BYTES = 64 << 20
MAX_CACHE_BYTES = 256 << 20
CHUNK = 1 << 20
# A digest is cached only for a file whose mtime and ctime are this much older than the hash: a write within the
# same timestamp tick could otherwise leave size, mtime and ctime unchanged ("racily clean", as git calls it).
RACY_NS = 2 * 10 ** 9
CACHE_VERSION = 1

# Top-level names of a prefix that are conda's own bookkeeping, not package files.
BOOKKEEPING_TOP = ("conda-meta", "pkgs", "envs", ".condarc", "condarc", "condarc.d", ".nonadmin", ".conda_lock")
# Anywhere: byte code Python writes, and what conda leaves behind while or after replacing files.
BYTECODE_DIR = "__pycache__"
SKIPPED_SUFFIXES = (".pyc", ".pyo", ".conda_trash")
SKIPPED_PREFIXES = (".cph_tmp",)
PLACEHOLDER_KINDS = ("hardlink", None, "")


class RecordError(Exception):
    """A conda-meta record that cannot be read or parsed; the message names it."""


# ---------------------------------------------------------------------------------------------------------------
# reading, bounded and without following links


def read_bounded(path: str, limit: int) -> bytes:
    """The bytes of the regular file ``path``; never follows a final symlink, never blocks on a FIFO, refuses
    more than ``limit`` bytes."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
                 | getattr(os, "O_NOCTTY", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        if info.st_size > limit:
            raise OSError(errno.EFBIG, "%d bytes, over the limit of %d MiB" % (info.st_size, limit >> 20))
        chunks, size = [], 0
        while True:
            chunk = os.read(fd, CHUNK)
            if not chunk:
                return b"".join(chunks)
            size += len(chunk)
            if size > limit:
                raise OSError(errno.EFBIG, "grew over the limit of %d MiB while read" % (limit >> 20))
            chunks.append(chunk)
    finally:
        os.close(fd)


class ChangedWhileRead(Exception):
    """The file at the path is not the one ``lstat`` saw, or it grew while hashed."""


def sha256_of(path: str, seen: os.stat_result) -> str:
    """The sha256 of the regular file ``path`` that ``lstat`` returned ``seen`` for: opened without following a
    link, checked to be that very file, and read no further than its size."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
                 | getattr(os, "O_NOCTTY", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or (info.st_dev, info.st_ino) != (seen.st_dev, seen.st_ino):
            raise ChangedWhileRead(path)
        digest = hashlib.sha256()
        left = info.st_size
        while left > 0:
            chunk = os.read(fd, min(CHUNK, left))
            if not chunk:
                raise ChangedWhileRead(path)  # shrank
            digest.update(chunk)
            left -= len(chunk)
        if os.read(fd, 1):
            raise ChangedWhileRead(path)  # grew
        return digest.hexdigest()
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------------------------
# what conda recorded


def safe_relative(path) -> str | None:
    """``path`` as a clean relative path inside the prefix, or None when it is absolute, climbs out or is odd."""
    if not isinstance(path, str) or not path or "\0" in path or path.startswith("/"):
        return None
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return "/".join(parts)


def expectation(entry: dict) -> dict:
    """What can be checked for one ``paths_data.paths[]`` entry.

    ``kind``: ``file`` (content), ``symlink``, ``directory``, ``entry_point`` (a script conda wrote: existence
    and, when recorded, size), ``pyc`` (byte code Python may rewrite: not checked) or ``skip``.
    ``sha256``: the digest of the installed file, or None when conda recorded none. ``size``: the installed size,
    or None when it cannot be known without reading (a rewritten placeholder changes a text file's length).
    """
    path_type = entry.get("path_type") or "hardlink"
    placeholder = entry.get("prefix_placeholder")
    path = entry.get("_path") or ""
    if path_type == "softlink":
        return dict(kind="symlink", sha256=None, size=None, placeholder=False)
    if path_type == "directory":
        return dict(kind="directory", sha256=None, size=None, placeholder=False)
    if path_type == "pyc_file" or path.endswith((".pyc", ".pyo")):
        return dict(kind="pyc", sha256=None, size=None, placeholder=False)
    if path_type in ("unix_python_entry_point", "windows_python_entry_point_script",
                     "windows_python_entry_point_exe"):
        return dict(kind="entry_point", sha256=None, size=_int_or_none(entry.get("size_in_bytes")),
                    placeholder=False)
    if path_type == "linked_package_record":
        return dict(kind="skip", sha256=None, size=None, placeholder=False)
    in_prefix = _hex_or_none(entry.get("sha256_in_prefix"))
    if placeholder:
        # The package's sha256 and size describe the file before conda wrote the prefix into it.
        size = _int_or_none(entry.get("size_in_bytes")) if entry.get("file_mode") == "binary" else None
        return dict(kind="file", sha256=in_prefix, size=size if in_prefix else None, placeholder=True)
    return dict(kind="file", sha256=in_prefix or _hex_or_none(entry.get("sha256")),
                size=_int_or_none(entry.get("size_in_bytes")), placeholder=False)


def _int_or_none(value):
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _hex_or_none(value):
    if isinstance(value, str) and len(value) == 64:
        try:
            int(value, 16)
        except ValueError:
            return None
        return value.lower()
    return None


def load_records(prefix: str) -> tuple[list, list]:
    """``(packages, problems)``: one ``{"package", "name", "version", "paths": [(relpath, expectation)]}`` per
    ``conda-meta/*.json`` (sorted), and what could not be read."""
    meta = os.path.join(prefix, "conda-meta")
    packages, problems = [], []
    try:
        names = sorted(entry.name for entry in os.scandir(meta)
                       if entry.name.endswith(".json") and entry.is_file(follow_symlinks=False))
    except OSError as exc:
        return [], ["cannot list %s: %s" % (meta, exc.strerror or exc)]
    for name in names:
        path = os.path.join(meta, name)
        try:
            data = json.loads(read_bounded(path, MAX_RECORD_BYTES).decode("utf-8"))
        except OSError as exc:
            problems.append("cannot read %s: %s" % (path, exc.strerror or exc))
            continue
        except ValueError as exc:
            problems.append("%s is not a conda-meta JSON record: %s" % (path, exc))
            continue
        if not isinstance(data, dict):
            problems.append("%s is not a conda-meta JSON record: not an object" % path)
            continue
        entries = None
        paths_data = data.get("paths_data")
        if isinstance(paths_data, dict) and isinstance(paths_data.get("paths"), list):
            entries = [e for e in paths_data["paths"] if isinstance(e, dict)]
        elif isinstance(data.get("files"), list):  # old records: names only, existence is all that can be checked
            entries = [{"_path": f, "path_type": "hardlink"} for f in data["files"] if isinstance(f, str)]
        if entries is None:
            problems.append("%s records no files (neither paths_data nor files)" % path)
            entries = []
        paths = []
        for entry in entries:
            relative = safe_relative(entry.get("_path"))
            if relative is None:
                problems.append("%s records a path outside the prefix: %r" % (path, entry.get("_path")))
                continue
            paths.append((relative, expectation(entry)))
        packages.append(dict(package=name[:-len(".json")], name=str(data.get("name", "")),
                             version=str(data.get("version", "")), paths=paths))
    return packages, problems


# ---------------------------------------------------------------------------------------------------------------
# the cache of verified digests


class StatCache:
    """Digests of files hashed before, each valid only while size, mtime_ns, ctime_ns, inode and device are the
    same. Nobody but root can set a ctime, and every write sets it, so an entry cannot make a changed file pass
    unless the cache file itself is forged: the caller keeps it where only the module's own account can write."""

    def __init__(self, entries: dict | None = None) -> None:
        self.entries = entries or {}
        self.fresh = {}
        self.started_ns = time.time_ns()

    @staticmethod
    def key(info: os.stat_result) -> list:
        return [info.st_size, info.st_mtime_ns, info.st_ctime_ns, info.st_ino, info.st_dev]

    def lookup(self, path: str, info: os.stat_result) -> str | None:
        item = self.entries.get(path)
        if isinstance(item, list) and len(item) == 6 and item[:5] == self.key(info):
            self.fresh[path] = item
            return item[5]
        return None

    def store(self, path: str, info: os.stat_result, digest: str) -> None:
        if max(info.st_mtime_ns, info.st_ctime_ns) < self.started_ns - RACY_NS:
            self.fresh[path] = self.key(info) + [digest]

    def merged(self, checked_prefixes: list) -> dict:
        """The entries to save: this run's for the prefixes it checked, the old ones for every other prefix."""
        roots = tuple(p.rstrip("/") + "/" for p in checked_prefixes)
        kept = dict((k, v) for k, v in self.entries.items() if not k.startswith(roots))
        kept.update(self.fresh)
        return kept


def load_cache(path: str) -> StatCache:
    """The cache in ``path`` (a missing or unparsable file is an empty cache)."""
    try:
        data = json.loads(read_bounded(path, MAX_CACHE_BYTES).decode("utf-8"))
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            return StatCache()
        raise
    except ValueError:
        return StatCache()
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION or not isinstance(data.get("entries"), dict):
        return StatCache()
    return StatCache(data["entries"])


def save_cache(path: str, entries: dict) -> None:
    """Write ``entries`` to ``path`` atomically: a new 0600 file beside it, then renamed over it."""
    directory = os.path.dirname(path) or "."
    temp = os.path.join(directory, ".%s.condafleet.%d.tmp" % (os.path.basename(path), os.getpid()))
    data = json.dumps({"version": CACHE_VERSION, "entries": entries}, separators=(",", ":")).encode("utf-8")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise


# ---------------------------------------------------------------------------------------------------------------
# checking one environment


class Findings:
    """What one environment's check found, lists capped at ``max_listed`` (counts are always complete)."""

    def __init__(self, prefix: str, max_listed: int) -> None:
        self.prefix = prefix
        self.max_listed = max_listed
        self.lists = dict(altered=[], missing=[], unverified=[], unrecorded=[])
        self.counts = dict(altered=0, missing=0, unverified=0, unrecorded=0)
        self.by_package = {}
        self.stats = dict(packages_checked=0, files=0, hashed=0, hashed_bytes=0, from_cache=0, size_mismatch=0)
        self.problems = []

    def add(self, what: str, item, package: str | None = None) -> None:
        self.counts[what] += 1
        if len(self.lists[what]) < self.max_listed:
            self.lists[what].append(item)
        if package is not None and what in ("altered", "missing"):
            found = self.by_package.setdefault(package, dict(package=package, altered=[], missing=[]))
            if len(found[what]) < self.max_listed:
                found[what].append(item["path"])

    def result(self) -> dict:
        clean = not (self.counts["altered"] or self.counts["missing"] or self.counts["unverified"] or self.problems)
        return dict(prefix=self.prefix, clean=clean, counts=dict(self.counts), truncated=any(
            self.counts[k] > len(self.lists[k]) for k in self.counts), packages=sorted(
            self.by_package.values(), key=lambda p: p["package"]), problems=list(self.problems),
            **dict(self.lists, **self.stats))


class InsideCheck:
    """Whether a directory of the prefix really lies in it: a symlink on the way may lead out. Cached per
    directory; a recorded path is only looked at when its directory passes."""

    def __init__(self, prefix: str) -> None:
        self.real_prefix = os.path.realpath(prefix)
        self.known = {"": True}

    def inside(self, relative_dir: str) -> bool:
        answer = self.known.get(relative_dir)
        if answer is None:
            real = os.path.realpath(os.path.join(self.real_prefix, relative_dir))
            answer = real == self.real_prefix or real.startswith(self.real_prefix.rstrip("/") + "/")
            self.known[relative_dir] = answer
        return answer


def check_file(full: str, info: os.stat_result, expected: dict, cache: StatCache | None, stats: dict):
    """None when the regular file ``full`` matches ``expected``, else ``(reason, details)``."""
    size = expected["size"]
    if size is not None and info.st_size != size:
        stats["size_mismatch"] += 1
        return "size", dict(expected_size=size, size=info.st_size)
    if expected["sha256"] is None:
        return None  # conda recorded no digest of the installed file (see expectation())
    digest = cache.lookup(full, info) if cache is not None else None
    if digest is None:
        digest = sha256_of(full, info)
        stats["hashed"] += 1
        stats["hashed_bytes"] += info.st_size
        if cache is not None:
            cache.store(full, info, digest)
    else:
        stats["from_cache"] += 1
    if digest != expected["sha256"]:
        return "sha256", dict(expected_sha256=expected["sha256"], sha256=digest, size=info.st_size)
    return None


def _type_name(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symlink"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISREG(mode):
        return "a regular file"
    return "a special file (FIFO, socket or device)"


def check_recorded(prefix: str, packages: list, findings: Findings, cache: StatCache | None) -> set:
    """Check every recorded path of ``packages``; returns the set of recorded relative paths."""
    guard = InsideCheck(prefix)
    recorded = set()
    stats = findings.stats
    for record in packages:
        stats["packages_checked"] += 1
        package = record["package"]
        for relative, expected in record["paths"]:
            recorded.add(relative)
            kind = expected["kind"]
            if kind in ("skip", "pyc"):
                continue
            stats["files"] += 1
            item = dict(package=package, path=relative)
            if not guard.inside(os.path.dirname(relative)):
                findings.add("altered", dict(item, reason="outside", detail="a directory on the way is a symlink "
                                             "leading out of the prefix; not followed"), package)
                continue
            full = os.path.join(prefix, relative)
            try:
                info = os.lstat(full)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ENOTDIR):
                    findings.add("missing", item, package)
                else:
                    findings.add("unverified", dict(item, reason=exc.strerror or str(exc)))
                continue
            mode = info.st_mode
            wanted = dict(symlink=stat.S_ISLNK, directory=stat.S_ISDIR).get(kind, stat.S_ISREG)
            if not wanted(mode):
                findings.add("altered", dict(item, reason="type", detail="%s where conda installed %s" % (
                    _type_name(mode), dict(symlink="a symlink", directory="a directory").get(kind, "a regular file"))),
                    package)
                continue
            if kind == "entry_point":
                if expected["size"] is not None and info.st_size != expected["size"]:
                    stats["size_mismatch"] += 1
                    findings.add("altered", dict(item, reason="size", expected_size=expected["size"],
                                                 size=info.st_size), package)
                continue
            if kind != "file":
                continue
            try:
                outcome = check_file(full, info, expected, cache, stats)
            except ChangedWhileRead:
                findings.add("altered", dict(item, reason="changed", detail="replaced or resized while it was read"),
                             package)
                continue
            except OSError as exc:
                findings.add("unverified", dict(item, reason=exc.strerror or str(exc)))
                continue
            if outcome is not None:
                reason, details = outcome
                findings.add("altered", dict(item, reason=reason, **details), package)
    return recorded


def is_bookkeeping(relative: str, is_dir: bool) -> bool:
    """True for what conda itself (or Python) writes in a prefix outside any package: never 'unrecorded'."""
    name = relative.rsplit("/", 1)[-1]
    if "/" not in relative and name in BOOKKEEPING_TOP:
        return True
    if is_dir:
        return name == BYTECODE_DIR
    return name.endswith(SKIPPED_SUFFIXES) or name.startswith(SKIPPED_PREFIXES)


def find_unrecorded(prefix: str, recorded: set, findings: Findings, exclude: list, skip_paths: set) -> None:
    """Every file, symlink or special file under ``prefix`` that no package records; never enters a symlink."""
    stack = [""]
    while stack:
        relative_dir = stack.pop()
        directory = os.path.join(prefix, relative_dir) if relative_dir else prefix
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            if relative_dir:
                findings.add("unverified", dict(package=None, path=relative_dir, reason="cannot list: %s"
                                                % (exc.strerror or exc)))
            continue
        for entry in entries:
            relative = relative_dir + "/" + entry.name if relative_dir else entry.name
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = False
            if is_bookkeeping(relative, is_dir) or os.path.join(prefix, relative) in skip_paths:
                continue
            if exclude and any(fnmatch.fnmatchcase(relative, pattern) for pattern in exclude):
                continue
            if is_dir:
                stack.append(relative)
                continue
            if relative not in recorded:
                findings.add("unrecorded", relative)


def check_environment(prefix: str, cache: StatCache | None = None, unrecorded: bool = True,
                      exclude: list | None = None, skip_paths: set | None = None, max_listed: int = 1000) -> dict:
    """Check one environment (or the base prefix) completely; the result is what the module returns for it."""
    started = time.monotonic()
    findings = Findings(prefix, max_listed)
    packages, problems = load_records(prefix)
    findings.problems.extend(problems)
    recorded = check_recorded(prefix, packages, findings, cache)
    if unrecorded:
        find_unrecorded(prefix, recorded, findings, list(exclude or []), set(skip_paths or ()))
    result = findings.result()
    result["seconds"] = round(time.monotonic() - started, 3)
    return result
