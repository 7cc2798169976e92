"""Cache builds under parallel test workers: a second builder waits for the first (tests/support/cachelock.py)."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.cachelock import exclusive

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]

SECOND_BUILDER = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from tests.support.cachelock import exclusive
with exclusive(Path(sys.argv[1]), "the test entry", log=lambda msg: print(msg, flush=True)):
    Path(sys.argv[2]).write_text("built")
"""


def test_a_second_builder_waits_until_the_first_is_done(tmp_path):
    lock, built = tmp_path / "entry.lock", tmp_path / "built"
    with exclusive(lock, "the test entry"):
        other = subprocess.Popen([sys.executable, "-c", SECOND_BUILDER, str(lock), str(built), str(REPO)],
                                 stdout=subprocess.PIPE, text=True)
        assert "waiting for another process" in other.stdout.readline()
        time.sleep(0.5)
        assert not built.exists() and other.poll() is None
    assert other.wait(timeout=30) == 0
    assert built.read_text() == "built"


def test_the_lock_dies_with_its_holder(tmp_path):
    """A crashed build leaves no stale lock: the kernel drops a flock when its process exits."""
    lock = tmp_path / "entry.lock"
    holder = subprocess.run([sys.executable, "-c", SECOND_BUILDER.replace('Path(sys.argv[2]).write_text("built")',
                                                                        "import os; os._exit(9)"),
                             str(lock), str(tmp_path / "x"), str(REPO)], timeout=30)
    assert holder.returncode == 9
    with exclusive(lock, "the test entry", log=pytest.fail):  # no waiting
        pass


def _entry(root: Path, name: str, idle_hours: float) -> Path:
    import os

    d = root / name
    d.mkdir()
    (d / "disk.vmdk").write_bytes(b"x")
    stamp = d / ".last-used"
    stamp.touch()
    t = time.time() - idle_hours * 3600
    for p in (stamp, d):
        os.utime(p, (t, t))
    return d


def test_stale_entries_of_older_recipes_go_and_nothing_else(tmp_path):
    from tests.support.cachelock import prune_stale, used

    ours = _entry(tmp_path, "lab-" + "a" * 16, 100)
    old = _entry(tmp_path, "lab-" + "b" * 16, 7)
    old_build = _entry(tmp_path, "lab-" + "b" * 16 + ".building-123", 7)
    recent = _entry(tmp_path, "lab-" + "c" * 16, 1)            # another checkout's, used an hour ago
    other_kind = _entry(tmp_path, "lab-uefi-" + "d" * 16, 50)   # "lab-uefi-..." is not a "lab" entry
    being_built = _entry(tmp_path, "lab-" + "e" * 16, 50)
    logged: list[str] = []
    with exclusive(tmp_path / f"{being_built.name}.lock", "the test entry"):
        # the lock is held by this process on another descriptor: flock locks are per open file
        assert used(ours, logged.append) == ours
    assert not old.exists() and not old_build.exists()
    assert ours.exists() and recent.exists() and other_kind.exists() and being_built.exists()
    assert time.time() - (ours / ".last-used").stat().st_mtime < 60  # stamped as used now
    assert len(logged) == 2 and all("stale cache entry" in line for line in logged)
    assert prune_stale(tmp_path, "lab", "a" * 16, logged.append) == [being_built]  # once its lock is free
