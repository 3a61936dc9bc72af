# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Fail when a pytest run executed no test at all (everything skipped or nothing collected).

pytest exits 0 when every test was skipped; `make test` must not pass on that. Reads the JUnit XML
that `make pytest` writes. Usage: python check_pytest_ran.py JUNIT_XML
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET


def main() -> int:
    root = ET.parse(sys.argv[1]).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    total = sum(int(s.get("tests", 0)) for s in suites)
    skipped = sum(int(s.get("skipped", 0)) for s in suites)
    ran = total - skipped
    print("pytest: %d test(s) ran, %d skipped" % (ran, skipped))
    if ran == 0:
        print("pytest ran zero tests: failing", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
