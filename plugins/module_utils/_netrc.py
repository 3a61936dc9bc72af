# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""``.netrc`` files: a byte-preserving parser and editor for one entry.

Pure functions only: the module runs them on the managed node and the Windows
action plugin on the controller.

The parser reads the grammar of Python's ``netrc`` (3.11+) and curl's ``lib/netrc.c``:

* tokens are separated by space, tab, CR, LF; a token starting with ``"`` runs to the
  next unescaped ``"`` and ``\\x`` stands for ``x`` inside it (Python also honours ``\\``
  in unquoted tokens);
* ``machine NAME`` and ``default`` start an entry followed by ``login`` (``user`` is
  Python's synonym), ``password`` and ``account`` pairs, on one or several lines;
* ``macdef NAME`` starts a macro whose body runs to the first empty line;
* a ``#`` where a keyword is expected starts a comment to the end of the line (this
  editor never writes comments);
* curl stops at the first entry that matches, Python keeps the last one, so one
  entry per machine is kept; ``default`` must come last for curl.

Not every reader unquotes. Measured (``tests/integration/test_netrc_consumers.py``):
Python 3.11+ and curl 7.84+ unquote; Python 3.8-3.10 (``shlex`` with every ASCII
punctuation character as a word character), curl before 7.84 and rattler (pixi,
py-rattler: the Rust ``netrc-rs`` crate) read the quotes as part of the value, and
Python 3.8-3.10 and rattler reject the whole file when a quoted value holds a space.
So a value is written **bare** whenever every reader reads it bare (:func:`is_bare`),
and quoted only when no bare form exists:

* empty, or holding a space or tab: no bare form at all;
* a backslash: Python 3.11+ drops it from a bare token (an escape there);
* a leading ``"``: Python 3.11+ and curl start a quoted token;
* a leading ``#``: curl 7.84 to 7.88 at least (Debian bookworm) reads a comment there, even
  in a value's place (8.14 does not);
* a non-ASCII character: recent curl (8.14) ends a bare token at the first byte above
  0x7F (a syntax error for the whole file when the token starts with it), and Python
  3.8-3.10 reject such a file whether quoted or not.

:func:`quoting_warning` names the readers that cannot read a quoted value.

