#!/usr/bin/python
# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: conda_proxy_info
short_description: Show which proxy conda uses on a host, and prove a request goes through it
version_added: 0.1.0
description:
  - Reads the C(.condarc) files conda reads, in conda's order (C(#!final) respected), and the proxy variables a
    fresh login shell of the account sees, and tells which proxy conda would use for O(url) in each kind of
    request it makes (RV(requests)).
  - conda does not use one proxy for everything. The first request for a channel's index
    (C(repodata.json.zst)) is made without conda's C(proxy_servers), so a proxy from the environment
    (C(http_proxy), C(https_proxy)) overrides C(proxy_servers) for it; package downloads use C(proxy_servers),
    with the environment filling only the schemes it lacks. The module therefore fails when the login shell's
    proxy differs from C(proxy_servers) for the same scheme (conda would use both).
  - With O(url), fetches the first bytes of it through each distinct proxy conda would use, with the
    C(ssl_verify) setting and the C(.netrc) credentials conda would use, and fails with a message that says
    whether the proxy refused the credentials (407; conda would then prompt C(http proxy username:) and crash
    with C(EOFError) when unattended), TLS verification failed, or the proxy could not be reached.
  - Finds conda (O(conda_executable), else C(CONDA_EXE) and C(PATH) of the login shell, else the usual install
    places), runs C(conda config --show proxy_servers --json) as the account and fails when conda reports
    something else than the files say (C(${VAR}) expanded with the account's login environment, as conda does).
  - When root asks about another account, every file is read, the login shell and conda are run and the probe
    requests are made by a child process that has dropped to the account's uid, gid and groups. The account's
    files, symbolic links and variables such as C(NETRC), C(CONDARC) or C(REQUESTS_CA_BUNDLE) can therefore
    only reach what the account itself can read; root's files and credentials are never read or sent.
  - Reads only; never changes the host.
  - On Windows hosts the view is read from the controller (C(ansible.windows.slurp) and C(ansible.windows.win_reg_stat)),
    that is the C(.condarc) files of conda's Windows search path, the machine's and the connecting account's environment
    variables, and the account's Internet Settings (WinINET) proxy, which Python's C(urllib) and so conda use for
    C(repodata.json.zst) when no C(*_proxy) variable is set (not even C(no_proxy)); RV(wininet) tells whether it
    would, and a WinINET proxy that differs from C(proxy_servers) fails the task as a conflict. No request is made
    from a Windows host (no RV(probe)), and O(user) and O(conda_executable) are refused there.
author:
  - condafleet maintainers (@condafleet)
extends_documentation_fragment:
  - condafleet.proxy._attributes
attributes:
  check_mode:
    support: full
    details: Nothing is changed in either mode; the probe requests are also made in check mode.
  diff_mode:
    support: none
  idempotent:
    support: full
  platform:
    support: full
    platforms: posix, windows
    details: On Windows the view is read from the controller; no request is made from the host.
options:
  user:
    description:
      - The account whose view is shown. Its home, login shell, C(.condarc) files and C(.netrc) are used, and
        everything runs as it (the module needs root for another account).
      - When omitted, the account the module runs as.
    type: str
  url:
    description:
      - A URL to fetch through the proxies conda would use, for example a channel's C(noarch/repodata.json).
      - Only the first kilobyte is read.
    type: str
  timeout:
    description:
      - Seconds the login shell, conda and each probe request may each take.
      - The whole check is stopped after four times this plus ten seconds, whatever the account's files do; what
        the login shell or conda started is stopped with it. Their output is limited to 4 MiB each.
    type: int
    default: 20
  require_proxy:
    description: Fail when no proxy would be used for O(url).
    type: bool
    default: true
  login_shell:
    description: Read the proxy variables of a fresh login shell of the account (its shell from the password database).
    type: bool
    default: true
  conda_executable:
    description:
      - The conda to ask. By default C(CONDA_EXE) of the login shell, then C(conda) on its C(PATH), then
        C(bin/conda) under C(~/miniconda3), C(~/anaconda3), C(~/miniforge3), C(~/mambaforge), C(~/micromamba),
        C(/opt/conda), C(/opt/miniconda3), C(/opt/anaconda3), C(/opt/miniforge3), C(/opt/mambaforge),
        C(/usr/local/miniconda3), C(/usr/local/anaconda3), C(/usr/local/miniforge3), C(/usr/local/conda);
        none found skips the check.
      - The prefix of the conda found is where conda also reads a C(.condarc) (as C($CONDA_PREFIX) when no
        environment is active).
    type: path
notes:
  - Passwords in proxy URLs are masked in every returned value.
  - A C(.condarc) the account cannot read is reported as such (conda fails with C(PermissionError) for that
    account). A FIFO or other non-regular file in conda's search path is skipped as conda skips it; a
    non-regular C(.netrc) (conda would block reading it) and any file larger than 8 MiB fail the check.
  - A C(${VAR}) in a proxy URL is expanded with the account's login environment. An unset variable fails the
    check (conda would send no credentials, get a 407 and prompt), as does a value that makes the URL invalid
    (conda fails with C(InvalidURL)); the variable must hold the percent-encoded password.
seealso:
  - module: condafleet.proxy.condarc_proxy
  - module: condafleet.proxy.env_proxy
  - module: condafleet.proxy.netrc_entry
"""

EXAMPLES = r"""
- name: Prove that conda reaches the channel through the proxy
  condafleet.proxy.conda_proxy_info:
    url: https://conda.anaconda.org/conda-forge/noarch/repodata.json

- name: Show what alice's conda would use, without a request
  condafleet.proxy.conda_proxy_info:
    user: alice
  become: true
  register: alice_view

- name: Print which proxy each kind of request would use
  ansible.builtin.debug:
    var: alice_view.requests

- name: Ask the conda alice installed in a place of her own
  condafleet.proxy.conda_proxy_info:
    user: alice
    conda_executable: /srv/alice/conda/bin/conda
    url: https://conda.anaconda.org/conda-forge/noarch/repodata.json
  become: true
"""

RETURN = r"""
user:
  description: The account whose view this is.
  returned: always
  type: str
  sample: alice
condarc_files:
  description: The C(.condarc) files that exist and were read, in the order conda reads them.
  returned: always
  type: list
  elements: str
  sample: [/etc/conda/.condarc, /home/alice/.condarc]
proxy_servers:
  description: The merged C(proxy_servers) map conda reads from those files (passwords masked).
  returned: always
  type: dict
  sample: {http: "http://fleet:********@proxy.corp.example:3128"}
ssl_verify:
  description: The merged C(ssl_verify) setting, or null when no file sets it.
  returned: always
  type: raw
  sample: /etc/conda/condafleet-proxy-ca.pem
environment:
  description: The proxy variables of a fresh login shell of the account (passwords masked).
  returned: always
  type: dict
  sample: {https_proxy: "http://fleet:********@proxy.corp.example:3128", no_proxy: ".corp.example"}
warnings_found:
  description: What conda would skip or warn about (an unparsable file, a non-regular file in its search path).
  returned: always
  type: list
  elements: str
  sample: ["/home/alice/.condarc is a FIFO, not a regular file: conda skips it"]
conflicts:
  description:
    - Schemes for which the login shell's proxy and C(proxy_servers) name different proxies; conda would fetch
      repodata through the first and packages through the second.
  returned: always
  type: list
  elements: dict
  contains:
    scheme:
      description: V(http) or V(https).
      type: str
    variable:
      description: The environment variable, for example V(https_proxy).
      type: str
    environment:
      description: Its value (password masked).
      type: str
    proxy_servers:
      description: The C(proxy_servers) value for the same scheme (password masked); an empty string means direct.
      type: str
requests:
  description: For O(url), the proxy conda would use in each kind of request.
  returned: when O(url) is given
  type: dict
  contains:
    repodata:
      description:
        - The first request for a channel's index (C(repodata.json.zst)), where a proxy from the environment
          overrides C(proxy_servers).
        - A dict with C(proxy) (password masked, null for a direct connection), C(source) (V(condarc), V(env) or
          V(none)) and C(setting) (for example V(proxy_servers https) or V(https_proxy); null when none).
      type: dict
    packages:
      description: Package downloads (and the C(repodata.json) fallback), where C(proxy_servers) wins; same keys.
      type: dict
  sample:
    repodata: {proxy: "http://old:********@proxy:3128", source: env, setting: https_proxy}
    packages: {proxy: "http://fleet:********@proxy:3128", source: condarc, setting: "proxy_servers https"}
probes:
  description: One request to O(url) per distinct proxy conda would use, each shaped like RV(probe).
  returned: when O(url) is given
  type: list
  elements: dict
probe:
  description: The request that decided the result (the first that failed, else the one for repodata).
  returned: when O(url) is given
  type: dict
  contains:
    url:
      description: The URL fetched.
      type: str
    proxy:
      description: The proxy used (password masked), or null for a direct connection.
      type: str
    source:
      description: Where the proxy came from, V(condarc), V(env) or V(none).
      type: str
    setting:
      description: The setting that named it, for example V(proxy_servers https) or V(https_proxy).
      type: str
    used_for:
      description: The kinds of request (V(repodata), V(packages)) conda would send through this proxy.
      type: list
      elements: str
    outcome:
      description: >-
        V(ok), V(proxy_auth_required), V(upstream_auth_failed) (a local authenticating proxy on loopback could
        not log in to the corporate proxy, for example without a Kerberos ticket), V(tls_error),
        V(proxy_unreachable), V(timeout), V(http_error), V(invalid_proxy) or V(error).
      type: str
    status:
      description: The HTTP status, when one was received.
      type: int
problems:
  description: Every reason the check failed, one per item (also joined in C(msg)).
  returned: on failure
  type: list
  elements: str
  sample: ["conda fails with PermissionError for alice: cannot read /etc/conda/.condarc (every .condarc ...)"]
wininet:
  description:
    - The account's Internet Settings (WinINET) proxy, and whether conda would use it (no C(*_proxy) variable set).
  returned: on Windows hosts
  type: dict
  contains:
    enabled:
      description: C(ProxyEnable).
      type: bool
    proxy_server:
      description: C(ProxyServer) (a password masked), or null.
      type: str
    proxy_override:
      description: C(ProxyOverride), the hosts it is not used for, or null.
      type: str
    auto_config_url:
      description: C(AutoConfigURL), a PAC file conda does not evaluate, or null.
      type: str
    used_by_conda:
      description: Whether conda's requests take their environment proxies from it.
      type: bool
  sample: {enabled: true, proxy_server: "winproxy.corp.example:8080", proxy_override: "<local>",
           auto_config_url: null, used_by_conda: true}
conda:
  description: What conda itself reports, when a conda was found.
  returned: always
  type: dict
  contains:
    path:
      description: The conda executable, or null.
      type: str
    found_by:
      description: How it was found, V(conda_executable), V(CONDA_EXE), V(PATH), V(install location), or null.
      type: str
    proxy_servers:
      description: conda's C(proxy_servers) (passwords masked), or null when conda could not tell.
      type: dict
"""

import base64
import io
import json
import netrc
import os
import pwd
import resource
import select
import shutil
import signal
import socket
import ssl
import stat
import subprocess
import tempfile
import time

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.condafleet.proxy.plugins.module_utils._probe import (
    REQUEST_KINDS,
    CondarcMerge,
    FileRefused,
    classify_failure,
    expand_variables,
    info_argument_spec,
    mask_proxy_url,
    proxy_url_problem,
    read_regular_file,
    scheme_conflict,
    select_proxy_setting,
    source_of,
    variable_names,
)
from ansible_collections.condafleet.proxy.plugins.module_utils._proxyurl import secrets_in

try:
    import http.client
    from urllib.error import HTTPError, URLError
    from urllib.parse import unquote, urljoin, urlsplit
    from urllib.request import HTTPSHandler, ProxyHandler, Request, build_opener
except ImportError:  # pragma: no cover
    pass

PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
                   "NO_PROXY", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "NETRC", "CONDARC")

CONDA_PLACES_IN_HOME = ("miniconda3", "anaconda3", "miniforge3", "mambaforge", "micromamba")
CONDA_PLACES = ("/opt/conda", "/opt/miniconda3", "/opt/anaconda3", "/opt/miniforge3", "/opt/mambaforge",
                "/usr/local/miniconda3", "/usr/local/anaconda3", "/usr/local/miniforge3", "/usr/local/conda")

# The child's JSON answer, and the output of the login shell or conda: more is not an answer but a runaway.
MAX_ANSWER_BYTES = 16 * 1024 * 1024
MAX_OUTPUT_BYTES = 4 * 1024 * 1024


class Problem(Exception):
    """Something that makes conda fail for the account; the message says what."""


# ---------------------------------------------------------------------------------------------------------------
# conda's configuration files, read as the account


def condarc_search_path(home: str, env: dict) -> list:
    """conda's search path entries (files or directories), in its order (later wins, ``#!final`` stops overrides).

    ``$CONDA_PREFIX`` is the active environment, or conda's own prefix when none is active (conda's
    ``determine_target_prefix``); the caller puts that in ``env``.
    """
    entries = ["/etc/conda/.condarc", "/etc/conda/condarc", "/etc/conda/condarc.d/",
               "/var/lib/conda/.condarc", "/var/lib/conda/condarc", "/var/lib/conda/condarc.d/"]

    def in_dir(directory: str) -> list:
        return [os.path.join(directory, ".condarc"), os.path.join(directory, "condarc"),
                os.path.join(directory, "condarc.d") + "/"]

    if env.get("CONDA_ROOT"):
        entries += in_dir(env["CONDA_ROOT"])
    if env.get("XDG_CONFIG_HOME"):
        entries += in_dir(os.path.join(env["XDG_CONFIG_HOME"], "conda"))
    entries += in_dir(os.path.join(home, ".config", "conda")) + in_dir(os.path.join(home, ".conda"))
    entries.append(os.path.join(home, ".condarc"))
    if env.get("CONDA_PREFIX"):
        entries += in_dir(env["CONDA_PREFIX"])
    if env.get("CONDARC"):
        entries.append(env["CONDARC"])
    return entries


def condarc_files(entries: list, warnings: list) -> list:
    """The files conda loads from its search path entries: regular files named ``.condarc``/``condarc`` or
    ``*.yml``/``*.yaml``, and the ``*.yml``/``*.yaml`` files of a directory entry, sorted (conda's
    ``_expand_search_path``); anything else, a FIFO included, is skipped as conda skips it."""
    files = []
    for entry in entries:
        path = entry.rstrip("/") or "/"
        try:
            mode = os.stat(path).st_mode
        except OSError:
            continue
        name = os.path.basename(path)
        if stat.S_ISREG(mode) and (name in (".condarc", "condarc") or os.path.splitext(name)[1] in (".yml", ".yaml")):
            files.append(path)
        elif stat.S_ISDIR(mode):
            try:
                names = sorted(os.listdir(path))
            except OSError:
                continue
            for child in names:
                full = os.path.join(path, child)
                if os.path.splitext(child)[1] in (".yml", ".yaml") and os.path.isfile(full):
                    files.append(full)
        elif not stat.S_ISREG(mode):
            warnings.append("%s is %s, not a regular file: conda skips it" % (path, _kind(mode)))
    unique = []
    for path in files:
        if path not in unique:
            unique.append(path)
    return unique


def _kind(mode: int) -> str:
    return "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device or special file"


def merged_settings(paths: list, account: str = "the account", warnings: list | None = None) -> tuple:
    """Merge ``proxy_servers`` key by key and ``ssl_verify`` over ``paths`` as conda does.

    Returns ``(files_read, proxy_servers, ssl_verify, problems)``; a file the account cannot read raises
    :class:`Problem` (conda fails with ``PermissionError``), an unparsable one is skipped with a warning.
    """
    merge = CondarcMerge([] if warnings is None else warnings)
    for path in paths:
        try:
            data = read_regular_file(path)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except PermissionError:
            raise Problem("conda fails with PermissionError for %s: cannot read %s (every .condarc conda finds must "
                          "be readable by the account that runs conda)" % (account, path))
        except FileRefused as exc:
            raise Problem("refusing to read %s: %s" % (path, exc.strerror))
        merge.add(path, data)
    return merge.files, merge.proxy_servers, merge.ssl_verify, merge.problems


# ---------------------------------------------------------------------------------------------------------------
# the account's environment and its conda


def run_bounded(argv: list, env: dict, cwd: str, timeout: float, limit: int = MAX_OUTPUT_BYTES) -> tuple:
    """``(returncode, stdout, stderr)`` of ``argv`` with no stdin, killed after ``timeout`` seconds
    (``subprocess.TimeoutExpired``); output beyond ``limit`` bytes per stream is :class:`Problem`.

    The output goes to unlinked temporary files whose size the kernel caps (``RLIMIT_FSIZE``), so a profile or a
    conda the account controls cannot make this process grow without end. What it leaves running stays in the
    checking child's process group, which the parent kills when the check ends."""
    def cap_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.run(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                              preexec_fn=cap_file_size, timeout=timeout, check=False)
        streams = []
        for handle in (out, err):
            if os.fstat(handle.fileno()).st_size >= limit:
                raise Problem("%s wrote more than %d bytes" % (os.path.basename(argv[0]), limit))
            handle.seek(0)
            streams.append(handle.read())
    return proc.returncode, streams[0], streams[1]


