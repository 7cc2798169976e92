"""The .vmx parser on the real-world samples (read from ../shared) and on our own shapes."""

from __future__ import annotations

from pathlib import Path

import pytest

from guestprep.errors import ConfigError
from guestprep.ostype import ostype_for
from guestprep.vmx import parse_vmx, parse_vmx_file

pytestmark = pytest.mark.unit
FIX = Path(__file__).parent / "fixtures" / "vmx"

# sample -> (name, ostype, firmware, controllers, disks, boot label, nic model, mac)
EXPECT = {
    "sample-1.vmx": ("BZ1308535_21disks", "l26", "bios", ["pvscsi", "pvscsi"], 21, "scsi0:0", "vmxnet3", "00:0c:29:36:ef:31"),
    "sample-2.vmx": ("Fedora 20", "l26", "bios", ["pvscsi", "sata"], 1, "scsi0:0", "vmxnet3", "00:50:56:9b:5f:0d"),
    "sample-3.vmx": ("RHEL 7.1 UEFI", "l26", "efi", ["pvscsi"], 1, "scsi0:0", "vmxnet3", "00:0c:29:4b:2b:8c"),
    "sample-4.vmx": ("Windows 7 x64", "win7", "bios", ["lsisas"], 1, "scsi0:0", "e1000", "00:0c:29:94:89:23"),
    "sample-5.vmx": ("MSEdge - Win10_preview", "win10", "bios", ["lsisas"], 1, "scsi0:0", "e1000e", "00:0c:29:bf:e4:5d"),
}


def test_every_shared_sample_is_covered(samples_dir):
    assert sorted(p.name for p in samples_dir.glob("*.vmx")) == sorted(EXPECT)


@pytest.mark.parametrize("sample", sorted(EXPECT))
def test_shared_samples(samples_dir, sample):
    name, ostype, fw, ctls, ndisks, boot, model, mac = EXPECT[sample]
    vm = parse_vmx_file(samples_dir / sample)
    assert (vm.name, ostype_for(vm.guest_id).ostype, vm.firmware) == (name, ostype, fw)
    assert [c.kind for c in vm.controllers] == ctls
    assert len(vm.disks) == ndisks and vm.boot_disk().label == boot
    assert [(n.model, n.mac) for n in vm.nics] == [(model, mac)]
    assert vm.memory_mb == 2048 and vm.source == "vmx" and len(vm.uuid_bios) == 36
    assert all(vm.controller(d.controller_key) for d in vm.disks)


def test_21_disks_on_two_pvscsi_controllers(samples_dir):
    vm = parse_vmx_file(samples_dir / "sample-1.vmx")
    per_ctl = {c.key: sum(d.controller_key == c.key for d in vm.disks) for c in vm.controllers}
    assert per_ctl == {1000: 15, 1001: 6}
    assert "scsi0:7" not in {d.label for d in vm.disks}  # unit 7 is the controller itself
    assert vm.uuid_bios == "564d96af-e646-bd86-5c4d-654e7736ef31"
    assert [c["slot"] for c in vm.cdroms] == ["ide1:0"]


def test_own_efi_secureboot_vtpm_nvme_fixture():
    vm = parse_vmx_file(FIX / "win11-efi-vtpm-nvme.vmx")
    assert vm.name == 'Win11 "Finance"'                  # |22 escape decoded
    assert (vm.firmware, vm.secure_boot, vm.vtpm) == ("efi", True, True)
    assert (vm.num_cpu, vm.cores_per_socket, vm.memory_mb) == (4, 2, 8192)
    assert vm.controllers[0].kind == "nvme" and vm.boot_disk().label == "nvme0:0"
    assert vm.nics[0].mac == "00:50:56:3f:00:10" and vm.nics[0].address_type == "static"
    assert ostype_for(vm.guest_id).ostype == "win11"


def test_own_independent_and_rdm_fixture():
    vm = parse_vmx_file(FIX / "independent-rdm.vmx")
    d = {x.label: x for x in vm.disks}
    assert d["scsi0:0"].capacity_bytes == 83886080 * 512  # read from the descriptor beside the .vmx
    assert d["scsi0:1"].independent and d["scsi0:2"].rdm_mode == "physicalMode"
    assert vm.boot_disk().label == "scsi0:0"
    assert [n.connected for n in vm.nics] == [True, False] and vm.nics[0].model == "e1000"


@pytest.mark.parametrize("text,match", [
    ('displayName = "x"\nthis is not vmx\n', "bad.vmx:2: not"),
    ('displayName = "x"\nuuid.bios = "56 4d zz"\n', "uuid.bios"),
    ('displayName = "x"\nscsi0:0.present = "TRUE"\nscsi0:0.fileName = "a.vmdk"\n', "controller scsi0 is not"),
    ('displayName = "x"\nethernet0.present = "TRUE"\n', "ethernet0 has no MAC"),
    ('displayName = "x"\nmemSize = "lots"\n', "memsize"),
    ('displayName = "x"\nscsi0.present = "TRUE"\nscsi0.virtualDev = "floppy9"\n', "not a known SCSI controller"),
    ("", "empty"),
])
def test_bad_vmx_is_a_clear_error(text, match):
    with pytest.raises(ConfigError, match=match) as e:
        parse_vmx(text, where="bad.vmx")
    assert str(e.value).startswith("bad.vmx")


def test_binary_file_refused(tmp_path):
    p = tmp_path / "x.vmx"
    p.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not UTF-8"):
        parse_vmx_file(p)
