# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Proxy selection must agree with requests, the library conda uses; failures are told apart for real."""

from __future__ import annotations

import os
import socket
import ssl
import time
import urllib.error
import urllib.request

import pytest
import requests
from requests.utils import get_environ_proxies, select_proxy as requests_select_proxy
from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from ansible_collections.condafleet.proxy.plugins.module_utils._probe import (
    MAX_FILE_BYTES,
    FileRefused,
    bypassed_by_no_proxy,
    classify_failure,
    expand_variables,
    mask_proxy_url,
    proxy_servers_problems,
    proxy_url_problem,
    read_regular_file,
    select_proxy,
    select_proxy_setting,
)

CONDARC = {
    "http": "http://p1:3128",
    "https": "http://p2:3128",
    "https://direct.corp.example": "",
    "http://special.example": "http://p3:8080",
}
ENV = {"http_proxy": "http://env:1", "https_proxy": "http://env:2", "no_proxy": ".corp.example,localhost"}


def _requests_choice(url: str, proxy_servers: dict, env: dict, kind: str, monkeypatch) -> str | None:
    """What requests itself picks for one of conda's requests, run through requests' own Session code.

    conda's ``CondaSession`` puts ``proxy_servers`` in ``session.proxies``. The repodata.json.zst fetch
    (conda/gateways/repodata/zstd.py) calls ``session.get(url)`` without ``proxies=`` (``Session.request``
    then merges ``{}``); package downloads pass ``proxies=session.proxies``."""
    for name in ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "all_proxy",
                 "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    session = requests.Session()
    session.proxies.update(proxy_servers)
    request_proxies = {} if kind == "repodata" else (session.proxies or {})
    merged = session.merge_environment_settings(url, request_proxies, None, None, None)["proxies"]
    return requests_select_proxy(url, merged) or None


URLS = [
    "http://repo.example/noarch/repodata.json",
    "https://repo.example/noarch/repodata.json",
    "https://direct.corp.example/c/noarch/repodata.json",
    "http://special.example/x",
    "https://other.corp.example/x",
]
SERVERS = [CONDARC, {}, {"https": "http://only-https:1"}, {"http": None, "https": ""}, {"all": "http://all:1"}]
ENVS = [ENV, {}, {"HTTPS_PROXY": "http://upper:2", "https_proxy": "http://lower:2"}, {"all_proxy": "http://env-all:9"}]


@pytest.mark.parametrize("kind", ["repodata", "packages"])
@pytest.mark.parametrize("env", ENVS)
@pytest.mark.parametrize("proxy_servers", SERVERS)
@pytest.mark.parametrize("url", URLS)
def test_select_proxy_agrees_with_requests_per_request_kind(url, proxy_servers, env, kind, monkeypatch):
    expected = _requests_choice(url, proxy_servers, env, kind, monkeypatch)
    proxy, _source = select_proxy(url, proxy_servers, env, kind)
    assert proxy == expected


def test_env_proxy_wins_for_repodata_and_proxy_servers_for_packages():
    """The stale-env case: .condarc right, a login shell's https_proxy with an old password."""
    servers = {"https": "http://fleet:new@proxy:3128"}
    env = {"https_proxy": "http://fleet:old@proxy:3128"}
    url = "https://conda.anaconda.org/conda-forge/noarch/repodata.json"
    assert select_proxy_setting(url, servers, env, "repodata") == ("http://fleet:old@proxy:3128", "https_proxy")
    assert select_proxy_setting(url, servers, env, "packages") == ("http://fleet:new@proxy:3128", "proxy_servers https")
    assert select_proxy(url, servers, env, "repodata")[1] == "env"
    assert select_proxy(url, servers, env, "packages")[1] == "condarc"


def test_empty_condarc_value_means_direct_and_says_so():
    assert select_proxy("https://direct.corp.example/x", CONDARC, {}) == (None, "condarc")


