# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Which proxy conda uses for each kind of request, and what a failed request through it means.

conda does not apply one precedence to all its requests (conda 26.7 source, checked with real conda and two
squids with different accounts, see DESIGN.md):

* ``repodata``: the first request for a channel's index, ``repodata.json.zst``
  (``conda/gateways/repodata/zstd.py``), is ``session.get`` **without** ``proxies=``. requests then takes the
  environment's proxies as the request's own and they override the session's ``proxy_servers`` key by key.
* ``packages``: package downloads (``conda/gateways/connection/download.py``), and the ``repodata.json``
  fallback, pass ``proxies=session.proxies``: ``proxy_servers`` wins key by key and the environment's proxies
  only fill the keys it lacks.

Either way a proxy from the environment is dropped for a host that ``no_proxy`` covers, ``None`` values are
dropped, keys are then tried as requests does (``scheme://host``, ``scheme``, ``all://host``, ``all``) and an
empty value means "connect directly". So ``.condarc`` and a login shell's ``https_proxy`` that name different
proxies (or the same one with other credentials) make conda use both.

On Windows, "the environment's proxies" are ``urllib.request.getproxies()``: the ``*_proxy`` variables, or, when
not one of them is set (``no_proxy`` counts), the Internet Settings (WinINET) proxy of the registry
(``getproxies_registry``), whose ``ProxyOverride`` list then decides the bypass (requests'
``proxy_bypass_registry``). :func:`wininet_proxies` and :func:`wininet_bypassed` copy those two functions; the
unit tests run the originals against the same registry values.

Also here: ``${VAR}`` expansion with the account's environment, the checks conda's URL parsing makes of the
result, and a bounded reader for files an account controls. Pure functions otherwise; no AnsibleModule.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import socket
import ssl
import stat

from ansible_collections.condafleet.proxy.plugins.module_utils._condarc import read_proxy_settings

try:
    from urllib.error import HTTPError, URLError
    from urllib.parse import urlsplit
except ImportError:  # pragma: no cover
    pass

REQUEST_KINDS = ("repodata", "packages")

# The setting a proxy from the Windows registry is reported under.
WININET_SETTING = "WinINET ProxyServer"

# conda reads a .condarc whole; a .netrc, a CA bundle likewise. Larger than this is not a configuration file.
MAX_FILE_BYTES = 8 * 1024 * 1024

# os.path.expandvars (POSIX), which conda applies to every proxy_servers value: $NAME and ${NAME}.
_VARIABLE = re.compile(r"\$(\w+|\{[^}]*\})", re.ASCII)

PROMPT_407 = ("conda would prompt `http proxy username:` on stdin and, run unattended, crash with EOFError "
              "(or hang waiting for an answer)")


class FileRefused(OSError):
    """A file that conda or requests would choke on (not a regular file, too large); the message says why."""


def read_regular_file(path: str, limit: int = MAX_FILE_BYTES, follow: bool = True) -> bytes:
    """The bytes of ``path``, refusing anything but a regular file of at most ``limit`` bytes.

    Opened with ``O_NONBLOCK`` so that a FIFO or a device returns at once instead of blocking, then checked with
    ``fstat`` on the open descriptor (no race between the check and the read). ``follow=False`` adds
    ``O_NOFOLLOW``. ``FileNotFoundError``/``PermissionError`` propagate unchanged.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    if not follow:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow:
            raise FileRefused(exc.errno, "%s is a symbolic link, which is not followed here" % path)
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FileRefused(errno.EINVAL, "%s is not a regular file (%s): conda and requests would block or fail "
                              "reading it" % (path, _file_kind(info.st_mode)))
        if info.st_size > limit:
            raise FileRefused(errno.EFBIG, "%s is %d bytes, more than the %d bytes a configuration file may have here"
                              % (path, info.st_size, limit))
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise FileRefused(errno.EFBIG, "%s grew beyond %d bytes while it was read" % (path, limit))
        return b"".join(chunks)
    finally:
        os.close(fd)


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def env_proxy_variables(env: dict) -> dict:
    """``{key: variable name}`` of the environment's proxies as requests reads them (lower case wins; empty
    values are ignored)."""
    names = {}
    for scheme in ("http", "https", "all"):
        for name in ("%s_proxy" % scheme, "%s_PROXY" % scheme.upper()):
            if env.get(name):
                names[scheme] = name
                break
    return names


def any_proxy_variable(env: dict) -> bool:
    """Whether ``urllib.request.getproxies_environment`` finds anything: any non-empty ``*_proxy`` variable, in
    any case, ``no_proxy`` included. On Windows that alone keeps the registry's proxy out."""
    return any(value and name.lower().endswith("_proxy") for name, value in env.items())


