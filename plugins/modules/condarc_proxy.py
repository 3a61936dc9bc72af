#!/usr/bin/python
# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: condarc_proxy
short_description: Set conda's proxy servers and TLS verification in a C(.condarc)
version_added: 0.1.0
description:
  - Manages the C(proxy_servers) map and, when O(ssl_verify) is given, the C(ssl_verify) key of a conda
    configuration file (C(.condarc)), the first of the three ways Anaconda documents to put conda behind a proxy.
  - The module owns C(proxy_servers) (it is replaced as a whole) and C(ssl_verify) when the task names it.
    Every other key, comment, blank line, key order, quoting, C(#!) marker, line ending (CRLF) and a UTF-8 byte
    order mark stay byte-for-byte. An existing owned key is replaced where it is; a new one is appended at the
    end, so O(state=absent) afterwards returns the file to its original bytes.
  - "A value that already says the same thing (in any YAML style, for example the flow style
    C(proxy_servers: {http: ...})) is left alone."
  - Works with the Python standard library alone. When PyYAML is installed the whole file is also validated
    with it (duplicate keys rejected) and the edit is checked to change nothing but the owned keys.
  - An existing file that cannot be parsed (invalid YAML, tabs in indentation, duplicate top-level keys, a top
    level that is not a mapping) fails the task with the file and line, and the file is not touched.
  - Windows targets are served by an action plugin of the same name that edits the file from the controller.
author:
  - condafleet maintainers (@condafleet)
extends_documentation_fragment:
  - ansible.builtin.files
  - condafleet.proxy._attributes
  - condafleet.proxy._attributes.FILES
  - condafleet.proxy._account
