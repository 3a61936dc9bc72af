# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""condafleet.proxy.conda_integrity on synthetic prefixes: clean, altered, missing, unrecorded, placeholders,
symlinks, the cache, other accounts, and the time a 10,000-file prefix takes."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time

import pytest

from modulerun import call_module

from ansible_collections.condafleet.proxy.plugins.module_utils import _integrity

PLACEHOLDER = "/opt/anaconda1anaconda2anaconda3"
NOBODY = 65534


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def add_package(prefix, name, files: dict, placeholders: dict | None = None, links: dict | None = None,
                extra: list | None = None) -> str:
    """Install a fake package into ``prefix`` the way conda records one: ``files`` (path -> bytes) as hardlinks;
    ``placeholders`` (path -> package bytes holding PLACEHOLDER) rewritten to the prefix, with the package's sha256
    and size and the installed file's sha256_in_prefix; ``links`` (path -> target) as softlinks."""
    prefix = str(prefix)
    paths = []
    for rel, data in files.items():
        full = os.path.join(prefix, rel)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as handle:
            handle.write(data)
        paths.append({"_path": rel, "path_type": "hardlink", "sha256": sha(data), "size_in_bytes": len(data),
                      "sha256_in_prefix": sha(data)})
    for rel, data in (placeholders or {}).items():
        installed = data.replace(PLACEHOLDER.encode(), prefix.encode())
        full = os.path.join(prefix, rel)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as handle:
            handle.write(installed)
        paths.append({"_path": rel, "path_type": "hardlink", "prefix_placeholder": PLACEHOLDER, "file_mode": "text",
                      "sha256": sha(data), "size_in_bytes": len(data), "sha256_in_prefix": sha(installed)})
    for rel, target in (links or {}).items():
        full = os.path.join(prefix, rel)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        os.symlink(target, full)
        paths.append({"_path": rel, "path_type": "softlink", "sha256": sha(b"whatever"), "size_in_bytes": 8})
    paths.extend(extra or [])
    os.makedirs(os.path.join(prefix, "conda-meta"), exist_ok=True)
    dist = "%s-1.0-0" % name
    record = {"name": name, "version": "1.0", "build": "0", "files": [p["_path"] for p in paths],
              "paths_data": {"paths_version": 1, "paths": paths}}
    with open(os.path.join(prefix, "conda-meta", dist + ".json"), "w") as handle:
        json.dump(record, handle)
    return dist


def base_prefix(root) -> str:
    prefix = os.path.join(str(root), "conda")
    add_package(prefix, "alpha", {"bin/alpha": b"#!/bin/sh\necho alpha\n", "share/alpha/data.txt": b"a" * 100},
                placeholders={"etc/alpha.conf": b"root=%s\n" % PLACEHOLDER.encode()},
                links={"lib/libalpha.so": "libalpha.so.1"},
                extra=[{"_path": "lib/python3.12/site-packages/alpha/__pycache__/x.cpython-312.pyc",
                        "path_type": "pyc_file"}])
    with open(os.path.join(prefix, "lib", "libalpha.so.1"), "wb") as handle:
        handle.write(b"\x7fELF fake")
    add_package(prefix, "beta", {"lib/libalpha.so.1": b"\x7fELF fake", "share/beta/readme": b"beta\n"})
    with open(os.path.join(prefix, "conda-meta", "history"), "w") as handle:
        handle.write("==> 2026-01-01 <==\n")
    return prefix


def audit(prefix, **extra) -> dict:
    check = extra.pop("_check", False)
    return call_module("conda_integrity", dict(prefix=str(prefix), **extra), check=check)


# ----------------------------------------------------------------------------- the main findings


def test_clean_prefix_is_clean_and_every_file_was_hashed(tmp_path):
    prefix = base_prefix(tmp_path)
    result = audit(prefix)
    assert not result.get("failed"), result
    assert result["clean"] and result["changed"] is False
    env = result["environments"][0]
    assert env["prefix"] == os.path.realpath(prefix)
    assert env["counts"] == dict(altered=0, missing=0, unverified=0, unrecorded=0)
    # 3 + 1 placeholder files of alpha, 2 of beta; the symlink is checked without hashing; the pyc not at all
    assert env["hashed"] == 5 and env["files"] == 6 and env["packages_checked"] == 2
    assert result["summary"]["environments"] == 1


