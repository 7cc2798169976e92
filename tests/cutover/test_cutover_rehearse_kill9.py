"""`cutover rehearse` killed (os._exit, no cleanup of its own) right after each step acted and before
its journal recorded it, then run again: the second run first removes exactly what the killed one
created (the temporary VM, the volume it converted, the snapshot it took, its directory on the node),
then rehearses, and reports each VM once. A volume with the temporary vmid that the rehearsal did not
create (a decoy put there beforehand) survives every round; the wave's run journal is never written.

Real parts as in the other cutover tests: the govmomi simulator (snapshots), the suite's sshd as the
node running guestprep-host with real qemu-img, the Proxmox API test server (tests/cutover/pve_node.py).
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest

pytestmark = pytest.mark.integration

REHEARSAL_STEPS = ("snapshot", "locate_disks", "convert", "finalize", "links_down", "start", "verify")
CLEANUP_STEPS = ("destroy_vm", "free_volumes", "remove_node_dir", "remove_snapshot")
CRASH_ENV = "GUESTPREP_CUTOVER_REHEARSE_CRASH_AFTER"


def _snapshots(lab_) -> list[str]:
    from guestprep.cutover.rehearse import snapshot_tree

    names, stack = [], snapshot_tree(lab_.vs, lab_.vm)
    while stack:
        s = stack.pop()
        names.append(s.name)
        stack.extend(s.childSnapshotList or [])
    return names


def _traces(lab_, tmp_vmid: int) -> dict:
    """What a rehearsal can leave, read directly from the two sides and the node's disk."""
    return {"vm": lab_.pve.vms_with(tmp_vmid), "volumes": lab_.pve.volumes_of(tmp_vmid),
            "files": sorted(p.name for p in (lab_.storage / "images").rglob("*") if p.is_file()),
            "snapshots": _snapshots(lab_),
            "node_dirs": sorted(str(p) for p in (lab_.tmp / "node-work").glob(f"*/{lab_.vm_name}.rehearsal")),
            "manifest_copies": sorted(str(p) for p in (lab_.tmp / "wave.yaml.rehearsal" / "manifests").glob("*/*"))}


def _decoy(lab_, tmp_vmid: int) -> str:
    """A volume of the temporary vmid the rehearsal did not create (disk-1: the rehearsal converts disk-0)."""
    d = lab_.storage / "images" / str(tmp_vmid)
    d.mkdir(parents=True, exist_ok=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(d / f"vm-{tmp_vmid}-disk-1.qcow2"), "1M"],
                   check=True)
    return f"local:{tmp_vmid}/vm-{tmp_vmid}-disk-1.qcow2"


def _rehearse(lab_, tmp_vmid: int, **env: str):
    return lab_.gp("cutover", "rehearse", lab_.wave, "--poll", "0.05", "--agent-timeout", "5",
                   "--vmid", f"{lab_.vm_name}={tmp_vmid}", env=lab_.env(**env))


