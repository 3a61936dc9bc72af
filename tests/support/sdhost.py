# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""A Debian host that boots systemd: ``systemd-nspawn --boot`` of an overlay of a cached bookworm root.

The lab's hosts (tests/lab/lab.py) run sshd alone; a service the collection installs needs a real service
manager to be proven enabled, started, restarted on failure and back after a reboot. :class:`SystemdHost` makes
a network namespace of its own (only ``lo``), boots systemd 252 in it on an overlay whose upper layer is kept
across :meth:`reboot`, and is reached by Ansible over SSH to 127.0.0.1 in that namespace (``ProxyCommand ip netns
exec NS nc``). Servers started in the same namespace (:class:`corplab.CorpNet` with ``address="127.0.0.1"``) are
the host's network. Accounts ``alice`` and ``bob`` log in with the test's key; real conda is bound read-only at
its machine path. Every wait is bounded; the container is stopped through its nspawn process, the namespace
emptied by pid and deleted.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "lab"))

import lab as labmod  # noqa: E402  (tests/lab is not a package)

SUITE = "bookworm"
PACKAGES = labmod.PACKAGES + ("systemd", "systemd-sysv", "dbus", "libpam-systemd", "cntlm")
NSPAWN = "/usr/bin/systemd-nspawn"
USERS = ("alice", "bob")
# Far from the machine's own accounts: a test elsewhere that kills an account's processes by uid (pgrep -u) must
# never reach this host's (one kernel, one uid space).
UID_BASE = 63000
BOOT_TIMEOUT = 90.0
STOP_TIMEOUT = 30.0

_PREPARE = r"""
set -eu
# A cgroup of its own in each hierarchy systemd uses (cgroup v1's name=systemd and unified, or v2's root): without a
# host systemd, nspawn --keep-unit leaves the container in its starter's cgroup, and two hosts booted there at once
# would each manage (and kill) the other's processes.
for h in $CGROUP_ROOTS; do
    mkdir -p "$h/$NS" && echo $$ > "$h/$NS/cgroup.procs"
done
mount -t overlay overlay -o "lowerdir=$LOWER,upperdir=$BASE/upper,workdir=$BASE/work" "$BASE/merged"
if [ ! -e "$BASE/upper/.prepared" ]; then
    install -d -m 0700 "$BASE/merged/root/.ssh"
    install -m 0600 "$BASE/authorized_keys" "$BASE/merged/root/.ssh/authorized_keys"
    uid=$UID_BASE
    for user in $USERS; do
        uid=$((uid + 1))
        chroot "$BASE/merged" useradd --uid "$uid" --create-home --shell /bin/bash --password '*' "$user"
        chroot "$BASE/merged" install -d -m 0700 -o "$user" -g "$user" "/home/$user/.ssh"
        install -m 0600 "$BASE/authorized_keys" "$BASE/merged/home/$user/.ssh/authorized_keys"
        chroot "$BASE/merged" chown "$user:$user" "/home/$user/.ssh/authorized_keys"
    done
    printf 'ListenAddress 127.0.0.1\nPasswordAuthentication no\n' > "$BASE/merged/etc/ssh/sshd_config.d/lab.conf"
    echo "$NAME" > "$BASE/merged/etc/hostname"
    printf '127.0.0.1 localhost\n127.0.1.1 %s\n' "$NAME" > "$BASE/merged/etc/hosts"
    touch "$BASE/upper/.prepared"
fi
# --machine: the namespace's unique name (nspawn keeps per-machine state under /run/systemd/nspawn; two hosts booted
# at once must not share it); the host name is /etc/hostname's.
exec "$NSPAWN" --quiet --boot --directory="$BASE/merged" --register=no --keep-unit --machine="$NS" \
    --network-namespace-path="/run/netns/$NS" $BIND
"""


def cgroup_roots() -> list[str]:
    """The cgroup hierarchies a container's systemd manages: ``name=systemd`` and ``unified`` (v1, hybrid) or the v2
    root."""
    hybrid = [path for path in ("/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified")
              if os.path.exists(os.path.join(path, "cgroup.procs"))]
    if hybrid:
        return hybrid
    return ["/sys/fs/cgroup"] if os.path.exists("/sys/fs/cgroup/cgroup.procs") else []


def unavailable() -> str | None:
    """Why no systemd host can boot here (for a test's skip), or None."""
    reason = labmod.unavailable()
    if reason:
        return reason
    if not os.access(NSPAWN, os.X_OK):
        return "not installed: systemd-nspawn (apt: systemd-container)"
    return None