def test_same_size_edit_is_altered_by_sha256_and_other_size_without_reading(tmp_path):
    prefix = base_prefix(tmp_path)
    with open(os.path.join(prefix, "share/alpha/data.txt"), "wb") as handle:
        handle.write(b"b" * 100)  # same size: only the digest tells
    with open(os.path.join(prefix, "share/beta/readme"), "ab") as handle:
        handle.write(b"more\n")
    result = audit(prefix)
    assert result["failed"] and "2 altered" in result["msg"]
    env = result["environments"][0]
    by_path = dict((a["path"], a) for a in env["altered"])
    assert by_path["share/alpha/data.txt"]["reason"] == "sha256"
    assert by_path["share/alpha/data.txt"]["expected_sha256"] == sha(b"a" * 100)
    assert by_path["share/beta/readme"] == dict(package="beta-1.0-0", path="share/beta/readme", reason="size",
                                                expected_size=5, size=10)
    assert env["size_mismatch"] == 1 and env["hashed"] == 4  # the resized file was not read
    assert {p["package"] for p in env["packages"]} == {"alpha-1.0-0", "beta-1.0-0"}
    assert os.path.join(os.path.realpath(prefix), "share/beta/readme") in result["altered"]


def test_missing_fails_and_report_only_lists_it_without_failing(tmp_path):
    prefix = base_prefix(tmp_path)
    os.unlink(os.path.join(prefix, "bin/alpha"))
    os.unlink(os.path.join(prefix, "lib/libalpha.so"))  # a recorded softlink
    result = audit(prefix)
    assert result["failed"] and "2 missing" in result["msg"]
    env = result["environments"][0]
    assert sorted(m["path"] for m in env["missing"]) == ["bin/alpha", "lib/libalpha.so"]
    assert env["packages"] == [dict(package="alpha-1.0-0", altered=[], missing=["bin/alpha", "lib/libalpha.so"])]

    reported = audit(prefix, report_only=True)
    assert not reported.get("failed") and reported["clean"] is False
    assert len(reported["missing"]) == 2 and reported["summary"]["missing"] == 2


def test_unrecorded_files_are_listed_but_bookkeeping_and_bytecode_are_not(tmp_path):
    prefix = base_prefix(tmp_path)
    for rel in ("bin/dropped-in", "share/alpha/extra.txt", "pkgs/cached.tar.bz2", "conda-meta/state",
                "lib/python3.12/site-packages/alpha/__pycache__/y.cpython-312.pyc", "share/beta/old.pyc",
                ".condarc", "lib/x.conda_trash", "unknown/deep/tree/file", "notes/skip-me.log"):
        full = os.path.join(prefix, rel)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        open(full, "w").close()
    os.makedirs(os.path.join(prefix, "empty-dir"))
    result = audit(prefix, exclude=["notes/*.log"])
    assert not result.get("failed"), result  # unrecorded never fails
    env = result["environments"][0]
    assert sorted(env["unrecorded"]) == ["bin/dropped-in", "share/alpha/extra.txt", "unknown/deep/tree/file"]
    assert env["counts"]["unrecorded"] == 3 and result["clean"]

    assert audit(prefix, unrecorded=False)["environments"][0]["unrecorded"] == []


def test_placeholder_files_compare_sha256_in_prefix_not_the_package_digest(tmp_path):
    prefix = base_prefix(tmp_path)
    conf = os.path.join(prefix, "etc/alpha.conf")
    # the installed file is longer than the package's: the size is not compared, sha256_in_prefix is
    assert os.path.getsize(conf) != len(b"root=%s\n" % PLACEHOLDER.encode()) or len(prefix) == len(PLACEHOLDER)
    assert audit(prefix)["clean"]
    # back to the package's bytes (digest `sha256` matches, `sha256_in_prefix` does not): altered
    with open(conf, "wb") as handle:
        handle.write(b"root=%s\n" % PLACEHOLDER.encode())
    result = audit(prefix)
    assert result["failed"]
    assert [(a["path"], a["reason"]) for a in result["environments"][0]["altered"]] == [("etc/alpha.conf", "sha256")]


def test_placeholder_without_sha256_in_prefix_is_checked_for_presence_only():
    entry = {"_path": "bin/x", "path_type": "hardlink", "prefix_placeholder": PLACEHOLDER, "file_mode": "text",
             "sha256": "0" * 64, "size_in_bytes": 3}
    assert _integrity.expectation(entry) == dict(kind="file", sha256=None, size=None, placeholder=True)
    binary = dict(entry, file_mode="binary", sha256_in_prefix="A" * 64)
    assert _integrity.expectation(binary) == dict(kind="file", sha256="a" * 64, size=3, placeholder=True)
    old = {"_path": "bin/y", "sha256": "1" * 64, "size_in_bytes": 9}  # records without sha256_in_prefix
    assert _integrity.expectation(old)["sha256"] == "1" * 64
    assert _integrity.expectation({"_path": "a.pyc", "path_type": "hardlink"})["kind"] == "pyc"
    assert _integrity.expectation({"_path": "bin/e", "path_type": "unix_python_entry_point",
                                   "size_in_bytes": 200}) == dict(kind="entry_point", sha256=None, size=200,
                                                                  placeholder=False)


