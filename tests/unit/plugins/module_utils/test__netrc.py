# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The .netrc parser and editor, checked against Python's own ``netrc`` reader."""

from __future__ import annotations

import netrc

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ansible_collections.condafleet.proxy.plugins.module_utils import _netrc

TARGET = "target.example"

HOSTILE = [
    "pass word", 'quo"te', "back\\slash", "#hash", "ends#", "ünïcødé ✓", "$(touch /tmp/pwned)", "`id`", "a;b",
    "", '"', "\\", "'single'", "tab\there", "machine", "password", "%41%", "trailing\\",
]


def spec(state="present", machine=TARGET, default=None, **fields):
    params = dict(state=state, machine=machine, default=default, login=None, password=None, account=None,
                  update_password="always")
    params.update(fields)
    return _netrc.spec_from_params(params)


def python_reads(tmp_path, data: bytes):
    path = tmp_path / "netrc"
    path.write_bytes(data)
    parsed = netrc.netrc(str(path))
    return parsed.hosts, parsed.macros


# ----------------------------------------------------------------------------- examples


@pytest.mark.parametrize("password", HOSTILE)
def test_hostile_password_reads_back_exactly(tmp_path, password):
    after = _netrc.render_netrc(None, spec(login="me", password=password))
    hosts, _macros = python_reads(tmp_path, after)
    assert hosts[TARGET] == ("me", "", password)
    # Idempotent: rendering again changes nothing.
    assert _netrc.render_netrc(after, spec(login="me", password=password)) == after


@pytest.mark.parametrize(
    "text, line, words",
    [
        ("machine a login b\nbogus x\n", 2, "unknown keyword 'bogus'"),
        ("machine a login b\n  port 22\n", 2, "unknown keyword 'port'"),
        ("machine a login", 1, "'login' without a value"),
        ("machine a\n\n login b password \"open\n", 3, "unterminated quoted token"),
        ("# c\nmacdef\nbody\n\n", 2, "macdef without a macro name"),
        ("machine\n", 1, "without a machine name"),
        ("login x\n", 1, "outside a machine"),
        ('machine ""\n', 1, "without a machine name"),
    ],
)
def test_unparsable_files_name_the_line(text, line, words):
    with pytest.raises(_netrc.ParseError) as caught:
        _netrc.render_netrc(text.encode(), spec(login="x"))
    assert caught.value.line == line
    assert words in str(caught.value)


def test_comments_macros_quoted_tokens_and_default_are_kept():
    before = (
        b"# managed by hand\n"
        b"machine a.example\n\tlogin \"al ice\"  # trailing comment\n\tpassword \"p#\\\"w\"\n"
        b"macdef init\ncd /pub\nmachine inside.macro login x\n\n"
        b"default login anonymous password guest\n"
    )
    after = _netrc.render_netrc(before, spec(login="me", password="s3"))
    assert after == before.replace(b"default login", b"machine target.example login me password s3\ndefault login")
    assert _netrc.render_netrc(after, spec(state="absent")) == before


def test_update_keeps_layout_and_touches_only_changed_tokens(tmp_path):
    before = b"machine target.example\r\n    login old\r\n    password keep\r\n# after\r\n"
    after = _netrc.render_netrc(before, spec(login="new", password="keep", account="acc t"))
    # The empty `#` after a quoted token at the end of a line followed by a comment line keeps
    # Python 3.11's lexer from reading that comment as keywords.
    assert after == b"machine target.example\r\n    login new\r\n    password keep\r\n    account \"acc t\" #\r\n# after\r\n"
    hosts, _macros = python_reads(tmp_path, after)
    assert hosts[TARGET] == ("new", "acc t", "keep")


def test_user_synonym_and_repeated_keywords_are_normalised():
    before = b"machine TARGET.example user a password one password two\n"
    plan = _netrc.plan_netrc(before, spec(login="a", password="two"))
    assert plan.after == b"machine target.example login a password two\n"


def test_duplicates_are_merged_into_the_first(tmp_path):
    before = (b"machine target.example login first password 1\nmachine other login o password o\n"
              b"machine Target.Example login second password 2\nmachine target.example login third\n")
    plan = _netrc.plan_netrc(before, spec(login="me", password="pw"))
    assert plan.duplicates_removed == 2
    assert plan.after == b"machine target.example login me password pw\nmachine other login o password o\n"
    hosts, _macros = python_reads(tmp_path, plan.after)
    assert hosts[TARGET] == ("me", "", "pw")