def _kill_then_rehearse_again(lab_, tmp_vmid: int, step: str, decoy: str) -> None:
    name = lab_.vm_name
    r = _rehearse(lab_, tmp_vmid, **{CRASH_ENV: step})
    assert r.returncode == 137, (step, r.stdout + r.stderr)
    assert "would boot" not in r.stdout, (step, r.stdout)
    left = _traces(lab_, tmp_vmid)
    if step != "remove_snapshot":   # the killed rehearsal did leave something behind
        assert left["snapshots"], (step, left)

    r = _rehearse(lab_, tmp_vmid)
    assert r.returncode == 0, (step, r.stdout + r.stderr)
    assert r.stdout.count(f"{name}: would boot: yes") == 1, (step, r.stdout)   # reported once
    rep = json.loads((lab_.tmp / "wave.yaml.rehearsal" / "report.json").read_text())
    assert [v["vm"] for v in rep["vms"]] == [name] and rep["cleaned_up_only"] == []
    vm = rep["vms"][0]
    assert vm["would_boot"] is True, (step, vm["reasons"])
    prev = vm["previous_rehearsal"]   # the killed rehearsal's traces, removed before this one began
    assert prev["vmid"] == tmp_vmid and prev["left_behind"] == [], (step, prev)
    assert [s["step"] for s in prev["steps"]] == list(CLEANUP_STEPS), (step, prev)
    assert prev["cleanup"]["snapshot"] == "removed" and prev["snapshot"] not in _snapshots(lab_)
    if step in ("finalize", "links_down", "start", "verify"):
        assert prev["cleanup"]["vm"] == "destroyed", (step, prev)
    if step == "convert":   # converted, never attached: freed through the API with this rehearsal's proof
        assert prev["cleanup"]["volumes_freed"] == [f"local:{tmp_vmid}/vm-{tmp_vmid}-disk-0.qcow2"], (step, prev)
    # this rehearsal's own steps, each once, then its cleanup
    assert [s["step"] for s in vm["steps"]] == list(REHEARSAL_STEPS + CLEANUP_STEPS), (step, vm["steps"])
    assert vm["cleanup"] == {"vm": "destroyed", "volumes_freed": [], "volumes_left": [], "node_dir": "removed",
                             "snapshot": "removed"}, (step, vm["cleanup"])

    # nothing left; the decoy kept; the source untouched; the run's journal never written
    assert _traces(lab_, tmp_vmid) == {"vm": [], "volumes": [decoy], "files": [decoy.rsplit("/", 1)[1]],
                                       "snapshots": [], "node_dirs": [], "manifest_copies": []}, step
    assert lab_.source() == {"power": "poweredOn", "marked": False, "field": lab_.source()["field"]}
    assert not (lab_.tmp / "wave.yaml.state" / "journal.sqlite").exists()

    # progress, piped: one plain line per event; the cleanup's steps before the new rehearsal's
    assert "\x1b" not in r.stderr and "\r" not in r.stderr
    mine = [m.group(1) for m in (re.fullmatch(rf"\d\d:\d\d:\d\d {name} \[pve1\] (.+)", line)
                                 for line in r.stderr.splitlines()) if m]
    ended = [re.sub(r" done .*", "", e) for e in mine if re.fullmatch(r"\w+ done \d+\.\d s.*", e)]
    assert ended == list(CLEANUP_STEPS + REHEARSAL_STEPS + CLEANUP_STEPS), (step, mine)
    assert "phase cleaned" in mine and mine[-1] == "phase would_boot", (step, mine)


@pytest.mark.parametrize("steps, vm_name, tmp_vmid", [
    (REHEARSAL_STEPS, "DC0_H0_VM12", 9412),
    (CLEANUP_STEPS, "DC0_C0_RP0_VM12", 9413),
], ids=["rehearsal-steps", "cleanup-steps"])
def test_kill_after_each_step_then_rehearse_again_cleans_up_and_reports_once(lab, steps, vm_name, tmp_vmid):
    lab_ = lab(vm_name, tmp_vmid - 100)
    lab_.plan()
    decoy = _decoy(lab_, tmp_vmid)
    for step in steps:
        _kill_then_rehearse_again(lab_, tmp_vmid, step, decoy)


def _wave_snapshots(w, name: str) -> list[str]:
    from guestprep.cutover.rehearse import snapshot_tree

    return [t.name for t in snapshot_tree(w.vs, w.vms[name])]


