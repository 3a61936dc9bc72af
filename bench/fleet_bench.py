# Copyright (c) condafleet.proxy contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Fleet-scale benchmark of the conda_proxy role (issue 5). A benchmark script, not a test.

For each fleet size N it times, in the same run and with the same ansible.cfg (bench/ansible.cfg: forks,
pipelining, no fact gathering):

* the role (bench/role.yml): first converge, idempotent rerun, check-mode compliance scan, and the rerun
  once more with the OS family given (no ``setup`` call);
* the hand-written ansible.builtin playbook (bench/handwritten.yml): converge, rerun, check-mode scan;
* the floor: one ansible.builtin.ping per host (bench/ping.yml).

Hosts are ``ansible_connection: local`` inventory hosts, each with its own sandbox root
(``conda_proxy_root``), one tree for the role and one for the hand-written playbook; after every converge
the two trees of every host are compared (paths, modes, bytes) and the run stops if they differ, as it does
when a converge leaves a host unchanged or a rerun or scan changes one.
Module executions and remote commands per host are counted in a separate, untimed pass with ``-vvv``.
Order: the module-level cost of editing a 10,000-entry .netrc and a 5,000-line .condarc; with ``--lab`` the
real SSH lab (tests/lab/lab.py, three hosts; needs root, skipped with a message otherwise); then the local
fleets in the order given. The report (``--json``) is saved after every round: SIGTERM or Ctrl-C prints the
table of the rounds completed so far.

    .venv/bin/python bench/fleet_bench.py [--sizes 10,50,200] [--runs 3] [--lab] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
