#!/usr/bin/python
# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: conda_proxy
short_description: Put conda behind a proxy with all three methods in one task
version_added: 0.1.0
description:
  - Applies the three methods Anaconda documents for a proxy, for one or several accounts, in one module
    execution per host - what M(condafleet.proxy.condarc_proxy), M(condafleet.proxy.env_proxy) and
    M(condafleet.proxy.netrc_entry) do one method at a time, with the same files, bytes and checks.
  - C(.condarc) - C(proxy_servers) and C(ssl_verify), as M(condafleet.proxy.condarc_proxy) writes them.
  - C(env) - C(http_proxy), C(https_proxy) and C(no_proxy) in every file the shells and session managers of the
    OS read, as M(condafleet.proxy.env_proxy) writes them.
  - C(netrc) - the O(netrc_entries) in each account's C(~/.netrc), as M(condafleet.proxy.netrc_entry) writes them.
  - Every file of every method and account is read and checked before any is written, so that a file that does not
    parse (or a missing CA bundle, an unknown account) fails the task with nothing changed on the host.
  - This is the module the C(condafleet.proxy.conda_proxy) role runs; use it directly in playbooks that do not need
    the role's CA distribution or verification.
author:
  - condafleet maintainers (@condafleet)
extends_documentation_fragment:
  - condafleet.proxy._attributes
  - condafleet.proxy._attributes.FILES