def wininet_proxies(settings: dict | None) -> dict:
    """``{scheme: proxy URL}`` from the Internet Settings values ``ProxyEnable`` and ``ProxyServer``, as CPython's
    ``urllib.request.getproxies_registry`` reads them (``host:port`` for every scheme, or ``http=...;https=...``;
    no scheme means ``http://``; a ``socks=`` entry serves http and https as ``socks4://``)."""
    settings = settings or {}
    try:
        if not settings.get("ProxyEnable") or "ProxyServer" not in settings:  # a missing value: OSError there
            return {}
        server = str(settings["ProxyServer"])
        if "=" not in server and ";" not in server:
            server = "http={0};https={0};ftp={0}".format(server)
        proxies = {}
        for part in server.split(";"):
            protocol, address = part.split("=", 1)
            if not re.match("(?:[^/:]+)://", address):
                if protocol in ("http", "https", "ftp"):
                    address = "http://" + address
                elif protocol == "socks":
                    address = "socks://" + address
            proxies[protocol] = address
        if proxies.get("socks"):
            address = re.sub(r"^socks://", "socks4://", proxies["socks"])
            proxies["http"] = proxies.get("http") or address
            proxies["https"] = proxies.get("https") or address
        return proxies
    except (ValueError, TypeError):  # CPython gives up on a malformed value the same way: no proxy
        return {}


def wininet_bypassed(host: str, settings: dict | None) -> bool:
    """requests' ``proxy_bypass_registry``: whether ``ProxyOverride`` (``;``-separated globs, ``<local>`` for a
    name without a dot) covers ``host``. Its globs are matched from the start of the name only, as there, and an
    entry that is not a valid pattern raises :class:`re.error` there and here."""
    settings = settings or {}
    try:
        enabled = int(settings.get("ProxyEnable") or 0)
    except (TypeError, ValueError):
        return False
    override = settings.get("ProxyOverride")
    if not enabled or not override:
        return False
    for test in filter(None, str(override).split(";")):
        if test == "<local>" and "." not in host:
            return True
        test = test.replace(".", r"\.").replace("*", r".*").replace("?", r".")
        if re.match(test, host, re.I):  # re.error (an entry such as "[") propagates, as it does in requests
            return True
    return False


def env_proxies(env: dict) -> dict:
    """Proxies from environment variables the way requests reads them (lower case wins)."""
    return dict((key, env[name]) for key, name in env_proxy_variables(env).items())


def bypassed_by_no_proxy(url: str, env: dict) -> bool:
    """requests' ``should_bypass_proxies``: ``*``, exact host or domain suffix (a port must match), IPv4 CIDR."""
    no_proxy = (env.get("no_proxy") or env.get("NO_PROXY") or "").replace(" ", "")
    if no_proxy == "*":
        return True
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    entries = [entry.lower() for entry in no_proxy.split(",") if entry]
    if re.match(r"^\d{1,3}(?:\.\d{1,3}){3}$", host):
        for entry in entries:
            try:
                if ipaddress.ip_address(host) in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                continue
        return False
    host_with_port = "%s:%d" % (host, parts.port) if parts.port else host
    for entry in entries:
        entry = entry.lstrip(".")
        if entry in (host, host_with_port) or host.endswith("." + entry) or host_with_port.endswith("." + entry):
            return True
    return False


