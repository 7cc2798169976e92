"""The convert step streams a disk from vCenter's /folder over HTTPS when its datastore is not
mounted on the node: the controller's session cookie on the SSH channel's stdin, TLS verified
against the CA the controller trusts. Real parts: a govmomi simulator whose /folder demands a live
session (tests/cutover/vcsim_folder/main.go), the suite's sshd as the node with guestprep-host and
real qemu-img, the Proxmox API test server."""

from __future__ import annotations

import json
import sqlite3
import subprocess

import pytest

from tests.cutover.conftest import accept_gate
from tests.cutover import streaming_support  # noqa: E402

folder_sim, folder_vs, slab = (streaming_support.folder_sim, streaming_support.folder_vs,  # fixtures
                               streaming_support.slab)

pytestmark = pytest.mark.integration


def _folder_get(sim, url_path: str, cookie: str | None) -> int:
    import http.client
    import ssl

    conn = http.client.HTTPSConnection(sim.host, sim.port, context=ssl.create_default_context(
        cafile=str(sim.certs.ca_pem)))
    conn.request("GET", url_path, headers={"Cookie": cookie} if cookie else {})
    r = conn.getresponse()
    r.read()
    conn.close()
    return r.status


def test_the_simulator_serves_folder_only_to_a_live_session(slab, folder_vs):
    """The stand-in behaves as vCenter does: no cookie or a dead one, 401; the live one, the file."""
    from guestprep.vsphere.locator import cookie_header

    lab_ = slab("DC0_H0_VM0", 9301)
    path = f"/folder/DC0_H0_VM0/{lab_.descriptor.name}?dcPath=DC0&dsName=LocalDS_0"
    assert _folder_get(lab_.sim, path, None) == 401
    assert _folder_get(lab_.sim, path, 'vmware_soap_session="not-a-session"') == 401
    assert _folder_get(lab_.sim, path, cookie_header(folder_vs.cookie())) == 200


def test_cutover_without_a_datastore_mount_converts_through_https(slab):
    lab_ = slab("DC0_H0_VM1", 9302)
    lab_.plan()
    accept_gate(lab_)
    wave = lab_.wave.read_text()

    # the rehearsal reads the snapshot's base disks the same way
    rh = lab_.gp("cutover", "rehearse", lab_.wave, "--poll", "0.05", "--agent-timeout", "5")
    assert rh.returncode == 0, rh.stdout + rh.stderr
    assert "would boot: yes" in rh.stdout
    rep = json.loads((lab_.tmp / "wave.yaml.rehearsal" / "report.json").read_text())
    conv = next(s for s in rep["vms"][0]["steps"] if s["step"] == "convert")
    assert conv["outputs"]["disks"][0]["read_by"] == "https"

    r = lab_.run()
    assert r.returncode == 0, r.stdout + r.stderr
    assert "streamed over HTTPS" in r.stderr + r.stdout
    vm = lab_.status()["vms"][0]
    assert vm["phase"] == "done"
    locate = next(s for s in vm["steps"] if s["step"] == "locate_disks")["outputs"]["disks"][0]
    assert locate["read_by"] == "https" and locate["node_path"] is None
    assert locate["url"].startswith(f"https://{lab_.sim.host}:{lab_.sim.port}/folder/DC0_H0_VM1/")
    disk = next(s for s in vm["steps"] if s["step"] == "convert")["outputs"]["disks"][0]
    assert disk["read_by"] == "https" and disk["url"] == locate["url"]
    assert disk["tls"].startswith("verified against") and str(lab_.sim.certs.ca_pem) in disk["tls"]
    # the bytes on the Proxmox side are the source disk's
    assert subprocess.run(["qemu-img", "compare", "-q", "-F", "qcow2", str(lab_.raw),
                           str(lab_.storage / "images/9302/vm-9302-disk-0.qcow2")]).returncode == 0
    # the manifest on the node records the stream's source without the cookie
    manifest = json.loads(next((lab_.tmp / "node-work").rglob("*.manifest.json")).read_text())
    assert "/folder/DC0_H0_VM1/" in json.dumps(manifest["source"])
    # the cookie is in no file of the controller: wave, journal, report, output
    state = lab_.tmp / "wave.yaml.state"
    db = sqlite3.connect(state / "journal.sqlite")
    journal = json.dumps(db.execute("SELECT * FROM attempts").fetchall())
    for text in (wave, journal, (state / "report.json").read_text(), r.stdout + r.stderr,
                 json.dumps(manifest), json.dumps(rep)):
        assert "vmware_soap_session" not in text and lab_.sim.password not in text


def test_a_dead_session_cookie_fails_the_convert_step_clearly(slab, monkeypatch):
    """The controller's session logged out (expired) before the node reads: the step fails naming
    the cookie, and the node keeps no target."""
    from guestprep.cutover import steps as steps_mod
    from guestprep.cutover import wave as wave_mod
    from guestprep.cutover.sides import Secrets

    lab_ = slab("DC0_C0_RP0_VM0", 9303)
    lab_.plan()
    monkeypatch.setenv("GUESTPREP_HOST_ZIPAPP", str(lab_.zipapp))
    wave = wave_mod.load(lab_.wave)
    said: list[str] = []
    ctx = steps_mod.VmContext(wave, wave.vms[0], None, Secrets(lab_.sim.password), steps_mod.RunOptions(),
                              steps_mod.Limits(), said.append)
    try:
        ctx.vsphere.si.content.sessionManager.Logout()   # the cookie the controller holds is dead now
        with pytest.raises(steps_mod.StepFailed) as err:
            steps_mod.convert(ctx)
    finally:
        ctx._vs = None
        ctx.close()
    text = str(err.value)
    assert wave.vms[0].disks[0]["label"] in text and "401" in text and "cookie" in text and "expired" in text, text
    assert "vmware_soap_session" not in text
    assert not list((lab_.storage / "images").rglob("*.qcow2*")) if (lab_.storage / "images").exists() else True