def login_environment(entry, timeout: float) -> dict:
    """The environment of a fresh login shell of the account (``env -i`` plus what its startup files set).

    Runs with the caller's identity: the caller has already become the account.
    """
    shell = entry.pw_shell if os.path.basename(entry.pw_shell or "") in ("bash", "zsh", "fish", "sh", "dash", "ksh") \
        else "/bin/sh"
    base = {"HOME": entry.pw_dir, "USER": entry.pw_name, "LOGNAME": entry.pw_name, "SHELL": shell,
            "PATH": "/usr/local/bin:/usr/bin:/bin", "TERM": "dumb"}
    cwd = entry.pw_dir if os.path.isdir(entry.pw_dir) else "/"
    _code, out, _err = run_bounded([shell, "-l", "-c", "env -0"], base, cwd, timeout)
    env = {}
    for item in out.decode("utf-8", "replace").split("\0"):
        if "=" in item:
            name, value = item.split("=", 1)
            env[name.strip()] = value
    return env


def find_conda(explicit: str | None, home: str, env: dict) -> tuple:
    """``(path, found_by)`` of the conda to ask, or ``(None, None)``."""
    if explicit:
        return explicit, "conda_executable"
    if env.get("CONDA_EXE") and os.access(env["CONDA_EXE"], os.X_OK):
        return env["CONDA_EXE"], "CONDA_EXE"
    found = shutil.which("conda", path=env.get("PATH", ""))
    if found:
        return found, "PATH"
    places = [os.path.join(home, name) for name in CONDA_PLACES_IN_HOME] + list(CONDA_PLACES)
    for place in places:
        for candidate in (os.path.join(place, "bin", "conda"), os.path.join(place, "condabin", "conda")):
            if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                return candidate, "install location"
    return None, None