def environment_proxies(url: str, env: dict, wininet: dict | None = None) -> dict:
    """``{key: (value, setting)}``: requests' ``get_environ_proxies(url)``. ``wininet`` (the Internet Settings
    values, on a Windows host only) stands in when no ``*_proxy`` variable is set, with ``setting`` ``WinINET
    ProxyServer``."""
    if bypassed_by_no_proxy(url, env):
        return {}
    if wininet is None or any_proxy_variable(env):
        return dict((key, (env[name], name)) for key, name in env_proxy_variables(env).items())
    if wininet_bypassed(urlsplit(url).hostname or "", wininet):
        return {}
    return dict((key, (value, WININET_SETTING)) for key, value in wininet_proxies(wininet).items()
                if key in ("http", "https"))


def request_proxies(url: str, proxy_servers: dict, env: dict, kind: str = "packages",
                    wininet: dict | None = None) -> dict:
    """``{key: (value, setting)}``: the proxies requests holds for one of conda's requests of ``kind``.

    ``setting`` names where the value came from: ``proxy_servers <key>``, the variable (``https_proxy``) or,
    on Windows, ``WinINET ProxyServer``.
    """
    if kind not in REQUEST_KINDS:
        raise ValueError("kind must be one of %s" % ", ".join(REQUEST_KINDS))
    merged = dict((key, (value, "proxy_servers %s" % key)) for key, value in proxy_servers.items())
    for key, item in environment_proxies(url, env, wininet).items():
        if kind == "repodata":  # the request's own proxies= (from env) win over session.proxies
            merged[key] = item
        else:  # proxies=session.proxies: env only fills what is missing (setdefault)
            merged.setdefault(key, item)
    return dict((key, item) for key, item in merged.items() if item[0] is not None)


def select_proxy(url: str, proxy_servers: dict, env: dict, kind: str = "packages",
                 wininet: dict | None = None) -> tuple:
    """``(proxy_url_or_None, source)`` conda would use for ``url`` in a request of ``kind``; source is condarc,
    env, wininet or none (an empty ``proxy_servers`` value: ``(None, "condarc")``, a direct connection)."""
    proxy, setting = select_proxy_setting(url, proxy_servers, env, kind, wininet)
    return proxy, source_of(setting)


def select_proxy_setting(url: str, proxy_servers: dict, env: dict, kind: str = "packages",
                         wininet: dict | None = None) -> tuple:
    """``(proxy_url_or_None, setting_or_None)``, ``setting`` as in :func:`request_proxies`."""
    parts = urlsplit(url)
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    proxies = request_proxies(url, proxy_servers, env, kind, wininet)
    for key in (scheme + "://" + host, scheme, "all://" + host, "all"):
        if key in proxies:
            value, setting = proxies[key]
            return (value or None, setting)
    return (None, None)


def scheme_conflict(scheme: str, sample_url: str, servers: dict, env: dict, wininet: dict | None = None) -> dict | None:
    """The conflict for ``scheme`` when conda's repodata and package requests to ``sample_url`` would go through
    different proxies, else None."""
    (env_proxy, variable), (cond_proxy, setting) = (select_proxy_setting(sample_url, servers, env, kind, wininet)
                                                    for kind in REQUEST_KINDS)
    if env_proxy == cond_proxy:
        return None
    return dict(scheme=scheme, variable=variable, environment=mask_proxy_url(env_proxy or ""),
                proxy_servers=mask_proxy_url(cond_proxy or ""), setting=setting)


def source_of(setting: str | None) -> str:
    if setting is None:
        return "none"
    if setting == WININET_SETTING:
        return "wininet"
    return "condarc" if setting.startswith("proxy_servers") else "env"


