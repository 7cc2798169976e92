"""`guestprep handoff` and `guestprep finalize` end to end (real CLI process, real test server)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from guestprep.errors import ConfigError
from guestprep.handoff import guest_facts_ref, load_handoff

pytestmark = pytest.mark.integration
FIX = Path(__file__).parent / "fixtures" / "vmx"


def gp(*args, env=None, stdin=None):
    return subprocess.run([sys.executable, "-m", "guestprep.cli", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, input=stdin, timeout=120)


@pytest.fixture
def policy(tmp_path, source_disks):
    (tmp_path / "netmap.yaml").write_text(yaml.safe_dump({"prod-vlan20": {"bridge": "vmbr0", "tag": 20}}))
    p = tmp_path / "policy.yaml"
    p.write_text(yaml.safe_dump({"node": "pve1", "storage": "local-zfs", "network_map_file": "netmap.yaml",
                                 "datastores": {"ds1": str(source_disks["boot.vmdk"].parent.parent)},
                                 "import_storages": {"ds1": "dsimport"}}))
    return p


def write_vmx_with_disk(tmp_path, source_disks):
    vmx = tmp_path / "win11.vmx"
    text = (FIX / "win11-efi-vtpm-nvme.vmx").read_text().replace('"Win11.vmdk"', f'"{source_disks["boot.vmdk"]}"')
    vmx.write_text(text)
    return vmx


def test_handoff_then_finalize(pve, tmp_path, policy, source_disks):
    facts = tmp_path / "report.json"
    # a preflight report: vioscsi not boot-start yet (no proof: sata-first), qemu-ga installed
    facts.write_text(json.dumps({"schema": "guestprep.report/1", "guests": [{
        "guest": 'Win11 "Finance"', "os": "windows", "readiness": "ready", "findings": [
            {"check_id": "WIN-VIOSCSI-BOOTSTART", "status": "fail", "resource": "vioscsi", "message": "Start=3"},
            {"check_id": "WIN-QEMU-GA", "status": "pass", "resource": "QEMU-GA", "message": "present"}]}]}))
    out = tmp_path / "vm.json"
    r = gp("handoff", 'Win11 "Finance"', "--vmx", write_vmx_with_disk(tmp_path, source_disks), "--policy", policy,
           "--guest-facts", facts, "--out", out)
    assert r.returncode == 0, r.stderr
    h = load_handoff(out)
    assert h.guest_facts.readiness == "ready" and len(h.guest_facts.sha256) == 64
    assert not h.boot_evidence.proven and h.boot_evidence.agent_installed and "Start=3" in h.boot_evidence.reason
    assert h.disks[0].import_volid == "dsimport:import/boot.vmdk"
    assert h.policy.network_map["prod-vlan20"].tag == 20 and h.disks[0].import_from == str(source_disks["boot.vmdk"])

    token_id, secret = next(iter(pve.state.tokens.items()))
    env = {"PVE_TOKEN": secret}
    base = ["finalize", "--handoff", out, "--host", pve.host, "--port", pve.port, "--user", token_id.split("!")[0],
            "--token-name", token_id.split("!")[1], "--token-secret-env", "PVE_TOKEN", "--ca", pve.ca, "--poll", "0.02"]
    dry = gp(*base, "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    assert "would POST /nodes/pve1/qemu" in dry.stdout and "efidisk0=local-zfs:1,efitype=4m,pre-enrolled-keys=1" in dry.stdout
    assert "import-from=dsimport:import/boot.vmdk" in dry.stdout           # a volume id: the token may import it
    assert "strategy sata-first: a direct VirtIO SCSI boot is not proven" in dry.stderr
    assert "bus change: nvme0:0 NVMe (nvme0) -> VirtIO SCSI single (scsi0) after a first boot on sata0" in dry.stderr
    assert pve.state.vms == {} and secret not in dry.stdout + dry.stderr
    result = tmp_path / "result.json"
    r = gp(*base, "--json", result, env=env)
    assert r.returncode == 0, r.stderr
    assert "started and verified" in r.stdout and secret not in r.stdout + r.stderr
    vm = pve.state.vms[100]["config"]
    assert vm["tpmstate0"].endswith("version=v2.0") and vm["net0"] == "virtio=00:50:56:3F:00:10,bridge=vmbr0,tag=20"
    assert json.loads(result.read_text())["verified"]["agent"] == "ok"


def test_handoff_errors_exit_2_without_traceback(tmp_path, policy, source_disks):
    vmx = write_vmx_with_disk(tmp_path, source_disks)
    out = tmp_path / "vm.json"
    cases = [
        gp("handoff", "nope", "--vmx", vmx, "--out", out),                                # wrong VM name
        gp("handoff", "x", "--out", out),                                                 # no source
        gp("handoff", 'Win11 "Finance"', "--vmx", tmp_path / "missing.vmx", "--out", out),
    ]
    bad_policy = tmp_path / "bad.yaml"
    bad_policy.write_text("node: pve1\ncache: writeahead\n")
    cases.append(gp("handoff", 'Win11 "Finance"', "--vmx", vmx, "--policy", bad_policy, "--out", out))
    for r in cases:
        assert r.returncode == 2, r.stderr
        assert "Traceback" not in r.stderr and "error:" in r.stderr
    assert not out.exists()
    assert gp("handoff", 'Win11 "Finance"', "--vmx", vmx, "--policy", policy, "--out", out).returncode == 0
    again = gp("handoff", 'Win11 "Finance"', "--vmx", vmx, "--policy", policy, "--out", out)
    assert again.returncode == 2 and "refusing to overwrite" in again.stderr


def test_finalize_errors(pve, tmp_path, policy, source_disks):
    out = tmp_path / "vm.json"
    assert gp("handoff", 'Win11 "Finance"', "--vmx", write_vmx_with_disk(tmp_path, source_disks), "--policy", policy,
              "--out", out).returncode == 0
    common = ["finalize", "--handoff", out, "--host", pve.host, "--port", pve.port, "--poll", "0.02", "--boot-settle", "0.3"]
    no_ca = gp(*common, "--token-name", "guestprep", "--token-secret-env", "PVE_TOKEN",
               env={"PVE_TOKEN": next(iter(pve.state.tokens.values()))})
    assert no_ca.returncode == 3 and "TLS verification failed" in no_ca.stderr
    bad_pw = gp(*common, "--password-stdin", "--ca", pve.ca, stdin="wrong\n")
    assert bad_pw.returncode == 3 and "authentication failed" in bad_pw.stderr and "wrong" not in bad_pw.stderr
    no_env = gp(*common, "--password-env", "GP_UNSET_VAR", "--ca", pve.ca)
    assert no_env.returncode == 2 and "GP_UNSET_VAR" in no_env.stderr
    ok = gp(*common, "--password-stdin", "--ca", pve.ca, stdin="s3cret-pw\n")
    assert ok.returncode == 0, ok.stderr
    garbage = tmp_path / "garbage.json"
    garbage.write_text('{"schema": "guestprep.handoff/1", "source_vm": {"name": "x", "num_cpu": "many"}, "disks": [], "policy": {}}')
    r = gp(*common, "--handoff", garbage, "--password-stdin", "--ca", pve.ca, stdin="s3cret-pw\n")
    assert r.returncode == 2 and "Traceback" not in r.stderr and "num_cpu" in r.stderr
    for r in (no_ca, bad_pw, no_env):
        assert "Traceback" not in r.stderr


def test_guest_facts_readiness_must_be_known(tmp_path):
    f = tmp_path / "facts.json"
    f.write_text(json.dumps({"readiness": "probably"}))
    with pytest.raises(ConfigError, match="readiness 'probably'"):
        guest_facts_ref(f, "vm")
    f.write_text(json.dumps({"guests": [{"guest": "other", "readiness": "ready"}, {"guest": "b", "readiness": "ready"}]}))
    ref = guest_facts_ref(f, "vm")
    assert ref.readiness is None and "no guest named" in ref.note
