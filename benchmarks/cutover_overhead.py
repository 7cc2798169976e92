#!/usr/bin/env python3
"""Benchmark: the cutover controller's own overhead per VM, for N VMs across K Proxmox nodes (issue 15).

Real parts, as tests/cutover uses them: the govmomi simulator (source VMs, power, marks), the
suite's sshd on 127.0.0.1 as every node (each with its own name, dir storage and storage.cfg)
running guestprep-host with real qemu-img, the Proxmox API test cluster with K nodes
(tests/cutover/pve_node.py; its VMs do not boot: start is an API task, the agent answers after
50 ms). Each VM has a 1 MiB disk: the conversions are short, and they are subtracted anyway.

Per configuration (N VMs, K nodes) the wave is planned once; every round then resets both sides
(sources powered on with Tools, unmarked; the Proxmox cluster emptied, the nodes' work
directories and the wave's journal removed) and runs `guestprep cutover run --parallel N`
(no --per-node limit: nothing waits for a turn). Per VM, from the journal:

  wall        its first step's start to its last step's end
  conversion  guestprep-host's runs on the node (the convert step's seconds per disk, which
              include starting the command over SSH)
  boot        the start step plus verify's wait for the guest agent's first answer
  overhead    wall - conversion - boot: everything the controller does itself (gate, the
              vSphere operations, uploads and checks on the node, finalize's API calls, the
              journal), including waiting for the 2 shared cores

Also per round: the wave's wall time (process start to exit) and the controller process's CPU
time (user + system, from wait4) per VM. Configurations run interleaved, one run of each per
round (benchmarks/harness.py); printed: min and median over the rounds of the per-round median
per VM, and the growth relative to N=1 on the same K; a VM that does not end done is said, left
out of the figures, and makes the exit status 1. Flush between runs: `sync` only (the
page cache holds the zipapp and Python; dropping it would time disk reads, not the controller).

    python benchmarks/cutover_overhead.py [--vms 1,4,16] [--nodes 1,2] [--rounds 3]
    python benchmarks/cutover_overhead.py --quick      # N 1,2 / K 1,2, one round (tests run this)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import harness  # noqa: E402

EXE = Path(sys.executable).with_name("guestprep")
SIM_VMS = [f"DC0_H0_VM{i}" for i in range(8)] + [f"DC0_C0_RP0_VM{i}" for i in range(8)]   # vcsim -vm 8
APIDATA = ROOT.parent / "shared" / "pve-api" / "apidata.json"


def _t(stamp: str) -> float:
    return dt.datetime.fromisoformat(stamp).timestamp()


def per_vm(report: dict) -> tuple[list[dict[str, float]], list[str]]:
    """wall, conversion, boot and overhead (seconds) of every VM of a wave's report that ended done;
    and what went wrong with the others (said, never averaged in)."""
    out, failed = [], []
    for vm in report["vms"]:
        if vm["phase"] != "done":
            failed.append(f"{vm['vm']} ended {vm['phase']}: {str(vm['error'])[:300]}")
            continue
        done = {s["step"]: s for s in vm["steps"] if s["status"] == "done"}
        wall = _t(vm["steps"][-1]["ended"]) - _t(vm["steps"][0]["started"])
        conversion = sum(d["seconds"] for d in done["convert"]["outputs"]["disks"])
        boot = done["start"]["seconds"] + (_t(done["verify"]["outputs"]["agent_first_answer_at"])
                                           - _t(done["verify"]["started"]))
        steps = {name: s["seconds"] for name, s in done.items()}
        steps["convert"] -= conversion   # the controller's part: uploads, checks, waiting for the node's session
        out.append({"wall": wall, "conversion": conversion, "boot": boot, "overhead": wall - conversion - boot,
                    "steps": steps})
    return out, failed


def where_it_goes(results: list[dict]) -> str:
    """The overhead by step: per step, the median over rounds of the median over the wave's VMs."""
    names = list(results[0]["vms"][0]["steps"])
    parts = []
    for name in names:
        per_round = [statistics.median(v["steps"][name] for v in r["vms"]) for r in results]
        parts.append(f"{name} {statistics.median(per_round):.2f}")
    return ", ".join(parts)


