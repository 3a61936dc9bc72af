# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The pure .condarc logic: options, scanner, rendering — with and without PyYAML.

Every rendered file is read back by the real consumers (PyYAML, and ruamel.yaml's
round-trip loader, which conda uses), never only compared as strings.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from urllib.parse import unquote, urlsplit

import pytest

from timing import finishes_within  # tests/support
import yaml
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from ansible_collections.condafleet.proxy.plugins.module_utils import _condarc
from ansible_collections.condafleet.proxy.plugins.module_utils._condarc import (
    CondarcSpecError,
    ParseError,
    render_condarc,
    render_scalar,
    spec_from_params,
)

HOSTILE_PASSWORDS = [
    "p@ss:w/rd",
    "100%#sure",
    "with space",
    "it's \"quoted\"",
    "$(touch /tmp/pwned)",
    "`id`;ls",
    "back\\slash",
    "ünïcødé-密码",
    "a@b:c%d#e/f g",
]


@pytest.fixture(params=[True, False], ids=["pyyaml", "stdlib"])
def pyyaml(request, monkeypatch):
    """Run a test with the PyYAML validation and without it (the stdlib-only managed node)."""
    monkeypatch.setattr(_condarc, "HAS_PYYAML", request.param)
    return request.param


def spec(**params):
    return spec_from_params(params)


def ruamel_load(data: bytes):
    """Load like conda does: ruamel.yaml's round-trip loader."""
    return YAML(typ="rt").load(io.StringIO(data.decode("utf-8-sig")))


def conda_key_flag(data: bytes, key: str):
    """conda's reading of a key's ``#!`` flag (YamlRawParameter._get_yaml_key_comment + ParameterFlag)."""
    loaded = ruamel_load(data)
    try:
        comment = loaded.ca.items[key][2].value.strip()
    except (AttributeError, KeyError, TypeError):
        return None
    flag = comment.strip("!#")
    return flag if flag in ("final", "top", "bottom") else None


def plain(data):
    """ruamel's CommentedMap/Seq to plain dict/list for comparisons."""
    if isinstance(data, dict):
        return {k: plain(v) for k, v in data.items()}
    if isinstance(data, list):
        return [plain(v) for v in data]
    return data


# --------------------------------------------------------------------------------------------
# options


