# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The candidates for the local authenticating proxy (issue 14), really run against the lab's squids.
A benchmark script, not a test.

The lab (tests/support/corpauth.py) on 127.0.0.1: an MIT KDC, squid requiring Negotiate (Kerberos keytab),
squid requiring NTLMv2 and checking it against the NT hash (``NtlmV2Squid``), squid requiring Basic
(``servers.AccountSquid``), a second, independent NTLM checker (pyspnego's acceptor, run by the candidates'
venv) for the credential forms (password, ``LM:NT`` hash), a PAC file, and conda-style channels (one over HTTPS).

For each candidate and upstream scheme it records whether a request through the candidate succeeds (and what
the squid logs as the user), the start time (spawn to listening), the resident memory of its process tree after
the run, and the extra hop: ``--requests`` sequential GETs of a small channel file, each by a fresh curl
(``time_total``, so curl's own start is not counted) on a new connection each, then by one curl on one kept
connection, direct to the squid (curl authenticating itself) and through the candidate (curl sending no
credentials). px runs as a non-root account holding a Kerberos ticket
(``kinit``) for Kerberos and PAC, with ``PX_PASSWORD`` for NTLM and Basic; cntlm with the ``PassNTLMv2`` hash
that ``cntlm -H`` prints.

    .venv/bin/python bench/auth_proxy_hop.py [--px /tmp/pxvenv/bin/px] [--requests 200] [--json out.json]

Needs root (a throwaway account for the ticket holder), krb5-kdc, krb5-user, squid, cntlm, curl, and a venv
with px-proxy (``--px``); its python serves the verifying NTLM proxy.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "support"))

from accounts import throwaway_account  # noqa: E402
from corpauth import Kdc, NegotiateSquid, NtlmV2Squid, PacServer, pac_script  # noqa: E402
from servers import LOOPBACK, AccountSquid, ChannelServer, free_port, stop_process, wait_for_port, write_channel  # noqa: E402

CHANNEL_FILE = "/fleet-channel/noarch/repodata.json"
NTLM_DOMAIN, NTLM_USER, NTLM_PASSWORD = "CORP", "bob", "Ntlm-pw:9"
BASIC_USER, BASIC_PASSWORD = "fleet", "B4sic-pw"

# The verifying NTLM proxy: answers 200 only when the client's NTLM handshake proves NTLM_USER_FILE's password
# (pyspnego's acceptor); run with the candidates' venv python, which has pyspnego (px needs it).
NTLM_VERIFIER = r'''
import http.server, sys, base64, spnego
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    ctx = None
    def answer(self, code, header=None, body=b""):
        self.send_response(code)
        if header:
            self.send_header("Proxy-Authenticate", header)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        got = self.headers.get("Proxy-Authorization") or ""
        if not got.startswith("NTLM "):
            return self.answer(407, "NTLM")
        message = base64.b64decode(got[5:])
        if message[8:12] == b"\x01\x00\x00\x00":  # a NEGOTIATE message starts a new handshake
            self.ctx = spnego.server(protocol="ntlm")
        try:
            token = self.ctx.step(message)
        except Exception as error:
            sys.stderr.write("refused: %s\n" % type(error).__name__)
            self.ctx = None
            return self.answer(407, "NTLM")
        if token:
            return self.answer(407, "NTLM " + base64.b64encode(token).decode())
        sys.stderr.write("accepted: %s\n" % self.ctx.client_principal)
        self.answer(200, body=b"ok\n")
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
'''


class Candidate:
    """One run of a local proxy process: started by its own pid (as ``account`` when given), stopped likewise."""

    def __init__(self, argv: list[str], env: dict[str, str], workdir: str, account=None) -> None:
        self.port = free_port()
        self.argv = [arg.replace("{port}", str(self.port)) for arg in argv]
        self.env = env
        self.workdir = workdir
        self.account = account
        self.proc: subprocess.Popen | None = None
        self.start_seconds = None

    def __enter__(self):
        argv = self.argv
        if self.account is not None:
            argv = ["setpriv", "--reuid=%d" % self.account.pw_uid, "--regid=%d" % self.account.pw_gid,
                    "--init-groups", "--"] + argv
        log = open(os.path.join(self.workdir, "candidate-%d.log" % self.port), "wb")
        began = time.monotonic()
        self.proc = subprocess.Popen(argv, env=self.env, cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        wait_for_port(self.port, self.proc, timeout=30)
        self.start_seconds = time.monotonic() - began
        return self

    def __exit__(self, *exc) -> None:
        stop_process(self.proc)

    @property
    def url(self) -> str:
        return "http://%s:%d" % (LOOPBACK, self.port)

    def rss_kib(self) -> int:
        """Resident memory of the process and every descendant (kB, from /proc)."""
        children = {}
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open("/proc/%s/stat" % pid) as handle:
                    ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(pid))
        total, todo = 0, [self.proc.pid]
        while todo:
            pid = todo.pop()
            todo.extend(children.get(pid, []))
            try:
                with open("/proc/%d/status" % pid) as handle:
                    total += next(int(line.split()[1]) for line in handle if line.startswith("VmRSS:"))
            except (OSError, StopIteration):
                pass
        return total


