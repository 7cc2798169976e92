"""The benchmark harness (benchmarks/harness.py, issue 17): every timed run starts after a
flush, cases are interleaved (never one case back to back), and the min/median/ratio
arithmetic is what the report prints."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

HARNESS = Path(__file__).resolve().parents[2] / "benchmarks" / "harness.py"


@pytest.fixture(scope="module")
def h():
    spec = importlib.util.spec_from_file_location("bench_harness_under_test", HARNESS)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    yield mod
    sys.modules.pop(spec.name, None)


class Clock:
    """A clock that advances only when a case says how long it took."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_every_run_is_preceded_by_a_flush_and_cases_interleave(h):
    log: list[str] = []
    clock = Clock()

    def case(name, seconds):
        def run():
            log.append(f"run {name}")
            clock.now += seconds
        return h.Case(run=run, before=lambda: log.append(f"before {name}"),
                      after=lambda: log.append(f"after {name}"))

    def fake_flush():
        log.append("flush")
        return "fake"

    samples = h.interleaved({"A": case("A", 2.0), "B": case("B", 1.0)}, rounds=3,
                            flush=fake_flush, clock=clock)
    one_round = ["before A", "flush", "run A", "after A", "before B", "flush", "run B", "after B"]
    assert log == one_round * 3
    assert samples == {"A": [2.0, 2.0, 2.0], "B": [1.0, 1.0, 1.0]}
    assert samples.orders == [["A", "B"]] * 3
    assert len(samples.loads) == 3  # the load each round started under, for the report
    assert samples.flushed == "fake"


def test_the_flush_and_the_bookkeeping_are_not_timed(h):
    """Only `run` is inside the timing: before/flush/after may take any time."""
    clock = Clock()

    def slow(): clock.now += 100.0; return "slow flush"  # noqa: E702

    samples = h.interleaved({"A": h.Case(run=lambda: setattr(clock, "now", clock.now + 1.5),
                                         before=slow, after=slow)},
                            rounds=2, flush=slow, clock=clock)
    assert samples["A"] == [1.5, 1.5]


def test_alternate_order_reverses_every_other_round(h):
    seen: list[str] = []
    samples = h.interleaved({n: (lambda n=n: seen.append(n)) for n in "ABC"}, rounds=4,
                            flush=lambda: "none", order="alternate")
    assert seen == list("ABC" "CBA" "ABC" "CBA")
    assert samples.orders[1] == ["C", "B", "A"]
    with pytest.raises(ValueError):
        h.interleaved({"A": lambda: None}, rounds=1, flush=lambda: "", order="shuffle")
    with pytest.raises(ValueError):
        h.interleaved({"A": lambda: None}, rounds=0, flush=lambda: "")


def test_summary_ratio_difference_arithmetic(h):
    s = h.summary([3.0, 1.0, 2.0, 10.0])
    assert (s.min, s.median, s.max, s.rounds) == (1.0, 2.5, 10.0, 4)
    # per-round ratios, not the ratio of medians: (2/1, 3/2, 8/2) = (2, 1.5, 4)
    r = h.ratio([2.0, 3.0, 8.0], [1.0, 2.0, 2.0])
    assert r.per_round == [2.0, 1.5, 4.0]
    assert (r.min, r.median, r.max, r.rounds) == (1.5, 2.0, 4.0, 3)
    d = h.difference([0.30, 0.25, 0.40], [0.02, 0.05, 0.02])
    assert d.min == pytest.approx(0.20) and d.median == pytest.approx(0.28)
    with pytest.raises(ValueError):
        h.ratio([1.0, 2.0], [1.0])
    with pytest.raises(ValueError):
        h.summary([])