def conda_prefix(conda: str) -> str:
    """The prefix of a conda executable (``<prefix>/bin/conda`` or ``<prefix>/condabin/conda``)."""
    return os.path.dirname(os.path.dirname(os.path.abspath(conda)))


def conda_proxy_servers(conda: str, env: dict, timeout: float) -> dict:
    """``conda config --show proxy_servers --json`` as the caller (the account); raises :class:`Problem`."""
    try:
        returncode, stdout, stderr = run_bounded([conda, "config", "--show", "proxy_servers", "--json"], env, "/",
                                                 timeout)
    except subprocess.TimeoutExpired:
        raise Problem("%s config --show proxy_servers did not answer within %ss" % (conda, timeout))
    except OSError as exc:
        raise Problem("%s config --show proxy_servers cannot run: %s" % (conda, exc))
    out = stdout.decode("utf-8", "replace")
    try:
        answer = json.loads(out or "{}")
    except ValueError:
        answer = None
    if returncode != 0 or not isinstance(answer, dict) or "proxy_servers" not in answer:
        reason = ""
        if isinstance(answer, dict):
            reason = answer.get("message") or answer.get("error") or ""
        if not reason:
            lines = [line for line in (stderr.decode("utf-8", "replace") + out).splitlines() if line.strip()]
            reason = lines[-1] if lines else "no output"
        raise Problem("%s config --show proxy_servers failed (exit %s): %s" % (conda, returncode, reason.strip()))
    return answer.get("proxy_servers") or {}


