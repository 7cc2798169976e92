#!/usr/bin/env python3
"""Benchmark `guestprep-host convert` against bare qemu-img, honestly (issue 17).

Every timed run starts from flushed state (sync, the page cache of every data file the
cases read or write evicted, and the disk quiet; `--drop-caches all` drops the whole page
cache instead, as root), and
every run flushes its own writes inside its timing (fsync of each file it wrote), so no
case pays for another's write-back. Cases are interleaved (one run of each per round,
never back to back), >= 5 rounds; each case is printed with min and median, each ratio
is computed per round and printed with min and median, next to its goal from the issue.
The first run of each case is checked against the raw data the sources were built from
(`qemu-img compare`, untimed), so a fast wrong output cannot win; the sources are hashed
before and after. guestprep-host is run as a user runs it (its console script), so this
measures the checkout's hostside/ (the header says whether it has uncommitted changes).

Cases (the same DATA bytes in each source):
  bare-4G          qemu-img convert -f vmdk -O qcow2 -t writeback SRC4 OUT
  bare-unsafe-4G   the same without -t (qemu-img convert's default cache=unsafe)
  ours-nv-4G       guestprep-host convert SRC4 --to qcow2 --no-verify
  ours-4G          guestprep-host convert SRC4 --to qcow2   (default: with verification)
  staging-4G       the seed guide's way: cp SRC4 staging/ && qemu-img convert -p ... OUT
  bare-64G, ours-nv-64G, ours-64G   the same data in a 64 GiB virtual disk
  bare-empty, ours-empty            an empty 64 MiB vmdk (fixed cost)
  bare-chain, ours-nv-chain, ours-chain   an ESXi vmfsSparse snapshot chain (vmfs flat base
                                          + a COWD redo log in 512-byte grains), ours with --chain;
                                          256 MiB by default (--chain-mib): see FULL below
  bare-se-chain, ours-nv-se-chain, ours-se-chain   the same base and writes as an ESXi seSparse
                                          snapshot (VMFS6, ESXi 6.5+: 4 KiB grains, one zero
                                          grain range), ours with --chain

    python benchmarks/convert.py [--rounds 5] [--data-mib 1024] [--workdir /var/tmp]
                                 [--order alternate|abab] [--drop-caches files|all|none]
                                 [--only CASE,...] [--quick]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import esx_chain  # noqa: E402
import harness  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MiB = 1 << 20
GiB = 1 << 30


# --------------------------------------------------------------------------- sources

@dataclass
class Sizes:
    data: int           # bytes of incompressible data in each source
    small: int          # virtual size of the "4G" disk
    large: int          # virtual size of the "64G" disk
    empty: int
    chunk: int          # data is written in chunks of this size at random aligned slots
    chain: int          # virtual size of the vmfsSparse and seSparse chains
    chain_data: int     # data in its base
    delta: int          # bytes the snapshot's redo log holds
    delta_run: int


# The chain is smaller than the 4G disk: with ESXi's 512-byte grains, qemu 7.2 asks block
# status one grain at a time, and a 4 GiB chain takes bare qemu-img > 2 minutes a run here.
FULL = Sizes(data=1024 * MiB, small=4 * GiB, large=64 * GiB, empty=64 * MiB,
             chunk=1 * MiB, chain=256 * MiB, chain_data=64 * MiB, delta=8 * MiB,
             delta_run=64 * 1024)
QUICK = Sizes(data=4 * MiB, small=64 * MiB, large=1 * GiB, empty=16 * MiB,
              chunk=256 * 1024, chain=64 * MiB, chain_data=4 * MiB, delta=1 * MiB,
              delta_run=16 * 1024)


def sh(*argv) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], check=True, capture_output=True, text=True)


def write_raw(path: Path, virtual: int, data: int, chunk: int, seed: int) -> None:
    """A sparse raw disk holding `data` bytes in chunks at random slots: the same chunk
    bytes (seeded) whatever the virtual size, only their places differ."""
    places = random.Random(seed + virtual)
    content = random.Random(seed)
    slots = sorted(places.sample(range(virtual // chunk), data // chunk))
    with open(path, "wb") as f:
        f.truncate(virtual)
        for slot in slots:
            f.seek(slot * chunk)
            f.write(content.randbytes(chunk))


def build_sources(work: Path, sizes: Sizes) -> dict[str, tuple[Path, Path]]:
    """name -> (source the tools read, raw reference its content must equal)."""
    out = {}
    for name, virtual in (("4G", sizes.small), ("64G", sizes.large)):
        raw = work / f"ref-{name}.raw"
        write_raw(raw, virtual, sizes.data, sizes.chunk, seed=1)
        vmdk = work / f"disk-{name}.vmdk"
        sh("qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=monolithicSparse",
           raw, vmdk)
        out[name] = (vmdk, raw)
    empty = work / "empty.vmdk"
    sh("qemu-img", "create", "-q", "-f", "vmdk", empty, str(sizes.empty))
    ref_empty = work / "ref-empty.raw"
    with open(ref_empty, "wb") as f:
        f.truncate(sizes.empty)
    out["empty"] = (empty, ref_empty)
    out["chain"] = build_esx_chain(work, sizes)
    out["se-chain"] = build_esx_chain(work, sizes, se_sparse=True)
    return out


def build_esx_chain(work: Path, sizes: Sizes, se_sparse: bool = False) -> tuple[Path, Path]:
    """The vmfsSparse chain (or, with `se_sparse`, the seSparse chain: the same base and
    writes, plus a zero-grain range where the base has data) and the raw data it must read
    as (base + redo log)."""
    chain = work / ("esx-se" if se_sparse else "esx")
    chain.mkdir()
    flat = chain / "base-flat.vmdk"
    write_raw(flat, sizes.chain, sizes.chain_data, sizes.chunk, seed=5)
    rng = random.Random(7)
    slots = sorted(rng.sample(range(sizes.chain // sizes.delta_run),
                              sizes.delta // sizes.delta_run))
    runs = [(s * sizes.delta_run, rng.randbytes(sizes.delta_run)) for s in slots]
    zeroed = []
    if se_sparse:
        free = sorted(set(range(sizes.chain // sizes.delta_run)) - set(slots))
        zeroed = [(free[len(free) // 2] * sizes.delta_run, sizes.delta_run)]
        top = esx_chain.build_se_chain(chain, flat, sizes.chain, runs, zeroed)
    else:
        top = esx_chain.build_chain(chain, flat, sizes.chain, runs)
    return top, esx_chain.write_reference(flat, work / f"ref-{chain.name}.raw", runs, zeroed)


def data_digest(path: Path) -> str:
    """SHA-256 of a file's data extents and their offsets (holes skipped, not read)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        fd, size, pos = f.fileno(), os.fstat(f.fileno()).st_size, 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            h.update(f"{start}-{end}:".encode())
            f.seek(start)
            left = end - start
            while left:
                block = f.read(min(left, 8 * MiB))
                h.update(block)
                left -= len(block)
            pos = end
    return h.hexdigest()


