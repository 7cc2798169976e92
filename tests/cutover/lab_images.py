"""The two guests of the cutover's booting lab, derived from the BIOS lab's cached image
(tests/lab/labimage.py: the VMware-shaped Debian 12 guest, vmw_pvscsi in its initramfs, no virtio):

- unprepared: that image as it is (``vmware-guest.vmdk`` of the lab cache, used read-only);
- prepared: a copy booted on VMware-shaped hardware, ``guestprep prepare --apply`` over SSH,
  powered off cleanly. Cached beside the lab image under a key of the lab recipe and this
  recipe (not of guestprep's sources: the BIOS lab proves the current prepare on every run; this
  lab proves the cutover; meta.json names the commit that prepared it), built by
  one process at a time (tests/support/cachelock.py). First build: one TCG boot plus prepare,
  ~8-10 minutes on the 2-core machine; afterwards free.

The UEFI guest (``prepared_uefi``): the UEFI lab's cached VMware-shaped image (tests/lab_uefi/
uefiimage.py: GPT + ESP, boots only through its NVRAM entry) booted on VMware-shaped UEFI hardware
with its own NVRAM, ``guestprep prepare --apply`` (the removable-media fallback loader among the
rest), powered off; cached the same way. The UEFI lab prepares the same guest inside its test and
keeps nothing (tests/lab_uefi is not this lab's to change; see the report's proposal), so a fresh
machine pays this once: one TCG boot plus prepare.

Each cache entry keeps the guest's SSH key (``id_ed25519``) and the host key prepare recorded
(``known_hosts``): the lab logs in to the booted copy with them (``host_key_line``).

Run directly to warm the cache:  python tests/cutover/lab_images.py
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

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "lab"))
sys.path.insert(0, str(REPO / "tests" / "lab_uefi"))
sys.path.insert(0, str(REPO))

import labimage  # noqa: E402
import uefiimage  # noqa: E402
from uefi_vm import UefiVM  # noqa: E402
from qemu_vm import LAB_MAC, LabVM, ssh  # noqa: E402

from tests.support.cachelock import exclusive, used  # noqa: E402

GUESTPREP = str(Path(sys.executable).parent / "guestprep")
BOOT_TIMEOUT = 600
LAB_ADDRESS = labimage.GUEST_ADDR.split("/")[0]   # 10.0.2.15: what the guest configures on its NIC
LAB_DISK_BYTES = 3 << 30                          # labimage.DISK_SIZE


def log(msg: str) -> None:
    print(f"[cutover-lab {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _derived_hash(base: str, prepare) -> str:
    """A prepared image's cache key: its base image's recipe and the source of the prepare step."""
    import inspect

    h = hashlib.sha256(base.encode())
    h.update(inspect.getsource(prepare).encode())
    return h.hexdigest()[:16]


@functools.cache
def recipe_hash() -> str:
    return _derived_hash(labimage.recipe_hash(), _prepare)


def unprepared(artifacts: Path) -> Path:
    """The BIOS lab's VMware-shaped disk, never prepared (read-only: copy before writing)."""
    return labimage.build(artifacts) / "vmware-guest.vmdk"


def prepared(artifacts: Path) -> Path:
    """Cached ``prepared.vmdk``: the same guest after ``guestprep prepare --apply``, powered off."""
    base = labimage.build(artifacts)
    return _cached(f"lab-cutover-prepared-{recipe_hash()}", "the prepared lab guest",
                   lambda work: _prepare(base, work, artifacts))


def _cached(name: str, what: str, build) -> Path:
    """``prepared.vmdk`` of cache entry ``name``, built once by ``build(work_dir) -> meta`` under the
    entry's lock; a build that fails leaves nothing (its work directory is removed)."""
    final = labimage.CACHE_ROOT / name
    if (final / "meta.json").is_file():
        return used(final, log) / "prepared.vmdk"
    with exclusive(labimage.CACHE_ROOT / f"{final.name}.lock", f"{what} {final.name}", log):
        if not (final / "meta.json").is_file():
            work = labimage.CACHE_ROOT / f"{final.name}.building-{os.getpid()}"
            shutil.rmtree(work, ignore_errors=True)
            work.mkdir(parents=True)
            try:
                meta = build(work)
                (work / "meta.json").write_text(json.dumps(meta, indent=2))
                work.rename(final)
            finally:
                shutil.rmtree(work, ignore_errors=True)
    return used(final, log) / "prepared.vmdk"


