# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Real servers on 127.0.0.1 for the tests and the demo: proxies, a conda channel, a Basic-auth site.

Each server is a context manager: it starts a real process (or thread), waits a bounded
time for its port, and stops what it started by its own pid. Nothing binds beyond loopback, unless a caller
gives ``host``: the lab's corporate network (tests/support/corplab.py) binds its servers to the lab's
controller address, inside the network namespace the lab created.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

LOOPBACK = "127.0.0.1"


def require(*programs: str) -> None:
    """Skip, naming what is missing, when a real consumer is not installed (``make lab-deps`` installs them)."""
    import pytest

    missing = [p for p in programs if not shutil.which(p) and not os.path.exists(p)]
    if missing:
        pytest.skip("not installed: %s (run `make lab-deps` as root)" % ", ".join(missing))


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen | None = None, timeout: float = 10.0, host: str = LOOPBACK) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("server exited with %s before listening on %d" % (proc.returncode, port))
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex((host, port)) == 0:
                return
        time.sleep(0.02)
    raise RuntimeError("nothing listens on %s:%d after %.0fs" % (host, port, timeout))


def stop_process(proc: subprocess.Popen, timeout: float = 5.0) -> None:
    """Stop ``proc`` by its pid (and its process group), bounded in time."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except OSError:
        proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            proc.kill()
        proc.wait(timeout)


class _Server:
    """Common start/stop for the process-based servers; ``host`` is the address they listen on."""

    name = "server"

    def __init__(self, workdir: str | None = None, host: str = LOOPBACK) -> None:
        self._own_dir = workdir is None
        self.workdir = workdir or tempfile.mkdtemp(prefix="condafleet-%s-" % self.name)
        self.host = host
        self.port = free_port(host)
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    def start(self) -> "_Server":
        self.proc = subprocess.Popen(
            self.command(),
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=open(os.path.join(self.workdir, "stdout.log"), "wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_for_port(self.port, self.proc, host=self.host)
        except Exception:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return "http://%s:%d" % (self.host, self.port)

    def url_with(self, username: str, password: str) -> str:
        from urllib.parse import quote

        return "http://%s:%s@%s:%d" % (quote(username, safe=""), quote(password, safe=""), self.host, self.port)


class TinyProxy(_Server):
    """tinyproxy requiring Basic proxy auth; every request is logged to :attr:`log_path`."""

    name = "tinyproxy"

    def __init__(self, username: str = "fleet", password: str = "s3cret", workdir: str | None = None,
                 via_header: bool = False) -> None:
        super().__init__(workdir)
        self.username = username
        self.password = password
        self.via_header = via_header  # True: forward a ``Via`` header, so a server can tell it was proxied
        self.log_path = os.path.join(self.workdir, "tinyproxy.log")

    def command(self) -> list[str]:
        conf = os.path.join(self.workdir, "tinyproxy.conf")
        with open(conf, "w") as handle:
            handle.write(
                "Port %d\nListen %s\nTimeout 30\nLogFile \"%s\"\nLogLevel Info\nMaxClients 20\n"
                "Allow 127.0.0.1\nBasicAuth %s %s\nDisableViaHeader %s\n"
                % (self.port, LOOPBACK, self.log_path, self.username, self.password,
                   "No" if self.via_header else "Yes")
            )
        return [shutil.which("tinyproxy") or "/usr/bin/tinyproxy", "-d", "-c", conf]

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as handle:
                return handle.read()
        except OSError:
            return ""


class ProxyPy(_Server):
    """proxy.py (from the venv) requiring Basic proxy auth; access log at :attr:`log_path`.

    The fallback when tinyproxy is not installed (no root needed). It always forwards a ``Via`` header.
    """

    name = "proxypy"

    def __init__(self, username: str = "fleet", password: str = "s3cret", workdir: str | None = None,
                 python: str | None = None) -> None:
        super().__init__(workdir)
        self.username = username
        self.password = password
        self.python = python or sys.executable
        self.log_path = os.path.join(self.workdir, "proxypy.log")

    def command(self) -> list[str]:
        return [self.python, "-m", "proxy", "--hostname", LOOPBACK, "--port", str(self.port),
                "--basic-auth", "%s:%s" % (self.username, self.password), "--log-file", self.log_path,
                "--log-level", "INFO", "--num-workers", "1", "--num-acceptors", "1"]

    def start(self) -> "ProxyPy":
        self.proc = subprocess.Popen(
            self.command(),
            cwd=self.workdir,
            env=dict(os.environ, HOME=self.workdir),  # proxy.py keeps state in $HOME/.proxy
            stdin=subprocess.DEVNULL,
            stdout=open(os.path.join(self.workdir, "stdout.log"), "wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_for_port(self.port, self.proc, timeout=20.0)
        except Exception:
            self.stop()
            raise
        return self

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as handle:
                return handle.read()
        except OSError:
            return ""


def _apr1(password: str, salt: str) -> str:
    """Apache's MD5 crypt (``$apr1$``), which squid's basic_ncsa_auth accepts: no htpasswd needed."""
    out = subprocess.run(
        ["openssl", "passwd", "-apr1", "-salt", salt, "-stdin"],
        input=password.encode(),
        capture_output=True,
        check=True,
    )
    return out.stdout.decode().strip()


class Squid(_Server):
    """squid requiring Basic proxy auth (any byte in the password); access log at :attr:`log_path`. ``hosts``
    (name -> address) is squid's own ``hosts_file``: names only the proxy resolves, as a corporate proxy
    resolves internal names."""

    name = "squid"

    def __init__(self, username: str = "fleet", password: str = "s3cret", workdir: str | None = None,
                 host: str = LOOPBACK, hosts: dict[str, str] | None = None) -> None:
        super().__init__(workdir, host)
        self.hosts = dict(hosts or {})
        self.username = username
        self.password = password
        self.log_path = os.path.join(self.workdir, "access.log")

    def command(self) -> list[str]:
        helper = "/usr/lib/squid/basic_ncsa_auth"
        passwd = os.path.join(self.workdir, "passwd")
        with open(passwd, "w") as handle:
            handle.write("%s:%s\n" % (self.username, _apr1(self.password, "cfleet01")))
        conf = os.path.join(self.workdir, "squid.conf")
        with open(conf, "w") as handle:
            handle.write(
                "http_port %s:%d\n"
                "pid_filename %s/squid.pid\n"
                "access_log stdio:%s\n"
                "cache_log %s/cache.log\n"
                "cache deny all\ncache_mem 8 MB\n"
                "coredump_dir %s\n"
                "auth_param basic program %s %s\n"
                "auth_param basic realm condafleet\n"
                "auth_param basic children 2 startup=1\n"
                "acl authed proxy_auth REQUIRED\n"
                "http_access allow authed\nhttp_access deny all\n"
                "shutdown_lifetime 0 seconds\n"
                % (self.host, self.port, self.workdir, self.log_path, self.workdir, self.workdir, helper, passwd)
            )
            if os.geteuid() == 0:
                handle.write("cache_effective_user %s\n" % _squid_user())
            if self.hosts:
                handle.write("hosts_file %s/hosts\n" % self.workdir)
        if self.hosts:
            with open(os.path.join(self.workdir, "hosts"), "w") as handle:
                handle.writelines("%s %s\n" % (address, name) for name, address in sorted(self.hosts.items()))
        if os.geteuid() == 0:
            shutil.chown(self.workdir, _squid_user())
            for name in os.listdir(self.workdir):
                shutil.chown(os.path.join(self.workdir, name), _squid_user())
            os.chmod(self.workdir, 0o755)
        return [shutil.which("squid") or "/usr/sbin/squid", "-N", "-f", conf]

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as handle:
                return handle.read()
        except OSError:
            return ""


def _squid_user() -> str:
    import pwd

    for name in ("proxy", "squid", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    return "nobody"


def basic_authorization(login: str, password: str) -> str:
    """The ``Authorization`` header value of Basic credentials, as clients send it."""
    return "Basic " + base64.b64encode(("%s:%s" % (login, password)).encode()).decode()


class ChannelHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files under :attr:`channel_root` (set by a subclass) and answers refusals in one way: a short
    body, and the ``WWW-Authenticate`` challenge of :attr:`realm` with a 401."""

    channel_root = "."
    realm = "condafleet-channel"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, directory=self.channel_root, **kwargs)

    def answer(self, code: int, body: bytes) -> None:
        self.send_response(code)
        if code == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="%s"' % self.realm)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, fmt, *args) -> None:  # keep test output clean; requests are counted instead
        self.server.requests.append(self.path)


