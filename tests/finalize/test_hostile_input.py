"""Issue 13, controller items 7, 8, 13, 15: hostile and broken input to handoff/finalize.

Every test here failed before the fix: the crafted paths became import-from= in the create
call, a token imported from a path, trailing newlines passed validation, and the .vmx
reader took half-broken lines literally.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from guestprep.errors import ConfigError
from guestprep.finalize.flow import Finalizer, FlowOptions
from guestprep.target_policy import TargetPolicy
from guestprep.handoff import build_handoff, handoff_from_dict
from guestprep.vmx import parse_vmx, parse_vmx_file
from guestprep.vsphere.locator import split_datastore_path
from guestprep.target_policy import valid_proxmox_name
from tests.finalize.shapes import handoff_for, proven, shapes

VMX_HEAD = 'displayName = "web01"\nguestOS = "debian12-64"\nscsi0.present = "TRUE"\nscsi0.virtualDev = "pvscsi"\n'


def vmx_vm(tmp_path, file_name, name="web.vmx"):
    d = tmp_path / "ds" / "web01"
    d.mkdir(parents=True, exist_ok=True)
    (d / "web01.vmdk").write_text("# Disk DescriptorFile\nRW 2048 FLAT \"web01-flat.vmdk\" 0\n")
    p = d / name
    p.write_text(VMX_HEAD + f'scsi0:0.present = "TRUE"\nscsi0:0.fileName = "{file_name}"\n')
    return parse_vmx_file(p)


def policy(tmp_path, **extra):
    return TargetPolicy.from_dict({"node": "pve1", "storage": "local-zfs", "datastores": {"ds1": str(tmp_path / "ds")},
                                   **extra})


# --------------------------------------------------------------------------- item 7: confinement


@pytest.mark.unit
@pytest.mark.parametrize("file_name", ["../../etc/passwd", "../../../../../../etc/shadow", "/dev/sda",
                                       "/etc/pve/priv/authkey.key", "[ds1] web01/../../../etc/shadow",
                                       "/vmfs/volumes/ds1/../../etc/passwd"])
def test_disk_paths_outside_the_datastores_are_refused(tmp_path, file_name):
    vm = vmx_vm(tmp_path, file_name)
    with pytest.raises(ConfigError, match="refused") as e:
        build_handoff(vm, policy(tmp_path), origin={"kind": "vmx"})
    assert e.value.where == "disk scsi0:0"


@pytest.mark.unit
def test_symlink_and_non_regular_files_in_a_datastore_are_refused(tmp_path):
    vm = vmx_vm(tmp_path, "evil.vmdk")
    (tmp_path / "ds" / "web01" / "evil.vmdk").symlink_to("/etc/passwd")
    with pytest.raises(ConfigError, match="outside every mapped datastore"):
        build_handoff(vm, policy(tmp_path), origin={"kind": "vmx"})
    vm = vmx_vm(tmp_path, "fifo.vmdk")
    os.mkfifo(tmp_path / "ds" / "web01" / "fifo.vmdk")
    with pytest.raises(ConfigError, match="not a regular file"):
        build_handoff(vm, policy(tmp_path), origin={"kind": "vmx"})


@pytest.mark.unit
def test_good_paths_map_through_the_datastore_table(tmp_path):
    h = build_handoff(vmx_vm(tmp_path, "web01.vmdk"), policy(tmp_path), origin={"kind": "vmx"})
    assert h.disks[0].import_from == str(tmp_path / "ds" / "web01" / "web01.vmdk")
    uuid = "5f1a2b3c-0d0e0f10-1112-001122334455"
    vm = vmx_vm(tmp_path, f"/vmfs/volumes/{uuid}/web01/web01.vmdk")
    h = build_handoff(vm, policy(tmp_path, datastores={uuid: str(tmp_path / "ds")}), origin={"kind": "vmx"})
    assert h.disks[0].import_from == str(tmp_path / "ds" / "web01" / "web01.vmdk") and h.disks[0].datastore == uuid


@pytest.mark.unit
@pytest.mark.parametrize("root", ["/", "/etc", "/dev", "/mnt/../etc", "relative/dir", "/proc/self"])
def test_a_datastore_cannot_be_mapped_onto_a_system_path(root):
    with pytest.raises(ConfigError, match="datastores"):
        TargetPolicy.from_dict({"datastores": {"ds1": root}})


@pytest.mark.unit
def test_crafted_handoff_document_cannot_point_outside(tmp_path):
    h = build_handoff(vmx_vm(tmp_path, "web01.vmdk"), policy(tmp_path), origin={"kind": "vmx"})
    doc = json.loads(json.dumps(h.to_dict()))
    assert handoff_from_dict(doc, "h.json").disks[0].import_from
    for bad in ("/etc/shadow", str(tmp_path / "ds" / ".." / "x.vmdk"), "/dev/sda"):
        doc["disks"][0]["import_from"] = bad
        with pytest.raises(ConfigError):
            handoff_from_dict(doc, "h.json")


@pytest.mark.integration
def test_relative_vmx_path_gives_absolute_import_paths(tmp_path):
    vm = vmx_vm(tmp_path, "web01.vmdk")
    pol = tmp_path / "policy.yaml"
    pol.write_text(json.dumps({"node": "pve1", "storage": "local-zfs", "datastores": {"ds1": str(tmp_path / "ds")},
                               "strategy": "direct"}))
    out = tmp_path / "h.json"
    r = subprocess.run([sys.executable, "-m", "guestprep.cli", "handoff", "web01", "--vmx", "web.vmx", "--policy",
                        str(pol), "--out", str(out)], cwd=tmp_path / "ds" / "web01", capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}, timeout=120)
    assert r.returncode == 0, r.stderr
    assert json.loads(out.read_text())["disks"][0]["import_from"] == vm.disks[0].datastore_path


# --------------------------------------------------------------------------- item 8: root@pam for paths


@pytest.mark.integration
def test_test_server_refuses_paths_to_a_token_like_proxmox(pve, client, source_disks):
    from guestprep.proxmox.client import PveApiError

    params = {"vmid": 120, "scsi0": f"local-zfs:0,import-from={source_disks['boot.vmdk']}"}
    with pytest.raises(PveApiError, match="Only root can pass arbitrary filesystem paths"):
        client.call("POST", "/nodes/{node}/qemu", {"node": "pve1"}, params)
    assert pve.state.vms == {}


@pytest.mark.integration
def test_token_with_path_only_disk_is_refused_up_front(pve, client, source_disks):
    from tests.finalize.test_finalize_flow import make_handoff

    h = make_handoff("linux-bios-lsi", source_disks, import_storages={})   # no import storage mapped
    with pytest.raises(ConfigError, match=r"only root@pam.*root@pam!guestprep.*Hard disk 1"):
        Finalizer(client, FlowOptions(agent_timeout=5.0, agent_poll=0.02)).run(h)
    assert [m for m, _, _ in pve.state.requests if m != "GET"] == [] and pve.state.vms == {}


@pytest.mark.integration
def test_root_password_may_import_from_a_path(pve, source_disks):
    from guestprep.proxmox.client import PveClient, PveConnection
    from tests.finalize.test_finalize_flow import make_handoff

    conn = PveConnection(host=pve.host, port=pve.port, user="root@pam", password="s3cret-pw", ca_file=str(pve.ca))
    h = make_handoff("linux-bios-lsi", source_disks, import_storages={})
    res = Finalizer(PveClient(conn, poll_interval=0.02), FlowOptions(agent_timeout=5.0, agent_poll=0.02)).run(h)
    assert "import-from=/" in res.build.params["scsi0"] and pve.state.vms[res.vmid]["status"] == "running"


# --------------------------------------------------------------------------- item 13: full match


@pytest.mark.unit
def test_trailing_newlines_do_not_pass_validation():
    for volid in ("local-zfs:vm-120-disk-0.raw\n", "local-zfs:vm-1-disk-0,import-from=/etc/shadow", "x:y z"):
        with pytest.raises(ConfigError, match="not a volume id"):
            TargetPolicy.from_dict({"volumes": {"Hard disk 1": volid}})
    with pytest.raises(ConfigError, match="storage id"):
        TargetPolicy.from_dict({"storage": "local-zfs\n"})
    assert not valid_proxmox_name("web1\n") and valid_proxmox_name("web1")
    with pytest.raises(ConfigError):
        split_datastore_path("[ds1] vm/vm.vmdk\n")
    h = handoff_for("linux-bios-lsi")
    doc = json.loads(json.dumps(h.to_dict()))
    doc["disks"][0] = {**doc["disks"][0], "volid": "local-zfs:vm-1-disk-0.raw\n", "import_from": None}
    with pytest.raises(ConfigError, match="not a volume id"):
        handoff_from_dict(doc, "h.json")


# --------------------------------------------------------------------------- item 15: .vmx parsing


@pytest.mark.unit
@pytest.mark.parametrize("line,match", [
    ('displayName = "web01', r"bad.vmx:1: the value of displayName has no closing quote"),
    ('displayName = "web01" memSize = "4096"', r"bad.vmx:1: two 'key = value' pairs on one line"),
    ('displayName = "web01" junk', r"bad.vmx:1: unexpected text after the value"),
    ('displayName = "web01"\nmemSize = "99999999999"', r"memory \(MiB\) must be an integer"),
    ('displayName = "web01"\nnumvcpus = "100000"', r"vCPUs must be an integer"),
    ('displayName = "web01"\nnumvcpus = "0"', r"vCPUs must be an integer"),
    ('displayName = "web01"\nnumvcpus = "2"\ncpuid.coresPerSocket = "4"', "exceed"),
    ('displayName = "web|0A01"', "control characters"),
])
def test_broken_vmx_lines_are_errors_with_file_and_line(line, match):
    with pytest.raises(ConfigError, match=match):
        parse_vmx(line + "\n", where="bad.vmx")


@pytest.mark.unit
def test_duplicate_keys_warn_and_the_last_counts():
    vm = parse_vmx('displayName = "a"\nmemSize = "2048"\nmemsize = "4096"\n', where="d.vmx")
    assert vm.memory_mb == 4096
    assert vm.extra["vmx_warnings"] == ["d.vmx:3: memsize is set again (first at line 2, '2048' -> '4096'); "
                                        "the last value is used"]


@pytest.mark.unit
def test_encoding_and_bom_are_honoured(tmp_path):
    p = tmp_path / "w.vmx"
    p.write_bytes(b'.encoding = "windows-1252"\ndisplayName = "Caf\xe9 server"\n')
    assert parse_vmx_file(p).name == "Caf\u00e9 server"
    p.write_bytes(b'\xef\xbb\xbf.encoding = "UTF-8"\ndisplayName = "Caf\xc3\xa9"\n')
    assert parse_vmx_file(p).name == "Caf\u00e9"
    p.write_bytes(b'\xef\xbb\xbfdisplayName = "web01"\n')
    assert parse_vmx_file(p).name == "web01"
    p.write_bytes(b'\xef\xbb\xbf.encoding = "windows-1252"\ndisplayName = "x"\n')
    with pytest.raises(ConfigError, match="byte order mark"):
        parse_vmx_file(p)
    p.write_bytes(b'.encoding = "klingon-8"\ndisplayName = "x"\n')
    with pytest.raises(ConfigError, match="not a known character encoding"):
        parse_vmx_file(p)
    p.write_bytes(b'displayName = "x"\nannotation = "\xe9"\n')
    with pytest.raises(ConfigError, match="not UTF-8") as e:
        parse_vmx_file(p)
    assert e.value.where.endswith("w.vmx:2")


@pytest.mark.unit
def test_qcow2_on_zfs_is_refused_at_hand_off_time():
    with pytest.raises(ConfigError, match="qcow2 on storage 'local-zfs'"):
        TargetPolicy.from_dict({"storage": "local-zfs", "format": "qcow2"})
    with pytest.raises(ConfigError, match="zfspool"):
        TargetPolicy.from_dict({"storage": "tank", "format": "qcow2", "storage_type": "zfspool"})
    assert TargetPolicy.from_dict({"storage": "local", "format": "qcow2", "storage_type": "dir"}).format == "qcow2"


@pytest.mark.integration
def test_qcow2_on_a_block_storage_is_refused_by_finalize(pve, client, source_disks):
    from tests.finalize.test_finalize_flow import make_handoff

    pve.state.nodes["pve1"]["storages"]["tank"] = type(pve.state.nodes["pve1"]["storages"]["local-zfs"])("tank")
    h = make_handoff("linux-bios-lsi", source_disks, storage="tank", format="qcow2")
    with pytest.raises(ConfigError, match="qcow2 on storage 'tank' \\(type zfspool\\)"):
        Finalizer(client, FlowOptions(agent_timeout=5.0, agent_poll=0.02)).run(h)
    assert pve.state.vms == {}


@pytest.mark.unit
def test_absurd_hardware_in_a_source_vm_document_is_refused():
    vm, pol = shapes()["linux-bios-lsi"]
    h = build_handoff(vm, TargetPolicy.from_dict(pol), origin={}, boot_evidence=proven(vm))
    doc = json.loads(json.dumps(h.to_dict()))
    doc["source_vm"]["memory_mb"] = 1 << 40
    with pytest.raises(ConfigError, match="memory"):
        handoff_from_dict(doc, "h.json")
