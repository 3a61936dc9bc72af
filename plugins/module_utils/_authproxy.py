# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The local authenticating proxy: validation and rendering of its files, as pure functions.

What ``local_auth_proxy`` writes: px's ``px.ini`` (Kerberos, Basic or no authentication, upstream proxy or PAC),
px's ``.env`` holding the Basic password, cntlm's configuration holding the NTLMv2 hash (never the password), a
systemd unit and a launchd property list. Nothing here touches the file system except :func:`installed_version`,
which reads the venv's package metadata (the fast path of a rerun: no pip call).
"""

from __future__ import annotations

import glob
import hashlib
import hmac
import os
import plistlib
import re
import shlex
import struct
import typing as t

AUTHS = ("kerberos", "ntlm", "basic", "none")
# px's --auth values for each of ours (ntlm runs on cntlm, see below).
PX_AUTH = {"kerberos": "NEGOTIATE", "basic": "BASIC", "none": "NONE"}
# The program each authentication runs on. px (libcurl) needs the plaintext password for NTLM; cntlm accepts
# the NTLMv2 hash, so the password never reaches a file.
ENGINE = {"kerberos": "px", "basic": "px", "none": "px", "ntlm": "cntlm"}
LOOPBACK = "127.0.0.1"
HEADER = "Managed by condafleet.proxy.local_auth_proxy: changes made here are overwritten."
MASK = "********"

_HOST = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)$")
_NO_PROXY_ENTRY = re.compile(r"^[A-Za-z0-9*.:/\[\]_-]{1,255}$")
_ACCOUNT_NAME = re.compile(r"^[^\s:@\\/\x00-\x1f\x7f]{1,256}$")
_DOMAIN = re.compile(r"^[A-Za-z0-9._-]{0,255}$")


class AuthProxySpecError(ValueError):
    """The task's options cannot make a working local proxy; the message says which and why."""


# --------------------------------------------------------------------------------------------
# Validation


def parse_upstream(value: str) -> tuple[str, int]:
    """``host:port`` of an upstream proxy, refusing credentials, schemes and paths (they belong nowhere on disk)."""
    text = value.strip()
    if "@" in text:
        raise AuthProxySpecError("upstream %r holds credentials; give the host and port only (host:port) and the "
                                 "account in the auth options" % mask_userinfo(text))
    if "://" in text:
        scheme, text = text.split("://", 1)
        if scheme.lower() != "http":
            raise AuthProxySpecError("upstream %r: only an http:// proxy is supported (px and cntlm speak plain HTTP "
                                     "to the upstream proxy)" % value)
    text = text.rstrip("/")
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not _HOST.match(host):
        raise AuthProxySpecError("upstream %r is not host:port" % value)
    number = int(port)
    if not 0 < number < 65536:
        raise AuthProxySpecError("upstream %r: port %d is out of range" % (value, number))
    return host, number


def mask_userinfo(text: str) -> str:
    """``user:password@host`` with the password masked (for error messages)."""
    head, _sep, tail = text.rpartition("@")
    if ":" in head:
        head = head.split(":", 1)[0] + ":" + MASK
    return head + "@" + tail


def check_no_proxy(entries: t.Iterable[str]) -> list[str]:
    out = []
    for entry in entries:
        entry = entry.strip()
        if not entry:
            continue
        if not _NO_PROXY_ENTRY.match(entry):
            raise AuthProxySpecError("no_proxy entry %r: only host names, addresses, wildcards and CIDR ranges "
                                     "are allowed" % entry)
        out.append(entry)
    return out


def check_pac_url(value: str) -> str:
    if any(ch in value for ch in "\r\n\x00"):
        raise AuthProxySpecError("pac_url holds a control character")
    if value.startswith(("http://", "https://")):
        return value
    if value.startswith("file://"):
        value = value[len("file://"):]
    if not os.path.isabs(value):
        raise AuthProxySpecError("pac_url %r is neither an http(s) URL nor an absolute file path" % value)
    return value


def check_port(port: int) -> int:
    if not 1024 <= port < 65536:
        raise AuthProxySpecError("listen_port %d: use a port from 1024 to 65535 (the service runs unprivileged)"
                                 % port)
    return port


