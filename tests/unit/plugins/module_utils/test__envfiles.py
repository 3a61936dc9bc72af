# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The pure env_proxy logic: variables, quoting, the managed block, the file set."""

from __future__ import annotations

import json
import os
import plistlib
import signal
import subprocess
import time

import pytest

from timing import finishes_within  # tests/support
from hypothesis import given, settings, strategies as st

from ansible_collections.condafleet.proxy.plugins.module_utils import _envfiles
from ansible_collections.condafleet.proxy.plugins.module_utils._envfiles import (
    BEGIN,
    END,
    LAUNCHD_SCRIPT,
    EnvSpec,
    EnvValueError,
    ParseError,
    all_candidates,
    env_candidates,
    env_targets,
    mask_text,
    quote_fish,
    quote_sh,
    render,
    render_envfile,
    spec_from_params,
    variables_from_params,
)

HOSTILE = "p@ss:w'o\"rd $(id) `id` ;|&\\ %41 #x é✓"


def present(variables):
    return EnvSpec("present", list(variables), [])


ABSENT = EnvSpec("absent", [], [])


# --- variables ------------------------------------------------------------------------------


def test_variables_order_and_case_both():
    got = variables_from_params(dict(http_proxy="http://p:3128", https_proxy="http://q:3128",
                                     no_proxy="localhost, .corp.example,,127.0.0.1",
                                     extra={"REQUESTS_CA_BUNDLE": "/ca.pem", "A_FIRST": 1}))
    assert got == [
        ("http_proxy", "http://p:3128"), ("HTTP_PROXY", "http://p:3128"),
        ("https_proxy", "http://q:3128"), ("HTTPS_PROXY", "http://q:3128"),
        ("no_proxy", "localhost,.corp.example,127.0.0.1"), ("NO_PROXY", "localhost,.corp.example,127.0.0.1"),
        ("A_FIRST", "1"), ("REQUESTS_CA_BUNDLE", "/ca.pem"),
    ]


@pytest.mark.parametrize("case,names", [("lower", ["http_proxy"]), ("upper", ["HTTP_PROXY"])])
def test_variables_case(case, names):
    assert [n for n, _v in variables_from_params(dict(http_proxy="http://p:1", case=case))] == names


def test_credentials_percent_encoded_and_secrets_collected():
    spec = spec_from_params(dict(http_proxy="http://p:3128", proxy_username="u@x", proxy_password="a:b/c@d%"))
    assert spec.variables[0] == ("http_proxy", "http://u%40x:a%3Ab%2Fc%40d%25@p:3128")
    assert "a:b/c@d%" in spec.secrets and "a%3Ab%2Fc%40d%25" in spec.secrets


def test_password_embedded_in_url_is_a_secret():
    spec = spec_from_params(dict(https_proxy="http://u:s%3Bcret@p:1"))
    assert "s%3Bcret" in spec.secrets and "s;cret" in spec.secrets


@pytest.mark.parametrize("params,needle", [
    (dict(http_proxy="ftp://p:1"), "http_proxy"),
    (dict(http_proxy="http://p:1\n"), "control character"),
    (dict(extra={"1BAD": "x"}), "valid variable name"),
    (dict(extra={"X": "a\x00b"}), "control character"),
    (dict(extra={"X": ["list"]}), "must be a string"),
    (dict(extra={"X": "a\ufdd0"}), r"noncharacter U\+FDD0"),
    (dict(no_proxy=["\U0001fffe.example"]), "noncharacter"),
    (dict(http_proxy="http://p:1", extra={"http_proxy": "x"}), "already set"),
    (dict(no_proxy=["a b"]), "white space"),
    (dict(proxy_password="x", proxy_username=None, http_proxy="http://p:1"), "proxy_username"),
    (dict(proxy_username="u"), "need http_proxy"),
    (dict(), "at least one"),
])
def test_invalid_params(params, needle):
    with pytest.raises(ValueError, match=needle):
        spec_from_params(params)


def test_absent_needs_no_variables():
    assert spec_from_params(dict(state="absent")).variables == []


# --- quoting ---------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.text(st.characters(blacklist_categories=("Cc", "Cs"))))
def test_sh_quote_round_trips_through_real_sh(value):
    out = subprocess.run(["/bin/sh", "-c", "printf %s " + quote_sh(value)], capture_output=True, check=True)
    assert out.stdout.decode("utf-8") == value


def test_fish_quote_escapes_backslash_and_quote():
    assert quote_fish("a\\b'c") == "'a\\\\b\\'c'"


