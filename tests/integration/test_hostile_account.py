# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Issue 10: root configuring an account whose home is controlled by a hostile user.

Every test is one attack, made as an attacker would make it: a real throwaway account (created and deleted
here) prepares its own home with its own identity (symlinks, hard links, FIFOs, races run as that account's
processes), then root runs the collection's module for it through the real ansible CLI (or, where a loop needs
speed or a time bound must not include ansible's start-up, the module's ``main()`` in a fresh Python process as
root). The assertions are about harm only:

* root's victim files (made here, in a root-owned temp dir, never a real system file) keep their bytes, owner,
  mode and inode, and no file or directory appears in root's tree;
* no root secret appears in any module output (``--diff``, ``-vvv``), in a file in the account's home, or in
  a request the account's own listener receives;
* the module either fails with a clear message or succeeds without harm; nothing hangs (every run is bounded).

Needs root (it creates accounts); skipped otherwise. docs/docsite/rst/security.rst describes the threat model.
"""

from __future__ import annotations

import base64
import glob
import hashlib
import json
import os
import re
import shutil
import signal
import site
import stat
import subprocess
import sys
import tempfile
import time
import uuid

import pytest

from accounts import throwaway_account  # tests/support

pytestmark = pytest.mark.skipif(os.geteuid() != 0,
                                reason="creates throwaway accounts and root-owned victims (needs root)")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLLECTIONS = os.path.join(REPO, "collections")
ANSIBLE = os.path.join(os.path.dirname(sys.executable), "ansible")
ANSIBLE_PLAYBOOK = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
# The managed-node Python: the account must be able to run it too (a pyenv under /root is 0700), in case the
# module starts a child as the account.
PYTHON = "/usr/bin/python3"
# A denial-of-service input must be handled (refused or processed) within this many seconds.
DOS_LIMIT = 5
# Temp files of this collection: old (`..netrc.XXXX.tmp`) and new (`.<name>.condafleet.XXXX.tmp`).
TEMP_NAME = re.compile(r"^\..+\.tmp$")


# --------------------------------------------------------------------------------------------------------------
# Accounts, and running things as them


@pytest.fixture
def account():
    """A throwaway account with a 0755 home under a root-owned 0755 dir in /var/tmp (deleted afterwards)."""
    with throwaway_account("cfh") as entry:
        # Many distributions create 0755 homes: other accounts can then read what is not 0600.
        as_account(entry, "chmod 0755 ~")
        yield entry


def _demote(account):
    def run():
        os.initgroups(account.pw_name, account.pw_gid)
        os.setgid(account.pw_gid)
        os.setuid(account.pw_uid)

    return run


def _account_env(account) -> dict:
    return {"HOME": account.pw_dir, "USER": account.pw_name, "LOGNAME": account.pw_name,
            "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}


def as_account(account, script: str, stdin: bytes | None = None, timeout: float = 30) -> str:
    """Run a shell script as the account (its uid, gid and groups) in its home; returns stdout."""
    proc = subprocess.run(["/bin/sh", "-c", script], input=stdin, capture_output=True, timeout=timeout,
                          preexec_fn=_demote(account), cwd=account.pw_dir, env=_account_env(account), check=False)
    assert proc.returncode == 0, "as %s: %s\n%s" % (account.pw_name, script, proc.stderr.decode(errors="replace"))
    return proc.stdout.decode(errors="replace")


def start_as_account(account, argv: list) -> subprocess.Popen:
    """Start a long-running process as the account, in its own process group (stopped by :func:`stop`)."""
    return subprocess.Popen(argv, preexec_fn=_demote(account), cwd=account.pw_dir, env=_account_env(account),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)


def _descendants(pid: int) -> list:
    """The pids of every descendant of ``pid`` (ansible's worker calls setsid(): a process group kill misses it)."""
    children: dict = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as handle:
                ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def kill_tree(pid: int) -> None:
    """Stop ``pid`` and its descendants (so none forks away), then kill each of them by its pid."""
    pids = [pid]
    for _round in range(3):
        pids = [pid] + _descendants(pid)
        for each in pids:
            try:
                os.kill(each, signal.SIGSTOP)
            except OSError:
                pass
    for each in pids:
        try:
            os.kill(each, signal.SIGKILL)
        except OSError:
            pass


def stop(proc: subprocess.Popen) -> None:
    """Kill a process started here and everything it started, by pid."""
    if proc.poll() is None:
        kill_tree(proc.pid)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover
        pass
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None and not pipe.closed:
            pipe.close()


# --------------------------------------------------------------------------------------------------------------
# Root's side: victims, a root-owned tree, and watching them


@pytest.fixture
def root_tree():
    """A root-owned 0755 directory (others can traverse, not write) with a root-only 0700 ``private/`` in it."""
    top = tempfile.mkdtemp(prefix="condafleet-root-", dir="/var/tmp")
    os.chmod(top, 0o755)
    os.mkdir(os.path.join(top, "private"), 0o700)
    try:
        yield top
    finally:
        shutil.rmtree(top, ignore_errors=True)


def root_file(path: str, content: bytes, mode: int = 0o600) -> str:
    """A root-owned file (and root-owned 0755 parents)."""
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(content)
    os.chown(path, 0, 0)
    os.chmod(path, mode)
    return path


def secret(label: str) -> str:
    """A value that must never leave root's files (upper case: it cannot be mistaken for a random temp name)."""
    return "ROOT-%s-%s" % (label, uuid.uuid4().hex.upper())


class Victim:
    """A root-owned file the account must never gain: content, owner, mode and inode are recorded."""

    def __init__(self, path: str, content: bytes, mode: int = 0o600) -> None:
        self.path = root_file(path, content, mode)
        self.before = self.state()

    def state(self) -> dict:
        st = os.lstat(self.path)
        with open(self.path, "rb") as handle:
            digest = hashlib.sha256(handle.read()).hexdigest()
        return {"sha256": digest, "uid": st.st_uid, "gid": st.st_gid, "mode": oct(stat.S_IMODE(st.st_mode)),
                "ino": st.st_ino, "type": stat.S_IFMT(st.st_mode)}

    def harm(self) -> str | None:
        """What happened to the victim, or None."""
        try:
            now = self.state()
        except OSError as exc:
            return "victim %s is gone: %s" % (self.path, exc)
        changed = ["%s %s -> %s" % (key, self.before[key], now[key])
                   for key in self.before if self.before[key] != now[key]]
        return "victim %s changed: %s" % (self.path, ", ".join(changed)) if changed else None


def tree_state(top: str) -> dict:
    """Every entry under ``top`` (``top`` included, symlinks not followed): type, owner, mode, bytes."""
    entries = {}
    paths = [top]
    for dirpath, dirnames, filenames in os.walk(top):
        paths.extend(os.path.join(dirpath, name) for name in dirnames + filenames)
    for path in paths:
        st = os.lstat(path)
        item = {"type": stat.S_IFMT(st.st_mode), "uid": st.st_uid, "gid": st.st_gid,
                "mode": oct(stat.S_IMODE(st.st_mode)), "ino": st.st_ino}
        if stat.S_ISREG(st.st_mode):
            with open(path, "rb") as handle:
                item["sha256"] = hashlib.sha256(handle.read()).hexdigest()
        entries[os.path.relpath(path, top)] = item
    return entries


def tree_changes(before: dict, after: dict) -> list:
    out = []
    for name in sorted(set(before) | set(after)):
        if name not in before:
            out.append("created %s (uid %d)" % (name, after[name]["uid"]))
        elif name not in after:
            out.append("removed %s" % name)
        elif before[name] != after[name]:
            what = ["%s %s -> %s" % (k, before[name][k], after[name].get(k))
                    for k in before[name] if before[name][k] != after[name].get(k)]
            out.append("changed %s: %s" % (name, ", ".join(what)))
    return out


def files_holding(top: str, *needles: str) -> list:
    """Regular files under ``top`` (symlinks not followed) whose bytes hold any of ``needles``."""
    found = []
    for dirpath, _dirnames, filenames in os.walk(top):
        for name in filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode) or st.st_size > 4 << 20:
                continue
            with open(path, "rb") as handle:
                data = handle.read()
            if any(n.encode() in data for n in needles):
                found.append((path, oct(stat.S_IMODE(st.st_mode)), st.st_uid))
    return found


