# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""The channel and package policy keys of a ``.condarc`` (condarc_policy): validate options, render.

Pure functions only: the module uses them on the managed node, the Windows action plugin on the
controller. Values are checked against conda's own rules (conda 26.x, ``conda/base/context.py``,
``conda/core/exclude_newer.py``, ``conda/common/datetime.py``) so that a value conda would refuse, or
silently read as something else, fails the task before anything is written. The file is edited with
:func:`_condarc.render_keys`, which keeps every byte of the file but the keys the task names.
"""

from __future__ import annotations

import re
import typing as t
from collections import OrderedDict
from datetime import date, datetime

from ansible_collections.condafleet.proxy.plugins.module_utils import _condarc, _proxyurl

# In the order new keys are appended to a file.
CHANNEL_LISTS = ("channels", "default_channels", "allowlist_channels", "denylist_channels")
POLICY_KEYS = ("channels", "default_channels", "channel_alias", "custom_channels", "allowlist_channels",
               "denylist_channels", "disallowed_packages", "channel_priority", "safety_checks",
               "extra_safety_checks", "exclude_newer")
CHANNEL_PRIORITIES = ("strict", "flexible", "disabled")  # conda.base.constants.ChannelPriority
SAFETY_CHECKS = ("disabled", "warn", "enabled")  # conda.base.constants.SafetyChecks

MUTUALLY_EXCLUSIVE = _condarc.MUTUALLY_EXCLUSIVE
REQUIRED_IF = _condarc.REQUIRED_IF
MAX_VALUE_LENGTH = 4096


class PolicySpecError(ValueError):
    """An option value conda would refuse or misread; the message names the option."""


def argument_spec() -> dict:
    """The options of condarc_policy (file attributes come from ``add_file_common_args``)."""
    return dict(
        state=dict(type="str", default="present", choices=["present", "absent"]),
        scope=dict(type="str", choices=["user", "system", "prefix"]),
        prefix=dict(type="path"),
        path=dict(type="str"),
        root=dict(type="str", default="/"),
        user=dict(type="str"),
        follow=dict(type="bool", default=False),
        backup=dict(type="bool", default=False),
        final=dict(type="raw", default=False),
        channels=dict(type="list", elements="str"),
        default_channels=dict(type="list", elements="str"),
        channel_alias=dict(type="str"),
        custom_channels=dict(type="dict"),
        allowlist_channels=dict(type="list", elements="str"),
        denylist_channels=dict(type="list", elements="str"),
        disallowed_packages=dict(type="list", elements="str"),
        channel_priority=dict(type="str", choices=list(CHANNEL_PRIORITIES)),
        safety_checks=dict(type="str", choices=list(SAFETY_CHECKS)),
        extra_safety_checks=dict(type="bool"),
        exclude_newer=dict(type="raw"),
    )


class PolicySpec:
    """What the file should say: ``values`` (key -> value, to write), ``remove`` (keys to delete), ``final``
    (keys written with ``#!final``). Duck-types the path attributes of :class:`_condarc.CondarcSpec`."""

    has_literal_password = False  # no policy key holds a secret

    def __init__(self, state: str, scope: str | None, prefix: str | None, path: str | None,
                 values: OrderedDict, remove: list, final: list) -> None:
        self.state = state
        self.scope = scope
        self.prefix = prefix
        self.path = path
        self.values = values
        self.remove = remove
        self.final = final

    @property
    def keys(self) -> list:
        return list(self.values) if self.state == "present" else list(self.remove)


# --------------------------------------------------------------------------------------------
# conda's rules, value by value

_SCHEME = re.compile(r"^[a-z][a-z0-9]{0,11}://")  # conda.common.url.has_scheme
_VAR = re.compile(r"\$\{?[A-Za-z_]")
_WINDOWS_PATH = re.compile(r"^(?:[A-Za-z]:[\\/]|\\\\)")


def _text(option: str, value: t.Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise PolicySpecError("%s: expected a string, got %r" % (option, value))
    text = str(value)
    if text.strip() == "":
        raise PolicySpecError("%s: an empty value" % option)
    if text != text.strip():
        raise PolicySpecError("%s: %r has leading or trailing white space" % (option, text))
    if len(text) > MAX_VALUE_LENGTH:
        raise PolicySpecError("%s: a value of %d characters (at most %d)" % (option, len(text), MAX_VALUE_LENGTH))
    try:
        _proxyurl.reject_control_characters(option, text)
    except ValueError as exc:
        raise PolicySpecError(str(exc))
    return text


def channel_url(option: str, value: t.Any) -> str:
    """A location conda needs as a URL with a scheme (``channel_alias``, ``custom_channels`` values):
    without one, conda refuses ``channel_alias`` and reads a ``custom_channels`` value as a channel name under
    ``https://conda.anaconda.org``."""
    text = _text(option, value)
    if not _SCHEME.match(text) and not text.startswith("$"):
        raise PolicySpecError("%s: %r needs a scheme, for example https://%s (conda requires scheme://)"
                              % (option, text, text.lstrip("/")))
    return text


def channel(option: str, value: t.Any) -> str:
    """A channel entry: a name (``conda-forge``, ``pkgs/main``, ``defaults``), a URL with a scheme, or a path.

    A host without a scheme (``repo.example.com/channel``, ``localhost:8000/channel``) is refused: conda reads it
    as a channel name and sends it to ``https://conda.anaconda.org/repo.example.com/channel``."""
    text = _text(option, value)
    if _SCHEME.match(text) or _VAR.match(text) or text.startswith(("/", "~", "./", "../")) or _WINDOWS_PATH.match(text):
        return text
    if "://" in text:
        raise PolicySpecError("%s: %r: conda accepts only a lower-case scheme of up to 12 letters and digits" % (option, text))
    first = text.split("/", 1)[0]
    if "." in first or ":" in first:
        raise PolicySpecError(
            "%s: %r looks like a host without a scheme; conda would read it as a channel name under "
            "https://conda.anaconda.org: write https://%s (or http://, file://)" % (option, text, text))
    if any(char in text for char in " \t#,[]{}\"'"):
        raise PolicySpecError("%s: %r is not a channel name, URL or path" % (option, text))
    return text


def package_spec(option: str, value: t.Any) -> str:
    """A ``disallowed_packages`` entry: a package name or match spec. conda splits the environment variable
    form on ``&``, so an ``&`` cannot be part of one."""
    text = _text(option, value)
    if "&" in text or "#" in text:
        raise PolicySpecError("%s: %r is not a package name or match spec" % (option, text))
    return text


# conda.common.datetime: plain seconds, ISO 8601 durations (P2W, P3D, PT12H), compact ones (7d, 2w 3d, 12h)
_ISO_DURATION = re.compile(r"^P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$", re.IGNORECASE)
_COMPACT_DURATION = re.compile(r"(\d+)\s*([wdhms])", re.IGNORECASE)
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_COMPACT_DATE = re.compile(r"^\d{8}$")


def exclude_newer(value: t.Any) -> str:
    """conda's cool-down: a duration (seconds, ``7d``, ``2w 3d``, ``P7D``), a date (``2026-04-01``: packages
    published after that day are hidden) or a date and time (``2026-04-01T12:00:00Z``), as conda parses it."""
    option = "exclude_newer"
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise PolicySpecError("exclude_newer: a duration must not be negative, got %d" % value)
        return str(value)
    text = _text(option, value)
    if re.match(r"^[+-]?\d+$", text):
        if int(text) < 0:
            raise PolicySpecError("exclude_newer: a duration must not be negative, got %s" % text)
        return text
    iso = _ISO_DURATION.match(text)
    if iso:
        if all(group is None for group in iso.groups()):
            raise PolicySpecError("exclude_newer: %r is an empty ISO 8601 duration" % text)
        return text
    if _COMPACT_DURATION.findall(text):
        if _COMPACT_DURATION.sub("", text).strip():
            raise PolicySpecError("exclude_newer: %r is not a duration conda reads (use e.g. 7d, 2w 3d, 12h)" % text)
        return text
    if _DATE_ONLY.match(text):
        try:
            date(*(int(part) for part in text.split("-")))
        except ValueError:
            raise PolicySpecError("exclude_newer: %r is not a date" % text)
        return text
    if not _COMPACT_DATE.match(text):
        normalized = text[:-1] + "+00:00" if text.endswith("Z") else text
        try:
            datetime.fromisoformat(normalized)
            return text
        except ValueError:
            pass
    raise PolicySpecError("exclude_newer: %r is not a duration, date or timestamp conda reads (use e.g. 7d, P7D, "
                          "2026-04-01 or 2026-04-01T12:00:00Z)" % text)


def _choice(option: str, value: t.Any, choices: tuple) -> str:
    if not isinstance(value, str) or value not in choices:
        raise PolicySpecError("%s must be one of %s (conda refuses anything else), got %r"
                              % (option, ", ".join(choices), value))
    return value


def _string_list(option: str, value: t.Any, check: t.Callable[[str, t.Any], str]) -> list:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise PolicySpecError("%s must be a list, got %r" % (option, value))
    result = []
    for index, item in enumerate(value):
        text = check("%s[%d]" % (option, index), item)
        if text in result:
            raise PolicySpecError("%s has %r twice" % (option, text))
        result.append(text)
    return result


def _custom_channels(value: t.Any) -> OrderedDict:
    if not isinstance(value, dict):
        raise PolicySpecError("custom_channels must be a dictionary of channel names to URLs, got %r" % (value,))
    result = OrderedDict()
    for name, url in value.items():
        key = _text("custom_channels key", name)
        if "://" in key or any(char in key for char in " \t#:,[]{}\"'"):
            raise PolicySpecError("custom_channels key %r must be a channel name (the value holds the URL)" % key)
        result[key] = channel_url("custom_channels[%r]" % key, url)
    return result


def _extra_safety_checks(value: t.Any) -> bool:
    if not isinstance(value, bool):
        raise PolicySpecError("extra_safety_checks must be true or false, got %r" % (value,))
    return value


def normalize_value(key: str, value: t.Any) -> t.Any:
    """The value of one policy key as it is written; raises :class:`PolicySpecError` naming the option."""
    if key in CHANNEL_LISTS:
        return _string_list(key, value, channel)
    if key == "disallowed_packages":
        return _string_list(key, value, package_spec)
    if key == "channel_alias":
        return channel_url(key, value)
    if key == "custom_channels":
        return _custom_channels(value)
    if key == "channel_priority":
        return _choice(key, value, CHANNEL_PRIORITIES)
    if key == "safety_checks":
        return _choice(key, value, SAFETY_CHECKS)
    if key == "extra_safety_checks":
        return _extra_safety_checks(value)
    if key == "exclude_newer":
        return exclude_newer(value)
    raise PolicySpecError("%s is not a policy key this module manages" % key)


def _final_keys(final: t.Any, named: list) -> list:
    if final is None or final is False or final == []:
        return []
    if final is True:
        return list(named)
    if isinstance(final, str):
        lowered = final.strip().lower()
        if lowered in ("true", "yes", "on", "1"):
            return list(named)
        if lowered in ("false", "no", "off", "0", ""):
            return []
        final = [final]
    if not isinstance(final, (list, tuple)):
        raise PolicySpecError("final must be true, false or a list of the keys to lock, got %r" % (final,))
    result = []
    for key in final:
        if key not in POLICY_KEYS:
            raise PolicySpecError("final: %r is not one of %s" % (key, ", ".join(POLICY_KEYS)))
        if key not in named:
            raise PolicySpecError("final: %r is not set by this task (give its value too)" % key)
        if key not in result:
            result.append(key)
    return result


def spec_from_params(params: dict) -> PolicySpec:
    """Validate and normalise the module's options (raises :class:`PolicySpecError` naming the option)."""
    state = params.get("state") or "present"
    scope, path, prefix = _condarc.file_location(params, PolicySpecError)
    named = [key for key in POLICY_KEYS if params.get(key) is not None]
    if not named:
        raise PolicySpecError("state=%s needs at least one of %s" % (state, ", ".join(POLICY_KEYS)))
    if state == "absent":
        # the values only name the keys: absent removes exactly those, whatever they say
        return PolicySpec(state, scope, prefix, path, OrderedDict(), named, [])
    values = OrderedDict((key, normalize_value(key, params[key])) for key in named)
    return PolicySpec(state, scope, prefix, path, values, [], _final_keys(params.get("final"), named))


def render_policy(before: bytes | None, spec: PolicySpec) -> bytes | None:
    """The new bytes of the file for ``spec``; raises :class:`_condarc.ParseError` for a file that cannot be
    edited safely."""
    if spec.state == "absent":
        return _condarc.render_keys(before, OrderedDict(), remove=spec.remove)
    return _condarc.render_keys(before, spec.values, final=spec.final)


def policy_result(spec: PolicySpec) -> dict:
    """What the module returns about the keys: the values written (``{}`` with state=absent), the keys the task
    manages, and which of them are locked with ``#!final``."""
    present = spec.state == "present"
    return {"policy": dict(spec.values) if present else {}, "keys": spec.keys, "final": list(spec.final)}
