#!/usr/bin/python
# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: netrc_entry
short_description: Manage machine or default entries of a C(.netrc) file
version_added: 0.1.0
description:
  - Adds, updates or removes one C(machine) entry (or the C(default) entry) of a C(.netrc) file, the file from
    which conda (through Python C(requests)), C(curl), C(git) and C(pip) read credentials for a host.
  - With O(entries), several entries of the same file in one task, the file read and written once.
  - Edits only the tokens of that entry. Other entries, comments, C(macdef) blocks, quoting, line endings and
    layout stay byte for byte. Repeated entries for the same machine are merged into the first one, because
    curl uses the first and Python's C(netrc) the last.
  - New machine entries are inserted before the C(default) entry, which must stay last for curl.
  - The file is kept private, mode V(0600) unless O(mode) says otherwise, also on an existing file, because Python's
    C(netrc) refuses a C(~/.netrc) with a password that group or others can read.
  - An existing file that does not parse fails the task with the file and line, and is left untouched.
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
      - V(present) creates or updates the entry, V(absent) removes it (and any repeated entry for the machine).
      - Removing the last entry of a file that holds nothing else removes the file.
    type: str
    choices: [present, absent]
    default: present
  entries:
    description:
      - Several entries of the file, applied in order, with the same O(state) and O(update_password). Each element
        takes the options of one entry (O(entries[].machine) or O(entries[].default=true), O(entries[].login),
        O(entries[].password), O(entries[].account)) with the same meaning as the top-level options of the same
        names.
      - Mutually exclusive with O(machine), O(default), O(login), O(password) and O(account).
      - One task instead of one per entry, so that a fleet run with many entries pays one module execution per file.
      - An empty list changes nothing. Two elements for the same machine (or two default entries) are refused.
    type: list
    elements: dict
    suboptions:
      machine:
        description:
          - The host name of the entry, as for O(machine).
          - Exactly one of O(entries[].machine) and O(entries[].default=true) is required in each element.
        type: str
      default:
        description:
          - Manage the C(default) entry, as for O(default).
        type: bool
      login:
        description:
          - The login name, as for O(login).
        type: str
      password:
        description:
          - The password, as for O(password). Never shown in output or diffs.
        type: str
      account:
        description:
          - The C(account) value, as for O(account). Never shown in output or diffs.
        type: str
  machine:
    description:
      - The host name of the entry, as the client compares it (no scheme, no port).
      - Matched without regard to case, as curl does; the name is rewritten as given.
      - Exactly one of O(machine), O(default=true) and O(entries) is required.
    type: str
  default:
    description:
      - Manage the C(default) entry, used for every host without its own entry, instead of a C(machine) entry.
    type: bool
  login:
    description:
      - The login name. When omitted, an existing login is kept and a new entry has none.
    type: str
  password:
    description:
      - The password. Never shown in output or diffs.
      - Written bare (unquoted) whenever every common reader reads it back bare, quoted only when it cannot be;
        see the notes. Newlines, NUL and other control characters are refused.
      - When omitted, an existing password is kept.
    type: str
  account:
    description:
      - The C(account) value (an additional password some clients use). Secret like the password, never shown in
        output or diffs.
      - When omitted, an existing account is kept.
    type: str
  path:
    description:
      - The file to edit. A leading V(~) is the home directory of O(user) (not C($HOME) of the connection).
      - Windows clients read C(%USERPROFILE%/_netrc); conda and requests also honour C($NETRC).
    type: str
    default: ~/.netrc
  root:
    description:
      - A directory prepended to the file's path to
        configure an image or a sandbox. Values written into the file are the paths as seen from inside it.
    type: str
    default: /
  update_password:
    description:
      - V(always) sets the password of an existing entry; V(on_create) only writes it when the entry is created,
        so an existing entry keeps its password while O(login) and O(account) are still managed.
    type: str
    choices: [always, on_create]
    default: always
