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


def _converted_disk(tmp_path):
    """A reachable file volume, as guestprep-host left it."""
    disk = tmp_path / "images" / "vm-100-disk-0"
    disk.parent.mkdir()
    disk.write_bytes(b"converted" * 1000)
    return disk


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
    disk = _converted_disk(tmp_path)
    write_manifest(tmp_path, h, vol.volid, SIZE, target_file=disk)
    with disk.open("r+b") as f:                   # a write after the conversion
        f.write(b"X")
    refused(pve, client, h, tmp_path, "content digest .* the volume changed after its conversion")


def test_a_manifest_of_the_previous_digest_definition_is_still_checked_by_its_own(pve, client, attached, tmp_path):
    """/3 hashes the same data runs as /2 in 16 MiB pieces on worker threads: a manifest an older
    guestprep-host wrote with /2 is recomputed by /2's definition — attached when the bytes are the
    converted ones, refused as changed when one byte moved (not waved through as 'another version')."""
    from hostside.verify import target_digest

    vol, h = attached
    disk = _converted_disk(tmp_path)
    path = write_manifest(tmp_path, h, vol.volid, SIZE, target_file=disk)
    doc = json.loads(path.read_text())
    doc["target"]["digest"] = target_digest(str(disk), "sha256-data-runs/2")
    assert doc["target"]["digest"]["algorithm"] == "sha256-data-runs/2"
    path.write_text(json.dumps(doc))
    with disk.open("r+b") as f:                   # a write after the conversion
        f.write(b"X")
    refused(pve, client, h, tmp_path, "content digest .* the volume changed after its conversion")
    with disk.open("r+b") as f:                   # the converted bytes again
        f.write(b"c")
    res = run(client, h, manifest_dirs=[str(tmp_path)])
    assert pve.state.vms[res.vmid]["config"]["scsi0"].startswith(vol.volid + ",")


def test_a_digest_of_another_definition_is_refused_as_a_version_mismatch(pve, client, attached, tmp_path):
    """/1 counted ext4's unwritten extents as data once cached; /2 does not: the same bytes, another
    value. A /1 manifest (an older guestprep-host on the node) is named as such, not as a changed volume."""
    vol, h = attached
    disk = _converted_disk(tmp_path)
    path = write_manifest(tmp_path, h, vol.volid, SIZE, target_file=disk)
    doc = json.loads(path.read_text())
    doc["target"]["digest"]["algorithm"] = "sha256-data-runs/1"
    path.write_text(json.dumps(doc))
    e = refused(pve, client, h, tmp_path, "'sha256-data-runs/1', written by another guestprep-host version")
    assert "changed after its conversion" not in str(e)


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


def test_the_cli_reads_manifests_from_every_manifests_dir(pve, attached, tmp_path):
    """`guestprep finalize --manifests DIR` (repeatable) is where the manifests are looked for; without
    it only the hand-off's own directory is, and a manifest elsewhere is not found."""
    from guestprep.handoff import load_handoff, write_handoff
    from tests.finalize.test_finalize_cli import gp

    vol, h = attached
    (tmp_path / "handoffs").mkdir()
    write_handoff(h, tmp_path / "handoffs" / "vm.handoff.json")
    h = load_handoff(tmp_path / "handoffs" / "vm.handoff.json")
    empty, converted = tmp_path / "empty", tmp_path / "converted"
    empty.mkdir(), converted.mkdir()
    write_manifest(converted, h, vol.volid, SIZE)
    token_id, secret = next(iter(pve.state.tokens.items()))
    base = ["finalize", "--handoff", h.path, "--host", pve.host, "--port", pve.port, "--user", token_id.split("!")[0],
            "--token-name", token_id.split("!")[1], "--token-secret-env", "PVE_TOKEN", "--ca", pve.ca, "--poll", "0.02",
            "--dry-run"]
    without = gp(*base, env={"PVE_TOKEN": secret})
    assert without.returncode == 2 and "no guestprep-host manifest" in without.stderr
    found = gp(*base, "--manifests", empty, "--manifests", converted, env={"PVE_TOKEN": secret})
    assert found.returncode == 0, found.stderr
    assert f"{vol.volid}," in found.stdout
