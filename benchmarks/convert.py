#!/usr/bin/env python3
"""Benchmark guestprep-host convert against named baselines (issue 6).

One run, medians of --reps repetitions (interleaved so drift hits every case alike):

  ours          guestprep-host convert SRC --to qcow2 --no-verify   (4 GiB vmdk, ~1 GiB data)
  ours+verify   the same with the default verification (informational)
  bare          qemu-img convert -f vmdk -O qcow2 -t writeback SRC DST   (same durability)
  bare-unsafe   qemu-img convert -f vmdk -O qcow2 SRC DST   (qemu default cache=unsafe: no flush)
  two-step      the seed's way: cp SRC staging/ && qemu-img convert -p -f vmdk -O qcow2 ...
  ours-64G      ours on the same ~1 GiB of data scattered in a 64 GiB virtual disk
  bare-64G      bare on that disk (how much of ratio 3 is qemu-img's own)
  ours/bare-empty  both on an empty 64 MiB vmdk (fixed start-up cost)

Ratios printed (goals from the issue):
  1. ours / bare                 overhead            goal <= 1.05
  2. two-step / ours             speed-up            goal >= 1.8
  3. ours-64G / ours             virtual-size cost   goal <= 1.2

    python benchmarks/convert.py [--reps 5] [--data-mib 1024] [--workdir /var/tmp]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MiB = 1 << 20
GiB = 1 << 30
CHUNK = 1 * MiB


def sh(*argv: str | Path) -> None:
    subprocess.run([str(a) for a in argv], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE)


def make_source(path: Path, virtual: int, data: int, seed: int) -> None:
    """A sparse raw disk with `data` bytes of incompressible data in scattered 1 MiB chunks,
    turned into a monolithicSparse vmdk (what an ESXi export or an NFS datastore copy holds)."""
    raw = path.with_suffix(".raw")
    rng = random.Random(seed)
    slots = rng.sample(range(virtual // CHUNK), data // CHUNK)
    with open(raw, "wb") as f:
        f.truncate(virtual)
        for slot in sorted(slots):
            f.seek(slot * CHUNK)
            f.write(rng.randbytes(CHUNK))
    sh("qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=monolithicSparse",
       raw, path)
    raw.unlink()


def timed(argv_list: list[list[str]], cleanup: list[Path]) -> float:
    for p in cleanup:
        _rm(p)
    t0 = time.perf_counter()
    for argv in argv_list:
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - t0
    for p in cleanup:
        _rm(p)
    return elapsed


def _rm(p: Path) -> None:
    if p.is_dir():
        shutil.rmtree(p)
    elif p.exists():
        p.unlink()
    m = Path(str(p) + ".guestprep-manifest.json")
    if m.exists():
        m.unlink()


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> int:
    ap = argparse.ArgumentParser(description="guestprep-host convert benchmark")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--data-mib", type=int, default=1024)
    ap.add_argument("--workdir", default="/var/tmp")
    args = ap.parse_args()
    if shutil.which("qemu-img") is None:
        print("qemu-img missing: run `make setup`", file=sys.stderr)
        return 3
    work = Path(tempfile.mkdtemp(prefix="guestprep-bench-", dir=args.workdir))
    try:
        return run(work, args.reps, args.data_mib * MiB)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(work: Path, reps: int, data: int) -> int:
    qver = subprocess.run(["qemu-img", "--version"], capture_output=True,
                          text=True).stdout.splitlines()[0]
    print(f"machine: nproc={os.cpu_count()} cpu={cpu_model()!r} python={platform.python_version()}")
    print(f"tool: {qver}; workdir {work}")
    src4 = work / "disk4g.vmdk"
    src64 = work / "disk64g.vmdk"
    t0 = time.perf_counter()
    make_source(src4, 4 * GiB, data, seed=1)
    make_source(src64, 64 * GiB, data, seed=1)
    print(f"sources: {data // MiB} MiB of data in 4 GiB and 64 GiB vmdks "
          f"(built in {time.perf_counter() - t0:.1f}s; {src4.stat().st_size // MiB} MiB and "
          f"{src64.stat().st_size // MiB} MiB on disk)")

    empty = work / "empty.vmdk"
    sh("qemu-img", "create", "-q", "-f", "vmdk", empty, "64M")
    py = sys.executable
    out = work / "out.qcow2"
    staging = work / "staging"
    host = [py, "-m", "hostside.cli", "convert"]
    cases = {
        "ours": ([host + [str(src4), "--to", "qcow2", "--dest", str(out), "--no-verify",
                          "--progress", "none"]], [out]),
        "ours+verify": ([host + [str(src4), "--to", "qcow2", "--dest", str(out),
                                 "--progress", "none"]], [out]),
        "bare": ([["qemu-img", "convert", "-f", "vmdk", "-O", "qcow2", "-t", "writeback",
                   str(src4), str(out)]], [out]),
        "bare-unsafe": ([["qemu-img", "convert", "-f", "vmdk", "-O", "qcow2", str(src4),
                          str(out)]], [out]),
        "two-step": ([["mkdir", "-p", str(staging)],
                      ["cp", str(src4), str(staging / src4.name)],
                      ["qemu-img", "convert", "-p", "-f", "vmdk", "-O", "qcow2",
                       str(staging / src4.name), str(out)]], [out, staging]),
        "ours-64G": ([host + [str(src64), "--to", "qcow2", "--dest", str(out), "--no-verify",
                              "--progress", "none"]], [out]),
        "bare-64G": ([["qemu-img", "convert", "-f", "vmdk", "-O", "qcow2", "-t", "writeback",
                       str(src64), str(out)]], [out]),
        "ours-empty": ([host + [str(empty), "--to", "qcow2", "--dest", str(out), "--no-verify",
                                "--progress", "none"]], [out]),
        "bare-empty": ([["qemu-img", "convert", "-f", "vmdk", "-O", "qcow2", "-t", "writeback",
                         str(empty), str(out)]], [out]),
    }
    env_ok = subprocess.run([py, "-c", "import hostside"], cwd=REPO).returncode == 0
    if not env_ok:
        print("hostside is not importable: run from the project venv", file=sys.stderr)
        return 2
    times: dict[str, list[float]] = {k: [] for k in cases}
    timed(cases["bare"][0], cases["bare"][1])  # warm the page cache once, untimed
    for rep in range(reps):
        order = list(cases)
        random.Random(rep).shuffle(order)
        for name in order:
            argv_list, cleanup = cases[name]
            times[name].append(timed(argv_list, cleanup))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\nmedians of {reps} repetitions (seconds; min-max):")
    for k, v in times.items():
        print(f"  {k:<12} {med[k]:7.3f}   ({min(v):.3f}-{max(v):.3f})")
    r1 = med["ours"] / med["bare"]
    r2 = med["two-step"] / med["ours"]
    r3 = med["ours-64G"] / med["ours"]
    print("\nratios:")
    print(f"  1. ours / bare (qemu-img convert -t writeback)   {r1:5.3f}   goal <= 1.05  "
          f"{'met' if r1 <= 1.05 else 'NOT met'}")
    print(f"  2. two-step (cp to staging + convert) / ours     {r2:5.3f}   goal >= 1.8   "
          f"{'met' if r2 >= 1.8 else 'NOT met'}")
    print(f"  3. ours 64 GiB virtual / ours 4 GiB virtual      {r3:5.3f}   goal <= 1.2   "
          f"{'met' if r3 <= 1.2 else 'NOT met'}")
    print("\ncontext:")
    print(f"  start-up overhead (empty 64 MiB vmdk): ours {med['ours-empty']:.3f}s, "
          f"bare {med['bare-empty']:.3f}s")
    print(f"  bare 64 GiB / bare 4 GiB (qemu-img's own cost of virtual size) "
          f"{med['bare-64G'] / med['bare']:5.3f}")
    print(f"  ours / bare-unsafe (qemu default cache, no flush)  "
          f"{med['ours'] / med['bare-unsafe']:5.3f}")
    print(f"  verification (check + compare) costs {med['ours+verify'] / med['ours']:4.2f}x")
    print(f"  load average during the run: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
