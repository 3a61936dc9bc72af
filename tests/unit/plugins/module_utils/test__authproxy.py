# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The local authenticating proxy's renderers and checks, without AnsibleModule."""

from __future__ import annotations

import configparser
import os
import plistlib
import shutil
import subprocess

import pytest

from ansible_collections.condafleet.proxy.plugins.module_utils import _authproxy as ap

HOSTILE = ["p@ss w0rd", "q'uote", 'd"q', "back\\slash", "$HOME", "$X}{", "`id`", "%n", "#hash", "ünï"]


# ----------------------------------------------------------------------------- validation

@pytest.mark.parametrize("value, expected", [
    ("proxy.corp.example:8080", ("proxy.corp.example", 8080)),
    ("http://proxy.corp.example:3128/", ("proxy.corp.example", 3128)),
    ("10.0.0.1:80", ("10.0.0.1", 80)),
    ("[fd00::1]:3128", ("[fd00::1]", 3128)),
])
def test_upstream_accepted(value, expected):
    assert ap.parse_upstream(value) == expected


@pytest.mark.parametrize("value", ["proxy", "proxy:", "proxy:99999", "https://proxy:443", "pr oxy:1", "proxy:8080\n"
                                   "x", ":80", "proxy:0"])
def test_upstream_refused(value):
    with pytest.raises(ap.AuthProxySpecError):
        ap.parse_upstream(value)


def test_upstream_with_credentials_is_refused_and_the_password_not_echoed():
    with pytest.raises(ap.AuthProxySpecError) as info:
        ap.parse_upstream("http://alice:Sup3rSecret@proxy:8080")
    assert "Sup3rSecret" not in str(info.value) and "credentials" in str(info.value)


def test_no_proxy_pac_and_port_checks():
    assert ap.check_no_proxy(["a.example", " ", "10.0.0.0/8", "*.corp"]) == ["a.example", "10.0.0.0/8", "*.corp"]
    for bad in (["a b"], ["a,b"], ["a\nb"]):
        with pytest.raises(ap.AuthProxySpecError):
            ap.check_no_proxy(bad)
    assert ap.check_pac_url("http://wpad/proxy.pac") == "http://wpad/proxy.pac"
    assert ap.check_pac_url("file:///etc/proxy.pac") == "/etc/proxy.pac"
    for bad in ("proxy.pac", "http://x/\n"):
        with pytest.raises(ap.AuthProxySpecError):
            ap.check_pac_url(bad)
    for bad in (80, 0, 70000):
        with pytest.raises(ap.AuthProxySpecError):
            ap.check_port(bad)


# ----------------------------------------------------------------------------- NTLM hashes

def test_nt_hash_known_values():
    # MS-NLMP's test vector (Password) and the empty password's well-known hash
    assert ap.nt_hash("Password").hex().upper() == "A4F49C406510BDCAB6824EE7C30FD852"
    assert ap.nt_hash("").hex() == "31d6cfe0d16ae931b73c59d7e0c089c0"


def test_ntlmv2_hash_ms_nlmp_vector():
    # MS-NLMP 4.2.4.1.1: NTOWFv2("Password", "User", "Domain") = 0c868a403bfd7a93a3001ef22ef02e3f
    assert ap.ntlmv2_hash("User", "Domain", "Password") == "0C868A403BFD7A93A3001EF22EF02E3F"


@pytest.mark.parametrize("password, expected", [
    ("x" * 100, "4CAFD2AB5F08EAA317E9E7E47418FC28"),  # more than one MD4 block
    ("ünïcødé €", "A14574769E718A7E453E0C2D77E179B8"),
    ("p@ss w0rd", "0AF902370E06AAC415BCE049AB3E411C"),
])
def test_ntlmv2_hash_long_and_unicode_passwords(password, expected):
    # expected: pyspnego 0.12.4's ntowfv2("alice", ntowfv1(password), "CORP")
    assert ap.ntlmv2_hash("alice", "CORP", password) == expected


def test_cntlm_form_is_what_cntlm_h_prints():
    # `cntlm -H -u alice -d CORP` (Debian's cntlm 0.92.3) with the password S3cret! on stdin
    assert ap.ntlm_digest("nt", "alice", "CORP", "S3cret!") == "EF4D0E69EC8A4DFED9AF73DD9879D40F"
    assert ap.ntlm_digest("ntlmv2", "alice", "CORP", "S3cret!") == "7DC77D9943E4EDA85A7DFFEAA9036059"
    assert ap.ntlm_digest("ntlmv2", "bob", "CORP", "Ntlm-pw:9") == "049F415058ECFC2F247592A203718A51"


