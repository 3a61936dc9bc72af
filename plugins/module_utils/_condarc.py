# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The ``proxy_servers`` and ``ssl_verify`` keys of a ``.condarc``: validate, parse, render.

Pure functions only (no AnsibleModule, no file I/O): the module uses them on the managed
node, the Windows action plugin on the controller.

The file is never re-serialised. A small scanner finds the top-level keys and the lines
each one spans; only the spans of the two keys this module owns are replaced, removed or
appended, so every other byte (keys, comments, blank lines, quoting, ``#!`` markers, CRLF,
a BOM) stays as it was. The scanner needs only the standard library; when PyYAML is
importable the whole file is also validated with it, and the edit is checked to change
nothing but the owned keys.
"""

from __future__ import annotations

import re
import typing as t
from collections import OrderedDict

from ansible_collections.condafleet.proxy.plugins.module_utils import _proxyurl

try:
    import yaml as _yaml

    HAS_PYYAML = True
    # libyaml's parser, when PyYAML was built with it, composes a large file about ten times faster than the
    # pure-Python one; the node tree (tags, values, marks) is the same and the resolver is PyYAML's own.
    _COMPOSE_LOADER = getattr(_yaml, "CSafeLoader", _yaml.SafeLoader)
except ImportError:  # pragma: no cover - exercised by patching HAS_PYYAML
    _yaml = None
    HAS_PYYAML = False


OWNED_KEYS = ("proxy_servers", "ssl_verify")
FINAL_MARKER = "#!final"
BOM = b"\xef\xbb\xbf"
SYSTEM_DIR = "/etc/conda"
CONDARC_NAME = ".condarc"
INDENT = "  "

MUTUALLY_EXCLUSIVE = [("scope", "path")]
REQUIRED_IF = [("scope", "prefix", ("prefix",))]


class ParseError(ValueError):
    """The existing file cannot be edited safely; ``line`` is 1-based."""

    def __init__(self, line: int, message: str) -> None:
        self.line = line
        self.reason = message
        super().__init__("line %d: %s" % (line, message))


class CondarcSpecError(ValueError):
    """An option value that cannot be written; the message names the option."""


def argument_spec() -> dict:
    """The options of condarc_proxy (file attributes come from ``add_file_common_args``)."""
    return dict(
        state=dict(type="str", default="present", choices=["present", "absent"]),
        scope=dict(type="str", choices=["user", "system", "prefix"]),
        prefix=dict(type="path"),
        path=dict(type="str"),
        root=dict(type="str", default="/"),
        http=dict(type="str"),
        https=dict(type="str"),
        servers=dict(type="dict", default={}),
        bypass=dict(type="list", elements="str", default=[], no_log=False),
        ssl_verify=dict(type="raw"),
        final=dict(type="bool", default=False),
        proxy_username=dict(type="str", no_log=True),
        proxy_password=dict(type="str", no_log=True),
        user=dict(type="str"),
        follow=dict(type="bool", default=False),
        backup=dict(type="bool", default=False),
        # system scope: a literal password goes to files every account reads; refused unless this says so
        world_readable_password=dict(type="bool", default=False, no_log=False),
    )


# --------------------------------------------------------------------------------------------
# Options -> spec


class CondarcSpec:
    """What the file should say about the owned keys.

    ``proxy_servers`` is ``None`` when the task does not manage it (state=present with only
    ``ssl_verify``); ``ssl_verify`` is ``None`` when the task does not name it.
    """

    def __init__(self, state, scope, prefix, path, proxy_servers, ssl_verify, final, secrets, literal_password=None):
        self.state = state
        self.scope = scope
        self.prefix = prefix
        self.path = path
        self.proxy_servers = proxy_servers  # type: OrderedDict[str, str] | None
        self.ssl_verify = ssl_verify
        self.final = final
        self.secrets = secrets  # every form of every password, for no_log_values and masking (none too short)
        # a password of any length (secrets leaves out forms too short to mask wherever they occur)
        self.literal_password = bool(secrets) if literal_password is None else literal_password

    @property
    def manages_ssl_verify(self) -> bool:
        return self.ssl_verify is not None

    @property
    def has_literal_password(self) -> bool:
        """True when a password (not a ``${VAR}`` reference) ends up in the file."""
        return self.state == "present" and self.literal_password

    def mask(self, text: str) -> str:
        """``text`` with every password masked: URL passwords, and each known secret verbatim."""
        return _proxyurl.mask_known(text, self.secrets)

    def masked_proxy_servers(self) -> dict | None:
        if self.proxy_servers is None:
            return None
        return OrderedDict((key, self.mask(value)) for key, value in self.proxy_servers.items())


MAX_PATH_LENGTH = 4096  # PATH_MAX on Linux
_TRUE_WORDS = ("true", "yes", "on")
_FALSE_WORDS = ("false", "no", "off")
_WINDOWS_ABSOLUTE = re.compile(r"^(?:[A-Za-z]:[\\/]|\\\\)")
# %USERPROFILE%\... : conda expands variables in .condarc values (os.path.expandvars; %VAR% on Windows).
_WINDOWS_PROFILE = re.compile(r"^%USERPROFILE%[\\/]", re.IGNORECASE)


def _normalize_ssl_verify(value: t.Any) -> bool | str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    if not isinstance(value, (str, int)):
        raise CondarcSpecError("ssl_verify must be true, false, truststore or the path of a CA bundle, got %r" % (value,))
    text = str(value).strip()
    if text.lower() in _TRUE_WORDS or text == "1":
        return True
    if text.lower() in _FALSE_WORDS or text == "0":
        return False
    if text == "truststore":
        return text
    _proxyurl.reject_control_characters("ssl_verify", text)
    if len(text) > MAX_PATH_LENGTH:
        raise CondarcSpecError("ssl_verify is %d characters long; a CA bundle path has at most %d" % (len(text), MAX_PATH_LENGTH))
    if not (text.startswith(("/", "~")) or _WINDOWS_ABSOLUTE.match(text) or _WINDOWS_PROFILE.match(text)):
        raise CondarcSpecError(
            "ssl_verify must be true, false, truststore or the absolute path of a CA bundle file or "
            "directory (~/ or ~user/ for the home of the account being configured), got %r" % text
        )
    return text


def _server_key(name: str) -> str:
    """Validate a ``servers`` key: ``http://host`` or ``https://host``, exact host."""
    if not isinstance(name, str):
        raise CondarcSpecError("servers keys must be strings such as 'https://repo.example.com', got %r" % (name,))
    _proxyurl.reject_control_characters("servers key", name)
    if len(name) > 300:
        raise CondarcSpecError("a servers key of %d characters is not 'scheme://host' (a host name has at most 253)" % len(name))
    match = re.match(r"^(https?)://(.*)$", name, re.IGNORECASE)
    if not match:
        if name.lower() in ("http", "https"):
            raise CondarcSpecError("servers key %r: use the %s option for the default proxy of a scheme" % (name, name.lower()))
        raise CondarcSpecError(
            "servers key %r must be 'http://host' or 'https://host' (conda matches the scheme and the exact host)" % name
        )
    host = _proxyurl.validate_host("servers key %r" % name, match.group(2))
    return "%s://%s" % (match.group(1).lower(), host)


def _password_forms(url: str, password: str | None) -> list[str]:
    """Every form of the password in ``url`` and of ``password`` (as given and encoded), none too short to mask."""
    forms = set(_proxyurl.secrets_in(url))
    if password and not _VAR_REF.match(password):
        from urllib.parse import quote

        forms.update((password, quote(password, safe="")))
    return _proxyurl.maskable(forms)