class _ThreadServer:
    """An ``http.server`` in a thread on 127.0.0.1 (or ``host``); ``requests`` lists the paths it served."""

    def __init__(self, handler, host: str = LOOPBACK) -> None:
        self.host = host
        self.httpd = http.server.ThreadingHTTPServer((host, 0), handler)
        self.httpd.requests = []
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def requests(self) -> list[str]:
        return self.httpd.requests

    @property
    def url(self) -> str:
        return "http://%s:%d" % (self.host, self.port)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def write_channel(root: str, name: str = "fleet-channel") -> str:
    """A conda-style channel on disk: ``<root>/<name>/noarch/repodata.json`` (and linux-64). Returns its dir."""
    channel = os.path.join(root, name)
    for subdir in ("noarch", "linux-64"):
        os.makedirs(os.path.join(channel, subdir), exist_ok=True)
        with open(os.path.join(channel, subdir, "repodata.json"), "w") as handle:
            json.dump({"info": {"subdir": subdir}, "packages": {}, "packages.conda": {}, "repodata_version": 1}, handle)
    return channel


class ChannelServer(_ThreadServer):
    """Serves a directory holding conda-style channels (see :func:`write_channel`).

    With ``tls_dir``: over HTTPS, with a self-signed certificate for 127.0.0.1 written to ``<tls_dir>/ca.pem``
    (:attr:`ca_path`): what a TLS-intercepting proxy looks like to a client that does not trust its CA."""

    def __init__(self, root: str, tls_dir: str | None = None, host: str = LOOPBACK) -> None:
        def handler(*args, **kwargs):
            return _QuietHandler(*args, directory=root, **kwargs)

        super().__init__(handler, host)
        self.ca_path = None
        if tls_dir:
            key, self.ca_path = os.path.join(tls_dir, "key.pem"), os.path.join(tls_dir, "ca.pem")
            subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                            "-out", self.ca_path, "-days", "1", "-subj", "/CN=condafleet test channel",
                            "-addext", "subjectAltName=IP:%s" % host],
                           check=True, capture_output=True, timeout=60)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self.ca_path, key)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)

    @property
    def url(self) -> str:
        return "%s://%s:%d" % ("https" if self.ca_path else "http", self.host, self.port)