class CondarcMerge:
    """conda's merge of its ``.condarc`` files, in its order: ``proxy_servers`` key by key, ``ssl_verify`` whole,
    a ``#!final`` setting ending the overrides; an unparsable file is skipped with a warning, as conda does."""

    def __init__(self, warnings: list) -> None:
        self.warnings = warnings
        self.files: list = []
        self.proxy_servers: dict = {}
        self.ssl_verify = None
        self.problems: list = []
        self._final_proxy = self._final_ssl = False

    def add(self, path: str, data: bytes) -> None:
        self.files.append(path)
        try:
            settings = read_proxy_settings(data)
        except ValueError as exc:
            self.warnings.append("%s cannot be parsed, conda skips it with a warning: %s" % (path, exc))
            return
        if settings.get("proxy_servers") is not None and not self._final_proxy:
            usable, found = proxy_servers_problems(settings["proxy_servers"])
            self.problems.extend("%s: %s" % (path, text) for text in found)
            self.proxy_servers.update(usable)
            self._final_proxy = settings.get("proxy_servers_final", False)
        if settings.get("ssl_verify") is not None and not self._final_ssl:
            self.ssl_verify = settings["ssl_verify"]
            self._final_ssl = settings.get("ssl_verify_final", False)


def info_argument_spec() -> dict:
    """conda_proxy_info's options (the module, and its action plugin's Windows path)."""
    return dict(
        user=dict(type="str"),
        url=dict(type="str"),
        timeout=dict(type="int", default=20),
        require_proxy=dict(type="bool", default=True),
        login_shell=dict(type="bool", default=True),
        conda_executable=dict(type="path"),
    )


def proxy_servers_problems(value) -> tuple:
    """``(usable_map, problems)``: what conda makes of a ``proxy_servers`` value of any YAML type.

    conda declares a map of strings (or null). A number is turned into its text (``3128`` is then taken as the
    proxy URL ``3128``); a list, a nested map or a scalar at the top makes ``conda config`` fail.
    """
    if value is None:
        return {}, []
    if not isinstance(value, dict):
        return {}, ["proxy_servers is %s, not a map of scheme to proxy URL: conda rejects it (`conda config` fails)"
                    % _type_name(value)]
    usable, problems = {}, []
    for key, item in value.items():
        key = str(key)
        if item is None or isinstance(item, str):
            usable[key] = item
        elif isinstance(item, (bool, int, float)):
            usable[key] = str(item).lower() if isinstance(item, bool) else str(item)
            problems.append("proxy_servers %s is %s %s, not a URL: conda reads it as the proxy URL %r, which names "
                            "no proxy host and port (write http://host:port)"
                            % (key, _type_name(item), item, usable[key]))
        else:
            problems.append("proxy_servers %s is %s, not a proxy URL: conda fails on it" % (key, _type_name(item)))
    return usable, problems


def _type_name(value) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a map"
    return "a %s" % type(value).__name__


def expand_variables(value: str, env: dict) -> tuple:
    """``(expanded, unset_names)``: ``os.path.expandvars`` as conda applies it, with ``env`` (the account's)."""
    unset = []

    def replace(match):
        name = match.group(1)
        if name.startswith("{"):
            name = name[1:-1]
        if name in env:
            return env[name]
        if name and name not in unset:
            unset.append(name)
        return match.group(0)

    if "$" not in value:
        return value, []
    return _VARIABLE.sub(replace, value), unset


def variable_names(value: str) -> list:
    names = []
    for match in _VARIABLE.finditer(value):
        name = match.group(1).strip("{}")
        if name and name not in names:
            names.append(name)
    return names


def mask_proxy_url(url: str, mask: str = "********") -> str:
    """A single proxy URL for output, its whole password masked even when it is not percent-encoded.

    The credentials run to the last ``@`` (a raw ``@``, ``:`` or ``/`` in a password included); a password that is
    only a ``${VAR}`` reference is not a secret and is kept.
    """
    if not isinstance(url, str) or "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    userinfo, _at, host = rest.rpartition("@")
    user, colon, password = userinfo.partition(":")
    if not colon or re.match(r"^\$(\w+|\{\w+\})$", password):
        return url
    return "%s://%s:%s@%s" % (scheme, user if "/" not in user and "@" not in user else mask, mask, host)


