# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Proxy URLs: validation, credentials, and masking of secrets for output.

Pure functions only: the modules use them on the managed node and the action
plugins use them on the controller.
"""

from __future__ import annotations

import re

try:  # Python 3
    from urllib.parse import quote, unquote, urlsplit
except ImportError:  # pragma: no cover
    from urllib import quote, unquote  # type: ignore
    from urlparse import urlsplit  # type: ignore


MASK = "********"

PROXY_SCHEMES = ("http", "https", "socks5", "socks5h", "socks4", "socks4a")

# scheme://user:password@ -- the password part of any URL inside a larger text.
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/@\s:'\"]*:)(?P<secret>[^/@\s'\"]*)(?P<tail>@)")

# An exact host name as conda compares it (no port, no wildcard, no path).
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62}))*\.?$")
_IPV4 = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}$")


class ProxyValueError(ValueError):
    """A proxy setting that cannot be written safely; the message says why."""


def reject_control_characters(name: str, value: str) -> None:
    """Refuse newlines, NUL and other control characters: no file format can hold them safely."""
    for char in value:
        if char in "\r\n\x00" or (ord(char) < 0x20 and char != "\t") or ord(char) == 0x7F:
            raise ProxyValueError(
                "%s contains a control character (%r); newlines, NUL and other control "
                "characters cannot be written safely to a configuration file" % (name, char)
            )


def validate_proxy_url(name: str, url: str) -> str:
    """Check that ``url`` is a usable proxy URL and return it unchanged.

    ``${VAR}`` references are allowed anywhere: conda expands them with
    ``os.path.expandvars`` when it reads ``.condarc``.
    """
    reject_control_characters(name, url)
    if url != url.strip() or " " in url or "\t" in url:
        raise ProxyValueError("%s must not contain spaces: %s" % (name, mask_secrets(url)))
    # Validate with ${VAR} references replaced by a placeholder so their braces do not confuse urlsplit.
    probe = re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}|\$[A-Za-z_][A-Za-z0-9_]*", "x", url)
    parts = urlsplit(probe)
    if parts.scheme.lower() not in PROXY_SCHEMES or "://" not in probe:
        raise ProxyValueError(
            "%s must be a URL such as http://proxy.example.com:3128 (scheme one of %s), got %s"
            % (name, ", ".join(PROXY_SCHEMES), mask_secrets(url))
        )
    try:
        hostname = parts.hostname
        parts.port  # noqa: B018 -- raises ValueError on a non-numeric or out-of-range port
    except ValueError as exc:
        raise ProxyValueError("%s has an invalid port: %s (%s)" % (name, mask_secrets(url), exc))
    if not hostname:
        raise ProxyValueError("%s has no host name: %s" % (name, mask_secrets(url)))
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ProxyValueError(
            "%s must not have a path, query or fragment: %s (percent-encode '/', '?', '#' in credentials)"
            % (name, mask_secrets(url))
        )
    return url


def url_has_credentials(url: str) -> bool:
    return "@" in urlsplit(url).netloc


def add_credentials(url: str, username: str | None, password: str | None) -> str:
    """Return ``url`` with ``username``/``password`` percent-encoded into it.

    Every character outside RFC 3986's unreserved set is encoded, so ``@``, ``:``,
    ``%``, ``#`` and ``/`` in a password cannot end the user-info early.
    """
    if not username and not password:
        return url
    if password and not username:
        raise ProxyValueError("proxy_password needs proxy_username")
    if url_has_credentials(url):
        raise ProxyValueError(
            "the proxy URL already holds credentials; give them either in the URL or in "
            "proxy_username/proxy_password, not both"
        )
    scheme, rest = url.split("://", 1)
    userinfo = quote(username, safe="")
    if password is not None and password != "":
        userinfo += ":" + quote(password, safe="")
    return "%s://%s@%s" % (scheme, userinfo, rest)


def url_password(url: str) -> str | None:
    """The password part of ``url`` as written (still percent-encoded), or ``None``."""
    match = _URL_PASSWORD.search(url)
    return match.group("secret") if match and match.group("secret") else None


def secrets_in(url: str) -> list[str]:
    """Every form in which the password of ``url`` may appear in output: as written and decoded."""
    secret = url_password(url)
    if not secret or secret.startswith("$"):
        return []
    forms = {secret, unquote(secret)}
    return sorted(forms, key=len, reverse=True)


def mask_secrets(text: str) -> str:
    """Replace the password of every ``scheme://user:password@`` URL in ``text`` with a mask.

    ``${VAR}`` references are kept: they name a variable, they are not the secret.
    """

    def _mask(match: re.Match) -> str:
        secret = match.group("secret")
        if not secret or re.match(r"^\$\{?[A-Za-z_][A-Za-z0-9_]*\}?$", secret):
            return match.group(0)
        return match.group("head") + MASK + match.group("tail")

    return _URL_PASSWORD.sub(_mask, text)


def validate_host(name: str, host: str) -> str:
    """An exact host name or IPv4 address as conda compares it in ``scheme://host`` keys."""
    reject_control_characters(name, host)
    if host.startswith(".") or host.startswith("*") or "/" in host or ":" in host:
        raise ProxyValueError(
            "%s: %r is not an exact host name. .condarc proxy_servers keys match one host exactly "
            "(no port, no wildcard, no domain suffix); use condafleet.proxy.env_proxy's no_proxy for "
            "suffix patterns such as .corp.example" % (name, host)
        )
    if not (_HOSTNAME.match(host) or _IPV4.match(host)):
        raise ProxyValueError("%s: %r is not a valid host name" % (name, host))
    return host.lower().rstrip(".")
