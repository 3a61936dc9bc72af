# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""conda_installer's decisions, as pure functions: digests, checksum files, versions, the cache, the plan.

The module (POSIX) and the action plugin (Windows, from the controller) both decide with these, so a
Linux, macOS and Windows host of one fleet are treated the same way. Nothing here touches the network
or runs a program; :func:`sha256_of_file` and :func:`read_installed_version` only read files.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import typing as t

from ansible_collections.condafleet.proxy.plugins.module_utils._probe import select_proxy

# Where the installers are kept, named by digest: a fleet rerun finds its file and downloads nothing.
SYSTEM_CACHE = "/var/cache/condafleet-installers"
USER_CACHE = "~/.cache/condafleet-installers"
WINDOWS_SYSTEM_CACHE = "C:\\ProgramData\\condafleet-installers"
WINDOWS_USER_CACHE = "%LOCALAPPDATA%\\condafleet-installers"
# Written into a prefix this module installed; state=absent removes only prefixes that hold it.
MARKER = ".condafleet-installer.json"
# A checksum file is a few lines per installer; the vendors' largest lists a few hundred.
MAX_CHECKSUM_FILE_BYTES = 1 << 20

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
# `<digest>  <name>` (sha256sum, text mode), `<digest> *<name>` (binary mode), BSD `SHA256 (<name>) = <digest>`
_GNU_LINE = re.compile(r"^\\?([0-9A-Fa-f]{64})\s+\*?(.+?)\s*$")
_BSD_LINE = re.compile(r"^SHA256\s*\((.+)\)\s*=\s*([0-9A-Fa-f]{64})\s*$")
_CONDA_VERSION = re.compile(r"^conda\s+(\S+)\s*$", re.MULTILINE)
_META_NAME = re.compile(r"^conda-(\d[^-]*)-[^-]+\.json$")


class InstallerError(ValueError):
    """Bad input, or a decision the module must not take; the message says what and nothing was changed."""


def argument_spec() -> dict:
    """The options of ``condafleet.proxy.conda_installer`` (module and action plugin)."""
    return dict(
        url=dict(type="str"),
        sha256=dict(type="str"),
        checksum_url=dict(type="str"),
        prefix=dict(type="str", required=True),
        version=dict(type="str"),
        replace=dict(type="bool", default=False),
        cache_dir=dict(type="str"),
        proxy=dict(type="str", no_log=True),
        ca_bundle=dict(type="str"),
        validate_certs=dict(type="bool", default=True),
        timeout=dict(type="int", default=600),
        download_timeout=dict(type="int", default=60),
        state=dict(type="str", choices=["present", "absent"], default="present"),
        user=dict(type="str"),
        all_users=dict(type="bool"),
    )


REQUIRED_IF = [("state", "present", ("url",))]


def normalize_sha256(value: str, option: str = "sha256") -> str:
    """A SHA256 digest as 64 lower-case hex digits; ``sha256:`` prefix allowed; anything else refused."""
    text = value.strip().lower()
    if text.startswith("sha256:"):
        text = text[len("sha256:"):].strip()
    if not _HEX64.match(text):
        raise InstallerError("%s must be a SHA256 digest (64 hexadecimal digits), got %r" % (option, value))
    return text


def installer_name(url: str) -> str:
    """The file name of the installer in its URL (what a checksum file lists), without query or fragment."""
    path = url.split("#", 1)[0].split("?", 1)[0].rstrip("/")
    name = path.rsplit("/", 1)[-1]
    if not name or "://" in url and path.count("/") < 3:
        raise InstallerError("url %s names no file (it must end with the installer's file name)" % url)
    return name


def validate_url(url: str, option: str = "url") -> str:
    """``http``/``https`` URLs only: the module downloads with them; no control characters."""
    if any(ord(char) < 32 or ord(char) == 127 for char in url):
        raise InstallerError("%s holds a control character" % option)
    if not re.match(r"^https?://[^/?#\s]+", url, re.IGNORECASE):
        raise InstallerError("%s must be an http:// or https:// URL, got %s" % (option, url))
    return url