def test_ntlm_hash_option_check():
    assert ap.check_ntlm_hash(" 0c868a403bfd7a93a3001ef22ef02e3f ") == "0C868A403BFD7A93A3001EF22EF02E3F"
    for bad in ("", "xyz", "0c868a403bfd7a93a3001ef22ef02e3", "aad3b435b51404eeaad3b435b51404ee:31d6cfe0d16ae931"):
        with pytest.raises(ap.AuthProxySpecError):
            ap.check_ntlm_hash(bad)


# ----------------------------------------------------------------------------- px and cntlm files

def test_px_ini_kerberos_is_loopback_only_and_has_no_user():
    ini = ap.render_px_ini("kerberos", 3128, ["proxy.corp:8080"], no_proxy=["localhost", "10.0.0.0/8"])
    parser = configparser.ConfigParser()
    parser.read_string(ini.decode())
    proxy = parser["proxy"]
    assert proxy["server"] == "proxy.corp:8080" and proxy["listen"] == "127.0.0.1" and proxy["port"] == "3128"
    assert proxy["gateway"] == "0" and proxy["auth"] == "NEGOTIATE" and "username" not in proxy
    assert proxy["noproxy"] == "localhost,10.0.0.0/8"
    assert parser["settings"]["log"] == "0"


def test_px_ini_pac_and_basic():
    ini = ap.render_px_ini("basic", 4000, pac_url="http://wpad/proxy.pac", username="svc", pac_reload=30).decode()
    assert "pac = http://wpad/proxy.pac" in ini and "server" not in ini
    assert "auth = BASIC" in ini and "username = svc" in ini and "proxyreload = 30" in ini
    assert ap.render_px_ini("basic", 4000, ["p:1"]) == ap.render_px_ini("basic", 4000, ["p:1"])  # deterministic


def _dotenv():
    """python-dotenv, the reader px uses: installed, or imported from the lab's px wheelhouse (a wheel is a zip)."""
    try:
        import dotenv
    except ImportError:
        import glob
        import sys

        wheels = glob.glob("/var/cache/condafleet-lab/px-wheels/python_dotenv-*.whl")
        if not wheels:
            pytest.skip("python-dotenv is neither installed nor in /var/cache/condafleet-lab/px-wheels")
        sys.path.insert(0, wheels[0])
        import dotenv
    return dotenv


@pytest.mark.parametrize("password", HOSTILE)
def test_px_env_round_trips_through_python_dotenv(password, tmp_path):
    dotenv = _dotenv()
    path = tmp_path / ".env"
    path.write_bytes(ap.render_px_env(password))
    assert dotenv.dotenv_values(str(path)) == {"PX_PASSWORD": password}


def test_px_env_refuses_what_dotenv_would_expand():
    with pytest.raises(ap.AuthProxySpecError, match="expands"):
        ap.render_px_env("pre${HOME}post")


def test_cntlm_conf_has_the_hash_and_never_a_password():
    conf = ap.render_cntlm_conf("svc", "CORP", "0C868A403BFD7A93A3001EF22EF02E3F", 3128, ["p1:8080", "p2:8080"],
                                ["localhost"]).decode()
    assert "PassNTLMv2\t0C868A403BFD7A93A3001EF22EF02E3F" in conf
    assert "\nPassword" not in conf and "Listen\t\t127.0.0.1:3128" in conf and "Gateway\tno" in conf
    assert conf.count("\nProxy\t\t") == 2
    masked = ap.mask_file(conf)
    assert "0C868A403BFD" not in masked and "PassNTLMv2\t" + ap.MASK in masked


def test_mask_file_masks_the_basic_password():
    masked = ap.mask_file(ap.render_px_env("Sup3r'Secret").decode())
    assert "Sup3r" not in masked and ap.MASK in masked


# ----------------------------------------------------------------------------- service files

ARGV = ["/opt/condafleet/px/bin/px", "--config=/etc/condafleet/auth-proxy/px.ini"]


def test_system_unit_parses_back():
    unit = ap.render_systemd_unit("d", ARGV, "/etc/condafleet/auth-proxy", user="pxsvc",
                                  environment={"KRB5_CONFIG": "/etc/krb5 lab.conf", "Z": "100%$"})
    sections = ap.parse_unit(unit)
    service = sections["Service"]
    assert service["User"] == ["pxsvc"] and service["Restart"] == ["on-failure"]
    assert service["WorkingDirectory"] == ["/etc/condafleet/auth-proxy"]
    assert sections["Install"]["WantedBy"] == ["multi-user.target"]
    assert ap.unit_exec_start(unit) == ARGV
    assert ap.unit_environment(unit) == {"KRB5_CONFIG": "/etc/krb5 lab.conf", "Z": "100%$"}


def test_user_unit_has_no_user_and_wants_default_target():
    unit = ap.render_systemd_unit("d", ARGV, "/home/a/.config/condafleet/auth-proxy")
    sections = ap.parse_unit(unit)
    assert "User" not in sections["Service"] and sections["Install"]["WantedBy"] == ["default.target"]
    assert "ProtectHome" not in sections["Service"]  # it must read the account's own files and ticket cache