@pytest.mark.parametrize("path", ["/etc/passwd", "../x", "a/../../x", "", None, "a\0b"])
def test_paths_outside_the_prefix_are_refused(path):
    assert _integrity.safe_relative(path) is None
    assert _integrity.safe_relative("./a//b") == "a/b"


def test_a_record_naming_a_path_outside_the_prefix_fails_and_is_not_read(tmp_path):
    prefix = base_prefix(tmp_path)
    add_package(prefix, "evil", {}, extra=[{"_path": "../../../etc/shadow", "path_type": "hardlink",
                                            "sha256": "0" * 64, "size_in_bytes": 1}])
    result = audit(prefix)
    assert result["failed"] and "outside the prefix" in result["environments"][0]["problems"][0]


# ----------------------------------------------------------------------------- symlinks


def test_a_file_replaced_by_a_symlink_is_altered_and_never_followed(tmp_path):
    prefix = base_prefix(tmp_path)
    secret = tmp_path / "secret"
    secret.write_bytes(b"a" * 100)  # the very bytes the record wants: following the link would pass
    data = os.path.join(prefix, "share/alpha/data.txt")
    os.unlink(data)
    os.symlink(str(secret), data)
    result = audit(prefix)
    altered = result["environments"][0]["altered"]
    assert result["failed"] and [(a["path"], a["reason"]) for a in altered] == [("share/alpha/data.txt", "type")]
    assert "a symlink where conda installed a regular file" in altered[0]["detail"]


def test_a_directory_symlinked_out_of_the_prefix_is_reported_not_read_and_not_walked(tmp_path):
    prefix = base_prefix(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "readme").write_bytes(b"beta\n")  # would match if the link were followed
    (outside / "planted").write_bytes(b"x")
    shutil.rmtree(os.path.join(prefix, "share/beta"))
    os.symlink(str(outside), os.path.join(prefix, "share/beta"))
    result = audit(prefix)
    env = result["environments"][0]
    assert [(a["path"], a["reason"]) for a in env["altered"]] == [("share/beta/readme", "outside")]
    assert env["unrecorded"] == ["share/beta"]  # the link itself; never entered
    assert result["failed"]


def test_a_recorded_softlink_replaced_by_a_file_is_altered(tmp_path):
    prefix = base_prefix(tmp_path)
    link = os.path.join(prefix, "lib/libalpha.so")
    os.unlink(link)
    with open(link, "wb") as handle:
        handle.write(b"\x7fELF other")
    altered = audit(prefix)["environments"][0]["altered"]
    assert [(a["path"], a["reason"]) for a in altered] == [("lib/libalpha.so", "type")]


def test_a_fifo_at_a_recorded_path_is_altered_without_blocking(tmp_path):
    prefix = base_prefix(tmp_path)
    path = os.path.join(prefix, "share/beta/readme")
    os.unlink(path)
    os.mkfifo(path)
    altered = audit(prefix)["environments"][0]["altered"]
    assert [(a["path"], a["reason"]) for a in altered] == [("share/beta/readme", "type")]


# ----------------------------------------------------------------------------- environments


def test_envs_and_named_environments_are_checked_and_not_unrecorded_in_the_base(tmp_path):
    prefix = base_prefix(tmp_path)
    add_package(os.path.join(prefix, "envs", "one"), "gamma", {"bin/gamma": b"g"})
    add_package(os.path.join(prefix, "envs", "two"), "delta", {"bin/delta": b"d"})
    os.makedirs(os.path.join(prefix, "envs", "not-an-env"))
    other = tmp_path / "elsewhere"
    add_package(other, "eps", {"bin/eps": b"e"})
    os.unlink(os.path.join(prefix, "envs", "two", "bin", "delta"))

    result = audit(prefix, envs=True, environments=[str(other)])
    real = os.path.realpath(prefix)
    assert [e["prefix"] for e in result["environments"]] == [
        real, real + "/envs/one", real + "/envs/two", os.path.realpath(str(other))]
    assert result["missing"] == [real + "/envs/two/bin/delta"]
    assert result["environments"][0]["unrecorded"] == []
    assert "envs/two: 1 missing" in result["msg"]

    named = audit(prefix, environments=["one"])
    assert [e["prefix"] for e in named["environments"]] == [real, real + "/envs/one"] and named["clean"]


