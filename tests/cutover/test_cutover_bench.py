"""benchmarks/cutover_overhead.py --quick runs end to end on the real parts (its own simulator,
sshd and Proxmox test cluster) and prints what the full run prints: the machine and load, and per
(N, K) the controller's overhead per VM with the conversion and boot it subtracted."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "cutover_overhead.py"


def test_quick_benchmark_prints_overhead_per_vm_for_each_n_and_k():
    r = subprocess.run([sys.executable, str(BENCH), "--quick"], capture_output=True, text=True, timeout=840)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    assert re.search(r"^machine: .+ cores", out, re.M) and re.search(r"^before: load average", out, re.M)
    rows = {}
    for m in re.finditer(r"^  (N=\d+\s+K=\d) +overhead min +([\d.]+) median +([\d.]+) +\(x[\d.]+ vs N=\d+, 1 round\(s\)\)"
                         r" \| VM wall +([\d.]+) +"
                         r"conversion +([\d.]+) +boot +([\d.]+) \| wave +([\d.]+) s, controller CPU +([\d.]+) s/VM$", out, re.M):
        over_min, over_med, wall, conv, boot = map(float, m.groups()[1:6])
        rows[re.sub(r"\s+", " ", m.group(1))] = over_med
        assert 0 < over_min <= over_med and conv > 0 and boot > 0
        assert abs(wall - conv - boot - over_med) < 0.05 * wall + 0.05   # overhead is what is left of the VM's time
    assert sorted(rows) == ["N=1 K=1", "N=2 K=1", "N=2 K=2"], out
    by_step = re.findall(r"^  N=\d+\s+K=\d  gate [\d.]+, shutdown [\d.]+, .*verify [\d.]+$", out, re.M)
    assert len(by_step) == 3, out