def assert_not_in(output: str, *secrets: str) -> None:
    for value in secrets:
        assert value not in output, "root secret %r appears in the output:\n%s" % (value, excerpt(output, value))


def secrets_shown(where: str, output: str, *secrets: str) -> list:
    """A problem for each secret that ``output`` shows."""
    return ["root secret %s appears in %s: ...%s..." % (value, where, excerpt(output, value, 80).replace("\n", " "))
            for value in secrets if value in output]


def assert_no_harm(problems: list, context: str) -> None:
    """One assertion naming every harm seen (a report, not only the first)."""
    problems = [p for p in problems if p]
    assert not problems, "%s:\n- %s" % (context, "\n- ".join(problems))


def excerpt(text: str, needle: str, width: int = 300) -> str:
    at = text.find(needle)
    return text[max(0, at - width):at + len(needle) + width] if at >= 0 else text[-2 * width:]


# --------------------------------------------------------------------------------------------------------------
# Running the modules as root


def _env() -> dict:
    return dict(os.environ, ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json",
                ANSIBLE_NOCOLOR="1", ANSIBLE_LOCALHOST_WARNING="0", ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
                ANSIBLE_COLLECTIONS_PATH=COLLECTIONS)


def _run_bounded(cmd: list, timeout: float, stdin: str | None = None,
                 env: dict | None = None) -> tuple[int | None, str, str, float]:
    """Run ``cmd`` in its own process group; on timeout kill the group (by the pid started). Returns
    (returncode or None on timeout, stdout, stderr, seconds)."""
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env or _env(), start_new_session=True)
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
        return proc.returncode, out, err, time.monotonic() - started
    except subprocess.TimeoutExpired:
        kill_tree(proc.pid)
        out, err = proc.communicate(timeout=30)
        return None, out, err, time.monotonic() - started


def adhoc(module: str, args: dict, check: bool = False, diff: bool = False, verbosity: int = 0,
          extra_vars: dict | None = None, timeout: float = 90) -> tuple[dict | None, str, float]:
    """tests/support/modulerun.py's ``run_adhoc`` (``ansible localhost -m condafleet.proxy.<module>`` as root),
    bounded: returns ``(result or None when it did not finish in time, raw output, seconds)``."""
    variables = {"ansible_python_interpreter": PYTHON}
    variables.update(extra_vars or {})
    cmd = [ANSIBLE, "localhost", "-m", "condafleet.proxy.%s" % module, "-a", json.dumps(args), "-c", "local",
           "-e", json.dumps(variables)]
    cmd += ["--check"] if check else []
    cmd += ["--diff"] if diff else []
    cmd += ["-" + "v" * verbosity] if verbosity else []
    code, out, err, seconds = _run_bounded(cmd, timeout)
    raw = out + err
    if code is None:
        return None, raw, seconds
    data = json.loads(out[out.index("{"):])
    return data["plays"][0]["tasks"][0]["hosts"]["localhost"], raw, seconds


_DIRECT = r"""
import importlib, json, sys
sys.path[:0] = json.loads(sys.argv[1])
from ansible.module_utils.testing import patch_module_args
module = importlib.import_module("ansible_collections.condafleet.proxy.plugins.modules." + sys.argv[2])
with patch_module_args(json.loads(sys.stdin.read())):
    try:
        module.main()
    except SystemExit:
        pass
    except BaseException as exc:  # what AnsiballZ reports as "Module failed: ..."
        import traceback
        print(json.dumps({"failed": True, "msg": "Module failed: %s" % exc, "exception": traceback.format_exc()}))
"""


