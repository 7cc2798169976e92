"""The Windows flow against the Windows model (issue 12, items 1-3): prepare --apply through the
real WinRM/PSRP clients -> re-collect -> the complete boot-start state and the agent service;
boots_on() as Windows' loader + PnP would decide; rollback leaves the modelled registry and
files as they were. Each defect of the pre-fix code has a test here that fails on it."""

from __future__ import annotations

import hashlib
import json
import re

import pytest

from guestprep.checks import registry
from guestprep.connectors import open_connector
from guestprep.connectors.windows_common import windows_script_text
from guestprep.errors import CollectorError
from guestprep.facts import windows as wf
from guestprep.operations import engine
from tests.windows.wsman_server.guest import (SVC, FakeWindowsGuest, GuestError, iso_files, load_profile,
                                              make_media)

pytestmark = pytest.mark.integration

OX7B = "INACCESSIBLE_BOOT_DEVICE (0x7B)"
MINE = ("windows.virtio_drivers", "windows.boot_critical", "windows.qemu_ga")
# virtio-win 0.1.266 no longer carries Windows Server 2012 R2 drivers (guestprep/data/virtio_win_matrix.json)
PROFILES = [("ws2012r2-en-US", "0.1.240", "winrm"), ("ws2016-de-DE", "0.1.266", "psrp"),
            ("ws2019-en-US", "0.1.266", "winrm"), ("ws2022-ja-JP", "0.1.266", "psrp"),
            ("win10-ru-RU", "0.1.266", "winrm"), ("win11-en-US", "0.1.266", "psrp"),
            ("win10x86-en-US", "0.1.266", "winrm")]


def _iso(tmp_path, version):
    p = tmp_path / "virtio-win.iso"
    p.write_bytes(make_media("iso", version))
    return p, hashlib.sha256(p.read_bytes()).hexdigest()


def _status(facts, name="g"):
    return {(f.check_id, f.resource): f.status.value for f in registry.evaluate("windows", facts, name)}


def _collect(run, g):
    conn = open_connector(g, run.options())
    try:
        return wf.collect(conn, timeout=30)
    finally:
        conn.close()


# --------------------------------------------------------------------------- the whole flow per Windows

@pytest.mark.parametrize("profile,version,transport", PROFILES, ids=[p[0] for p in PROFILES])
def test_prepare_verify_rollback_on_the_model(wsman, tmp_path, profile, version, transport):
    run = wsman(profile)
    iso, sha = _iso(tmp_path, version)
    g = run.make_guest(transport, guestprep_virtio_win_media=str(iso), guestprep_virtio_win_sha256=sha,
                       guestprep_capture_dir=str(tmp_path / "captures"))
    connect = lambda g: open_connector(g, run.options())  # noqa: E731
    before = run.guest.snapshot()
    assert run.guest.boots_on("virtio-scsi") == OX7B      # negative control: unprepared
    assert run.guest.boots_on("pvscsi") == "ok"

    res = engine.prepare_guest(g, {"timeout": 60}, connect, apply=True)
    ops = {o.operation: o for o in res.ops}
    for op in ("windows.virtio_drivers", "windows.qemu_ga"):
        assert ops[op].applied and ops[op].verified, (op, ops[op].error, ops[op].problems)

    facts = _collect(run, g)
    st = _status(facts)
    assert st[("WIN-VIOSCSI-BOOTSTART", "vioscsi")] == "pass"
    assert st[("WIN-VIOSCSI-BOOTSTART", "viostor")] == "pass"
    assert st[("WIN-VIRTIO-STORAGE-DRIVER", "vioscsi.inf")] == "pass"
    assert st[("WIN-QEMU-GA", "QEMU-GA")] == "pass" and facts.qemu_ga["start_mode"] == "Auto"
    assert st[("WIN-VIRTIO-MEDIA", "virtio-win")] == "pass"
    assert facts.virtio_win_used["version"] == version                # read from the media, not declared
    assert st[("WIN-VIRTIO-WIN-SUPPORT", f"virtio-win {version}")] == "pass"
    vioscsi = facts.boot_storage["vioscsi"]
    assert (vioscsi.service.type, vioscsi.service.start, vioscsi.service.error_control) == (1, 0, 1)
    assert vioscsi.file.present and vioscsi.file.sha256
    pkg = facts.staged("vioscsi.inf")
    assert pkg.arch == ("x86" if "x86" in profile else "amd64")
    assert {m.id for m in vioscsi.device_ids if pkg.inf in m.infs} == set(wf.VIRTIO_PCI_IDS["vioscsi"])
    for bus in ("virtio-scsi", "virtio-scsi-modern", "virtio-blk", "virtio-blk-modern", "pvscsi", "sata"):
        assert run.guest.boots_on(bus) == "ok", bus

    # idempotent: a second prepare runs none of these scripts again
    ran = len(run.guest.ran)
    engine.prepare_guest(g, {"timeout": 60}, connect, apply=True)
    assert not {"install-virtio", "set-boot-critical", "install-qemu-ga"} & set(run.guest.ran[ran:])

    engine.rollback_guest(g, {"timeout": 60}, connect)
    assert run.guest.snapshot() == before
    assert run.guest.boots_on("virtio-scsi") == OX7B


