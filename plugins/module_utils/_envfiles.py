# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Proxy environment variables: which variables, which files, and how each file format quotes them.

Pure functions only (no AnsibleModule, no file I/O): the ``env_proxy`` module uses them on
the managed node, and the Windows action plugin uses :func:`variables_from_params` on the
controller to set the same variables with ``ansible.windows.win_environment``.

Each text format gets one managed block between :data:`BEGIN` and :data:`END`; the launchd
format is a whole property list owned by the module. The quoting rules follow each consumer's
parser (see the ``quote_*`` functions): no character of a value can run a command or end the
line early, and a value a format cannot hold is refused with a message, never mangled.
"""

from __future__ import annotations

import posixpath
import re
import typing as t

try:  # Python 3
    from urllib.parse import quote
except ImportError:  # pragma: no cover
    from urllib import quote  # type: ignore

from ._paths import under_root  # noqa: F401 -- part of this module's API for the module
from ._proxyurl import (
    ProxyValueError,
    add_credentials,
    has_password,
    mask_known,
    maskable,
    reject_control_characters,
    secrets_in,
    validate_proxy_url,
)

BEGIN = "# BEGIN condafleet.proxy env_proxy"
END = "# END condafleet.proxy env_proxy"
# Lines inside the block that let ``state: absent`` restore the file exactly.
CREATED_NOTE = "# (this file was created by condafleet.proxy.env_proxy: removing the block deletes it)"
NEWLINE_NOTE = "# (condafleet.proxy.env_proxy added the newline that ends the line before this block)"

FORMATS = ("sh", "fish", "pam_env", "systemd", "launchd")
PROXY_VARIABLES = ("http_proxy", "https_proxy", "no_proxy")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

LAUNCHD_LABEL = "com.condafleet.proxy"
# Sets each NAME VALUE pair that follows $0; the values arrive as argv, never as shell text.
LAUNCHD_SCRIPT = 'while [ "$#" -ge 2 ]; do launchctl setenv "$1" "$2"; shift 2; done'
LAUNCHD_ARGV0 = "condafleet-proxy"

# Linux-PAM before 1.4 reads /etc/environment into a 1024-byte buffer and silently drops the
# rest of the file after a longer line (1.5.2 measured: 8192); stay inside the smaller one.
PAM_ENV_MAX_LINE = 1023

FILE_BASENAME = "condafleet-proxy"


class EnvValueError(ProxyValueError):
    """An env_proxy option that cannot be written safely; the message names the option."""


class ParseError(ValueError):
    """An existing file whose managed block is broken; carries the 1-based line number."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__("line %d: %s" % (line, message))
        self.line = line


class EnvSpec:
    """Validated env_proxy options: the variables in order and every form of their secrets."""

    def __init__(self, state: str, variables: list[tuple[str, str]], secrets: list[str],
                 literal_password: bool | None = None) -> None:
        self.state = state
        self.variables = variables
        self.secrets = secrets  # none shorter than _proxyurl.MIN_SECRET_LENGTH: those are masked in URLs only
        self.literal_password = bool(secrets) if literal_password is None else literal_password

    @property
    def has_literal_password(self) -> bool:
        """True when a password of any length ends up in the files."""
        return self.state == "present" and self.literal_password


def argument_spec() -> dict:
    """The options of ``condafleet.proxy.env_proxy`` (file attributes come from ``add_file_common_args``)."""
    return dict(
        state=dict(type="str", default="present", choices=["present", "absent"]),
        http_proxy=dict(type="str"),
        https_proxy=dict(type="str"),
        no_proxy=dict(type="list", elements="str"),
        extra=dict(type="dict"),
        case=dict(type="str", default="both", choices=["both", "lower", "upper"]),
        proxy_username=dict(type="str"),
        proxy_password=dict(type="str", no_log=True),
        scope=dict(type="str", default="system", choices=["system", "user"]),
        path=dict(type="str"),
        format=dict(type="str", choices=list(FORMATS)),
        target_os=dict(type="str", default="auto", choices=["auto", "Linux", "Darwin"]),
        root=dict(type="str", default="/"),
        user=dict(type="str"),
        follow=dict(type="bool", default=False),
        backup=dict(type="bool", default=False),
        # system scope: a literal password goes to files every account reads; refused unless this says so
        world_readable_password=dict(type="bool", default=False, no_log=False),
    )