class TestSpec:
    def test_maps_every_proxy_option(self):
        s = spec(http="http://proxy:3128", https="http://proxy:3128", servers={"HTTPS://Repo.Example.com": "http://p2:8080"},
                 bypass=["localhost", "10.0.0.5"])
        assert list(s.proxy_servers.items()) == [
            ("http", "http://proxy:3128"),
            ("https", "http://proxy:3128"),
            ("https://repo.example.com", "http://p2:8080"),
            ("http://localhost", ""),
            ("https://localhost", ""),
            ("http://10.0.0.5", ""),
            ("https://10.0.0.5", ""),
        ]
        assert s.ssl_verify is None and s.final is False and s.scope == "user"

    @pytest.mark.parametrize("password", HOSTILE_PASSWORDS)
    def test_credentials_are_percent_encoded_into_every_url(self, password):
        s = spec(http="http://proxy:3128", servers={"https://h.example": "http://p2:1"}, bypass=["direct.example"],
                 proxy_username="us er@corp", proxy_password=password)
        for key in ("http", "https://h.example"):
            parts = urlsplit(s.proxy_servers[key])
            assert unquote(parts.username) == "us er@corp"
            assert unquote(parts.password) == password
            assert parts.hostname in ("proxy", "p2")
        assert s.proxy_servers["http://direct.example"] == ""
        assert password in s.secrets
        assert s.has_literal_password
        assert password not in s.mask(repr(dict(s.proxy_servers)))

    def test_password_reference_stays_a_reference(self):
        s = spec(https="http://proxy:3128", proxy_username="svc", proxy_password="${PROXY_PASS}")
        assert s.proxy_servers["https"] == "http://svc:${PROXY_PASS}@proxy:3128"
        assert s.secrets == [] and not s.has_literal_password

    def test_password_embedded_in_url_is_a_secret(self):
        s = spec(http="http://u:s%40cret@proxy:3128")
        assert set(s.secrets) == {"s%40cret", "s@cret"}
        assert "s%40cret" not in s.mask("http://u:s%40cret@proxy:3128")

    @pytest.mark.parametrize(
        "params, message",
        [
            (dict(http="http://proxy\n:3128"), "http contains a control character"),
            (dict(http="http://proxy\x00:3128"), "http contains a control character"),
            (dict(https="http://pro xy:3128"), "https must not contain spaces"),
            (dict(http="ftp://proxy"), "http must be a URL"),
            (dict(http="proxy:3128"), "http must be a URL"),
            (dict(http="http://proxy:3128/path"), "must not have a path"),
            (dict(http="http://proxy:99999"), "invalid port"),
            (dict(servers={"https://h.example:443": "http://p:1"}), "not an exact host"),
            (dict(servers={"https://*.example": "http://p:1"}), "not an exact host"),
            (dict(servers={"ftp://h.example": "http://p:1"}), "must be 'http://host' or 'https://host'"),
            (dict(servers={"https": "http://p:1"}), "use the https option"),
            (dict(servers={"https://h.example": ""}), "use bypass"),
            (dict(servers={"https://h.example": "http://p:1\nx: 1"}), "control character"),
            (dict(bypass=[".corp.example"]), "condafleet.proxy.env_proxy's no_proxy"),
            (dict(bypass=["*.corp.example"]), "condafleet.proxy.env_proxy's no_proxy"),
            (dict(bypass=["host\nevil: 1"]), "control character"),
            (dict(http="http://p:1", servers={"http://h.example": "http://q:1"}, bypass=["h.example"]), "both in servers and in bypass"),
            (dict(http="http://p:1", proxy_password="x"), "proxy_password needs proxy_username"),
            (dict(http="http://a:b@p:1", proxy_username="u", proxy_password="x"), "already holds credentials"),
            (dict(http="http://p:1", proxy_username="u", proxy_password="a\nb"), "proxy_password contains a control"),
            (dict(http="http://p:1", scope="system", path="/x"), "mutually exclusive"),
            (dict(http="http://p:1", scope="prefix"), "needs prefix"),
            (dict(http="http://p:1", prefix="/opt/conda"), "only used with scope=prefix"),
            (dict(), "needs at least one of"),
            (dict(ssl_verify="relative/ca.pem"), "absolute path"),
            (dict(ssl_verify="%APPDATA%\\ca.pem"), "absolute path"),
            (dict(ssl_verify="/etc/ca\n.pem"), "control character"),
            (dict(ssl_verify=["x"]), "ssl_verify must be"),
        ],
    )
    def test_bad_options_name_the_option(self, params, message):
        with pytest.raises(ValueError, match=None) as info:
            spec_from_params(params)
        assert message in str(info.value)
        assert "s3cret" not in str(info.value)

    @pytest.mark.parametrize(
        "given, normal",
        [(True, True), (False, False), ("yes", True), ("false", False), ("truststore", "truststore"),
         ("/etc/ssl/ca.pem", "/etc/ssl/ca.pem"), ("C:/ProgramData/ca.pem", "C:/ProgramData/ca.pem"), ("", None), (None, None),
         # ~ is expanded to the configured account's home by the module / action plugin before writing
         ("~/.conda/ca.pem", "~/.conda/ca.pem"), ("~alice/.conda/ca.pem", "~alice/.conda/ca.pem"),
         ("%USERPROFILE%\\.conda\\ca.pem", "%USERPROFILE%\\.conda\\ca.pem")],
    )
    def test_ssl_verify_values(self, given, normal):
        assert spec(http="http://p:1", ssl_verify=given).ssl_verify == normal

    def test_only_ssl_verify_leaves_proxy_servers_unmanaged(self):
        s = spec(ssl_verify=False)
        assert s.proxy_servers is None and s.manages_ssl_verify

    def test_paths(self):
        home = "/home/alice"
        assert _condarc.condarc_path(spec(http="http://p:1"), home) == "/home/alice/.condarc"
        assert _condarc.condarc_path(spec(http="http://p:1", scope="system"), home) == "/etc/conda/.condarc"
        assert _condarc.condarc_path(spec(http="http://p:1", scope="system"), home, "C:/ProgramData/conda") == "C:/ProgramData/conda/.condarc"
        assert _condarc.condarc_path(spec(http="http://p:1", scope="prefix", prefix="/opt/conda/"), home) == "/opt/conda/.condarc"
        assert _condarc.condarc_path(spec(http="http://p:1", path="~/.config/conda/condarc"), home) == "/home/alice/.config/conda/condarc"
        with pytest.raises(CondarcSpecError, match="must be absolute"):
            _condarc.condarc_path(spec(http="http://p:1", path="rel/condarc"), home)
        with pytest.raises(CondarcSpecError, match="use ~/"):
            _condarc.condarc_path(spec(http="http://p:1", path="~bob/.condarc"), home)


# --------------------------------------------------------------------------------------------
# scalars


@pytest.mark.parametrize(
    "value",
    ["http://proxy:3128", "http://u:p%40s@proxy:3128", "http://u:${PASS}@proxy:3128", "", "true", "null", "~", "123",
     "1e3", "0x1F", "12:30", "yes", "no", "on", "2024-01-01", "it's", 'say "hi"', "a: b", "a #b", "#x", "-x", "- x",
     "*alias", "&anchor", "!tag", "|", ">", "%x", "@x", "`x`", "[x]", "{x}", "x,y", "$(rm -rf /)", "back\\slash",
     "ünïcødé", "C:\\ca.pem", "/etc/ssl/ca.pem", "truststore", " lead", "trail ", "=", "<<", "?x", "? x"] + HOSTILE_PASSWORDS,
)
def test_render_scalar_reads_back_exactly(value):
    text = "k: %s\n" % render_scalar(value)
    assert yaml.safe_load(text) == {"k": value}
    assert plain(ruamel_load(text.encode())) == {"k": value}
    assert _condarc._read_scalar(render_scalar(value), "")[0] == value


def test_render_scalar_is_plain_when_unambiguous():
    assert render_scalar("http://proxy.example.com:3128") == "http://proxy.example.com:3128"
    assert render_scalar("/etc/ssl/ca.pem") == "/etc/ssl/ca.pem"
    assert render_scalar(True) == "true"
    assert render_scalar("it's") == "'it''s'"
    assert render_scalar("http://u:${P}@h:1") == "'http://u:${P}@h:1'"


# --------------------------------------------------------------------------------------------
# rendering


BASE = spec(http="http://proxy:3128", https="http://proxy:3128", bypass=["localhost"])
ABSENT = spec(state="absent")
ABSENT_ALL = spec(state="absent", ssl_verify=True)