Edits replace only the tokens that change; every other byte of the file is kept.
Files are decoded as UTF-8 with ``surrogateescape`` so that any byte survives.
"""

from __future__ import annotations

import re
import typing as t

MASK = "********"

ENTRY_KEYWORDS = ("machine", "default")
TOP_KEYWORDS = ("machine", "default", "macdef")
FIELD_KEYWORDS = {"login": "login", "user": "login", "password": "password", "account": "account"}
FIELDS = ("login", "password", "account")
SECRET_FIELDS = ("password", "account")

_WHITESPACE = " \t\r\n"
# The readers that do not unquote (see the module docstring), as warnings name them.
RATTLER = "rattler (pixi, py-rattler)"
PYTHON_310 = "Python 3.10 and older (their netrc module, so conda, requests and pip running on them)"
OLD_CURL = "curl before 7.84"
_BLANKS = re.compile(r"[ \t\r\n]*")
# A word ending at whitespace or the end of the text, without a backslash (which escapes the next character).
_PLAIN_WORD = re.compile(r"[^ \t\r\n\\]+(?=[ \t\r\n]|\Z)")


class NetrcValueError(ValueError):
    """An option value that cannot be written to a ``.netrc``; the message names the option."""


class ParseError(ValueError):
    """An existing ``.netrc`` that cannot be edited safely; carries the 1-based line number."""

    def __init__(self, message: str, line: int) -> None:
        self.message = message
        self.line = line
        super().__init__("line %d: %s" % (line, message))


# --------------------------------------------------------------------------- parsing


class Token:
    """One word of the file: ``value`` is decoded, ``start``/``end`` index the original text."""

    __slots__ = ("value", "start", "end", "line", "quoted")

    def __init__(self, value: str, start: int, end: int, line: int, quoted: bool) -> None:
        self.value = value
        self.start = start
        self.end = end
        self.line = line
        self.quoted = quoted

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return "Token(%r, %d, %d)" % (self.value, self.start, self.end)


class Span:
    """A comment or a macro definition: kept byte for byte, never edited."""

    __slots__ = ("kind", "start", "end", "terminated")

    def __init__(self, kind: str, start: int, end: int, terminated: bool = True) -> None:
        self.kind = kind
        self.start = start
        self.end = end
        self.terminated = terminated


class Entry:
    """A ``machine NAME`` or ``default`` entry and its keyword/value pairs."""

    def __init__(self, keyword: Token, name: Token | None) -> None:
        self.keyword = keyword
        self.name = name
        self.pairs: list[tuple[Token, Token]] = []

    @property
    def is_default(self) -> bool:
        return self.name is None

    @property
    def start(self) -> int:
        return self.keyword.start

    @property
    def end(self) -> int:
        last = self.pairs[-1][1] if self.pairs else (self.name or self.keyword)
        return last.end

    def last_keyword(self) -> Token:
        return self.pairs[-1][0] if self.pairs else self.keyword

    def field_pairs(self, field: str) -> list[tuple[Token, Token]]:
        return [pair for pair in self.pairs if FIELD_KEYWORDS[pair[0].value] == field]

    def values(self) -> dict:
        """The values the entry ends up with for a reader that keeps the last of each field (Python)."""
        result = {}
        for keyword, value in self.pairs:
            result[FIELD_KEYWORDS[keyword.value]] = value.value
        return result


class Document:
    """A parsed file: the text, its entries, and every item (tokens, comments, macros) in order."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.entries: list[Entry] = []
        self.items: list[t.Any] = []  # Token | Span, in file order

    @property
    def newline(self) -> str:
        return "\r\n" if "\r\n" in self.text else "\n"


class _Lexer:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.pending: Token | None = None
        # Line numbers are counted forward from the last position asked for: positions only grow while
        # lexing, so counting from the start of the text every time would make a parse quadratic.
        self._line_pos = 0
        self._line = 1

    def line_of(self, pos: int) -> int:
        if pos < self._line_pos:
            return self.text.count("\n", 0, pos) + 1
        self._line += self.text.count("\n", self._line_pos, pos)
        self._line_pos = pos
        return self._line

    def next_token(self) -> Token | None:
        if self.pending is not None:
            token, self.pending = self.pending, None
            return token
        text, n = self.text, len(self.text)
        pos = _BLANKS.match(text, self.pos).end()
        if pos >= n:
            self.pos = n
            return None
        start = pos
        if text[pos] != '"':
            # The common case, a plain word without backslashes, in one regex step.
            word = _PLAIN_WORD.match(text, pos)
            if word is not None:
                self.pos = word.end()
                return Token(word.group(), start, self.pos, self.line_of(start), False)
        chars = []
        if text[pos] == '"':
            pos += 1
            while True:
                if pos >= n:
                    raise ParseError("unterminated quoted token", self.line_of(start))
                char = text[pos]
                if char == '"':
                    pos += 1
                    break
                if char == "\\":
                    if pos + 1 >= n:
                        raise ParseError("unterminated quoted token", self.line_of(start))
                    pos += 1
                    char = text[pos]
                chars.append(char)
                pos += 1
            quoted = True
        else:
            while pos < n and text[pos] not in _WHITESPACE:
                char = text[pos]
                if char == "\\" and pos + 1 < n:
                    pos += 1
                    char = text[pos]
                chars.append(char)
                pos += 1
            quoted = False
        self.pos = pos
        return Token("".join(chars), start, pos, self.line_of(start), quoted)

    def push_back(self, token: Token) -> None:
        self.pending = token

    def comment_from(self, token: Token) -> Span:
        """A ``#`` token where a keyword belongs: the comment runs to the end of its line."""
        eol = self.text.find("\n", token.start)
        end = len(self.text) if eol < 0 else eol
        if end > token.start and self.text[end - 1] == "\r":
            end -= 1
        self.pos = max(end, token.end)
        return Span("comment", token.start, self.pos)

    def macro_body_from(self, keyword: Token, name: Token) -> Span:
        """Python's rule: the body starts after the name's terminating character, ends at an empty line."""
        text, n = self.text, len(self.text)
        pos = name.end
        if pos < n and text[pos] == "\r" and text[pos + 1:pos + 2] == "\n":
            pos += 2
        elif pos < n and text[pos] in _WHITESPACE:
            pos += 1
        while True:
            if pos >= n:
                self.pos = n
                return Span("macdef", keyword.start, n, terminated=False)
            eol = text.find("\n", pos)
            line_end = n if eol < 0 else eol + 1
            if text[pos:line_end] in ("\n", "\r\n"):
                self.pos = line_end
                return Span("macdef", keyword.start, line_end)
            if eol < 0:
                self.pos = n
                return Span("macdef", keyword.start, n, terminated=False)
            pos = line_end


