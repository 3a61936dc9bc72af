# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Proxy URLs: validation, credentials, and masking — bounded in time, and never showing a password."""

from __future__ import annotations

import contextlib
import time
from urllib.parse import quote, unquote, urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from timing import finishes_within  # tests/support

from ansible_collections.condafleet.proxy.plugins.module_utils import _proxyurl
from ansible_collections.condafleet.proxy.plugins.module_utils._proxyurl import (
    MASK,
    ProxyValueError,
    add_credentials,
    mask_secrets,
    secrets_in,
    validate_proxy_url,
)


MB = 1024 * 1024

# 1 MB inputs shaped against the old pattern: it started a match at every letter and ran to the end of the
# run (a 200 KB line of .profile: 104 s; a 1 MB option value: over 14 min), and against the new one.
HUGE = {
    "letters": "a" * MB,
    "scheme-and-letters": "http://" + "a" * MB,
    "user-then-letters": "http://user:" + "a" * MB,
    "many-schemes": "://" * (MB // 3),
    "many-colons": "a:" * (MB // 2),
    "many-urls": "http://u:secretpw@h " * (MB // 20),
    "many-ats": "http://" + "a@" * (MB // 2),
    "colons-after-scheme": "://" + ":" * MB,
    "percent-escapes": "http://u:" + "%41" * (MB // 3) + "@h:1",
    "references": "http://u:" + "${A}" * (MB // 4) + "@h:1",
}


@pytest.mark.parametrize("name", sorted(HUGE))
def test_masking_and_validation_of_1mb_take_well_under_a_second(name):
    text = HUGE[name]
    started = time.monotonic()
    with finishes_within(1.0):
        masked = mask_secrets(text)
        forms = secrets_in(text)
        _proxyurl.mask_known(text, forms + ["abcdef"])
        with contextlib.suppress(ProxyValueError):
            validate_proxy_url("http", text)
    assert time.monotonic() - started < 1.0
    if name == "many-urls":
        assert "secretpw" not in masked and masked.count(MASK) == MB // 20


@pytest.mark.parametrize(
    "url",
    [
        "http://u:p@ss@proxy.example:3128",
        "http://u:pa@ss@word@proxy.example:3128",
        "http://u:Head#Tail@proxy.example:3128",
        "http://u:Head[Tail@proxy.example:3128",
        "http://u:Head]Tail@proxy.example:3128",
        "http://u:Head/Tail@proxy.example:3128",
        "http://u:Head?Tail@proxy.example:3128",
        "http://u:Head%zzTail@proxy.example:3128",
        "http://u:Head%Tail@proxy.example:3128",
        "http://u:Head\"Tail@proxy.example:3128",
        "http://u:Head'Tail@proxy.example:3128",
        "http://u:Head\\Tail@proxy.example:3128",
        "http://u:HeadöTail@proxy.example:3128",
        "http://DOMAIN\\user:HeadTail@proxy.example:3128",
    ],
)
def test_userinfo_that_is_not_percent_encoded_is_refused_fully_masked(url):
    password = url[len("http://"):].split(":", 1)[1].rpartition("@")[0]
    with pytest.raises(ProxyValueError) as info:
        validate_proxy_url("http", url)
    message = str(info.value)
    assert "http://********@proxy.example:3128" in message
    assert "proxy_username/proxy_password" in message and "percent-encode" in message
    for fragment in ("Head", "Tail", "p@ss", "ss@", "word@", "DOMAIN", password):
        assert fragment not in message


def test_a_raw_at_in_the_password_masks_all_of_it_not_every_p():
    # before: accepted, written unencoded, and masked as 'p': '********' replaced every 'p' while 'ss' showed
    text = "export http_proxy='http://u:p@ss@proxy.example:3128'  # proxy for apps"
    masked = mask_secrets(text)
    assert masked == "export http_proxy='http://u:********@proxy.example:3128'  # proxy for apps"
    assert _proxyurl.mask_known(text, secrets_in("http://u:p@ss@proxy.example:3128")) == masked
    with pytest.raises(ProxyValueError):
        validate_proxy_url("http", "http://u:p@ss@proxy.example:3128")


def test_a_url_longer_than_any_proxy_url_is_refused_without_being_shown():
    url = "http://u:" + "Secret9" * 1000 + "@proxy.example:3128"
    with finishes_within(0.5), pytest.raises(ProxyValueError) as info:
        validate_proxy_url("http", url)
    assert "Secret9" not in str(info.value) and "at most %d" % _proxyurl.MAX_URL_LENGTH in str(info.value)


@pytest.mark.parametrize(
    "bad, shown",
    [
        ("http://u:Secret9@proxy.example:99999", "http://u:********@proxy.example:99999"),
        ("http://u:Secret9@proxy.example:port", "http://u:********@proxy.example:port"),
        ("http://u:Secret9@proxy.example:3128/path", "http://u:********@proxy.example:3128/path"),
        ("ftp://u:Secret9@proxy.example:3128", "ftp://u:********@proxy.example:3128"),
        ("http://u:Secret9@:3128", "http://u:********@:3128"),
        ("http://u:Secret9@proxy.example:3128 ", "http://u:********@proxy.example:3128 "),
        ("http://u:Secret9@[::1:3128", "http://u:********@[::1:3128"),
        ("http://u:Secret9@proxy.example:3128\n", None),
    ],
)
def test_every_message_is_masked(bad, shown):
    with pytest.raises(ProxyValueError) as info:
        validate_proxy_url("http", bad)
    assert "Secret9" not in str(info.value)
    if shown:
        assert shown in str(info.value)


@settings(max_examples=300, deadline=None)
@given(middle=st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=12))
def test_property_no_message_shows_any_part_of_the_password(middle):
    """Zq...Xj: a password whose head and tail no message text contains, with anything in between."""
    password = "Zq" + middle + "Xj"
    url = "http://fleet:%s@proxy.example:3128" % password
    try:
        validate_proxy_url("http_proxy", url)
    except ProxyValueError as exc:
        assert "Zq" not in str(exc) and "Xj" not in str(exc)
    else:  # accepted: then it was properly encoded, and reads back as written
        assert urlsplit(url).password == password


def test_both_the_encoded_and_the_decoded_form_are_secrets():
    forms = secrets_in("http://u:p%40ss%2Fword@proxy.example:3128")
    assert {"p%40ss%2Fword", "p@ss/word"} <= set(forms)
    # a lower-case escape is also known in the form add_credentials writes
    assert {"p%2fss%7eword", "p/ss~word", "p%2Fss%7Eword"} <= set(secrets_in("http://u:p%2fss%7eword@h:1"))
    text = "p@ss/word and p%40ss%2Fword"
    assert _proxyurl.mask_known(text, forms) == "%s and %s" % (MASK, MASK)


def test_short_secrets_are_never_masked_into_other_text():
    assert secrets_in("http://u:p@proxy.example:3128") == []
    assert secrets_in("http://u:abc@proxy.example:3128") == []
    assert _proxyurl.mask_known("http://proxy.example:3128 happy", ["p", "ht", "htt"]) == "http://proxy.example:3128 happy"
    # masked where it stands as the password of a URL
    assert mask_secrets("http://u:p@proxy.example:3128") == "http://u:%s@proxy.example:3128" % MASK
    assert _proxyurl.has_password("http://u:p@proxy.example:3128")
    assert secrets_in("http://u:abcd@h:1") == ["abcd"]


def test_variable_references_are_not_secrets_and_are_kept():
    url = "http://fleet:${PROXY_PASS}@proxy.example:3128"
    assert validate_proxy_url("http", url) == url
    assert secrets_in(url) == [] and not _proxyurl.has_password(url)
    assert mask_secrets(url) == url
    assert _proxyurl.mask_url(url) == url


def test_mask_secrets_handles_several_urls_and_quotes():
    text = "a='http://u:first1@h1:1' b=\"https://v:second2@h2:2\" c=http://h3:3 d=mailto:x@y"
    assert mask_secrets(text) == (
        "a='http://u:%s@h1:1' b=\"https://v:%s@h2:2\" c=http://h3:3 d=mailto:x@y" % (MASK, MASK)
    )


@pytest.mark.parametrize("password", ["p@ss:w/rd", "100%#sure", "with space", "it's", "a[b]c", "ünï", "p"])
def test_add_credentials_writes_urls_that_validate_and_read_back(password):
    url = add_credentials("http://proxy.example:3128", "domain\\user", password)
    assert validate_proxy_url("http", url) == url
    parts = urlsplit(url)
    assert unquote(parts.password) == password and unquote(parts.username) == "domain\\user"
    assert quote(password, safe="") in url