def proxy_url_problem(url: str) -> str | None:
    """Why requests/urllib3 would refuse ``url`` as a proxy (``InvalidURL``/``InvalidProxyURL``), or None.

    urllib3 ends the host part at the first ``/``, ``?`` or ``#`` and takes the credentials up to the last
    ``@`` before it: a raw ``/``, ``?`` or ``#`` in a password leaves a host or port that is not one.
    """
    if url == "":
        return None
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)", url)
    if not match:
        return "it has no scheme:// (requests would read it as http://%s)" % url.split("@")[-1]
    hostport = match.group(2).rpartition("@")[2]
    if hostport.startswith("["):
        host, _sep, rest = hostport[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else rest
    else:
        host, _sep, port = hostport.partition(":")
    if not host:
        return "it has no host after the credentials"
    if port and (not port.isdigit() or int(port) > 65535):
        return "its port is not a number"
    if any(char.isspace() for char in match.group(2)):
        return "it contains white space"
    return None


LOCAL_PROXY_HOSTS = ("127.0.0.1", "localhost", "::1")


def classify_failure(exc: BaseException, proxy: str | None = None) -> tuple:
    """``(outcome, explanation)`` for an exception raised by a request through ``proxy``.

    A proxy answers a missing or refused login with 407. px, the local authenticating proxy on loopback, answers
    **401** instead when it cannot log in to the corporate proxy itself: a 401 through a loopback proxy is
    ``upstream_auth_failed`` (a 407 stays ``proxy_auth_required``, whoever sent it)."""
    status = exc.code if isinstance(exc, HTTPError) else None
    text = str(getattr(exc, "reason", exc))
    # A channel's own 401 carries WWW-Authenticate (RFC 9110); px's does not, and a CONNECT is answered by the proxy.
    from_proxy = (status == 401 and not (getattr(exc, "headers", None) or {}).get("WWW-Authenticate")) or (
        status is None and re.search(r"\b401\b", text) and "Tunnel" in text)
    if proxy and (urlsplit(proxy).hostname or "") in LOCAL_PROXY_HOSTS and from_proxy:
        return ("upstream_auth_failed", "the local authenticating proxy %s answered 401: it could not log in to the "
                "corporate proxy. With Kerberos the account has no valid ticket (klist; kinit, or log in again); with "
                "Basic the password it holds was refused" % proxy)
    if isinstance(exc, HTTPError):
        if exc.code == 407:
            return ("proxy_auth_required", "the proxy answered 407 Proxy Authentication Required: the proxy "
                    "credentials are missing or refused; %s" % PROMPT_407)
        return ("http_error", "the channel answered HTTP %d %s through the proxy" % (exc.code, exc.reason))
    reason = getattr(exc, "reason", exc)
    text = str(reason)
    if "407" in text:
        return ("proxy_auth_required", "the proxy refused the tunnel with 407 Proxy Authentication Required: the "
                "proxy credentials are missing or refused; %s" % PROMPT_407)
    if isinstance(reason, ssl.SSLError) or "CERTIFICATE_VERIFY_FAILED" in text or "SSL" in text:
        return ("tls_error", "TLS verification failed (%s): a TLS-intercepting proxy needs its CA in ssl_verify "
                "(conda_proxy_ca_bundle)" % text)
    if isinstance(reason, (socket.timeout,)) or "timed out" in text:
        return ("timeout", "the request timed out (%s)" % text)
    if isinstance(reason, (ConnectionRefusedError, socket.gaierror, OSError)) or isinstance(exc, URLError):
        return ("proxy_unreachable", "the proxy could not be reached (%s)" % text)
    return ("error", text)
