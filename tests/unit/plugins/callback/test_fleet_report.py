# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The fleet report's pure half: aggregation, masking, HTML escaping, JUnit, atomic files.

The results fed in have the shape conda_proxy_info and conda_proxy return (their RETURN docs); the browser
and a real playbook run are in tests/integration/test_fleet_report.py.
"""

from __future__ import annotations

import json
import os
import re
import stat
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from urllib.parse import quote

import pytest

from ansible_collections.condafleet.proxy.plugins.callback import fleet_report as fr
from ansible_collections.condafleet.proxy.plugins.module_utils._proxyurl import MASK

PROXY = "http://proxy.corp.example:3128"
# A password that needs percent-encoding in a URL: its encoded and its decoded form must both stay out.
PASSWORD = "Pa55@word:/%x"
ENCODED = quote(PASSWORD, safe="")
PROXY_WITH_PASSWORD = "http://fleet:%s@proxy.corp.example:3128" % ENCODED


def info(user="alice", outcome="ok", status=200, failed=False, conflicts=(), warnings=(), repodata=None,
         packages=None, problems=None, files=("/etc/conda/.condarc",)):
    """A conda_proxy_info result (masked, as the module returns it)."""
    route = {"proxy": "http://fleet:********@proxy.corp.example:3128", "source": "condarc",
             "setting": "proxy_servers http"}
    probe = {"url": "http://channel.example/c/noarch/repodata.json", "proxy": route["proxy"], "source": "condarc",
             "setting": "proxy_servers http", "used_for": ["repodata", "packages"], "outcome": outcome}
    if status:
        probe["status"] = status
    result = {
        "changed": False, "user": user, "condarc_files": list(files),
        "proxy_servers": {"http": route["proxy"]}, "ssl_verify": None, "environment": {},
        "warnings_found": list(warnings), "conflicts": list(conflicts),
        "requests": {"repodata": repodata or route, "packages": packages or route},
        "probe": probe, "probes": [probe], "conda": {"path": None, "found_by": None, "proxy_servers": None},
    }
    if failed:
        result["failed"] = True
        result["problems"] = problems or ["%s through %s: %s" % (probe["url"], route["proxy"], outcome)]
        result["msg"] = "; ".join(result["problems"])
    return result


def build(*results, title="fleet"):
    report = fr.FleetReport()
    for host, kind, result, failed in results:
        if kind == "unreachable":
            report.add_unreachable(host, "Put conda behind the proxy", result)
        else:
            report.add_result(host, "Put conda behind the proxy", kind, result, failed)
    return report.build(title, generated="2026-01-01T00:00:00Z")


def statuses(report):
    return {(h["host"], e["account"]): e["status"] for h in report["hosts"] for e in h["accounts"]}


# -------------------------------------------------------------------------------- aggregation


def test_role_task_with_verify_gives_one_entry_per_account():
    result = {"changed": True, "verify": [info("alice"), info("bob", outcome="proxy_auth_required", status=407,
                                                              failed=True)],
              "failed": True, "msg": "verify of bob: ..."}
    report = build(("h1", fr.CONDA_PROXY, result, True))
    assert statuses(report) == {("h1", "bob"): "probe_failed", ("h1", "alice"): "ok"}
    host = report["hosts"][0]
    assert host["status"] == "probe_failed"
    assert [e["account"] for e in host["accounts"]] == ["bob", "alice"]  # problems first within a host too
    alice = host["accounts"][1]
    assert alice["repodata"] == {"proxy": "http://fleet:********@proxy.corp.example:3128", "source": "condarc",
                                 "setting": "proxy_servers http"}
    assert alice["probe"]["outcome"] == "ok" and alice["condarc_files"] == ["/etc/conda/.condarc"]


def test_failure_before_verify_is_the_hosts_own_entry():
    result = {"changed": False, "failed": True, "msg": "condarc: scope=system with a literal password; nothing was changed"}
    report = build(("h2", fr.CONDA_PROXY, result, True))
    (entry,) = report["hosts"][0]["accounts"]
    assert entry["status"] == "failed" and entry["account"] is None and not entry["verified"]
    assert entry["problems"] == [result["msg"]]


def test_role_without_verify_is_ok_but_says_not_verified():
    report = build(("h3", fr.CONDA_PROXY, {"changed": True, "condarc": [], "env": [], "netrc": []}, False))
    (entry,) = report["hosts"][0]["accounts"]
    assert entry["status"] == "ok" and not entry["verified"]
    assert "not verified" in fr.render_html(report)


def test_looped_info_tasks_give_each_item_and_leave_skipped_out():
    result = {"changed": False, "results": [info("alice"), info("bob", conflicts=[{
        "scheme": "https", "variable": "https_proxy", "environment": "http://old:3128", "proxy_servers": PROXY}]),
        {"skipped": True, "item": "carol"}]}
    report = build(("h1", fr.CONDA_PROXY_INFO, result, False))
    assert statuses(report) == {("h1", "bob"): "warning", ("h1", "alice"): "ok"}
    bob = report["hosts"][0]["accounts"][0]
    assert "https_proxy is http://old:3128 but proxy_servers https is %s" % PROXY in bob["conflicts"][0]


def test_warnings_found_make_a_warning_and_a_failure_without_probe_is_failed():
    report = build(("h1", fr.CONDA_PROXY_INFO, info(warnings=["/home/alice/.condarc is not valid YAML: skipped"]), False),
                   ("h2", fr.CONDA_PROXY_INFO, info(outcome="ok", failed=True, problems=["conda reports other"]), True))
    assert statuses(report) == {("h1", "alice"): "warning", ("h2", "alice"): "failed"}


def test_hosts_are_grouped_problems_first_and_counted():
    report = build(
        ("ok1", fr.CONDA_PROXY_INFO, info(), False),
        ("warn", fr.CONDA_PROXY_INFO, info(warnings=["w"]), False),
        ("probe", fr.CONDA_PROXY_INFO, info(outcome="tls_error", status=None, failed=True), True),
        ("gone", "unreachable", {"unreachable": True, "msg": "ssh: connect to host gone port 22: No route"}, True),
        ("bad", fr.CONDA_PROXY, {"failed": True, "msg": "boom"}, True),
        ("ok0", fr.CONDA_PROXY_INFO, info(), False),
    )
    assert [(h["host"], h["status"]) for h in report["hosts"]] == [
        ("bad", "failed"), ("gone", "unreachable"), ("probe", "probe_failed"), ("warn", "warning"),
        ("ok0", "ok"), ("ok1", "ok")]
    assert report["counts"] == {"failed": 1, "unreachable": 1, "probe_failed": 1, "warning": 1, "ok": 2, "total": 6}
    page = fr.render_html(report)
    for status, count in report["counts"].items():
        # readable without JavaScript: the counts are in the page as written
        assert re.search(r'<li id="count-%s"[^>]*><span class="n">%d</span>' % (status, count), page), status
    groups = re.findall(r'<section class="group" id="group-(\w+)"', page)
    assert groups == ["failed", "unreachable", "probe_failed", "warning", "ok"]


def test_a_later_check_keeps_the_worst_status_and_fills_what_the_earlier_one_lacked():
    first = info(outcome="proxy_auth_required", status=407, failed=True)
    second = dict(info(), requests=None, probe=None, probes=[])  # no url: nothing about the route
    second.pop("requests")
    report = build(("h1", fr.CONDA_PROXY_INFO, first, True), ("h1", fr.CONDA_PROXY_INFO, second, False))
    (entry,) = report["hosts"][0]["accounts"]
    assert entry["status"] == "probe_failed" and entry["probe"]["status"] == 407 and entry["repodata"]


def test_unreachable_host_is_listed():
    report = build(("h9", "unreachable", {"unreachable": True, "msg": "Failed to connect to the host via ssh"}, True))
    assert report["hosts"][0]["status"] == "unreachable"
    assert report["hosts"][0]["accounts"][0]["problems"] == ["Failed to connect to the host via ssh"]


def test_task_kind_knows_the_modules_by_fqcn_and_short_name():
    assert fr.task_kind("condafleet.proxy.conda_proxy") == fr.CONDA_PROXY
    assert fr.task_kind("conda_proxy_info") == fr.CONDA_PROXY_INFO
    assert fr.task_kind("ansible.builtin.debug") is None and fr.task_kind(None) is None


# -------------------------------------------------------------------------------- masking


def _all_outputs(report):
    return fr.render_html(report) + fr.render_json(report) + fr.render_junit(report).decode("utf-8")


def test_a_password_seen_in_a_url_anywhere_never_reaches_any_file():
    leaky = info("alice", outcome="proxy_auth_required", status=407, failed=True,
                 problems=["the proxy refused %s (password %s)" % (PROXY_WITH_PASSWORD, PASSWORD)],
                 files=["/home/alice/.condarc"])
    leaky["environment"] = {"https_proxy": PROXY_WITH_PASSWORD}
    leaky["requests"]["repodata"] = {"proxy": PROXY_WITH_PASSWORD, "source": "env", "setting": "https_proxy"}
    # Only in a field the report does not show: the password is still known, and masked where it is shown.
    hidden = info("bob", failed=True, problems=["decoded: %s" % PASSWORD])
    hidden["invocation"] = {"module_args": {"url": "http://u:%s@proxy:3128" % ENCODED}}
    report = build(("h1", fr.CONDA_PROXY_INFO, leaky, True), ("h2", fr.CONDA_PROXY_INFO, hidden, True))
    text = _all_outputs(report)
    assert PASSWORD not in text and ENCODED not in text
    assert PASSWORD not in json.dumps(report) and ENCODED not in json.dumps(report)
    assert "http://fleet:%s@proxy.corp.example:3128" % MASK in text
    assert "decoded: %s" % MASK in text


def test_a_variable_reference_is_not_a_secret():
    result = info()
    result["proxy_servers"] = {"http": "http://fleet:${PROXY_PASS}@proxy:3128"}
    result["problems"] = ["PROXY_PASS is not set"]
    report = build(("h1", fr.CONDA_PROXY_INFO, result, True))
    assert "${PROXY_PASS}" in fr.render_json(report)


# -------------------------------------------------------------------------------- escaping


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags = []
        self.attributes = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attributes.extend(attrs)


HOSTILE = '"><script>alert(1)</script><img src=x onerror=alert(2)>'


def test_every_value_an_account_controls_is_escaped():
    result = info(user="<script>alert('user')</script>", outcome="http_error", status=404, failed=True,
                  files=["/home/eve/.condarc" + HOSTILE],
                  problems=["</td></tr></table><script>document.title='owned'</script>"],
                  warnings=["<iframe src=https://evil.example/>"],
                  conflicts=[{"scheme": "https", "variable": "https_proxy", "environment": HOSTILE,
                              "proxy_servers": "<b>x</b>"}])
    result["requests"]["repodata"] = {"proxy": "http://proxy:3128/" + HOSTILE, "source": "env", "setting": HOSTILE}
    report = build(("h<1>" + HOSTILE, fr.CONDA_PROXY_INFO, result, True), title="<title>" + HOSTILE)
    page = fr.render_html(report)
    parser = _Tags()
    parser.feed(page)
    assert parser.tags.count("script") == 1  # the report's own
    assert not {"img", "iframe", "b"} & set(parser.tags)
    assert not [name for name, _value in parser.attributes if name.startswith("on")]
    assert "&lt;script&gt;alert(&#x27;user&#x27;)&lt;/script&gt;" in page
    assert "&lt;iframe src=https://evil.example/&gt;" in page
    # nothing the page refers to lies outside it: every href is an anchor of the page, there is no src at all
    assert {name for name, _value in parser.attributes if name in ("src", "href")} <= {"href"}
    assert all(value.startswith("#") for name, value in parser.attributes if name == "href")


def test_the_page_forbids_every_external_resource():
    page = fr.render_html(build(("h1", fr.CONDA_PROXY_INFO, info(), False)))
    csp = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]+)">', page).group(1)
    assert "default-src 'none'" in csp and "connect-src" not in csp
    assert re.findall(r"<(?:link|img|iframe|object|embed)\b", page) == []


# -------------------------------------------------------------------------------- JUnit


def test_junit_has_one_case_per_host_and_account_and_a_failure_for_each_problem():
    result = {"verify": [info("alice"), info("bob", outcome="proxy_auth_required", status=407, failed=True)],
              "failed": True, "msg": "verify of bob"}
    report = build(("h1", fr.CONDA_PROXY, result, True), ("h2", fr.CONDA_PROXY_INFO, info(warnings=["w"]), False),
                   ("h3", "unreachable", {"msg": "no route"}, True))
    root = ET.fromstring(fr.render_junit(report))
    assert root.tag == "testsuites" and root.get("tests") == "4" and root.get("failures") == "3"
    (suite,) = root.findall("testsuite")
    cases = {(c.get("classname"), c.get("name")): c for c in suite.findall("testcase")}
    assert sorted(cases) == [("h1", "alice"), ("h1", "bob"), ("h2", "alice"), ("h3", "(connecting account)")]
    assert cases[("h1", "alice")].find("failure") is None
    assert cases[("h1", "bob")].find("failure").get("type") == "probe_failed"
    assert cases[("h2", "alice")].find("failure").get("type") == "warning"
    assert cases[("h3", "(connecting account)")].find("failure").get("type") == "unreachable"
    assert "repodata: http://fleet:********@proxy.corp.example:3128 (proxy_servers http, condarc)" in \
        cases[("h1", "alice")].find("system-out").text


def test_junit_stays_valid_xml_with_control_characters_and_markup():
    result = info(user="a\x01b", failed=True, problems=["bad \x00 \x1b[31m <tag> & ]]> done"])
    data = fr.render_junit(build(("h1", fr.CONDA_PROXY_INFO, result, True)))
    root = ET.fromstring(data)
    failure = root.find("testsuite/testcase/failure")
    assert "<tag> & ]]> done" in failure.text and "\x00" not in failure.text


# -------------------------------------------------------------------------------- files


def test_files_are_written_atomically_with_the_mode_and_the_directory_is_made(tmp_path):
    directory = tmp_path / "made" / "here"
    report = build(("h1", fr.CONDA_PROXY_INFO, info(), False))
    paths = fr.write_report(report, str(directory), ["html", "json", "junit"], 0o644)
    names = ["fleet-report.html", "fleet-report.json", "fleet-report.junit.xml"]
    assert sorted(os.path.basename(p) for p in paths) == names
    for path in paths:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert json.loads((directory / "fleet-report.json").read_text())["counts"]["ok"] == 1
    # a second run replaces the files; no temporary file stays; another mode when configured
    fr.write_report(report, str(directory), ["json"], 0o600)
    assert stat.S_IMODE(os.stat(directory / "fleet-report.json").st_mode) == 0o600
    assert sorted(os.listdir(directory)) == names


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path, monkeypatch):
    (tmp_path / "fleet-report.json").write_text("old")

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fr.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        fr.write_atomically(str(tmp_path), "fleet-report.json", b"new", 0o644)
    assert os.listdir(tmp_path) == ["fleet-report.json"]
    assert (tmp_path / "fleet-report.json").read_text() == "old"


@pytest.mark.parametrize("value, expected", [("0644", 0o644), ("600", 0o600), ("0640", 0o640)])
def test_mode_is_an_octal_string(value, expected):
    assert fr.parse_mode(value) == expected


@pytest.mark.parametrize("value", ["rw-r--r--", "0999", "", "0o644"])
def test_a_bad_mode_is_refused(value):
    with pytest.raises(ValueError, match="octal"):
        fr.parse_mode(value)


def test_a_hidden_result_says_so():
    report = build(("h1", fr.CONDA_PROXY_INFO, {"censored": "hidden", "changed": False}, False))
    (entry,) = report["hosts"][0]["accounts"]
    assert entry["status"] == "ok" and not entry["verified"]
    assert entry["problems"] == ["the task's result is hidden (no_log: true)"]


# -------------------------------------------------------------------------------- the callback itself


class _Result:
    """What ansible-core hands a callback: the task, the host and the result dict."""

    def __init__(self, task, host, result):
        self._task, self._host, self._result = task, host, result
        self.result = result


def test_the_callback_collects_only_its_tasks_and_writes_at_the_end(tmp_path, monkeypatch):
    from ansible.inventory.host import Host
    from ansible.playbook.task import Task
    from ansible.plugins.loader import callback_loader

    monkeypatch.setenv("CONDAFLEET_FLEET_REPORT_DIR", str(tmp_path / "out"))
    monkeypatch.setenv("CONDAFLEET_FLEET_REPORT_FORMATS", "json")
    monkeypatch.setenv("CONDAFLEET_FLEET_REPORT_MODE", "0600")
    callback = callback_loader.get("condafleet.proxy.fleet_report")
    assert callback is not None and callback.CALLBACK_NEEDS_ENABLED
    callback.set_options()

    def task(action, name):
        return Task.load({"name": name, action: {}})

    info_task = task("condafleet.proxy.conda_proxy_info", "Show the proxy")
    callback.v2_runner_on_ok(_Result(info_task, Host("h1"), info()))
    callback.v2_runner_on_failed(_Result(task("condafleet.proxy.conda_proxy", "Role"), Host("h2"), {"failed": True, "msg": "no"}))
    callback.v2_runner_on_ok(_Result(task("ansible.builtin.debug", "Other"), Host("h3"), {"msg": PROXY_WITH_PASSWORD}))
    callback.v2_runner_on_unreachable(_Result(task("ansible.builtin.ping", "Ping"), Host("h4"), {"msg": "down"}))
    callback.v2_playbook_on_stats(None)

    path = tmp_path / "out" / "fleet-report.json"
    assert os.listdir(tmp_path / "out") == ["fleet-report.json"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    report = json.loads(path.read_text())
    listed = [(h["host"], h["status"]) for h in report["hosts"]]
    assert listed == [("h2", "failed"), ("h4", "unreachable"), ("h1", "ok")]
    assert report["hosts"][2]["accounts"][0]["task"] == "Show the proxy"


def test_the_file_that_set_the_proxy_is_shown_when_the_module_names_it():
    result = info()
    result["requests"]["packages"] = {"proxy": PROXY, "source": "condarc", "setting": "proxy_servers http",
                                      "file": "/etc/conda/.condarc"}
    page = fr.render_html(build(("h1", fr.CONDA_PROXY_INFO, result, False)))
    assert "from proxy_servers http in /etc/conda/.condarc" in page
    assert "from proxy_servers http (.condarc)" in page  # repodata: the module did not say which file