def test_on_create_keeps_an_existing_password_but_manages_login():
    before = b"machine target.example login old password users-own\n"
    plan = _netrc.plan_netrc(before, spec(login="new", password="initial", update_password="on_create"))
    assert plan.after == b"machine target.example login new password users-own\n"
    assert plan.password_kept
    created = _netrc.plan_netrc(None, spec(login="new", password="initial", update_password="on_create"))
    assert created.after == b"machine target.example login new password initial\n"


def test_machine_goes_before_a_default_sharing_its_line():
    before = b"machine a login b default login c"
    after = _netrc.render_netrc(before, spec(login="x"))
    assert after == b"machine a login b machine target.example login x default login c"
    assert _netrc.render_netrc(after, spec(state="absent")) == before


def test_absent_removes_the_file_holding_only_the_entry_and_nothing_else():
    assert _netrc.render_netrc(b"machine target.example login a password b\n", spec(state="absent")) is None
    kept = b"# only a comment\nmachine target.example login a\n"
    assert _netrc.render_netrc(kept, spec(state="absent")) == b"# only a comment\n"
    assert _netrc.render_netrc(None, spec(state="absent")) is None


def test_unterminated_macro_at_the_end_gets_its_empty_line(tmp_path):
    before = b"machine a login b\nmacdef init\ncd /pub\n"
    after = _netrc.render_netrc(before, spec(login="me", password="pw"))
    assert after == before + b"\nmachine target.example login me password pw\n"
    hosts, macros = python_reads(tmp_path, after)
    assert hosts[TARGET] == ("me", "", "pw") and macros == {"init": ["cd /pub\n"]}


@pytest.mark.parametrize("option, value", [("password", "a\nb"), ("login", "nul\x00"), ("account", "\x1b[31m"),
                                           ("machine", "two words"), ("machine", "")])
def test_values_that_cannot_be_written_are_refused(option, value):
    with pytest.raises(_netrc.NetrcValueError) as caught:
        spec(**{option: value, "login": "x"} if option != "login" else {option: value})
    assert option in str(caught.value)


def test_machine_and_default_are_exclusive_and_one_is_required():
    with pytest.raises(ValueError, match="mutually exclusive"):
        spec(default=True, login="x")
    with pytest.raises(ValueError, match="required"):
        spec(machine=None, login="x")


def test_mask_hides_every_password_and_account():
    text = 'machine a login u password "other secret"\nmachine b login v password p2 account acc\n'
    masked = _netrc.mask_netrc(text, ["mine"])
    assert "other secret" not in masked and "p2" not in masked and "acc" not in masked.replace("account", "")
    assert masked.count(_netrc.MASK) == 3
    broken = _netrc.mask_netrc("machine a password hidden bogus\n")
    assert "hidden" not in broken


# ----------------------------------------------------------------------------- properties

_hosts = st.sampled_from(["a.example", "b.example", "c.example", TARGET, "TARGET.example", "127.0.0.1"])
_values = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\u2028\u2029\x85"),
    max_size=12,
)
_comment_text = st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), max_size=15)


@st.composite
def _entry(draw, name=None):
    head = "default" if name == "default" else "machine " + _netrc.quote_token(name or draw(_hosts))
    fields = draw(st.lists(st.sampled_from(["login", "password", "account"]), max_size=3, unique=True))
    words = [head] + ["%s %s" % (field, _netrc.quote_token(draw(_values))) for field in fields]
    if draw(st.booleans()):
        indent = draw(st.sampled_from(["\t", "  ", "    "]))
        text = ("\n" + indent).join(words)
    else:
        text = " ".join(words)
    if draw(st.booleans()):
        text += " # " + draw(_comment_text)
    return text + "\n"


@st.composite
def _macro(draw):
    name = draw(st.sampled_from(["init", "upload", "m1"]))
    body = draw(st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zs")), min_size=1,
                                 max_size=12), max_size=3))
    return "macdef %s\n%s\n" % (name, "".join(line + "\n" for line in body))