def check_account_name(option: str, value: str) -> str:
    if not _ACCOUNT_NAME.match(value):
        raise AuthProxySpecError("%s %r: no spaces, ':', '@', '/', '\\' or control characters (give the domain "
                                 "in its own option)" % (option, value))
    return value


def check_domain(value: str) -> str:
    if not _DOMAIN.match(value):
        raise AuthProxySpecError("ntlm_domain %r: letters, digits, '.', '_' and '-' only" % value)
    return value


def check_secret(option: str, value: str) -> str:
    if not value or any(ch in value for ch in "\r\n\x00"):
        raise AuthProxySpecError("%s must be non-empty and hold no newline or NUL" % option)
    return value


# --------------------------------------------------------------------------------------------
# NTLM hashes (cntlm's PassNT / PassNTLMv2), without OpenSSL's MD4, which OpenSSL 3 disables


def _md4(data: bytes) -> bytes:
    """MD4 (RFC 1320): the NT hash is MD4 of the UTF-16LE password."""
    def rotl(x: int, n: int) -> int:
        x &= 0xFFFFFFFF
        return ((x << n) | (x >> (32 - n))) & 0xFFFFFFFF

    length = len(data) * 8
    data += b"\x80" + b"\x00" * ((55 - len(data)) % 64) + struct.pack("<Q", length)
    a, b, c, d = 0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476
    for offset in range(0, len(data), 64):
        x = struct.unpack("<16I", data[offset:offset + 64])
        aa, bb, cc, dd = a, b, c, d
        for i in (0, 4, 8, 12):
            a = rotl(a + ((b & c) | (~b & d)) + x[i], 3)
            d = rotl(d + ((a & b) | (~a & c)) + x[i + 1], 7)
            c = rotl(c + ((d & a) | (~d & b)) + x[i + 2], 11)
            b = rotl(b + ((c & d) | (~c & a)) + x[i + 3], 19)
        for i in (0, 1, 2, 3):
            a = rotl(a + ((b & c) | (b & d) | (c & d)) + x[i] + 0x5A827999, 3)
            d = rotl(d + ((a & b) | (a & c) | (b & c)) + x[i + 4] + 0x5A827999, 5)
            c = rotl(c + ((d & a) | (d & b) | (a & b)) + x[i + 8] + 0x5A827999, 9)
            b = rotl(b + ((c & d) | (c & a) | (d & a)) + x[i + 12] + 0x5A827999, 13)
        for i in (0, 2, 1, 3):
            a = rotl(a + (b ^ c ^ d) + x[i] + 0x6ED9EBA1, 3)
            d = rotl(d + (a ^ b ^ c) + x[i + 8] + 0x6ED9EBA1, 9)
            c = rotl(c + (d ^ a ^ b) + x[i + 4] + 0x6ED9EBA1, 11)
            b = rotl(b + (c ^ d ^ a) + x[i + 12] + 0x6ED9EBA1, 15)
        a, b, c, d = [(v + w) & 0xFFFFFFFF for v, w in ((a, aa), (b, bb), (c, cc), (d, dd))]
    return struct.pack("<4I", a, b, c, d)


def nt_hash(password: str) -> bytes:
    return _md4(password.encode("utf-16-le"))


def ntlmv2_hash(username: str, domain: str, password: str) -> str:
    """cntlm's ``PassNTLMv2`` (``cntlm -H -u USER -d DOMAIN``): HMAC-MD5 keyed by the NT hash over the
    upper-cased user name and the domain, in hex. Valid for that user and domain only; the password cannot be
    read back from it (but it authenticates like the password to an NTLM proxy: keep it 0600)."""
    message = (username.upper() + domain).encode("utf-16-le")
    return hmac.new(nt_hash(password), message, hashlib.md5).hexdigest().upper()


def cntlm_hex(digest: bytes) -> str:
    """A hash as cntlm writes it (``cntlm -H``) and reads it back: the hex of every byte's bitwise complement.

    Measured: ``cntlm -H``'s ``PassNT`` is ``~MD4(UTF-16LE(password))`` byte for byte, and a config holding the
    plain NTLMv2 hash is refused by a proxy that checks the response (pyspnego's NTLM acceptor) while its
    complement is accepted."""
    return bytes(255 - byte for byte in digest).hex().upper()


