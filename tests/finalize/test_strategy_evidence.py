"""Strategy from evidence (issue 12, item 6): direct only when the facts PROVE a VirtIO SCSI boot.

Each test here failed on the code before: the policy defaulted to ``direct`` whatever the
facts said, a Linux guest without proof was created anyway, the bus change was not shown,
and sata-first always waited for a guest agent.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from guestprep.errors import ConfigError
from guestprep.finalize.config_builder import build_config
from guestprep.finalize.evidence import boot_evidence
from guestprep.target_policy import TargetPolicy
from guestprep.handoff import BootEvidence, handoff_from_dict
from tests.finalize.shapes import handoff_for

REPO = Path(__file__).resolve().parents[2]
WIN_FIX = REPO / "tests" / "checks" / "WIN-VIOSCSI-BOOTSTART"
LNX_FIX = REPO / "tests" / "facts" / "linux"


def report(os_name, *findings, guest="web-01"):
    return {"schema": "guestprep.report/1", "guests": [{"guest": guest, "os": os_name, "readiness": "ready",
            "findings": [{"check_id": c, "status": s, "resource": r, "message": m} for c, s, r, m in findings]}]}


def with_evidence(shape, evidence, **policy):
    h = handoff_for(shape)
    h.boot_evidence = evidence
    for k, v in policy.items():
        setattr(h.policy, k, v)
    return h


@pytest.mark.unit
def test_unset_strategy_is_auto_not_direct():
    assert TargetPolicy().strategy == "auto" and TargetPolicy.from_dict({}).strategy == "auto"
    assert TargetPolicy.from_dict({"strategy": "direct"}).strategy == "direct"


@pytest.mark.unit
def test_windows_proof_is_the_check_outcome_on_raw_facts():
    good = json.loads((WIN_FIX / "boot-start.json").read_text())["facts"]
    ev = boot_evidence(good, "win", "facts.json")
    assert ev.proven and ev.check == "WIN-VIOSCSI-BOOTSTART" and ev.source == "facts"
    for partial in ("stub-key-start-only.json", "sys-file-missing.json", "no-device-id-mapping.json"):
        facts = json.loads((WIN_FIX / partial).read_text())["facts"]
        ev = boot_evidence(facts, "win", partial)
        assert not ev.proven and "WIN-VIOSCSI-BOOTSTART did not pass" in ev.reason, partial


@pytest.mark.unit
def test_linux_proof_needs_every_kernel_and_an_undecided_check_is_no_proof():
    raw = json.loads((LNX_FIX / "debian12-dracut-hostonly-vmware.json").read_text())["raw"]
    ev = boot_evidence(raw, "deb", "facts.json")
    assert ev.os == "linux" and not ev.proven and "LNX-INITRAMFS-VIRTIO" in ev.reason
    ok = boot_evidence(report("linux", ("LNX-INITRAMFS-VIRTIO", "pass", "6.1.0-18", "ok"),
                              ("LNX-INITRAMFS-VIRTIO", "pass", "6.1.0-13", "ok")), "web-01", "r.json")
    assert ok.proven
    undecided = boot_evidence(report("linux", ("LNX-INITRAMFS-VIRTIO", "pass", "6.1.0-18", "ok"),
                                     ("LNX-INITRAMFS-VIRTIO", "error", "6.1.0-13", "cannot list")), "web-01", "r.json")
    assert not undecided.proven and "6.1.0-13: error" in undecided.reason
    waived = boot_evidence(report("linux", ("LNX-INITRAMFS-VIRTIO", "waived", "k", "w")), "web-01", "r.json")
    assert not waived.proven


@pytest.mark.unit
def test_linux_without_proof_is_refused_naming_vm_and_what_is_missing():
    with pytest.raises(ConfigError, match=r"VM 'web-01' \(linux\).*not proven.*--strategy direct") as e:
        build_config(with_evidence("linux-bios-lsi", None), 100)
    assert e.value.exit_code == 2 and "no boot evidence" in e.value.message
    failed = BootEvidence(os="linux", check="LNX-INITRAMFS-VIRTIO", proven=False,
                          reason="LNX-INITRAMFS-VIRTIO did not pass: 5.14.0: fail (lacks virtio_scsi)")
    with pytest.raises(ConfigError, match="lacks virtio_scsi"):
        build_config(with_evidence("linux-bios-lsi", failed), 100)
    # given explicitly, it is honoured with a warning
    b = build_config(with_evidence("linux-bios-lsi", failed), 100, strategy="direct")
    assert b.params["boot"] == "order=scsi0" and b.strategy.explicit
    assert any(f.level == "warning" and "NOT proven" in f.message for f in b.findings)


@pytest.mark.unit
def test_windows_without_proof_goes_sata_first_and_says_why():
    ev = BootEvidence(os="windows", check="WIN-VIOSCSI-BOOTSTART", proven=False,
                      reason="WIN-VIOSCSI-BOOTSTART did not pass: vioscsi: fail (Start=3)")
    b = build_config(with_evidence("win2019-bios-lsisas", ev), 100)
    assert b.strategy.strategy == "sata-first" and not b.strategy.explicit and b.params["boot"] == "order=sata0"
    assert any("not proven" in f.message and "Start=3" in f.message for f in b.findings)
    none = build_config(with_evidence("win2019-bios-lsisas", None), 100)
    assert none.strategy.strategy == "sata-first"
    proven = build_config(handoff_for("win2019-bios-lsisas"), 100)
    assert proven.strategy.strategy == "direct" and proven.params["boot"] == "order=scsi0"
    # explicit direct against the evidence: honoured, warned
    forced = build_config(with_evidence("win2019-bios-lsisas", ev), 100, strategy="direct")
    assert forced.strategy.strategy == "direct" and any("INACCESSIBLE_BOOT_DEVICE" in f.message for f in forced.findings)


@pytest.mark.unit
def test_bus_change_is_shown():
    b = build_config(handoff_for("nvme-boot"), 100)
    assert b.bus_changes == [{"disk": "Hard disk 1", "from": "NVMe (nvme controller 0)", "to": "VirtIO SCSI single (scsi0)"}]
    assert any(f.message.startswith("bus change: Hard disk 1 NVMe") for f in b.findings)
    assert "bus_changes" in b.to_dict()


@pytest.mark.unit
def test_evidence_round_trips_and_bad_evidence_is_refused():
    h = handoff_for("linux-bios-lsi")
    doc = json.loads(json.dumps(h.to_dict()))
    assert handoff_from_dict(doc, "h.json").boot_evidence.proven
    doc["boot_evidence"]["proven"] = "yes"
    with pytest.raises(ConfigError, match="boot_evidence.proven"):
        handoff_from_dict(doc, "h.json")


@pytest.mark.integration
def test_sata_first_without_known_agent_uses_the_boot_state(pve, client, source_disks):
    from guestprep.finalize.flow import Finalizer, FlowOptions
    from tests.finalize.test_finalize_flow import make_handoff

    h = make_handoff("win2019-bios-lsisas", source_disks, evidence=False)
    said = []
    res = Finalizer(client, FlowOptions(agent_timeout=5.0, agent_poll=0.02, boot_settle=0.2), say=said.append).run(h)
    assert res.build.strategy.strategy == "sata-first"
    assert not [p for m, p, _ in pve.state.requests if p.endswith("/agent/ping")]     # never waited for an agent
    assert any("not known to be installed" in s for s in said)
    assert res.verified["agent"].startswith("not checked") and pve.state.vms[res.vmid]["config"]["boot"] == "order=scsi0"
