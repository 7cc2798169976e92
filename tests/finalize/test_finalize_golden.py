"""Golden configs for eight source shapes; every one must pass the full Proxmox schema."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from guestprep.finalize.config_builder import build_config
from guestprep.target_policy import proxmox_name
from tests.finalize.shapes import handoff_for, shapes

pytestmark = pytest.mark.unit
GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize("shape", sorted(shapes()))
def test_golden_config(shape, full_schema):
    b = build_config(handoff_for(shape), 4242)
    got = b.to_dict()
    path = GOLDEN / f"{shape}.json"
    if os.environ.get("GUESTPREP_UPDATE_GOLDEN"):
        path.write_text(json.dumps(got, indent=2, sort_keys=True) + "\n")
    assert got == json.loads(path.read_text()), f"config for {shape} changed; review and regenerate the golden file"
    assert full_schema.errors("POST", "/nodes/{node}/qemu", b.params, {"node": b.node}) == {}


def test_shape_decisions():
    efi = build_config(handoff_for("win2022-efi-secureboot"), 100).params
    assert efi["bios"] == "ovmf" and "efitype=4m" in efi["efidisk0"] and "pre-enrolled-keys=1" in efi["efidisk0"]
    assert efi["ostype"] == "win11" and efi["machine"] == "q35"
    bios = build_config(handoff_for("linux-bios-lsi"), 100).params
    assert "bios" not in bios and "efidisk0" not in bios and bios["ostype"] == "l26"
    assert bios["cpu"] == "x86-64-v2-AES" and bios["boot"] == "order=scsi0"
    assert bios["scsi0"].endswith("discard=on,iothread=1,ssd=1,cache=none")
    assert bios["net0"] == "virtio=00:50:56:9B:5F:0D,bridge=vmbr0"
    assert bios["smbios1"] == "uuid=421b4b87-e6b7-d881-07a0-c9d221cd3c6b"
    assert bios["agent"] == "enabled=1,fstrim_cloned_disks=1" and bios["tags"] == "migrated"
    win11 = build_config(handoff_for("win11-efi-vtpm"), 100)
    assert win11.params["tpmstate0"] == "local-zfs:1,version=v2.0"
    assert win11.params["boot"] == "order=sata0" and "sata0" in win11.params and win11.switch.dummy_slot == "scsi1"
    multi = build_config(handoff_for("multi-disk-multi-nic-vlan"), 100)
    assert multi.params["net0"].endswith("tag=20") and multi.params["net1"] == "virtio=00:50:56:AA:00:02,bridge=vmbr1,tag=30"
    assert multi.params["net2"].endswith("link_down=1") and "cache=writeback" in multi.params["scsi2"]
    assert any("battery" in f.message for f in multi.findings)
    ind = build_config(handoff_for("independent-disk"), 100)
    assert [k for k in ind.params if k.startswith("scsi") and k != "scsihw"] == ["scsi0"]
    assert sum("excluded" in f.message for f in ind.findings) == 2


@pytest.mark.parametrize("raw,expect", [
    ("win2022 dc01", "win2022-dc01"), ("W11_desk", "W11-desk"), ("--", "vm-7"), ("a..b", "a.b"),
    ("x" * 70, "x" * 63), ("Ünïcode sérver", "n-code-s-rver"),
])
def test_proxmox_name(raw, expect, full_schema):
    got = proxmox_name(raw) or "vm-7"     # config_builder's fallback for a name with nothing usable
    assert got == expect
    assert full_schema.errors("POST", "/nodes/{node}/qemu", {"vmid": 100, "name": got}, {"node": "pve1"}) == {}