def test_pam_env_refuses_hash_and_long_lines():
    with pytest.raises(EnvValueError, match="cannot hold a value containing '#'"):
        render(None, present([("X", "a#b")]), "pam_env")
    with pytest.raises(EnvValueError, match="1023"):
        render(None, present([("X", "y" * 1100)]), "pam_env")
    assert b'X="a\'b\\"c$HOME\\"\n' in render(None, present([("X", "a'b\\\"c$HOME\\")]), "pam_env")


def test_systemd_doubles_dollar_and_escapes():
    out = render(None, present([("X", 'a$B"c\\`')]), "systemd").decode()
    assert 'X="a\\$\\$B\\"c\\\\\\`"' in out


# --- the managed block ------------------------------------------------------------------------


@pytest.mark.parametrize("original", [None, b"", b"# mine\nexport A=1\n", b"no newline at end", b"x\n\n\n"])
@pytest.mark.parametrize("fmt", ["sh", "fish", "pam_env", "systemd"])
def test_present_then_absent_restores_original_bytes(original, fmt):
    spec = present([("http_proxy", "http://p:1"), ("X", HOSTILE.replace("#", ""))])
    written = render_envfile(original, spec, fmt)
    assert render_envfile(written, spec, fmt) == written  # idempotent
    assert written.count(BEGIN.encode()) == 1 and written.count(END.encode()) == 1
    if original:
        assert written.startswith(original)
    assert render_envfile(written, ABSENT, fmt) == original


def test_block_replaced_in_place_keeping_surroundings():
    before = b"top\n" + BEGIN.encode() + b"\nexport old=1\n" + END.encode() + b"\nbottom\n"
    after = render_envfile(before, present([("new", "2")]), "sh")
    assert after == b"top\n" + BEGIN.encode() + b"\nexport new='2'\n" + END.encode() + b"\nbottom\n"
    assert render_envfile(after, ABSENT, "sh") == b"top\nbottom\n"


@pytest.mark.parametrize("text,line", [
    (BEGIN + "\nx=1\n", 1),
    ("a\n" + END + "\n", 2),
    (BEGIN + "\n" + END + "\n" + BEGIN + "\n" + END + "\n", 3),
    (BEGIN + "\n" + BEGIN + "\n" + END + "\n", 2),
])
def test_marker_conflicts_are_parse_errors_with_line(text, line):
    with pytest.raises(ParseError) as info:
        render_envfile(text.encode(), present([("A", "1")]), "sh")
    assert info.value.line == line
    with pytest.raises(ParseError):
        render_envfile(text.encode(), ABSENT, "sh")


def test_absent_leaves_file_without_block_untouched():
    assert render_envfile(b"keep\n", ABSENT, "sh") == b"keep\n"
    assert render_envfile(None, ABSENT, "sh") is None


@settings(max_examples=150, deadline=None)
@given(st.text(st.characters(blacklist_categories=("Cs",))).filter(lambda s: BEGIN not in s and END not in s))
def test_property_editing_preserves_everything_outside_the_block(original):
    data = original.encode("utf-8")
    spec = present([("A", "1")])
    written = render_envfile(data, spec, "sh")
    assert render_envfile(written, ABSENT, "sh") == data


# --- launchd ---------------------------------------------------------------------------------


def test_launchd_plist_is_deterministic_and_parses():
    spec = present([("http_proxy", HOSTILE), ("NO_PROXY", "a,b")])
    data = render(None, spec, "launchd")
    assert render(data, spec, "launchd") == data
    agent = plistlib.loads(data)
    assert agent["RunAtLoad"] is True and agent["Label"] == "com.condafleet.proxy"
    assert agent["ProgramArguments"] == ["/bin/sh", "-c", LAUNCHD_SCRIPT, "condafleet-proxy",
                                         "http_proxy", HOSTILE, "NO_PROXY", "a,b"]
    assert render(data, ABSENT, "launchd") is None


# --- which files -------------------------------------------------------------------------------


def test_linux_system_set_with_everything_installed():
    installed = {"zsh", "fish", "systemd", "/r/etc/zsh"}
    assert env_targets("Linux", "system", "/root", "/r", installed) == [
        ("/r/etc/environment", "pam_env"),
        ("/r/etc/profile.d/condafleet-proxy.sh", "sh"),
        ("/r/etc/zsh/zshenv", "sh"),
        ("/r/etc/fish/conf.d/condafleet-proxy.fish", "fish"),
        ("/r/etc/environment.d/90-condafleet-proxy.conf", "systemd"),
    ]


def test_linux_system_zshenv_without_etc_zsh_and_skips():
    got = env_candidates("Linux", "system", "/root", "/", {"zsh"})
    assert ("/etc/zshenv", "sh", None) in got
    assert ("/etc/fish/conf.d/condafleet-proxy.fish", "fish", "fish is not installed") in got
    assert ("/etc/environment.d/90-condafleet-proxy.conf", "systemd", "systemd is not installed") in got