def _prepare(base: Path, work: Path, artifacts: Path) -> dict:
    t0 = time.monotonic()
    vmdk = work / "prepared.vmdk"
    subprocess.run(["cp", "--sparse=always", str(base / "vmware-guest.vmdk"), str(vmdk)], check=True)
    key = work / "id_ed25519"
    shutil.copy(base / "id_ed25519", key)
    key.chmod(0o600)
    vm = LabVM(vmdk, "vmdk", "vmware", artifacts / "cutover-prepare-vmware-boot.log", mac=LAB_MAC).start()
    try:
        state = vm.wait_boot(BOOT_TIMEOUT)
        if state != "multi-user" or not vm.wait_ssh_banner(240):
            raise RuntimeError(f"the VMware-shaped lab guest did not come up ({state}); see {vm.serial_log}")
        fleet = work / "fleet.yaml"
        fleet.write_text("guests:\n  - name: labguest\n    address: 127.0.0.1\n"
                         f"    port: {vm.ssh_port}\n    user: root\n    key_file: {key}\n    agent: false\n    os: linux\n")
        log("guestprep prepare --apply (minutes under TCG)")
        res = subprocess.run([GUESTPREP, "prepare", "-i", str(fleet), "--known-hosts", str(work / "known_hosts"),
                              "--accept-new-host-keys", "--apply", "--json"], capture_output=True, timeout=3600)
        (artifacts / "cutover-prepare-apply.json").write_bytes(res.stdout)
        if res.returncode != 0:
            raise RuntimeError(f"prepare --apply exited {res.returncode}: {res.stderr.decode(errors='replace')[-2000:]}")
        doc = json.loads(res.stdout)
        g = doc["guests"][0]
        bad = [o["operation"] for o in g["ops"] if o["error"] or (o["plan"]["changes"] and o["verified"] is not True)]
        if g["error"] or bad:
            raise RuntimeError(f"prepare --apply did not verify: {g['error'] or bad}")
        ssh(vm.ssh_port, key, ["systemctl", "poweroff"], timeout=60)
        if not vm.wait_exit(300):
            raise RuntimeError("the prepared lab guest did not power off")
    finally:
        vm.kill()
        fleet_file = work / "fleet.yaml"
        fleet_file.unlink(missing_ok=True)
    ops = [o["operation"] for o in g["ops"] if o["plan"]["changes"]]
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    return {"prepared_by": "guestprep prepare --apply", "guestprep_commit": commit, "operations_applied": ops, "mac": LAB_MAC,
            "build_seconds": round(time.monotonic() - t0)}


@functools.cache
def uefi_recipe_hash() -> str:
    return _derived_hash(uefiimage.recipe_hash(), _prepare_uefi)


def prepared_uefi(artifacts: Path) -> Path:
    """Cached ``prepared.vmdk`` of the UEFI lab guest after ``guestprep prepare --apply``, powered off."""
    base = uefiimage.build(artifacts)
    return _cached(f"lab-cutover-uefi-prepared-{uefi_recipe_hash()}", "the prepared UEFI lab guest",
                   lambda work: _prepare_uefi(base, work, artifacts))


def _prepare_uefi(base: Path, work: Path, artifacts: Path) -> dict:
    t0 = time.monotonic()
    vmdk = work / "prepared.vmdk"
    subprocess.run(["cp", "--sparse=always", str(base / "vmware-guest.vmdk"), str(vmdk)], check=True)
    nvram = work / "vmware-vars.fd"          # the VM's own NVRAM on VMware: used here, never taken along
    shutil.copyfile(base / "vmware-vars.fd", nvram)
    key = work / "id_ed25519"
    shutil.copy(base / "id_ed25519", key)
    key.chmod(0o600)
    vm = UefiVM(disk=vmdk, disk_format="vmdk", shape="vmware", vars_file=nvram, mac=LAB_MAC,
                serial_log=artifacts / "cutover-prepare-uefi-vmware-boot.log").start()
    fleet = work / "fleet.yaml"
    try:
        state = vm.wait_boot(900)
        if state != "multi-user" or not vm.wait_ssh_banner(240):
            raise RuntimeError(f"the VMware-shaped UEFI lab guest did not come up ({state}); see {vm.serial_log}")
        fleet.write_text("guests:\n  - name: labguest\n    address: 127.0.0.1\n"
                         f"    port: {vm.ssh_port}\n    user: root\n    key_file: {key}\n    agent: false\n    os: linux\n")
        log("guestprep prepare --apply of the UEFI guest (minutes under TCG)")
        res = subprocess.run([GUESTPREP, "prepare", "-i", str(fleet), "--known-hosts", str(work / "known_hosts"),
                              "--accept-new-host-keys", "--apply", "--json"], capture_output=True, timeout=3600)
        (artifacts / "cutover-prepare-uefi-apply.json").write_bytes(res.stdout)
        if res.returncode != 0:
            raise RuntimeError(f"prepare --apply exited {res.returncode}: {res.stderr.decode(errors='replace')[-2000:]}")
        g = json.loads(res.stdout)["guests"][0]
        bad = [o["operation"] for o in g["ops"] if o["error"] or (o["plan"]["changes"] and o["verified"] is not True)]
        if g["error"] or bad:
            raise RuntimeError(f"prepare --apply did not verify: {g['error'] or bad}")
        ops = [o["operation"] for o in g["ops"] if o["plan"]["changes"]]
        if "linux.efi_fallback" not in ops:   # what lets a fresh efidisk0 find the loader
            raise RuntimeError(f"prepare did not install the EFI fallback loader (applied: {ops})")
        ssh(vm.ssh_port, key, ["sync"], timeout=60)
        ssh(vm.ssh_port, key, ["systemctl", "poweroff"], timeout=60)
        if not vm.wait_exit(300):
            raise RuntimeError("the prepared UEFI lab guest did not power off")
    finally:
        vm.kill()
        fleet.unlink(missing_ok=True)
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    return {"prepared_by": "guestprep prepare --apply", "guestprep_commit": commit, "operations_applied": ops,
            "mac": LAB_MAC, "uefi_image": base.name, "build_seconds": round(time.monotonic() - t0)}


def host_key_line(image: Path, host: str, port: int) -> str:
    """A known_hosts line for the cached guest of ``image`` reached at host:port: the key prepare recorded."""
    lines = [ln.split() for ln in (image.parent / "known_hosts").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    if not lines:
        raise RuntimeError(f"no host key recorded in {image.parent / 'known_hosts'}")
    return "".join(f"[{host}]:{port} {' '.join(f[1:3])}\n" for f in lines)


recipe_hash()  # fixed at import time, while the sources match the loaded code
uefi_recipe_hash()

if __name__ == "__main__":
    art = REPO / "tests" / "artifacts" / "cutover-lab"
    art.mkdir(parents=True, exist_ok=True)
    print(prepared(art))
    print(prepared_uefi(art))
