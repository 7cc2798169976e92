"""Windows operations: plans as data, apply against the fake guest, verify, idempotence, rollback."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from guestprep.checks import registry
from guestprep.connectors import open_connector
from guestprep.errors import ConfigError, ConnectionFailed, OperationError
from guestprep.facts import windows as wf
from guestprep.operations import engine
from guestprep.operations.windows import journal
from tests.windows.wsman_server.guest import load_profile

pytestmark = pytest.mark.integration

GUESTS = Path(__file__).parent / "guests"


def facts_of(profile: str, **settings) -> wf.WindowsFacts:
    f = wf.parse(load_profile(profile))
    f.settings = {f"guestprep_{k}": v for k, v in settings.items()}
    return f


def plans(facts, **options):
    return {r.operation: r for r in engine.plan_guest(facts, "g", "windows", dict(options))}


@pytest.fixture
def media(tmp_path):
    p = tmp_path / "virtio-win-gt-x64.msi"
    p.write_bytes(os.urandom(100_000))
    return p, hashlib.sha256(p.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- plans as data

@pytest.mark.unit
def test_plan_for_a_vmware_only_server_2019(media):
    path, sha = media
    p = plans(facts_of("ws2019-en-US", virtio_win_media=str(path), virtio_win_sha256=sha))
    kinds = [(c.kind, c.target) for c in p["windows.virtio_drivers"].plan.changes]
    assert kinds[0] == ("upload", "C:\\ProgramData\\guestprep\\media\\virtio-win-gt-x64.msi")
    assert ("driver_stage", "vioscsi.inf") in kinds and ("package", "qemu-ga") not in kinds
    assert ("registry_set", "HKLM:\\SYSTEM\\CurrentControlSet\\Services\\vioscsi\\Start") in kinds
    assert ("registry_set", "HKLM:\\SYSTEM\\CurrentControlSet\\Services\\vioscsi\\ImagePath") in kinds
    scripts = [c for c in p["windows.virtio_drivers"].plan.changes if c.kind == "script"]
    assert [c.target for c in scripts] == ["install-virtio.ps1", "set-boot-critical.ps1"]
    assert scripts[0].detail["params"] == {"media": "C:\\ProgramData\\guestprep\\media\\virtio-win-gt-x64.msi",
                                           "sha256": sha, "kind": "msi", "arch": "amd64", "pnputil_syntax": "add-driver"}
    boot = scripts[1].detail["params"]
    assert boot["mapping"] == "driver_database" and [s["name"] for s in boot["services"]] == ["vioscsi", "viostor"]
    assert "PCI\\VEN_1AF4&DEV_1048&SUBSYS_11001AF4&REV_01" in boot["services"][0]["hardware_ids"]
    assert p["windows.boot_critical"].plan.empty and "virtio_drivers stages" in p["windows.boot_critical"].plan.reason
    # the drivers MSI holds no qemu-ga: the agent needs its own MSI
    ga = p["windows.qemu_ga"].plan
    assert ga.empty and "qemu_ga_media" in ga.reason and "qemu-ga-x86_64.msi" in ga.reason
    assert p["windows.fast_startup"].plan.empty
    san = p["windows.san_policy"].plan.changes[0]
    assert san.detail == {"before": 2, "after": 1} and "- SanPolicy = 2\n+ SanPolicy = 1" in san.diff
    caps = [c.target for c in p["windows.network_capture"].plan.changes if c.kind == "capture"]
    assert caps == ["00:50:56:9a:10:01", "00:50:56:9a:10:02"]
    assert p["windows.bitlocker_suspend"].plan.empty and "cutover step" in p["windows.bitlocker_suspend"].plan.reason


@pytest.mark.unit
def test_plan_without_media_explains_what_to_set():
    plan = plans(facts_of("ws2016-de-DE"))["windows.virtio_drivers"].plan
    assert plan.empty and "guestprep_virtio_win_media" in plan.reason and plan.warnings


@pytest.mark.unit
@pytest.mark.parametrize("settings,match", [
    ({"virtio_win_media": "/nonexistent/virtio.msi", "virtio_win_sha256": "a" * 64}, "does not exist"),
    ({"virtio_win_media": "http://mirror/virtio.msi", "virtio_win_sha256": "a" * 64}, "plain http is refused"),
    ({"virtio_win_media": "\\\\srv\\share\\virtio.iso", "virtio_win_sha256": "nothex"}, "64-hex-digit"),
    ({"virtio_win_media": "\\\\srv\\share\\virtio.zip", "virtio_win_sha256": "a" * 64}, ".msi or .iso"),
    ({"virtio_win_media": "\\\\srv\\share\\x\" /qn & calc.msi", "virtio_win_sha256": "a" * 64}, "contains"),
])
def test_bad_media_settings_are_config_errors(settings, match):
    r = plans(facts_of("ws2019-en-US", **settings))["windows.virtio_drivers"]
    assert r.plan is None and match in r.error


@pytest.mark.unit
def test_local_media_with_wrong_checksum_is_refused_before_upload(media):
    path, sha = media
    r = plans(facts_of("ws2019-en-US", virtio_win_media=str(path), virtio_win_sha256="0" * 64))["windows.virtio_drivers"]
    assert r.plan is None and "SHA-256 of" in r.error


@pytest.mark.unit
def test_plans_on_a_prepared_guest_are_empty():
    p = plans(facts_of("ws2025-en-US"))
    assert all(r.plan is not None and r.plan.empty for r in p.values()), {k: r.plan.reason for k, r in p.items()}


@pytest.mark.unit
def test_plans_on_client_with_fast_startup_and_iso_dir():
    f = facts_of("win10-ru-RU", virtio_win_media="\\\\srv\\virtio\\virtio-win.iso", virtio_win_sha256="b" * 64)
    p = plans(f)
    assert [c.kind for c in p["windows.fast_startup"].plan.changes] == ["registry_set", "registry_set", "script"]
    vd = p["windows.virtio_drivers"].plan
    install = next(c for c in vd.changes if c.target == "install-virtio.ps1").detail["params"]
    assert vd.changes[0].kind == "fetch" and install["drivers"][0]["folder"] == "vioscsi\\w10\\amd64"


@pytest.mark.unit
def test_bitlocker_suspend_needs_cutover_and_escrow():
    assert plans(facts_of("ws2019-en-US", cutover=True))["windows.bitlocker_suspend"].plan.empty
    plan = plans(facts_of("ws2019-en-US", cutover=True, bitlocker_recovery_key_escrowed=True,
                          bitlocker_reboot_count=1))["windows.bitlocker_suspend"].plan
    assert [(c.kind, c.target) for c in plan.changes] == [("bitlocker_suspend", "C:"), ("script", "suspend-bitlocker.ps1")]
    assert plan.changes[-1].detail["params"] == {"mounts": ["C:"], "reboot_count": 1}


@pytest.mark.unit
def test_local_media_name_with_quotes_is_refused(tmp_path):
    bad = tmp_path / 'virtio" & x.msi'
    bad.write_bytes(b"x")
    import hashlib as h

    r = plans(facts_of("ws2019-en-US", virtio_win_media=str(bad), virtio_win_sha256=h.sha256(b"x").hexdigest()))
    assert r["windows.virtio_drivers"].plan is None and "file name" in r["windows.virtio_drivers"].error


@pytest.mark.unit
def test_vmware_tools_product_code_must_be_a_guid():
    f = facts_of("ws2016-de-DE")
    f.vmware_tools["product_code"] = "{X}\" /TR calc"
    plan = plans(f)["windows.vmware_tools_removal"].plan
    assert plan.empty and "not an MSI GUID" in plan.reason


@pytest.mark.unit
def test_unsupported_guest_plans_nothing():
    p = plans(facts_of("ws2008r2-en-US"))
    assert all(r.plan.empty for r in p.values())


# --------------------------------------------------------------------------- apply against the fake guest

def _guest(run, transport, path, sha, tmp_path, **extra):
    return run.make_guest(transport, guestprep_virtio_win_media=str(path), guestprep_virtio_win_sha256=sha,
                          guestprep_capture_dir=str(tmp_path / "captures"), **extra)


@pytest.mark.parametrize("transport", ["winrm", "psrp"])
def test_prepare_apply_verifies_is_idempotent_and_rolls_back(wsman, transport, media, tmp_path):
    path, sha = media
    run = wsman("ws2019-en-US")
    g = _guest(run, transport, path, sha, tmp_path)
    connect = lambda g: open_connector(g, run.options())  # noqa: E731

    res = engine.prepare_guest(g, {"timeout": 60}, connect, apply=True)
    assert res.error is None, res.error
    applied = {o.operation: o for o in res.ops if o.applied}
    mine = {"windows.virtio_drivers", "windows.san_policy"}
    assert mine <= set(applied)
    assert all(applied[o].verified for o in mine), {k: (o.error, o.problems) for k, o in applied.items()}

    # the guest changed as the scripts say: staged, then made boot-capable; no agent from the drivers MSI
    f = run.guest.facts
    assert f["services"]["vioscsi"]["start"] == 0 and f["storage"]["san_policy"] == "OnlineAll"
    assert f["boot_storage"]["vioscsi"]["file"]["present"] and f["qemu_ga"]["installed"] is False
    assert run.guest.boots_on("virtio-scsi") == "ok" and run.guest.boots_on("virtio-blk") == "ok"
    assert f["vmware_tools"]["installed"] is True
    kinds = [e["kind"] for e in run.guest.journal]
    assert "msi_install" in kinds and "registry_key_create" in kinds and "file_write" in kinds

    conn = connect(g)
    facts = wf.collect(conn, timeout=30)
    conn.close()
    status = {f_.check_id: f_.status.value for f_ in registry.evaluate("windows", facts, g.name)
              if f_.resource in ("vioscsi", "vioscsi.inf", "san-policy", "QEMU-GA")}
    assert status["WIN-VIRTIO-STORAGE-DRIVER"] == status["WIN-VIOSCSI-BOOTSTART"] == status["WIN-SAN-POLICY"] == "pass"
    assert status["WIN-QEMU-GA"] == "fail"     # needs qemu_ga_media: the drivers MSI has no agent

    # second run: nothing of mine planned, the drivers MSI is not run again
    ran_before = len(run.guest.ran)
    again = engine.prepare_guest(g, {"timeout": 60}, connect, apply=True)
    assert not any(o.applied for o in again.ops if o.operation in mine | {"windows.boot_critical", "windows.qemu_ga"})
    assert "install-virtio" not in run.guest.ran[ran_before:] and "set-boot-critical" not in run.guest.ran[ran_before:]

    # rollback restores everything the journal recorded, newest first (the MSI removed last)
    restored = engine.rollback_guest(g, {"timeout": 60}, connect)
    assert restored[-1]["kind"] == "msi_install" and restored[-1]["removed"]
    f = run.guest.facts
    assert f["services"]["vioscsi"] is None and f["driver_store"] == [] and f["storage"]["san_policy"] == "OfflineShared"
    assert run.guest.boots_on("virtio-scsi").startswith("INACCESSIBLE_BOOT_DEVICE")
    assert engine.rollback_guest(g, {"timeout": 60}, connect) == []  # second rollback: nothing left


def test_dropped_connection_mid_apply_then_rerun_converges(wsman, media, tmp_path):
    path, sha = media
    from tests.windows.wsman_server.guest import make_media

    path.write_bytes(make_media("drivers-msi", "0.1.240"))   # 0.1.266 has no Windows Server 2012 R2 drivers
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    run = wsman("ws2012r2-en-US", drop_after_marker="install-virtio", drop_count=1)
    g = _guest(run, "winrm", path, sha, tmp_path, guestprep_virtio_win_version="0.1.240")
    connect = lambda g: open_connector(g, run.options())  # noqa: E731
    first = engine.prepare_guest(g, {"timeout": 60}, connect, apply=True)
    vd = next(o for o in first.ops if o.operation == "windows.virtio_drivers")
    assert vd.error and "connection" in vd.error.lower()
    # the guest did the work before the connection dropped; a re-run plans only what is left
    second = engine.prepare_guest(g, {"timeout": 60}, connect, apply=True)
    assert second.error is None
    mine = ("windows.virtio_drivers", "windows.boot_critical")
    assert not any(o.error or o.verified is False for o in second.ops if o.operation in mine), \
        [(o.operation, o.error, o.problems) for o in second.ops]
    # the staged drivers were there already: boot_critical completed the boot-start state
    assert any(o.applied for o in second.ops if o.operation == "windows.boot_critical")
    third = engine.prepare_guest(g, {"timeout": 60}, connect, apply=False)
    assert not any(o.plan and not o.plan.empty for o in third.ops if o.operation in mine)
    assert run.guest.ran.count("install-virtio") == 1 and run.guest.boots_on("virtio-scsi") == "ok"


def test_guest_refuses_media_whose_checksum_differs(wsman, tmp_path):
    run = wsman("ws2016-de-DE")
    unc = "\\\\fileserver\\isos\\virtio-win-gt-x64.msi"
    run.guest.reachable_paths[unc] = b"tampered media"
    g = run.make_guest("psrp", guestprep_virtio_win_media=unc, guestprep_virtio_win_sha256="c" * 64)
    res = engine.prepare_guest(g, {"timeout": 60}, lambda g: open_connector(g, run.options()), apply=True)
    vd = next(o for o in res.ops if o.operation == "windows.virtio_drivers")
    assert "SHA-256 of" in vd.error and "not installing" in vd.error
    assert run.guest.facts["driver_store"] == [] and not any(e["kind"] == "msi_install" for e in run.guest.journal)


def test_bitlocker_cutover_step_suspends_and_check_passes(wsman):
    run = wsman("ws2019-en-US")
    g = run.make_guest("winrm", guestprep_cutover=True, guestprep_bitlocker_recovery_key_escrowed=True)
    connect = lambda g: open_connector(g, run.options())  # noqa: E731
    res = engine.prepare_guest(g, {"timeout": 60}, connect, apply=True)
    bl = next(o for o in res.ops if o.operation == "windows.bitlocker_suspend")
    assert bl.applied and bl.verified, bl.problems
    assert run.guest.facts["bitlocker"][0]["protection_status"] == "off"
    engine.rollback_guest(g, {"timeout": 60}, connect)
    assert run.guest.facts["bitlocker"][0]["protection_status"] == "on"


def test_fast_startup_off_on_windows_10(wsman, tmp_path):
    run = wsman("win10-ru-RU")
    g = run.make_guest("psrp")
    res = engine.prepare_guest(g, {"timeout": 60}, lambda g: open_connector(g, run.options()), apply=True)
    fs = next(o for o in res.ops if o.operation == "windows.fast_startup")
    assert fs.verified and run.guest.facts["power"] == {"fast_startup": False, "hibernation": False}


def test_rollback_direct_call_returns_list(wsman):
    run = wsman("ws2025-en-US")
    conn = open_connector(run.make_guest("winrm"), run.options())
    try:
        assert journal.rollback(conn, {"guest": "win01"}) == []
    finally:
        conn.close()


def test_uefi_guest_gets_its_efi_member_and_the_fallback_converges(wsman):
    """Cross-area: collect.ps1's one document carries the ``efi`` member of UEFI guests; the UEFI
    area's windows.efi_fallback then converges through the same engine and journal."""
    import copy

    prof = copy.deepcopy(load_profile("ws2022-ja-JP"))
    prof["efi"]["files"] = [f for f in prof["efi"]["files"] if f["path"] != "\\EFI\\Boot\\bootx64.efi"]
    run = wsman(prof)
    g = run.make_guest("psrp")
    connect = lambda g: open_connector(g, run.options())  # noqa: E731
    conn = connect(g)
    facts = wf.collect(conn, timeout=30)
    conn.close()
    assert [e["marker"] for e in run.state.log if "marker" in e] == ["collect"]   # one round trip
    assert facts.efi is not None and facts.efi.files is not None
    status = {f.check_id: f.status.value for f in registry.evaluate("windows", facts, g.name)}
    assert status["WIN-EFI-FALLBACK"] == "fail"
    res = engine.prepare_guest(g, {"timeout": 60}, connect, apply=True)
    efi_op = next(o for o in res.ops if o.operation == "windows.efi_fallback")
    assert efi_op.verified, (efi_op.error, efi_op.problems)
    restored = engine.rollback_guest(g, {"timeout": 60}, connect)
    assert any(r["target"] == "\\EFI\\Boot\\bootx64.efi" for r in restored)


