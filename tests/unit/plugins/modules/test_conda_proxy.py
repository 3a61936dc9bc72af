# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""condafleet.proxy.conda_proxy: the three methods in one module run, on real files in a sandbox root.

The reference for every byte is the three one-method modules: the same options given to
condarc_proxy, env_proxy and netrc_entry in a second sandbox must leave the same tree.
"""

from __future__ import annotations

import json
import netrc
import os
import pwd
import stat

import pytest
import yaml

from modulerun import call_module, run_adhoc, tree

PASSWORD = "p@ss:w'o\"rd $(touch /tmp/pwned) `id` ;|&\\ %41 é"
ENCODED = "p%40ss%3Aw%27o%22rd%20%24%28touch%20%2Ftmp%2Fpwned%29%20%60id%60%20%3B%7C%26%5C%20%2541%20%C3%A9"
NETRC_PASSWORD = "n3trc secret\"#"
ME = pwd.getpwuid(os.geteuid())
PROXY = "http://proxy.corp.example:3128"
ENTRIES = [{"machine": "conda.corp.example", "login": "svc-conda", "password": NETRC_PASSWORD},
           {"machine": "mirror.corp.example", "login": "svc-conda", "password": "mirror-pw"}]


def make_sandbox(root):
    """A Debian-like root with the running account's home, a hand-written .condarc line and a .netrc entry."""
    (root / "etc/zsh").mkdir(parents=True)
    (root / "etc/zsh/zshenv").write_bytes(b"# /etc/zsh/zshenv: system-wide .zshenv file for zsh(1).\n")
    (root / "etc/environment").write_bytes(b"LANG=C.UTF-8\n")
    (root / "etc/fish/conf.d").mkdir(parents=True)
    (root / "etc/profile.d").mkdir(parents=True)
    (root / "etc/conda").mkdir(parents=True)
    (root / "etc/conda/.condarc").write_bytes(b"# site channels\nchannels:\n  - conda-forge\n")
    home = root / ME.pw_dir.lstrip("/")
    home.mkdir(parents=True)
    (home / ".netrc").write_bytes(b"machine other.example login o password keep-me\n")
    os.chmod(home / ".netrc", 0o600)
    return root


@pytest.fixture
def sandbox(tmp_path):
    return make_sandbox(tmp_path / "combined")


def args(root, **extra):
    base = dict(http=PROXY, https=PROXY, no_proxy=["localhost", ".corp.example"], bypass=["conda.corp.example"],
                proxy_username="fleet", proxy_password=PASSWORD, netrc_entries=ENTRIES, root=str(root),
                target_os="Linux", world_readable_password=True)
    base.update(extra)
    return base


def one_method_modules(root, state="present", scope="system", users=("",)):
    """What the three modules write for ``args(root)``, one task per method and account as before."""
    shared = dict(root=str(root), state=state)
    own = [""] if scope == "system" else list(users)
    for user in own:
        res = call_module("condarc_proxy", dict(shared, scope=scope, http=PROXY, https=PROXY, user=user or None,
                                                bypass=["conda.corp.example"], proxy_username="fleet",
                                                proxy_password=PASSWORD, world_readable_password=True))
        assert not res.get("failed"), res
    for user in own:
        res = call_module("env_proxy", dict(shared, scope=scope, http_proxy=PROXY, https_proxy=PROXY,
                                            user=user or None, no_proxy=["localhost", ".corp.example"],
                                            proxy_username="fleet", proxy_password=PASSWORD, target_os="Linux",
                                            world_readable_password=True))
        assert not res.get("failed"), res
    for user in users:
        res = call_module("netrc_entry", dict(shared, user=user or None, entries=ENTRIES))
        assert not res.get("failed"), res


def test_writes_the_bytes_of_the_three_modules_then_changes_nothing(sandbox, tmp_path):
    reference = make_sandbox(tmp_path / "reference")
    one_method_modules(reference)

    predicted = call_module("conda_proxy", args(sandbox), check=True)
    assert predicted["changed"] is True and not predicted.get("failed"), predicted
    assert tree(sandbox) == tree(make_sandbox(tmp_path / "untouched")), "check mode wrote something"

    result = call_module("conda_proxy", args(sandbox))
    assert result["changed"] is True and not result.get("failed"), result
    assert tree(sandbox) == tree(reference)
    assert [entry["user"] for entry in result["condarc"] + result["env"] + result["netrc"]] == [None, None, None]
    assert result["edited_from"] == "host" and result["target_os"] == "Linux"
    assert [f["format"] for f in result["env"][0]["files"] if f["changed"]] == ["pam_env", "sh", "sh", "fish",
                                                                                "systemd"]
    assert [e["machine"] for e in result["netrc"][0]["entries"]] == ["conda.corp.example", "mirror.corp.example"]

    # The files read back by their consumers' parsers.
    condarc = yaml.safe_load((sandbox / "etc/conda/.condarc").read_text())
    assert condarc["channels"] == ["conda-forge"]
    assert condarc["proxy_servers"]["https"] == "http://fleet:%s@proxy.corp.example:3128" % ENCODED
    hosts = netrc.netrc(str(sandbox / ME.pw_dir.lstrip("/") / ".netrc")).hosts
    assert hosts["conda.corp.example"] == ("svc-conda", "", NETRC_PASSWORD)
    assert hosts["other.example"] == ("o", "", "keep-me")

    again = call_module("conda_proxy", args(sandbox))
    assert again["changed"] is False, again
    assert call_module("conda_proxy", args(sandbox), check=True)["changed"] is False


