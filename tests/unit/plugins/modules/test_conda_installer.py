# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""conda_installer: the pure decisions (_installer), the download's resume and digest check, and bad input.

The real thing (squid, real conda, accounts) is tests/integration/test_conda_installer.py.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import threading

import pytest

from ansible_collections.condafleet.proxy.plugins.module_utils import _installer
from ansible_collections.condafleet.proxy.plugins.module_utils._installer import InstallerError
from modulerun import call_module, tree

DIGEST = hashlib.sha256(b"installer").hexdigest()
OTHER = hashlib.sha256(b"other").hexdigest()


# --- digests and checksum files ------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [DIGEST, DIGEST.upper(), "sha256:" + DIGEST, "  %s\n" % DIGEST])
def test_sha256_forms_are_normalized(value):
    assert _installer.normalize_sha256(value) == DIGEST


@pytest.mark.parametrize("value", ["", DIGEST[:-1], DIGEST + "0", "md5:" + DIGEST, "z" * 64])
def test_bad_sha256_is_refused(value):
    with pytest.raises(InstallerError, match="64 hexadecimal digits"):
        _installer.normalize_sha256(value)


def test_checksum_file_forms():
    text = ("# vendor list\n%s  Miniconda3-latest-Linux-x86_64.sh\n%s *Miniconda3-latest-MacOSX-arm64.sh\n"
            "SHA256 (Miniforge3-Windows-x86_64.exe) = %s\n%s  ./sub/Anaconda3-Linux.sh\n"
            % (DIGEST, OTHER, DIGEST.upper(), OTHER))
    assert _installer.digest_from_checksum_file(text, "Miniconda3-latest-Linux-x86_64.sh") == DIGEST
    assert _installer.digest_from_checksum_file(text, "Miniconda3-latest-MacOSX-arm64.sh") == OTHER
    assert _installer.digest_from_checksum_file(text, "Miniforge3-Windows-x86_64.exe") == DIGEST
    assert _installer.digest_from_checksum_file(text, "Anaconda3-Linux.sh") == OTHER


def test_checksum_file_without_the_name_or_with_two_digests_is_refused():
    with pytest.raises(InstallerError, match="lists no SHA256 for b.sh"):
        _installer.digest_from_checksum_file("%s  a.sh\n" % DIGEST, "b.sh")
    with pytest.raises(InstallerError, match="2 different SHA256"):
        _installer.digest_from_checksum_file("%s  a.sh\n%s  a.sh\n" % (DIGEST, OTHER), "a.sh")
    # the same digest twice is no conflict
    assert _installer.digest_from_checksum_file("%s  a.sh\n%s *a.sh\n" % (DIGEST, DIGEST), "a.sh") == DIGEST


def test_mismatch_message_names_both_digests():
    msg = _installer.mismatch_message("x.sh", DIGEST, OTHER)
    assert DIGEST in msg and OTHER in msg and "refusing to run x.sh" in msg


def test_installer_name_and_url_checks():
    assert _installer.installer_name("https://h/m/Miniconda3-latest-Linux-x86_64.sh?x=1#f") == \
        "Miniconda3-latest-Linux-x86_64.sh"
    with pytest.raises(InstallerError, match="names no file"):
        _installer.installer_name("https://repo.example/")
    for bad in ("ftp://h/x.sh", "/tmp/x.sh", "https://h/x.sh\nHost: evil"):
        with pytest.raises(InstallerError):
            _installer.validate_url(bad)


def test_cache_names_are_the_digest():
    assert _installer.cache_file_name(DIGEST) == DIGEST + ".sh"
    assert _installer.cache_file_name(DIGEST, windows=True) == DIGEST + ".exe"
    assert _installer.partial_file_name(DIGEST) == "." + DIGEST + ".part"


def test_sha256_of_file(tmp_path):
    (tmp_path / "f").write_bytes(b"installer")
    assert _installer.sha256_of_file(str(tmp_path / "f"), chunk=3) == DIGEST


# --- versions and the plan ----------------------------------------------------------------------------------

def test_versions_from_conda_and_conda_meta(tmp_path):
    assert _installer.parse_conda_version("conda 24.11.3\n") == "24.11.3"
    assert _installer.parse_conda_version("Traceback ...") is None
    names = ["python-3.12.7-h1.json", "conda-package-handling-2.4.0-py312_0.json", "conda-24.11.3-py312h06a_0.json"]
    assert _installer.version_from_conda_meta(names) == "24.11.3"
    meta = tmp_path / "conda-meta"
    meta.mkdir()
    (meta / "conda-24.11.3-py312_0.json").write_text(json.dumps({"name": "conda", "version": "24.11.3"}))
    (meta / "conda-build-24.1.0-py_0.json").write_text(json.dumps({"name": "conda-build", "version": "24.1.0"}))
    assert _installer.read_installed_version(str(tmp_path)) == "24.11.3"
    assert _installer.read_installed_version(str(tmp_path / "missing")) is None