ORIGINAL = (
    b"# conda settings for the build farm\n"
    b"channels:   # the order matters\n"
    b"  - conda-forge\n"
    b"  - 'defaults'\n"
    b"\n"
    b"auto_update_conda: false  #!final\n"
    b'envs_dirs: ["/opt/envs", \'~/envs\']\n'
    b"custom_multichannels:\n"
    b"  internal:\n"
    b"    - https://repo.internal/a\n"
    b"notes: |\n"
    b"  proxy_servers: not a key\n"
    b"  'unterminated\n"
    b"# trailing comment\n"
)


def test_new_file(pyyaml):
    after = render_condarc(None, BASE)
    assert after == (
        b"proxy_servers:\n"
        b"  http: http://proxy:3128\n"
        b"  https: http://proxy:3128\n"
        b"  'http://localhost': ''\n"
        b"  'https://localhost': ''\n"
    )
    assert yaml.safe_load(after) == {"proxy_servers": dict(BASE.proxy_servers)}
    assert plain(ruamel_load(after)) == {"proxy_servers": dict(BASE.proxy_servers)}
    assert render_condarc(after, BASE) == after
    assert render_condarc(after, ABSENT) is None


def test_existing_file_keeps_every_other_byte_and_round_trips(pyyaml):
    after = render_condarc(ORIGINAL, BASE)
    assert after.startswith(ORIGINAL)  # appended, nothing before it touched
    assert render_condarc(after, BASE) == after
    assert render_condarc(after, ABSENT) == ORIGINAL
    loaded = yaml.safe_load(after)
    assert loaded.pop("proxy_servers") == dict(BASE.proxy_servers)
    assert loaded == yaml.safe_load(ORIGINAL)


def test_existing_key_replaced_in_place(pyyaml):
    before = b"a: 1\nproxy_servers:\n  http: http://old:1\n  ftp: x\n# keep me\nb: 2\n"
    after = render_condarc(before, BASE)
    assert after == (
        b"a: 1\nproxy_servers:\n  http: http://proxy:3128\n  https: http://proxy:3128\n"
        b"  'http://localhost': ''\n  'https://localhost': ''\n# keep me\nb: 2\n"
    )
    assert render_condarc(after, ABSENT) == b"a: 1\n# keep me\nb: 2\n"


def test_existing_indentation_is_reused(pyyaml):
    before = b"proxy_servers:\n    http: http://old:1\n"
    assert render_condarc(before, spec(http="http://new:1")) == b"proxy_servers:\n    http: http://new:1\n"


@pytest.mark.parametrize(
    "before",
    [
        b"proxy_servers: {http: 'http://proxy:3128', https: \"http://proxy:3128\", 'http://localhost': '', \"https://localhost\": ''}\n",
        b"proxy_servers:   # set by IT\n  https: http://proxy:3128\n  http:   http://proxy:3128\n"
        b"  http://localhost: ''\n  'https://localhost': \"\"\n",
    ],
    ids=["flow", "block-other-order"],
)
def test_semantically_equal_value_is_not_rewritten(pyyaml, before):
    assert render_condarc(before, BASE) == before


def test_flow_style_that_differs_is_rewritten_as_block(pyyaml):
    before = b"proxy_servers: {http: 'http://old:1'}\nchannels: [a]\n"
    assert render_condarc(before, spec(http="http://new:1")) == b"proxy_servers:\n  http: http://new:1\nchannels: [a]\n"


def test_crlf_and_bom_are_kept(pyyaml):
    before = b"\xef\xbb\xbf# c\r\nchannels:\r\n  - a\r\n"
    after = render_condarc(before, spec(http="http://p:1", ssl_verify=False))
    assert after == b"\xef\xbb\xbf# c\r\nchannels:\r\n  - a\r\nproxy_servers:\r\n  http: http://p:1\r\nssl_verify: false\r\n"
    assert plain(ruamel_load(after)) == {"channels": ["a"], "proxy_servers": {"http": "http://p:1"}, "ssl_verify": False}
    assert render_condarc(after, ABSENT_ALL) == before


def test_file_without_final_newline_round_trips(pyyaml):
    before = b"channels:\n  - a"
    after = render_condarc(before, spec(http="http://p:1"))
    assert after == b"channels:\n  - a\nproxy_servers:\n  http: http://p:1"
    assert render_condarc(after, ABSENT) == before


def test_final_marker(pyyaml):
    s = spec(http="http://p:1", ssl_verify="truststore", final=True)
    after = render_condarc(b"a: 1\n", s)
    assert after == b"a: 1\nproxy_servers:  #!final\n  http: http://p:1\nssl_verify: truststore  #!final\n"
    assert conda_key_flag(after, "proxy_servers") == "final"
    assert conda_key_flag(after, "ssl_verify") == "final"
    assert render_condarc(after, s) == after
    # final=false takes the marker away again, the values stay
    unlocked = render_condarc(after, spec(http="http://p:1", ssl_verify="truststore"))
    assert unlocked == b"a: 1\nproxy_servers:\n  http: http://p:1\nssl_verify: truststore\n"
    assert conda_key_flag(unlocked, "proxy_servers") is None


def test_final_on_ssl_verify_followed_by_comments_is_moved_so_conda_sees_it(pyyaml):
    before = b"ssl_verify: true\n# a comment ruamel would glue onto the marker\nchannels: [a]\n"
    after = render_condarc(before, spec(ssl_verify=True, final=True))
    assert after == b"# a comment ruamel would glue onto the marker\nchannels: [a]\nssl_verify: true  #!final\n"
    assert conda_key_flag(after, "ssl_verify") == "final"
    # an in-place marker conda would not see counts as not final
    hidden = b"ssl_verify: true  #!final\n# comment\nchannels: [a]\n"
    assert conda_key_flag(hidden, "ssl_verify") is None
    assert conda_key_flag(render_condarc(hidden, spec(ssl_verify=True, final=True)), "ssl_verify") == "final"