# --------------------------------------------------------------------------- defect 1: staged only

def _old_install_virtio(guest: FakeWindowsGuest, os_dir: str = "2k19") -> None:
    """What install-virtio.ps1 did before the fix, as primitive steps on the model: pnputil
    /add-driver <folder>\\amd64\\*.inf /install per driver, then lib.ps1's
    Set-RegistryValueJournaled Start=0 on Services\\vioscsi and \\viostor (New-Item -Force makes a stub key)."""
    iso = {f"X:\\{k}": v for k, v in iso_files("0.1.266").items()}
    for folder, name in (("vioscsi", "vioscsi"), ("viostor", "viostor"), ("NetKVM", "netkvm")):
        rc, _ = guest.model.pnputil(["/add-driver", f"X:\\{folder}\\{os_dir}\\amd64\\{name}.inf", "/install"], iso)
        assert rc == 259      # staged; no VirtIO device on VMware
    for svc in ("vioscsi", "viostor"):
        guest._set_journaled("windows.virtio_drivers", "HKLM:\\SYSTEM\\CurrentControlSet\\Services\\" + svc, "Start", 0)


def test_defect1_staging_plus_start0_stub_does_not_boot_and_the_check_fails():
    guest = FakeWindowsGuest("ws2019-en-US")
    _old_install_virtio(guest)
    # staging created no service and no file [ADDSVC]; the stub holds Start=0 only
    assert guest.model.reg.value_names(SVC + "\\vioscsi") == ["Start"]
    assert not guest.model.file_exists("C:\\Windows\\System32\\drivers\\vioscsi.sys")
    assert guest.boots_on("virtio-scsi") == OX7B and guest.boots_on("virtio-blk") == OX7B
    facts = wf.parse(guest.facts)
    # the pre-fix check passed on exactly this (services.vioscsi.start == 0) ...
    assert facts.service("vioscsi").start == 0
    # ... the check now names what is missing
    [f] = [f for f in registry.get("WIN-VIOSCSI-BOOTSTART").evaluate(facts, "g") if f.resource == "vioscsi"]
    assert f.status.value == "fail"
    for piece in ("Type=1", "Group=SCSI miniport", "ImagePath", "vioscsi.sys (file absent)", "DeviceIds"):
        assert piece in f.message, (piece, f.message)


