"""`inventory vsphere --facts-out` interrupted: the previous facts and fleet file stay whole.

Before, each facts file was renamed into place as it was written, so a run stopped halfway
left some VMs' facts from this run and others from the last, under the last run's fleet file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from guestprep.models import SourceVM
from guestprep.vsphere import export


def _vms(n: int, tag: str) -> list[SourceVM]:
    return [SourceVM(name=f"vm{i}", moref=f"vm-{i}", guest_hostname=f"{tag}-{i}")
            for i in range(n)]


def _snapshot(directory):
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_a_new_facts_directory_appears_whole(tmp_path):
    out, facts = tmp_path / "fleet.yaml", tmp_path / "facts"
    export.write(_vms(3, "a"), out, facts, server="vc")
    assert sorted(p.name for p in facts.iterdir()) == [f"vm{i}__vm-{i}.json" for i in range(3)]
    assert oct(facts.stat().st_mode & 0o777) == oct(0o777 & ~export._umask())
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_failure_halfway_leaves_the_last_run_as_it_was(tmp_path, monkeypatch):
    out, facts = tmp_path / "fleet.yaml", tmp_path / "facts"
    (tmp_path / "facts").mkdir(mode=0o700)
    (facts / "notes.txt").write_text("the user's own file\n")
    export.write(_vms(4, "old"), out, facts, server="vc")
    before, fleet_before = _snapshot(facts), out.read_bytes()
    assert oct(facts.stat().st_mode & 0o777) == oct(0o700)       # the user's mode is kept

    calls = {"n": 0}
    real = SourceVM.to_dict

    def fail_on_third(self):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt        # Ctrl-C in the middle of the facts
        return real(self)

    monkeypatch.setattr(SourceVM, "to_dict", fail_on_third)
    with pytest.raises(KeyboardInterrupt):
        export.write(_vms(5, "new"), out, facts, server="vc")
    assert _snapshot(facts) == before and out.read_bytes() == fleet_before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

    monkeypatch.setattr(SourceVM, "to_dict", real)
    export.write(_vms(5, "new"), out, facts, server="vc")
    after = _snapshot(facts)
    assert after["notes.txt"] == b"the user's own file\n"
    assert all(json.loads(after[f"vm{i}__vm-{i}.json"])["guest_hostname"] == f"new-{i}"
               for i in range(5))


def test_a_killed_run_leaves_nothing_visible_and_the_next_run_cleans_up(tmp_path):
    """SIGKILL while the facts are written: the staging directory is hidden, and removed by
    the next run once its pid is gone; a live run's staging directory is left alone."""
    out, facts = tmp_path / "fleet.yaml", tmp_path / "facts"
    export.write(_vms(2, "old"), out, facts, server="vc")
    before = _snapshot(facts)
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import os, time
        from pathlib import Path
        from guestprep.models import SourceVM
        from guestprep.vsphere import export
        real = SourceVM.to_dict
        def slow(self):
            if self.name == "vm3":
                print("halfway", flush=True)
                time.sleep(60)
            return real(self)
        SourceVM.to_dict = slow
        vms = [SourceVM(name=f"vm{{i}}", moref=f"vm-{{i}}") for i in range(6)]
        export.write(vms, Path({str(out)!r}), Path({str(facts)!r}), server="vc")
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "halfway"
        staged = [p for p in tmp_path.iterdir() if export.STAGING_MARK in p.name]
        assert len(staged) == 1 and len(list(staged[0].iterdir())) == 3
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert _snapshot(facts) == before
    live = tmp_path / f".facts{export.STAGING_MARK}{os.getpid()}-keep"
    live.mkdir()
    export.write(_vms(2, "new"), out, facts, server="vc")
    assert [p.name for p in tmp_path.iterdir() if export.STAGING_MARK in p.name] == [live.name]
