"""The kill -9 matrix: the controller dies (os._exit, no cleanup) right after each step acted and
before the journal recorded it; `cutover resume` then finishes the VM exactly once."""

from __future__ import annotations

import subprocess

import pytest

from tests.cutover.conftest import accept_gate

pytestmark = pytest.mark.integration

STEPS = ("gate", "shutdown", "mark_source", "locate_disks", "convert", "finalize", "start", "verify")
# one simulated VM per case (the simulator has DC0_C0_RP0_VM0..7 and DC0_H0_VM0..7; other modules use some)
_FREE = [f"DC0_C0_RP0_VM{i}" for i in range(1, 8)] + ["DC0_H0_VM5"]
VMS = {step: (_FREE[i], 9200 + i) for i, step in enumerate(STEPS)}


@pytest.mark.parametrize("step", STEPS)
def test_kill_after_each_step_then_resume_finishes_exactly_once(lab, step):
    vm_name, vmid = VMS[step]
    lab_ = lab(vm_name, vmid)
    lab_.plan()
    accept_gate(lab_)
    r = lab_.run(env=lab_.env(GUESTPREP_CUTOVER_CRASH_AFTER=step))
    assert r.returncode == 137, r.stdout + r.stderr
    assert f"{step} done" not in r.stderr  # it died before journaling the step
    vm = lab_.status()["vms"][0]
    assert vm["phase"] == "running" and vm["steps"][-1]["step"] == step and vm["steps"][-1]["status"] == "running"

    r = lab_.resume()
    assert r.returncode == 0, r.stdout + r.stderr
    vm = lab_.status()["vms"][0]
    assert vm["phase"] == "done"
    done = [s["step"] for s in vm["steps"] if s["status"] == "done"]
    assert done == list(STEPS)                            # every step done exactly once
    interrupted = [s["step"] for s in vm["steps"] if s["status"] == "interrupted"]
    assert interrupted == [step]
    redone = next(s for s in vm["steps"] if s["step"] == step and s["status"] == "done")
    if step in ("shutdown", "mark_source", "convert", "finalize", "start"):
        assert redone["outputs"].get("postcondition_held") is True  # found done, not done twice
    # one Proxmox VM, one set of volumes, the source off and marked
    t = lab_.target()
    assert t["vms"] == [vmid] and t["status"] == "running"
    assert t["volumes"] == [f"local:{vmid}/vm-{vmid}-disk-0.qcow2"] and t["files"] == [f"vm-{vmid}-disk-0.qcow2"]
    creates = [r for r in lab_.pve.state.requests if r[0] == "POST" and r[1] == "/nodes/{node}/qemu"]
    assert len(creates) == 1
    assert lab_.source()["power"] == "poweredOff" and lab_.source()["marked"]
    assert subprocess.run(["qemu-img", "compare", "-q", "-F", "qcow2", str(lab_.raw),
                           str(lab_.storage / f"images/{vmid}/vm-{vmid}-disk-0.qcow2")]).returncode == 0
    assert vm["downtime_s"] is not None and vm["downtime_s"] > 0


# --------------------------------------------------------------------------- kill -9 *during* a conversion

from tests.cutover import streaming_support  # noqa: E402

folder_sim, folder_vs, slab = (streaming_support.folder_sim, streaming_support.folder_vs,  # fixtures
                               streaming_support.slab)


def _node_matches(*needles: str) -> list[tuple[int, str]]:
    """(pid, argv) of processes on the node (the suite's sshd runs them on this machine) whose argv
    names our target."""
    import glob

    found = []
    for path in glob.glob("/proc/[0-9]*/cmdline"):
        try:
            with open(path, "rb") as f:
                argv = f.read().replace(b"\0", b" ")
        except OSError:
            continue
        if any(n.encode() in argv for n in needles) and b"-m pytest" not in argv:
            found.append((int(path.split("/")[2]), argv.decode(errors="replace")))
    return found


def _node_processes(*needles: str) -> list[str]:
    return [argv for _, argv in _node_matches(*needles)]


