"""benchmarks/preflight_fleet.py on the shared harness (issue 17): guestprep and Ansible
interleaved, min/median and the per-round speed-up printed with its goal, the machine and
load; a side that did not reach every guest is refused rather than timed."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "preflight_fleet.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_preflight_under_test", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop(spec.name, None)


def test_quick_run_end_to_end():
    if not (Path(sys.executable).parent / "ansible").exists() and not shutil.which("ansible"):
        pytest.fail("ansible-core missing: pip install -e '.[bench]' (make setup does)")
    res = subprocess.run([sys.executable, str(SCRIPT), "--quick"], capture_output=True, text=True,
                         timeout=600)
    out = res.stdout
    assert res.returncode == 0, out + res.stderr
    assert out.startswith("machine: ") and "ansible [core" in out and "OpenSSH" in out
    assert "before: load average" in out and "after: load average" in out
    assert "5/5 guests reached by guestprep, 5/5 guests reached by ansible" in out
    for label in ("guestprep ", "ansible -m script "):
        line = next(ln for ln in out.splitlines() if ln.strip().startswith(label))
        assert "min" in line and "median" in line and "rounds 1" in line, line
    ratio = next(ln for ln in out.splitlines() if "speed-up ansible / guestprep" in ln)
    assert "goal >= 3:" in ratio and ratio.endswith(("met (median)", "NOT met (median)"))


def test_a_side_that_skipped_guests_is_not_timed(bench, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    guests = [{"guest": "g0", "error": None, "facts_summary": {"os": "debian"}},
              {"guest": "g1", "error": "unreachable: connection refused", "facts_summary": {}}]
    (out / "report.json").write_text(json.dumps({"guests": guests}))
    side = bench.Side("guestprep", ["true"], {}, 2, out, bench.guestprep_reached)
    with pytest.raises(SystemExit, match="only 1 of 2 guests reached"):
        side.after()
    ans = bench.Side("ansible", ["true"], {}, 3, tmp_path / "a", bench.ansible_reached)
    ans.stdout = ('g0 | CHANGED => {\n    "rc": 0\n}\ng1 | UNREACHABLE! => {\n}\n'
                  'g2 | FAILED! => {\n    "rc": 2\n}\n')
    assert bench.ansible_reached(ans) == 1