options:
  state:
    description:
      - V(present) writes C(proxy_servers) (when any of O(http), O(https), O(servers), O(bypass) is given) and
        C(ssl_verify) (when O(ssl_verify) is given).
      - V(absent) removes C(proxy_servers) and, when the task names O(ssl_verify) (any value), C(ssl_verify).
        A file left empty is deleted.
    type: str
    choices: [present, absent]
    default: present
  scope:
    description:
      - Which conda configuration file to edit. Defaults to V(user) when O(path) is not given.
      - V(user) is C(~/.condarc) of O(user).
      - V(system) is C(/etc/conda/.condarc), read by every user (C(/etc/conda) is created with mode C(0755) when
        missing). Combine with O(final=true) to stop users from overriding the proxy.
      - V(prefix) is C(<prefix>/.condarc) of the conda environment O(prefix), which must exist.
      - Mutually exclusive with O(path).
    type: str
    choices: [user, system, prefix]
  prefix:
    description:
      - The path of a conda environment (or of the base installation). Required with O(scope=prefix).
    type: path
  path:
    description:
      - An explicit file to edit instead of O(scope). C(~/) means the home directory of O(user), not C($HOME) of
        the connection.
      - Its parent directory must exist.
    type: str
  root:
    description:
      - A directory prepended to the file's path (and to the O(ssl_verify) path when checking that it exists), to
        configure an image or a sandbox. Values written into the file are the paths as seen from inside it.
    type: str
    default: /
  http:
    description:
      - Proxy URL for C(http://) requests, for example V(http://proxy.example.com:3128).
      - C(${VAR}) references are kept; conda expands them when it reads the file, which keeps a secret out of it.
      - An empty string is the same as omitting it.
    type: str
  https:
    description:
      - Proxy URL for C(https://) requests. Usually the same C(http://) URL as O(http).
    type: str
  servers:
    description:
      - Extra per-host proxies, a dictionary from C(scheme://host) to a proxy URL, for example the key
        V(https://repo.example.com) with the value V(http://other-proxy:8080).
      - The scheme is C(http) or C(https) and the host is matched exactly by conda (no port, no wildcard).
    type: dict
    default: {}
  bypass:
    description:
      - Hosts conda reaches directly, without a proxy. Each host is written as the two keys C(http://host) and
        C(https://host) with an empty string as the value, which conda (through requests) treats as "no proxy".
      - Only exact host names or IPv4 addresses. conda cannot express domain suffixes or wildcards such as
        C(.corp.example); use M(condafleet.proxy.env_proxy)'s C(no_proxy) for those.
    type: list
    elements: str
    default: []
  ssl_verify:
    description:
      - conda's C(ssl_verify). V(true), V(false), V(truststore) (the operating system's trust store), or the
        absolute path of a CA bundle file or directory, which must exist on the host (a TLS-intercepting proxy's
        corporate CA).
      - A path starting with C(~/) or C(~user/) is written as the absolute path in the home of the account being
        configured (O(user)), since conda does not expand C(~); on Windows it becomes C(%USERPROFILE%\...) or
        C(C:\Users\user\...).
      - When omitted, C(ssl_verify) is neither written nor removed.
    type: raw
  final:
    description:
      - Write conda's C(#!final) marker on the C(proxy_servers:) line, and on C(ssl_verify) when it is managed, so
        that files conda reads later (user files, environments) cannot override them.
      - With V(false) an existing marker on the managed keys is removed.
    type: bool
    default: false
  proxy_username:
    description:
      - User name for the proxy, percent-encoded into every proxy URL of the map.
    type: str
  proxy_password:
    description:
      - Password for the proxy, percent-encoded into every proxy URL (C(@), C(:), C(%), C(#), C(/) and spaces are
        safe). Needs O(proxy_username).
      - A C(${VAR}) reference is written as is, so conda takes the password from the environment.
      - Never shown in results, diffs or logs. A file other than the system one holding a literal password gets
        mode C(0600), whatever mode it had.
      - With O(scope=system) a literal password is refused unless O(world_readable_password=true).
    type: str
  world_readable_password:
    description:
      - conda needs the system C(.condarc) readable by every account that runs conda (a file only root can read
        makes every non-root conda command fail with C(PermissionError)), so a literal O(proxy_password) there is
        readable by every local account. With O(scope=system) that is refused unless this is V(true).
      - The ways that keep the password private are a C(${VAR}) reference in O(proxy_password) (the variable
        must hold the percent-encoded password in each account's environment) and O(scope=user).
    type: bool
    default: false
  mode:
    type: raw
    description:
      - Permissions of the file. A new file gets C(0644). A file holding a literal password gets C(0600), and the
        system file (O(scope=system)) C(0644), whatever mode they had. Other existing files keep their mode unless
        this is set.
notes:
  - conda reads several files and later ones win per key; see the role C(condafleet.proxy.conda_proxy) for
    the whole picture.
  - C(proxy_servers) does not always win over the C(http_proxy)/C(https_proxy) environment variables. conda fetches
    a channel's C(repodata.json.zst) without its proxies, and requests then lets an environment proxy override
    C(proxy_servers) for that request, scheme by scheme; package downloads use C(proxy_servers), with the variables
    filling only the schemes it lacks. Keep the variables and this file on the same proxy and credentials (or unset
    the variables), and check with M(condafleet.proxy.conda_proxy_info), which fails naming such a conflict.
  - A C(${VAR}) reference in a proxy URL is expanded by conda and the URL is parsed afterwards, so the variable must
    hold the percent-encoded password (a raw C(p@ss:w/rd) makes conda fail with C(InvalidURL)). An unset variable
    stays literal, the proxy answers 407 and conda prompts for credentials.
  - conda ignores C(#!final) when comment lines directly follow a scalar value (ruamel.yaml attaches them to the
    marker), so a C(ssl_verify) line followed by comments is moved to the end of the file when O(final=true).
  - Comments inside the C(proxy_servers) block and on its key line belong to the managed value and are replaced
    with it.
seealso:
  - module: condafleet.proxy.env_proxy
  - module: condafleet.proxy.netrc_entry
  - name: conda configuration (.condarc)
    description: proxy_servers, ssl_verify and the #!final marker.
    link: https://docs.conda.io/projects/conda/en/latest/user-guide/configuration/use-condarc.html
"""

EXAMPLES = r"""
- name: Send conda through the corporate proxy for the connecting user
  condafleet.proxy.condarc_proxy:
    http: http://proxy.example.com:3128
    https: http://proxy.example.com:3128
    bypass:
      - repo.internal.example.com

- name: Lock the proxy for every user of the host, with credentials and the corporate CA
  condafleet.proxy.condarc_proxy:
    scope: system
    http: http://proxy.example.com:3128
    https: http://proxy.example.com:3128
    proxy_username: svc-conda
    proxy_password: "{{ vault_proxy_password }}"
    ssl_verify: /etc/ssl/certs/ca-certificates.crt
    final: true
  become: true

- name: Configure another account's ~/.condarc, password taken from its environment
  condafleet.proxy.condarc_proxy:
    user: alice
    http: http://proxy.example.com:3128
    https: http://proxy.example.com:3128
    proxy_username: alice
    proxy_password: "${PROXY_PASSWORD}"
  become: true

- name: A different proxy for one channel host
  condafleet.proxy.condarc_proxy:
    scope: prefix
    prefix: /opt/conda/envs/build
    https: http://proxy.example.com:3128
    servers:
      https://conda.anaconda.org: http://fast-proxy.example.com:8080

- name: Remove the proxy settings (and ssl_verify) again
  condafleet.proxy.condarc_proxy:
    state: absent
    ssl_verify: true
"""

RETURN = r"""
path:
  description: The file that was edited (a symlink's target is reported in RV(link_target)).
  returned: always
  type: str
  sample: /home/alice/.condarc
link_target:
  description: The file actually written when RV(path) is a symlink into the account's own file.
  returned: when path is a symlink
  type: str
  sample: /home/alice/dotfiles/condarc
proxy_servers:
  description:
    - The C(proxy_servers) map the task asked for, passwords masked. V({}) with O(state=absent).
    - V(null) when the task does not manage it (only O(ssl_verify) given).
  returned: always
  type: dict
  sample:
    http: "http://svc-conda:********@proxy.example.com:3128"
    https: "http://svc-conda:********@proxy.example.com:3128"
    "http://repo.internal.example.com": ""
    "https://repo.internal.example.com": ""
ssl_verify:
  description: The C(ssl_verify) value written, or V(null) when it is not managed or was removed.
  returned: always
  type: raw
  sample: /etc/ssl/certs/ca-certificates.crt
backup_file:
  description: The backup of the original file.
  returned: when O(backup=true) and the file changed
  type: str
  sample: /home/alice/.condarc.12345.2026-01-01@12:00:00~
attributes_changed:
  description: File attributes (mode, owner, group) that were corrected on an existing file.
  returned: when attributes of an existing file changed
  type: dict
  sample: {mode: "0600"}
diff:
  description: Before and after text of the file, every password masked.
  returned: in diff mode
  type: dict
  sample: {before: "", after: "proxy_servers:\n  http: http://proxy.example.com:3128\n"}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.condafleet.proxy.plugins.module_utils import _condarc
from ansible_collections.condafleet.proxy.plugins.module_utils._methods import plan_condarc, run_module


def main() -> None:
    module = AnsibleModule(
        argument_spec=_condarc.argument_spec(),
        mutually_exclusive=_condarc.MUTUALLY_EXCLUSIVE,
        required_if=_condarc.REQUIRED_IF,
        add_file_common_args=True,
        supports_check_mode=True,
    )
    run_module(module, plan_condarc)


if __name__ == "__main__":
    main()
