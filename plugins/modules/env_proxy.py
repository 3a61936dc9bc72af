#!/usr/bin/python
# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: env_proxy
short_description: Persist proxy environment variables (http_proxy, https_proxy, no_proxy) for shells, PAM, systemd and launchd
version_added: 0.1.0
description:
  - Sets V(http_proxy), V(https_proxy), V(no_proxy) (and their upper-case twins) and optional extra variables such as
    V(REQUESTS_CA_BUNDLE) in every file through which the host's programs get their environment, so that conda,
    pip, curl and GUI apps use the proxy.
  - One module call handles the whole set of files for the OS and O(scope) (one round trip per host).
  - 'Linux, O(scope=system): C(/etc/environment) (PAM: ssh, su, login, display managers),
    C(/etc/profile.d/condafleet-proxy.sh) (login shells), zsh''s C(/etc/zsh/zshenv) (C(/etc/zshenv) when
    C(/etc/zsh) does not exist), C(/etc/fish/conf.d/condafleet-proxy.fish),
    C(/etc/environment.d/90-condafleet-proxy.conf) (systemd user sessions).'
  - 'Linux, O(scope=user): the login file bash actually reads (C(~/.bash_profile) if it exists, else C(~/.bash_login)
    if it exists, else C(~/.profile)), C(~/.zshenv), C(~/.config/fish/conf.d/condafleet-proxy.fish),
    C(~/.config/environment.d/90-condafleet-proxy.conf).'
  - 'macOS, O(scope=system): C(/etc/zshenv), C(/etc/profile), and the LaunchAgent
    C(/Library/LaunchAgents/com.condafleet.proxy.plist). O(scope=user): C(~/.zshenv), the login file bash reads
    (C(~/.bash_profile) unless C(~/.bash_login) or C(~/.profile) already exists), and
    C(~/Library/LaunchAgents/com.condafleet.proxy.plist). The agent runs C(launchctl setenv) for each variable at
    login, so GUI apps such as Anaconda Navigator see the proxy; the values are passed as arguments, never as
    shell text.'
  - On Linux a zsh, fish or systemd file is written only when that program is installed (found on E(PATH), or its
    C(/etc) directory exists under O(root)) or the file already exists; the others are reported as skipped.
    Missing parent directories are created (owned by the account under its home).
  - Each text file gets one managed block between C(# BEGIN condafleet.proxy env_proxy) and
    C(# END condafleet.proxy env_proxy); it is replaced in place, or appended. O(state=absent) removes exactly that
    block, so the file returns to the bytes it had; a file the module created is deleted again. Everything outside
    the block is kept byte for byte.
  - Values are quoted for each format so that no character of a URL or password can run a command or break the
    file. Newlines, NUL, other control characters and Unicode noncharacters are refused. C(/etc/environment) cannot hold C(#) at all
    (Linux-PAM cuts lines at it); such a value fails the task and nothing is written.
  - A file with a broken managed block (a BEGIN without END, two blocks) fails the task with its name and line
    number; no file is changed.
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
      - V(present) writes the variables; V(absent) removes the managed block from every candidate file that exists
        (and the LaunchAgent), whatever programs are installed.
    type: str
    choices: [present, absent]
    default: present
  http_proxy:
    description:
      - Proxy URL for plain HTTP, for example V(http://proxy.example.com:3128).
      - Credentials in the URL must be percent-encoded; better give them in O(proxy_username) and O(proxy_password).
    type: str
  https_proxy:
    description:
      - Proxy URL for HTTPS requests. Usually the same V(http://) URL as O(http_proxy).
    type: str
  no_proxy:
    description:
      - Hosts, domain suffixes (V(.corp.example)) and addresses reached directly.
      - A list, or a comma-separated string, which is split. Written joined with commas.
    type: list
    elements: str
  extra:
    description:
      - 'More variables to set, as a dictionary of name to value, for example C(REQUESTS_CA_BUNDLE: /etc/ssl/corp.pem).'
      - Names must match C(^[A-Za-z_][A-Za-z0-9_]*$) and are written exactly as given (O(case) does not apply).
    type: dict
  case:
    description:
      - Which spelling of the proxy variables to write. V(both) writes V(http_proxy) and V(HTTP_PROXY) and so on;
        tools disagree on which one they read.
    type: str
    choices: [both, lower, upper]
    default: both
  proxy_username:
    description:
      - User name for the proxy, percent-encoded into O(http_proxy) and O(https_proxy).
    type: str
  proxy_password:
    description:
      - Password for the proxy, percent-encoded into O(http_proxy) and O(https_proxy). Needs O(proxy_username).
      - Never shown in results, diffs or logs; every encoded form is masked too.
      - With O(scope=system) the files are readable by every local account, and so would be the password. That is
        refused unless O(world_readable_password=true). A C(${VAR}) reference is not a literal password.
      - With O(scope=user) (or a O(path) in the home), every file holding the password gets mode C(0600).
    type: str
  world_readable_password:
    description:
      - Accept that with O(scope=system) a literal O(proxy_password), or a password inside a proxy URL, is
        readable by every local account (every login reads those files).
    type: bool
    default: false
  scope:
    description:
      - V(system) configures every account of the host; V(user) the files in the home of O(user).
    type: str
    choices: [system, user]
    default: system
  path:
    description:
      - Edit only this file, in O(format), instead of the set of files for the OS and O(scope).
      - A leading C(~/) means the home of O(user). The path is taken inside O(root).
    type: str
  format:
    description:
      - The format of O(path), required with it. V(sh) (bash, zsh, dash), V(fish), V(pam_env) (C(/etc/environment)),
        V(systemd) (C(environment.d)), V(launchd) (a whole LaunchAgent property list).
    type: str
    choices: [sh, fish, pam_env, systemd, launchd]
  target_os:
    description:
      - The file layout to use. V(auto) takes the host's C(platform.system()).
      - V(Darwin) on a Linux host, with O(root), builds or tests a macOS layout in a directory.
    type: str
    choices: [auto, Linux, Darwin]
    default: auto
  root:
    description:
      - A directory prepended to every system and home path, to configure an image or a sandbox.
    type: str
    default: /
notes:
  - Changes reach new sessions only; running shells and GUI apps keep their environment until the next login.
  - Shell files are sourced at start-up, PAM reads C(/etc/environment) at login, systemd reads C(environment.d)
    when the user manager starts, launchd runs the agent at login.
seealso:
  - module: condafleet.proxy.condarc_proxy
  - module: ansible.windows.win_environment
    description: Windows hosts get the same variables through the action plugin of this module.
"""

EXAMPLES = r"""
- name: Proxy for every account on the host
  condafleet.proxy.env_proxy:
    http_proxy: http://proxy.example.com:3128
    https_proxy: http://proxy.example.com:3128
    no_proxy: [localhost, 127.0.0.1, .corp.example]
  become: true

- name: Authenticating proxy and a corporate CA for one user's shells
  condafleet.proxy.env_proxy:
    scope: user
    user: alice
    http_proxy: http://proxy.example.com:3128
    https_proxy: http://proxy.example.com:3128
    proxy_username: alice
    proxy_password: "{{ vault_proxy_password }}"
    no_proxy: localhost,127.0.0.1
    extra:
      REQUESTS_CA_BUNDLE: /etc/ssl/certs/corp-ca.pem
  become: true

- name: Only the lower-case variables, in one explicit file
  condafleet.proxy.env_proxy:
    path: /etc/profile.d/zz-proxy.sh
    format: sh
    case: lower
    http_proxy: http://proxy.example.com:3128

- name: Prepare a macOS image's files in a directory
  condafleet.proxy.env_proxy:
    target_os: Darwin
    root: /srv/images/macos-root
    http_proxy: http://proxy.example.com:3128

- name: Remove everything the module added
  condafleet.proxy.env_proxy:
    state: absent
  become: true
"""

RETURN = r"""
files:
  description: Every file examined, in order.
  returned: always
  type: list
  elements: dict
  contains:
    path:
      description: The file (the target of a followed symlink is in RV(files[].link_target)).
      type: str
      sample: /etc/profile.d/condafleet-proxy.sh
    format:
      description: The file's format.
      type: str
      sample: sh
    changed:
      description: Whether the file's content or attributes changed (would change in check mode).
      type: bool
      sample: true
    skipped:
      description: Why the file was not written (the program that reads it is not installed).
      type: str
      returned: when the file was skipped
      sample: fish is not installed
    backup_file:
      description: The backup made before the change.
      type: str
      returned: when O(backup=true) and the file existed and changed
      sample: /etc/environment.2244.2026-01-01@10:00:00~
    link_target:
      description: The file edited through a symlink at O(path).
      type: str
      returned: when a symlink was followed
    attributes_changed:
      description: The mode, owner or group that was corrected on an existing file.
      type: dict
      returned: when attributes of an existing file changed
variables:
  description: The variables written (empty for O(state=absent)), passwords masked.
  returned: always
  type: dict
  sample:
    http_proxy: http://alice:********@proxy.example.com:3128
    HTTP_PROXY: http://alice:********@proxy.example.com:3128
    no_proxy: localhost,127.0.0.1
    NO_PROXY: localhost,127.0.0.1
target_os:
  description: The file layout used.
  returned: always
  type: str
  sample: Linux
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.condafleet.proxy.plugins.module_utils._envfiles import argument_spec
from ansible_collections.condafleet.proxy.plugins.module_utils._methods import plan_env, run_module


def main() -> None:
    module = AnsibleModule(
        argument_spec=argument_spec(),
        add_file_common_args=True,
        supports_check_mode=True,
        required_together=[("path", "format")],
    )
    run_module(module, plan_env)


if __name__ == "__main__":
    main()
