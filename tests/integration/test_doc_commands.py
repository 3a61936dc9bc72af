# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Every command block of the README and the docs runs as written.

Blocks come from README.md, docs/performance.md, extensions/molecule/README.md (Markdown fences) and
docs/docsite/rst/*.rst (``.. code-block::``):

* ``sh``/``bash``/``shell`` blocks: every line (with its ``\\`` continuations) that is not a comment is a command;
  ``console`` blocks: every ``$ `` line. A document's commands run in order, as root, in a sandbox: a copy of
  the checkout as the working directory (its ``.venv`` is the checkout's), a private mount namespace in which
  ``/tmp`` and the home (``/root``) are empty directories of the sandbox, the venv's ``bin`` and real conda on
  ``PATH``, and the collection installed in ``~/.ansible/collections`` as the README's install section does.
  Each command must exit 0; a console command shown with its output, and no ``...`` in it, must print exactly that.
* A ``yaml`` block starting ``# requirements.yml`` is written to that file before the next command runs.
  Other YAML blocks: a playbook or a task list passes ``ansible-playbook --syntax-check``; a mapping (a
  ``.condarc``, group_vars) must parse.

The commands that cannot run here are in NOT_RUN, each with the reason; everything else runs.
"""

from __future__ import annotations

import glob
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

import pytest
import yaml

import realconda  # tests/support

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
DOCUMENTS = ["README.md", "docs/performance.md", "extensions/molecule/README.md"] + sorted(
    os.path.relpath(path, REPO) for path in glob.glob(os.path.join(REPO, "docs", "docsite", "rst", "*.rst")))
SHELL_LANGUAGES = ("sh", "bash", "shell", "console")
YAML_LANGUAGES = ("yaml", "yaml+jinja", "yml")

# (document, the command's first characters): why it does not run here. Short on purpose: add a command here only
# when it cannot run in a test at all.
NOT_RUN = {
    ("README.md", "make test"): "runs this test itself (make test is its runner)",
    ("docs/performance.md", "make bench"): "the fleet benchmark: tens of minutes, measured on an idle machine",
    ("docs/performance.md", ".venv/bin/python bench/fleet_bench.py"): "the fleet benchmark (make bench)",
    ("extensions/molecule/README.md", "PATH=$PWD/.venv/bin:$PATH molecule test"):
        "the molecule lab: tests/integration/test_molecule_lab.py runs both scenarios",
    ("extensions/molecule/README.md", ".venv/bin/pytest -m lab"): "a test of this suite (make test runs it)",
    ("docs/docsite/rst/security.rst", "cd condafleet.proxy && .venv/bin/pytest"): "a test of this suite (make test runs it)",
    ("docs/docsite/rst/troubleshooting.rst", "ansible laptop42"): "a host of the reader's inventory",
    ("docs/docsite/rst/large_fleets.rst", "ansible-pull --url https://git.corp.example/"):
        "a git server of the reader's network",
    ("docs/docsite/rst/large_fleets.rst", "ansible-builder build"):
        "builds a container image: needs podman or docker with a registry to pull the base image from",
    ("docs/docsite/rst/lockdown.rst", "conda search --override-channels -c http://127.0.0.1:PORT/other"):
        "a transcript of test_condarc_policy_conda.py (PORT is its channel's)",
    ("docs/docsite/rst/lockdown.rst", "conda create -y -p ~/env fleet-hello"):
        "a transcript of test_condarc_policy_conda.py (the locked policy it sets up)",
    ("docs/docsite/rst/fleet_report.rst", "ANSIBLE_CALLBACKS_ENABLED=condafleet.proxy.fleet_report"):
        "the reader's inventory.yml and site.yml",
    ("docs/docsite/rst/fleet_report.rst", "python3 -c 'import json, sys; c = json.load(open(\"reports/conda-proxy/"):
        "reads the report of the reader's run above",
}

pytestmark = pytest.mark.slow


# ------------------------------------------------------------------------------------------------ extraction


class Block:
    def __init__(self, document: str, line: int, language: str, text: str) -> None:
        self.document, self.line, self.language, self.text = document, line, language.lower(), text

    @property
    def where(self) -> str:
        return "%s:%d" % (self.document, self.line)


def markdown_blocks(document: str, text: str) -> list[Block]:
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        match = re.match(r"^```(\S*)\s*$", lines[i])
        if not match:
            i += 1
            continue
        start, body = i + 1, []
        i += 1
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        blocks.append(Block(document, start, match.group(1), "\n".join(body) + "\n"))
        i += 1
    return blocks


def rst_blocks(document: str, text: str) -> list[Block]:
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        match = re.match(r"^(\s*)\.\. code-block::\s*(\S+)\s*$", lines[i])
        i += 1
        if not match:
            continue
        outer = len(match.group(1))
        while i < len(lines) and re.match(r"^\s+:\w[\w-]*:", lines[i]):  # options (:caption: ...)
            i += 1
        body, start, indent = [], i + 1, None
        while i < len(lines):
            line = lines[i]
            if line.strip():
                width = len(line) - len(line.lstrip())
                if width <= outer:
                    break
                indent = width if indent is None else min(indent, width)
            body.append(line)
            i += 1
        while body and not body[-1].strip():
            body.pop()
        while body and not body[0].strip():
            body.pop(0)
            start += 1
        blocks.append(Block(document, start, match.group(2), "\n".join(b[indent or 0:] for b in body) + "\n"))
    return blocks


def blocks_of(document: str) -> list[Block]:
    with open(os.path.join(REPO, document), encoding="utf-8") as handle:
        text = handle.read()
    return rst_blocks(document, text) if document.endswith(".rst") else markdown_blocks(document, text)


def commands_of(block: Block) -> list[tuple[str, str | None]]:
    """``[(command, shown output or None)]``: a console block's ``$`` lines with what follows them; every
    non-comment line of a shell block. ``\\`` at a line's end continues the command on the next line."""
    commands: list[tuple[str, list[str] | None]] = []
    lines = block.text.splitlines()
    # A console block without a "$ " line shows root's prompt ("# command"); with one, "#" starts a comment.
    prompt = "$ " if any(line.startswith("$ ") for line in lines) else "# "
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if block.language == "console":
            if not line.startswith(prompt):
                if commands and commands[-1][1] is not None:
                    commands[-1][1].append(line)
                continue
            command = line[2:]
        else:
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            command = line
        while command.rstrip().endswith("\\") and i < len(lines):
            command = command.rstrip()[:-1].rstrip() + " " + lines[i].strip()
            i += 1
        commands.append((command.strip(), [] if block.language == "console" else None))
    return [(command, None if shown is None else "\n".join(shown).strip("\n")) for command, shown in commands]


def not_run(document: str, command: str) -> str | None:
    for (doc, start), reason in NOT_RUN.items():
        if doc == document and command.startswith(start):
            return reason
    return None


def test_every_not_run_entry_still_names_a_command():
    """The list stays short and true: each entry matches a command of its document."""
    found = {(block.document, command) for document in DOCUMENTS for block in blocks_of(document)
             if block.language in SHELL_LANGUAGES for command, _shown in commands_of(block)}
    stale = [key for key in NOT_RUN if not any(doc == key[0] and cmd.startswith(key[1]) for doc, cmd in found)]
    assert stale == []


def test_extraction_finds_the_blocks():
    readme = [b for b in blocks_of("README.md") if b.language in SHELL_LANGUAGES]
    assert [c for c, _s in commands_of(readme[0])][:3] == [
        "ansible-galaxy collection build --output-path dist/ --force",
        "ansible-galaxy collection install dist/condafleet-proxy-0.1.0.tar.gz -p ~/.ansible/collections",
        "ansible-doc condafleet.proxy.condarc_proxy"]
    quickstart = blocks_of("docs/docsite/rst/quickstart.rst")
    console = [c for b in quickstart if b.language == "console" for c in commands_of(b)]
    assert console[-3][0].startswith("ansible localhost -m condafleet.proxy.condarc_proxy -a 'http=")
    assert console[-3][0].endswith("--check --diff")


# ------------------------------------------------------------------------------------------------ running


@pytest.fixture(scope="module")
def tarball(tmp_path_factory):
    dist = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([os.path.join(BIN, "ansible-galaxy"), "collection", "build", REPO, "--output-path", str(dist)],
                          capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return glob.glob(str(dist / "condafleet-proxy-*.tar.gz"))[0]


def _checkout_copy(dest: str) -> None:
    """The files git sees (mtimes kept, so make finds the venv up to date), and the checkout's .venv."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, check=True).stdout.split(b"\0")
    existing = b"\0".join(f for f in files if f and os.path.lexists(os.path.join(REPO, os.fsdecode(f))))
    pack = subprocess.run(["tar", "--null", "-T", "-", "-cf", "-"], cwd=REPO, input=existing, capture_output=True,
                          check=True).stdout
    os.makedirs(dest)
    subprocess.run(["tar", "-xf", "-", "-C", dest], input=pack, check=True)
    os.symlink(os.path.join(REPO, ".venv"), os.path.join(dest, ".venv"))


def _script(block_commands: list[tuple[Block, str | None, str | None]], workdir: str) -> str:
    """One bash script: each command in a subshell, between markers carrying its index and exit code."""
    lines = ["cd %s" % shlex.quote(workdir)]
    for index, (block, command, content) in enumerate(block_commands):
        if content is not None:  # a requirements.yml block
            lines.append("cat > requirements.yml <<'CONDAFLEET_EOF'\n%sCONDAFLEET_EOF" % content)
            continue
        lines.append("printf '\\n@@CMD %d\\n'" % index)
        lines.append("( %s\n) </dev/null 2>&1" % command)
        lines.append("printf '\\n@@RC %d %%s\\n' \"$?\"" % index)
    return "\n".join(lines) + "\n"


def _run_in_sandbox(script: str, sandbox: str) -> str:
    """``script`` as root in a private mount namespace: /tmp and the home are the sandbox's own directories
    (the Python the venv runs on stays reachable when it lives in the home, as pyenv's does, and the checkout with
    its venv when it lives under /tmp, as a CI clone may)."""
    home = os.path.realpath(os.path.expanduser("~"))
    python_home = os.path.realpath(sys.base_prefix)
    keep = os.path.relpath(python_home, home) if python_home.startswith(home + os.sep) else ""
    repo = os.path.realpath(REPO)
    keep_tmp = os.path.relpath(repo, "/tmp") if repo.startswith("/tmp" + os.sep) else ""
    for name in ("tmp", "home", "realhome", "realtmp"):
        os.makedirs(os.path.join(sandbox, name), exist_ok=True)
    os.chmod(os.path.join(sandbox, "tmp"), 0o1777)
    with open(os.path.join(sandbox, "script.sh"), "w") as handle:
        handle.write(script)
    setup = "\n".join([
        "set -e",
        'mount --bind /tmp "$S/realtmp"',
        'mount --bind "$S/tmp" /tmp',
        'if [ -n "$T" ]; then mkdir -p "/tmp/$T"; mount --bind "$S/realtmp/$T" "/tmp/$T"; fi',
        'mount --bind "$H" "$S/realhome"',
        'mount --bind "$S/home" "$H"',
        'if [ -n "$K" ]; then mkdir -p "$H/$K"; mount --bind "$S/realhome/$K" "$H/$K"; fi',
        'set +e',
        'exec bash "$S/script.sh"',
    ])
    conda_bin = os.path.join(realconda.CACHE, "bin")
    path = [BIN] + ([conda_bin] if os.path.isdir(conda_bin) else []) + ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
    env = {"HOME": home, "USER": "root", "LOGNAME": "root", "LANG": "C.UTF-8", "TERM": "dumb",
           "PATH": os.pathsep.join(path),
           "ANSIBLE_NOCOLOR": "1", "NO_COLOR": "1", "S": sandbox, "H": home, "K": keep,
           "T": keep_tmp}
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c", setup], env=env,
                          capture_output=True, text=True, timeout=1200, stdin=subprocess.DEVNULL, check=False)
    assert proc.returncode == 0, "the sandbox failed: %s" % (proc.stdout[-2000:] + proc.stderr[-2000:])
    return proc.stdout


def _results(output: str) -> dict[int, tuple[int, str]]:
    results = {}
    for match in re.finditer(r"\n@@CMD (\d+)\n(.*?)\n@@RC \1 (\d+)\n", output, re.S):
        results[int(match.group(1))] = (int(match.group(3)), match.group(2))
    return results


def _same_output(shown: str, printed: str) -> bool:
    def norm(text: str) -> list[str]:
        return [line.rstrip() for line in text.strip("\n").splitlines()]
    return norm(shown) == norm(printed)


@pytest.mark.skipif(os.geteuid() != 0,
                    reason="needs root: a private mount namespace gives the commands their own /tmp and home")
@pytest.mark.parametrize("document", DOCUMENTS)
def test_document_commands_run_as_written(document, tarball):
    plan: list[tuple[Block, str | None, str | None]] = []
    shown_output: dict[int, str] = {}
    skipped = []
    for block in blocks_of(document):
        if block.language in YAML_LANGUAGES and block.text.startswith("# requirements.yml\n"):
            plan.append((block, None, block.text))
            continue
        if block.language not in SHELL_LANGUAGES:
            continue
        commands = commands_of(block)
        assert commands, "%s: a %s block without a command" % (block.where, block.language)
        for command, shown in commands:
            reason = not_run(document, command)
            if not reason and command.startswith("conda ") and not os.path.isdir(os.path.join(realconda.CACHE, "bin")):
                reason = "no real conda on this machine (%s is absent)" % realconda.INSTALLER
            if reason:
                skipped.append((command, reason))
                continue
            if shown and "..." not in shown:
                shown_output[len(plan)] = shown
            plan.append((block, command, None))
    if not any(command for _b, command, _c in plan):
        if skipped:
            pytest.skip("every command of %s is in NOT_RUN: %s" % (document, "; ".join(sorted({r for _c, r in skipped}))))
        return  # a document without a command block

    sandbox = tempfile.mkdtemp(prefix="condafleet-doccmds-", dir="/var/tmp")
    try:
        os.chmod(sandbox, 0o755)
        workdir = os.path.join(sandbox, "checkout")
        _checkout_copy(workdir)
        up_to_date = subprocess.run(["make", "-q", "venv"], cwd=workdir, capture_output=True, check=False)
        assert up_to_date.returncode == 0, "the checkout's venv is not up to date: run make venv first"
        # The collection as the README's install section puts it (the README's own install commands run again).
        install = subprocess.run([os.path.join(BIN, "ansible-galaxy"), "collection", "install", "--offline", tarball,
                                  "-p", os.path.join(sandbox, "home", ".ansible", "collections")],
                                 env=dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(sandbox, "none")),
                                 capture_output=True, text=True, timeout=180, check=False)
        assert install.returncode == 0, install.stdout + install.stderr
        output = _run_in_sandbox(_script(plan, workdir), sandbox)
        results = _results(output)
        failures = []
        for index, (block, command, _content) in enumerate(plan):
            if command is None:
                continue
            if index not in results:
                failures.append("%s: `%s` did not finish:\n%s" % (block.where, command, output[-3000:]))
                continue
            code, printed = results[index]
            if code != 0:
                failures.append("%s: `%s` exited %d:\n%s" % (block.where, command, code, printed[-3000:]))
            elif index in shown_output and not _same_output(shown_output[index], printed):
                failures.append("%s: `%s` printed\n%s\ninstead of what the document shows:\n%s"
                                % (block.where, command, printed, shown_output[index]))
        assert not failures, "\n\n".join(failures)
    finally:
        shutil.rmtree(sandbox, ignore_errors=True)


@pytest.mark.parametrize("document", DOCUMENTS)
def test_document_yaml_blocks_parse_and_playbooks_pass_syntax_check(document, tmp_path):
    failures = []
    for block in blocks_of(document):
        if block.language not in YAML_LANGUAGES:
            continue
        try:
            data = yaml.safe_load(block.text)
        except yaml.YAMLError as exc:
            failures.append("%s: not YAML: %s" % (block.where, exc))
            continue
        if not isinstance(data, list):
            continue  # a mapping: a .condarc, group_vars, a requirements.yml
        plays = data
        if not any(isinstance(item, dict) and ("hosts" in item or "import_playbook" in item) for item in data):
            plays = [{"name": "Tasks of %s" % block.where, "hosts": "localhost", "gather_facts": False, "tasks": data}]
        playbook = tmp_path / ("block-%d.yml" % block.line)
        playbook.write_text(yaml.safe_dump(plays, sort_keys=False))
        env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(REPO, "collections"), ANSIBLE_NOCOLOR="1",
                   ANSIBLE_LOCALHOST_WARNING="False", ANSIBLE_INVENTORY_UNPARSED_WARNING="False")
        proc = subprocess.run([os.path.join(BIN, "ansible-playbook"), "--syntax-check", "-i", "localhost,", str(playbook)],
                              env=env, capture_output=True, text=True, timeout=120, check=False)
        if proc.returncode != 0:
            failures.append("%s: ansible-playbook --syntax-check failed:\n%s" % (block.where, proc.stdout + proc.stderr))
    assert not failures, "\n\n".join(failures)