class Config:
    """One (N VMs, K nodes) wave on its own Proxmox test cluster, planned once, reset before each run."""

    def __init__(self, n: int, k: int, work: Path, sim, vs, sshd, zipapp: Path):
        from tests.cutover.conftest import WaveLab, accept_gate

        self.n, self.k, self.vs = n, k, vs
        nodes = [f"pve{i + 1}" for i in range(k)]
        vms = [(SIM_VMS[i], 9500 + i, nodes[i % k]) for i in range(n)]
        self.lab = WaveLab(work / f"n{n}-k{k}", sim, vs, sshd, APIDATA, zipapp, vms)
        self.lab.pve.state.task_delay = 0.02
        self.lab.plan()
        accept_gate(self.lab)
        self.results: list[dict] = []
        self.failures: list[str] = []

    @property
    def name(self) -> str:
        return f"N={self.n:<2} K={self.k}"

    def reset(self) -> None:
        """Both sides as before a cutover; the wave file itself is kept (its plan hash too)."""
        from guestprep.vsphere import marks
        from guestprep.vsphere.actions import power_on
        from tests.vsphere.vsphere_support import set_guest

        lab = self.lab
        shutil.rmtree(lab.wave.parent / (lab.wave.name + ".state"), ignore_errors=True)
        for d in lab.workdirs.values():
            shutil.rmtree(d, ignore_errors=True)
        st = lab.pve.state
        with st.lock:
            st.vms.clear()
            st.tasks.clear()
            st.requests.clear()
            for node, (sid, path) in lab.storages.items():
                st.nodes[node]["storages"][sid].volumes.clear()
                shutil.rmtree(path / "images", ignore_errors=True)
                (path / "images").mkdir()
        for name, vm in lab.vms.items():
            if marks.current(vm) or (marks.field_value(self.vs, vm) or "").startswith(marks.MARKED):
                marks.unmark(self.vs, vm, "benchmark reset")
            if str(vm.runtime.powerState) != "poweredOn":
                power_on(self.vs, vm)
            set_guest(self.vs, vm, toolsRunningStatus="guestToolsRunning")

    def run(self) -> None:
        lab = self.lab
        argv = [str(EXE), "cutover", "run", str(lab.wave), "--parallel", str(self.n), "--poll", "0.05",
                "--agent-timeout", "30"]
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, env=lab.env(), cwd=lab.tmp, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, errs = proc.communicate()
        wall = time.perf_counter() - t0
        report_file = lab.wave.parent / (lab.wave.name + ".state") / "report.json"
        if proc.returncode not in (0, 1) or not report_file.is_file():   # said, left out of the figures
            self.failures.append(f"exit {proc.returncode}: {errs.decode(errors='replace').strip()[-400:]}")
            return
        vms, failed = per_vm(json.loads(report_file.read_text()))
        self.failures += failed
        if vms:
            self.results.append({"wave_wall": wall, "vms": vms, "cpu": None})

    def close(self) -> None:
        self.lab.close()


def _run_with_rusage(cfg: Config) -> None:
    """cfg.run, with the CPU time the controller process used (user + system of the children this
    process reaped meanwhile: only that process; the simulator, sshd and the Proxmox test server
    keep running, and what the nodes run is sshd's child, not ours)."""
    before, done = os.times(), len(cfg.results)
    cfg.run()
    after = os.times()
    if len(cfg.results) > done:
        cfg.results[-1]["cpu"] = (after.children_user - before.children_user) + \
            (after.children_system - before.children_system)