def test_defect1_the_prepare_plan_makes_the_staged_driver_boot_capable():
    """The pre-fix plan had no set-boot-critical step: the plan must carry it after staging."""
    f = wf.parse(load_profile("ws2019-en-US"))
    f.settings = {"guestprep_virtio_win_media": "\\\\srv\\virtio\\virtio-win.iso", "guestprep_virtio_win_sha256": "a" * 64}
    plan = {r.operation: r for r in engine.plan_guest(f, "g", "windows", {})}["windows.virtio_drivers"].plan
    assert [c.target for c in plan.changes if c.kind == "script"] == ["install-virtio.ps1", "set-boot-critical.ps1"]


def test_every_piece_matters_for_boots_on(tmp_path):
    """Take a prepared guest apart one piece at a time: each missing piece is a 0x7B (and a failing check)."""
    def prepared() -> FakeWindowsGuest:
        g = FakeWindowsGuest("ws2019-en-US")
        iso = {f"X:\\{k}": v for k, v in iso_files("0.1.266").items()}
        g._text = windows_script_text("install-virtio.ps1")
        for name in ("vioscsi", "viostor"):
            g.model.pnputil(["/add-driver", f"X:\\{name}\\2k19\\amd64\\{name}.inf", "/install"], iso)
        g.do_set_boot_critical({"arch": "amd64", "mapping": "driver_database", "services": [
            {"name": n, "inf": f"{n}.inf", "hardware_ids": list(wf.VIRTIO_PCI_IDS[n])} for n in ("vioscsi", "viostor")]})
        assert g.boots_on("virtio-scsi") == "ok"
        return g

    key = SVC + "\\vioscsi"
    breakers = {
        "Start=3": lambda g: g.model.reg.set(key, "Start", 3),
        "Type": lambda g: g.model.reg.delete_value(key, "Type"),
        ".sys": lambda g: g.model.delete_file("C:\\Windows\\System32\\drivers\\vioscsi.sys"),
        "mapping": lambda g: [g.model.reg.delete_key("HKLM\\SYSTEM\\DriverDatabase\\DeviceIds\\PCI\\" + i[4:])
                              for i in wf.VIRTIO_PCI_IDS["vioscsi"]],
    }
    for what, brk in breakers.items():
        g = prepared()
        brk(g)
        assert g.boots_on("virtio-scsi") == OX7B, what
        [f] = [f for f in registry.get("WIN-VIOSCSI-BOOTSTART").evaluate(wf.parse(g.facts), "g") if f.resource == "vioscsi"]
        assert f.status.value == "fail", what


# --------------------------------------------------------------------------- defect 2: pnputil

def test_defect2_pnputil_259_is_staged_not_failure(wsman, tmp_path):
    """On VMware no device matches: pnputil /add-driver /install returns 259. The pre-fix script
    tolerated only 0 and 3010; the model judges the script's own $PnpSuccess rule."""
    script = windows_script_text("install-virtio.ps1")
    tolerated = {int(x) for x in re.search(r"\$PnpSuccess\s*=\s*@\(([^)]*)\)", script).group(1).split(",")}
    assert 259 in tolerated
    guest = FakeWindowsGuest("ws2019-en-US")
    iso = make_media("iso")
    guest.files["C:\\m\\virtio-win.iso"] = iso
    params = {"media": "C:\\m\\virtio-win.iso", "sha256": hashlib.sha256(iso).hexdigest(), "kind": "iso", "arch": "amd64",
              "pnputil_syntax": "add-driver",
              "drivers": [{"name": "vioscsi", "inf": "vioscsi.inf", "sys": "vioscsi.sys", "folder": "vioscsi\\2k19\\amd64",
                           "required": True}]}
    old_rule = script.replace(re.search(r"\$PnpSuccess\s*=\s*@\([^)]*\)", script).group(0), "$PnpSuccess = @(0, 3010)")
    res = guest.run_script(old_rule, [json.dumps(params)], None)
    assert res.rc == 1 and b"exited 259" in res.stderr
    guest = FakeWindowsGuest("ws2019-en-US")
    guest.files["C:\\m\\virtio-win.iso"] = iso
    res = guest.run_script(script, [json.dumps(params)], None)
    assert res.rc == 0, res.stderr
    assert [e["kind"] for e in guest.journal] == ["driver_stage"]