def ntlm_digest(response: str, username: str, domain: str, password: str) -> str:
    """The ``PassNTLMv2`` (``response="ntlmv2"``) or ``PassNT`` (``"nt"``) value for cntlm's configuration."""
    if response == "ntlmv2":
        return cntlm_hex(bytes.fromhex(ntlmv2_hash(username, domain, password)))
    return cntlm_hex(nt_hash(password))


def check_ntlm_hash(value: str) -> str:
    text = value.strip()
    if not re.match(r"^[0-9A-Fa-f]{32}$", text):
        raise AuthProxySpecError("ntlm_hash must be 32 hex digits, as `cntlm -H` prints PassNTLMv2 (or PassNT "
                                 "with ntlm_response=nt)")
    return text.upper()


# --------------------------------------------------------------------------------------------
# The proxy's own files


def render_px_ini(auth: str, listen_port: int, upstream: t.Sequence[str] = (), pac_url: str | None = None,
                  no_proxy: t.Sequence[str] = (), username: str | None = None, pac_reload: int = 60) -> bytes:
    """px's configuration: loopback only, the upstream proxies (or the PAC), the authentication px forces.

    Kerberos has no user name: px then asks libcurl for GSS-API with the default credential cache, the ticket of
    the account px runs as. Basic names the user; px reads the password from ``PX_PASSWORD`` (the ``.env`` file
    beside this one, see :func:`render_px_env`). A PAC given by URL is fetched again every ``pac_reload`` seconds.
    """
    lines = ["; " + HEADER, "[proxy]"]
    if upstream:
        lines.append("server = %s" % ",".join(upstream))
    if pac_url:
        lines.append("pac = %s" % pac_url)
    lines += ["listen = %s" % LOOPBACK, "port = %d" % listen_port, "gateway = 0", "hostonly = 0",
              "allow = %s" % LOOPBACK]
    if no_proxy:
        lines.append("noproxy = %s" % ",".join(no_proxy))
    lines.append("auth = %s" % PX_AUTH[auth])
    if username:
        lines.append("username = %s" % username)
    lines += ["", "[settings]", "workers = 1", "proxyreload = %d" % pac_reload, "log = 0", ""]
    return "\n".join(lines).encode()


CLIENT_TOKEN = re.compile(r"^[A-Za-z0-9_-]{32,128}$")


def client_token(before: bytes | None) -> str:
    """The ``PX_CLIENT_PASSWORD`` an earlier run wrote into ``before`` (a px ``.env``), or a new random one: the
    key an account's own conda, pip and shell give its px, written only into that account's 0600 files."""
    match = re.search(rb"(?m)^PX_CLIENT_PASSWORD='([^'\n]*)'$", before or b"")
    value = match.group(1).decode("ascii", "replace") if match else ""
    if CLIENT_TOKEN.match(value):
        return value
    import secrets

    return secrets.token_urlsafe(32)


def px_client_args(username: str) -> list[str]:
    """px's arguments that make it ask its clients for Basic credentials: ``username`` and ``PX_CLIENT_PASSWORD``
    (:func:`render_px_client_env`). On the command line: px 0.13 ignores ``client_auth`` in its configuration file
    (measured: every client passed)."""
    return ["--client-auth=BASIC", "--client-username=%s" % username]


def render_px_client_env(token: str) -> bytes:
    """px's ``.env`` for a per-account px: only the key its clients must give (see :func:`client_token`)."""
    if not CLIENT_TOKEN.match(token):
        raise AuthProxySpecError("the client key must be 32 to 128 URL-safe characters")
    return ("# %s\nPX_CLIENT_PASSWORD='%s'\n" % (HEADER, token)).encode()


