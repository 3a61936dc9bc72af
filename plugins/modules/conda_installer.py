#!/usr/bin/python
# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: conda_installer
short_description: Install Miniconda, Anaconda or Miniforge from a verified installer, through the host's proxy
version_added: 0.2.0
description:
  - Downloads a conda installer (Miniconda, Anaconda, Miniforge, or any installer with their command-line interface,
    C(bash INSTALLER -b -p PREFIX)) through the proxy the host is configured with, checks its SHA256, and runs it to
    install conda into O(prefix), system-wide or for one account (O(user)).
  - An installer whose SHA256 does not match O(sha256) (or the digest the O(checksum_url) file lists for it) is never
    run. The task fails with a message that names both digests, and the file is deleted, so nothing is left in the
    prefix or in the cache.
  - The download goes to a partial file in the cache directory and is resumed with an HTTP C(Range) request when it
    was cut short (in this run or an earlier one); only a complete file whose digest matches is kept, as
    C(<cache_dir>/<sha256>.sh), and run. A rerun finds that file, checks its digest again, and downloads nothing
    (RV(downloaded=false)).
  - Idempotent. A prefix that already holds conda at O(version) (any version when O(version) is not given) is left
    alone and its version reported. A prefix with another version is reported (RV(action=report), a warning, no
    change) and replaced only with O(replace=true).
  - A failed install leaves no half-made prefix. conda installers write the prefix path into the files they install,
    so an installer must run at the final path; when it fails, or conda does not run afterwards, the prefix is removed
    completely. A prefix being replaced is first moved aside beside itself and moved back if the new install fails.
  - Windows hosts are served by the action plugin of the same name from the controller (see the notes).
author:
  - condafleet maintainers (@condafleet)
extends_documentation_fragment:
  - condafleet.proxy._attributes