def test_defect2_server_2012r2_has_no_add_driver():
    guest = FakeWindowsGuest("ws2012r2-en-US")
    iso = {f"X:\\{k}": v for k, v in iso_files("0.1.240").items()}
    rc, out = guest.model.pnputil(["/add-driver", "X:\\vioscsi\\2k12R2\\amd64\\vioscsi.inf", "/install"], iso)
    assert rc not in (0, 259, 3010) and "Usage" in out                      # what the pre-fix script ran
    assert guest.model.pnputil(["-a", "X:\\vioscsi\\2k12R2\\amd64\\vioscsi.inf"], iso)[0] == 0
    f = wf.parse(load_profile("ws2012r2-en-US"))
    f.settings = {"guestprep_virtio_win_media": "\\\\srv\\virtio-win.iso", "guestprep_virtio_win_sha256": "a" * 64}
    plan = {r.operation: r for r in engine.plan_guest(f, "g", "windows", {})}["windows.virtio_drivers"].plan
    params = next(c for c in plan.changes if c.target == "install-virtio.ps1").detail["params"]
    assert params["pnputil_syntax"] == "legacy" and params["drivers"][0]["folder"] == "vioscsi\\2k12R2\\amd64"


def test_defect2_x86_guest_gets_the_x86_folder_and_agent():
    f = wf.parse(load_profile("win10x86-en-US"))
    f.settings = {"guestprep_virtio_win_media": "\\\\srv\\virtio-win.iso", "guestprep_virtio_win_sha256": "a" * 64}
    plans = {r.operation: r for r in engine.plan_guest(f, "g", "windows", {})}
    params = next(c for c in plans["windows.virtio_drivers"].plan.changes if c.target == "install-virtio.ps1").detail["params"]
    assert params["arch"] == "x86" and params["drivers"][0]["folder"] == "vioscsi\\w10\\x86"
    ga = next(c for c in plans["windows.qemu_ga"].plan.changes if c.kind == "script").detail["params"]
    assert ga["msi_path"] == "guest-agent\\qemu-ga-i386.msi"
    # the pre-fix hard-coded amd64 folder does not stage on 32-bit Windows
    guest = FakeWindowsGuest("win10x86-en-US")
    iso = {f"X:\\{k}": v for k, v in iso_files("0.1.266").items()}
    assert guest.model.pnputil(["/add-driver", "X:\\vioscsi\\w10\\amd64\\vioscsi.inf", "/install"], iso)[0] not in (0, 259, 3010)


# --------------------------------------------------------------------------- defect 3: qemu-ga

def test_defect3_drivers_msi_has_no_agent_and_the_planner_does_not_loop(wsman, tmp_path):
    run = wsman("ws2016-de-DE")
    msi = tmp_path / "virtio-win-gt-x64.msi"
    msi.write_bytes(make_media("drivers-msi"))
    sha = hashlib.sha256(msi.read_bytes()).hexdigest()
    g = run.make_guest("psrp", guestprep_virtio_win_media=str(msi), guestprep_virtio_win_sha256=sha)
    connect = lambda g: open_connector(g, run.options())  # noqa: E731
    engine.prepare_guest(g, {"timeout": 60}, connect, apply=True)
    assert run.guest.facts["qemu_ga"]["installed"] is False          # [MSI] the drivers MSI holds no qemu-ga
    assert run.guest.boots_on("virtio-scsi") == "ok"
    again = engine.prepare_guest(g, {"timeout": 60}, connect, apply=True)
    ops = {o.operation: o for o in again.ops}
    assert ops["windows.virtio_drivers"].plan.empty                   # not rerun for the missing agent
    assert "qemu_ga_media" in ops["windows.qemu_ga"].plan.reason
    assert run.guest.ran.count("install-virtio") == 1

    agent = tmp_path / "qemu-ga-x86_64.msi"
    agent.write_bytes(make_media("agent-msi"))
    g = run.make_guest("psrp", guestprep_virtio_win_media=str(msi), guestprep_virtio_win_sha256=sha,
                       guestprep_qemu_ga_media=str(agent),
                       guestprep_qemu_ga_sha256=hashlib.sha256(agent.read_bytes()).hexdigest())
    third = engine.prepare_guest(g, {"timeout": 60}, connect, apply=True)
    ga = next(o for o in third.ops if o.operation == "windows.qemu_ga")
    assert ga.applied and ga.verified, (ga.error, ga.problems)
    assert run.guest.facts["qemu_ga"] == {"installed": True, "state": "Stopped", "start_mode": "Auto"}
    assert run.guest.ran.count("install-virtio") == 1