def test_final_markers_of_other_keys_are_untouched(pyyaml):
    before = b"channels:  #!final\n  - a  #!top\n#!final\nauto_update_conda: false #!final\n"
    after = render_condarc(before, spec(http="http://p:1", final=True))
    assert conda_key_flag(after, "channels") == "final"
    assert render_condarc(after, ABSENT) == before


def test_ssl_verify_only_when_named(pyyaml):
    before = b"ssl_verify: /etc/ca.pem\n"
    after = render_condarc(before, spec(http="http://p:1"))
    assert after == b"ssl_verify: /etc/ca.pem\nproxy_servers:\n  http: http://p:1\n"
    assert render_condarc(after, ABSENT) == before
    assert render_condarc(after, ABSENT_ALL) is None
    assert render_condarc(before, spec(ssl_verify="/etc/other.pem")) == b"ssl_verify: /etc/other.pem\n"


def test_absent_on_missing_or_unrelated_file(pyyaml):
    assert render_condarc(None, ABSENT_ALL) is None
    assert render_condarc(b"", ABSENT_ALL) == b""
    assert render_condarc(b"channels: [a]\n", ABSENT_ALL) == b"channels: [a]\n"


@pytest.mark.parametrize(
    "before",
    [
        b"---\n# doc\nchannels: [a]\n...\n",
        b"%YAML 1.1\n---\nchannels: [a]\n",
        b"a: [1,\n2,\n  3]\nb: {x: 1,\n y: 'p,q'}\n",
        b"a: \"multi\nline: not a key\"\nb: 'x\n  y'\n",
        b"a: >-\n  folded\n   more\n\n  # content\nb: |+\n  keep\n\n",
        b"a: |2\n    indented\n  b\n",
        b"list:\n- x\n- y: 1\n  z: |\n    proxy_servers: {}\n",
        b"'quoted key': 1\n\"dq\\\"key\": 2\nkey with spaces: 3\nurl: http://x:1/#frag\n",
        b"a: &anc {x: 1}\nb: *anc\n<<: {m: 1}\n",
        b"c: !!str 1\nd: !custom x\n",
        b"e: x # comment 'with quote\nf: 'it''s'  # and \" another\n",
    ],
)
def test_tricky_but_valid_files_round_trip(pyyaml, before):
    after = render_condarc(before, BASE)
    assert render_condarc(after, BASE) == after
    assert render_condarc(after, ABSENT) == before
    loaded = ruamel_load(after)
    assert plain(loaded["proxy_servers"]) == dict(BASE.proxy_servers)
    if b"!custom" not in before:
        other = yaml.safe_load(after)
        other.pop("proxy_servers")
        assert other == (yaml.safe_load(before) or {})


@pytest.mark.parametrize("header", ["|", "|+", ">", "|-"])
def test_block_scalar_ending_the_file_without_newline_keeps_its_value(pyyaml, header):
    before = ("a: 1\nb: %s\n  text" % header).encode()
    after = render_condarc(before, spec(http="http://p:1"))
    assert after == ("a: 1\nproxy_servers:\n  http: http://p:1\nb: %s\n  text" % header).encode()
    assert yaml.safe_load(after)["b"] == yaml.safe_load(before)["b"]
    assert render_condarc(after, ABSENT) == before


def test_removing_a_key_after_a_block_scalar_keeps_the_scalar(pyyaml):
    # found by hypothesis: the owned key is last, without a final newline, after a block scalar
    before = b"e: |\n  text\nproxy_servers:\n  http: http://old:1"
    after = render_condarc(before, ABSENT)
    assert after == b"e: |\n  text\n"
    assert yaml.safe_load(after) == {"e": "text\n"} == {"e": yaml.safe_load(before)["e"]}


def test_comments_indented_under_an_owned_key_go_with_it(pyyaml):
    # found by hypothesis: left behind after a block scalar, they would become its text
    before = b"e: |\n  text\nssl_verify: false  #!final\n  # about ssl_verify\n# top-level comment\nb: 1\n"
    after = render_condarc(before, spec(ssl_verify="truststore", final=True))
    assert after == b"e: |\n  text\n# top-level comment\nb: 1\nssl_verify: truststore  #!final\n"
    assert yaml.safe_load(after)["e"] == "text\n"
    assert conda_key_flag(after, "ssl_verify") == "final"
    assert render_condarc(before, ABSENT_ALL) == b"e: |\n  text\n# top-level comment\nb: 1\n"


def test_keep_chomped_block_scalar_above_a_removed_key_is_refused(pyyaml):
    before = b"e: |+\n  text\nproxy_servers:\n  http: x\n\nb: 1\n"
    with pytest.raises(ParseError) as info:
        render_condarc(before, ABSENT)
    assert info.value.line == 3 and "block scalar" in str(info.value)


def test_document_end_marker_new_keys_go_before_it(pyyaml):
    after = render_condarc(b"a: 1\n...\n", spec(http="http://p:1"))
    assert after == b"a: 1\nproxy_servers:\n  http: http://p:1\n...\n"


def test_comments_inside_the_owned_block_are_part_of_it(pyyaml):
    before = b"proxy_servers:\n  # old proxy\n  http: http://old:1\n\nchannels: [a]\n"
    after = render_condarc(before, spec(http="http://p:1"))
    assert after == b"proxy_servers:\n  http: http://p:1\n\nchannels: [a]\n"


