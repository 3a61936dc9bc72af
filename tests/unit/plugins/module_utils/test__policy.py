# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The channel and package policy keys (condarc_policy): validation against conda's rules, rendering of scalar,
list and map keys, and byte preservation — with and without PyYAML.

Rendered files are read back with ruamel.yaml's round-trip loader (what conda reads with), and ``#!final`` is read
the way conda reads it; the ``exclude_newer`` rules are cross-checked with real conda's own parser when the real
conda of the lab is installed.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
from collections import OrderedDict

import pytest
import yaml
from ruamel.yaml import YAML

from ansible_collections.condafleet.proxy.plugins.module_utils import _condarc, _policy
from ansible_collections.condafleet.proxy.plugins.module_utils._condarc import ParseError, render_keys
from ansible_collections.condafleet.proxy.plugins.module_utils._policy import PolicySpecError, render_policy

REAL_CONDA_PYTHON = "/var/cache/condafleet-lab/real-conda/bin/python"
EXISTING = (b"\xef\xbb\xbf# team settings\r\nchannels:\r\n  - conda-forge\r\n\r\nauto_update_conda: false  #!final\r\n"
            b"proxy_servers:  #!final\r\n  https: http://p:3128\r\n# trailing comment\r\n")


@pytest.fixture(params=[True, False], ids=["pyyaml", "stdlib"])
def pyyaml(request, monkeypatch):
    monkeypatch.setattr(_condarc, "HAS_PYYAML", request.param)
    return request.param


def spec(**params):
    return _policy.spec_from_params(params)


def ruamel_load(data: bytes):
    return YAML(typ="rt").load(io.StringIO(data.decode("utf-8-sig")))


def conda_final(data: bytes, key: str) -> bool:
    """conda's reading of a key's flag (YamlRawParameter._get_yaml_key_comment + ParameterFlag)."""
    try:
        return ruamel_load(data).ca.items[key][2].value.strip() == "#!final"
    except (AttributeError, KeyError, TypeError):
        return False


def plain(data):
    if isinstance(data, dict):
        return {k: plain(v) for k, v in data.items()}
    if isinstance(data, list):
        return [plain(v) for v in data]
    return data


LOCKED = dict(channels=["https://repo.example.com/conda-forge"], allowlist_channels=["https://repo.example.com/conda-forge"],
              channel_priority="strict", safety_checks="enabled", final=True)


# --------------------------------------------------------------------------------------------
# rendering and byte preservation


def test_present_appends_every_key_and_absent_restores_the_original_bytes(pyyaml):
    wanted = spec(**dict(LOCKED, disallowed_packages=["pycrypto"], custom_channels={"internal": "https://r.example/p"},
                         exclude_newer="7d", extra_safety_checks=True, channel_alias="https://r.example/conda",
                         default_channels=["https://r.example/main"], denylist_channels=["conda-forge"]))
    after = render_policy(EXISTING, wanted)
    # channels is replaced where it was; the new keys go to the end in the documented order; CRLF, BOM kept
    assert after == (
        b"\xef\xbb\xbf# team settings\r\nchannels:  #!final\r\n  - https://repo.example.com/conda-forge\r\n\r\n"
        b"auto_update_conda: false  #!final\r\nproxy_servers:  #!final\r\n  https: http://p:3128\r\n"
        b"# trailing comment\r\n"
        b"default_channels:  #!final\r\n  - https://r.example/main\r\n"
        b"channel_alias: https://r.example/conda  #!final\r\n"
        b"custom_channels:  #!final\r\n  internal: https://r.example/p\r\n"
        b"allowlist_channels:  #!final\r\n  - https://repo.example.com/conda-forge\r\n"
        b"denylist_channels:  #!final\r\n  - conda-forge\r\n"
        b"disallowed_packages:  #!final\r\n  - pycrypto\r\n"
        b"channel_priority: strict  #!final\r\nsafety_checks: enabled  #!final\r\n"
        b"extra_safety_checks: true  #!final\r\nexclude_newer: '7d'  #!final\r\n")
    loaded = plain(ruamel_load(after))
    assert loaded["exclude_newer"] == "7d" and loaded["extra_safety_checks"] is True
    assert loaded["custom_channels"] == {"internal": "https://r.example/p"}
    assert loaded["auto_update_conda"] is False and loaded["proxy_servers"] == {"https": "http://p:3128"}
    for key in wanted.values:
        assert conda_final(after, key), key
    assert render_policy(after, wanted) is after  # idempotent: the very same object, nothing rendered

    # absent of the keys appended gives the original back, except channels, which was the file's own key
    appended = [key for key in wanted.values if key != "channels"]
    removed = render_policy(after, spec(state="absent", **{key: [] for key in appended}))
    assert removed == EXISTING.replace(b"channels:\r\n  - conda-forge", b"channels:  #!final\r\n  - "
                                       b"https://repo.example.com/conda-forge")


