"""A benchmark harness that cannot flatter (issue 17): flushed state, interleaved cases,
min and median, pairwise ratios per round, the machine and its load printed.

Every timed run of every case is: `before` (untimed: e.g. remove the last output), then
`flush()` (untimed: `sync`, and as root `3 > /proc/sys/vm/drop_caches`), then `run`
(timed; a case must flush its own writes inside `run`, e.g. with `fsync_path(output)`,
so that neither side leaves dirty pages for the next one to pay for), then `after`
(untimed: e.g. check the output). Cases run interleaved, one run of each per round
(A B C, A B C, ...; never A A A then B B B), so drift over time hits every case alike.
A ratio is computed per round (a[i] / b[i], runs minutes apart at most) and summarised by
its min and median: a ratio whose value moves with run order is not a result, and
`order="alternate"` (A B C, C B A, ...: every pair measured in both orders; the case at a
round boundary runs twice in a row, each run still after its own flush) with
`order_effect()` / `order_note()` shows whether it does.

API (import from the benchmark scripts as `import harness`; they run with benchmarks/ on
sys.path):

    flush(drop=True, files=None, disk=None, memory=True) -> str
                                       sync; then the page cache of `files` evicted (fadvise),
                                       or with drop=True and no files, as root, all of it
                                       (drop_caches); then settle(disk), memory_settle();
                                       says what it did
    evict(paths) -> int                sync + POSIX_FADV_DONTNEED of these files / directories
    disk_of(path) -> stat file | None  the block device holding path (/sys/dev/block/M:m/stat)
    settle(stat_file) -> seconds       wait until that disk did no I/O for 0.3 s (cap 5 s)
    memory_settle() -> seconds | None  on a VM that reports free memory to its host (virtio-balloon
                                       free page reporting): wait until it reported nothing for 3 s
                                       (cap 30 s); None where the kernel does not report
    Case(run, before=None, after=None) one case; a plain callable is Case(run=callable)
    interleaved(cases, rounds, flush=flush, order="abab", clock=time.perf_counter,
                progress=None) -> Samples
                                       dict name -> [seconds per round], .orders = the
                                       order of each round, .loads = the 1-minute load
                                       average as each round started
    summary(xs) -> Summary             .min .median .max .rounds (of one case's samples)
    ratio(a, b) -> Ratio               per-round a[i]/b[i]; .per_round .min .median .max .rounds
    difference(a, b) -> Summary        per-round a[i]-b[i] (e.g. fixed cost: ours-empty - bare-empty)
    order_effect(samples, a, b)        (median a/b in rounds where a ran first,
                                        median a/b in rounds where b ran first)
    order_note(samples, a, b, tolerance=0.10) -> str   "" when a/b was measured in one order
                                       only; else both medians, and "MOVES WITH RUN ORDER:
                                       not a result" when they differ by more than tolerance
                                       and the two orders' rounds do not overlap (else: noise)
    verdict(value, op, goal) -> str    "met" / "NOT met" (op is "<=" or ">=")
    fsync_path(path)                   fsync a file (or block device) and its directory
    load() -> str                      load average now, and the number of cores
    machine(tools=("qemu-img",)) -> str   CPU model, cores, memory, kernel, Python, tool versions
                                       (a tool is a name or an argv, e.g. ("ssh", "-V"))
    print_summaries(samples), format_ratio(...) for the common report lines
"""

from __future__ import annotations

import os
import platform
import resource
import stat
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping, Sequence

DROP_CACHES = "/proc/sys/vm/drop_caches"


# --------------------------------------------------------------------------- flushing

def flush(drop: bool = True, files: Iterable | None = None, disk: str | None = None,
          memory: bool = True) -> str:
    """Write back every dirty page (`sync`); then either evict the page cache of `files`
    (see evict: the benchmark's data starts cold, the programs stay as a node that runs
    them has them), or with drop=True and no files, as root, drop the page cache, dentries
    and inodes (Documentation/admin-guide/sysctl/vm.rst, drop_caches: "echo 3" frees both;
    it is non-destructive, dirty objects are not freed, hence the sync first); then wait
    for `disk` to go quiet (settle), and with `memory` for the memory freed to be handed back
    to the host (memory_settle; --quick smoke runs skip it). Returns what it did, so the report
    can say whether runs started cold."""
    os.sync()
    if files is not None:
        what = f"sync + page cache of the {evict(files)} data files evicted"
    elif not drop:
        what = "sync"
    elif os.geteuid() != 0:
        what = "sync (not root: page cache kept)"
    else:
        try:
            with open(DROP_CACHES, "w") as f:
                f.write("3\n")
            what = "sync + drop_caches"
        except OSError as e:
            what = f"sync (drop_caches refused: {e.strerror})"
    if disk is not None:
        settle(disk)
        what += " + disk quiet for 0.3 s (at most 5 s)"
    if memory and memory_settle() is not None:
        what += f" + the host took back the freed memory (free page reporting quiet for {REPORT_QUIET:g} s)"
    return what


