#!/usr/bin/env python3
"""Fleet preflight throughput: guestprep vs. Ansible running the same collector script.

Both tools reach N "guests" that are all one real OpenSSH sshd on 127.0.0.1 (distinct
inventory names), with the same forks/parallelism, the same key, the same host-key
checking, and the same collector (guest_scripts/linux/collect.sh). Baseline:
`ansible all -m script`.

Measured with benchmarks/harness.py (issue 17): guestprep and Ansible alternate within
each round (never one tool's runs back to back), every run starts after `sync` (and with
--drop-caches after dropped page cache: off by default, both tools then start from the
same warm Python and ssh binaries, which is what a fleet run meets after its first
minute), one untimed warm-up run of each first. Printed: each side's min and median,
guests per second, the speed-up ansible/guestprep per round with min and median, the
machine and its load before and after. The first run of each side is checked to have
reached every guest, so a fast run that skipped guests cannot win.

    python benchmarks/preflight_fleet.py [--sizes 50[,200]] [--parallel 50] [--rounds 5]
                                         [--order abab|alternate] [--drop-caches] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from tests.support.sshd import start_sshd  # noqa: E402

COLLECTOR = REPO / "guest_scripts" / "linux" / "collect.sh"
GOAL = 3.0  # ansible time / guestprep time, same forks
ANSIBLE_OK = re.compile(r"^(\S+) \| (?:CHANGED|SUCCESS) => \{", re.M)


class Side:
    """One tool's run over the fleet: timed argv; the first run's output is checked."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], n: int, out_dir: Path,
                 count_guests):
        self.name, self.argv, self.env, self.n = name, argv, env, n
        self.out_dir, self.count_guests = out_dir, count_guests
        self.stdout = ""
        self.checked: str | None = None

    def before(self) -> None:
        shutil.rmtree(self.out_dir, ignore_errors=True)

    def run(self) -> None:
        res = subprocess.run(self.argv, env=self.env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        if res.returncode not in (0, 1, 3):  # 1/3: findings or unknowns, still a full run
            raise SystemExit(f"{self.argv[0]} failed ({res.returncode}): {res.stderr[-2000:]}")
        self.stdout = res.stdout

    def after(self) -> None:
        if self.checked is None:
            reached = self.count_guests(self)
            self.checked = f"{reached}/{self.n} guests reached"
            if reached != self.n:
                raise SystemExit(f"{self.name}: only {reached} of {self.n} guests reached: "
                                 "its time would not be comparable")


def guestprep_reached(side: Side) -> int:
    """Guests of report.json whose facts were read (docs/report-schema.json: `error` is null
    and `facts_summary` filled; unreachable guests carry an error)."""
    doc = json.loads((side.out_dir / "report.json").read_text())
    return sum(1 for g in doc.get("guests", []) if g.get("error") is None and g.get("facts_summary"))


def ansible_reached(side: Side) -> int:
    """Hosts the ad-hoc `minimal` callback reports as CHANGED/SUCCESS ("host | CHANGED => {";
    ad-hoc `ansible` ignores ANSIBLE_STDOUT_CALLBACK unless callbacks are enabled for it,
    ansible-core lib/ansible/cli/adhoc.py: bin_ansible_callbacks)."""
    return len({m.group(1) for m in ANSIBLE_OK.finditer(side.stdout)})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # 200 guests x 5 rounds x both tools takes well over 10 minutes on 2 shared cores
    # (ansible alone > 5 minutes a run there): pass --sizes 50,200 on a quiet machine.
    ap.add_argument("--sizes", default="50")
    ap.add_argument("--parallel", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--order", choices=["abab", "alternate"], default="alternate",
                    help="alternate (default): guestprep first in even rounds, ansible first "
                         "in odd ones; abab: guestprep first every round")
    ap.add_argument("--drop-caches", action="store_true",
                    help="drop the page cache before every run (root), not only sync")
    ap.add_argument("--quick", action="store_true", help="5 guests, 1 round: proves it works")
    args = ap.parse_args()
    ansible = shutil.which("ansible", path=str(Path(sys.executable).parent)) or shutil.which("ansible")
    if not ansible:
        print("ansible-core is not installed in this venv (make bench installs the [bench] extra)",
              file=sys.stderr)
        return 3
    sizes = [5] if args.quick else [int(x) for x in args.sizes.split(",")]
    rounds = 1 if args.quick else args.rounds
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: sys.exit(128 + signum))
    work = Path(tempfile.mkdtemp(prefix="gp-bench-"))
    server = start_sshd(work / "sshd", max_startups=2000, extra_config="MaxSessions 2000\n")
    try:
        return run(work, server, ansible, sizes, rounds, args)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def run(work: Path, server, ansible: str, sizes: list[int], rounds: int, args) -> int:
    flush = (lambda: harness.flush(drop=True, memory=not args.quick)) if args.drop_caches else \
        (lambda: harness.flush(drop=False, memory=not args.quick))
    print(f"machine: {harness.machine((('ssh', '-V'), ansible))}")
    print(f"before: {harness.load()}")
    print(f"sshd: 127.0.0.1:{server.port}; parallel/forks = {args.parallel}; {rounds} round(s), "
          f"order {args.order}")
    env = {**os.environ, "ANSIBLE_HOST_KEY_CHECKING": "True", "ANSIBLE_LOCAL_TEMP": str(work / "ans-tmp"),
           "ANSIBLE_SSH_ARGS": f"-o UserKnownHostsFile={server.known_hosts} -o ControlMaster=no",
           "ANSIBLE_PIPELINING": "True", "ANSIBLE_GATHERING": "explicit",
           "ANSIBLE_PYTHON_INTERPRETER": "auto_silent", "ANSIBLE_NOCOLOR": "1"}
    results = []
    for n in sizes:
        names = [f"g{i:04d}" for i in range(n)]
        fleet = work / f"fleet-{n}.yaml"
        fleet.write_text("defaults:\n  port: %d\n  user: root\n  key_file: %s\n  agent: false\nguests:\n%s" % (
            server.port, server.user_key, "".join(f"  - name: {x}\n    address: 127.0.0.1\n" for x in names)))
        ini = work / f"hosts-{n}.ini"
        ini.write_text("[all]\n" + "".join(
            f"{x} ansible_host=127.0.0.1 ansible_port={server.port} ansible_user=root "
            f"ansible_ssh_private_key_file={server.user_key}\n" for x in names))
        out = work / f"out-{n}"
        ours = Side("guestprep", [sys.executable, "-m", "guestprep.cli", "preflight", "-i", str(fleet),
                                  "--parallel", str(args.parallel), "--known-hosts", str(server.known_hosts),
                                  "--format", "json", "--out", str(out), "--quiet"],
                    env, n, out, guestprep_reached)
        theirs = Side("ansible", [ansible, "all", "-i", str(ini), "-f", str(args.parallel), "-m", "script",
                                  "-a", str(COLLECTOR)], env, n, work / f"ans-out-{n}", ansible_reached)
        for side in (ours, theirs):  # warm-up, untimed, and the completeness check
            side.before()
            side.run()
            side.after()
        cases = {s.name: harness.Case(run=s.run, before=s.before) for s in (ours, theirs)}
        samples = harness.interleaved(cases, rounds, flush=flush, order=args.order, progress=lambda line: print(
            f"  N={n} {line}", file=sys.stderr, flush=True))
        o, t = harness.summary(samples["guestprep"]), harness.summary(samples["ansible"])
        r = harness.ratio(samples["ansible"], samples["guestprep"])
        results.append((n, r))
        print(f"\nN={n} ({ours.checked} by guestprep, {theirs.checked} by ansible; each run after "
              f"{samples.flushed})")
        print(harness.format_summary("guestprep", o, 18) + f"  ({n / o.median:6.1f} guests/s median)")
        print(harness.format_summary("ansible -m script", t, 18) + f"  ({n / t.median:6.1f} guests/s median)")
        print(harness.format_ratio("speed-up ansible / guestprep", r, ">=", GOAL, width=30))
        note = harness.order_note(samples, "ansible", "guestprep")
        if note:
            print(f"  {'':<30} {note}")
    print(f"\nafter: {harness.load()}")
    print(f"goal: speed-up >= {GOAL:g}x (throughput vs. Ansible with the same forks): " + ", ".join(
        f"N={n} {harness.verdict(r.median, '>=', GOAL)}" for n, r in results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
