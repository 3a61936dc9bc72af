#!/usr/bin/python
# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: conda_integrity
short_description: Check every installed file of a conda prefix against what conda recorded
version_added: 0.2.0
description:
  - Like C(conda doctor), for a fleet. For the prefix O(prefix) (and, with O(envs) or O(environments), its
    environments) reads each package's record in C(conda-meta/*.json) and checks every file the package installed
    against the size and SHA256 conda recorded in C(paths_data), and lists the files in the prefix that no
    package recorded.
  - Reports per environment and per package the files that are altered (another size or SHA256, another kind of
    file, or reached through a symbolic link leading out of the prefix), missing, unrecorded, and unverified (the
    reading account may not read them).
  - Fails when any environment has an altered, missing or unverified file or an unreadable record, unless
    O(report_only) is set; unrecorded files never fail the task.
  - 'What is compared, per C(path_type) of the record. V(hardlink) without a prefix placeholder: the size
    (C(size_in_bytes)) first, then, when it matches, the SHA256 of the file against C(sha256_in_prefix), or
    C(sha256) in records older conda wrote without it (both are the same for such a file).'
  - 'A file with a C(prefix_placeholder): conda rewrote the placeholder with the prefix while installing it, so
    C(sha256) and C(size_in_bytes) describe the package''s file, not the installed one. Only
    C(sha256_in_prefix), the digest conda computed after the rewrite, is compared; the size is compared first only
    for C(file_mode) V(binary) (conda pads the prefix to the placeholder''s length). Without C(sha256_in_prefix)
    only its presence is checked.'
  - 'V(softlink): the path must still be a symbolic link (it is never followed; conda records no target).
    V(directory): it must still be a directory. V(unix_python_entry_point) and the Windows entry points conda
    writes: present, a regular file, and of the recorded size when conda recorded one (it records no digest).
    V(pyc_file) and any C(.pyc)/C(.pyo) path: not checked (Python rewrites them; C(conda doctor) skips them as
    well), but they are not unrecorded either. Records with no C(paths_data) (very old conda): each path of
    C(files) must exist.'
  - 'Unrecorded: every file, symbolic link or special file in the prefix that no package records, except conda''s
    own bookkeeping, namely the top-level C(conda-meta), C(pkgs), C(envs), C(.condarc), C(condarc), C(condarc.d),
    C(.nonadmin) and C(.conda_lock), every C(__pycache__) directory, C(*.pyc), C(*.pyo), C(*.conda_trash) and
    C(.cph_tmp*) files, the O(cache) file, nested environments checked on their own, and what O(exclude)
    names. Directories are not listed themselves (an empty one is never unrecorded), their files are.'
  - 'Speed: every recorded path gets one C(lstat); a file whose size already differs is altered without being
    read; only the rest is hashed. With O(cache), a file whose size, mtime, ctime, inode and device are those of
    an earlier run is not hashed again. Measured on a shared 2-core machine (ext4 on a virtual disk, load about
    4) with a synthetic prefix of 10,000 files in 200 packages (31 MiB), the module itself takes 0.35 to 0.55 s
    when every file is hashed from the page cache, 1.1 to 1.25 s when the files'' data must first be read from
    the disk, and 0.15 to 0.3 s warm with O(cache) (nothing hashed; the time goes to reading the records and the
    C(lstat) of every file). Through C(ansible) on C(localhost) about 1.3 s more is Ansible''s own start-up.
    A large Anaconda base is therefore bound by reading its bytes on the first run, and with O(cache) only by
    the number of its files.'
  - Reads only; never changes a prefix. The only file it writes is O(cache), and only outside check mode.
author:
  - condafleet maintainers (@condafleet)
extends_documentation_fragment:
  - condafleet.proxy._attributes
attributes:
  check_mode:
    support: full
    details: The prefix is only read in either mode; in check mode the O(cache) is read but not written.
  diff_mode:
    support: none
  idempotent:
    support: full
  platform:
    support: full
    platforms: posix