options:
  methods:
    description:
      - The methods to apply. A method left out is neither written nor removed.
    type: list
    elements: str
    choices: [condarc, env, netrc]
    default: [condarc, env, netrc]
  http:
    description:
      - The proxy for C(http://) URLs, C(http://host:port), written as C(proxy_servers.http) in C(.condarc) and
        as C(http_proxy) in the environment.
      - With O(state=present), the C(condarc) method needs O(http), O(https) or O(ssl_verify), and the C(env) method
        O(http), O(https) or O(no_proxy).
    type: str
  https:
    description:
      - The proxy for C(https://) URLs (usually the same C(http://host:port) as O(http)).
    type: str
  bypass:
    description:
      - Exact host names conda reaches directly, written to C(.condarc) (see M(condafleet.proxy.condarc_proxy)'s
        O(condafleet.proxy.condarc_proxy#module:bypass)).
    type: list
    elements: str
    default: []
  no_proxy:
    description:
      - Hosts, domain suffixes and addresses that bypass the proxy, for the environment variables method.
    type: list
    elements: str
    default: []
  proxy_username:
    description:
      - The proxy account, added to the proxy URLs of C(.condarc) and of the environment variables.
    type: str
  proxy_password:
    description:
      - The proxy password, percent-encoded into the URLs. Never shown in output or diffs.
      - A C(${VAR}) reference is written as it is in C(.condarc), which conda expands.
    type: str
  ssl_verify:
    description:
      - conda's C(ssl_verify), as for M(condafleet.proxy.condarc_proxy)'s
        O(condafleet.proxy.condarc_proxy#module:ssl_verify).
      - With O(scope=user), a path starting with C(~/) is each account's own (its home directory).
      - When omitted, C(ssl_verify) is neither written nor removed.
    type: raw
  ca_certificates:
    description:
      - The corporate CA of a TLS-intercepting proxy, as PEM text (for example
        C({{ lookup('ansible.builtin.file', 'corp-ca.pem') }})).
      - Written to C(/etc/conda/condafleet-proxy-ca.pem) with O(scope=system), else to
        C(~/.conda/condafleet-proxy-ca.pem) of each account (owned by it, with its group, written with its
        identity), mode C(0644); C(ssl_verify) in C(.condarc) then points to it.
      - Mutually exclusive with O(ssl_verify).
      - With O(state=absent) and this option given (any value, even empty), that file and C(ssl_verify) are
        removed, and C(~/.conda) or C(/etc/conda) when that leaves them empty.
    type: str
  world_readable_password:
    description:
      - With O(scope=system), a literal O(proxy_password) goes to files that every local account reads
        (C(/etc/conda/.condarc) must be readable by every account that runs conda, C(/etc/environment) by every
        login). That is refused unless this option is V(true), which accepts that every local account can read
        the password.
      - Other ways that work are a C(${VAR}) reference in O(proxy_password) (the variable must hold the
        percent-encoded password in each account's environment) or O(scope=user), where each account's files
        holding the password are mode C(0600).
    type: bool
    default: false
  final:
    description:
      - Mark the C(.condarc) keys with conda's C(#!final) so files conda reads later cannot override them
        (with O(scope=system)).
    type: bool
    default: false
  netrc_entries:
    description:
      - The C(.netrc) entries written for each account (channel or proxy credentials), as
        M(condafleet.proxy.netrc_entry)'s O(condafleet.proxy.netrc_entry#module:entries).
      - An empty list leaves the C(.netrc) files alone.
    type: list
    elements: dict
    default: []
    suboptions:
      machine:
        description:
          - The host name of the entry. Exactly one of O(netrc_entries[].machine) and
            O(netrc_entries[].default=true) is required in each element.
        type: str
      default:
        description:
          - The C(default) entry, used for every host without its own entry.
        type: bool
      login:
        description:
          - The login name.
        type: str
      password:
        description:
          - The password. Never shown in output or diffs.
        type: str
      account:
        description:
          - The C(account) value. Masked like the password.
        type: str
  scope:
    description:
      - V(system) writes the machine-wide C(.condarc) and environment files; the C(.netrc) files are still the
        accounts' own (O(users), or the account the module runs as).
      - V(user) writes the files of each account of O(users), or of the account the module runs as.
    type: str
    choices: [system, user]
    default: system
  users:
    description:
      - The accounts whose own files are written (C(.netrc) in both scopes; every method with O(scope=user)).
      - When empty, the account the module runs as.
      - 'Needs root (C(become: true)) for any account but the one the module runs as.'
    type: list
    elements: str
    default: []
  target_os:
    description:
      - The OS whose environment file layout is written. V(auto) is the OS of the host.
      - V(Darwin) on a Linux host writes the macOS layout, to build an image or test.
    type: str
    choices: [auto, Linux, Darwin]
    default: auto
  root:
    description:
      - A directory prepended to every path, to configure an image or a sandbox. Values written into the files are
        the paths as seen from inside it.
    type: str
    default: /
  state:
    description:
      - V(present) writes the settings, V(absent) removes them (and the C(.netrc) entries of O(netrc_entries)).
    type: str
    choices: [present, absent]
    default: present
  verify:
    description:
      - After configuring, prove from the host, for each account of O(users) (or the connecting account), that a
        request to O(verify_url) goes through the proxy conda would use, with conda's settings, run as that
        account (M(condafleet.proxy.conda_proxy_info) with O(condafleet.proxy.conda_proxy_info#module:url)).
        A 407, a TLS failure, an unreachable proxy or a login shell whose proxy differs from C(proxy_servers)
        fails the task with its message; the results are in RV(verify).
      - Also in check mode (it proves the state the host is in). Not on Windows hosts (a warning says so).
    type: bool
    default: false
  verify_url:
    description: The URL O(verify) fetches, a channel's C(noarch/repodata.json).
    type: str
    default: https://conda.anaconda.org/conda-forge/noarch/repodata.json
  verify_timeout:
    description: Seconds each of O(verify)'s requests, login shells and conda runs may take.
    type: int
    default: 20
  verify_conda_executable:
    description:
      - The conda O(verify) asks (C(conda config --show proxy_servers)), as a path for every account, or a
        mapping of account to path (V('') for the connecting account). By default
        M(condafleet.proxy.conda_proxy_info) looks for it.
    type: raw
  local_proxy:
    description:
      - Run a local authenticating proxy on C(127.0.0.1) (M(condafleet.proxy.local_auth_proxy), done by the action
        plugin before the methods) with the proxy of O(http)/O(https) as its upstream, or with O(local_proxy.pac_url)
        choosing it, and write C(http://127.0.0.1:PORT) with no credentials into every method's files instead.
      - O(proxy_username)/O(proxy_password) (or the credentials in the URL) go to the local proxy only, as an NTLM
        hash (V(ntlm)) or in a file only its service account reads (V(basic)); V(kerberos) uses the ticket of the one
        account in O(users) (O(scope=user)).
      - For V(ntlm), V(basic) and V(none) the service account O(local_proxy.service_user) is created (a system
        account without a home or a login shell) and, for V(ntlm), the C(cntlm) package installed.
      - With O(state=absent) the methods' files are restored first, then the service and its files are removed
        (the service account and the px venv stay).
      - On Windows hosts px runs for the connecting account with its own Windows credentials (V(kerberos) or V(ntlm)
        single sign-on, or V(none)), through M(condafleet.proxy.local_auth_proxy)'s Windows path; no O(users) and no
        credentials there.
    type: dict
    suboptions:
      auth:
        description: How the local proxy logs in to the corporate proxy.
        type: str
        choices: [kerberos, ntlm, basic, none]
        default: none
      pac_url:
        description: A PAC file (URL or absolute path) that chooses the upstream per request, instead of O(http)/O(https).
        type: str
      listen_port:
        description: The port on C(127.0.0.1).
        type: int
        default: 3128
      service_user:
        description: The account the system service runs as (V(ntlm), V(basic), V(none)).
        type: str
        default: condafleet-proxy
      ntlm_domain:
        description: The Windows domain of the proxy account (V(ntlm)).
        type: str
        default: ''
      ntlm_hash:
        description: The NTLMv2 hash (cntlm's C(PassNTLMv2)) instead of O(proxy_password), so the password never reaches the host.
        type: str
      ntlm_response:
        description: V(ntlmv2), or V(nt) for proxies whose challenge carries no target information.
        type: str
        choices: [ntlmv2, nt]
        default: ntlmv2
      venv:
        description: Where px is installed.
        type: path
        default: /opt/condafleet/px
      python:
        description: The Python that creates px's venv.
        type: path
      px_version:
        description: The version of C(px-proxy) installed.
        type: str
        default: 0.13.0
      px_source:
        description: A directory of wheels to install px from, without an index.
        type: path
      pip_index_url:
        description: The package index px is installed from.
        type: str
      environment:
        description: Variables for the service (for example C(KRB5_CONFIG)).
        type: dict
        default: {}
      start:
        description: Enable and start the service (when systemd or launchd runs).
        type: bool
        default: true
attributes:
  platform:
    details:
      - POSIX hosts run the module, once for all methods and accounts. Windows hosts are served by the action
        plugin of the same name, which applies M(condafleet.proxy.condarc_proxy), M(condafleet.proxy.env_proxy) and
        M(condafleet.proxy.netrc_entry) one after the other from the controller. There the options are checked
        before anything is written, but a file that does not parse fails the task after the methods before it
        were applied.
      - On every OS, a write that fails (a full disk, a read-only file system) leaves the files written before it.
notes:
  - The files are those of M(condafleet.proxy.condarc_proxy) (without O(condafleet.proxy.condarc_proxy#module:path)),
    M(condafleet.proxy.env_proxy) (without O(condafleet.proxy.env_proxy#module:path)) and
    M(condafleet.proxy.netrc_entry) (C(~/.netrc)), written with the same bytes; use those modules for a file
    elsewhere, other file modes, or C(backup).
seealso:
  - module: condafleet.proxy.condarc_proxy
  - module: condafleet.proxy.env_proxy
  - module: condafleet.proxy.netrc_entry
  - module: condafleet.proxy.conda_proxy_info
"""

EXAMPLES = r"""
- name: The whole fleet behind the proxy, machine-wide, in one module run per host
  condafleet.proxy.conda_proxy:
    http: http://proxy.corp.example:3128
    https: http://proxy.corp.example:3128
    no_proxy: [localhost, 127.0.0.1, .corp.example]
    bypass: [conda.corp.example]
  become: true

- name: Two accounts' own files, with channel credentials and the corporate CA each has in ~/.conda
  condafleet.proxy.conda_proxy:
    scope: user
    users: [alice, bob]
    http: http://proxy.corp.example:3128
    proxy_username: svc-conda
    proxy_password: "{{ vault_proxy_password }}"
    ssl_verify: ~/.conda/corp-ca.pem
    netrc_entries:
      - machine: conda.corp.example
        login: svc-conda
        password: "{{ vault_channel_password }}"
  become: true

- name: Only .condarc, locked against user overrides
  condafleet.proxy.conda_proxy:
    methods: [condarc]
    http: http://proxy.corp.example:3128
    final: true
  become: true

- name: Remove everything the first example wrote
  condafleet.proxy.conda_proxy:
    state: absent
  become: true
"""

RETURN = r"""
edited_from:
  description:
    - V(host) when the module edited the files on the host; V(controller) when the action plugin edited them from
      the controller (Windows hosts, or C(condafleet_proxy_edit_on_controller) set).
  returned: always
  type: str
  sample: host
target_os:
  description:
    - The OS whose layout the environment files follow (V(Windows) on Windows hosts).
    - O(target_os) as given when the controller-side path did not apply the C(env) method.
  returned: always
  type: str
  sample: Linux
ca:
  description:
    - One result per corporate CA file of O(ca_certificates) (one in system scope, one per account in user scope),
      and with O(state=absent) per CA file removed or found absent.
  returned: always
  type: list
  elements: dict
  contains:
    user:
      description: The account, or V(null) for the account the module runs as.
      type: str
      sample: alice
    path:
      description: The file.
      type: str
      sample: /home/alice/.conda/condafleet-proxy-ca.pem
    changed:
      description: Whether the file (or its mode or owner) changed.
      type: bool
      sample: true
verify:
  description:
    - With O(verify), the result of M(condafleet.proxy.conda_proxy_info) for each account, with RV(verify[].user).
  returned: when O(verify) is true on a POSIX host
  type: list
  elements: dict
  sample: [{"user": "alice", "probe": {"outcome": "ok", "source": "condarc"}}]
  contains:
    user:
      description: The account, or V(null) for the account the module runs as.
      type: str
      sample: alice
launchd_reloaded:
  description:
    - On macOS, with O(scope=user) for the connecting account, whether the LaunchAgent was run again in the
      account's GUI session so that apps started before (Anaconda Navigator) see the new variables.
  returned: when the LaunchAgent changed on macOS
  type: bool
  sample: true
condarc:
  description:
    - One result per C(.condarc) written (one in system scope, one per account in user scope), each as
      M(condafleet.proxy.condarc_proxy) returns it, with RV(condarc[].user).
    - Empty when the method is not in O(methods).
  returned: always
  type: list
  elements: dict
  contains:
    user:
      description: The account, or V(null) for the account the module runs as.
      type: str
      sample: alice
    path:
      description: The file.
      type: str
      sample: /etc/conda/.condarc
    changed:
      description: Whether the file changed.
      type: bool
      sample: true
    proxy_servers:
      description: C(proxy_servers) as written, passwords masked.
      type: dict
      sample: {"http": "http://proxy.corp.example:3128", "https": "http://proxy.corp.example:3128"}
    ssl_verify:
      description: C(ssl_verify) as written, V(null) when not managed.
      type: raw
      sample: /etc/conda/condafleet-proxy-ca.pem
env:
  description:
    - One result per account (one in system scope), each as M(condafleet.proxy.env_proxy) returns it, with
      RV(env[].user).
    - Empty when the method is not in O(methods).
  returned: always
  type: list
  elements: dict
  contains:
    user:
      description: The account, or V(null) for the account the module runs as.
      type: str
      sample: null
    files:
      description: Each file considered, with its C(format), C(changed), or C(skipped) and why.
      type: list
      elements: dict
      sample: [{"path": "/etc/environment", "format": "pam_env", "changed": true}]
    variables:
      description: The variables written, passwords masked.
      type: dict
      sample: {"http_proxy": "http://proxy.corp.example:3128", "HTTP_PROXY": "http://proxy.corp.example:3128"}
netrc:
  description:
    - One result per account's C(.netrc), each as M(condafleet.proxy.netrc_entry) returns it with
      O(condafleet.proxy.netrc_entry#module:entries), with RV(netrc[].user).
    - Empty when the method is not in O(methods) or O(netrc_entries) is empty.
  returned: always
  type: list
  elements: dict
  contains:
    user:
      description: The account, or V(null) for the account the module runs as.
      type: str
      sample: alice
    path:
      description: The file.
      type: str
      sample: /home/alice/.netrc
    changed:
      description: Whether the file (or its mode) changed.
      type: bool
      sample: true
    entries:
      description: What happened to each element of O(netrc_entries), in order.
      type: list
      elements: dict
      sample: [{"machine": "conda.corp.example", "changed": true, "duplicates_removed": 0, "password_kept": false}]
"""

import os
import pwd

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.condafleet.proxy.plugins.module_utils import _combined
from ansible_collections.condafleet.proxy.plugins.module_utils._fileio import release_locks
from ansible_collections.condafleet.proxy.plugins.module_utils._methods import MethodFailed, host_os


def main() -> None:
    module = AnsibleModule(argument_spec=_combined.argument_spec(), supports_check_mode=True)
    params = module.params
    result = dict(changed=False, target_os=host_os(params["target_os"]), edited_from="host", ca=[], condarc=[], env=[],
                  netrc=[])
    try:
        _combined.check_ca_certificates(params)
    except ValueError as exc:
        module.fail_json(msg="%s; nothing was changed on this host" % exc, **result)
    try:
        apply(module, params, result)
    finally:
        release_locks()
    module.exit_json(**result)


def apply(module: AnsibleModule, params: dict, result: dict) -> None:
    """Plan every file of every method and account before writing any, then write them; fill ``result``."""
    plans = []
    pending = set()
    for call in _combined.method_calls(params):
        try:
            plan = call.plan(module, pending)
        except (MethodFailed, ValueError) as exc:
            module.fail_json(msg="%s; nothing was changed on this host" % call.describe(exc), **result)
        plans.append((call, plan))
        pending.update(edit.real for edit in plan.edits if edit.after is not None)
    diffs = []
    for call, plan in plans:
        try:
            outcome = plan.commit()
        except MethodFailed as exc:
            # files of earlier methods, and of this one before the failed write, are written
            result[call.method].append(dict(exc.result, user=call.user or None))
            result["changed"] = result["changed"] or bool(exc.result.get("changed"))
            module.fail_json(msg=call.describe(exc), **result)
        result[call.method].append(dict(outcome, user=call.user or None))
        result["changed"] = result["changed"] or outcome["changed"]
        if module._diff:
            diffs.extend(plan.changed_diffs())
    if module._diff:
        result["diff"] = diffs
    reload_launch_agent(module, params, result)


def reload_launch_agent(module: AnsibleModule, params: dict, result: dict) -> None:
    """The LaunchAgent env_proxy wrote sets the variables at each login; GUI apps started before this run see them
    once launchd has run it, so run it in the connecting account's GUI session now (macOS, user scope, that
    account only, not under a sandbox root, and only where launchctl exists)."""
    changed = any(entry.get("changed") and entry.get("format") == "launchd"
                  for outcome in result["env"] for entry in outcome.get("files", []))
    if (not changed or module.check_mode or result["target_os"] != "Darwin" or params["scope"] != "user"
            or params["users"] or params["root"] != "/" or params["state"] != "present"):
        return
    launchctl = module.get_bin_path("launchctl")
    if launchctl is None:
        return
    domain = "gui/%d" % os.getuid()
    agent = os.path.join(pwd.getpwuid(os.getuid()).pw_dir, "Library/LaunchAgents/com.condafleet.proxy.plist")
    module.run_command([launchctl, "bootout", domain + "/com.condafleet.proxy"])
    rc, _out, err = module.run_command([launchctl, "bootstrap", domain, agent])
    result["launchd_reloaded"] = rc == 0
    if rc != 0:
        module.warn("launchctl bootstrap %s %s failed (%s): the variables reach GUI apps at the next login"
                    % (domain, agent, err.strip()))


if __name__ == "__main__":
    main()