def secrets_in_params(params: dict) -> list[str]:
    """Every form of every password in the options, found before anything is validated.

    For ``module.no_log_values`` first thing: an option that fails validation is still echoed back
    (``invocation``) and must not show the password a URL holds.
    """
    forms = set()
    servers = params.get("servers")
    values = [params.get("http"), params.get("https")] + (list(servers.values()) if isinstance(servers, dict) else [])
    for value in values:
        if isinstance(value, str):
            forms.update(_proxyurl.secrets_in(value))
    forms.update(_password_forms("", params.get("proxy_password") or None))
    return sorted(forms, key=len, reverse=True)


_VAR_REF = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*\}$")


def is_var_reference(value: str) -> bool:
    """``${NAME}``: a value conda takes from the environment when it reads the file."""
    return bool(_VAR_REF.match(value))


def _with_credentials(url: str, username: str | None, password: str | None) -> str:
    """``url`` with the credentials percent-encoded in; a ``${VAR}`` password stays a reference."""
    if password and _VAR_REF.match(password):
        with_user = _proxyurl.add_credentials(url, username, None)
        head, tail = with_user.split("@", 1)
        return "%s:%s@%s" % (head, password, tail)
    return _proxyurl.add_credentials(url, username, password)


def file_location(params: dict, error: type = CondarcSpecError) -> tuple:
    """``(scope, path, prefix)`` of a .condarc module's options, checked (``error`` names the option): ``path``
    or a ``scope`` (``user`` by default), ``prefix`` exactly with ``scope=prefix``, no control characters."""
    scope = params.get("scope")
    path = params.get("path")
    prefix = params.get("prefix")
    if scope and path:
        raise error("scope and path are mutually exclusive: give one of them")
    if not path:
        scope = scope or "user"
    if scope == "prefix" and not prefix:
        raise error("scope=prefix needs prefix (the path of a conda environment)")
    if prefix and scope != "prefix":
        raise error("prefix is only used with scope=prefix")
    for name, value in (("path", path), ("prefix", prefix)):
        if value:
            try:
                _proxyurl.reject_control_characters(name, value)
            except ValueError as exc:
                raise error(str(exc))
    return scope, path, prefix


def spec_from_params(params: dict) -> CondarcSpec:
    """Validate and normalise the module's options (raises :class:`ValueError` naming the option)."""
    state = params.get("state") or "present"
    scope, path, prefix = file_location(params)

    username = params.get("proxy_username") or None
    password = params.get("proxy_password") or None
    for name, value in (("proxy_username", username), ("proxy_password", password)):
        if value is not None:
            _proxyurl.reject_control_characters(name, value)
    if password and not username:
        raise CondarcSpecError("proxy_password needs proxy_username")

    secrets = set()
    literal_password = bool(password) and not _VAR_REF.match(password)
    urls = []  # (option name, key in proxy_servers, url)
    for scheme in ("http", "https"):
        value = params.get(scheme)
        if value:
            urls.append((scheme, scheme, value))
    servers = params.get("servers") or {}
    if not isinstance(servers, dict):
        raise CondarcSpecError("servers must be a dictionary of 'scheme://host' keys to proxy URLs")
    keys = set(url_key for _option, url_key, _url in urls)  # a set: many servers must not be quadratic
    for name, value in servers.items():
        key = _server_key(name)
        if not isinstance(value, str) or not value:
            raise CondarcSpecError("servers[%r] must be a proxy URL (use bypass for hosts reached directly)" % name)
        if key in keys:
            raise CondarcSpecError("servers has %r twice (keys are compared case-insensitively)" % key)
        keys.add(key)
        urls.append(("servers[%r]" % name, key, value))

    proxy_servers = OrderedDict()
    for option, key, url in urls:
        try:
            secrets.update(_password_forms(url, None))
            _proxyurl.validate_proxy_url(option, url)
            literal_password = literal_password or _proxyurl.has_password(url)
            full = _with_credentials(url, username, password)
        except _proxyurl.ProxyValueError as exc:
            raise CondarcSpecError("%s: %s" % (option, exc) if not str(exc).startswith(option) else str(exc))
        secrets.update(_password_forms(full, password))
        proxy_servers[key] = full

    bypass = params.get("bypass") or []
    for host in bypass:
        if not isinstance(host, str):
            raise CondarcSpecError("bypass entries must be host names, got %r" % (host,))
        name = _proxyurl.validate_host("bypass", host)
        for scheme in ("http", "https"):
            key = "%s://%s" % (scheme, name)
            if key in proxy_servers and proxy_servers[key] != "":
                raise CondarcSpecError("%s is both in servers and in bypass" % key)
            proxy_servers[key] = ""

    ssl_verify = _normalize_ssl_verify(params.get("ssl_verify"))
    if state == "present":
        if not proxy_servers and ssl_verify is None:
            raise CondarcSpecError("state=present needs at least one of http, https, servers, bypass or ssl_verify")
    managed = proxy_servers if (proxy_servers or state == "absent") else None
    return CondarcSpec(
        state=state,
        scope=scope,
        prefix=prefix,
        path=path,
        proxy_servers=managed,
        ssl_verify=ssl_verify,
        final=bool(params.get("final")),
        secrets=sorted(secrets, key=len, reverse=True),
        literal_password=literal_password,
    )


def condarc_path(spec: CondarcSpec, home: str, system_dir: str | None = None) -> str:
    """The file ``spec`` edits; ``~`` in ``path`` is ``home`` (the account's, not ``$HOME``)."""
    system_dir = SYSTEM_DIR if system_dir is None else system_dir
    if spec.path:
        path = spec.path
        if path == "~" or path.startswith("~/"):
            path = home.rstrip("/") + path[1:]
        elif path.startswith("~"):
            raise CondarcSpecError("path: %r: use ~/ (the home of the user option) or an absolute path" % path)
        if not (path.startswith("/") or _WINDOWS_ABSOLUTE.match(path)):
            raise CondarcSpecError("path must be absolute (or start with ~/), got %r" % spec.path)
        return path
    if spec.scope == "system":
        return system_dir.rstrip("/") + "/" + CONDARC_NAME
    if spec.scope == "prefix":
        return spec.prefix.rstrip("/") + "/" + CONDARC_NAME
    return home.rstrip("/") + "/" + CONDARC_NAME


# --------------------------------------------------------------------------------------------
# Scanning the existing file


class _Entry:
    """One top-level key and the lines ``[start, end)`` its value spans (trailing comments excluded)."""

    def __init__(self, key: str, start: int) -> None:
        self.key = key
        self.start = start
        self.end = start + 1
        self.inline = ""  # the value text on the key line, comment removed
        self.comment = None  # type: str | None  # the comment on the key line, from '#'


class _Document:
    def __init__(self, lines: list, entries: list, insert_at: int, block_scalar_lines: dict) -> None:
        self.lines = lines  # [(text, eol)]
        self.entries = entries
        self.insert_at = insert_at  # where new keys go: the end, or before a '...' line
        self.block_scalar_lines = block_scalar_lines  # indexes of block scalar headers and content

    def append_point(self, edited: set) -> int:
        """Where new keys go. Normally the end (or before '...').

        A file that ends inside a block scalar without a final newline is the exception: a
        line break after it would change that scalar's value, so new keys go before that
        last (not edited) key instead.
        """
        at = self.insert_at
        last = len(self.lines) - 1
        if (
            at == len(self.lines)
            and self.lines
            and self.lines[last][1] == ""
            and last in self.block_scalar_lines
            and self.entries
            and self.entries[-1].start not in edited
        ):
            return self.entries[-1].start
        return at

    def entry(self, key: str) -> _Entry | None:
        for entry in self.entries:
            if entry.key == key:
                return entry
        return None