def test_locked_then_killed_mid_wave_then_one_vm_rehearsed_cleans_both(wave_lab):
    """Two VMs on two nodes, temporary vmids from the cluster (never the same one twice). A held lock
    refuses a second controller (exit 2, nothing created). Rehearsing both, the controller dies right
    after A's conversion (B wherever it was). Rehearsing B alone then removes A's traces too (A is
    listed as cleaned up only, not rehearsed), rehearses B, and leaves nothing on either node."""
    from guestprep.cutover.journal import WaveLock

    a, b = ("DC0_H0_VM13", 9341, "pve1"), ("DC0_C0_RP0_VM13", 9342, "pve2")
    w = wave_lab([a, b])
    w.plan()
    d = w.tmp / "wave.yaml.rehearsal"
    d.mkdir()
    held = WaveLock(d / "lock").acquire()
    try:
        r = w.gp("cutover", "rehearse", w.wave, "--poll", "0.05", "--agent-timeout", "5")
    finally:
        held.release()
    assert r.returncode == 2, r.stdout + r.stderr
    assert "another controller" in r.stderr and "Traceback" not in r.stderr
    assert not w.pve.state.vms and _wave_snapshots(w, a[0]) == [] == _wave_snapshots(w, b[0])

    r = w.gp("cutover", "rehearse", w.wave, "--parallel", "2", "--poll", "0.05", "--agent-timeout", "5",
             env=w.env(**{CRASH_ENV: f"{a[0]}:convert"}))
    assert r.returncode == 137, r.stdout + r.stderr
    assert _wave_snapshots(w, a[0]), "the killed rehearsal left A's snapshot"
    assert list((w.storages["pve1"][1] / "images").rglob("*.qcow2")), "and A's converted volume"

    r = w.gp("cutover", "rehearse", w.wave, b[0], "--poll", "0.05", "--agent-timeout", "5")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{a[0]}: an interrupted rehearsal's traces removed" in r.stdout, r.stdout
    assert r.stdout.count(f"{b[0]}: would boot: yes") == 1 and f"{a[0]}: would boot" not in r.stdout, r.stdout
    rep = json.loads((d / "report.json").read_text())
    assert [v["vm"] for v in rep["vms"]] == [b[0]] and rep["vms"][0]["would_boot"] is True
    gone, = rep["cleaned_up_only"]
    assert gone["vm"] == a[0] and gone["left_behind"] == [] and gone["cleanup"]["volumes_freed"], gone
    tmp_a, tmp_b = gone["vmid"], rep["vms"][0]["vmid"]
    assert tmp_a not in (a[1], b[1]) and tmp_b not in (a[1], b[1])
    # nothing left: no VM, no volume, no snapshot, no node directory, on either node
    assert not w.pve.state.vms
    for node, (_, path) in w.storages.items():
        assert not [p for p in (path / "images").rglob("*") if p.is_file()], node
        assert not list(w.workdirs[node].glob("*/*.rehearsal")), node
    assert _wave_snapshots(w, a[0]) == [] == _wave_snapshots(w, b[0])
    for name in (a[0], b[0]):
        assert str(w.vms[name].runtime.powerState) == "poweredOn"

    # both at once: the cluster's next vmid is the same for both until one creates its VM; the run
    # hands out two
    r = w.gp("cutover", "rehearse", w.wave, "--parallel", "2", "--poll", "0.05", "--agent-timeout", "5")
    assert r.returncode == 0, r.stdout + r.stderr
    rep = json.loads((d / "report.json").read_text())
    assert [v["would_boot"] for v in rep["vms"]] == [True, True] and rep["cleaned_up_only"] == []
    assert len({v["vmid"] for v in rep["vms"]}) == 2, [v["vmid"] for v in rep["vms"]]
    assert not w.pve.state.vms


# --------------------------------------------------------------------------- the node dies mid-conversion

from tests.cutover import streaming_support  # noqa: E402

folder_sim, folder_vs, slab = (streaming_support.folder_sim, streaming_support.folder_vs,  # fixtures
                               streaming_support.slab)


def test_the_node_dies_mid_conversion_and_the_next_rehearsal_reclaims_the_partial(slab):
    """The rehearsal's controller and the node's converter are killed outright while qemu-img copies:
    the temporary vmid's partial target stays, invisible to Proxmox (not a `vm-` volume name) and
    to the volume cleanup, with its claim beside the manifest (hostside/claim.py). The next rehearsal's
    cleanup removes it (`guestprep-host reclaim`, under the conversion's lock) before removing the
    node directory that holds the claim, then rehearses; nothing is left on the node."""
    from tests.cutover.conftest import EXE
    from tests.cutover.test_cutover_kill9 import kill_node_mid_copy

    name, tmp_vmid = "DC0_C0_RP0_VM3", 9414
    lab_ = slab(name, tmp_vmid - 100)
    lab_.plan()
    lab_.sim.delay_file.write_text("4000")   # every datastore read takes 4 s: a long conversion
    images = lab_.storage / "images" / str(tmp_vmid)
    proc = subprocess.Popen([str(EXE), "cutover", "rehearse", str(lab_.wave), "--poll", "0.05", "--agent-timeout",
                             "5", "--vmid", f"{name}={tmp_vmid}"], env=lab_.env(), cwd=lab_.tmp,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    kill_node_mid_copy(proc, str(images), str(images), f"/{name}.rehearsal/")
    partial = images / f"vm-{tmp_vmid}-disk-0.qcow2.partial"
    assert partial.exists(), list(images.iterdir())
    assert len(list((lab_.tmp / "node-work").rglob("*.manifest.json.claim"))) == 1

    lab_.sim.delay_file.unlink()
    r = _rehearse(lab_, tmp_vmid)
    assert r.returncode == 0, r.stdout + r.stderr
    rep = json.loads((lab_.tmp / "wave.yaml.rehearsal" / "report.json").read_text())
    vm, = rep["vms"]
    assert vm["would_boot"] is True, vm["reasons"]
    prev = vm["previous_rehearsal"]
    assert prev["left_behind"] == [] and prev["cleanup"]["partials_removed"] == [str(partial)], prev
    assert _traces(lab_, tmp_vmid) == {"vm": [], "volumes": [], "files": [], "snapshots": [], "node_dirs": [],
                                       "manifest_copies": []}
    assert lab_.source()["power"] == "poweredOn"