# Free page reporting (virtio-balloon, mm/page_reporting.c): the guest hands blocks of free memory
# back to its host, which discards them; the next process to use such a page takes a fault in the
# host. The report runs in batches ~2 s after memory was freed (PAGE_REPORTING_DELAY), so the
# memory a run freed (its page cache evicted by the flush, its buffers) was handed back *during the
# next timed run*: on this machine `cp` of staging-4G spent 2.2 s in the kernel instead of 0.4 s
# when the case before it had freed ~1 GiB that was reported while it ran (perf: 87 % in
# _copy_to_iter), and staging's ratios moved 1.2 vs 2.0 with run order. Waiting until the
# reporting is quiet starts every run in the same state: what is free is the host's again, and
# every case pays for the memory it touches. `reported_kib` is this machine's kernel's counter of
# the memory handed back; a kernel without it (bare metal, most VMs) reports nothing to wait for.
REPORTED_KIB = "/sys/module/page_reporting/parameters/reported_kib"
REPORT_QUIET = 3.0     # > PAGE_REPORTING_DELAY (2 s): a report about to start is not mistaken for quiet


def _reported_kib() -> int | None:
    try:
        with open(REPORTED_KIB) as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def memory_settle(quiet: float = REPORT_QUIET, cap: float = 30.0, poll: float = 0.1) -> float | None:
    """Wait until free page reporting has handed nothing back to the host for `quiet` seconds
    (at most `cap`). Returns the seconds waited, or None where the kernel has no such counter."""
    if _reported_kib() is None:
        return None
    return _until_still(_reported_kib, lambda last, now: now != last, quiet, cap, poll)


def evict(paths: Iterable) -> int:
    """Drop the page cache of these files (directories: every regular file below them):
    `sync` first, then POSIX_FADV_DONTNEED, which frees a file's clean pages (posix_fadvise(2)).
    Unlike `drop_caches` this leaves the programs' own files (python, its modules, qemu-img
    and its libraries) and every other process's cache alone: a global drop made each run
    start by re-reading them, and made the other processes on the machine re-read their
    working sets during the next timed run (disk contention that depended on which case ran
    after the drop). Returns the number of files evicted."""
    os.sync()
    count = 0
    for top in paths:
        top = os.fspath(top)
        walk = [(top, [], [""])] if not os.path.isdir(top) else os.walk(top)
        for root, _, names in walk:
            for name in names:
                path = os.path.join(root, name) if name else root
                try:
                    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
                except OSError:
                    continue
                try:
                    if stat.S_ISREG(os.fstat(fd).st_mode):
                        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                        count += 1
                finally:
                    os.close(fd)
    return count


def disk_of(path) -> str | None:
    """/sys/dev/block/M:m/stat of the block device holding `path` (None: not a block device)."""
    dev = os.stat(path).st_dev
    stat_file = f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}/stat"
    return stat_file if os.path.exists(stat_file) else None


def disk_counters(stat_file: str | None) -> tuple[int, int, int]:
    """(sectors read, sectors written, requests in flight) of a block device
    (Documentation/block/stat.rst: fields 3, 7 and 9)."""
    if stat_file is None:
        return (0, 0, 0)
    try:
        with open(stat_file) as f:
            v = [int(x) for x in f.read().split()]
    except (OSError, ValueError):
        return (0, 0, 0)
    return v[2], v[6], v[8]


def settle(stat_file: str | None, quiet: float = 0.3, cap: float = 5.0,
           poll: float = 0.05) -> float:
    """Wait until the disk has done no I/O for `quiet` seconds (at most `cap`): the
    journal commit, discards and write-back that `sync` and the last run's deletions set
    off would otherwise land in the next timed run. Returns the seconds waited (== cap:
    the disk never went quiet, e.g. other processes' I/O)."""
    if stat_file is None:
        return 0.0
    # requests in flight (field 9) count as activity even when the totals did not move
    return _until_still(lambda: disk_counters(stat_file),
                        lambda last, now: now[:2] != last[:2] or bool(now[2]), quiet, cap, poll)