options:
  prefix:
    description:
      - The conda prefix, for example V(/opt/conda) or V(~/miniconda3) (C(~) is the home of O(user)).
      - It must hold a C(conda-meta) directory.
    type: str
    required: true
  envs:
    description:
      - Also check every environment under C(PREFIX/envs/) (each directory there with a C(conda-meta)).
      - A symbolic link in C(PREFIX/envs/) is not followed; name such an environment in O(environments).
    type: bool
    default: false
  environments:
    description:
      - More environments to check. A name without a C(/) is C(PREFIX/envs/NAME); otherwise an absolute path
        (or one starting with C(~/)).
    type: list
    elements: str
    default: []
  user:
    description:
      - The account whose identity reads the files, for example the owner of V(~/miniconda3).
      - 'Needs root (C(become: true)) unless it is the account the module runs as.'
      - When omitted and running as root, each prefix is read with the identity of the account that controls it
        (owns it or a directory on the way), and as root only when root alone does. Reading as that account
        means a symbolic link or hard link it planted can reach nothing it could not read itself.
    type: str
  report_only:
    description: Never fail because of what was found; the findings are returned all the same.
    type: bool
    default: false
  unrecorded:
    description: List the files no package records (a walk of the whole prefix). V(false) skips the walk.
    type: bool
    default: true
  exclude:
    description:
      - Shell patterns (C(fnmatch), case-sensitive, C(*) also matches C(/)) of paths relative to each environment
        that are never unrecorded, for example V(lib/python3.*/site-packages/*.egg-link). A pattern that matches
        a directory, for example V(share/jupyter/lab/workspaces), skips everything below it.
      - Only the unrecorded walk uses them; a recorded file is always checked.
    type: list
    elements: str
    default: []
  cache:
    description:
      - A file that remembers the SHA256 of every file hashed, keyed on its path, size, mtime, ctime, inode and
        device, so that a rerun hashes only files where one of them changed. Every write to a file changes its
        ctime, and only root can set a ctime, so a changed file is always hashed again. A digest is not
        remembered for a file changed less than two seconds before it was hashed (a change within the same
        timestamp tick would go unnoticed).
      - The cache must be where only the account running the module can write, or anyone who can write it could
        make a changed file pass. The module refuses a cache in a directory another account controls, and a
        cache file that is not a regular file owned by the running account or that others may write. For an
        account's prefix, use a root-owned path such as V(/var/cache/condafleet/integrity-alice.json); for a
        root-owned prefix, a file in it such as V(/opt/conda/.condafleet-integrity.json) is fine.
      - Its directory must exist. Written atomically (mode 0600) outside check mode; a missing or unparsable
        cache is treated as empty.
    type: str
  max_listed:
    description:
      - The most paths listed in each list of RV(environments) (and of RV(altered) and RV(missing)); the counts are
        always complete, and RV(environments[].truncated) tells when a list was cut.
    type: int
    default: 1000
notes:
  - 'A record is only as trustworthy as the account that can write C(conda-meta): the owner of a prefix can
    change both a file and its record. The check finds corruption, and changes made by anyone who cannot write
    C(conda-meta).'
  - Every read is bounded. A record over 64 MiB, or a cache over 256 MiB, is refused. A file is opened without
    following a symbolic link, only when C(lstat) saw a regular file, checked to be that very file, and read no
    further than its size; a file replaced or resized while it was read is reported as altered (V(changed)).
  - A path that two packages both record (one clobbered the other's file) must match each record; the one it
    does not match reports it as altered, as C(conda doctor) does.
  - A recorded path below a directory that is (or passes through) a symbolic link leading out of the prefix is
    reported as altered (V(outside)) and never read. The unrecorded walk never enters a symbolic link.
seealso:
  - name: conda doctor
    description: conda's own health checks (altered and missing files, for one environment).
    link: https://docs.conda.io/projects/conda/en/stable/commands/doctor.html
"""

EXAMPLES = r"""
- name: Audit the system-wide conda and all its environments
  condafleet.proxy.conda_integrity:
    prefix: /opt/conda
    envs: true
    cache: /opt/conda/.condafleet-integrity.json
  become: true

- name: Audit alice's Miniconda as alice, without failing the play
  condafleet.proxy.conda_integrity:
    prefix: ~/miniconda3
    user: alice
    environments: [analysis]
    report_only: true
    cache: /var/cache/condafleet/integrity-alice.json
  become: true
  register: alice_audit

- name: Show what was found
  ansible.builtin.debug:
    msg: "{{ alice_audit.altered + alice_audit.missing }}"
  when: not alice_audit.clean
"""

RETURN = r"""
clean:
  description: True when no environment has an altered, missing or unverified file or an unreadable record.
  returned: always
  type: bool
  sample: false
user:
  description: The account the module was asked to read as (O(user)), or the one it runs as.
  returned: always
  type: str
  sample: alice
altered:
  description: The absolute path of every altered file, over all environments (at most O(max_listed)).
  returned: always
  type: list
  elements: str
  sample: [/opt/conda/lib/python3.12/os.py]
missing:
  description: The absolute path of every missing file, over all environments (at most O(max_listed)).
  returned: always
  type: list
  elements: str
  sample: [/opt/conda/bin/xz]
summary:
  description: Totals over all environments.
  returned: always
  type: dict
  contains:
    environments:
      description: How many environments were checked.
      type: int
    packages:
      description: How many package records were read.
      type: int
    files:
      description: How many recorded paths were checked.
      type: int
    hashed:
      description: How many files were hashed.
      type: int
    from_cache:
      description: How many files the O(cache) cleared without hashing.
      type: int
    altered:
      description: How many files are altered.
      type: int
    missing:
      description: How many files are missing.
      type: int
    unverified:
      description: How many files could not be read.
      type: int
    unrecorded:
      description: How many unrecorded files.
      type: int
    seconds:
      description: How long the whole check took.
      type: float
  sample: {environments: 2, packages: 210, files: 10412, hashed: 12, from_cache: 10400, altered: 1, missing: 1,
           unverified: 0, unrecorded: 3, seconds: 0.31}
environments:
  description: One entry per environment checked, the base prefix first.
  returned: always
  type: list
  elements: dict
  contains:
    prefix:
      description: The environment's path (symbolic links on the way resolved).
      type: str
    identity:
      description: The account whose identity read the environment's files.
      type: str
    clean:
      description: True when nothing altered, missing or unverified was found and every record was readable.
      type: bool
    counts:
      description: C(altered), C(missing), C(unverified) and C(unrecorded), complete even when a list was cut.
      type: dict
    truncated:
      description: True when a list below was cut at O(max_listed).
      type: bool
    altered:
      description:
        - The altered files, each with C(package) (the record's name, for example V(zlib-1.3.1-h4ab18f5_1)),
          C(path) (relative to the environment) and C(reason).
        - C(reason) V(size) (with C(expected_size) and C(size)), V(sha256) (with C(expected_sha256), C(sha256)
          and C(size)), V(type) (another kind of file, with C(detail)), V(outside) (a directory on the way leads
          out of the prefix) or V(changed) (replaced or resized while it was read).
      type: list
      elements: dict
    missing:
      description: The missing files, each with C(package) and C(path).
      type: list
      elements: dict
    unverified:
      description: Files (or directories of the walk) that could not be read, each with C(package), C(path) and C(reason).
      type: list
      elements: dict
    unrecorded:
      description: Paths relative to the environment that no package records (files, symbolic links, special files).
      type: list
      elements: str
    packages:
      description: The packages with findings, each with C(package) and the C(altered) and C(missing) paths.
      type: list
      elements: dict
    problems:
      description: Records that could not be read or parsed, or that name a path outside the prefix.
      type: list
      elements: str
    files:
      description: Recorded paths checked.
      type: int
    hashed:
      description: Files hashed.
      type: int
    hashed_bytes:
      description: Bytes hashed.
      type: int
    from_cache:
      description: Files the cache cleared.
      type: int
    size_mismatch:
      description: Files found altered by their size alone, without reading them.
      type: int
    packages_checked:
      description: Package records read.
      type: int
    seconds:
      description: How long this environment took.
      type: float
  sample:
    - prefix: /opt/conda
      identity: root
      clean: false
      counts: {altered: 1, missing: 1, unverified: 0, unrecorded: 1}
      truncated: false
      altered: [{package: fleet-hello-1.0-0, path: share/fleet-hello/hello.txt, reason: size, expected_size: 72,
                 size: 80}]
      missing: [{package: fleet-hello-1.0-0, path: share/fleet-hello/README}]
      unverified: []
      unrecorded: [bin/dropped-in]
      packages: [{package: fleet-hello-1.0-0, altered: [share/fleet-hello/hello.txt],
                  missing: [share/fleet-hello/README]}]
      problems: []
      files: 2
      hashed: 0
      hashed_bytes: 0
      from_cache: 0
      size_mismatch: 1
      packages_checked: 1
      seconds: 0.002
cache:
  description: The cache file used, or null.
  returned: always
  type: str
  sample: /opt/conda/.condafleet-integrity.json
"""

import os
import pwd
import stat
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.condafleet.proxy.plugins.module_utils._fileio import (
    FileRefused,
    acting_as,
    controlling_account,
    resolve_account,
)
from ansible_collections.condafleet.proxy.plugins.module_utils._integrity import (
    check_environment,
    load_cache,
    save_cache,
)
from ansible_collections.condafleet.proxy.plugins.module_utils._paths import PathError, expand_home


class Refused(Exception):
    """Bad input or an unusable prefix or cache: the task fails whatever O(report_only) says."""


def reader_for(prefix: str, account):
    """The identity that reads ``prefix``: the O(user) account when it is another one, else the account that
    controls the prefix (root running the module: ``None``)."""
    if account.is_other:
        return account
    try:
        return controlling_account(os.path.join(prefix, "conda-meta"))
    except FileRefused as exc:
        raise Refused(str(exc))


def environment_paths(params: dict, prefix: str, account) -> list:
    """The environments to check, in order, without duplicates: the prefix, PREFIX/envs/*, then O(environments)."""
    found = [prefix]
    if params["envs"]:
        envs_dir = os.path.join(prefix, "envs")
        with acting_as(reader_for(prefix, account)):
            try:
                entries = sorted(os.scandir(envs_dir), key=lambda e: e.name)
            except OSError:
                entries = []
            for entry in entries:
                if entry.is_dir(follow_symlinks=False) and os.path.isdir(os.path.join(entry.path, "conda-meta")) \
                        and not os.path.islink(os.path.join(entry.path, "conda-meta")):
                    found.append(entry.path)
    for name in params["environments"]:
        if "/" not in name and not name.startswith("~"):
            if name in ("", ".", ".."):
                raise Refused("environments: %r is not an environment name" % name)
            path = os.path.join(prefix, "envs", name)
        else:
            try:
                path = expand_home(name, account.home, "environments")
            except PathError as exc:
                raise Refused(str(exc))
        found.append(path)
    unique = []
    for path in found:
        if path not in unique:
            unique.append(path)
    return unique


def real_environment(path: str, reader) -> str:
    """``path`` with symbolic links resolved (as ``reader``); refused unless it holds a ``conda-meta`` directory."""
    with acting_as(reader):
        real = os.path.realpath(path)
        try:
            info = os.lstat(os.path.join(real, "conda-meta"))
        except OSError as exc:
            raise Refused("%s is not a conda prefix: %s/conda-meta: %s" % (path, real, exc.strerror))
    if not stat.S_ISDIR(info.st_mode):
        raise Refused("%s is not a conda prefix: %s/conda-meta is not a directory" % (path, real))
    return real


def trusted_cache(path: str) -> None:
    """Refuse a cache that anyone but the running account could have written (it could make a changed file
    pass)."""
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        raise Refused("cache: the directory %s does not exist" % directory)
    try:
        owner = controlling_account(path)
    except FileRefused as exc:
        raise Refused("cache: %s" % exc)
    if owner is not None:
        raise Refused("cache: %s is in a directory that %s controls; that account could forge entries and make a "
                      "changed file pass. Keep the cache where only root can write" % (path, owner.name))
    try:
        info = os.lstat(path)
    except OSError:
        return
    if not stat.S_ISREG(info.st_mode):
        raise Refused("cache: %s is not a regular file" % path)
    if info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise Refused("cache: %s is owned by uid %d with mode %04o; it must be the running account's (uid %d) and "
                      "writable by it alone" % (path, info.st_uid, stat.S_IMODE(info.st_mode), os.geteuid()))


def identity_name(reader) -> str:
    if reader is not None:
        return reader.name
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def run(module: AnsibleModule) -> dict:
    params = module.params
    started = time.monotonic()
    if params["max_listed"] < 0:
        raise Refused("max_listed must be 0 or more")
    try:
        account = resolve_account(params["user"])
    except FileRefused as exc:
        raise Refused(str(exc))
    try:
        prefix = expand_home(params["prefix"], account.home, "prefix")
    except PathError as exc:
        raise Refused(str(exc))
    prefix = real_environment(prefix, reader_for(prefix, account))

    cache_path, cache = None, None
    if params["cache"]:
        try:
            cache_path = expand_home(params["cache"], account.home, "cache")
        except PathError as exc:
            raise Refused(str(exc))
        trusted_cache(cache_path)
        try:
            cache = load_cache(cache_path)
        except OSError as exc:
            raise Refused("cache: cannot read %s: %s" % (cache_path, exc.strerror or exc))

    targets = []
    for path in environment_paths(params, prefix, account):
        reader = reader_for(path, account)
        real = real_environment(path, reader)
        if real not in [t[0] for t in targets]:
            targets.append((real, reader))

    environments = []
    for real, reader in targets:
        # Nested environments are checked on their own, never as unrecorded files of the one holding them.
        skip = set(other for other, _r in targets if other != real) | ({cache_path} if cache_path else set())
        with acting_as(reader):
            result = check_environment(real, cache=cache, unrecorded=params["unrecorded"],
                                       exclude=params["exclude"], skip_paths=skip, max_listed=params["max_listed"])
        result["identity"] = identity_name(reader)
        environments.append(result)

    if cache is not None and not module.check_mode:
        try:
            save_cache(cache_path, cache.merged([real for real, _r in targets]))
        except OSError as exc:
            module.warn("cache: cannot write %s: %s" % (cache_path, exc.strerror or exc))

    keys = ("altered", "missing", "unverified", "unrecorded")
    summary = dict(environments=len(environments), packages=sum(e["packages_checked"] for e in environments),
                   files=sum(e["files"] for e in environments), hashed=sum(e["hashed"] for e in environments),
                   from_cache=sum(e["from_cache"] for e in environments),
                   **dict((k, sum(e["counts"][k] for e in environments)) for k in keys))
    summary["seconds"] = round(time.monotonic() - started, 3)
    listed = params["max_listed"]
    altered = [os.path.join(e["prefix"], item["path"]) for e in environments for item in e["altered"]][:listed]
    missing = [os.path.join(e["prefix"], item["path"]) for e in environments for item in e["missing"]][:listed]
    return dict(changed=False, clean=all(e["clean"] for e in environments), user=account.name, altered=altered,
                missing=missing, summary=summary, environments=environments, cache=cache_path)


def failure_message(result: dict) -> str:
    parts = []
    for env in result["environments"]:
        if env["clean"]:
            continue
        counts = env["counts"]
        found = ["%d %s" % (counts[k], k) for k in ("altered", "missing", "unverified") if counts[k]]
        if env["problems"]:
            found.append("%d unreadable record(s)" % len(env["problems"]))
        parts.append("%s: %s" % (env["prefix"], ", ".join(found)))
    return "integrity check failed: " + "; ".join(parts)


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            prefix=dict(type="str", required=True),
            envs=dict(type="bool", default=False),
            environments=dict(type="list", elements="str", default=[]),
            user=dict(type="str"),
            report_only=dict(type="bool", default=False),
            unrecorded=dict(type="bool", default=True),
            exclude=dict(type="list", elements="str", default=[]),
            cache=dict(type="str"),
            max_listed=dict(type="int", default=1000),
        ),
        supports_check_mode=True,
    )
    try:
        result = run(module)
    except Refused as exc:
        module.fail_json(msg=str(exc))
    if not result["clean"] and not module.params["report_only"]:
        module.fail_json(msg=failure_message(result), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
