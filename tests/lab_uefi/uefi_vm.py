"""UEFI lab guests: the BIOS lab's LabVM on q35 + OVMF (pflash code + a per-VM vars file).

VMware-shaped: SATA (q35 AHCI; Debian's OVMF has no PVSCSI/LSI driver), vmxnet3 at slot
0x10, VMware SMBIOS strings and no hypervisor CPUID bit. Proxmox-shaped: virtio-scsi,
virtio-net at slot 0x12, optional guest-agent channel, exactly as the BIOS lab.
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lab"))
from qemu_vm import QEMU, VMWARE_SMBIOS, LabVM  # noqa: E402

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")

# What OVMF prints on the serial console when it found nothing to boot from the disk.
FIRMWARE_GAVE_UP_RE = re.compile(r"Shell> |UEFI Interactive Shell|Start PXE over IPv4|No bootable (option|device)|"
                                 r"BdsDxe: No bootable option", re.I)
# Anything past the firmware: the bootloader or the kernel ran.
REACHED_OS_RE = re.compile(r"Welcome to GRUB|Booting `|Linux version \d|Loading Linux|EFI stub:|Reached target", re.I)


@dataclass
class UefiVM(LabVM):
    vars_file: Path | None = None

    def argv(self) -> list[str]:
        if self.vars_file is None:
            raise ValueError("a UEFI VM needs its own vars file (a copy of OVMF_VARS_4M.fd)")
        argv = super().argv()
        # same devices, but on q35 with OVMF; the VMware-shaped disk moves from PVSCSI to SATA
        argv[argv.index("-machine") + 1] = "q35"
        argv[1:1] = ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
                     "-drive", f"if=pflash,format=raw,unit=1,file={self.vars_file}"]
        if self.shape == "vmware":
            i = argv.index("pvscsi,id=scsi0")
            argv[i] = "ahci,id=ahci0"
            j = argv.index("scsi-hd,drive=d0,bus=scsi0.0")
            argv[j] = "ide-hd,drive=d0,bus=ahci0.0"
        assert argv[0] == QEMU and all(s in argv for s in VMWARE_SMBIOS[1::2]) == (self.shape == "vmware")
        return argv

    def wait_firmware_verdict(self, timeout: float) -> str:
        """'reached-os' when GRUB or the kernel ran, 'firmware-gave-up', 'exited' or 'timeout'."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.console()
            if REACHED_OS_RE.search(log):
                return "reached-os"
            if FIRMWARE_GAVE_UP_RE.search(log):
                return "firmware-gave-up"
            if not self.running():
                return "exited"
            time.sleep(1)
        return "timeout"