def _until_still(read: Callable[[], object], moved: Callable[[object, object], bool], quiet: float,
                 cap: float, poll: float) -> float:
    """Poll `read()` until `moved(last, now)` was false for `quiet` seconds (at most `cap`);
    returns the seconds waited."""
    t0 = still = time.monotonic()
    last = read()
    while True:
        time.sleep(poll)
        now, t = read(), time.monotonic()
        if moved(last, now):
            last, still = now, t
        elif t - still >= quiet:
            return t - t0
        if t - t0 >= cap:
            return t - t0


def fsync_path(path) -> None:
    """fsync `path` and the directory holding its name: what a durable write costs, timed
    inside a run so that no side leaves its write-back to the next run."""
    path = os.fspath(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    parent = os.path.dirname(os.path.abspath(path))
    fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- running

@dataclass
class Case:
    run: Callable[[], object]
    before: Callable[[], object] | None = None
    after: Callable[[], object] | None = None


class Samples(dict):
    """name -> seconds per round (index = round), plus the order each round ran in."""

    def __init__(self, names: Iterable[str]):
        super().__init__((n, []) for n in names)
        self.orders: list[list[str]] = []
        self.loads: list[float] = []     # 1-minute load average as each round started
        self.flushed: str = ""
        # per case, per round: CPU seconds of the run's child processes (user + sys), and
        # MiB the disk read and wrote while it ran (every process's I/O, not only the run's)
        self.cpu: dict[str, list[float]] = {n: [] for n in self}
        self.disk: dict[str, list[tuple[float, float]]] = {n: [] for n in self}
        self.flush_s: list[float] = []   # how long each flush (+ settle) took, in run order


def round_order(names: Sequence[str], rnd: int, order: str) -> list[str]:
    if order == "abab":
        return list(names)
    if order == "alternate":
        return list(names) if rnd % 2 == 0 else list(reversed(names))
    raise ValueError(f"order must be 'abab' or 'alternate', not {order!r}")


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def interleaved(cases: Mapping[str, Case | Callable[[], object]], rounds: int, *,
                flush: Callable[[], str] = flush, order: str = "abab",
                clock: Callable[[], float] = time.perf_counter,
                progress: Callable[[str], None] | None = None,
                disk: str | None = None) -> Samples:
    """Run each case once per round, in `order`, each timed run from flushed state.
    `disk`: a block device's stat file (disk_of(workdir)) whose I/O each run is charged."""
    if rounds < 1:
        raise ValueError("rounds must be >= 1")
    wrapped = {n: c if isinstance(c, Case) else Case(run=c) for n, c in cases.items()}
    samples = Samples(wrapped)
    for rnd in range(rounds):
        names = round_order(list(wrapped), rnd, order)
        samples.orders.append(names)
        samples.loads.append(os.getloadavg()[0])
        for name in names:
            case = wrapped[name]
            if case.before:
                case.before()
            f0 = time.monotonic()
            samples.flushed = flush()
            samples.flush_s.append(time.monotonic() - f0)
            cpu0, io0 = _children_cpu(), disk_counters(disk)
            t0 = clock()
            case.run()
            elapsed = clock() - t0
            cpu, io1 = _children_cpu() - cpu0, disk_counters(disk)
            if case.after:
                case.after()
            samples[name].append(elapsed)
            samples.cpu[name].append(cpu)
            samples.disk[name].append(((io1[0] - io0[0]) / 2048, (io1[1] - io0[1]) / 2048))
            if progress:
                progress(f"round {rnd + 1}/{rounds} {name}: {elapsed:.3f}s (cpu {cpu:.3f}s)")
    return samples


# --------------------------------------------------------------------------- arithmetic

@dataclass
class Summary:
    min: float
    median: float
    max: float
    rounds: int


@dataclass
class Ratio(Summary):
    per_round: list[float] = field(default_factory=list)


def summary(xs: Sequence[float]) -> Summary:
    if not xs:
        raise ValueError("no samples")
    return Summary(min(xs), statistics.median(xs), max(xs), len(xs))


def _pairs(a: Sequence[float], b: Sequence[float]) -> list[tuple[float, float]]:
    if len(a) != len(b) or not a:
        raise ValueError(f"pairwise needs the same number of rounds ({len(a)} vs {len(b)})")
    return list(zip(a, b))


def ratio(a: Sequence[float], b: Sequence[float]) -> Ratio:
    """a/b per round (the two runs of a round are closest in time), then min/median/max."""
    per = [x / y if y > 0 else float("inf") for x, y in _pairs(a, b)]
    s = summary(per)
    return Ratio(s.min, s.median, s.max, s.rounds, per)


def difference(a: Sequence[float], b: Sequence[float]) -> Summary:
    return summary([x - y for x, y in _pairs(a, b)])


def _order_groups(samples: Samples, a: str, b: str) -> tuple[list[float], list[float]]:
    """a/b per round, split into the rounds where a ran before b and those where b did."""
    first, second = [], []
    for rnd, names in enumerate(samples.orders):
        r = samples[a][rnd] / samples[b][rnd] if samples[b][rnd] > 0 else float("inf")
        (first if names.index(a) < names.index(b) else second).append(r)
    return first, second


def order_effect(samples: Samples, a: str, b: str) -> tuple[float | None, float | None]:
    """Median a/b over the rounds where a ran before b, and over those where b ran first."""
    first, second = _order_groups(samples, a, b)
    med = lambda xs: statistics.median(xs) if xs else None  # noqa: E731
    return med(first), med(second)


def order_note(samples: Samples, a: str, b: str, tolerance: float = 0.10) -> str:
    """Whether a/b depends on which of the two ran first. Flagged only when the two
    orders' medians differ by more than `tolerance` AND every round of one order lies
    above every round of the other: with a handful of rounds on a loaded machine, medians
    of 2 and 3 noisy rounds differ by more than 10% by chance alone (a run of the same
    case varied 2.3-6.8 s at load 8-16), which is noise, not an order effect."""
    groups = _order_groups(samples, a, b)
    first, second = order_effect(samples, a, b)
    if first is None or second is None:
        return ""
    note = f"median a/b when {a} ran first {first:.3f}, when {b} ran first {second:.3f}"
    if abs(first - second) > tolerance * min(first, second):
        lo, hi = sorted(groups, key=statistics.median)
        if max(lo) < min(hi):
            note += f": MOVES WITH RUN ORDER (> {tolerance:.0%}), not a result"
        else:
            note += (f": the orders' rounds overlap ({min(lo):.3f}-{max(lo):.3f} vs "
                     f"{min(hi):.3f}-{max(hi):.3f}): run-to-run noise, not an order effect")
    return note


def verdict(value: float, op: str, goal: float) -> str:
    if op == "<=":
        return "met" if value <= goal else "NOT met"
    if op == ">=":
        return "met" if value >= goal else "NOT met"
    raise ValueError(f"op must be '<=' or '>=', not {op!r}")


# --------------------------------------------------------------------------- reporting

def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _mem_total() -> str:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return f"{int(line.split()[1]) / (1 << 20):.1f} GiB RAM"
    except OSError:
        pass
    return "RAM unknown"


def _version(tool: str | Sequence[str]) -> str:
    argv = [tool, "--version"] if isinstance(tool, str) else list(tool)
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return f"{argv[0]}: not found"
    lines = (out.stdout or out.stderr).splitlines()
    return lines[0].strip() if lines else f"{argv[0]}: no version"


def machine(tools: Sequence[str | Sequence[str]] = ("qemu-img",)) -> str:
    """One line: CPU, cores, RAM, kernel, Python and each tool's version (a tool is a name,
    asked `NAME --version`, or the argv that prints its version, e.g. ("ssh", "-V"))."""
    parts = [f"{_cpu_model()}, {os.cpu_count()} cores, {_mem_total()}",
             f"kernel {platform.release()}, Python {platform.python_version()}"]
    parts += [_version(t) for t in tools]
    return "; ".join(parts)


def format_summary(name: str, s: Summary, width: int = 24) -> str:
    return (f"  {name:<{width}} min {s.min:8.3f}s  median {s.median:8.3f}s  "
            f"max {s.max:8.3f}s  rounds {s.rounds}")


def print_summaries(samples: Samples, width: int = 24) -> None:
    for name, xs in samples.items():
        print(format_summary(name, summary(xs), width))


def format_ratio(label: str, r: Ratio, op: str | None = None, goal: float | None = None,
                 width: int = 44) -> str:
    line = f"  {label:<{width}} min {r.min:6.3f}  median {r.median:6.3f}  rounds {r.rounds}"
    if op and goal is not None:
        line += f"   goal {op} {goal:g}: {verdict(r.median, op, goal)} (median)"
    return line