VENV_BIN = os.path.dirname(sys.executable)
PLAYBOOKS = {"role": "role.yml", "hand": "handwritten.yml", "ping": "ping.yml"}
PHASES = ("converge", "rerun", "check")
RECAP = re.compile(r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


class BenchError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def ansible_env(tmp: str) -> dict:
    env = dict(os.environ)
    env.update(
        ANSIBLE_CONFIG=os.path.join(HERE, "ansible.cfg"),
        ANSIBLE_COLLECTIONS_PATH=os.path.join(REPO, "collections"),
        ANSIBLE_LOCAL_TEMP=os.path.join(tmp, "ansible-local"),
        ANSIBLE_NOCOLOR="1",
        PATH=VENV_BIN + os.pathsep + env.get("PATH", ""),
    )
    for name in ("ANSIBLE_FORKS", "ANSIBLE_PIPELINING", "ANSIBLE_STRATEGY", "ANSIBLE_CALLBACKS_ENABLED"):
        env.pop(name, None)
    return env


# ----------------------------------------------------------------------------------------- fleets


class LocalFleet:
    """N local-connection hosts; per host one sandbox root for the role and one for the hand-written play."""

    kind = "local"

    def __init__(self, tmp: str, n: int) -> None:
        self.tmp, self.n = tmp, n
        self.names = ["h%04d" % i for i in range(1, n + 1)]
        self.inventories = {}
        for kind in ("role", "hand"):
            hosts = {h: {"conda_proxy_root": self.root(kind, h)} for h in self.names}
            self.inventories[kind] = self._write(kind, hosts)
        self.inventories["ping"] = self.inventories["role"]

    def root(self, kind: str, host: str) -> str:
        return os.path.join(self.tmp, "sbx-%d" % self.n, kind, host)

    def _write(self, kind: str, hosts: dict) -> str:
        import yaml

        path = os.path.join(self.tmp, "inventory-%d-%s.yml" % (self.n, kind))
        group = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
        with open(path, "w") as handle:
            yaml.safe_dump({"all": {"vars": group, "hosts": hosts}}, handle)
        return path

    def reset(self, kind: str) -> None:
        """Fresh sandboxes: an empty root with the home of root (the .netrc parent must exist)."""
        shutil.rmtree(os.path.join(self.tmp, "sbx-%d" % self.n, kind), ignore_errors=True)
        for host in self.names:
            os.makedirs(os.path.join(self.root(kind, host), "root"), mode=0o755)

    def trees(self, kind: str) -> dict:
        return {h: snapshot(self.root(kind, h)) for h in self.names}


def snapshot(root: str) -> dict:
    """Every path under root with its type, mode and (for files) bytes."""
    tree = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            rel = os.path.relpath(full, root)
            data = None
            if name in filenames:
                with open(full, "rb") as handle:
                    data = handle.read()
            tree[rel] = (oct(st.st_mode), data)
    return tree


class LabFleet:
    """The three real SSH hosts of tests/lab/lab.py, sandbox roots under /var/tmp on each host."""

    kind = "lab"
    remote_base = "/var/tmp/condafleet-bench"

    def __init__(self, tmp: str, env: dict) -> None:
        sys.path.insert(0, os.path.join(REPO, "tests", "lab"))
        import lab  # noqa: E402  (tests/lab is not a package)

        self.lab = lab
        self.env = env
        self.state_dir = os.path.join(tmp, "lab")
        self.state = lab.up(self.state_dir, prefix="cfbench%d" % (os.getpid() % 10000))
        import yaml

        with open(self.state["inventory"]) as handle:
            base = yaml.safe_load(handle)
        self.names = sorted(base["all"]["hosts"])
        self.n = len(self.names)
        self.inventories = {}
        for kind in ("role", "hand"):
            inv = json.loads(json.dumps(base))
            for host in self.names:
                inv["all"]["hosts"][host]["conda_proxy_root"] = self.root(kind, host)
            path = os.path.join(tmp, "inventory-lab-%s.yml" % kind)
            with open(path, "w") as handle:
                yaml.safe_dump(inv, handle)
            self.inventories[kind] = path
        self.inventories["ping"] = self.inventories["role"]
        # The hand-written play hard-codes its file list, so it is told which lab hosts have systemd, as an admin
        # knows their fleet. env_proxy's own test under a sandbox root: systemctl on the PATH of the host.
        probe = self._shell("role", "if command -v systemctl >/dev/null; then echo yes; else echo no; fi")
        with open(self.inventories["hand"]) as handle:
            inv = yaml.safe_load(handle)
        for host in self.names:
            inv["all"]["hosts"][host]["bench_systemd"] = probe[host].strip() == "yes"
        with open(self.inventories["hand"], "w") as handle:
            yaml.safe_dump(inv, handle)

    def root(self, kind: str, host: str) -> str:
        return "%s/%s" % (self.remote_base, kind)

    def _shell(self, kind: str, cmd: str) -> dict:
        proc = subprocess.run(
            [os.path.join(VENV_BIN, "ansible"), "all", "-i", self.inventories[kind], "-o", "-m", "ansible.builtin.shell",
             "-a", cmd], env=self.env, capture_output=True, text=True, timeout=300, check=False)
        out = {}
        for line in proc.stdout.splitlines():
            match = re.match(r"^(\S+) \| (\S+) \| rc=(\d+) \| \(stdout\) (.*)$", line)
            if match:
                out[match.group(1)] = match.group(4).replace("\\n", "\n")
            elif re.match(r"^(\S+) \| (\S+) \| rc=0", line):
                out[line.split()[0]] = ""
        if proc.returncode != 0 or len(out) != self.n:
            raise BenchError("lab command failed: %s\n%s%s" % (cmd, proc.stdout[-2000:], proc.stderr[-2000:]))
        return out

    def reset(self, kind: str) -> None:
        root = self.root(kind, "")
        self._shell(kind, "rm -rf %s && mkdir -p %s/root" % (root, root))

    def trees(self, kind: str) -> dict:
        root = self.root(kind, "")
        return self._shell(kind, "cd %s && find . -printf '%%p %%m %%y\\n' | sort && find . -type f -exec sha256sum {} + "
                                 "| sort" % root)

    def close(self) -> None:
        report = self.lab.down(self.state_dir, quiet=True)
        for line in report.get("leftovers", []):
            log("lab leftover: %s" % line)


# ----------------------------------------------------------------------------------------- runs


# The role discovers the OS family with one `setup` call per host unless it is given (or the play gathered facts);
# the hand-written playbook knows it by construction. The rerun is also timed with the family given.
OS_GIVEN = ("-e", "conda_proxy_os_family=Linux")


def play(fleet, kind: str, env: dict, check: bool = False, verbose: bool = False,
         extra: tuple = ()) -> tuple[float, str]:
    cmd = [os.path.join(VENV_BIN, "ansible-playbook"), "-i", fleet.inventories[kind], os.path.join(HERE, PLAYBOOKS[kind])]
    cmd.extend(extra)
    if check:
        cmd.append("--check")
    if verbose:
        cmd.append("-vvv")
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise BenchError("%s failed (rc=%d):\n%s\n%s" % (
            " ".join(cmd), proc.returncode, proc.stdout[-4000:], proc.stderr[-2000:]))
    return wall, proc.stdout


def recap(stdout: str) -> dict:
    return {m.group(1): {"ok": int(m.group(2)), "changed": int(m.group(3))} for m in RECAP.finditer(stdout)}


def expect_changes(stdout: str, fleet, kind: str, phase: str) -> None:
    """Converge changes every host; rerun and the scan of a converged fleet change none."""
    hosts = recap(stdout)
    if set(hosts) != set(fleet.names):
        raise BenchError("%s %s: recap lists %d hosts, expected %d" % (kind, phase, len(hosts), fleet.n))
    changed = sorted(h for h, r in hosts.items() if r["changed"])
    if phase == "converge" and len(changed) != fleet.n:
        raise BenchError("%s converge: only %d of %d hosts changed" % (kind, len(changed), fleet.n))
    if phase != "converge" and changed:
        raise BenchError("%s %s: %d hosts reported changes (%s...)" % (kind, phase, len(changed), changed[:3]))


def one_round(fleet, env: dict) -> dict:
    """One sample of every measurement, interleaved so role and hand-written share the machine's state."""
    sample = {}
    for kind in ("role", "hand"):
        fleet.reset(kind)
    for phase in PHASES:
        for kind in ("role", "hand"):
            wall, out = play(fleet, kind, env, check=(phase == "check"))
            expect_changes(out, fleet, kind, phase)
            sample["%s_%s" % (kind, phase)] = wall
        if phase == "converge":
            role, hand = fleet.trees("role"), fleet.trees("hand")
            different = sorted(h for h in fleet.names if role[h] != hand[h])
            if different:
                raise BenchError("the hand-written playbook's files differ from the role's on %s" % different[:5])
            sample["identical_hosts"] = len(fleet.names)
        if phase == "rerun":
            wall, out = play(fleet, "role", env, extra=OS_GIVEN)
            expect_changes(out, fleet, "role (OS given)", phase)
            sample["role_os_given_rerun"] = wall
    sample["ping"] = play(fleet, "ping", env)[0]
    return sample


EXEC = re.compile(r"^<([^>]+)> (EXEC|PUT|SSH: EXEC) (.*)$", re.M)


def count_round_trips(fleet, env: dict) -> dict:
    """Module executions and remote commands per host and phase, from one -vvv run of each (not timed)."""
    counts = {}
    for kind in ("role", "hand"):
        fleet.reset(kind)
    for phase in PHASES:
        for kind in ("role", "hand"):
            out = play(fleet, kind, env, check=(phase == "check"), verbose=True)[1]
            counts["%s_%s" % (kind, phase)] = per_host(out, fleet)
        if phase == "rerun":
            counts["role_os_given_rerun"] = per_host(play(fleet, "role", env, verbose=True, extra=OS_GIVEN)[1], fleet)
    counts["ping"] = per_host(play(fleet, "ping", env, verbose=True)[1], fleet)
    return counts


def per_host(stdout: str, fleet) -> dict:
    modules, commands = 0, 0
    for match in EXEC.finditer(stdout):
        what, cmd = match.group(2), match.group(3)
        commands += 1
        # A module execution runs the Python interpreter on the host; other commands are mkdir/chmod/rm/put.
        if what != "PUT" and "python" in cmd and ("AnsiballZ" in cmd or "sleep 0" in cmd):
            modules += 1
    return {"modules": round(modules / fleet.n, 2), "commands": round(commands / fleet.n, 2)}


# ----------------------------------------------------------------------------------------- module level


def module_level(tmp: str, env: dict, runs: int) -> dict:
    """Time the module edits of a 10,000-entry .netrc and a 5,000-line .condarc (direct module runs)."""
    work = os.path.join(tmp, "module-level")
    os.makedirs(os.path.join(work, "root"), exist_ok=True)
    netrc = os.path.join(work, "root", ".netrc")
    condarc = os.path.join(work, "condarc")
    netrc_lines = ["machine host%05d.corp.example login user%05d password pw%05d" % (i, i, i) for i in range(10000)]
    condarc_lines = ["# conda settings of the fleet image"]
    condarc_lines += ["channels:"] + ["  - channel-%04d" % i for i in range(2497)]
    condarc_lines += ["custom_multichannels:", "  fleet:"] + ["    - https://repo.corp.example/ch-%04d" % i for i in range(2495)]
    condarc_lines += ["ssl_verify: true", "report_errors: false"]
    cases = {
        "netrc_10000_entries": ("netrc_entry", netrc, "\n".join(netrc_lines) + "\n",
                                {"path": netrc, "machine": "host05000.corp.example", "login": "new-user",
                                 "password": "new-pw"}),
        "condarc_5000_lines": ("condarc_proxy", condarc, "\n".join(condarc_lines) + "\n",
                               {"path": condarc, "http": "http://proxy.corp.example:3128",
                                "https": "http://proxy.corp.example:3128", "bypass": ["mirror.corp.example"]}),
    }
    results = {}
    for name, (module, path, content, args) in cases.items():
        samples = {"edit": [], "unchanged": []}
        lines = content.count("\n")
        for sample in range(runs):
            log("module level %s: sample %d" % (name, sample + 1))
            with open(path, "w") as handle:
                handle.write(content)
            os.chmod(path, 0o600)
            for label in ("edit", "unchanged"):
                seconds, result = run_module(module, args, env, work)
                if result.get("failed") or result.get("changed") != (label == "edit"):
                    raise BenchError("%s %s: unexpected result %s" % (module, label, result))
                samples[label].append(seconds)
        results[name] = {"lines": lines, "edit_s": round(statistics.median(samples["edit"]), 3),
                         "unchanged_s": round(statistics.median(samples["unchanged"]), 3)}
    return results


def run_module(module: str, args: dict, env: dict, work: str) -> tuple[float, dict]:
    """Run the module's code the way the host does (python -m, args in a file), timing the process."""
    args_file = os.path.join(work, "args.json")
    with open(args_file, "w") as handle:
        json.dump({"ANSIBLE_MODULE_ARGS": args}, handle)
    code = ("import sys, runpy; sys.argv = ['m', %r]; "
            "runpy.run_module('ansible_collections.condafleet.proxy.plugins.modules.%s', run_name='__main__')"
            % (args_file, module))
    menv = dict(env, PYTHONPATH=os.path.join(REPO, "collections"))
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], env=menv, capture_output=True, text=True, timeout=120,
                          check=False)
    seconds = time.perf_counter() - start
    try:
        return seconds, json.loads(proc.stdout)
    except ValueError:
        raise BenchError("%s did not answer JSON: %s %s" % (module, proc.stdout[-1000:], proc.stderr[-1000:]))


