# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""condafleet.proxy.local_auth_proxy for real (issue 14): real px in a venv, real cntlm, real squids.

The module runs as root through the ansible CLI inside a private ``/etc`` (:class:`realconda.PrivateEtc`), so the
systemd unit, ``/etc/condafleet`` and the accounts the tests add never touch the machine. No systemd runs here:
each test checks the unit with ``systemd-analyze verify``, then runs the unit's own ``ExecStart`` (parsed from the
file) in its ``WorkingDirectory`` as its ``User`` (or as the account, for a per-account unit) and sends real
traffic through it: curl, and real conda from a fresh login shell. px is installed from a wheelhouse built once
under ``/var/cache/condafleet-lab/px-wheels`` (offline afterwards).
"""

from __future__ import annotations

import json
import os
import pwd
import random
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

import realconda
from ansible_collections.condafleet.proxy.plugins.module_utils import _authproxy
from servers import AccountSquid, ChannelServer, free_port, require, stop_process, wait_for_port

corpauth = pytest.importorskip("corpauth")

pytestmark = pytest.mark.slow

SUPPORT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "support")
COLLECTIONS = os.path.join(os.path.dirname(os.path.dirname(SUPPORT)), "collections")
WHEELS = "/var/cache/condafleet-lab/px-wheels"
PINS = os.path.join(os.path.dirname(COLLECTIONS), "requirements", "px-lab.txt")
PX_VERSION = "0.13.0"
# Hostile on purpose: quotes, a backslash, '$' and '#' for the .env, '@' and ':' for any URL it could leak into.
BASIC_PASSWORD = "B@s1c'pw\\$HOME#x:y"
NTLM_PASSWORD = "Ntlm-S3cr3t!pw"
KERBEROS_PASSWORD = "Kerb3ros-pw@alice"
SECRETS = (BASIC_PASSWORD, NTLM_PASSWORD, KERBEROS_PASSWORD)
# What a scan looks for: the passwords, and a piece of each that no file format escapes (the .env escapes ' and \).
MARKERS = SECRETS + ("B@s1c",)
ADHOC = ("import json, sys; sys.path.insert(0, sys.argv[1]); from modulerun import run_adhoc; "
         "result, raw = run_adhoc(sys.argv[2], json.loads(sys.argv[3]), check=sys.argv[5] == '1', diff=True, "
         "env=json.loads(sys.argv[4])); print(json.dumps({'result': result, 'raw': raw}))")


def mask(text: str) -> str:
    for secret in SECRETS:
        text = text.replace(secret, "********")
    return text


@pytest.fixture(scope="module")
def wheelhouse():
    """px-proxy and its dependencies as wheels, downloaded once (the only network use of these tests)."""
    if not os.path.isfile(os.path.join(WHEELS, "px_proxy-%s-py3-none-any.whl" % PX_VERSION)):
        os.makedirs(WHEELS, exist_ok=True)
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "-d", WHEELS,
                               "-c", PINS, "px-proxy==%s" % PX_VERSION],
                              capture_output=True, text=True, timeout=600, check=False)
        if proc.returncode != 0:
            pytest.skip("cannot build the px wheelhouse: %s" % proc.stderr[-500:])
    return WHEELS


@pytest.fixture(scope="module")
def venv_dir():
    """Where the module installs px: below a 0755 directory every account can reach, removed at the end."""
    base = tempfile.mkdtemp(prefix="condafleet-px-", dir="/var/tmp")
    os.chmod(base, 0o755)
    yield os.path.join(base, "px")
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def spnego_python(wheelhouse):
    """A Python with pyspnego (from the wheelhouse): it runs the NTLM proxy that really checks the response."""
    base = tempfile.mkdtemp(prefix="condafleet-spnego-", dir="/var/tmp")
    python = os.path.join(base, "bin", "python")
    subprocess.run(["/usr/bin/python3", "-m", "venv", base], check=True, capture_output=True, timeout=120)
    proc = subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-index", "--find-links", wheelhouse,
                           "pyspnego"], capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip("pyspnego not installable from the wheelhouse: %s" % proc.stderr[-300:])
    yield python
    shutil.rmtree(base, ignore_errors=True)


def ntlm_verifier_source() -> str:
    """bench/auth_proxy_hop.py's verifying NTLM proxy: 200 only when the NTLM handshake proves the password of
    ``NTLM_USER_FILE`` (pyspnego's acceptor), 407 otherwise."""
    path = os.path.join(os.path.dirname(os.path.dirname(SUPPORT)), "bench", "auth_proxy_hop.py")
    with open(path) as handle:
        text = handle.read()
    start = text.index("NTLM_VERIFIER = r'''") + len("NTLM_VERIFIER = r'''")
    return text[start:text.index("'''", start)]


class Host:
    """This machine as a fresh host: a private ``/etc`` and homes under ``base``; the services it runs by pid."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.etc = realconda.PrivateEtc(base)
        self.services: list[subprocess.Popen] = []

    def add_account(self, name: str) -> pwd.struct_passwd:
        for _attempt in range(50):
            uid = random.randrange(200000, 900000)
            try:
                pwd.getpwuid(uid)
            except KeyError:
                break
        home = os.path.join(self.base, name)
        for command in (["groupadd", "-g", str(uid), name],
                        ["useradd", "-m", "-d", home, "-u", str(uid), "-g", str(uid), "-s", "/bin/bash", name]):
            proc = self.etc.run(command)
            assert proc.returncode == 0, proc.stderr
        return pwd.struct_passwd((name, "x", uid, uid, "", home, "/bin/bash"))

    def adhoc(self, args: dict, check: bool = False, module: str = "local_auth_proxy") -> tuple[dict, float]:
        """``condafleet.proxy.<module>`` as root through the ansible CLI; ``(result, seconds)``."""
        env = {"ANSIBLE_COLLECTIONS_PATH": COLLECTIONS}
        started = time.monotonic()
        proc = self.etc.run([sys.executable, "-c", ADHOC, SUPPORT, module, json.dumps(args),
                             json.dumps(env), "1" if check else "0"], timeout=600)
        took = time.monotonic() - started
        assert proc.returncode == 0, mask(proc.stdout + proc.stderr)[-3000:]
        outcome = json.loads(proc.stdout)
        for secret in SECRETS:
            assert secret not in outcome["raw"], "a password in the module's output"
        return outcome["result"], took

    def configure(self, args: dict, check: bool = False, module: str = "local_auth_proxy") -> dict:
        result, _took = self.adhoc(args, check, module)
        assert not result.get("failed"), mask(json.dumps(result, indent=1))
        return result

    def path(self, path: str) -> str:
        """Where ``path`` (as the host sees it) is, seen from outside the private ``/etc``."""
        return self.etc.file(path) if path.startswith("/etc/") else path

    def verify_unit(self, unit_path: str, user_unit: bool) -> None:
        runtime = tempfile.mkdtemp(prefix="condafleet-xdg-")
        try:
            command = ["systemd-analyze"] + (["--user"] if user_unit else []) + ["verify", unit_path]
            proc = self.etc.run(["env", "XDG_RUNTIME_DIR=%s" % runtime] + command)
            assert proc.returncode == 0, proc.stdout + proc.stderr
        finally:
            shutil.rmtree(runtime, ignore_errors=True)

    def run_unit(self, unit_path: str, port: int, account: str | None = None) -> subprocess.Popen:
        """Start the unit's ExecStart as its ``User`` (or ``account``), in its WorkingDirectory, with its
        Environment, the way systemd would; returns once it listens on ``port``."""
        with open(self.path(unit_path), "rb") as handle:
            unit = handle.read()
        user = _authproxy.parse_unit(unit)["Service"].get("User", [account])[-1]
        script = unit_start_script(unit)
        log = open(os.path.join(self.base, "service-%d.log" % port), "wb")
        proc = subprocess.Popen(self.etc.argv(["setpriv", "--reuid=%s" % user, "--regid=%s" % user, "--init-groups",
                                               "--reset-env", "/bin/sh", "-c", script]),
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.services.append(proc)
        try:
            wait_for_port(port, proc, timeout=30)
        except RuntimeError:
            with open(log.name, errors="replace") as handle:
                raise AssertionError("the unit's service did not start: %s" % handle.read()[-2000:])
        return proc

    def login(self, account: str, command: str, timeout: float = 120, stdin: str | None = None
              ) -> subprocess.CompletedProcess:
        """``command`` in a fresh login shell of ``account``; stdin closed unless ``stdin`` is given."""
        if stdin is None:
            return self.etc.run(["su", "-", account, "-c", command], timeout=timeout, stdin=subprocess.DEVNULL)
        return self.etc.run(["su", "-", account, "-c", command], timeout=timeout, input=stdin)

    def stop(self) -> None:
        for proc in self.services:
            stop_process(proc)


def unit_start_script(unit: bytes) -> str:
    """A ``/bin/sh -c`` script that does what systemd does with the unit's ``[Service]``: its ExecStart in its
    WorkingDirectory with its Environment (the account to run it as is the caller's)."""
    service = _authproxy.parse_unit(unit)["Service"]
    env = " ".join("%s=%s" % (k, shlex.quote(v)) for k, v in _authproxy.unit_environment(unit).items())
    return "cd %s && exec env %s %s" % (shlex.quote(service["WorkingDirectory"][-1]), env,
                                        " ".join(shlex.quote(a) for a in _authproxy.unit_exec_start(unit)))


@pytest.fixture
def host():
    base = tempfile.mkdtemp(prefix="condafleet-authproxy-", dir="/var/tmp")
    os.chmod(base, 0o755)
    made = Host(base)
    try:
        yield made
    finally:
        made.stop()
        shutil.rmtree(base, ignore_errors=True)


def curl_through(port: int, url: str) -> str:
    proc = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "20", "--noproxy", "",
                           "-x", "http://127.0.0.1:%d" % port, url], capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL, check=False)
    return proc.stdout.strip() or proc.stderr