# --------------------------------------------------------------------------- cases

@dataclass
class ConvertCase:
    """One way of producing OUT from a source: argv lists run in turn, then every file it
    wrote is fsynced (inside the timing); outputs are removed before each run (untimed)."""
    name: str
    steps: list[list[str]]
    output: Path
    reference: Path
    written: list[Path]
    scratch: list[Path] = field(default_factory=list)
    failed: str | None = None
    checked: str | None = None

    def before(self) -> None:
        for p in [*self.written, *self.scratch]:
            remove(p)
        for p in self.output.parent.glob(self.output.name + ".*"):
            remove(p)  # a temporary target left by a failed run

    def run(self) -> None:
        if self.failed:
            return
        for argv in self.steps:
            res = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                 text=True, env=CHILD_ENV)
            if res.returncode != 0:
                self.failed = (f"`{' '.join(argv[:3])} ...` exit {res.returncode}: "
                               f"{res.stderr.strip()[-600:]}")
                return
        for p in self.written:
            harness.fsync_path(p)

    def after(self) -> None:
        if self.failed or self.checked:
            return
        res = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "qcow2",
                              str(self.reference), str(self.output)],
                             capture_output=True, text=True)
        if res.returncode == 0:
            self.checked = "content equal"
        else:
            self.checked = "WRONG OUTPUT"
            self.failed = f"output differs from the source's data: {res.stdout.strip()} " \
                          f"{res.stderr.strip()}"


def remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
        p.unlink()


def host_cli() -> str:
    """The installed console script, as a user types it."""
    beside = Path(sys.executable).parent / "guestprep-host"
    return str(beside) if beside.exists() else (shutil.which("guestprep-host") or "")