def python_startup(env: dict, runs: int) -> float:
    """What an empty module process costs here (interpreter + ansible.module_utils.basic import)."""
    samples = []
    for sample in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import ansible.module_utils.basic"], env=env, check=True)
        samples.append(time.perf_counter() - start)
    return round(statistics.median(samples), 3)


# ----------------------------------------------------------------------------------------- report


# The rows of the table: (label, role key, hand-written key or None).
ROWS = (("converge", "role_converge", "hand_converge"), ("rerun", "role_rerun", "hand_rerun"),
        ("rerun, OS given", "role_os_given_rerun", "hand_rerun"), ("check", "role_check", "hand_check"))


def summarize(samples: list[dict], n: int) -> dict:
    med = {key: statistics.median(s[key] for s in samples) for key in samples[0] if key != "identical_hosts"}
    row = {"n": n, "runs": len(samples), "median_s": {k: round(v, 2) for k, v in med.items()},
           "per_host_ms": {k: round(1000 * v / n, 1) for k, v in med.items()}}
    # Ratios within each run, then their median (same machine state for both sides of a ratio).
    ratio = {}
    for label, role, hand in ROWS:
        ratio["hand/role " + label] = statistics.median(s[hand] / s[role] for s in samples)
        ratio["role/ping " + label] = statistics.median(s[role] / s["ping"] for s in samples)
        ratio["hand/ping " + label] = statistics.median(s[hand] / s["ping"] for s in samples)
    row["ratios"] = {k: round(v, 2) for k, v in ratio.items()}
    return row


