"""linux.efi_fallback: plans for each distribution's ESP, then apply/verify/re-apply/rollback on a guest tree.

Plans come from the same layouts as the check fixtures (tests/efi/build_fixtures.py). The
apply tests run the real step scripts through the real local connector against a guest
tree under a root prefix; the ESP listing is produced by the collector's own esp_files()
function (cut out of collect.sh), so collector, parser, checks and operation meet for real.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from guestprep.checks import registry
from guestprep.errors import OperationError
from guestprep.facts import linux
from guestprep.models import Guest, Status, Transport
from guestprep.connectors import open_connector
from guestprep.operations.linux import journal
from guestprep.operations.linux.efi_fallback import EfiFallback
from tests.support.fixtures import linux_raw

import build_fixtures as BF

pytestmark = pytest.mark.unit
OP = EfiFallback()
COLLECT = Path(linux.__file__).resolve().parents[2] / "guest_scripts" / "linux" / "collect.sh"


def case_facts(name: str):
    base, id_patch, efi, _ = BF.linux_cases()[name]
    patch = {"id": id_patch, "efi": efi} if id_patch else {"efi": efi}
    return linux.parse(linux_raw(base, patch))


def argvs(plan):
    return [c.detail["argv"] for c in plan.changes]


def test_debian_without_fallback_uses_grub_install_force_extra_removable():
    plan = OP.plan(case_facts("debian12-shim-no-fallback"), "g", {})
    assert len(plan.changes) == 1
    argv = argvs(plan)[0]
    assert argv[:2] == ["grub-install", "--target=x86_64-efi"]
    assert {"--efi-directory=/boot/efi", "--bootloader-id=debian", "--force-extra-removable", "--no-nvram",
            "--uefi-secure-boot"} <= set(argv)
    backups = plan.changes[0].detail["backups"]
    assert "/boot/efi/EFI/BOOT/BOOTX64.EFI" in backups and "/boot/efi/EFI/debian/shimx64.efi" in backups
    assert plan.verify == "LNX-EFI-FALLBACK"


def test_rhel_without_boot_dir_copies_the_shim_set_verified():
    plan = OP.plan(case_facts("rhel9-boot-dir-removed"), "g", {})
    copies = {a[5]: a[4] for a in argvs(plan)}
    assert copies == {
        "/boot/efi/EFI/BOOT/BOOTX64.EFI": "/boot/efi/EFI/redhat/shimx64.efi",
        "/boot/efi/EFI/BOOT/grubx64.efi": "/boot/efi/EFI/redhat/grubx64.efi",
        "/boot/efi/EFI/BOOT/mmx64.efi": "/boot/efi/EFI/redhat/mmx64.efi",
        "/boot/efi/EFI/BOOT/grub.cfg": "/boot/efi/EFI/redhat/grub.cfg",
    }
    shim = next(a for a in argvs(plan) if a[5].endswith("BOOTX64.EFI"))
    assert shim[6] == BF.h("rhel-shim-15.8"), "the copy checks the planned source hash"
    assert all(c.detail["backups"] == [c.detail["argv"][5]] for c in plan.changes)


def test_sles_copies_shim_with_grub_efi_and_mokmanager():
    plan = OP.plan(case_facts("sles15-shim-no-fallback"), "g", {})
    dsts = sorted(a[5].rsplit("/", 1)[1] for a in argvs(plan))
    assert dsts == ["BOOTX64.EFI", "MokManager.efi", "grub.cfg", "grub.efi"]


def test_stale_ubuntu_fallback_is_replaced_from_the_active_shim():
    plan = OP.plan(case_facts("ubuntu2204-stale-shim-secure-boot-off"), "g", {})
    src = {a[5]: a[4] for a in argvs(plan)}
    assert src["/boot/efi/EFI/BOOT/BOOTX64.EFI"] == "/boot/efi/EFI/ubuntu/shimx64.efi"
    assert any("LNX-EFI-FALLBACK-STALE" in w for w in plan.warnings)


@pytest.mark.parametrize("name", ["debian12-force-extra-removable-passes", "rhel9-shim-x64-fallback-passes",
                                  "sles15-shim-fallback-passes", "debian12-bios-skipped"])
def test_converged_or_bios_guests_plan_nothing(name):
    plan = OP.plan(case_facts(name), "g", {})
    assert plan.empty and plan.reason


def test_unreadable_esp_and_full_esp_are_refused_with_a_reason():
    with pytest.raises(OperationError, match="older collect.sh"):
        OP.plan(case_facts("rhel9-older-collector-errors"), "g", {})
    f = case_facts("rhel9-boot-dir-removed")
    f.efi.esp_free_bytes = 4096
    with pytest.raises(OperationError, match="KiB free"):
        OP.plan(f, "g", {})


def test_secure_boot_without_shim_is_refused():
    f = case_facts("debian12-shim-no-fallback")
    f.efi.files = [x for x in f.efi.files if "shim" not in x.path]
    f.efi.grub_install = None
    with pytest.raises(OperationError, match="no shim"):
        OP.plan(f, "g", {})


def test_negative_control_a_guest_that_needs_no_fallback_is_not_converged_by_a_wrong_plan():
    """The plan is derived from failing checks: the RHEL layout with \\EFI\\BOOT passes and plans nothing,
    while the same layout without it plans changes (so the empty plans above are not vacuous)."""
    assert OP.plan(case_facts("rhel9-shim-x64-fallback-passes"), "g", {}).empty
    assert not OP.plan(case_facts("rhel9-boot-dir-removed"), "g", {}).empty


# --------------------------------------------------------------------------- apply on a guest tree


def esp_files_function() -> str:
    text = COLLECT.read_text()
    start = text.index("esp_files() {")
    end = text.index("\n}\n", start) + 3
    return "TAB=$(printf '\\t')\nhave() { command -v \"$1\" >/dev/null 2>&1; }\n" + text[start:end]


def listing(esp: Path) -> str:
    res = subprocess.run(["sh", "-c", esp_files_function() + '\nesp_files "$1"', "sh", str(esp)],
                         capture_output=True, check=True)
    return res.stdout.decode()


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture
def tree(tmp_path):
    """An SLES-like guest tree: shim + grub.efi under \\EFI\\sles, no \\EFI\\BOOT."""
    root = tmp_path / "guest"
    vendor = root / "boot/efi/EFI/sles"
    vendor.mkdir(parents=True)
    for name, size in (("shim.efi", 9000), ("grub.efi", 20000), ("MokManager.efi", 7000)):
        (vendor / name).write_bytes(os.urandom(size))
    (vendor / "grub.cfg").write_text("search --fs-uuid --set=root 1234\nconfigfile ($root)/boot/grub2/grub.cfg\n")
    (vendor / "boot.csv").write_text("shim.efi,sles-secureboot,,\n")
    return root


def tree_facts(root: Path, secure_boot: bool = True):
    ebm = BF.efibootmgr("0001", [("0001", "sles-secureboot", "\\EFI\\sles\\shim.efi")])
    efi = BF.efi_member({}, secure_boot, ebm)
    efi["files"] = listing(root / "boot/efi")
    return linux.parse(linux_raw("sles15-dracut-devnames", {"id": BF.uefi_id(secure_boot), "efi": efi}))


def failing(facts):
    return [f"{f.check_id}: {f.message}" for cid in OP.fixes for f in registry.get(cid).evaluate(facts, "t")
            if f.status is Status.FAIL]


def conn():
    return open_connector(Guest(name="local", address="localhost", transport=Transport.LOCAL))


def test_collector_lists_the_esp_with_sizes_and_hashes(tree):
    text = listing(tree / "boot/efi")
    lines = {l.split("\t")[2]: l.split("\t") for l in text.splitlines()}
    shim = tree / "boot/efi/EFI/sles/shim.efi"
    assert lines["EFI/sles/shim.efi"][:2] == [str(shim.stat().st_size), sha(shim)]
    assert lines["EFI/sles/grub.cfg"][1] == "-", "only .efi loaders are hashed"


@pytest.mark.integration
def test_apply_verify_reapply_and_rollback(tree):
    before = {p.relative_to(tree): sha(p) for p in (tree / "boot/efi").rglob("*") if p.is_file()}
    facts = tree_facts(tree)
    assert failing(facts), "negative control: the tree starts without a fallback"
    opts = {"root": str(tree), "run_id": "efi1", "guest": "t"}
    plan = OP.plan(facts, "t", opts)
    c = conn()
    try:
        applied = OP.apply(c, plan, opts)
        assert applied.ok
        boot = tree / "boot/efi/EFI/BOOT"
        assert sha(boot / "BOOTX64.EFI") == sha(tree / "boot/efi/EFI/sles/shim.efi")
        assert sha(boot / "grub.efi") == sha(tree / "boot/efi/EFI/sles/grub.efi")
        assert not list(boot.glob("*.guestprep-new"))
        after = tree_facts(tree)
        assert failing(after) == [], "verify: the checks the operation fixes now pass"
        assert OP.plan(after, "t", opts).empty, "a second plan changes nothing"
        entries = json.loads((tree / "var/lib/guestprep/journal.json").read_text())
        assert {e["path"] for e in entries if e["action"] == "backup"} == {
            "/boot/efi/EFI/BOOT/BOOTX64.EFI", "/boot/efi/EFI/BOOT/grub.efi", "/boot/efi/EFI/BOOT/MokManager.efi",
            "/boot/efi/EFI/BOOT/grub.cfg"}
        done = journal.rollback(c, {"root": str(tree), "run_id": "rb", "guest": "t"})
        assert done
    finally:
        c.close()
    now = {p.relative_to(tree): sha(p) for p in (tree / "boot/efi").rglob("*") if p.is_file()}
    assert now == before, "rollback leaves the ESP exactly as it was"


@pytest.mark.integration
def test_source_changed_since_the_plan_is_not_copied(tree):
    facts = tree_facts(tree)
    opts = {"root": str(tree), "run_id": "efi2", "guest": "t"}
    plan = OP.plan(facts, "t", opts)
    (tree / "boot/efi/EFI/sles/shim.efi").write_bytes(b"a newer shim")
    c = conn()
    try:
        with pytest.raises(OperationError, match="sh failed .* log: /var/lib/guestprep/log/efi2-sh.log"):
            OP.apply(c, plan, opts)
    finally:
        c.close()
    assert "changed since the plan" in (tree / "var/lib/guestprep/log/efi2-sh.log").read_text()
    assert not (tree / "boot/efi/EFI/BOOT/BOOTX64.EFI").exists()


FAKE_GRUB_INSTALL = """#!/bin/sh
# test stand-in for Debian's grub-install --force-extra-removable: rebuilds the vendor image
# and writes the same bytes to the removable path
for a in "$@"; do
    case $a in --efi-directory=*) dir=${a#*=} ;; --bootloader-id=*) id=${a#*=} ;; --force-extra-removable) extra=1 ;; esac
done
[ -n "${extra:-}" ] || { echo "expected --force-extra-removable" >&2; exit 2; }
mkdir -p "$dir/EFI/$id" "$dir/EFI/BOOT"
printf 'grub core image rebuilt %s\\n' "$id" >"$dir/EFI/$id/grubx64.efi"
cp "$dir/EFI/$id/grubx64.efi" "$dir/EFI/BOOT/BOOTX64.EFI"
"""


@pytest.mark.integration
def test_grub_install_path_runs_in_the_guest_and_rolls_back(tmp_path):
    root = tmp_path / "guest"
    (root / "boot/efi/EFI/debian").mkdir(parents=True)
    (root / "boot/efi/EFI/debian/grubx64.efi").write_bytes(os.urandom(5000))
    (root / "usr/bin").mkdir(parents=True)
    fake = root / "usr/bin/grub-install"
    fake.write_text(FAKE_GRUB_INSTALL)
    fake.chmod(0o755)
    old = sha(root / "boot/efi/EFI/debian/grubx64.efi")

    def facts():
        ebm = BF.efibootmgr("0001", [("0001", "debian", "\\EFI\\debian\\grubx64.efi")])
        efi = BF.efi_member({}, False, ebm, grub_install="/usr/sbin/grub-install", grub_efi_modules="1")
        efi["files"] = listing(root / "boot/efi")
        return linux.parse(linux_raw("debian12-dracut-hostonly-vmware", {"id": BF.uefi_id(False), "efi": efi}))

    opts = {"root": str(root), "run_id": "gi", "guest": "t"}
    plan = OP.plan(facts(), "t", opts)
    assert plan.changes[0].detail["argv"][0] == "grub-install"
    c = conn()
    try:
        assert OP.apply(c, plan, opts).ok
        assert failing(facts()) == []
        assert sha(root / "boot/efi/EFI/BOOT/BOOTX64.EFI") == sha(root / "boot/efi/EFI/debian/grubx64.efi")
        journal.rollback(c, {"root": str(root), "run_id": "rb", "guest": "t"})
    finally:
        c.close()
    assert sha(root / "boot/efi/EFI/debian/grubx64.efi") == old
    assert not (root / "boot/efi/EFI/BOOT/BOOTX64.EFI").exists()
    assert re.search(r"grub-install", (root / "var/lib/guestprep/journal.json").read_text())
