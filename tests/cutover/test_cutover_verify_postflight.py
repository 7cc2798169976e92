"""The optional post-phase preflight at verify (policy ``cutover.options.post_preflight``): the guest
assessed again after the move, over SSH, by the same runner and checks as `preflight --phase post`;
its findings in the step's outputs, open ones at or above ``fail_on`` fail verify.

The guest here is the suite's sshd container (the fleet's address of every cutover test VM), not the
booted lab guest: the copy on the test node does not boot in these tests (the booting lab would add
two TCG boots)."""

from __future__ import annotations

import json

import pytest

from tests.cutover.conftest import accept_gate
from tests.cutover import streaming_support  # noqa: E402

folder_sim, folder_vs, slab = (streaming_support.folder_sim, streaming_support.folder_vs,  # fixtures
                               streaming_support.slab)

pytestmark = pytest.mark.integration


def _with_post_preflight(lab_, **spec) -> None:
    policy = json.loads(lab_.policy.read_text())
    policy["cutover"]["options"] = {"post_preflight": spec}
    lab_.policy.write_text(json.dumps(policy))


def test_post_phase_preflight_findings_are_in_verify_outputs(slab):
    lab_ = slab("DC0_H0_VM2", 9321)
    _with_post_preflight(lab_, known_hosts=str(lab_.known_hosts), waivers=str(lab_.waivers), timeout=120)
    lab_.plan()
    accept_gate(lab_)
    r = lab_.run()
    assert r.returncode == 0, r.stdout + r.stderr
    vm = lab_.status()["vms"][0]
    assert vm["phase"] == "done"
    post = next(s for s in vm["steps"] if s["step"] == "verify")["outputs"]["post_preflight"]
    assert post["phase"] == "post" and post["guest"] == "DC0_H0_VM2" and post["transport"] == "ssh"
    assert post["error"] is None and post["counts"].get("pass", 0) > 0   # it reached the guest and ran checks
    assert post["counts"].get("unreachable", 0) == 0
    assert all({"check", "severity", "status", "message"} <= set(f) for f in post["findings"])
    assert post["fail_on"] == "blocker"


def test_an_unreachable_guest_after_the_move_fails_verify_and_rolls_back(slab, tmp_path):
    lab_ = slab("DC0_H0_VM3", 9322)
    empty = tmp_path / "known_hosts.empty"
    empty.write_text("")   # the guest's host key is not known: preflight cannot reach it (never trusts on first use)
    _with_post_preflight(lab_, known_hosts=str(empty), timeout=60)
    lab_.plan()
    accept_gate(lab_)
    r = lab_.run()
    assert r.returncode == 1, r.stdout + r.stderr
    vm = lab_.status()["vms"][0]
    assert vm["phase"] == "rolled_back"
    assert "post-phase preflight" in vm["error"] and "LNX-REACHABLE" in vm["error"], vm["error"]
    assert [s["step"] for s in vm["steps"] if s["status"] == "failed"] == ["verify"]
    assert lab_.source()["power"] == "poweredOn" and not lab_.source()["marked"]

    # bad settings are refused before anything runs, naming the file and the field
    import yaml

    doc = yaml.safe_load(lab_.wave.read_text())
    doc["options"]["post_preflight"]["fail_on"] = "maybe"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    b = lab_.gp("cutover", "run", bad)
    assert b.returncode == 2 and "options.post_preflight" in b.stderr and "fail_on" in b.stderr, b.stderr
    assert str(bad) in b.stderr and "Traceback" not in b.stderr
