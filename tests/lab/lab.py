#!/usr/bin/env python
# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The multi-host SSH lab: three real hosts in network namespaces, a real squid, a channel behind it.

Layout (all of it exists only inside namespaces this lab creates; nothing is added to the
machine's own network)::

    <prefix>-ctl   controller namespace: bridge br0 = 10.213.X.1/24
                   squid on 10.213.X.1:3128 (Basic auth, credentials generated per lab)
                   channel on 127.0.0.1:8000 (HTTP) and 127.0.0.1:8443 (HTTPS, a certificate for its name
                   signed by the lab's CA: the caller's --ca-cert/--ca-key, else a CA of its own whose key is
                   deleted once it signed): a real package (tests/support/realconda.py), Basic auth with
                   the channel credentials (each account's .netrc), answers only connections opened by
                   squid's uid, logs every request as a JSON line -- squid reaches it by the name
                   channel.condafleet.test (its own hosts_file); the hosts cannot. squid allows CONNECT
                   only to its SSL_ports (443 and the channel's 8443), as a corporate squid.conf does
    <prefix>-h1    sshd on 10.213.X.11: the machine's filesystem, private /etc (overlay), /root, /home, /run
    <prefix>-h2    sshd on 10.213.X.12: chroot into an overlay of a debootstrapped Debian bookworm; the real
                   conda venv (realconda.CACHE) bound read-only at the same path (same Python as the machine)
    <prefix>-h3    sshd on 10.213.X.13: the same for Debian trixie

Every host process runs in its own mount (and UTS) namespace, so the lab's mounts never show in the
machine's mount table and vanish with the processes. Ansible reaches the hosts through
``ProxyCommand="ip netns exec <prefix>-ctl nc %h %p"``.

Command line::

    python tests/lab/lab.py up --state DIR      # writes DIR/inventory.yml, DIR/lab_vars.yml, DIR/state.json
    python tests/lab/lab.py up --state DIR --channel-auth FILE   # channel login/password from a JSON file
    python tests/lab/lab.py up --state DIR --ca-cert CA.pem --ca-key CA-KEY.pem   # sign the channel's cert
    python tests/lab/lab.py status --state DIR
    python tests/lab/lab.py down --state DIR    # or --prefix P: also removes leftovers of earlier runs
    python tests/lab/lab.py bootstrap           # only fill the debootstrap cache

From Python: :func:`up`, :func:`down`, :func:`status`, :func:`missing_programs`.

SSH ControlPersist keeps a session (and the environment its login read) alive for a while: a verify
play that must see files written by converge has to start with ``meta: reset_connection``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from urllib.parse import quote

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "support"))

import realconda  # noqa: E402  (tests/support is not a package)
from servers import ChannelHandler, _apr1, _squid_user, basic_authorization, socket_owner_uid  # noqa: E402

CACHE_DIR = os.environ.get("CONDAFLEET_LAB_CACHE", "/var/cache/condafleet-lab")
RUN_BASE = os.environ.get("CONDAFLEET_LAB_RUN", "/var/tmp/condafleet-lab")
VARIANT = "minbase"
# krb5-user and python3-venv: a workstation of a Kerberos realm (kinit, klist) that can hold a local px venv.
PACKAGES = ("python3", "openssh-server", "curl", "zsh", "fish", "sudo", "python3-requests", "ca-certificates", "procps",
            "krb5-user", "python3-venv")
HOSTS = (("h1", None), ("h2", "bookworm"), ("h3", "trixie"))
USERS = ("alice", "bob")
# The lab accounts' uids: 62001, 62002... Every host shares the machine's pid namespace, so a job on the machine
# that kills "every process of uid N" (a test's throwaway account, `pgrep -u`) must never hit a lab account's
# conda; useradd on the machine hands out uids from 1000 to 60000.
UID_BASE = 62000
PROXY_PORT = 3128
CHANNEL_PORT = 8000
CHANNEL_TLS_PORT = 8443  # not squid's default SSL_ports (443 only): squid.conf adds it, as a corporate one must
CHANNEL_HOST = "channel.condafleet.test"
CHANNEL_NAME = "fleet-channel"
# squid's native access-log format, spelled out so that the proxy account (%un) is there by contract.
# The last field (%<lp) is squid's local port towards the channel: through a CONNECT tunnel the channel sees no
# X-Forwarded-For, so its peer_port joined with this field names the host (and account) behind each TLS request.
SQUID_LOGFORMAT = "%ts.%03tu %6tr %>a %Ss/%03>Hs %<st %rm %ru %un %Sh/%<a %mt %<lp"
REQUIRED_PROGRAMS = ("ip", "unshare", "mount", "umount", "chroot", "nc", "ssh", "ssh-keygen", "/usr/sbin/sshd",
                     "/usr/sbin/squid", "/usr/lib/squid/basic_ncsa_auth", "openssl", "debootstrap", "useradd")
SSHD_CONFIG = "/etc/ssh/condafleet-lab-sshd_config"

# Bounds for every wait loop.
START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0
BOOTSTRAP_TIMEOUT = 1200


class LabError(RuntimeError):
    """The lab could not be set up; the message says which step failed."""


# ---------------------------------------------------------------------------------------- helpers


def log(message: str) -> None:
    sys.stderr.write("[lab] %s\n" % message)  # one write: lines of parallel bootstraps never interleave
    sys.stderr.flush()


def run(cmd: list[str], timeout: float = 60, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                          check=False, **kwargs)
    if check and proc.returncode != 0:
        raise LabError("%s failed (%d): %s" % (" ".join(cmd), proc.returncode, (proc.stderr or proc.stdout).strip()))
    return proc


def missing_programs() -> list[str]:
    """Programs the lab needs that are not installed (empty when the lab can run)."""
    return [p for p in REQUIRED_PROGRAMS if not (os.path.exists(p) if p.startswith("/") else shutil.which(p))]


def unavailable() -> str | None:
    """Why the lab cannot run on this machine (for a test's skip), or None."""
    if os.geteuid() != 0:
        return "the lab needs root (network and mount namespaces)"
    missing = missing_programs()
    if missing:
        return "not installed: %s (apt: iproute2 openssh-server squid netcat-openbsd debootstrap)" % ", ".join(missing)
    return None


def default_prefix(state_dir: str) -> str:
    """A short name prefix that is stable for one state directory and differs between directories."""
    return "cfl" + hashlib.sha256(os.path.realpath(state_dir).encode()).hexdigest()[:6]


def subnet_for(prefix: str) -> str:
    """``10.213.X`` with X from the prefix, so labs side by side do not share addresses (or SSH control sockets)."""
    return "10.213.%d" % (int(hashlib.sha256(prefix.encode()).hexdigest()[:4], 16) % 200 + 20)


def debian_mirror() -> str:
    """The Debian mirror apt already uses (deb822 ``URIs:`` or one-line ``deb``), else deb.debian.org."""
    paths = ["/etc/apt/sources.list"]
    directory = "/etc/apt/sources.list.d"
    if os.path.isdir(directory):
        paths += [os.path.join(directory, n) for n in sorted(os.listdir(directory))]
    for path in paths:
        try:
            with open(path, errors="replace") as handle:
                lines = handle.read().splitlines()
        except OSError:
            continue
        for line in lines:
            words = line.split("#", 1)[0].split()
            uris = []
            if words[:1] == ["URIs:"]:
                uris = words[1:]
            elif words[:1] == ["deb"]:
                uris = [w for w in words[1:] if "://" in w][:1]
            for uri in uris:
                if uri.rstrip("/").endswith("/debian"):
                    return uri.rstrip("/")
    return "http://deb.debian.org/debian"


def proc_starttime(pid: int) -> str | None:
    """The kernel start time of a *running* ``pid`` (field 22 of /proc/pid/stat), its identity against reuse.

    None when the pid is gone or a zombie (a zombie holds no namespace or mount; its parent reaps it).
    """
    try:
        with open("/proc/%d/stat" % pid) as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


def mounts_under(path: str) -> list[str]:
    """Mount points in the machine's mount table at or below ``path`` (deepest first)."""
    path = os.path.realpath(path)
    found = []
    with open("/proc/self/mounts") as handle:
        for line in handle:
            point = line.split()[1].replace("\\040", " ")
            if point == path or point.startswith(path + "/"):
                found.append(point)
    return sorted(found, key=len, reverse=True)


def safe_rmtree(path: str) -> None:
    """Remove ``path`` only after nothing is mounted below it (never delete through a bind mount)."""
    if not os.path.lexists(path):
        return
    for point in mounts_under(path):
        run(["umount", "--lazy", point], check=False)
    left = mounts_under(path)
    if left:
        raise LabError("refusing to delete %s: still mounted: %s" % (path, ", ".join(left)))
    shutil.rmtree(path)


def netns_list() -> list[str]:
    out = run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def netns_pids(ns: str) -> list[int]:
    out = run(["ip", "netns", "pids", ns], check=False).stdout
    return [int(w) for w in out.split() if w.isdigit()]


def in_ns(ns: str, *cmd: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *cmd]


def wait_tcp(ns: str, host: str, port: int, proc: subprocess.Popen | None = None, timeout: float = START_TIMEOUT) -> None:
    """Wait (bounded) until ``host:port`` accepts connections from inside namespace ``ns``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise LabError("process %d exited with %s before %s:%d listened" % (proc.pid, proc.returncode, host, port))
        if run(in_ns(ns, "nc", "-z", "-w", "1", host, str(port)), check=False, timeout=5).returncode == 0:
            return
        time.sleep(0.05)
    raise LabError("nothing listens on %s:%d in %s after %.0fs" % (host, port, ns, timeout))


# ------------------------------------------------------------------------------ debootstrap cache


def cache_key(suite: str, mirror: str, packages: tuple[str, ...] = PACKAGES) -> str:
    text = json.dumps([suite, VARIANT, sorted(packages), mirror, os.uname().machine])
    return "%s-%s" % (suite, hashlib.sha256(text.encode()).hexdigest()[:12])


# debootstrap's own progress lines ("I: Retrieving libc6 2.36-9"): the phase each starts, and whether it counts a
# package (Retrieving and Validating alternate, one pair per package: one phase).
_DEBOOTSTRAP_PHASES = (("I: Retrieving ", "downloading", True), ("I: Validating ", "downloading", False),
                       ("I: Resolving ", "resolving dependencies", False), ("I: Extracting ", "extracting", True),
                       ("I: Installing ", "installing", False), ("I: Unpacking ", "unpacking", True),
                       ("I: Configuring ", "configuring", True))
PROGRESS_EVERY = 10.0  # seconds between two progress lines


def _debootstrap(suite: str, root: str, mirror: str, packages: tuple[str, ...] = PACKAGES) -> tuple[int, str]:
    """Run debootstrap, logging each new phase and then the phase and its package count every PROGRESS_EVERY
    seconds (it takes a minute or more and would otherwise be silent); returns its exit code and output's end."""
    proc = subprocess.Popen(
        ["debootstrap", "--variant=" + VARIANT, "--include=" + ",".join(packages), suite, root, mirror],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, errors="replace")
    watchdog = threading.Timer(BOOTSTRAP_TIMEOUT, proc.kill)  # bounds the read loop below
    watchdog.start()
    tail: list[str] = []
    counts: dict[str, int] = {}
    last = 0.0
    started = time.monotonic()
    try:
        for line in proc.stdout:
            tail = (tail + [line])[-40:]
            for prefix, phase, counted in _DEBOOTSTRAP_PHASES:
                if line.startswith(prefix):
                    break
            else:
                continue
            new = phase not in counts
            counts[phase] = counts.get(phase, 0) + counted
            now = time.monotonic()
            if new or now - last >= PROGRESS_EVERY:
                last = now
                done = "%d packages, " % counts[phase] if counts[phase] else ""
                log("debootstrap %s: %s (%s%.0f s)" % (suite, phase, done, now - started))
        proc.wait()
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, "".join(tail)


def bootstrap_root(suite: str, mirror: str | None = None, cache_dir: str = CACHE_DIR,
                   packages: tuple[str, ...] = PACKAGES) -> str:
    """A debootstrapped root for ``suite`` with ``packages`` from the cache, built once (about a minute) under a lock.

    Keyed by suite, variant, package list, mirror and architecture; built in a temporary directory and
    renamed into place only when complete, so an interrupted build never leaves a half root behind.
    The root is only ever used as an overlay *lower* dir: nothing writes to it after the build.
    """
    mirror = mirror or debian_mirror()
    os.makedirs(cache_dir, mode=0o755, exist_ok=True)
    final = os.path.join(cache_dir, cache_key(suite, mirror, packages))
    root = os.path.join(final, "root")
    if os.path.exists(os.path.join(final, "complete")):
        return root
    with open(final + ".lock", "w") as lock:
        deadline = time.monotonic() + BOOTSTRAP_TIMEOUT
        waited = False
        while True:  # bounded: another run may be building the same root
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LabError("timed out waiting for another lab to bootstrap %s" % suite) from None
                if not waited:
                    log("debootstrap %s: another run is building it; waiting" % suite)
                waited = True
                time.sleep(0.5)
        if os.path.exists(os.path.join(final, "complete")):
            return root
        building = tempfile.mkdtemp(prefix=os.path.basename(final) + ".build-", dir=cache_dir)
        try:
            log("debootstrap %s from %s: a minimal Debian root for a lab host, about a minute, once (cached in %s)"
                % (suite, mirror, final))
            started = time.monotonic()
            returncode, output = _debootstrap(suite, os.path.join(building, "root"), mirror, packages)
            if returncode != 0:
                raise LabError("debootstrap %s failed: %s" % (suite, output[-2000:]))
            log("debootstrap %s: done in %.0f s" % (suite, time.monotonic() - started))
            # Keep the cached root small and neutral: no apt lists, no logs from the build.
            with open(os.path.join(building, "complete"), "w") as handle:
                json.dump({"suite": suite, "mirror": mirror, "packages": list(packages),
                           "seconds": round(time.monotonic() - started, 1)}, handle)
            safe_rmtree(final)
            os.rename(building, final)
        finally:
            safe_rmtree(building)
    return root


def bootstrap_all(suites: list[str], mirror: str | None = None, cache_dir: str = CACHE_DIR) -> dict[str, str]:
    """Bootstrap several suites in parallel (network-bound); returns ``{suite: root}``."""
    results: dict[str, str] = {}
    errors: list[BaseException] = []

    def work(suite: str) -> None:
        try:
            results[suite] = bootstrap_root(suite, mirror, cache_dir)
        except BaseException as exc:  # noqa: BLE001 -- re-raised below in the caller's thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in suites]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(BOOTSTRAP_TIMEOUT + 60)
    if errors:
        raise errors[0]
    return results


# ----------------------------------------------------------------------------------- the host scripts

# Runs inside `ip netns exec <ns> unshare --mount --uts --propagation slave`: mounts stay in the
# host's own mount namespace (slave: the machine's unmounts still reach it, its mounts never leak out).
_H1_MOUNTS = r"""
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$RUN/etc-upper,workdir=$RUN/etc-work" /etc
# A lock another job on the machine holds in the real /etc (useradd in a test) must not stop this /etc's useradd.
rm -f /etc/passwd.lock /etc/shadow.lock /etc/group.lock /etc/gshadow.lock /etc/subuid.lock /etc/subgid.lock
mount -t tmpfs -o mode=0700 tmpfs /root
mount -t tmpfs -o mode=0755 tmpfs /home
mount -t tmpfs -o mode=0755 tmpfs /run
ROOT=/
"""

_CHROOT_MOUNTS = r"""
ROOT="$RUN/root"
mount -t overlay overlay -o "lowerdir=$LOWER,upperdir=$RUN/upper,workdir=$RUN/work" "$ROOT"
mount -t proc proc "$ROOT/proc"
mount -t sysfs sysfs "$ROOT/sys"
mount --rbind /dev "$ROOT/dev"
mount -t tmpfs -o mode=0755 tmpfs "$ROOT/run"
cp /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
if [ -n "$REALCONDA" ]; then  # the machine's real conda venv, read-only, where it is on the machine
    mkdir -p "$ROOT$REALCONDA"
    mount --bind "$REALCONDA" "$ROOT$REALCONDA"
    mount -o remount,bind,ro "$ROOT$REALCONDA"
fi
"""

_ACCOUNTS_AND_SSHD = r"""
hostname "$NAME"
printf '127.0.1.1\t%s\n' "$NAME" >> "$ROOT/etc/hosts"
install -d -m 0700 "$ROOT/root/.ssh"
install -m 0600 "$STAGE/authorized_keys" "$ROOT/root/.ssh/authorized_keys"
uid=$UID_BASE
for user in $USERS; do
    uid=$((uid + 1))
    # A useradd another job runs in the real /etc at the same moment (h1's lower layer) can hold its lock for a
    # moment: try again, a bounded number of times.
    tries=0
    until chroot "$ROOT" id -u "$user" >/dev/null 2>&1 || \
          chroot "$ROOT" useradd --uid "$uid" --create-home --shell /bin/bash --password '*' "$user"; do
        tries=$((tries + 1)); [ "$tries" -lt 10 ] || exit 1; sleep 0.3
    done
    chroot "$ROOT" install -d -m 0755 -o "$user" -g "$user" "/home/$user"
    chroot "$ROOT" install -d -m 0700 -o "$user" -g "$user" "/home/$user/.ssh"
    cp "$STAGE/authorized_keys" "$ROOT/home/$user/.ssh/authorized_keys"
    chroot "$ROOT" chown "$user:$user" "/home/$user/.ssh/authorized_keys"
    chmod 0600 "$ROOT/home/$user/.ssh/authorized_keys"
done
install -m 0644 "$STAGE/sshd_config" "$ROOT$SSHD_CONFIG"
test -s "$ROOT/etc/ssh/ssh_host_ed25519_key" || ssh-keygen -q -t ed25519 -N '' -f "$ROOT/etc/ssh/ssh_host_ed25519_key"
install -d -m 0755 "$ROOT/run/sshd"
echo ready
exec chroot "$ROOT" /usr/sbin/sshd -D -e -f "$SSHD_CONFIG"
"""


def sshd_config(address: str) -> str:
    return (
        "# condafleet lab sshd: key logins only, PAM on (so /etc/environment applies as on a real host)\n"
        "Port 22\nListenAddress %s\nHostKey /etc/ssh/ssh_host_ed25519_key\n"
        "PermitRootLogin prohibit-password\nPubkeyAuthentication yes\nAuthorizedKeysFile .ssh/authorized_keys\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM yes\nPrintMotd no\n"
        "AcceptEnv LANG LC_*\nSubsystem sftp internal-sftp\nPidFile none\nMaxStartups 100\nMaxSessions 50\n"
        % address
    )


# ----------------------------------------------------------------------------------------- the lab


class _Lab:
    """One lab's names and paths, derived from its state dir and prefix."""

    def __init__(self, state_dir: str, prefix: str | None = None, run_base: str = RUN_BASE) -> None:
        self.state_dir = os.path.abspath(state_dir)
        self.prefix = prefix or default_prefix(self.state_dir)
        self.net = subnet_for(self.prefix)
        self.run_dir = os.path.join(run_base, self.prefix)
        self.ctl = self.prefix + "-ctl"
        self.state: dict = {
            "prefix": self.prefix, "state_dir": self.state_dir, "run_dir": self.run_dir, "status": "starting",
            "namespaces": [], "processes": [], "mounts": [], "subnet": self.net + ".0/24",
        }
        self.popen: list[subprocess.Popen] = []

    @property
    def state_path(self) -> str:
        return os.path.join(self.state_dir, "state.json")

    def save(self) -> None:
        tmp = self.state_path + ".tmp"
        with open(tmp, "w") as handle:
            json.dump(self.state, handle, indent=2, sort_keys=True)
        os.replace(tmp, self.state_path)

    def add_ns(self, ns: str) -> None:
        run(["ip", "netns", "add", ns])
        self.state["namespaces"].append(ns)
        self.save()
        run(["ip", "-n", ns, "link", "set", "lo", "up"])

    def spawn(self, role: str, ns: str, cmd: list[str], env: dict | None = None) -> subprocess.Popen:
        logfile = os.path.join(self.run_dir, "%s.log" % role)
        proc = subprocess.Popen(
            in_ns(ns, *cmd), stdin=subprocess.DEVNULL, stdout=open(logfile, "ab"), stderr=subprocess.STDOUT,
            start_new_session=True, env=env,
        )
        self.popen.append(proc)
        _CHILDREN[proc.pid] = proc
        self.state["processes"].append({"role": role, "namespace": ns, "pid": proc.pid,
                                        "starttime": proc_starttime(proc.pid), "log": logfile})
        self.save()
        return proc


_CHILDREN: dict[int, subprocess.Popen] = {}  # started by this interpreter: reaped on down()


def _network(lab: _Lab) -> None:
    lab.add_ns(lab.ctl)
    run(["ip", "-n", lab.ctl, "link", "add", "br0", "type", "bridge"])
    run(["ip", "-n", lab.ctl, "addr", "add", lab.net + ".1/24", "dev", "br0"])
    run(["ip", "-n", lab.ctl, "link", "set", "br0", "up"])
    for index, (name, _suite) in enumerate(HOSTS, start=1):
        ns = "%s-%s" % (lab.prefix, name)
        lab.add_ns(ns)
        # The veth is created inside the controller namespace and its peer moved straight into the
        # host namespace: no interface ever appears in the machine's own namespace.
        run(["ip", "-n", lab.ctl, "link", "add", "v" + name, "type", "veth", "peer", "name", "eth0", "netns", ns])
        run(["ip", "-n", lab.ctl, "link", "set", "v" + name, "master", "br0", "up"])
        run(["ip", "-n", ns, "addr", "add", "%s.%d/24" % (lab.net, 10 + index), "dev", "eth0"])
        run(["ip", "-n", ns, "link", "set", "eth0", "up"])


def serve_channel(root: str, port: int, auth_file: str, log_path: str, only_uid: int, tls_port: int | None = None,
                  cert: str | None = None, key: str | None = None) -> None:
    """The lab's channel (run by ``lab.py serve-channel`` in the controller namespace); never returns.

    HTTP on ``port`` and, given ``cert``/``key``, the same content over HTTPS on ``tls_port``. Answers a request only
    when its TCP connection was opened by ``only_uid`` (squid's; else 403, read from ``/proc/net/tcp``) and it
    carries the channel's Basic credentials (else 401). Each request is one JSON line in ``log_path``: ``path``,
    ``status`` (the code sent), ``login`` (the Basic login sent, never the password), ``peer_uid``, ``peer_port``,
    ``tls``, ``via`` and ``forwarded_for`` (squid's ``X-Forwarded-For``: the host that asked squid; none through a
    CONNECT tunnel, where squid's log line with the same local port names the host). A TLS handshake the client
    aborts (it did not trust the certificate) is a line with ``event: tls_handshake_failed`` and the ``error``."""
    import base64
    import http.server
    import ssl

    with open(auth_file) as handle:
        auth = json.load(handle)
    expected = basic_authorization(auth["login"], auth["password"])
    lock = threading.Lock()

    class Handler(ChannelHandler):
        channel_root = root
        realm = "condafleet-lab-channel"

        def _allowed(self) -> bool:
            peer_uid = self.server.peer_uid(self.client_address)
            header = self.headers.get("Authorization") or ""
            sent = None
            if header.startswith("Basic "):
                try:
                    sent = base64.b64decode(header[6:]).decode(errors="replace").split(":", 1)[0]
                except ValueError:
                    sent = "<undecodable>"
            status = 403 if peer_uid != only_uid else 401 if header != expected else 200
            self._entry = {"time": round(time.time(), 3), "method": self.command, "path": self.path.split("?")[0],
                           "status": status, "login": sent, "peer_uid": peer_uid, "peer_port": self.client_address[1],
                           "tls": isinstance(self.connection, ssl.SSLSocket),
                           "via": self.headers.get("Via"), "forwarded_for": self.headers.get("X-Forwarded-For")}
            if status == 403:
                self.answer(403, b"direct access refused: only the proxy may connect\n")
            elif status == 401:
                self.answer(401, b"channel credentials required\n")
            return status == 200

        def send_response(self, code, message=None) -> None:
            if getattr(self, "_entry", None) is not None:
                self._entry["status"] = int(code)
            super().send_response(code, message)

        def _logged(self) -> None:
            entry, self._entry = getattr(self, "_entry", None), None
            if entry is not None:
                write_entry(entry)

        def do_GET(self) -> None:  # noqa: N802 -- http.server's naming
            try:
                if self._allowed():
                    super().do_GET()
            finally:
                self._logged()

        def do_HEAD(self) -> None:  # noqa: N802
            try:
                if self._allowed():
                    super().do_HEAD()
            finally:
                self._logged()

        def log_message(self, fmt, *args) -> None:
            pass

    def write_entry(entry: dict) -> None:
        with lock, open(log_path, "a") as handle:
            handle.write(json.dumps(entry, sort_keys=True) + "\n")

    class Server(http.server.ThreadingHTTPServer):
        """Reads the uid that opened each connection as it is accepted: once the client has gone (a TLS client that
        refused the certificate closes at once) its socket is no longer its own in ``/proc/net/tcp``."""

        def server_bind(self) -> None:
            super().server_bind()
            self.accepted_uids: dict = {}

        def get_request(self):
            sock, address = super().get_request()
            self.accepted_uids[address] = socket_owner_uid(address[:2], self.server_address[:2])
            return sock, address

        def peer_uid(self, address) -> int | None:
            return self.accepted_uids.get(address)

        def process_request_thread(self, request, client_address) -> None:
            try:
                super().process_request_thread(request, client_address)
            finally:
                self.accepted_uids.pop(client_address, None)

    class TLSServer(Server):
        """HTTPS; the handshake runs in the request's thread (a stalled client never blocks accept())."""

        def get_request(self):
            sock, address = super().get_request()
            return context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address

        def finish_request(self, request, client_address) -> None:
            request.settimeout(20)
            try:
                request.do_handshake()
            except (ssl.SSLError, OSError) as exc:
                write_entry({"time": round(time.time(), 3), "event": "tls_handshake_failed", "error": str(exc),
                             "method": None, "path": None, "status": None, "login": None, "via": None,
                             "forwarded_for": None, "tls": True, "peer_port": client_address[1],
                             "peer_uid": self.peer_uid(client_address)})
                return
            request.settimeout(None)
            super().finish_request(request, client_address)

    servers = [Server(("127.0.0.1", port), Handler)]
    if cert and key and tls_port:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        servers.append(TLSServer(("127.0.0.1", tls_port), Handler))
    for server in servers[1:]:
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()
    print("channel on 127.0.0.1:%s, root %s, log %s" % (
        ", ".join(str(s.server_address[1]) for s in servers), root, log_path), flush=True)
    servers[0].serve_forever(poll_interval=0.2)


def _channel_certificate(lab: _Lab, ca_cert: str | None, ca_key: str | None) -> dict:
    """The channel's key and certificate (for CHANNEL_HOST) signed by ``ca_cert``/``ca_key``, in the run dir.

    Without a CA from the caller the lab makes one and deletes its key once it has signed: no CA key is kept
    anywhere a host could read it (h1 shares the machine's filesystem). The CA certificate is copied next to the
    channel's (``ca``): what a client must trust."""
    tls_dir = os.path.join(lab.run_dir, "tls")
    os.makedirs(tls_dir, mode=0o700)
    own_ca = not (ca_cert and ca_key)
    if own_ca:
        ca_cert, ca_key = os.path.join(tls_dir, "ca-source.pem"), os.path.join(tls_dir, "ca-key.pem")
        run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=condafleet lab CA %s" % lab.prefix, "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-keyout", ca_key, "-out", ca_cert])
    paths = {n: os.path.join(tls_dir, n + ".pem") for n in ("ca", "key", "cert")}
    csr, ext = os.path.join(tls_dir, "channel.csr"), os.path.join(tls_dir, "channel.ext")
    try:
        run(["openssl", "req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=" + CHANNEL_HOST,
             "-keyout", paths["key"], "-out", csr])
        with open(ext, "w") as handle:
            handle.write("subjectAltName=DNS:%s\nbasicConstraints=critical,CA:FALSE\n"
                         "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
                         "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n" % CHANNEL_HOST)
        run(["openssl", "x509", "-req", "-in", csr, "-CA", ca_cert, "-CAkey", ca_key, "-days", "2",
             "-set_serial", "0x" + secrets.token_hex(8), "-extfile", ext, "-out", paths["cert"]])
        shutil.copyfile(ca_cert, paths["ca"])
        os.chmod(paths["ca"], 0o644)
    finally:
        for path in (csr, ext) + ((ca_key, ca_cert) if own_ca else ()):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    return paths


def _real_conda(lab: _Lab) -> None:
    """The real conda venv (tests/support/realconda.py) for the hosts that can run it, or why there is none."""
    lab.state["real_conda"] = {"conda": "", "prefix": "", "hosts": [], "python": "", "skip": ""}
    if realconda.installer() is None:
        lab.state["real_conda"]["skip"] = (
            "real conda steps skipped: %s is absent (a checkout without ../shared/real-conda)" % realconda.INSTALLER)
        return
    try:
        conda = realconda.install()
    except (OSError, subprocess.SubprocessError) as exc:
        raise LabError("could not build the real conda with %s: %s" % (realconda.INSTALLER, exc)) from exc
    prefix = os.path.dirname(os.path.dirname(conda))
    with open(os.path.join(prefix, "pyvenv.cfg")) as handle:
        cfg = {k.strip(): v.strip() for k, v in (line.split("=", 1) for line in handle.read().splitlines() if "=" in line)}
    version = ".".join(cfg.get("version", cfg.get("version_info", "")).split(".")[:2])
    if not version:
        raise LabError("no Python version in %s/pyvenv.cfg" % prefix)
    lab.state["real_conda"].update(conda=conda, prefix=prefix, python=version)


def _runs_real_conda(lab: _Lab, root: str | None) -> bool:
    """Whether a host (``root``: its chroot, None for h1 on the machine's filesystem) can run the venv:
    it is built on the machine's /usr/bin/python3, so a host needs that same python3.X there."""
    info = lab.state.get("real_conda") or {}
    if not info.get("conda"):
        return False
    return root is None or os.path.exists(os.path.join(root, "usr", "bin", "python" + info["python"]))


def _proxy_and_channel(lab: _Lab, username: str, password: str, channel_login: str, channel_password: str,
                       ca_cert: str | None = None, ca_key: str | None = None) -> None:
    channel_root = os.path.join(lab.run_dir, "channel")
    realconda.write_package_channel(channel_root, CHANNEL_NAME)
    os.chmod(channel_root, 0o755)
    auth_file = os.path.join(lab.run_dir, "channel-auth.json")
    with open(os.open(auth_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
        json.dump({"login": channel_login, "password": channel_password}, handle)
    channel_log = os.path.join(lab.run_dir, "channel-access.jsonl")
    import pwd

    squid_uid = pwd.getpwnam(_squid_user()).pw_uid
    tls = _channel_certificate(lab, ca_cert, ca_key)
    lab.state["channel_ca"] = tls["ca"]
    channel = lab.spawn("channel", lab.ctl, [sys.executable, os.path.abspath(__file__), "serve-channel",
                                             "--root", channel_root, "--port", str(CHANNEL_PORT),
                                             "--tls-port", str(CHANNEL_TLS_PORT), "--cert", tls["cert"],
                                             "--key", tls["key"],
                                             "--auth", auth_file, "--log", channel_log, "--only-uid", str(squid_uid)])
    lab.state["channel_log"] = channel_log
    squid_dir = os.path.join(lab.run_dir, "squid")
    os.makedirs(squid_dir, mode=0o755)
    with open(os.path.join(squid_dir, "passwd"), "w") as handle:
        handle.write("%s:%s\n" % (username, _apr1(password, secrets.token_hex(4))))
    with open(os.path.join(squid_dir, "hosts"), "w") as handle:
        handle.write("127.0.0.1 %s\n" % CHANNEL_HOST)
    conf = os.path.join(squid_dir, "squid.conf")
    with open(conf, "w") as handle:
        handle.write(
            "http_port %(ip)s:%(port)d\npid_filename %(d)s/squid.pid\n"
            "logformat condafleet %(logformat)s\naccess_log stdio:%(d)s/access.log condafleet\n"
            "cache_log %(d)s/cache.log\ncache deny all\ncache_mem 8 MB\ncoredump_dir %(d)s\n"
            "hosts_file %(d)s/hosts\nvisible_hostname condafleet-lab-proxy\npinger_enable off\n"
            "auth_param basic program /usr/lib/squid/basic_ncsa_auth %(d)s/passwd\n"
            "auth_param basic realm condafleet-lab\nauth_param basic children 2 startup=1\n"
            # squid's own defaults (Debian's squid.conf) for what may be tunnelled, plus the channel's TLS port:
            # a CONNECT to any other port is refused (403) before authentication.
            "acl SSL_ports port 443 %(tls_port)d\n"
            "acl Safe_ports port 80 21 443 70 210 1025-65535 280 488 591 777\n"
            "acl CONNECT method CONNECT\n"
            "http_access deny !Safe_ports\nhttp_access deny CONNECT !SSL_ports\n"
            "acl authed proxy_auth REQUIRED\nhttp_access allow authed\nhttp_access deny all\n"
            "shutdown_lifetime 0 seconds\ncache_effective_user %(user)s\n"
            % {"ip": lab.net + ".1", "port": PROXY_PORT, "d": squid_dir, "user": _squid_user(),
               "logformat": SQUID_LOGFORMAT, "tls_port": CHANNEL_TLS_PORT}
        )
    for name in os.listdir(squid_dir):
        shutil.chown(os.path.join(squid_dir, name), _squid_user())
    shutil.chown(squid_dir, _squid_user())
    squid = lab.spawn("squid", lab.ctl, ["/usr/sbin/squid", "-N", "-f", conf])
    wait_tcp(lab.ctl, "127.0.0.1", CHANNEL_PORT, channel)
    wait_tcp(lab.ctl, "127.0.0.1", CHANNEL_TLS_PORT, channel)
    wait_tcp(lab.ctl, lab.net + ".1", PROXY_PORT, squid)
    lab.state["squid_dir"] = squid_dir


def _hosts(lab: _Lab, roots: dict[str, str], pubkey: str) -> None:
    started = []
    for index, (name, suite) in enumerate(HOSTS, start=1):
        ns = "%s-%s" % (lab.prefix, name)
        address = "%s.%d" % (lab.net, 10 + index)
        host_run = os.path.join(lab.run_dir, name)
        stage = os.path.join(host_run, "stage")
        os.makedirs(stage, mode=0o700)
        with open(os.path.join(stage, "sshd_config"), "w") as handle:
            handle.write(sshd_config(address))
        with open(os.path.join(stage, "authorized_keys"), "w") as handle:
            handle.write(pubkey)
        if suite is None:
            dirs, mounts = ("etc-upper", "etc-work"), _H1_MOUNTS
            lab.state["mounts"] += ["%s: overlay /etc (upper %s/etc-upper)" % (ns, host_run),
                                    "%s: tmpfs /root /home /run" % ns]
        else:
            dirs, mounts = ("upper", "work", "root"), _CHROOT_MOUNTS
            lab.state["mounts"] += ["%s: overlay %s/root (lower %s)" % (ns, host_run, roots[suite]),
                                    "%s: proc, sysfs, rbind /dev, tmpfs /run under %s/root" % (ns, host_run)]
        for sub in dirs:
            os.makedirs(os.path.join(host_run, sub), mode=0o755)
        real_conda = _runs_real_conda(lab, roots[suite] if suite else None)
        if real_conda:
            lab.state["real_conda"]["hosts"].append(name)
            if suite:
                lab.state["mounts"].append("%s: %s bound read-only under %s/root" % (
                    ns, lab.state["real_conda"]["prefix"], host_run))
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "RUN": host_run, "STAGE": stage, "NAME": name,
               "USERS": " ".join(USERS), "UID_BASE": str(UID_BASE), "SSHD_CONFIG": SSHD_CONFIG, "LOWER": roots.get(suite or "", ""),
               "REALCONDA": lab.state["real_conda"]["prefix"] if real_conda and suite else ""}
        script = "set -eu\n" + mounts + _ACCOUNTS_AND_SSHD
        proc = lab.spawn(name, ns, ["unshare", "--mount", "--uts", "--propagation", "slave", "bash", "-c", script],
                         env=env)
        lab.state["hosts"][name] = {"namespace": ns, "address": address, "suite": suite or "machine", "pid": proc.pid}
        started.append((proc, address))
    lab.save()
    for proc, address in started:
        try:
            wait_tcp(lab.ctl, address, 22, proc)
        except LabError as exc:
            log = next(p["log"] for p in lab.state["processes"] if p["pid"] == proc.pid)
            raise LabError("%s; the end of its log (%s):\n%s" % (exc, log, _tail(log)))


def _tail(path: str, size: int = 2000) -> str:
    """The last ``size`` bytes of a log, for a failure message (the run directory goes with the teardown)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - size))
            return handle.read().decode("utf-8", "replace")
    except OSError as exc:
        return "(unreadable: %s)" % exc


def up(state_dir: str, prefix: str | None = None, cache_dir: str = CACHE_DIR, run_base: str = RUN_BASE,
       username: str | None = None, password: str | None = None,
       channel_login: str | None = None, channel_password: str | None = None,
       ca_cert: str | None = None, ca_key: str | None = None) -> dict:
    """Start the lab; returns its state (also in ``state_dir/state.json``). Tears down what it started on failure.

    ``username``/``password``: squid's proxy account; ``channel_login``/``channel_password``: the channel's Basic
    credentials (what each account's ``.netrc`` must hold). Each is generated when not given. ``ca_cert``/``ca_key``:
    the CA that signs the channel's HTTPS certificate (the key is only read here; the lab makes a CA of its own
    when they are not given)."""
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network and mount namespaces)")
    missing = missing_programs()
    if missing:
        raise LabError("not installed: %s" % ", ".join(missing))
    started = time.monotonic()
    os.makedirs(state_dir, exist_ok=True)
    lab = _Lab(state_dir, prefix, run_base)
    down(state_dir=None, prefix=lab.prefix, run_base=run_base, quiet=True)  # leftovers of an earlier run
    roots = bootstrap_all([s for _n, s in HOSTS if s], cache_dir=cache_dir)
    bootstrapped = time.monotonic()
    os.makedirs(run_base, mode=0o755, exist_ok=True)
    os.chmod(run_base, 0o755)
    os.makedirs(lab.run_dir, mode=0o755)
    lab.state["hosts"] = {}
    # SSH control sockets: short path (sun_path has 108 bytes), removed with the run dir.
    lab.state["control_path_dir"] = os.path.join(lab.run_dir, "cp")
    os.makedirs(lab.state["control_path_dir"], mode=0o700)
    lab.save()
    try:
        key = os.path.join(lab.state_dir, "id_ed25519")
        for path in (key, key + ".pub"):
            if os.path.exists(path):
                os.unlink(path)
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "condafleet-lab-" + lab.prefix, "-f", key])
        with open(key + ".pub") as handle:
            pubkey = handle.read()
        username = username or "fleet-" + secrets.token_hex(3)
        # Characters that must be percent-encoded in a proxy URL, so the lab exercises the encoding.
        password = password or "%s@%s:%%/#%s" % (secrets.token_hex(3), secrets.token_hex(2), secrets.token_hex(2))
        channel_login = channel_login or "reader-" + secrets.token_hex(3)
        channel_password = channel_password or "%s #%s" % (secrets.token_hex(3), secrets.token_hex(2))
        _real_conda(lab)
        _network(lab)
        _proxy_and_channel(lab, username, password, channel_login, channel_password, ca_cert, ca_key)
        _hosts(lab, roots, pubkey)
        lab.state.update(status="up", key=key, credentials={"username": username, "password": password},
                         channel_credentials={"login": channel_login, "password": channel_password},
                         seconds={"bootstrap": round(bootstrapped - started, 2),
                                  "total": round(time.monotonic() - started, 2)})
        _write_inventory(lab, username, password)
        lab.save()
    except BaseException:
        log("set-up failed; tearing down %s" % lab.prefix)
        down(state_dir=lab.state_dir, run_base=run_base, quiet=True)
        raise
    return lab.state


def lab_vars(state: dict) -> dict:
    """The variables plays need about the lab (also written as ``lab_vars.yml`` and as inventory group vars)."""
    import pwd

    creds = state["credentials"]
    net = state["subnet"].rsplit(".", 1)[0]
    proxy = "http://%s.1:%d" % (net, PROXY_PORT)
    return {
        "lab_proxy_url": proxy,
        "lab_proxy_host": "%s.1" % net,
        "lab_proxy_port": PROXY_PORT,
        "lab_proxy_username": creds["username"],
        "lab_proxy_password": creds["password"],
        "lab_proxy_url_with_credentials": "http://%s:%s@%s.1:%d" % (
            quote(creds["username"], safe=""), quote(creds["password"], safe=""), net, PROXY_PORT),
        "lab_proxy_access_log": os.path.join(state["squid_dir"], "access.log"),
        "lab_channel_url": "http://%s:%d/%s" % (CHANNEL_HOST, CHANNEL_PORT, CHANNEL_NAME),
        "lab_channel_repodata_url": "http://%s:%d/%s/noarch/repodata.json" % (CHANNEL_HOST, CHANNEL_PORT, CHANNEL_NAME),
        # The same channel over HTTPS (reached through a CONNECT tunnel), its certificate signed by lab_channel_ca.
        "lab_channel_https_url": "https://%s:%d/%s" % (CHANNEL_HOST, CHANNEL_TLS_PORT, CHANNEL_NAME),
        "lab_channel_https_repodata_url": "https://%s:%d/%s/noarch/repodata.json" % (
            CHANNEL_HOST, CHANNEL_TLS_PORT, CHANNEL_NAME),
        "lab_channel_tls_port": CHANNEL_TLS_PORT,
        "lab_channel_ca": state["channel_ca"],
        "lab_users": list(USERS),
        "lab_controller_namespace": state["prefix"] + "-ctl",
        # The channel's own Basic credentials (what .netrc must give it) and its log: one JSON line a request.
        "lab_channel_login": state["channel_credentials"]["login"],
        "lab_channel_password": state["channel_credentials"]["password"],
        "lab_channel_log": state["channel_log"],
        "lab_channel_package": realconda.PACKAGE,
        "lab_channel_package_file": realconda.PACKAGE_FILE,
        # squid opens every connection to the channel as this uid; the channel refuses any other.
        "lab_squid_uid": pwd.getpwnam(_squid_user()).pw_uid,
        # The real conda (empty when ../shared/real-conda is absent: lab_real_conda_skip says so) and the hosts
        # whose Python can run it.
        "lab_real_conda": state["real_conda"]["conda"],
        "lab_real_conda_hosts": list(state["real_conda"]["hosts"]),
        "lab_real_conda_skip": state["real_conda"]["skip"],
    }


def ssh_common_args(ctl: str) -> str:
    return ('-o ProxyCommand="ip netns exec %s nc %%h %%p" -o StrictHostKeyChecking=no '
            '-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR' % ctl)


def _write_inventory(lab: _Lab, username: str, password: str) -> None:
    import yaml

    group = {
        "ansible_user": "root",
        "ansible_ssh_private_key_file": lab.state["key"],
        "ansible_python_interpreter": "/usr/bin/python3",
        "ansible_ssh_common_args": ssh_common_args(lab.ctl),
        # Own control sockets: another lab (or an earlier one) never lends its SSH session.
        "ansible_control_path_dir": lab.state["control_path_dir"],
    }
    group.update(lab_vars(lab.state))
    inventory = {"all": {
        "hosts": {n: {"ansible_host": h["address"], "lab_suite": h["suite"]} for n, h in lab.state["hosts"].items()},
        "vars": group,
    }}
    for name, data in (("inventory.yml", inventory), ("lab_vars.yml", lab_vars(lab.state))):
        path = os.path.join(lab.state_dir, name)
        with open(path, "w") as handle:
            handle.write("---\n# Written by tests/lab/lab.py for lab %s; removed by `lab.py down`.\n" % lab.prefix)
            yaml.safe_dump(data, handle, default_flow_style=False, sort_keys=True)
        os.chmod(path, 0o600)
    # What molecule's delegated driver (managed: true) builds its inventory from.
    lab.state["molecule_instances"] = [
        {"instance": n, "address": h["address"], "user": "root", "port": 22, "identity_file": lab.state["key"]}
        for n, h in lab.state["hosts"].items()
    ]
    lab.state["inventory"] = os.path.join(lab.state_dir, "inventory.yml")
    lab.state["lab_vars"] = os.path.join(lab.state_dir, "lab_vars.yml")


# -------------------------------------------------------------------------------------- teardown


def _kill_pids(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _reap(pids: list[int]) -> None:
    for pid in pids:
        proc = _CHILDREN.pop(pid, None)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(STOP_TIMEOUT)


def _alive(record: dict) -> bool:
    start = proc_starttime(record["pid"])
    return start is not None and start == record.get("starttime")


def _empty_namespace(ns: str, recorded: list[dict]) -> list[int]:
    """Stop every process in ``ns`` (``ip netns pids``) and the ones recorded for it; bounded."""
    killed: list[int] = []
    deadline = time.monotonic() + STOP_TIMEOUT * 2
    sig = signal.SIGTERM
    term_until = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline:
        pids = set(netns_pids(ns)) | {r["pid"] for r in recorded if r["namespace"] == ns and _alive(r)}
        pids.discard(os.getpid())
        if not pids:
            break
        if time.monotonic() > term_until:
            sig = signal.SIGKILL
        _kill_pids(sorted(pids), sig)
        killed += [p for p in pids if p not in killed]
        _reap(sorted(pids))
        time.sleep(0.05)
    return killed


def down(state_dir: str | None = None, prefix: str | None = None, run_base: str = RUN_BASE, quiet: bool = False) -> dict:
    """Tear a lab down: processes by pid, namespaces, mounts, run dir. Also removes leftovers of the prefix.

    Returns a report; ``report["leftovers"]`` is empty when nothing of the lab remains.
    """
    state: dict = {}
    if state_dir and os.path.exists(os.path.join(state_dir, "state.json")):
        with open(os.path.join(state_dir, "state.json")) as handle:
            state = json.load(handle)
    if prefix and state.get("prefix") not in (None, prefix):
        # Another lab's state (two runs given the same state dir): its namespaces, processes, run dir and files are
        # not this lab's to remove. Clean this prefix's leftovers only.
        log("%s/state.json belongs to lab %s, not %s: removing only what %s left" % (
            state_dir, state["prefix"], prefix, prefix))
        state, state_dir = {}, None
    prefix = prefix or state.get("prefix") or (default_prefix(state_dir) if state_dir else None)
    if not prefix:
        raise LabError("down needs --state or --prefix")
    run_dir = state.get("run_dir") or os.path.join(run_base, prefix)
    recorded = state.get("processes", [])
    namespaces = list(dict.fromkeys(state.get("namespaces", []) + [n for n in netns_list() if n.startswith(prefix + "-")]))
    report: dict = {"prefix": prefix, "killed": {}, "namespaces_deleted": [], "unmounted": []}
    # Hosts first, the controller (squid, the SSH ProxyCommands) last.
    for ns in sorted(namespaces, key=lambda n: n.endswith("-ctl")):
        report["killed"][ns] = _empty_namespace(ns, recorded)
    for record in recorded:  # a recorded process that somehow left its namespace
        if _alive(record):
            _kill_pids([record["pid"]], signal.SIGKILL)
            _reap([record["pid"]])
    for ns in namespaces:
        if ns in netns_list():
            run(["ip", "netns", "delete", ns], check=False)
            report["namespaces_deleted"].append(ns)
    for point in mounts_under(run_dir):
        run(["umount", "--lazy", point], check=False)
        report["unmounted"].append(point)
    if state_dir and state.get("squid_dir"):
        logs = os.path.join(state_dir, "logs")
        os.makedirs(logs, exist_ok=True)
        for name in ("access.log", "cache.log"):
            with contextlib.suppress(OSError):
                shutil.copy(os.path.join(state["squid_dir"], name), os.path.join(logs, "squid-" + name))
        with contextlib.suppress(OSError, KeyError):
            shutil.copy(state["channel_log"], os.path.join(logs, "channel-access.jsonl"))
    if state_dir and state:  # each process's output (sshd, squid, channel): why a host did not come up
        logs = os.path.join(state_dir, "logs")
        os.makedirs(logs, exist_ok=True)
        for record in recorded:
            with contextlib.suppress(OSError, KeyError):
                shutil.copy(record["log"], os.path.join(logs, os.path.basename(record["log"])))
    safe_rmtree(run_dir)
    if state_dir:
        for name in ("inventory.yml", "lab_vars.yml"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(state_dir, name))
        if state:
            state["status"] = "down"
            with open(os.path.join(state_dir, "state.json"), "w") as handle:
                json.dump(state, handle, indent=2, sort_keys=True)
    report["leftovers"] = leftovers(prefix, run_dir, recorded)
    if not quiet and report["leftovers"]:
        log("leftovers after down: %s" % report["leftovers"])
    return report


def leftovers(prefix: str, run_dir: str, recorded: list[dict]) -> list[str]:
    """Anything of lab ``prefix`` still present: namespaces, mounts, live recorded pids, the run dir."""
    found = ["namespace %s" % n for n in netns_list() if n.startswith(prefix + "-")]
    with open("/proc/self/mounts") as handle:
        found += ["mount %s" % line.split()[1] for line in handle if prefix in line or run_dir in line]
    found += ["pid %d (%s)" % (r["pid"], r["role"]) for r in recorded if _alive(r)]
    found += ["pid %d holds a mount under %s" % (p, run_dir) for p in mount_namespaces_holding(run_dir)]
    if os.path.exists(run_dir):
        found.append("directory %s" % run_dir)
    return found


def mount_namespaces_holding(path: str) -> list[int]:
    """Pids of any process on the machine whose mount namespace still has a mount at or below ``path``."""
    path = os.path.realpath(path)
    holders = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/mountinfo" % entry) as handle:
                points = [line.split()[4] for line in handle]
        except OSError:
            continue
        if any(p == path or p.startswith(path + "/") for p in points):
            holders.append(int(entry))
    return holders


def status(state_dir: str) -> dict:
    """The recorded state plus what is live now (namespaces, processes per namespace)."""
    with open(os.path.join(state_dir, "state.json")) as handle:
        state = json.load(handle)
    live = set(netns_list())
    state["live"] = {ns: netns_pids(ns) for ns in state.get("namespaces", []) if ns in live}
    state["processes_alive"] = {str(r["pid"]): _alive(r) for r in state.get("processes", [])}
    return state


# ----------------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("up", "down", "status"):
        cmd = sub.add_parser(name)
        cmd.add_argument("--state", required=name != "down", help="directory for inventory.yml and state.json")
        cmd.add_argument("--prefix", help="name prefix (default: derived from --state)")
        cmd.add_argument("--run-base", default=RUN_BASE, help="where per-run overlay upper dirs live")
        if name == "up":
            cmd.add_argument("--cache", default=CACHE_DIR, help="debootstrap cache")
            cmd.add_argument("--channel-auth", help='JSON file {"login": ..., "password": ...}: the channel credentials')
            cmd.add_argument("--ca-cert", help="the CA certificate that signs the channel's HTTPS certificate")
            cmd.add_argument("--ca-key", help="its private key (only read)")
    boot = sub.add_parser("bootstrap")
    boot.add_argument("--cache", default=CACHE_DIR)
    serve = sub.add_parser("serve-channel", help="(internal) the lab's channel; see serve_channel()")
    for option in ("--root", "--auth", "--log"):
        serve.add_argument(option, required=True)
    serve.add_argument("--port", type=int, default=CHANNEL_PORT)
    serve.add_argument("--only-uid", type=int, required=True)
    serve.add_argument("--tls-port", type=int, default=CHANNEL_TLS_PORT)
    serve.add_argument("--cert")
    serve.add_argument("--key")
    args = parser.parse_args(argv)
    if args.command == "serve-channel":
        serve_channel(args.root, args.port, args.auth, args.log, args.only_uid, args.tls_port, args.cert, args.key)
        return 0
    if args.command == "bootstrap":
        print(json.dumps(bootstrap_all([s for _n, s in HOSTS if s], cache_dir=args.cache), indent=2))
        return 0
    if args.command == "up":
        auth = {}
        if args.channel_auth:
            with open(args.channel_auth) as handle:
                auth = json.load(handle)
        state = up(args.state, args.prefix, args.cache, args.run_base,
                   channel_login=auth.get("login"), channel_password=auth.get("password"),
                   ca_cert=args.ca_cert, ca_key=args.ca_key)
        print(json.dumps({"inventory": state["inventory"], "prefix": state["prefix"], "seconds": state["seconds"]}))
        return 0
    if args.command == "down":
        if not args.state and not args.prefix:
            parser.error("down needs --state or --prefix")
        report = down(args.state, args.prefix, args.run_base)
        print(json.dumps(report, indent=2))
        return 1 if report["leftovers"] else 0
    print(json.dumps(status(args.state), indent=2))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except LabError as exc:
        log(str(exc))
        sys.exit(2)
