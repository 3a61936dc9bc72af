# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The .netrc written by condafleet.proxy.netrc_entry, read by its real consumers.

Python's ``netrc`` (explicit path and the default ``~/.netrc`` with its permission
check), ``curl --netrc-file`` and Python ``requests`` against a local site that
requires Basic auth, and py-rattler (the library behind pixi) fetching repodata
from a channel that requires Basic auth.

For a set of nasty passwords, every reader either gets the exact password or the
module warned that this reader cannot (and then it really cannot: each warning is
checked to be true). Older readers run in debootstrapped Debian roots from the
lab's cache (bullseye: Python 3.9, requests 2.25, curl 7.74; trixie: Python 3.13,
requests 2.32, curl 8.14) when the machine can build them (root, debootstrap).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import shutil
from unittest import mock

import pytest

from modulerun import call_module
from servers import AuthChannelServer, write_channel

HOSTILE = 'p@ss w"rd \\ #1 $(id) `id`; ünï'
# requests sends Basic credentials encoded as latin-1, the test site expects UTF-8: the shared
# curl/requests round trip uses an ASCII password; non-ASCII is covered by curl and Python's netrc.
HOSTILE_ASCII = 'p@ss w"rd \\ #1 $(id) `id`; x'
EXISTING = b"# kept\nmachine other.example login o password o\nmacdef init\ncd /pub\n\n"


def require(program: str) -> None:
    if not shutil.which(program):
        pytest.skip("not installed: %s" % program)


def clean_env(**extra) -> dict:
    """The environment of a fresh consumer: no proxies, no inherited NETRC."""
    env = {key: value for key, value in os.environ.items()
           if key.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "netrc", "curl_home")}
    env.update(extra)
    return env


def python_default_netrc(home) -> list:
    """``netrc.netrc()`` with no argument in a process whose HOME is ``home`` (owner and 0600 checks apply)."""
    code = "import json, netrc; print(json.dumps(netrc.netrc().authenticators('127.0.0.1')))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env=clean_env(HOME=str(home)), check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def curl_status(netrc_file, url) -> str:
    proc = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10",
                           "--netrc-file", str(netrc_file), url], capture_output=True, text=True, timeout=30,
                          env=clean_env(), check=False)
    return proc.stdout


def requests_status(url, **env) -> int:
    code = "import requests, sys; print(requests.get(sys.argv[1], timeout=10).status_code)"
    proc = subprocess.run([sys.executable, "-c", code, url], capture_output=True, text=True, timeout=60,
                          env=clean_env(**env), check=False)
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout)


