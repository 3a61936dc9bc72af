#!/usr/bin/env bash
# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Keep collections/ansible_collections/condafleet/proxy in sync with the checkout.
#
# pytest-ansible creates that tree (one absolute symlink per top-level entry of the checkout, except
# collections/ itself) only when the directory is missing, so an entry added later (roles/, docs/...)
# would stay invisible to `ansible -m condafleet.proxy.*` and to the tests. This builds exactly the same
# tree, adds missing links, drops links whose entry is gone and repoints links after the checkout moved.
set -euo pipefail
shopt -s dotglob nullglob

repo=$(cd "$(dirname "$0")/.." && pwd)
tree=$repo/collections/ansible_collections/condafleet/proxy
mkdir -p "$tree"

for link in "$tree"/*; do
    name=${link##*/}
    if [ ! -e "$repo/$name" ] || [ "$(readlink "$link")" != "$repo/$name" ]; then
        rm -rf -- "$link"
    fi
done
for entry in "$repo"/*; do
    name=${entry##*/}
    [ "$name" = collections ] && continue
    [ -L "$tree/$name" ] || ln -s -- "$entry" "$tree/$name"
done
