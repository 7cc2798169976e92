"""Disk serials (issue 18): a guest with disk.EnableUUID=TRUE reads each SCSI disk's uuid as its
serial; the hand-off records the serial each Proxmox drive gets (PVE takes at most 20 bytes:
"url-encoded, up to 20 bytes long", scsi[n]/sata[n] format key "serial" in the API schema) and
finalize sets serial= on the drive, also after the sata-first switch. Runs against the in-repo
Proxmox API test server, which checks every request against the full schema."""

from __future__ import annotations

import json

import pytest

from guestprep.errors import ConfigError
from guestprep.finalize.config_builder import build_config
from guestprep.handoff import handoff_from_dict, locate_disks
from guestprep.models import VMController, VMDisk
from tests.finalize.shapes import handoff_for
from tests.finalize.test_finalize_flow import make_handoff, run

UUIDS = ["6000C29d-8a1b-2c3d-4e5f-60718293a4b5", "6000C29e-0000-1111-2222-333344445555",
         "6000C29f-aaaa-bbbb-cccc-ddddeeeeffff"]


def with_serials(vm):
    """What the mapper makes of disk.EnableUUID=TRUE on SCSI disks (tests/vsphere/test_mapping.py proves it)."""
    vm.disk_enable_uuid = True
    for d, uuid in zip(vm.disks, UUIDS):
        assert vm.disk_bus(d) == "scsi"
        d.uuid = uuid
        d.serial = uuid.replace("-", "").lower()
    return vm


@pytest.mark.unit
def test_handoff_records_the_carried_serial_and_the_config_sets_it(full_schema):
    h = handoff_for("multi-disk-multi-nic-vlan")
    with_serials(h.vm)
    h.disks = locate_disks(h.vm, h.policy)
    assert [d.serial for d in h.disks] == ["6000c29d8a1b2c3d4e5f", "6000c29e000011112222", "6000c29faaaabbbbcccc"]
    doc = json.loads(json.dumps(h.to_dict()))
    assert [d["serial"] for d in doc["disks"]] == [d.serial for d in h.disks]
    again = handoff_from_dict(doc, "h.json")  # what finalize reads back
    b = build_config(again, 4242)
    assert [b.params[f"scsi{i}"].rsplit(",", 1)[-1] for i in range(3)] == [f"serial={d.serial}" for d in h.disks]
    assert full_schema.errors("POST", "/nodes/{node}/qemu", b.params, {"node": b.node}) == {}
    assert sum("serial=" in f.message for f in b.findings) == 3
    plain = build_config(handoff_for("multi-disk-multi-nic-vlan"), 4242)  # negative control: no EnableUUID
    assert not any("serial=" in str(v) for v in plain.params.values())


@pytest.mark.unit
@pytest.mark.parametrize("bad", ["a,b=c", "x" * 21, "", "6000 c29d"])
def test_a_hand_edited_serial_that_pve_cannot_take_is_refused(bad):
    doc = json.loads(json.dumps(handoff_for("linux-bios-lsi").to_dict()))
    doc["disks"][0]["serial"] = bad
    with pytest.raises(ConfigError) as e:
        handoff_from_dict(doc, "h.json")
    assert e.value.where == "h.json: disks[0].serial"


@pytest.mark.unit
def test_sata_first_with_31_disks_is_refused_not_sent_as_scsi31():
    h = handoff_for("win11-efi-vtpm")
    ctl = VMController(key=1000, kind="pvscsi", label="SCSI controller 0")
    h.vm.controllers.append(ctl)
    h.vm.disks += [VMDisk(key=3000 + i, label=f"Data {i}", controller_key=1000, unit_number=i,
                          capacity_bytes=1 << 30, datastore_path=f"[ds1] w/d{i}.vmdk") for i in range(30)]
    h.disks = locate_disks(h.vm, h.policy)
    with pytest.raises(ConfigError, match="sata-first's VirtIO disk exceed Proxmox's 31 SCSI slots"):
        build_config(h, 100)
    assert build_config(h, 100, strategy="direct").params["scsi30"]  # 31 disks fit a direct boot


@pytest.mark.integration
@pytest.mark.parametrize("shape,policy", [("linux-efi-pvscsi", {}), ("win2019-bios-lsisas", {"strategy": "sata-first"})])
def test_finalize_carries_the_serial_to_the_proxmox_drive(pve, client, source_disks, shape, policy):
    h = make_handoff(shape, source_disks, **policy)
    with_serials(h.vm)
    h.disks = locate_disks(h.vm, h.policy)
    res = run(client, h)
    cfg = pve.state.vms[res.vmid]["config"]
    assert pve.state.rejected == []
    assert cfg["scsi0"].endswith(",serial=6000c29d8a1b2c3d4e5f"), cfg["scsi0"]  # after the sata-first switch too