class BasicAuthServer(_ThreadServer):
    """A site that answers 200 only with the right Basic credentials (for ``curl --netrc-file``)."""

    def __init__(self, username: str, password: str) -> None:
        expected = basic_authorization(username, password)

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 -- http.server's naming
                self.server.requests.append(self.headers.get("Authorization"))
                ok = self.headers.get("Authorization") == expected
                body = b"authorized\n" if ok else b"denied\n"
                self.send_response(200 if ok else 401)
                if not ok:
                    self.send_header("WWW-Authenticate", 'Basic realm="condafleet"')
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt, *args) -> None:
                pass

        super().__init__(Handler)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class AuthChannelServer(_ThreadServer):
    """A conda-style channel that answers only requests carrying the right Basic credentials.

    With ``require_via=True`` it also refuses requests that did not come through a proxy (no ``Via``
    header): on loopback this is how a test proves the proxy carried the request. ``log`` records
    ``(path, authorized, via)`` for every request.
    """

    def __init__(self, root: str, username: str, password: str, require_via: bool = False) -> None:
        expected = basic_authorization(username, password)

        class Handler(ChannelHandler):
            channel_root = root

            def _allowed(self) -> bool:
                authorized = self.headers.get("Authorization") == expected
                via = self.headers.get("Via") or ""
                self.server.log.append((self.path, authorized, via))
                if not authorized:
                    self.answer(401, b"channel credentials required\n")
                    return False
                if require_via and not via:
                    self.answer(403, b"direct access refused: use the proxy\n")
                    return False
                return True

            def do_GET(self) -> None:  # noqa: N802 -- http.server's naming
                if self._allowed():
                    super().do_GET()

            def do_HEAD(self) -> None:  # noqa: N802
                if self._allowed():
                    super().do_HEAD()

            def log_message(self, fmt, *args) -> None:
                self.server.requests.append(self.path)

        super().__init__(Handler)
        self.httpd.log = []

    @property
    def log(self) -> list[tuple[str, bool, str]]:
        return self.httpd.log


