"""``--per-datastore N``: at most N conversions in flight reading one source datastore, while VMs on
different datastores convert at the same time.

Real parts as in the other cutover tests. The govmomi simulator gets a second datastore
(``LocalDS_1``, created on every host through HostDatastoreSystem.CreateLocalDatastore, as vCenter
does for a local VMFS/NFS path); two of the four VMs have their disk moved there by a reconfigure
(the disk's backing file name, as vSphere's API edits a device; the simulator wants the file to
exist there first, as ESXi does). All four VMs go to one node, ``--parallel 4`` and no per-node
limit: only the datastore limit holds them back. What is proven, from the journal (the convert
step's per-disk ``started_at``/``ended_at``) and cross-checked with the node's own record of each
guestprep-host run (WaveLab.node_runs): on each datastore one conversion at a time, and the two
datastores' conversions overlap.
"""

from __future__ import annotations

import datetime as dt

import pytest

from tests.cutover.conftest import accept_gate, most_at_once

pytestmark = pytest.mark.integration

SECOND = "LocalDS_1"
VMS = [("DC0_H0_VM14", 9331, "pve1"), ("DC0_H0_VM15", 9332, "pve1"),
       ("DC0_C0_RP0_VM14", 9333, "pve1"), ("DC0_C0_RP0_VM15", 9334, "pve1")]
ON_SECOND = ("DC0_H0_VM15", "DC0_C0_RP0_VM15")


def _t(stamp: str) -> float:
    return dt.datetime.fromisoformat(stamp).timestamp()


def _second_datastore(vs, root):
    """``LocalDS_1`` on every host of the simulator (once per session: its inventory is shared)."""
    from pyVmomi import vim

    content = vs.si.RetrieveContent()
    view = content.viewManager.CreateContainerView(content.rootFolder, [vim.HostSystem], True)
    try:
        for host in view.view:
            if SECOND not in [d.name for d in host.datastore]:
                host.configManager.datastoreSystem.CreateLocalDatastore(name=SECOND, path=str(root))
    finally:
        view.Destroy()


def _move_disk(vs, vm_name: str, root) -> None:
    """The VM's first disk re-pointed at the same relative path on ``LocalDS_1``."""
    from pyVmomi import vim

    from guestprep.vsphere.actions import find_vm
    from tests.vsphere.vsphere_support import reconfig

    vm = find_vm(vs, vm_name)
    disk = next(d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk))
    rel = disk.backing.fileName.split("] ", 1)[1]
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    for name in (rel, rel.replace(".vmdk", "-flat.vmdk")):   # what the simulator checks before the edit
        (root / name).write_bytes(b"")
    disk.backing.fileName = f"[{SECOND}] {rel}"
    disk.backing.datastore = next(d for d in vm.runtime.host.datastore if d.name == SECOND)
    reconfig(vs, vm, vim.vm.ConfigSpec(deviceChange=[vim.vm.device.VirtualDeviceSpec(operation="edit", device=disk)]))
    assert [d.backing.fileName for d in vm.config.hardware.device
            if isinstance(d, vim.vm.device.VirtualDisk)] == [f"[{SECOND}] {rel}"]


def test_per_datastore_limits_each_datastore_while_datastores_convert_concurrently(wave_lab, vs, tmp_path):
    root = tmp_path / "vcsim-LocalDS_1"
    root.mkdir()
    _second_datastore(vs, root)
    for name in ON_SECOND:
        _move_disk(vs, name, root)
    w = wave_lab(VMS)
    w.plan()
    accept_gate(w)
    r = w.run("--parallel", "4", "--per-datastore", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    vms = {v["vm"]: v for v in w.status()["vms"]}
    assert all(v["phase"] == "done" for v in vms.values()), {n: v["phase"] for n, v in vms.items()}

    # the journal: each VM's disk read from the datastore it is on, and when it was converted
    spans: dict[str, list[tuple[float, float]]] = {"LocalDS_0": [], SECOND: []}
    for name, _, _ in VMS:
        locate = next(s for s in vms[name]["steps"] if s["step"] == "locate_disks")["outputs"]["disks"][0]
        assert locate["datastore"] == (SECOND if name in ON_SECOND else "LocalDS_0"), locate
        disk, = next(s for s in vms[name]["steps"] if s["step"] == "convert")["outputs"]["disks"]
        spans[locate["datastore"]].append((_t(disk["started_at"]), _t(disk["ended_at"])))
    for ds, mine in spans.items():
        assert len(mine) == 2 and most_at_once(mine) == 1, (ds, spans)   # --per-datastore 1
    assert most_at_once(spans["LocalDS_0"] + spans[SECOND]) == 2, spans   # the two datastores at once

    # the node's own record agrees: one run at a time per datastore, two at once across them
    runs = {vm: (a, b) for vm, a, b in w.node_runs("convert")["pve1"]}
    assert sorted(runs) == sorted(n for n, _, _ in VMS), runs
    assert most_at_once([runs[n] for n in ON_SECOND]) == 1, runs
    assert most_at_once([runs[n] for n, _, _ in VMS if n not in ON_SECOND]) == 1, runs
    assert most_at_once(list(runs.values())) == 2, runs
