# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""conda_installer for real: a Miniconda-style installer served behind a real squid with Basic auth.

The installer is a self-extracting shell script with the Miniconda command-line interface (``-b -p PREFIX``,
``-u``): its payload is ``../shared/real-conda`` (conda's own source and install script), which it installs at
``PREFIX`` and records in ``conda-meta`` the way a real installer does. The server hands it out only to
connections squid's account opened (``/proc/net/tcp``), so a download that went direct fails, and squid's access
log shows every download. Root only (squid drops to its own account, installs run as throwaway accounts).
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import pwd
import shutil
import subprocess
import tempfile
import threading

import pytest

import realconda
from accounts import throwaway_account
from modulerun import call_module
from realconda import CONDA_VERSION, build_installer
from servers import LOOPBACK, _squid_user, socket_owner_uid

pytestmark = [pytest.mark.slow]

REAL_CONDA = os.path.dirname(realconda.INSTALLER)


class InstallerServer:
    """Serves ``root`` on 127.0.0.1 only to connections squid's account opened (403 otherwise); honours
    ``Range: bytes=N-``; with ``cut`` a set of paths whose first response stops half-way (a dropped download)."""

    def __init__(self, root: str, only_uid: int, cut: set | None = None) -> None:
        log = self.log = []
        cut = set(cut or ())

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 -- http.server's naming
                peer_uid = socket_owner_uid(self.client_address[:2], self.server.server_address[:2])
                path = self.path.split("?")[0]
                entry = {"path": path, "peer_uid": peer_uid, "range": self.headers.get("Range"), "status": None}
                log.append(entry)
                if peer_uid != only_uid:
                    return self._send(entry, 403, b"direct access refused: only the proxy may connect\n")
                full = os.path.join(root, path.lstrip("/"))
                if not os.path.isfile(full):
                    return self._send(entry, 404, b"not found\n")
                with open(full, "rb") as handle:
                    data = handle.read()
                start = 0
                wanted = self.headers.get("Range") or ""
                if wanted.startswith("bytes=") and wanted.endswith("-"):
                    start = int(wanted[len("bytes="):-1])
                if start:
                    entry["status"] = 206
                    self.send_response(206)
                    self.send_header("Content-Range", "bytes %d-%d/%d" % (start, len(data) - 1, len(data)))
                else:
                    entry["status"] = 200
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if path in cut:
                    cut.discard(path)
                    entry["cut"] = True
                    self.wfile.write(data[start:start + (len(data) - start) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(data[start:])

            def _send(self, entry, code, body) -> None:
                entry["status"] = code
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return "http://%s:%d" % (LOOPBACK, self.port)

    def downloads(self, name: str) -> list:
        return [e for e in self.log if e["path"].endswith("/" + name) and e["status"] in (200, 206)]

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture(scope="module")
def installers(request):
    """``{name: sha256}`` of the test installers in a served directory, plus a SHA256SUMS file."""
    if os.geteuid() != 0:
        pytest.skip("conda_installer's integration test runs as root (squid, accounts)")
    if not os.path.isfile(os.path.join(REAL_CONDA, "install.sh")):
        pytest.skip("real conda needed: ../shared/real-conda/install.sh is absent from this checkout's parent")
    # Readable by every account: the module downloads with the account's identity, and with call_module it
    # runs in this process, whose server threads then share that identity.
    import pathlib

    base = tempfile.mkdtemp(prefix="condafleet-installers-", dir="/var/tmp")
    os.chmod(base, 0o755)
    request.addfinalizer(lambda: shutil.rmtree(base, ignore_errors=True))
    root = pathlib.Path(base)
    files = {}
    files["Testconda3-latest-Linux-x86_64.sh"] = build_installer(str(root / "Testconda3-latest-Linux-x86_64.sh"))
    files["Testconda3-broken-Linux-x86_64.sh"] = build_installer(str(root / "Testconda3-broken-Linux-x86_64.sh"),
                                                                 fail=True)
    good = (root / "Testconda3-latest-Linux-x86_64.sh").read_bytes()
    tampered = bytearray(good)
    tampered[len(tampered) // 2] ^= 0x01  # one flipped bit in the payload
    (root / "Testconda3-tampered-Linux-x86_64.sh").write_bytes(bytes(tampered))
    files["Testconda3-tampered-Linux-x86_64.sh"] = hashlib.sha256(bytes(tampered)).hexdigest()
    for name in os.listdir(base):
        os.chmod(os.path.join(base, name), 0o644)
    (root / "SHA256SUMS").write_text("".join("%s  %s\n" % (digest, name) for name, digest in sorted(files.items())))
    return str(root), files


@pytest.fixture
def squid(squid_factory):
    return squid_factory("fleet", "pr0xy s3cret@:")


@pytest.fixture
def server(installers, squid):
    root, _files = installers
    with InstallerServer(root, pwd.getpwnam(_squid_user()).pw_uid) as srv:
        yield srv


@pytest.fixture
def work(tmp_path):
    """A root-owned 0755 directory for prefixes and caches (tmp_path's parents may not be searchable by accounts)."""
    base = tempfile.mkdtemp(prefix="condafleet-installer-", dir="/var/tmp")
    os.chmod(base, 0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def account():
    with throwaway_account("cfn") as entry:
        yield entry


def squid_downloads(squid, name: str) -> list:
    return [line for line in squid.log().splitlines() if name in line and "TCP_DENIED" not in line]


def as_account(entry, argv: list) -> subprocess.CompletedProcess:
    def demote():
        os.initgroups(entry.pw_name, entry.pw_gid)
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)

    env = {"HOME": entry.pw_dir, "USER": entry.pw_name, "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    return subprocess.run(argv, preexec_fn=demote, env=env, cwd=entry.pw_dir, capture_output=True, text=True,
                          timeout=120, check=False)


LATEST = "Testconda3-latest-Linux-x86_64.sh"


def test_verified_install_through_squid_then_rerun_downloads_nothing(installers, squid, server, work):
    _root, files = installers
    prefix, cache = os.path.join(work, "opt", "testconda3"), os.path.join(work, "cache")
    args = {"url": "%s/%s" % (server.url, LATEST), "sha256": files[LATEST], "prefix": prefix, "cache_dir": cache,
            "proxy": squid.url_with("fleet", "pr0xy s3cret@:"), "version": CONDA_VERSION}

    check = call_module("conda_installer", args, check=True)
    assert check["changed"] and check["action"] == "install" and not check["cached"], check
    assert not os.path.exists(prefix) and not server.downloads(LATEST), "check mode downloads and installs nothing"

    result = call_module("conda_installer", args)
    assert not result.get("failed"), result
    assert result["changed"] and result["action"] == "install" and result["downloaded"], result
    assert result["version"] == CONDA_VERSION
    assert "pr0xy" not in json.dumps(result), "the proxy password is masked"
    run = subprocess.run([os.path.join(prefix, "bin", "conda"), "--version"], capture_output=True, text=True,
                         timeout=120, check=False)
    assert run.returncode == 0 and CONDA_VERSION in run.stdout, run
    # Downloaded through squid, as its account, and cached by digest.
    assert len(squid_downloads(squid, LATEST)) == 1, squid.log()
    assert [e["peer_uid"] for e in server.downloads(LATEST)] == [pwd.getpwnam(_squid_user()).pw_uid]
    assert sorted(os.listdir(cache)) == ["%s.sh" % files[LATEST]]
    assert os.path.isfile(os.path.join(prefix, ".condafleet-installer.json"))

    log_before = squid.log()
    again = call_module("conda_installer", args)
    assert not again.get("failed"), again
    assert not again["changed"] and again["action"] == "keep" and not again["downloaded"], again
    assert again["version"] == CONDA_VERSION
    assert squid.log() == log_before, "a rerun downloads nothing"

    # A fresh prefix from the cache: no download either.
    other = call_module("conda_installer", dict(args, prefix=prefix + "-second"))
    assert other["changed"] and other["cached"] and not other["downloaded"], other
    assert squid.log() == log_before

    # state=absent removes what it installed; a prefix it did not install is refused untouched.
    foreign = os.path.join(work, "foreign")
    os.makedirs(os.path.join(foreign, "conda-meta"))
    refused = call_module("conda_installer", {"prefix": foreign, "state": "absent"})
    assert refused.get("failed") and os.path.isdir(foreign), refused
    assert call_module("conda_installer", {"prefix": prefix, "state": "absent"}, check=True)["changed"]
    assert os.path.isdir(prefix)
    gone = call_module("conda_installer", {"prefix": prefix, "state": "absent"})
    assert gone["changed"] and not os.path.exists(prefix), gone
    assert not call_module("conda_installer", {"prefix": prefix, "state": "absent"})["changed"]


def test_one_flipped_byte_is_refused_and_leaves_nothing(installers, squid, server, work, capfd):
    _root, files = installers
    name = "Testconda3-tampered-Linux-x86_64.sh"
    prefix, cache = os.path.join(work, "testconda3"), os.path.join(work, "cache")
    result = call_module("conda_installer", {
        "url": "%s/%s" % (server.url, name), "sha256": files[LATEST],  # what the untampered file has
        "prefix": prefix, "cache_dir": cache, "proxy": squid.url_with("fleet", "pr0xy s3cret@:")})
    assert result.get("failed") and not result["changed"], result
    assert files[LATEST] in result["msg"] and files[name] in result["msg"], result["msg"]
    assert not os.path.lexists(prefix)
    assert os.listdir(cache) == [], "no bad file (nor a partial one) is left in the cache"
    assert len(squid_downloads(squid, name)) == 1, "it was downloaded through squid, then refused"

    # A cache file whose content was altered after it was verified is not taken for the installer.
    with open(os.path.join(cache, "%s.sh" % files[LATEST]), "wb") as handle:
        handle.write(b"#!/bin/sh\necho swapped\n")
    swapped = call_module("conda_installer", {
        "url": "%s/%s" % (server.url, LATEST), "sha256": files[LATEST], "prefix": prefix, "cache_dir": cache,
        "proxy": squid.url_with("fleet", "pr0xy s3cret@:")}, check=True)
    assert swapped["changed"] and not swapped["cached"] and not swapped.get("failed"), swapped
    assert "would be deleted and downloaded again" in capfd.readouterr().err


def test_failed_installer_leaves_no_prefix(installers, squid, server, work):
    _root, files = installers
    name = "Testconda3-broken-Linux-x86_64.sh"
    prefix = os.path.join(work, "testconda3")
    result = call_module("conda_installer", {
        "url": "%s/%s" % (server.url, name), "sha256": files[name], "prefix": prefix,
        "cache_dir": os.path.join(work, "cache"), "proxy": squid.url_with("fleet", "pr0xy s3cret@:")})
    assert result.get("failed") and "rc=3" in result["msg"], result
    assert not os.path.lexists(prefix), "the half-made prefix was removed"


def test_download_cut_short_is_resumed_never_run_half(installers, squid, work):
    root, files = installers
    with InstallerServer(root, pwd.getpwnam(_squid_user()).pw_uid, cut={"/" + LATEST}) as server:
        cache = os.path.join(work, "cache")
        result = call_module("conda_installer", {
            "url": "%s/%s" % (server.url, LATEST), "sha256": files[LATEST], "prefix": os.path.join(work, "p"),
            "cache_dir": cache, "proxy": squid.url_with("fleet", "pr0xy s3cret@:")}, check=False)
        entries = server.downloads(LATEST)
    assert not result.get("failed"), result
    assert entries[0].get("cut") and entries[-1]["range"], entries
    assert result["resumed"] and result["downloaded"], result
    assert os.listdir(cache) == ["%s.sh" % files[LATEST]]


def test_other_version_is_reported_and_replaced_only_when_asked(installers, squid, server, work, capfd):
    _root, files = installers
    prefix = os.path.join(work, "testconda3")
    os.makedirs(os.path.join(prefix, "conda-meta"))
    os.makedirs(os.path.join(prefix, "bin"))
    with open(os.path.join(prefix, "conda-meta", "conda-4.14.0-py39_0.json"), "w") as handle:
        json.dump({"name": "conda", "version": "4.14.0", "build": "py39_0"}, handle)
    args = {"url": "%s/%s" % (server.url, LATEST), "sha256": files[LATEST], "prefix": prefix,
            "cache_dir": os.path.join(work, "cache"), "version": CONDA_VERSION,
            "proxy": squid.url_with("fleet", "pr0xy s3cret@:")}
    reported = call_module("conda_installer", args)
    assert not reported.get("failed") and not reported["changed"], reported
    assert reported["action"] == "report" and reported["version"] == "4.14.0", reported
    assert "holds conda 4.14.0, not the wanted %s" % CONDA_VERSION in capfd.readouterr().err
    assert not server.downloads(LATEST), "nothing downloaded for a prefix left alone"

    replaced = call_module("conda_installer", dict(args, replace=True))
    assert not replaced.get("failed"), replaced
    assert replaced["changed"] and replaced["action"] == "replace", replaced
    assert replaced["previous_version"] == "4.14.0" and replaced["version"] == CONDA_VERSION
    assert not os.path.exists(os.path.join(prefix, "conda-meta", "conda-4.14.0-py39_0.json"))
    assert [n for n in os.listdir(work) if "condafleet-old" in n] == [], "the old prefix moved aside is removed"


def test_account_install_with_checksum_file_and_proxy_from_its_condarc(installers, squid, server, account):
    _root, files = installers
    condarc = call_module("condarc_proxy", {"user": account.pw_name, "scope": "user",
                                            "http": squid.url_with("fleet", "pr0xy s3cret@:")})
    assert condarc["changed"] and not condarc.get("failed"), condarc
    result = call_module("conda_installer", {
        "url": "%s/%s" % (server.url, LATEST), "checksum_url": server.url + "/SHA256SUMS",
        "prefix": "~/testconda3", "user": account.pw_name})
    assert not result.get("failed"), result.get("msg")
    assert result["proxy_source"] == "condarc" and result["sha256"] == files[LATEST], result
    prefix = os.path.join(account.pw_dir, "testconda3")
    assert os.stat(prefix).st_uid == account.pw_uid
    cache = os.path.join(account.pw_dir, ".cache", "condafleet-installers")
    assert os.stat(os.path.join(cache, "%s.sh" % files[LATEST])).st_uid == account.pw_uid
    run = as_account(account, [os.path.join(prefix, "bin", "conda"), "--version"])
    assert run.returncode == 0 and CONDA_VERSION in run.stdout, run
    assert len(squid_downloads(squid, LATEST)) == 1 and squid_downloads(squid, "SHA256SUMS"), squid.log()

    log_before = squid.log()
    again = call_module("conda_installer", {
        "url": "%s/%s" % (server.url, LATEST), "checksum_url": server.url + "/SHA256SUMS",
        "prefix": "~/testconda3", "user": account.pw_name})
    assert not again.get("failed") and not again["changed"] and not again["downloaded"], again
    assert again["action"] == "keep" and again["version"] == CONDA_VERSION, again
    assert squid.log() == log_before, "a rerun makes no request, not even for the checksum file"