def make_cases(work: Path, sources: dict[str, tuple[Path, Path]]) -> dict[str, ConvertCase]:
    out = work / "out.qcow2"
    manifest = work / "out.manifest.json"
    staging = work / "staging"
    host = host_cli()

    def bare(src: Path, ref: Path, *extra: str) -> tuple[list[list[str]], Path, Path, list[Path]]:
        return ([["qemu-img", "convert", "-f", "vmdk", "-O", "qcow2", *extra, str(src),
                  str(out)]], out, ref, [out])

    def ours(src: Path, ref: Path, *extra: str):
        return ([[host, "convert", str(src), "--to", "qcow2", "--dest", str(out),
                  "--manifest", str(manifest), "--progress", "none", *extra]],
                out, ref, [out, manifest])

    src4, ref4 = sources["4G"]
    src64, ref64 = sources["64G"]
    empty, ref_empty = sources["empty"]
    chain, ref_chain = sources["chain"]
    se_chain, ref_se_chain = sources["se-chain"]
    staged = staging / src4.name
    table = {
        "bare-4G": bare(src4, ref4, "-t", "writeback"),
        "bare-unsafe-4G": bare(src4, ref4),
        "ours-nv-4G": ours(src4, ref4, "--no-verify"),
        "ours-4G": ours(src4, ref4),
        "staging-4G": ([["mkdir", "-p", str(staging)], ["cp", str(src4), str(staged)],
                        ["qemu-img", "convert", "-p", "-f", "vmdk", "-O", "qcow2", str(staged),
                         str(out)]], out, ref4, [staged, out]),
        "bare-64G": bare(src64, ref64, "-t", "writeback"),
        "ours-nv-64G": ours(src64, ref64, "--no-verify"),
        "ours-64G": ours(src64, ref64),
        "bare-empty": bare(empty, ref_empty, "-t", "writeback"),
        "ours-empty": ours(empty, ref_empty, "--no-verify"),
        "bare-chain": bare(chain, ref_chain, "-t", "writeback"),
        "ours-nv-chain": ours(chain, ref_chain, "--chain", "--no-verify"),
        "ours-chain": ours(chain, ref_chain, "--chain"),
        "bare-se-chain": bare(se_chain, ref_se_chain, "-t", "writeback"),
        "ours-nv-se-chain": ours(se_chain, ref_se_chain, "--chain", "--no-verify"),
        "ours-se-chain": ours(se_chain, ref_se_chain, "--chain"),
    }
    cases = {}
    for name, (steps, output, ref, written) in table.items():
        scratch = [staging] if name.startswith("staging") else []
        cases[name] = ConvertCase(name, steps, output, ref, written, scratch)
    return cases


# --------------------------------------------------------------------------- report

# (label, a, b, op, goal); goal None = context only. Goals are issue 17's table.
RATIOS = [
    ("ours --no-verify / bare (4 GiB)", "ours-nv-4G", "bare-4G", "<=", 1.05),
    ("ours default (verified) / bare (4 GiB)", "ours-4G", "bare-4G", "<=", 1.3),
    ("staging copy-then-convert / ours --no-verify", "staging-4G", "ours-nv-4G", ">=", 1.8),
    ("staging copy-then-convert / ours default", "staging-4G", "ours-4G", ">=", 1.8),
    ("64G / 4G, ours --no-verify", "ours-nv-64G", "ours-nv-4G", "<=", 1.2),
    ("64G / 4G, ours default", "ours-64G", "ours-4G", "<=", 1.2),
    ("vmfsSparse chain, ours --no-verify / bare", "ours-nv-chain", "bare-chain", "<=", 1.2),
    ("vmfsSparse chain, ours default / bare", "ours-chain", "bare-chain", "<=", 1.2),
    ("seSparse chain, ours --no-verify / bare", "ours-nv-se-chain", "bare-se-chain", "<=", 1.2),
    ("seSparse chain, ours default / bare", "ours-se-chain", "bare-se-chain", "<=", 1.2),
    ("64G / 4G, bare qemu-img (its own cost)", "bare-64G", "bare-4G", None, None),
    ("bare -t writeback / bare-unsafe (+fsync)", "bare-4G", "bare-unsafe-4G", None, None),
    ("ours --no-verify / bare-unsafe (+fsync)", "ours-nv-4G", "bare-unsafe-4G", None, None),
    ("verification's cost: ours default / --no-verify", "ours-4G", "ours-nv-4G", None, None),
]
FIXED_COST_GOAL = 0.050


