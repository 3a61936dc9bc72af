# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The fleet report of a real playbook run on the lab, read back as JSON, as JUnit and in a real browser.

One playbook runs the conda_proxy role with verify (real conda on the hosts that can run it) and then a looped
conda_proxy_info on a lab of its own, the callback condafleet.proxy.fleet_report enabled. The fleet is made to
show every kind of host: h1 is configured right; h2 gets a wrong proxy password (squid answers 407); bob on h3
has a .condarc conda cannot parse, with markup in it; h4 does not exist. Then headless Chromium opens the page:
the counts its script renders, the table it sorts, the same page with JavaScript off, and every request the
page made (none; a canary page proves the check sees them).

Set FLEET_REPORT_SCREENSHOT=<path> to keep the screenshot (docs/images/fleet-report.png is made that way).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from urllib.parse import quote

import pytest

import lab as labmod  # tests/lab, put on sys.path by conftest.py

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.xdist_group("fleet_report")]

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--host-resolver-rules=MAP * ~NOTFOUND"]
EXPECTED = {"h1": "ok", "h2": "probe_failed", "h3": "warning", "h4": "unreachable"}

PLAYBOOK = r"""---
- name: Put conda behind the lab's proxy and verify it as each account
  hosts: all
  gather_facts: false
  vars:
    conda_proxy_http: "{{ lab_proxy_url }}"
    conda_proxy_username: "{{ lab_proxy_username }}"
    conda_proxy_password: "{{ fleet_report_proxy_password | default(lab_proxy_password) }}"
    conda_proxy_world_readable_password: true
    conda_proxy_users: "{{ lab_users }}"
    conda_proxy_netrc_entries:
      - machine: "{{ lab_channel_repodata_url | urlsplit('hostname') }}"
        login: "{{ lab_channel_login }}"
        password: "{{ lab_channel_password }}"
    conda_proxy_verify: true
    conda_proxy_verify_url: "{{ lab_channel_repodata_url }}"
    conda_proxy_verify_conda_executable: "{{ lab_real_conda if inventory_hostname in lab_real_conda_hosts else '' }}"
  pre_tasks:
    - name: Give bob on h3 a .condarc conda cannot parse, with markup in it
      ansible.builtin.copy:
        dest: /home/bob/.condarc
        content: "proxy_servers: [<script>alert('bob')</script>\nchannels: {{ '{' }}\n"
        owner: bob
        mode: "0644"
      when: inventory_hostname == 'h3'
  roles:
    - role: condafleet.proxy.conda_proxy

- name: Ask each account's view again
  hosts: all
  gather_facts: false
  tasks:
    - name: Show which proxy conda uses as each account
      condafleet.proxy.conda_proxy_info:
        user: "{{ item }}"
        url: "{{ lab_channel_repodata_url }}"
      loop: "{{ lab_users }}"
"""


def chromium(*args: str, profile: str, timeout: int = 90) -> subprocess.CompletedProcess:
    """Headless Chromium with a profile of its own, every host name unresolvable."""
    return subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, "--user-data-dir=" + profile, *args], capture_output=True,
                          text=True, timeout=timeout, check=False)


def page_requests(netlog: str) -> list[str]:
    """The URLs a page asked for, from Chromium's net log: the browser's own requests have no origin."""
    with open(netlog) as handle:
        log = json.load(handle)
    names = {number: name for name, number in log["constants"]["logEventTypes"].items()}
    return [event["params"].get("url") for event in log["events"]
            if names.get(event["type"]) == "URL_REQUEST_START_JOB"
            and event.get("params", {}).get("initiator") not in (None, "not an origin")]


@pytest.fixture(scope="module")
def fleet_run(tmp_path_factory):
    """The lab up, the playbook run with the callback; the report's directory, the lab's variables, the secrets."""
    if labmod.unavailable():
        pytest.skip(labmod.unavailable())
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip("chromium is not installed (apt: chromium)")
    base = tmp_path_factory.mktemp("fleet_report")
    state_dir = str(base / "lab")
    state = labmod.up(state_dir)
    try:
        lab_vars = labmod.lab_vars(state)
        wrong = "Wr0ng@%s:%%/#%s" % (secrets.token_hex(3), secrets.token_hex(2))
        net = state["subnet"].rsplit(".", 1)[0]
        extra = base / "broken.yml"
        extra.write_text(json.dumps({"all": {"hosts": {
            "h2": {"fleet_report_proxy_password": wrong},
            "h4": {"ansible_host": "%s.99" % net, "ansible_ssh_timeout": 5},
        }}}))
        playbook = base / "playbook.yml"
        playbook.write_text(PLAYBOOK)
        report_dir = base / "report"
        env = dict(os.environ, PATH=BIN + os.pathsep + os.environ.get("PATH", ""),
                   ANSIBLE_COLLECTIONS_PATH=os.path.join(REPO, "collections"),
                   ANSIBLE_CALLBACKS_ENABLED="condafleet.proxy.fleet_report",
                   CONDAFLEET_FLEET_REPORT_DIR=str(report_dir), CONDAFLEET_FLEET_REPORT_TITLE="conda proxy: lab fleet",
                   ANSIBLE_HOST_KEY_CHECKING="0", ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="0")
        proc = subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", state["inventory"], "-i", str(extra),
                               str(playbook)], cwd=str(base), env=env, capture_output=True, text=True, timeout=900,
                              check=False)
        output = proc.stdout + proc.stderr
        assert proc.returncode != 0, output[-20000:]  # h2 failed and h4 was unreachable, on purpose
        assert "Fleet report: %s" % report_dir in output, output[-20000:]
        with open(lab_vars["lab_proxy_access_log"]) as handle:
            access_log = handle.read()
        yield {"dir": report_dir, "vars": lab_vars, "state": state, "output": output, "access_log": access_log,
               "secrets": [lab_vars["lab_proxy_password"], quote(lab_vars["lab_proxy_password"], safe=""), wrong,
                           quote(wrong, safe=""), lab_vars["lab_channel_password"]],
               "profile": str(base / "chromium")}
    finally:
        report = labmod.down(state_dir)
        assert not report["leftovers"], report