@st.composite
def netrc_files(draw):
    blocks = draw(st.lists(st.one_of(_entry(), _macro(), _comment_text.map(lambda c: "# " + c + "\n")),
                           max_size=6))
    if draw(st.booleans()):
        blocks.append(draw(_entry(name="default")))
    text = "".join(blocks)
    if draw(st.booleans()) and text.endswith("\n") and not text.endswith("\n\n"):
        text = text[:-1]
    if draw(st.booleans()):
        text = text.replace("\n", "\r\n")
    return text.encode("utf-8")


def _python_accepts(tmp_path, data: bytes):
    try:
        return python_reads(tmp_path, data)
    except netrc.NetrcParseError:
        return None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=netrc_files(), login=_values, password=_values, on_create=st.booleans())
def test_present_then_absent_keeps_every_other_byte(tmp_path, before, login, password, on_create):
    original = _python_accepts(tmp_path, before)
    assume(original is not None)
    wanted = spec(login=login, password=password, update_password="on_create" if on_create else "always")
    plan = _netrc.plan_netrc(before, wanted)
    hosts, macros = python_reads(tmp_path, plan.after)
    assert hosts[TARGET][0] == login
    if not plan.password_kept:
        assert hosts[TARGET][2] == password
    assert macros == original[1]
    others = {name: value for name, value in original[0].items() if name.lower() != TARGET}
    assert {name: value for name, value in hosts.items() if name.lower() != TARGET} == others
    removed = _netrc.render_netrc(plan.after, spec(state="absent"))
    target_was_there = any(name.lower() == TARGET for name in original[0])
    if not target_was_there:
        assert removed == before or (removed is None and before.strip() == b"")
    else:
        # Same bytes as removing it directly, up to the final newline of a file whose last
        # line was a duplicate without one.
        direct = _netrc.render_netrc(before, spec(state="absent"))
        assert (removed or b"").rstrip(b"\r\n") == (direct or b"").rstrip(b"\r\n")
    # Idempotent.
    assert _netrc.render_netrc(plan.after, wanted) == plan.after


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=netrc_files(), login=_values, password=_values)
def test_default_entry_edits_keep_other_entries(tmp_path, before, login, password):
    original = _python_accepts(tmp_path, before)
    assume(original is not None)
    after = _netrc.render_netrc(before, spec(machine=None, default=True, login=login, password=password))
    hosts, macros = python_reads(tmp_path, after)
    assert (hosts["default"][0], hosts["default"][2]) == (login, password)
    assert {k: v for k, v in hosts.items() if k != "default"} == {k: v for k, v in original[0].items() if k != "default"}
    assert macros == original[1]


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=80))
def test_garbage_either_parses_or_raises_parse_error(text):
    try:
        _netrc.render_netrc(text.encode("utf-8", "surrogatepass"), spec(login="x", password="y"))
    except _netrc.ParseError as exc:
        assert exc.line >= 1


# ----------------------------------------------------------------------------- bare whenever every reader agrees
# The rule and its evidence per reader: tests/integration/test_netrc_consumers.py runs the real readers.

BARE = ["ch#an@l:pw/%9", 'a"b', 'ab"', "ends#", "'single'", "machine", "%41%", "$(id)", "a;b|c&d", "~!"]
QUOTED = {"#lead": '"#lead"', '"lead': '"\\"lead"', "back\\slash": '"back\\\\slash"', "trailing\\": '"trailing\\\\"',
          "sp ace": '"sp ace"', "tab\there": '"tab\there"', "": '""', "ünï": '"ünï"', "a\u00a0b": '"a\u00a0b"'}


@pytest.mark.parametrize("value", BARE)
def test_values_every_reader_reads_bare_are_written_bare(tmp_path, value):
    assert _netrc.is_bare(value) and _netrc.quote_token(value) == value
    after = _netrc.render_netrc(None, spec(login="me", password=value))
    assert after == ("machine target.example login me password %s\n" % value).encode()
    assert python_reads(tmp_path, after)[0][TARGET] == ("me", "", value)
    assert _netrc.quoting_warning("password", value) is None


@pytest.mark.parametrize("value, written", sorted(QUOTED.items()))
def test_values_without_a_bare_form_are_quoted(tmp_path, value, written):
    assert not _netrc.is_bare(value) and _netrc.quote_token(value) == written
    after = _netrc.render_netrc(None, spec(login="me", password=value))
    assert after == ("machine target.example login me password %s\n" % written).encode()
    assert python_reads(tmp_path, after)[0][TARGET] == ("me", "", value)


