"""linux.efi_fallback: a removable-media fallback loader (\\EFI\\BOOT\\BOOTX64.EFI) on the ESP.

A fresh EFI vars store (Proxmox's new efidisk0) has no NVRAM entry for the guest, so OVMF
only tries \\EFI\\BOOT\\BOOTX64.EFI. Installed the distribution's way where it can be:

* Debian/Ubuntu with grub-install and GRUB's x86_64-efi modules: ``grub-install
  --force-extra-removable --no-nvram`` (Debian's own option for firmware that forgets NVRAM;
  it refreshes \\EFI\\<vendor> and \\EFI\\BOOT together, so they stay identical, and leaves
  the NVRAM alone);
* otherwise a verified copy of the active loader set from \\EFI\\<vendor>: shim as
  BOOTX64.EFI with its second stage (grubx64.efi, grub.efi on SUSE) and MOK manager beside
  it, or GRUB itself, plus the vendor's grub.cfg. Each copy checks the source still has the
  planned SHA-256, lands under a temporary name, is compared byte for byte and renamed.

Every file written is backed up first (or journaled as absent), so rollback restores the
ESP exactly. GRUB's own modules under /boot/grub/x86_64-efi, which grub-install refreshes
from the installed package, are not backed up.
"""

from __future__ import annotations

from typing import Any

from guestprep.checks import registry as checks
from guestprep.errors import OperationError
from guestprep.facts.efi import (
    FALLBACK_PATH, MOK_NAMES, SECOND_STAGE, SHIM_NAMES, EfiFacts, EfiFile, basename, parent,
)
from guestprep.facts.linux_model import LinuxFacts
from guestprep.models import Plan, Status
from guestprep.operations.base import operation
from guestprep.operations.linux import changes as C
from guestprep.operations.linux.operation import LinuxOperation

VENDOR_DIRS = {
    "debian": ("debian", "ubuntu"),
    "rhel": ("redhat", "centos", "rocky", "almalinux", "fedora", "ol"),
    "suse": ("opensuse", "sles", "sle"),
    "arch": ("arch", "grub", "endeavouros", "manjaro"),
}
GRUB_INSTALL_VENDORS = ("debian", "ubuntu")
MIB = 1024 * 1024
# Fixed script, parameters as data: SRC DST SHA256 ("-" when the guest had no sha256sum).
COPY_SCRIPT = (
    'set -e; src=$1; dst=$2; want=$3; '
    'if [ "$want" != - ]; then got=$(sha256sum "$src" | cut -d" " -f1); '
    '[ "$got" = "$want" ] || { echo "$src changed since the plan (sha256 $got)" >&2; exit 1; }; fi; '
    'mkdir -p "${dst%/*}"; cp "$src" "$dst.guestprep-new"; '
    'cmp "$src" "$dst.guestprep-new" || { rm -f "$dst.guestprep-new"; echo "copy of $src differs" >&2; exit 1; }; '
    'mv -f "$dst.guestprep-new" "$dst"; sync'
)


def esp_path(efi: EfiFacts, path: str) -> str:
    """\\EFI\\x\\y.efi -> /boot/efi/EFI/x/y.efi (the guest path under the ESP mount)."""
    return efi.esp_mount.rstrip("/") + path.replace("\\", "/")


def stored(efi: EfiFacts, path: str) -> str:
    """The guest path of ``path``, in the case the ESP already stores it (FAT ignores case; backups do not)."""
    f = efi.file(path)
    return esp_path(efi, f.path if f else path)


def choose_source(facts: LinuxFacts, efi: EfiFacts) -> tuple[str, EfiFile]:
    """(vendor directory, the loader to install as BOOTX64.EFI)."""
    active = efi.active_loader()
    if active:
        vendor = parent(active)
    else:
        known = VENDOR_DIRS.get(facts.family, ())
        dirs = sorted({parent(f.path) for f in efi.loaders() if basename(parent(f.path)).lower() in known})
        if not dirs:
            raise OperationError("cannot tell which loader the guest boots: the NVRAM entries are unreadable and "
                                 f"the ESP has no \\EFI\\<{'|'.join(known) or 'distribution'}> directory; "
                                 "install \\EFI\\BOOT\\BOOTX64.EFI by hand (nothing was changed)")
        vendor = dirs[0]
    in_dir = {basename(f.path).lower(): f for f in efi.loaders() if parent(f.path).lower() == vendor.lower()}
    shim = next((in_dir[n] for n in SHIM_NAMES if n in in_dir), None)
    second = next((in_dir[n] for n in SECOND_STAGE if n in in_dir), None)
    if efi.secure_boot and shim is None:
        raise OperationError(f"Secure Boot is on and {vendor} has no shim: install the distribution's shim package "
                             "first (nothing was changed)")
    use_shim = shim is not None and (efi.secure_boot or (active and basename(active).lower() in SHIM_NAMES))
    loader = shim if use_shim else (efi.file(active) if active else second)
    if loader is None:
        raise OperationError(f"no loader found in {vendor} (nothing was changed)")
    return vendor, loader