def _report(fleet_run) -> dict:
    with open(fleet_run["dir"] / "fleet-report.json") as handle:
        return json.load(handle)


def test_the_three_files_are_written_with_mode_0644(fleet_run):
    for name in ("fleet-report.html", "fleet-report.json", "fleet-report.junit.xml"):
        path = fleet_run["dir"] / name
        assert oct(os.stat(path).st_mode & 0o7777) == "0o644", name
    assert sorted(os.listdir(fleet_run["dir"])) == ["fleet-report.html", "fleet-report.json", "fleet-report.junit.xml"]


def test_json_lists_every_host_with_its_status_problems_first(fleet_run):
    report = _report(fleet_run)
    assert [(h["host"], h["status"]) for h in report["hosts"]] == sorted(
        EXPECTED.items(), key=lambda item: ("failed", "unreachable", "probe_failed", "warning", "ok").index(item[1]))
    assert report["counts"] == {"failed": 0, "unreachable": 1, "probe_failed": 1, "warning": 1, "ok": 1, "total": 4}
    hosts = {h["host"]: {e["account"]: e for e in h["accounts"]} for h in report["hosts"]}
    proxy = fleet_run["vars"]["lab_proxy_url"].split("://", 1)[1]
    masked = "http://%s:********@%s" % (fleet_run["vars"]["lab_proxy_username"], proxy)

    # h1: both accounts, through the lab's squid; repodata by the env variable, packages by proxy_servers
    assert sorted(hosts["h1"]) == ["alice", "bob"]
    for entry in hosts["h1"].values():
        assert entry["status"] == "ok", entry
        assert entry["repodata"] == {"proxy": masked, "source": "env", "setting": "http_proxy"}
        assert entry["packages"] == {"proxy": masked, "source": "condarc", "setting": "proxy_servers http"}
        assert entry["probe"]["outcome"] == "ok" and entry["probe"]["status"] == 200
        assert entry["condarc_files"] == ["/etc/conda/.condarc"]
        if fleet_run["vars"]["lab_real_conda"]:
            assert entry["conda"] == fleet_run["vars"]["lab_real_conda"]  # real conda was asked too

    # h2: the wrong password; squid refused it
    alice = hosts["h2"]["alice"]
    assert alice["status"] == "probe_failed"
    assert alice["probe"]["outcome"] == "proxy_auth_required" and alice["probe"]["status"] == 407
    assert any("407" in problem for problem in alice["problems"])
    address = fleet_run["state"]["hosts"]["h2"]["address"]
    assert re.search(r"^\S+\s+\S+\s+%s TCP_DENIED/407 " % re.escape(address), fleet_run["access_log"], re.M)

    # h3: bob's .condarc is skipped by conda, with a warning; alice is fine
    assert hosts["h3"]["alice"]["status"] == "ok"
    assert hosts["h3"]["bob"]["status"] == "warning"
    assert any("/home/bob/.condarc" in warning for warning in hosts["h3"]["bob"]["warnings"])

    # h4: never reached
    (entry,) = hosts["h4"].values()
    assert entry["status"] == "unreachable" and entry["problems"]


def test_junit_has_a_case_per_host_and_account_failing_for_the_problems(fleet_run):
    root = ET.parse(str(fleet_run["dir"] / "fleet-report.junit.xml")).getroot()
    cases = {(c.get("classname"), c.get("name")): c for c in root.iter("testcase")}
    assert sorted(cases) == [("h1", "alice"), ("h1", "bob"), ("h2", "alice"), ("h3", "alice"), ("h3", "bob"),
                             ("h4", "(connecting account)")]
    failing = {key: case.find("failure").get("type") for key, case in cases.items() if case.find("failure") is not None}
    assert failing == {("h2", "alice"): "probe_failed", ("h3", "bob"): "warning",
                       ("h4", "(connecting account)"): "unreachable"}
    assert root.get("tests") == "6" and root.get("failures") == "3"