def direct_cmd(module: str) -> list:
    """A root Python process running the module's ``main()`` (what AnsiballZ runs, without the controller)."""
    paths = [COLLECTIONS] + [p for p in site.getsitepackages() if os.path.isdir(p)]
    return [PYTHON, "-c", _DIRECT, json.dumps(paths), module]


def direct_args(args: dict, check: bool = False, diff: bool = False) -> str:
    return json.dumps(dict(args, _ansible_check_mode=check, _ansible_diff=diff, _ansible_remote_tmp="/tmp",
                           _ansible_keep_remote_files=False))


def start_direct(module: str, args: dict, **popen) -> subprocess.Popen:
    """Start the module directly as root without waiting (arguments on stdin from an unlinked temp file)."""
    with tempfile.TemporaryFile("w+") as handle:
        handle.write(direct_args(args))
        handle.seek(0)
        return subprocess.Popen(direct_cmd(module), stdin=handle, start_new_session=True, text=True, **popen)


def direct(module: str, args: dict, diff: bool = False, timeout: float = 30) -> tuple[dict | None, str]:
    """Run the module directly as root, bounded; returns (result or None on timeout, raw output)."""
    code, out, err, _seconds = _run_bounded(direct_cmd(module), timeout, stdin=direct_args(args, diff=diff),
                                            env=dict(os.environ))
    if code is None:
        return None, out + err
    if "{" not in out:
        pytest.fail("%s printed no result:\n%s" % (module, (out + err)[-2000:]))
    return json.loads(out[out.index("{"):]), out + err


def crashed(result: dict) -> bool:
    """The module died of an unhandled exception. ansible-core 2.19 reports that as ``Task failed: Module failed:
    <exception>`` (older ones ``MODULE FAILURE``); it sets ``exception`` on every failure, a clean one included."""
    msg = str(result.get("msg"))
    return ("Module failed:" in msg or "MODULE FAILURE" in msg
            or "Traceback (most recent call last)" in json.dumps(result))


def failed_cleanly(result: dict) -> bool:
    """A failure with a message of the module's own (not a traceback)."""
    return bool(result.get("failed")) and not crashed(result)


# --------------------------------------------------------------------------------------------------------------
# 1. Temp-file race: the account renames a symlink to root's file over the module's temp file

RACER = r"""
import ctypes, os, re, select, struct, sys, time
dirs, victim, seconds, log = sys.argv[1].split(":"), sys.argv[2], float(sys.argv[3]), sys.argv[4]
pattern = re.compile(sys.argv[5])
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init1(os.O_NONBLOCK)
watches = {}
for d in dirs:
    watches[libc.inotify_add_watch(fd, d.encode(), 0x100 | 0x80)] = d  # IN_CREATE | IN_MOVED_TO
open(log + ".ready", "w").close()
deadline, hits = time.time() + seconds, 0
while time.time() < deadline:
    if not select.select([fd], [], [], 0.2)[0]:
        continue
    data, i = os.read(fd, 65536), 0
    while i < len(data):
        wd, _mask, _cookie, length = struct.unpack_from("iIII", data, i)
        name = data[i + 16:i + 16 + length].rstrip(b"\0").decode(errors="replace")
        i += 16 + length
        target = os.path.join(watches[wd], name)
        if name.startswith(".cfh-") or not pattern.match(name) or os.path.islink(target):
            continue
        link = os.path.join(watches[wd], ".cfh-link-%d" % hits)
        try:
            os.symlink(victim, link)
            os.rename(link, target)
            hits += 1
            with open(log, "a") as handle:
                handle.write(name + "\n")
        except OSError:
            try:
                os.unlink(link)
            except OSError:
                pass
"""

RACE_TRIES = 10


def _race_args(module: str, name: str, attempt: int) -> dict:
    entry = {"machine": "conda.corp.example", "login": "svc", "password": "pw-race-%d" % attempt}
    if module == "netrc_entry":
        return dict(entry, user=name)
    if module == "condarc_proxy":
        return {"user": name, "http": "http://127.0.0.1:%d" % (3100 + attempt)}
    return {"users": [name], "scope": "user", "http": "http://127.0.0.1:%d" % (3100 + attempt),
            "netrc_entries": [entry]}


@pytest.mark.parametrize("module", ["netrc_entry", "condarc_proxy", "conda_proxy"])
def test_temp_file_race_never_gives_the_account_a_root_file(account, root_tree, module):
    victim = Victim(os.path.join(root_tree, "private", "victim"), b"root only\n" + secret("RACE").encode() + b"\n")
    home = account.pw_dir
    as_account(account, "mkdir -p .config/fish/conf.d .config/environment.d && printf 'machine old\\n' > .netrc && "
                        "chmod 600 .netrc && printf 'channels: [defaults]\\n' > .condarc")
    watched = ":".join([home, home + "/.config/fish/conf.d", home + "/.config/environment.d"])
    log = os.path.join(home, ".cfh-race.log")
    harm, hits, crashes = None, 0, []
    for attempt in range(RACE_TRIES):
        racer = start_as_account(account, [PYTHON, "-c", RACER, watched, victim.path, "20", log, TEMP_NAME.pattern])
        try:
            for _wait in range(200):  # until its watches are in place (at most 10 s)
                if os.path.exists(log + ".ready") or racer.poll() is not None:
                    break
                time.sleep(0.05)
            assert os.path.exists(log + ".ready"), "the account's watcher did not start: %s" % racer.stderr.read()
            result, raw = direct(module, _race_args(module, account.pw_name, attempt))
        finally:
            stop(racer)
        os.unlink(log + ".ready")
        harm = victim.harm()
        if os.path.exists(log):
            with open(log) as handle:
                hits = len(handle.read().splitlines())
        assert result is not None, "%s did not finish within 30 s:\n%s" % (module, raw[-2000:])
        if crashed(result):
            crashes.append("try %d: %s" % (attempt + 1, result["msg"]))
        if harm:
            break
        # the account may have left its links in place of the files: start the next try from plain files
        for path in glob.glob(os.path.join(home, ".*")) + glob.glob(os.path.join(home, ".config/*/*")):
            if os.path.islink(path):
                os.unlink(path)
    assert harm is None, "try %d of %d, %s (the account swapped %d temp files): %s" % (
        attempt + 1, RACE_TRIES, module, hits, harm)
    assert not crashes, "no harm, but %s died of an unhandled exception instead of a clear message: %s" % (
        module, crashes)
    print("%s: %d tries, the account swapped %d temp files for symlinks, no harm" % (module, RACE_TRIES, hits))