def copy_pairs(efi: EfiFacts, vendor: str, loader: EfiFile) -> list[tuple[EfiFile, str]]:
    pairs = [(loader, FALLBACK_PATH)]
    names = [*SECOND_STAGE, *MOK_NAMES, "grub.cfg"] if basename(loader.path).lower() in SHIM_NAMES else ["grub.cfg"]
    for f in efi.files or []:
        if parent(f.path).lower() == vendor.lower() and basename(f.path).lower() in names:
            pairs.append((f, "\\EFI\\BOOT\\" + basename(f.path)))
    return pairs


@operation
class EfiFallback(LinuxOperation):
    id = "linux.efi_fallback"
    order = 70  # after the other Linux operations: it only touches the ESP
    title = "UEFI fallback loader \\EFI\\BOOT\\BOOTX64.EFI (boots from a fresh EFI vars store)"
    fixes = ("LNX-EFI-FALLBACK", "LNX-EFI-FALLBACK-STALE", "LNX-EFI-SHIM")

    def plan(self, facts: LinuxFacts, guest: str, options: dict[str, Any]) -> Plan:
        plan = Plan(self.id, guest, verify="LNX-EFI-FALLBACK")
        if facts.boot_mode != "uefi":
            plan.reason = "guest boots via BIOS: no EFI fallback needed"
            return plan
        efi = facts.efi
        if efi is None:
            raise OperationError("the collector reported no ESP (an older collect.sh?): re-run with this version")
        if efi.files is None or not efi.esp_mount:
            raise OperationError(f"cannot read the ESP ({efi.unknown.get('esp', 'not mounted')}): mount it "
                                 "(see /etc/fstab) and re-run; nothing was changed")
        failing = [f for cid in self.fixes for f in checks.get(cid).evaluate(facts, guest) if f.status is Status.FAIL]
        if not failing:
            plan.reason = f"{FALLBACK_PATH} present and current"
            return plan
        vendor, loader = choose_source(facts, efi)
        root = options.get("root", "")
        vendor_name = basename(vendor)
        pairs = copy_pairs(efi, vendor, loader)
        need = sum((src.size or 0) for src, dst in pairs if not efi.file(dst)) + MIB
        if efi.esp_free_bytes is not None and efi.esp_free_bytes < need:
            raise OperationError(f"the ESP ({efi.esp_mount}) has {efi.esp_free_bytes // 1024} KiB free; the fallback "
                                 f"needs {need // 1024} KiB (nothing was changed)")
        use_grub_install = (facts.family == "debian" and vendor_name.lower() in GRUB_INSTALL_VENDORS
                            and efi.grub_install and efi.grub_efi_modules
                            and (not efi.secure_boot or efi.grub_efi_signed))
        if use_grub_install:
            touched = sorted({stored(efi, p) for p in (
                FALLBACK_PATH, *(f"\\EFI\\BOOT\\{n}" for n in ("grubx64.efi", "mmx64.efi", "fbx64.efi", "grub.cfg")),
                *(f"{vendor}\\{n}" for n in ("grubx64.efi", "shimx64.efi", "mmx64.efi", "fbx64.efi", "grub.cfg",
                                             "BOOTX64.CSV")))})
            argv = ["grub-install", "--target=x86_64-efi", f"--efi-directory={root}{efi.esp_mount}",
                    f"--bootloader-id={vendor_name}", "--force-extra-removable", "--no-nvram"]
            if efi.secure_boot:
                argv.append("--uefi-secure-boot")
            plan.changes.append(C.run(argv, backups=touched))
            plan.reason = (f"install GRUB's removable-media fallback the Debian way ({vendor} and \\EFI\\BOOT "
                           "refreshed together)")
            plan.warnings.append("to keep the fallback fresh on GRUB updates, set the debconf question "
                                 "grub2/force_efi_extra_removable to true (dpkg-reconfigure grub-efi-amd64)")
        else:
            for src, dst in pairs:
                dst_path = stored(efi, dst)
                plan.changes.append(C.run(["sh", "-c", COPY_SCRIPT, "guestprep-efi-copy", root + esp_path(efi, src.path),
                                           root + dst_path, src.sha256 or "-"], backups=[dst_path]))
            plan.reason = f"copy {loader.path} (and its companions) to {FALLBACK_PATH}, verified byte for byte"
        plan.warnings += [f"{f.check_id}: {f.message}" for f in failing if f.severity.value == "warning"]
        return plan