class _State:
    def __init__(self) -> None:
        self.quote = None  # type: str | None
        self.quote_line = 0
        self.flow = 0
        self.flow_line = 0
        self.expect = True  # a node may start here (quotes, brackets and '|' mean something)
        self.block_scalar = False
        self.block_keep = False


_BAD_BREAKS = {"\r": "a bare carriage return", "\x85": "U+0085 (NEL)", "\u2028": "U+2028", "\u2029": "U+2029"}


def _split_lines(text: str) -> list:
    lines = text.split("\n")
    result = []
    last = len(lines) - 1
    for index, raw in enumerate(lines):
        if index == last:
            if raw == "":
                break
            eol = ""
        else:
            eol = "\n"
        if raw.endswith("\r") and eol:
            raw, eol = raw[:-1], "\r\n"
        for char in raw:
            if char in _BAD_BREAKS:
                raise ParseError(index + 1, "%s is not supported as a line break" % _BAD_BREAKS[char])
            if (ord(char) < 0x20 and char != "\t") or ord(char) == 0x7F:
                raise ParseError(index + 1, "control character %r is not allowed in YAML" % char)
        result.append((raw, eol))
    return result


def _comment_at(text: str, i: int) -> bool:
    return text[i] == "#" and (i == 0 or text[i - 1] in " \t")


_TAG = re.compile(r"^!(?:[0-9A-Za-z-]*!)?[^!<>]*$|^!<[^>]+>$")


def _tab_error(lineno: int) -> ParseError:
    # libyaml (PyYAML's fast parser) accepts these tabs; ruamel.yaml, which conda reads with, does not and
    # conda then skips the whole file with a warning: refuse what conda would refuse.
    return ParseError(
        lineno,
        "a tab character outside quotes, comments, block scalars and [ ]/{ } (conda's YAML reader, ruamel.yaml, "
        "rejects it and would ignore the whole file); use spaces",
    )


def _scan(text: str, i: int, st: _State, lineno: int) -> int | None:
    """Advance ``st`` over ``text[i:]``; return where a comment starts, if one does."""
    n = len(text)
    indicators = 0
    while i < n:
        c = text[i]
        if st.quote == "'":
            j = text.find("'", i)
            if j < 0:
                return None
            if text[j + 1:j + 2] == "'":
                i = j + 2
                continue
            st.quote, st.expect, i = None, False, j + 1
            continue
        if st.quote == '"':
            j = i
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            if j >= n:
                return None
            st.quote, st.expect, i = None, False, j + 1
            continue
        if c in " \t":
            if c == "\t" and not st.flow:
                raise _tab_error(lineno)
            i += 1
            continue
        if _comment_at(text, i):
            return i
        nxt = text[i + 1:i + 2]
        if st.expect and c in "'\"":
            st.quote, st.quote_line = c, lineno
            i += 1
            continue
        if (st.expect or st.flow) and c in "[{":
            if not st.flow:
                st.flow_line = lineno
            st.flow += 1
            if st.flow > MAX_DEPTH:  # before PyYAML's composer recurses into it
                raise ParseError(lineno, _TOO_DEEP % MAX_DEPTH)
            st.expect = True
            i += 1
            continue
        if st.expect and c in "&!*":
            start = i
            while i < n and text[i] not in " \t,[]{}":
                i += 1
            if c in "&*" and ":" in text[start:i]:
                # ruamel.yaml reads '*a:' as an alias named 'a:' (conda fails on the file); libyaml as '*a' ':'
                raise ParseError(lineno, "%r: put a space between an anchor or alias and ':'" % text[start:i])
            if c == "!" and (not _TAG.match(text[start:i]) or (st.flow and i < n and text[i] in ",]}")):
                # libyaml accepts these; ruamel.yaml reads ',' ']' '}' after a tag in [ ]/{ } as part of it
                raise ParseError(lineno, "tag %r: conda's YAML reader (ruamel.yaml) refuses it; write the tag as "
                                 "!name or !!name followed by a space" % text[start:i + 1])
            st.expect = c != "*"
            continue
        if st.flow:
            if c in "]}":
                st.flow -= 1
                st.expect = False
                i += 1
                continue
            if c == "," or (c in ":?" and (nxt == "" or nxt in " \t,[]{}")):
                st.expect = True
                i += 1
                continue
            j = i
            while j < n and text[j] not in ",[]{}" and not _comment_at(text, j):
                if text[j] == ":" and (j + 1 == n or text[j + 1] in " \t,[]{}"):
                    break
                j += 1
            if "\t" in text[i:j].rstrip(" \t"):
                raise ParseError(lineno, "a tab inside a plain value between [ ] or { } (conda's YAML reader, "
                                 "ruamel.yaml, rejects it); quote the value or use spaces")
            st.expect = False
            i = max(j, i + 1)
            continue
        # block context
        if st.expect and c in "|>":
            if "\t" in text[i:].split("#", 1)[0]:
                raise _tab_error(lineno)
            if not re.match(r"^[|>](?:[1-9][+-]?|[+-][1-9]?)?(?: +(?:#.*)?)?$", text[i:]):  # '#' after a space
                raise ParseError(lineno, "invalid block scalar header %r" % text[i:].strip())
            st.block_scalar = True
            st.block_keep = "+" in text[i:].split("#", 1)[0]
            rest = text.find("#", i)
            return rest if rest >= 0 else None
        if st.expect and c in "-?" and (nxt == "" or nxt in " \t"):
            indicators += 1
            if indicators > MAX_DEPTH:  # '- - - ...': one more level each
                raise ParseError(lineno, _TOO_DEEP % MAX_DEPTH)
            i += 1
            continue
        # a plain scalar, or a key followed by ': '
        j = i
        while j < n and not _comment_at(text, j):
            if text[j] == ":" and (j + 1 == n or text[j + 1] in " \t"):
                break
            if text[j] == "\t":
                raise _tab_error(lineno)
            j += 1
        if j < n and text[j] == ":":
            st.expect = True
            i = j + 1
        else:
            st.expect = False
            i = j
    return None


def _read_key(text: str, lineno: int) -> tuple:
    """The decoded top-level key of a column-0 line and the index just after its ':'."""
    first = text[0]
    if first in "'\"":
        value, end = _read_quoted(text, 0)
        if value is _UNKNOWN:
            raise ParseError(lineno, "unterminated or unsupported quoted key")
        j = end
        while j < len(text) and text[j] in " \t":
            if text[j] == "\t":
                raise _tab_error(lineno)
            j += 1
        if text[j:j + 1] != ":" or (j + 1 < len(text) and text[j + 1] not in " \t"):
            raise ParseError(lineno, "expected ':' after the key")
        return value, j + 1
    if first in "[{":
        raise ParseError(lineno, "the top level of a .condarc must be a block mapping (key: value lines), not a flow collection")
    if first == "?" and text[1:2] in ("", " ", "\t"):
        raise ParseError(lineno, "explicit keys ('? key') are not supported at the top level")
    if first in "&*!|>%@`,]}":
        raise ParseError(lineno, "unsupported top-level key %r" % text.strip())
    j = 0
    while j < len(text) and not _comment_at(text, j):
        if text[j] == "\t":
            raise _tab_error(lineno)
        if text[j] == ":" and (j + 1 == len(text) or text[j + 1] in " \t"):
            return text[:j].rstrip(" \t"), j + 1
        j += 1
    raise ParseError(
        lineno, "expected 'key: value' at the top level (the top level of a .condarc must be a mapping), got %r" % text.strip()
    )


