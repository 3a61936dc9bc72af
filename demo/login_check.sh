# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
#
# Sourced by a FRESH login shell of the sandbox home (see demo/run_demo.py):
#   env -i HOME=<sandbox> PATH=/usr/bin:/bin bash -l -c '. "$0"' login_check.sh PYTHON URL FETCH_SCRIPT \
#       [CONDA CHANNEL_URL PACKAGE PACKAGE_FILE PREFIX PKGS_DIR]
# Everything it uses comes from what the playbook wrote: the proxy variables from ~/.profile, the
# channel credentials from ~/.netrc, conda's proxy_servers from ~/.condarc. Prints key=value lines
# without secrets. With CONDA (a real conda), step (b) is conda itself; without, a conda-like fetch.
# shellcheck shell=bash
python=$1
url=$2
fetch=$3
conda=${4:-}
channel=${5:-}
package=${6:-}
package_file=${7:-}
prefix=${8:-}
pkgs_dir=${9:-}

echo "shell_http_proxy=${http_proxy:+set}"
echo "shell_https_proxy=${https_proxy:+set}"
echo "shell_HTTP_PROXY=${HTTP_PROXY:+set}"
echo "shell_no_proxy=${no_proxy:-}"

# (a) curl: proxy from the environment (~/.profile), channel credentials from ~/.netrc.
if ! command -v curl >/dev/null 2>&1; then
    curl_code=missing
else
    curl_code=$(curl --silent --show-error --netrc --max-time 20 -o "$HOME/.demo-curl-repodata.json" \
        -w '%{http_code}' "$url" 2>"$HOME/.demo-curl.err") || curl_code="error-$?"
fi
echo "curl_status=$curl_code"

if [ -n "$conda" ]; then
    # (b) real conda, as the user runs it: whatever proxy it picks (~/.profile's for repodata, ~/.condarc's for
    # packages), channel credentials from ~/.netrc. Its package cache stays in the demo's work directory.
    export CONDA_SOLVER=classic CONDA_PKGS_DIRS="$pkgs_dir"
    "$conda" search --override-channels -c "$channel" "$package" >"$HOME/.demo-conda-search.log" 2>&1 </dev/null
    echo "conda_search=$?"
    "$conda" create -y -p "$prefix" --solver classic --override-channels -c "$channel" "$package" \
        >"$HOME/.demo-conda-create.log" 2>&1 </dev/null
    echo "conda_create=$?"
    if [ -f "$prefix/$package_file" ]; then echo "conda_installed=yes"; else echo "conda_installed=no"; fi
else
    # (b) what conda does: proxy_servers from ~/.condarc, credentials from ~/.netrc, no proxy variables.
    echo "python_result=$(env -u http_proxy -u https_proxy -u HTTP_PROXY -u HTTPS_PROXY "$python" "$fetch" "$url" 2>&1 | tail -n 1)"
fi