# --- Real conda's route (tests/integration/test_real_conda.py): who opened each connection, and as whom ---

ACCOUNT_LOG_FORMAT = "%ts.%03tu %>a user=%un %rm %ru %>Hs %Ss"  # squid logformat: %un is the proxy account


class AccountSquid(Squid):
    """:class:`Squid` with one proxy account per entry of ``accounts`` and an access log naming the account.

    Each line of :attr:`log_path` reads ``<time> <client> user=<proxy account> <method> <url> <status> <squid
    status>``, so a test sees which account's credentials carried each request (``user=-`` when none)."""

    name = "squid-accounts"

    def __init__(self, accounts: dict[str, str], workdir: str | None = None, host: str = LOOPBACK,
                 hosts: dict[str, str] | None = None) -> None:
        first = next(iter(accounts))
        super().__init__(first, accounts[first], workdir, host, hosts)
        self.accounts = dict(accounts)

    def command(self) -> list[str]:
        argv = super().command()
        conf = os.path.join(self.workdir, "squid.conf")
        with open(os.path.join(self.workdir, "passwd"), "w") as handle:
            for index, (username, password) in enumerate(sorted(self.accounts.items())):
                handle.write("%s:%s\n" % (username, _apr1(password, "cfleet%02d" % index)))
        with open(conf) as handle:
            text = handle.read()
        # A named logformat must be declared before the access_log line that uses it.
        named = "logformat condafleet %s\naccess_log stdio:%s condafleet\n" % (ACCOUNT_LOG_FORMAT, self.log_path)
        text = text.replace("access_log stdio:%s\n" % self.log_path, named)
        with open(conf, "w") as handle:
            handle.write(text)
        return argv

    @property
    def uid(self) -> int:
        """The uid squid opens its outgoing connections as (``cache_effective_user`` when started as root)."""
        import pwd

        return pwd.getpwnam(_squid_user()).pw_uid if os.geteuid() == 0 else os.geteuid()

    def entries(self) -> list[dict]:
        """The access log parsed (:func:`squid_entries`)."""
        return squid_entries(self.log())


def squid_entries(text: str) -> list[dict]:
    """An :class:`AccountSquid` access log parsed: ``client``, ``user``, ``method``, ``url``, ``status``,
    ``result`` per line."""
    rows = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 7 and fields[2].startswith("user="):
            rows.append({"client": fields[1], "user": fields[2][len("user="):], "method": fields[3],
                         "url": fields[4], "status": fields[5], "result": fields[6]})
    return rows


