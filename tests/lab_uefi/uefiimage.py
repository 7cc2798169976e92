"""Derive the lab's VMware-shaped *UEFI* Debian 12 guest from the BIOS lab's cached image.

No second debootstrap: the BIOS lab's root filesystem (tests/lab/labimage.py) is copied
byte for byte into partition 1 of a new GPT disk (same filesystem UUID; fstab keeps
/dev/sda1), and partition 2 becomes an ESP filled with mtools (this host cannot mount vfat).

Stage 1 (root, host): GPT + ESP; in a chroot of the root filesystem: grub-efi-amd64-bin and
efibootmgr, GRUB's x86_64-efi modules, a GRUB EFI image built with grub-mkimage (grub-install
refuses a non-FAT --efi-directory), fstab mounts the ESP on /boot/efi, the ifupdown config
names the vmxnet3 NIC by its q35 slot, a small initramfs with SATA and virtio drivers (the BIOS image's host-only one
knows pvscsi, not the SATA controller a UEFI VMware-shaped guest sits on here).
The loader goes to \\EFI\\debian\\grubx64.efi, plus a bootstrap copy at \\EFI\\BOOT\\BOOTX64.EFI
so that the very first boot (empty NVRAM) finds something.
The initramfs is small (SATA, ext4 and virtio drivers only, see INITRAMFS_DRIVERS): the BIOS
lab proves the host-only/virtio part; rebuilding or listing a big image under TCG here would
only add minutes to every UEFI lab run.

Stage 2 (QEMU/TCG, OVMF, q35, SATA, vmxnet3, VMware SMBIOS): inside the guest, efibootmgr
creates the NVRAM entry for \\EFI\\debian\\grubx64.efi, the bootstrap \\EFI\\BOOT is removed
(so, like many VMware UEFI guests, it boots only through NVRAM). The vars file is kept beside the disk:
it is the VM's VMware ``.nvram``, reused across VMware-shaped boots and never taken along.

Run directly to warm the cache:  python tests/lab_uefi/uefiimage.py
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

LAB_DIR = Path(__file__).resolve().parents[1] / "lab"
sys.path.insert(0, str(LAB_DIR))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import labimage  # noqa: E402  (the BIOS lab's builder: cache root, run/chroot helpers)
from labimage import chroot, log, run  # noqa: E402
from tests.support.cachelock import exclusive, used  # noqa: E402
from qemu_vm import ssh  # noqa: E402
from uefi_vm import OVMF_VARS, UefiVM  # noqa: E402

MIB = 1024 * 1024
ESP_MIB = 64
ESP_VOLID = "4C414245"               # FAT volume id -> UUID 4C41-4245 in fstab
Q35_VMWARE_NIC = "enp0s16"           # vmxnet3 at slot 0x10 on q35's root bus (no ACPI slot number)
Q35_PROXMOX_NIC = "enp0s18"          # virtio-net at slot 0x12 on q35
# Only these drivers in the initramfs: small enough for the collector's lsinitrd under TCG, and
# virtio already in, so the UEFI lab isolates the bootloader (the BIOS lab proves the initramfs).
INITRAMFS_DRIVERS = ["ahci", "libahci", "libata", "sd_mod", "scsi_mod", "ext4", "crc32c_generic",
                     "virtio_scsi", "virtio_blk", "virtio_pci"]
SHORT_ROOT_WAIT = labimage.ROOT_WAIT   # what stage 1 replaces in the BIOS image's grub config
LONG_ROOT_WAIT = "rd.retry=60 rd.timeout=300"
EFI_PACKAGES = ["grub-efi-amd64-bin", "efibootmgr", "dosfstools"]
GRUB_MODULES = ["part_gpt", "part_msdos", "fat", "ext2", "search_fs_uuid", "search", "normal", "configfile",
                "linux", "boot", "echo", "test", "serial", "terminal", "gzio", "efi_gop", "all_video", "loadenv"]
ESP_LINE = f"UUID={ESP_VOLID[:4]}-{ESP_VOLID[4:]} /boot/efi vfat umask=0077 0 0\n"


@functools.cache  # read once: an edit to this file during a run must not change the cache entry mid-run
def recipe_hash() -> str:
    import inspect

    h = hashlib.sha256(labimage.cache_dir().name.encode())  # derived from that exact BIOS image
    for func in (stage1, stage2):
        h.update(inspect.getsource(func).encode())
    h.update(json.dumps([ESP_MIB, ESP_VOLID, Q35_VMWARE_NIC, EFI_PACKAGES, GRUB_MODULES, ESP_LINE,
                         INITRAMFS_DRIVERS, LONG_ROOT_WAIT]).encode())
    return h.hexdigest()[:16]


def cache_dir() -> Path:
    return labimage.CACHE_ROOT / f"lab-uefi-{recipe_hash()}"


def partitions(raw: Path) -> list[dict]:
    return json.loads(run(["sfdisk", "-J", str(raw)]).stdout)["partitiontable"]["partitions"]


def esp_offset(raw: Path) -> int:
    esp = next(p for p in partitions(raw) if p["type"].upper() == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B")
    return esp["start"] * 512


def mtools_dir(raw: Path, path: str) -> str:
    """``mdir`` of a directory inside the disk's ESP ("" when it does not exist)."""
    res = subprocess.run(["mdir", "-b", "-i", f"{raw}@@{esp_offset(raw)}", f"::{path}"], capture_output=True,
                         env={**os.environ, "MTOOLS_SKIP_CHECK": "1"})
    return res.stdout.decode(errors="replace") if res.returncode == 0 else ""


