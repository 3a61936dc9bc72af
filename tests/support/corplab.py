# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The corporate network of issue 14 inside the lab (tests/lab/lab.py): a KDC, squid requiring Negotiate, squid
requiring NTLM (``ntlm_fake_auth``), squid checking NTLMv2, a PAC file and a channel reached directly, all on the
lab's controller address, in the controller's network namespace, where the hosts h1..h3 reach them over their
veths as workstations reach a company's servers.

:class:`CorpNet` (a context manager, used by the tests) starts ``corplab.py serve`` with ``ip netns exec`` and
stops it by its pid; ``serve`` starts the servers of :mod:`corpauth` bound to ``--address``, writes what clients
need to ``--state`` (ports, the realm's client ``krb5.conf``, log paths) and runs until SIGTERM or ``--lifetime``
seconds. Passwords reach it on stdin (JSON), never on a command line or in a file.

The names a workstation needs are :data:`PROXY_NAME` and :data:`DIRECT_NAME` (both the controller's address, in
the host's ``/etc/hosts``); the lab's channel (``lab.CHANNEL_HOST``) resolves only on the squids, as the lab's own
squid resolves it, so a client that reaches it went through one of them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from urllib.parse import quote

import corpauth
import realconda
from servers import AccountSquid, ChannelServer, squid_entries, stop_process

PROXY_NAME = "proxy.corp.condafleet.test"
DIRECT_NAME = "direct.corp.condafleet.test"
DIRECT_CHANNEL = "direct-channel"
START_TIMEOUT = 60.0


WHEELS_ON_HOST = "/var/cache/condafleet-px-wheels"

# What a fleet does first on its workstations, as a play: the company's names, the realm's krb5.conf, and px's
# wheels (no PyPI in the lab). Variables: corp_hosts (the play's pattern), corp_address, corp_krb5_conf and
# corp_wheelhouse (the controller's directory of wheels).
WORKSTATION_PLAY = """\
- name: A workstation of the corporate realm
  hosts: "{{ corp_hosts }}"
  gather_facts: false
  tasks:
    - name: The company's names
      ansible.builtin.lineinfile:
        path: /etc/hosts
        line: "{{ corp_address }} %s %s"
    - name: The realm's krb5.conf
      ansible.builtin.copy:
        content: "{{ corp_krb5_conf }}"
        dest: /etc/krb5.conf
        mode: "0644"
    - name: The px wheels the fleet installs from
      ansible.builtin.copy:
        src: "{{ corp_wheelhouse }}/"
        dest: %s/
        mode: "0644"
""" % (PROXY_NAME, DIRECT_NAME, WHEELS_ON_HOST)


# Run as root on a host with the needles on stdin (:func:`needles`): every file the host sees (its root, /run,
# /tmp, what is bound in) that holds one, not /proc, /sys, /dev; then "scanned". The needles wait in a root-only
# file under /dev/shm (not scanned), removed at the end.
SCAN_COMMAND = ("umask 077; n=$(mktemp -p /dev/shm) && cat > $n && "
                "for d in /* /.[!.]*; do case $d in /proc|/sys|/dev) continue;; esac; [ -e \"$d\" ] || continue; "
                "grep -rlsaF --devices=skip -f $n \"$d\"; done; rm -f $n; echo scanned")


def needles(*secrets: str) -> str:
    """What :data:`SCAN_COMMAND` looks for: each secret as it is and percent-encoded (as in a proxy URL)."""
    return "".join("%s\n%s\n" % (secret, quote(secret, safe="")) for secret in secrets)


def client_krb5_conf(kdc: corpauth.Kdc) -> str:
    """The realm's ``krb5.conf`` for a workstation: the KDC by address, tickets in the library's default cache
    (``/tmp/krb5cc_<uid>`` on Debian), as ``kinit`` on any workstation leaves them."""
    return "".join(line + "\n" for line in kdc.render_krb5_conf().splitlines() if "default_ccache_name" not in line)


def serve(address: str, state_path: str, channel_host: str, lifetime: float, secrets: dict,
          serve_channel: bool = False) -> int:
    with contextlib.ExitStack() as stack:
        hosts = {channel_host: "127.0.0.1"}
        channel = None
        if serve_channel:  # the channel behind the squids (the lab serves its own)
            channel_root = tempfile.mkdtemp(prefix="condafleet-corplab-channel-")
            stack.callback(subprocess.run, ["rm", "-rf", "--", channel_root], check=False)
            realconda.write_package_channel(channel_root)
            os.chmod(channel_root, 0o755)
            channel = stack.enter_context(ChannelServer(channel_root))
        kdc = stack.enter_context(corpauth.Kdc(host=address))
        principals = {name: kdc.add_user(name, password) for name, password in secrets.get("kerberos", {}).items()}
        negotiate = stack.enter_context(corpauth.NegotiateSquid(kdc, host=address, names=(PROXY_NAME,), hosts=hosts))
        ntlm = stack.enter_context(corpauth.NtlmSquid(host=address, hosts=hosts))
        ntlmv2 = stack.enter_context(corpauth.NtlmV2Squid(secrets.get("ntlm", {}), host=address, hosts=hosts))
        basic = stack.enter_context(AccountSquid(secrets["basic"], host=address, hosts=hosts)) \
            if secrets.get("basic") else None
        direct_root = tempfile.mkdtemp(prefix="condafleet-corplab-direct-")
        stack.callback(subprocess.run, ["rm", "-rf", "--", direct_root], check=False)
        realconda.write_package_channel(direct_root, DIRECT_CHANNEL)
        os.chmod(direct_root, 0o755)
        direct = stack.enter_context(ChannelServer(direct_root, host=address))
        pac = stack.enter_context(corpauth.PacServer(
            corpauth.pac_script({channel_host: "PROXY %s:%d" % (PROXY_NAME, negotiate.port)}), host=address))
        state = {
            "pid": os.getpid(), "address": address, "realm": kdc.realm, "principals": principals,
            "krb5_conf": client_krb5_conf(kdc), "kdc_log": kdc.log_path,
            "negotiate": {"port": negotiate.port, "url": "http://%s:%d" % (PROXY_NAME, negotiate.port),
                          "log": negotiate.log_path},
            "ntlm": {"port": ntlm.port, "url": ntlm.url, "log": ntlm.log_path},
            "ntlmv2": {"port": ntlmv2.port, "url": ntlmv2.url, "log": ntlmv2.log_path, "domain": ntlmv2.domain},
            "direct": {"url": "http://%s:%d/%s" % (DIRECT_NAME, direct.port, DIRECT_CHANNEL)},
            "pac": {"url": pac.pac_url.replace(address, DIRECT_NAME)},
            "basic": {"url": basic.url, "log": basic.log_path} if basic else None,
            "channel": {"url": "http://%s:%d/fleet-channel" % (channel_host, channel.port)} if channel else None,
        }
        tmp = state_path + ".tmp"
        with open(tmp, "w") as handle:
            json.dump(state, handle, indent=2)
        os.replace(tmp, state_path)
        signal.signal(signal.SIGALRM, lambda *_: None)
        signal.alarm(int(lifetime))  # bounded: a forgotten helper ends by itself
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGALRM})
        signal.sigwait({signal.SIGTERM, signal.SIGINT, signal.SIGALRM})
    return 0