def socket_owner_uid(local: tuple[str, int], remote: tuple[str, int]) -> int | None:
    """The uid owning the TCP socket ``local`` -> ``remote`` in this network namespace (``/proc/net/tcp``).

    A server calls it with its peer's address as ``local`` and its own as ``remote``: on loopback both ends
    are in the same table, so the peer's line names the account whose process opened the connection."""

    def key(address: tuple[str, int]) -> str:
        packed = socket.inet_aton(address[0])
        return "%08X:%04X" % (int.from_bytes(packed, sys.byteorder), address[1])

    want_local, want_remote = key(local), key(remote)
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as handle:
                lines = handle.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 7 and fields[1].endswith(want_local) and fields[2].endswith(want_remote):
                return int(fields[7])
    return None


def self_signed_certificate(tls_dir: str, common_name: str = "condafleet corporate CA") -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (the corporate CA a client must be given); returns (cert, key)."""
    key, cert = os.path.join(tls_dir, "channel-key.pem"), os.path.join(tls_dir, "channel-ca.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "1", "-subj", "/CN=%s" % common_name, "-addext", "subjectAltName=IP:%s" % LOOPBACK],
                   check=True, capture_output=True, timeout=60)
    return cert, key


class ProxyOnlyChannelServer(_ThreadServer):
    """A conda channel that serves only requests from ``only_uid``'s connections carrying known credentials.

    ``credentials`` maps channel logins to passwords (each account's ``.netrc`` holds one). A request whose TCP
    connection was opened by any other uid than ``only_uid`` (squid's) is refused with 403 before anything is
    read, so a client that went direct fails. ``log`` records ``{path, login, peer_uid, status}`` per request
    (``login`` is the Basic login sent, whether right or wrong, never the password; ``status`` the code sent). With ``tls_dir`` it speaks
    HTTPS with a self-signed certificate at :attr:`ca_path`.
    """

    def __init__(self, root: str, credentials: dict[str, str], only_uid: int, tls_dir: str | None = None) -> None:
        expected = {basic_authorization(login, password): login for login, password in credentials.items()}

        class Handler(ChannelHandler):
            channel_root = root

            def _allowed(self) -> bool:
                peer_uid = socket_owner_uid(self.client_address[:2], self.server.server_address[:2])
                header = self.headers.get("Authorization") or ""
                login = expected.get(header)
                sent = None
                if header.startswith("Basic "):
                    try:
                        sent = base64.b64decode(header[6:]).decode(errors="replace").split(":", 1)[0]
                    except ValueError:
                        sent = "<undecodable>"
                if peer_uid != only_uid:
                    status = 403
                elif login is None:
                    status = 401
                else:
                    status = 200
                # "status" becomes the code actually sent (404 for a file the channel lacks): see send_response.
                self._entry = {"path": self.path.split("?")[0], "login": sent, "peer_uid": peer_uid, "status": status}
                self.server.log.append(self._entry)
                if status == 403:
                    self.answer(403, b"direct access refused: only the proxy may connect\n")
                elif status == 401:
                    self.answer(401, b"channel credentials required\n")
                return status == 200

            def send_response(self, code, message=None) -> None:
                if getattr(self, "_entry", None) is not None:
                    self._entry["status"] = int(code)
                super().send_response(code, message)

            def do_GET(self) -> None:  # noqa: N802 -- http.server's naming
                if self._allowed():
                    super().do_GET()

            def do_HEAD(self) -> None:  # noqa: N802
                if self._allowed():
                    super().do_HEAD()

            def log_message(self, fmt, *args) -> None:
                self.server.requests.append(self.path)

        super().__init__(Handler)
        self.httpd.log = []
        self.ca_path = None
        if tls_dir:
            self.ca_path, key = self_signed_certificate(tls_dir)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self.ca_path, key)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)

    @property
    def log(self) -> list[dict]:
        return self.httpd.log

    @property
    def url(self) -> str:
        return "%s://%s:%d" % ("https" if self.ca_path else "http", LOOPBACK, self.port)