def test_exec_start_quoting_round_trips():
    argv = ["/opt/with space/px", "--config=/a b/px.ini", "100%", "$HOME", 'q"uote']
    assert ap.unit_exec_start(ap.render_systemd_unit("d", argv, "/tmp")) == argv


def test_unit_refuses_newlines():
    with pytest.raises(ap.AuthProxySpecError):
        ap.render_systemd_unit("d", ["/bin/px\nExecStartPre=/bin/sh"], "/tmp")
    with pytest.raises(ap.AuthProxySpecError):
        ap.render_systemd_unit("d", ARGV, "/tmp", environment={"A B": "x"})


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
@pytest.mark.parametrize("user", ["root-owned", None])
def test_units_pass_systemd_analyze_verify(tmp_path, user):
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    argv = ["/bin/sleep", "1"]
    if user:
        unit = ap.render_systemd_unit("d", argv, "/tmp", user="daemon", environment={"A": "b c"})
        command = ["systemd-analyze", "verify"]
    else:
        unit = ap.render_systemd_unit("d", argv, "/tmp", environment={"A": "b c"})
        command = ["systemd-analyze", "--user", "verify"]
    path = tmp_path / "condafleet-auth-proxy.service"
    path.write_bytes(unit)
    proc = subprocess.run(command + [str(path)], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, XDG_RUNTIME_DIR=str(runtime)), check=False)
    assert proc.returncode == 0, proc.stderr


def test_launchd_plist_daemon_and_agent():
    daemon = plistlib.loads(ap.render_launchd_plist("org.condafleet.x", ARGV, "/etc/cf", user="pxsvc",
                                                    environment={"KRB5CCNAME": "FILE:/tmp/k"}))
    assert daemon["Label"] == "org.condafleet.x" and daemon["ProgramArguments"] == ARGV
    assert daemon["UserName"] == "pxsvc" and daemon["RunAtLoad"] is True
    assert daemon["KeepAlive"] == {"SuccessfulExit": False} and daemon["EnvironmentVariables"]["KRB5CCNAME"]
    agent = plistlib.loads(ap.render_launchd_plist("org.condafleet.x", ARGV, "/Users/a/.config/cf"))
    assert "UserName" not in agent and "EnvironmentVariables" not in agent


# ----------------------------------------------------------------------------- venv

def test_installed_version_reads_dist_info(tmp_path):
    venv = tmp_path / "venv"
    assert ap.installed_version(str(venv)) is None
    (venv / "bin").mkdir(parents=True)
    python = venv / "bin" / "python"
    python.write_text("#!/bin/sh\n")
    python.chmod(0o755)
    site = venv / "lib" / "python3.11" / "site-packages"
    site.mkdir(parents=True)
    assert ap.installed_version(str(venv)) is None
    (site / "px_proxy-0.13.0.dist-info").mkdir()
    assert ap.installed_version(str(venv)) == "0.13.0"


def test_pip_argv_offline_and_index():
    offline = ap.pip_install_argv("/v/bin/python", "0.13.0", source="/w")
    assert offline[-1] == "px-proxy==0.13.0" and "--no-index" in offline and "/w" in offline
    index = ap.pip_install_argv("/v/bin/python", "0.13.0", index_url="https://m/simple")
    assert "--index-url" in index and "--no-index" not in index


# ---------------------------------------------------------------------------- the per-account px's client key


def test_client_token_is_kept_from_run_to_run_and_made_when_missing_or_unusable():
    first = ap.client_token(None)
    assert ap.CLIENT_TOKEN.match(first) and first != ap.client_token(None)
    written = ap.render_px_client_env(first)
    assert ap.client_token(written) == first
    for before in (b"", b"PX_CLIENT_PASSWORD='short'\n", b"PX_CLIENT_PASSWORD='%s x'\n" % (b"a" * 40),
                   b"# PX_CLIENT_PASSWORD='" + b"b" * 40 + b"'\n", b"\xff\xfe garbage"):
        made = ap.client_token(before)
        assert ap.CLIENT_TOKEN.match(made) and made.encode() not in before


def test_client_env_refuses_a_key_px_or_dotenv_would_read_otherwise():
    with pytest.raises(ap.AuthProxySpecError):
        ap.render_px_client_env("it's ${HOME} and too short")


def test_client_key_is_masked_in_diffs_and_given_on_the_command_line():
    key = ap.client_token(None)
    text = ap.render_px_client_env(key).decode()
    assert key not in ap.mask_file(text) and "PX_CLIENT_PASSWORD=" in ap.mask_file(text)
    assert ap.px_client_args("alice") == ["--client-auth=BASIC", "--client-username=alice"]
