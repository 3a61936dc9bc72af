#!/usr/bin/env bash
# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Run `ansible-test sanity` on this checkout.
#
# ansible-test only accepts a collection that physically sits at .../ansible_collections/condafleet/proxy
# (a copy, not a symlink), so the files git would see (tracked + untracked, minus .gitignore) are mirrored
# into $SANITY_ROOT first. The mirror keeps its tests/output between runs; ansible-test caches its per-test
# virtual environments in ~/.ansible/test/venv (warm runs are much faster than the first).
#
# `--venv` makes ansible-test bootstrap pip from a script it downloads from a server that is unreachable
# here; a stand-in at ~/.ansible/test/cache/get_pip_<ver>.py (ensurepip, then pip install) replaces it.
#
# pslint is skipped, and only pslint: it needs PowerShell (`pwsh`), which has no apt, PyPI or npm route on
# these machines (the collection has no .ps1/.psm1 file yet either). Every other test runs; shellcheck
# needs the `shellcheck` package (`make lab-deps`), else ansible-test skips it with a warning.
#
# Usage: scripts/sanity.sh [extra ansible-test sanity arguments, e.g. --test pylint]
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
venv=${VENV:-$repo/.venv}
# One mirror per checkout (keyed by its path), so two clones never test each other's files.
root=${SANITY_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/condafleet-sanity/$(printf %s "$repo" | cksum | cut -d' ' -f1)}
dest=$root/ansible_collections/condafleet/proxy

"$venv/bin/python" "$repo/scripts/get_pip_standin.py"

# Mirror the checkout: remove everything but tests/output, then copy the files git would list.
mkdir -p "$dest"
find "$dest" -mindepth 1 -maxdepth 1 ! -name tests -exec rm -rf {} +
if [ -d "$dest/tests" ]; then
    find "$dest/tests" -mindepth 1 -maxdepth 1 ! -name output -exec rm -rf {} +
fi
cd "$repo"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files -z --cached --others --exclude-standard
else
    find . -path ./.venv -prune -o -path ./collections -prune -o -path ./tests/output -prune \
        -o \( -type f -o -type l \) -printf '%P\0'
fi | while IFS= read -r -d '' file; do
    # Files deleted in the work tree but still in the index are not part of what is tested.
    if [ -e "$file" ] || [ -L "$file" ]; then printf '%s\0' "$file"; fi
done | tar --null --files-from=- -cf - | tar -xf - -C "$dest"

cd "$dest"
exec "$venv/bin/ansible-test" sanity --venv --python 3.11 --skip-test pslint --color no "$@"