def is_noncharacter(char: str) -> bool:
    """U+FDD0..U+FDEF and U+xFFFE/U+xFFFF: systemd's UTF-8 check rejects them (its environment.d
    generator then aborts, losing every variable) and XML property lists cannot hold U+FFFE/U+FFFF."""
    code = ord(char)
    return 0xFDD0 <= code <= 0xFDEF or (code & 0xFFFE) == 0xFFFE


_NONCHARACTER = re.compile(
    "[\ufdd0-\ufdef" + "".join("%s%s" % (chr(plane << 16 | 0xFFFE), chr(plane << 16 | 0xFFFF)) for plane in range(17)) + "]"
)


_WHITE_SPACE = re.compile(r"\s")


def _check_text(name: str, value: str) -> str:
    reject_control_characters(name, value)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise EnvValueError("%s is not valid Unicode text (it holds a lone surrogate)" % name)
    found = _NONCHARACTER.search(value)  # one regex pass: a 1 MB value is checked in milliseconds
    if found:
        raise EnvValueError(
            "%s contains the Unicode noncharacter U+%04X, which systemd's environment.d and launchd "
            "property lists cannot hold" % (name, ord(found.group(0)))
        )
    return value


def _no_proxy_entries(value: t.Any) -> list[str]:
    """``no_proxy`` as a list of entries; a comma-separated string is split, blanks dropped."""
    if value is None:
        return []
    items = value if isinstance(value, (list, tuple)) else [value]
    entries = []
    seen = set()
    for item in items:
        if not isinstance(item, str):
            raise EnvValueError("no_proxy entries must be strings, got %r" % (item,))
        _check_text("no_proxy", item)  # once per item, not per entry: a long no_proxy stays fast
        for entry in item.split(","):
            entry = entry.strip()
            if not entry:
                continue
            if _WHITE_SPACE.search(entry):
                raise EnvValueError("no_proxy entry %r contains white space" % entry)
            if entry not in seen:  # a set: a list here made a long no_proxy quadratic
                seen.add(entry)
                entries.append(entry)
    return entries


def _names(base: str, case: str) -> list[str]:
    if case == "lower":
        return [base]
    if case == "upper":
        return [base.upper()]
    return [base, base.upper()]


def spec_from_params(params: dict) -> EnvSpec:
    """Validate and normalize the module options; raises :class:`EnvValueError` naming the option."""
    state = params.get("state") or "present"
    case = params.get("case") or "both"
    if case not in ("both", "lower", "upper"):
        raise EnvValueError("case must be one of both, lower, upper, got %r" % case)
    username = params.get("proxy_username")
    password = params.get("proxy_password")
    # every password is collected before anything is validated: messages are masked with them
    secrets = list(secrets_in_params(params))
    literal_password = bool(password)
    if password and not username:
        raise EnvValueError("proxy_password needs proxy_username")

    values = {}  # type: dict[str, str]
    for option in ("http_proxy", "https_proxy"):
        url = params.get(option)
        if url is None or url == "":
            continue
        validate_proxy_url(option, url)
        _check_text(option, url)
        literal_password = literal_password or has_password(url)
        values[option] = add_credentials(url, username, password)
    if (username or password) and not values:
        raise EnvValueError("proxy_username/proxy_password need http_proxy or https_proxy")
    entries = _no_proxy_entries(params.get("no_proxy"))
    if entries:
        values["no_proxy"] = ",".join(entries)

    variables = []  # type: list[tuple[str, str]]
    for base in PROXY_VARIABLES:
        if base in values:
            for name in _names(base, case):
                variables.append((name, values[base]))

    extra = params.get("extra") or {}
    if not isinstance(extra, dict):
        raise EnvValueError("extra must be a dictionary of NAME: value")
    taken = set(name for name, _value in variables)
    for name in sorted(extra):
        value = extra[name]
        if not isinstance(name, str) or not _NAME.match(name):
            raise EnvValueError("extra: %r is not a valid variable name (letters, digits, _; not starting with a digit)"
                                % (name,))
        if name in taken:
            raise EnvValueError("extra: %s is already set from the %s option" % (name, name.lower()))
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise EnvValueError("extra: the value of %s must be a string, got %r" % (name, type(value).__name__))
        value = str(value)
        _check_text("extra.%s" % name, value)
        secrets.extend(secrets_in(value))
        variables.append((name, value))

    if state == "present" and not variables:
        raise EnvValueError("state=present needs at least one of http_proxy, https_proxy, no_proxy, extra")
    unique = sorted(set(maskable(secrets)), key=len, reverse=True)
    return EnvSpec(state, variables, unique, literal_password)


