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
    fresh login shell of the account sees, and tells which proxy conda's requests would use for O(url).
  - With O(url), fetches the first bytes of it through that proxy, with the C(ssl_verify) setting and the
    C(.netrc) credentials conda would use, and fails with a message that says whether the proxy asked for
    credentials (407), TLS verification failed, or the proxy could not be reached.
  - Where conda is installed, runs C(conda config --show proxy_servers) as the account and fails when conda
    reports something else than the files say.
  - Reads only; never changes the host.
author:
  - condafleet maintainers (@condafleet)
extends_documentation_fragment:
  - condafleet.proxy._attributes
attributes:
  check_mode:
    support: full
    details: Nothing is changed in either mode; the probe request is also made in check mode.
  diff_mode:
    support: none
  idempotent:
    support: full
  platform:
    support: full
    platforms: posix
options:
  user:
    description:
      - The account whose view is shown. Its home, login shell and C(.netrc) are used, and the shell and conda
        run as it (the module needs root for another account).
      - When omitted, the account the module runs as.
    type: str
  url:
    description:
      - A URL to fetch through the proxy conda would use, for example a channel's C(noarch/repodata.json).
      - Only the first kilobyte is read.
    type: str
  timeout:
    description: Seconds the probe request, the login shell and conda may each take.
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
      - The conda to ask. By default the first of C(conda) on the login shell's C(PATH), C(~/miniconda3/bin/conda),
        C(~/anaconda3/bin/conda), C(~/miniforge3/bin/conda), C(/opt/conda/bin/conda); none found skips the check.
    type: path
notes:
  - Passwords in proxy URLs are masked in every returned value.
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

- name: Print it
  ansible.builtin.debug:
    var: alice_view.proxy_servers
"""

RETURN = r"""
condarc_files:
  description: The C(.condarc) files that exist, in the order conda reads them.
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
conda:
  description: What conda itself reports, when a conda was found.
  returned: always
  type: dict
  contains:
    path:
      description: The conda executable, or null.
      type: str
    proxy_servers:
      description: conda's C(proxy_servers) (passwords masked).
      type: dict
probe:
  description: The request made to O(url).
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
    outcome:
      description: >-
        V(ok), V(proxy_auth_required), V(tls_error), V(proxy_unreachable), V(timeout), V(http_error) or V(error).
      type: str
    status:
      description: The HTTP status, when one was received.
      type: int
"""

import glob
import json
import netrc
import os
import pwd
import shutil
import ssl
import subprocess

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.condafleet.proxy.plugins.module_utils._condarc import read_proxy_settings
from ansible_collections.condafleet.proxy.plugins.module_utils._probe import classify_failure, select_proxy
from ansible_collections.condafleet.proxy.plugins.module_utils._proxyurl import mask_secrets, secrets_in

try:
    from urllib.error import HTTPError, URLError
    from urllib.parse import urlsplit
    from urllib.request import HTTPSHandler, ProxyHandler, Request, build_opener
except ImportError:  # pragma: no cover
    pass

PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY",
                   "NO_PROXY", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "NETRC", "CONDARC")


def condarc_search_path(home: str, env: dict) -> list:
    """conda's configuration files, in the order it reads them (later wins, ``#!final`` stops overrides)."""

    def in_dir(directory: str) -> list:
        found = [os.path.join(directory, ".condarc"), os.path.join(directory, "condarc")]
        found.extend(sorted(glob.glob(os.path.join(directory, "condarc.d", "*.yml"))
                            + glob.glob(os.path.join(directory, "condarc.d", "*.yaml"))))
        return found

    paths = in_dir("/etc/conda") + in_dir("/var/lib/conda")
    if env.get("CONDA_ROOT"):
        paths += in_dir(env["CONDA_ROOT"])
    xdg = env.get("XDG_CONFIG_HOME") or os.path.join(home, ".config")
    paths += in_dir(os.path.join(xdg, "conda"))
    if os.path.join(home, ".config") != xdg:
        paths += in_dir(os.path.join(home, ".config", "conda"))
    paths += in_dir(os.path.join(home, ".conda")) + [os.path.join(home, ".condarc")]
    if env.get("CONDA_PREFIX"):
        paths += in_dir(env["CONDA_PREFIX"])
    if env.get("CONDARC"):
        paths.append(env["CONDARC"])
    return paths


