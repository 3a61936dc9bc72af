#!/usr/bin/python
# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: condarc_policy
short_description: Set conda's channel and package policy in a C(.condarc)
version_added: 0.2.0
description:
  - Manages the channel and package policy keys of a conda configuration file (C(.condarc)) - which channels
    conda uses and may use, which packages it must never install, and how strictly it checks what it installs -
    so that a fleet allows only a curated set of channels and packages.
  - The keys are C(channels), C(default_channels), C(channel_alias), C(custom_channels), C(allowlist_channels),
    C(denylist_channels), C(disallowed_packages), C(channel_priority), C(safety_checks), C(extra_safety_checks)
    and C(exclude_newer). The module owns exactly the keys the task names; each is replaced as a whole.
  - Every other key, comment, blank line, key order, quoting, C(#!) marker, line ending (CRLF) and a UTF-8 byte
    order mark stay byte-for-byte. An existing key is replaced where it is; a new one is appended at the end, so
    O(state=absent) afterwards returns the file to its original bytes.
  - A value that already says the same thing (in any YAML style, for example a flow list) is left alone.
  - Values are checked against conda's own rules before anything is written. A value conda would refuse (an
    unknown O(safety_checks) or O(channel_priority), a O(channel_alias) without a scheme, an O(exclude_newer)
    conda cannot parse) or silently read as something else (a host without a scheme in a channel list, which
    conda sends to C(https://conda.anaconda.org/<host>/...)) fails the task and the file is not touched.
  - Works with the Python standard library alone. When PyYAML is installed the whole file is also validated
    with it and the edit is checked to change nothing but the owned keys.
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
      - V(present) writes every policy key the task gives.
      - V(absent) removes exactly the policy keys the task names. Their values are not looked at beyond their type,
        so V(channels=[]) or V(channel_priority=strict) name C(channels) and C(channel_priority) whatever the file
        says. A file left empty is deleted.
    type: str
    choices: [present, absent]
    default: present
  scope:
    description:
      - Which conda configuration file to edit. Defaults to V(user) when O(path) is not given.
      - V(user) is C(~/.condarc) of O(user).
      - V(system) is C(/etc/conda/.condarc) (C(C:\ProgramData\conda\.condarc) on Windows), read by every account;
        it is written with mode C(0644) so that every account running conda can read it. Combine with O(final)
        to stop users from overriding the policy.
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
      - A directory prepended to the file's path, to configure an image or a sandbox.
    type: str
    default: /
  final:
    description:
      - Write conda's C(#!final) marker on the key line, so that files conda reads later (users' C(~/.condarc),
        environments, C($CONDARC)) cannot override or extend the key.
      - V(true) locks every key the task writes; a list locks the keys named (each must be given in the task).
      - A managed key not locked loses an existing marker.
      - conda ignores C(#!final) after a scalar value when comment lines follow it, so such a key is moved to the
        end of the file when it is locked.
    type: raw
    default: false
  channels:
    description:
      - The channels conda searches, in order. Each entry is a channel name (V(conda-forge), V(pkgs/main),
        V(defaults)), a URL with a scheme (V(https://repo.example.com/conda-forge)) or a path.
      - A host without a scheme (V(repo.example.com/conda-forge)) is refused; conda would read it as a channel
        name on C(https://conda.anaconda.org).
    type: list
    elements: str
  default_channels:
    description:
      - What the name C(defaults) stands for, in the same forms as O(channels).
    type: list
    elements: str
  channel_alias:
    description:
      - The URL channel names are appended to, with its scheme (conda refuses one without), for example
        V(https://repo.example.com/conda) to serve C(conda-forge) from an internal mirror.
    type: str
  custom_channels:
    description:
      - A dictionary of channel names to the URL (with its scheme) of the server that hosts each, without the
        channel name, for example the key V(internal) with the value V(https://repo.example.com/conda).
      - A value without a scheme is refused; conda would read it as a name under C(https://conda.anaconda.org).
    type: dict
  allowlist_channels:
    description:
      - The only channels conda may use. Any other channel, given with C(-c) or in any C(.condarc), makes conda
        fail with C(ChannelNotAllowed). Same forms as O(channels); with O(scope=system) and O(final) users cannot
        extend it.
      - An empty list means no restriction to conda.
    type: list
    elements: str
  denylist_channels:
    description:
      - Channels conda must never use (C(ChannelDenied)). Same forms as O(channels).
    type: list
    elements: str
  disallowed_packages:
    description:
      - Package names (or match specs) conda refuses to install (C(DisallowedPackageError)).
    type: list
    elements: str
  channel_priority:
    description:
      - conda's C(channel_priority).
    type: str
    choices: [strict, flexible, disabled]
  safety_checks:
    description:
      - What conda does when a package's files do not match what its C(info/paths.json) records. V(enabled)
        refuses the package (C(SafetyError)), V(warn) (conda's default) only warns, V(disabled) skips the check.
      - conda compares each file's size always, but its SHA256 only with O(extra_safety_checks=true). To refuse a
        package whose file was altered without changing its size, set both.
    type: str
    choices: [disabled, warn, enabled]
  extra_safety_checks:
    description:
      - conda's C(extra_safety_checks) - also compare the SHA256 of every file of a package with its
        C(info/paths.json) when it is linked (slower on large packages).
    type: bool
  exclude_newer:
    description:
      - conda's cool-down against freshly published packages - packages published after the cutoff are ignored.
      - A duration (seconds as a number, V(7d), V(2w 3d), V(12h), or ISO 8601 V(P7D)), a date (V(2026-04-01), which
        hides what was published after that day) or a date and time (V(2026-04-01T12:00:00Z)). Other values are
        refused, as conda refuses them when it solves.
    type: raw
  mode:
    type: raw
    description:
      - Permissions of the file. A new file gets C(0644), and the system file (O(scope=system)) C(0644) whatever
        mode it had. Other existing files keep their mode unless this is set.
notes:
  - conda reads several files and later ones win per key; lists such as C(channels) are merged across files unless
    an earlier file marks the key C(#!final). Lock the policy in the system file with O(final).
  - Comments inside a managed key's block and on its key line belong to the managed value and are replaced with it.
  - C(#!final) stops other files, not the command line. C(allowlist_channels) and C(denylist_channels) are checked
    against C(-c) and C(--override-channels) too; C(channels) can still be overridden on the command line.
seealso:
  - module: condafleet.proxy.condarc_proxy
  - name: conda configuration (.condarc)
    description: The channel and safety keys and the #!final marker.
    link: https://docs.conda.io/projects/conda/en/latest/user-guide/configuration/settings.html
"""

EXAMPLES = r"""
- name: Allow only the internal mirror, for every user of the host, locked
  condafleet.proxy.condarc_policy:
    scope: system
    channels:
      - https://repo.example.com/conda-forge
    allowlist_channels:
      - https://repo.example.com/conda-forge
    channel_priority: strict
    safety_checks: enabled
    extra_safety_checks: true
    final: true
  become: true

- name: Refuse some packages and newly published ones, locking only the package list
  condafleet.proxy.condarc_policy:
    scope: system
    disallowed_packages:
      - pycrypto
      - telnetlib3
    exclude_newer: 7d
    final:
      - disallowed_packages
  become: true

- name: Serve channel names from an internal server for one account
  condafleet.proxy.condarc_policy:
    user: alice
    channel_alias: https://repo.example.com/conda
    custom_channels:
      internal: https://repo.example.com/private
  become: true

- name: Remove the allowlist again (the value only names the key)
  condafleet.proxy.condarc_policy:
    scope: system
    state: absent
    allowlist_channels: []
  become: true
"""

RETURN = r"""
path:
  description: The file that was edited (a symlink's target is reported in RV(link_target)).
  returned: always
  type: str
  sample: /etc/conda/.condarc
link_target:
  description: The file actually written when RV(path) is a symlink into the account's own file.
  returned: when path is a symlink
  type: str
  sample: /home/alice/dotfiles/condarc
policy:
  description: The policy keys the task asked for, as written. V({}) with O(state=absent).
  returned: success
  type: dict
  sample:
    allowlist_channels: [https://repo.example.com/conda-forge]
    channel_priority: strict
    safety_checks: enabled
keys:
  description: The keys the task manages (written, or removed with O(state=absent)).
  returned: success
  type: list
  elements: str
  sample: [allowlist_channels, channel_priority, safety_checks]
final:
  description: The keys written with C(#!final).
  returned: success
  type: list
  elements: str
  sample: [allowlist_channels]
backup_file:
  description: The backup of the original file.
  returned: when O(backup=true) and the file changed
  type: str
  sample: /etc/conda/.condarc.12345.2026-01-01@12:00:00~
attributes_changed:
  description: File attributes (mode, owner, group) that were corrected on an existing file.
  returned: when attributes of an existing file changed
  type: dict
  sample: {mode: "0644"}
diff:
  description: Before and after text of the file.
  returned: in diff mode
  type: dict
  sample: {before: "", after: "safety_checks: enabled  #!final\n"}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.condafleet.proxy.plugins.module_utils import _policy
from ansible_collections.condafleet.proxy.plugins.module_utils._methods import plan_policy, run_module


def main() -> None:
    module = AnsibleModule(
        argument_spec=_policy.argument_spec(),
        mutually_exclusive=_policy.MUTUALLY_EXCLUSIVE,
        required_if=_policy.REQUIRED_IF,
        add_file_common_args=True,
        supports_check_mode=True,
    )
    run_module(module, plan_policy)


if __name__ == "__main__":
    main()
