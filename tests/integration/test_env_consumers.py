# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What env_proxy writes, read back by the real consumers.

Every file lives in a sandbox: the module runs with ``root=<tmp>`` and the consumers run with
``HOME`` inside it (fresh ``env -i`` processes), or, for the files only PAM and systemd read at
fixed paths, in a private mount namespace where a temp file is bind-mounted over the real path.
"""

from __future__ import annotations

import os
import pwd
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from modulerun import call_module
from servers import require

from ansible_collections.condafleet.proxy.plugins.module_utils._envfiles import (
    EnvSpec,
    env_targets,
    is_noncharacter,
    render,
)

ME = pwd.getpwuid(os.geteuid())
GENERATOR = "/usr/lib/systemd/user-environment-generators/30-systemd-environment-d-generator"
# Every character the issue names: quotes, $(), backticks, ;, \, spaces, #, unicode.
HOSTILE = "it's \"q\" $(touch /tmp/cf-pwned) `id` $HOME ${HOME} ; a|b & c \\ \\\\ %41 # not a comment é✓ 漢"
PASSWORD = "p@ss:w'o\"rd $(id);`x`\\ %2F é"
PAM_SAFE = HOSTILE.replace("#", "")  # /etc/environment cannot hold '#' (the module refuses it there)


def sandbox_home(root) -> str:
    """The account's home as the module computes it under ``root``."""
    return os.path.join(str(root), ME.pw_dir.lstrip("/"))


def fresh(argv: list[str], home: str, **extra_env) -> str:
    """Run ``argv`` in an empty environment with HOME in the sandbox; its stdout as text."""
    env = {"HOME": home, "LANG": "C.UTF-8", "PATH": "/usr/local/bin:/usr/bin:/bin"}
    env.update(extra_env)
    out = subprocess.run(argv, env=env, capture_output=True, timeout=60, cwd=home, check=False)
    assert out.returncode == 0, out.stderr.decode(errors="replace")
    return out.stdout.decode("utf-8")


SHELLS = {
    "bash": lambda name: ["bash", "-l", "-c", 'printf %%s "$%s"' % name],
    "zsh": lambda name: ["zsh", "-c", 'printf %%s "$%s"' % name],
    "fish": lambda name: ["fish", "-c", 'printf %%s "$%s"' % name],
}


def write_user_files(root, variables) -> None:
    """The module's rendering of the Linux user file set, written into the sandbox home (no AnsibleModule)."""
    spec = EnvSpec("present", variables, [])
    home = ME.pw_dir
    for path, fmt in env_targets("Linux", "user", home, str(root), {"zsh", "fish", "systemd"}):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(render(None, spec, fmt))


def parse_generator_output(text: str) -> dict:
    """The generator's ``KEY=value`` lines as systemd reads them back (env-file double-quote rules)."""
    result = {}
    for line in text.splitlines():
        key, _sep, value = line.partition("=")
        if value.startswith('"') and value.endswith('"') and len(value) >= 2:
            body, out, i = value[1:-1], [], 0
            while i < len(body):
                if body[i] == "\\" and i + 1 < len(body) and body[i + 1] in '"\\`$':
                    out.append(body[i + 1])
                    i += 2
                else:
                    out.append(body[i])
                    i += 1
            value = "".join(out)
        result[key] = value
    return result


# --- shells -----------------------------------------------------------------------------------


@pytest.fixture
def user_files(tmp_path):
    """The module run in user scope on a sandbox root with hostile values; returns (root, home, variables)."""
    require("bash", "zsh", "fish")
    root = tmp_path / "root"
    args = dict(scope="user", root=str(root), target_os="Linux", http_proxy="http://proxy.example:3128",
                proxy_username="fleet", proxy_password=PASSWORD, no_proxy="localhost,.corp.example",
                extra={"CF_HOSTILE": HOSTILE, "REQUESTS_CA_BUNDLE": "/etc/ssl/certs/ca certificates.crt"})
    result = call_module("env_proxy", args)
    assert result["changed"] and not result.get("failed"), result
    assert not [f for f in result["files"] if f.get("skipped")], result["files"]
    from ansible_collections.condafleet.proxy.plugins.module_utils._envfiles import variables_from_params

    return root, sandbox_home(root), dict(variables_from_params(args))


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_fresh_shell_prints_every_exact_value(user_files, shell):
    root, home, variables = user_files
    assert variables["http_proxy"].startswith("http://fleet:p%40ss%3Aw%27o%22rd")
    for name, value in variables.items():
        assert fresh(SHELLS[shell](name), home) == value, (shell, name)
    assert not os.path.exists("/tmp/cf-pwned")