# ---------------------------------------------------------------------------------------------------------------
# the probe request, as the account


def ssl_context(ssl_verify, env: dict):
    """The TLS setting requests uses for conda: ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` override ``ssl_verify``."""
    bundle = env.get("REQUESTS_CA_BUNDLE") or env.get("CURL_CA_BUNDLE")
    if bundle:
        return _context_for(bundle, "REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE")
    if ssl_verify is False or str(ssl_verify).lower() == "false":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if isinstance(ssl_verify, str) and ssl_verify.lower() not in ("true", "truststore"):
        return _context_for(ssl_verify, "ssl_verify")
    return ssl.create_default_context()


def _context_for(location: str, setting: str):
    """A context trusting the CA file or directory at ``location``, read as the account (bounded)."""
    if os.path.isdir(location):
        return ssl.create_default_context(capath=location)
    try:
        data = read_regular_file(location)
    except FileNotFoundError:
        raise Problem("%s names %s, which does not exist: conda fails on every HTTPS request" % (setting, location))
    except PermissionError:
        raise Problem("%s names %s, which the account cannot read: conda fails on every HTTPS request"
                      % (setting, location))
    except FileRefused as exc:
        raise Problem("%s: %s" % (setting, exc.strerror))
    try:
        return ssl.create_default_context(cadata=data.decode("ascii", "replace"))
    except (ssl.SSLError, ValueError) as exc:
        raise Problem("%s names %s, which holds no usable CA certificate: %s" % (setting, location, exc))