def test_absent_on_a_file_that_had_none_of_the_keys_gives_the_exact_bytes_back(pyyaml):
    original = b"# mine\nssl_verify: true   # keep\nchannels:\n- defaults  #!top\n"  # a list at column 0
    wanted = spec(**LOCKED)
    after = render_policy(original.replace(b"channels:\n- defaults  #!top\n", b""), wanted)
    assert render_policy(after, spec(state="absent", channels=[], allowlist_channels=[], channel_priority="x",
                                     safety_checks="x")) == b"# mine\nssl_verify: true   # keep\n"
    # and the channels list at column 0 is read as the list it is: same value, no rewrite
    same = spec(channels=["defaults"])
    assert render_policy(original, same) is original


def test_existing_flow_style_values_that_say_the_same_are_left_alone(pyyaml):
    data = (b"channels: [https://repo.example.com/cf, conda-forge]\ncustom_channels: {internal: 'https://r/p'}\n"
            b"channel_priority: 'strict'\nexclude_newer: \"7d\"\nextra_safety_checks: True\n")
    wanted = spec(channels=["https://repo.example.com/cf", "conda-forge"], custom_channels={"internal": "https://r/p"},
                  channel_priority="strict", exclude_newer="7d", extra_safety_checks=True)
    assert render_policy(data, wanted) is data


def test_a_changed_value_is_replaced_in_place_with_the_file_indentation(pyyaml):
    data = b"a: 1\nchannels:    # ours\n    - old\n    # about old\n    - older\nb: 2\n"
    after = render_policy(data, spec(channels=["new", "https://x.example/c"]))
    assert after == b"a: 1\nchannels:\n    - new\n    - https://x.example/c\nb: 2\n"


def test_order_matters_for_lists_but_not_for_maps(pyyaml):
    data = b"channels:\n  - a\n  - b\ncustom_channels:\n  second: https://y\n  first: https://x\n"
    assert render_policy(data, spec(custom_channels={"first": "https://x", "second": "https://y"})) is data
    assert render_policy(data, spec(channels=["b", "a"])) == (
        b"channels:\n  - b\n  - a\ncustom_channels:\n  second: https://y\n  first: https://x\n")


def test_final_list_locks_only_the_keys_named_and_unlocks_the_others(pyyaml):
    data = b"channel_priority: flexible  #!final\nsafety_checks: warn\n"
    after = render_policy(data, spec(channel_priority="flexible", safety_checks="enabled", final=["safety_checks"]))
    assert after == b"channel_priority: flexible\nsafety_checks: enabled  #!final\n"
    assert not conda_final(after, "channel_priority") and conda_final(after, "safety_checks")
    # a marker conda cannot see (a comment line follows the scalar): the key moves to the end, where it can
    hidden = b"safety_checks: enabled  #!final\n# comment conda glues onto the marker\nother: 1\n"
    assert not conda_final(hidden, "safety_checks")
    moved = render_policy(hidden, spec(safety_checks="enabled", final=True))
    assert moved == b"# comment conda glues onto the marker\nother: 1\nsafety_checks: enabled  #!final\n"
    assert conda_final(moved, "safety_checks")
    # a block list's marker is seen whatever follows
    block = b"channels:  #!final\n  - a\n# comment\n"
    assert conda_final(block, "channels") and render_policy(block, spec(channels=["a"], final=True)) is block


def test_empty_list_and_map_and_ambiguous_scalars_read_back_as_written(pyyaml):
    after = render_policy(None, spec(allowlist_channels=[], custom_channels={}, disallowed_packages=["yes", "1.0"],
                                     channels=["on", "null"], exclude_newer=604800))
    assert after == (b"channels:\n  - 'on'\n  - 'null'\ncustom_channels: {}\nallowlist_channels: []\n"
                     b"disallowed_packages:\n  - 'yes'\n  - '1.0'\nexclude_newer: '604800'\n")
    assert plain(ruamel_load(after)) == yaml.safe_load(after) == {
        "channels": ["on", "null"], "custom_channels": {}, "allowlist_channels": [],
        "disallowed_packages": ["yes", "1.0"], "exclude_newer": "604800"}
    assert render_policy(after, spec(allowlist_channels=[], custom_channels={}, disallowed_packages=["yes", "1.0"],
                                     channels=["on", "null"], exclude_newer="604800")) is after