def stage1(work: Path, bios_vmdk: Path) -> Path:
    bios_raw = work / "bios.raw"
    run(["qemu-img", "convert", "-f", "vmdk", "-O", "raw", str(bios_vmdk), str(bios_raw)])
    root = partitions(bios_raw)[0]
    esp_sectors = ESP_MIB * MIB // 512
    esp_start = root["start"] + root["size"]
    total = (esp_start + esp_sectors) * 512 + MIB  # room for the backup GPT
    raw = work / "disk.raw"
    run(["truncate", "-s", str(total), str(raw)])
    run(["sfdisk", "-q", str(raw)], input=(
        "label: gpt\n"
        f"start={root['start']}, size={root['size']}, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=root\n"
        f"start={esp_start}, size={esp_sectors}, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=esp\n").encode())
    # the BIOS guest's root filesystem, byte for byte, into partition 1
    run(["dd", f"if={bios_raw}", f"of={raw}", "bs=1M", f"skip={root['start'] * 512 // MIB}",
         f"seek={root['start'] * 512 // MIB}", f"count={root['size'] * 512 // MIB}", "conv=notrunc,sparse", "status=none"])
    bios_raw.unlink()
    mnt = work / "mnt"
    mnt.mkdir(exist_ok=True)
    mounted: list[Path] = []
    resolv = mnt / "etc/resolv.conf"
    try:
        run(["mount", "-o", f"loop,offset={root['start'] * 512}", str(raw), str(mnt)])
        mounted.append(mnt)
        for d in ("dev", "proc", "sys"):
            run(["mount", "--bind", f"/{d}", str(mnt / d)])
            mounted.append(mnt / d)
        guest_resolv = resolv.read_text()
        shutil.copyfile("/etc/resolv.conf", resolv)  # the chroot resolves through the host while building
        log("chroot: grub-efi-amd64-bin, efibootmgr")
        chroot(mnt, ["apt-get", "update", "-q"])
        chroot(mnt, ["apt-get", "install", "-y", "-q", "--no-install-recommends", *EFI_PACKAGES])
        resolv.write_text(guest_resolv)
        (mnt / "boot/efi").mkdir(exist_ok=True)
        # the BIOS lab shortens the initramfs' wait for the root disk so its negative control fails
        # fast; here the negative control stops in the firmware, and a starved TCG guest (2 shared
        # cores) can take longer than 40 s to load ahci: give it time
        for path in ("etc/default/grub", "boot/grub/grub.cfg"):
            f = mnt / path
            f.write_text(f.read_text().replace(SHORT_ROOT_WAIT, LONG_ROOT_WAIT))
        fstab = mnt / "etc/fstab"
        fstab.write_text(fstab.read_text() + ESP_LINE)
        ifaces = mnt / "etc/network/interfaces"
        ifaces.write_text(ifaces.read_text().replace(labimage.VMWARE_NIC, Q35_VMWARE_NIC))
        uuid = run(["blkid", "-s", "UUID", "-o", "value", "-p", "-O", str(root["start"] * 512), str(raw)]).stdout.decode().strip()
        if not uuid:
            raise RuntimeError("cannot read the root filesystem UUID")
        # what grub-install does on EFI: modules under /boot/grub, a core image that finds / by UUID
        shutil.copytree(mnt / "usr/lib/grub/x86_64-efi", mnt / "boot/grub/x86_64-efi", dirs_exist_ok=True)
        (mnt / "tmp/load.cfg").write_text(f"search.fs_uuid {uuid} root\nset prefix=($root)'/boot/grub'\n")
        chroot(mnt, ["grub-mkimage", "-O", "x86_64-efi", "-o", "/tmp/grubx64.efi", "-c", "/tmp/load.cfg",
                     "-p", "/boot/grub", *GRUB_MODULES])
        shutil.copyfile(mnt / "tmp/grubx64.efi", work / "grubx64.efi")
        for f in ("tmp/grubx64.efi", "tmp/load.cfg"):
            (mnt / f).unlink()
        kver = (mnt / "lib/modules").iterdir().__next__().name
        log("chroot: a small initramfs for SATA and VirtIO")
        chroot(mnt, ["dracut", "-f", "--no-hostonly", "--drivers", " ".join(INITRAMFS_DRIVERS), "--kver", kver])
        chroot(mnt, ["apt-get", "clean"])
        (work / "kver").write_text(kver)
    finally:
        if resolv.exists() and "10.0.2.3" not in resolv.read_text():
            resolv.write_text("nameserver 10.0.2.3\n")
        for m in reversed(mounted):
            subprocess.run(["umount", "-l", str(m)], capture_output=True)
    esp = work / "esp.img"
    run(["truncate", "-s", f"{ESP_MIB}M", str(esp)])
    run(["mkfs.vfat", "-F", "32", "-n", "ESP", "-i", ESP_VOLID, str(esp)])
    img = f"{esp}"
    run(["mmd", "-i", img, "::/EFI", "::/EFI/debian", "::/EFI/BOOT"])
    run(["mcopy", "-i", img, str(work / "grubx64.efi"), "::/EFI/debian/grubx64.efi"])
    run(["mcopy", "-i", img, str(work / "grubx64.efi"), "::/EFI/BOOT/BOOTX64.EFI"])  # first boot only
    run(["dd", f"if={esp}", f"of={raw}", "bs=1M", f"seek={esp_start * 512 // MIB}", "conv=notrunc", "status=none"])
    esp.unlink()
    return raw


