"""benchmarks/convert.py works end to end (issue 17): --quick builds every source (also the
ESXi vmfsSparse chain with its COWD redo log, and the same as a seSparse chain), runs every case once from flushed state,
checks every output against the data the sources were built from, prints min/median per
case and every ratio with its goal and a met/NOT met verdict, and the machine and load.
A wrong output is caught by the content check and fails the run, however fast it was."""

from __future__ import annotations

import importlib.util
import random
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "convert.py"
CASES = ["bare-4G", "bare-unsafe-4G", "ours-nv-4G", "ours-4G", "staging-4G", "bare-64G",
         "ours-nv-64G", "ours-64G", "bare-empty", "ours-empty", "bare-chain", "ours-nv-chain",
         "ours-chain", "bare-se-chain", "ours-nv-se-chain", "ours-se-chain"]


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(SCRIPT.parent))
    spec = importlib.util.spec_from_file_location("bench_convert_under_test", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop(spec.name, None)


def test_quick_run_end_to_end(tmp_path):
    res = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--no-drop-caches",
                          "--workdir", str(tmp_path)],
                         capture_output=True, text=True, timeout=600)
    out = res.stdout
    assert res.returncode == 0, out + res.stderr
    assert out.startswith("machine: ") and "cores" in out and "qemu-img version" in out
    assert "before: load average" in out and "after: load average" in out
    for name in CASES:
        line = next(ln for ln in out.splitlines() if ln.strip().startswith(name + " "))
        assert "min" in line and "median" in line and "rounds 1" in line, line
        assert line.endswith("[content equal]"), line
    ratio_lines = [ln for ln in out.splitlines() if "goal" in ln and "rounds 1" in ln]
    assert len(ratio_lines) == 11, out  # 10 ratios with a goal + the fixed cost
    assert all(ln.endswith(("met (median)", "NOT met (median)")) for ln in ratio_lines)
    assert "fixed cost: ours-empty - bare-empty" in out
    assert "sources unchanged: yes" in out
    assert list(tmp_path.iterdir()) == []  # its work directory is removed


def test_the_esx_chain_reads_back_as_base_plus_redo_log(bench, tmp_path):
    """The COWD writer is checked against qemu's reader here, so a wrong chain cannot make
    every tool agree on wrong data."""
    top, ref = bench.build_esx_chain(tmp_path, bench.QUICK)
    base = top.parent / "base-flat.vmdk"
    info = subprocess.run(["qemu-img", "info", "--backing-chain", str(top)],
                          capture_output=True, text=True, check=True).stdout
    assert "create type: vmfsSparse" in info and "format: VMFSSPARSE" in info
    assert "create type: vmfs\n" in info
    same = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "vmdk", str(ref), str(top)],
                          capture_output=True, text=True)
    assert same.returncode == 0, same.stdout + same.stderr
    differs = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "vmdk", str(base),
                              str(top)], capture_output=True, text=True)
    assert differs.returncode == 1  # the redo log really holds writes


def test_a_fast_wrong_output_fails_the_run(bench, tmp_path):
    """A case whose output is not the source's data is reported WRONG OUTPUT, left out of
    every ratio, and the benchmark exits 1."""
    right = tmp_path / "right.raw"
    wrong = tmp_path / "wrong.raw"
    for path, seed in ((right, 1), (wrong, 2)):
        path.write_bytes(random.Random(seed).randbytes(1 << 20))
    out = tmp_path / "out.qcow2"
    argv = ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(wrong), str(out)]
    cheat = bench.ConvertCase("ours-nv-4G", [argv], out, right, [out])
    honest = bench.ConvertCase("bare-4G", [argv[:6] + [str(right), str(out)]], out, right, [out])
    h = bench.harness
    samples = h.interleaved({c.name: h.Case(c.run, c.before, c.after) for c in (cheat, honest)},
                            rounds=2, flush=lambda: "test")
    assert cheat.checked == "WRONG OUTPUT" and "differs" in cheat.failed
    assert honest.checked == "content equal" and honest.failed is None
    assert bench.report(samples, {"ours-nv-4G": cheat, "bare-4G": honest}, quick=True) == 1


def test_a_run_flushes_what_it_wrote_inside_its_timing(bench, tmp_path, monkeypatch):
    synced: list[str] = []
    out = tmp_path / "o.bin"
    case = bench.ConvertCase("x", [["cp", "/etc/hostname", str(out)]], out, out, [out])
    monkeypatch.setattr(bench.harness, "fsync_path", lambda p: synced.append(Path(p).name))
    case.run()
    assert synced == ["o.bin"]
    case.before()
    assert not out.exists()  # the next run starts without the last output
