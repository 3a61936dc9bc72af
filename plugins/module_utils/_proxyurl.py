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

# A secret form shorter than this is never replaced wherever it occurs: masking 'p' would turn every 'p' of
# the output into the mask (and show where the password is). Such passwords are masked where they stand as
# the password of a URL, which is where the collection writes them.
MIN_SECRET_LENGTH = 4

# What may stand raw in a URL's user-info (RFC 3986 unreserved, sub-delims but the quote, ':'), besides
# %HH escapes and ${VAR}/$VAR references; anything else must be percent-encoded.
_USERINFO_RAW = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&()*+,;=:%")
_VAR_IN_URL = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}|\$[A-Za-z_][A-Za-z0-9_]*")
_VAR_ONLY = re.compile(r"^\$\{?[A-Za-z_][A-Za-z0-9_]*\}?$")
_PCT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_LOWER_ESCAPE = re.compile(r"%(?:[a-f][0-9A-Fa-f]|[0-9A-Fa-f][a-f])")
# No proxy URL is longer; a longer option value is refused before anything else looks at it.
MAX_URL_LENGTH = 4096
# Where a URL's authority ends inside a larger text (a file line, a message): white space, a quote, '/'.
_AUTHORITY_END = re.compile(r"[\s'\"/]")
_SEPARATOR = re.compile(r"[\s'\"]")

# An exact host name as conda compares it (no port, no wildcard, no path).
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62}))*\.?$")
_IPV4 = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}$")


class ProxyValueError(ValueError):
    """A proxy setting that cannot be written safely; the message says why."""


_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f]")  # every C0 control but the tab, and DEL


def reject_control_characters(name: str, value: str) -> None:
    """Refuse newlines, NUL and other control characters: no file format can hold them safely."""
    found = _CONTROL.search(value)
    if found:
        raise ProxyValueError(
            "%s contains a control character (%r); newlines, NUL and other control "
            "characters cannot be written safely to a configuration file" % (name, found.group(0))
        )


# --------------------------------------------------------------------------------------------
# Finding passwords, in time linear in the text (option values and file lines can be megabytes)


# The password of a ``scheme://user:password@host`` inside a larger text. The authority runs from ``://`` to
# white space, a quote or ``/``; the password from the first ':' to the *last* '@' in it (as urllib and
# requests split it), so a raw '@' in a password is masked too. Linear: an attempt at one '://' reads at most
# its own authority, the authorities are disjoint (each ends before a '/'), and anywhere else an attempt fails
# at the first character. (The old pattern started at every letter and took quadratic time.)
_URL_PASSWORD = re.compile(
    r"(?P<head>://[^\s'\"/:]*:)(?!\$\{?[A-Za-z_][A-Za-z0-9_]*\}?@)(?P<secret>[^\s'\"/]+)(?P<tail>@)"
)


def _password_spans(text: str) -> list:
    """``(start, end)`` of the password of every ``scheme://user:password@host`` in ``text`` (see above)."""
    return [match.span("secret") for match in _URL_PASSWORD.finditer(text)]


def _url_userinfo(url: str) -> tuple | None:
    """``(start, end)`` of the user-info of a whole URL value: from ``://`` to its last ``@``, or ``None``."""
    index = url.find("://")
    if index < 0:
        return None
    at = url.rfind("@", index + 3)
    return (index + 3, at) if at >= 0 else None


def _is_reference(secret: str) -> bool:
    return bool(_VAR_ONLY.match(secret))


def url_has_credentials(url: str) -> bool:
    return _url_userinfo(url) is not None


def url_password(url: str) -> str | None:
    """The password part of the URL ``url`` as written (still percent-encoded), or ``None``."""
    span = _url_userinfo(url)
    if span is None:
        return None
    userinfo = url[span[0]:span[1]]
    if ":" not in userinfo:
        return None
    return userinfo.split(":", 1)[1] or None


def _forms(secret: str) -> set:
    """A password as written, decoded, and with upper-case escapes (as :func:`add_credentials` writes them)."""
    if "%" not in secret or len(secret) > MAX_URL_LENGTH:
        return {secret}  # longer than any URL conda could use: masked where it stands, as written
    forms = {secret, unquote(secret)}
    if _LOWER_ESCAPE.search(secret):
        forms.add(_ESCAPE.sub(lambda match: match.group(0).upper(), secret))
    return forms


def secrets_in(text: str) -> list:
    """Every form in which a URL password in ``text`` may appear in output (as written, decoded, re-encoded).

    ``text`` is a URL value or any text holding URLs. ``${VAR}`` references are not secrets. Forms shorter
    than :data:`MIN_SECRET_LENGTH` are left out (see :func:`maskable`); :func:`mask_secrets` masks them in place.
    """
    if "@" not in text:
        return []
    found = set()
    candidates = set(text[start:end] for start, end in _password_spans(text))
    # a single URL value: its user-info runs to the last '@' even past a raw '/' (a password that is not encoded)
    whole = url_password(text) if not _SEPARATOR.search(text) else None
    if whole:
        candidates.add(whole)
    for secret in candidates:
        if secret and not _is_reference(secret):
            found.update(_forms(secret))
    return sorted(maskable(found), key=len, reverse=True)


def has_password(text: str) -> bool:
    """Whether ``text`` (a URL value) holds a literal password, however short (``${VAR}`` is no password)."""
    secret = url_password(text)
    return bool(secret) and not _is_reference(secret)