def test_absent_restores_every_file_byte_for_byte(sandbox, tmp_path):
    before = tree(sandbox)
    assert call_module("conda_proxy", args(sandbox))["changed"] is True
    removed = call_module("conda_proxy", dict(state="absent", root=str(sandbox), target_os="Linux",
                                              netrc_entries=[{"machine": e["machine"]} for e in ENTRIES]))
    assert removed["changed"] is True and not removed.get("failed"), removed
    # every file as it was (a directory the module created, such as /etc/environment.d, stays)
    assert {k: v for k, v in tree(sandbox).items() if v is not None} == {k: v for k, v in before.items() if v is not None}
    assert call_module("conda_proxy", dict(state="absent", root=str(sandbox), target_os="Linux"))["changed"] is False


@pytest.mark.parametrize("broken,name", [
    ("etc/conda/.condarc", ".condarc"),
    ("HOME/.netrc", ".netrc"),
    ("etc/zsh/zshenv", "environment files"),
])
def test_a_broken_file_of_any_method_fails_before_any_file_is_written(sandbox, broken, name):
    path = sandbox / broken.replace("HOME", ME.pw_dir.lstrip("/"))
    if broken.endswith(".condarc"):
        path.write_bytes(b"channels: [conda-forge\nproxy_servers: {\n")
    elif broken.endswith(".netrc"):
        path.write_bytes(b"machine other.example login o password keep-me\nmacdef\n")
    else:  # a managed block whose end marker is gone
        path.write_bytes(b"# BEGIN condafleet.proxy env_proxy\nexport http_proxy=x\n")
    before = tree(sandbox)
    result = call_module("conda_proxy", args(sandbox))
    assert result.get("failed") and result["msg"].startswith(name + ": "), result
    assert "nothing was changed on this host" in result["msg"]
    assert result["changed"] is False
    assert tree(sandbox) == before


def test_user_scope_writes_each_accounts_own_files(tmp_path):
    root = make_sandbox(tmp_path / "user")
    home = root / ME.pw_dir.lstrip("/")
    (home / ".conda").mkdir()
    (home / ".conda/corp-ca.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\n")
    reference = make_sandbox(tmp_path / "reference")
    one_method_modules(reference, scope="user", users=[ME.pw_name])
    result = call_module("conda_proxy", args(root, scope="user", users=[ME.pw_name], methods=["env", "netrc"]))
    assert not result.get("failed") and result["condarc"] == [], result
    assert [r["user"] for r in result["env"] + result["netrc"]] == [ME.pw_name, ME.pw_name]

    result = call_module("conda_proxy", args(root, scope="user", users=[ME.pw_name], ssl_verify="~/.conda/corp-ca.pem"))
    assert result["changed"] is True and result["condarc"][0]["user"] == ME.pw_name, result
    # ssl_verify is the account's own CA, written as the absolute path conda needs
    condarc = yaml.safe_load((home / ".condarc").read_text())
    assert condarc["ssl_verify"] == ME.pw_dir.rstrip("/") + "/.conda/corp-ca.pem"
    del condarc["ssl_verify"]
    assert condarc == yaml.safe_load((reference / ME.pw_dir.lstrip("/") / ".condarc").read_text())
    mine = {k: v for k, v in tree(home).items() if k != ".condarc" and not k.startswith(".conda")}
    theirs = {k: v for k, v in tree(reference / ME.pw_dir.lstrip("/")).items() if k != ".condarc"}
    assert mine == theirs and ".netrc" in mine and len(mine) > 3, sorted(mine)


def test_an_unknown_account_fails_with_nothing_written(sandbox):
    before = tree(sandbox)
    result = call_module("conda_proxy", args(sandbox, scope="user", users=[ME.pw_name, "no-such-user-cf"]))
    assert result.get("failed") and "no-such-user-cf" in result["msg"], result
    assert result["msg"].startswith(".condarc of no-such-user-cf: ")
    assert tree(sandbox) == before


def test_methods_left_out_are_neither_written_nor_removed(sandbox):
    assert call_module("conda_proxy", args(sandbox))["changed"] is True
    written = tree(sandbox)
    result = call_module("conda_proxy", dict(state="absent", root=str(sandbox), target_os="Linux",
                                             methods=["condarc"], netrc_entries=ENTRIES))
    assert result["changed"] is True and result["env"] == [] and result["netrc"] == [], result
    after = tree(sandbox)
    assert after["etc/conda/.condarc"] == b"# site channels\nchannels:\n  - conda-forge\n"
    assert {k: v for k, v in after.items() if k != "etc/conda/.condarc"} == \
        {k: v for k, v in written.items() if k != "etc/conda/.condarc"}