def _scan_document(text: str) -> _Document:
    lines = _split_lines(text)
    entries = []
    seen = {}
    current = None
    st = _State()
    block_indent = None  # lines indented deeper than this belong to an opaque block scalar
    content_indent = None  # the indentation of that block scalar's first content line
    doc_started = False
    doc_end = None
    block_scalar_lines = {}  # index -> whether that scalar keeps trailing blank lines ('|+', '>+')
    block_keep = False
    for index, (raw, _eol) in enumerate(lines):
        lineno = index + 1
        stripped = raw.lstrip(" \t")
        blank = stripped == ""
        indent = len(raw) - len(raw.lstrip(" "))
        if blank and "\t" in raw and not (st.quote or st.flow) and (block_indent is None or indent <= block_indent):
            raise _tab_error(lineno)
        if block_indent is not None:
            if content_indent is None and not blank and indent > block_indent:
                content_indent = indent
            if "\t" in raw[: max(content_indent or 0, block_indent + 1)]:
                raise _tab_error(lineno)  # a tab where a block scalar's indentation goes
            if blank or indent > block_indent:
                block_scalar_lines[index] = block_keep
                if not blank:
                    current.end = index + 1
                continue
            block_indent = None
        if st.quote or st.flow:
            # continuation of a multi-line quoted scalar or flow collection: any indentation
            if current is None:  # pragma: no cover - quotes only open inside entries
                raise ParseError(lineno, "unexpected continuation line")
            _scan(raw, 0, st, lineno)
            current.end = index + 1
            continue
        if blank:
            continue
        if "\t" in raw[: len(raw) - len(stripped)]:
            raise ParseError(lineno, "tab character in indentation (YAML allows only spaces)")
        if stripped.startswith("#"):
            continue
        if doc_end is not None:
            raise ParseError(lineno, "content after the document end marker '...' on line %d" % (doc_end + 1))
        st = _State()
        if indent == 0:
            if raw.startswith(("---", "...")) and "\t" in raw.split(" #", 1)[0]:
                raise _tab_error(lineno)
            if raw == "---" or raw.startswith("--- "):
                if entries or doc_started:
                    raise ParseError(lineno, "a second YAML document ('---'); a .condarc holds one mapping")
                rest = raw[3:].strip()
                if rest and not rest.startswith("#"):
                    raise ParseError(lineno, "content on the '---' line is not supported")
                doc_started = True
                continue
            if raw == "..." or raw.startswith("... "):
                doc_end = index
                continue
            if raw.startswith("%"):
                if entries or doc_started:
                    raise ParseError(lineno, "a YAML directive must come before the document")
                continue
            if raw.startswith("-") and raw[1:2] in ("", " ", "\t"):
                if current is None or (current.inline and current.inline[0] not in "&!"):
                    raise ParseError(lineno, "the top level of a .condarc must be a mapping, not a list")
                comment = _scan(raw, 0, st, lineno)
                current.end = index + 1
            else:
                key, after = _read_key(raw, lineno)
                if key in seen:
                    raise ParseError(lineno, "duplicate top-level key %r (first on line %d)" % (key, seen[key] + 1))
                seen[key] = index
                current = _Entry(key, index)
                entries.append(current)
                comment = _scan(raw, after, st, lineno)
                current.inline = (raw[after:comment] if comment is not None else raw[after:]).strip(" \t")
                current.comment = raw[comment:] if comment is not None else None
        else:
            if current is None:
                raise ParseError(lineno, "indented content before the first top-level key")
            _scan(raw, indent, st, lineno)
            current.end = index + 1
        if st.block_scalar:
            block_indent = indent
            content_indent = None
            block_keep = st.block_keep
            block_scalar_lines[index] = block_keep
            st.block_scalar = False
    if st.quote:
        raise ParseError(st.quote_line, "unterminated %s-quoted string" % ("single" if st.quote == "'" else "double"))
    if st.flow:
        raise ParseError(st.flow_line, "unclosed '[' or '{'")
    return _Document(lines, entries, doc_end if doc_end is not None else len(lines), block_scalar_lines)


# --------------------------------------------------------------------------------------------
# Reading the owned values (just enough to see whether they already say what is wanted)

_UNKNOWN = object()
_ESCAPES = {"\\": "\\", '"': '"', "/": "/", "n": "\n", "t": "\t", "0": "\x00", "r": "\r", " ": " ", "e": "\x1b"}


def _read_quoted(text: str, i: int) -> tuple:
    """Decode the quoted scalar starting at ``text[i]``; ``(_UNKNOWN, i)`` if unsupported."""
    quote = text[i]
    j = i + 1
    out = []
    n = len(text)
    while j < n:
        c = text[j]
        if quote == "'":
            if c == "'":
                if text[j + 1:j + 2] == "'":
                    out.append("'")
                    j += 2
                    continue
                return "".join(out), j + 1
            out.append(c)
            j += 1
            continue
        if c == '"':
            return "".join(out), j + 1
        if c == "\\":
            esc = text[j + 1:j + 2]
            if esc in _ESCAPES:
                out.append(_ESCAPES[esc])
                j += 2
                continue
            size = {"x": 2, "u": 4, "U": 8}.get(esc)
            digits = text[j + 2:j + 2 + size] if size else ""
            if not size or not re.match(r"^[0-9A-Fa-f]+$", digits) or len(digits) != size:
                return _UNKNOWN, i
            out.append(chr(int(digits, 16)))
            j += 2 + size
            continue
        out.append(c)
        j += 1
    return _UNKNOWN, i


_NULLS = ("", "~", "null", "Null", "NULL")
_BOOLS = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
# Plain scalars that YAML 1.1 (PyYAML) or 1.2 (ruamel.yaml, conda) would not read as that string.
_AMBIGUOUS = re.compile(
    r"^(?:[-+]?[0-9.].*|\.(?:inf|Inf|INF|nan|NaN|NAN)|y|Y|yes|Yes|YES|n|N|no|No|NO|on|On|ON|off|Off|OFF|=|<<)$"
)


def _plain_value(text: str) -> t.Any:
    if text in _NULLS:
        return None
    if text in _BOOLS:
        return _BOOLS[text]
    if _AMBIGUOUS.match(text) or text[:1] in "&*!|>%@`'\"[]{},#?-:":
        return _UNKNOWN
    return text


def _read_scalar(text: str, stop: str) -> tuple:
    """Decode one scalar at the start of ``text``; return ``(value, rest)``. ``stop``: plain terminators."""
    if text[:1] in "'\"":
        value, end = _read_quoted(text, 0)
        return value, (text[end:] if value is not _UNKNOWN else "")
    j = 0
    while j < len(text):
        if text[j] == ":" and (j + 1 == len(text) or text[j + 1] in " \t" or (stop and text[j + 1] in stop)):
            break
        if stop and text[j] in stop:
            break
        if _comment_at(text, j):
            break
        j += 1
    return _plain_value(text[:j].strip(" \t")), text[j:]


def _strip_comment(text: str) -> str | None:
    """``text`` without a trailing comment; ``None`` when nothing but a comment is left."""
    rest = text.strip(" \t")
    if rest.startswith("#"):
        return None
    return rest


def _read_block_map(lines: list) -> t.Any:
    result = OrderedDict()
    indent = None
    for raw in lines:
        if raw.strip(" \t") == "" or raw.lstrip(" ").startswith("#"):
            continue
        this = len(raw) - len(raw.lstrip(" "))
        if indent is None:
            indent = this
        if this != indent or this == 0:
            return _UNKNOWN
        key, rest = _read_scalar(raw[this:], "")
        if not isinstance(key, str) or not rest.startswith(":"):
            return _UNKNOWN
        rest = rest[1:]
        if rest and rest[0] not in " \t":
            return _UNKNOWN
        body = rest.strip(" \t")
        if body == "" or body.startswith("#"):
            return _UNKNOWN  # a null or nested value: not one this module writes
        value, tail = _read_scalar(body, "")
        if value is _UNKNOWN or (tail.strip(" \t") and not tail.strip(" \t").startswith("#")):
            return _UNKNOWN
        if key in result:
            return _UNKNOWN
        result[key] = value
    return result


