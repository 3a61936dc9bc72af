# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""Where a module's file is: ``~`` is the configured account's home, and ``root`` prefixes everything.

Pure functions shared by the three modules (and importable on the controller).
"""

from __future__ import annotations

import os
import posixpath


class PathError(ValueError):
    """A path option that cannot be resolved; the message names it."""


def expand_home(path: str, home: str, option: str = "path") -> str:
    """``~`` and ``~/x`` in the home of the account the module configures (not ``$HOME`` of the
    connection), ``~name/x`` in ``name``'s home; the result must be absolute."""
    if path == "~" or path.startswith("~/"):
        path = home.rstrip("/") + path[1:]
    elif path.startswith("~"):
        expanded = os.path.expanduser(path)
        if expanded == path:
            raise PathError("%s: %s names no account on this host" % (option, path))
        path = expanded
    if not posixpath.isabs(path):
        raise PathError("%s must be absolute (or start with ~/), got %s" % (option, path))
    return posixpath.normpath(path)


def under_root(root: str | None, path: str) -> str:
    """``path`` inside ``root`` (``/`` or empty leaves it unchanged): for images and sandboxes."""
    if not root or root == "/":
        return path
    if not posixpath.isabs(root):
        raise PathError("root must be an absolute path, got %s" % root)
    return posixpath.join(root.rstrip("/") or "/", path.lstrip("/"))