@settings(max_examples=int(os.environ.get("CF_PROPERTY_EXAMPLES", "25")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.text(st.characters(blacklist_categories=("Cc", "Cs")).filter(lambda c: not is_noncharacter(c)),
                     max_size=40))
def test_property_shells_and_generator_read_back_any_value(tmp_path_factory, value):
    require("bash", "zsh", "fish")
    root = tmp_path_factory.mktemp("prop")
    write_user_files(root, [("CF_PROBE", value)])
    home = sandbox_home(root)
    for shell, argv in SHELLS.items():
        assert fresh(argv("CF_PROBE"), home) == value, shell
    if os.path.exists(GENERATOR):
        # systemd drops an empty assignment (the variable stays unset), the closest it has to "".
        assert parse_generator_output(fresh([GENERATOR], home)).get("CF_PROBE", "") == value


# --- systemd environment.d -----------------------------------------------------------------------


def test_environment_d_generator_prints_exact_values(user_files):
    require(GENERATOR)
    root, home, variables = user_files
    env = parse_generator_output(fresh([GENERATOR], home))
    for name, value in variables.items():
        assert env[name] == value, name


def test_environment_d_system_file_through_the_generator(tmp_path):
    require(GENERATOR, "unshare")
    if os.geteuid() != 0:
        pytest.skip("needs root: bind-mounts the written directory over /etc/environment.d in a private namespace")
    root = tmp_path / "root"
    # The whole system set would refuse '#' (for /etc/environment); environment.d alone holds it.
    result = call_module("env_proxy", dict(root=str(root), path="/etc/environment.d/90-condafleet-proxy.conf",
                                           format="systemd", http_proxy="http://p:3128",
                                           extra={"CF_HOSTILE": HOSTILE}))
    assert not result.get("failed"), result
    conf_dir = root / "etc/environment.d"
    assert (conf_dir / "90-condafleet-proxy.conf").exists()
    script = 'mount --bind "$1" /etc/environment.d && exec "$2"'
    out = subprocess.run(["unshare", "-m", "--", "sh", "-c", script, "sh", str(conf_dir), GENERATOR],
                         env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}, capture_output=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    env = parse_generator_output(out.stdout.decode("utf-8"))
    assert env["CF_HOSTILE"] == HOSTILE and env["HTTP_PROXY"] == "http://p:3128"


# --- PAM /etc/environment ----------------------------------------------------------------------


def test_pam_env_reads_etc_environment_through_su(tmp_path):
    require("unshare", "su")
    if os.geteuid() != 0:
        pytest.skip("needs root: bind-mounts the written file over /etc/environment in a private mount namespace")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/environment").write_bytes(b"CF_BEFORE=kept\n")
    result = call_module("env_proxy", dict(root=str(root), target_os="Linux", http_proxy="http://p:3128",
                                           proxy_username="fleet", proxy_password=PASSWORD.replace("#", ""),
                                           no_proxy=["localhost", ".corp.example"], world_readable_password=True,
                                           extra={"CF_HOSTILE": PAM_SAFE, "CF_TRAILING": "ends with \\"}))
    assert not result.get("failed"), result
    from ansible_collections.condafleet.proxy.plugins.module_utils._envfiles import variables_from_params

    wanted = dict(variables_from_params(dict(http_proxy="http://p:3128", proxy_username="fleet",
                                             proxy_password=PASSWORD.replace("#", ""),
                                             no_proxy=["localhost", ".corp.example"],
                                             extra={"CF_HOSTILE": PAM_SAFE, "CF_TRAILING": "ends with \\"})))
    script = 'mount --bind "$1" /etc/environment && exec su -l nobody -s /bin/sh -c printenv'
    out = subprocess.run(["unshare", "-m", "--", "sh", "-c", script, "sh", str(root / "etc/environment")],
                         capture_output=True, timeout=60, cwd="/", check=False)
    assert out.returncode == 0, out.stderr
    seen = dict(line.partition("=")[::2] for line in out.stdout.decode("utf-8").splitlines())
    assert seen["CF_BEFORE"] == "kept"
    for name, value in wanted.items():
        assert seen[name] == value, name


# --- a real request through a real proxy -----------------------------------------------------------


def test_curl_from_login_shell_goes_through_authenticating_squid(tmp_path, squid_factory, channel):
    require("curl", "bash")
    password = "Sq'u\"id $(id) `x`;\\ %2F:@é"
    squid = squid_factory("fleet", password)
    root = tmp_path / "root"
    result = call_module("env_proxy", dict(scope="user", root=str(root), target_os="Linux",
                                           http_proxy=squid.url, https_proxy=squid.url, proxy_username="fleet",
                                           proxy_password=password, no_proxy=["localhost"]))
    assert not result.get("failed"), result
    home = sandbox_home(root)
    proxied = channel.repodata_url  # http://127.0.0.1:<port>/... -> through squid
    direct = proxied.replace("127.0.0.1", "localhost")  # in no_proxy -> straight to the channel
    # Without the credentials the module wrote, squid refuses: the login shell's variables are what work.
    refused = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "20",
                              "-x", squid.url, proxied], capture_output=True, text=True, timeout=60, check=False)
    assert refused.stdout == "407"
    body = fresh(["bash", "-l", "-c", 'curl -sS -f --max-time 20 "$1"', "bash", proxied], home)
    assert '"repodata_version": 1' in body
    log = squid.log()
    assert "fleet" in log and "/fleet-channel/noarch/repodata.json" in log and "127.0.0.1:%d" % channel.port in log
    body = fresh(["bash", "-l", "-c", 'curl -sS -f --max-time 20 "$1"', "bash", direct], home)
    assert '"repodata_version": 1' in body
    assert "localhost" not in squid.log()
    assert len(channel.requests) == 2