@pytest.mark.parametrize(
    "before, line, message",
    [
        (b"a: 1\nchannels:\n\t- x\n", 3, "tab character in indentation"),
        (b"a: 1\n\t# tab before a comment\n", 2, "tab character in indentation"),
        (b"a: 1\nb: 2\na: 3\n", 3, "duplicate top-level key 'a' (first on line 1)"),
        (b"a: 1\n'a': 3\n", 2, "duplicate top-level key"),
        (b"- a\n- b\n", 1, "must be a mapping"),
        (b"just a scalar\n", 1, "must be a mapping"),
        (b"[a, b]\n", 1, "must be a block mapping"),
        (b"a: 1\nb: 'open\n\nc: 2\n", 2, "unterminated single-quoted"),
        (b"a: \"open\n", 1, "unterminated double-quoted"),
        (b"a: [1, 2\nb: 1\n", 1, "unclosed"),
        (b"a: 1\n---\nb: 2\n", 2, "second YAML document"),
        (b"a: 1\n\xff\xfe\n", 2, "not valid UTF-8"),
        (b"a: 1\nb: \x01\n", 2, "control character"),
        (b"a: 1\rb: 2\n", 1, "carriage return"),
        (b"  a: 1\n", 1, "indented content before the first top-level key"),
        (b"a: |x\n  y\n", 1, "invalid block scalar header"),
        (b"? a\n: 1\n", 1, "explicit keys"),
    ],
)
def test_unparsable_files_are_refused_with_their_line(pyyaml, before, line, message):
    with pytest.raises(ParseError) as info:
        render_condarc(before, BASE)
    assert info.value.line == line
    assert message in str(info.value)


@pytest.mark.parametrize(
    "before, line",
    [
        (b"a:\n  x: 1\n  x: 2\n", 3),  # nested duplicate: conda's ruamel.yaml refuses it too
        (b"a: b: c\n", 1),
        (b"a: 1\n  b: 2\n", 2),
    ],
)
def test_pyyaml_catches_what_the_scanner_cannot(monkeypatch, before, line):
    monkeypatch.setattr(_condarc, "HAS_PYYAML", True)
    with pytest.raises(ParseError) as info:
        render_condarc(before, BASE)
    assert info.value.line == line


def test_module_util_works_with_pyyaml_really_missing(tmp_path):
    """Import _condarc in a fresh interpreter where ``import yaml`` fails, like a minimal managed node."""
    root = os.environ.get("ANSIBLE_COLLECTIONS_PATH", "").split(os.pathsep)[0] or os.path.join(os.getcwd(), "collections")
    code = (
        "import sys; sys.modules['yaml'] = None; sys.path.insert(0, %r)\n"
        "from ansible_collections.condafleet.proxy.plugins.module_utils import _condarc as c\n"
        "assert not c.HAS_PYYAML\n"
        "s = c.spec_from_params({'http': 'http://p:1'})\n"
        "out = c.render_condarc(b'a: 1\\n', s)\n"
        "assert out == b'a: 1\\nproxy_servers:\\n  http: http://p:1\\n', out\n"
        "try:\n    c.render_condarc(b'a: 1\\na: 2\\n', s)\nexcept c.ParseError as e:\n    print('refused', e.line)\n" % root
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "refused 2"


# --------------------------------------------------------------------------------------------
# property tests: random .condarc files keep every byte the module does not own

_key = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True).filter(lambda k: k not in _condarc.OWNED_KEYS and k not in (
    "y", "n", "yes", "no", "on", "off", "true", "false", "null"))
_word = st.sampled_from(["conda-forge", "defaults", "https://repo.internal/x", "1", "true", "~", "3.5", "a b c", "x:y"])
_text = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"), blacklist_characters="\ufeff\x85"), max_size=12)


@st.composite
def _scalar(draw):
    kind = draw(st.sampled_from(["plain", "single", "double"]))
    if kind == "plain":
        return draw(_word)
    value = draw(_text)
    if kind == "single":
        return "'%s'" % value.replace("'", "''")
    return '"%s"' % value.replace("\\", "\\\\").replace('"', '\\"')


@st.composite
def _entry(draw, key):
    kind = draw(st.sampled_from(["scalar", "block_list", "flow_list", "multiline_flow", "nested", "block_scalar", "multiline_quote"]))
    comment = draw(st.sampled_from(["", "  # note", "  #!final", " # it's"]))
    if kind == "scalar":
        return ["%s: %s%s" % (key, draw(_scalar()), comment)]
    if kind == "block_list":
        indent = draw(st.sampled_from(["", "  "]))
        items = draw(st.lists(_scalar(), min_size=1, max_size=3))
        return ["%s:%s" % (key, comment)] + ["%s- %s" % (indent, item) for item in items]
    if kind == "flow_list":
        return ["%s: [%s]%s" % (key, ", ".join(draw(st.lists(_scalar(), max_size=3))), comment)]
    if kind == "multiline_flow":
        items = draw(st.lists(_scalar(), min_size=2, max_size=4))
        indent = draw(st.sampled_from(["", "  "]))
        return ["%s: [%s," % (key, items[0])] + ["%s%s," % (indent, item) for item in items[1:-1]] + ["%s%s]" % (indent, items[-1])]
    if kind == "nested":
        inner = draw(st.lists(_key, min_size=1, max_size=3, unique=True))
        lines = ["%s:%s" % (key, comment)]
        for name in inner:
            lines.append("  %s: %s" % (name, draw(_scalar())))
        if draw(st.booleans()):
            lines.append("  # inner comment")
            lines.append("  deeper:")
            lines.append("    - %s" % draw(_scalar()))
        return lines
    if kind == "block_scalar":
        body = draw(st.lists(st.sampled_from(["proxy_servers: {}", "'unterminated", "# not a comment", "key: [", "text"]),
                             min_size=1, max_size=3))
        return ["%s: %s%s" % (key, draw(st.sampled_from(["|", ">", "|-", ">+"])), comment)] + ["  " + line for line in body]
    value = draw(_text)
    return ["%s: '%s" % (key, value.replace("'", "''")), "  continued'"]