def secrets_in_params(params: dict) -> list[str]:
    """Every form of every password in the options (``proxy_password``, passwords inside ``http_proxy``,
    ``https_proxy`` and ``extra`` URLs), found without validating anything.

    The module adds these to ``no_log_values`` first thing: an option that then fails validation is still
    echoed back (``invocation`` at -vvv) and must not show the password its URL holds.
    """
    forms = set()
    password = params.get("proxy_password")
    if isinstance(password, str) and password:
        forms.update((password, quote(password, safe="")))
    values = [params.get("http_proxy"), params.get("https_proxy")]
    extra = params.get("extra")
    if isinstance(extra, dict):
        values.extend(extra.values())
    for value in values:
        if isinstance(value, str) and value:
            forms.update(secrets_in(value))
    return sorted(maskable(forms), key=len, reverse=True)


def variables_from_params(params: dict) -> list[tuple[str, str]]:
    """The ``(name, value)`` pairs to set, in a fixed order: proxy variables, then ``extra`` sorted by name."""
    return spec_from_params(params).variables


# ---------------------------------------------------------------------------------------------
# Quoting, one function per consumer.


def quote_sh(value: str) -> str:
    """POSIX sh (bash, zsh, dash): single quotes keep every character literal; ``'`` becomes ``'\\''``."""
    return "'" + value.replace("'", "'\\''") + "'"


