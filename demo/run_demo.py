# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""`make demo`: put a sandbox home behind a real authenticating proxy with the installed collection.

Steps (no root, no existing proxy, nothing outside 127.0.0.1 and a temporary work directory):

1. ``ansible-galaxy collection build`` this checkout and install the tarball offline into
   ``<work>/collections`` -- the playbook sees only that installed copy.
2. Start a real proxy on 127.0.0.1 that requires Basic auth (tinyproxy when installed, else proxy.py
   from the venv) and a conda channel on 127.0.0.1 holding one tiny package, which requires its own
   Basic credentials and refuses requests that did not come through a proxy. A direct request with the
   right credentials is really made, and its refusal shown.
3. Run demo/playbook.yml twice (condarc_proxy, env_proxy, netrc_entry on ``<work>/home``); the second
   run must report ``changed=0``.
4. From a fresh login shell of that home (``env -i HOME=<home> ... bash -l``): curl with the proxy
   variables from ~/.profile and ``--netrc`` fetches ``<channel>/noarch/repodata.json``; then real conda
   (built once from ``../shared/real-conda`` when that folder is there) runs ``conda search`` and
   ``conda create`` of the package. Without it, a Python snippet doing what conda does (~/.condarc
   ``proxy_servers`` + ~/.netrc, demo/conda_like_fetch.py) fetches the repodata instead; the summary
   says which of the two ran.
5. The proxy log shows the requests and the channel saw them arrive through the proxy.
6. Every file of the work directory holding a secret is private (0600): the modules make an account's own
   files private when they hold a literal password, and the demo creates its own files with umask 077.
   A file holding a secret that others could read is a warning of the summary.

It prints a short summary without secrets, stops everything it started by pid (also on failure or
SIGTERM) and exits non-zero when any check fails. ``--json FILE`` writes the outcome for tests.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tests", "support"))

import realconda  # noqa: E402
from servers import AuthChannelServer, ProxyPy, TinyProxy  # noqa: E402

BIN = os.path.dirname(sys.executable)
CHANNEL = "fleet-channel"
REPODATA = "/%s/noarch/repodata.json" % CHANNEL
TARBALL = "/%s/noarch/%s-1.0-0.tar.bz2" % (CHANNEL, realconda.PACKAGE)
REAL_CONDA = "real conda"
CONDA_LIKE = "conda-like fetch"
LOGIN_PATH = "/usr/local/bin:/usr/bin:/bin"


class DemoError(Exception):
    """A step failed; the message says which and why (secrets masked)."""


class Secrets:
    """Every secret of the run, and their encoded forms, so output can be checked and masked."""

    def __init__(self, *values: str) -> None:
        from urllib.parse import quote

        self.values = sorted({form for value in values for form in (value, quote(value, safe=""))}, key=len,
                             reverse=True)

    def mask(self, text: str) -> str:
        for value in self.values:
            text = text.replace(value, "********")
        return text

    def found_in(self, text: str) -> bool:
        return any(value in text for value in self.values)