def tree_state(root: str) -> dict:
    """Every path under ``root`` with its bytes, mode and owner (to prove check mode and absent)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            info = os.lstat(path)
            data = None
            if os.path.isfile(path) and not os.path.islink(path):
                with open(path, "rb") as handle:
                    data = handle.read()
            out[os.path.relpath(path, root)] = (info.st_mode, info.st_uid, data)
    return out


def files_holding(roots: list[str], secrets: tuple) -> list[str]:
    """Every regular file under ``roots`` holding any of ``secrets`` (raw bytes, UTF-16 too)."""
    needles = [s.encode() for s in secrets] + [s.encode("utf-16-le") for s in secrets]
    found = []
    for root in roots:
        for dirpath, _dirnames, filenames in os.walk(root):
            for name in filenames:
                path = os.path.join(dirpath, name)
                if os.path.islink(path) or not os.path.isfile(path):
                    continue
                try:
                    with open(path, "rb") as handle:
                        data = handle.read()
                except OSError:
                    continue
                if any(needle in data for needle in needles):
                    found.append(path)
    return found


# ----------------------------------------------------------------------------- Basic, system service


def test_basic_system_service_check_apply_idempotent_absent(host, wheelhouse, venv_dir, tmp_path):
    require("/usr/sbin/squid", "/usr/lib/squid/basic_ncsa_auth", "openssl", "curl", "setpriv", "systemd-analyze")
    svc = host.add_account("pxsvc")
    root = str(tmp_path / "channel")
    os.makedirs(root)
    realconda.write_package_channel(root)
    port = free_port()
    with AccountSquid({"fleet-px": BASIC_PASSWORD}) as squid, ChannelServer(root) as channel:
        args = dict(auth="basic", upstream=["127.0.0.1:%d" % squid.port], listen_port=port, service_user=svc.pw_name,
                    username="fleet-px", password=BASIC_PASSWORD, venv=venv_dir, px_source=wheelhouse)
        before = tree_state(host.etc.path)

        predicted = host.configure(args, check=True)
        assert predicted["changed"] and tree_state(host.etc.path) == before and not os.path.exists(venv_dir)
        assert BASIC_PASSWORD not in json.dumps(predicted)

        applied, first_took = host.adhoc(args)
        assert not applied.get("failed"), mask(json.dumps(applied))
        assert applied["changed"] and applied["pip_ran"] and applied["px_version"] == PX_VERSION
        assert applied["proxy_url"] == "http://127.0.0.1:%d" % port and applied["scope"] == "system"
        assert applied["service"]["manager"] == "none"
        assert any("systemd is not running" in w for w in applied.get("warnings", [])), applied.get("warnings")
        unit = "/etc/systemd/system/condafleet-auth-proxy.service"
        assert applied["unit_path"] == unit and applied["config_path"] == "/etc/condafleet/auth-proxy/px.ini"
        env_file = host.path("/etc/condafleet/auth-proxy/.env")
        info = os.stat(env_file)
        assert (info.st_mode & 0o777, info.st_uid) == (0o600, svc.pw_uid)
        assert os.stat(host.path(applied["config_path"])).st_mode & 0o777 == 0o644

        again, rerun_took = host.adhoc(args)
        assert not again["changed"] and not again["pip_ran"], mask(json.dumps(again))
        print("first run %.1fs (pip), rerun %.1fs (no pip)" % (first_took, rerun_took))
        assert rerun_took < first_took

        host.verify_unit(unit, user_unit=False)
        host.run_unit(unit, port)
        assert curl_through(port, channel.url + "/fleet-channel/noarch/repodata.json") == "200"
        assert [row["user"] for row in squid.entries() if "fleet-channel" in row["url"]] == ["fleet-px"]

        # The password is in the one 0600 file of the service account, nowhere else the run wrote.
        holding = files_holding([host.etc.path, venv_dir, svc.pw_dir], MARKERS)
        assert holding == [env_file], holding

        installed = tree_state(host.etc.path)
        assert host.configure(dict(state="absent"), check=True)["changed"]
        assert tree_state(host.etc.path) == installed  # check mode removes nothing
        removed = host.configure(dict(state="absent"))
        assert removed["changed"]
        after = tree_state(host.etc.path)
        assert after == before, sorted(set(after) ^ set(before))
        assert os.path.isdir(venv_dir)  # kept unless remove_venv
        assert not host.configure(dict(state="absent"))["changed"]


def test_backup_keeps_a_hand_written_unit(host, wheelhouse, venv_dir):
    """A unit of the same name written by hand is backed up (backup=true) before it is replaced."""
    unit = host.path("/etc/systemd/system/condafleet-auth-proxy.service")
    os.makedirs(os.path.dirname(unit), exist_ok=True)
    with open(unit, "w") as handle:
        handle.write("[Service]\nExecStart=/usr/local/bin/hand-made-proxy\n")
    svc = host.add_account("nonesvc")
    applied = host.configure(dict(auth="none", upstream=["127.0.0.1:3128"], listen_port=free_port(), venv=venv_dir,
                                  px_source=wheelhouse, backup=True, service_user=svc.pw_name))
    assert len(applied["backup_files"]) == 1, applied
    with open(host.path(applied["backup_files"][0])) as handle:
        assert "hand-made-proxy" in handle.read()
    with open(unit) as handle:
        assert "condafleet" in handle.read()


def test_bad_input_fails_clearly_and_writes_nothing(host, venv_dir):
    before = tree_state(host.etc.path)
    cases = [
        (dict(auth="basic", upstream=["alice:pw@proxy:8080"], service_user="root", username="a", password="x"),
         "credentials"),
        (dict(auth="ntlm", upstream=["proxy:8080"], username="a", password="x"), "service_user"),
        (dict(auth="kerberos", upstream=["proxy:8080"], pac_url="http://wpad/p.pac", user="root"), "exactly one"),
        (dict(auth="basic", upstream=["proxy:8080"], listen_port=80, service_user="root"), "listen_port"),
    ]
    for args, message in cases:
        result, _took = host.adhoc(dict(args, venv=venv_dir))
        assert result.get("failed") and message in result["msg"], result
        assert "pw@" not in result["msg"]
    assert tree_state(host.etc.path) == before


# ----------------------------------------------------------------------------- Kerberos, per account, real conda


def test_kerberos_account_runs_real_conda_through_px_with_no_password_anywhere(host, wheelhouse, venv_dir, tmp_path):
    require(*corpauth.KRB5_PROGRAMS)
    require("/usr/sbin/squid", corpauth.NEGOTIATE_HELPER, "setpriv", "systemd-analyze")
    conda = realconda.require()
    alice = host.add_account("alice")
    root = str(tmp_path / "channel")
    os.makedirs(root)
    realconda.write_package_channel(root)
    port = free_port()
    with corpauth.Kdc() as kdc, corpauth.NegotiateSquid(kdc) as squid, ChannelServer(root) as channel:
        principal = kdc.add_user("alice", KERBEROS_PASSWORD)
        krb5 = "export KRB5_CONFIG=%s; " % shlex.quote(kdc.krb5_conf)
        kinit = host.login(alice.pw_name, krb5 + "kinit %s" % principal, stdin=KERBEROS_PASSWORD + "\n")
        assert kinit.returncode == 0, kinit.stderr
        args = dict(auth="kerberos", user=alice.pw_name, upstream=["localhost:%d" % squid.port], listen_port=port,
                    venv=venv_dir, px_source=wheelhouse, environment={"KRB5_CONFIG": kdc.krb5_conf})
        applied = host.configure(args)
        assert applied["changed"] and applied["scope"] == "user"
        unit = os.path.join(alice.pw_dir, ".config/systemd/user/condafleet-auth-proxy.service")
        assert applied["unit_path"] == unit
        for path in (unit, applied["config_path"], applied["credential_path"]):
            assert os.stat(path).st_uid == alice.pw_uid, path  # written as the account, in its home
        assert not host.configure(args)["changed"]
        host.verify_unit(unit, user_unit=True)
        service = host.run_unit(unit, port, account=alice.pw_name)

        # conda sees only http://alice:KEY@127.0.0.1:PORT, written by the collection's own module: px takes only
        # requests carrying the account's name and its client key (from its 0600 .env), never returned by the task
        assert applied["client_username"] == alice.pw_name and "client_key" not in applied
        assert oct(os.stat(applied["client_key_file"]).st_mode & 0o777) == "0o600"
        with open(applied["client_key_file"]) as handle:
            key = handle.read().split("PX_CLIENT_PASSWORD='")[1].split("'")[0]
        assert key not in json.dumps(applied)
        host.configure(dict(user=alice.pw_name, http="http://127.0.0.1:%d" % port, https="http://127.0.0.1:%d" % port,
                            proxy_username=alice.pw_name, proxy_password=key), module="condarc_proxy")
        anyone = curl_through(port, channel.url + "/fleet-channel/noarch/repodata.json")
        assert anyone == "407", anyone  # another account, without the key
        channel_url = channel.url + "/fleet-channel"
        search = host.login(alice.pw_name, "CONDA_SOLVER=classic %s search --override-channels -c %s %s"
                            % (conda, channel_url, realconda.PACKAGE), timeout=180)
        assert search.returncode == 0, search.stdout + search.stderr
        assert realconda.PACKAGE in search.stdout
        prefix = os.path.join(alice.pw_dir, "env")
        create = host.login(alice.pw_name, "%s create -y -p %s --solver classic --override-channels -c %s %s"
                            % (conda, prefix, channel_url, realconda.PACKAGE), timeout=300)
        assert create.returncode == 0, create.stdout + create.stderr
        assert os.path.isfile(os.path.join(prefix, realconda.PACKAGE_FILE))
        users = {row["user"] for row in squid.entries() if "fleet-channel" in row["url"]}
        assert users == {principal}, squid.entries()[-5:]

        # No password in any file the run wrote, in the account's home or the private /etc.
        assert files_holding([host.etc.path, alice.pw_dir, venv_dir], MARKERS) == []

        # Ticket gone: px's open connection to squid stays authenticated (Negotiate is per connection), so the
        # failure shows once px connects anew (here: the service restarted, as at the next login). conda then fails
        # at once with an error, and never waits for a proxy username on stdin.
        host.login(alice.pw_name, krb5 + "kdestroy -q")
        stop_process(service)
        host.run_unit(unit, port, account=alice.pw_name)
        started = time.monotonic()
        failed = host.login(alice.pw_name, "CONDA_SOLVER=classic %s search --override-channels -c %s %s"
                            % (conda, channel_url, realconda.PACKAGE), timeout=180)
        took = time.monotonic() - started
        output = failed.stdout + failed.stderr
        print("conda without a ticket: rc=%d in %.1fs: %s" % (failed.returncode, took, output[-800:]))
        # px answers 401 when the upstream refuses it (not 407, which would make conda ask for a proxy login)
        assert failed.returncode != 0 and "username:" not in output and "401" in output
        assert took < 120

        removed = host.configure(dict(state="absent", user=alice.pw_name))
        assert removed["changed"] and not os.path.exists(unit) and not os.path.exists(applied["config_path"])


# ----------------------------------------------------------------------------- NTLM through cntlm, hash only


def test_ntlm_through_cntlm_writes_the_hash_only(host, venv_dir):
    require("/usr/sbin/squid", corpauth.NTLM_HELPER, "curl", "setpriv", "systemd-analyze")
    require("/usr/sbin/cntlm")
    svc = host.add_account("ntlmsvc")
    port = free_port()
    with corpauth.NtlmSquid() as squid, ChannelServer(tempfile.mkdtemp(dir=host.base)) as channel:
        args = dict(auth="ntlm", upstream=["127.0.0.1:%d" % squid.port], listen_port=port, service_user=svc.pw_name,
                    username="bob", ntlm_domain="CORP", password=NTLM_PASSWORD, venv=venv_dir,
                    # ntlm_fake_auth's challenge carries no target information, which cntlm's NTLMv2 needs
                    ntlm_response="nt")
        applied = host.configure(args)
        assert applied["engine"] == "cntlm" and not applied["pip_ran"]
        conf = host.path(applied["config_path"])
        info = os.stat(conf)
        assert (info.st_mode & 0o777, info.st_uid) == (0o600, svc.pw_uid)
        with open(conf) as handle:
            text = handle.read()
        assert "PassNT\t%s" % _authproxy.ntlm_digest("nt", "bob", "CORP", NTLM_PASSWORD) in text
        assert "Password" not in text
        assert not host.configure(args)["changed"]
        unit = applied["unit_path"]
        host.verify_unit(unit, user_unit=False)
        host.run_unit(unit, port)
        assert curl_through(port, channel.url + "/") == "200"
        # the 407 of the handshake has no user; the request that got through was CORP\\bob's
        users = {row["user"] for row in squid.entries() if str(channel.port) in row["url"] and row["status"] == "200"}
        assert users == {"CORP\\bob"}, squid.entries()
        assert files_holding([host.etc.path, svc.pw_dir, venv_dir], MARKERS) == []
        host.configure(dict(state="absent", auth="ntlm"))
        assert not os.path.exists(conf)


# ----------------------------------------------------------------------------- PAC: one host through squid, one direct


def test_pac_sends_one_channel_through_squid_and_the_other_direct(host, wheelhouse, venv_dir):
    require("/usr/sbin/squid", "/usr/lib/squid/basic_ncsa_auth", "openssl", "curl", "setpriv")
    svc = host.add_account("pacsvc")
    port = free_port()
    with AccountSquid({"fleet-px": BASIC_PASSWORD}) as squid, \
            ChannelServer(tempfile.mkdtemp(dir=host.base)) as proxied, \
            ChannelServer(tempfile.mkdtemp(dir=host.base)) as direct:
        # the PAC sees host names: "localhost" goes through squid, "127.0.0.1" (everything else) direct
        pac = corpauth.PacServer(corpauth.pac_script({"localhost": "PROXY 127.0.0.1:%d" % squid.port})).__enter__()
        try:
            host.configure(dict(auth="basic", pac_url=pac.pac_url, listen_port=port, service_user=svc.pw_name,
                                username="fleet-px", password=BASIC_PASSWORD, venv=venv_dir, px_source=wheelhouse))
            host.run_unit("/etc/systemd/system/condafleet-auth-proxy.service", port)
            assert curl_through(port, "http://localhost:%d/" % proxied.port) == "200"
            assert curl_through(port, "http://127.0.0.1:%d/" % direct.port) == "200"
            urls = [row["url"] for row in squid.entries()]
            assert any(":%d/" % proxied.port in url for url in urls), urls
            assert not any(":%d/" % direct.port in url for url in urls), urls
            assert proxied.requests and direct.requests
            assert pac.requests  # px fetched the PAC itself
        finally:
            pac.__exit__(None, None, None)


def test_ntlmv2_hash_passes_a_proxy_that_checks_the_response(host, spnego_python):
    """The default NTLMv2: the hash the module computes authenticates to a proxy that verifies the NTLMv2 response
    against the account's real NT hash (and a wrong password's hash does not)."""
    require("curl", "setpriv", "/usr/sbin/cntlm")
    svc = host.add_account("ntlmv2svc")
    users = os.path.join(host.base, "ntlm-users")
    hashes = subprocess.run([spnego_python, "-c", "import sys; from spnego._ntlm_raw.crypto import lmowfv1, ntowfv1; "
                             "p = sys.stdin.read(); print(lmowfv1(p).hex(), ntowfv1(p).hex())"],
                            input=NTLM_PASSWORD, capture_output=True, text=True, timeout=60, check=True).stdout.split()
    with open(users, "w") as handle:
        handle.write("CORP\\bob:1000:%s:%s:[U]:LCT-00000000\n" % tuple(hashes))
    verifier_port = free_port()
    verifier = subprocess.Popen([spnego_python, "-c", ntlm_verifier_source(), str(verifier_port)],
                                env=dict(os.environ, NTLM_USER_FILE=users), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for_port(verifier_port, verifier)
        for password, expected in ((NTLM_PASSWORD, "200"), (NTLM_PASSWORD + "-wrong", "407")):
            port = free_port()
            host.configure(dict(auth="ntlm", upstream=["127.0.0.1:%d" % verifier_port], listen_port=port,
                                service_user=svc.pw_name, username="bob", ntlm_domain="CORP", password=password))
            service = host.run_unit("/etc/systemd/system/condafleet-auth-proxy.service", port)
            assert curl_through(port, "http://127.0.0.1:9/any") == expected, password == NTLM_PASSWORD
            stop_process(service)
    finally:
        stop_process(verifier)