def machine() -> dict:
    cpu = "unknown"
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    from ansible.release import __version__ as core

    with open(os.path.join(HERE, "ansible.cfg")) as handle:
        forks = re.search(r"^forks\s*=\s*(\d+)", handle.read(), re.M).group(1)
    return {"nproc": os.cpu_count(), "cpu": cpu, "python": platform.python_version(), "ansible_core": core,
            "forks": int(forks), "kernel": platform.release(),
            "load_at_start": " ".join("%.1f" % value for value in os.getloadavg())}


def print_table(report: dict) -> None:
    m = report["machine"]
    print("command: %s" % report["command"])
    print("machine: nproc=%s, %s, Python %s, ansible-core %s, forks=%s, pipelining on, load average at start %s" % (
        m["nproc"], m["cpu"], m["python"], m["ansible_core"], m["forks"], m["load_at_start"]))
    print()
    head = ("| fleet | N | runs | phase | role s | hand s | ping s | role ms/host | hand ms/host | ping ms/host "
            "| hand/role | role/ping | modules/host role | hand | ping |")
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for row in sorted(report["rows"], key=lambda row: (row["fleet"] != "local", row["n"])):
        counts = report["counts"].get(row["fleet"], {})
        md, ph, ratios = row["median_s"], row["per_host_ms"], row["ratios"]
        for label, role, hand in ROWS:
            print("| %s | %d | %d | %s | %.2f | %.2f | %.2f | %.0f | %.0f | %.0f | %.2f | %.2f | %s | %s | %s |" % (
                row["fleet"], row["n"], row["runs"], label, md[role], md[hand], md["ping"], ph[role], ph[hand],
                ph["ping"], ratios["hand/role " + label], ratios["role/ping " + label],
                counts.get(role, {}).get("modules", "-"), counts.get(hand, {}).get("modules", "-"),
                counts.get("ping", {}).get("modules", "-")))
    print()
    for name, res in report.get("module_level", {}).items():
        print("module level %s (%d lines): edit %.3f s, unchanged %.3f s (whole module process)" % (
            name, res["lines"], res["edit_s"], res["unchanged_s"]))
    if "python_startup_s" in report:
        print("python + ansible.module_utils.basic import alone: %.3f s" % report["python_startup_s"])
    if report.get("lab_skipped"):
        print("SSH lab: skipped (%s)" % report["lab_skipped"])
    print()
    for verdict in targets(report):
        print(verdict)


