# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Install a stand-in for ansible-test's pip bootstrap script.

ansible-test ``--venv`` bootstraps pip in each new virtual environment by downloading
``get-pip-<ver>.py`` from ci-files.testing.ansible.com, which is unreachable here. It first looks in
``~/.ansible/test/cache/get_pip_<ver>.py``; the stand-in written there runs ``python -m ensurepip``
(pip bundled with CPython) and then ``pip install`` with the arguments ansible-test passes
(``pip==<ver>`` from PyPI). Run with the Python whose ansible-test will use it.
"""

from __future__ import annotations

import os
import re

import ansible_test

STANDIN = '''\
"""Stand-in for get-pip.py written by condafleet.proxy scripts/get_pip_standin.py: ensurepip, then pip install."""
import subprocess
import sys

args = [arg for arg in sys.argv[1:] if arg not in ("--no-setuptools", "--no-wheel")]
subprocess.run([sys.executable, "-m", "ensurepip", "--upgrade", "--default-pip"], check=True, stdout=subprocess.DEVNULL)
if "--no-setuptools" in sys.argv:  # get-pip.py would not install it; ensurepip (3.11) always does
    subprocess.run([sys.executable, "-m", "pip", "uninstall", "--yes", "--quiet", "setuptools"], check=True)
sys.exit(subprocess.run([sys.executable, "-m", "pip", "install", "--quiet"] + args, check=False).returncode)
'''


def pip_version() -> str:
    """The pip version ansible-test bootstraps (``default_packages = dict(pip='24.2')``)."""
    source = os.path.join(os.path.dirname(ansible_test.__file__), "_internal", "python_requirements.py")
    with open(source) as handle:
        match = re.search(r"pip='([0-9.]+)'", handle.read())
    if not match:
        raise SystemExit("cannot find the pip version in %s" % source)
    return match.group(1)


def main() -> None:
    path = os.path.expanduser("~/.ansible/test/cache/get_pip_%s.py" % pip_version().replace(".", "_"))
    try:
        with open(path) as handle:
            if handle.read() == STANDIN:
                return
    except OSError:
        pass
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write(STANDIN)
    print("installed pip bootstrap stand-in: %s" % path)


if __name__ == "__main__":
    main()
