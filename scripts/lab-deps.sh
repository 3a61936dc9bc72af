#!/usr/bin/env bash
# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Install the Debian packages the tests use as real consumers and servers (`make lab-deps`).
# As root: `apt-get update` + install, only when something is missing. Not root (or not Debian):
# print what is missing and succeed -- the tests that need a missing program skip, naming it.
#
# Usage: scripts/lab-deps.sh PACKAGE...
set -euo pipefail

if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "lab-deps: no dpkg here; install these yourself for the full test run: $*"
    exit 0
fi

missing=()
for pkg in "$@"; do
    if ! dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -q '^install ok installed$'; then
        missing+=("$pkg")
    fi
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "lab-deps: all installed ($*)"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "lab-deps: missing ${missing[*]} -- not root, continuing; tests that need them will skip."
    echo "lab-deps: to install: sudo make lab-deps"
    exit 0
fi

echo "lab-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
