"""The QEMU lab: a VMware-shaped Debian 12 guest (cached image) and its serial logs."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

LAB_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(LAB_DIR))

import labimage  # noqa: E402

ARTIFACTS = LAB_DIR.parent / "artifacts" / "lab"


@pytest.fixture(scope="session")
def lab_artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def lab_image(lab_artifacts) -> Path:
    """The cached VMware-shaped guest (vmware-guest.vmdk, id_ed25519, meta.json); built on first use."""
    missing = [t for t in ("qemu-system-x86_64", "qemu-img", "debootstrap", "sfdisk", "partx") if not shutil.which(t)]
    if missing:
        pytest.fail(f"lab tools missing: {', '.join(missing)} (make test installs them as root)")
    if not (labimage.cache_dir() / "meta.json").is_file() and os.geteuid() != 0:
        pytest.skip("building the lab image needs root (loop devices, mount, chroot); CI runs as root")
    return labimage.build(lab_artifacts)
