# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""conda_installer's Windows path (the action plugin) against a simulated Windows host.

No Windows host runs here. The connection is simulated (PowerShell shell family) and a small in-memory host
answers the ansible.windows modules the plugin uses the way they behave: ``win_get_url`` downloads to a temp file
and fails naming both digests when the checksum differs (nothing reaches ``dest``), and skips the download when
``dest`` already has the checksum; ``win_command`` runs an NSIS-style installer (``/S ... /D=PREFIX``) that lays
out a conda prefix, or fails half-way. What is asserted is what this collection decides: the command line,
the cache by digest, refusal of a bad digest, idempotence, replacement only when asked, cleanup, check mode.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import re
from unittest import mock

import pytest
from ansible.playbook.play_context import PlayContext
from ansible.playbook.task import Task

INSTALLER = b"MZ fake Miniconda3 24.11.1 installer"
BROKEN = b"MZ fake installer that fails half-way"
DIGEST = hashlib.sha256(INSTALLER).hexdigest()
BROKEN_DIGEST = hashlib.sha256(BROKEN).hexdigest()
URL = "https://repo.example/miniconda/Miniconda3-py312_24.11.1-0-Windows-x86_64.exe"
BROKEN_URL = "https://repo.example/miniconda/Broken-Windows-x86_64.exe"
PREFIX = "C:\\ProgramData\\Miniconda3"
CACHE = "C:\\ProgramData\\condafleet-installers"


class WindowsHost:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.dirs: set[str] = set()
        self.web = {URL: INSTALLER, BROKEN_URL: BROKEN,
                    "https://repo.example/miniconda/SHA256SUMS": ("%s  %s\n" % (DIGEST, URL.rsplit("/", 1)[1])).encode()}
        self.calls: list[tuple[str, dict]] = []
        self.downloads: list[str] = []

    def exists(self, path: str) -> bool:
        return path in self.files or path in self.dirs or any(f.startswith(path + "\\") for f in self.files)

    def execute_module(self, module_name=None, module_args=None, task_vars=None, **kwargs):
        args = dict(module_args)
        self.calls.append((module_name, args))
        if module_name == "ansible.windows.win_stat":
            path = args["path"]
            stat = {"exists": self.exists(path)}
            if path in self.files and args.get("get_checksum"):
                stat["checksum"] = hashlib.sha256(self.files[path]).hexdigest()
            return {"stat": stat}
        if module_name == "ansible.windows.win_find":
            pattern = re.compile("^" + re.escape(args["patterns"][0]).replace("\\*", ".*") + "$")
            found = [{"path": p, "filename": p.rsplit("\\", 1)[1]} for p in self.files
                     if p.rsplit("\\", 1)[0] == args["paths"] and pattern.match(p.rsplit("\\", 1)[1])]
            return {"files": found, "matched": len(found)}
        if module_name == "ansible.windows.slurp":
            if args["src"] not in self.files:
                return {"failed": True, "msg": "Path %s is not found" % args["src"]}
            return {"content": base64.b64encode(self.files[args["src"]]).decode()}
        if module_name == "ansible.windows.win_uri":
            return {"content": self.web[args["url"]].decode(), "status_code": 200}
        if module_name == "ansible.windows.win_file":
            if args["state"] == "directory":
                changed = args["path"] not in self.dirs
                self.dirs.add(args["path"])
                return {"changed": changed}
            path = args["path"]
            gone = [p for p in self.files if p == path or p.startswith(path + "\\")]
            for p in gone:
                del self.files[p]
            self.dirs = {d for d in self.dirs if d != path and not d.startswith(path + "\\")}
            return {"changed": bool(gone)}
        if module_name == "ansible.windows.win_get_url":
            dest, checksum = args["dest"], args["checksum"]
            if dest in self.files and hashlib.sha256(self.files[dest]).hexdigest() == checksum:
                return {"changed": False, "dest": dest, "checksum_dest": checksum}
            self.downloads.append(args["url"])
            data = self.web[args["url"]]
            actual = hashlib.sha256(data).hexdigest()
            if actual != checksum:  # win_get_url.ps1: the temp file is checked before it is copied to dest
                return {"failed": True, "msg": "The checksum for %s did not match '%s', it was '%s'"
                        % (args["url"], checksum, actual)}
            self.files[dest] = data
            return {"changed": True, "dest": dest, "checksum_dest": actual}
        if module_name == "ansible.windows.win_command":
            if "argv" in args:  # conda --version
                conda = args["argv"][0]
                if conda not in self.files:
                    return {"failed": True, "rc": 2, "msg": "The system cannot find the file specified"}
                return {"rc": 0, "stdout": self.files[conda].decode()}
            cmd = args["cmd"]
            exe = cmd.split('"')[1]
            if "/S _?=" in cmd:  # an uninstaller
                return {"rc": 0, "changed": True}
            prefix = cmd.split("/D=", 1)[1]
            self.files[prefix + "\\Uninstall-Miniconda3.exe"] = b"MZ uninstaller"
            if self.files.get(exe) == BROKEN:
                self.files[prefix + "\\pkgs\\half.tar.bz2"] = b"half"
                return {"rc": 1, "failed": True, "stderr": "extraction failed"}
            self.files[prefix + "\\Scripts\\conda.exe"] = b"conda 24.11.1\n"
            self.files[prefix + "\\conda-meta\\conda-24.11.1-py312haa95532_0.json"] = b"{}"
            return {"rc": 0, "changed": True, "stdout": "installation finished.\n"}
        raise AssertionError("unexpected module %s" % module_name)

    def copy_action(self, name, task=None, **kwargs):
        assert name == "ansible.windows.win_copy", name
        host = self

        class Copy:
            def run(self, task_vars=None):
                with open(task.args["src"], "rb") as handle:
                    host.files[task.args["dest"]] = handle.read()
                host.calls.append((name, dict(task.args)))
                return {"changed": True}

        return Copy()