def parse_netrc(text: str) -> Document:
    """Parse ``text``; raise :class:`ParseError` (with the line) for anything not both readers accept."""
    doc = Document(text)
    lexer = _Lexer(text)
    entry: Entry | None = None
    while True:
        token = lexer.next_token()
        if token is None:
            break
        if token.value.startswith("#"):
            doc.items.append(lexer.comment_from(token))
            continue
        if token.value in TOP_KEYWORDS:
            entry = None
            if token.value == "macdef":
                name = lexer.next_token()
                if name is None or name.value == "" or "\n" in text[token.end:name.start]:
                    raise ParseError("macdef without a macro name on the same line", token.line)
                doc.items.append(lexer.macro_body_from(token, name))
                continue
            name = None
            if token.value == "machine":
                name = lexer.next_token()
                if name is None or name.value == "":
                    raise ParseError("'machine' without a machine name", token.line)
            entry = Entry(token, name)
            doc.entries.append(entry)
            doc.items.append(token)
            if name is not None:
                doc.items.append(name)
            continue
        if token.value in FIELD_KEYWORDS:
            if entry is None:
                raise ParseError("%r outside a machine or default entry" % token.value, token.line)
            value = lexer.next_token()
            if value is None:
                raise ParseError("%r without a value" % token.value, token.line)
            entry.pairs.append((token, value))
            doc.items.extend((token, value))
            continue
        where = "in an entry" if entry is not None else "at the top level"
        raise ParseError("unknown keyword %r %s" % (token.value, where), token.line)
    return doc


# --------------------------------------------------------------------------- the wanted entry


class NetrcSpec:
    """What the module was asked for, validated."""

    def __init__(self, state: str, machine: str | None, login: str | None, password: str | None,
                 account: str | None, update_password: str) -> None:
        self.state = state
        self.machine = machine
        self.login = login
        self.password = password
        self.account = account
        self.update_password = update_password

    @property
    def is_default(self) -> bool:
        return self.machine is None

    @property
    def label(self) -> str:
        return "default" if self.machine is None else self.machine

    def wanted(self, has_password: bool = False) -> dict:
        """The fields to set: ``None`` values are left as they are."""
        wanted = {"login": self.login, "account": self.account, "password": self.password}
        if self.update_password == "on_create" and has_password:
            wanted["password"] = None
        return wanted

    def secrets(self) -> list[str]:
        """Every form in which a secret of the spec may appear in text."""
        forms = set()
        for value in (self.password, self.account):
            if value:
                forms.add(value)
                forms.add(quote_token(value))
        return sorted(forms, key=len, reverse=True)


# The options that describe one entry: top-level for one entry, or each element of ``entries``.
ENTRY_OPTIONS = ("machine", "default", "login", "password", "account")