def test_quoting_warning_names_the_readers_and_how_they_fail():
    spaced = _netrc.quoting_warning("password", "sp ace")
    assert spaced.startswith("password must be written quoted in the .netrc (it holds a space or tab)")
    assert "rattler (pixi, py-rattler) and Python 3.10 and older" in spaced
    assert "reject the whole file" in spaced and "curl before 7.84 read the quotes" in spaced
    hashed = _netrc.quoting_warning("entries[2].password", "#lead")
    assert hashed.startswith("entries[2].password must be written quoted in the .netrc (it starts with #)")
    assert "whole file" not in hashed
    assert "rattler (pixi, py-rattler) and Python 3.10 and older" in hashed and "read the quotes as part" in hashed
    unicode = _netrc.quoting_warning("account", "ünï")
    assert "(it holds a non-ASCII character)" in unicode
    assert "but Python 3.10 and older (their netrc module, so conda, requests and pip running on them) reject the " \
           "whole file" in unicode
    assert "rattler (pixi, py-rattler) and curl before 7.84 read the quotes" in unicode
    # netrc-rs splits on Unicode whitespace: a no-break space makes rattler reject the file too.
    assert "rattler (pixi, py-rattler) and Python 3.10" in _netrc.quoting_warning("password", "a\u00a0b")
    assert "(it is empty)" in _netrc.quoting_warning("password", "")
    assert "(it holds a backslash)" in _netrc.quoting_warning("password", "a\\b")


def test_quoting_warnings_name_each_option_of_the_task():
    params = dict(state="present", entries=[dict(machine="a", password="plain#ok", login="sp ace"),
                                            dict(default=True, password="#x", account="ok")])
    warnings = _netrc.quoting_warnings(params)
    assert [warning.split(" ", 1)[0] for warning in warnings] == ["entries[1].login", "entries[2].password"]
    assert _netrc.quoting_warnings(dict(state="absent", machine="a", password="sp ace", entries=None)) == []
    single = _netrc.quoting_warnings(dict(state="present", machine="a", login="u", password="ch#an@l:pw/%9",
                                          account=None, entries=None))
    assert single == []


def test_a_value_quoted_by_an_older_version_is_rewritten_bare_once():
    before = b'# kept\nmachine target.example\n  login "me"\n  password "ch#an@l:pw/%9"\nmachine other login o\n'
    plan = _netrc.plan_netrc(before, spec(login="me", password="ch#an@l:pw/%9"))
    assert plan.after == b"# kept\nmachine target.example\n  login me\n  password ch#an@l:pw/%9\nmachine other login o\n"
    assert _netrc.plan_netrc(plan.after, spec(login="me", password="ch#an@l:pw/%9")).after == plan.after


def test_a_quoted_machine_name_is_rewritten_bare():
    before = b'machine "target.example" login me password pw\n'
    assert _netrc.render_netrc(before, spec(login="me", password="pw")) == b"machine target.example login me password pw\n"


@pytest.mark.parametrize("written", ['"sp ace"', '"sp\\ ace"'])
def test_a_quoted_value_that_must_stay_quoted_is_left_as_written(written):
    before = ("machine target.example login me password %s\n" % written).encode()
    assert _netrc.render_netrc(before, spec(login="me", password="sp ace")) == before


@pytest.mark.parametrize("written, value, rewritten", [
    ("back\\slash", "backslash", "backslash"),  # Python reads 'backslash', curl and rattler 'back\slash'
    ("#lead", "#lead", '"#lead"'),              # curl 7.84-7.88 reads a comment
    ("ünï", "ünï", '"ünï"'),                    # curl 8.14 ends the token at the first non-ASCII byte
])
def test_a_bare_value_in_a_form_some_reader_misreads_is_rewritten(written, value, rewritten):
    before = ("machine target.example login me password %s\n" % written).encode()
    after = _netrc.render_netrc(before, spec(login="me", password=value))
    assert after == ("machine target.example login me password %s\n" % rewritten).encode()


def test_account_is_a_secret_in_both_forms_of_the_options():
    options = _netrc.argument_spec()
    assert options["account"]["no_log"] is True
    assert options["entries"]["options"]["account"]["no_log"] is True