def _wait_for_copy(proc: subprocess.Popen, images: str) -> None:
    """Until qemu-img copies into ``images`` on the node (the controller ``proc`` still running)."""
    import time

    deadline = time.monotonic() + 240
    while not [p for p in _node_processes(images) if "qemu-img" in p and " convert " in p]:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "qemu-img convert never started on the node"
        time.sleep(0.1)


def _resumed_at_full_speed(lab_) -> dict:
    """`resume` with the datastore fast again: the VM done, every step done once. Its status."""
    lab_.sim.delay_file.unlink()
    r = lab_.resume()
    assert r.returncode == 0, r.stdout + r.stderr
    vm = lab_.status()["vms"][0]
    assert vm["phase"] == "done"
    assert [s["step"] for s in vm["steps"] if s["status"] == "done"] == list(STEPS)
    return vm


def kill_node_mid_copy(proc: subprocess.Popen, images: str, *needles: str) -> None:
    """Once qemu-img copies into ``images`` on the node, SIGKILL the controller ``proc`` and every node
    process whose argv names one of ``needles``, all at once: a node that died, nobody cleans up."""
    import os
    import signal
    import time

    try:
        _wait_for_copy(proc, images)
        for pid in [proc.pid, *(pid for pid, _ in _node_matches(*needles))]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    deadline = time.monotonic() + 10
    while _node_processes(*needles) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _node_processes(*needles) == []