def test_bad_input_fails_even_with_report_only(tmp_path):
    result = audit(tmp_path, report_only=True)
    assert result["failed"] and "is not a conda prefix" in result["msg"]
    prefix = base_prefix(tmp_path)
    result = audit(prefix, environments=["nope"], report_only=True)
    assert result["failed"] and "envs/nope" in result["msg"]
    assert audit("relative/path")["failed"]


def test_an_unparsable_record_fails(tmp_path):
    prefix = base_prefix(tmp_path)
    with open(os.path.join(prefix, "conda-meta", "broken-1-0.json"), "w") as handle:
        handle.write("{not json")
    result = audit(prefix)
    assert result["failed"] and "unreadable record" in result["msg"]


def test_lists_are_capped_but_counts_are_complete(tmp_path):
    prefix = os.path.join(str(tmp_path), "conda")
    add_package(prefix, "many", dict(("f/%03d" % i, b"x") for i in range(30)))
    shutil.rmtree(os.path.join(prefix, "f"))
    result = audit(prefix, max_listed=5, report_only=True)
    env = result["environments"][0]
    assert env["counts"]["missing"] == 30 and len(env["missing"]) == 5 and env["truncated"]
    assert len(result["missing"]) == 5


# ----------------------------------------------------------------------------- the cache


def test_cache_skips_unchanged_files_and_never_passes_a_changed_one(tmp_path):
    prefix = base_prefix(tmp_path)
    cache = str(tmp_path / "integrity.json")
    first = audit(prefix, cache=cache)
    assert first["clean"] and first["summary"]["hashed"] == 5
    # files written less than 2 s ago are not remembered: a change in the same timestamp tick would be invisible
    assert audit(prefix, cache=cache)["summary"]["from_cache"] == 0
    time.sleep(_integrity.RACY_NS / 1e9 + 0.1)
    audit(prefix, cache=cache)
    warm = audit(prefix, cache=cache)
    assert warm["summary"]["hashed"] == 0 and warm["summary"]["from_cache"] == 5
    assert oct(os.stat(cache).st_mode & 0o777) == "0o600"

    # same size, mtime put back: the ctime (and only root can set it) still tells, so it is hashed again
    data = os.path.join(prefix, "share/alpha/data.txt")
    before = os.stat(data)
    with open(data, "r+b") as handle:
        handle.write(b"b")
    os.utime(data, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert os.stat(data).st_mtime_ns == before.st_mtime_ns
    tampered = audit(prefix, cache=cache)
    assert tampered["failed"] and tampered["altered"] == [os.path.join(os.path.realpath(prefix),
                                                                       "share/alpha/data.txt")]
    assert tampered["summary"]["hashed"] == 1 and tampered["summary"]["from_cache"] == 4

    # a forged entry for a changed file needs all of size, mtime, ctime, inode and device: a copy elsewhere fails
    with open(cache) as handle:
        entries = json.load(handle)["entries"]
    assert all(len(v) == 6 for v in entries.values())


def test_check_mode_reads_the_cache_but_does_not_write_it(tmp_path):
    prefix = base_prefix(tmp_path)
    cache = str(tmp_path / "integrity.json")
    result = audit(prefix, cache=cache, _check=True)
    assert result["clean"] and not os.path.exists(cache)


def test_a_cache_others_could_write_is_refused(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    prefix = base_prefix(tmp_path)
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(str(theirs), NOBODY, NOBODY)
    result = audit(prefix, cache=str(theirs / "integrity.json"), report_only=True)
    assert result["failed"] and "controls" in result["msg"]

    loose = tmp_path / "loose.json"
    loose.write_text("{}")
    os.chmod(str(loose), 0o666)
    result = audit(prefix, cache=str(loose), report_only=True)
    assert result["failed"] and "writable by it alone" in result["msg"]
    assert audit(prefix, cache=str(tmp_path / "no" / "dir.json"))["failed"]


# ----------------------------------------------------------------------------- other accounts


@pytest.fixture
def shared_tmp():
    """A directory every account may traverse (pytest's own is root's, 0700)."""
    path = tempfile.mkdtemp(prefix="condafleet-integrity-")
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_as_root_an_accounts_prefix_is_read_as_that_account(shared_tmp):
    if os.geteuid() != 0:
        pytest.skip("needs root")
    prefix = base_prefix(shared_tmp)
    for dirpath, dirnames, filenames in os.walk(prefix):
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), NOBODY, NOBODY)
    os.chown(prefix, NOBODY, NOBODY)
    # root's private file, hard-linked into the account's prefix with the recorded bytes: as root it would pass
    private = os.path.join(shared_tmp, "root-only")
    with open(private, "wb") as handle:
        handle.write(b"beta\n")
    os.chmod(private, 0o600)
    os.unlink(os.path.join(prefix, "share/beta/readme"))
    os.link(private, os.path.join(prefix, "share/beta/readme"))

    for args in (dict(), dict(user="nobody")):
        result = audit(prefix, **args)
        env = result["environments"][0]
        assert env["identity"] == "nobody", args
        assert [(u["path"], u["reason"]) for u in env["unverified"]] == [("share/beta/readme", "Permission denied")]
        assert result["failed"] and "1 unverified" in result["msg"]
    assert os.geteuid() == 0 and os.getegid() == 0  # the identity switch was undone


