"""`guestprep preflight / prepare / rollback` for Windows guests, as an admin runs them (subprocess CLI)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.windows.conftest import PASSWORD, PW_ENV, USER

pytestmark = pytest.mark.integration

GUESTPREP = str(Path(sys.executable).with_name("guestprep"))


def cli(*args: str, env_extra: dict | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, PW_ENV: PASSWORD, "COLUMNS": "200", **(env_extra or {})}
    return subprocess.run([GUESTPREP, *args], capture_output=True, text=True, env=env, timeout=timeout)


def fleet(path: Path, guests: list[dict]) -> Path:
    import yaml

    path.write_text(yaml.safe_dump({"guests": guests}, allow_unicode=True), encoding="utf-8")
    return path


def entry(name: str, port: int, transport: str, ca: Path, **vars) -> dict:
    v = {"ansible_winrm_operation_timeout_sec": 2, "ansible_psrp_operation_timeout": 2}
    v["ansible_winrm_ca_trust_path" if transport == "winrm" else "ansible_psrp_ca_cert"] = str(ca)
    v.update(vars)
    return {"name": name, "address": "127.0.0.1", "port": port, "transport": transport, "os": "windows",
            "user": USER, "password_env": PW_ENV, "vars": v}


@pytest.fixture
def two_guests(wsman, tmp_path):
    a = wsman("ws2019-en-US")
    b = wsman("ws2022-ja-JP")
    media = tmp_path / "virtio-win-gt-x64.msi"
    media.write_bytes(os.urandom(80_000))
    sha = hashlib.sha256(media.read_bytes()).hexdigest()
    inv = fleet(tmp_path / "fleet.yaml", [
        entry("sql19", a.server.https.port, "winrm", a.pki.ca_cert, guestprep_virtio_win_media=str(media),
              guestprep_virtio_win_sha256=sha, guestprep_capture_dir=str(tmp_path / "captures")),
        entry("web22", b.server.https.port, "psrp", b.pki.ca_cert),
    ])
    return a, b, inv


def test_preflight_reports_both_transports(two_guests, tmp_path):
    a, b, inv = two_guests
    out = tmp_path / "reports"
    r = cli("preflight", "-i", str(inv), "-f", "json,junit", "-o", str(out))
    assert r.returncode == 1, r.stdout + r.stderr      # blockers found
    assert "Traceback" not in r.stderr and PASSWORD not in r.stdout + r.stderr
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    text = json.dumps(report, ensure_ascii=False)
    assert PASSWORD not in text
    guests = {g["guest"]: g for g in report["guests"]}
    assert set(guests) == {"sql19", "web22"}
    assert guests["sql19"]["transport"] == "winrm" and guests["web22"]["transport"] == "psrp"
    assert guests["web22"]["facts_summary"]["locale"] == "ja-JP"
    for g in guests.values():
        ids = {f["check_id"] for f in g["findings"]}
        assert len({i for i in ids if i.startswith("WIN-")}) >= 15
        assert g["readiness"] == "blocked"
    fails = {(f["check_id"], f["resource"]) for f in guests["web22"]["findings"] if f["status"] == "fail"}
    assert ("WIN-DEVICE-INSTALL-POLICY", "DeviceInstall\\Restrictions") in fails
    assert ("WIN-STATIC-IP", "00:50:56:9a:30:03") in fails


def test_prepare_plan_apply_then_preflight_and_rollback(two_guests, tmp_path):
    a, b, inv = two_guests
    plan = cli("prepare", "sql19", "-i", str(inv))
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "windows.virtio_drivers" in plan.stdout and "install-virtio.ps1" in plan.stdout
    assert a.guest.ran.count("install-virtio") == 0           # planning changes nothing

    applied = cli("prepare", "sql19", "-i", str(inv), "--apply", "--json")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    doc = json.loads(applied.stdout)
    ops = {o["operation"]: o for o in doc["guests"][0]["ops"]}
    assert ops["windows.virtio_drivers"]["verified"] is True
    assert ops["windows.network_capture"]["verified"] is True
    assert a.guest.facts["services"]["vioscsi"]["start"] == 0

    out = tmp_path / "after"
    r = cli("preflight", "sql19", "-i", str(inv), "-f", "json", "-o", str(out))
    findings = json.loads((out / "report.json").read_text())["guests"][0]["findings"]
    status = {(f["check_id"], f["resource"]): f["status"] for f in findings}
    assert status[("WIN-VIOSCSI-BOOTSTART", "vioscsi")] == "pass"
    assert status[("WIN-VIRTIO-STORAGE-DRIVER", "vioscsi.inf")] == "pass"
    assert status[("WIN-BITLOCKER", "C:")] == "fail"          # a cutover step, not done by prepare
    assert r.returncode == 1

    rb = cli("rollback", "sql19", "-i", str(inv))
    assert rb.returncode == 0, rb.stdout + rb.stderr
    assert "SanPolicy" in rb.stdout and "Traceback" not in rb.stderr
    assert a.guest.facts["storage"]["san_policy"] == "OfflineShared"


def test_ansible_inventory_with_psrp_and_winrm(wsman, tmp_path):
    a = wsman("win11-en-US")
    b = wsman("ws2016-de-DE")
    inv = tmp_path / "hosts.ini"
    inv.write_text(
        "[windows]\n"
        f"w11 ansible_host=127.0.0.1 ansible_port={a.server.https.port} ansible_connection=psrp "
        f"ansible_psrp_ca_cert={a.pki.ca_cert} ansible_psrp_operation_timeout=2\n"
        f"w16 ansible_host=127.0.0.1 ansible_port={b.server.http.port} ansible_connection=winrm "
        "ansible_winrm_scheme=http ansible_winrm_transport=ntlm ansible_winrm_operation_timeout_sec=2\n"
        "[windows:vars]\n"
        f"ansible_user={USER}\nguestprep_password_env={PW_ENV}\n", encoding="utf-8")
    out = tmp_path / "r"
    r = cli("preflight", "-i", str(inv), "-f", "json", "-o", str(out))
    assert r.returncode == 1, r.stdout + r.stderr
    guests = {g["guest"]: g for g in json.loads((out / "report.json").read_text())["guests"]}
    assert guests["w11"]["facts_summary"]["hostname"] == "LAPTOP-W11"
    assert guests["w16"]["facts_summary"]["hostname"] == "APP-DE-2016"
    assert b.state.encrypted_bodies > 0


def test_unreachable_and_bad_password_are_per_guest_findings(wsman, tmp_path):
    a = wsman("ws2019-en-US")
    inv = fleet(tmp_path / "fleet.yaml", [entry("good", a.server.https.port, "winrm", a.pki.ca_cert),
                                          entry("badpw", a.server.https.port, "psrp", a.pki.ca_cert)])
    import yaml

    # the second guest reads a wrong password from another variable

    doc = yaml.safe_load(inv.read_text())
    doc["guests"][1]["password_env"] = "WRONG_PW"
    inv.write_text(yaml.safe_dump(doc))
    out = tmp_path / "r"
    r = cli("preflight", "-i", str(inv), "-f", "json", "-o", str(out), env_extra={"WRONG_PW": "nope-nope"})
    assert r.returncode == 3 and "Traceback" not in r.stderr
    guests = {g["guest"]: g for g in json.loads((out / "report.json").read_text())["guests"]}
    assert guests["good"]["readiness"] == "blocked"
    assert guests["badpw"]["readiness"] == "unknown" and "authentication failed" in guests["badpw"]["error"]
    assert "nope-nope" not in r.stdout + r.stderr + (out / "report.json").read_text()