def merged_settings(paths: list) -> tuple:
    """Merge ``proxy_servers`` key by key and ``ssl_verify`` over ``paths`` as conda does."""
    files, proxy_servers, ssl_verify = [], {}, None
    final_proxy = final_ssl = False
    for path in paths:
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError:
            continue
        files.append(path)
        try:
            settings = read_proxy_settings(data)
        except ValueError:
            continue  # conda skips a file with invalid YAML (with a warning)
        if settings.get("proxy_servers") is not None and not final_proxy:
            proxy_servers.update(settings["proxy_servers"])
            final_proxy = settings.get("proxy_servers_final", False)
        if settings.get("ssl_verify") is not None and not final_ssl:
            ssl_verify = settings["ssl_verify"]
            final_ssl = settings.get("ssl_verify_final", False)
    return files, proxy_servers, ssl_verify


def _demote(entry):
    """A preexec function that makes a child run as the account."""

    def run():
        os.setgid(entry.pw_gid)
        os.initgroups(entry.pw_name, entry.pw_gid)
        os.setuid(entry.pw_uid)

    return run if os.geteuid() == 0 and entry.pw_uid != 0 else None


def login_environment(entry, timeout: int) -> dict:
    """The environment of a fresh login shell of the account (``env -i`` plus what its startup files set)."""
    shell = entry.pw_shell if os.path.basename(entry.pw_shell or "") in ("bash", "zsh", "fish", "sh", "dash", "ksh") \
        else "/bin/sh"
    base = {"HOME": entry.pw_dir, "USER": entry.pw_name, "LOGNAME": entry.pw_name, "SHELL": shell,
            "PATH": "/usr/local/bin:/usr/bin:/bin", "TERM": "dumb"}
    proc = subprocess.run([shell, "-l", "-c", "env -0"], env=base, cwd=entry.pw_dir if os.path.isdir(entry.pw_dir) else "/",
                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          preexec_fn=_demote(entry), timeout=timeout, check=False)
    env = {}
    for item in proc.stdout.decode("utf-8", "replace").split("\0"):
        if "=" in item:
            name, value = item.split("=", 1)
            env[name.strip()] = value
    return env


def find_conda(explicit: str | None, home: str, env: dict) -> str | None:
    if explicit:
        return explicit
    found = shutil.which("conda", path=env.get("PATH", ""))
    if found:
        return found
    for candidate in (os.path.join(home, d, "bin", "conda") for d in ("miniconda3", "anaconda3", "miniforge3")):
        if os.access(candidate, os.X_OK):
            return candidate
    return "/opt/conda/bin/conda" if os.access("/opt/conda/bin/conda", os.X_OK) else None


def ssl_context(ssl_verify, env: dict):
    bundle = env.get("REQUESTS_CA_BUNDLE") or env.get("CURL_CA_BUNDLE")
    if bundle:
        return ssl.create_default_context(cafile=bundle if os.path.isfile(bundle) else None,
                                          capath=bundle if os.path.isdir(bundle) else None)
    if ssl_verify is False or str(ssl_verify).lower() == "false":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if isinstance(ssl_verify, str) and ssl_verify.lower() not in ("true", "truststore"):
        return ssl.create_default_context(cafile=ssl_verify if os.path.isfile(ssl_verify) else None,
                                          capath=ssl_verify if os.path.isdir(ssl_verify) else None)
    return ssl.create_default_context()


def netrc_authorization(url: str, home: str, env: dict) -> str | None:
    """A Basic Authorization header from the account's .netrc for the URL's host, as requests adds it."""
    import base64

    host = urlsplit(url).hostname or ""
    for path in ([env["NETRC"]] if env.get("NETRC") else [os.path.join(home, ".netrc"), os.path.join(home, "_netrc")]):
        if not os.path.exists(path):
            continue
        try:
            auth = netrc.netrc(path).authenticators(host)
        except (netrc.NetrcParseError, OSError):
            return None
        if auth:
            login, _account, password = auth
            return "Basic " + base64.b64encode(("%s:%s" % (login, password or "")).encode()).decode()
        return None
    return None