def netrc_authorization(url: str, home: str, env: dict, warnings: list) -> str | None:
    """A Basic Authorization header from the account's .netrc for the URL's host, as requests adds it.

    requests reads ``$NETRC``, else ``~/.netrc``, else ``~/_netrc``: the first that exists. An unreadable or
    unparsable file means no credentials; a FIFO would block conda, so it is refused.
    """
    host = urlsplit(url).hostname or ""
    for path in ([env["NETRC"]] if env.get("NETRC") else [os.path.join(home, ".netrc"), os.path.join(home, "_netrc")]):
        if not os.path.exists(path):
            continue
        try:
            text = read_regular_file(path).decode("utf-8", "replace")
        except FileRefused as exc:
            raise Problem("%s; requests reads it for every request conda makes" % exc.strerror)
        except OSError as exc:
            warnings.append("%s cannot be read by the account (%s): conda sends no channel credentials"
                            % (path, exc.strerror))
            return None
        try:
            parsed = netrc.netrc.__new__(netrc.netrc)
            parsed.hosts, parsed.macros = {}, {}
            parsed._parse(path, io.StringIO(text), False)  # requests passes an explicit path: no owner check
            auth = parsed.authenticators(host)
        except (netrc.NetrcParseError, AttributeError, TypeError) as exc:
            warnings.append("%s cannot be parsed (%s): conda sends no channel credentials" % (path, exc))
            return None
        if auth:
            login, _account, password = auth
            return "Basic " + base64.b64encode(("%s:%s" % (login, password or "")).encode()).decode()
        return None
    return None


REDIRECTS = (301, 302, 303, 307, 308)
MAX_REDIRECTS = 5


