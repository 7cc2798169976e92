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