def render_px_env(password: str) -> bytes:
    """px's ``.env`` (python-dotenv syntax): ``PX_PASSWORD`` single-quoted (``\\`` and ``\'`` escaped).

    python-dotenv expands ``${NAME}`` even there and has no escape for it: such a password is refused."""
    if "${" in password:
        raise AuthProxySpecError("password: px reads it with python-dotenv, which expands '${' in every value and "
                                 "has no escape for it; a password holding '${' cannot be stored for px")
    quoted = password.replace("\\", "\\\\").replace("'", "\\'")
    return ("# %s\nPX_PASSWORD='%s'\n" % (HEADER, quoted)).encode()


def render_cntlm_conf(username: str, domain: str, digest: str, listen_port: int, upstream: t.Sequence[str],
                      no_proxy: t.Sequence[str] = (), response: str = "ntlmv2") -> bytes:
    """cntlm's configuration: one hash only (never ``Password``), loopback only, no gateway mode.

    ``response`` ``ntlmv2``: ``Auth NTLMv2`` with ``PassNTLMv2`` (needs a proxy whose challenge carries target
    information, as Windows proxies' do); ``nt``: ``Auth NT`` with ``PassNT`` (NTLMv1 responses)."""
    auth, key = ("NTLMv2", "PassNTLMv2") if response == "ntlmv2" else ("NT", "PassNT")
    lines = ["# " + HEADER, "Username\t%s" % username, "Domain\t\t%s" % domain, "Auth\t\t%s" % auth,
             "%s\t%s" % (key, digest)]
    lines += ["Proxy\t\t%s" % server for server in upstream]
    if no_proxy:
        lines.append("NoProxy\t\t%s" % ", ".join(no_proxy))
    lines += ["Listen\t\t%s:%d" % (LOOPBACK, listen_port), "Gateway\tno", "Allow\t\t%s" % LOOPBACK, "Deny\t\t0/0", ""]
    return "\n".join(lines).encode()


def mask_file(text: str) -> str:
    """A diff of these files shows no secret: the ``PX_PASSWORD`` and ``PX_CLIENT_PASSWORD`` values and the
    ``PassNTLMv2`` hash are masked."""
    text = re.sub(r"(?m)^(PX_(?:CLIENT_)?PASSWORD=).*$", r"\g<1>" + MASK, text)
    return re.sub(r"(?m)^(Pass(?:NTLMv2|NT|LM)\s+)\S+", r"\g<1>" + MASK, text)


# --------------------------------------------------------------------------------------------
# The service


def _systemd_quote(arg: str) -> str:
    """One ExecStart word: bare when it has no character systemd treats specially, else double-quoted."""
    if arg and re.match(r"^[A-Za-z0-9_@+=:,./-]+$", arg):
        return arg
    return '"%s"' % arg.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")


def render_systemd_unit(description: str, argv: t.Sequence[str], working_directory: str,
                        user: str | None = None, environment: dict | None = None) -> bytes:
    """A service unit: ``user`` set, a system unit running as that account (hardened: a read-only system, no
    access to homes); ``None``, a per-account user unit (``systemctl --user``), which sees the account's
    Kerberos ticket cache. Restarted on failure, enabled through ``WantedBy``."""
    for word in list(argv) + [working_directory, description] + list((environment or {}).values()):
        if any(ch in word for ch in "\r\n\x00"):
            raise AuthProxySpecError("a newline or NUL cannot go into a unit file: %r" % word)
    lines = ["# " + HEADER, "[Unit]", "Description=%s" % description,
             "After=network-online.target", "Wants=network-online.target", "", "[Service]", "Type=simple"]
    if user:
        lines.append("User=%s" % user)
    lines.append("WorkingDirectory=%s" % working_directory)
    for name, value in sorted((environment or {}).items()):
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
            raise AuthProxySpecError("environment variable name %r is not valid" % name)
        lines.append("Environment=%s" % _systemd_quote("%s=%s" % (name, value)))
    lines += ["ExecStart=%s" % " ".join(_systemd_quote(a) for a in argv), "Restart=on-failure", "RestartSec=2s"]
    if user:
        lines += ["NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
                  "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX"]
    lines += ["", "[Install]", "WantedBy=%s" % ("multi-user.target" if user else "default.target"), ""]
    return "\n".join(lines).encode()


