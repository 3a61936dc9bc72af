# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Which proxy conda uses for a URL, and what a failed request through it means.

Pure functions. conda's precedence (verified with conda 26, see DESIGN.md): ``proxy_servers``
from .condarc wins scheme by scheme over the environment's proxies, which fill the schemes it
lacks; ``no_proxy`` only suppresses proxies that came from the environment. Within that, keys
are tried as requests does: ``scheme://host``, ``scheme``, ``all://host``, ``all``, and an empty
value means "connect directly".
"""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl

try:
    from urllib.error import HTTPError, URLError
    from urllib.parse import urlsplit
except ImportError:  # pragma: no cover
    pass


def env_proxies(env: dict) -> dict:
    """Proxies from environment variables the way requests reads them (lower case wins)."""
    proxies = {}
    for scheme in ("http", "https", "all"):
        value = env.get("%s_proxy" % scheme) or env.get("%s_PROXY" % scheme.upper())
        if value:
            proxies[scheme] = value
    return proxies


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


def select_proxy(url: str, proxy_servers: dict, env: dict) -> tuple:
    """``(proxy_url_or_None, source)`` conda would use for ``url``; source is condarc, env or none."""
    parts = urlsplit(url)
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    keys = (scheme + "://" + host, scheme, "all://" + host, "all")
    for key in keys:
        if key in proxy_servers:
            value = proxy_servers[key]
            return (value or None, "condarc")
    if not bypassed_by_no_proxy(url, env):
        proxies = env_proxies(env)
        for key in (scheme, "all"):
            if key in proxies:
                return (proxies[key], "env")
    return (None, "none")


def classify_failure(exc: BaseException) -> tuple:
    """``(outcome, explanation)`` for an exception raised by a request through a proxy."""
    if isinstance(exc, HTTPError):
        if exc.code == 407:
            return ("proxy_auth_required", "the proxy answered 407 Proxy Authentication Required: the proxy "
                    "credentials are missing or wrong (conda would prompt for them and an unattended run would hang)")
        return ("http_error", "the channel answered HTTP %d %s through the proxy" % (exc.code, exc.reason))
    reason = getattr(exc, "reason", exc)
    text = str(reason)
    if isinstance(reason, ssl.SSLError) or "CERTIFICATE_VERIFY_FAILED" in text or "SSL" in text:
        return ("tls_error", "TLS verification failed (%s): a TLS-intercepting proxy needs its CA in ssl_verify "
                "(conda_proxy_ca_bundle)" % text)
    if "407" in text:
        return ("proxy_auth_required", "the proxy refused the tunnel with 407 Proxy Authentication Required: the "
                "proxy credentials are missing or wrong")
    if isinstance(reason, (socket.timeout,)) or "timed out" in text:
        return ("timeout", "the request timed out (%s)" % text)
    if isinstance(reason, (ConnectionRefusedError, socket.gaierror, OSError)) or isinstance(exc, URLError):
        return ("proxy_unreachable", "the proxy could not be reached (%s)" % text)
    return ("error", text)