def test_order_effect_splits_rounds_by_who_ran_first(h):
    samples = h.Samples(["A", "B"])
    samples.orders = [["A", "B"], ["B", "A"], ["A", "B"], ["B", "A"]]
    samples["A"][:] = [2.0, 1.0, 2.0, 1.0]
    samples["B"][:] = [1.0, 1.0, 1.0, 1.0]
    assert h.order_effect(samples, "A", "B") == (2.0, 1.0)
    assert h.order_note(samples, "A", "B").endswith("MOVES WITH RUN ORDER (> 10%), not a result")
    samples["A"][:] = [1.05, 1.0, 1.05, 1.0]   # 5% apart: within the tolerance
    assert "MOVES" not in h.order_note(samples, "A", "B")
    samples["A"][:] = [2.0, 1.0, 0.9, 1.2]     # the orders' medians differ but their rounds overlap: noise
    note = h.order_note(samples, "A", "B")
    assert "MOVES" not in note and "run-to-run noise" in note
    samples.orders = [["A", "B"]] * 4          # one order only: nothing to say
    assert h.order_note(samples, "A", "B") == ""


def test_verdict_and_report_lines(h):
    assert h.verdict(1.05, "<=", 1.05) == "met"
    assert h.verdict(1.06, "<=", 1.05) == "NOT met"
    assert h.verdict(1.79, ">=", 1.8) == "NOT met"
    line = h.format_ratio("ours/bare", h.ratio([1.1, 1.2, 1.3], [1.0, 1.0, 1.0]), "<=", 1.05)
    assert "min  1.100" in line and "median  1.200" in line and "rounds 3" in line
    assert line.endswith("goal <= 1.05: NOT met (median)")


def test_real_flush_says_what_it_did(h):
    """The real flush: sync always, and the page cache is dropped only as root."""
    did = h.flush(drop=False, memory=False)
    assert did == "sync"
    did = h.flush(memory=False)
    if os.geteuid() == 0:
        assert did.startswith("sync + drop_caches") or "refused" in did
    else:
        assert "not root" in did


def test_fsync_path_and_machine(h, tmp_path):
    f = tmp_path / "out.bin"
    f.write_bytes(b"x" * 4096)
    h.fsync_path(f)
    m = h.machine(tools=("qemu-img", "no-such-tool-here"))
    assert "cores" in m and "kernel" in m and "no-such-tool-here: not found" in m
    assert "qemu-img version" in m
    assert "load average" in h.load()


def test_evict_drops_the_cache_of_regular_files_only(h, tmp_path, monkeypatch):
    """POSIX_FADV_DONTNEED on each regular file below the directory; a FIFO is skipped without blocking."""
    (tmp_path / "data").write_bytes(b"x" * 65536)
    (tmp_path / "data").read_bytes()                 # in the page cache now
    os.mkfifo(tmp_path / "fifo")
    advised = []
    real = os.posix_fadvise
    monkeypatch.setattr(os, "posix_fadvise", lambda fd, off, n, advice: (advised.append(advice), real(fd, off, n, advice)))
    assert h.evict([tmp_path]) == 1
    assert advised == [os.POSIX_FADV_DONTNEED]


def test_memory_settle_waits_until_the_host_stopped_taking_memory_back(h, tmp_path, monkeypatch):
    """The flush waits for free page reporting to go quiet: a counter still moving holds it, one
    that stood still for `quiet` seconds releases it; no counter (no reporting) waits for nothing."""
    import threading
    import time

    counter = tmp_path / "reported_kib"
    counter.write_text("100\n")
    monkeypatch.setattr(h, "REPORTED_KIB", str(counter))
    stop_at = time.monotonic() + 0.8

    def host_takes_memory_back():
        n = 100
        while time.monotonic() < stop_at:
            n += 2048
            (tmp_path / "next").write_text(f"{n}\n")
            os.replace(tmp_path / "next", counter)   # whole, as sysfs answers
            time.sleep(0.05)

    t = threading.Thread(target=host_takes_memory_back)
    t.start()
    waited = h.memory_settle(quiet=0.3, cap=10, poll=0.02)
    t.join()
    assert waited is not None and waited >= 0.8 + 0.3 - 0.1, waited
    assert h.memory_settle(quiet=0.3, cap=10, poll=0.02) < 0.6   # quiet already
    assert h.memory_settle(quiet=0.3, cap=0.5, poll=0.02) is not None
    monkeypatch.setattr(h, "REPORTED_KIB", str(tmp_path / "absent"))
    assert h.memory_settle() is None
    assert "host took back" not in h.flush(drop=False)
