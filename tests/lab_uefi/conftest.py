"""The UEFI lab: the VMware-shaped UEFI Debian 12 guest (derived from the BIOS lab's cached image)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import uefiimage  # noqa: E402
from uefi_vm import OVMF_CODE, OVMF_VARS  # noqa: E402

ARTIFACTS = HERE.parent / "artifacts" / "lab_uefi"


@pytest.fixture(scope="session")
def uefi_artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def uefi_image(uefi_artifacts) -> Path:
    """Cached dir with vmware-guest.vmdk, vmware-vars.fd (its NVRAM), id_ed25519, meta.json."""
    missing = [t for t in ("qemu-system-x86_64", "qemu-img", "debootstrap", "sfdisk", "partx", "mcopy", "mkfs.vfat")
               if not shutil.which(t)]
    missing += [str(p) for p in (OVMF_CODE, OVMF_VARS) if not p.is_file()]
    if missing:
        pytest.fail(f"UEFI lab tools missing: {', '.join(missing)} (make test installs them as root)")
    if not (uefiimage.cache_dir() / "meta.json").is_file() and os.geteuid() != 0:
        pytest.skip("building the UEFI lab image needs root (loop mount, chroot); CI runs as root")
    return uefiimage.build(uefi_artifacts)