def test_another_user_needs_root(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("runs as root")
    assert audit(base_prefix(tmp_path), user="root")["failed"]


# ----------------------------------------------------------------------------- 10,000 files


def build_large_prefix(root, packages=200, per_package=50, size=4096) -> str:
    prefix = os.path.join(str(root), "big")
    for p in range(packages):
        files = {}
        for f in range(per_package):
            data = (b"%d-%d " % (p, f)) * (size // 8)
            files["lib/pkg%03d/file%03d.dat" % (p, f)] = data[:size]
        add_package(prefix, "pkg%03d" % p, files)
    return prefix


@pytest.mark.slow
def test_ten_thousand_files_cold_and_warm(tmp_path):
    prefix = build_large_prefix(tmp_path)
    cache = str(tmp_path / "integrity.json")
    time.sleep(_integrity.RACY_NS / 1e9 + 0.1)  # older than the racy window, as an installed prefix is

    started = time.monotonic()
    plain = audit(prefix)
    plain_seconds = time.monotonic() - started
    started = time.monotonic()
    cold = audit(prefix, cache=cache)
    cold_seconds = time.monotonic() - started
    started = time.monotonic()
    warm = audit(prefix, cache=cache)
    warm_seconds = time.monotonic() - started
    assert plain["clean"] and cold["clean"] and warm["clean"]
    assert cold["summary"]["files"] == 10000 and cold["summary"]["hashed"] == 10000
    assert warm["summary"]["hashed"] == 0 and warm["summary"]["from_cache"] == 10000

    # one altered file among 10,000: found on the warm path too
    with open(os.path.join(prefix, "lib/pkg123/file045.dat"), "r+b") as handle:
        handle.write(b"!")
    started = time.monotonic()
    found = audit(prefix, cache=cache, report_only=True)
    found_seconds = time.monotonic() - started
    assert found["summary"]["altered"] == 1 and found["summary"]["hashed"] == 1

    # the files' data out of the page cache (written back first): every byte hashed comes from the disk
    disk_seconds = None
    if hasattr(os, "posix_fadvise"):
        os.sync()
        for dirpath, _dirnames, filenames in os.walk(prefix):
            for name in filenames:
                fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                os.close(fd)
        started = time.monotonic()
        from_disk = audit(prefix, report_only=True)
        disk_seconds = time.monotonic() - started
        assert from_disk["summary"]["hashed"] == 10000

    report = ("10,000 files / 200 packages / %.0f MiB: no cache %.2fs, cold cache %.2fs (module %.2fs), warm "
              "%.2fs (module %.2fs), warm with one altered %.2fs, no cache with file data not in the page cache %s"
              % (cold["environments"][0]["hashed_bytes"] / 2 ** 20, plain_seconds, cold_seconds,
                 cold["summary"]["seconds"], warm_seconds, warm["summary"]["seconds"], found_seconds,
                 "%.2fs" % disk_seconds if disk_seconds is not None else "n/a"))
    print("\n" + report)
    with open(os.path.join(os.path.dirname(__file__), "..", "..", "..", "output", "conda_integrity_timing.txt")
              if os.path.isdir(os.path.join(os.path.dirname(__file__), "..", "..", "..", "output"))
              else os.devnull, "w") as handle:
        handle.write(report + "\n")
    assert warm_seconds < 60 and cold_seconds < 120  # generous: a shared 2-core machine
