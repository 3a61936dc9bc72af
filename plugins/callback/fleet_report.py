# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
name: fleet_report
type: aggregate
short_description: Write one HTML page, JSON and JUnit XML saying which proxy conda uses on every host and account
version_added: 0.1.0
description:
  - Collects the results of the P(condafleet.proxy.conda_proxy#module) tasks (the role's one task included; with
    C(verify=true) they carry one M(condafleet.proxy.conda_proxy_info) outcome per account) and of the
    M(condafleet.proxy.conda_proxy_info) tasks (looped ones included) of a playbook run, and the hosts that were
    unreachable. At the end of the run it writes three files into O(directory).
  - C(fleet-report.html), one self-contained page (inline style and script, nothing loaded from anywhere, readable
    with JavaScript off). At the top, the number of hosts in each status; then the hosts grouped by status with the
    problems first (failed, unreachable, probe failed, conflicts or warnings, ok), and a sortable table with, for
    every host and account, the proxy conda uses for repodata and for packages and the file or variable that names
    it, the outcome of the probe request through it, and what is wrong.
  - C(fleet-report.json), the same data for scripts, and C(fleet-report.junit.xml), one test case per host and
    account, failing for every problem, for CI systems.
  - Adds no task to any play. Every value goes through the collection's masking of proxy passwords; a password
    seen in a proxy URL anywhere in a collected result is masked everywhere in the three files.
author:
  - condafleet maintainers (@condafleet)
requirements:
  - enable in configuration (C(callbacks_enabled = condafleet.proxy.fleet_report) in C([defaults]) of
    C(ansible.cfg), or C(ANSIBLE_CALLBACKS_ENABLED=condafleet.proxy.fleet_report))
options:
  directory:
    description:
      - The directory the three files are written to; created (mode C(0755)) when missing.
      - A relative path is relative to the directory C(ansible-playbook) runs in.
    type: path
    default: fleet-report
    env:
      - name: CONDAFLEET_FLEET_REPORT_DIR
    ini:
      - section: condafleet_fleet_report
        key: directory
  formats:
    description: Which files to write.
    type: list
    elements: str
    choices: [html, json, junit]
    default: [html, json, junit]
    env:
      - name: CONDAFLEET_FLEET_REPORT_FORMATS
    ini:
      - section: condafleet_fleet_report
        key: formats
  mode:
    description:
      - The permissions of the files written, as an octal string.
      - They hold no password, but they name every host, account and proxy of the fleet.
    type: str
    default: "0644"
    env:
      - name: CONDAFLEET_FLEET_REPORT_MODE
    ini:
      - section: condafleet_fleet_report
        key: mode
  title:
    description: The title of the HTML page and the name of the JUnit test suite.
    type: str
    default: conda proxy fleet report
    env:
      - name: CONDAFLEET_FLEET_REPORT_TITLE
    ini:
      - section: condafleet_fleet_report
        key: title
notes:
  - Each file is written to a temporary file in O(directory) and renamed over the old one, so a reader never sees
    half a report.
  - An ad-hoc C(ansible) command loads callbacks only with C(ANSIBLE_LOAD_CALLBACK_PLUGINS=1).
  - Hosts on which none of these tasks ran, and were not unreachable, are not listed.
seealso:
  - module: condafleet.proxy.conda_proxy_info
  - module: condafleet.proxy.conda_proxy
