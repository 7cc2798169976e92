"""Benchmark: guestprep's vSphere inventory vs. the naive per-VM property access most scripts use.

Starts the govmomi vCenter simulator (tests/vsphere/vcsim, built and cached like the tests)
with 1,000 VMs over TLS, records its answers once (benchmarks/vsphere_replay.py), then measures
in two modes, each with the cases run interleaved (harness.py: one run of each per round, the
order reversed every other round, min/median/max and per-round ratios):

  live       against the simulator itself: the simulator's own time to answer is inside every
             figure (it needs ~0.2 s of CPU to write the 9 MB fleet answer, more than the client
             needs to read it), so this ratio says how much faster an inventory is against vcsim
  replay     against a minimal loopback TLS server that answers each request with the bytes the
             simulator sent for it (keyed by request body): both sides read the same bytes over
             loopback with the server's time ~0, so this ratio is the clients' speed alone

Cases (the same in both modes):

  naive      for vm in view.view: vm.name, vm.config, vm.runtime, vm.guest, vm.runtime.host.name,
             host.parent.name  (pyVmomi lazy properties: a round trip each, 8 per VM)
  fast       inventory.fetch_all() as guestprep calls it: one ContainerView, a small retrieval
             naming the VMs, then their properties in four parts (pipeline.py: two in flight, the
             next built by the server while this one is read; each continued while it has a
             token), the answers cut at their markup (fastscan), each VM's properties decoded in
             one pass for mapping.to_source_vm, device lists mapped from their XML (fastmap)
  one        fast, but the whole fleet in one RetrievePropertiesEx read once it has all arrived
             (fetch_all before guestprep/vsphere/pipeline.py: no overlap of server and client work)
  generic    fetch_all() as before issue 17: the answer parsed into an ElementTree, decoded
             into records (fastsoap.decode_result), mapped by mapping.to_source_vm
  request    the RetrievePropertiesEx round trip alone (view, request, answer read, no parse)
  scan       fastscan.scan_result on the answer of `request` (no network)

Each case is also measured in CPU seconds, the client's and the server's (the simulator or the
replay server, /proc/<pid>/stat): on the shared 2-core machine wall time swings with the load.
The traffic of one run of each case (round trips per SOAP call, bytes, the server's time to
answer) is printed from the recording, and a profile of one `fast` run from the replay mode.

Both sides read the same facts (naive skips vm.snapshot, which crashes vcsim 0.24 when nil).
Nothing is written to disk, so the flush between runs is `sync` only. Goal (issue 17): fast >=
20x naive.

Usage: python benchmarks/vsphere_inventory.py [--vms 1000] [--rounds 5] [--modes live,replay]
                                              [--delays 0] [--order alternate]
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "vsphere"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import harness  # noqa: E402
import simulator as simlib  # noqa: E402
import vsphere_replay as replaylib  # noqa: E402
from pyVmomi import vim, vmodl  # noqa: E402

from guestprep.vsphere import fastscan, fastsoap, inventory, mapping, pipeline  # noqa: E402
from guestprep.vsphere.client import connect  # noqa: E402

GOAL = 20.0
SETTLE_MEMORY = True  # wait before each run until the host took back freed memory (harness.memory_settle)


def naive(session) -> int:
    content = session.si.RetrieveContent()
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
    try:
        n = 0
        for vm in view.view:
            _ = vm.name
            cfg = vm.config
            _ = (cfg.uuid, cfg.firmware, cfg.hardware.device, cfg.guestId)
            _ = vm.runtime.powerState
            g = vm.guest
            _ = (g.toolsRunningStatus, g.ipAddress, g.net)
            # vm.snapshot is left out: vcsim 0.24 drops the connection when asked for a nil
            # snapshot property, so naive does one round trip less per VM than a real script
            host = vm.runtime.host
            _ = (host.name, host.parent.name)
            n += 1
        return n
    finally:
        view.DestroyView()


def fetch(session, *, mapper=None, decoder=None, fleet=None) -> int:
    """fetch_all with the given mapper / answer decoder / fleet retrieval swapped in for the run."""
    saved = inventory.to_source_vm, fastscan.retrieve_result, pipeline.retrieve_fleet, inventory.source_vms
    try:
        if mapper:
            inventory.to_source_vm = mapper
        if decoder:
            fastscan.retrieve_result = decoder
        if fleet:
            pipeline.retrieve_fleet = fleet
            # one answer interleaves VMs and their hosts: every VM mapped once, at the end, as before
            inventory.source_vms = lambda objects, **_: saved[3](objects)
        return len(inventory.fetch_all(session))
    finally:
        inventory.to_source_vm, fastscan.retrieve_result, pipeline.retrieve_fleet, inventory.source_vms = saved


def one_retrieval(pc, first_spec, spec_for, options):
    """The whole fleet in one RetrievePropertiesEx, read after it has all arrived: fetch_all before
    guestprep/vsphere/pipeline.py (the same answer scanned and mapped the same way)."""
    view = first_spec.objectSet[0].obj
    return pipeline.pages(pc, fastscan.retrieve_properties_ex(pc, [inventory._filter_spec(view, None)], options))


class Request:
    """The retrieval's round trip alone; keeps the last answer for the `scan` case."""

    def __init__(self, session):
        self.session, self.body = session, b""

    def __call__(self) -> None:
        content = self.session.si.RetrieveContent()
        types = [vim.VirtualMachine] + list(inventory.OTHER_PROPERTIES)
        view = content.viewManager.CreateContainerView(content.rootFolder, types, True)
        pc = content.propertyCollector
        options = vmodl.query.PropertyCollector.RetrieveOptions(maxObjects=inventory.DEFAULT_PAGE_SIZE)
        try:
            self.body = fastsoap.invoke_raw(pc._stub, pc, "RetrievePropertiesEx",
                                            ([inventory._filter_spec(view, None)], options))
        finally:
            view.DestroyView()

    def scan(self) -> None:
        if not self.body:
            self()
        fastscan.scan_result(self.body)


