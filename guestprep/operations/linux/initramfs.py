"""linux.initramfs_virtio: VirtIO drivers in the initramfs of every installed kernel.

dracut (RHEL, SUSE, Debian with dracut): a drop-in with ``add_drivers+=``;
initramfs-tools (Debian, Ubuntu): lines in /etc/initramfs-tools/modules;
mkinitcpio (Arch): a MODULES drop-in (or the MODULES array of mkinitcpio.conf).
Only modules a kernel does not have built in; /boot must have room; each image is
rebuilt next to the old one, verified with the generator's list tool, backed up and
renamed into place, so no kernel is ever left without a working initramfs.
"""

from __future__ import annotations

import re
from typing import Any

from guestprep.errors import OperationError
from guestprep.facts.linux_model import Kernel, LinuxFacts
from guestprep.models import Plan
from guestprep.operations.base import operation
from guestprep.operations.linux import changes as C
from guestprep.operations.linux.operation import LinuxOperation
from guestprep.operations.linux import state as S

WANTED = ("virtio_scsi", "virtio_blk", "virtio_pci")
CONFIG_FOR = {"virtio_scsi": "CONFIG_SCSI_VIRTIO", "virtio_blk": "CONFIG_VIRTIO_BLK", "virtio_pci": "CONFIG_VIRTIO_PCI"}
MIB = 1024 * 1024
SUPPORTED = ("dracut", "initramfs-tools", "mkinitcpio")


def builtin(k: Kernel, module: str) -> bool:
    return module in k.builtin_modules or k.config_virtio.get(CONFIG_FOR[module]) == "y"


def missing_modules(k: Kernel) -> list[str]:
    """Modules this kernel needs in its initramfs and lacks (None image listing = unknown = rebuild)."""
    need = [m for m in WANTED if not builtin(k, m)]
    if k.initramfs_modules is None:
        return need
    return [m for m in need if m not in k.initramfs_modules]


def _config_change(gen: str, modules: list[str], st: dict[str, Any]):
    if gen == "dracut":
        new = ("# guestprep: VirtIO drivers for the first boot on Proxmox VE (host-only images omit them)\n"
               f'add_drivers+=" {" ".join(modules)} "\n')
        old = S.text(st, S.DRACUT_DROPIN)
        return None if old == new else C.write_file(S.DRACUT_DROPIN, new, old)
    if gen == "initramfs-tools":
        path = "/etc/initramfs-tools/modules"
        old = S.text(st, path)
        present = {l.split()[0] for l in (old or "").splitlines() if l.strip() and not l.lstrip().startswith("#")}
        add = [m for m in modules if m not in present]
        if not add:
            return None
        base = old or ""
        if base and not base.endswith("\n"):
            base += "\n"
        new = base + "# guestprep: VirtIO drivers for the first boot on Proxmox VE\n" + "".join(f"{m}\n" for m in add)
        return C.write_file(path, new, old)
    if gen == "mkinitcpio":
        if S.writable(st, "/etc/mkinitcpio.conf.d") is not None:
            new = f"# guestprep: VirtIO drivers for the first boot on Proxmox VE\nMODULES+=({' '.join(modules)})\n"
            old = S.text(st, S.MKINITCPIO_DROPIN)
            return None if old == new else C.write_file(S.MKINITCPIO_DROPIN, new, old)
        old = S.text(st, "/etc/mkinitcpio.conf")
        if old is None:
            raise OperationError("/etc/mkinitcpio.conf is missing and there is no /etc/mkinitcpio.conf.d")
        m = re.search(r"^MODULES=\(([^)]*)\)", old, re.M)
        if not m:
            raise OperationError("/etc/mkinitcpio.conf has no MODULES=(...) line to extend")
        cur = m.group(1).split()
        add = [x for x in modules if x not in cur]
        if not add:
            return None
        new = old[:m.start()] + f"MODULES=({' '.join(cur + add)})" + old[m.end():]
        return C.write_file("/etc/mkinitcpio.conf", new, old)
    raise OperationError(f"initramfs generator {gen!r} is not supported")


@operation
class InitramfsVirtio(LinuxOperation):
    id = "linux.initramfs_virtio"
    order = 40
    title = "VirtIO drivers in every kernel's initramfs"
    fixes = ("LNX-INITRAMFS-VIRTIO",)

    def plan(self, facts: LinuxFacts, guest: str, options: dict[str, Any]) -> Plan:
        plan = Plan(self.id, guest, verify="LNX-INITRAMFS-VIRTIO")
        if not facts.kernels:  # preflight's LNX-INITRAMFS-VIRTIO says "unknown" here: never "nothing to do"
            raise OperationError("cannot tell: " + facts.unknown.get("kernels", "no installed kernel found")
                                 + "; nothing planned (is /boot mounted? run the collector with sudo)")
        todo = [(k, missing_modules(k)) for k in facts.kernels]
        todo = [(k, miss) for k, miss in todo if miss]
        if not todo:
            plan.reason = "every installed kernel's initramfs already reaches a VirtIO root disk"
            return plan
        gen = facts.initramfs_generator
        if gen not in SUPPORTED:
            raise OperationError(f"initramfs generator {gen or 'unknown'!r} is not supported "
                                 f"(supported: {', '.join(SUPPORTED)}); add virtio_scsi/virtio_pci by hand")
        st = options.get("state") or {}
        no_image = [k.version for k, _ in todo if not k.initramfs]
        if no_image:
            raise OperationError(f"kernel(s) {', '.join(no_image)} have no initramfs image to rebuild")
        boot_dir = todo[0][0].initramfs.rsplit("/", 1)[0] or "/"
        if S.writable(st, boot_dir) is False:
            raise OperationError(f"{boot_dir} is read-only: remount it read-write to rebuild the initramfs "
                                 "(nothing was changed)")
        self._check_space(facts, [k for k, _ in todo], boot_dir)
        modules = sorted({m for k in facts.kernels for m in WANTED if not builtin(k, m)})
        cfg = _config_change(gen, modules, st)
        if cfg:
            plan.changes.append(cfg)
        for k, miss in todo:
            plan.changes.append(C.rebuild_initramfs(gen, k.version, k.initramfs, [m for m in WANTED if not builtin(k, m)]))
        plan.reason = (f"{len(todo)} kernel(s) lack {', '.join(sorted({m for _, ms in todo for m in ms}))} "
                       f"in the initramfs ({gen})")
        return plan

    def _check_space(self, facts: LinuxFacts, kernels: list[Kernel], boot_dir: str) -> None:
        sizes = [k.initramfs_size or 64 * MIB for k in kernels]
        boot = facts.mount(boot_dir) or facts.mount("/boot") or facts.mount("/")
        # one new image at a time sits next to the old one in /boot (+50% for the added drivers)
        need_boot = int(max(sizes) * 1.5) + 8 * MIB
        if boot and boot.free_bytes is not None and boot.free_bytes < need_boot:
            raise OperationError(f"{boot.path} has {boot.free_bytes // MIB} MiB free; rebuilding needs "
                                 f"{need_boot // MIB} MiB (free space first; nothing was changed)")
        var = facts.mount("/var") or facts.mount("/")
        need_var = sum(sizes) + 8 * MIB  # backups of every image under /var/lib/guestprep
        if var and var.free_bytes is not None and var.free_bytes < need_var + (need_boot if var is boot else 0):
            raise OperationError(f"{var.path} has {var.free_bytes // MIB} MiB free; the initramfs backups need "
                                 f"{need_var // MIB} MiB (nothing was changed)")
