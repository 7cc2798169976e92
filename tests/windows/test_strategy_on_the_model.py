"""From the Windows model to the finalize strategy (issue 12, "Done when"): the facts a real
collect returns before prepare do NOT prove a direct VirtIO SCSI boot (finalize picks
sata-first and says why); after prepare --apply they do (direct); after rollback they no
longer do. The proof is the same one `handoff --guest-facts` records (finalize.evidence)."""

from __future__ import annotations

import pytest

from guestprep.connectors import open_connector
from guestprep.connectors.windows_common import windows_script
from guestprep.facts import windows as wf
from guestprep.finalize.evidence import boot_evidence
from guestprep.finalize.strategy import decide
from guestprep.connectors.base import Script
from guestprep.operations import engine
from tests.finalize.shapes import handoff_for
from tests.windows.test_windows_model import OX7B, PROFILES, _iso

pytestmark = pytest.mark.integration


def _raw_facts(run, g) -> dict:
    """The collector's raw document, through the real client (what `facts --raw` saves)."""
    conn = open_connector(g, run.options())
    try:
        res = conn.run(Script(text=windows_script("collect.ps1"), interpreter="powershell", name="collect.ps1"),
                       timeout=30)
    finally:
        conn.close()
    assert res.rc == 0, res.err_text()
    return wf.parse_output(res.stdout, "test")


def _strategy(raw: dict) -> tuple[str, str, bool]:
    h = handoff_for("win2019-bios-lsisas")
    h.boot_evidence = boot_evidence(raw, h.vm.name, "guest facts")
    d = decide(h, "windows")
    return d.strategy, d.reason, d.agent_known


@pytest.mark.parametrize("profile,version,transport", PROFILES, ids=[p[0] for p in PROFILES])
def test_finalize_strategy_follows_the_modelled_boot_state(wsman, tmp_path, profile, version, transport):
    run = wsman(profile)
    iso, sha = _iso(tmp_path, version)
    g = run.make_guest(transport, guestprep_virtio_win_media=str(iso), guestprep_virtio_win_sha256=sha,
                       guestprep_capture_dir=str(tmp_path / "captures"))
    connect = lambda g: open_connector(g, run.options())  # noqa: E731

    strategy, reason, agent = _strategy(_raw_facts(run, g))
    assert (strategy, agent) == ("sata-first", False) and "WIN-VIOSCSI-BOOTSTART did not pass" in reason
    assert run.guest.boots_on("virtio-scsi") == OX7B      # the evidence agrees with the model

    engine.prepare_guest(g, {"timeout": 60}, connect, apply=True)
    strategy, reason, agent = _strategy(_raw_facts(run, g))
    assert (strategy, agent) == ("direct", True), reason
    assert run.guest.boots_on("virtio-scsi") == "ok"

    engine.rollback_guest(g, {"timeout": 60}, connect)
    strategy, reason, _ = _strategy(_raw_facts(run, g))
    assert strategy == "sata-first", reason
    assert run.guest.boots_on("virtio-scsi") == OX7B
