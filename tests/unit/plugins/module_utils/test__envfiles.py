# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The pure env_proxy logic: variables, quoting, the managed block, the file set."""

from __future__ import annotations

import plistlib
import subprocess

import pytest
from hypothesis import given, settings, strategies as st

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