def run_action(args: dict, host: WindowsHost, check: bool = False) -> dict:
    plugin = importlib.import_module("ansible_collections.condafleet.proxy.plugins.action.conda_installer")
    task = Task()
    task.action = "condafleet.proxy.conda_installer"
    task.args = dict(args)
    task.check_mode = check
    connection = mock.MagicMock()
    connection._shell.SHELL_FAMILY = "powershell"
    connection._shell.tmpdir = None
    loader = mock.MagicMock()
    loader.action_loader.get.side_effect = lambda name, task=None, **kw: host.copy_action(name, task=task)
    action = plugin.ActionModule(task, connection, PlayContext(), loader=None, templar=None)
    action._shared_loader_obj = loader
    action._execute_module = mock.MagicMock(side_effect=host.execute_module)
    return action.run(task_vars={"ansible_user": "admin"})


def commands(host: WindowsHost) -> list:
    return [args.get("cmd") or args.get("argv") for name, args in host.calls if name == "ansible.windows.win_command"]


def test_verified_install_then_rerun_changes_and_downloads_nothing():
    host = WindowsHost()
    args = {"url": URL, "sha256": DIGEST, "prefix": PREFIX, "version": "24.11.1",
            "proxy": "http://fleet:p%40ss@proxy.corp.example:3128"}
    check = run_action(args, host, check=True)
    assert check["changed"] and check["action"] == "install" and check["would_download"], check
    assert host.files == {} and host.downloads == []

    result = run_action(args, host)
    assert not result.get("failed") and result["changed"] and result["downloaded"], result
    assert result["version"] == "24.11.1" and result["cache_file"] == "%s\\%s.exe" % (CACHE, DIGEST)
    assert "p@ss" not in str(result) and "p%40ss" not in str(result), "the proxy password is masked"
    install = [c for c in commands(host) if isinstance(c, str)][0]
    assert install == ('"%s\\%s.exe" /S /InstallationType=AllUsers /RegisterPython=0 /AddToPath=0 /D=%s'
                       % (CACHE, DIGEST, PREFIX))
    get_url = [a for n, a in host.calls if n == "ansible.windows.win_get_url"][0]
    assert get_url["checksum"] == DIGEST and get_url["checksum_algorithm"] == "sha256"
    assert get_url["proxy_url"] == "http://proxy.corp.example:3128"
    assert get_url["proxy_username"] == "fleet" and get_url["proxy_password"] == "p@ss"
    assert PREFIX + "\\" + ".condafleet-installer.json" in host.files

    host.calls.clear()
    again = run_action(args, host)
    assert not again["changed"] and again["action"] == "keep" and again["version"] == "24.11.1", again
    assert host.downloads == [URL] and commands(host) == []

    # A second prefix from the cache: win_get_url finds the file with the digest, nothing downloaded.
    second = run_action(dict(args, prefix="D:\\Miniconda3"), host)
    assert second["changed"] and not second["downloaded"] and host.downloads == [URL], second