def stage2(work: Path, raw: Path, artifacts: Path) -> dict:
    """First boot on VMware-shaped UEFI hardware: an NVRAM entry, and no fallback loader left."""
    key = work / "id_ed25519"
    vars_fd = work / "vmware-vars.fd"
    shutil.copyfile(OVMF_VARS, vars_fd)
    vm = UefiVM(disk=raw, disk_format="raw", shape="vmware", vars_file=vars_fd,
                serial_log=artifacts / "build-uefi-vmware-first-boot.log")
    vm.start()
    try:
        state = vm.wait_boot(900)  # a starved TCG guest on 2 shared cores
        if state != "multi-user" or not vm.wait_ssh_banner(120):
            raise RuntimeError(f"UEFI lab image first boot on VMware-shaped hardware: {state}; see {vm.serial_log}")

        def guest(argv: list[str], timeout: float = 300) -> str:
            res = ssh(vm.ssh_port, key, argv, timeout=timeout)
            if res.returncode != 0:
                raise RuntimeError(f"{' '.join(argv)} in the UEFI lab guest failed: "
                                   f"{res.stderr.decode(errors='replace')[-2000:]}")
            return res.stdout.decode(errors="replace")

        guest(["test", "-d", "/sys/firmware/efi"])
        virt = guest(["systemd-detect-virt"]).strip()
        if virt != "vmware":
            raise RuntimeError(f"guest believes it runs on {virt!r}, not vmware")
        guest(["findmnt", "/boot/efi"])
        guest(["ip", "-o", "link", "show", "dev", Q35_VMWARE_NIC])
        log("efibootmgr: NVRAM entry for \\EFI\\debian\\grubx64.efi; removing the bootstrap \\EFI\\BOOT")
        guest(["efibootmgr", "-q", "-c", "-d", "/dev/sda", "-p", "2", "-L", "debian", "-l", "\\EFI\\debian\\grubx64.efi"])
        guest(["rm", "-r", "/boot/efi/EFI/BOOT"])
        # The initramfs (built in the chroot) already carries virtio: the BIOS lab proves that part.
        kver = (work / "kver").read_text().strip()
        listing = guest(["lsinitrd", f"/boot/initrd.img-{kver}"])
        missing = [m for m in ("ahci", "virtio_scsi", "virtio_pci") if f"/{m}.ko" not in listing]
        if missing:
            raise RuntimeError(f"the lab initramfs lacks {missing}")
        entries = guest(["efibootmgr", "-v"])
        guest(["sync"])
        ssh(vm.ssh_port, key, ["systemctl", "poweroff"], timeout=60)
        if not vm.wait_exit(180):
            raise RuntimeError("UEFI lab guest did not power off")
    finally:
        vm.kill()
    if mtools_dir(raw, "/EFI/BOOT") or "debian" not in mtools_dir(raw, "/EFI").lower():
        raise RuntimeError("the ESP should hold \\EFI\\debian and no \\EFI\\BOOT after the first boot")
    return {"kver": kver, "nic": Q35_VMWARE_NIC, "virt": virt, "efibootmgr": entries}


