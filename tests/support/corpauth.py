# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The corporate proxy as it is (issue 14): a Kerberos KDC, squid requiring Negotiate or NTLM, a PAC file.

Everything runs on 127.0.0.1 (or the ``host`` given: the lab's controller address, see
:mod:`corplab`) from a temp dir, as :mod:`servers` does: an MIT KDC (``krb5kdc -n``) with its own
``krb5.conf``/``kdc.conf`` (passed by ``KRB5_CONFIG``/``KRB5_KDC_PROFILE``, never the machine's ``/etc``),
squid with ``negotiate_kerberos_auth`` and a keytab from that KDC, squid with ``ntlm_fake_auth``, and a PAC file
served over HTTP. Every process is stopped by its own pid; every wait is bounded.
"""

from __future__ import annotations

import http.server
import os
import shlex
import shutil
import subprocess
import sys
import uuid

from ntlm_helper import nt_hash
from servers import LOOPBACK, AccountSquid, _Server, _squid_user, _ThreadServer

REALM = "CONDAFLEET.TEST"
KRB5_PROGRAMS = ("/usr/sbin/krb5kdc", "/usr/sbin/kdb5_util", "/usr/sbin/kadmin.local", "kinit", "kdestroy", "klist")
NEGOTIATE_HELPER = "/usr/lib/squid/negotiate_kerberos_auth"
NTLM_HELPER = "/usr/lib/squid/ntlm_fake_auth"


class Kdc(_Server):
    """An MIT Kerberos KDC for :data:`REALM` on a loopback TCP port, its database under :attr:`workdir`.

    :attr:`krb5_conf` is world-readable (in a 0755 directory) so that any account can use it through
    :attr:`env` (``KRB5_CONFIG``); tickets go to the default cache the file names (``FILE:<workdir>/ccache/
    krb5cc_<uid>``, a sticky world-writable directory), so ``kinit``, ``kdestroy`` and every GSS-API client of an
    account agree on one cache without ``KRB5CCNAME``. No DNS is consulted (``rdns``, ``dns_canonicalize_hostname``
    and ``dns_lookup_kdc`` are off): ``localhost``, the KDC's address and every name under ``condafleet.test`` map
    to the realm."""

    name = "kdc"

    def __init__(self, realm: str = REALM, workdir: str | None = None, host: str = LOOPBACK) -> None:
        super().__init__(workdir, host)
        self.realm = realm
        os.chmod(self.workdir, 0o755)
        self.krb5_conf = os.path.join(self.workdir, "krb5.conf")
        self.kdc_conf = os.path.join(self.workdir, "kdc.conf")
        self.db_dir = os.path.join(self.workdir, "db")  # 0700: the principal database and its stash
        self.ccache_dir = os.path.join(self.workdir, "ccache")
        self.log_path = os.path.join(self.workdir, "kdc.log")

    @property
    def env(self) -> dict[str, str]:
        """What a client needs in its environment to use this realm (and nothing of the machine's)."""
        return {"KRB5_CONFIG": self.krb5_conf}

    @property
    def admin_env(self) -> dict[str, str]:
        return dict(os.environ, KRB5_CONFIG=self.krb5_conf, KRB5_KDC_PROFILE=self.kdc_conf)

    def render_krb5_conf(self) -> str:
        realm = self.realm
        return (
            "[libdefaults]\n"
            "    default_realm = %s\n"
            "    dns_lookup_kdc = false\n    dns_lookup_realm = false\n"
            "    dns_canonicalize_hostname = false\n    rdns = false\n"
            "    udp_preference_limit = 1\n"  # TCP only: the KDC listens on TCP, wait_for_port can see it
            "    default_ccache_name = FILE:%s/krb5cc_%%{uid}\n"
            "    ticket_lifetime = 1h\n"
            "[realms]\n    %s = {\n        kdc = %s:%d\n    }\n"
            "[domain_realm]\n    localhost = %s\n    %s = %s\n    .condafleet.test = %s\n"
            % (realm, self.ccache_dir, realm, self.host, self.port, realm, self.host, realm, realm)
        )

    def render_kdc_conf(self) -> str:
        return (
            "[kdcdefaults]\n    kdc_listen = %s:%d\n    kdc_tcp_listen = %s:%d\n"
            "[realms]\n    %s = {\n        database_name = %s/principal\n        key_stash_file = %s/stash\n"
            "        acl_file = %s/kadm5.acl\n        max_life = 1h\n        max_renewable_life = 1h\n    }\n"
            "[logging]\n    kdc = FILE:%s\n"
            % (self.host, self.port, self.host, self.port, self.realm, self.db_dir, self.db_dir, self.db_dir,
               self.log_path)
        )

    def command(self) -> list[str]:
        os.makedirs(self.db_dir, mode=0o700, exist_ok=True)
        os.makedirs(self.ccache_dir, exist_ok=True)
        os.chmod(self.ccache_dir, 0o1777)
        for path, text in ((self.krb5_conf, self.render_krb5_conf()), (self.kdc_conf, self.render_kdc_conf())):
            with open(path, "w") as handle:
                handle.write(text)
            os.chmod(path, 0o644)
        # A random master key: the database is thrown away with the workdir.
        self._admin(["/usr/sbin/kdb5_util", "create", "-s", "-r", self.realm, "-P", uuid.uuid4().hex])
        # env execs krb5kdc: the pid _Server stops is the KDC's own.
        return ["/usr/bin/env", "KRB5_CONFIG=%s" % self.krb5_conf, "KRB5_KDC_PROFILE=%s" % self.kdc_conf,
                "/usr/sbin/krb5kdc", "-n", "-r", self.realm]

    def _admin(self, argv: list[str], stdin: str | None = None) -> str:
        proc = subprocess.run(argv, env=self.admin_env, input=stdin, capture_output=True, text=True, timeout=60,
                              check=False)
        if proc.returncode != 0:
            raise RuntimeError("%s failed (%d): %s" % (os.path.basename(argv[0]), proc.returncode,
                                                       (proc.stderr or proc.stdout)[-1000:]))
        return proc.stdout

    def kadmin(self, query: str, stdin: str | None = None) -> str:
        """One ``kadmin.local`` query (``addprinc``, ``ktadd``, ``delprinc``...) on this realm's database."""
        return self._admin(["/usr/sbin/kadmin.local", "-r", self.realm, "-q", query], stdin)

    def principal(self, name: str) -> str:
        return name if "@" in name else "%s@%s" % (name, self.realm)

    def add_user(self, name: str, password: str) -> str:
        """A user principal with ``password``; returns its full name (``name@REALM``)."""
        principal = self.principal(name)
        # On stdin (asked twice), not in the query: any character works and no command line shows it.
        self.kadmin("addprinc %s" % principal, stdin="%s\n%s\n" % (password, password))
        return principal

    def service_keytab(self, path: str, services: tuple[str, ...] = ("HTTP/localhost", "HTTP/%s" % LOOPBACK),
                       owner: str | None = None) -> str:
        """Service principals with random keys, exported to the keytab ``path`` (0600, owned by ``owner``).

        Both ``HTTP/localhost`` and ``HTTP/127.0.0.1`` by default: a client derives the service name from the
        host in the proxy URL it was given, so either spelling of the proxy works."""
        for service in services:
            self.kadmin("addprinc -randkey %s" % self.principal(service))
            self.kadmin("ktadd -k %s %s" % (shlex.quote(path), self.principal(service)))
        os.chmod(path, 0o600)
        if owner:
            shutil.chown(path, owner)
        return path

    def write_krb5_conf(self, path: str) -> str:
        """This realm's ``krb5.conf`` at ``path`` too (0644), e.g. a private ``/etc``'s ``krb5.conf``
        (``realconda.PrivateEtc.file("/etc/krb5.conf")``): there every program finds it without ``KRB5_CONFIG``."""
        with open(path, "w") as handle:
            handle.write(self.render_krb5_conf())
        os.chmod(path, 0o644)
        return path

    def as_account(self, account, shell_command: str, stdin: str | None = None, timeout: float = 60,
                   wrap=None) -> subprocess.CompletedProcess:
        """``shell_command`` run by ``account`` (a ``pwd`` entry or a name) from a fresh login shell (``su -``),
        with this realm's ``KRB5_CONFIG``. ``wrap`` maps the argv first: ``realconda.PrivateEtc.argv`` for an
        account that exists only in a private ``/etc``."""
        script = "export KRB5_CONFIG=%s; %s" % (shlex.quote(self.krb5_conf), shell_command)
        argv = ["su", "-", getattr(account, "pw_name", account), "-c", script]
        return subprocess.run(wrap(argv) if wrap else argv, input=stdin, capture_output=True, text=True,
                              timeout=timeout, check=False)

    def kinit_as(self, account, principal: str, password: str, wrap=None) -> None:
        """Give ``account`` a ticket for ``principal`` in its default cache (:meth:`ccache_for`) with ``kinit``,
        the password on stdin, never on a command line. ``wrap`` as for :meth:`as_account`."""
        proc = self.as_account(account, "kinit %s" % shlex.quote(self.principal(principal)), stdin=password + "\n",
                               wrap=wrap)
        if proc.returncode != 0:
            raise RuntimeError("kinit as %s failed (%d): %s" % (getattr(account, "pw_name", account), proc.returncode,
                                                                proc.stderr[-500:]))

    def kdestroy_as(self, account, wrap=None) -> None:
        self.as_account(account, "kdestroy -q", wrap=wrap)

    def ccache_for(self, account) -> str:
        """Where the default cache of ``account`` (a ``pwd`` entry, or a uid) is."""
        return os.path.join(self.ccache_dir, "krb5cc_%d" % getattr(account, "pw_uid", account))

    log = AccountSquid.log  # the same reader: :attr:`log_path`'s text, "" before the KDC wrote it


class _SchemeSquid(AccountSquid):
    """:class:`servers.AccountSquid` (its ``%un`` access log and :meth:`entries`) with the Basic scheme's
    ``auth_param`` lines replaced by :meth:`auth_lines`."""

    def __init__(self, workdir: str | None = None, host: str = LOOPBACK, hosts: dict[str, str] | None = None) -> None:
        # AccountSquid writes a Basic password file; its account is never offered to clients.
        super().__init__({"basic-unused": uuid.uuid4().hex}, workdir, host, hosts)

    def auth_lines(self) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    def command(self) -> list[str]:
        argv = super().command()
        conf = os.path.join(self.workdir, "squid.conf")
        with open(conf) as handle:
            lines = [line for line in handle.read().splitlines() if not line.startswith("auth_param basic ")]
        at = next(index for index, line in enumerate(lines) if line.startswith("acl authed "))
        lines[at:at] = self.auth_lines()
        with open(conf, "w") as handle:
            handle.write("\n".join(lines) + "\n")
        return argv


class NegotiateSquid(_SchemeSquid):
    """squid requiring Kerberos (``Proxy-Authenticate: Negotiate``) with a keytab from ``kdc``.

    The helper runs with the KDC's ``KRB5_CONFIG`` and no replay cache; ``spn`` is the ``-s`` argument
    (default ``GSS_C_NO_NAME``: any service principal in the keytab, i.e. ``HTTP/localhost``, ``HTTP/<host>``
    and ``HTTP/<name>`` for each of ``names``, the proxy's names in DNS). The access log's ``user=`` field is the
    client's principal (``alice@REALM``)."""

    name = "squid-negotiate"

    def __init__(self, kdc: Kdc, spn: str = "GSS_C_NO_NAME", workdir: str | None = None, host: str = LOOPBACK,
                 names: tuple[str, ...] = (), hosts: dict[str, str] | None = None) -> None:
        super().__init__(workdir, host, hosts)
        self.kdc = kdc
        self.spn = spn
        self.names = tuple(names)
        self.keytab = os.path.join(self.workdir, "squid.keytab")

    def auth_lines(self) -> list[str]:
        owner = _squid_user() if os.geteuid() == 0 else None
        names = ("localhost", self.host) + self.names
        services = tuple(dict.fromkeys("HTTP/%s" % name for name in names))
        self.kdc.service_keytab(self.keytab, services, owner=owner)
        helper = ["/usr/bin/env", "KRB5_CONFIG=%s" % self.kdc.krb5_conf, "KRB5RCACHETYPE=none",
                  NEGOTIATE_HELPER, "-k", self.keytab, "-s", self.spn, "-t", "none"]
        return ["auth_param negotiate program %s" % " ".join(helper),
                "auth_param negotiate children 2 startup=1",
                "auth_param negotiate keep_alive on"]

    @property
    def localhost_url(self) -> str:
        """The proxy by name, as clients that derive ``HTTP/localhost`` from it see it."""
        return "http://localhost:%d" % self.port


class NtlmSquid(_SchemeSquid):
    """squid requiring NTLM through ``ntlm_fake_auth``: any password is taken (the helper checks nothing), and
    the access log names the NTLM user the client sent (``DOMAIN\\user`` or ``user``)."""

    name = "squid-ntlm"

    def auth_lines(self) -> list[str]:
        return ["auth_param ntlm program %s" % NTLM_HELPER,
                "auth_param ntlm children 2 startup=1",
                "auth_param ntlm keep_alive on"]


class NtlmV2Squid(_SchemeSquid):
    """squid requiring NTLM and really checking it: a stdlib helper (:mod:`ntlm_helper`) sends a challenge with
    target info (which cntlm's NTLMv2 needs) and accepts only an NTLMv2 response proving the NT hash of one of
    ``accounts`` (user name -> password, in ``domain``). The helper's file holds NT hashes, never a password.
    NTLMv1 is refused. The access log names ``DOMAIN\\user``."""

    name = "squid-ntlmv2"

    def __init__(self, accounts: dict[str, str], domain: str = "CORP", workdir: str | None = None,
                 host: str = LOOPBACK, hosts: dict[str, str] | None = None) -> None:
        super().__init__(workdir, host, hosts)
        self.ntlm_accounts = dict(accounts)
        self.domain = domain

    def auth_lines(self) -> list[str]:
        # A copy next to the config: squid's user may not be able to reach this checkout.
        helper = os.path.join(self.workdir, "ntlm_helper.py")
        shutil.copy(os.path.join(os.path.dirname(os.path.abspath(__file__)), "ntlm_helper.py"), helper)
        hashes = os.path.join(self.workdir, "ntlm-hashes")
        with open(hashes, "w") as handle:
            for user, password in sorted(self.ntlm_accounts.items()):
                handle.write("%s\\%s:%s\n" % (self.domain, user, nt_hash(password).hex()))
        os.chmod(hashes, 0o600)
        if os.geteuid() == 0:
            for path in (helper, hashes):
                shutil.chown(path, _squid_user())
        python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
        return ["auth_param ntlm program %s %s %s %s" % (python, helper, hashes, self.domain),
                "auth_param ntlm children 2 startup=1",
                "auth_param ntlm keep_alive on"]


class PacServer(_ThreadServer):
    """Serves ``content`` (a PAC file) at :attr:`pac_url` as ``application/x-ns-proxy-autoconfig``; any other
    path is 404. ``requests`` lists the paths fetched."""

    path = "/proxy.pac"

    def __init__(self, content: str, host: str = LOOPBACK) -> None:
        body = content.encode()
        pac_path = self.path

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 -- http.server's naming
                self.server.requests.append(self.path)
                found = self.path.split("?")[0] == pac_path
                payload = body if found else b"not found\n"
                self.send_response(200 if found else 404)
                self.send_header("Content-Type", "application/x-ns-proxy-autoconfig" if found else "text/plain")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, fmt, *args) -> None:
                pass

        super().__init__(Handler, host)

    @property
    def pac_url(self) -> str:
        return self.url + self.path


def pac_script(routes: dict[str, str], default: str = "DIRECT") -> str:
    """A PAC file sending each host of ``routes`` to its value (``"PROXY 127.0.0.1:3128"`` or ``"DIRECT"``)."""
    lines = ["function FindProxyForURL(url, host) {"]
    for host, route in routes.items():
        lines.append('    if (host == "%s") return "%s";' % (host, route))
    lines.append('    return "%s";' % default)
    lines.append("}")
    return "\n".join(lines) + "\n"


__all__ = ["REALM", "Kdc", "NegotiateSquid", "NtlmSquid", "NtlmV2Squid", "PacServer", "pac_script"]