def digest_from_checksum_file(text: str, name: str) -> str:
    """The digest listed for ``name`` in a SHA256SUMS-style file (GNU or BSD lines, ``*`` binary marker)."""
    found = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = _GNU_LINE.match(line)
        if match:
            digest, listed = match.group(1), match.group(2)
        else:
            match = _BSD_LINE.match(line)
            if not match:
                continue
            listed, digest = match.group(1), match.group(2)
        if listed.lstrip("./").rsplit("/", 1)[-1] == name:
            found.append(digest.lower())
    if not found:
        raise InstallerError("the checksum file lists no SHA256 for %s" % name)
    if len(set(found)) > 1:
        raise InstallerError("the checksum file lists %d different SHA256 digests for %s: %s"
                             % (len(set(found)), name, ", ".join(sorted(set(found)))))
    return found[0]


def mismatch_message(name: str, expected: str, actual: str) -> str:
    """The refusal, naming both digests."""
    return ("refusing to run %s: its SHA256 is %s but %s was expected; the file was deleted and nothing was "
            "installed" % (name, actual, expected))


def sha256_of_file(path: str, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while True:
            block = handle.read(chunk)
            if not block:
                break
            digest.update(block)
    return digest.hexdigest()


def cache_file_name(sha256: str, windows: bool = False) -> str:
    """``<sha256>.sh`` (``.exe`` on Windows): the digest is the name, so a file of another content never matches."""
    return "%s.%s" % (sha256, "exe" if windows else "sh")


def partial_file_name(sha256: str) -> str:
    """Where a download in progress (or cut short) is kept until its digest is checked; resumed from there."""
    return ".%s.part" % sha256


def parse_conda_version(output: str) -> str | None:
    """``conda 24.11.3`` (``conda --version``) -> ``24.11.3``."""
    match = _CONDA_VERSION.search(output or "")
    return match.group(1) if match else None


def version_from_conda_meta(names: t.Iterable[str], read: t.Callable[[str], bytes] | None = None) -> str | None:
    """conda's version from the names of ``conda-meta/*.json`` (``conda-24.11.3-py312_0.json``); with ``read``,
    the record's own ``version`` field wins (a build string with dashes cannot mislead it)."""
    for name in sorted(names):
        match = _META_NAME.match(name)
        if not match:
            continue
        if read is not None:
            try:
                record = json.loads(read(name))
                if record.get("name") == "conda" and record.get("version"):
                    return str(record["version"])
            except (ValueError, OSError, AttributeError):
                pass
        return match.group(1)
    return None


def read_installed_version(prefix: str) -> str | None:
    """The conda version a prefix's ``conda-meta`` records, or ``None``."""
    meta = os.path.join(prefix, "conda-meta")
    try:
        names = os.listdir(meta)
    except OSError:
        return None

    def read(name: str) -> bytes:
        with open(os.path.join(meta, name), "rb") as handle:
            return handle.read(1 << 20)

    return version_from_conda_meta(names, read)


def same_version(installed: str | None, wanted: str | None) -> bool:
    """No wanted version: any installed conda will do. Otherwise equal, ignoring a leading ``v``."""
    if wanted is None:
        return installed is not None
    return installed is not None and installed.lstrip("vV") == wanted.strip().lstrip("vV")


def plan(state: str, exists: bool, installed: str | None, wanted: str | None, replace: bool, managed: bool) -> str:
    """What to do with the prefix: ``install``, ``replace``, ``keep`` (right version), ``report`` (another version,
    left alone), ``remove``, ``absent`` (nothing to remove). Refuses what must not be done."""
    if state == "absent":
        if not exists:
            return "absent"
        if not managed:
            raise InstallerError("refusing to remove the prefix: it holds no %s, so this module did not install it "
                                 "(remove it yourself if it must go)" % MARKER)
        return "remove"
    if not exists:
        return "install"
    if installed is None:
        if not replace:
            raise InstallerError("the prefix exists but holds no conda installation; nothing was changed (remove "
                                 "it, or set replace=true to install over it)")
        return "replace"
    if same_version(installed, wanted):
        return "keep"
    return "replace" if replace else "report"


def marker_content(name: str, sha256: str, version: str | None, url: str) -> bytes:
    return (json.dumps({"installer": name, "sha256": sha256, "version": version, "url": strip_credentials(url)},
                       indent=1, sort_keys=True) + "\n").encode()


def strip_credentials(url: str) -> str:
    """A URL for output and for the marker: any ``user:password@`` removed."""
    return re.sub(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/@]*@", r"\1", url)


# --- the proxy and TLS settings the host is configured with ---------------------------------------------------

def condarc_paths(home: str | None, prefix: str | None = None, system_dir: str = "/etc/conda") -> list:
    """The ``.condarc`` files conda reads for an account (system first, later wins): the files this module
    takes ``proxy_servers`` and ``ssl_verify`` from when O(proxy) is not given. Directories' ``*.yml`` are
    listed by the caller (:func:`expand_condarc_dirs`)."""
    paths = [os.path.join(system_dir, ".condarc"), os.path.join(system_dir, "condarc"),
             os.path.join(system_dir, "condarc.d") + "/"]
    if home:
        for directory in (os.path.join(home, ".config", "conda"), os.path.join(home, ".conda")):
            paths += [os.path.join(directory, ".condarc"), os.path.join(directory, "condarc"),
                      os.path.join(directory, "condarc.d") + "/"]
        paths.append(os.path.join(home, ".condarc"))
    return paths


def merge_settings(settings: t.Iterable[dict]) -> tuple:
    """``(proxy_servers, ssl_verify)`` over ``read_proxy_settings`` results in conda's order (later wins key by key,
    ``#!final`` stops the files after it)."""
    servers: dict = {}
    ssl_verify = None
    final_servers = final_ssl = False
    for one in settings:
        value = one.get("proxy_servers")
        if isinstance(value, dict) and not final_servers:
            servers.update((str(k), v) for k, v in value.items() if v is None or isinstance(v, str))
            final_servers = bool(one.get("proxy_servers_final"))
        if one.get("ssl_verify") is not None and not final_ssl:
            ssl_verify = one["ssl_verify"]
            final_ssl = bool(one.get("ssl_verify_final"))
    return servers, ssl_verify


def choose_proxy(url: str, explicit: str | None, proxy_servers: dict, env: dict) -> tuple:
    """``(proxy_or_None, source)``: O(proxy) when given (``explicit``; ``''`` means direct), else what conda
    would use for a package download of ``url`` (``proxy_servers`` key by key, then the env variables)."""
    if explicit is not None:
        return (explicit or None, "option")
    proxy, source = select_proxy(url, proxy_servers, env, "packages")
    return proxy, source


def tls_setting(ca_bundle: str | None, validate_certs: bool, ssl_verify: t.Any, env: dict) -> tuple:
    """``(verify, cafile_or_None, source)``: O(ca_bundle) first, then REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE (they
    override ``ssl_verify`` for conda too), then ``ssl_verify`` of the ``.condarc`` files."""
    if not validate_certs:
        return False, None, "option"
    if ca_bundle:
        return True, ca_bundle, "option"
    bundle = env.get("REQUESTS_CA_BUNDLE") or env.get("CURL_CA_BUNDLE")
    if bundle:
        return True, bundle, "env"
    if ssl_verify is False or str(ssl_verify).lower() == "false":
        return False, None, "condarc"
    if isinstance(ssl_verify, str) and ssl_verify.lower() not in ("true", "truststore"):
        return True, ssl_verify, "condarc"
    return True, None, "default"


# --- Windows (the action plugin) ----------------------------------------------------------------------------

def windows_install_command(installer: str, prefix: str, all_users: bool) -> str:
    """The NSIS command line of a Miniconda/Anaconda/Miniforge ``.exe``: ``/D=`` must come last and unquoted
    (NSIS takes the rest of the line, spaces included), so it is a command string, not an argv."""
    if '"' in installer or '"' in prefix or "\n" in prefix or "\r" in prefix:
        raise InstallerError("the installer path and prefix must not contain a double quote or a line break")
    return '"%s" /S /InstallationType=%s /RegisterPython=0 /AddToPath=0 /D=%s' % (
        installer, "AllUsers" if all_users else "JustMe", prefix)


def windows_prefix_problem(prefix: str) -> str | None:
    """Why ``prefix`` cannot be an NSIS ``/D=`` value (checked before anything is downloaded), or ``None``."""
    if '"' in prefix or "\n" in prefix or "\r" in prefix:
        return "the prefix must not contain a double quote or a line break (NSIS reads /D= to the end of the line)"
    if not re.match(r"^[A-Za-z]:\\", prefix):
        return "on Windows the prefix must be an absolute path with a drive letter (C:\\...), got %s" % prefix
    return None
