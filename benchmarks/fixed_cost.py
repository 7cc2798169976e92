#!/usr/bin/env python3
"""Fixed cost of `guestprep-host convert` before and around qemu (issue 17: goal <= 50 ms).

The same empty vmdk (no data: what is left is start-up, inspect, audit, target creation,
manifest and exit) converted by bare qemu-img and by guestprep-host in both forms it runs in:

  bare        qemu-img convert -f vmdk -O qcow2 -t writeback EMPTY OUT
  console     the checkout's console script (.venv/bin/guestprep-host), as a user types it
  zipapp      python3 guestprep-host.pyz convert ...  as a Proxmox node runs it (the node's
              /usr/bin/python3; the archive is built from this checkout at start)
  zipapp-IS   the same with `python3 -I -S` (no site, no user site, no PYTHON* variables)
and the interpreter floors: `python3 -c pass` and `python3 -I -S -c pass` (the same
/usr/bin/python3), `venv-python -c pass` (the console script's interpreter with its site).
Every guestprep-host run is --no-verify --progress none (verification has its own goal).

Rounds are interleaved (benchmarks/harness.py: ABAB, or alternate order), each run after
`sync`; each run fsyncs its output inside its timing. The page cache is kept by default:
with it dropped (--drop-caches, as root) every run reads the interpreter, its libraries and
qemu's from disk, which measures the disk (~0.3-0.5 s here), not our start-up; a node that
converts has python3 and qemu-img cached after its first disk. The fixed cost is the
per-round difference ours - bare, summarised by min and median. Each case's CPU time (user +
sys of its process tree, from getrusage) is printed beside it: on a loaded machine the wall
times stretch, the CPU times much less.

Bytecode: a console script installed by pip has its .pyc files (compiled at install, or
written on first run for an editable install); the zipapp ships its own. So children run
without PYTHONDONTWRITEBYTECODE by default, after one untimed warm-up run each;
--no-bytecode-cache keeps the variable (every run compiles hostside again, as in a session
that exports it: the issue's 192 ms were measured that way).

--instructions adds, per guestprep-host form and interpreter floor, the instructions the
Python process executes (valgrind's callgrind tool, PYTHONHASHSEED=0; qemu-img children not
counted): a figure the machine's load cannot stretch, for comparing two versions on a busy
machine. It is not a time; ~4 M instructions were ~1 ms here.

    python benchmarks/fixed_cost.py [--rounds 9] [--order abab|alternate] [--python /usr/bin/python3]
                                    [--instructions]
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
GOAL_S = 0.050
EMPTY_BYTES = 64 << 20


def console_script() -> str:
    beside = Path(sys.executable).parent / "guestprep-host"
    return str(beside) if beside.exists() else (shutil.which("guestprep-host") or "")


def build_zipapp(out: Path) -> Path:
    subprocess.run([sys.executable, str(REPO / "tools" / "build_zipapp.py"), "--out", str(out)],
                   check=True, capture_output=True)
    return out


def instructions(argv: list[str], env: dict) -> int | None:
    """Instructions the process (not its children) executes, by callgrind; None without valgrind."""
    if not shutil.which("valgrind"):
        return None
    env = dict(env, PYTHONHASHSEED="0")
    r = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *argv],
                       env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True)
    m = re.search(r"Collected : (\d+)", r.stderr)
    if r.returncode != 0 or not m:
        raise SystemExit(f"valgrind {' '.join(argv)} failed: {r.stderr.strip()[-500:]}")
    return int(m.group(1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--order", choices=["abab", "alternate"], default="alternate")
    ap.add_argument("--python", default="/usr/bin/python3",
                    help="the node-side interpreter for the zipapp (default /usr/bin/python3)")
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--drop-caches", action="store_true",
                    help="drop the page cache before every run (root): cold start-up")
    ap.add_argument("--no-bytecode-cache", action="store_true",
                    help="keep PYTHONDONTWRITEBYTECODE from the environment (console script "
                         "compiles hostside on every run)")
    ap.add_argument("--only", default=None, help="comma-separated case names")
    ap.add_argument("--instructions", action="store_true",
                    help="also count each Python process's instructions (valgrind callgrind)")
    args = ap.parse_args(argv)
    host = console_script()
    if not host:
        print("guestprep-host is not installed: run `make setup`", file=sys.stderr)
        return 2
    env = dict(os.environ)
    if not args.no_bytecode_cache:
        env.pop("PYTHONDONTWRITEBYTECODE", None)

    work = Path(tempfile.mkdtemp(prefix="guestprep-fixedcost-", dir=args.workdir))
    try:
        empty = work / "empty.vmdk"
        subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", str(empty), str(EMPTY_BYTES)],
                       check=True)
        pyz = build_zipapp(work / "guestprep-host.pyz")
        out, manifest = work / "out.qcow2", work / "out.manifest.json"
        ours_tail = ["convert", str(empty), "--to", "qcow2", "--dest", str(out), "--manifest",
                     str(manifest), "--progress", "none", "--no-verify"]
        venv_python = str(Path(sys.executable))
        commands: dict[str, tuple[list[str], list[Path]]] = {
            "bare": (["qemu-img", "convert", "-f", "vmdk", "-O", "qcow2", "-t", "writeback",
                      str(empty), str(out)], [out]),
            "console": ([host, *ours_tail], [out, manifest]),
            "zipapp": ([args.python, str(pyz), *ours_tail], [out, manifest]),
            "zipapp-IS": ([args.python, "-I", "-S", str(pyz), *ours_tail], [out, manifest]),
            "py-pass": ([args.python, "-c", "pass"], []),
            "py-IS-pass": ([args.python, "-I", "-S", "-c", "pass"], []),
            "venv-py-pass": ([venv_python, "-c", "pass"], []),
        }
        if args.only:
            wanted = args.only.split(",")
            unknown = [w for w in wanted if w not in commands]
            if unknown:
                ap.error(f"unknown case(s) {', '.join(unknown)}; known: {', '.join(commands)}")
            commands = {n: c for n, c in commands.items() if n in wanted}

        def clean() -> None:
            for p in (out, manifest):
                p.unlink(missing_ok=True)

        cpu: dict[str, list[float]] = {name: [] for name in commands}

        def children_cpu() -> float:
            r = resource.getrusage(resource.RUSAGE_CHILDREN)
            return r.ru_utime + r.ru_stime

        def case(name: str, argv: list[str], written: list[Path]) -> harness.Case:
            def run() -> None:
                c0 = children_cpu()
                r = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                if r.returncode != 0:
                    raise SystemExit(f"{' '.join(argv)} failed ({r.returncode}): "
                                     f"{r.stderr.decode(errors='replace').strip()}")
                cpu[name].append(children_cpu() - c0)
                for p in written:
                    harness.fsync_path(p)
            return harness.Case(run=run, before=clean, after=clean)

        cases = {name: case(name, *c) for name, c in commands.items()}
        for c in cases.values():        # warm-up (untimed): pycs written, files in cache
            c.before()
            c.run()
            c.after()
        for xs in cpu.values():
            xs.clear()
        print(f"machine: {harness.machine()}")
        print(f"guestprep-host: {host}; zipapp run by {args.python}; "
              f"PYTHONDONTWRITEBYTECODE {'kept' if 'PYTHONDONTWRITEBYTECODE' in env else 'unset'}")
        print(f"load before: {harness.load()}")
        flush = harness.flush if args.drop_caches else (lambda: harness.flush(drop=False))
        samples = harness.interleaved(cases, args.rounds, flush=flush, order=args.order)
        print(f"load after: {harness.load()}; 1-min load at each round's start: "
              f"{' '.join(f'{x:.2f}' for x in samples.loads)}")
        print(f"\nper case (each run after {samples.flushed}; order {args.order}):")
        for name, xs in samples.items():
            s = harness.summary(xs)
            print(f"  {name:<14} min {s.min * 1000:7.1f} ms  median {s.median * 1000:7.1f} ms"
                  f"  rounds {s.rounds}   (CPU user+sys of the process tree: min "
                  f"{min(cpu[name]) * 1000:6.1f} ms, median "
                  f"{statistics.median(cpu[name]) * 1000:6.1f} ms)")
        if "bare" in samples:
            print("\nfixed cost (per-round difference to bare qemu-img):")
            for name in ("console", "zipapp", "zipapp-IS"):
                if name not in samples:
                    continue
                d = harness.difference(samples[name], samples["bare"])
                print(f"  {name + ' - bare':<20} min {d.min * 1000:6.1f} ms  median "
                      f"{d.median * 1000:6.1f} ms  rounds {d.rounds}   goal <= "
                      f"{GOAL_S * 1000:.0f} ms: {harness.verdict(d.median, '<=', GOAL_S)} "
                      "(median)")
                note = harness.order_note(samples, name, "bare")
                if note:
                    print(f"  {'':<20} {note}")
        if args.instructions:
            print("\ninstructions of the Python process (callgrind; children not counted):")
            for name, (cmd, _) in commands.items():
                if name == "bare":
                    continue
                clean()
                n = instructions(cmd, env)
                clean()
                if n is None:
                    print("  valgrind is not installed: not counted")
                    break
                print(f"  {name:<14} {n / 1e6:8.1f} M")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
