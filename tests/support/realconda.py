# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A real conda for the tests: built once from ``../shared/real-conda`` (conda's own source), cached.

conda is the judge of what the collection writes: tests run ``<prefix>/bin/conda`` as non-root accounts
from fresh login shells. The install is a venv on ``/usr/bin/python3`` that every account can read.
Tests that need it skip, naming the install script, only when ``../shared/real-conda`` is absent.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import io
import os
import shutil
import subprocess
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
INSTALLER = os.path.join(os.path.dirname(REPO), "shared", "real-conda", "install.sh")
# Root: next to the lab's other caches (`make clean-machine` removes it); others: their own cache.
CACHE = ("/var/cache/condafleet-lab/real-conda" if os.geteuid() == 0
         else os.path.join(os.path.expanduser("~"), ".cache", "condafleet", "real-conda"))


def installer() -> str | None:
    """The install script, or ``None`` when this checkout has no ``../shared/real-conda`` beside it."""
    return INSTALLER if os.path.isfile(INSTALLER) else None


def install(dest: str = CACHE, timeout: float = 300) -> str:
    """Install (once; concurrent callers wait on a lock) and return the path of ``conda``."""
    script = installer()
    if script is None:
        raise FileNotFoundError("real conda not available: %s is absent" % INSTALLER)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    os.chmod(os.path.dirname(dest), 0o755)
    with open(dest + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        conda = os.path.join(dest, "bin", "conda")
        if not os.access(conda, os.X_OK):
            subprocess.run(["bash", script, dest], check=True, capture_output=True, timeout=timeout)
        guard_launcher(conda)
    return conda


LAUNCHER = '#!%s\nimport sys\nfrom conda.cli import main\n\nif __name__ == "__main__":\n    sys.exit(main())\n'


def guard_launcher(conda: str) -> None:
    """Give ``bin/conda`` the ``__main__`` guard that a conda install's launcher has.

    install.sh writes ``sys.exit(main())`` unguarded; conda starts ``spawn`` processes (the CUDA probe of
    ``conda create``, package extraction), each of which re-imports the launcher as its main module and so
    runs conda again: ``conda create`` then dies with ``BrokenProcessPool``. Rewritten atomically, under
    :func:`install`'s lock."""
    with open(conda) as handle:
        text = handle.read()
    if "__name__" in text:
        return
    python = text.splitlines()[0][2:]
    temp = conda + ".tmp"
    with open(temp, "w") as handle:
        handle.write(LAUNCHER % python)
    os.chmod(temp, 0o755)
    os.replace(temp, conda)


def require() -> str:
    """The path of a real conda; skips the test, naming the script, when ``../shared/real-conda`` is absent."""
    import pytest

    if installer() is None:
        pytest.skip("real conda needed: ../shared/real-conda/install.sh is absent from this checkout's parent")
    return install()


# --- A channel real conda installs from -----------------------------------------------------------------

PACKAGE = "fleet-hello"
PACKAGE_FILE = "share/fleet-hello/hello.txt"  # what `conda create` must leave in the new prefix


def build_package(dest: str, name: str = PACKAGE, version: str = "1.0", subdir: str = "noarch") -> tuple[str, dict]:
    """A tiny real conda package ``<dest>/<name>-<version>-0.tar.bz2``; returns (filename, repodata record).

    It holds what conda checks when it extracts and links: ``info/index.json``, ``info/paths.json`` (with each
    file's sha256 and size) and one small file. The record carries the sha256, md5 and size of the tarball,
    which conda verifies after the download."""
    import hashlib
    import io
    import json
    import tarfile

    payload = ("hello from %s %s, installed by a real conda through the proxy\n" % (name, version)).encode()
    index = {"name": name, "version": version, "build": "0", "build_number": 0, "depends": [],
             "license": "CC0-1.0", "noarch": "generic", "subdir": subdir, "timestamp": 1767225600000}
    paths = {"paths": [{"_path": PACKAGE_FILE, "path_type": "hardlink", "sha256": hashlib.sha256(payload).hexdigest(),
                        "size_in_bytes": len(payload)}], "paths_version": 1}
    members = {"info/index.json": json.dumps(index, indent=2).encode(),
               "info/paths.json": json.dumps(paths, indent=2).encode(),
               "info/files": (PACKAGE_FILE + "\n").encode(),
               PACKAGE_FILE: payload}
    filename = "%s-%s-0.tar.bz2" % (name, version)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:bz2") as tar:
        for member, data in members.items():
            info = tarfile.TarInfo(member)
            info.size, info.mode, info.mtime = len(data), 0o644, 1767225600
            tar.addfile(info, io.BytesIO(data))
    blob = buffer.getvalue()
    with open(os.path.join(dest, filename), "wb") as handle:
        handle.write(blob)
    record = dict(index, md5=hashlib.md5(blob).hexdigest(), sha256=hashlib.sha256(blob).hexdigest(), size=len(blob))
    return filename, record


def write_package_channel(root: str, name: str = "fleet-channel") -> str:
    """A conda channel ``<root>/<name>`` with :data:`PACKAGE` in ``noarch`` (``linux-64`` empty); returns its dir.

    conda fetches ``repodata.json`` of both subdirs for a linux-64 host and fails when either is missing."""
    import json

    channel = os.path.join(root, name)
    for subdir in ("noarch", "linux-64"):
        os.makedirs(os.path.join(channel, subdir), exist_ok=True)
        packages = {}
        if subdir == "noarch":
            filename, record = build_package(os.path.join(channel, subdir))
            packages[filename] = record
        with open(os.path.join(channel, subdir, "repodata.json"), "w") as handle:
            json.dump({"info": {"subdir": subdir}, "packages": packages, "packages.conda": {},
                       "repodata_version": 1}, handle, indent=1)
    return channel


# --- A private /etc: system scope, for real, without touching the machine's own files --------------------

class PrivateEtc:
    """A copy of ``/etc`` that commands see as ``/etc``, each in its own private mount namespace.

    :meth:`argv` wraps a command in ``unshare -m`` + ``mount --bind <copy> /etc``: ``useradd``, the modules'
    system scope (``/etc/conda/.condarc``, ``/etc/environment``, ``/etc/profile.d``) and ``su -`` all act on the
    copy, which outlives each command, so a test can configure as root and then log in as the accounts it made.
    The machine's own ``/etc`` is never written; removing the copy removes every trace (accounts included).
    Mounts die with each command's namespace: nothing needs unmounting."""

    def __init__(self, base: str) -> None:
        self.path = os.path.join(base, "etc")
        copy_etc(self.path)
        # Start without any machine-wide conda or proxy setting: the test's files are the only ones.
        for leftover in ("conda", "profile.d/condafleet-proxy.sh", "environment.d/90-condafleet-proxy.conf"):
            target = os.path.join(self.path, leftover)
            if os.path.isdir(target):
                shutil.rmtree(target)
            elif os.path.lexists(target):
                os.unlink(target)

    def argv(self, command: list[str]) -> list[str]:
        script = 'mount --bind "$0" /etc && exec "$@"'
        return ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", script, self.path] + command

    def run(self, command: list[str], timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        return subprocess.run(self.argv(command), timeout=timeout, check=False, **kwargs)

    def file(self, path: str) -> str:
        """Where the copy holds ``path`` (an absolute path under ``/etc``) as seen from outside the namespace."""
        assert path.startswith("/etc/"), path
        return os.path.join(self.path, path[len("/etc/"):])


def copy_etc(dest: str, attempts: int = 3) -> None:
    """``cp -a /etc dest``, tolerating files that vanish while it copies (other jobs' lock and temp files)."""
    for _attempt in range(attempts):
        proc = subprocess.run(["cp", "-a", "/etc", dest], capture_output=True, text=True, timeout=60, check=False)
        errors = [line for line in proc.stderr.splitlines() if line.strip()]
        if proc.returncode == 0 or all("No such file or directory" in line for line in errors):
            if os.path.isfile(os.path.join(dest, "passwd")):
                return
        shutil.rmtree(dest, ignore_errors=True)
    raise RuntimeError("could not copy /etc to %s: %s" % (dest, proc.stderr[-1000:]))


# --------------------------------------------------------------------------------------------
# A Miniconda-style installer whose payload is this real conda (conda_installer's tests, the conda_security role's)

CONDA_VERSION = "26.7.2.dev56"

HEADER = r"""#!/bin/bash
# A Miniconda-style installer for condafleet's tests: bash THIS -b [-u] -p PREFIX installs conda into PREFIX.
set -eu
PREFIX=""; UPDATE=0
while getopts "bup:h" opt; do
  case "$opt" in
    b) ;;
    u) UPDATE=1 ;;
    p) PREFIX=$OPTARG ;;
    h) echo "usage: $0 [-b] [-u] [-p PREFIX]"; exit 0 ;;
    *) exit 2 ;;
  esac
done
[ -n "$PREFIX" ] || { echo "ERROR: this installer needs -p PREFIX" >&2; exit 2; }
if [ -e "$PREFIX" ] && [ "$UPDATE" = 0 ]; then
  echo "ERROR: File or directory already exists: '$PREFIX'" >&2
  echo "If you want to update an existing installation, use the -u option." >&2
  exit 1
fi
mkdir -p "$PREFIX/conda-meta" "$PREFIX/pkgs"
echo "PREFIX=$PREFIX" > "$PREFIX/pkgs/.installer-placeholder"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sed -n '/^__CONDAFLEET_PAYLOAD__$/,$p' "$0" | tail -n +2 | base64 -d | tar xzf - -C "$work"
@FAIL@
bash "$work/install.sh" "$PREFIX" >"$work/install.log" 2>&1 || { cat "$work/install.log" >&2; exit 1; }
cat > "$PREFIX/conda-meta/conda-@VERSION@-py_0.json" <<EOF
{"name": "conda", "version": "@VERSION@", "build": "py_0", "build_number": 0,
 "channel": "https://repo.anaconda.com/pkgs/main", "subdir": "noarch", "fn": "conda-@VERSION@-py_0.conda",
 "depends": [], "files": [], "paths_data": {"paths": [], "paths_version": 1}}
EOF
echo "installation finished."
exit 0
__CONDAFLEET_PAYLOAD__
"""


def build_installer(path: str, fail: bool = False) -> str:
    """Write the test installer to ``path`` (``fail``: one that stops half-way); returns its SHA256. Its payload
    is ``../shared/real-conda``, run at the prefix by the installer as install.sh DEST."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name in ("install.sh", "requirements.txt", "conda-%s-src.tar.gz" % CONDA_VERSION):
            tar.add(os.path.join(os.path.dirname(INSTALLER), name), arcname=name)
    fail_step = "echo 'ERROR: payload corrupt (test failure)' >&2; exit 3" if fail else ""
    script = HEADER.replace("@VERSION@", CONDA_VERSION).replace("@FAIL@", fail_step).encode()
    data = script + base64.encodebytes(buffer.getvalue())
    with open(path, "wb") as handle:
        handle.write(data)
    return hashlib.sha256(data).hexdigest()