@pytest.mark.parametrize("state, exists, installed, wanted, replace, managed, action", [
    ("present", False, None, None, False, False, "install"),
    ("present", True, "24.11.3", None, False, False, "keep"),
    ("present", True, "24.11.3", "24.11.3", False, False, "keep"),
    ("present", True, "24.11.3", "v24.11.3", False, False, "keep"),
    ("present", True, "24.9.2", "24.11.3", False, True, "report"),
    ("present", True, "24.9.2", "24.11.3", True, True, "replace"),
    ("present", True, None, None, True, False, "replace"),
    ("absent", False, None, None, False, False, "absent"),
    ("absent", True, "24.9.2", None, False, True, "remove"),
])
def test_plan(state, exists, installed, wanted, replace, managed, action):
    assert _installer.plan(state, exists, installed, wanted, replace, managed) == action


def test_plan_refuses_what_it_must_not_do():
    with pytest.raises(InstallerError, match="did not install it"):
        _installer.plan("absent", True, "24.9.2", None, False, False)
    with pytest.raises(InstallerError, match="holds no conda installation"):
        _installer.plan("present", True, None, None, False, False)


# --- proxy and TLS ------------------------------------------------------------------------------------------

def test_merge_settings_later_wins_until_final():
    merged = _installer.merge_settings([
        {"proxy_servers": {"http": "http://sys:3128"}, "proxy_servers_final": True, "ssl_verify": "/etc/ca.pem"},
        {"proxy_servers": {"http": "http://user:3128", "https": "http://user:3128"}, "ssl_verify": False},
    ])
    assert merged == ({"http": "http://sys:3128"}, False)
    merged = _installer.merge_settings([{"proxy_servers": {"http": "http://a:1"}}, {"proxy_servers": {"http": "b"}}])
    assert merged == ({"http": "b"}, None)


def test_choose_proxy():
    url = "https://repo.example/x.sh"
    assert _installer.choose_proxy(url, "http://p:1", {"https": "http://c:1"}, {}) == ("http://p:1", "option")
    assert _installer.choose_proxy(url, "", {"https": "http://c:1"}, {}) == (None, "option")
    assert _installer.choose_proxy(url, None, {"https": "http://c:1"}, {"https_proxy": "http://e:1"}) == \
        ("http://c:1", "condarc")
    assert _installer.choose_proxy(url, None, {}, {"https_proxy": "http://e:1"}) == ("http://e:1", "env")
    assert _installer.choose_proxy(url, None, {}, {"https_proxy": "http://e:1", "no_proxy": "repo.example"}) == \
        (None, "none")
    assert _installer.choose_proxy(url, None, {"https://repo.example": ""}, {"https_proxy": "http://e:1"})[0] is None


def test_tls_setting():
    assert _installer.tls_setting("/ca.pem", True, False, {}) == (True, "/ca.pem", "option")
    assert _installer.tls_setting(None, False, "/ca.pem", {}) == (False, None, "option")
    assert _installer.tls_setting(None, True, "/ca.pem", {"REQUESTS_CA_BUNDLE": "/env.pem"}) == (True, "/env.pem", "env")
    assert _installer.tls_setting(None, True, "/ca.pem", {}) == (True, "/ca.pem", "condarc")
    assert _installer.tls_setting(None, True, False, {}) == (False, None, "condarc")
    assert _installer.tls_setting(None, True, "truststore", {}) == (True, None, "default")


def test_windows_command_line():
    command = _installer.windows_install_command("C:\\cache\\%s.exe" % DIGEST, "C:\\Program Files\\Miniconda3", True)
    assert command == ('"C:\\cache\\%s.exe" /S /InstallationType=AllUsers /RegisterPython=0 /AddToPath=0 '
                       '/D=C:\\Program Files\\Miniconda3' % DIGEST)
    assert "/InstallationType=JustMe" in _installer.windows_install_command("C:\\i.exe", "C:\\m", False)
    with pytest.raises(InstallerError):
        _installer.windows_install_command("C:\\i.exe", 'C:\\m" /X', False)
    assert _installer.windows_prefix_problem("C:\\ProgramData\\Miniconda3") is None
    assert "drive letter" in _installer.windows_prefix_problem("/opt/miniconda3")


# --- the download: resumed, never run half-done; bad input changes nothing -------------------------------------