def hostside_state() -> str:
    try:
        head = sh("git", "-C", REPO, "rev-parse", "--short", "HEAD").stdout.strip()
        dirty = sh("git", "-C", REPO, "status", "--porcelain", "--", "hostside").stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"
    return f"commit {head}" + (" + uncommitted changes in hostside/" if dirty else
                               " (hostside/ as committed)")


def report(samples: harness.Samples, cases: dict[str, ConvertCase], quick: bool) -> int:
    ok = {n for n, c in cases.items() if not c.failed}
    print(f"\nper case (seconds, each run from flushed state; {samples.flushed}):")
    for name, xs in samples.items():
        c = cases[name]
        if c.failed:
            print(f"  {name:<16} FAILED: {c.failed}")
            continue
        s = harness.summary(xs)
        print(harness.format_summary(name, s, 16) + f"  [{c.checked}]")
        print(f"  {'':<16} per round: {' '.join(f'{x:.2f}' for x in xs)}")
        cpu, disk = samples.cpu.get(name), samples.disk.get(name)
        if cpu and disk:
            print(f"  {'':<16} cpu of its processes median {harness.summary(cpu).median:.3f}s; "
                  f"disk read/written while it ran, median "
                  f"{harness.summary([d[0] for d in disk]).median:.0f}/"
                  f"{harness.summary([d[1] for d in disk]).median:.0f} MiB")
    note = "  (--quick: sizes too small for the goals to mean anything)" if quick else ""
    print(f"\nratios (a/b per round, then min and median over rounds):{note}")
    for label, a, b, op, goal in RATIOS:
        if a not in cases or b not in cases:
            print(f"  {label:<48} not run (--only)")
            continue
        if a not in ok or b not in ok:
            why = "; ".join(f"{n} failed" for n in (a, b) if n not in ok)
            print(f"  {label:<48} not measured ({why})" +
                  (f"   goal {op} {goal:g}: NOT met" if goal else ""))
            continue
        r = harness.ratio(samples[a], samples[b])
        print(harness.format_ratio(label, r, op, goal, width=48))
        note = harness.order_note(samples, a, b)
        if note:
            print(f"  {'':<48} {note}")
        if samples.cpu.get(a) and samples.cpu.get(b) and min(samples.cpu[b]) > 0:
            c = harness.ratio(samples.cpu[a], samples.cpu[b])
            print(f"  {'':<48} cpu-time ratio median {c.median:.3f} (CPU of its processes: waits excluded)")
    if not {"ours-empty", "bare-empty"} <= set(cases):
        print("  fixed cost: not run (--only)")
    elif {"ours-empty", "bare-empty"} <= ok:
        d = harness.difference(samples["ours-empty"], samples["bare-empty"])
        print(f"  {'fixed cost: ours-empty - bare-empty':<48} min {d.min * 1000:6.0f} ms  "
              f"median {d.median * 1000:6.0f} ms  rounds {d.rounds}   goal <= "
              f"{FIXED_COST_GOAL * 1000:.0f} ms: "
              f"{harness.verdict(d.median, '<=', FIXED_COST_GOAL)} (median)")
    else:
        print("  fixed cost: not measured (an empty-disk case failed)   goal <= 50 ms: NOT met")
    return 0 if len(ok) == len(cases) else 1


# --------------------------------------------------------------------------- main

