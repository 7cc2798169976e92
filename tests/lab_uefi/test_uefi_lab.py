"""The UEFI lab: a VMware UEFI guest that boots only through its NVRAM entry.

Negative control: converted and booted on VirtIO hardware with a fresh vars store (what a
new Proxmox efidisk0 is), OVMF finds no \\EFI\\BOOT\\BOOTX64.EFI and never reaches GRUB.
Prepared: `guestprep prepare --apply` over SSH while VMware-shaped installs the fallback
(linux.efi_fallback, plus the BIOS lab's initramfs/NIC/agent operations); the converted
copy then boots from a fresh vars store on VirtIO, with network and guest agent.
Serial logs: tests/artifacts/lab_uefi/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import uefiimage
from uefi_vm import OVMF_VARS, REACHED_OS_RE, UefiVM

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lab"))
from qemu_vm import qga_ping, ssh, ssh_ok  # noqa: E402

pytestmark = pytest.mark.lab
REPO = Path(__file__).resolve().parents[2]


def qemu_img(*argv: str) -> None:
    subprocess.run(["qemu-img", *argv], check=True, capture_output=True)


def fresh_vars(path: Path) -> Path:
    shutil.copyfile(OVMF_VARS, path)
    return path


@pytest.fixture(scope="module")
def converted_unprepared(uefi_image, tmp_path_factory) -> Path:
    """The VMware disk as the converter would write it for Proxmox (qcow2), before any preparation."""
    out = tmp_path_factory.mktemp("uefi-neg") / "vm-100-disk-0.qcow2"
    qemu_img("convert", "-f", "vmdk", "-O", "qcow2", str(uefi_image / "vmware-guest.vmdk"), str(out))
    return out


def test_negative_control_fresh_vars_on_virtio_does_not_reach_the_os(converted_unprepared, uefi_artifacts, tmp_path):
    vm = UefiVM(disk=converted_unprepared, disk_format="qcow2", shape="proxmox",
                vars_file=fresh_vars(tmp_path / "efidisk0.fd"),
                serial_log=uefi_artifacts / "negative-control-fresh-vars-virtio.log")
    vm.start()
    try:
        verdict = vm.wait_firmware_verdict(300)
        log = vm.console()
    finally:
        vm.kill()
    assert verdict == "firmware-gave-up", f"{verdict}; see {vm.serial_log}"
    assert not REACHED_OS_RE.search(log), f"GRUB or the kernel ran; see {vm.serial_log}"
    # the disk was tried and had nothing at the removable-media path; OVMF moved on to PXE/the shell
    assert re.search(r'BdsDxe: failed to load Boot\d+ "UEFI QEMU QEMU HARDDISK[^"]*" .*: Not Found', log), log[-2000:]


def write_inventory(path: Path, port: int, key: Path) -> Path:
    path.write_text(
        "version: 1\n"
        "guests:\n"
        "  - name: uefi-lab\n"
        "    address: 127.0.0.1\n"
        f"    port: {port}\n"
        "    os: linux\n"
        "    user: root\n"
        f"    key_file: {key}\n"
        "    agent: false\n")
    return path


def guestprep(*argv: str, timeout: float = 1500) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("guestprep")
    return subprocess.run([str(exe), *argv], capture_output=True, timeout=timeout, cwd=REPO)


@pytest.mark.timeout(1800)  # three TCG boots and a prepare run; slower when the BIOS lab shares the 2 cores
def test_prepared_guest_boots_from_a_fresh_vars_store_on_virtio(uefi_image, uefi_artifacts, tmp_path):
    key = tmp_path / "id_ed25519"
    shutil.copyfile(uefi_image / "id_ed25519", key)
    os.chmod(key, 0o600)
    # the VMware side: an overlay over the cached disk (the source is never written) and the VM's own NVRAM
    vmware_disk = tmp_path / "vmware-overlay.qcow2"
    qemu_img("create", "-f", "qcow2", "-b", str(uefi_image / "vmware-guest.vmdk"), "-F", "vmdk", str(vmware_disk))
    nvram = tmp_path / "vmware.nvram.fd"
    shutil.copyfile(uefi_image / "vmware-vars.fd", nvram)
    vm = UefiVM(disk=vmware_disk, disk_format="qcow2", shape="vmware", vars_file=nvram,
                serial_log=uefi_artifacts / "prepare-vmware-shaped.log")
    vm.start()
    try:
        assert vm.wait_boot(900) == "multi-user" and vm.wait_ssh_banner(180), f"see {vm.serial_log}"
        assert uefiimage.booted_with_long_root_wait(vm.serial_log), f"root-device wait not lengthened; see {vm.serial_log}"
        # positive control for the negative one: on its own NVRAM the guest boots through \EFI\debian
        efi = ssh_ok(vm.ssh_port, key, ["efibootmgr", "-v"]).stdout.decode()
        current = next(l.split(":", 1)[1].strip() for l in efi.splitlines() if l.startswith("BootCurrent"))
        assert f"Boot{current}* debian" in efi and "\\EFI\\debian\\grubx64.efi" in efi, efi
        assert ssh(vm.ssh_port, key, ["test", "-e", "/boot/efi/EFI/BOOT/BOOTX64.EFI"]).returncode != 0

        inv = write_inventory(tmp_path / "fleet.yaml", vm.ssh_port, key)
        known = tmp_path / "known_hosts"
        res = guestprep("prepare", "uefi-lab", "-i", str(inv), "--apply", "--json", "--accept-new-host-keys",
                        "--known-hosts", str(known))
        (uefi_artifacts / "prepare-apply.json").write_bytes(res.stdout)
        doc = json.loads(res.stdout)
        ops = {o["operation"]: o for o in doc["guests"][0]["ops"]}
        efi_op = ops["linux.efi_fallback"]
        assert efi_op["error"] is None and efi_op["verified"] is True, json.dumps(efi_op, indent=1)
        # planned only because LNX-EFI-FALLBACK failed on the collected facts (no preflight round trip: TCG is slow)
        assert efi_op["plan"]["changes"][0]["detail"]["argv"][0] == "grub-install", efi_op["plan"]
        listing = ssh_ok(vm.ssh_port, key, ["sha256sum", "/boot/efi/EFI/BOOT/BOOTX64.EFI",
                                         "/boot/efi/EFI/debian/grubx64.efi"]).stdout.decode().split()
        assert listing[0] == listing[2], "fallback and the distribution's loader are the same image"
        ssh(vm.ssh_port, key, ["sync"])
        ssh(vm.ssh_port, key, ["systemctl", "poweroff"], timeout=60)
        assert vm.wait_exit(180), "the prepared guest did not power off"
    finally:
        vm.kill()

    # the move: convert, then boot on Proxmox-shaped hardware with a brand-new EFI vars store
    target = tmp_path / "vm-101-disk-0.qcow2"
    qemu_img("convert", "-f", "qcow2", "-O", "qcow2", str(vmware_disk), str(target))
    qga = tmp_path / "qga.sock"
    pve = UefiVM(disk=target, disk_format="qcow2", shape="proxmox", vars_file=fresh_vars(tmp_path / "efidisk0.fd"),
                 serial_log=uefi_artifacts / "prepared-fresh-vars-virtio.log", qga_socket=qga)
    pve.start()
    try:
        state = pve.wait_boot(900)
        assert state == "multi-user", f"{state}; see {pve.serial_log}"
        assert pve.wait_ssh_banner(180), f"no SSH over the new NIC; see {pve.serial_log}"
        out = ssh_ok(pve.ssh_port, key, ["sh", "-c", "ip -o -4 addr show; efibootmgr; readlink -f /sys/block/sda/device"])
        text = out.stdout.decode()
        assert "10.0.2.15" in text and "virtio" in text, text
        reply = qga_ping(qga, timeout=180)
        assert reply == {"return": {}}, f"guest agent did not answer: {reply}"
    finally:
        pve.kill()