@st.composite
def condarc_files(draw, with_owned=False):
    keys = draw(st.lists(_key, min_size=0, max_size=5, unique=True))
    blocks = [draw(_entry(key)) for key in keys]
    if with_owned:
        owned = [
            ["proxy_servers:", "  http: http://old:1"],
            ["proxy_servers: {http: 'http://proxy:3128', https: http://proxy:3128}"],
            ["ssl_verify: false  #!final"],
            ["ssl_verify: /etc/ssl/ca.pem"],
        ]
        for block in draw(st.lists(st.sampled_from(owned), max_size=2, unique_by=lambda b: b[0][:5])):
            blocks.insert(draw(st.integers(0, len(blocks))), block)
    lines = []
    if draw(st.booleans()):
        lines.append("# generated condarc")
    for block in blocks:
        lines.extend(block)
        lines.extend(draw(st.lists(st.sampled_from(["", "# between", "  # indented comment"]), max_size=2)))
    eol = draw(st.sampled_from(["\n", "\r\n"]))
    text = eol.join(lines)
    if lines and draw(st.booleans()):
        text += eol
    data = text.encode("utf-8")
    if draw(st.booleans()):
        data = _condarc.BOM + data
    return data


def _others(data):
    loaded = yaml.safe_load(data.decode("utf-8-sig")) if data else None
    loaded = dict(loaded or {})
    for key in _condarc.OWNED_KEYS:
        loaded.pop(key, None)
    return loaded


PROPERTY_SPEC = spec(http="http://proxy:3128", https="http://u:p%40ss@proxy:3128", bypass=["localhost"],
                     ssl_verify="truststore", final=True)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=condarc_files(), use_pyyaml=st.booleans())
def test_property_present_then_absent_restores_every_byte(monkeypatch, before, use_pyyaml):
    monkeypatch.setattr(_condarc, "HAS_PYYAML", use_pyyaml)
    after = render_condarc(before, PROPERTY_SPEC)
    assert render_condarc(after, PROPERTY_SPEC) == after
    restored = render_condarc(after, ABSENT_ALL)
    assert restored == (before if before else None)
    loaded = yaml.safe_load(after.decode("utf-8-sig"))
    assert loaded["proxy_servers"] == dict(PROPERTY_SPEC.proxy_servers)
    assert loaded["ssl_verify"] == "truststore"
    assert _others(after) == _others(before)
    rt = ruamel_load(after)
    assert plain(rt["proxy_servers"]) == dict(PROPERTY_SPEC.proxy_servers)
    assert conda_key_flag(after, "proxy_servers") == "final"
    assert conda_key_flag(after, "ssl_verify") == "final"


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=condarc_files(with_owned=True), use_pyyaml=st.booleans())
def test_property_owned_keys_anywhere_only_they_change(monkeypatch, before, use_pyyaml):
    monkeypatch.setattr(_condarc, "HAS_PYYAML", use_pyyaml)

    def render(data, wanted):
        try:
            return render_condarc(data, wanted)
        except ParseError as exc:
            # the one documented refusal: removing a key would grow a '|+' scalar's trailing blank lines
            assert "block scalar above it" in str(exc)
            reject()

    after = render(before, PROPERTY_SPEC)
    assert render(after, PROPERTY_SPEC) == after
    assert (render(after, ABSENT_ALL) or b"") == (render(before, ABSENT_ALL) or b"")
    assert _others(after) == _others(before)
    stripped = render(before, ABSENT_ALL)
    assert _others(stripped) == _others(before) if stripped else True
    loaded = yaml.safe_load(after.decode("utf-8-sig"))
    assert loaded["proxy_servers"] == dict(PROPERTY_SPEC.proxy_servers)
    assert conda_key_flag(after, "ssl_verify") == "final"


# --------------------------------------------------------------------------------------------
# Bounded input: YAML aliases, and what conda's ruamel.yaml refuses although libyaml accepts it


def alias_bomb(levels: int = 8, width: int = 15, owned: bool = False) -> bytes:
    """A few hundred bytes whose nested aliases stand for width**levels values."""
    lines = ["a0: &a0 [%s]" % ",".join(["x"] * width)]
    for level in range(1, levels + 1):
        lines.append("a%d: &a%d [%s]" % (level, level, ",".join(["*a%d" % (level - 1)] * width)))
    lines.append("proxy_servers: *a%d" % levels if owned else "proxy_servers:\n  http: http://old:1")
    return ("\n".join(lines) + "\n").encode()


@pytest.mark.parametrize("owned", [False, True], ids=["other-key", "owned-key"])
@pytest.mark.parametrize("call", ["parse", "read", "render", "remove"])
def test_alias_bomb_is_refused_at_once(owned, call):
    data = alias_bomb(owned=owned)
    assert len(data) < 700
    calls = {
        "parse": lambda: _condarc.parse_condarc(data),
        "read": lambda: _condarc.read_proxy_settings(data),
        "render": lambda: render_condarc(data, BASE),
        "remove": lambda: render_condarc(data, ABSENT),
    }
    with finishes_within(1.0), pytest.raises(ParseError) as info:
        calls[call]()
    assert info.value.line in range(5, 10)
    assert "alias" in str(info.value) and "conda would hang" in str(info.value)