def argument_spec() -> dict:
    """The options of ``condafleet.proxy.netrc_entry`` (without the common file arguments)."""
    return dict(
        state=dict(type="str", default="present", choices=["present", "absent"]),
        entries=dict(type="list", elements="dict", options=dict(
            machine=dict(type="str"),
            default=dict(type="bool"),
            login=dict(type="str"),
            password=dict(type="str", no_log=True),
            account=dict(type="str", no_log=True),
        )),
        machine=dict(type="str"),
        default=dict(type="bool"),
        login=dict(type="str"),
        password=dict(type="str", no_log=True),
        account=dict(type="str", no_log=True),
        path=dict(type="str", default="~/.netrc"),  # not "path": ~ is the home of `user`, expanded here
        root=dict(type="str", default="/"),
        # not a secret (its name only contains "password"): no_log=False keeps Ansible from warning about it
        update_password=dict(type="str", default="always", choices=["always", "on_create"], no_log=False),
        user=dict(type="str"),
        follow=dict(type="bool", default=False),
        backup=dict(type="bool", default=False),
    )


def _check_value(option: str, value: str) -> None:
    for char in value:
        if char in "\r\n\x00" or (ord(char) < 0x20 and char != "\t") or ord(char) == 0x7F:
            raise NetrcValueError(
                "%s contains a control character (%r); newlines, NUL and other control characters "
                "cannot be written to a .netrc" % (option, char)
            )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise NetrcValueError("%s is not valid Unicode text" % option)


def specs_from_params(params: dict) -> list[NetrcSpec]:
    """Validate the module parameters and return the entries they describe, in order.

    Either the top-level entry options (one entry) or ``entries`` (each element with the same
    options, sharing ``state`` and ``update_password``), never both.
    """
    entries = params.get("entries")
    if entries is None:
        return [spec_from_params(params)]
    given = [option for option in ENTRY_OPTIONS if params.get(option) not in (None, False)]
    if given:
        raise NetrcValueError("entries and %s are mutually exclusive: give the entries in one or the other"
                              % ", ".join(given))
    specs = []
    seen = {}
    shared = {"state": params.get("state"), "update_password": params.get("update_password")}
    for index, element in enumerate(entries, 1):
        element = element or {}
        try:
            spec = spec_from_params(dict(shared, **{option: element.get(option) for option in ENTRY_OPTIONS}))
        except NetrcValueError as exc:
            raise NetrcValueError("entries[%d]: %s" % (index, exc))
        key = spec.label.lower() if not spec.is_default else None
        if key in seen:
            raise NetrcValueError("entries[%d]: %s is already entries[%d]; one entry per machine"
                                  % (index, spec.label, seen[key]))
        seen[key] = index
        specs.append(spec)
    return specs


def spec_from_params(params: dict) -> NetrcSpec:
    """Validate the module parameters and return the entry they describe."""
    machine = params.get("machine")
    default = params.get("default")
    if machine is not None and default:
        raise NetrcValueError("machine and default=true are mutually exclusive: one entry per task")
    if machine is None and not default:
        raise NetrcValueError("one of machine or default=true is required")
    if machine is not None:
        _check_value("machine", machine)
        if machine == "" or any(char in machine for char in " \t"):
            raise NetrcValueError("machine must be a non-empty host name without spaces, got %r" % machine)
        if machine in TOP_KEYWORDS or machine in FIELD_KEYWORDS or machine.startswith("#"):
            raise NetrcValueError("machine %r would be read as a keyword or comment" % machine)
    for option in FIELDS:
        if params.get(option) is not None:
            _check_value(option, params[option])
    state = params.get("state") or "present"
    if state == "present" and all(params.get(option) is None for option in FIELDS):
        raise NetrcValueError("state=present needs at least one of login, password or account")
    return NetrcSpec(state, machine, params.get("login"), params.get("password"), params.get("account"),
                     params.get("update_password") or "always")


# --------------------------------------------------------------------------- rendering


def is_bare(value: str) -> bool:
    """Whether every reader reads ``value`` back unchanged as a bare token.

    Printable ASCII only (no space, no byte above 0x7F), no backslash, not starting with ``"`` or ``#``.
    """
    return value != "" and value[0] not in '"#' and "\\" not in value and all("!" <= char <= "~" for char in value)