def quote_fish(value: str) -> str:
    """fish: inside single quotes only ``\\\\`` and ``\\'`` are escapes."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def quote_pam_env(name: str, value: str) -> str:
    """/etc/environment as pam_env's ``_parse_env_file`` reads it.

    Linux-PAM cuts every line at the first ``#`` (quotes do not protect it), joins a line
    ending in ``\\`` with the next one, and for a value starting with a quote drops that quote
    and a quote that ends the line, keeping every other character literally (no ``$``
    expansion, no escapes). So ``NAME="value"`` holds anything except ``#``, which it
    cannot represent at all, and the closing quote means a trailing ``\\`` is safe.
    """
    if "#" in value:
        raise EnvValueError(
            "%s: /etc/environment (pam_env) cannot hold a value containing '#': Linux-PAM treats '#' "
            "anywhere on a line as the start of a comment and has no escape for it" % name
        )
    return '"' + value + '"'


def quote_systemd(value: str) -> str:
    """environment.d(5) as systemd's env-file parser and the environment-d generator read it.

    Inside double quotes a backslash escapes ``"``, ``\\``, `````` and ``$`` (other backslashes
    stay); after unquoting, the generator expands ``$NAME``/``${NAME}`` and turns ``$$`` into
    ``$``. So ``$`` is written ``\\$\\$``.
    """
    out = []
    for char in value:
        if char == "$":
            out.append("\\$\\$")
        elif char in '"\\`':
            out.append("\\" + char)
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def render_lines(variables: list[tuple[str, str]], fmt: str) -> list[str]:
    """The assignment lines of the managed block for ``fmt``."""
    lines = []
    for name, value in variables:
        if fmt == "sh":
            lines.append("export %s=%s" % (name, quote_sh(value)))
        elif fmt == "fish":
            lines.append("set -gx %s %s" % (name, quote_fish(value)))
        elif fmt == "pam_env":
            line = "%s=%s" % (name, quote_pam_env(name, value))
            if len(line.encode("utf-8")) + 1 > PAM_ENV_MAX_LINE:
                raise EnvValueError(
                    "%s: the /etc/environment line would be %d bytes; Linux-PAM before 1.4 ignores the rest of "
                    "the file after a line longer than %d bytes" % (name, len(line.encode("utf-8")) + 1, PAM_ENV_MAX_LINE)
                )
            lines.append(line)
        elif fmt == "systemd":
            lines.append("%s=%s" % (name, quote_systemd(value)))
        else:
            raise EnvValueError("format %r has no managed block" % fmt)
    return lines


# ---------------------------------------------------------------------------------------------
# The managed block.


def _split_lines(text: str) -> list[str]:
    """Lines with their endings kept, so joining them gives back the exact text."""
    return text.splitlines(True) if text else []


def find_block(text: str) -> tuple[int, int] | None:
    """Indexes of the BEGIN and END lines of the one managed block, or ``None``.

    A BEGIN without END, an END without BEGIN, or a second block is a :class:`ParseError`
    with the line number: the file is then left alone rather than guessed at.
    """
    begin = end = None
    for index, line in enumerate(_split_lines(text)):
        stripped = line.strip()
        if stripped == BEGIN:
            if begin is not None:
                raise ParseError("a second '%s' marker (the first is on line %d)" % (BEGIN, begin + 1), index + 1)
            begin = index
        elif stripped == END:
            if begin is None:
                raise ParseError("'%s' without a '%s' line before it" % (END, BEGIN), index + 1)
            if end is not None:
                raise ParseError("a second '%s' marker (the first is on line %d)" % (END, end + 1), index + 1)
            end = index
    if begin is not None and end is None:
        raise ParseError("'%s' without a matching '%s' line" % (BEGIN, END), begin + 1)
    return None if begin is None else (begin, end)


def _decode(before: bytes) -> str:
    try:
        return before.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = before[: exc.start].count(b"\n") + 1
        raise ParseError("not valid UTF-8 (byte 0x%02x)" % before[exc.start], line)


def render_envfile(before: bytes | None, spec: EnvSpec, fmt: str) -> bytes | None:
    """The new bytes of a text env file (``None``: delete it) holding ``spec``'s variables.

    ``present`` replaces the managed block in place or appends one; ``absent`` removes exactly
    it, so the file returns to the bytes it had before the block was added (a file the module
    created is deleted again). Everything outside the block is kept byte for byte.
    """
    text = None if before is None else _decode(before)
    lines = _split_lines(text or "")
    found = find_block(text or "")
    created = before is None
    newline_added = False
    if found is not None:
        begin, end = found
        inner = [line.strip() for line in lines[begin + 1:end]]
        created = CREATED_NOTE in inner
        newline_added = NEWLINE_NOTE in inner
        head, tail = lines[:begin], lines[end + 1:]
    else:
        head, tail = lines, []

    if spec.state == "absent":
        if found is None:
            return before
        head_text = "".join(head)
        if newline_added and not tail and head_text.endswith("\n"):
            head_text = head_text[:-1]
        remaining = head_text + "".join(tail)
        if not remaining and created:
            return None
        return remaining.encode("utf-8")

    body = render_lines(spec.variables, fmt)
    if found is None and head and not head[-1].endswith("\n"):
        head[-1] += "\n"
        newline_added = True
    notes = ([CREATED_NOTE] if created else []) + ([NEWLINE_NOTE] if newline_added else [])
    block = "\n".join([BEGIN] + notes + body + [END]) + "\n"
    return ("".join(head) + block + "".join(tail)).encode("utf-8")


def render_launchd(before: bytes | None, spec: EnvSpec) -> bytes | None:
    """The LaunchAgent property list (the whole file belongs to the module; ``None``: delete it).

    At login launchd runs ``/bin/sh -c LAUNCHD_SCRIPT condafleet-proxy NAME VALUE ...``, which
    calls ``launchctl setenv NAME VALUE`` for each pair, so GUI apps see the variables.
    """
    import plistlib  # only macOS hosts write a LaunchAgent: the other runs need not import it

    if spec.state == "absent":
        return None
    argv = ["/bin/sh", "-c", LAUNCHD_SCRIPT, LAUNCHD_ARGV0]
    for name, value in spec.variables:
        argv.extend([name, value])
    agent = {"Label": LAUNCHD_LABEL, "ProgramArguments": argv, "RunAtLoad": True}
    return plistlib.dumps(agent, fmt=plistlib.FMT_XML, sort_keys=True)


def render(before: bytes | None, spec: EnvSpec, fmt: str) -> bytes | None:
    """New content of a file of format ``fmt``."""
    if fmt == "launchd":
        return render_launchd(before, spec)
    if fmt not in FORMATS:
        raise EnvValueError("format must be one of %s, got %r" % (", ".join(FORMATS), fmt))
    return render_envfile(before, spec, fmt)


# ---------------------------------------------------------------------------------------------
# Which files.


def _bash_login_file(home: str, existing: t.Collection[str], default: str) -> str:
    """The file a login bash actually reads: the first of these that exists, else ``default``."""
    for name in (".bash_profile", ".bash_login", ".profile"):
        candidate = posixpath.join(home, name)
        if candidate in existing:
            return candidate
    return posixpath.join(home, default)


def probe_paths(target_os: str, scope: str, home: str, root: str) -> list[str]:
    """Every path whose existence :func:`env_candidates` depends on (the module checks them)."""
    return [path for path, _fmt, _needs in all_candidates(target_os, scope, home, root)] + [
        under_root(root, "/etc/zsh")
    ]


def all_candidates(target_os: str, scope: str, home: str, root: str) -> list[tuple[str, str, str | None]]:
    """Every file the OS and scope could use, as ``(path, format, needed shell or None)``.

    ``state: absent`` cleans all of them that exist; ``present`` writes the subset
    :func:`env_candidates` picks. ``home`` is the account's home as the host sees it.
    """
    rooted_home = under_root(root, home)
    if target_os == "Darwin":
        if scope == "system":
            return [
                (under_root(root, "/etc/zshenv"), "sh", "zsh"),
                (under_root(root, "/etc/profile"), "sh", "bash"),
                (under_root(root, "/Library/LaunchAgents/%s.plist" % LAUNCHD_LABEL), "launchd", None),
            ]
        return [
            (posixpath.join(rooted_home, ".zshenv"), "sh", "zsh"),
            (posixpath.join(rooted_home, ".bash_profile"), "sh", "bash"),
            (posixpath.join(rooted_home, ".bash_login"), "sh", "bash"),
            (posixpath.join(rooted_home, ".profile"), "sh", "bash"),
            (posixpath.join(rooted_home, "Library/LaunchAgents/%s.plist" % LAUNCHD_LABEL), "launchd", None),
        ]
    if target_os != "Linux":
        raise EnvValueError("target_os must be Linux or Darwin, got %r" % target_os)
    if scope == "system":
        return [
            (under_root(root, "/etc/environment"), "pam_env", None),
            (under_root(root, "/etc/profile.d/%s.sh" % FILE_BASENAME), "sh", None),
            (under_root(root, "/etc/zsh/zshenv"), "sh", "zsh"),
            (under_root(root, "/etc/zshenv"), "sh", "zsh"),
            (under_root(root, "/etc/fish/conf.d/%s.fish" % FILE_BASENAME), "fish", "fish"),
            (under_root(root, "/etc/environment.d/90-%s.conf" % FILE_BASENAME), "systemd", "systemd"),
        ]
    return [
        (posixpath.join(rooted_home, ".bash_profile"), "sh", None),
        (posixpath.join(rooted_home, ".bash_login"), "sh", None),
        (posixpath.join(rooted_home, ".profile"), "sh", None),
        (posixpath.join(rooted_home, ".zshenv"), "sh", "zsh"),
        (posixpath.join(rooted_home, ".config/fish/conf.d/%s.fish" % FILE_BASENAME), "fish", "fish"),
        (posixpath.join(rooted_home, ".config/environment.d/90-%s.conf" % FILE_BASENAME), "systemd", "systemd"),
    ]


def env_candidates(
    target_os: str, scope: str, home: str, root: str, installed: t.Collection[str]
) -> list[tuple[str, str, str | None]]:
    """The files for ``state: present`` as ``(path, format, skip_reason)``; ``skip_reason`` None: write it.

    ``installed`` holds what the module found on the host: the names of the shells and
    services present (``zsh``, ``fish``, ``systemd``...) and the candidate paths that exist
    (from :func:`probe_paths`). A shell's file is written when the shell is installed or the
    file already exists; the bash login file is the one bash actually reads.
    """
    candidates = all_candidates(target_os, scope, home, root)
    rooted_home = under_root(root, home)
    chosen = []  # type: list[tuple[str, str, str | None]]
    bash_files = {posixpath.join(rooted_home, n) for n in (".bash_profile", ".bash_login", ".profile")}
    if scope == "user":
        default = ".bash_profile" if target_os == "Darwin" else ".profile"
        bash_file = _bash_login_file(rooted_home, installed, default)
    zsh_system = under_root(root, "/etc/zsh/zshenv" if under_root(root, "/etc/zsh") in installed else "/etc/zshenv")
    for path, fmt, needs in candidates:
        if scope == "user" and path in bash_files:
            if path != bash_file:
                continue
        elif target_os == "Linux" and scope == "system" and path in (
            under_root(root, "/etc/zsh/zshenv"), under_root(root, "/etc/zshenv")
        ):
            if path != zsh_system:
                continue
        reason = None
        if needs and target_os == "Linux" and needs not in installed and path not in installed:
            reason = "%s is not installed" % needs
        chosen.append((path, fmt, reason))
    return chosen


def env_targets(
    target_os: str, scope: str, home: str, root: str, installed: t.Collection[str]
) -> list[tuple[str, str]]:
    """The ``(path, format)`` pairs to write for the OS and scope (see :func:`env_candidates`)."""
    return [(path, fmt) for path, fmt, reason in env_candidates(target_os, scope, home, root, installed)
            if reason is None]


# ---------------------------------------------------------------------------------------------
# Secrets in output.


def secret_forms(secrets: t.Iterable[str]) -> list[str]:
    """Every way a secret can appear in a rendered file or a message, longest first."""
    forms = set()
    for secret in secrets:
        if not secret:
            continue
        variants = {secret, quote(secret, safe="")}
        for variant in list(variants):
            variants.add(quote_sh(variant)[1:-1])
            variants.add(quote_fish(variant)[1:-1])
            variants.add(quote_systemd(variant)[1:-1])
            variants.add(variant.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))
        forms.update(v for v in variants if v)
    return sorted(maskable(forms), key=len, reverse=True)


def mask_text(text: str, secrets: t.Iterable[str]) -> str:
    """``text`` with URL passwords and every form of ``secrets`` replaced by the mask (none too short)."""
    return mask_known(text, secret_forms(secrets))