def test_moderate_aliases_are_still_accepted(pyyaml):
    # conda reads anchors and aliases (ruamel.yaml); only an expansion past the bound is refused
    before = b"base: &proxy http://p:3128\nlist: &l [a, b]\nmore: [*l, *l, *l]\n"
    with finishes_within(1.0):
        after = render_condarc(before, BASE)
    assert after.startswith(before)
    assert ruamel_load(after)["more"] == [["a", "b"]] * 3


def test_recursive_alias_does_not_loop():
    with finishes_within(1.0):
        after = render_condarc(b"a: &a [x, *a]\n", BASE)
    assert after.startswith(b"a: &a [x, *a]\n")


@pytest.mark.parametrize("loader", ["CSafeLoader", "SafeLoader"])
@pytest.mark.parametrize(
    "data",
    [b"a: " + b"[" * 999 + b"]" * 999 + b"\n", b"proxy_servers: " + b"[" * 900 + b"]" * 900 + b"\n",
     b"a:\n  " + b"- " * 990 + b"x\n", b"a: " + b"{b: " * 5000 + b"}" * 5000 + b"\n"],
    ids=["flow-999", "owned-900", "block-990", "flow-5000"],
)
def test_deep_nesting_is_refused_not_a_recursion_error(monkeypatch, loader, data):
    # libyaml composes up to 1000 levels, then the recursive walks (and PyYAML without libyaml at once) raised
    # RecursionError: a traceback instead of a message. conda's ruamel.yaml fails around 1000 levels too.
    monkeypatch.setattr(_condarc, "_COMPOSE_LOADER", getattr(yaml, loader))
    for call in (lambda: render_condarc(data, BASE), lambda: _condarc.read_proxy_settings(data)):
        with finishes_within(1.0), pytest.raises(ParseError) as info:
            call()
        assert "nested" in str(info.value) or "nesting" in str(info.value)


# Each of these is accepted by libyaml (PyYAML's CSafeLoader, which the module composes with) and by the
# stdlib scanner before the fix, but refused by ruamel.yaml: conda skips the file with "Ignoring
# configuration file ... invalid yaml" (tabs) or fails with a traceback (the others), verified with
# CONDARC=<dir>/.condarc conda config --show proxy_servers (conda 26.7, ruamel.yaml 0.19.1).
RUAMEL_REFUSES = [
    (b"channels:\t[defaults]\n", 1),
    (b"a: 1\nssl_verify:\ttrue\n", 2),
    (b"ssl_verify: \ttrue\n", 1),
    (b"proxy_servers:\t#!final\n  http: http://p:1\n", 1),
    (b"proxy_servers:\n  http:\thttp://p:1\n", 2),
    (b"proxy_servers:\n  http:\t'http://p:1'\n", 2),
    (b"ssl_verify: true\t# comment\n", 1),
    (b"ssl_verify: true\t\n", 1),
    (b"ssl_verify\t: true\n", 1),
    (b"'ssl_verify'\t: true\n", 1),
    (b"a\tb: 1\n", 1),
    (b"x: a\tb\n", 1),
    (b"x:\n  - a\t\n", 2),
    (b"x: 'a'\t\n", 1),
    (b"x: [a]\t\n", 1),
    (b"proxy_servers: {http: http://p:1}\t\n", 1),
    (b"x: [a,\tb]\t# c\n", 1),
    (b"x: [a\tb]\n", 1),
    (b"---\t\nx: 1\n", 1),
    (b"x: &a\t1\n", 1),
    (b"x: !!str\t1\n", 1),
    (b"x: |\t\n  a\n", 1),
    (b"x: 1\n \t\ny: 2\n", 2),
    (b"x: |\n  a\n \t\n", 3),
    (b"a: &k key\nb:\n  *k: 1\n", 3),
    (b"b: &a {x: 1}\nc:\n  <<: *a\n  <<: *a\n", 4),
    (b"b: !!int abc\n", 1),
    (b"b: !!float abc\n", 1),
    (b"b: !!bool abc\n", 1),
    (b"s: >#-\n", 1),
    (b"s: |# comment\n  a\n", 1),
    (b"k: !!v!\n", 1),
    (b"z: {a: !!str, b: 1}\n", 1),
    (b"z: [a, !<tag:x>, b]\n", 1),
    (b"w: &a x\n<<: *a\n", 2),
    (b"w: &a [x]\nm:\n  <<: *a\n", 3),
]
# composed by PyYAML: the stdlib scanner alone does not see these
PYYAML_ONLY = (b"b: &a {x: 1}\nc:\n  <<: *a\n  <<: *a\n", b"b: !!int abc\n", b"b: !!float abc\n", b"b: !!bool abc\n",
               b"w: &a x\n<<: *a\n", b"w: &a [x]\nm:\n  <<: *a\n")


@pytest.mark.parametrize("before, line", RUAMEL_REFUSES)
def test_what_conda_refuses_is_refused_with_its_line(pyyaml, before, line):
    with pytest.raises(Exception):
        ruamel_load(before)  # the oracle: conda's loader refuses the file
    if not pyyaml and before in PYYAML_ONLY:
        pytest.skip("nested duplicates and tags need PyYAML's composer; the stdlib scanner does not see them")
    with pytest.raises(ParseError) as info:
        render_condarc(before, BASE)
    assert info.value.line == line
    with pytest.raises(ParseError):
        _condarc.read_proxy_settings(before)