def maskable(forms) -> list:
    """The forms long enough to be replaced wherever they occur (and to go to ``no_log_values``)."""
    return [form for form in forms if form and len(form) >= MIN_SECRET_LENGTH]


def mask_secrets(text: str) -> str:
    """Replace the password of every ``scheme://user:password@`` URL in ``text`` with a mask.

    ``${VAR}`` references are kept: they name a variable, they are not the secret. Linear in ``text``.
    """
    return _URL_PASSWORD.sub(r"\g<head>%s\g<tail>" % MASK, text)


def mask_known(text: str, secrets) -> str:
    """``text`` with URL passwords masked and every known secret form replaced wherever it occurs.

    Forms shorter than :data:`MIN_SECRET_LENGTH` are only masked as URL passwords, never inside other words.
    """
    text = mask_secrets(text)
    for form in sorted(maskable(set(secrets)), key=len, reverse=True):
        text = text.replace(form, MASK)
    return text


def mask_url(url: str) -> str:
    """A URL value for a message: the whole password masked, even a malformed one (a raw ``@``, ``#``, ``/``)."""
    span = _url_userinfo(url)
    if span is None:
        return mask_secrets(url)
    start, end = span
    userinfo = url[start:end]
    user, colon, password = userinfo.partition(":")
    if colon and _is_reference(password) and _userinfo_problem(user) is None:
        return url
    if colon and _userinfo_problem(userinfo) is None:
        shown = user + ":" + MASK
    else:
        shown = MASK  # not even the user name: where the password starts is not known
    return url[:start] + shown + mask_secrets(url[end:])


def _userinfo_problem(userinfo: str) -> str | None:
    """Why ``userinfo`` cannot stand in a URL as written, or ``None``."""
    bare = _VAR_IN_URL.sub("x", userinfo)
    if _PCT.search(bare):
        return "a '%' that does not start a %HH escape"
    for char in bare:
        if char not in _USERINFO_RAW:
            return "a character that must be percent-encoded"
    return None


def validate_proxy_url(name: str, url: str) -> str:
    """Check that ``url`` is a usable proxy URL and return it unchanged.

    ``${VAR}`` references are allowed anywhere: conda expands them with
    ``os.path.expandvars`` when it reads ``.condarc``. Every message shows the URL with its password
    masked, whatever is wrong with it: the password is found and masked before anything is checked.
    """
    if len(url) > MAX_URL_LENGTH:
        raise ProxyValueError("%s is %d characters long; a proxy URL has at most %d" % (name, len(url), MAX_URL_LENGTH))
    shown = mask_url(url)
    forms = secrets_in(url)

    def refuse(message: str) -> ProxyValueError:
        return ProxyValueError(mask_known(message, forms))

    try:
        reject_control_characters(name, url)
    except ProxyValueError as exc:
        raise refuse(str(exc))
    if url != url.strip() or " " in url or "\t" in url:
        raise refuse("%s must not contain spaces: %s" % (name, shown))
    span = _url_userinfo(url)
    if span is not None:
        problem = _userinfo_problem(url[span[0]:span[1]])
        if problem:
            raise refuse(
                "%s: the user name or password in the URL holds %s (%s). Give the credentials in "
                "proxy_username/proxy_password, which encodes them, or percent-encode them in the URL "
                "('@' is %%40, ':' is %%3A, '%%' is %%25, '#' is %%23, '/' is %%2F)" % (name, problem, shown)
            )
    # Validate with ${VAR} references replaced by a placeholder so their braces do not confuse urlsplit.
    probe = _VAR_IN_URL.sub("x", url)
    try:
        parts = urlsplit(probe)
    except ValueError as exc:
        raise refuse("%s is not a valid URL: %s (%s)" % (name, shown, exc))
    if parts.scheme.lower() not in PROXY_SCHEMES or "://" not in probe:
        raise refuse(
            "%s must be a URL such as http://proxy.example.com:3128 (scheme one of %s), got %s"
            % (name, ", ".join(PROXY_SCHEMES), shown)
        )
    try:
        hostname = parts.hostname
        parts.port  # noqa: B018 -- raises ValueError on a non-numeric or out-of-range port
    except ValueError as exc:
        raise refuse("%s has an invalid port: %s (%s)" % (name, shown, exc))
    if not hostname:
        raise refuse("%s has no host name: %s" % (name, shown))
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise refuse(
            "%s must not have a path, query or fragment: %s (percent-encode '/', '?', '#' in credentials)"
            % (name, shown)
        )
    return url


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


def validate_host(name: str, host: str) -> str:
    """An exact host name or IPv4 address as conda compares it in ``scheme://host`` keys."""
    reject_control_characters(name, host)
    if len(host) > 254:
        raise ProxyValueError("%s: a host name of %d characters is not valid (at most 253)" % (name, len(host)))
    if host.startswith(".") or host.startswith("*") or "/" in host or ":" in host:
        raise ProxyValueError(
            "%s: %r is not an exact host name. .condarc proxy_servers keys match one host exactly "
            "(no port, no wildcard, no domain suffix); use condafleet.proxy.env_proxy's no_proxy for "
            "suffix patterns such as .corp.example" % (name, host)
        )
    if not (_HOSTNAME.match(host) or _IPV4.match(host)):
        raise ProxyValueError("%s: %r is not a valid host name" % (name, host))
    return host.lower().rstrip(".")