def test_existing_file_is_written_even_without_its_shell():
    path = "/etc/fish/conf.d/condafleet-proxy.fish"
    assert (path, "fish") in env_targets("Linux", "system", "/root", "/", {path})


@pytest.mark.parametrize("existing,chosen", [
    (set(), "/home/a/.profile"),
    ({"/home/a/.profile", "/home/a/.bash_login"}, "/home/a/.bash_login"),
    ({"/home/a/.profile", "/home/a/.bash_profile"}, "/home/a/.bash_profile"),
])
def test_linux_user_bash_login_file_actually_read(existing, chosen):
    paths = [p for p, _f in env_targets("Linux", "user", "/home/a", "/", existing | {"zsh", "fish", "systemd"})]
    assert paths == [chosen, "/home/a/.zshenv", "/home/a/.config/fish/conf.d/condafleet-proxy.fish",
                     "/home/a/.config/environment.d/90-condafleet-proxy.conf"]


def test_darwin_sets():
    assert env_targets("Darwin", "system", "/Users/a", "/s", set()) == [
        ("/s/etc/zshenv", "sh"), ("/s/etc/profile", "sh"),
        ("/s/Library/LaunchAgents/com.condafleet.proxy.plist", "launchd")]
    assert env_targets("Darwin", "user", "/Users/a", "/", set()) == [
        ("/Users/a/.zshenv", "sh"), ("/Users/a/.bash_profile", "sh"),
        ("/Users/a/Library/LaunchAgents/com.condafleet.proxy.plist", "launchd")]
    # An existing ~/.profile keeps being read: no ~/.bash_profile is created to shadow it.
    assert ("/Users/a/.profile", "sh") in env_targets("Darwin", "user", "/Users/a", "/", {"/Users/a/.profile"})


def test_all_candidates_cover_every_alternative_for_removal():
    paths = [p for p, _f, _n in all_candidates("Linux", "system", "/root", "/")]
    assert "/etc/zsh/zshenv" in paths and "/etc/zshenv" in paths


# --- masking -------------------------------------------------------------------------------------


def test_mask_text_hides_every_quoted_form():
    secret = "it's$\"x"
    spec = spec_from_params(dict(http_proxy="http://p:1", proxy_username="u", proxy_password=secret))
    for fmt in ("sh", "fish", "pam_env", "systemd", "launchd"):
        text = render(None, spec, fmt).decode()
        masked = mask_text(text, spec.secrets)
        assert secret not in masked and "it%27s%24%22x" not in masked, fmt
        assert "********" in masked


# --- bounds and secrets in URL options -------------------------------------------------------------


def exits_within(seconds: float, work) -> int | None:
    """Run ``work`` in a forked child; its exit code (0: no exception), or ``None`` when it ran out of time.

    For work stuck inside one C call (a list lookup): a signal raised there makes a traceback pytest cannot show.
    """
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            work()
        except BaseException:  # noqa: BLE001
            os._exit(1)
        os._exit(0)
    deadline = time.monotonic() + seconds
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None
        time.sleep(0.005)


def test_a_1mb_no_proxy_takes_well_under_a_second():
    # 160,000 distinct entries: the duplicate check was a list lookup per entry (quadratic)
    value = ",".join("h%d.corp.example" % i for i in range(160000))
    assert len(value) > 1024 * 1024 * 0.9
    assert exits_within(1.0, lambda: spec_from_params(dict(no_proxy=value, case="lower"))) == 0
    spec = spec_from_params(dict(no_proxy=value + ",h7.corp.example", case="lower"))
    assert spec.variables[0][1].count(",") == 159999


