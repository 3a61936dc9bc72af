#!/usr/bin/python
# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: local_auth_proxy
short_description: Run a local authenticating proxy (px or cntlm) on 127.0.0.1 for conda, pip and the shell
version_added: 0.2.0
description:
  - Deploys a proxy on C(127.0.0.1) that authenticates to the corporate proxy on behalf of every client of the
    workstation, so that conda, pip and the shell point at C(http://127.0.0.1:PORT) with no credentials, and no
    proxy password is written to any file.
  - O(auth=kerberos), O(auth=basic) and O(auth=none) run L(px,https://github.com/genotrance/px) (PyPI C(px-proxy)),
    installed into a venv; O(auth=ntlm) runs C(cntlm), which accepts the NTLMv2 hash of the password (px, through
    libcurl, needs the password itself for NTLM).
  - V(kerberos) uses the ticket of the account that runs the service (C(kinit), or the login's ticket), so it is a
    per-account service (a systemd user unit, a LaunchAgent) for O(user). V(ntlm) and V(basic) run as a system
    service (a systemd system unit with C(User=), a LaunchDaemon with C(UserName)) as O(service_user), the only
    account that can read the credential file.
  - With O(pac_url), px follows the PAC file for every request (fetched again every O(pac_reload) seconds when it
    is a URL), so a changed PAC file takes effect without running the task again.
  - Skips pip when the venv already has O(px_version) (a rerun starts no interpreter and no pip).
  - When systemd is not running on the host, the unit is written but not enabled or started, with a warning.
author:
  - condafleet maintainers (@condafleet)
extends_documentation_fragment:
  - condafleet.proxy._attributes
  - condafleet.proxy._account
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details:
      - The Basic password and the NTLM hash are masked in the diff.
  idempotent:
    support: full
  platform:
    support: full
    platforms: posix, windows
    details:
      - Linux with systemd, and macOS with launchd.
      - On Windows the action plugin of the same name does it from the controller for the connecting account. px
        logs in with that account's own Windows credentials (SSPI single sign-on), so O(auth) is V(kerberos),
        V(ntlm) or V(none), with no O(username), O(password) or O(ntlm_hash), and nothing secret is written. px is
        installed into a venv (by default C(%LOCALAPPDATA%\condafleet\px), with C(py) unless O(python) is given),
        C(px.ini) goes to C(%LOCALAPPDATA%\condafleet\auth-proxy), and the account's C(Run) registry key starts
        px hidden at every logon (a warning says so; it is not started by the task). O(user), O(service_user),
        O(cntlm_path) and O(follow) are refused there.
options:
  state:
    description:
      - V(present) installs, configures and starts the proxy; V(absent) stops it and removes the service, the
        configuration and the credential file (and the venv with O(remove_venv=true)).
    type: str
    choices: [present, absent]
    default: present
  auth:
    description:
      - How the local proxy authenticates to the upstream proxy. Required with O(state=present).
      - V(kerberos) (Negotiate) uses the ticket of O(user); nothing secret is written.
      - V(ntlm) writes the NTLMv2 hash (computed on the host from O(password), or given as O(ntlm_hash)) into
        cntlm's configuration, mode V(0600), owned by O(service_user). The password is never written.
      - V(basic) writes the password (Basic sends it with every request; there is no hash a client could use)
        into px's C(.env) file, mode V(0600), owned by O(service_user).
      - V(none) authenticates nothing (a PAC-following proxy in front of proxies that need no login).
    type: str
    choices: [kerberos, ntlm, basic, none]
  upstream:
    description:
      - The corporate proxies, C(host:port) each (no credentials, no scheme other than C(http://)). Tried in order.
      - One of O(upstream) and O(pac_url) is required with O(state=present).
    type: list
    elements: str
    default: []
  pac_url:
    description:
      - A PAC (or WPAD) file, by C(http://)/C(https://) URL or absolute path, that chooses the proxy per request.
      - Not with O(auth=ntlm) (cntlm does not read PAC files) and not together with O(upstream).
      - A URL is fetched again every O(pac_reload) seconds; a local file is read when the service starts.
    type: str
  pac_reload:
    description:
      - Seconds between two fetches of O(pac_url).
    type: int
    default: 60
  listen_port:
    description:
      - The port on C(127.0.0.1) (only loopback; never another address) where conda and pip find the proxy.
      - With O(auth=kerberos) every account of a host needs its own port.
    type: int
    default: 3128
  no_proxy:
    description:
      - Hosts, domains, addresses or CIDR ranges the local proxy connects to directly.
    type: list
    elements: str
    default: []
  service_user:
    description:
      - The account the system service runs as and that owns the credential file (V(ntlm), V(basic)). Required
        for V(ntlm), V(basic) and V(none); create it first (C(ansible.builtin.user) with C(system=true)).
      - Not used with O(auth=kerberos) (the service runs as O(user)).
    type: str
  username:
    description:
      - The proxy account, for V(ntlm) and V(basic) (without the domain for V(ntlm); see O(ntlm_domain)).
    type: str
  password:
    description:
      - The proxy password. V(basic) writes it to the credential file; V(ntlm) only uses it to compute the hash.
      - Never shown in output or diffs.
    type: str
  ntlm_domain:
    description:
      - The Windows domain of O(username) for V(ntlm).
    type: str
    default: ''
  ntlm_hash:
    description:
      - The hash itself instead of O(password), so that the password never reaches the host. It is the 32 hex
        digits that C(cntlm -H -u USERNAME -d DOMAIN) prints as C(PassNTLMv2) (or C(PassNT) with
        O(ntlm_response=nt)), run where the password is. Never shown in output or diffs.
      - cntlm's hex is the bitwise complement of the standard NTLMv2 (or NT) hash bytes; the module computes the
        same form from O(password).
    type: str
  ntlm_response:
    description:
      - V(ntlmv2) (cntlm's C(Auth NTLMv2)) answers with NTLMv2 responses, what Windows domains require; it needs a
        proxy whose challenge carries target information, as Windows proxies send.
      - V(nt) (C(Auth NT)) answers with NTLMv1 responses from the NT hash, for proxies that send no target
        information (squid's C(ntlm_fake_auth), some appliances) and domains that still accept NTLMv1.
    type: str
    choices: [ntlmv2, nt]
    default: ntlmv2
  venv:
    description:
      - Where px is installed. Shared by every account of the host, so it must be readable by them.
    type: path
    default: /opt/condafleet/px
  python:
    description:
      - The Python that creates the venv (3.10 or later). It must be readable by the accounts that run px.
      - Defaults to C(/usr/bin/python3) when it exists, otherwise the interpreter running the module.
    type: path
  px_version:
    description:
      - The version of C(px-proxy) to install (pinned). A venv holding another version is upgraded or downgraded.
    type: str
    default: 0.13.0
  px_source:
    description:
      - A directory of wheels (C(pip download px-proxy)) to install from, with no index, for fleets without PyPI.
    type: path
  pip_index_url:
    description:
      - A package index (a PyPI mirror) to install px from. Without it and O(px_source), pip's own configuration.
    type: str
  cntlm_path:
    description:
      - The C(cntlm) program for O(auth=ntlm) (the C(cntlm) package of the distribution, Homebrew on macOS).
      - Defaults to C(cntlm) found in C(/usr/sbin), C(/usr/bin), C(/usr/local/bin) or C(/opt/homebrew/bin).
    type: path
  config_dir:
    description:
      - Where the proxy's configuration and credential file are written.
      - Defaults to C(/etc/condafleet/auth-proxy) for a system service and C(~/.config/condafleet/auth-proxy) of
        O(user) for a per-account service.
    type: path
  service_name:
    description:
      - The name of the systemd unit (C(.service) added) and the suffix of the launchd label
        (C(org.condafleet.NAME)).
    type: str
    default: condafleet-auth-proxy
  environment:
    description:
      - Extra environment variables for the service, for example C(KRB5CCNAME) when tickets are not in the
        default credential cache, or C(KRB5_CONFIG). Not for secrets (they end up in the unit file).
    type: dict
    default: {}
  start:
    description:
      - Enable and start (or restart, after a change) the service. V(false) only writes the files.
    type: bool
    default: true
  remove_venv:
    description:
      - With O(state=absent), also remove O(venv).
    type: bool
    default: false
notes:
  - Point conda and pip at the proxy with M(condafleet.proxy.condarc_proxy) and M(condafleet.proxy.env_proxy)
    (C(http://127.0.0.1:PORT), no credentials), or with the C(conda_proxy) role's C(conda_proxy_auth).
  - With O(auth=kerberos) px asks its clients for the account's name and a random key of its own (RV(client_username),
    RV(client_key_file)). 127.0.0.1 is shared by every local account, and the key is what keeps the others from
    using the account's Kerberos ticket.
  - A per-account systemd unit runs while the account has a session, or always after C(loginctl enable-linger).
    The module manages it as the account, through the account's own systemd instance (no user D-Bus needed);
    when none runs, it enables the unit on disk and warns that it starts at the account's next login.
  - The NTLM hash authenticates to the proxy like the password would (it cannot be turned back into the
    password, which keeps its other uses safe); it is readable by O(service_user) and root only.
seealso:
  - module: condafleet.proxy.condarc_proxy
  - module: condafleet.proxy.env_proxy
  - name: px
    description: The proxy run for Kerberos, Basic and PAC.
    link: https://github.com/genotrance/px
"""

EXAMPLES = r"""
- name: Kerberos single sign-on for alice, through the corporate proxy
  condafleet.proxy.local_auth_proxy:
    auth: kerberos
    user: alice
    upstream: [proxy.corp.example:8080]
    px_source: /srv/wheels/px
  become: true

- name: Follow the corporate PAC file, with Kerberos
  condafleet.proxy.local_auth_proxy:
    auth: kerberos
    user: alice
    pac_url: http://wpad.corp.example/proxy.pac
    pip_index_url: https://pypi.corp.example/simple
  become: true

- name: A service account for the machine-wide proxy
  ansible.builtin.user:
    name: condafleet-proxy
    system: true
    shell: /usr/sbin/nologin
    create_home: false
  become: true

- name: NTLM for the whole machine; only the NTLMv2 hash is written
  condafleet.proxy.local_auth_proxy:
    auth: ntlm
    upstream: [proxy.corp.example:8080]
    service_user: condafleet-proxy
    username: svc-conda
    ntlm_domain: CORP
    ntlm_hash: "{{ vault_ntlmv2_hash }}"
  become: true

- name: Remove the proxy and its venv
  condafleet.proxy.local_auth_proxy:
    state: absent
    user: alice
    remove_venv: true
  become: true
"""

RETURN = r"""
proxy_url:
  description: What conda, pip and the shell use as their proxy.
  returned: always
  type: str
  sample: http://127.0.0.1:3128
engine:
  description: The program that runs the proxy.
  returned: when O(auth) is given
  type: str
  sample: px
scope:
  description: V(user) (a per-account service for O(user)) or V(system) (a system service as O(service_user)).
  returned: always
  type: str
  sample: user
unit_path:
  description: The systemd unit (Linux) or launchd property list (macOS) written or removed.
  returned: always
  type: str
  sample: /home/alice/.config/systemd/user/condafleet-auth-proxy.service
config_path:
  description: The proxy's configuration file.
  returned: always
  type: str
  sample: /home/alice/.config/condafleet/auth-proxy/px.ini
credential_path:
  description: The file holding the Basic password or the NTLM hash (mode V(0600), owned by O(service_user)), or
    px's empty C(.env) for V(kerberos) and V(none).
  returned: always
  type: str
  sample: /etc/condafleet/auth-proxy/cntlm.conf
files:
  description: Each file written or removed, with whether it changed.
  returned: always
  type: list
  elements: dict
  sample: [{path: /etc/condafleet/auth-proxy/px.ini, changed: true}]
backup_files:
  description: Backups of the files changed, when O(backup=true).
  returned: always
  type: list
  elements: str
  sample: []
venv:
  description: The venv px is installed in.
  returned: always
  type: str
  sample: /opt/condafleet/px
px_version:
  description: The version of px in the venv after the task (V(null) when none).
  returned: always
  type: str
  sample: 0.13.0
pip_ran:
  description: Whether pip was run (V(false) on a rerun where the venv already had O(px_version)).
  returned: always
  type: bool
  sample: false
client_username:
  description:
    - With O(auth=kerberos), px runs for one account and takes requests only with Basic credentials of that account's
      name and a key of its own (C(PX_CLIENT_PASSWORD) in RV(client_key_file)), so that another local account cannot
      borrow the account's ticket. The proxy URL for the account's conda, pip and shell is then
      C(http://NAME:KEY@127.0.0.1:PORT); the C(conda_proxy) role writes it into the account's own 0600 files.
  returned: with O(auth=kerberos) and O(state=present)
  type: str
  sample: alice
client_key_file:
  description: The account's px C(.env), mode C(0600), holding the client key (never returned).
  returned: with O(auth=kerberos) and O(state=present)
  type: str
  sample: /home/alice/.config/condafleet/auth-proxy/.env
cntlm_missing:
  description:
    - V(true) when O(auth=ntlm) failed because cntlm is not installed; nothing was written. The C(conda_proxy) role
      then installs the cntlm package and runs the module again.
  returned: when cntlm is not installed
  type: bool
  sample: true
service:
  description: What was done to the service.
  returned: always
  type: dict
  contains:
    manager:
      description: V(systemd), V(launchd), or V(none) when no service manager is running.
      type: str
    started:
      description: Whether the service was started or restarted by this run.
      type: bool
    enabled:
      description: Whether the service was enabled by this run.
      type: bool
    stopped:
      description: Whether the service was stopped by this run (V(absent)).
      type: bool
  sample: {manager: systemd, started: true, enabled: true, stopped: false}
"""

import os
import platform
import shutil
import stat

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native
from ansible_collections.condafleet.proxy.plugins.module_utils import _authproxy
from ansible_collections.condafleet.proxy.plugins.module_utils._authproxy import argument_spec
from ansible_collections.condafleet.proxy.plugins.module_utils._fileio import (
    FileRefused,
    plan_edit,
    prune_empty_directories,
    release_locks,
    resolve_account,
)

SYSTEM_CONFIG_DIR = "/etc/condafleet/auth-proxy"
USER_CONFIG_DIR = ".config/condafleet/auth-proxy"
CNTLM_CANDIDATES = ("/usr/sbin/cntlm", "/usr/bin/cntlm", "/usr/local/bin/cntlm", "/opt/homebrew/bin/cntlm")


USER_SYSTEMCTL_TIMEOUT = 30  # seconds for one systemctl --user call as the account


class Failure(Exception):
    """The task cannot succeed; the message says why."""


class Run:
    """One run of the module: the files planned first (nothing written until every file could be read and
    rendered), then the venv, the files, and the service."""

    def __init__(self, module: AnsibleModule) -> None:
        self.module = module
        self.params = params = module.params
        self.warnings: list[str] = []
        self.darwin = platform.system() == "Darwin"
        self.auth = params["auth"]
        self.engine = _authproxy.ENGINE.get(self.auth or "", "px")
        # A kerberos service needs the ticket of the account it runs as: one per account. The others run as the
        # account owning their credential file, machine-wide. state=absent without auth: user given -> per account.
        self.scope = "user" if (self.auth == "kerberos" or (self.auth is None and params["user"])) else "system"
        self.account = resolve_account(params["user"] if self.scope == "user" else None)
        self.port = _authproxy.check_port(params["listen_port"])
        name = params["service_name"]
        if not name or not all(ch.isalnum() or ch in "-_." for ch in name):
            raise Failure("service_name %r: letters, digits, '-', '_' and '.' only" % name)
        self.label = "org.condafleet.%s" % name
        home = self.account.home
        if self.scope == "user":
            self.config_dir = params["config_dir"] or os.path.join(home, USER_CONFIG_DIR)
            # state=absent removes the directories made for the files, up to these (never these)
            self.prune_stop = os.path.join(home, ".config") if not params["config_dir"] else None
            self.unit_prune_stop = os.path.join(home, "Library" if self.darwin else ".config")
            if self.darwin:
                self.unit_path = os.path.join(home, "Library", "LaunchAgents", self.label + ".plist")
            else:
                self.unit_path = os.path.join(home, ".config", "systemd", "user", name + ".service")
        else:
            self.config_dir = params["config_dir"] or SYSTEM_CONFIG_DIR
            self.prune_stop = "/etc" if not params["config_dir"] else None
            self.unit_prune_stop = None
            if self.darwin:
                self.unit_path = os.path.join("/Library/LaunchDaemons", self.label + ".plist")
            else:
                self.unit_path = os.path.join("/etc/systemd/system", name + ".service")
        self.prune_stop = self.prune_stop or os.path.dirname(self.config_dir)
        self.config_path = os.path.join(self.config_dir, "cntlm.conf" if self.engine == "cntlm" else "px.ini")
        # px reads its .env from its working directory (python-dotenv, searching upwards): one is always written
        # there, so that a stray .env in a parent directory is never what px reads.
        self.credential_path = (self.config_path if self.engine == "cntlm"
                                else os.path.join(self.config_dir, ".env"))
        self.venv = params["venv"]
        self.result: dict = {
            "changed": False, "proxy_url": "http://%s:%d" % (_authproxy.LOOPBACK, self.port), "scope": self.scope,
            "unit_path": self.unit_path, "config_path": self.config_path, "credential_path": self.credential_path,
            "files": [], "backup_files": [], "venv": self.venv, "px_version": None, "pip_ran": False,
            "service": {"manager": self.manager(), "started": False, "enabled": False, "stopped": False},
        }
        if self.auth:
            self.result["engine"] = self.engine
        self.edits: list = []

    # ---------------------------------------------------------------- what the host runs

    def manager(self) -> str:
        if self.darwin:
            return "launchd"
        return "systemd" if os.path.isdir("/run/systemd/system") else "none"

    def service_account(self) -> tuple[str | None, object]:
        """The account in ``User=`` (``None`` for a per-account unit) and its password entry."""
        if self.scope == "user":
            return None, self.account
        name = self.params["service_user"]
        if not name:
            raise Failure("auth=%s runs a system service: service_user (the unprivileged account that runs it and "
                          "alone reads its credential file) is required" % self.auth)
        try:
            account = resolve_account(name)
        except FileRefused as exc:
            raise Failure("service_user: %s" % exc)
        if account.uid == 0:
            raise Failure("service_user must not be root: the proxy needs no privilege")
        return name, account

    def cntlm_path(self) -> str:
        path = self.params["cntlm_path"]
        if path:
            candidates: tuple = (path,)
        else:
            candidates = CNTLM_CANDIDATES
        for candidate in candidates:
            if os.access(candidate, os.X_OK):
                return candidate
        self.result["cntlm_missing"] = True  # nothing is written yet: the role installs cntlm and runs again
        raise Failure("auth=ntlm runs cntlm, which is not installed (%s); install the cntlm package first"
                      % ", ".join(candidates))

    def argv(self) -> list[str]:
        if self.engine == "cntlm":
            return [self.cntlm_path(), "-f", "-c", self.config_path]
        argv = [os.path.join(self.venv, "bin", "px"), "--config=%s" % self.config_path]
        if self.scope == "user":  # see client_env
            argv += _authproxy.px_client_args(self.account.name)
        return argv

    # ---------------------------------------------------------------- rendering

    def proxy_files(self) -> dict[str, bytes]:
        p = self.params
        upstream = []
        for entry in p["upstream"]:
            host, port = _authproxy.parse_upstream(entry)
            upstream.append("%s:%d" % (host, port))
        pac = _authproxy.check_pac_url(p["pac_url"]) if p["pac_url"] else None
        if bool(upstream) == bool(pac):
            raise Failure("give exactly one of upstream (the proxies, host:port) and pac_url")
        if p["pac_reload"] < 1:
            raise Failure("pac_reload must be at least 1 second")
        no_proxy = _authproxy.check_no_proxy(p["no_proxy"])
        if self.auth in ("ntlm", "basic"):
            if not p["username"]:
                raise Failure("auth=%s needs username" % self.auth)
            _authproxy.check_account_name("username", p["username"])
        elif p["username"] or p["password"] or p["ntlm_hash"]:
            raise Failure("auth=%s uses no username, password or ntlm_hash: nothing secret is written for it"
                          % self.auth)
        if self.auth == "ntlm":
            if pac:
                raise Failure("auth=ntlm runs cntlm, which does not read PAC files: give upstream")
            domain = _authproxy.check_domain(p["ntlm_domain"])
            if bool(p["password"]) == bool(p["ntlm_hash"]):
                raise Failure("auth=ntlm needs exactly one of password (hashed here, never written) and ntlm_hash")
            if p["ntlm_hash"]:
                digest = _authproxy.check_ntlm_hash(p["ntlm_hash"])
            else:
                digest = _authproxy.ntlm_digest(p["ntlm_response"], p["username"], domain,
                                                _authproxy.check_secret("password", p["password"]))
            conf = _authproxy.render_cntlm_conf(p["username"], domain, digest, self.port, upstream, no_proxy,
                                                p["ntlm_response"])
            return {self.config_path: conf}
        if p["ntlm_hash"]:
            raise Failure("ntlm_hash is for auth=ntlm only")
        # A per-account px (Kerberos, the account's ticket) asks its clients for the account's name and a key of its
        # own, kept from run to run: another local account reaching 127.0.0.1:PORT cannot borrow the ticket.
        client = self.scope == "user"
        if self.auth == "basic":
            env = _authproxy.render_px_env(_authproxy.check_secret("password", p["password"] or ""))
        elif client:
            env = self.client_env
        else:
            env = ("# %s\n" % _authproxy.HEADER).encode()
        ini = _authproxy.render_px_ini(self.auth, self.port, upstream, pac, no_proxy,
                                       p["username"] if self.auth == "basic" else None, p["pac_reload"])
        return {self.config_path: ini, self.credential_path: env}

    def client_env(self, before: bytes | None) -> bytes:
        """The per-account px's ``.env``: the client key an earlier run wrote (read through the same checks as every
        file here), or a new one; the key goes back to the action plugin only (see ``client_username``)."""
        key = _authproxy.client_token(before)
        self.result.update(client_username=self.account.name, client_key_file=self.credential_path, client_key=key)
        return _authproxy.render_px_client_env(key)

    def service_file(self) -> bytes:
        user, _account = self.service_account()
        description = "condafleet local authenticating proxy (%s, %s) on %s:%d" % (
            self.engine, self.auth, _authproxy.LOOPBACK, self.port)
        environment = dict(self.params["environment"])
        for name, value in environment.items():
            if not isinstance(value, str):
                environment[name] = str(value)
        if self.darwin:
            return _authproxy.render_launchd_plist(self.label, self.argv(), self.config_dir, user, environment)
        return _authproxy.render_systemd_unit(description, self.argv(), self.config_dir, user, environment)

    # ---------------------------------------------------------------- planning and writing

    def plan(self, path: str, content, secret: bool) -> None:
        """``content``: the wanted bytes (None: no file), or a function of the current bytes returning them."""
        params = {"backup": self.params["backup"], "follow": self.params["follow"]}
        default_mode = 0o644
        if secret and content is not None and self.scope == "system":  # (a function only in scope=user)
            _name, owner = self.service_account()
            params.update(owner=owner.name, group=owner.group)
            default_mode = 0o600
        elif secret:
            default_mode = 0o600
        in_config = os.path.dirname(path) == self.config_dir
        render = content if callable(content) else (lambda _before: content)
        edit = plan_edit(path, self.account, params, render, default_mode=default_mode,
                         enforce_mode=secret, make_parents=True,
                         prune_until=self.prune_stop if in_config else self.unit_prune_stop)
        self.edits.append(edit)

    def commit(self) -> bool:
        changed = False
        for edit in self.edits:
            outcome = edit.commit(self.module)
            entry = {"path": edit.path, "changed": outcome["changed"]}
            if outcome.get("backup_file"):
                entry["backup_file"] = outcome["backup_file"]
                self.result["backup_files"].append(outcome["backup_file"])
            self.result["files"].append(entry)
            changed = changed or outcome["changed"]
        self.result["changed"] = self.result["changed"] or changed
        return changed

    def diff(self) -> list:
        return [edit.diff(_authproxy.mask_file) for edit in self.edits if edit.content_changes]

    # ---------------------------------------------------------------- the venv

    def python(self) -> str:
        if self.params["python"]:
            return self.params["python"]
        import sys

        return "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable

    def ensure_px(self) -> None:
        wanted = self.params["px_version"]
        have = _authproxy.installed_version(self.venv)
        self.result["px_version"] = have
        if have == wanted:
            return  # the fast rerun: nothing started
        self.result["changed"] = True
        if self.module.check_mode:
            self.result["px_version"] = wanted
            return
        source = self.params["px_source"]
        if source and not os.path.isdir(source):
            raise Failure("px_source %s is not a directory of wheels" % source)
        venv_python = os.path.join(self.venv, "bin", "python")
        if not os.access(venv_python, os.X_OK):
            if os.path.lexists(self.venv) and os.listdir(self.venv):
                raise Failure("venv %s exists and is not a Python venv; refusing to write into it" % self.venv)
            rc, out, err = self.module.run_command([self.python(), "-m", "venv", self.venv], umask=0o022)
            if rc != 0:
                raise Failure("cannot create the venv %s: %s" % (self.venv, (err or out).strip()[-2000:]))
        argv = _authproxy.pip_install_argv(venv_python, wanted, source, self.params["pip_index_url"])
        rc, out, err = self.module.run_command(argv, umask=0o022, environ_update={"PIP_NO_INPUT": "1"})
        self.result["pip_ran"] = True
        if rc != 0:
            raise Failure("pip could not install px-proxy==%s into %s: %s" % (wanted, self.venv,
                                                                              (err or out).strip()[-2000:]))
        have = _authproxy.installed_version(self.venv)
        if have != wanted:
            raise Failure("pip ran, but %s holds px-proxy %s, not %s" % (self.venv, have, wanted))
        self.result["px_version"] = have

    def remove_venv(self) -> None:
        if not os.path.lexists(self.venv):
            return
        if _authproxy.installed_version(self.venv) is None:
            raise Failure("%s is not a venv holding px; refusing to remove it" % self.venv)
        self.result["changed"] = True
        if not self.module.check_mode:
            shutil.rmtree(self.venv)

    # ---------------------------------------------------------------- the service

    def user_manager_running(self) -> bool:
        """Whether the account's own systemd instance runs (a session, or lingering): its private socket exists, a
        socket of the account's (not followed: the account owns the directory)."""
        try:
            info = os.lstat("/run/user/%d/systemd/private" % self.account.uid)
        except OSError:
            return False
        return stat.S_ISSOCK(info.st_mode) and info.st_uid == self.account.uid

    def systemctl(self, *args: str, check: bool = True, offline: bool = False) -> int:
        """``systemctl`` for the unit's manager. A per-account unit is managed as the account (``setpriv``, a clean
        environment), through its manager's private socket, as ``systemctl --user`` in its session does: no user
        D-Bus is needed (``--machine=NAME@`` needs one, and minimal hosts lack ``dbus-user-session``), and nothing
        runs as root in the account's files. ``offline``: no manager runs, ``--root=/`` works on the unit files."""
        argv = ["systemctl"]
        if self.scope == "user":
            uid, gid = self.account.uid, self.account.gid
            # bounded: the account owns /run/user/UID, and a socket of its own there could leave systemctl waiting
            argv = ["timeout", str(USER_SYSTEMCTL_TIMEOUT), "setpriv", "--reuid=%d" % uid, "--regid=%d" % gid,
                    "--init-groups", "--reset-env", "env", "XDG_RUNTIME_DIR=/run/user/%d" % uid, "systemctl",
                    "--user"] + (["--root=/"] if offline else [])
        rc, out, err = self.module.run_command(argv + list(args))
        if rc != 0 and check:
            raise Failure("%s failed: %s" % (" ".join(argv + list(args)), (err or out).strip()))
        return rc

    def launchctl_domain(self) -> str:
        return "gui/%d" % self.account.uid if self.scope == "user" else "system"

    def start_service(self, changed: bool) -> None:
        name = self.params["service_name"]
        manager = self.result["service"]["manager"]
        if not self.params["start"]:
            return
        if manager == "none":
            self.warnings.append("systemd is not running on this host: %s was written but not enabled or started "
                                 "(start it with the host's service manager, or set start: false)" % self.unit_path)
            return
        if manager == "launchd":
            domain = self.launchctl_domain()
            loaded = self.module.run_command(["launchctl", "print", "%s/%s" % (domain, self.label)])[0] == 0
            if loaded and not changed:
                return
            if self.module.check_mode:
                self.result["changed"] = True
                return
            if loaded:
                self.module.run_command(["launchctl", "bootout", "%s/%s" % (domain, self.label)])
            rc, out, err = self.module.run_command(["launchctl", "bootstrap", domain, self.unit_path])
            if rc != 0:
                raise Failure("launchctl bootstrap %s %s failed: %s" % (domain, self.unit_path, (err or out).strip()))
            self.result["service"].update(started=True, enabled=True)
            self.result["changed"] = True
            return
        # A per-account unit whose account has no manager running (no session, not lingering) is enabled on disk
        # and starts with the account's next session.
        offline = self.scope == "user" and not self.user_manager_running()
        # is-enabled and is-active only read: check mode asks them too, to predict the change
        enabled = self.systemctl("is-enabled", "--quiet", name, check=False, offline=offline) == 0
        active = not offline and self.systemctl("is-active", "--quiet", name, check=False) == 0
        if offline:
            self.warnings.append(
                "%s has no systemd user manager running (no session, not lingering): %s is enabled and starts at the "
                "account's next login; `loginctl enable-linger %s` runs it without a session"
                % (self.account.name, name, self.account.name))
        if self.module.check_mode:
            self.result["changed"] = self.result["changed"] or not enabled or not (active or offline)
            return
        if changed and not offline:
            self.systemctl("daemon-reload")
        if not enabled:
            self.systemctl("enable", name, offline=offline)
            self.result["service"]["enabled"] = True
            self.result["changed"] = True
        if not offline and (changed or not active):
            self.systemctl("restart", name)
            self.result["service"]["started"] = True
            self.result["changed"] = True

    def stop_service(self) -> None:
        manager = self.result["service"]["manager"]
        if manager == "none" or not os.path.exists(self.unit_path):
            return
        if manager == "launchd":
            domain = self.launchctl_domain()
            if self.module.run_command(["launchctl", "print", "%s/%s" % (domain, self.label)])[0] == 0:
                self.result["changed"] = True
                if not self.module.check_mode:
                    self.module.run_command(["launchctl", "bootout", "%s/%s" % (domain, self.label)])
                self.result["service"]["stopped"] = True
            return
        name = self.params["service_name"]
        if self.module.check_mode:
            return  # removing the unit file already reports the change
        if self.scope == "user" and not self.user_manager_running():
            self.systemctl("disable", name, check=False, offline=True)
            return
        self.systemctl("disable", "--now", name, check=False)
        self.result["service"]["stopped"] = True

    # ---------------------------------------------------------------- the two states

    def present(self) -> None:
        if not self.auth:
            raise Failure("state=present needs auth (kerberos, ntlm, basic or none)")
        files = self.proxy_files()
        unit = self.service_file()
        for path, content in files.items():
            self.plan(path, content, secret=path == self.credential_path)
        self.plan(self.unit_path, unit, secret=False)
        if self.engine == "px":
            self.ensure_px()
        changed = self.commit()
        self.start_service(changed)

    def absent(self) -> None:
        self.stop_service()
        for path in dict.fromkeys([self.config_path, self.credential_path, os.path.join(self.config_dir, ".env"),
                                   os.path.join(self.config_dir, "px.ini"), os.path.join(self.config_dir, "cntlm.conf"),
                                   self.unit_path]):
            self.plan(path, None, secret=False)
        changed = self.commit()
        if changed and self.result["service"]["manager"] == "systemd" and not self.module.check_mode \
                and (self.scope != "user" or self.user_manager_running()):
            self.systemctl("daemon-reload", check=False)
        if os.path.isdir(self.config_dir) and not os.listdir(self.config_dir):
            # left empty by an earlier run that was interrupted: the directories the module made for these files
            removed = prune_empty_directories(self.config_dir, self.prune_stop, self.module.check_mode)
            self.result["changed"] = self.result["changed"] or bool(removed)
        if self.params["remove_venv"]:
            self.remove_venv()
        self.result["px_version"] = None if self.params["remove_venv"] else _authproxy.installed_version(self.venv)


def main() -> None:
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    run = None
    try:
        run = Run(module)
        if module.params["state"] == "present":
            run.present()
        else:
            run.absent()
    except (Failure, FileRefused, _authproxy.AuthProxySpecError, OSError) as exc:
        result = dict(run.result) if run is not None else {}
        result.pop("changed", None)
        module.fail_json(msg=to_native(exc), changed=bool(result.get("files")) and any(
            f["changed"] for f in result.get("files", [])), **result)
    finally:
        release_locks()
    for warning in run.warnings:
        module.warn(warning)
    if module._diff:
        run.result["diff"] = run.diff()
    module.exit_json(**run.result)


if __name__ == "__main__":
    main()