def get_through_proxy(url: str, proxy: str, headers: dict, deadline: float) -> tuple:
    """GET an ``http://`` URL through the ``http://`` ``proxy`` as requests (conda) does, on a connection that stays
    open: urllib always sends ``Connection: close``, and a proxy that authenticates the connection (NTLM, Negotiate;
    squid, and cntlm relaying it) offers its scheme only on one that stays open. Follows redirects to ``http://``
    URLs (``Authorization`` dropped when the host changes, as requests does), all before ``deadline``
    (``time.monotonic()``). Returns ``(status, reason, response headers, the URL answered, the headers sent)``; a
    redirect elsewhere comes back as it is, for the caller."""
    parts = urlsplit(proxy)
    credentials = {}
    if parts.username is not None:
        token = base64.b64encode(("%s:%s" % (unquote(parts.username), unquote(parts.password or ""))).encode())
        credentials["Proxy-Authorization"] = "Basic " + token.decode()
    for _hop in range(MAX_REDIRECTS + 1):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("timed out following redirects")
        connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=remaining)
        try:
            connection.request("GET", url, headers=dict(headers, Host=urlsplit(url).netloc, Connection="keep-alive",
                                                        **credentials))
            response = connection.getresponse()
            response.read(1024)
        finally:
            connection.close()
        location = response.getheader("Location")
        if response.status not in REDIRECTS or not location:
            return response.status, response.reason, response.headers, url, headers
        target = urljoin(url, location)
        if urlsplit(target).hostname != urlsplit(url).hostname:
            headers = dict((k, v) for k, v in headers.items() if k.lower() != "authorization")
        if urlsplit(target).scheme != "http":
            return response.status, response.reason, response.headers, url, headers
        url = target
    raise HTTPError(url, response.status, "more than %d redirects" % MAX_REDIRECTS, response.headers, None)


def probe(url: str, proxy: str | None, context, authorization: str | None, timeout: float) -> dict:
    scheme = urlsplit(url).scheme
    handlers = [ProxyHandler({scheme: proxy} if proxy else {})] + ([HTTPSHandler(context=context)] if context else [])
    request = Request(url, headers={"User-Agent": "condafleet-proxy-verify", "Range": "bytes=0-1023"})
    if authorization:
        request.add_header("Authorization", authorization)
    try:
        if proxy and scheme == "http" and urlsplit(proxy).scheme.lower() == "http":
            status, reason, headers, answered, sent = get_through_proxy(
                url, proxy, dict(request.header_items()), time.monotonic() + timeout)
            if status in REDIRECTS:
                target = urljoin(answered, headers.get("Location"))
                if urlsplit(target).scheme != "https":  # as requests: no file://, ftp://... from a channel's answer
                    raise HTTPError(answered, status, "redirect to %s:// not followed" % urlsplit(target).scheme,
                                    headers, None)
                # the https hop through the same proxy, with the same TLS settings and what was left of the headers
                handlers = [ProxyHandler({"https": proxy})] + ([HTTPSHandler(context=context)] if context else [])
                request = Request(target, headers=sent)
            elif status >= 400:
                raise HTTPError(answered, status, reason, headers, None)
            else:
                return {"outcome": "ok", "status": status}
        with build_opener(*handlers).open(request, timeout=timeout) as response:
            response.read(1024)
            return {"outcome": "ok", "status": response.status}
    except HTTPError as exc:
        outcome, message = classify_failure(exc, proxy)
        return {"outcome": outcome, "status": exc.code, "message": message}
    except (URLError, OSError, ssl.SSLError, ValueError, http.client.HTTPException) as exc:
        outcome, message = classify_failure(exc, proxy)
        if not proxy and outcome == "proxy_unreachable":
            outcome, message = "error", "the URL could not be reached directly (%s)" % exc
        return {"outcome": outcome, "message": message}


# ---------------------------------------------------------------------------------------------------------------
# what the account's conda would do: computed in the child, as the account


class View:
    """Everything the child finds; ``answer()`` is what goes back to the parent."""

    def __init__(self, entry) -> None:
        self.entry = entry
        self.secrets = []
        self.problems = []
        self.warnings = []
        self.result = dict(changed=False, user=entry.pw_name, condarc_files=[], proxy_servers={}, ssl_verify=None,
                           environment={}, warnings_found=self.warnings, conflicts=[],
                           conda=dict(path=None, found_by=None, proxy_servers=None))

    def secret(self, text) -> None:
        for value in secrets_in(text) if isinstance(text, str) else []:
            if value not in self.secrets:
                self.secrets.append(value)

    def masked(self, value):
        if isinstance(value, str):
            return mask_proxy_url(value)
        if isinstance(value, dict):
            return dict((str(k), self.masked(v)) for k, v in value.items())
        return value

    def answer(self) -> dict:
        return {"result": self.result, "problems": self.problems, "secrets": self.secrets}


def expanded_proxy(view: View, setting: str, value: str | None, env: dict) -> str | None:
    """``value`` with ``${VAR}`` expanded from the account's environment; a problem when unset or invalid."""
    if not value:
        return value
    expanded, unset = expand_variables(value, env)
    view.secret(expanded)
    if unset:
        view.problems.append("%s uses %s, which is not set in %s's login environment: conda would send the URL "
                             "with the reference in it, get no credentials through (407) and prompt"
                             % (setting, ", ".join("${%s}" % name for name in unset), view.entry.pw_name))
        return expanded
    problem = proxy_url_problem(expanded)
    if problem:
        names = variable_names(value)
        if names and not proxy_url_problem(value.replace("$", "x").replace("{", "").replace("}", "")):
            view.problems.append("%s: the value of %s makes the proxy URL invalid (%s); conda fails with InvalidURL. "
                                 "The variable must hold the percent-encoded password (@ as %%40, : as %%3A, / as "
                                 "%%2F, %% as %%25, # as %%23)" % (setting, ", ".join("${%s}" % n for n in names),
                                                                   problem))
        else:
            view.problems.append("%s is not a usable proxy URL (%s): %s; conda fails with InvalidURL"
                                 % (setting, problem, mask_proxy_url(expanded)))
    return expanded