"""

import datetime
import html
import json
import os
import re
import tempfile
import xml.etree.ElementTree as ET

from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.callback import CallbackBase
from ansible_collections.condafleet.proxy.plugins.module_utils._proxyurl import mask_known, secrets_in

REPORT_FORMAT = 1
FILE_NAMES = {"html": "fleet-report.html", "json": "fleet-report.json", "junit": "fleet-report.junit.xml"}

# Problems first. A host has the status of its worst account.
STATUSES = ("failed", "unreachable", "probe_failed", "warning", "ok")
STATUS_LABELS = {
    "failed": "failed",
    "unreachable": "unreachable",
    "probe_failed": "probe failed",
    "warning": "conflicts or warnings",
    "ok": "ok",
}
RANK = {status: rank for rank, status in enumerate(STATUSES)}
SOURCE_LABELS = {"condarc": ".condarc", "env": "login environment", "wininet": "Windows Internet Settings"}

CONDA_PROXY = "condafleet.proxy.conda_proxy"
CONDA_PROXY_INFO = "condafleet.proxy.conda_proxy_info"
_TASK_KINDS = {
    CONDA_PROXY: CONDA_PROXY, "conda_proxy": CONDA_PROXY,
    CONDA_PROXY_INFO: CONDA_PROXY_INFO, "conda_proxy_info": CONDA_PROXY_INFO,
}

# XML 1.0 cannot hold these at all, escaped or not (a hostile .condarc can hold them).
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def task_kind(action: str | None) -> str | None:
    """``CONDA_PROXY``, ``CONDA_PROXY_INFO`` or ``None`` for a task's (resolved) action name."""
    return _TASK_KINDS.get(action or "")


# --------------------------------------------------------------------------------------------
# Masking: every string of the report through the collection's masking