# guestprep-host runs as installed: with its .pyc files (an editable checkout's are written by its first run). A shell
# that exports PYTHONDONTWRITEBYTECODE would have every run compile hostside again (+~50 ms per run).
CHILD_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5, help="rounds (one run of every case each)")
    ap.add_argument("--data-mib", type=int, default=FULL.data // MiB)
    ap.add_argument("--chain-mib", type=int, default=FULL.chain // MiB,
                    help="virtual size of the vmfsSparse and seSparse chains (a quarter "
                         "of it data, 1/32 in the redo log)")
    ap.add_argument("--workdir", default="/var/tmp")
    ap.add_argument("--order", choices=["abab", "alternate"], default="alternate",
                    help="alternate (default): reversed every other round, so every pair is "
                         "measured in both orders and a ratio that moves with run order is "
                         "flagged; abab: the same order every round")
    ap.add_argument("--drop-caches", choices=["files", "all", "none"], default="files",
                    help="before every run, after sync: files (default) evicts the page cache "
                         "of the sources, references and outputs (fadvise DONTNEED); all drops "
                         "the whole page cache as root (also the programs' own files, and every "
                         "other process's, which then re-reads them during the next runs); "
                         "none keeps it")
    ap.add_argument("--no-drop-caches", action="store_true", help="the same as --drop-caches none")
    ap.add_argument("--only", default="", help="comma-separated case names (default: all)")
    ap.add_argument("--quick", action="store_true",
                    help="tiny sizes and 1 round: proves the script works, measures nothing")
    args = ap.parse_args(argv)
    if shutil.which("qemu-img") is None:
        print("qemu-img missing: run `make setup`", file=sys.stderr)
        return 3
    if not host_cli():
        print("guestprep-host is not installed: run `make setup` (pip install -e .)",
              file=sys.stderr)
        return 3
    chain = args.chain_mib * MiB
    sizes = QUICK if args.quick else Sizes(**{
        **FULL.__dict__, "data": args.data_mib * MiB, "chain": chain,
        "chain_data": chain // 4 // FULL.chunk * FULL.chunk,
        "delta": chain // 32 // FULL.delta_run * FULL.delta_run})
    rounds = 1 if args.quick else args.rounds
    if not 0 < sizes.data <= sizes.small:
        print(f"--data-mib must be 1 to {sizes.small // MiB}", file=sys.stderr)
        return 2
    if not sizes.delta:
        print("--chain-mib must be at least 2", file=sys.stderr)
        return 2
    # SIGTERM/SIGHUP end the run through `finally`, so the work directory is removed.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: sys.exit(128 + signum))
    work = Path(tempfile.mkdtemp(prefix="guestprep-bench-", dir=args.workdir))
    try:
        return run(work, sizes, rounds, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(work: Path, sizes: Sizes, rounds: int, args) -> int:
    print(f"machine: {harness.machine(('qemu-img',))}")
    print(f"guestprep-host: {host_cli()} ({hostside_state()}); workdir {work}")
    print(f"before: {harness.load()}")
    t0 = time.perf_counter()
    sources = build_sources(work, sizes)
    print(f"sources: {sizes.data / MiB:g} MiB of data in {sizes.small / GiB:g} GiB and "
          f"{sizes.large / GiB:g} GiB monolithicSparse vmdks, an empty "
          f"{sizes.empty / MiB:g} MiB vmdk, and a {sizes.chain / MiB:g} MiB vmfsSparse chain "
          f"(vmfs flat base with {sizes.chain_data / MiB:g} MiB of data + a COWD redo log of "
          f"{sizes.delta / MiB:g} MiB in 512-byte grains) and the same as a seSparse chain "
          f"(4 KiB grains); built in "
          f"{time.perf_counter() - t0:.1f}s")
    digests = {p: data_digest(p) for p in source_files(sources)}
    cases = make_cases(work, sources)
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in cases]
        if unknown:
            print(f"--only: unknown case(s) {', '.join(unknown)}; cases: {', '.join(cases)}",
                  file=sys.stderr)
            return 2
        cases = {n: cases[n] for n in wanted}
    mode = "none" if args.no_drop_caches else args.drop_caches
    disk = harness.disk_of(work)

    def flush() -> str:
        return harness.flush(drop=mode == "all", files=[work] if mode == "files" else None,
                             disk=disk, memory=not args.quick)
    print(f"{rounds} round(s), order {args.order}: "
          + " ".join(harness.round_order(list(cases), 0, args.order)))
    t0 = time.perf_counter()
    samples = harness.interleaved(
        {n: harness.Case(run=c.run, before=c.before, after=c.after) for n, c in cases.items()},
        rounds, flush=flush, order=args.order, disk=disk,
        progress=lambda line: print("  " + line, file=sys.stderr, flush=True))
    print(f"timed rounds took {time.perf_counter() - t0:.0f}s; after: {harness.load()}; "
          f"1-minute load as each round started: {' '.join(f'{x:.1f}' for x in samples.loads)}")
    if samples.flush_s:
        fl = harness.summary(samples.flush_s)
        print(f"flush before each run ({samples.flushed}): median {fl.median:.2f}s, "
              f"max {fl.max:.2f}s")
    rc = report(samples, cases, args.quick)
    changed = [p.name for p, d in digests.items() if data_digest(p) != d]
    print(f"\nsources unchanged: {'yes' if not changed else 'NO: ' + ', '.join(changed)}")
    return 1 if changed else rc


def source_files(sources: dict[str, tuple[Path, Path]]) -> list[Path]:
    files = []
    for src, _ in sources.values():
        files += sorted(src.parent.glob("*.vmdk")) if src.parent.name.startswith("esx") \
            else [src]
    return files


if __name__ == "__main__":
    sys.exit(main())