def curl(proxy: str, url: str, options: list[str], env: dict[str, str] | None = None) -> tuple[str, float]:
    """One fresh curl through ``proxy``: (HTTP status, seconds curl spent on the transfer)."""
    proc = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{time_total}", "--max-time", "20",
                           "--proxy", proxy] + options + [url], env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    fields = proc.stdout.split()
    return (fields[0], float(fields[1])) if len(fields) == 2 else ("000", 0.0)


def status(proxy: str, url: str, options: list[str], env: dict[str, str] | None = None) -> str:
    """The HTTP status of one fresh curl through ``proxy`` (``000`` when nothing answered)."""
    return curl(proxy, url, options, env)[0]


def latency(proxy: str, url: str, options: list[str], requests: int, env=None) -> dict:
    """``requests`` GETs of ``url`` through ``proxy``, measured by curl (``time_total``) two ways: ``new``, a fresh
    curl and connection each (a new conda process), and ``reused``, one curl keeping its connection to the proxy
    (a conda session). Median and 95th percentile in milliseconds, and the statuses seen."""
    fresh = [curl(proxy, url, options, env) for _request in range(requests)]
    argv = ["curl", "-s", "-w", "%{http_code} %{time_total}\n", "--max-time", "120", "--proxy", proxy] + options
    for index in range(requests):
        argv += ["-o", "/dev/null", "%s?n=%d" % (url, index)]
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, check=False).stdout
    reused = [(code, float(seconds)) for code, seconds in (line.split() for line in out.splitlines())]
    measured = {}
    for name, samples in (("new", fresh), ("reused", reused)):
        times = sorted(seconds * 1000 for _code, seconds in samples)
        measured[name] = {"codes": sorted({code for code, _seconds in samples}), "median_ms": statistics.median(times),
                          "p95_ms": times[max(0, int(round(0.95 * len(times))) - 1)]}
    return measured


def users_since(squid, seen: int) -> list[str]:
    return sorted({entry["user"] for entry in squid.entries()[seen:] if entry["status"] == "200"})


def cntlm_config(workdir: str, upstream_port: int, password_hash: str, name: str, dialect: str = "NTLMv2") -> str:
    """A cntlm config holding only the hash (``PassNTLMv2``, or ``PassNT`` with ``dialect="NT"``)."""
    path = os.path.join(workdir, name)
    with open(path, "w") as handle:
        handle.write("Username %s\nDomain %s\nPass%s %s\nProxy %s:%d\nAuth %s\n"
                     % (NTLM_USER, NTLM_DOMAIN, dialect, password_hash, LOOPBACK, upstream_port, dialect))
    os.chmod(path, 0o600)
    return path


def true_hashes(python: str) -> tuple[str, str]:
    """The LM and NT hashes of NTLM_PASSWORD as pyspnego computes them (MS-NLMP's LMOWFv1 and NTOWFv1)."""
    code = ("import sys; from spnego._ntlm_raw.crypto import lmowfv1, ntowfv1; p = sys.stdin.read(); "
            "print(lmowfv1(p).hex().upper(), ntowfv1(p).hex().upper())")
    out = subprocess.run([python, "-c", code], input=NTLM_PASSWORD, capture_output=True, text=True, timeout=60,
                         check=True).stdout.split()
    return out[0], out[1]


def cntlm_argv(conf: str) -> list[str]:
    return ["cntlm", "-f", "-l", "%s:{port}" % LOOPBACK, "-c", conf]


