"""finalize attaches a converted volume only when its guestprep-host manifest is present and
matches (issue 13, item 2): volume, size, digest, hand-off identity. Each refusal comes before
any create call, exit 2, naming the volume and what differs."""

from __future__ import annotations

import json

import pytest

from guestprep.errors import ConfigError
from guestprep.finalize.manifests import is_partial_name
from tests.finalize.manifest_support import identify, write_manifest
from tests.finalize.test_finalize_flow import make_handoff, run

pytestmark = pytest.mark.integration
SIZE = 40 << 30


def writes(pve):
    return [(m, p) for m, p, _ in pve.state.requests if m != "GET"]


def refused(pve, client, h, tmp_path, match):
    with pytest.raises(ConfigError, match=match) as e:
        run(client, h, manifest_dirs=[str(tmp_path)])
    assert e.value.exit_code == 2
    assert writes(pve) == [] and pve.state.vms == {}     # nothing created, not even tried
    return e.value


@pytest.fixture
def attached(pve, source_disks, tmp_path):
    vol = pve.state.add_volume("pve1", "local-zfs", 100, SIZE, name="vm-100-disk-0")
    h = identify(make_handoff("linux-bios-lsi", source_disks, vmid=100, volumes={"Hard disk 1": vol.volid}), tmp_path)
    return vol, h


def test_a_matching_manifest_lets_the_volume_be_attached(pve, client, attached, tmp_path):
    vol, h = attached
    write_manifest(tmp_path, h, vol.volid, SIZE)
    res = run(client, h, manifest_dirs=[str(tmp_path)])
    assert pve.state.vms[res.vmid]["config"]["scsi0"].startswith(vol.volid + ",")


def test_a_volume_without_a_manifest_is_refused(pve, client, attached, tmp_path):
    vol, h = attached
    e = refused(pve, client, h, tmp_path, "no guestprep-host manifest")
    assert e.where == f"volume {vol.volid}"


def test_a_manifest_of_another_handoff_is_refused(pve, client, attached, tmp_path):
    vol, h = attached
    write_manifest(tmp_path, h, vol.volid, SIZE, sha256="ef" * 32)
    refused(pve, client, h, tmp_path, "hand-off sha256 efefefefefefefef")
    (tmp_path / "vm-100-disk-0.guestprep-manifest.json").unlink()
    write_manifest(tmp_path, h, vol.volid, SIZE, vm_uuid="00000000-0000-0000-0000-000000000000")
    refused(pve, client, h, tmp_path, "VM uuid '00000000")


def test_a_manifest_of_another_size_is_refused(pve, client, attached, tmp_path):
    vol, h = attached
    write_manifest(tmp_path, h, vol.volid, SIZE + 512)
    refused(pve, client, h, tmp_path, f"size {SIZE + 512} in the manifest, {SIZE} on Proxmox")


def test_a_reachable_volume_whose_digest_changed_is_refused(pve, client, attached, tmp_path):
    vol, h = attached
    disk = tmp_path / "images" / "vm-100-disk-0"
    disk.parent.mkdir()
    disk.write_bytes(b"converted" * 1000)
    write_manifest(tmp_path, h, vol.volid, SIZE, target_file=disk)
    with disk.open("r+b") as f:                   # a write after the conversion
        f.write(b"X")
    refused(pve, client, h, tmp_path, "content digest .* the volume changed after its conversion")


@pytest.mark.parametrize("name", ["guestprep-partial-vm-100-disk-0", "vm-100-disk-0.partial"])
def test_a_volume_under_a_temporary_name_is_never_attached(pve, client, source_disks, tmp_path, name):
    vol = pve.state.add_volume("pve1", "local-zfs", 100, SIZE, name=name)
    h = identify(make_handoff("linux-bios-lsi", source_disks, vmid=100, volumes={"Hard disk 1": vol.volid}), tmp_path)
    write_manifest(tmp_path, h, vol.volid, SIZE)          # even with a manifest
    refused(pve, client, h, tmp_path, "temporary name")


@pytest.mark.unit
def test_partial_names():
    assert is_partial_name("local-zfs:guestprep-partial-vm-1-disk-0") and is_partial_name("local:1/a.qcow2.partial")
    assert not is_partial_name("local:1/vm-1-disk-0.qcow2") and not is_partial_name("tank:vm-1-partial")


def test_the_manifest_beside_the_handoff_is_found_by_default(pve, client, attached, tmp_path):
    vol, h = attached
    write_manifest(tmp_path, h, vol.volid, SIZE)
    assert json.loads(next(tmp_path.glob("*.guestprep-manifest.json")).read_text())["handoff"]["volid"] == vol.volid
    assert run(client, h).vmid == 100          # no manifest_dirs: the hand-off's directory