# --------------------------------------------------------------------------------------------------------------
# 2. Backup names: symlinks planted at every name the backup of root's run can take

BACKUP_WATCHER = r"""
import os, sys, time
path, victim, marker, seconds, log = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5]
done, first_seen, deadline = set(os.listdir("/proc")), {}, time.time() + seconds
open(log + ".ready", "w").close()
while time.time() < deadline:
    for pid in set(os.listdir("/proc")) - done:
        # a new process shows its parent's command line until it has run exec(): look again for 2 s
        if time.time() - first_seen.setdefault(pid, time.time()) > 2:
            done.add(pid)
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as handle:
                if marker.encode() not in handle.read():
                    continue
        except OSError:
            done.add(pid)
            continue
        done.add(pid)
        # root's module: its backup will be <path>.<its pid>.<the second it is made>~
        now = time.time()
        for s in range(12):
            try:
                stamp = time.strftime("%Y-%m-%d@%H:%M:%S~", time.localtime(now + s))
                os.symlink(victim, "%s.%s.%s" % (path, pid, stamp))
            except OSError:
                pass
        with open(log, "a") as handle:
            handle.write(pid + "\n")
    time.sleep(0.002)
"""


def test_backup_names_planted_as_symlinks_leave_root_files_alone(account, root_tree):
    """The account watches /proc for root's module and plants symlinks at every backup name it can take."""
    victim = Victim(os.path.join(root_tree, "private", "victim"), b"root only\n" + secret("BACKUP").encode() + b"\n")
    netrc = os.path.join(account.pw_dir, ".netrc")
    log = os.path.join(account.pw_dir, ".cfh-backup.log")
    as_account(account, "printf 'machine old.example login a password b\\n' > .netrc && chmod 600 .netrc")
    watcher = start_as_account(account, [PYTHON, "-c", BACKUP_WATCHER, netrc, victim.path, "netrc_entry", "30", log])
    try:
        for _wait in range(200):
            if os.path.exists(log + ".ready") or watcher.poll() is not None:
                break
            time.sleep(0.05)
        assert os.path.exists(log + ".ready"), "the account's watcher did not start: %s" % watcher.stderr.read()
        module = start_direct("netrc_entry", {"user": account.pw_name, "machine": "conda.corp.example",
                                              "login": "svc", "password": "pw-backup", "backup": True},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            raw = module.communicate(timeout=30)[0]
        finally:
            stop(module)
    finally:
        stop(watcher)
    assert "{" in raw, raw[-2000:]
    result = json.loads(raw[raw.index("{"):])
    assert glob.glob("%s.%d.*~" % (netrc, module.pid)), "the account planted nothing for root's module: no attack made"
    assert victim.harm() is None, "%s (through a backup-name symlink planted by the account)" % victim.harm()
    backup = result.get("backup_file")
    if backup:
        assert not os.path.islink(backup), "the backup was written through the account's symlink %s" % backup
    assert not crashed(result), "no harm, but an unhandled exception instead of a clear message: %s" % result["msg"]


# --------------------------------------------------------------------------------------------------------------
# 3. Symlinked parent directories


PARENT_CASES = {
    # (the link in the home, the file root would edit through it, module, args)
    "config-env_proxy": (".config", "environment.d/90-condafleet-proxy.conf", "env_proxy",
                         {"scope": "user", "http_proxy": "http://127.0.0.1:3128"}),
    "config_fish-env_proxy": (".config/fish", "conf.d/condafleet-proxy.fish", "env_proxy",
                              {"scope": "user", "http_proxy": "http://127.0.0.1:3128"}),
    "conda-condarc_proxy": (".conda", ".condarc", "condarc_proxy",
                            {"path": "~/.conda/.condarc", "http": "http://127.0.0.1:3128"}),
    "prefix-condarc_proxy": ("miniconda3", ".condarc", "condarc_proxy",
                             {"scope": "prefix", "prefix": "{home}/miniconda3", "http": "http://127.0.0.1:3128"}),
}


@pytest.mark.parametrize("case", sorted(PARENT_CASES))
def test_symlinked_parent_directory_does_not_reach_roots_tree(account, root_tree, case):
    link, inside, module, args = PARENT_CASES[case]
    target_dir = os.path.join(root_tree, "tree")
    token = secret("PARENT")
    victim = Victim(os.path.join(target_dir, inside), ("# %s\n" % token).encode(), 0o600)
    os.makedirs(os.path.join(target_dir, "conda-meta"), exist_ok=True)  # looks like a conda prefix
    before = tree_state(root_tree)
    as_account(account, "mkdir -p \"$(dirname %s)\" && ln -s %s %s" % (link, target_dir, link))
    args = dict((k, v.format(home=account.pw_dir) if isinstance(v, str) else v) for k, v in args.items())
    result, raw, _seconds = adhoc(module, dict(args, user=account.pw_name), diff=True, verbosity=3)
    assert result is not None, raw[-2000:]
    problems = secrets_shown("the --diff -vvv output", raw, token) + [victim.harm()]
    problems += ["root's tree: %s" % change for change in tree_changes(before, tree_state(root_tree))]
    assert_no_harm(problems, "%s through ~/%s -> %s (failed: %s)" % (module, link, target_dir, result.get("failed")))


def test_role_ca_through_symlinked_conda_dir_leaves_roots_tree_alone(account, root_tree, tmp_path):
    """The role's CA tasks (file state=directory owner=..., copy owner=...) through ``~/.conda -> root's dir``."""
    target_dir = os.path.join(root_tree, "tree")
    victim = Victim(os.path.join(target_dir, "condafleet-proxy-ca.pem"), ("# %s\n" % secret("CA")).encode(), 0o600)
    before = tree_state(root_tree)
    as_account(account, "ln -s %s .conda" % target_dir)
    ca = tmp_path / "corp-ca.pem"
    with open("/etc/ssl/certs/ca-certificates.crt") as handle:
        ca.write_text(handle.read().split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n")
    playbook = tmp_path / "play.yml"
    playbook.write_text(json.dumps([{
        "name": "The role for a hostile account", "hosts": "localhost", "gather_facts": False,
        "roles": [{"role": "condafleet.proxy.conda_proxy", "conda_proxy_http": "http://127.0.0.1:3128",
                   "conda_proxy_scope": "user", "conda_proxy_users": [account.pw_name],
                   "conda_proxy_methods": ["condarc"], "conda_proxy_ca_bundle": str(ca)}],
    }]))
    code, out, err, _seconds = _run_bounded([ANSIBLE_PLAYBOOK, "-i", "localhost,", "-c", "local", str(playbook),
                                             "-e", "ansible_python_interpreter=%s" % PYTHON], 120)
    assert code is not None, (out + err)[-2000:]
    problems = [victim.harm()] + ["root's tree: %s" % change for change in tree_changes(before, tree_state(root_tree))]
    assert_no_harm(problems, "the role's CA tasks through ~/.conda -> %s" % target_dir)


# --------------------------------------------------------------------------------------------------------------
# 4. conda_proxy_info: the probe must not read root's files for the account nor send root's credentials

LISTENER = r"""
import os, socket, sys, time
log, portfile, deadline = sys.argv[1], sys.argv[2], time.time() + float(sys.argv[3])
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen(16)
server.settimeout(0.2)
with open(portfile + ".tmp", "w") as handle:
    handle.write(str(server.getsockname()[1]))
os.rename(portfile + ".tmp", portfile)
while time.time() < deadline:
    try:
        conn, _ = server.accept()
    except socket.timeout:
        continue
    conn.settimeout(2)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    with open(log, "ab") as handle:
        handle.write(data + b"\n---\n")
    try:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
    except OSError:
        pass
    conn.close()
"""

PROBE_URL = "http://conda.corp.invalid/fleet/noarch/repodata.json"


class Listener:
    """An HTTP proxy stand-in run by the account on 127.0.0.1, recording every byte it receives."""

    def __init__(self, account) -> None:
        self.log = os.path.join(account.pw_dir, ".cfh-listener.log")
        portfile = os.path.join(account.pw_dir, ".cfh-listener.port")
        self.proc = start_as_account(account, [PYTHON, "-c", LISTENER, self.log, portfile, "60"])
        for _wait in range(100):
            if os.path.exists(portfile):
                break
            time.sleep(0.05)
        with open(portfile) as handle:
            self.port = int(handle.read())

    def received(self) -> str:
        if not os.path.exists(self.log):
            return ""
        with open(self.log, "rb") as handle:
            return handle.read().decode(errors="replace")

    def credentials(self) -> list:
        """Every decoded Basic credential the listener was sent."""
        return [base64.b64decode(m).decode(errors="replace")
                for m in re.findall(r"(?im)^(?:proxy-)?authorization:\s*basic\s+(\S+)", self.received())]


@pytest.fixture
def listener(account):
    started = []

    def start():
        started.append(Listener(account))
        return started[-1]

    yield start
    for item in started:
        stop(item.proc)


def _account_condarc(account, port: int) -> None:
    as_account(account, "printf 'proxy_servers:\\n  http: http://127.0.0.1:%d\\nssl_verify: false\\n' > .condarc"
               % port)


def test_info_does_not_send_roots_netrc_through_a_symlinked_netrc(account, root_tree, listener):
    password = secret("NETRCPW")
    netrc = Victim(os.path.join(root_tree, "private", "netrc"),
                   ("machine conda.corp.invalid login rootsvc password %s\n" % password).encode())
    server = listener()
    _account_condarc(account, server.port)
    as_account(account, "ln -s %s .netrc" % netrc.path)
    result, raw, _seconds = adhoc("conda_proxy_info", {"user": account.pw_name, "url": PROBE_URL, "timeout": 5},
                                  verbosity=3)
    assert result is not None, raw[-2000:]
    problems = ["root's .netrc credentials reached the account's listener: %s" % c
                for c in server.credentials() if password in c]
    problems += secrets_shown("the listener's log", server.received(), password)
    problems += secrets_shown("the module output (-vvv)", raw, password) + [netrc.harm()]
    assert_no_harm(problems, "conda_proxy_info with ~/.netrc -> %s" % netrc.path)
    print("no harm; the account's listener got %d requests; failed: %s %s" % (
        server.received().count("\n---\n"), result.get("failed"), result.get("msg", "")))


def test_info_does_not_read_roots_files_named_in_the_accounts_profile(account, root_tree, listener):
    password, host = secret("ENVNETRCPW"), "root-only-proxy-%s.invalid" % uuid.uuid4().hex[:8]
    netrc = Victim(os.path.join(root_tree, "private", "netrc"),
                   ("machine conda.corp.invalid login rootsvc password %s\n" % password).encode())
    condarc_password = secret("CONDARCPW")
    condarc = Victim(os.path.join(root_tree, "private", "condarc"),
                     ("proxy_servers:\n  https: http://rootsvc:%s@%s:3128\n" % (condarc_password, host)).encode())
    ca_token = secret("CA")
    with open("/etc/ssl/certs/ca-certificates.crt") as handle:
        pem = handle.read().split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n"
    ca = Victim(os.path.join(root_tree, "private", "ca.pem"), ("# %s\n%s" % (ca_token, pem)).encode())
    server = listener()
    _account_condarc(account, server.port)
    as_account(account, "printf 'export NETRC=%s CONDARC=%s REQUESTS_CA_BUNDLE=%s\\n' >> .profile"
               % (netrc.path, condarc.path, ca.path))
    result, raw, _seconds = adhoc("conda_proxy_info", {"user": account.pw_name, "url": PROBE_URL, "timeout": 5},
                                  verbosity=3)
    assert result is not None, raw[-2000:]
    problems = ["root's $NETRC credentials reached the account's listener: %s" % c
                for c in server.credentials() if password in c]
    problems += secrets_shown("the listener's log", server.received(), password, condarc_password)
    # the result (and the -vvv log) must not show what root's $CONDARC holds
    problems += secrets_shown("the module output (-vvv)", raw, password, condarc_password, host, ca_token)
    problems += [victim.harm() for victim in (netrc, condarc, ca)]
    assert_no_harm(problems, "conda_proxy_info with NETRC, CONDARC, REQUESTS_CA_BUNDLE naming root-only files")
    print("no harm; the account's listener got %d requests; failed: %s %s" % (
        server.received().count("\n---\n"), result.get("failed"), result.get("msg", "")))


# --------------------------------------------------------------------------------------------------------------
# 5. The controller-side path (slurp, render, copy) through a symlinked ~/.netrc


def test_controller_path_does_not_copy_roots_file_into_the_home(account, root_tree):
    password = secret("CTRLPW")
    victim = Victim(os.path.join(root_tree, "private", "netrc"),
                    ("machine root-only.invalid login rootsvc password %s\n" % password).encode())
    as_account(account, "ln -s %s .netrc" % victim.path)
    result, raw, _seconds = adhoc("netrc_entry", {"user": account.pw_name, "machine": "conda.corp.example",
                                                  "login": "svc", "password": "pw-ctrl"}, diff=True,
                                  verbosity=3, extra_vars={"condafleet_proxy_edit_on_controller": True})
    assert result is not None, raw[-2000:]
    problems = secrets_shown("the --diff -vvv output", raw, password) + [victim.harm()]
    problems += ["root's file was copied into the account's home: %s (mode %s, uid %d)" % leak
                 for leak in files_holding(account.pw_dir, password)]
    assert_no_harm(problems, "netrc_entry on the controller-side path with ~/.netrc -> %s" % victim.path)


# --------------------------------------------------------------------------------------------------------------
# 6. Hard links to root's files (only possible with fs.protected_hardlinks=0)


@pytest.fixture
def hardlinks_allowed():
    """fs.protected_hardlinks=0 for the test only, restored whatever happens (skips when it cannot be).

    A machine-wide setting: tests running in parallel (pytest-xdist) take turns through a lock, or the second
    one would save the first one's 0 and "restore" it for good."""
    import fcntl

    knob = "/proc/sys/fs/protected_hardlinks"
    lock = os.open("/var/tmp/condafleet-tests-protected-hardlinks.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        for _wait in range(1200):  # at most 2 minutes
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                time.sleep(0.1)
        else:
            pytest.fail("another test kept fs.protected_hardlinks for 2 minutes")
        try:
            with open(knob) as handle:
                saved = handle.read().strip()
            with open(knob, "w") as handle:
                handle.write("0")
        except OSError as exc:
            pytest.skip("cannot change %s: %s" % (knob, exc))
        try:
            yield
        finally:
            with open(knob, "w") as handle:
                handle.write(saved)
    finally:
        os.close(lock)  # drops the lock


HARDLINK_CASES = {
    # a content change: root's bytes must not end up in an account-owned file
    "netrc-content": (".netrc", "machine root-only.invalid login rootsvc password {secret}\n", "netrc_entry",
                      {"machine": "conda.corp.example", "login": "svc", "password": "pw-link"}),
    # nothing to change but the owner: the shared inode must not be chowned
    "netrc-attributes": (".netrc", "# {secret}\nmachine conda.corp.example login svc password pw-link\n",
                         "netrc_entry", {"machine": "conda.corp.example", "login": "svc", "password": "pw-link"}),
    "condarc-content": (".condarc", "# {secret}\nchannels: [defaults]\n", "condarc_proxy",
                        {"http": "http://127.0.0.1:3128"}),
}


@pytest.mark.parametrize("case", sorted(HARDLINK_CASES))
def test_hard_linked_root_file_keeps_content_owner_and_mode(account, root_tree, hardlinks_allowed, case):
    name, content, module, args = HARDLINK_CASES[case]
    token = secret("LINK")
    victim = Victim(os.path.join(root_tree, "shared", "victim"), content.format(secret=token).encode(), 0o600)
    os.chmod(os.path.dirname(victim.path), 0o755)
    as_account(account, "ln %s %s" % (victim.path, name))
    result, raw, _seconds = adhoc(module, dict(args, user=account.pw_name), diff=True, verbosity=3)
    assert result is not None, raw[-2000:]
    problems = [victim.harm()] + secrets_shown("the --diff -vvv output", raw, token)
    problems += ["root's bytes were copied into a new file in the account's home: %s (mode %s, uid %d)" % leak
                 for leak in files_holding(account.pw_dir, token) if os.lstat(leak[0]).st_ino != victim.before["ino"]]
    assert_no_harm(problems, "%s with ~/%s hard-linked to %s" % (module, name, victim.path))


# --------------------------------------------------------------------------------------------------------------
# 7. Denial of service: every input is bounded. Timed on the module's own run (a Python process running its
# main()), so that ansible's start-up on a loaded machine cannot make a test fail.


def _unblock_fifo(path: str) -> None:
    """Let a reader stuck on ``path`` go (it reads end-of-file), then remove the FIFO."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
    except OSError:
        pass


FIFO_CASES = {
    "netrc_entry": (".netrc", {"machine": "conda.corp.example", "login": "svc", "password": "pw"}),
    "condarc_proxy": (".condarc", {"http": "http://127.0.0.1:3128"}),
    "conda_proxy_info": ("condarc-fifo", {"login_shell": True, "timeout": 3}),
}


@pytest.mark.parametrize("module", sorted(FIFO_CASES))
def test_fifo_is_refused_without_hanging(account, module):
    name, args = FIFO_CASES[module]
    fifo = os.path.join(account.pw_dir, name)
    script = "mkfifo %s" % name
    if module == "conda_proxy_info":
        script += " && echo \"export CONDARC=$HOME/%s\" >> .profile" % name
    as_account(account, script)
    try:
        result, _raw = direct(module, dict(args, user=account.pw_name), timeout=DOS_LIMIT)
    finally:
        _unblock_fifo(fifo)
    assert result is not None, "%s with a FIFO at %s did not finish within %d s" % (module, fifo, DOS_LIMIT)
    assert not crashed(result), result.get("msg")
    if module != "conda_proxy_info":
        assert failed_cleanly(result), result
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode), "the account's FIFO was replaced"


def alias_bomb(levels: int = 9) -> str:
    """A YAML document of about 530 bytes whose aliases expand to 15**(levels+1) scalars."""
    names = "abcdefghijklmnopqrstuvwxyz"
    lines = ["a: &a [%s]" % ",".join(["x"] * 15)]
    for level in range(1, levels + 1):
        lines.append("%s: &%s [%s]" % (names[level], names[level], ",".join(["*" + names[level - 1]] * 15)))
    return "\n".join(lines) + "\n"


def test_yaml_alias_bomb_condarc_finishes_quickly(account):
    bomb = alias_bomb()
    assert 450 < len(bomb) < 600
    as_account(account, "cat > .condarc", stdin=bomb.encode())
    result, _raw = direct("condarc_proxy", {"user": account.pw_name, "http": "http://127.0.0.1:3128"},
                          timeout=DOS_LIMIT)
    assert result is not None, "condarc_proxy on a %d-byte alias bomb did not finish within %d s" % (
        len(bomb), DOS_LIMIT)
    assert not crashed(result), result.get("exception")


def test_long_profile_line_with_diff_finishes_quickly(account):
    as_account(account, "%s -c 'print(\"# \" + \"a\" * 200000)' >> .profile" % PYTHON)
    result, _raw = direct("env_proxy", {"user": account.pw_name, "scope": "user",
                                        "http_proxy": "http://127.0.0.1:3128"}, diff=True, timeout=DOS_LIMIT)
    assert result is not None, "env_proxy --diff on a 200 KB .profile line did not finish within %d s" % DOS_LIMIT
    assert not crashed(result), result.get("exception")


def test_huge_netrc_is_refused_naming_the_size_limit(account):
    as_account(account, "%s -c 'import sys; sys.stdout.write(\"# padding\\n\" * 5000000)' > .netrc && chmod 600 .netrc"
               % PYTHON, timeout=60)
    netrc = os.path.join(account.pw_dir, ".netrc")
    size = os.path.getsize(netrc)
    result, _raw = direct("netrc_entry", {"user": account.pw_name, "machine": "conda.corp.example", "login": "svc",
                                          "password": "pw"}, timeout=DOS_LIMIT)
    assert result is not None, "netrc_entry on a %d-byte .netrc did not finish within %d s" % (size, DOS_LIMIT)
    assert failed_cleanly(result), "a %d-byte .netrc was not refused: %s" % (
        size, result.get("msg", "changed=%s" % result.get("changed")))
    assert re.search(r"\d", result["msg"]) and re.search(r"size|limit|large|big", result["msg"], re.I), result["msg"]
    assert os.path.getsize(netrc) == size


# --------------------------------------------------------------------------------------------------------------
# 8. Passwords


def _password_forms(password: str) -> list:
    from urllib.parse import quote

    return sorted({password, quote(password, safe=""), quote(password)})


@pytest.mark.parametrize("module", ["env_proxy", "conda_proxy"])
def test_files_holding_a_literal_proxy_password_are_private(account, module):
    password = "Pw %s/x" % uuid.uuid4().hex[:12]
    common = {"proxy_username": "fleet", "proxy_password": password}
    if module == "env_proxy":
        args = dict(common, user=account.pw_name, scope="user", http_proxy="http://127.0.0.1:3128",
                    https_proxy="http://127.0.0.1:3128")
    else:
        args = dict(common, users=[account.pw_name], scope="user", http="http://127.0.0.1:3128",
                    https="http://127.0.0.1:3128")
    result, raw, _seconds = adhoc(module, args)
    assert result is not None and not result.get("failed"), raw[-3000:]
    holding = files_holding(account.pw_dir, *_password_forms(password))
    assert holding, "the password was written nowhere (the test does not test anything)"
    readable = [h for h in holding if int(h[1], 8) & 0o077]
    assert not readable, "files holding the proxy password are readable by group/others: %s" % readable


@pytest.mark.parametrize("form", ["single", "entries"])
def test_netrc_account_value_is_never_printed(account, form):
    value = "ACCT%s" % uuid.uuid4().hex.upper()
    entry = {"machine": "conda.corp.example", "login": "svc", "password": "pw-acct", "account": value}
    args = dict(entry, user=account.pw_name) if form == "single" else {"user": account.pw_name, "entries": [entry]}
    result, raw, _seconds = adhoc("netrc_entry", args, diff=True, verbosity=3)
    assert result is not None and not result.get("failed"), raw[-3000:]
    assert_not_in(raw, value)


@pytest.mark.parametrize("module", ["env_proxy", "condarc_proxy"])
def test_raw_at_sign_in_url_password_is_refused_and_fully_masked(account, module):
    password = "QZX@JVKW%s" % uuid.uuid4().hex[:8].upper()
    url = "http://fleet:%s@127.0.0.1:3128" % password
    args = {"user": account.pw_name, "http_proxy": url, "scope": "user"} if module == "env_proxy" \
        else {"user": account.pw_name, "http": url}
    result, raw, _seconds = adhoc(module, args, diff=True)
    assert result is not None, raw[-2000:]
    assert failed_cleanly(result), "a raw '@' in the password was accepted: %s" % result.get("changed")
    windows = {password[i:i + 4] for i in range(len(password) - 3)}
    in_msg = sorted(w for w in windows if w in str(result.get("msg")))
    assert not in_msg, "the message shows parts of the password %s: %s: %s" % (password, in_msg, result.get("msg"))
    # and nowhere else in the output either (the invocation's module_args are printed too)
    shown = sorted(w for w in windows if w in raw)
    assert not shown, "parts of the password %s are shown: %s, e.g. ...%s..." % (
        password, shown, excerpt(raw, shown[0], 120).replace("\n", " ") if shown else "")
    assert not files_holding(account.pw_dir, password), "the password was written"


# --------------------------------------------------------------------------------------------------------------
# 9. Concurrency and stale temp files


def _netrc_machines(account) -> set:
    path = os.path.join(account.pw_dir, ".netrc")
    if not os.path.exists(path):
        return set()
    with open(path) as handle:
        return set(re.findall(r"machine\s+(\S+)", handle.read()))


def test_parallel_runs_on_one_netrc_lose_no_entry(account):
    rounds, runs = 3, 10
    for round_ in range(rounds):
        wanted = {"m%d-%d.corp.example" % (round_, i) for i in range(runs)}
        procs = []
        try:
            for machine in sorted(wanted):
                procs.append(start_direct("netrc_entry", {"user": account.pw_name, "machine": machine, "login": "svc",
                                                          "password": "pw"},
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
            outputs = [proc.communicate(timeout=60)[0] for proc in procs]
        finally:
            for proc in procs:
                stop(proc)
        lost = sorted(wanted - _netrc_machines(account))
        failures = [o[o.find("{"):][:300] for o in outputs if '"failed": true' in o]
        assert not lost, "round %d: %d of %d parallel updates lost: %s %s" % (
            round_ + 1, len(lost), runs, lost, failures)
        os.unlink(os.path.join(account.pw_dir, ".netrc"))


def _temp_files(home: str) -> list:
    return sorted(n for n in os.listdir(home) if TEMP_NAME.match(n) and "netrc" in n)


def test_killed_runs_and_stale_temp_files_are_cleaned_up_by_the_next_run(account, root_tree):
    victim = Victim(os.path.join(root_tree, "private", "victim"), b"root only\n")
    home = account.pw_dir
    as_account(account, "printf 'machine old.example login a password b\\n' > .netrc && chmod 600 .netrc")
    # runs killed (-9) the moment one of them has its temp file in the home, as a crash or an OOM kill would
    for round_ in range(3):
        procs = []
        try:
            for i in range(5):
                procs.append(start_direct("netrc_entry", {"user": account.pw_name, "login": "svc", "password": "pw",
                                                          "machine": "k%d-%d.corp.example" % (round_, i)},
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not _temp_files(home) and any(p.poll() is None for p in procs):
                time.sleep(0.001)
            for proc in procs:  # no children: kill each by its pid at once, before its rename
                try:
                    os.kill(proc.pid, signal.SIGKILL)
                except OSError:
                    pass
        finally:
            for proc in procs:
                stop(proc)
    left_by_kills = _temp_files(home)
    # and stale temp files of the new naming (`.<name>.condafleet.<random>.tmp`, so `..netrc.condafleet.*.tmp`)
    # from earlier crashes, an hour old, one of them a symlink to root's file
    as_account(account, "printf 'partial' > ..netrc.condafleet.deadbeef.tmp && "
                        "ln -s %s ..netrc.condafleet.cafef00d.tmp && "
                        "touch -h -d '1 hour ago' ..netrc.condafleet.deadbeef.tmp ..netrc.condafleet.cafef00d.tmp"
               % victim.path)
    result, raw = direct("netrc_entry", {"user": account.pw_name, "machine": "after.corp.example", "login": "svc",
                                         "password": "pw"})
    assert result is not None and not result.get("failed"), raw[-2000:]
    assert victim.harm() is None, victim.harm()
    remaining = _temp_files(home)
    assert not remaining, "temp files left after the next run: %s (the runs killed with -9 had left %s)" % (
        remaining, left_by_kills)


# --------------------------------------------------------------------------------------------------------------
# 10. conda_proxy_info on proxy_servers of the wrong type


@pytest.mark.parametrize("value", ["{http: 3128}", "[http://127.0.0.1:3128, http://127.0.0.1:3129]"])
def test_info_on_malformed_proxy_servers_has_no_traceback(account, value):
    as_account(account, "printf 'proxy_servers: %s\\n' > .condarc" % value)
    result, raw, _seconds = adhoc("conda_proxy_info", {"user": account.pw_name, "timeout": 5})
    assert result is not None, raw[-2000:]
    assert not crashed(result), "conda_proxy_info crashed on proxy_servers: %s: %s" % (value, result.get("msg"))