def _read_flow_map(text: str) -> t.Any:
    text = text.strip(" \t")
    if not (text.startswith("{") and text.endswith("}")):
        return _UNKNOWN
    body = text[1:-1].strip(" \t")
    result = OrderedDict()
    while body:
        key, rest = _read_scalar(body, ",{}[]")
        rest = rest.lstrip(" \t")
        if not isinstance(key, str) or not rest.startswith(":"):
            return _UNKNOWN
        rest = rest[1:].lstrip(" \t")
        if rest.startswith(",") or rest == "":
            value = None
        else:
            value, rest = _read_scalar(rest, ",{}[]")
            rest = rest.lstrip(" \t")
        if value is _UNKNOWN or key in result:
            return _UNKNOWN
        result[key] = value
        if rest.startswith(","):
            rest = rest[1:].lstrip(" \t")
        elif rest:
            return _UNKNOWN
        body = rest
    return result


def _owned_value(doc: _Document, entry: _Entry) -> t.Any:
    """The value of an owned key when it is simple enough to compare, else ``_UNKNOWN``."""
    following = [raw for raw, _eol in doc.lines[entry.start + 1:entry.end]]
    if entry.key == "proxy_servers":
        if entry.inline == "":
            return _read_block_map(following) if following else _UNKNOWN
        if entry.inline.startswith("{") and not following:
            return _read_flow_map(entry.inline)
        return _UNKNOWN
    if following or entry.inline == "":
        return _UNKNOWN
    value, rest = _read_scalar(entry.inline, "")
    return _UNKNOWN if rest.strip(" \t") else value


def _final_effective(doc: _Document, entry: _Entry) -> bool:
    """Whether conda sees ``#!final`` on ``entry``.

    conda reads the key's comment from ruamel.yaml, which glues the comment lines that
    follow a scalar or flow value (even after blank lines) onto its end-of-line comment,
    and then no longer recognises the marker.
    """
    if entry.comment is None or entry.comment.strip() != FINAL_MARKER:
        return False
    if entry.key == "proxy_servers" and entry.inline == "":
        return True
    return not _comment_follows(doc, entry.end)


def _comment_follows(doc: _Document, index: int) -> bool:
    for raw, _eol in doc.lines[index:doc.insert_at]:
        stripped = raw.strip(" \t")
        if stripped == "":
            continue
        return stripped.startswith("#")
    return False


def _has_marker(entry: _Entry) -> bool:
    return entry.comment is not None and FINAL_MARKER in entry.comment


# --------------------------------------------------------------------------------------------
# Writing

_PLAIN_SAFE = re.compile(r"^[A-Za-z0-9/][A-Za-z0-9_./@%+~=-]*(?::[A-Za-z0-9_./@%+~=-]+)*$")


def render_scalar(value: t.Any) -> str:
    """A YAML scalar that PyYAML and ruamel.yaml both read back as ``value``.

    Plain when nothing in it could be read otherwise, else single-quoted (``'`` doubled).
    ``${VAR}`` stays as written: conda expands it when it reads the file.
    """
    if value is True:
        return "true"
    if value is False:
        return "false"
    text = str(value)
    if _PLAIN_SAFE.match(text) and _plain_value(text) == text and not text.endswith(":"):
        return text
    return "'%s'" % text.replace("'", "''")


def _render_key(key: str) -> str:
    # 'http://host' keys are quoted for the reader's sake; plain would parse the same
    return render_scalar(key) if ":" not in key else "'%s'" % key.replace("'", "''")


def _render_proxy_servers(servers: dict, final: bool, indent: str) -> list:
    lines = ["proxy_servers:" + ("  " + FINAL_MARKER if final else "")]
    for key, value in servers.items():
        lines.append("%s%s: %s" % (indent, _render_key(key), render_scalar(value)))
    return lines


def _render_ssl_verify(value: t.Any, final: bool) -> list:
    return ["ssl_verify: %s%s" % (render_scalar(value), "  " + FINAL_MARKER if final else "")]


def _block_indent(doc: _Document, entry: _Entry | None) -> str:
    if entry is not None and entry.inline == "":
        for raw, _eol in doc.lines[entry.start + 1:entry.end]:
            stripped = raw.lstrip(" ")
            if stripped and not stripped.startswith("#") and len(raw) > len(stripped):
                return raw[: len(raw) - len(stripped)]
    return INDENT


def _detect_eol(lines: list) -> str:
    for _text, eol in lines:
        if eol:
            return eol
    return "\n"


def _replace(lines: list, start: int, end: int, new: list, eol: str) -> None:
    last_eol = lines[end - 1][1]
    block = [(text, eol) for text in new]
    block[-1] = (block[-1][0], last_eol)
    lines[start:end] = block


def _owned_end(doc: _Document, entry: _Entry) -> int:
    """The end of an owned key's lines, including comments indented under it.

    Those comments belong to the key; left behind after a block scalar, they would
    become part of that scalar's text.
    """
    end = entry.end
    for index in range(entry.end, doc.insert_at):
        raw = doc.lines[index][0]
        stripped = raw.lstrip(" ")
        if stripped == "":
            continue
        if stripped.startswith("#") and len(stripped) < len(raw):
            end = index + 1
            continue
        break
    return end


def _remove(doc: _Document, lines: list, start: int, end: int) -> None:
    """Delete ``lines[start:end]`` (original line numbers: edits are applied bottom-up)."""
    previous = start - 1
    after_blank = end < len(lines) and lines[end][0].strip(" \t") == ""
    if doc.block_scalar_lines.get(previous) and after_blank:
        raise ParseError(
            start + 1,
            "cannot remove %s without changing the '|+' block scalar above it (its trailing blank lines would "
            "grow); remove the blank line after the key by hand" % lines[start][0].split(":", 1)[0],
        )
    ends_file_without_eol = end == len(lines) and lines[end - 1][1] == ""
    del lines[start:end]
    if ends_file_without_eol and start == len(lines) and start > 0 and previous not in doc.block_scalar_lines:
        # the key was appended to a file without a final newline: give the line its old ending back
        lines[start - 1] = (lines[start - 1][0], "")


def _insert(lines: list, at: int, new: list, eol: str) -> None:
    block = [(text, eol) for text in new]
    if at == len(lines) and lines and lines[-1][1] == "":
        # keep the file's "no newline at end" style so that removal restores it exactly
        lines[-1] = (lines[-1][0], eol)
        block[-1] = (block[-1][0], "")
    lines[at:at] = block


def _decode(before: bytes) -> tuple:
    bom = before.startswith(BOM)
    data = before[len(BOM):] if bom else before
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ParseError(data[: exc.start].count(b"\n") + 1, "the file is not valid UTF-8")
    if "\ufeff" in text:
        raise ParseError(text[: text.index("\ufeff")].count("\n") + 1, "a byte order mark inside the file")
    return bom, text


def read_proxy_settings(data: bytes) -> dict:
    """What conda reads from one file: ``proxy_servers`` (``None`` when absent), ``ssl_verify``, and
    whether each carries an effective ``#!final``. Raises :class:`ParseError` like conda's warning-and-skip."""
    doc = parse_condarc(data)
    settings = {"proxy_servers": None, "ssl_verify": None, "proxy_servers_final": False, "ssl_verify_final": False}
    for key in ("proxy_servers", "ssl_verify"):
        entry = doc.entry(key)
        if entry is None:
            continue
        value = _owned_value(doc, entry)
        if value is _UNKNOWN:
            value = _pyyaml_value(doc, key)
        if key == "ssl_verify" and isinstance(value, str) and value.lower() in ("true", "false"):
            value = value.lower() == "true"
        settings[key] = value
        settings[key + "_final"] = _final_effective(doc, entry)
    return settings