@pytest.mark.unit
def test_guest_tools_bundle_is_refused_with_a_reason():
    f = wf.parse(load_profile("ws2019-en-US"))
    f.settings = {"guestprep_virtio_win_media": "\\\\srv\\virtio-win-guest-tools.exe", "guestprep_virtio_win_sha256": "a" * 64}
    r = {r.operation: r for r in engine.plan_guest(f, "g", "windows", {})}["windows.virtio_drivers"]
    assert r.plan is None and "guest-tools bundle" in r.error and "qemu_ga_media" in r.error


# --------------------------------------------------------------------------- model honesty, parser

def test_staging_never_creates_a_service():
    guest = FakeWindowsGuest("ws2022-ja-JP")
    before = set(guest.model.reg.subkeys(SVC))
    iso = {f"X:\\{k}": v for k, v in iso_files("0.1.266").items()}
    guest.model.pnputil(["/add-driver", "X:\\vioscsi\\2k22\\amd64\\vioscsi.inf", "/install"], iso)
    assert set(guest.model.reg.subkeys(SVC)) == before and wf.parse(guest.facts).staged("vioscsi.inf")
    with pytest.raises(GuestError):          # New-ItemProperty on a missing key fails like Windows
        guest.model.reg.set(SVC + "\\nosuch", "Start", 0)


@pytest.mark.unit
def test_old_unstaged_iso_release_is_refused_clearly(tmp_path):
    guest = FakeWindowsGuest("ws2012r2-en-US")
    iso = make_media("iso", "0.1.266")
    guest.files["C:\\m\\v.iso"] = iso
    out = guest.do_install_virtio.__func__   # noqa: B018 (documented entry point below)
    guest._text = windows_script_text("install-virtio.ps1")
    with pytest.raises(GuestError, match=r"no vioscsi\\2k12R2\\amd64\\vioscsi.inf"):
        out(guest, {"media": "C:\\m\\v.iso", "sha256": hashlib.sha256(iso).hexdigest(), "kind": "iso", "arch": "amd64",
                    "pnputil_syntax": "legacy", "drivers": [{"name": "vioscsi", "inf": "vioscsi.inf", "sys": "vioscsi.sys",
                                                             "folder": "vioscsi\\2k12R2\\amd64", "required": True}]})


@pytest.mark.unit
@pytest.mark.parametrize("mutate,where", [
    (lambda d: d["boot_storage"].__setitem__("vioscsi", "yes"), "boot_storage.vioscsi"),
    (lambda d: d["boot_storage"]["vioscsi"].__setitem__("service", {"start": "boot"}), "boot_storage.vioscsi.service.start"),
    (lambda d: d["boot_storage"]["viostor"]["file"].pop("path"), "boot_storage.viostor.file.path"),
    (lambda d: d["boot_storage"]["vioscsi"].__setitem__("device_ids", [{"id": "PCI\\X", "infs": [{}]}]),
     "boot_storage.vioscsi.device_ids[0].infs[0]"),
])
def test_boot_storage_garbage_is_a_collector_error(mutate, where):
    doc = load_profile("ws2019-en-US")
    mutate(doc)
    with pytest.raises(CollectorError, match=re.escape(where)):
        wf.parse(doc)