def test_kill_during_the_conversion_stops_it_on_the_node_and_resume_converts_once(slab):
    """The controller is killed while qemu-img copies on the node: the node's guestprep-host and its
    qemu-img stop with the SSH channel (hostside/watchdog.py) and leave no partial target; `resume`
    converts again, exactly once: one VM, one volume, the source's bytes."""
    import os
    import signal
    import time

    from tests.cutover.conftest import EXE

    vm_name, vmid = "DC0_C0_RP0_VM1", 9311
    lab_ = slab(vm_name, vmid)
    lab_.plan()
    accept_gate(lab_)
    lab_.sim.delay_file.write_text("4000")   # every datastore read takes 4 s: a long conversion
    images = str(lab_.storage / "images" / str(vmid))
    ours = (images, f"/{vm_name}/handoff.json")   # qemu-img writes there; guestprep-host and its watchdog read this
    proc = subprocess.Popen([str(EXE), "cutover", "run", str(lab_.wave), "--poll", "0.05", "--agent-timeout", "5"],
                            env=lab_.env(), cwd=lab_.tmp, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        _wait_for_copy(proc, images)
        os.kill(proc.pid, signal.SIGKILL)   # the controller dies mid-copy: no cleanup of its own
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    killed_at = time.monotonic()
    while _node_processes(*ours) and time.monotonic() - killed_at < 10:
        time.sleep(0.2)
    left = _node_processes(*ours)
    assert left == [], f"still running on the node 10 s after the controller died: {left}"
    assert not [p for p in (lab_.storage / "images").rglob("*") if p.is_file()]   # no partial target
    vm = lab_.status()["vms"][0]
    assert vm["steps"][-1]["step"] == "convert" and vm["steps"][-1]["status"] == "running"

    vm = _resumed_at_full_speed(lab_)
    assert [s["step"] for s in vm["steps"] if s["status"] == "interrupted"] == ["convert"]
    t = lab_.target()
    assert t["vms"] == [vmid] and t["status"] == "running"
    assert t["volumes"] == [f"local:{vmid}/vm-{vmid}-disk-0.qcow2"] and t["files"] == [f"vm-{vmid}-disk-0.qcow2"]
    assert len([q for q in lab_.pve.state.requests if q[0] == "POST" and q[1] == "/nodes/{node}/qemu"]) == 1
    assert subprocess.run(["qemu-img", "compare", "-q", "-F", "qcow2", str(lab_.raw),
                           str(lab_.storage / f"images/{vmid}/vm-{vmid}-disk-0.qcow2")]).returncode == 0
    assert _node_processes(*ours) == []


def _slow_run(slab, vm_name: str, vmid: int):
    """A planned wave of one VM whose datastore reads take 4 s each (a long conversion), its `cutover
    run` started in the background: (lab, the node's images directory, needles naming the VM's node
    processes, the controller process)."""
    from tests.cutover.conftest import EXE

    lab_ = slab(vm_name, vmid)
    lab_.plan()
    accept_gate(lab_)
    lab_.sim.delay_file.write_text("4000")
    images = lab_.storage / "images" / str(vmid)
    ours = (str(images), f"/{vm_name}/handoff.json")   # qemu-img writes there; guestprep-host and its watchdog read this
    proc = subprocess.Popen([str(EXE), "cutover", "run", str(lab_.wave), "--poll", "0.05", "--agent-timeout", "5"],
                            env=lab_.env(), cwd=lab_.tmp, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    return lab_, images, ours, proc


def test_the_node_dies_mid_conversion_and_resume_removes_the_claimed_partial_then_converts_once(slab):
    """The node's processes are killed outright while qemu-img copies (the OOM killer, a node that
    crashed and came back), with the controller: no watchdog is left to clean up, so the partial
    target stays, with the claim guestprep-host wrote beside its manifest (hostside/claim.py). Before
    claims, `resume` met that partial ("in the way", never verified) and failed the VM into a rollback;
    now its convert removes it first (--discard-stale-partial: the claim's process is gone), records
    that in the manifest and the journal, and converts exactly once."""
    import json

    vm_name, vmid = "DC0_C0_RP0_VM2", 9312
    lab_, images, ours, proc = _slow_run(slab, vm_name, vmid)
    kill_node_mid_copy(proc, str(images), *ours)
    partial = images / f"vm-{vmid}-disk-0.qcow2.partial"
    claims = list((lab_.tmp / "node-work").rglob("*.manifest.json.claim"))
    assert partial.exists() and len(claims) == 1, (list(images.iterdir()), claims)
    assert json.loads(claims[0].read_text())["partial"] == str(partial)

    vm = _resumed_at_full_speed(lab_)
    redone = next(s for s in vm["steps"] if s["step"] == "convert" and s["status"] == "done")
    gone = redone["outputs"]["disks"][0]["discarded_partial"]
    assert gone["partial"] == str(partial) and gone["removed"] is True, gone
    assert not claims[0].exists()
    t = lab_.target()
    assert t["vms"] == [vmid] and t["status"] == "running"
    assert t["volumes"] == [f"local:{vmid}/vm-{vmid}-disk-0.qcow2"] and t["files"] == [f"vm-{vmid}-disk-0.qcow2"]
    assert subprocess.run(["qemu-img", "compare", "-q", "-F", "qcow2", str(lab_.raw),
                           str(images / f"vm-{vmid}-disk-0.qcow2")]).returncode == 0


def test_the_converter_dies_on_the_node_and_the_rollback_removes_its_claimed_partial(slab):
    """Only the node's side dies mid-copy (the OOM killer takes the watchdog, guestprep-host and
    qemu-img; the controller lives): `convert` fails after the source went down, so the rollback
    powers the source on again, and its last step removes the partial the killed converter claimed
    (before that step the rollback left a hidden multi-GB file on the node for ever: a later wave's
    conversion of the disk has another manifest path, so nothing would ever discard it)."""
    import json
    import os
    import signal
    import time

    vm_name, vmid = "DC0_C0_RP0_VM3", 9313
    lab_, images, ours, proc = _slow_run(slab, vm_name, vmid)
    try:
        _wait_for_copy(proc, str(images))
        partial = images / f"vm-{vmid}-disk-0.qcow2.partial"
        claims = list((lab_.tmp / "node-work").rglob("*.manifest.json.claim"))
        assert len(claims) == 1 and json.loads(claims[0].read_text())["partial"] == str(partial)
        for pid, _ in _node_matches(*ours):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        lab_.sim.delay_file.unlink()
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, out.decode() + err.decode()
    vm = lab_.status()["vms"][0]
    assert vm["phase"] == "rolled_back", vm
    assert [s["step"] for s in vm["steps"] if s["status"] == "failed"] == ["convert"]
    done = [s for s in vm["steps"] if s["status"] == "done"]
    assert [s["step"] for s in done][-2:] == ["rollback_power_on_source", "rollback_reclaim_partials"]
    assert done[-1]["outputs"]["partials_removed"] == [str(partial)], done[-1]
    assert not partial.exists() and not claims[0].exists()
    assert not [p for p in images.rglob("*") if p.is_file()]   # nothing of this VM left on the node
    assert lab_.source()["power"] == "poweredOn" and not lab_.source()["marked"]
    assert lab_.target()["vms"] == []                          # never created: nothing to stop or keep
    assert _node_processes(*ours) == []


def test_the_node_watchdog_stops_its_command_on_eof_and_lets_one_run_per_target(tmp_path):
    """hostside/watchdog.py on its own: stdin's end stops the command (and its process group); a
    second run of the same target waits for the lock, gives up naming the holder, and does nothing
    when the first one left its result (--done-if)."""
    import sys
    import time

    from tests.cutover.conftest import REPO

    lock, done = tmp_path / "d.lock", tmp_path / "d.manifest.json"
    wd = [sys.executable, "-m", "hostside.watchdog", "--lock", str(lock)]
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    marker = f"sleep-{tmp_path.name}"
    first = subprocess.Popen(wd + ["--", sys.executable, "-c", "import time; time.sleep(300)", marker], stdin=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 30
    # the watchdog holds the lock (it writes its pid there) and its command runs (not the watchdog's own argv)
    while not (lock.exists() and lock.read_text().strip() == str(first.pid)
               and [p for p in _node_processes(marker) if "hostside.watchdog" not in p]):
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.05)
    second = subprocess.run(wd + ["--wait", "1", "--", "true"], stdin=subprocess.DEVNULL, capture_output=True,
                            text=True, env=env, timeout=30)
    assert second.returncode == 75 and f"pid {first.pid}" in second.stderr, second.stderr
    first.stdin.close()   # what a dead controller's channel looks like on the node
    assert first.wait(30) != 0
    assert b"channel closed" in first.stderr.read()
    assert _node_processes(marker) == []
    done.write_text("{}")
    third = subprocess.run(wd + ["--done-if", str(done), "--", "sh", "-c", "echo ran"], stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, env=env, timeout=30)
    assert third.returncode == 0 and "ran" not in third.stdout


CLEANS_UP_SLOWLY = r"""
import os, signal, sys, time
partial, cleaned = sys.argv[1], sys.argv[2]
def stop(signum, frame):   # what guestprep-host does on SIGTERM: stop, remove its partial target, exit 130
    time.sleep(0.5)
    os.unlink(partial)
    open(cleaned, "w").close()
    sys.exit(130)
signal.signal(signal.SIGTERM, stop)
open(partial, "w").close()
time.sleep(300)
"""


def test_the_node_watchdog_lets_a_command_behind_a_wrapper_clean_up(tmp_path):
    """The node's python may be a wrapper (a shell script, as this suite's witness is; a site's shim):
    the watchdog's child is then the wrapper, and the converter its child. SIGTERM to the child alone
    killed the wrapper, left the converter untouched, and the watchdog's SIGKILL to the group (the
    wrapper had exited) then killed the converter before it removed its partial target — CI saw a
    `.partial` left on a node after a rehearsal's controller was killed. The whole group is asked to
    stop and given its grace (systemd's KillMode=control-group does the same: systemd.kill(5))."""
    import sys
    import time

    from tests.cutover.conftest import REPO

    partial, cleaned, script = tmp_path / "disk.partial", tmp_path / "cleaned", tmp_path / "convert.py"
    script.write_text(CLEANS_UP_SLOWLY)
    wrapper = f"{sys.executable} {script} {partial} {cleaned}; rc=$?; echo end; exit $rc"   # forks: not exec'd
    wd = subprocess.Popen([sys.executable, "-m", "hostside.watchdog", "--lock", str(tmp_path / "d.lock"),
                           "--", "sh", "-c", wrapper], stdin=subprocess.PIPE, stderr=subprocess.PIPE,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    deadline = time.monotonic() + 30
    while not partial.exists():
        assert time.monotonic() < deadline and wd.poll() is None
        time.sleep(0.05)
    wd.stdin.close()   # the controller died
    assert wd.wait(30) != 0
    assert b"channel closed" in wd.stderr.read()
    assert cleaned.exists() and not partial.exists(), "the converter was killed before it cleaned up"
    assert _node_processes(str(script)) == []