def quote_token(value: str) -> str:
    """``value`` as it is written: bare whenever :func:`is_bare`, else quoted with ``\\`` and ``"`` escaped."""
    if is_bare(value):
        return value
    return '"%s"' % value.replace("\\", "\\\\").replace('"', '\\"')


def _quoting_reasons(value: str) -> list[str]:
    reasons = []
    if value == "":
        reasons.append("it is empty")
    if " " in value or "\t" in value:
        reasons.append("it holds a space or tab")
    if "\\" in value:
        reasons.append("it holds a backslash")
    if value[:1] in ('"', "#"):
        reasons.append("it starts with %s" % value[0])
    if any(ord(char) > 0x7E for char in value):
        reasons.append("it holds a non-ASCII character")
    return reasons


def quoting_warning(option: str, value: str) -> str | None:
    """Why ``option`` must be written quoted and which readers then cannot read it; ``None`` when bare."""
    if is_bare(value):
        return None
    whole_file = []
    if any(char.isspace() for char in value):  # netrc-rs splits on Unicode whitespace, quoted or not
        whole_file.append(RATTLER)
    if " " in value or "\t" in value or any(ord(char) > 0x7E for char in value):
        whole_file.append(PYTHON_310)  # shlex splits the quoted value; non-ASCII is no word character
    wrong_value = [reader for reader in (RATTLER, PYTHON_310, OLD_CURL) if reader not in whole_file]
    readers = []
    if whole_file:
        readers.append("%s reject the whole file, so they use none of its entries" % " and ".join(whole_file))
    readers.append("%s read the quotes as part of the value" % " and ".join(wrong_value))
    return ("%s must be written quoted in the .netrc (%s): Python 3.11 and later and curl 7.84 and later read it, "
            "but %s" % (option, ", ".join(_quoting_reasons(value)), "; ".join(readers)))


def quoting_warnings(params: dict) -> list[str]:
    """:func:`quoting_warning` for every value of the module parameters (``entries[N].password`` in list form)."""
    if params.get("state") == "absent":
        return []
    if params.get("entries") is None:
        sources = [("", params)]
    else:
        sources = [("entries[%d]." % index, element or {}) for index, element in enumerate(params["entries"], 1)]
    warnings = []
    for prefix, values in sources:
        for option in ("machine",) + FIELDS:
            if values.get(option) is not None:
                warning = quoting_warning(prefix + option, values[option])
                if warning:
                    warnings.append(warning)
    return warnings


def entry_text(spec: NetrcSpec) -> str:
    """A new entry on one line: ``machine NAME login L password P account A``."""
    words = ["default"] if spec.is_default else ["machine", quote_token(spec.machine)]
    wanted = spec.wanted()
    for field in FIELDS:
        if wanted[field] is not None:
            words.extend((field, quote_token(wanted[field])))
    return " ".join(words)


class NetrcEdit:
    """The outcome of :func:`plan_netrc`: the new bytes and what happened."""

    def __init__(self, after: bytes | None, duplicates_removed: int = 0, created: bool = False,
                 password_kept: bool = False) -> None:
        self.after = after
        self.duplicates_removed = duplicates_removed
        self.created = created
        self.password_kept = password_kept