class _Server:
    """Serves ``data`` at /x.sh; the first ``cuts`` responses stop half-way; honours ``Range: bytes=N-``."""

    def __init__(self, data: bytes, cuts: int = 0, ranges: bool = True) -> None:
        state = {"cuts": cuts}
        self.requests = requests = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                wanted = self.headers.get("Range")
                requests.append(wanted)
                start = int(wanted[6:-1]) if ranges and wanted else 0
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", "bytes %d-%d/%d" % (start, len(data) - 1, len(data)))
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if state["cuts"]:
                    state["cuts"] -= 1
                    body = body[:len(body) // 2]
                    self.close_connection = True
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/x.sh" % self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def downloader():
    from ansible_collections.condafleet.proxy.plugins.modules.conda_installer import Downloader

    return Downloader(None, True, None, 10)


@pytest.mark.parametrize("ranges", [True, False])
def test_cut_download_is_resumed_or_refetched(tmp_path, downloader, ranges):
    data = os.urandom(300000)
    server = _Server(data, cuts=2, ranges=ranges)
    try:
        part = str(tmp_path / ".x.part")
        got = downloader.download(server.url, part)
    finally:
        server.close()
    assert open(part, "rb").read() == data
    assert got["resumed"] is ranges
    assert server.requests[0] is None and all(server.requests[1:]), "each retry asks for the rest"


def test_download_that_never_completes_fails_and_keeps_only_the_partial_file(tmp_path, downloader):
    from ansible_collections.condafleet.proxy.plugins.modules.conda_installer import Failure

    server = _Server(os.urandom(100000), cuts=99)
    try:
        with pytest.raises(Failure, match="4 attempts failed"):
            downloader.download(server.url, str(tmp_path / ".x.part"))
    finally:
        server.close()
    assert os.listdir(str(tmp_path)) == [".x.part"]


def test_mismatch_through_the_module_leaves_nothing(tmp_path):
    data = b"#!/bin/bash\necho should never run > \"$3/ran\"\n"
    server = _Server(data)
    prefix, cache = tmp_path / "prefix", tmp_path / "cache"
    try:
        result = call_module("conda_installer", {"url": server.url, "sha256": DIGEST, "prefix": str(prefix),
                                                 "cache_dir": str(cache), "proxy": ""})
    finally:
        server.close()
    assert result["failed"] and not result["changed"], result
    assert DIGEST in result["msg"] and hashlib.sha256(data).hexdigest() in result["msg"]
    assert not prefix.exists() and os.listdir(str(cache)) == []


@pytest.mark.parametrize("args, message", [
    ({"url": "https://h/x.sh", "prefix": "/opt/x"}, "needs sha256 or checksum_url"),
    ({"url": "https://h/x.sh", "prefix": "/opt/x", "sha256": "abc"}, "64 hexadecimal digits"),
    ({"url": "https://h/x.sh", "prefix": "opt/x", "sha256": DIGEST}, "absolute path"),
    ({"url": "https://h/x.sh", "prefix": "/", "sha256": DIGEST}, "directory of its own"),
    ({"url": "ftp://h/x.sh", "prefix": "/opt/x", "sha256": DIGEST}, "http:// or https://"),
    ({"prefix": "/opt/x", "sha256": DIGEST}, "url"),
    ({"url": "https://h/x.sh", "prefix": "/opt/x", "sha256": DIGEST, "user": "no-such-account-cf"}, "does not exist"),
])
def test_bad_input_fails_clearly_and_changes_nothing(tmp_path, args, message):
    before = tree(tmp_path)
    result = call_module("conda_installer", dict(args, cache_dir=str(tmp_path / "cache")))
    assert result["failed"] and message in result["msg"], result
    assert tree(tmp_path) == before


def test_existing_prefix_without_conda_is_refused(tmp_path):
    prefix = tmp_path / "prefix"
    prefix.mkdir()
    (prefix / "data.txt").write_text("keep me")
    result = call_module("conda_installer", {"url": "http://127.0.0.1:9/x.sh", "sha256": DIGEST, "proxy": "",
                                             "prefix": str(prefix), "cache_dir": str(tmp_path / "cache")})
    assert result["failed"] and "holds no conda installation" in result["msg"], result
    assert (prefix / "data.txt").read_text() == "keep me" and not (tmp_path / "cache").exists()


def test_installer_that_hangs_is_stopped_with_its_children_and_its_prefix_removed(tmp_path):
    import time

    marker = tmp_path / "child-alive"
    data = ('#!/bin/bash\nwhile getopts "bup:" o; do case $o in p) P=$OPTARG;; esac; done\nmkdir -p "$P/pkgs"\n'
            '(sleep 4; touch %s) &\nsleep 60\n' % marker).encode()
    server = _Server(data)
    prefix = tmp_path / "prefix"
    started = time.monotonic()
    try:
        result = call_module("conda_installer", {"url": server.url, "sha256": hashlib.sha256(data).hexdigest(),
                                                 "prefix": str(prefix), "cache_dir": str(tmp_path / "cache"),
                                                 "proxy": "", "timeout": 2})
    finally:
        server.close()
    assert result["failed"] and "stopped after 2 seconds" in result["msg"], result
    assert time.monotonic() - started < 30
    assert not prefix.exists()
    time.sleep(4)
    assert not marker.exists(), "the installer's background child was stopped with it"


def test_https_download_needs_the_corporate_ca(tmp_path):
    import ssl

    from ansible_collections.condafleet.proxy.plugins.modules.conda_installer import Downloader, Failure
    from servers import self_signed_certificate

    cert, key = self_signed_certificate(str(tmp_path))
    data = os.urandom(5000)
    server = _Server(data)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.httpd.socket = context.wrap_socket(server.httpd.socket, server_side=True)
    url = server.url.replace("http://", "https://")
    try:
        with pytest.raises(Failure, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            Downloader(None, True, None, 10).download(url, str(tmp_path / ".a.part"))
        got = Downloader(None, True, cert, 10).download(url, str(tmp_path / ".b.part"))
    finally:
        server.close()
    assert got["bytes"] == len(data) and (tmp_path / ".b.part").read_bytes() == data