class CorpNet:
    """``corplab.py serve`` in namespace ``ns`` on ``address``; :attr:`state` is what it wrote.

    ``kerberos`` (user -> password) become principals of the realm; ``ntlm`` (user -> password) the accounts
    the NTLMv2 squid checks; ``basic`` (user -> password), when given, the accounts of a squid requiring Basic.
    All go to the helper on stdin. ``serve_channel``: also serve a channel at ``channel_host`` (resolved by the
    squids to 127.0.0.1), for a network without the lab's."""

    def __init__(self, ns: str, address: str, workdir: str, channel_host: str,
                 kerberos: dict[str, str] | None = None, ntlm: dict[str, str] | None = None,
                 basic: dict[str, str] | None = None, serve_channel: bool = False, lifetime: float = 3600) -> None:
        self.ns, self.address, self.workdir, self.channel_host = ns, address, workdir, channel_host
        self.secrets = {"kerberos": dict(kerberos or {}), "ntlm": dict(ntlm or {}), "basic": dict(basic or {})}
        self.serve_channel = serve_channel
        self.lifetime = lifetime
        self.state_path = os.path.join(workdir, "corplab.json")
        self.log_path = os.path.join(workdir, "corplab.log")
        self.proc: subprocess.Popen | None = None
        self.state: dict = {}

    def start(self) -> "CorpNet":
        here = os.path.dirname(os.path.abspath(__file__))
        argv = ["ip", "netns", "exec", self.ns, sys.executable, os.path.join(here, "corplab.py"), "serve",
                "--address", self.address, "--state", self.state_path, "--channel-host", self.channel_host,
                "--lifetime", str(self.lifetime)] + (["--serve-channel"] if self.serve_channel else [])
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True, env=dict(os.environ, PYTHONPATH=here))
        self.proc.stdin.write(json.dumps(self.secrets).encode())
        self.proc.stdin.close()
        deadline = time.monotonic() + START_TIMEOUT
        while not os.path.exists(self.state_path):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                with open(self.log_path, errors="replace") as handle:
                    raise RuntimeError("the corporate network did not start: %s" % handle.read()[-3000:])
            time.sleep(0.1)
        with open(self.state_path) as handle:
            self.state = json.load(handle)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout=15)

    def __enter__(self) -> "CorpNet":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def entries(self, squid: str) -> list[dict]:
        """The access log of ``squid`` (``negotiate``, ``ntlm``, ``ntlmv2``, ``basic``) parsed as
        :func:`servers.squid_entries`."""
        try:
            with open(self.state[squid]["log"], errors="replace") as handle:
                return squid_entries(handle.read())
        except OSError:
            return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("serve", help="run the corporate network here (in the lab's controller namespace)")
    run.add_argument("--address", required=True)
    run.add_argument("--state", required=True)
    run.add_argument("--channel-host", required=True)
    run.add_argument("--lifetime", type=float, default=3600)
    run.add_argument("--serve-channel", action="store_true")
    args = parser.parse_args(argv)
    secrets = json.loads(sys.stdin.read() or "{}")
    return serve(args.address, args.state, args.channel_host, args.lifetime, secrets, args.serve_channel)


if __name__ == "__main__":
    sys.exit(main())