@pytest.mark.parametrize(
    "before",
    [
        b"channels: [a,\tb]\n",
        b"x: {http:\thttp://p:1}\n",
        b"channels: [\ta, b\t]\n",
        b"channels: [a,\n\tb]\n",
        b"x: 'a\tb'\n",
        b"x: \"a\n\tb\"\n",
        b"x: 1 #\tcomment\t\n",
        b"x: |\n  a\tb\n  \tc\n",
        b"x: 'a\n\t\n  b'\n",
    ],
)
def test_tabs_conda_accepts_are_accepted(pyyaml, before):
    ruamel_load(before)  # the oracle: conda reads these
    after = render_condarc(before, BASE)
    assert after.startswith(before)
    assert plain(ruamel_load(after)["proxy_servers"]) == dict(BASE.proxy_servers)


@pytest.mark.parametrize(
    "other",
    [b"channels:\t[defaults]\n", b"s: >#-\n  x\n", b"k: !!v!\n", b"z: {a: !!str, b: 1}\n", b"w: &a x\n<<: *a\n",
     b"a: &k key\nb:\n  *k: 1\n", b"b: !!int abc\n"],
)
def test_real_conda_ignores_or_fails_on_what_is_refused(tmp_path, other):
    """The reason for refusing: conda itself ignores the whole file (and so the proxy in it), or fails."""
    import realconda  # tests/support, on sys.path from tests/conftest.py

    conda = realconda.require()
    condarc = tmp_path / ".condarc"
    condarc.write_bytes(b"proxy_servers:\n  http: http://p:3128\n" + other)
    proc = subprocess.run(
        [conda, "config", "--show", "proxy_servers", "--json"],
        env=dict(os.environ, CONDARC=str(condarc), HOME=str(tmp_path)),
        capture_output=True, text=True, timeout=120, check=False,
    )
    if proc.returncode == 0:
        assert "Ignoring configuration file" in proc.stderr and "invalid yaml" in proc.stderr
        assert json.loads(proc.stdout)["proxy_servers"] == {}
    else:  # conda fails on the file (a traceback from ruamel.yaml's parser or constructor, as JSON here)
        assert '"exception_name"' in proc.stdout or "ruamel.yaml" in proc.stderr
    with pytest.raises(ParseError) as info:
        render_condarc(condarc.read_bytes(), BASE)
    assert info.value.line >= 3


# --------------------------------------------------------------------------------------------
# Options: bounded in time, passwords found before validation, short ones never masked into other text

MB = 1024 * 1024


@pytest.mark.parametrize(
    "params",
    [
        dict(http="http://u:" + "S3cret" * (MB // 6) + "@proxy:3128"),
        dict(https="http://proxy:" + "1" * MB),
        dict(http="http://" + "a" * MB + ":3128"),
        dict(servers={"https://" + "a" * MB: "http://proxy:3128"}),
        dict(servers={"https://h%d.example" % i: "http://u:pw%d@proxy:3128" % i for i in range(5000)}),
        dict(bypass=["a" * MB]),
        dict(ssl_verify="/" + "a" * MB),
        dict(http="http://proxy:3128", proxy_username="u" * MB, proxy_password="p" * MB),
    ],
    ids=["password", "port", "host", "servers-key", "many-servers", "bypass", "ssl_verify", "credentials"],
)
def test_1mb_options_take_well_under_a_second(params):
    # Each case takes well under a second alone (5,000 servers about 0.5 s); the bound leaves room for a loaded
    # 2-core CI machine and still fails the quadratic code it guards against (minutes for these inputs).
    with finishes_within(2.0):
        try:
            made = spec_from_params(params)
        except ValueError as exc:
            assert len(str(exc)) < 300 and "S3cret" not in str(exc)
        else:
            render_condarc(b"channels: [defaults]\n", made)


def test_secrets_in_params_are_found_before_anything_is_validated():
    params = dict(http="http://u:s3cr3t/pa%20ss@proxy:3128", https="http://u:An%40therPw@proxy:1",
                  servers={"https://repo.example": "http://u:ServerPw9@p:1"}, proxy_password="Given/Pw")
    forms = _condarc.secrets_in_params(params)
    for form in ("s3cr3t/pa%20ss", "s3cr3t/pa ss", "An%40therPw", "An@therPw", "ServerPw9", "Given/Pw", "Given%2FPw"):
        assert form in forms
    with pytest.raises(CondarcSpecError) as info:
        spec_from_params(params)
    assert "s3cr3t" not in str(info.value) and "pa%20ss" not in str(info.value)


def test_a_raw_at_in_a_url_password_is_refused_not_written():
    with pytest.raises(CondarcSpecError) as info:
        spec_from_params(dict(http="http://u:p@ss@proxy.example:3128"))
    message = str(info.value)
    assert "http://********@proxy.example:3128" in message and "proxy_username/proxy_password" in message
    assert "p@ss" not in message and "ss@" not in message


def test_a_short_password_is_masked_in_its_url_and_nowhere_else():
    made = spec(http="http://proxy.example:3128", proxy_username="u", proxy_password="p")
    assert made.has_literal_password and made.secrets == []
    after = render_condarc(None, made).decode()
    assert made.mask(after) == "proxy_servers:\n  http: http://u:********@proxy.example:3128\n"
    assert spec(http="http://u:${PW}@proxy.example:3128").has_literal_password is False
