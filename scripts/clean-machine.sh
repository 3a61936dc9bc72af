#!/usr/bin/env bash
# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# `make clean-machine`: remove what the tests, the demo and the sanity run put outside the checkout, and only
# that. `make clean` removes what they put inside it. Every location comes from the environment (the Makefile
# passes its variables, so a test can point them at a sandbox):
#
#   LAB_CACHE        /var/cache/condafleet-lab         debootstrapped Debian roots of the lab, real conda (root)
#   LAB_RUN          /var/tmp/condafleet-lab           the lab's per-run overlay directories
#   TEST_TMP         /var/tmp                          condafleet-* left by tests (throwaway homes, sandboxes)
#   INSTALLER_CACHE  /var/cache/condafleet-installers  conda_installer's default cache, filled by its tests
#   ANSIBLE_DIR      ~/.ansible                        test/cache/get_pip_*.py (the pip bootstrap stand-in),
#                                                      test/venv (ansible-test's sanity venvs),
#                                                      tmp/molecule.* and tmp/cflm* (molecule runs)
#   USER_CACHE       ${XDG_CACHE_HOME:-~/.cache}       condafleet-sanity (sanity's copy of the checkout),
#                                                      condafleet (real conda built without root)
#
# It refuses while a lab is running from LAB_RUN (its network namespace exists): that lab's hosts use the
# cached roots. DRY_RUN=1 lists what would go.
set -euo pipefail

: "${LAB_CACHE:=/var/cache/condafleet-lab}"
: "${LAB_RUN:=/var/tmp/condafleet-lab}"
: "${TEST_TMP:=/var/tmp}"
: "${INSTALLER_CACHE:=/var/cache/condafleet-installers}"
: "${ANSIBLE_DIR:=$HOME/.ansible}"
: "${USER_CACHE:=${XDG_CACHE_HOME:-$HOME/.cache}}"
: "${DRY_RUN:=}"

running=()
if [ -d "$LAB_RUN" ] && command -v ip >/dev/null 2>&1; then
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
        prefix=${ns%-ctl}
        if [ "$prefix" != "$ns" ] && [ -d "$LAB_RUN/$prefix" ]; then
            running+=("$prefix")
        fi
    done
fi
if [ ${#running[@]} -gt 0 ]; then
    echo "clean-machine: a lab is running (${running[*]}; its hosts use $LAB_CACHE): stop it first with" >&2
    echo "  python tests/lab/lab.py down --prefix ${running[0]}" >&2
    exit 1
fi

removed=0
remove() {  # remove PATH WHAT
    local path=$1 what=$2 size
    [ -e "$path" ] || [ -L "$path" ] || return 0
    size=$(du -sh "$path" 2>/dev/null | cut -f1)
    if [ -n "$DRY_RUN" ]; then
        printf 'would remove %-60s %6s  %s\n' "$path" "$size" "$what"
        return 0
    fi
    if rm -rf -- "$path" 2>/dev/null; then
        printf 'removed %-60s %6s  %s\n' "$path" "$size" "$what"
        removed=$((removed + 1))
    else
        printf 'could not remove %s (%s): run as its owner (root for /var)\n' "$path" "$what" >&2
        return 1
    fi
}

status=0
remove "$LAB_CACHE" "lab: debootstrapped Debian roots and real conda (rebuilt by the next make test, a few minutes)" || status=1
remove "$LAB_RUN" "lab: per-run overlay directories" || status=1
for path in "$TEST_TMP"/condafleet-*; do
    remove "$path" "left by a test (throwaway homes, sandboxes, locks)" || status=1
done
remove "$INSTALLER_CACHE" "conda_installer's default cache (installers the tests downloaded)" || status=1
for path in "$ANSIBLE_DIR"/test/cache/get_pip_*.py; do
    remove "$path" "ansible-test's pip bootstrap stand-in (scripts/get_pip_standin.py)" || status=1
done
remove "$ANSIBLE_DIR/test/venv" "ansible-test's sanity venvs (rebuilt by make sanity, about 100 s)" || status=1
for path in "$ANSIBLE_DIR"/tmp/molecule.* "$ANSIBLE_DIR"/tmp/cflm*; do
    remove "$path" "a molecule run's ephemeral directory" || status=1
done
remove "$USER_CACHE/condafleet-sanity" "make sanity's copy of the checkout" || status=1
remove "$USER_CACHE/condafleet" "real conda built without root" || status=1

if [ -z "$DRY_RUN" ]; then
    echo "clean-machine: removed $removed path(s)"
fi
exit $status