notes:
  - O(mode) defaults to V(0600) and is enforced on an existing file; a looser mode is fixed and reported
    as RV(mode_fixed).
  - Values are written bare (unquoted) whenever every common reader reads them back bare. Quoted tokens are read
    only by Python 3.11 and later and curl 7.84 and later; rattler (pixi, py-rattler), Python 3.10 and older
    C(netrc) (so C(requests), pip and conda running on them) and older curl read the quotes as part of the value.
  - A value is written quoted only when it has no bare form every reader agrees on - it is empty, holds a space or
    tab, a backslash or a non-ASCII character, or starts with C(") or C(#). The module then warns, naming the option
    and the readers that cannot read it (rattler and Python 3.10 and older reject the whole file when the value
    holds a space; Python 3.10 and older also reject any non-ASCII value).
  - A value an earlier version wrote quoted that can now be bare is rewritten bare (the task reports a change);
    a quoted value that must stay quoted is left as written.
  - The devsec C(os_hardening) role deletes users' C(.netrc) files unless they are allow-listed.
seealso:
  - name: Python netrc
    description: The reader used by Python requests and conda.
    link: https://docs.python.org/3/library/netrc.html
  - module: condafleet.proxy.condarc_proxy
  - module: condafleet.proxy.env_proxy
"""

EXAMPLES = r"""
- name: Credentials for the internal conda channel
  condafleet.proxy.netrc_entry:
    machine: conda.corp.example
    login: svc-conda
    password: "{{ vault_conda_password }}"

- name: Configure another account's file, keeping a password the user changed since
  condafleet.proxy.netrc_entry:
    user: alice
    machine: conda.corp.example
    login: alice
    password: "{{ initial_password }}"
    update_password: on_create
  become: true

- name: A fallback for every other host
  condafleet.proxy.netrc_entry:
    default: true
    login: anonymous
    password: guest@example.com

- name: Remove the entry
  condafleet.proxy.netrc_entry:
    machine: conda.corp.example
    state: absent

- name: Channel and mirror credentials of another account in one task (one read and one write of the file)
  condafleet.proxy.netrc_entry:
    user: alice
    entries:
      - machine: conda.corp.example
        login: alice
        password: "{{ vault_conda_password }}"
      - machine: mirror.corp.example
        login: alice
        password: "{{ vault_mirror_password }}"
  become: true
"""

RETURN = r"""
path:
  description: The file edited (the target of a followed symlink is in RV(link_target)).
  returned: always
  type: str
  sample: /home/alice/.netrc
link_target:
  description: The file actually written when O(path) was a symlink that was followed.
  returned: when O(path) is a symlink
  type: str
  sample: /home/alice/dotfiles/netrc
machine:
  description: The machine of the entry, or V(default) for the default entry.
  returned: unless O(entries) is given
  type: str
  sample: conda.corp.example
entries:
  description: What happened to each element of O(entries), in order.
  returned: when O(entries) is given
  type: list
  elements: dict
  contains:
    machine:
      description: The machine of the entry, or V(default) for the default entry.
      type: str
      sample: conda.corp.example
    changed:
      description: Whether this entry changed the file.
      type: bool
      sample: true
    duplicates_removed:
      description: How many repeated entries for this machine were removed.
      type: int
      sample: 0
    password_kept:
      description: Whether the existing password of this entry was kept because of O(update_password=on_create).
      type: bool
      sample: false
  sample:
    - {machine: conda.corp.example, changed: true, duplicates_removed: 0, password_kept: false}
mode_fixed:
  description: Whether the mode of an existing file was corrected (for example from V(0644) to V(0600)).
  returned: always
  type: bool
  sample: false
duplicates_removed:
  description: How many repeated entries for the same machine were removed (for all of O(entries) together).
  returned: always
  type: int
  sample: 0
password_kept:
  description: Whether an existing password was kept because of O(update_password=on_create) (for any of O(entries)).
  returned: always
  type: bool
  sample: false
backup_file:
  description: The backup copy of the previous file.
  returned: when O(backup=true) and the file changed
  type: str
  sample: /home/alice/.netrc.12345.2026-01-01@10:00:00~
attributes_changed:
  description: The file attributes (mode, owner, group) that were corrected on an existing file.
  returned: when attributes of an existing file changed
  type: dict
  sample: {mode: "0600"}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.condafleet.proxy.plugins.module_utils import _netrc
from ansible_collections.condafleet.proxy.plugins.module_utils._methods import plan_netrc, run_module


def main() -> None:
    module = AnsibleModule(argument_spec=_netrc.argument_spec(), add_file_common_args=True, supports_check_mode=True)
    run_module(module, plan_netrc)


if __name__ == "__main__":
    main()
