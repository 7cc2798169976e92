"""benchmarks/vsphere_inventory.py end to end (issue 17), quick: both modes run, every case reads
every VM, the replay server answers every request the cases send (a request it never recorded
fails the run), and the report prints its ratios with the goal."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "vsphere_inventory.py"


def test_quick_run_end_to_end():
    res = subprocess.run([sys.executable, str(SCRIPT), "--quick"], capture_output=True, text=True, timeout=600)
    out = res.stdout
    assert res.returncode == 0, out[-3000:] + res.stderr[-3000:]
    assert out.startswith("machine: ") and "skipped" not in out
    assert "[loopback, LIVE]" in out and "[loopback, REPLAY]" in out
    assert "240 VMs, 1 rounds" in out
    assert "wall naive / fast" in out and "wall one / fast" in out and "goal >= 20" in out
    # the fast case reads the fleet in parts: the naming retrieval and two parts of 120
    assert "    fast     6 round trips (RetrievePropertiesEx x3," in out
    assert "    one      3 round trips (CreateContainerView x1, RetrievePropertiesEx x1," in out