def _pyyaml_value(doc: _Document, key: str) -> t.Any:
    """An owned value too complex for the scanner (anchors, multi-line flow): PyYAML's reading, else None."""
    if not HAS_PYYAML:
        return None
    loaded = _yaml.safe_load("".join(text + eol for text, eol in doc.lines)) or {}
    return loaded.get(key) if isinstance(loaded, dict) else None


def parse_condarc(before: bytes | None) -> _Document:
    """Scan (and, with PyYAML, validate) an existing file; raises :class:`ParseError`."""
    text = _decode(before or b"")[1]
    doc = _scan_document(text)
    if HAS_PYYAML:
        _validate_with_pyyaml(text)
    return doc


def _apply_edits(doc, lines: list, eol: str, edits: list, appended: list) -> str:
    """Apply ``edits`` (``(start, end, new lines)``, ``None`` to remove) and ``appended`` (new lines at the
    document's append point) to ``lines``; the new text."""
    operations = [(start, 1, end, new) for start, end, new in edits]
    if appended:
        operations.append((doc.append_point({edit[0] for edit in edits}), 0, None, appended))
    # bottom-up, so that earlier line numbers stay valid; at one line, replace before inserting above it
    for start, kind, end, new in sorted(operations, key=lambda op: (op[0], op[1]), reverse=True):
        if kind == 0:
            _insert(lines, start, new, eol)
        elif new is None:
            _remove(doc, lines, start, end)
        else:
            _replace(lines, start, end, new, eol)
    return "".join(text_ + eol_ for text_, eol_ in lines)


def render_condarc(before: bytes | None, spec: CondarcSpec) -> bytes | None:
    """The new bytes of the file for ``spec`` (``None``: no file).

    Raises :class:`ParseError` (with the line) for an existing file that cannot be edited safely.
    """
    bom, text = _decode(before or b"")
    doc = _scan_document(text)
    before_node = _validate_with_pyyaml(text) if HAS_PYYAML else None
    lines = list(doc.lines)
    eol = _detect_eol(lines)
    edits = []  # (start, end, new lines or None to remove)
    appended = []

    servers_entry = doc.entry("proxy_servers")
    ssl_entry = doc.entry("ssl_verify")

    if spec.state == "absent":
        for entry, managed in ((servers_entry, True), (ssl_entry, spec.manages_ssl_verify)):
            if entry is not None and managed:
                edits.append((entry.start, _owned_end(doc, entry), None))
    else:
        if spec.proxy_servers is not None:
            wanted = spec.proxy_servers
            new = _render_proxy_servers(wanted, spec.final, _block_indent(doc, servers_entry))
            if servers_entry is None:
                appended.extend(new)
            elif not _same_owned(doc, servers_entry, wanted, spec.final):
                edits.append((servers_entry.start, _owned_end(doc, servers_entry), new))
        if spec.manages_ssl_verify:
            new = _render_ssl_verify(spec.ssl_verify, spec.final)
            if ssl_entry is None:
                appended.extend(new)
            elif not _same_owned(doc, ssl_entry, spec.ssl_verify, spec.final):
                end = _owned_end(doc, ssl_entry)
                if spec.final and _comment_follows(doc, end):
                    # in place, the comments below would hide the marker from conda: move it to the end
                    edits.append((ssl_entry.start, end, None))
                    appended.extend(new)
                else:
                    edits.append((ssl_entry.start, end, new))

    if not edits and not appended:
        return before
    out_text = _apply_edits(doc, lines, eol, edits, appended)
    if out_text == "" and not bom:
        return None
    after = (BOM if bom else b"") + out_text.encode("utf-8")
    if HAS_PYYAML:
        _check_edit_with_pyyaml(before_node, out_text, spec)
    return after


def _same_owned(doc: _Document, entry: _Entry, wanted: t.Any, final: bool) -> bool:
    value = _owned_value(doc, entry)
    if value is _UNKNOWN:
        return False
    if isinstance(wanted, dict):
        if not isinstance(value, dict) or dict(value) != dict(wanted):
            return False
    elif type(value) is not type(wanted) or value != wanted:
        return False
    if final:
        return _final_effective(doc, entry)
    return not _has_marker(entry)


# --------------------------------------------------------------------------------------------
# PyYAML, when present: validate the whole file and check the edit


def _mark_line(exc: Exception) -> int:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    return mark.line + 1 if mark is not None else 1


def _compose(text: str, what: str) -> t.Any:
    try:
        node = _yaml.compose(text, Loader=_COMPOSE_LOADER)
    except _yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ParseError(_mark_line(exc), "invalid YAML (%s): %s" % (what, problem))
    except RecursionError:  # the pure-Python composer (PyYAML without libyaml) recurses per level
        raise ParseError(1, _TOO_DEEP % MAX_DEPTH)
    if node is not None and not isinstance(node, _yaml.MappingNode):
        raise ParseError(node.start_mark.line + 1, "the top level of a .condarc must be a mapping")
    _reject_deep_nesting(node)
    if "*" in text:  # no alias without a '*'
        _reject_alias_bomb(node)
    _reject_duplicates(node, set())
    if "!" in text:  # an explicit tag needs a '!'; a resolved one always constructs
        _reject_bad_tagged_scalars(node)
    return node


# Values nested deeper than this are refused before anything walks them recursively (PyYAML's constructor,
# the checks below): around 1000 levels every reader, conda's ruamel.yaml too, fails with a RecursionError.
MAX_DEPTH = 100
_TOO_DEEP = "values nested more than %d levels deep (conda's YAML reader fails on a file nested about 1000 deep)"


def _reject_deep_nesting(root: t.Any) -> None:
    """Iteratively: each distinct node once (an alias is not followed again), its depth along the first path."""
    if root is None:
        return
    seen = set()
    stack = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if id(node) in seen or isinstance(node, _yaml.ScalarNode):
            continue
        seen.add(id(node))
        if depth > MAX_DEPTH:
            raise ParseError(node.start_mark.line + 1, _TOO_DEEP % MAX_DEPTH)
        children = [item for pair in node.value for item in pair] if isinstance(node, _yaml.MappingNode) else node.value
        stack.extend((child, depth + 1) for child in children)


# A .condarc's aliases may repeat what an anchor names, but not without bound: nested aliases (an "alias bomb",
# a few hundred bytes that stand for billions of nodes) make every reader that walks the values (conda itself
# hangs on one) take forever. Anything that walks the node tree here either memoises by node or runs after this.
MAX_EXPANDED_NODES = 100000


def _reject_alias_bomb(root: t.Any) -> None:
    """Refuse a document whose aliases expand to more than :data:`MAX_EXPANDED_NODES` nodes.

    Iterative and memoised by node id: each distinct node is visited once, however often it is aliased.
    """
    if root is None:
        return
    size = {}  # id(node) -> its expanded size, once known
    stack = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if key in size and not children_done:
            continue
        if isinstance(node, _yaml.ScalarNode):
            size[key] = 1
            continue
        children = [item for pair in node.value for item in pair] if isinstance(node, _yaml.MappingNode) else node.value
        if not children_done:
            size.setdefault(key, None)  # in progress: a recursive alias (PyYAML refuses those) cannot loop here
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in size)
            continue
        total = 1 + sum(size.get(id(child)) or 1 for child in children)
        if total > MAX_EXPANDED_NODES:
            raise ParseError(
                node.start_mark.line + 1,
                "YAML aliases here expand to more than %d values (nested aliases, an alias bomb): conda would "
                "hang reading this file; replace the aliases with the values they stand for" % MAX_EXPANDED_NODES,
            )
        size[key] = total