@pytest.mark.parametrize("profile,transport", [("ws2022-ja-JP", "winrm"), ("win11-en-US", "psrp"),
                                               ("ws2016-de-DE", "winrm")])
def test_collect_is_one_round_trip_uefi_or_bios(wsman, profile, transport):
    """The server logs every script it ran: a UEFI guest's ESP comes with the collector's one document."""
    run = wsman(profile)
    conn = open_connector(run.make_guest(transport), run.options())
    facts = wf.collect(conn, timeout=30)
    conn.close()
    assert [e["marker"] for e in run.state.log if "marker" in e] == ["collect"]
    if facts.firmware == "uefi":
        assert facts.efi is not None and facts.efi.fallback is not None and facts.efi.entry("{bootmgr}")
    else:   # negative control: a BIOS guest has no efi member at all
        assert facts.firmware == "bios" and facts.efi is None and facts.raw["efi"] is None


def test_uefi_guest_without_an_esp_says_why_in_the_same_round_trip(wsman):
    import copy

    prof = copy.deepcopy(load_profile("ws2019-en-US"))
    prof.pop("efi")
    run = wsman(prof)
    conn = open_connector(run.make_guest("winrm"), run.options())
    facts = wf.collect(conn, timeout=30)
    conn.close()
    assert [e["marker"] for e in run.state.log if "marker" in e] == ["collect"]
    assert facts.efi.files is None and facts.efi.unknown["esp"] == "no EFI system partition found"
    [f] = [f for f in registry.evaluate("windows", facts, "w") if f.check_id == "WIN-EFI-FALLBACK"]
    assert f.status.value == "error" and "no EFI system partition found" in f.message