def _decode(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _encode(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _apply(text: str, edits: list[tuple[int, int, str]]) -> str:
    """``text`` with each ``(start, end, replacement)`` applied; edits do not overlap.

    Built in one pass (not by slicing the whole text once per edit): masking a file with
    thousands of entries stays linear.
    """
    pieces = []
    pos = len(text)
    for start, end, replacement in sorted(edits, key=lambda edit: (edit[0], edit[1]), reverse=True):
        pieces.append(text[end:pos])
        pieces.append(replacement)
        pos = start
    pieces.append(text[:pos])
    return "".join(reversed(pieces))


def _is_blank(text: str) -> bool:
    return text.strip(" \t\r") == ""


def _item_neighbours(doc: Document, start: int, end: int) -> tuple[int | None, int | None]:
    """End of the last item before ``start`` and start of the first item after ``end``."""
    before = None
    after = None
    for item in doc.items:
        if item.end <= start:
            before = item.end
        elif item.start >= end and after is None:
            after = item.start
    return before, after


def _removal(doc: Document, start: int, end: int) -> tuple[int, int]:
    """The text range to delete so that ``[start, end)`` disappears without joining other lines.

    A piece alone on its lines takes its lines with it (and a trailing comment on its
    last line); at the very end of a file without a final newline, the newline before
    it goes instead. A piece sharing a line with others takes the blanks after it.
    """
    text, n = doc.text, len(doc.text)
    line_start = text.rfind("\n", 0, start) + 1
    eol = text.find("\n", end)
    rest = text[end:n if eol < 0 else eol]
    rest_is_free = _is_blank(rest) or rest.lstrip(" \t").startswith("#")
    if _is_blank(text[line_start:start]) and rest_is_free:
        if eol >= 0:
            return line_start, eol + 1
        cut = line_start
        macro_ends_here = any(isinstance(item, Span) and item.kind == "macdef" and item.end == line_start
                              for item in doc.items)
        if cut > 0 and not macro_ends_here:  # a macro's empty line is its terminator: keep it
            cut -= 1
            if cut > 0 and text[cut - 1] == "\r":
                cut -= 1
        return cut, n
    before, after = _item_neighbours(doc, start, end)
    if after is not None:
        # Keep a newline that separates this piece from what follows on the next line.
        gap = text[end:after]
        if "\n" in gap and line_start != start and not _is_blank(text[line_start:start]):
            return (before if before is not None else start), end
        return start, after
    return (before if before is not None else start), end


def _field_separator(doc: Document, keyword: Token) -> str:
    """How the entry separates its keywords: a space, or a newline plus the indentation it uses."""
    previous = None
    for item in doc.items:
        if item.end <= keyword.start:
            previous = item
    gap = doc.text[previous.end:keyword.start] if previous is not None else " "
    if "\n" in gap:
        return doc.newline + gap[gap.rfind("\n") + 1:]
    return " "


def _rewrite(doc: Document, token: Token, value: str) -> bool:
    """Whether ``token`` must be written again to hold ``value`` the way this editor writes it.

    A different value, or the same value in another form, except when both forms are quoted: a value
    an older version (or a person) quoted is rewritten bare as soon as a bare form exists, so that
    the readers that do not unquote (rattler, Python 3.10 and older) get it, and a quoted value that
    must stay quoted is left as written.
    """
    if token.value != value:
        return True
    wanted = quote_token(value)
    if doc.text[token.start:token.end] == wanted:
        return False
    return not (token.quoted and not is_bare(value))


def _update_entry(doc: Document, entry: Entry, spec: NetrcSpec) -> tuple[list[tuple[int, int, str]], bool]:
    """Token edits that make ``entry`` hold the wanted values. Returns (edits, password kept)."""
    edits: list[tuple[int, int, str]] = []
    if entry.name is not None and _rewrite(doc, entry.name, spec.machine):
        edits.append((entry.name.start, entry.name.end, quote_token(spec.machine)))
    wanted = spec.wanted(has_password=bool(entry.field_pairs("password")))
    additions = []
    removed: list[tuple[Token, Token]] = []
    for field in FIELDS:
        value = wanted[field]
        if value is None:
            continue
        pairs = entry.field_pairs(field)
        if not pairs:
            additions.append("%s %s" % (field, quote_token(value)))
            continue
        keyword, current = pairs[0]
        if keyword.value != field:  # Python's ``user`` synonym: curl only reads ``login``
            edits.append((keyword.start, keyword.end, field))
        if _rewrite(doc, current, value):
            edits.append((current.start, current.end, quote_token(value)))
        # Python keeps the last of repeated keywords, curl may stop at the first: keep one.
        removed.extend(pairs[1:])
    for extra_keyword, extra_value in removed:
        start, end = _removal_within_entry(doc, extra_keyword.start, extra_value.end)
        edits.append((start, end, ""))
    if additions:
        kept = [pair for pair in entry.pairs if pair not in removed]
        anchor = kept[-1][1] if kept else (entry.name or entry.keyword)
        separator = _field_separator(doc, kept[-1][0]) if kept else " "
        edits.append((anchor.end, anchor.end, "".join(separator + words for words in additions)))
    password_kept = spec.update_password == "on_create" and spec.password is not None and bool(
        entry.field_pairs("password"))
    return edits, password_kept


def _removal_within_entry(doc: Document, start: int, end: int) -> tuple[int, int]:
    """Remove a keyword/value pair: its blanks on the same line, or its whole line when alone."""
    text, n = doc.text, len(doc.text)
    line_start = text.rfind("\n", 0, start) + 1
    eol = text.find("\n", end)
    line_end = n if eol < 0 else eol
    before, after = text[line_start:start], text[end:line_end]
    if _is_blank(before) and _is_blank(after) and eol >= 0:
        return line_start, eol + 1
    stripped_after = len(after) - len(after.lstrip(" \t"))
    if after.strip(" \t\r"):
        return start, end + stripped_after
    stripped_before = len(before) - len(before.rstrip(" \t"))
    return start - stripped_before, end


def _insertion(doc: Document, spec: NetrcSpec) -> tuple[int, str]:
    """Where a new entry goes and its text: before ``default`` for a machine, else at the end."""
    text, newline = doc.text, doc.newline
    entry = entry_text(spec)
    defaults = [candidate for candidate in doc.entries if candidate.is_default]
    if not spec.is_default and defaults:
        start = defaults[0].start
        if _is_blank(text[text.rfind("\n", 0, start) + 1:start]):
            return start, entry + newline
        return start, entry + " "  # ``default`` shares its line: stay on it, so removal is exact
    if text == "":
        return 0, entry + newline
    last = doc.items[-1] if doc.items else None
    if isinstance(last, Span) and last.kind == "macdef" and not last.terminated:
        # A macro needs its empty line, or the new entry would become part of its body.
        return len(text), (newline if text.endswith("\n") else newline + newline) + entry + newline
    if text.endswith("\n"):
        return len(text), entry + newline
    return len(text), newline + entry


def _python311_safe(text: str, spec: NetrcSpec) -> str:
    """Keep Python's ``netrc`` (3.11) able to read ``text`` after an edit.

    Its lexer does not consume the newline after a quoted token, so a comment on the
    next line is then read as keywords ("bad follower token"). An empty ``#`` comment
    right after such a token consumes that newline; curl ignores it. Only the managed
    entry gets it: other entries keep their bytes.
    """
    if '"' not in text or "#" not in text:
        return text  # no quoted token, or no comment: nothing to fix, and no second parse of a large file
    doc = parse_netrc(text)
    managed = [entry for entry in doc.entries if entry.is_default == spec.is_default
               and (spec.is_default or entry.name.value == spec.machine)]
    if not managed:
        return text
    low, high = managed[0].start, managed[0].end
    edits = []
    for item, following in zip(doc.items, doc.items[1:]):
        if not low <= item.start < high + 1:
            continue
        if isinstance(item, Token) and item.quoted and isinstance(following, Span) and following.kind == "comment":
            if "\n" in text[item.end:following.start]:
                edits.append((item.end, item.end, " #"))
    return _apply(text, edits) if edits else text


def plan_netrc(before: bytes | None, spec: NetrcSpec) -> NetrcEdit:
    """Compute the new file for ``spec``; raises :class:`ParseError` for an unparsable ``before``."""
    edit = _plan(before, spec)
    if spec.state == "present" and edit.after != before:
        edit.after = _encode(_python311_safe(_decode(edit.after), spec))
    return edit


def _plan(before: bytes | None, spec: NetrcSpec) -> NetrcEdit:
    text = "" if before is None else _decode(before)
    doc = parse_netrc(text)
    if spec.is_default:
        matches = [entry for entry in doc.entries if entry.is_default]
    else:
        wanted = spec.machine.lower()
        matches = [entry for entry in doc.entries if entry.name is not None and entry.name.value.lower() == wanted]
    if spec.state == "absent":
        if not matches:
            return NetrcEdit(before)
        edits = [_removal(doc, entry.start, entry.end) + ("",) for entry in matches]
        after = _apply(text, _merge(edits))
        if _is_blank(after.replace("\n", "")):
            return NetrcEdit(None, duplicates_removed=len(matches) - 1)
        return NetrcEdit(_encode(after), duplicates_removed=len(matches) - 1)
    if not matches:
        position, insert = _insertion(doc, spec)
        return NetrcEdit(_encode(_apply(text, [(position, position, insert)])), created=True)
    edits, password_kept = _update_entry(doc, matches[0], spec)
    for duplicate in matches[1:]:
        edits.append(_removal(doc, duplicate.start, duplicate.end) + ("",))
    after = _encode(_apply(text, _merge(edits)))
    return NetrcEdit(after, duplicates_removed=len(matches) - 1, password_kept=password_kept)


def _merge(edits: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """Drop removals nested in an earlier one (two duplicates can share a blank)."""
    merged: list[tuple[int, int, str]] = []
    for start, end, replacement in sorted(edits, key=lambda edit: (edit[0], -edit[1])):
        if merged and start < merged[-1][1] and not replacement and not merged[-1][2]:
            previous = merged[-1]
            merged[-1] = (previous[0], max(previous[1], end), "")
            continue
        merged.append((start, end, replacement))
    return merged


def render_netrc(before: bytes | None, spec: NetrcSpec) -> bytes | None:
    """The new content of the file for ``spec`` (``None``: remove the file)."""
    return plan_netrc(before, spec).after


def plan_netrc_entries(before: bytes | None, specs: t.Sequence[NetrcSpec]) -> tuple[bytes | None, list]:
    """Apply every spec in order, each to the result of the previous one: one read and one write of the file
    for many entries. Returns the final content and, per spec, ``(spec, edit, changed)``."""
    current = before
    outcomes = []
    for spec in specs:
        edit = plan_netrc(current, spec)
        outcomes.append((spec, edit, edit.after != current))
        current = edit.after
    return current, outcomes


def entries_result(steps: t.Iterable[tuple]) -> list[dict]:
    """The module's ``entries`` return value from the steps of :func:`plan_netrc_entries`."""
    return [dict(machine=spec.label, changed=changed, duplicates_removed=edit.duplicates_removed,
                 password_kept=edit.password_kept) for spec, edit, changed in steps]


def secrets_of(specs: t.Iterable[NetrcSpec]) -> list[str]:
    """Every form in which a secret of any of ``specs`` may appear in text, longest first."""
    forms = set()
    for spec in specs:
        forms.update(spec.secrets())
    return sorted(forms, key=len, reverse=True)


# --------------------------------------------------------------------------- output safety


def mask_netrc(text: str, extra_secrets: t.Iterable[str] = ()) -> str:
    """``text`` with every password and account value replaced by a mask.

    Values of every entry are masked, not only the managed one. Text that does not
    parse falls back to masking whatever follows a ``password``/``account`` keyword.
    """
    try:
        doc = parse_netrc(text)
    except ParseError:
        masked = re.sub(r"(?m)(\b(?:password|account)[ \t]+)(\"(?:[^\"\\]|\\.)*\"?|\S+)", r"\1" + MASK, text)
    else:
        edits = []
        for entry in doc.entries:
            for keyword, value in entry.pairs:
                if FIELD_KEYWORDS[keyword.value] in SECRET_FIELDS:
                    edits.append((value.start, value.end, MASK))
        masked = _apply(text, edits)
    for secret in extra_secrets:
        if secret:
            masked = masked.replace(secret, MASK)
    return masked


def read_entries(data: bytes) -> dict:
    """``{name or 'default': {field: value}}`` as Python's netrc sees them (last entry wins)."""
    doc = parse_netrc(_decode(data))
    return {("default" if entry.is_default else entry.name.value): entry.values() for entry in doc.entries}