def parse_unit(data: bytes) -> dict[str, dict[str, list[str]]]:
    """``{section: {key: [values]}}`` of a unit file (comments and blank lines skipped, no line continuation)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for raw in data.decode().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        if current is None or "=" not in line:
            raise ValueError("not a unit file line: %r" % raw)
        key, value = line.split("=", 1)
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def unit_exec_start(data: bytes) -> list[str]:
    """The argv of the unit's ``ExecStart`` (its quoting undone, ``%%`` and ``$$`` unescaped)."""
    value = parse_unit(data)["Service"]["ExecStart"][-1]
    return [word.replace("%%", "%").replace("$$", "$") for word in shlex.split(value)]


def unit_environment(data: bytes) -> dict[str, str]:
    out = {}
    for value in parse_unit(data)["Service"].get("Environment", []):
        for word in shlex.split(value):
            name, _sep, val = word.partition("=")
            out[name] = val.replace("%%", "%").replace("$$", "$")
    return out


def render_launchd_plist(label: str, argv: t.Sequence[str], working_directory: str, user: str | None = None,
                         environment: dict | None = None) -> bytes:
    """A LaunchDaemon (``user`` set: runs as that account) or a LaunchAgent (the logged-in account's session):
    started at load, started again when it exits with a failure."""
    plist = {"Label": label, "ProgramArguments": list(argv), "WorkingDirectory": working_directory,
             "RunAtLoad": True, "KeepAlive": {"SuccessfulExit": False}, "ProcessType": "Background"}
    if user:
        plist["UserName"] = user
    if environment:
        plist["EnvironmentVariables"] = dict(environment)
    return plistlib.dumps(plist, sort_keys=True)


# --------------------------------------------------------------------------------------------
# The venv


def installed_version(venv: str, distribution: str = "px_proxy") -> str | None:
    """The version of ``distribution`` installed in ``venv`` (from its ``.dist-info``), or ``None``.

    Read from the metadata directory's name: no interpreter started, no pip call."""
    if not os.access(os.path.join(venv, "bin", "python"), os.X_OK):
        return None
    found = glob.glob(os.path.join(glob.escape(venv), "lib", "python3*", "site-packages", "%s-*.dist-info" % distribution))
    versions = [os.path.basename(path)[len(distribution) + 1:-len(".dist-info")] for path in found]
    return sorted(versions)[-1] if len(versions) == 1 else None


def pip_install_argv(python: str, version: str, source: str | None = None, index_url: str | None = None) -> list[str]:
    """The pip command installing ``px-proxy==version``: from a wheel directory only (offline fleets), or from
    ``index_url``, or from pip's own configuration."""
    argv = [python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--quiet"]
    if source:
        argv += ["--no-index", "--find-links", source]
    elif index_url:
        argv += ["--index-url", index_url]
    return argv + ["px-proxy==%s" % version]


def argument_spec() -> dict:
    """The options of local_auth_proxy (the module, and its action plugin's Windows path)."""
    return dict(
        state=dict(type="str", default="present", choices=["present", "absent"]),
        auth=dict(type="str", choices=list(AUTHS)),
        upstream=dict(type="list", elements="str", default=[]),
        pac_url=dict(type="str"),
        pac_reload=dict(type="int", default=60),
        listen_port=dict(type="int", default=3128),
        no_proxy=dict(type="list", elements="str", default=[]),
        service_user=dict(type="str"),
        username=dict(type="str"),
        password=dict(type="str", no_log=True),
        ntlm_domain=dict(type="str", default=""),
        ntlm_hash=dict(type="str", no_log=True),
        ntlm_response=dict(type="str", default="ntlmv2", choices=["ntlmv2", "nt"]),
        venv=dict(type="path", default="/opt/condafleet/px"),
        python=dict(type="path"),
        px_version=dict(type="str", default="0.13.0"),
        px_source=dict(type="path"),
        pip_index_url=dict(type="str"),
        cntlm_path=dict(type="path"),
        config_dir=dict(type="path"),
        service_name=dict(type="str", default="condafleet-auth-proxy"),
        environment=dict(type="dict", default={}),
        start=dict(type="bool", default=True),
        remove_venv=dict(type="bool", default=False),
        user=dict(type="str"),
        follow=dict(type="bool", default=False),
        backup=dict(type="bool", default=False),
    )
