# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this doc fragment is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

from __future__ import annotations


class ModuleDocFragment:
    # Options every module of the collection shares: whose files, symlinks, backups.
    DOCUMENTATION = r"""
options:
  user:
    description:
      - The account whose files are configured. Paths such as V(~/.condarc) are taken from its home directory,
        and new files and directories are owned by it.
      - 'Needs root (C(become: true)) unless it is the account the module runs as.'
      - When omitted, the account the module runs as.
      - Running as root, every file in a directory that an account controls (its home, or any path on the way that
        it owns) is read and written with that account's uid, gid and groups, whatever O(user) says, so a symlink,
        hard link or temp file the account planted can reach nothing the account could not reach itself. Files in
        root's own tree are edited as root only when every directory on the way is root's and not writable by
        others, and when the file is a regular file with one link.
      - Every module refuses a non-regular file (a FIFO) and a file over 8 MiB, and takes an advisory lock on the
        directory of the file it edits, so concurrent runs on one host take turns.
    type: str
  follow:
    description:
      - Follow a symlink at the target path even when it points to a file the account does not own.
      - Without this, a symlink into the account's own file (a dotfiles repository) is followed and edited in
        place, and any other symlink, or a dangling one, fails the task without touching anything.
      - A followed link in an account's directory is still followed with that account's identity.
    type: bool
    default: false
  backup:
    description:
      - Create a backup file including the timestamp information so you can get the original file back if you
        somehow clobbered it incorrectly.
      - In an account's directory the backup is written with the account's identity, like the file.
    type: bool
    default: false
"""