_STRICT_TAGS = {
    "tag:yaml.org,2002:int": "construct_yaml_int",
    "tag:yaml.org,2002:float": "construct_yaml_float",
    "tag:yaml.org,2002:bool": "construct_yaml_bool",
    "tag:yaml.org,2002:timestamp": "construct_yaml_timestamp",
}


def _reject_bad_tagged_scalars(root: t.Any) -> None:
    """Refuse ``!!int abc`` and the like: libyaml composes them, conda's ruamel.yaml crashes on them."""
    if root is None:
        return
    loader = None
    seen = set()
    stack = [root]
    try:
        while stack:
            node = stack.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            if isinstance(node, _yaml.ScalarNode):
                method = _STRICT_TAGS.get(node.tag)
                if method is None:
                    continue
                if loader is None:
                    loader = _yaml.SafeLoader("")
                try:
                    getattr(loader, method)(node)
                except Exception:  # noqa: BLE001 -- any failure: conda's reader fails too
                    raise ParseError(
                        node.start_mark.line + 1,
                        "%r is not a valid %s (conda's YAML reader fails on this file)"
                        % (node.value[:40], node.tag.rsplit(":", 1)[-1]),
                    )
            elif isinstance(node, _yaml.MappingNode):
                stack.extend(item for pair in node.value for item in pair)
            else:
                stack.extend(node.value)
    finally:
        if loader is not None:
            loader.dispose()


def _reject_duplicates(node: t.Any, seen: set) -> None:
    if node is None or id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, _yaml.MappingNode):
        keys = {}
        for key, value in node.value:
            ident = _node_key(key)
            if ident in keys:  # '<<' included: conda's ruamel.yaml refuses a repeated merge key too
                raise ParseError(
                    key.start_mark.line + 1,
                    "duplicate key %r (first on line %d)" % (getattr(key, "value", ""), keys[ident]),
                )
            keys[ident] = key.start_mark.line + 1
            if key.tag == "tag:yaml.org,2002:merge" and not (
                isinstance(value, _yaml.MappingNode)
                or (isinstance(value, _yaml.SequenceNode) and all(isinstance(v, _yaml.MappingNode) for v in value.value))
            ):
                # libyaml composes it; PyYAML's and ruamel.yaml's constructors (conda) fail on the file
                raise ParseError(key.start_mark.line + 1, "a '<<' merge key needs a mapping or a list of mappings")
            _reject_duplicates(value, seen)
    elif isinstance(node, _yaml.SequenceNode):
        for item in node.value:
            _reject_duplicates(item, seen)


def _node_key(node: t.Any) -> t.Any:
    if isinstance(node, _yaml.ScalarNode):
        return (node.tag, node.value)
    return (node.tag, id(node))


def _node_shape(node: t.Any, depth: int = 0, memo: dict | None = None) -> t.Any:
    """A comparable structure for a node (tags and values, not style); memoised so an alias costs nothing."""
    if depth > 50:
        return "deep"
    if isinstance(node, _yaml.ScalarNode):
        return ("s", node.tag, node.value)
    memo = {} if memo is None else memo
    key = (id(node), depth)
    if key in memo:
        return memo[key]
    if isinstance(node, _yaml.SequenceNode):
        shape = ("q", node.tag, tuple(_node_shape(item, depth + 1, memo) for item in node.value))
    else:
        shape = ("m", node.tag, tuple((_node_shape(k, depth + 1, memo), _node_shape(v, depth + 1, memo)) for k, v in node.value))
    memo[key] = shape
    return shape


def _construct(node: t.Any) -> t.Any:
    loader = _yaml.SafeLoader("")
    try:
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _validate_with_pyyaml(text: str) -> t.Any:
    """The composed node of ``text``; raises :class:`ParseError` for invalid YAML or duplicate keys."""
    return _compose(text, "PyYAML")


def _check_edit_with_pyyaml(old: t.Any, after: str, spec: CondarcSpec) -> None:
    """Refuse an edit that would change anything but the owned keys (a scanner bug, never a user error).

    ``old`` is the node :func:`_validate_with_pyyaml` composed from the file before the edit: composing a
    large file is most of an edit's cost, so it is done once per side.
    """

    managed = set()
    if spec.proxy_servers is not None or spec.state == "absent":
        managed.add("proxy_servers")
    if spec.manages_ssl_verify:
        managed.add("ssl_verify")

    def others(node):
        pairs = node.value if node is not None else []
        memo = {}
        return [(_node_shape(k, 0, memo), _node_shape(v, 0, memo)) for k, v in pairs if getattr(k, "value", None) not in managed]

    new = _compose(after, "after the edit")
    loaded = {}
    for key, value in (new.value if new is not None else []):
        if getattr(key, "value", None) in managed:
            loaded[key.value] = _construct(value)
    problems = []
    if others(old) != others(new):
        problems.append("other keys would change")
    if spec.state == "present":
        if spec.proxy_servers is not None and dict(loaded.get("proxy_servers") or {}) != dict(spec.proxy_servers):
            problems.append("proxy_servers would not read back as requested")
        if spec.manages_ssl_verify and loaded.get("ssl_verify") != spec.ssl_verify:
            problems.append("ssl_verify would not read back as requested")
    else:
        if "proxy_servers" in loaded or (spec.manages_ssl_verify and "ssl_verify" in loaded):
            problems.append("the owned keys would remain")
    if problems:
        raise ParseError(1, "refusing an edit that cannot be made safely (%s); the file is left as it was" % "; ".join(problems))


# --------------------------------------------------------------------------------------------
# Any top-level key: the same byte-preserving edit for a scalar, list or mapping value (condarc_policy)
#
# The proxy functions above stay as they are (their output is pinned byte for byte by their tests); these
# generalise them to a set of owned keys whose values are scalars, lists of scalars or maps of scalars.


def _read_block_seq(lines: list) -> t.Any:
    """``- item`` lines of scalars, one indentation; ``_UNKNOWN`` for anything else."""
    result = []
    indent = None
    for raw in lines:
        if raw.strip(" \t") == "" or raw.lstrip(" ").startswith("#"):
            continue
        this = len(raw) - len(raw.lstrip(" "))
        if indent is None:
            indent = this
        body = raw[this:]
        if this != indent or not (body.startswith("- ") or body == "-"):
            return _UNKNOWN
        text = body[1:].strip(" \t")
        if text == "" or text.startswith("#"):
            return _UNKNOWN  # a null or nested item: not one this module writes
        value, tail = _read_scalar(text, "")
        if value is _UNKNOWN or value is None or (tail.strip(" \t") and not tail.strip(" \t").startswith("#")):
            return _UNKNOWN
        result.append(value)
    return result


def _read_flow_seq(text: str) -> t.Any:
    text = text.strip(" \t")
    if not (text.startswith("[") and text.endswith("]")):
        return _UNKNOWN
    body = text[1:-1].strip(" \t")
    result = []
    while body:
        value, rest = _read_scalar(body, ",{}[]")
        rest = rest.lstrip(" \t")
        if value is _UNKNOWN or value is None:
            return _UNKNOWN
        result.append(value)
        if rest.startswith(","):
            rest = rest[1:].lstrip(" \t")
        elif rest:
            return _UNKNOWN
        body = rest
    return result