def median_of(results: list[dict], key: str) -> list[float]:
    """Per round: the median over the wave's VMs of ``key``."""
    return [statistics.median(v[key] for v in r["vms"]) for r in results]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vms", default="1,4,16", help="N values, comma-separated (at most 16)")
    ap.add_argument("--nodes", default="1,2", help="K values, comma-separated")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="N 1,2, K 1,2, one round: a smoke run")
    args = ap.parse_args(argv)
    if args.quick:
        args.vms, args.nodes, args.rounds = "1,2", "1,2", 1
    ns = sorted({int(x) for x in args.vms.split(",")})
    ks = sorted({int(x) for x in args.nodes.split(",")})
    if not ns or max(ns) > len(SIM_VMS) or min(ns) < 1 or min(ks) < 1:
        ap.error(f"--vms must be 1..{len(SIM_VMS)}, --nodes >= 1")
    if args.rounds < 1:
        ap.error("--rounds must be >= 1")
    pairs = [(n, k) for k in ks for n in ns if k <= n]   # K nodes need at least K VMs to be used

    from tests.support.sshd import start_sshd
    from tests.vsphere import simulator as simlib

    work = Path(tempfile.mkdtemp(prefix="gp-cutover-bench-"))
    zipapp = work / "guestprep-host.pyz"
    subprocess.run([sys.executable, str(ROOT / "tools" / "build_zipapp.py"), "--out", str(zipapp)], check=True,
                   capture_output=True)
    sim = simlib.Simulator(simlib.build(), simlib.make_certs(work / "certs"), "pw-" + secrets.token_hex(8),
                           vms_per_pool=8)
    sshd = start_sshd(work / "sshd")
    vs = sim.connect()
    configs: dict[str, Config] = {}
    try:
        print(f"machine: {harness.machine()}", flush=True)
        print(f"before: {harness.load()}", flush=True)
        t_plan = time.perf_counter()
        for n, k in pairs:
            cfg = Config(n, k, work, sim, vs, sshd, zipapp)
            configs[cfg.name] = cfg
        print(f"planned {len(configs)} waves in {time.perf_counter() - t_plan:.0f} s (not timed below)", flush=True)
        cases = {name: harness.Case(run=lambda c=c: _run_with_rusage(c), before=c.reset) for name, c in configs.items()}
        harness.interleaved(cases, args.rounds, flush=lambda: harness.flush(drop=False, memory=not args.quick),
                            progress=lambda m: print(f"  {m}", flush=True))
        print(f"after: {harness.load()}")
        print(f"\ncontroller overhead per VM (wall - conversion - boot), seconds; min and median over "
              f"{args.rounds} round(s) of the per-round median over the wave's VMs:")
        base: dict[int, float] = {}
        failed = 0
        for name, cfg in configs.items():
            for f in cfg.failures:
                print(f"  {name}  FAILED, left out: {f}")
            failed += len(cfg.failures)
            if not cfg.results:
                print(f"  {name}  no run finished")
                continue
            over = harness.summary(median_of(cfg.results, "overhead"))   # over the rounds that finished
            wall = harness.summary(median_of(cfg.results, "wall"))
            conv = harness.summary(median_of(cfg.results, "conversion"))
            boot = harness.summary(median_of(cfg.results, "boot"))
            wave = harness.summary([r["wave_wall"] for r in cfg.results])
            cpu = harness.summary([r["cpu"] / cfg.n for r in cfg.results])
            if cfg.n == min(n for n, k in pairs if k == cfg.k):
                base[cfg.k] = over.median
            growth = over.median / base[cfg.k] if base.get(cfg.k) else float("nan")
            print(f"  {name}  overhead min {over.min:6.2f} median {over.median:6.2f}  (x{growth:.2f} vs N={min(n for n, k in pairs if k == cfg.k)}, "
                  f"{over.rounds} round(s))"
                  f" | VM wall {wall.median:6.2f}  conversion {conv.median:5.2f}  boot {boot.median:5.2f}"
                  f" | wave {wave.median:6.2f} s, controller CPU {cpu.median:5.2f} s/VM")
        print("\nby step (median s; convert without the conversion, start and verify include the boot):")
        for name, cfg in configs.items():
            if cfg.results:
                print(f"  {name}  {where_it_goes(cfg.results)}")
        return 1 if failed else 0
    finally:
        for cfg in configs.values():
            cfg.close()
        vs.close()
        sshd.stop()
        sim.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