def test_no_secret_reaches_any_file(fleet_run):
    for name in ("fleet-report.html", "fleet-report.json", "fleet-report.junit.xml"):
        with open(fleet_run["dir"] / name, encoding="utf-8") as handle:
            text = handle.read()
        for secret in fleet_run["secrets"]:
            assert secret not in text, name
        assert "********" in text, name


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.counts = {}
        self.rendered = {}
        self.scripts = 0
        self.references = []
        self.root = {}
        self.rows = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "html":
            self.root = attrs
        if tag == "script":
            self.scripts += 1
        if tag == "li" and (attrs.get("id") or "").startswith("count-"):
            self.rendered[attrs["id"][6:]] = attrs.get("data-rendered")
        if tag == "tr" and "data-host" in attrs:
            self.rows.append(attrs["data-host"])
        self.references.extend(value for name, value in attrs.items() if name in ("src", "href", "action", "data"))


def _parse(text: str) -> _Page:
    page = _Page()
    page.feed(text)
    return page


def test_chromium_renders_the_counts_and_loads_nothing(fleet_run):
    html_file = fleet_run["dir"] / "fleet-report.html"
    netlog = str(fleet_run["dir"].parent / "netlog.json")
    proc = chromium("--log-net-log=" + netlog, "--dump-dom", html_file.as_uri(), profile=fleet_run["profile"])
    assert proc.returncode == 0 and "<table" in proc.stdout, proc.stderr[-3000:]
    page = _parse(proc.stdout)
    assert page.root.get("data-report") == "ready"  # the script ran to its end
    counts = _report(fleet_run)["counts"]
    assert page.rendered == {status: str(count) for status, count in counts.items()}
    assert page.scripts == 1  # bob's <script> came through as text
    assert "alert('bob')" not in "".join(re.findall(r"<script>(.*?)</script>", proc.stdout, re.S))
    assert all(reference.startswith("#") for reference in page.references), page.references
    assert page_requests(netlog) == []

    # The check sees a page's requests: a canary page that asks for three resources, each caught.
    canary = fleet_run["dir"].parent / "canary.html"
    canary.write_text('<!DOCTYPE html><img src="http://canary.invalid/a.png">'
                      '<link rel="stylesheet" href="https://canary.invalid/b.css">'
                      '<script>fetch("http://canary.invalid/c")</script>')
    canary_log = str(fleet_run["dir"].parent / "canary-netlog.json")
    chromium("--log-net-log=" + canary_log, "--dump-dom", canary.as_uri(), profile=fleet_run["profile"] + "-canary")
    assert sorted(page_requests(canary_log)) == ["http://canary.invalid/a.png", "http://canary.invalid/c",
                                                 "https://canary.invalid/b.css"]


def test_the_table_sorts_and_reads_without_javascript(fleet_run):
    uri = (fleet_run["dir"] / "fleet-report.html").as_uri()
    default = _parse(chromium("--dump-dom", uri, profile=fleet_run["profile"]).stdout)
    assert default.rows == ["h4", "h2", "h3", "h3", "h1", "h1"]  # problems first
    by_host = _parse(chromium("--dump-dom", uri + "#sort=-host", profile=fleet_run["profile"]).stdout)
    assert by_host.rows == ["h4", "h3", "h3", "h2", "h1", "h1"]
    # JavaScript off: the same page with a policy that refuses its script (--dump-dom itself needs JavaScript).
    with open(fleet_run["dir"] / "fleet-report.html", encoding="utf-8") as handle:
        text = handle.read()
    assert text.count("script-src 'unsafe-inline'") == 1
    no_script = fleet_run["dir"].parent / "no-script.html"
    no_script.write_text(text.replace("script-src 'unsafe-inline'", "script-src 'none'"), encoding="utf-8")
    off = chromium("--dump-dom", no_script.as_uri(), profile=fleet_run["profile"]).stdout
    page = _parse(off)
    assert page.root.get("data-report") is None and page.rows == default.rows  # the script did not run
    counts = _report(fleet_run)["counts"]
    for status, count in counts.items():
        assert re.search(r'<li id="count-%s"[^>]*><span class="n">%d</span>' % (status, count), off), status


def test_screenshot(fleet_run):
    shot = fleet_run["dir"].parent / "fleet-report.png"
    proc = chromium("--screenshot=%s" % shot, "--window-size=1280,900", "--hide-scrollbars",
                    (fleet_run["dir"] / "fleet-report.html").as_uri(), profile=fleet_run["profile"])
    assert proc.returncode == 0 and shot.stat().st_size > 10000, proc.stderr[-3000:]
    keep = os.environ.get("FLEET_REPORT_SCREENSHOT")
    if keep:
        shutil.copyfile(str(shot), keep)