def test_bad_digest_is_refused_with_both_digests_and_nothing_runs():
    host = WindowsHost()
    wrong = hashlib.sha256(b"what the admin expected").hexdigest()
    result = run_action({"url": URL, "sha256": wrong, "prefix": PREFIX}, host)
    assert result["failed"] and not result["changed"], result
    assert wrong in result["msg"] and DIGEST in result["msg"]
    assert commands(host) == [] and not host.exists(PREFIX)
    assert not any(p.startswith(CACHE + "\\") for p in host.files)


def test_failed_installer_leaves_no_prefix():
    host = WindowsHost()
    result = run_action({"url": BROKEN_URL, "sha256": BROKEN_DIGEST, "prefix": PREFIX}, host)
    assert result["failed"] and "failed (rc=1)" in result["msg"], result
    assert not host.exists(PREFIX)


def test_other_version_reported_then_replaced_when_asked():
    host = WindowsHost()
    host.files[PREFIX + "\\conda-meta\\conda-4.14.0-py39_0.json"] = b"{}"
    host.files[PREFIX + "\\Uninstall-Miniconda3.exe"] = b"MZ old uninstaller"
    args = {"url": URL, "sha256": DIGEST, "prefix": PREFIX, "version": "24.11.1"}
    reported = run_action(args, host)
    assert not reported["changed"] and reported["action"] == "report" and reported["version"] == "4.14.0", reported
    assert any("4.14.0" in w for w in reported["warnings"]) and host.downloads == []

    replaced = run_action(dict(args, replace=True), host)
    assert replaced["changed"] and replaced["action"] == "replace" and replaced["version"] == "24.11.1", replaced
    assert PREFIX + "\\conda-meta\\conda-4.14.0-py39_0.json" not in host.files
    assert any(isinstance(c, str) and "Uninstall-Miniconda3.exe\" /S _?=" in c for c in commands(host))


def test_checksum_url_and_proxy_from_the_system_condarc():
    host = WindowsHost()
    host.files["C:\\ProgramData\\conda\\.condarc"] = b"proxy_servers:\n  https: http://fleet:s3cret@proxy:3128\n"
    result = run_action({"url": URL, "checksum_url": "https://repo.example/miniconda/SHA256SUMS",
                         "prefix": "C:\\Users\\admin\\miniconda3", "user": "admin"}, host)
    assert not result.get("failed"), result
    assert result["sha256"] == DIGEST and result["proxy_source"] == "condarc", result
    assert result["proxy"] == "http://fleet:********@proxy:3128"
    assert result["cache_file"].startswith("%LOCALAPPDATA%\\condafleet-installers\\")
    assert "/InstallationType=JustMe" in [c for c in commands(host) if isinstance(c, str)][0]
    host.calls.clear()
    again = run_action({"url": URL, "checksum_url": "https://repo.example/miniconda/SHA256SUMS",
                        "prefix": "C:\\Users\\admin\\miniconda3", "user": "admin"}, host)
    assert not again["changed"] and again["action"] == "keep", again
    assert not [n for n, _a in host.calls if n in ("ansible.windows.win_uri", "ansible.windows.win_get_url")]


def test_absent_removes_only_what_it_installed():
    host = WindowsHost()
    host.files["C:\\Other\\conda-meta\\conda-4.14.0-0.json"] = b"{}"
    refused = run_action({"prefix": "C:\\Other", "state": "absent"}, host)
    assert refused["failed"] and host.exists("C:\\Other"), refused
    run_action({"url": URL, "sha256": DIGEST, "prefix": PREFIX}, host)
    assert run_action({"prefix": PREFIX, "state": "absent"}, host, check=True)["changed"] and host.exists(PREFIX)
    removed = run_action({"prefix": PREFIX, "state": "absent"}, host)
    assert removed["changed"] and not host.exists(PREFIX), removed
    assert not run_action({"prefix": PREFIX, "state": "absent"}, host)["changed"]


@pytest.mark.parametrize("args, message", [
    ({"url": URL, "prefix": PREFIX}, "needs sha256 or checksum_url"),
    ({"url": URL, "prefix": "/opt/miniconda3", "sha256": DIGEST}, "drive letter"),
    ({"url": URL, "prefix": PREFIX, "sha256": "abc"}, "64 hexadecimal digits"),
    ({"url": URL, "prefix": PREFIX, "sha256": DIGEST, "user": "alice"}, "connecting account"),
    ({"url": URL, "prefix": "C:\\Program Files\\x\" /X", "sha256": DIGEST}, "double quote"),
])
def test_bad_input_changes_nothing(args, message):
    host = WindowsHost()
    result = run_action(args, host)
    assert result["failed"] and message in result["msg"], result
    assert host.files == {} and host.downloads == []