options:
  url:
    description:
      - The installer to download, an C(http://) or C(https://) URL ending with the installer's file name
        (that name is looked up in the O(checksum_url) file).
      - Required with O(state=present).
    type: str
  sha256:
    description:
      - The SHA256 digest the installer must have (64 hexadecimal digits, a C(sha256:) prefix allowed), as the
        vendors publish it beside each installer.
      - Required with O(state=present) unless O(checksum_url) is given. When both are given they must agree.
    type: str
  checksum_url:
    description:
      - A file listing C(<digest>  <name>) lines (C(sha256sum) output, the C(SHA256SUMS) files vendors publish; BSD
        C(SHA256 (name) = digest) lines are read too). The digest listed for the file name of O(url) is the one the
        installer must have.
      - Fetched through the same proxy and CA as the installer, also in check mode (it is small and nothing is written).
    type: str
  prefix:
    description:
      - Where conda is installed, an absolute path (for example V(/opt/miniconda3), or V(~/miniconda3) with O(user)).
      - With O(state=present) it must not exist, hold a conda installation, or O(replace=true) must be set.
    type: str
    required: true
  version:
    description:
      - The conda version the installer must give, compared with the version the prefix's C(conda-meta/conda-*.json)
        records (or C(PREFIX/bin/conda --version)).
      - An existing prefix at this version is left alone; one at another version is reported, and replaced only with
        O(replace=true). When the installer installs another version the new prefix is removed and the task fails.
      - When omitted, any existing conda installation in O(prefix) is left alone.
    type: str
  replace:
    description:
      - Replace an existing installation of another version (or a prefix that holds no conda).
      - The old prefix is moved aside to C(PREFIX.condafleet-old-XXXXXX), the installer runs at O(prefix), and the
        old prefix is removed when the new one works or moved back when it does not.
      - Everything inside the old prefix goes with it, environments under C(PREFIX/envs) included.
    type: bool
    default: false
  cache_dir:
    description:
      - Where installers are kept, named by digest. Default V(/var/cache/condafleet-installers), and
        V(~/.cache/condafleet-installers) of the account with O(user).
      - Running as root without O(user), a cache directory that another account controls is refused (that account
        could swap the file root runs).
    type: str
  proxy:
    description:
      - The proxy to download through, for example V(http://user:password@proxy.corp.example:3128) (Basic proxy
        authentication from the URL). V('') connects directly.
      - When omitted, the proxy conda would use for the same URL on this host, from the C(proxy_servers) of the
        system and account C(.condarc) files (C(#!final) respected, C(${VAR}) expanded), else from the
        C(https_proxy)/C(http_proxy) variables of the module's environment (C(no_proxy) respected).
    type: str
  ca_bundle:
    description:
      - A CA bundle file to verify the download server (or a TLS-intercepting proxy) with, such as the corporate CA.
      - When omitted, C(REQUESTS_CA_BUNDLE)/C(CURL_CA_BUNDLE), then the C(ssl_verify) of the C(.condarc) files, then
        the system's trusted CAs.
    type: str
  validate_certs:
    description:
      - Set V(false) to download over HTTPS without verifying the certificate. The SHA256 check still applies.
    type: bool
    default: true
  timeout:
    description: Seconds the installer may run before it is stopped (and its prefix removed).
    type: int
    default: 600
  download_timeout:
    description: Seconds without data after which a download attempt is given up (and resumed, up to three times).
    type: int
    default: 60
  state:
    description:
      - V(present) installs conda into O(prefix).
      - V(absent) removes O(prefix) completely, but only a prefix this module installed (it holds the file
        C(.condafleet-installer.json) the module writes). Any other existing prefix fails the task untouched.
        Everything in the prefix goes, environments under C(PREFIX/envs) included.
    type: str
    choices: [present, absent]
    default: present
  user:
    description:
      - Install for this account; the installer runs as it, the prefix is owned by it. Needs root
        (C(become=true)) unless it is the account the module runs as.
      - A leading V(~) in O(prefix) and O(cache_dir) is that account's home; its C(.condarc) files are read for
        the proxy.
    type: str
  all_users:
    description:
      - Windows only, the installer's C(/InstallationType). Default V(true) (C(AllUsers)) without O(user).
      - Ignored on POSIX hosts.
    type: bool
attributes:
  check_mode:
    support: full
    details:
      - Check mode downloads no installer and changes nothing. It reports what would be done, and RV(cached) says
        whether the installer is in the cache already (its digest is checked). The O(checksum_url) file is fetched.
  diff_mode:
    support: none
  idempotent:
    support: full
  platform:
    support: full
    platforms: posix, windows
    details:
      - Linux and macOS run the module with the C(.sh) installers.
      - Windows hosts run the action plugin, which downloads the C(.exe) with C(ansible.windows.win_get_url)
        (with the checksum) and runs it with C(ansible.windows.win_command).
notes:
  - The installer runs with C(-b -p PREFIX) and with the module's environment (C(HOME), C(USER) and C(LOGNAME) of the
    account). It must not need the network; Miniconda, Anaconda and Miniforge installers do not.
  - On Windows the C(.exe) runs as C(/S /InstallationType=AllUsers|JustMe /RegisterPython=0 /AddToPath=0
    /D=PREFIX). O(user) must be the connecting account there (C(JustMe)); O(cache_dir) defaults to
    V(C:\\ProgramData\\condafleet-installers). O(state=absent) removes only a prefix with the marker file.
  - Credentials in O(url) are not sent; use a proxy or a server that needs none.
seealso:
  - module: condafleet.proxy.condarc_proxy
  - module: condafleet.proxy.conda_proxy
  - name: Miniconda installer hashes
    description: The SHA256 of every Miniconda installer.
    link: https://repo.anaconda.com/miniconda/
"""

EXAMPLES = r"""
- name: Miniconda for everybody, verified, through the host's configured proxy
  condafleet.proxy.conda_installer:
    url: https://repo.anaconda.com/miniconda/Miniconda3-py312_24.11.1-0-Linux-x86_64.sh
    sha256: 636b209b00b6673471f846581829d4b96b9c3378679925a59a584257c3fef5a3
    prefix: /opt/miniconda3
    version: 24.11.1
  become: true

- name: Miniforge for one account, digest from the vendor's checksum file, explicit proxy and corporate CA
  condafleet.proxy.conda_installer:
    url: https://github.com/conda-forge/miniforge/releases/download/24.11.3-0/Miniforge3-24.11.3-0-Linux-x86_64.sh
    checksum_url: https://github.com/conda-forge/miniforge/releases/download/24.11.3-0/Miniforge3-24.11.3-0-Linux-x86_64.sh.sha256
    prefix: ~/miniforge3
    user: alice
    proxy: "http://fleet:{{ vault_proxy_password }}@proxy.corp.example:3128"
    ca_bundle: /usr/local/share/ca-certificates/corp-ca.crt
  become: true

- name: Move the fleet to a new Miniconda, replacing older installs
  condafleet.proxy.conda_installer:
    url: "{{ miniconda_url }}"
    sha256: "{{ miniconda_sha256 }}"
    prefix: /opt/miniconda3
    version: "{{ miniconda_conda_version }}"
    replace: true
  become: true

- name: Remove what the module installed
  condafleet.proxy.conda_installer:
    prefix: /opt/miniconda3
    state: absent
  become: true
"""

RETURN = r"""
prefix:
  description: The prefix.
  returned: always
  type: str
  sample: /opt/miniconda3
action:
  description:
    - What was done (or would be, in check mode). V(install) a new prefix, V(replace) another version, V(keep) the
      right version, V(report) another version left alone, V(remove) (state=absent), V(absent) (nothing to remove).
  returned: always
  type: str
  sample: install
version:
  description: The conda version in the prefix after the task (null when there is none).
  returned: always
  type: str
  sample: 24.11.1
previous_version:
  description: The conda version the prefix held before the task (null when it held none or did not exist).
  returned: always
  type: str
  sample: 24.9.2
wanted_version:
  description: O(version).
  returned: always
  type: str
  sample: 24.11.1
sha256:
  description: The digest the installer must have (from O(sha256) or O(checksum_url)).
  returned: when O(state=present) and O(sha256) is given or the installer is needed
  type: str
  sample: 636b209b00b6673471f846581829d4b96b9c3378679925a59a584257c3fef5a3
cache_file:
  description: The verified installer in the cache.
  returned: when the prefix is installed or replaced
  type: str
  sample: /var/cache/condafleet-installers/636b209b00b6673471f846581829d4b96b9c3378679925a59a584257c3fef5a3.sh
cached:
  description: Whether a verified installer was in the cache before the task.
  returned: when the prefix is installed or replaced
  type: bool
  sample: true
downloaded:
  description: Whether the installer was downloaded by this task (V(false) on a rerun that finds it installed or cached).
  returned: when O(state=present)
  type: bool
  sample: false
would_download:
  description: In check mode, whether the installer would be downloaded (it is not in the cache).
  returned: in check mode, when the prefix would be installed or replaced
  type: bool
  sample: true
downloaded_bytes:
  description: The size of the downloaded installer.
  returned: when the installer was downloaded
  type: int
  sample: 146836238
conda_version_output:
  description: What C(PREFIX/bin/conda --version) printed after the install (run as the account with O(user)).
  returned: when the installer ran
  type: str
  sample: conda 24.11.1
resumed:
  description: Whether the download continued a partial file with an HTTP Range request.
  returned: when the installer was downloaded
  type: bool
  sample: false
proxy:
  description: The proxy the downloads went through (password masked), null for a direct connection.
  returned: when O(state=present)
  type: str
  sample: http://fleet:********@proxy.corp.example:3128
proxy_source:
  description: Where the proxy came from, V(option), V(condarc), V(env) or V(none).
  returned: when O(state=present)
  type: str
  sample: condarc
installer_output:
  description: The last lines the installer printed.
  returned: when the installer ran
  type: list
  elements: str
  sample: ["installation finished."]
"""

import errno
import fcntl
import os
import pwd
import shutil
import json
import signal
import socket
import ssl
import sys
import tempfile
import threading
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native
from ansible_collections.condafleet.proxy.plugins.module_utils import _installer
from ansible_collections.condafleet.proxy.plugins.module_utils._condarc import read_proxy_settings
from ansible_collections.condafleet.proxy.plugins.module_utils._fileio import (
    Account,
    FileRefused,
    acting_as,
    controlling_account,
    resolve_account,
)
from ansible_collections.condafleet.proxy.plugins.module_utils._proxyurl import secrets_in
from ansible_collections.condafleet.proxy.plugins.module_utils._probe import (
    expand_variables,
    mask_proxy_url,
    read_regular_file,
)

try:
    from http.client import HTTPException
    from urllib.error import HTTPError, URLError
    from urllib.request import HTTPSHandler, ProxyHandler, Request, build_opener
except ImportError:  # pragma: no cover
    pass

DOWNLOAD_ATTEMPTS = 4
CHUNK = 1 << 20
OUTPUT_LINES = 20
# Variables of the module's environment that would make the installer's own Python or conda act on another prefix.
_DROPPED_VARIABLES = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "CONDA_PREFIX", "CONDA_DEFAULT_ENV", "CONDA_EXE",
                      "CONDA_SHLVL", "CONDA_PYTHON_EXE", "_CE_CONDA", "_CE_M", "CONDARC")


class Failure(Exception):
    """The task fails with this message; whatever this run made is cleaned up before it is raised."""


# --------------------------------------------------------------------------------------------------------------
# Downloads


class Downloader:
    """HTTP(S) through one proxy (Basic proxy auth from its URL) with one TLS setting."""

    def __init__(self, proxy: str | None, verify: bool, cafile: str | None, timeout: int) -> None:
        self.timeout = timeout
        context = ssl.create_default_context()
        if not verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif cafile:
            try:
                if os.path.isdir(cafile):
                    context = ssl.create_default_context(capath=cafile)
                else:
                    context = ssl.create_default_context(cadata=read_regular_file(cafile).decode("ascii", "replace"))
            except (OSError, ssl.SSLError, ValueError) as exc:
                raise Failure("cannot use the CA bundle %s: %s" % (cafile, to_native(exc)))
        # An empty ProxyHandler: the environment's proxies are not added behind the module's back.
        proxies = {"http": proxy, "https": proxy} if proxy else {}
        self.opener = build_opener(ProxyHandler(proxies), HTTPSHandler(context=context))

    def open(self, url: str, headers: dict | None = None):
        return self.opener.open(Request(url, headers=dict(headers or {}, **{"User-Agent": "condafleet.proxy"})),
                                timeout=self.timeout)

    def fetch_small(self, url: str, limit: int) -> bytes:
        try:
            with self.open(url) as response:
                data = response.read(limit + 1)
        except (HTTPError, URLError, HTTPException, OSError) as exc:
            raise Failure("cannot fetch %s: %s" % (url, describe(exc)))
        if len(data) > limit:
            raise Failure("%s is over %d bytes: not a checksum file" % (url, limit))
        return data

    def download(self, url: str, part: str) -> dict:
        """Fetch ``url`` into ``part``, resuming what is there with a Range request; returns ``{resumed, bytes}``.

        Bounded: :data:`DOWNLOAD_ATTEMPTS` attempts. A response that ends before its Content-Length is an attempt
        cut short; the next one resumes from the bytes written."""
        resumed = False
        last_error = None
        for _attempt in range(DOWNLOAD_ATTEMPTS):
            offset = os.path.getsize(part) if os.path.exists(part) else 0
            headers = {"Range": "bytes=%d-" % offset} if offset else {}
            try:
                response = self.open(url, headers)
            except HTTPError as exc:
                if exc.code == 416 and offset:  # the partial file is as long as the server's: start again
                    os.unlink(part)
                    last_error = exc
                    continue
                raise Failure("cannot download %s: %s" % (url, describe(exc)))
            except (URLError, HTTPException, OSError) as exc:
                if isinstance(getattr(exc, "reason", None), ssl.SSLError):  # no retry changes a certificate
                    raise Failure("cannot download %s: %s (set ca_bundle to the CA that signs the server or the "
                                  "TLS-intercepting proxy)" % (url, describe(exc)))
                last_error = exc
                continue
            with response:
                content_range = response.headers.get("Content-Range") or ""
                if offset and response.status == 206 and content_range.startswith("bytes %d-" % offset):
                    mode, resumed = "ab", True
                else:
                    mode, offset = "wb", 0
                length = response.headers.get("Content-Length")
                expected = int(length) if length and length.isdigit() else None
                written = 0
                try:
                    with open(part, mode) as handle:
                        while True:
                            block = response.read(CHUNK)
                            if not block:
                                break
                            handle.write(block)
                            written += len(block)
                        handle.flush()
                        os.fsync(handle.fileno())
                except (HTTPException, OSError) as exc:  # cut short: resume on the next attempt
                    last_error = exc
                    continue
            if expected is not None and written < expected:
                last_error = "the server sent %d of %d bytes" % (written, expected)
                continue
            return {"resumed": resumed, "bytes": offset + written}
        raise Failure("cannot download %s: %d attempts failed, the last with %s (the partial file is kept and resumed "
                      "by the next run; it is never run before its digest is checked)"
                      % (url, DOWNLOAD_ATTEMPTS, describe(last_error)))


def describe(exc) -> str:
    if isinstance(exc, HTTPError):
        if exc.code == 407:
            return "HTTP 407 Proxy Authentication Required (wrong or missing proxy credentials)"
        return "HTTP %d %s" % (exc.code, exc.reason)
    if isinstance(exc, URLError):
        return to_native(exc.reason)
    if isinstance(exc, socket.timeout):
        return "timed out"
    return to_native(exc)


# --------------------------------------------------------------------------------------------------------------
# The host's proxy and TLS settings


def condarc_settings(account: Account | None, warnings: list) -> tuple:
    """``(proxy_servers, ssl_verify)`` merged over the system and account ``.condarc`` files, read as the account."""
    settings = []
    home = account.home if account is not None else pwd.getpwuid(os.geteuid()).pw_dir
    with acting_as(account if account is not None and account.is_other else None):
        for entry in _installer.condarc_paths(home):
            paths = [entry]
            if entry.endswith("/"):
                try:
                    paths = [os.path.join(entry, name) for name in sorted(os.listdir(entry))
                             if os.path.splitext(name)[1] in (".yml", ".yaml")]
                except OSError:
                    paths = []
            for path in paths:
                try:
                    data = read_regular_file(path)
                except OSError:
                    continue
                try:
                    settings.append(read_proxy_settings(data))
                except ValueError as exc:
                    warnings.append("%s cannot be parsed (conda skips it too): %s" % (path, to_native(exc)))
    return _installer.merge_settings(settings)


def expanded(value: str | None, env: dict, warnings: list) -> str | None:
    if not value:
        return value
    result, unset = expand_variables(value, env)
    if unset:
        warnings.append("the proxy setting names %s, which the module's environment does not set" % ", ".join(unset))
    return result


# --------------------------------------------------------------------------------------------------------------
# The prefix


def as_owner(path: str) -> Account | None:
    """The identity to act with on ``path``: the account owning it or a directory above it (root: ``None``)."""
    account = controlling_account(path)
    if account is None and os.geteuid() == 0:
        try:
            uid = os.lstat(path).st_uid
        except OSError:
            return None
        if uid != 0:
            try:
                entry = pwd.getpwuid(uid)
                return Account(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)
            except KeyError:
                return Account(str(uid), uid, os.lstat(path).st_gid, "/")
    return account


# Started by run_command with the request on stdin: a session of its own (so a timeout stops the installer's
# children too), the account's identity, a clean environment, then the program. Nothing secret is on a command line.
_LAUNCHER = """
import json, os, sys
spec = json.loads(sys.stdin.read())
null = os.open(os.devnull, os.O_RDONLY)
os.dup2(null, 0)
os.setsid()
if spec["uid"] is not None:
    os.setgroups(spec["groups"])
    os.setgid(spec["gid"])
    os.setuid(spec["uid"])
os.chdir(spec["cwd"])
os.execve(spec["argv"][0], spec["argv"], spec["env"])
"""


def run_as(module: AnsibleModule, account: Account | None, argv: list, env: dict, timeout: int,
           cwd: str = "/") -> tuple:
    """``(rc, output)`` of ``argv`` run as ``account`` (``None``: as the module runs); its whole session is killed
    after ``timeout`` seconds."""
    drop = account is not None and os.geteuid() == 0 and account.uid != 0
    spec = {"argv": argv, "env": env, "cwd": cwd, "uid": account.uid if drop else None,
            "gid": account.gid if drop else None, "groups": account.groups[:16] if drop else []}
    timers = []

    def arm(proc) -> None:
        def stop() -> None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass

        timer = threading.Timer(timeout, stop)
        timer.daemon = True
        timer.start()
        timers.append((timer, time.monotonic()))

    started = time.monotonic()
    rc, out, err = module.run_command([sys.executable, "-c", _LAUNCHER], data=json.dumps(spec), binary_data=True,
                                      expand_user_and_vars=False, before_communicate_callback=arm,
                                      errors="surrogate_or_replace", handle_exceptions=False)
    for timer, _at in timers:
        timer.cancel()
    output = to_native(out, errors="replace") + to_native(err, errors="replace")
    if rc == -signal.SIGKILL and time.monotonic() - started >= timeout:
        return -9, output + "\n(stopped after %d seconds)" % timeout
    return rc, output


def account_env(account: Account | None) -> dict:
    env = dict((k, v) for k, v in os.environ.items() if k not in _DROPPED_VARIABLES and not k.startswith("ANSIBLE_"))
    if account is not None:
        env.update(HOME=account.home, USER=account.name, LOGNAME=account.name)
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
    return env


def installed_version(module: AnsibleModule, prefix: str, runner: Account | None, env: dict) -> tuple:
    """``(version, conda_runs)``: conda-meta's record first (no program run); else ``bin/conda --version``."""
    version = _installer.read_installed_version(prefix)
    conda = os.path.join(prefix, "bin", "conda")
    if version is not None or not os.path.isfile(conda):
        return version, None
    rc, output = run_as(module, runner, [conda, "--version"], env, 60)
    return (_installer.parse_conda_version(output) if rc == 0 else None), rc == 0


def remove_tree(path: str, identity: Account | None) -> None:
    """Remove ``path`` completely, with the identity of the account that controls it (no link is followed)."""
    with acting_as(identity):
        if os.path.islink(path) or os.path.isfile(path):
            os.unlink(path)
        elif os.path.isdir(path):
            shutil.rmtree(path)


def tail(output: str) -> list:
    return [line for line in output.splitlines() if line.strip()][-OUTPUT_LINES:]


# --------------------------------------------------------------------------------------------------------------
# The run


class Run:
    def __init__(self, module: AnsibleModule) -> None:
        self.module = module
        self.params = module.params
        self.warnings: list = []
        self.result: dict = {"changed": False}
        self.account = resolve_account(self.params["user"]) if self.params["user"] else None
        self.identity = self.account if self.account is not None and self.account.is_other else None
        home = self.account.home if self.account is not None else pwd.getpwuid(os.geteuid()).pw_dir
        self.prefix = self._path(self.params["prefix"], home, "prefix")
        default_cache = _installer.USER_CACHE if self.account is not None else _installer.SYSTEM_CACHE
        self.cache_dir = self._path(self.params["cache_dir"] or default_cache, home, "cache_dir")
        self.env = account_env(self.account)

    @staticmethod
    def _path(value: str, home: str, option: str) -> str:
        if value == "~" or value.startswith("~/"):
            value = home + value[1:]
        if not os.path.isabs(value):
            raise _installer.InstallerError("%s must be an absolute path (or start with ~/), got %s" % (option, value))
        path = os.path.normpath(value)
        if path == "/" or path.count("/") < 2 and option == "prefix":
            raise _installer.InstallerError("refusing %s %s: a prefix must be a directory of its own" % (option, path))
        return path

    # --- present -------------------------------------------------------------------------------------------
    def prepare_download(self) -> None:
        params = self.params
        url = _installer.validate_url(params["url"])
        self.name = _installer.installer_name(url)
        if params["sha256"] is None and params["checksum_url"] is None:
            raise _installer.InstallerError("state=present needs sha256 or checksum_url: an installer is never run "
                                            "unverified")
        given = _installer.normalize_sha256(params["sha256"]) if params["sha256"] else None
        if params["checksum_url"]:
            _installer.validate_url(params["checksum_url"], "checksum_url")
        explicit = params["proxy"]
        servers, ssl_verify = condarc_settings(self.account, self.warnings)
        proxy, source = _installer.choose_proxy(url, explicit, servers, dict(os.environ))
        proxy = expanded(proxy, dict(os.environ), self.warnings)
        verify, cafile, _tls_source = _installer.tls_setting(params["ca_bundle"], params["validate_certs"],
                                                             ssl_verify, dict(os.environ))
        self.proxy = proxy
        if proxy:  # a password from the .condarc or the environment is masked in every message too
            self.module.no_log_values.update(secrets_in(proxy))
        self.result.update(proxy=mask_proxy_url(proxy) if proxy else None, proxy_source=source)
        self.downloader = Downloader(proxy, verify, cafile, params["download_timeout"])
        self.given = given

    def resolve_digest(self) -> None:
        """The digest the installer must have: O(sha256), or the one the checksum file lists (fetched only when an
        install is needed, so a rerun on an installed host makes no request at all)."""
        params = self.params
        given = self.given
        if params["checksum_url"]:
            text = self.downloader.fetch_small(params["checksum_url"], _installer.MAX_CHECKSUM_FILE_BYTES)
            listed = _installer.digest_from_checksum_file(text.decode("utf-8", "replace"), self.name)
            if given is not None and given != listed:
                raise _installer.InstallerError("sha256 %s and the digest %s lists for %s (%s) disagree; nothing was "
                                                "downloaded" % (given, params["checksum_url"], self.name, listed))
            given = listed
        self.sha256 = given
        self.cache_file = os.path.join(self.cache_dir, _installer.cache_file_name(self.sha256))
        self.result.update(sha256=self.sha256, cache_file=self.cache_file, downloaded=False)

    def check_cache_dir(self) -> None:
        """Root running a file from a directory another account controls could be made to run that account's file."""
        if self.identity is None and os.geteuid() == 0:
            owner = controlling_account(os.path.join(self.cache_dir, "x"))
            if owner is None and os.path.isdir(self.cache_dir):
                info = os.lstat(self.cache_dir)
                if info.st_uid != 0 or info.st_mode & 0o022:
                    owner = Account(str(info.st_uid), info.st_uid, info.st_gid, "/")
            if owner is not None:
                raise Failure("refusing cache_dir %s: it is controlled by %s, who could swap the installer root runs"
                              % (self.cache_dir, owner.name))

    def cached(self) -> bool:
        """Whether the cache holds the verified installer; a file there with another digest is deleted."""
        with acting_as(self.identity):
            if not os.path.isfile(self.cache_file) or os.path.islink(self.cache_file):
                return False
            actual = _installer.sha256_of_file(self.cache_file)
            if actual == self.sha256:
                return True
            if not self.module.check_mode:
                os.unlink(self.cache_file)
            self.warnings.append("the cached %s had SHA256 %s; it %s" % (
                self.cache_file, actual,
                "would be deleted and downloaded again" if self.module.check_mode else "was deleted and downloaded again"))
            return False

    def fetch_installer(self) -> None:
        """Download into the partial file, check its digest, and only then give it its cache name."""
        with acting_as(self.identity):
            if not os.path.isdir(self.cache_dir):
                os.makedirs(self.cache_dir, 0o700 if self.account is not None else 0o755)
            part = os.path.join(self.cache_dir, _installer.partial_file_name(self.sha256))
            if os.path.islink(part):
                os.unlink(part)
            old_umask = os.umask(0o077)
            try:
                got = self.downloader.download(self.params["url"], part)
            finally:
                os.umask(old_umask)
            actual = _installer.sha256_of_file(part)
            if actual != self.sha256:
                os.unlink(part)
                raise Failure(_installer.mismatch_message(self.name, self.sha256, actual))
            os.chmod(part, 0o644 if self.account is None else 0o600)
            os.rename(part, self.cache_file)
        self.result.update(downloaded=True, resumed=got["resumed"], downloaded_bytes=got["bytes"])

    def verified_installer(self) -> str:
        """The cache file, its digest checked right before it runs (``never run a file whose SHA256 does not match``)."""
        with acting_as(self.identity):
            actual = _installer.sha256_of_file(self.cache_file)
            if actual != self.sha256:
                os.unlink(self.cache_file)
                raise Failure(_installer.mismatch_message(self.name, self.sha256, actual))
        return self.cache_file

    def install(self, replacing: bool) -> None:
        aside = None
        parent_identity = self.identity if self.identity is not None else as_owner(os.path.dirname(self.prefix))
        if not replacing and os.path.lexists(self.prefix):  # appeared since it was looked at: not this run's
            raise Failure("%s appeared while the installer was being prepared; nothing was installed" % self.prefix)
        if replacing:
            with acting_as(parent_identity):
                aside = tempfile.mkdtemp(prefix=os.path.basename(self.prefix) + ".condafleet-old-",
                                         dir=os.path.dirname(self.prefix))
                os.rmdir(aside)
                os.rename(self.prefix, aside)
        try:
            installer = self.verified_installer()
            argv = ["/bin/bash", installer, "-b", "-p", self.prefix]
            rc, output = run_as(self.module, self.identity, argv, self.env, self.params["timeout"],
                                cwd=self.account.home if self.account is not None and os.path.isdir(
                                    self.account.home) else "/")
            self.result["installer_output"] = tail(output)
            if rc != 0:
                raise Failure("the installer %s failed (rc=%d); the prefix was removed: %s"
                              % (self.name, rc, " | ".join(tail(output)[-5:])))
            conda = os.path.join(self.prefix, "bin", "conda")
            rc, output = run_as(self.module, self.identity, [conda, "--version"], self.env, 120)
            if rc != 0:
                raise Failure("the installer %s finished but %s --version fails (rc=%d): %s; the prefix was removed"
                              % (self.name, conda, rc, output.strip()[-500:]))
            version = _installer.read_installed_version(self.prefix) or _installer.parse_conda_version(output)
            wanted = self.params["version"]
            if wanted is not None and not _installer.same_version(version, wanted):
                raise Failure("the installer %s installed conda %s, not the wanted %s; the prefix was removed"
                              % (self.name, version, wanted))
            with acting_as(self.identity):
                marker = os.path.join(self.prefix, _installer.MARKER)
                fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o644)
                with os.fdopen(fd, "wb") as handle:
                    handle.write(_installer.marker_content(self.name, self.sha256, version, self.params["url"]))
            self.result.update(version=version, conda_version_output=output.strip())
        except BaseException:
            remove_tree(self.prefix, self.identity if self.identity is not None else parent_identity)
            if aside is not None:
                with acting_as(parent_identity):
                    os.rename(aside, self.prefix)
            raise
        if aside is not None:
            remove_tree(aside, parent_identity)

    def present(self) -> None:
        self.prepare_download()
        self.result["downloaded"] = False
        if self.given is not None:
            self.result["sha256"] = self.given
        exists = os.path.lexists(self.prefix)
        runner = self.identity if self.identity is not None else (as_owner(self.prefix) if exists else None)
        installed, _runs = installed_version(self.module, self.prefix, runner, self.env) if exists else (None, None)
        managed = os.path.isfile(os.path.join(self.prefix, _installer.MARKER))
        action = _installer.plan("present", exists, installed, self.params["version"], self.params["replace"],
                                 managed)
        self.result.update(action=action, previous_version=installed, version=installed)
        if action == "keep":
            return
        if action == "report":
            self.warnings.append("%s holds conda %s, not the wanted %s; left as it is (replace=true replaces it)"
                                 % (self.prefix, installed, self.params["version"]))
            return
        self.resolve_digest()
        self.check_cache_dir()
        with self.cache_lock():
            cached = self.cached()
            self.result["cached"] = cached
            self.result["changed"] = True
            if self.module.check_mode:
                self.result["would_download"] = not cached
                return
            if not cached:
                self.fetch_installer()
            self.install(replacing=action == "replace")

    def cache_lock(self):
        """Runs on one host (two accounts' tasks, two plays) take turns on the cache directory."""
        run = self

        class Lock:
            def __enter__(self):
                self.fd = None
                if run.module.check_mode and not os.path.isdir(run.cache_dir):
                    return self
                with acting_as(run.identity):
                    if not os.path.isdir(run.cache_dir):
                        os.makedirs(run.cache_dir, 0o700 if run.account is not None else 0o755)
                    self.fd = os.open(run.cache_dir, os.O_RDONLY)
                deadline = time.monotonic() + 600
                while True:
                    try:
                        fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        return self
                    except OSError as exc:
                        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN) or time.monotonic() > deadline:
                            raise Failure("another run is using %s and did not finish in time" % run.cache_dir)
                        time.sleep(0.1)

            def __exit__(self, *exc):
                if self.fd is not None:
                    os.close(self.fd)

        return Lock()

    # --- absent --------------------------------------------------------------------------------------------
    def absent(self) -> None:
        exists = os.path.lexists(self.prefix)
        managed = os.path.isfile(os.path.join(self.prefix, _installer.MARKER)) and not os.path.islink(self.prefix)
        installed = _installer.read_installed_version(self.prefix) if exists else None
        action = _installer.plan("absent", exists, installed, None, False, managed)
        self.result.update(action=action, previous_version=installed, version=None if action == "remove" else installed)
        if action == "remove":
            self.result["changed"] = True
            if not self.module.check_mode:
                remove_tree(self.prefix, self.identity if self.identity is not None else as_owner(self.prefix))


def main() -> None:
    module = AnsibleModule(argument_spec=_installer.argument_spec(), required_if=_installer.REQUIRED_IF,
                           supports_check_mode=True)
    result = {"changed": False, "prefix": module.params["prefix"], "wanted_version": module.params["version"]}
    run = None
    try:
        run = Run(module)
        result["prefix"] = run.prefix
        if module.params["state"] == "present":
            run.present()
        else:
            run.absent()
    except (_installer.InstallerError, FileRefused, Failure) as exc:
        if run is not None:
            for warning in run.warnings:
                module.warn(warning)
            result.update(run.result)
        result["changed"] = False
        module.fail_json(msg=to_native(exc), **result)
    except OSError as exc:
        if run is not None:
            result.update(run.result)
        result["changed"] = False
        module.fail_json(msg="%s: %s" % (getattr(exc, "filename", None) or "", to_native(exc)), **result)
    result.update(run.result)
    for warning in run.warnings:
        module.warn(warning)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