def targets(report: dict) -> list[str]:
    """The issue's targets, each with the figure it is judged on."""
    out = []

    def judge(name: str, value: float, limit: float, higher_is_better: bool) -> None:
        met = value >= limit if higher_is_better else value <= limit
        out.append("%s %s: %.2f (target %s %.2f)" % ("MET " if met else "MISS", name, value,
                                                     ">=" if higher_is_better else "<=", limit))

    local = [row for row in report["rows"] if row["fleet"] == "local"]
    for row in report["rows"]:
        where = "%s N=%d" % (row["fleet"], row["n"])
        judge("%s hand/role rerun" % where, row["ratios"]["hand/role rerun"], 2.0, True)
        judge("%s hand/role rerun, OS given" % where, row["ratios"]["hand/role rerun, OS given"], 2.0, True)
        judge("%s role/ping rerun" % where, row["ratios"]["role/ping rerun"], 3.0, False)
        judge("%s role/ping rerun, OS given" % where, row["ratios"]["role/ping rerun, OS given"], 3.0, False)
    if len(local) >= 2:
        small, big = min(local, key=lambda row: row["n"]), max(local, key=lambda row: row["n"])
        for label, role, _hand in ROWS:
            judge("scaling role %s: ms/host N=%d / N=%d" % (label, big["n"], small["n"]),
                  big["per_host_ms"][role] / small["per_host_ms"][role], 1.2, False)
        judge("scaling ping: ms/host N=%d / N=%d" % (big["n"], small["n"]),
              big["per_host_ms"]["ping"] / small["per_host_ms"]["ping"], 1.2, False)
    for name, res in report.get("module_level", {}).items():
        judge("module level %s edit (s)" % name, res["edit_s"], 0.5, False)
    return out


