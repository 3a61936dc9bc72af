# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Write a Sphinx intersphinx inventory (objects.inv, version 2) from a tab-separated label list.

Usage: python make_inventory.py ansible_devel.txt OUTPUT.inv
Each non-comment line of the list is ``label<TAB>uri<TAB>title``; every entry becomes a ``std:label``.
"""

from __future__ import annotations

import sys
import zlib


def inventory_bytes(lines: list[str]) -> bytes:
    entries = []
    for line in lines:
        if not line.strip() or line.startswith("#"):
            continue
        label, uri, title = line.rstrip("\n").split("\t")
        entries.append("%s std:label -1 %s %s\n" % (label, uri, title))
    header = (
        b"# Sphinx inventory version 2\n# Project: Ansible\n# Version: devel\n"
        b"# The remainder of this file is compressed using zlib.\n"
    )
    return header + zlib.compress("".join(entries).encode("utf-8"))


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as src:
        data = inventory_bytes(src.readlines())
    with open(sys.argv[2], "wb") as out:
        out.write(data)


if __name__ == "__main__":
    main()
