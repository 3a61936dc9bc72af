#!/usr/bin/env bash
# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Build the HTML documentation site of condafleet.proxy with antsibull-docs, the way Ansible's own
# collection docsites are built:
#
#   1. `antsibull-docs lint-collection-docs --plugin-docs --check-extra-docs-refs`: the modules' and the
#      role's documentation parses and validates, and every reference in the hand-written pages
#      (docs/docsite/rst/*.rst, listed in docs/docsite/extra-docs.yml) points to something that exists.
#   2. `antsibull-docs sphinx-init --use-current` writes a fresh Sphinx project into docs/build/site.
#   3. Its generated build.sh renders the RST (plugin pages, role page, extra docs) and runs
#      `sphinx-build -W --keep-going` with `nitpicky = True`: any warning, including a broken reference,
#      fails the build.
#
# Output: docs/build/site/build/html/index.html. Everything under docs/build is generated (git-ignored).
# Usage: scripts/build-docs.sh [--lint-only]
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
venv=${VENV:-$repo/.venv}
export PATH="$venv/bin:$PATH"

# The collection must be findable as condafleet.proxy. pytest-ansible's tree (collections/, symlinks to every
# top-level entry, .git and .venv included) works but makes antsibull-docs copy far more than the collection
# (about 45 s instead of 5 s), so the docs are built from a snapshot of exactly what the collection ships.
# The snapshot lives outside the checkout: inside a Git work tree antsibull-docs copies only tracked files.
build=$repo/docs/build
scratch=$(mktemp -d "${TMPDIR:-/tmp}/condafleet-docs.XXXXXX")
trap 'rm -rf -- "$scratch"' EXIT
snapshot=$scratch/ansible_collections/condafleet/proxy
mkdir -p -- "$snapshot/docs"
for entry in galaxy.yml README.md COPYING LICENSES meta plugins roles changelogs; do
    [ -e "$repo/$entry" ] && cp -R -L -- "$repo/$entry" "$snapshot/$entry"
done
cp -R -L -- "$repo/docs/docsite" "$snapshot/docs/docsite"
find "$snapshot" -name __pycache__ -type d -prune -exec rm -rf {} +
export ANSIBLE_COLLECTIONS_PATH=$scratch

echo "== antsibull-docs lint-collection-docs (plugin docs, role docs, extra docs and their references)"
antsibull-docs lint-collection-docs \
    --plugin-docs \
    --check-extra-docs-refs \
    --validate-collection-refs self \
    "$snapshot"

if [ "${1:-}" = --lint-only ]; then
    exit 0
fi

site=$build/site
rm -rf -- "$site"
mkdir -p -- "$site"
chmod 0755 "$site" # antsibull-docs refuses a destination others can write to

echo "== antsibull-docs sphinx-init"
antsibull-docs sphinx-init \
    --use-current \
    --squash-hierarchy \
    --fail-on-error \
    --dest-dir "$site" \
    --project condafleet.proxy \
    --copyright "condafleet.proxy contributors" \
    --title "condafleet.proxy" \
    condafleet.proxy

# The generated conf.py maps intersphinx to docs.ansible.com and docs.python.org. Those inventories cannot be
# fetched offline (a failed fetch is a warning, which -W turns into an error). The generated module pages refer
# to a few labels of the Ansible docsite (common return values, action plugins, ansible.windows modules): a
# local inventory built from docs/intersphinx/ansible_devel.txt resolves exactly those, still linking to
# docs.ansible.com. Any other unresolved reference fails the build.
python3 "$repo/docs/intersphinx/make_inventory.py" "$repo/docs/intersphinx/ansible_devel.txt" "$site/ansible_devel.inv"
cat >>"$site/conf.py" <<'EOF'

# Added by scripts/build-docs.sh: build offline, with a local inventory for the Ansible docsite's labels.
intersphinx_mapping = {
    'ansible_devel': ('https://docs.ansible.com/projects/ansible/devel/', '../ansible_devel.inv'),
}
EOF

echo "== generated build.sh (antsibull-docs collection + sphinx-build -W --keep-going, nitpicky)"
"$site/build.sh"

echo "== site: $site/build/html/index.html"