def test_no_proxy_only_suppresses_env_proxies():
    # a condarc proxy applies even to a host listed in no_proxy: conda has no no_proxy key
    assert select_proxy("https://a.corp.example/x", {"https": "http://p:1"}, ENV) == ("http://p:1", "condarc")
    assert select_proxy("https://a.corp.example/x", {}, ENV) == (None, "none")


@pytest.mark.parametrize("host,no_proxy,bypass", [
    ("a.corp.example", ".corp.example", True),
    ("corp.example", ".corp.example", True),
    ("a.corp.example", "corp.example", True),
    ("xcorp.example", "corp.example", False),
    ("anything", "*", True),
    ("localhost", "localhost:8080", False),
    ("10.1.2.3", "10.0.0.0/8", True),
    ("10.1.2.3", "10.1.2.4", False),
])
def test_no_proxy_matching_agrees_with_requests(host, no_proxy, bypass, monkeypatch):
    monkeypatch.setenv("no_proxy", no_proxy)
    monkeypatch.setenv("http_proxy", "http://env:1")
    assert bypassed_by_no_proxy("http://%s/x" % host, {"no_proxy": no_proxy}) is bypass
    assert (get_environ_proxies("http://%s/x" % host) == {}) is bypass


def test_classify_real_407(tinyproxy, channel):
    """A real tinyproxy without credentials answers 407; the explanation names conda's prompt and EOFError."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": tinyproxy.url}))
    with pytest.raises(urllib.error.HTTPError) as info:
        opener.open(channel.repodata_url, timeout=5)
    outcome, message = classify_failure(info.value)
    assert outcome == "proxy_auth_required"
    assert "http proxy username:" in message and "EOFError" in message


def test_classify_real_unreachable_proxy():
    with socket.socket() as sock:  # a port nothing listens on: bind, then close
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": "http://127.0.0.1:%d" % port}))
    with pytest.raises(urllib.error.URLError) as info:
        opener.open("http://repo.example/x", timeout=5)
    assert classify_failure(info.value)[0] == "proxy_unreachable"


def test_classify_real_tls_failure(tmp_path):
    """A TLS server with a self-signed certificate: verification fails and is named as such."""
    import subprocess
    import threading
    import http.server

    key, cert = tmp_path / "k.pem", tmp_path / "c.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1"], check=True, capture_output=True)
    httpd = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        with pytest.raises(urllib.error.URLError) as info:
            urllib.request.urlopen("https://127.0.0.1:%d/" % httpd.server_address[1], timeout=5)
        assert classify_failure(info.value)[0] == "tls_error"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.mark.parametrize("value", [
    "http://fleet:${PW}@proxy:3128", "http://fleet:$PW@proxy:3128", "http://${USER_X}:${UNSET_X}@p:1",
    "http://p:1/$", "http://p:1/${}", "$PW$PW", "http://fleet:pw@proxy:3128",
])
def test_expand_variables_agrees_with_os_path_expandvars(value, monkeypatch):
    """conda applies os.path.expandvars to proxy_servers values; the module does the same with the account's env."""
    env = {"PW": "p%40ss", "USER_X": "fleet"}
    for name in ("PW", "USER_X", "UNSET_X"):
        monkeypatch.delenv(name, raising=False)
    for name, item in env.items():
        monkeypatch.setenv(name, item)
    expanded, unset = expand_variables(value, env)
    assert expanded == os.path.expandvars(value)
    assert unset == (["UNSET_X"] if "UNSET_X" in value else [])


@pytest.mark.parametrize("url", [
    "http://fleet:p@ss:w/rd@127.0.0.1:3128",  # a raw password from a ${VAR}: conda's InvalidURL
    "http://fleet:p@ss@127.0.0.1:3128",
    "http://f:a#b@h:1",
    "http://f:a?b@h:1",
    "http://fleet:p%40ss%3Aw%2Frd@127.0.0.1:3128",
    "http://[::1]:3128",
    "http://h:99999",
    "http://fleet:${PW}@proxy:3128",
    "http://proxy.corp.example:3128/",
])
def test_proxy_url_problem_agrees_with_urllib3(url):
    """requests hands proxy URLs to urllib3's parse_url: what it refuses, the module refuses."""
    try:
        parsed = parse_url(url)
        urllib3_ok = bool(parsed.host)
    except LocationParseError:
        urllib3_ok = False
    assert (proxy_url_problem(url) is None) is urllib3_ok


