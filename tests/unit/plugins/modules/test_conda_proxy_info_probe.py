# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The verify probe of an ``http://`` URL through an ``http://`` proxy (``conda_proxy_info.probe``), against a real
HTTP server on 127.0.0.1 that plays the proxy: it records what arrives and answers what the test scripts."""

from __future__ import annotations

import base64
import http.server
import socket
import threading

import pytest

from ansible_collections.condafleet.proxy.plugins.modules import conda_proxy_info as cpi


class ScriptedProxy:
    """Answers each request with the next of ``answers`` (status, headers); records the request line and headers."""

    def __init__(self, answers):
        self.seen = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):  # noqa: N802 -- http.server's naming
                outer.seen.append((self.path, dict(self.headers)))
                status, headers = answers[min(len(outer.seen), len(answers)) - 1]
                body = b"{}"
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def test_the_connection_stays_open_and_the_proxy_credentials_go_as_basic():
    with ScriptedProxy([(200, {})]) as proxy:
        url = proxy.url.replace("127.0.0.1", "fleet:s%40cret@127.0.0.1")
        outcome = cpi.probe("http://channel.example/fleet/noarch/repodata.json", url, None, "Basic Y2g6cHc=", 5)
    assert outcome == {"outcome": "ok", "status": 200}
    path, headers = proxy.seen[0]
    assert path == "http://channel.example/fleet/noarch/repodata.json"
    assert headers["Connection"] == "keep-alive"  # urllib would send "close": NTLM/Negotiate proxies then stay silent
    assert headers["Proxy-Authorization"] == "Basic " + base64.b64encode(b"fleet:s@cret").decode()
    assert headers["Authorization"] == "Basic Y2g6cHc="


def test_a_redirect_to_another_scheme_is_not_followed():
    with ScriptedProxy([(302, {"Location": "file:///etc/hostname"})]) as proxy:
        outcome = cpi.probe("http://channel.example/repodata.json", proxy.url, None, None, 5)
    assert outcome["outcome"] == "http_error" and "file://" in outcome["message"], outcome
    assert len(proxy.seen) == 1


def test_redirects_are_followed_a_bounded_number_of_times_and_credentials_stay_with_their_host():
    with ScriptedProxy([(302, {"Location": "http://other.example/r"})] * 10) as proxy:
        outcome = cpi.probe("http://channel.example/repodata.json", proxy.url, None, "Basic Y2g6cHc=", 5)
    assert outcome["outcome"] == "http_error" and "redirects" in outcome["message"], outcome
    assert len(proxy.seen) == cpi.MAX_REDIRECTS + 1
    assert "Authorization" in proxy.seen[0][1] and all("Authorization" not in h for _p, h in proxy.seen[1:])


def test_a_407_is_the_proxy_asking_for_credentials():
    with ScriptedProxy([(407, {"Proxy-Authenticate": 'Basic realm="corp"'})]) as proxy:
        outcome = cpi.probe("http://channel.example/repodata.json", proxy.url, None, None, 5)
    assert outcome["outcome"] == "proxy_auth_required" and outcome["status"] == 407


def test_an_https_proxy_is_never_spoken_to_in_plain_http():
    """The keep-alive path is for http:// proxies only: credentials never go in clear to an https:// one."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        proxy = "https://fleet:secret@127.0.0.1:%d" % listener.getsockname()[1]
        received = []

        def accept():
            conn, _addr = listener.accept()
            with conn:
                conn.settimeout(2)
                try:
                    received.append(conn.recv(4096))
                except OSError:
                    pass

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        outcome = cpi.probe("http://channel.example/repodata.json", proxy, None, None, 3)
        thread.join(5)
    assert outcome["outcome"] != "ok"
    assert not any(b"Proxy-Authorization" in data for data in received)


@pytest.mark.parametrize("status", [500, 404])
def test_an_error_status_is_an_http_error(status):
    with ScriptedProxy([(status, {})]) as proxy:
        outcome = cpi.probe("http://channel.example/repodata.json", proxy.url, None, None, 5)
    assert outcome["outcome"] == "http_error" and outcome["status"] == status