def test_python_netrc_reads_exact_values_from_path_and_default_location(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    path = home / ".netrc"
    path.write_bytes(EXISTING)
    os.chmod(path, 0o644)  # too open for Python's default-location check: the module must fix it
    result = call_module("netrc_entry", dict(machine="127.0.0.1", login="svc user", password=HOSTILE,
                                             account="acct #2", path=str(path)))
    assert result["changed"] and result["mode_fixed"]
    import netrc

    assert netrc.netrc(str(path)).authenticators("127.0.0.1") == ("svc user", "acct #2", HOSTILE)
    assert python_default_netrc(home) == ["svc user", "acct #2", HOSTILE]


def test_curl_and_requests_authenticate_then_fail_after_absent(tmp_path, basic_auth_site):
    require("curl")
    site = basic_auth_site("svc", HOSTILE_ASCII)
    url = site.url + "/private"
    home = tmp_path / "home"
    home.mkdir()
    path = home / ".netrc"
    path.write_bytes(EXISTING)
    assert curl_status(path, url) == "401"

    assert call_module("netrc_entry", dict(machine="127.0.0.1", login="svc", password=HOSTILE_ASCII, path=str(path)))[
        "changed"]
    assert curl_status(path, url) == "200"
    assert requests_status(url, NETRC=str(path)) == 200
    assert requests_status(url, HOME=str(home)) == 200

    assert call_module("netrc_entry", dict(machine="127.0.0.1", state="absent", path=str(path)))["changed"]
    assert path.read_bytes() == EXISTING
    assert curl_status(path, url) == "401"
    assert requests_status(url, NETRC=str(path)) == 401


@pytest.mark.parametrize("password", ["plain", "with space", 'dq"', "bs\\", "#lead", "", "ünï"])
def test_curl_reads_each_quoting_case(tmp_path, basic_auth_site, password):
    require("curl")
    site = basic_auth_site("u", password)
    path = tmp_path / "netrc"
    call_module("netrc_entry", dict(machine="127.0.0.1", login="u", password=password, path=str(path)))
    assert curl_status(path, site.url + "/") == "200"


def test_entries_in_one_task_authenticate_curl_requests_and_python_netrc(tmp_path, basic_auth_site):
    """The role's form: every entry of an account in one netrc_entry task, each read back by the real clients."""
    require("curl")
    channel = basic_auth_site("svc", HOSTILE_ASCII)
    mirror = basic_auth_site("mirror", "mirror pw #2")
    home = tmp_path / "home"
    home.mkdir()
    path = home / ".netrc"
    path.write_bytes(EXISTING)
    # Two sites on 127.0.0.1 and localhost: one entry each, told apart by the clients by host name.
    entries = [dict(machine="127.0.0.1", login="svc", password=HOSTILE_ASCII),
               dict(machine="localhost", login="mirror", password="mirror pw #2", account="acct #9")]
    result = call_module("netrc_entry", dict(entries=entries, path=str(path)))
    assert result["changed"] and [entry["changed"] for entry in result["entries"]] == [True, True]
    channel_url = channel.url + "/private"
    mirror_url = mirror.url.replace("127.0.0.1", "localhost") + "/private"
    assert curl_status(path, channel_url) == "200"
    assert curl_status(path, mirror_url) == "200"
    assert requests_status(channel_url, NETRC=str(path)) == 200
    assert requests_status(mirror_url, HOME=str(home)) == 200
    import netrc

    assert netrc.netrc(str(path)).authenticators("localhost") == ("mirror", "acct #9", "mirror pw #2")
    assert python_default_netrc(home) == ["svc", "", HOSTILE_ASCII]

    assert call_module("netrc_entry", dict(entries=entries, path=str(path)))["changed"] is False
    assert call_module("netrc_entry", dict(entries=entries, state="absent", path=str(path)))["changed"]
    assert path.read_bytes() == EXISTING
    assert curl_status(path, channel_url) == "401" and curl_status(path, mirror_url) == "401"


# ----------------------------------------------------------------------------- nasty passwords x real readers

NASTY = ["ch#an@l:pw/%9", 'a"b', "back\\slash", "#lead", '"lead', "sp ace", "tab\t", "ünï€", ""]
LOGIN = "svc"
# The second entry of the file: a reader that rejects the whole file cannot read it either.
OTHER_ENTRY = dict(machine="localhost", login="other", password="other-pw")
RATTLER = "rattler (pixi, py-rattler)"
PYTHON_310 = "Python 3.10 and older"
OLD_CURL = "curl before 7.84"

RATTLER_SCRIPT = """
import asyncio, os, sys, tempfile
from rattler import Channel, Platform, fetch_repo_data
from rattler.networking import Client

async def main():
    client = Client.default_client(max_retries=0)
    await fetch_repo_data(channels=[Channel(sys.argv[1])], platforms=[Platform("noarch")],
                          cache_path=tempfile.mkdtemp(), callback=None, client=client)

try:
    asyncio.run(main())
    print("OK")
except Exception as exc:
    print("ERR %s" % exc)
sys.stdout.flush()
os._exit(0)  # py-rattler can crash at interpreter exit
"""


def write_with_warnings(path, password) -> list[str]:
    """The module writes the target entry and a plain second one in one task; returns the warnings it raised."""
    from ansible.module_utils.basic import AnsibleModule

    raised: list[str] = []
    original = AnsibleModule.warn

    def warn(self, warning, *args, **kwargs):
        raised.append(warning)
        return original(self, warning, *args, **kwargs)

    entries = [dict(machine="127.0.0.1", login=LOGIN, password=password), OTHER_ENTRY]
    with mock.patch.object(AnsibleModule, "warn", warn):
        result = call_module("netrc_entry", dict(entries=entries, path=str(path)))
    assert result["changed"] and not result.get("failed"), result
    return raised


def warned(warnings: list[str], reader: str) -> tuple[bool, bool]:
    """(``reader`` is named as unable to read the value, ``reader`` is named as rejecting the whole file)."""
    named = whole_file = False
    for warning in warnings:
        reasons = warning.split(" but ", 1)[1] if " but " in warning else ""
        named |= reader in reasons
        whole_file |= reader in reasons.split(" reject the whole file", 1)[0] and "reject the whole file" in reasons
    return named, whole_file


def check_reader(reader: str, warnings: list[str], reads_value: bool, reads_other_entry: bool) -> None:
    """The reader gets the exact password unless the module named it; a named reader really fails, and fails on
    the whole file exactly when the warning says so."""
    named, whole_file = warned(warnings, reader)
    assert reads_value is not named, (reader, reads_value, warnings)
    assert reads_other_entry is not whole_file, (reader, reads_other_entry, warnings)


def python_netrc_reads(code_runner, path: str, password: str) -> tuple[bool, bool]:
    """What a Python ``netrc`` module reads: (exact target password, the other entry)."""
    code = ("import json, netrc, sys\n"
            "try:\n    hosts = netrc.netrc(sys.argv[1]).hosts\nexcept netrc.NetrcParseError:\n    hosts = {}\n"
            "print(json.dumps({name: list(value) for name, value in hosts.items()}))")
    hosts = json.loads(code_runner([code, path]))
    target, other = hosts.get("127.0.0.1"), hosts.get("localhost")
    return (target is not None and target[0] == LOGIN and target[2] == password,
            other is not None and other[2] == OTHER_ENTRY["password"])


def requests_reads(code_runner, path: str, url: str, password: str) -> bool:
    """``requests``' own netrc lookup (``NETRC``), and for an ASCII password the real request (requests encodes
    Basic credentials as latin-1, the test site expects UTF-8, so the wire check is ASCII only)."""
    code = ("import json, os, sys, requests\nos.environ['NETRC'] = sys.argv[1]\n"
            "auth = requests.utils.get_netrc_auth(sys.argv[2])\n"
            "status = requests.get(sys.argv[2], timeout=10).status_code if sys.argv[3] == 'wire' else None\n"
            "print(json.dumps([auth, status]))")
    auth, status = json.loads(code_runner([code, path, url, "wire" if password.isascii() else "-"]))
    return auth == [LOGIN, password] and status in (200, None)


def host_python(argv: list[str]) -> str:
    proc = subprocess.run([sys.executable, "-c"] + argv, capture_output=True, text=True, timeout=60,
                          env=clean_env(), check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def rattler_fetches(path, url: str) -> bool:
    proc = subprocess.run([sys.executable, "-c", RATTLER_SCRIPT, url], capture_output=True, text=True, timeout=120,
                          env=clean_env(NETRC=str(path)), check=False)
    assert proc.stdout.startswith(("OK", "ERR")), proc.stdout + proc.stderr
    if proc.stdout.startswith("ERR"):
        assert "401" in proc.stdout, proc.stdout  # refused credentials, not some other failure
    return proc.stdout.startswith("OK")


@pytest.fixture(scope="module")
def rattler_channels(tmp_path_factory):
    """``rattler_channels(password)``: two channels, on 127.0.0.1 for (svc, password) and on localhost for the
    second entry's credentials."""
    try:
        import rattler  # noqa: F401 -- only whether it is installed
    except ImportError:
        pytest.skip("py-rattler is not installed (requirements/dev.txt pins it)")
    root = str(tmp_path_factory.mktemp("rattler-channel"))
    write_channel(root)
    servers = []

    def start(password: str) -> tuple[str, str]:
        target = AuthChannelServer(root, LOGIN, password).__enter__()
        other = AuthChannelServer(root, OTHER_ENTRY["login"], OTHER_ENTRY["password"]).__enter__()
        servers.extend((target, other))
        return target.url + "/fleet-channel", other.url.replace("127.0.0.1", "localhost") + "/fleet-channel"

    yield start
    for server in servers:
        server.__exit__(None, None, None)


@pytest.mark.parametrize("password", NASTY)
def test_each_reader_gets_the_exact_password_or_was_warned(tmp_path, basic_auth_site, rattler_channels, password):
    require("curl")
    path = tmp_path / "netrc"
    warnings = write_with_warnings(path, password)
    site = basic_auth_site(LOGIN, password)
    url = site.url + "/private"

    # Python 3.11 netrc and requests on it: never named, so always exact.
    check_reader("Python 3.11", warnings, *python_netrc_reads(host_python, str(path), password))
    check_reader("Python 3.11", warnings, requests_reads(host_python, str(path), url, password), True)
    # curl (7.88 here): never named.
    check_reader("curl 7.88", warnings, curl_status(path, url) == "200", True)
    # rattler: the exact password on the wire, or named (and then it really fails).
    channel, other_channel = rattler_channels(password)
    check_reader(RATTLER, warnings, rattler_fetches(path, channel), rattler_fetches(path, other_channel))
    if password == "ch#an@l:pw/%9":  # the password of the issue: bare, no warning at all
        assert warnings == [] and b"password ch#an@l:pw/%9\n" in path.read_bytes()


def test_a_file_an_older_version_quoted_is_rewritten_bare_and_rattler_then_authenticates(tmp_path, rattler_channels):
    path = tmp_path / "netrc"
    path.write_bytes(b'machine 127.0.0.1 login svc password "ch#an@l:pw/%9"\n')
    channel, _other = rattler_channels("ch#an@l:pw/%9")
    assert not rattler_fetches(path, channel)  # rattler sends the quotes: 401
    result = call_module("netrc_entry", dict(machine="127.0.0.1", login=LOGIN, password="ch#an@l:pw/%9",
                                             path=str(path)))
    assert result["changed"] is True
    assert path.read_bytes() == b"machine 127.0.0.1 login svc password ch#an@l:pw/%9\n"
    assert rattler_fetches(path, channel)
    assert call_module("netrc_entry", dict(machine="127.0.0.1", login=LOGIN, password="ch#an@l:pw/%9",
                                           path=str(path)))["changed"] is False


# ----------------------------------------------------------------------------- older and newer readers (lab roots)


@pytest.fixture(scope="module")
def debian_roots():
    """``{suite: root}`` for bullseye and trixie from the lab's debootstrap cache (built once, about a minute)."""
    if os.geteuid() != 0:
        pytest.skip("chroot into the lab's Debian roots needs root")
    missing = [program for program in ("debootstrap", "unshare", "chroot", "mount") if not shutil.which(program)]
    if missing:
        pytest.skip("not installed: %s" % ", ".join(missing))
    import lab as labmod

    return labmod.bootstrap_all(["bullseye", "trixie"])


def in_root(root: str, shared: str, argv: list[str], timeout: int = 60) -> subprocess.CompletedProcess:
    """``argv`` chrooted into ``root`` with ``shared`` bind-mounted on its ``/mnt``, in a private mount namespace:
    the cached root itself is never written."""
    script = 'mount --bind "$0" "$1/mnt" && exec chroot "$@"'
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, shared, root,
                           "env", "-i", "PATH=/usr/bin:/bin", "LANG=C.UTF-8"] + argv,
                          capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.slow
@pytest.mark.parametrize("password", NASTY)
def test_older_and_newer_python_requests_and_curl_get_the_password_or_were_warned(tmp_path, basic_auth_site,
                                                                                  debian_roots, password):
    shared = tmp_path / "shared"
    shared.mkdir()
    warnings = write_with_warnings(shared / "netrc", password)
    site = basic_auth_site(LOGIN, password)
    url = site.url + "/private"
    readers = {"bullseye": (PYTHON_310, OLD_CURL), "trixie": ("Python 3.13", "curl 8.14")}
    for suite, (python_name, curl_name) in readers.items():
        root = debian_roots[suite]

        def runner(argv, root=root):
            proc = in_root(root, str(shared), ["python3", "-c"] + argv)
            assert proc.returncode == 0, proc.stderr
            return proc.stdout

        check_reader(python_name, warnings, *python_netrc_reads(runner, "/mnt/netrc", password))
        check_reader(python_name, warnings, requests_reads(runner, "/mnt/netrc", url, password),
                     python_netrc_reads(runner, "/mnt/netrc", password)[1])
        curl = in_root(root, str(shared), ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10",
                                           "--netrc-file", "/mnt/netrc", url])
        check_reader(curl_name, warnings, curl.stdout == "200", True)
