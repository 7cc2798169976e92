"""Issue 16 items 1 and 7: the runner keys results by position and reports the guests in progress."""

from __future__ import annotations

import threading
import time

from guestprep.models import Guest
from guestprep.runner import run_guests


def test_on_tick_names_guests_in_progress_with_their_time():
    gate = threading.Event()
    ticks: list = []

    def job(g, interrupt):
        if g.name == "slow":
            gate.wait(5)
        return g.name

    def tick(running):
        ticks.append(running)
        if any(n == "slow" and s > 0.3 for n, s in running):
            gate.set()

    run = run_guests([Guest("fast", "a"), Guest("slow", "b")], job, 2, lambda g, e: "crash", on_tick=tick)
    assert run.results == ["fast", "slow"] and run.complete
    assert any([n for n, _ in t] == ["slow"] for t in ticks)


def test_two_guests_with_one_name_keep_both_results():
    run = run_guests([Guest("same", "a", port=1), Guest("same", "a", port=2)], lambda g, i: g.port, 2,
                     lambda g, e: None)
    assert run.results == [1, 2]


def test_a_failing_callback_never_leaves_a_changing_guest_mid_operation():
    finished = []

    def job(g, interrupt):
        if g.name == "slow":
            time.sleep(1.0)
        finished.append(g.name)
        return g.name

    def on_done(result):
        if result == "fast":
            raise RuntimeError("bug in a callback")

    try:
        run_guests([Guest("fast", "a"), Guest("slow", "b")], job, 2, lambda g, e: None, on_done=on_done)
    except RuntimeError:
        pass
    assert "slow" in finished  # the run waited for the guest in progress before the error went on
