# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this module util is **PRIVATE** to the collection. It can have breaking changes at any time.
# Do not use this from other collections or standalone plugins/modules!

"""conda_proxy's options, and the one-method tasks they stand for.

:func:`method_calls` turns the options into the arguments of ``condarc_proxy``,
``env_proxy`` and ``netrc_entry`` for each account: the module plans them with the same
code those modules run, and on Windows the action plugin runs those modules' action plugins
with them, so every path writes the same files.
"""

from __future__ import annotations

import typing as t

from ansible.module_utils.basic import FILE_COMMON_ARGUMENTS
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible_collections.condafleet.proxy.plugins.module_utils import _condarc, _envfiles, _methods, _netrc

if t.TYPE_CHECKING:  # pragma: no cover
    from ansible.module_utils.basic import AnsibleModule

METHODS = ("condarc", "env", "netrc")
# The module of each method, and what the messages call its file. "ca" is conda_proxy's own (ca_certificates).
MODULES = {"condarc": "condarc_proxy", "env": "env_proxy", "netrc": "netrc_entry"}
_FILES = {"condarc": ".condarc", "env": "environment files", "netrc": ".netrc", "ca": "corporate CA"}


def validate_args(argument_spec: dict, args: dict, file_args: bool = False, **constraints) -> dict:
    """Validate task args with a module's own argument spec and constraints (``mutually_exclusive``,
    ``required_if``...), plus mode/owner/group when the module takes them; raise ValueError with the
    validator's messages. (Also used by the action plugins, which validate on the controller.)"""
    if file_args:
        argument_spec = dict(FILE_COMMON_ARGUMENTS, **argument_spec)
    result = ArgumentSpecValidator(argument_spec, **constraints).validate(args)
    if result.error_messages:
        raise ValueError("; ".join(result.error_messages))
    return result.validated_parameters


def argument_spec() -> dict:
    """The options of ``condafleet.proxy.conda_proxy``."""
    return dict(
        methods=dict(type="list", elements="str", choices=list(METHODS), default=list(METHODS)),
        http=dict(type="str"),
        https=dict(type="str"),
        bypass=dict(type="list", elements="str", default=[], no_log=False),
        no_proxy=dict(type="list", elements="str", default=[]),
        proxy_username=dict(type="str"),
        proxy_password=dict(type="str", no_log=True),
        ssl_verify=dict(type="raw"),
        ca_certificates=dict(type="str"),
        world_readable_password=dict(type="bool", default=False, no_log=False),
        final=dict(type="bool", default=False),
        netrc_entries=dict(type="list", elements="dict", default=[], options=dict(
            machine=dict(type="str"),
            default=dict(type="bool"),
            login=dict(type="str"),
            password=dict(type="str", no_log=True),
            account=dict(type="str", no_log=True),
        )),
        scope=dict(type="str", default="system", choices=["system", "user"]),
        users=dict(type="list", elements="str", default=[]),
        target_os=dict(type="str", default="auto", choices=["auto", "Linux", "Darwin"]),
        root=dict(type="str", default="/"),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        # Done by the action plugin after the module (conda_proxy_info per account); the module only accepts them.
        verify=dict(type="bool", default=False),
        verify_url=dict(type="str", default="https://conda.anaconda.org/conda-forge/noarch/repodata.json"),
        verify_timeout=dict(type="int", default=20),
        verify_conda_executable=dict(type="raw"),
        # Also done by the action plugin: a local authenticating proxy before the methods (the module accepts it).
        local_proxy=dict(type="dict", options=local_proxy_argument_spec()),
    )


def local_proxy_argument_spec() -> dict:
    """The suboptions of ``local_proxy`` (see ``plugin_utils/_local_proxy.py``): local_auth_proxy's options of the
    same names, written out here rather than imported from ``_authproxy``, which every conda_proxy run on every host
    would then import (and compile) for an option most runs do not use."""
    return dict(
        auth=dict(type="str", default="none", choices=["kerberos", "ntlm", "basic", "none"]),
        pac_url=dict(type="str"),
        listen_port=dict(type="int", default=3128),
        service_user=dict(type="str", default="condafleet-proxy"),
        ntlm_domain=dict(type="str", default=""),
        ntlm_hash=dict(type="str", no_log=True),
        ntlm_response=dict(type="str", default="ntlmv2", choices=["ntlmv2", "nt"]),
        venv=dict(type="path", default="/opt/condafleet/px"),
        python=dict(type="path"),
        px_version=dict(type="str", default="0.13.0"),
        px_source=dict(type="path"),
        pip_index_url=dict(type="str"),
        environment=dict(type="dict", default={}),
        start=dict(type="bool", default=True),
    )