def inspect_account(entry, params: dict, deadline: float) -> dict:
    """The account's view, computed with the caller's identity (the account's, in the child)."""
    view = View(entry)

    def remaining() -> float:
        return max(1.0, min(float(params["timeout"]), deadline - time.monotonic()))

    try:
        _inspect(view, entry, params, remaining)
    except Problem as exc:
        view.problems.append(str(exc))
    return view.answer()


def _inspect(view: View, entry, params: dict, remaining) -> None:
    result = view.result
    account = entry.pw_name
    if params["login_shell"]:
        try:
            env = login_environment(entry, remaining())
        except subprocess.TimeoutExpired:
            raise Problem("the login shell of %s did not finish within %ss" % (account, params["timeout"]))
        except OSError as exc:
            raise Problem("cannot start a login shell of %s: %s" % (account, exc))
    else:
        env = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    for name in PROXY_VARIABLES:
        view.secret(env.get(name, ""))
    result["environment"] = view.masked(dict((k, env[k]) for k in PROXY_VARIABLES if k in env))

    conda, found_by = find_conda(params["conda_executable"], entry.pw_dir, env)
    search_env = dict(env)
    if conda and not search_env.get("CONDA_PREFIX"):
        search_env["CONDA_PREFIX"] = conda_prefix(conda)
    result["conda"].update(path=conda, found_by=found_by)

    paths = condarc_files(condarc_search_path(entry.pw_dir, search_env), view.warnings)
    files, raw_servers, ssl_verify, type_problems = merged_settings(paths, account, view.warnings)
    view.problems.extend(type_problems)
    for value in raw_servers.values():
        view.secret(value or "")
    result.update(condarc_files=files, proxy_servers=view.masked(raw_servers), ssl_verify=ssl_verify)

    servers = {}
    for key, value in raw_servers.items():
        servers[key] = expanded_proxy(view, "proxy_servers %s" % key, value, env)
    if conda:
        try:
            reported = conda_proxy_servers(conda, env, remaining())
        except Problem as exc:
            view.problems.append(str(exc))
        else:
            for value in reported.values():
                view.secret(value)
            result["conda"]["proxy_servers"] = view.masked(reported)
            if reported != servers and not type_problems:
                view.problems.append("conda reports proxy_servers %s, but the .condarc files say %s"
                                     % (view.masked(reported), view.masked(servers)))

    url = params["url"]
    for scheme in ("http", "https"):
        sample = url if url and urlsplit(url).scheme.lower() == scheme else "%s://conda.anaconda.org/" % scheme
        conflict = scheme_conflict(scheme, sample, servers, env)
        if conflict:
            setting = conflict.pop("setting")
            result["conflicts"].append(conflict)
            view.problems.append(
                "conflict for %s:// URLs: the login shell of %s sets %s=%s, but .condarc has %s %s. conda would use "
                "both: repodata.json.zst is fetched through the environment's proxy (that request passes no "
                "proxies=, and requests lets an environment proxy override proxy_servers), packages through "
                "proxy_servers. Make both name the same proxy and credentials, or remove %s from %s's shell files"
                % (scheme, account, conflict["variable"], conflict["environment"], setting,
                   conflict["proxy_servers"] or "'' (a direct connection)", conflict["variable"], account))

    authorization = netrc_authorization(url or "https://conda.anaconda.org/", entry.pw_dir, env, view.warnings)
    if url:
        _probe_url(view, url, servers, ssl_verify, env, params, remaining, authorization)


def _probe_url(view: View, url: str, servers: dict, ssl_verify, env: dict, params: dict, remaining,
               authorization: str | None) -> None:
    result = view.result
    requests_seen = {}
    for kind in REQUEST_KINDS:
        proxy, setting = select_proxy_setting(url, servers, env, kind)
        requests_seen[kind] = dict(proxy=mask_proxy_url(proxy) if proxy else None, source=source_of(setting),
                                   setting=setting, raw=proxy)
    distinct = []
    for kind in REQUEST_KINDS:
        item = requests_seen[kind]
        for entry in distinct:
            if entry[0] == item["raw"]:
                entry[1].append(kind)
                break
        else:
            distinct.append((item["raw"], [kind], item))
    result["requests"] = dict((kind, dict((k, v) for k, v in item.items() if k != "raw"))
                              for kind, item in requests_seen.items())

    context = ssl_context(ssl_verify, env) if urlsplit(url).scheme.lower() == "https" else None
    probes = []
    for proxy, kinds, item in distinct:
        outcome = {"outcome": "invalid_proxy", "message": "not requested: the proxy URL is not usable"} \
            if proxy and proxy_url_problem(proxy) else probe(url, proxy, context, authorization, remaining())
        probes.append(dict(url=url, proxy=item["proxy"], source=item["source"], setting=item["setting"],
                           used_for=kinds, **outcome))
    result["probes"] = probes
    failed = [p for p in probes if p["outcome"] != "ok"]
    result["probe"] = failed[0] if failed else probes[0]
    if params["require_proxy"] and any(p["proxy"] is None for p in probes):
        view.problems.append("no proxy would be used for %s (%s): neither .condarc proxy_servers nor the login "
                             "shell's proxy variables cover it"
                             % (url, ", ".join(k for p in probes if p["proxy"] is None for k in p["used_for"])))
    for item in failed:
        if item["outcome"] == "invalid_proxy":
            continue
        view.problems.append("%s through %s (%s, used for %s): %s"
                             % (url, item["proxy"] or "a direct connection", item["setting"] or "no proxy setting",
                                " and ".join(item["used_for"]), item["message"]))