def build(artifacts: Path) -> Path:
    """The cached image (built on first use), stamped as used; stale entries of older recipes pruned."""
    return used(_build(artifacts), log)


def _build(artifacts: Path) -> Path:
    final = cache_dir()
    if (final / "meta.json").is_file():
        return final
    if os.geteuid() != 0:
        raise PermissionError("building the UEFI lab image needs root (loop mount, chroot)")
    # the BIOS image: built here, or awaited when the BIOS lab (another worker) is building it
    bios = labimage.build(LAB_DIR.parent / "artifacts" / "lab")
    with exclusive(labimage.CACHE_ROOT / f"{final.name}.lock", f"the UEFI lab image {final.name}", log):
        if (final / "meta.json").is_file():  # built while we waited
            return final
        return _build_locked(final, bios, artifacts)


def booted_with_long_root_wait(serial_log: Path) -> bool:
    """Did the kernel on this serial console get LONG_ROOT_WAIT? (Stage 1 patches the BIOS
    image's command line by string: this catches a patch that silently matched nothing.)"""
    cmdlines = [line for line in serial_log.read_text(errors="replace").splitlines() if "Command line:" in line]
    return bool(cmdlines) and all(LONG_ROOT_WAIT in line and SHORT_ROOT_WAIT not in line for line in cmdlines)


def _build_locked(final: Path, bios: Path, artifacts: Path) -> Path:
    t0 = time.monotonic()
    # a finished stage 1 of an interrupted build is reused (the chroot part needs the network)
    done = sorted(labimage.CACHE_ROOT.glob(f"{final.name}.building-*/stage1.done"))
    if done:
        work = done[-1].parent
        raw = work / "disk.raw"
        log(f"reusing UEFI stage 1 from {work}")
    else:
        work = labimage.CACHE_ROOT / f"{final.name}.building-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        for f in ("id_ed25519", "id_ed25519.pub"):
            shutil.copy2(bios / f, work / f)
        raw = stage1(work, bios / "vmware-guest.vmdk")
        (work / "stage1.done").write_text("")
        log(f"UEFI stage 1 done in {time.monotonic() - t0:.0f}s")
    # stage 2 changes the disk: run it on a copy so a failed boot can be retried from stage 1
    booted = work / "disk-stage2.raw"
    run(["cp", "--sparse=always", str(raw), str(booted)])
    meta = stage2(work, booted, artifacts)
    first_boot = artifacts / "build-uefi-vmware-first-boot.log"
    if not booted_with_long_root_wait(first_boot):
        raise RuntimeError(f"the UEFI image did not boot with {LONG_ROOT_WAIT!r}: stage 1's replacement of "
                           f"{SHORT_ROOT_WAIT!r} in the grub config matched nothing; see {first_boot}")
    run(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", str(booted), str(work / "vmware-guest.vmdk")])
    for f in (raw, booted, work / "stage1.done"):
        f.unlink()
    shutil.rmtree(work / "mnt", ignore_errors=True)
    meta["build_seconds"] = round(time.monotonic() - t0)
    meta["bios_image"] = bios.name
    (work / "meta.json").write_text(json.dumps(meta, indent=2))
    try:
        work.rename(final)
    except OSError:
        shutil.rmtree(work, ignore_errors=True)
    log(f"UEFI lab image ready: {final} ({meta['build_seconds']}s)")
    return final


recipe_hash()  # fixed at import time, while the sources match the loaded code


if __name__ == "__main__":
    repo = Path(__file__).resolve().parents[2]
    print(build(repo / "tests" / "artifacts" / "lab_uefi"))
