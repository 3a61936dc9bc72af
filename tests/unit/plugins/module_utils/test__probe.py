# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Proxy selection must agree with requests, the library conda uses; failures are told apart for real."""

from __future__ import annotations

import socket
import ssl
import urllib.error
import urllib.request

import pytest
from requests.utils import get_environ_proxies, select_proxy as requests_select_proxy

from ansible_collections.condafleet.proxy.plugins.module_utils._probe import (
    bypassed_by_no_proxy,
    classify_failure,
    select_proxy,
)

CONDARC = {
    "http": "http://p1:3128",
    "https": "http://p2:3128",
    "https://direct.corp.example": "",
    "http://special.example": "http://p3:8080",
}
ENV = {"http_proxy": "http://env:1", "https_proxy": "http://env:2", "no_proxy": ".corp.example,localhost"}


def _requests_choice(url: str, proxy_servers: dict, env: dict, monkeypatch) -> str | None:
    """requests' own key order and no_proxy matching, with conda's precedence: proxy_servers over env."""
    for name in ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "all_proxy",
                 "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    merged = {k: v for k, v in get_environ_proxies(url).items() if k != "no"}
    merged.update(proxy_servers)
    return requests_select_proxy(url, merged) or None


@pytest.mark.parametrize("url", [
    "http://repo.example/noarch/repodata.json",
    "https://repo.example/noarch/repodata.json",
    "https://direct.corp.example/c/noarch/repodata.json",
    "http://special.example/x",
    "https://other.corp.example/x",
])
@pytest.mark.parametrize("proxy_servers", [CONDARC, {}, {"https": "http://only-https:1"}])
def test_select_proxy_agrees_with_requests(url, proxy_servers, monkeypatch):
    expected = _requests_choice(url, proxy_servers, ENV, monkeypatch)
    proxy, _source = select_proxy(url, proxy_servers, ENV)
    assert proxy == expected


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
    """A real tinyproxy without credentials answers 407."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": tinyproxy.url}))
    with pytest.raises(urllib.error.HTTPError) as info:
        opener.open(channel.repodata_url, timeout=5)
    assert classify_failure(info.value)[0] == "proxy_auth_required"


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