def run(cmd: list[str], env: dict | None = None, cwd: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


def build_and_install(work: str, env: dict) -> tuple[str, str]:
    """Build the collection tarball from this checkout and install it offline; returns (tarball, path)."""
    dist = os.path.join(work, "dist")
    collections = os.path.join(work, "collections")
    proc = run([os.path.join(BIN, "ansible-galaxy"), "collection", "build", REPO, "--output-path", dist, "--force"],
               env=env, cwd=work)
    tarballs = glob.glob(os.path.join(dist, "condafleet-proxy-*.tar.gz"))
    if proc.returncode != 0 or len(tarballs) != 1:
        raise DemoError("ansible-galaxy collection build failed:\n%s%s" % (proc.stdout, proc.stderr))
    # --force and only this path configured: a copy elsewhere (~/.ansible/collections) must not count.
    install_env = dict(env, ANSIBLE_COLLECTIONS_PATH=collections, ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="False")
    proc = run([os.path.join(BIN, "ansible-galaxy"), "collection", "install", "--offline", "--force", "-p", collections,
                tarballs[0]], env=install_env, cwd=work)
    if proc.returncode != 0 or not os.path.isdir(os.path.join(collections, "ansible_collections", "condafleet", "proxy")):
        raise DemoError("ansible-galaxy collection install --offline failed:\n%s%s" % (proc.stdout, proc.stderr))
    return tarballs[0], collections


def start_proxy(kind: str, work: str, username: str, password: str, stack: contextlib.ExitStack):
    """A real proxy on 127.0.0.1 requiring Basic auth and forwarding a ``Via`` header."""
    if kind == "auto":
        kind = "tinyproxy" if shutil.which("tinyproxy") or os.path.exists("/usr/bin/tinyproxy") else "proxypy"
    workdir = os.path.join(work, kind)
    os.makedirs(workdir)
    if kind == "tinyproxy":
        proxy = TinyProxy(username, password, workdir=workdir, via_header=True)
    else:
        proxy = ProxyPy(username, password, workdir=workdir, python=sys.executable)
    stack.enter_context(proxy)
    return kind, proxy


def playbook(env: dict, work: str, vars_file: str, secrets_: Secrets, run_no: int) -> dict:
    """Run demo/playbook.yml once; returns the PLAY RECAP numbers for localhost."""
    cmd = [os.path.join(BIN, "ansible-playbook"), "-i", "localhost,", "-c", "local",
           "-e", "ansible_python_interpreter=%s" % sys.executable, "-e", "@%s" % vars_file,
           "--diff", os.path.join(REPO, "demo", "playbook.yml")]
    proc = run(cmd, env=env, cwd=work)
    output = proc.stdout + proc.stderr
    with open(os.path.join(work, "playbook-run%d.log" % run_no), "w") as handle:
        handle.write(secrets_.mask(output))
    if secrets_.found_in(output):
        raise DemoError("a secret appeared in the output of playbook run %d" % run_no)
    # Warnings are reported, not fatal: the summary shows them and the tests insist on none.
    warnings = sorted(set(re.findall(r"^\[WARNING\]: (.*)$", output, re.MULTILINE)))
    recap = re.search(r"^localhost\s*:\s*(.*)$", proc.stdout, re.MULTILINE)
    if proc.returncode != 0 or not recap:
        raise DemoError("playbook run %d failed (rc=%d):\n%s" % (run_no, proc.returncode, secrets_.mask(output)[-4000:]))
    numbers = {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", recap.group(1))}
    numbers["warnings"] = warnings
    return numbers


def login_shell_check(home: str, url: str, conda: dict, work: str) -> dict:
    """Source demo/login_check.sh in a fresh login shell of ``home``; returns its key=value lines."""
    cmd = ["env", "-i", "HOME=%s" % home, "PATH=%s" % LOGIN_PATH, "LANG=C.UTF-8", "bash", "-l", "-c", '. "$0"',
           os.path.join(REPO, "demo", "login_check.sh"), sys.executable, url,
           os.path.join(REPO, "demo", "conda_like_fetch.py")]
    if conda["kind"] == REAL_CONDA:
        cmd += [conda["path"], url.rsplit("/noarch/", 1)[0], realconda.PACKAGE, realconda.PACKAGE_FILE,
                os.path.join(work, "conda-env"), os.path.join(work, "conda-pkgs")]
    proc = run(cmd, cwd=home, timeout=240)
    values = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    values["_raw"] = proc.stdout + proc.stderr
    return values


def check_proxy_required(proxy, url: str) -> str:
    """The proxy must refuse a request without credentials (HTTP 407)."""
    import http.client
    from urllib.parse import urlsplit

    conn = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=10)
    try:
        conn.request("GET", url, headers={"Host": urlsplit(url).netloc})
        return str(conn.getresponse().status)
    finally:
        conn.close()


def choose_conda(wanted: str) -> dict:
    """Real conda when ``../shared/real-conda`` is there (built once, cached), else the conda-like fetch."""
    if wanted == "like" or (wanted == "auto" and realconda.installer() is None):
        reason = "asked for" if wanted == "like" else "%s is absent" % realconda.INSTALLER
        return {"kind": CONDA_LIKE, "path": os.path.join(REPO, "demo", "conda_like_fetch.py"), "reason": reason}
    if realconda.installer() is None:
        raise DemoError("--conda real needs %s (conda's source and install script)" % realconda.INSTALLER)
    if not os.access(os.path.join(realconda.CACHE, "bin", "conda"), os.X_OK):
        print("building a real conda from %s into %s (once; about 10 s, from PyPI)"
              % (os.path.dirname(realconda.INSTALLER), realconda.CACHE), flush=True)
    try:
        path = realconda.install()
    except (OSError, subprocess.SubprocessError) as exc:
        raise DemoError("could not build real conda with %s: %s" % (realconda.INSTALLER, exc))
    version = run([path, "--version"], timeout=60).stdout.strip()
    return {"kind": REAL_CONDA, "path": path, "version": version, "reason": "built from %s"
            % os.path.dirname(realconda.INSTALLER)}


def check_direct_refused(channel, url: str, username: str, password: str) -> dict:
    """Really ask the channel directly (no proxy), with the right credentials: it must refuse (403)."""
    import base64
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    token = base64.b64encode(("%s:%s" % (username, password)).encode()).decode()
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request("GET", parts.path, headers={"Authorization": "Basic " + token})
        response = conn.getresponse()
        return {"status": str(response.status), "body": response.read(200).decode(errors="replace").strip()}
    finally:
        conn.close()


def demo(args: argparse.Namespace, work: str, stack: contextlib.ExitStack, outcome: dict) -> None:
    proxy_user = "fleet"
    proxy_password = os.environ.get("CONDAFLEET_DEMO_PROXY_PASSWORD") or "px-" + secrets.token_hex(8)
    channel_user = "conda-reader"
    channel_password = os.environ.get("CONDAFLEET_DEMO_CHANNEL_PASSWORD") or "ch@n-" + secrets.token_hex(8)
    secrets_ = Secrets(proxy_password, channel_password)

    env = dict(os.environ)
    for name in ("ANSIBLE_CONFIG", "ANSIBLE_COLLECTIONS_PATH", "ANSIBLE_COLLECTIONS_PATHS", "http_proxy",
                 "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "no_proxy", "NO_PROXY"):
        env.pop(name, None)
    env.update(ANSIBLE_HOME=os.path.join(work, "ansible-home"), ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
               ANSIBLE_LOCALHOST_WARNING="False", ANSIBLE_INVENTORY_UNPARSED_WARNING="False",
               ANSIBLE_RETRY_FILES_ENABLED="False", ANSIBLE_STDOUT_CALLBACK="ansible.builtin.default")

    started = time.monotonic()
    tarball, collections = build_and_install(work, env)
    # Only the installed copy: not the checkout, not ~/.ansible/collections, not site-packages.
    env.update(ANSIBLE_COLLECTIONS_PATH=collections, ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="False")
    outcome.update(tarball=os.path.basename(tarball), collections_path=collections)

    conda = choose_conda(args.conda)
    outcome["conda"] = conda
    channel_root = os.path.join(work, "channel")
    realconda.write_package_channel(channel_root, CHANNEL)
    kind, proxy = start_proxy(args.proxy, work, proxy_user, proxy_password, stack)
    channel = stack.enter_context(AuthChannelServer(channel_root, channel_user, channel_password, require_via=True))
    url = channel.url + REPODATA
    outcome.update(proxy=kind, proxy_pid=proxy.proc.pid, proxy_url=proxy.url, channel_url=channel.url + "/" + CHANNEL)
    outcome["proxy_without_credentials"] = check_proxy_required(proxy, url)
    if outcome["proxy_without_credentials"] != "407":
        raise DemoError("the proxy did not demand credentials (got %s instead of 407)" % outcome["proxy_without_credentials"])
    outcome["direct_request"] = check_direct_refused(channel, url, channel_user, channel_password)
    if outcome["direct_request"]["status"] != "403":
        raise DemoError("the channel answered a direct request with %s instead of refusing it (403)"
                        % outcome["direct_request"]["status"])

    home = os.path.join(work, "home")
    os.makedirs(home, mode=0o700)
    vars_file = os.path.join(work, "demo-vars.json")
    fd = os.open(vars_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"demo_home": home, "demo_proxy_url": proxy.url, "demo_proxy_username": proxy_user,
                   "demo_proxy_password": proxy_password, "demo_channel_host": "127.0.0.1",
                   "demo_channel_username": channel_user, "demo_channel_password": channel_password}, handle)
    outcome["recap"] = [playbook(env, work, vars_file, secrets_, 1), playbook(env, work, vars_file, secrets_, 2)]
    if outcome["recap"][1].get("changed") != 0:
        raise DemoError("the second playbook run changed something: %s" % outcome["recap"][1])
    netrc_mode = stat.S_IMODE(os.stat(os.path.join(home, ".netrc")).st_mode)
    outcome["netrc_mode"] = "%04o" % netrc_mode

    def repodata_lines() -> int:  # repodata.json itself, not repodata.json.zst
        return len(re.findall(re.escape(REPODATA) + r"(?![\w.])", proxy.log()))

    proxy_lines_before, channel_before = repodata_lines(), len(channel.log)
    shell = login_shell_check(home, url, conda, work)
    outcome["shell"] = {key: value for key, value in shell.items() if not key.startswith("_")}
    if secrets_.found_in(shell["_raw"]):
        raise DemoError("a secret appeared in the login shell's output")
    outcome["curl_status"] = shell.get("curl_status")
    if conda["kind"] == REAL_CONDA:
        outcome.update(conda_search=shell.get("conda_search"), conda_create=shell.get("conda_create"),
                       conda_installed=shell.get("conda_installed"))
        for step in ("search", "create"):
            with open(os.path.join(home, ".demo-conda-%s.log" % step), errors="replace") as handle:
                log = handle.read()
            if secrets_.found_in(log):
                raise DemoError("a secret appeared in the output of conda %s" % step)
            outcome["conda_%s_output" % step] = secrets_.mask(log)[-3000:]
    else:
        try:
            outcome["python_result"] = json.loads(shell.get("python_result", ""))
        except ValueError:
            outcome["python_result"] = {"error": secrets_.mask(shell.get("python_result", "no output"))}

    time.sleep(0.3)  # tinyproxy writes its log line after the response is sent
    outcome["proxy_log_hits"] = repodata_lines() - proxy_lines_before
    outcome["proxy_log_tarball_hits"] = proxy.log().count(TARBALL)
    seen = channel.log[channel_before:]
    via_hits = [entry for entry in seen if entry[0] == REPODATA and entry[1] and entry[2]]
    outcome["channel_via_hits"] = len(via_hits)
    outcome["channel_tarball_via_hits"] = len([entry for entry in seen if entry[0] == TARBALL and entry[1] and entry[2]])
    outcome["channel_direct_hits"] = len([entry for entry in seen if not entry[2]])
    outcome["channel_via"] = sorted({entry[2] for entry in seen if entry[1] and entry[2]})
    outcome["secret_files"] = secret_files(work, secrets_)
    outcome["seconds"] = round(time.monotonic() - started, 1)

    problems = []
    if shell.get("shell_http_proxy") != "set":
        problems.append("the login shell has no http_proxy from ~/.profile")
    if outcome["curl_status"] == "missing":
        outcome["notes"] = ["curl is not installed: check (a) skipped (`make lab-deps` as root installs it)"]
    elif outcome["curl_status"] != "200":
        problems.append("curl through the proxy answered %s" % outcome["curl_status"])
    if conda["kind"] == REAL_CONDA:
        for step in ("search", "create"):
            if outcome["conda_%s" % step] != "0":
                problems.append("conda %s failed (exit %s):\n%s" % (step, outcome["conda_%s" % step],
                                                                    outcome["conda_%s_output" % step]))
        if outcome["conda_installed"] != "yes":
            problems.append("conda create did not install %s" % realconda.PACKAGE_FILE)
        if outcome["proxy_log_tarball_hits"] < 1 or outcome["channel_tarball_via_hits"] < 1:
            problems.append("the package download did not go through the proxy")
    elif outcome["python_result"].get("status") != 200:
        problems.append("the conda-like fetch failed: %s" % outcome["python_result"])
    if outcome["channel_direct_hits"]:
        problems.append("the channel saw %d request(s) that did not come through the proxy"
                        % outcome["channel_direct_hits"])
    if outcome["netrc_mode"] != "0600":
        problems.append("~/.netrc has mode %s, not 0600" % outcome["netrc_mode"])
    expected = 1 if outcome["curl_status"] == "missing" else 2
    if outcome["proxy_log_hits"] < expected:
        problems.append("the proxy log shows %d request(s) for repodata.json, expected %d"
                        % (outcome["proxy_log_hits"], expected))
    if outcome["channel_via_hits"] < expected:
        problems.append("the channel saw %d authorized request(s) through a proxy, expected %d"
                        % (outcome["channel_via_hits"], expected))
    if problems:
        raise DemoError("; ".join(problems) + "\nlogin shell output:\n" + secrets_.mask(shell["_raw"]))


# Not searched for secrets: the built collection, conda's environment and package cache (no secret goes there;
# the proxy and channel credentials are only in the files the playbook writes and in the demo's own config).
NOT_SEARCHED = ("collections", "dist", "conda-env", "conda-pkgs", "channel")


def secret_files(work: str, secrets_: Secrets) -> dict[str, str]:
    """``{path relative to work: mode}`` for every regular file under ``work`` that holds a secret (any form)."""
    found = {}
    forms = [value.encode() for value in secrets_.values]
    for dirpath, dirnames, filenames in os.walk(work):
        if dirpath == work:
            dirnames[:] = [name for name in dirnames if name not in NOT_SEARCHED]
        for name in filenames:
            path = os.path.join(dirpath, name)
            info = os.lstat(path)
            if not stat.S_ISREG(info.st_mode) or info.st_size > 4 << 20:
                continue
            with open(path, "rb") as handle:
                data = handle.read()
            if any(form in data for form in forms):
                found[os.path.relpath(path, work)] = "%04o" % stat.S_IMODE(info.st_mode)
    return found


def secret_warnings(outcome: dict) -> list[str]:
    """What a look at the kept sandbox would show: secrets in files others can read, or on a command line."""
    warnings = ["%s holds a secret and is readable by others (mode %s)" % (path, mode)
                for path, mode in sorted(outcome.get("secret_files", {}).items()) if int(mode, 8) & 0o077]
    if outcome.get("proxy") == "proxypy":
        warnings.append("proxy.py gets the demo proxy's password on its command line (other local accounts can "
                        "see it with ps while the demo runs; tinyproxy reads it from a 0600 file)")
    return warnings


def summary(outcome: dict) -> str:
    recap = outcome.get("recap", [{}, {}])
    conda = outcome.get("conda", {})
    if conda.get("kind") == REAL_CONDA:
        conda_lines = [
            "  conda      : REAL conda (%s, %s; %s)" % (conda.get("version"), conda.get("path"), conda.get("reason")),
            "    conda search %s                       -> %s" % (realconda.PACKAGE, _exit(outcome.get("conda_search"))),
            "    conda create -p <work>/conda-env %s   -> %s, %s %s" % (
                realconda.PACKAGE, _exit(outcome.get("conda_create")), realconda.PACKAGE_FILE,
                "installed" if outcome.get("conda_installed") == "yes" else "MISSING"),
        ]
    else:
        conda_lines = [
            "  conda      : conda-like fetch, not conda (%s; %s)" % (conda.get("path"), conda.get("reason")),
            "    conda-like fetch (~/.condarc + ~/.netrc)   -> HTTP %s" % outcome.get("python_result", {}).get("status"),
        ]
    direct = outcome.get("direct_request", {})
    warnings = sorted({w for run_ in recap for w in run_.get("warnings", [])}) + secret_warnings(outcome)
    return "\n".join([
        "condafleet.proxy demo: OK (%ss)" % outcome.get("seconds"),
        "  collection : %s installed offline into %s" % (outcome.get("tarball"), outcome.get("collections_path")),
        "  proxy      : %s on %s, Basic auth required (no credentials -> %s)"
        % (outcome.get("proxy"), outcome.get("proxy_url"), outcome.get("proxy_without_credentials")),
        "  channel    : %s, Basic auth required (credentials only in ~/.netrc)" % outcome.get("channel_url"),
        "  direct     : GET %s without the proxy, right credentials -> HTTP %s (%s)"
        % (REPODATA, direct.get("status"), direct.get("body")),
        "  playbook   : run 1 changed=%s, run 2 changed=%s (condarc_proxy, env_proxy, netrc_entry)"
        % (recap[0].get("changed"), recap[1].get("changed")),
        "  warnings   : %s" % ("; ".join(warnings) or "none"),
        "  secrets    : held by %s" % (", ".join("<work>/%s (%s)" % item for item in sorted(
            outcome.get("secret_files", {}).items())) or "no file"),
        "  login shell: env -i HOME=<sandbox> bash -l  (http_proxy %s, no_proxy=%s, ~/.netrc mode %s)"
        % (outcome.get("shell", {}).get("shell_http_proxy") or "missing", outcome.get("shell", {}).get("shell_no_proxy"),
           outcome.get("netrc_mode")),
        "    curl --netrc with ~/.profile's proxy        -> HTTP %s" % outcome.get("curl_status"),
    ] + conda_lines + [
        "  proxy log  : %s request(s) for %s, %s for the package"
        % (outcome.get("proxy_log_hits"), REPODATA, outcome.get("proxy_log_tarball_hits")),
        "  channel    : %s authorized request(s) for repodata.json and %s for the package received via %s; "
        "%s not through the proxy"
        % (outcome.get("channel_via_hits"), outcome.get("channel_tarball_via_hits"),
           ", ".join(outcome.get("channel_via", [])) or "-", outcome.get("channel_direct_hits")),
    ] + ["  note       : %s" % note for note in outcome.get("notes", [])])


def _exit(code: str | None) -> str:
    return "ok" if code == "0" else "FAILED (exit %s)" % code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--workdir", help="empty or missing directory to work in (default: a new temporary one)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (sandbox home, logs)")
    parser.add_argument("--proxy", choices=("auto", "tinyproxy", "proxypy"), default="auto")
    parser.add_argument("--conda", choices=("auto", "real", "like"), default="auto",
                        help="auto: real conda when ../shared/real-conda is there, else the conda-like fetch")
    parser.add_argument("--json", help="write the outcome (no secrets) to this file")
    args = parser.parse_args(argv)

    # Every file the demo and its servers create is private: the sandbox holds the proxy and channel passwords.
    os.umask(0o077)
    if args.workdir:
        os.makedirs(args.workdir, exist_ok=True)
        if os.listdir(args.workdir):
            parser.error("--workdir %s is not empty" % args.workdir)
        work = os.path.abspath(args.workdir)
    else:
        work = tempfile.mkdtemp(prefix="condafleet-demo-")

    def on_signal(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    outcome: dict = {"ok": False, "workdir": work}
    status = 1
    try:
        with contextlib.ExitStack() as stack:  # stops the proxy (by pid) and the channel on any exit
            try:
                demo(args, work, stack, outcome)
                outcome["ok"] = True
                status = 0
            except DemoError as exc:
                outcome["error"] = str(exc)
                print("condafleet.proxy demo: FAILED\n%s" % exc, file=sys.stderr)
            except subprocess.TimeoutExpired as exc:
                outcome["error"] = "timed out: %s" % exc.cmd[0]
                print("condafleet.proxy demo: FAILED, timed out running %s" % exc.cmd[0], file=sys.stderr)
    finally:
        pid = outcome.get("proxy_pid")
        if pid:
            outcome["proxy_stopped"] = not os.path.exists("/proc/%d" % pid) or _is_zombie(pid)
        if args.json:
            with open(args.json, "w") as handle:
                json.dump(outcome, handle, indent=2, sort_keys=True)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if status == 0:
        print(summary(outcome))
        print("  stopped    : %s (pid %s) and the channel server%s" % (
            outcome["proxy"], outcome["proxy_pid"], "" if not args.keep else "; files kept in %s" % work))
    return status


def _is_zombie(pid: int) -> bool:
    try:
        with open("/proc/%d/stat" % pid) as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


if __name__ == "__main__":
    sys.exit(main())