@pytest.mark.parametrize("option", ["http_proxy", "https_proxy"])
def test_a_1mb_proxy_url_is_refused_at_once_without_showing_it(option):
    url = "http://u:" + "S3cretS3cret" * (1024 * 1024 // 12) + "@proxy.example:3128"
    with finishes_within(1.0), pytest.raises(ValueError) as info:
        spec_from_params({option: url})
    assert "S3cret" not in str(info.value) and len(str(info.value)) < 200


# ``{{ pw | urlencode }}`` leaves '/' as it is: the URL was refused with its password in the message
# ("http_proxy has an invalid port: http://u:s3cr3t/pa%20ss...@proxy.example:3128 (... as 's3cr3t')").
URLENCODED_BY_JINJA = "http://u:s3cr3t/pa%20ss%2Bw%C3%B6rd~@proxy.example:3128"


def test_a_password_that_is_not_fully_encoded_is_refused_with_the_url_masked():
    with pytest.raises(ValueError) as info:
        spec_from_params(dict(http_proxy=URLENCODED_BY_JINJA))
    message = str(info.value)
    assert "http://********@proxy.example:3128" in message and "proxy_username/proxy_password" in message
    for fragment in ("s3cr3t", "pa%20ss", "w%C3%B6rd", "pa ss", "wörd"):
        assert fragment not in message


def test_secrets_in_params_finds_every_form_before_validation():
    forms = _envfiles.secrets_in_params(dict(
        http_proxy=URLENCODED_BY_JINJA,
        https_proxy="http://u:An%40ther%2fpw@p:1",
        extra={"CF_URL": "http://u:ExtraS3cret@h:1", "PLAIN": "value"},
        proxy_password="Given:pw/1",
    ))
    for form in ("s3cr3t/pa%20ss%2Bw%C3%B6rd~", "s3cr3t/pa ss+wörd~", "An%40ther%2fpw", "An@ther/pw", "An%40ther%2Fpw",
                 "ExtraS3cret", "Given:pw/1", "Given%3Apw%2F1"):
        assert form in forms
    assert all(len(form) >= 4 for form in forms)


def test_every_form_of_a_url_password_is_masked_in_what_the_module_shows():
    url = "http://u:p%40ss%2Fw0rd@proxy.example:3128"
    spec = spec_from_params(dict(http_proxy=url))
    assert {"p%40ss%2Fw0rd", "p@ss/w0rd"} <= set(spec.secrets)
    for fmt in ("sh", "fish", "systemd", "launchd"):
        masked = mask_text(render(None, spec, fmt).decode(), spec.secrets)
        assert "p%40ss" not in masked and "p@ss" not in masked and "w0rd" not in masked, fmt


def test_a_short_password_is_masked_in_its_url_but_not_everywhere():
    spec = spec_from_params(dict(http_proxy="http://p:3128", proxy_username="u", proxy_password="p"))
    assert spec.has_literal_password and spec.secrets == []
    text = render(None, spec, "sh").decode()
    masked = mask_text(text, spec.secrets)
    assert "export http_proxy='http://u:********@p:3128'" in masked
    assert "# BEGIN condafleet.proxy env_proxy" in masked  # no 'p' of the text turned into the mask


def test_no_message_shows_the_password_of_a_url_option():
    for url in ("http://u:Pw#Secret@p:1", "http://u:Pw[Secret@p:1", "http://u:Pw@Secret@p:1", "http://u:PwSecret@p:99999",
                "http://u:PwSecret@p:port", "ftp://u:PwSecret@p:1"):
        with pytest.raises(ValueError) as info:
            spec_from_params(dict(https_proxy=url))
        assert "Secret" not in str(info.value), url


def _adhoc_with_urlencoded_password(tmp_path, verbosity):
    import jinja2
    from modulerun import run_adhoc  # tests/support, on sys.path from tests/conftest.py

    password = "s3cr3t/pa ss+wörd~"
    encoded = jinja2.filters.do_urlencode(password)
    assert encoded == "s3cr3t/pa%20ss%2Bw%C3%B6rd~"
    args = dict(http_proxy="http://u:{{ pw | urlencode }}@proxy.example:3128", path=str(tmp_path / "proxy.sh"), format="sh")
    result, raw = run_adhoc("env_proxy", args, diff=True, verbosity=verbosity, extra_vars=dict(pw=password))
    assert result.get("failed") and not (tmp_path / "proxy.sh").exists()
    return result, raw, (password, encoded, "s3cr3t", "pa%20ss", "w%C3%B6rd")


@pytest.mark.parametrize("verbosity", [0, 3])
def test_adhoc_with_an_urlencoded_password_the_message_shows_none_of_it(tmp_path, verbosity):
    """``ansible localhost -m condafleet.proxy.env_proxy`` as the issue ran it: the failure message."""
    result, _raw, forms = _adhoc_with_urlencoded_password(tmp_path, verbosity)
    shown = json.dumps(dict((key, value) for key, value in result.items() if key != "invocation"), ensure_ascii=False)
    assert "http://********@proxy.example:3128" in result["msg"]
    for form in forms:
        assert form not in shown, form


@pytest.mark.parametrize("verbosity", [0, 3])
def test_adhoc_with_an_urlencoded_password_the_whole_output_shows_none_of_it(tmp_path, verbosity):
    _result, raw, forms = _adhoc_with_urlencoded_password(tmp_path, verbosity)
    for form in forms:
        assert form not in raw.replace('"pw": "s3cr3t/pa ss+w\\u00f6rd~"', ""), form