class CpuMeter:
    """CPU seconds each case used, ours (process_time) and the simulator's (/proc/<pid>/stat utime+stime,
    proc(5)): on a loaded shared machine wall time swings 2-3x, the work done does not."""

    def __init__(self, sim_pid: int):
        self.sim_pid, self.tick = sim_pid, os.sysconf("SC_CLK_TCK")
        self.ours: dict[str, list[float]] = {}
        self.sim: dict[str, list[float]] = {}

    def sim_cpu(self) -> float:
        with open(f"/proc/{self.sim_pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self.tick  # utime, stime (fields 14, 15)

    def wrap(self, name: str, run):
        def measured():
            c0, s0 = time.process_time(), self.sim_cpu()
            run()
            self.ours.setdefault(name, []).append(time.process_time() - c0)
            self.sim.setdefault(name, []).append(self.sim_cpu() - s0)
        return measured


def cases_for(s) -> tuple[dict, "Request"]:
    request = Request(s)
    return {
        "naive": lambda: naive(s),
        "fast": lambda: fetch(s),  # exactly as guestprep/vsphere/inventory.py is wired
        "one": lambda: fetch(s, fleet=one_retrieval),
        "generic": lambda: fetch(s, mapper=mapping.to_source_vm, decoder=fastsoap.decode_result),
        "request": request,
        "scan": request.scan,
    }, request


def record(sim, certs) -> tuple[replaylib.Recorder, dict[str, int]]:
    """One run of every case through the recording proxy: warm-up, the answers to replay, the traffic."""
    recorder = replaylib.Recorder((sim.host, sim.port), certs.ca_pem, certs.cert_pem, certs.key_pem)
    s = connect(f"127.0.0.1:{recorder.port}", sim.user, sim.password, ca_bundle=str(certs.ca_pem), timeout=600)
    cases, _ = cases_for(s)
    counts = {}
    for name, run in cases.items():
        recorder.label = name
        counts[name] = run()
    recorder.label = "setup"
    s.close()
    vms = {n: c for n, c in counts.items() if c is not None}
    assert len(set(vms.values())) == 1, vms  # every side sees every VM
    return recorder, vms


def measure(mode: str, s, server_pid: int, rounds: int, order: str) -> tuple[harness.Samples, "CpuMeter"]:
    cases, _ = cases_for(s)
    meter = CpuMeter(server_pid)
    cases = {name: meter.wrap(name, run) for name, run in cases.items()}
    print(f"  [{mode}] before: {harness.load()}")
    samples = harness.interleaved(cases, rounds, order=order,
                                  flush=lambda: harness.flush(drop=False, memory=SETTLE_MEMORY))
    print(f"  [{mode}] after:  {harness.load()}; 1-minute load as each round started: "
          + " ".join(f"{x:.2f}" for x in samples.loads))
    return samples, meter


def profile_fast(s) -> None:
    import cProfile
    import io
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    fetch(s)
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(14)
    lines = [ln for ln in out.getvalue().splitlines() if ln.strip()]
    print("  profile of one `fast` run against the replay server (cProfile, by own time; cProfile inflates "
          "the many small calls):")
    for ln in lines[lines.index(next(ln for ln in lines if "ncalls" in ln)) - 1:]:
        print("    " + ln.strip()[:150])


def bench(binary, per_pool: int, delay_ms: int, rounds: int, order: str, modes: list[str]) -> None:
    name = "loopback" if delay_ms == 0 else f"lan-{delay_ms}ms"
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        certs = simlib.make_certs(Path(tmp))
        started = time.perf_counter()
        sim = simlib.Simulator(binary, certs, secrets.token_hex(8), vms_per_pool=per_pool, startup_timeout=600,
                               delay_ms=delay_ms)
        print(f"\n[{name}] simulator with {per_pool * 2} VMs ready in {time.perf_counter() - started:.1f} s")
        try:
            recorder, counts = record(sim, certs)
            recorder.close()
            vms = counts["naive"]
            print("  traffic of one run of each case (recorded through a proxy; 'server's time' is the "
                  "simulator's, to the first byte of each answer, seen from the proxy):")
            for case, traffic in recorder.traffic.items():
                print(f"    {case:<8} {traffic.describe()}")
            if recorder.differed:
                print(f"  requests whose answer changed between live runs (replayed as first seen): "
                      f"{dict(recorder.differed)}")
            if "live" in modes:
                s = connect(sim.server, sim.user, sim.password, ca_bundle=str(certs.ca_pem), timeout=600)
                results["live"] = measure("live", s, sim.proc.pid, rounds, order)
                s.close()
        finally:
            sim.close()
        if "replay" in modes:
            recording = Path(tmp) / "recording.pickle"
            recorder.save(recording)
            replay = replaylib.Replay(recording, certs.cert_pem, certs.key_pem)
            try:
                s = connect(replay.server, sim.user, sim.password, ca_bundle=str(certs.ca_pem), timeout=600)
                results["replay"] = measure("replay", s, replay.proc.pid, rounds, order)
                profile_fast(s)
                s.close()
            finally:
                status = replay.close()
            if status:
                raise SystemExit(f"the replay server was asked for requests never recorded (exit {status}): "
                                 "the replay figures do not measure the same work")
    for mode, (samples, meter) in results.items():
        server = "simulator" if mode == "live" else "replay server"
        print(f"\n[{name}, {mode.upper()}] {'against the simulator (its time to answer included)' if mode == 'live' else 'against the replay server (the same bytes, server time ~0: the clients alone)'}")
        report(vms, samples)
        report_cpu(meter, server)
        if mode == "replay":
            naive_calls = sum(recorder.traffic["naive"].calls.values())
            per_call = harness.summary(meter.sim["naive"]).median / max(1, naive_calls) * 1e6
            print(f"  note: the replay server is not free for naive's {naive_calls} round trips (median "
                  f"{harness.summary(meter.sim['naive']).median:.2f} s of its CPU per run, ~{per_call:.0f} us per "
                  "answer; on a loaded machine each answer also waits for the server to be scheduled): naive's "
                  "replay wall time includes that, its client CPU does not")


def report_cpu(meter: CpuMeter, server: str) -> None:
    """The same cases in CPU seconds (client + server): what wall time would be on an idle machine,
    where the client and the server wait for each other and never run at once."""
    total = {n: [a + b for a, b in zip(meter.ours[n], meter.sim[n])] for n in meter.ours}
    print(f"  CPU seconds per run (client + {server}; median):")
    for n in total:
        print(f"    {n:<10} client min {harness.summary(meter.ours[n]).min:7.3f}s median "
              f"{harness.summary(meter.ours[n]).median:7.3f}s  {server} "
              f"{harness.summary(meter.sim[n]).median:7.3f}s  total min {harness.summary(total[n]).min:7.3f}s "
              f"median {harness.summary(total[n]).median:7.3f}s")
    r = harness.ratio
    print(harness.format_ratio("CPU (client + server) naive / fast", r(total["naive"], total["fast"]), ">=", GOAL))
    print(harness.format_ratio("CPU client only naive / fast", r(meter.ours["naive"], meter.ours["fast"]), ">=", GOAL))
    print(harness.format_ratio("CPU naive / request (ceiling)", r(total["naive"], total["request"])))


def report(vms: int, samples: harness.Samples) -> None:
    print(f"  {vms} VMs, {len(samples['naive'])} rounds, order of round 1: {' '.join(samples.orders[0])}, "
          f"flush: {samples.flushed}; wall seconds:")
    harness.print_summaries(samples, width=10)
    r = harness.ratio
    print(harness.format_ratio("wall naive / fast", r(samples["naive"], samples["fast"]), ">=", GOAL))
    print(harness.format_ratio("wall naive / generic (before)", r(samples["naive"], samples["generic"])))
    print(harness.format_ratio("wall generic / fast (speed-up of the fast path)", r(samples["generic"], samples["fast"])))
    print(harness.format_ratio("wall one / fast (speed-up of the parts overlapping)", r(samples["one"], samples["fast"])))
    ceiling = r(samples["naive"], samples["request"])
    print(harness.format_ratio("wall naive / request (ceiling: zero client work)", ceiling))
    client = harness.difference(samples["fast"], samples["request"])
    print(f"  {'fast - request (our parse + map)':<44} min {client.min:6.3f}s median {client.median:6.3f}s; "
          f"of which scan median {harness.summary(samples['scan']).median:.3f}s")
    note = harness.order_note(samples, "naive", "fast")
    if note:
        print(f"  order: {note}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vms", type=int, default=1000, help="total VMs (split over the simulator's 2 pools)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--delays", default="0", help="comma list of per-call delays in ms (0 = loopback; "
                                                   "5 models a LAN, naive then takes minutes per round)")
    ap.add_argument("--order", default="alternate", choices=("abab", "alternate"))
    ap.add_argument("--modes", default="live,replay", help="live (against the simulator), replay (against "
                                                          "its recorded answers, server time ~0), or both")
    ap.add_argument("--quick", action="store_true",
                    help="a smoke run (tests/benchmarks): 240 VMs (two parts), one round, no memory settle")
    args = ap.parse_args()
    if args.quick:
        global SETTLE_MEMORY
        args.vms, args.rounds, SETTLE_MEMORY = 240, 1, False
    per_pool = max(1, (args.vms + 1) // 2)
    try:
        binary = simlib.build()
    except simlib.SimulatorUnavailable as exc:
        print(f"skipped: {exc}")
        return 0
    print(f"machine: {harness.machine(tools=())}")
    for delay in (int(d) for d in args.delays.split(",") if d.strip()):
        bench(binary, per_pool, delay, args.rounds, args.order, [m.strip() for m in args.modes.split(",") if m.strip()])
    print(f"\ngoal (issue 17): fast >= {GOAL:g}x naive on loopback. LIVE includes the simulator's time to answer "
          "(the ceiling line: naive over the bare round trip, the most any client-side change can reach there); "
          "REPLAY is the clients alone (same bytes, server time ~0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
