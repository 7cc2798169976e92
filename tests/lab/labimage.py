"""Build the lab's VMware-shaped Debian 12 guest disk, cached outside the repo by recipe hash.

Stage 1 (root, loop device): MBR disk, ext4 root, debootstrap bookworm, kernel, dracut,
grub-pc in the MBR, openssh-server with a generated key, open-vm-tools, ifupdown config
bound to the vmxnet3 name (ens16), fstab on /dev/sda1, generic (non-host-only) initramfs.

Stage 2 (QEMU/TCG, VMware-shaped hardware): boot on pvscsi + vmxnet3 and let dracut
regenerate its host-only initramfs there, the way a RHEL/SUSE guest's image looks after
years on VMware: vmw_pvscsi inside, no virtio_scsi. Power off, convert to vmdk.

Run directly to warm the cache:  python tests/lab/labimage.py
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests.support, also when run directly
from qemu_vm import LabVM, ssh, ssh_ok  # noqa: E402

from tests.support.cachelock import exclusive, used  # noqa: E402

CACHE_ROOT = Path(os.environ.get("GUESTPREP_LAB_CACHE", "/var/tmp/guestprep-cache"))
MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"
DISK_SIZE = "3G"
VMWARE_NIC = "ens16"          # vmxnet3 at PCI slot 0x10
GUEST_ADDR = "10.0.2.15/24"   # QEMU user networking's guest address
INCLUDE = ["dracut", "openssh-server", "sudo", "ifupdown", "iproute2", "ca-certificates"]
CHROOT_PACKAGES = ["linux-image-amd64", "grub-pc", "open-vm-tools"]
# rd.retry/rd.timeout only shorten the initqueue wait so a failed boot reaches the
# emergency shell sooner; they change nothing else. 40 s was too short for a *good* boot under
# TCG on a loaded 2-core CI machine (udev coldplug ran until 32 s, vmw_pvscsi loaded at 63 s, the
# root wait had expired: the VMware-shaped guest itself went to emergency). 180 s leaves room;
# the negative control needs ~3 min then, in parallel with the VMware-side boot.
# (The UEFI lab lengthens exactly this string again: tests/lab_uefi/uefiimage.py.)
ROOT_WAIT = "rd.retry=60 rd.timeout=180"
KERNEL_CMDLINE = f"console=ttyS0,115200 {ROOT_WAIT}"
SUDO_USER = "labadmin"
SUDO_PASSWORD = "lab-sudo-pw-7"   # a throwaway lab secret: the guest only listens on 127.0.0.1

FILES = {
    "/etc/hostname": "labguest\n",
    "/etc/hosts": "127.0.0.1 localhost\n127.0.1.1 labguest\n",
    "/etc/fstab": "# classic VMware-era fstab: a kernel device name\n/dev/sda1 / ext4 errors=remount-ro 0 1\n",
    "/etc/network/interfaces": (
        "source /etc/network/interfaces.d/*\n\nauto lo\niface lo inet loopback\n\n"
        f"auto {VMWARE_NIC}\niface {VMWARE_NIC} inet static\n    address {GUEST_ADDR}\n    gateway 10.0.2.2\n"
    ),
    "/etc/resolv.conf": "nameserver 10.0.2.3\n",
    "/etc/dracut.conf.d/10-hostonly.conf": 'hostonly="yes"\n',
    # lab speed only: gzip -9 of every image takes minutes under TCG; the contents are the same
    "/etc/dracut.conf.d/05-lab-fast-compress.conf": 'compress="gzip -1 -n"\n',
    "/etc/default/grub": (
        "GRUB_DEFAULT=0\nGRUB_TIMEOUT=0\nGRUB_DISTRIBUTOR=Debian\nGRUB_CMDLINE_LINUX_DEFAULT=\"\"\n"
        f"GRUB_CMDLINE_LINUX=\"{KERNEL_CMDLINE}\"\nGRUB_TERMINAL=\"console serial\"\n"
        "GRUB_SERIAL_COMMAND=\"serial --speed=115200\"\n"
    ),
    "/etc/ssh/sshd_config.d/lab.conf": "PermitRootLogin prohibit-password\nUseDNS no\n",
    "/etc/apt/sources.list": f"deb {MIRROR} {SUITE} main\n",
}


@functools.cache  # read once: an edit to this file during a run must not change the cache entry mid-run
def recipe_hash() -> str:
    import inspect

    h = hashlib.sha256()
    for func in (stage1, stage2, Loop):  # what shapes the image, not the test plumbing
        h.update(inspect.getsource(func).encode())
    h.update(json.dumps([MIRROR, SUITE, INCLUDE, CHROOT_PACKAGES, FILES, KERNEL_CMDLINE, VMWARE_NIC, DISK_SIZE], sort_keys=True).encode())
    return h.hexdigest()[:16]


def cache_dir() -> Path:
    return CACHE_ROOT / f"lab-{recipe_hash()}"


def log(msg: str) -> None:
    print(f"[labimage {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    res = subprocess.run(argv, capture_output=True, **kw)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed (exit {res.returncode}):\n"
                           f"{res.stdout.decode(errors='replace')[-3000:]}\n{res.stderr.decode(errors='replace')[-3000:]}")
    return res


def chroot(root: Path, argv: list[str], **kw) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}
    return run(["chroot", str(root), *argv], env=env, **kw)


class Loop:
    """A loop device over the raw disk with a /dev node for partition 1 (no udev here)."""

    def __init__(self, image: Path):
        self.dev = run(["losetup", "-f", "--show", str(image)]).stdout.decode().strip()
        name = self.dev.rsplit("/", 1)[-1]
        run(["partx", "-a", self.dev])
        majmin = Path(f"/sys/block/{name}/{name}p1/dev").read_text().strip()
        self.part = f"{self.dev}p1"
        if not Path(self.part).exists():
            maj, mnr = majmin.split(":")
            run(["mknod", self.part, "b", maj, mnr])
            self.made_node = True
        else:
            self.made_node = False

    def close(self) -> None:
        subprocess.run(["partx", "-d", self.dev], capture_output=True)
        if self.made_node:
            Path(self.part).unlink(missing_ok=True)
        subprocess.run(["losetup", "-d", self.dev], capture_output=True)


def stage1(work: Path) -> Path:
    raw = work / "disk.raw"
    run(["truncate", "-s", DISK_SIZE, str(raw)])
    run(["sfdisk", "-q", str(raw)], input=b"label: dos\nstart=2048, type=83, bootable\n")
    mnt = work / "mnt"
    mnt.mkdir()
    loop = Loop(raw)
    mounted: list[Path] = []
    try:
        run(["mkfs.ext4", "-q", "-L", "labroot", loop.part])
        run(["mount", loop.part, str(mnt)])
        mounted.append(mnt)
        log("debootstrap (a minute or two)")
        run(["debootstrap", "--include=" + ",".join(INCLUDE), SUITE, str(mnt), MIRROR])
        for d in ("dev", "dev/pts", "proc", "sys"):
            target = mnt / d
            if d == "dev/pts":
                run(["mount", "-t", "devpts", "devpts", str(target)])
            else:
                run(["mount", "--bind", f"/{d}", str(target)])
            mounted.append(target)
        # build-time only: the kernel's postinst must not build a host-only image of *this* host
        (mnt / "etc/dracut.conf.d").mkdir(parents=True, exist_ok=True)
        (mnt / "etc/dracut.conf.d/99-lab-build.conf").write_text('hostonly="no"\n')
        for path, text in FILES.items():
            p = mnt / path.lstrip("/")
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
        log("kernel, grub-pc, open-vm-tools")
        chroot(mnt, ["apt-get", "update", "-q"])
        chroot(mnt, ["apt-get", "install", "-y", "-q", "--no-install-recommends", *CHROOT_PACKAGES])
        chroot(mnt, ["grub-install", "--target=i386-pc", loop.dev])
        chroot(mnt, ["update-grub"])
        # no udev here, so grub-mkconfig saw no /dev/disk/by-uuid and wrote the loop device:
        # put the filesystem UUID there, as grub-mkconfig does on a real install
        uuid = run(["blkid", "-s", "UUID", "-o", "value", loop.part]).stdout.decode().strip()
        cfg = mnt / "boot/grub/grub.cfg"
        cfg.write_text(cfg.read_text().replace(f"root={loop.part}", f"root=UUID={uuid}"))
        if loop.part in cfg.read_text():
            raise RuntimeError(f"grub.cfg still refers to {loop.part}")
        key = work / "id_ed25519"
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "guestprep-lab", "-f", str(key)])
        ssh_dir = mnt / "root/.ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        (ssh_dir / "authorized_keys").write_text((work / "id_ed25519.pub").read_text())
        os.chmod(ssh_dir / "authorized_keys", 0o600)
        # a non-root admin who must go through sudo with a password (on stdin)
        chroot(mnt, ["useradd", "-m", "-s", "/bin/bash", "-G", "sudo", SUDO_USER])
        chroot(mnt, ["chpasswd"], input=f"{SUDO_USER}:{SUDO_PASSWORD}\n".encode())
        user_ssh = mnt / f"home/{SUDO_USER}/.ssh"
        user_ssh.mkdir(mode=0o700)
        (user_ssh / "authorized_keys").write_text((work / "id_ed25519.pub").read_text())
        chroot(mnt, ["chown", "-R", f"{SUDO_USER}:{SUDO_USER}", f"/home/{SUDO_USER}/.ssh"])
        chroot(mnt, ["systemctl", "enable", "serial-getty@ttyS0.service"])
        (mnt / "etc/dracut.conf.d/99-lab-build.conf").unlink()
        kver = sorted(p.name for p in (mnt / "lib/modules").iterdir())[-1]
        chroot(mnt, ["dracut", "-f", "--no-hostonly", "--kver", kver])
        chroot(mnt, ["apt-get", "clean"])
        (work / "kver").write_text(kver)
    finally:
        for m in reversed(mounted):
            subprocess.run(["umount", "-l", str(m)], capture_output=True)
        loop.close()
    return raw


def stage2(work: Path, raw: Path, artifacts: Path) -> dict:
    """First boot on VMware-shaped hardware: regenerate the host-only initramfs there."""
    key = work / "id_ed25519"
    vm = LabVM(disk=raw, disk_format="raw", shape="vmware", serial_log=artifacts / "build-vmware-first-boot.log")
    vm.start()
    try:
        state = vm.wait_boot(300)
        if state != "multi-user" or not vm.wait_ssh_banner(120):
            raise RuntimeError(f"lab image first boot on VMware-shaped hardware: {state}; see {vm.serial_log}")
        virt = ssh_ok(vm.ssh_port, key, ["systemd-detect-virt"]).stdout.decode().strip()
        if virt != "vmware":
            raise RuntimeError(f"guest believes it runs on {virt!r}, not vmware: dracut would add virtio")
        log("regenerating the host-only initramfs on pvscsi")
        res = ssh(vm.ssh_port, key, ["dracut", "-f", "--regenerate-all"], timeout=900)
        if res.returncode != 0:
            raise RuntimeError(f"dracut --regenerate-all failed: {res.stderr.decode(errors='replace')[-2000:]}")
        kver = (work / "kver").read_text().strip()
        listing = ssh_ok(vm.ssh_port, key, ["lsinitrd", f"/boot/initrd.img-{kver}"]).stdout.decode()
        if "vmw_pvscsi" not in listing or "virtio_scsi" in listing:
            raise RuntimeError("host-only initramfs does not look VMware-only (vmw_pvscsi in, virtio_scsi out)")
        nic = ssh(vm.ssh_port, key, ["ip", "-o", "link", "show", "dev", VMWARE_NIC])
        if nic.returncode != 0:
            raise RuntimeError(f"vmxnet3 NIC is not called {VMWARE_NIC} in the guest")
        ssh(vm.ssh_port, key, ["systemctl", "poweroff"], timeout=60)
        if not vm.wait_exit(180):
            raise RuntimeError("lab guest did not power off")
    finally:
        vm.kill()
    return {"kver": kver, "nic": VMWARE_NIC, "virt": virt}


def build(artifacts: Path) -> Path:
    """The cached image (built on first use), stamped as used; stale entries of older recipes pruned."""
    return used(_build(artifacts), log)


def _build(artifacts: Path) -> Path:
    final = cache_dir()
    if (final / "meta.json").is_file():
        return final
    if os.geteuid() != 0:
        raise PermissionError("building the lab image needs root (loop devices, mount, chroot)")
    CACHE_ROOT.mkdir(parents=True, exist_ok=True)
    # parallel test workers (the BIOS and the UEFI lab) must not build the same image twice at once
    with exclusive(CACHE_ROOT / f"{final.name}.lock", f"the lab image {final.name}", log):
        if (final / "meta.json").is_file():  # built while we waited
            return final
        return _build_locked(final, artifacts)


def _build_locked(final: Path, artifacts: Path) -> Path:
    t0 = time.monotonic()
    # a finished stage 1 of an interrupted build is reused (it is the slow, network-bound part);
    # under the lock no other builder is using it
    done = sorted(CACHE_ROOT.glob(f"{final.name}.building-*/stage1.done"))
    if done:
        work = done[-1].parent
        raw = work / "disk.raw"
        log(f"reusing stage 1 from {work}")
    else:
        work = CACHE_ROOT / f"{final.name}.building-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        raw = stage1(work)
        (work / "stage1.done").write_text("")
        log(f"stage 1 done in {time.monotonic() - t0:.0f}s")
    meta = stage2(work, raw, artifacts)
    log("converting raw -> vmdk (the VMware-side disk)")
    run(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", str(raw), str(work / "vmware-guest.vmdk")])
    raw.unlink()
    shutil.rmtree(work / "mnt", ignore_errors=True)
    meta["build_seconds"] = round(time.monotonic() - t0)
    (work / "meta.json").write_text(json.dumps(meta, indent=2))
    try:
        work.rename(final)
    except OSError:  # another builder won the race: use theirs
        shutil.rmtree(work, ignore_errors=True)
    log(f"lab image ready: {final} ({meta['build_seconds']}s)")
    return final


recipe_hash()  # fixed at import time, while the sources match the loaded code


if __name__ == "__main__":
    root = Path(__file__).resolve().parents[2]
    print(build(root / "tests" / "artifacts" / "lab"))