def strings_in(value):
    """Every string in a result (keys included), however deep."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from strings_in(key)
            yield from strings_in(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from strings_in(item)


def secrets_of(value) -> set:
    """Every form of every password written in a proxy URL anywhere in ``value`` (see ``_proxyurl.secrets_in``)."""
    found = set()
    for text in strings_in(value):
        if "@" in text:
            found.update(secrets_in(text))
    return found


def mask_all(value, secrets):
    """``value`` with every string masked: passwords of URLs wherever they stand, and every known form anywhere."""
    if isinstance(value, str):
        return mask_known(value, secrets)
    if isinstance(value, dict):
        return {mask_all(key, secrets) if isinstance(key, str) else key: mask_all(item, secrets)
                for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [mask_all(item, secrets) for item in value]
    return value


# --------------------------------------------------------------------------------------------
# Aggregation: results -> one entry per host and account


def _text(value) -> str:
    return "" if value is None else to_text(value, errors="surrogate_or_replace")


def _route(value) -> dict | None:
    """A ``requests`` item of conda_proxy_info (proxy, source, setting), or None."""
    if not isinstance(value, dict):
        return None
    route = {"proxy": value.get("proxy"), "source": value.get("source"), "setting": value.get("setting")}
    if value.get("file"):  # the .condarc file that set it, when the module says
        route["file"] = value["file"]
    return route


def _probe(value) -> dict | None:
    if not isinstance(value, dict):
        return None
    keys = ("url", "proxy", "source", "setting", "used_for", "outcome", "status", "message")
    return {key: value.get(key) for key in keys if key in value}


def conflict_text(conflict) -> str:
    """One conda_proxy_info conflict as a sentence."""
    if not isinstance(conflict, dict):
        return _text(conflict)
    return "%s: %s is %s but proxy_servers %s is %s (conda fetches repodata through the first, packages through the " \
           "second)" % (conflict.get("scheme"), conflict.get("variable"), conflict.get("environment") or "''",
                        conflict.get("scheme"), conflict.get("proxy_servers") or "''")


def info_entry(result: dict, failed: bool) -> dict:
    """The report entry of one conda_proxy_info outcome (a task's result, a loop item, or a verify item)."""
    probes = [_probe(p) for p in result.get("probes") or [] if isinstance(p, dict)]
    probe = _probe(result.get("probe"))
    if probe is None and probes:
        probe = probes[0]
    conflicts = [conflict_text(c) for c in result.get("conflicts") or []]
    warnings = [_text(w) for w in result.get("warnings_found") or []]
    problems = [_text(p) for p in result.get("problems") or []]
    if failed and not problems:
        problems = [_text(result.get("msg")) or "the task failed"]
    bad_probes = [p for p in probes + ([probe] if probe else []) if p.get("outcome") not in (None, "ok")]
    if bad_probes:
        status = "probe_failed"
    elif failed:
        status = "failed"
    elif conflicts or warnings:
        status = "warning"
    else:
        status = "ok"
    requests = result.get("requests") if isinstance(result.get("requests"), dict) else {}
    conda = result.get("conda") if isinstance(result.get("conda"), dict) else {}
    return {
        "account": result.get("user") or None,
        "status": status,
        "repodata": _route(requests.get("repodata")),
        "packages": _route(requests.get("packages")),
        "probe": probe,
        "probes": probes,
        "condarc_files": [_text(f) for f in result.get("condarc_files") or []],
        "proxy_servers": result.get("proxy_servers") if isinstance(result.get("proxy_servers"), dict) else {},
        "environment": result.get("environment") if isinstance(result.get("environment"), dict) else {},
        "ssl_verify": result.get("ssl_verify"),
        "conda": conda.get("path"),
        "conflicts": conflicts,
        "warnings": warnings,
        "problems": problems,
        "verified": True,
    }


def plain_entry(status: str, problems: list, account=None, verified: bool = False) -> dict:
    """An entry without conda_proxy_info data: a failed or unverified configuration, an unreachable host."""
    return {
        "account": account, "status": status, "repodata": None, "packages": None, "probe": None, "probes": [],
        "condarc_files": [], "proxy_servers": {}, "environment": {}, "ssl_verify": None, "conda": None,
        "conflicts": [], "warnings": [], "problems": [_text(p) for p in problems], "verified": verified,
    }


def conda_proxy_entries(result: dict, failed: bool) -> list:
    """The entries of one conda_proxy result: one per verified account, and the failure that is not a verify's."""
    entries = []
    verify = [item for item in result.get("verify") or [] if isinstance(item, dict)]
    for item in verify:
        entries.append(info_entry(item, bool(item.get("failed"))))
    if failed and not any(entry["status"] in ("failed", "probe_failed") for entry in entries):
        entries.append(plain_entry("failed", [result.get("msg") or "the task failed"]))
    if not entries:
        entries.append(plain_entry("ok", [], verified=False))
    return entries


def entries_of(kind: str, result: dict, failed: bool) -> list:
    """The entries of a task result of ``kind``; a loop's items one by one (skipped items left out)."""
    if result.get("censored"):  # no_log: true on the task
        return [plain_entry("failed" if failed else "ok", ["the task's result is hidden (no_log: true)"])]
    if isinstance(result.get("results"), list) and "verify" not in result and "requests" not in result:
        entries = []
        for item in result["results"]:
            if isinstance(item, dict) and not item.get("skipped"):
                entries.extend(entries_of(kind, item, bool(item.get("failed"))))
        if failed and not any(entry["status"] in ("failed", "probe_failed") for entry in entries):
            entries.append(plain_entry("failed", [result.get("msg") or "the task failed"]))
        return entries
    if kind == CONDA_PROXY:
        return conda_proxy_entries(result, failed)
    return [info_entry(result, failed)]


class FleetReport:
    """What the run said about each host and account; the pure half of the callback."""

    def __init__(self) -> None:
        self.entries = {}  # (host, account) -> entry
        self.order = []
        self.secrets = set()

    def add(self, host: str, task: str, entry: dict) -> None:
        """Fold ``entry`` into the host's and account's: the latest data, every problem, the worst status."""
        entry = dict(entry, host=host, task=task)
        key = (host, entry["account"])
        old = self.entries.get(key)
        if old is None:
            self.order.append(key)
        else:
            seen = entry
            # What an earlier check saw stays where this one saw nothing (no url: no probe, not verified: no data).
            entry = dict(old, task=task)
            entry.update((name, value) for name, value in seen.items() if value and name != "problems")
            entry["status"] = min(old["status"], seen["status"], key=RANK.get)
            entry["problems"] = old["problems"] + [p for p in seen["problems"] if p not in old["problems"]]
        self.entries[key] = entry

    def add_result(self, host: str, task: str, kind: str, result: dict, failed: bool) -> None:
        self.secrets.update(secrets_of(result))
        for entry in entries_of(kind, result, failed):
            self.add(host, task, entry)

    def add_unreachable(self, host: str, task: str, result: dict) -> None:
        self.secrets.update(secrets_of(result))
        self.add(host, task, plain_entry("unreachable", [result.get("msg") or "the host could not be reached"]))

    def build(self, title: str, generated: str | None = None) -> dict:
        """The whole report, masked: what the three files are rendered from."""
        generated = generated or datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        hosts = {}
        for key in self.order:
            entry = self.entries[key]
            hosts.setdefault(entry["host"], []).append(entry)
        listed = []
        for host, accounts in hosts.items():
            accounts.sort(key=lambda e: (RANK[e["status"]], e["account"] or ""))
            status = accounts[0]["status"]
            listed.append({"host": host, "status": status, "accounts": accounts})
        listed.sort(key=lambda h: (RANK[h["status"]], h["host"]))
        counts = {status: 0 for status in STATUSES}
        account_counts = {status: 0 for status in STATUSES}
        for item in listed:
            counts[item["status"]] += 1
            for entry in item["accounts"]:
                account_counts[entry["status"]] += 1
        report = {
            "format": REPORT_FORMAT,
            "title": title,
            "generated": generated,
            "statuses": list(STATUSES),
            "counts": dict(counts, total=len(listed)),
            "account_counts": dict(account_counts, total=sum(account_counts.values())),
            "hosts": listed,
        }
        return mask_all(report, self.secrets)


# --------------------------------------------------------------------------------------------
# Rendering (from the masked report only)


def describe_route(route) -> str:
    """``proxy (setting, source)`` or ``direct``."""
    if not route:
        return ""
    if not route.get("proxy"):
        setting = route.get("setting")
        return "direct (%s names none)" % setting if setting else "direct (no proxy setting)"
    where = ", ".join(_text(part) for part in (route.get("setting"), route.get("source")) if part)
    return "%s (%s)" % (route["proxy"], where) if where else _text(route["proxy"])


def describe_probe(probe) -> str:
    if not probe:
        return ""
    text = _text(probe.get("outcome")) or "unknown"
    if probe.get("status"):
        text += " (HTTP %s)" % probe["status"]
    return text


def _escape(value) -> str:
    return html.escape(_text(value), quote=True)


_CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5em;color:#1b1f24;background:#fff}
h1{font-size:1.5em;margin:0 0 .2em}h2{font-size:1.15em;margin:1.2em 0 .4em}
.meta{color:#57606a;margin:0 0 1em}
#counts{display:flex;flex-wrap:wrap;gap:.5em;list-style:none;padding:0;margin:0 0 1em}
#counts li{border-radius:6px;padding:.4em .9em;border:1px solid #d0d7de;background:#f6f8fa}
#counts .n{font-size:1.6em;font-weight:600;display:block}
.status-failed{--c:#cf222e}.status-unreachable{--c:#8250df}.status-probe_failed{--c:#bc4c00}
.status-warning{--c:#9a6700}.status-ok{--c:#1a7f37}
#counts li[class*=status-]{border-left:6px solid var(--c)}
.badge{display:inline-block;border-radius:1em;padding:0 .6em;color:#fff;background:var(--c);white-space:nowrap}
.group ul{margin:.2em 0 .6em;padding-left:1.2em}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{border:1px solid #d0d7de;padding:.3em .5em;text-align:left;vertical-align:top}
th{background:#f6f8fa;position:sticky;top:0}
html.js th{cursor:pointer}html.js th:after{content:" \\2195";color:#8c959f}
th[aria-sort=ascending]:after{content:" \\2191"}th[aria-sort=descending]:after{content:" \\2193"}
tr[class*=status-] td:first-child{border-left:6px solid var(--c)}
td ul{margin:0;padding-left:1.1em}td small{color:#57606a}td:nth-child(4),td:nth-child(5),td:nth-child(6){min-width:10em}td:nth-child(8){min-width:16em}
.group h3{margin:.5em 0 .2em;font-size:1em}.muted{color:#57606a}code{font-size:12px;overflow-wrap:anywhere}
"""

# Counts the hosts of each status from the table (so a reader of the DOM sees the script ran: data-rendered),
# and sorts the table by the column clicked.
_JS = """
(function () {
  var root = document.documentElement; root.className = 'js';
  var rows = Array.prototype.slice.call(document.querySelectorAll('#accounts tbody tr'));
  var hosts = {};
  rows.forEach(function (r) { hosts[r.getAttribute('data-host')] = r.getAttribute('data-host-status'); });
  var counts = {total: 0};
  Object.keys(hosts).forEach(function (h) { counts[hosts[h]] = (counts[hosts[h]] || 0) + 1; counts.total++; });
  document.querySelectorAll('#counts li').forEach(function (li) {
    var n = String(counts[li.getAttribute('data-status')] || 0);
    li.setAttribute('data-rendered', n); li.querySelector('.n').textContent = n;
  });
  var sorters = {};
  document.querySelectorAll('#accounts th').forEach(function (th, i) {
    th.tabIndex = 0;
    function sort() {
      var body = th.closest('table').tBodies[0], asc = th.getAttribute('aria-sort') !== 'ascending';
      var list = Array.prototype.slice.call(body.rows);
      function key(r) { var c = r.cells[i]; return c.getAttribute('data-sort') || c.textContent; }
      list.sort(function (a, b) { return (asc ? 1 : -1) * key(a).localeCompare(key(b), undefined, {numeric: true}); });
      th.parentNode.querySelectorAll('th').forEach(function (t) { t.removeAttribute('aria-sort'); });
      th.setAttribute('aria-sort', asc ? 'ascending' : 'descending');
      list.forEach(function (r) { body.appendChild(r); });
    }
    th.addEventListener('click', sort);
    th.addEventListener('keydown', function (e) { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); sort(); } });
    sorters[th.getAttribute('data-column')] = sort;
  });
  // A link can carry a sort order: #sort=host (ascending) or #sort=-host (descending).
  var wanted = /^#sort=(-?)([a-z]+)$/.exec(location.hash);
  if (wanted && sorters[wanted[2]]) { sorters[wanted[2]](); if (wanted[1]) { sorters[wanted[2]](); } }
  root.setAttribute('data-report', 'ready');
})();
"""

# Nothing may be fetched: no network, no file, no frame. Inline style and script only.
_CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:; base-uri 'none'; form-action 'none'"

_COLUMNS = (("host", "Host"), ("account", "Account"), ("status", "Status"), ("repodata", "Repodata through"),
            ("packages", "Packages through"), ("probe", "Probe"), ("files", ".condarc files read (later wins)"),
            ("problems", "What is wrong"))


def _list_html(items) -> str:
    items = [item for item in items if item]
    if not items:
        return ""
    return "<ul>%s</ul>" % "".join("<li>%s</li>" % _escape(item) for item in items)


def _account_label(entry) -> str:
    return entry["account"] or "(connecting account)"


def _row_html(host: dict, entry: dict, anchor: str | None) -> str:
    status = entry["status"]
    cells = []
    cells.append('<td data-sort="%s">%s</td>' % (_escape(host["host"]), _escape(host["host"])))
    cells.append("<td>%s</td>" % _escape(_account_label(entry)))
    cells.append('<td data-sort="%d %s"><span class="badge status-%s">%s</span></td>'
                 % (RANK[status], _escape(host["host"]), status, _escape(STATUS_LABELS[status])))
    if entry["verified"]:
        for kind in ("repodata", "packages"):
            route = entry[kind]
            if route:
                if route.get("proxy"):
                    shown = "<code>%s</code>" % _escape(route["proxy"])
                else:
                    shown = "direct"
                origin = "from %s" % route["setting"] if route.get("setting") else "no proxy setting"
                if route.get("file"):
                    origin += " in %s" % route["file"]
                elif route.get("source") in SOURCE_LABELS:
                    origin += " (%s)" % SOURCE_LABELS[route["source"]]
                cells.append('<td data-sort="%s">%s<br><small>%s</small></td>'
                             % (_escape(describe_route(route)), shown, _escape(origin)))
            else:
                cells.append('<td class="muted">not asked (no url)</td>')
        probe = entry["probe"]
        if probe:
            via = "via %s" % probe["proxy"] if probe.get("proxy") else "direct"
            cells.append("<td>%s<br><small><code>%s</code></small></td>" % (_escape(describe_probe(probe)), _escape(via)))
        else:
            cells.append('<td class="muted">not run (no url)</td>')
    else:
        cells.append('<td class="muted">not verified</td><td class="muted">not verified</td>'
                     '<td class="muted">not run</td>')
    cells.append("<td>%s</td>" % _list_html(entry["condarc_files"]))
    wrong = entry["problems"] + entry["conflicts"] + entry["warnings"]
    cells.append("<td>%s</td>" % (_list_html(wrong) or '<span class="muted">nothing</span>'))
    row_id = ' id="%s"' % anchor if anchor else ""
    return ('<tr%s class="status-%s" data-host="%s" data-host-status="%s" data-status="%s">%s</tr>'
            % (row_id, status, _escape(host["host"]), host["status"], status, "".join(cells)))


def render_html(report: dict) -> str:
    """The self-contained page: every value escaped, nothing external, complete without JavaScript."""
    title = _escape(report["title"])
    counts = report["counts"]
    out = ['<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
           '<meta http-equiv="Content-Security-Policy" content="%s">' % _CSP,
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           '<meta name="referrer" content="no-referrer">',
           "<title>%s</title><style>%s</style></head><body>" % (title, _CSS),
           "<h1>%s</h1>" % title,
           '<p class="meta">Generated %s &middot; %d hosts, %d accounts &middot; problems first</p>'
           % (_escape(report["generated"]), counts["total"], report["account_counts"]["total"]),
           '<ul id="counts" aria-label="hosts by status">']
    for status in STATUSES:
        out.append('<li id="count-%s" class="count status-%s" data-status="%s"><span class="n">%d</span>%s</li>'
                   % (status, status, status, counts[status], _escape(STATUS_LABELS[status])))
    out.append('<li id="count-total" class="count" data-status="total"><span class="n">%d</span>hosts</li></ul>'
               % counts["total"])
    anchors = {host["host"]: "host-%d" % index for index, host in enumerate(report["hosts"])}
    out.append('<h2>Hosts by status</h2>')
    for status in STATUSES:
        hosts = [host for host in report["hosts"] if host["status"] == status]
        if not hosts:
            continue
        out.append('<section class="group" id="group-%s"><h3><span class="badge status-%s">%s</span> %d</h3><ul>'
                   % (status, status, _escape(STATUS_LABELS[status]), len(hosts)))
        for host in hosts:
            first = next((p for e in host["accounts"] for p in e["problems"] + e["conflicts"] + e["warnings"]), "")
            out.append('<li><a href="#%s">%s</a>%s</li>' % (anchors[host["host"]], _escape(host["host"]),
                                                            " &mdash; " + _escape(first) if first else ""))
        out.append("</ul></section>")
    out.append('<h2>Every host and account</h2><table id="accounts"><thead><tr>')
    out.extend('<th scope="col" data-column="%s">%s</th>' % (key, _escape(label)) for key, label in _COLUMNS)
    out.append("</tr></thead><tbody>")
    for host in report["hosts"]:
        for index, entry in enumerate(host["accounts"]):
            out.append(_row_html(host, entry, anchors[host["host"]] if index == 0 else None))
    out.append("</tbody></table>")
    out.append('<p class="meta">Repodata and packages: the proxy conda uses for that kind of request, then the '
               "setting that names it (<code>proxy_servers &lt;scheme&gt;</code> from the .condarc files, or an "
               "environment variable of the login shell) and its source. Passwords are masked.</p>")
    out.append("<script>%s</script></body></html>\n" % _JS)
    return "".join(out)


def render_json(report: dict) -> str:
    return json.dumps(report, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _xml_text(value) -> str:
    return _XML_INVALID.sub("\ufffd", _text(value))


def render_junit(report: dict) -> bytes:
    """JUnit XML: one test case per host and account (class name: the host), a failure for every problem."""
    cases = [(host, entry) for host in report["hosts"] for entry in host["accounts"]]
    failures = sum(1 for _host, entry in cases if entry["status"] != "ok")
    suites = ET.Element("testsuites", name=_xml_text(report["title"]), tests=str(len(cases)),
                        failures=str(failures), errors="0")
    suite = ET.SubElement(suites, "testsuite", name=_xml_text(report["title"]), tests=str(len(cases)),
                          failures=str(failures), errors="0", skipped="0", timestamp=_xml_text(report["generated"]))
    for host, entry in cases:
        case = ET.SubElement(suite, "testcase", classname=_xml_text(host["host"]),
                             name=_xml_text(_account_label(entry)), time="0")
        wrong = entry["problems"] + entry["conflicts"] + entry["warnings"]
        if entry["status"] != "ok":
            failure = ET.SubElement(case, "failure", type=entry["status"],
                                    message=_xml_text("%s: %s" % (STATUS_LABELS[entry["status"]],
                                                                  wrong[0] if wrong else "")))
            failure.text = _xml_text("\n".join(wrong))
        lines = ["status: %s" % entry["status"]]
        if entry["verified"]:
            lines += ["repodata: %s" % describe_route(entry["repodata"]), "packages: %s" % describe_route(entry["packages"]),
                      "probe: %s" % describe_probe(entry["probe"]), "condarc files: %s" % ", ".join(entry["condarc_files"])]
        else:
            lines.append("not verified")
        ET.SubElement(case, "system-out").text = _xml_text("\n".join(lines))
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="utf-8") + b"\n"


def write_atomically(directory: str, name: str, data: bytes, mode: int) -> str:
    """``data`` to ``directory/name`` through a temporary file in the same directory and a rename."""
    os.makedirs(directory, mode=0o755, exist_ok=True)
    path = os.path.join(directory, name)
    fd, temp = tempfile.mkstemp(prefix=".%s." % name, dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.unlink(temp)
        raise
    return path


def write_report(report: dict, directory: str, formats, mode: int) -> list:
    """The chosen files of ``report``; returns their paths."""
    rendered = {"html": lambda: render_html(report).encode("utf-8"),
                "json": lambda: render_json(report).encode("utf-8"),
                "junit": lambda: render_junit(report)}
    return [write_atomically(directory, FILE_NAMES[name], rendered[name](), mode)
            for name in FILE_NAMES if name in formats]


def parse_mode(value) -> int:
    text = _text(value).strip()
    if not re.match(r"^0?[0-7]{3,4}$", text):
        raise ValueError("mode must be an octal string such as 0644, got %r" % text)
    return int(text, 8)


# --------------------------------------------------------------------------------------------
# The callback


def _result_of(result) -> dict:
    """The result dict of a callback's task result (``result`` from ansible-core 2.19 on, ``_result`` before)."""
    data = getattr(result, "result", None)
    if not isinstance(data, dict):
        data = result._result
    return data


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "condafleet.proxy.fleet_report"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, display=None) -> None:
        super().__init__(display=display)
        self.report = FleetReport()

    def _observe(self, result, failed: bool) -> None:
        task = result._task
        kind = task_kind(getattr(task, "resolved_action", None)) or task_kind(task.action)
        if kind is None:
            return
        self.report.add_result(result._host.get_name(), task.get_name(), kind, _result_of(result), failed)

    def v2_runner_on_ok(self, result) -> None:
        self._observe(result, False)

    def v2_runner_on_failed(self, result, ignore_errors=False) -> None:
        self._observe(result, True)

    def v2_runner_on_unreachable(self, result) -> None:
        self.report.add_unreachable(result._host.get_name(), result._task.get_name(), _result_of(result))

    def v2_playbook_on_stats(self, stats) -> None:
        try:
            mode = parse_mode(self.get_option("mode"))
            directory = os.path.abspath(os.path.expanduser(self.get_option("directory")))
            report = self.report.build(self.get_option("title"))
            paths = write_report(report, directory, self.get_option("formats"), mode)
        except (OSError, ValueError) as exc:
            self._display.warning("condafleet.proxy.fleet_report: no report written: %s" % to_text(exc))
            return
        if paths:
            self._display.display("Fleet report: %s" % ", ".join(paths))