def cntlm_hashes() -> dict[str, str]:
    """``cntlm -H``: the hashes of NTLM_PASSWORD for NTLM_USER in NTLM_DOMAIN (password on stdin)."""
    proc = subprocess.run(["cntlm", "-H", "-u", NTLM_USER, "-d", NTLM_DOMAIN], input=NTLM_PASSWORD + "\n",
                          capture_output=True, text=True, timeout=30, check=True)
    found = re.findall(r"^(PassLM|PassNT|PassNTLMv2)\s+([0-9A-F]{32})", proc.stdout, re.MULTILINE)
    return dict(found)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--px", default="/tmp/pxvenv/bin/px", help="px from a venv with px-proxy")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("needs root: the Kerberos ticket holder is a throwaway account")
    px_python = os.path.join(os.path.dirname(args.px), "python")
    results = {"rows": [], "checks": [], "requests": args.requests}

    def check(name: str, works: bool, detail: str) -> None:
        """One capability: did the request through the candidate succeed (``yes``/``no``), and what was seen."""
        results["checks"].append({"check": name, "works": works, "detail": detail})
        print("%-58s %-4s %s" % (name, "yes" if works else "no", detail), flush=True)

    def row(scheme: str, route: str, measured: dict, start=None, rss=None) -> None:
        measured.update(scheme=scheme, route=route, start_s=start, rss_mib=rss and round(rss / 1024, 1))
        results["rows"].append(measured)
        print("  %-9s %-22s %s" % (scheme, route, "  ".join(
            "%s: %s median %.2f ms p95 %.2f ms" % (name, ",".join(measured[name]["codes"]), measured[name]["median_ms"],
                                                   measured[name]["p95_ms"]) for name in ("new", "reused"))),
              flush=True)

    work = tempfile.mkdtemp(prefix="condafleet-authbench-")
    try:
        os.chmod(work, 0o755)
        roots = [tempfile.mkdtemp(prefix="channel-", dir=work) for _root in range(2)]
        for root in roots:
            write_channel(root)
        base_env = dict(os.environ, HOME=work)
        tls_dir = tempfile.mkdtemp(prefix="tls-", dir=work)
        with Kdc() as kdc, ChannelServer(roots[0]) as channel, ChannelServer(roots[1]) as other_channel, \
                ChannelServer(roots[0], tls_dir=tls_dir) as tls_channel, \
                NegotiateSquid(kdc) as krb_squid, NtlmV2Squid({NTLM_USER: NTLM_PASSWORD}, NTLM_DOMAIN) as ntlm_squid, \
                AccountSquid({BASIC_USER: BASIC_PASSWORD}) as basic_squid, throwaway_account("pxbench") as account:
            url = channel.url + CHANNEL_FILE
            tls_url, tls_trust = tls_channel.url + CHANNEL_FILE, ["--cacert", tls_channel.ca_path]

            def exercise(name: str, scheme: str, route: str, candidate: Candidate, squid) -> None:
                """A request through ``candidate`` (and the user squid logged), one to the HTTPS channel, then
                the extra hop's row."""
                seen = len(squid.entries())
                code = status(candidate.url, url, [])
                check("%s -> %s" % (name, squid.name), code == "200",
                      "status %s, squid user %s" % (code, users_since(squid, seen)))
                code = status(candidate.url, tls_url, tls_trust)
                check("%s, an HTTPS channel (CONNECT)" % name, code == "200", "status %s" % code)
                row(scheme, route, latency(candidate.url, url, [], args.requests), candidate.start_seconds,
                    candidate.rss_kib())
            krb_env = dict(base_env, **kdc.env)
            # root's own ticket: for curl's direct Negotiate baseline
            root_cc = os.path.join(work, "root.ccache")
            principal = kdc.add_user("bench-root", "r00t-pw")
            subprocess.run(["kinit", principal], input="r00t-pw\n", env=dict(krb_env, KRB5CCNAME=root_cc),
                           capture_output=True, text=True, timeout=60, check=True)
            root_krb = dict(krb_env, KRB5CCNAME=root_cc)
            user_principal = kdc.add_user(account.pw_name, "us3r-pw")
            kdc.kinit_as(account, user_principal, "us3r-pw")
            account_env = {"HOME": account.pw_dir, "USER": account.pw_name, "LOGNAME": account.pw_name,
                           "PATH": "/usr/bin:/bin", **kdc.env}

            # --- Kerberos ---
            row("kerberos", "direct curl", latency(krb_squid.localhost_url, url, ["--proxy-negotiate", "-U", ":"],
                                                   args.requests, root_krb))
            px_krb = [args.px, "--port={port}", "--listen=%s" % LOOPBACK, "--proxy=localhost:%d" % krb_squid.port,
                      "--auth=NEGOTIATE"]
            with Candidate(px_krb, account_env, work, account) as px:
                exercise("px kerberos (account's ticket)", "kerberos", "via px (as account)", px, krb_squid)
                kdc.kdestroy_as(account)
                code = status(px.url, url, [])
                check("px kerberos after kdestroy (running px, warm connection)", code == "200", "status %s" % code)
                with Candidate(px_krb, account_env, work, account) as fresh:
                    code = status(fresh.url, url, [])
                check("px kerberos after kdestroy (px started after it)", code == "200", "status %s" % code)
                kdc.kinit_as(account, user_principal, "us3r-pw")
                code = status(px.url, url, [])
                check("px kerberos after a new kinit (px not restarted)", code == "200", "status %s" % code)
            cntlm_krb = cntlm_config(work, krb_squid.port, cntlm_hashes()["PassNTLMv2"], "cntlm-krb.conf")
            with Candidate(cntlm_argv(cntlm_krb), base_env, work) as cntlm:
                code = status(cntlm.url, url, [])
                check("cntlm -> negotiate squid (NTLM only)", code == "200", "status %s" % code)

            # --- NTLM: NtlmV2Squid checks NTLMv2 against the NT hash (ntlm_fake_auth would take anything) ---
            row("ntlm", "direct curl", latency(ntlm_squid.url, url, ["--proxy-ntlm", "-U", "%s\\%s:%s" % (
                NTLM_DOMAIN, NTLM_USER, NTLM_PASSWORD)], args.requests))
            px_ntlm = [args.px, "--port={port}", "--listen=%s" % LOOPBACK, "--proxy=%s:%d" % (LOOPBACK, ntlm_squid.port),
                       "--auth=NTLM", "--username=%s\\%s" % (NTLM_DOMAIN, NTLM_USER)]
            with Candidate(px_ntlm, dict(base_env, PX_PASSWORD=NTLM_PASSWORD), work) as px:
                exercise("px ntlm (PX_PASSWORD)", "ntlm", "via px", px, ntlm_squid)
            with Candidate(px_ntlm, dict(base_env, PX_PASSWORD="wrong"), work) as px:
                code = status(px.url, url, [])
                check("px ntlm, wrong password", code == "200", "status %s" % code)
            hashes = cntlm_hashes()
            conf = cntlm_config(work, ntlm_squid.port, hashes["PassNTLMv2"], "cntlm-v2.conf")
            with Candidate(cntlm_argv(conf), base_env, work) as cntlm:
                exercise("cntlm ntlm (PassNTLMv2)", "ntlm", "via cntlm", cntlm, ntlm_squid)
            conf = cntlm_config(work, ntlm_squid.port, "0" * 32, "cntlm-wrong.conf")
            with Candidate(cntlm_argv(conf), base_env, work) as cntlm:
                code = status(cntlm.url, url, [])
                check("cntlm ntlm, a hash of another password", code == "200", "status %s" % code)

            # --- NTLM against a proxy that checks the response: which credential forms really work ---
            users_file = os.path.join(work, "ntlm-users")
            with open(users_file, "w") as handle:  # smbpasswd format: the verifier holds the true hashes only
                handle.write("%s\\%s:1000:%s:%s:[U]:LCT-00000000\n" % (NTLM_DOMAIN, NTLM_USER, *true_hashes(px_python)))
            verifier = Candidate([px_python, "-c", NTLM_VERIFIER, "{port}"], dict(base_env, NTLM_USER_FILE=users_file),
                                 work)
            with verifier:
                target = "http://ntlm-verifier.invalid/"  # the verifier answers itself, nothing is fetched
                right = "%s\\%s:%s" % (NTLM_DOMAIN, NTLM_USER, NTLM_PASSWORD)
                code = status(verifier.url, target, ["--proxy-ntlm", "-U", right])
                check("verifier: curl with the right password", code == "200", "status %s" % code)
                code = status(verifier.url, target, ["--proxy-ntlm", "-U", "%s\\%s:wrong" % (NTLM_DOMAIN, NTLM_USER)])
                check("verifier: curl with a wrong password", code == "200", "status %s" % code)
                lm_nt = "%s:%s" % (hashes["PassLM"], hashes["PassNT"])
                for label, secret in (("password", NTLM_PASSWORD), ("LM:NT hash", lm_nt), ("wrong password", "wrong")):
                    argv = [a if not a.startswith("--proxy=") else "--proxy=%s:%d" % (LOOPBACK, verifier.port)
                            for a in px_ntlm]
                    with Candidate(argv, dict(base_env, PX_PASSWORD=secret), work) as px:
                        code = status(px.url, target, [])
                    check("verifier: px PX_PASSWORD=<%s>" % label, code == "200", "status %s" % code)
                for label, value in (("PassNTLMv2 of the password", hashes["PassNTLMv2"]),
                                     ("PassNTLMv2 of another password", "0" * 32)):
                    conf = cntlm_config(work, verifier.port, value, "cntlm-verify.conf")
                    with Candidate(cntlm_argv(conf), base_env, work) as cntlm:
                        code = status(cntlm.url, target, [])
                    check("verifier: cntlm %s" % label, code == "200", "status %s" % code)

            # --- Basic ---
            basic = ["--proxy-user", "%s:%s" % (BASIC_USER, BASIC_PASSWORD)]
            row("basic", "direct curl", latency(basic_squid.url, url, basic, args.requests))
            px_basic = [args.px, "--port={port}", "--listen=%s" % LOOPBACK, "--proxy=%s:%d" % (LOOPBACK, basic_squid.port),
                        "--auth=BASIC", "--username=%s" % BASIC_USER]
            with Candidate(px_basic, dict(base_env, PX_PASSWORD=BASIC_PASSWORD), work) as px:
                exercise("px basic (PX_PASSWORD)", "basic", "via px", px, basic_squid)
            with Candidate(px_basic, dict(base_env, PX_PASSWORD="wrong"), work) as px:
                code = status(px.url, url, [])
                check("px basic, wrong password", code == "200", "status %s" % code)
            conf = cntlm_config(work, basic_squid.port, hashes["PassNTLMv2"], "cntlm-basic.conf")
            with Candidate(cntlm_argv(conf), base_env, work) as cntlm:
                code = status(cntlm.url, url, [])
                check("cntlm -> basic squid (NTLM only)", code == "200", "status %s" % code)

            # --- PAC: the channel on localhost through the Kerberos squid, the one on 127.0.0.1 direct ---
            pac = pac_script({"localhost": "PROXY localhost:%d" % krb_squid.port, LOOPBACK: "DIRECT"})
            with PacServer(pac) as pac_server:
                px_pac = [args.px, "--port={port}", "--listen=%s" % LOOPBACK, "--pac=%s" % pac_server.pac_url,
                          "--auth=NEGOTIATE", "--proxyreload=1"]
                with Candidate(px_pac, account_env, work, account) as px:
                    seen = len(krb_squid.entries())
                    via_url = "http://localhost:%d%s" % (channel.port, CHANNEL_FILE)
                    direct_url = "http://%s:%d%s" % (LOOPBACK, other_channel.port, CHANNEL_FILE)
                    code_proxied = status(px.url, via_url, [])
                    code_direct = status(px.url, direct_url, [])
                    logged = [entry["url"] for entry in krb_squid.entries()[seen:]]
                    check("px --pac: PROXY host via the negotiate squid", code_proxied == "200" and via_url in logged,
                          "status %s, squid logged it: %s" % (code_proxied, via_url in logged))
                    check("px --pac: DIRECT host not via squid", code_direct == "200" and direct_url not in logged,
                          "status %s, squid logged it: %s" % (code_direct, direct_url in logged))
                    fetched = pac_server.requests.count(PacServer.path)
                    time.sleep(2.5)
                    curl(px.url, via_url, [])
                    check("px --pac --proxyreload=1: PAC fetched again after 2.5 s", pac_server.requests.count(
                        PacServer.path) > fetched, "%d fetch(es) before, %d after" % (
                        fetched, pac_server.requests.count(PacServer.path)))
            subprocess.run(["kdestroy", "-q"], env=root_krb, check=False)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print("\n| scheme | route | new conn. median ms | p95 ms | reused conn. median ms | p95 ms | statuses | start s "
          "| RSS MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for entry in results["rows"]:
        new, reused = entry["new"], entry["reused"]
        print("| %s | %s | %.2f | %.2f | %.2f | %.2f | %s | %s | %s |" % (
            entry["scheme"], entry["route"], new["median_ms"], new["p95_ms"], reused["median_ms"], reused["p95_ms"],
            ",".join(sorted(set(new["codes"]) | set(reused["codes"]))),
            "%.2f" % entry["start_s"] if entry["start_s"] is not None else "-",
            entry["rss_mib"] if entry["rss_mib"] is not None else "-"))
    print("\nload average after the run: %s" % " ".join(open("/proc/loadavg").read().split()[:3]))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
