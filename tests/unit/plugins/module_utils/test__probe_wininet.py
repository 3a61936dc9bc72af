# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The Windows registry (WinINET) proxy, judged by the code conda runs on Windows.

CPython's ``urllib.request.getproxies``/``getproxies_registry`` and requests' ``proxy_bypass``/
``proxy_bypass_registry`` are defined only on Windows. Their real source is taken from the installed CPython and
requests, compiled here with a ``winreg`` that serves given Internet Settings values, and requests'
``get_environ_proxies`` (what conda's requests call with ``trust_env``) then runs with them patched in: the
collection's model must give the same proxies for every case.
"""

from __future__ import annotations

import ast
import re
import sys
import types
import urllib.request

import pytest
import requests.utils

from ansible_collections.condafleet.proxy.plugins.module_utils._probe import (
    WININET_SETTING,
    environment_proxies,
    select_proxy,
    wininet_bypassed,
    wininet_proxies,
)


def _windows_function(module, name: str, namespace: dict):
    """Compile the function ``name`` from ``module``'s source, wherever it is defined (Windows-only branches)."""
    with open(module.__file__, encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == name:
            code = compile(ast.Module(body=[node], type_ignores=[]), module.__file__, "exec")
            exec(code, namespace)  # pylint: disable=exec-used
            return namespace[name]
    raise AssertionError("%s not found in %s" % (name, module.__file__))


def _fake_winreg(values: dict | None) -> types.ModuleType:
    """A ``winreg`` whose Internet Settings key holds ``values`` (None: the key does not exist)."""
    winreg = types.ModuleType("winreg")
    winreg.HKEY_CURRENT_USER = object()

    class Key:
        def Close(self) -> None:  # noqa: N802 - winreg's name
            pass

    def open_key(root, path):
        assert root is winreg.HKEY_CURRENT_USER
        assert path == r"Software\Microsoft\Windows\CurrentVersion\Internet Settings"
        if values is None:
            raise FileNotFoundError(2, "The system cannot find the file specified")
        return Key()

    def query_value_ex(key, name):
        if name not in values:
            raise FileNotFoundError(2, "The system cannot find the file specified")
        return values[name], 4 if isinstance(values[name], int) else 1

    winreg.OpenKey, winreg.QueryValueEx = open_key, query_value_ex
    return winreg


@pytest.fixture
def windows_requests(monkeypatch):
    """Install a registry, make requests behave as on Windows; returns ``set_registry(values)``."""
    namespace = {"re": re, "os": __import__("os")}
    getproxies_registry = _windows_function(urllib.request, "getproxies_registry", namespace)
    namespace.update(getproxies_environment=urllib.request.getproxies_environment,
                     proxy_bypass_environment=urllib.request.proxy_bypass_environment)
    proxy_bypass_registry = _windows_function(requests.utils, "proxy_bypass_registry", namespace)
    namespace["proxy_bypass_registry"] = proxy_bypass_registry
    proxy_bypass = _windows_function(requests.utils, "proxy_bypass", namespace)

    def getproxies():  # urllib.request on Windows
        return urllib.request.getproxies_environment() or getproxies_registry()

    monkeypatch.setattr(requests.utils, "getproxies", getproxies)
    monkeypatch.setattr(requests.utils, "proxy_bypass", proxy_bypass)
    for name in list(__import__("os").environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)

    def set_registry(values):
        monkeypatch.setitem(sys.modules, "winreg", _fake_winreg(values))

    return set_registry


REGISTRIES = [
    None,
    {},
    {"ProxyEnable": 0, "ProxyServer": "corp:8080"},
    {"ProxyEnable": 1, "ProxyServer": "corp:8080"},
    {"ProxyEnable": 1, "ProxyServer": "http=web:80;https=secure:8443;ftp=f:21"},
    {"ProxyEnable": 1, "ProxyServer": "https=https://secure:8443"},
    {"ProxyEnable": 1, "ProxyServer": "socks=sock:1080"},
    {"ProxyEnable": 1, "ProxyServer": "http=web:80;socks=sock:1080"},
    {"ProxyEnable": 1, "ProxyServer": "broken-entry;http=web:80"},
    {"ProxyEnable": "0", "ProxyServer": "corp:8080"},  # REG_SZ "0" is truthy to CPython, but not to requests
    {"ProxyEnable": 1, "ProxyServer": "corp:8080", "ProxyOverride": "<local>;*.corp.example;10.*"},
    {"ProxyEnable": 1, "ProxyServer": "corp:8080", "ProxyOverride": "repo.anaconda.com;;"},
    {"ProxyEnable": 1, "ProxyServer": "corp:8080", "ProxyOverride": "conda?anaconda.org"},
    {"ProxyEnable": 1, "AutoConfigURL": "http://wpad/proxy.pac"},  # PAC only: urllib does not read it
]
URLS = ["https://conda.anaconda.org/conda-forge/noarch/repodata.json", "http://repo.anaconda.com/pkgs/main/",
        "https://mirror.corp.example/conda/", "http://intranet/conda/", "https://10.1.2.3/conda/"]
ENVIRONMENTS = [{}, {"https_proxy": "http://envproxy:3128"}, {"no_proxy": "example.org"},
                {"NO_PROXY": "*.corp.example"}, {"ftp_proxy": "http://ftp:21"}]


@pytest.mark.parametrize("registry", REGISTRIES)
@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_environment_proxies_agree_with_requests_on_windows(windows_requests, monkeypatch, registry, env):
    windows_requests(registry)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for url in URLS:
        expected = dict((key, value) for key, value in requests.utils.get_environ_proxies(url).items()
                        if key in ("http", "https"))
        ours = environment_proxies(url, env, registry or {})
        assert dict((key, value) for key, (value, _setting) in ours.items()) == expected, (url, env, registry)


def test_registry_fills_in_only_without_proxy_variables():
    registry = {"ProxyEnable": 1, "ProxyServer": "winproxy:8080"}
    url = "https://conda.anaconda.org/conda-forge/"
    servers = {"https": "http://fleet@proxy.corp:3128"}
    # No variable: the registry overrides proxy_servers for repodata, and conda uses two proxies.
    assert select_proxy(url, servers, {}, "repodata", registry) == ("http://winproxy:8080", "wininet")
    assert select_proxy(url, servers, {}, "packages", registry) == ("http://fleet@proxy.corp:3128", "condarc")
    assert environment_proxies(url, {}, registry)["https"] == ("http://winproxy:8080", WININET_SETTING)
    # Any proxy variable -- no_proxy alone too -- keeps the registry out.
    assert select_proxy(url, servers, {"no_proxy": "localhost"}, "repodata", registry) == (
        "http://fleet@proxy.corp:3128", "condarc")
    # On POSIX hosts (wininet None) nothing changes.
    assert select_proxy(url, servers, {}, "repodata") == ("http://fleet@proxy.corp:3128", "condarc")


def test_malformed_values_give_no_proxy_as_in_cpython():
    assert wininet_proxies({"ProxyEnable": 1, "ProxyServer": "nohost;alsono"}) == {}
    assert wininet_proxies({"ProxyEnable": 1, "ProxyServer": 8080}) == {"http": "http://8080", "https": "http://8080",
                                                                        "ftp": "http://8080"}
    assert not wininet_bypassed("x", {"ProxyEnable": "yes", "ProxyOverride": "*"})


def test_override_pattern_error_is_raised_as_requests_does():
    with pytest.raises(re.error):
        wininet_bypassed("conda.anaconda.org", {"ProxyEnable": 1, "ProxyOverride": "[corp"})