class MethodCall:
    """One method for one account (``user`` ``''``: the account the module runs as)."""

    def __init__(self, method: str, user: str, args: dict) -> None:
        self.method = method
        self.user = user
        # The one-method module's arguments; None and the defaults that name nothing are left out.
        self.args = dict((key, value) for key, value in args.items()
                         if value is not None and (key, value) not in (("root", "/"), ("target_os", "auto")))

    @property
    def module(self) -> str:
        return MODULES[self.method]

    def validated(self) -> dict:
        """The arguments as the one-method module sees them, defaults filled in; ValueError when invalid."""
        if self.method == "ca":
            return dict(self.args, user=self.args.get("user"), root=self.args.get("root", "/"))
        if self.method == "condarc":
            return validate_args(_condarc.argument_spec(), self.args, file_args=True,
                                 mutually_exclusive=_condarc.MUTUALLY_EXCLUSIVE, required_if=_condarc.REQUIRED_IF)
        spec = _envfiles.argument_spec() if self.method == "env" else _netrc.argument_spec()
        return validate_args(spec, self.args, file_args=True)

    def check(self) -> None:
        """Refuse, without touching the host, arguments the method's module would refuse (ValueError)."""
        params = self.validated()
        if self.method == "ca":
            return
        if self.method == "condarc":
            spec = _condarc.spec_from_params(params)
            _methods.refuse_system_password("condarc", params, spec.has_literal_password)
        elif self.method == "env":
            spec = _envfiles.spec_from_params(params)
            _methods.refuse_system_password("env", params, spec.has_literal_password)
        else:
            _netrc.specs_from_params(params)

    def plan(self, module: AnsibleModule, pending: t.Collection[str] = ()) -> _methods.Plan:
        """The method's plan; ``pending``: the files of the calls planned before it (the CA ``ssl_verify`` names)."""
        if self.method == "condarc":
            return _methods.plan_condarc(module, self.validated(), pending)
        planner = {"ca": _methods.plan_ca, "env": _methods.plan_env, "netrc": _methods.plan_netrc}
        return planner[self.method](module, self.validated())

    def describe(self, exc: Exception) -> str:
        """The failure message: which method and account, then the one-method module's message."""
        whose = " of %s" % self.user if self.user else ""
        return "%s%s: %s" % (_FILES[self.method], whose, getattr(exc, "msg", None) or str(exc))


# Where ca_certificates goes: the system directory conda reads, or each account's ~/.conda.
CA_NAME = "condafleet-proxy-ca.pem"
CA_SYSTEM_PATH = "/etc/conda/" + CA_NAME
CA_USER_PATH = "~/.conda/" + CA_NAME


def ca_ssl_verify(params: dict) -> str | None:
    """The ``ssl_verify`` that points conda at ``ca_certificates`` (``~/`` is expanded in each account's home)."""
    if params.get("ca_certificates") is None:
        return None
    return CA_SYSTEM_PATH if params["scope"] == "system" else CA_USER_PATH


def check_ca_certificates(params: dict) -> None:
    """Refuse what cannot be a CA bundle, and ``ssl_verify`` beside it (ValueError)."""
    pem = params.get("ca_certificates")
    if pem is None:
        return
    if params.get("ssl_verify") not in (None, ""):
        raise ValueError("ca_certificates and ssl_verify are mutually exclusive: ssl_verify points to the "
                         "ca_certificates file")
    if params["state"] == "present" and "-----BEGIN CERTIFICATE-----" not in pem:
        raise ValueError("ca_certificates must hold PEM certificates (-----BEGIN CERTIFICATE-----)")


def method_calls(params: dict) -> list[MethodCall]:
    """The one-method tasks for the validated conda_proxy ``params``, in the order they are applied."""
    accounts = list(dict.fromkeys(params["users"])) or [""]  # each account once, in the order given
    # .condarc and the environment files are machine-wide in system scope; .netrc is always the accounts' own.
    owners = [""] if params["scope"] == "system" else accounts
    shared = dict(state=params["state"], root=params["root"])
    calls = []
    # The CA first: the .condarc's ssl_verify names it. With state=absent both go.
    if params["ca_certificates"] is not None:
        calls.extend(MethodCall("ca", user, dict(
            shared, user=user or None, ca_certificates=params["ca_certificates"],
            path=CA_SYSTEM_PATH if params["scope"] == "system" else CA_USER_PATH,
        )) for user in owners)
    if "condarc" in params["methods"]:
        calls.extend(MethodCall("condarc", user, dict(
            shared, scope=params["scope"], user=user or None, http=params["http"], https=params["https"],
            bypass=params["bypass"], proxy_username=params["proxy_username"],
            proxy_password=params["proxy_password"], ssl_verify=ca_ssl_verify(params) or params["ssl_verify"],
            final=params["final"], world_readable_password=params["world_readable_password"],
        )) for user in owners)
    if "env" in params["methods"]:
        calls.extend(MethodCall("env", user, dict(
            shared, scope=params["scope"], user=user or None, http_proxy=params["http"],
            https_proxy=params["https"], no_proxy=params["no_proxy"], proxy_username=params["proxy_username"],
            proxy_password=params["proxy_password"], target_os=params["target_os"],
            world_readable_password=params["world_readable_password"],
        )) for user in owners)
    if "netrc" in params["methods"] and params["netrc_entries"]:
        calls.extend(MethodCall("netrc", user, dict(shared, user=user or None, entries=params["netrc_entries"]))
                     for user in accounts)
    return calls