def test_proxy_servers_of_odd_types_are_explained_not_crashed_on():
    assert proxy_servers_problems({"http": "http://p:1", "https": None}) == ({"http": "http://p:1", "https": None}, [])
    usable, problems = proxy_servers_problems({"http": 3128})
    assert usable == {"http": "3128"}  # conda 26.7: `conda config --show` reports "3128"
    assert "proxy_servers http is a number 3128" in problems[0] and "no proxy host" in problems[0]
    assert "a list" in proxy_servers_problems(["http://p:1"])[1][0]
    assert "a number" in proxy_servers_problems(5)[1][0]
    assert "a map" in proxy_servers_problems({"http": {"a": 1}})[1][0]


def test_read_regular_file_refuses_a_fifo_at_once(tmp_path):
    """A FIFO with no writer would block open() and read() forever; O_NONBLOCK + fstat refuse it at once."""
    fifo = tmp_path / "netrc"
    os.mkfifo(str(fifo))
    start = time.monotonic()
    with pytest.raises(FileRefused) as info:
        read_regular_file(str(fifo))
    assert time.monotonic() - start < 1
    assert "not a regular file (a FIFO)" in info.value.strerror


def test_read_regular_file_refuses_a_huge_file_and_reads_a_normal_one(tmp_path):
    big = tmp_path / "condarc"
    with open(str(big), "wb") as handle:
        handle.truncate(MAX_FILE_BYTES + 1)  # sparse: no disk used
    start = time.monotonic()
    with pytest.raises(FileRefused) as info:
        read_regular_file(str(big))
    assert time.monotonic() - start < 1 and "more than the" in info.value.strerror
    small = tmp_path / "small"
    small.write_bytes(b"proxy_servers: {}\n")
    assert read_regular_file(str(small)) == b"proxy_servers: {}\n"
    link = tmp_path / "link"
    link.symlink_to(small)
    assert read_regular_file(str(link)) == b"proxy_servers: {}\n"
    with pytest.raises(FileRefused):
        read_regular_file(str(link), follow=False)
    with pytest.raises(FileNotFoundError):
        read_regular_file(str(tmp_path / "missing"))


@pytest.mark.parametrize("url,shown", [
    ("http://fleet:s3cret@proxy:3128", "http://fleet:********@proxy:3128"),
    ("http://fleet:p@ss:w/rd@127.0.0.1:3128", "http://fleet:********@127.0.0.1:3128"),  # raw, from a ${VAR}
    ("http://fleet:${PROXY_PW}@proxy:3128", "http://fleet:${PROXY_PW}@proxy:3128"),  # a reference is no secret
    ("http://proxy:3128", "http://proxy:3128"),
    ("", ""),
])
def test_mask_proxy_url_masks_the_whole_password_even_unencoded(url, shown):
    assert mask_proxy_url(url) == shown


def test_classify_a_local_proxy_that_cannot_log_in_upstream():
    """px answers 401 itself when the corporate proxy refuses it (no Kerberos ticket): a real loopback server
    answering as px does; the same answer from a proxy elsewhere stays an HTTP error."""
    import http.server
    import threading

    class Px(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            self.send_response(401, "Unauthorized")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Px)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        proxy = "http://127.0.0.1:%d" % server.server_address[1]
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy}))
        with pytest.raises(urllib.error.HTTPError) as info:
            opener.open("http://repo.example/x", timeout=5)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    outcome, message = classify_failure(info.value, proxy)
    assert outcome == "upstream_auth_failed" and "klist" in message
    assert classify_failure(info.value, "http://proxy.corp.example:3128")[0] == "http_error"
    tunnel = urllib.error.URLError(OSError("Tunnel connection failed: 401 Unauthorized"))
    assert classify_failure(tunnel, proxy)[0] == "upstream_auth_failed"
