"""The request validator, the generated subset, and negative controls Proxmox would reject."""

from __future__ import annotations

import json
import pytest

from guestprep.proxmox.schema import SchemaViolation, load_shipped, normalise_apidata
from tools.gen_pve_schema import USED_ENDPOINTS

pytestmark = pytest.mark.unit
CREATE = ("POST", "/nodes/{node}/qemu")
GOOD = {
    "vmid": 100, "name": "web-01", "ostype": "l26", "cpu": "x86-64-v2-AES", "memory": 2048, "balloon": 2048,
    "scsihw": "virtio-scsi-single", "scsi0": "local-zfs:vm-100-disk-0,discard=on,iothread=1,ssd=1,cache=none",
    "net0": "virtio=00:50:56:9B:5F:0D,bridge=vmbr0,tag=20", "agent": "enabled=1,fstrim_cloned_disks=1",
    "efidisk0": "local-zfs:1,efitype=4m,pre-enrolled-keys=1", "tpmstate0": "local-zfs:1,version=v2.0",
    "smbios1": "uuid=421b4b87-e6b7-d881-07a0-c9d221cd3c6b", "boot": "order=scsi0;net0", "bios": "ovmf",
    "machine": "q35", "tags": "migrated;wave-3", "sata0": "local:0,import-from=/mnt/ds/a b/x.vmdk,format=qcow2",
}


def test_shipped_subset_matches_the_full_schema(apidata):
    full = normalise_apidata(json.loads(apidata.read_text()))
    shipped = load_shipped()
    for method, path in USED_ENDPOINTS:
        assert shipped.endpoints[path][method] == full[path][method], f"regenerate: tools/gen_pve_schema.py ({method} {path})"


@pytest.mark.parametrize("which", ["shipped", "full"])
def test_good_create_passes(which, full_schema):
    schema = load_shipped() if which == "shipped" else full_schema
    assert schema.errors(*CREATE, GOOD, {"node": "pve1"}) == {}


@pytest.mark.parametrize("key,value,match", [
    ("ostype", "win12", "not one of"),
    ("memory", "8", "less than the minimum"),
    ("vmid", 99, "less than the minimum"),
    ("balloon", "-1", "minimum"),
    ("scsihw", "virtio", "not one of"),
    ("scsi0", "local-zfs:vm-100-disk-0,discard=yes", "discard"),
    ("scsi0", "local-zfs:vm-100-disk-0,iothread=maybe", "iothread"),
    ("scsi0", "local-zfs:vm-100-disk-0,bogus=1", "unknown sub-key 'bogus'"),
    ("scsi0", "discard=on", "missing required sub-key 'file'"),
    ("scsi31", "local-zfs:1", "not defined in schema"),
    ("net0", "virtio=01:00:5E:00:00:01,bridge=vmbr0", "multicast"),
    ("net0", "bridge=vmbr0", "missing required sub-key 'model'"),
    ("net0", "virtio=00:50:56:9B:5F:0D,tag=4095", "greater than the maximum"),
    ("net0", "virtio=00:50:56:9B:5F:0D,model=e1000", "duplicate"),
    ("efidisk0", "local-zfs:1,efitype=8m", "efitype"),
    ("tpmstate0", "local-zfs:1,version=v3", "version"),
    ("agent", "fstrim_cloned_disks=1", "missing required sub-key 'enabled'"),
    ("smbios1", "uuid=not-a-uuid", "not a UUID"),
    ("cpu", "kvm65", "unknown CPU model"),
    ("boot", "order=scsi0;floppy0", "not a bootable device"),
    ("machine", "q36", "pattern"),
    ("name", "bad_name!", "DNS name"),
    ("tags", "Ünï", "tag list"),
    ("sockets", "two", "not an integer"),
    ("frobnicate", "1", "not defined in schema"),
])
def test_negative_controls(full_schema, key, value, match):
    params = dict(GOOD, **{key: value})
    for schema in (load_shipped(), full_schema):
        errs = schema.errors(*CREATE, params, {"node": "pve1"})
        assert key in errs and match in errs[key], errs


def test_missing_required_and_bad_path_param(full_schema):
    errs = full_schema.errors(*CREATE, {"name": "x"}, {"node": "pve1"})
    assert "not optional" in errs["vmid"]
    errs = full_schema.errors(*CREATE, GOOD, {"node": "bad node"})
    assert "node" in errs


def test_violation_error_names_the_call():
    with pytest.raises(SchemaViolation) as e:
        load_shipped().validate(*CREATE, dict(GOOD, ostype="dos"), {"node": "pve1"})
    assert str(e.value).startswith("POST /nodes/{node}/qemu: invalid") and "ostype" in str(e.value)


def test_unknown_endpoint_is_a_violation():
    assert "(endpoint)" in load_shipped().errors("POST", "/nodes/{node}/qemu/{vmid}/migrate", {}, {})