def _key_value(doc: _Document, entry: _Entry) -> t.Any:
    """The value of any key when the scanner can read it simply (scalar, list or map of scalars), else
    PyYAML's reading when it is importable, else ``_UNKNOWN`` (the key is then rewritten)."""
    following = [raw for raw, _eol in doc.lines[entry.start + 1:entry.end]]
    value = _UNKNOWN
    if entry.inline == "":
        if following:
            first = next((raw.lstrip(" ") for raw in following
                          if raw.strip(" \t") and not raw.lstrip(" ").startswith("#")), "")
            value = _read_block_seq(following) if first.startswith("-") else _read_block_map(following)
    elif not following:
        if entry.inline.startswith("{"):
            value = _read_flow_map(entry.inline)
        elif entry.inline.startswith("["):
            value = _read_flow_seq(entry.inline)
        else:
            value, rest = _read_scalar(entry.inline, "")
            if rest.strip(" \t"):
                value = _UNKNOWN
    if value is _UNKNOWN and HAS_PYYAML:
        return _pyyaml_value(doc, entry.key) if entry.key else _UNKNOWN
    return value


def _key_final_effective(doc: _Document, entry: _Entry) -> bool:
    """Whether conda sees ``#!final`` on ``entry``: on the key line of a block list or map always; after a
    scalar or flow value only when no comment line follows (ruamel.yaml glues those onto the marker)."""
    if entry.comment is None or entry.comment.strip() != FINAL_MARKER:
        return False
    if entry.inline == "":
        return True
    return not _comment_follows(doc, entry.end)


def _same_key_value(value: t.Any, wanted: t.Any) -> bool:
    if value is _UNKNOWN:
        return False
    if isinstance(wanted, dict):
        return isinstance(value, dict) and dict(value) == dict(wanted)
    if isinstance(wanted, list):
        return isinstance(value, list) and [type(v) for v in value] == [type(w) for w in wanted] and value == wanted
    return type(value) is type(wanted) and value == wanted


def render_key(key: str, value: t.Any, final: bool, indent: str = INDENT) -> list:
    """The lines of one top-level key: a block sequence for a list, a block map for a map, else a scalar
    (``[]`` and ``{}`` for empty ones). ``final`` puts ``#!final`` on the key line."""
    marker = "  " + FINAL_MARKER if final else ""
    head = _render_key(key) + ":"
    if isinstance(value, dict) and value:
        return [head + marker] + ["%s%s: %s" % (indent, _render_key(k), render_scalar(v)) for k, v in value.items()]
    if isinstance(value, (list, tuple)) and value:
        return [head + marker] + ["%s- %s" % (indent, render_scalar(item)) for item in value]
    if isinstance(value, dict):
        return [head + " {}" + marker]
    if isinstance(value, (list, tuple)):
        return [head + " []" + marker]
    return [head + " " + render_scalar(value) + marker]


def read_keys(data: bytes | None, keys: t.Iterable[str]) -> dict:
    """``{key: (value, final)}`` for each of ``keys`` the file has (``value`` ``None`` when unreadable).
    Raises :class:`ParseError` like conda's warning-and-skip."""
    doc = parse_condarc(data)
    found = {}
    for key in keys:
        entry = doc.entry(key)
        if entry is None:
            continue
        value = _key_value(doc, entry)
        found[key] = (None if value is _UNKNOWN else value, _key_final_effective(doc, entry))
    return found


def render_keys(before: bytes | None, wanted: t.Mapping[str, t.Any], remove: t.Iterable[str] = (),
                final: t.Iterable[str] = ()) -> bytes | None:
    """The new bytes of the file: each key of ``wanted`` set to its value (in place when it exists, else
    appended in ``wanted``'s order), each key of ``remove`` removed, ``#!final`` on the keys in ``final`` and
    on no other key of ``wanted``. Every other byte stays. ``None``: no file.

    Raises :class:`ParseError` (with the line) for an existing file that cannot be edited safely.
    """
    final = set(final)
    remove = [key for key in remove if key not in wanted]
    bom, text = _decode(before or b"")
    doc = _scan_document(text)
    before_node = _validate_with_pyyaml(text) if HAS_PYYAML else None
    lines = list(doc.lines)
    eol = _detect_eol(lines)
    edits = []  # (start, end, new lines or None to remove)
    appended = []
    for key in remove:
        entry = doc.entry(key)
        if entry is not None:
            _refuse_anchor_in_use(doc, entry)
            edits.append((entry.start, _owned_end(doc, entry), None))
    for key, value in wanted.items():
        entry = doc.entry(key)
        is_final = key in final
        new = render_key(key, value, is_final, _block_indent(doc, entry))
        if entry is None:
            appended.extend(new)
            continue
        same = _same_key_value(_key_value(doc, entry), value)
        if same and (_key_final_effective(doc, entry) if is_final else not _has_marker(entry)):
            continue
        _refuse_anchor_in_use(doc, entry)
        end = _owned_end(doc, entry)
        if is_final and len(new) == 1 and _comment_follows(doc, end):
            # in place, the comments below would hide the marker from conda: move the key to the end
            edits.append((entry.start, end, None))
            appended.extend(new)
        else:
            edits.append((entry.start, end, new))

    if not edits and not appended:
        return before
    out_text = _apply_edits(doc, lines, eol, edits, appended)
    if out_text == "" and not bom:
        return None
    if HAS_PYYAML:
        _check_keys_with_pyyaml(before_node, out_text, wanted, remove)
    return (BOM if bom else b"") + out_text.encode("utf-8")


_ANCHOR = re.compile(r"(?:^|[\s\[{,])&[^\s,\[\]{}]")
_ALIAS = re.compile(r"(?:^|[\s\[{,:])\*[^\s,\[\]{}]")


def _refuse_anchor_in_use(doc: _Document, entry: _Entry) -> None:
    """Refuse to replace or remove a key whose value defines a YAML anchor while the file has aliases: another
    key may be ``*name`` of it and would break (PyYAML's check would catch it; the stdlib path must too).
    Conservative: quoted text that looks like an anchor or alias counts."""
    own = range(entry.start, entry.end)
    if not any(_ANCHOR.search(doc.lines[index][0].split(" #", 1)[0]) for index in own):
        return
    for index, (raw, _eol) in enumerate(doc.lines):
        if index not in own and not raw.lstrip(" ").startswith("#") and _ALIAS.search(raw.split(" #", 1)[0]):
            raise ParseError(entry.start + 1, "%s defines a YAML anchor (&name) and line %d uses an alias (*name): "
                             "replacing or removing %s would break that line; write the value out there instead of "
                             "the alias" % (entry.key, index + 1, entry.key))


def _check_keys_with_pyyaml(old: t.Any, after: str, wanted: t.Mapping[str, t.Any], remove: list) -> None:
    """Refuse an edit that would change anything but the owned keys, or not read back as asked."""
    managed = set(wanted) | set(remove)

    def others(node):
        pairs = node.value if node is not None else []
        memo = {}
        return [(_node_shape(k, 0, memo), _node_shape(v, 0, memo)) for k, v in pairs
                if getattr(k, "value", None) not in managed]

    new = _compose(after, "after the edit")
    loaded = {}
    for key, value in (new.value if new is not None else []):
        if getattr(key, "value", None) in managed:
            loaded[key.value] = _construct(value)
    problems = []
    if others(old) != others(new):
        problems.append("other keys would change")
    for key, value in wanted.items():
        got = loaded.get(key, _UNKNOWN)
        if not _same_key_value(dict(got) if isinstance(got, dict) else got, value):
            problems.append("%s would not read back as requested" % key)
    if any(key in loaded for key in remove):
        problems.append("a removed key would remain")
    if problems:
        raise ParseError(1, "refusing an edit that cannot be made safely (%s); the file is left as it was"
                         % "; ".join(problems))