class SystemdHost:
    """One booted Debian host; :attr:`inventory` is an Ansible inventory file for it (host name :attr:`name`)."""

    def __init__(self, workdir: str, name: str = "sd1", real_conda: str | None = None) -> None:
        self.base = os.path.join(workdir, name)
        self.name = name
        self.ns = "cfsd-%s" % secrets.token_hex(4)
        self.real_conda = real_conda
        self.key = os.path.join(self.base, "id_ed25519")
        self.inventory = os.path.join(self.base, "inventory.yml")
        self.proc: subprocess.Popen | None = None
        self.lower: str | None = None
        # Ansible's SSH control sockets: its own (every host here is root@127.0.0.1:22, so the default directory
        # would lend one host's session to another); short, for sun_path's 108 bytes.
        self.control_path_dir = tempfile.mkdtemp(prefix="cfsd-cp-", dir="/tmp")

    # ------------------------------------------------------------ life cycle

    def create(self) -> "SystemdHost":
        self.lower = labmod.bootstrap_root(SUITE, packages=PACKAGES)
        for sub in ("upper", "work", "merged"):
            os.makedirs(os.path.join(self.base, sub), mode=0o755)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", self.key], check=True, timeout=30)
        shutil.copy(self.key + ".pub", os.path.join(self.base, "authorized_keys"))
        subprocess.run(["ip", "netns", "add", self.ns], check=True, timeout=30)
        subprocess.run(["ip", "-n", self.ns, "link", "set", "lo", "up"], check=True, timeout=30)
        with open(self.inventory, "w") as handle:
            handle.write(
                "all:\n  hosts:\n    %s:\n      ansible_host: 127.0.0.1\n      ansible_user: root\n"
                "      ansible_ssh_private_key_file: %s\n      ansible_python_interpreter: /usr/bin/python3\n"
                "      ansible_ssh_common_args: %s\n      ansible_control_path_dir: %s\n"
                % (self.name, self.key, _yaml_quote(labmod.ssh_common_args(self.ns)), self.control_path_dir))
        return self.boot()

    def boot(self) -> "SystemdHost":
        """Boot systemd (the overlay's upper layer is what the host wrote before) and wait for sshd."""
        bind = "--bind-ro=%s" % self.real_conda if self.real_conda else ""
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "BASE": self.base, "LOWER": self.lower, "NS": self.ns,
               "NAME": self.name, "USERS": " ".join(USERS), "UID_BASE": str(UID_BASE), "NSPAWN": NSPAWN, "BIND": bind,
               "CGROUP_ROOTS": " ".join(cgroup_roots())}
        log = open(os.path.join(self.base, "console.log"), "ab")
        self.proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "bash", "-c", _PREPARE],
                                     env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + BOOT_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("systemd-nspawn exited (%s): %s" % (self.proc.returncode, self.console()[-3000:]))
            if self.ssh("systemctl is-system-running --wait >/dev/null 2>&1; systemctl is-system-running",
                        timeout=BOOT_TIMEOUT).stdout.strip() in ("running", "degraded"):
                return self
            if time.monotonic() > deadline:
                raise RuntimeError("%s did not boot in %.0f s: %s" % (self.name, BOOT_TIMEOUT, self.console()[-3000:]))
            time.sleep(0.5)

    def shutdown(self) -> None:
        """A clean poweroff (SIGTERM to nspawn asks the container's systemd to shut down), bounded; then kill."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            # unshare and bash exec: the pid is nspawn's own
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None

    def reboot(self) -> "SystemdHost":
        self.shutdown()
        return self.boot()

    def destroy(self) -> None:
        try:
            self.shutdown()
        finally:
            pids = subprocess.run(["ip", "netns", "pids", self.ns], capture_output=True, text=True, timeout=30,
                                  check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, timeout=30, check=False)
            for root in cgroup_roots():  # the container's cgroups, deepest first (each empty once its processes are)
                for path in sorted(_cgroup_tree(os.path.join(root, self.ns)), key=len, reverse=True):
                    with contextlib.suppress(OSError):
                        os.rmdir(path)
            subprocess.run(["ssh", "-O", "exit", "-o", "ControlPath=%s/%%C" % self.control_path_dir, "root@127.0.0.1"],
                           capture_output=True, timeout=30, check=False)
            labmod.safe_rmtree(self.base)
            shutil.rmtree(self.control_path_dir, ignore_errors=True)

    def __enter__(self) -> "SystemdHost":
        try:
            return self.create()
        except BaseException:
            self.destroy()
            raise

    def __exit__(self, *exc) -> None:
        self.destroy()

    # ------------------------------------------------------------ reaching it

    def ssh_options(self) -> list[str]:
        return ["-o", "ProxyCommand=ip netns exec %s nc %%h %%p" % self.ns, "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "BatchMode=yes",
                "-o", "ConnectTimeout=10"]

    def ssh(self, command: str, user: str = "root", stdin: str | None = None, timeout: float = 120
            ) -> subprocess.CompletedProcess:
        """``command`` on the host over SSH as ``user`` (a PAM session: for an account, its systemd user manager
        starts with it); stdin closed unless given."""
        argv = ["ssh", "-i", self.key] + self.ssh_options() + ["%s@127.0.0.1" % user, command]
        return subprocess.run(argv, input=stdin if stdin is not None else "", capture_output=True, text=True,
                              timeout=timeout, check=False)

    def console(self) -> str:
        try:
            with open(os.path.join(self.base, "console.log"), errors="replace") as handle:
                return handle.read()
        except OSError:
            return ""


def _cgroup_tree(top: str) -> list[str]:
    return [dirpath for dirpath, _dirs, _files in os.walk(top)] if os.path.isdir(top) else []


def _yaml_quote(text: str) -> str:
    return "'%s'" % text.replace("'", "''")