# ---------------------------------------------------------------------------------------------------------------
# the child process


def drop_to_account(entry) -> None:
    """Become the account for good: its supplementary groups, gid and uid (real, effective and saved)."""
    os.setgroups(os.getgrouplist(entry.pw_name, entry.pw_gid))
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    if os.getuid() != entry.pw_uid or os.geteuid() != entry.pw_uid or os.getegid() != entry.pw_gid:
        raise OSError("the identity switch to %s did not take" % entry.pw_name)
    try:
        os.setuid(0)
    except OSError:
        return
    raise OSError("the process could regain root after dropping to %s" % entry.pw_name)


def run_in_child(entry, params: dict, drop: bool, hard_limit: float) -> dict:
    """Run :func:`inspect_account` in a forked child (dropped to the account when ``drop``); wait at most
    ``hard_limit`` seconds, then kill the child's whole process group. Returns its answer."""
    # Load lazily imported codecs now: after the drop the account may not be able to read this Python's files.
    "localhost".encode("idna")
    read_fd, write_fd = os.pipe()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 0
        try:
            os.close(read_fd)
            os.setsid()  # its own process group: the parent can kill the login shell and conda with it
            if drop:
                drop_to_account(entry)
            os.chdir("/")
            answer = inspect_account(entry, params, start + hard_limit - 2)
        except BaseException as exc:  # report, never fall back into the parent's code path
            answer = {"result": {}, "problems": ["checking as %s failed: %s: %s"
                                                 % (entry.pw_name, type(exc).__name__, exc)], "secrets": []}
            code = 1
        try:
            data = json.dumps(answer, default=str).encode("utf-8")
            while data:
                data = data[os.write(write_fd, data):]
        finally:
            os._exit(code)
    os.close(write_fd)
    chunks, size, timed_out = [], 0, False
    try:
        while True:
            left = start + hard_limit - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            ready, _w, _x = select.select([read_fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(read_fd, 1 << 16)
            if not chunk:
                break
            size += len(chunk)
            if size > MAX_ANSWER_BYTES:
                chunks = [b"not JSON: the answer was cut off"]
                break
            chunks.append(chunk)
    finally:
        os.close(read_fd)
    # The child's process group (its own session): the child itself when it ran out of time, and whatever a login
    # shell or conda left running. Before waitpid, so the id cannot have been reused: an unreaped child keeps it.
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    os.waitpid(pid, 0)
    if timed_out:
        return {"result": {}, "secrets": [], "problems": [
            "gave up after %ds: checking %s's view did not finish (a file, the login shell or conda blocks or loops); "
            "conda would likely hang as well" % (hard_limit, entry.pw_name)]}
    try:
        return json.loads(b"".join(chunks).decode("utf-8"))
    except ValueError:
        return {"result": {}, "secrets": [], "problems": ["the check as %s ended without an answer" % entry.pw_name]}


def main() -> None:
    module = AnsibleModule(argument_spec=info_argument_spec(), supports_check_mode=True)
    params = module.params
    try:
        entry = pwd.getpwnam(params["user"]) if params["user"] else pwd.getpwuid(os.geteuid())
    except KeyError:
        module.fail_json(msg="user %r does not exist on this host" % params["user"])
    if params["timeout"] < 1:
        module.fail_json(msg="timeout must be at least 1 second")
    if os.geteuid() != 0 and entry.pw_uid != os.geteuid():
        module.fail_json(msg="looking at %s's view needs root (become: true): the check runs as that account"
                         % entry.pw_name)
    drop = os.geteuid() == 0 and entry.pw_uid != 0
    answer = run_in_child(entry, dict(params), drop, hard_limit=4 * params["timeout"] + 10)
    for secret in answer.get("secrets") or []:
        if isinstance(secret, str) and secret:
            module.no_log_values.add(secret)
    result = dict(answer.get("result") or {}, changed=False)
    problems = [str(p) for p in answer.get("problems") or []]
    if problems:
        module.fail_json(msg="; ".join(problems), problems=problems, **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