def test_a_proxy_is_required_to_write(sandbox):
    before = tree(sandbox)
    result = call_module("conda_proxy", dict(root=str(sandbox), target_os="Linux"))
    assert result.get("failed") and result["msg"].startswith(".condarc: "), result
    assert tree(sandbox) == before
    # netrc alone needs no proxy
    result = call_module("conda_proxy", dict(root=str(sandbox), methods=["netrc"], netrc_entries=ENTRIES))
    assert result["changed"] is True and not result.get("failed"), result


def test_diff_lists_only_changed_files_and_masks_every_secret(sandbox):
    result = call_module("conda_proxy", args(sandbox), diff=True)
    headers = [d["after_header"] for d in result["diff"]]
    assert len(headers) == 7 and headers[0].endswith("etc/conda/.condarc") and headers[-1].endswith(".netrc")
    text = json.dumps(result)
    for secret in (PASSWORD, ENCODED, NETRC_PASSWORD, "mirror-pw", "p%40ss%3Aw"):
        assert secret not in text, secret
    assert call_module("conda_proxy", args(sandbox), diff=True)["diff"] == []


def test_adhoc_with_diff_and_vvv_never_shows_a_secret(sandbox):
    result, raw = run_adhoc("conda_proxy", args(sandbox), diff=True, verbosity=3)
    assert result["changed"] is True, raw
    for secret in (PASSWORD, ENCODED, NETRC_PASSWORD, "mirror-pw", "p%40ss%3Aw", "w'o"):
        assert secret not in raw, secret
    assert "********" in raw


def test_an_account_named_twice_is_configured_once(sandbox):
    result = call_module("conda_proxy", args(sandbox, scope="user", users=[ME.pw_name, ME.pw_name]))
    assert not result.get("failed"), result
    assert [len(result[m]) for m in ("condarc", "env", "netrc")] == [1, 1, 1]


def test_a_write_that_fails_half_way_reports_what_was_changed(sandbox, monkeypatch):
    """A write can still fail after every file was checked (a full disk): the result says what was written."""
    from ansible_collections.condafleet.proxy.plugins.module_utils import _fileio

    real_write = _fileio._write_atomic

    def full_disk(module, path, content):
        if path.endswith(".netrc"):
            raise _fileio.FileRefused("cannot write %s: No space left on device" % path)
        real_write(module, path, content)

    monkeypatch.setattr(_fileio, "_write_atomic", full_disk)
    result = call_module("conda_proxy", args(sandbox))
    assert result.get("failed") and result["msg"].startswith(".netrc: cannot write"), result
    assert "No space left on device" in result["msg"]
    assert result["changed"] is True and result["condarc"][0]["changed"] and result["env"][0]["changed"]
    assert result["netrc"][0]["changed"] is False
    assert (sandbox / ME.pw_dir.lstrip("/") / ".netrc").read_bytes() == b"machine other.example login o password keep-me\n"


def test_the_ca_of_another_account_is_its_own_and_goes_with_absent(tmp_path):
    """ca_certificates in user scope: ~/.conda/condafleet-proxy-ca.pem of the account, owned by it and its group
    (written with its identity), named by its ssl_verify; absent removes both, and ~/.conda it left empty."""
    if os.geteuid() != 0:
        pytest.skip("configuring another account needs root")
    nobody = pwd.getpwnam("nobody")
    # pytest's tmp dirs are private to root: the account must be able to reach its home, as on a real host
    for directory in [tmp_path] + list(tmp_path.parents)[:3]:
        if not directory.stat().st_mode & 0o001:
            os.chmod(directory, directory.stat().st_mode | 0o711)
    home = tmp_path / nobody.pw_dir.lstrip("/")
    home.mkdir(parents=True)
    os.chown(home, nobody.pw_uid, nobody.pw_gid)
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    args = dict(scope="user", users=["nobody"], http=PROXY, ca_certificates=pem, root=str(tmp_path), target_os="Linux")
    result = call_module("conda_proxy", args)
    assert not result.get("failed"), result
    ca = home / ".conda/condafleet-proxy-ca.pem"
    info = os.stat(ca)
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (nobody.pw_uid, nobody.pw_gid, 0o644)
    assert ca.read_text() == pem and result["ca"][0]["user"] == "nobody"
    assert "ssl_verify: %s/.conda/condafleet-proxy-ca.pem" % nobody.pw_dir in (home / ".condarc").read_text()
    assert call_module("conda_proxy", args)["changed"] is False
    gone = call_module("conda_proxy", dict(args, state="absent", ca_certificates=""))
    assert gone["changed"] and not (home / ".conda").exists(), gone
    assert not (home / ".condarc").exists() or "ssl_verify" not in (home / ".condarc").read_text()
