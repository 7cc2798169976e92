"""audit: partition tables read through qemu from every format, findings in the report model."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from guestprep.models import Finding, Status
from hostside_support import host_cli, sh

pytestmark = pytest.mark.integration


def _audit(path, *extra):
    r = host_cli("audit", path, "--json", *extra)
    assert r.returncode in (0, 1), r.stderr
    return r.returncode, json.loads(r.stdout)


def _by_check(doc, check, resource=None):
    return [f for f in doc["findings"] if f["check_id"] == check and
            (resource is None or f["resource"] == resource)]


@pytest.mark.parametrize("key", ["mbr.raw", "monolithicSparse", "streamOptimized",
                                 "twoGbMaxExtentFlat", "chain-delta"])
def test_mbr_legacy_63_and_logical_partitions(images, key):
    extra = ("--chain",) if key == "chain-delta" else ()
    rc, doc = _audit(images[key], *extra)
    assert rc == 1  # the sector-63 partition is a warning
    t = doc["table"]
    assert t["scheme"] == "mbr" and not t["problems"]
    parts = {p["number"]: p for p in t["partitions"]}
    assert sorted(parts) == [1, 2, 5, 6]
    assert (parts[1]["start_sector"], parts[1]["filesystem"], parts[1]["bootable"]) == \
        (63, "ntfs", True)
    assert parts[2]["kind"] == "extended"
    assert (parts[5]["kind"], parts[5]["start_sector"], parts[5]["filesystem"]) == \
        ("logical", 24576, "ext4")
    assert parts[6]["filesystem"] == "swap"
    assert not parts[1]["aligned_4k"] and parts[5]["aligned_1m"]
    legacy = _by_check(doc, "IMG-PART-LEGACY-63", "partition 1")[0]
    assert legacy["status"] == "fail" and legacy["severity"] == "warning"
    assert "halving write performance" in legacy["remediation"]
    assert _by_check(doc, "IMG-PART-ALIGN-4K", "partition 1")[0]["status"] == "fail"
    # negative controls: the 1 MiB-aligned partitions pass the same checks
    for n in (5, 6):
        assert _by_check(doc, "IMG-PART-LEGACY-63", f"partition {n}")[0]["status"] == "pass"
        assert _by_check(doc, "IMG-PART-ALIGN-4K", f"partition {n}")[0]["status"] == "pass"
    assert doc["firmware"] == "bios"
    assert _by_check(doc, "IMG-FIRMWARE-UEFI")[0]["status"] == "pass"
    # findings round-trip through the shared report model
    for f in doc["findings"]:
        assert Finding.from_dict(f).to_dict() == f


@pytest.mark.parametrize("key", ["gpt.raw", "qcow2", "vmfs", "vmfsThin"])
def test_gpt_esp_implies_uefi(images, key):
    rc, doc = _audit(images[key])
    assert rc == 0  # nothing at warning or above
    t = doc["table"]
    assert t["scheme"] == "gpt" and t["gpt"]["backup_ok"] and not t["problems"]
    p1, p2, p3 = t["partitions"]
    assert (p1["type_name"], p1["filesystem"], p1["start_sector"], p1["name"]) == \
        ("EFI system", "fat32", 2048, "EFI system partition")
    assert p2["filesystem"] == "xfs" and p2["aligned_1m"]
    assert p3["filesystem"] is None
    assert doc["firmware"] == "uefi"
    uefi = _by_check(doc, "IMG-FIRMWARE-UEFI")[0]
    assert uefi["status"] == "fail" and uefi["severity"] == "info"
    assert "ovmf" in uefi["remediation"] and uefi["evidence"]["esp_partitions"] == [1]
    assert _by_check(doc, "IMG-GPT-BACKUP")[0]["status"] == "pass"
    rc, _ = _audit(images[key], "--fail-on", "info")
    assert rc == 1


def test_gpt_backup_header_lost_after_resize(images, tmp_path):
    grown = tmp_path / "grown.qcow2"
    sh("qemu-img", "convert", "-f", "raw", "-O", "qcow2", images["gpt.raw"], grown)
    sh("qemu-img", "resize", "-q", grown, "+64M")
    rc, doc = _audit(grown)
    backup = _by_check(doc, "IMG-GPT-BACKUP")[0]
    assert rc == 1 and backup["status"] == "fail"
    assert "disk resized" in backup["message"] and "sgdisk -e" in backup["remediation"]
    # a damaged backup header at the right place is reported too
    broken = tmp_path / "broken.raw"
    sh("cp", "--sparse=always", images["gpt.raw"], broken)
    with open(broken, "r+b") as f:
        f.seek(os.path.getsize(broken) - 512)
        f.write(b"\0" * 512)
    rc, doc = _audit(broken)
    assert "backup GPT header" in _by_check(doc, "IMG-GPT-BACKUP")[0]["message"]


def test_whole_disk_filesystem_and_blank(tmp_path, images):
    fs = tmp_path / "fs.raw"
    shutil.copyfile(images["root"] / "ext4.fs", fs)
    rc, doc = _audit(fs)
    assert rc == 0 and doc["table"]["scheme"] == "none" and doc["whole_disk_filesystem"] == "ext4"
    blank = tmp_path / "blank.raw"
    with open(blank, "wb") as f:
        f.truncate(1 << 20)
    rc, doc = _audit(blank)
    assert doc["firmware"] == "unknown" and doc["whole_disk_filesystem"] is None


def test_damaged_table_is_a_blocker(tmp_path, images):
    bad = tmp_path / "bad.raw"
    sh("cp", "--sparse=always", images["mbr.raw"], bad)
    with open(bad, "r+b") as f:  # partition 1 claims far more sectors than the disk has
        f.seek(446 + 12)
        f.write((10_000_000).to_bytes(4, "little"))
    rc, doc = _audit(bad)
    table = _by_check(doc, "IMG-PART-TABLE")[0]
    assert rc == 1 and table["status"] == "fail" and table["severity"] == "blocker"
    assert "past the end of the disk" in table["message"]


def test_human_output_and_guest_name(images):
    r = host_cli("audit", images["mbr.raw"], "--guest", "web01")
    assert r.returncode == 1
    assert "MBR partition table, firmware bios" in r.stdout
    assert "IMG-PART-LEGACY-63" in r.stdout
    r = host_cli("audit", images["mbr.raw"], "--guest", "web01", "--json")
    assert {f["guest"] for f in json.loads(r.stdout)["findings"]} == {"web01"}
    assert all(Status(f["status"]) for f in json.loads(r.stdout)["findings"])
