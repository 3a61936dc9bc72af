# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this plugin util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""conda_proxy's ``local_proxy`` (the role's ``conda_proxy_auth``): a local authenticating proxy in front.

The corporate proxy named by ``http``/``https`` (or chosen by a PAC file) becomes the *upstream* of
``condafleet.proxy.local_auth_proxy`` (px, or cntlm for NTLM) on ``127.0.0.1:PORT``, and every method then
writes ``http://127.0.0.1:PORT`` with no credentials: the proxy password never reaches ``.condarc``, the
shell files or the environment. Pure planning here (:func:`plan`); the action plugin runs the modules.
"""

from __future__ import annotations

from ansible_collections.condafleet.proxy.plugins.module_utils._combined import local_proxy_argument_spec, validate_args

try:
    from urllib.parse import unquote, urlsplit
except ImportError:  # pragma: no cover
    pass

LOOPBACK = "127.0.0.1"
# What conda_proxy's action plugin adds to local_auth_proxy's arguments (its action plugin takes it off before the
# module sees them) to get the per-account px's client key back, for the methods: never a module option.
CLIENT_KEY = "_condafleet_client_key"


def _upstream(url: str) -> tuple:
    """``(host:port, username, password)`` of a corporate proxy URL (``http://`` only: px and cntlm speak plain
    HTTP to their upstream, as conda does to a proxy)."""
    parts = urlsplit(url if "://" in url else "http://" + url)
    if parts.scheme.lower() != "http":
        raise ValueError("local_proxy: the upstream proxy must be an http:// URL (px and cntlm connect to it in plain "
                         "HTTP, as conda does); got %s://" % parts.scheme)
    try:
        port = parts.port or 8080
    except ValueError:
        raise ValueError("local_proxy: the upstream proxy's port is not a number")
    if not parts.hostname:
        raise ValueError("local_proxy: the upstream proxy has no host name")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    return "%s:%d" % (parts.hostname, port), username, password


class Plan:
    """What conda_proxy does for ``local_proxy``: ``service_user`` to create (or None), whether cntlm must be
    installed, the ``local_auth_proxy`` arguments, and the arguments the methods then get (:meth:`with_client_key`
    adds the per-account px's client credentials to them)."""

    def __init__(self, service_user: str | None, needs_cntlm: bool, proxy_args: dict, method_args: dict) -> None:
        self.service_user = service_user
        self.needs_cntlm = needs_cntlm
        self.proxy_args = proxy_args
        self.method_args = method_args

    @property
    def proxy_url(self) -> str:
        return "http://%s:%d" % (LOOPBACK, self.proxy_args["listen_port"])

    def with_client_key(self, outcome: dict) -> None:
        """Take the client key out of local_auth_proxy's ``outcome``; the methods then give px the account's name
        and that key (``proxy_username``/``proxy_password``: the account's 0600 files, masked everywhere)."""
        key = outcome.pop(CLIENT_KEY, None)
        if key:
            self.method_args.update(proxy_username=self.proxy_args["user"], proxy_password=key)


def plan(params: dict, task_args: dict, windows: bool = False) -> Plan:
    """The plan for conda_proxy's validated ``params`` (``task_args``: the task's own arguments, rewritten for the
    methods). ``windows``: px for the connecting account with its own credentials (SSPI), see local_auth_proxy's
    action plugin. ValueError says what is wrong, before anything runs."""
    local = validate_args(local_proxy_argument_spec(), dict(params["local_proxy"] or {}))
    auth = local["auth"]
    upstreams, username, password = [], params.get("proxy_username"), params.get("proxy_password")
    for key in ("http", "https"):
        if params.get(key):
            address, url_user, url_password = _upstream(params[key])
            if address not in upstreams:
                upstreams.append(address)
            username, password = username or url_user, password or url_password
    if bool(upstreams) == bool(local["pac_url"]):
        raise ValueError("local_proxy needs exactly one of http/https (the corporate proxy, which becomes the local "
                         "proxy's upstream) and local_proxy.pac_url (a PAC file that chooses it per request)")
    users = list(dict.fromkeys(params.get("users") or []))
    proxy_args = dict(auth=auth, listen_port=local["listen_port"], no_proxy=list(params.get("no_proxy") or []),
                      venv=local["venv"], px_version=local["px_version"], environment=local["environment"],
                      start=local["start"], state=params["state"])
    for key in ("python", "px_source", "pip_index_url"):
        if local[key]:
            proxy_args[key] = local[key]
    if upstreams:
        proxy_args["upstream"] = upstreams
    else:
        proxy_args["pac_url"] = local["pac_url"]
    service_user = None
    if windows:
        if auth not in ("kerberos", "ntlm", "none"):
            raise ValueError("local_proxy auth=%s is not offered on Windows hosts: px logs in with the account's own "
                             "Windows credentials (kerberos or ntlm single sign-on) or not at all (none)" % auth)
        if username or password or local["ntlm_hash"] or users:
            raise ValueError("on Windows px runs for the connecting account with its own credentials: give no users, "
                             "proxy_username, proxy_password or ntlm_hash (nothing secret is written)")
        proxy_args.pop("environment")
        if local["venv"] == "/opt/condafleet/px":  # the POSIX default: the action plugin's own on Windows
            proxy_args.pop("venv")
        return Plan(None, False, proxy_args, _method_args(task_args, local["listen_port"]))
    if auth == "kerberos":
        # px runs as the account, with its ticket: one account per port, so one account per task.
        if len(users) > 1:
            raise ValueError("local_proxy auth=kerberos runs px as the account, with that account's ticket, on its own "
                             "port: give one account in users per task (with its own listen_port), not %d"
                             % len(users))
        if params["scope"] != "user" or not users:
            raise ValueError("local_proxy auth=kerberos configures one account's proxy: use scope=user and name the "
                             "account in users (another account's conda must not borrow its ticket)")
        if username or password:
            raise ValueError("local_proxy auth=kerberos uses the account's Kerberos ticket: give no proxy_username, "
                             "proxy_password or credentials in the proxy URL")
        proxy_args["user"] = users[0]
        proxy_args[CLIENT_KEY] = True
    else:
        service_user = local["service_user"]
        proxy_args["service_user"] = service_user
        if auth in ("ntlm", "basic"):
            if not username:
                raise ValueError("local_proxy auth=%s needs proxy_username (or credentials in the proxy URL)" % auth)
            proxy_args["username"] = username
            if auth == "ntlm":
                proxy_args.update(ntlm_domain=local["ntlm_domain"], ntlm_response=local["ntlm_response"])
                if local["ntlm_hash"]:
                    proxy_args["ntlm_hash"] = local["ntlm_hash"]
                elif password:
                    proxy_args["password"] = password
            elif password:
                proxy_args["password"] = password
        elif username or password:
            raise ValueError("local_proxy auth=none logs in nowhere: give no proxy_username or proxy_password")
    return Plan(service_user if params["state"] == "present" else None, auth == "ntlm" and params["state"] == "present",
                proxy_args, _method_args(task_args, local["listen_port"]))


def _method_args(task_args: dict, port: int) -> dict:
    """The task's arguments for the methods: the local proxy for both schemes, no credential."""
    loopback = "http://%s:%d" % (LOOPBACK, port)
    method_args = dict((key, value) for key, value in task_args.items()
                       if key not in ("local_proxy", "proxy_username", "proxy_password", "world_readable_password"))
    method_args.update(http=loopback, https=loopback)
    return method_args