def save_partial(report: dict, samples: list, n: int) -> None:
    """The row of size ``n`` from the rounds measured so far (replacing the previous one)."""
    row = summarize(samples, n)
    row["fleet"] = "local"
    report["rows"] = [r for r in report["rows"] if not (r["fleet"] == "local" and r["n"] == n)] + [row]


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def lab_row(tmp: str, env: dict, report: dict, runs: int) -> dict:
    """The SSH lab's row; the lab is torn down (every pid, namespace and mount) even when a run fails."""
    lab = LabFleet(tmp, env)
    try:
        report["counts"]["lab"] = count_round_trips(lab, env)
        samples = []
        for run in range(runs):
            samples.append(one_round(lab, env))
            log("lab run %d: %s" % (run + 1, {k: round(v, 2) for k, v in samples[-1].items()}))
        row = summarize(samples, lab.n)
        row["fleet"] = "lab"
        return row
    finally:
        lab.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", maxsplit=1)[0])
    parser.add_argument("--sizes", default="10,50,200", help="local fleet sizes (comma-separated)")
    parser.add_argument("--runs", type=int, default=3, help="samples per size (the median is reported)")
    parser.add_argument("--lab", action="store_true", help="also run on the three-host SSH lab (root)")
    parser.add_argument("--lab-runs", type=int, default=3)
    parser.add_argument("--json", help="write the full report here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)

    subprocess.run(["bash", os.path.join(REPO, "scripts", "link-collection.sh")], check=True)
    tmp = tempfile.mkdtemp(prefix="condafleet-bench-")
    env = ansible_env(tmp)
    os.makedirs(env["ANSIBLE_LOCAL_TEMP"])
    report = {"machine": machine(), "command": " ".join([os.path.relpath(sys.executable, REPO)] + sys.argv),
              "rows": [], "counts": {}}
    started = time.perf_counter()

    def save() -> None:
        # After every step, so that an interrupted run (SIGTERM, Ctrl-C) keeps what it measured.
        report["total_s"] = round(time.perf_counter() - started, 1)
        if args.json:
            with open(args.json, "w") as handle:
                json.dump(report, handle, indent=2)

    signal.signal(signal.SIGTERM, _interrupt)
    try:
        # The cheap parts first: module level, then the lab, then the local fleets, smallest first.
        report["module_level"] = module_level(tmp, env, max(args.runs, 3))
        report["python_startup_s"] = python_startup(env, 5)
        log("module level: %s" % report["module_level"])
        save()
        if args.lab and os.geteuid() != 0:
            log("skipping the SSH lab: it needs root (network namespaces); run as root for the lab row")
            report["lab_skipped"] = "not root"
        elif args.lab:
            report["rows"].append(lab_row(tmp, env, report, args.lab_runs))
            save()
        sizes = [int(s) for s in args.sizes.split(",") if s]
        if sizes:
            log("counting module executions (N=2, -vvv, untimed)")
            report["counts"]["local"] = count_round_trips(LocalFleet(tmp, 2), env)
        for n in sizes:
            fleet = LocalFleet(tmp, n)
            samples = []
            for run in range(args.runs):
                samples.append(one_round(fleet, env))
                log("N=%d run %d: %s" % (n, run + 1, {k: round(v, 2) for k, v in samples[-1].items()}))
                save_partial(report, samples, n)
                save()
            shutil.rmtree(os.path.join(tmp, "sbx-%d" % n), ignore_errors=True)
    except KeyboardInterrupt:
        log("interrupted: reporting what was measured (complete rounds only)")
        report["interrupted"] = True
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    save()
    print_table(report)
    print("total benchmark time: %.0f s" % report["total_s"])
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        log("benchmark failed: %s" % exc)
        sys.exit(1)