def test_absent_removes_only_the_keys_named_and_deletes_an_emptied_file(pyyaml):
    data = b"channels:\n  - a\nsafety_checks: enabled  #!final\n"
    assert render_policy(data, spec(state="absent", safety_checks="enabled")) == b"channels:\n  - a\n"
    assert render_policy(data, spec(state="absent", safety_checks="x", channels=[])) is None
    assert render_policy(None, spec(state="absent", channels=[])) is None


@pytest.mark.parametrize("content, line", [
    (b"channels:\n\t- a\n", 2),
    (b"channels: [a\n", 1),
    (b"channels: 1\nchannels: 2\n", 2),
    (b"- a\n- b\n", 1),
    (b"a: 'unterminated\n", 1),
    (b"\xff\xfe", 1),
])
def test_an_unparsable_file_is_refused_with_its_line(pyyaml, content, line):
    with pytest.raises(ParseError) as caught:
        render_policy(content, spec(**LOCKED))
    assert caught.value.line == line


def test_render_keys_is_generic_and_read_keys_reads_what_it_wrote(pyyaml):
    wanted = OrderedDict([("pinned_packages", ["python 3.12.*"]), ("envs_dirs", ["/opt/envs"]),
                          ("report_errors", False)])
    after = render_keys(b"x: 1\n", wanted, final=["envs_dirs"])
    assert after == (b"x: 1\npinned_packages:\n  - 'python 3.12.*'\nenvs_dirs:  #!final\n  - /opt/envs\n"
                     b"report_errors: false\n")
    assert _condarc.read_keys(after, ["envs_dirs", "report_errors", "x", "missing"]) == {
        "envs_dirs": (["/opt/envs"], True), "report_errors": (False, False), "x": (None if not pyyaml else 1, False)}


def test_proxy_servers_rendering_is_unchanged_by_the_generic_renderer():
    """The generic renderer writes proxy_servers as condarc_proxy does (condarc_proxy still uses its own)."""
    servers = OrderedDict([("http", "http://p:1"), ("https://repo.example.com", "")])
    proxy = _condarc.render_condarc(None, _condarc.spec_from_params(dict(http="http://p:1", bypass=["repo.example.com"],
                                                                         final=True)))
    generic = render_keys(None, OrderedDict([("proxy_servers", OrderedDict(
        [("http", "http://p:1"), ("http://repo.example.com", ""), ("https://repo.example.com", "")]))]),
        final=["proxy_servers"])
    assert proxy == generic
    assert servers  # the same quoting of 'scheme://host' keys


# --------------------------------------------------------------------------------------------
# validation: what conda would refuse or misread


@pytest.mark.parametrize("params, message", [
    (dict(channel_alias="repo.example.com/conda"), "needs a scheme"),
    (dict(custom_channels={"internal": "repo.example.com"}), "needs a scheme"),
    (dict(channels=["repo.example.com/conda-forge"]), "looks like a host without a scheme"),
    (dict(allowlist_channels=["localhost:8000/ch"]), "looks like a host without a scheme"),
    (dict(denylist_channels=["HTTPS://x.example/c"]), "lower-case scheme"),
    (dict(default_channels=["a", "a"]), "twice"),
    (dict(channels="conda-forge"), "must be a list"),
    (dict(channels=[""]), "empty value"),
    (dict(channels=[" a"]), "white space"),
    (dict(channels=["a\nb: c"]), "control character"),
    (dict(channels=["a b"]), "not a channel name"),
    (dict(custom_channels={"a:b": "https://x"}), "must be a channel name"),
    (dict(custom_channels=["x"]), "dictionary"),
    (dict(channel_priority="strictest"), "strict, flexible, disabled"),
    (dict(channel_priority=True), "strict, flexible, disabled"),
    (dict(safety_checks="paranoid"), "disabled, warn, enabled"),
    (dict(extra_safety_checks="maybe"), "true or false"),
    (dict(disallowed_packages=["a&b"]), "not a package name"),
    (dict(exclude_newer="7x"), "not a duration"),
    (dict(exclude_newer="1w 2"), "not a duration conda reads"),
    (dict(exclude_newer=-1), "negative"),
    (dict(exclude_newer=True), "expected a string"),
    (dict(exclude_newer="2026-02-30"), "not a date"),
    (dict(exclude_newer="P"), "empty ISO 8601"),
    (dict(channels=["a"], final=["safety_checks"]), "not set by this task"),
    (dict(channels=["a"], final=["proxy_servers"]), "not one of"),
    (dict(channels=["a"], final=3), "true, false or a list"),
    (dict(), "at least one of"),
    (dict(state="absent"), "at least one of"),
    (dict(channels=["a"], scope="system", path="/x"), "mutually exclusive"),
    (dict(channels=["a"], scope="prefix"), "needs prefix"),
])
def test_values_conda_would_refuse_or_misread_are_refused(params, message):
    with pytest.raises(PolicySpecError) as caught:
        _policy.spec_from_params(params)
    assert message in str(caught.value)