def probe(url: str, proxy: str | None, context, authorization: str | None, timeout: int) -> dict:
    scheme = urlsplit(url).scheme
    handlers = [ProxyHandler({scheme: proxy} if proxy else {}), HTTPSHandler(context=context)]
    request = Request(url, headers={"User-Agent": "condafleet-proxy-verify", "Range": "bytes=0-1023"})
    if authorization:
        request.add_header("Authorization", authorization)
    try:
        with build_opener(*handlers).open(request, timeout=timeout) as response:
            response.read(1024)
            return {"outcome": "ok", "status": response.status}
    except HTTPError as exc:
        outcome, message = classify_failure(exc)
        return {"outcome": outcome, "status": exc.code, "message": message}
    except (URLError, OSError, ssl.SSLError) as exc:
        outcome, message = classify_failure(exc)
        if not proxy and outcome == "proxy_unreachable":
            outcome, message = "error", "the URL could not be reached directly (%s)" % exc
        return {"outcome": outcome, "message": message}


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            user=dict(type="str"),
            url=dict(type="str"),
            timeout=dict(type="int", default=20),
            require_proxy=dict(type="bool", default=True),
            login_shell=dict(type="bool", default=True),
            conda_executable=dict(type="path"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    try:
        entry = pwd.getpwnam(params["user"]) if params["user"] else pwd.getpwuid(os.geteuid())
    except KeyError:
        module.fail_json(msg="user %r does not exist on this host" % params["user"])
    timeout = params["timeout"]
    try:
        env = login_environment(entry, timeout) if params["login_shell"] else dict(os.environ)
    except (OSError, subprocess.SubprocessError) as exc:
        module.fail_json(msg="cannot start a login shell of %s: %s" % (entry.pw_name, exc))
    for name in PROXY_VARIABLES:
        for secret in secrets_in(env.get(name, "")):
            module.no_log_values.add(secret)

    files, proxy_servers, ssl_verify = merged_settings(condarc_search_path(entry.pw_dir, env))
    for value in proxy_servers.values():
        for secret in secrets_in(os.path.expandvars(value or "")):
            module.no_log_values.add(secret)

    def masked_map(values: dict) -> dict:
        return dict((k, mask_secrets(v) if isinstance(v, str) else v) for k, v in values.items())

    result = dict(
        changed=False,
        condarc_files=files,
        proxy_servers=masked_map(proxy_servers),
        ssl_verify=ssl_verify,
        environment=masked_map(dict((k, env[k]) for k in PROXY_VARIABLES if k in env)),
        conda=dict(path=None, proxy_servers=None),
    )

    conda = find_conda(params["conda_executable"], entry.pw_dir, env)
    if conda:
        result["conda"]["path"] = conda
        try:
            proc = subprocess.run([conda, "config", "--show", "proxy_servers", "--json"], env=env,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  preexec_fn=_demote(entry), timeout=timeout, check=False)
            reported = json.loads(proc.stdout.decode("utf-8", "replace") or "{}").get("proxy_servers") or {}
        except (OSError, ValueError, subprocess.SubprocessError) as exc:
            module.fail_json(msg="%s config --show proxy_servers failed: %s" % (conda, exc), **result)
        result["conda"]["proxy_servers"] = masked_map(reported)
        expected = dict((k, os.path.expandvars(v) if isinstance(v, str) else v) for k, v in proxy_servers.items())
        if reported != expected:
            module.fail_json(msg="conda reports proxy_servers %s, but the .condarc files say %s"
                             % (masked_map(reported), masked_map(expected)), **result)

    if params["url"]:
        url = params["url"]
        proxy, source = select_proxy(url, proxy_servers, env)
        proxy = os.path.expandvars(proxy) if proxy else proxy
        for secret in secrets_in(proxy or ""):
            module.no_log_values.add(secret)
        outcome = probe(url, proxy, ssl_context(ssl_verify, env), netrc_authorization(url, entry.pw_dir, env), timeout)
        result["probe"] = dict(url=url, proxy=mask_secrets(proxy) if proxy else None, source=source, **outcome)
        if params["require_proxy"] and proxy is None:
            module.fail_json(msg="no proxy would be used for %s: neither .condarc proxy_servers nor the login shell's "
                             "proxy variables cover it" % url, **result)
        if outcome["outcome"] != "ok":
            module.fail_json(msg="%s through %s (%s): %s" % (url, mask_secrets(proxy) if proxy else "a direct connection",
                                                             source, outcome["message"]), **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