@pytest.mark.parametrize("value", ["conda-forge", "pkgs/main", "defaults", "https://repo.example.com/c",
                                   "http://127.0.0.1:8000/c", "file:///srv/channel", "/srv/channel", "~/channel",
                                   "C:\\channels\\x", "${CHANNEL_URL}/c", "s3://bucket/channel"])
def test_channel_forms_conda_reads_as_meant_are_accepted(value):
    assert _policy.spec_from_params(dict(channels=[value], allowlist_channels=[value])).values["channels"] == [value]


EXCLUDE_NEWER = ["7d", "2w 3d", "12h", "30m", "45s", "1W2D", "P7D", "p2w", "PT12H", "P1DT2H3M4S", "604800", "0",
                 "2026-04-01", "2026-04-01T12:00:00Z", "2026-04-01T12:00:00+02:00", "2026-04-01 12:00",
                 "7x", "7d x", "P", "PT", "P1Y", "20260401", "2026-13-01", "-1", "tomorrow", "1.5d"]


def test_exclude_newer_accepts_exactly_what_conda_parses():
    """Each value against conda's own parser (real conda's ``_CutoffParser``); skipped without the lab's conda."""
    if not os.access(REAL_CONDA_PYTHON, os.X_OK):
        pytest.skip("real conda not installed at %s" % REAL_CONDA_PYTHON)
    script = ("import json, sys\nfrom conda.core.exclude_newer import _CutoffParser\np = _CutoffParser(now=2e9)\n"
              "out = {}\nfor v in json.loads(sys.argv[1]):\n    try:\n        p.cutoff(v); out[v] = True\n"
              "    except Exception:\n        out[v] = False\nprint(json.dumps(out))\n")
    proc = subprocess.run([REAL_CONDA_PYTHON, "-c", script, json.dumps(EXCLUDE_NEWER)], capture_output=True,
                          text=True, timeout=60, check=True)
    conda = json.loads(proc.stdout)
    ours = {}
    for value in EXCLUDE_NEWER:
        try:
            _policy.exclude_newer(value)
            ours[value] = True
        except PolicySpecError:
            ours[value] = False
    # conda parses "-1" as a duration and refuses it as negative; both refuse
    assert ours == conda


def test_absent_values_only_name_the_keys():
    absent = _policy.spec_from_params(dict(state="absent", safety_checks="nonsense", channels=[]))
    assert absent.remove == ["channels", "safety_checks"] and absent.values == {}
    assert _policy.policy_result(absent) == {"policy": {}, "keys": ["channels", "safety_checks"], "final": []}


def test_a_key_whose_anchor_another_key_uses_is_refused_not_broken(pyyaml):
    """Replacing ``channels: &ch`` would leave ``*ch`` undefined: refused with both lines, with PyYAML or without."""
    data = b"channels: &ch\n  - a\nallowlist_channels: *ch\n"
    with pytest.raises(ParseError) as caught:
        render_policy(data, spec(channels=["b"]))
    assert caught.value.line == 1 and "line 3 uses an alias" in str(caught.value)
    with pytest.raises(ParseError):
        render_policy(data, spec(state="absent", channels=[]))
    # the key holding the alias may change: nothing else refers to it
    assert render_policy(data, spec(allowlist_channels=["c"])) == b"channels: &ch\n  - a\nallowlist_channels:\n  - c\n"


def test_variable_references_are_written_for_conda_to_expand(pyyaml):
    after = render_policy(None, spec(channels=["${CORP_CHANNELS}/conda-forge"], channel_alias="${CORP_ALIAS}"))
    assert after == b"channels:\n  - '${CORP_CHANNELS}/conda-forge'\nchannel_alias: '${CORP_ALIAS}'\n"
    assert plain(ruamel_load(after)) == {"channels": ["${CORP_CHANNELS}/conda-forge"], "channel_alias": "${CORP_ALIAS}"}
