"""finalize against the in-repo Proxmox API test server (real proxmoxer, real TLS sockets)."""

from __future__ import annotations

import pytest

from guestprep.errors import ConfigError, ConnectionFailed, GuestprepError
from guestprep.proxmox.client import PveApiError, PveClient, PveConnection, TaskFailed
from guestprep.finalize.flow import Finalizer, FlowOptions, BootNotVerified
from guestprep.target_policy import TargetPolicy
from guestprep.handoff import build_handoff
from tests.finalize.conftest import IMPORT_STORAGE
from tests.finalize.manifest_support import identify, write_manifest
from tests.finalize.shapes import proven, shapes

pytestmark = pytest.mark.integration
OPTS = dict(agent_timeout=5.0, agent_poll=0.02)


def make_handoff(shape, source_disks, evidence=True, **policy):
    """The shape's disks on the test datastore ([ds1] import/...), which the test server also
    serves as the 'import' storage, so the token flow imports by volume id."""
    vm, pol = shapes()[shape]
    disks = list(source_disks.values())
    for i, d in enumerate(vm.disks):
        d.datastore_path = f"[ds1] import/{disks[i % len(disks)].name}"
    root = str(disks[0].parent.parent)
    pol = {**pol, "datastores": {"ds1": root}, "import_storages": {"ds1": IMPORT_STORAGE}, **policy}
    return build_handoff(vm, TargetPolicy.from_dict(pol), origin={"kind": "test", "path": shape},
                         boot_evidence=proven(vm) if evidence else None)


def run(client, h, **opts):
    return Finalizer(client, FlowOptions(**{**OPTS, **opts})).run(h)


def vm_volumes(pve, vmid):
    return sorted(v.volid for st in pve.state.nodes["pve1"]["storages"].values() for v in st.volumes.values()
                  if v.vmid == vmid)


@pytest.mark.parametrize("shape", sorted(shapes()))
def test_every_shape_is_created_started_and_verified(pve, client, source_disks, shape):
    h = make_handoff(shape, source_disks)
    res = run(client, h)
    vm = pve.state.vms[res.vmid]
    assert vm["status"] == "running" and res.verified["agent"] == "ok"
    assert pve.state.rejected == []                       # the server's full-schema check accepted everything
    assert vm["config"]["smbios1"].endswith(h.vm.uuid_bios)
    for i, nic in enumerate(h.vm.nics):
        assert nic.mac.upper() in vm["config"][f"net{i}"]
    if shape == "win11-efi-vtpm":                         # sata-first switched to scsi0, dummy disk freed
        cfg = vm["config"]
        assert "sata0" not in cfg and cfg["boot"] == "order=scsi0" and cfg["scsi0"].startswith("local-zfs:vm-")
        assert not [k for k in cfg if k.startswith("unused")] and "scsi1" not in cfg
        assert len(vm_volumes(pve, res.vmid)) == 3       # system disk + efidisk + tpmstate; dummy removed


def test_expected_address_restored(pve, client, source_disks):
    h = make_handoff("linux-bios-lsi", source_disks, expect_addresses=["10.0.20.15"])
    pve.state.faults.guest_addresses["00:50:56:9b:5f:0d"] = ["10.0.20.15"]
    assert "10.0.20.15" in run(client, h).verified["addresses"]


def test_address_not_restored_fails_and_cleans_up(pve, client, source_disks):
    h = make_handoff("linux-bios-lsi", source_disks, expect_addresses=["10.0.20.15"])
    pve.state.faults.guest_addresses["00:50:56:9b:5f:0d"] = ["169.254.3.3"]
    with pytest.raises(BootNotVerified, match="not restored: 10.0.20.15") as e:
        run(client, h)
    assert "removed" in e.value.message and pve.state.vms == {} and vm_volumes(pve, 100) == []


def test_wrong_mac_in_guest_fails(pve, client, source_disks):
    pve.state.faults.guest_mac_override = "52:54:00:12:34:56"
    with pytest.raises(BootNotVerified, match="00:50:56:9b:5f:0d"):
        run(client, make_handoff("linux-bios-lsi", source_disks))
    assert pve.state.vms == {}


def test_ticket_auth_and_expired_ticket_relogin(pve, source_disks):
    conn = PveConnection(host=pve.host, port=pve.port, user="root@pam", password="s3cret-pw", ca_file=str(pve.ca))
    c = PveClient(conn, poll_interval=0.02)
    assert c.get("/version")["release"]
    pve.state.tickets.clear()                            # every ticket expires
    res = run(c, make_handoff("linux-bios-lsi", source_disks))
    assert pve.state.vms[res.vmid]["status"] == "running"


def test_wrong_password_is_a_clear_connection_error(pve):
    conn = PveConnection(host=pve.host, port=pve.port, user="root@pam", password="nope", ca_file=str(pve.ca))
    with pytest.raises(ConnectionFailed, match="authentication failed"):
        PveClient(conn).get("/version")


def test_wrong_token_is_rejected(pve):
    conn = PveConnection(host=pve.host, port=pve.port, user="root@pam", token_name="guestprep", token_secret="bad",
                         ca_file=str(pve.ca))
    with pytest.raises(ConnectionFailed, match="authentication failed"):
        PveClient(conn).get("/version")


def test_tls_is_verified_by_default(pve, token_conn):
    token_conn.ca_file = None                            # system trust store does not know the test CA
    with pytest.raises(ConnectionFailed, match="TLS verification failed"):
        PveClient(token_conn).get("/version")


def test_fingerprint_pinning(pve, token_conn):
    token_conn.ca_file = None
    token_conn.fingerprint = pve.fingerprint
    assert PveClient(token_conn).get("/version")["version"]
    token_conn.fingerprint = "AB" * 32
    with pytest.raises(ConnectionFailed):
        PveClient(token_conn).get("/version")


def test_dry_run_sends_no_write(pve, token_conn, source_disks):
    c = PveClient(token_conn, dry_run=True)
    res = run(c, make_handoff("linux-efi-pvscsi", source_disks), dry_run=True)
    assert pve.state.vms == {} and res.dry_run
    sent = [(m, p) for m, p, _ in pve.state.requests]
    assert all(m == "GET" for m, _ in sent)
    writes = [x for x in c.calls if x.method != "GET"]
    assert [w.path for w in writes] == ["/nodes/pve1/qemu"] and "efidisk0" in writes[0].params


def test_vmid_collision_refused_and_untouched(pve, client, source_disks):
    first = run(client, make_handoff("linux-bios-lsi", source_disks, vmid=150))
    before = dict(pve.state.vms[150]["config"])
    with pytest.raises(ConfigError, match="vmid 150 already exists"):
        run(client, make_handoff("linux-efi-pvscsi", source_disks, vmid=150))
    assert first.vmid == 150 and pve.state.vms[150]["config"] == before


@pytest.mark.parametrize("policy,match", [
    ({"storage": "nfs-missing"}, "storage 'nfs-missing' does not exist"),
    ({"node": "pve9"}, "node 'pve9' is not in the cluster"),
    ({"network_map": {"VM Network": {"bridge": "vmbr7"}}}, "bridge 'vmbr7' does not exist"),
    ({"volumes": {"Hard disk 1": "local-zfs:vm-100-disk-0"}}, "local-zfs:vm-100-disk-0.*does not exist"),
    ({"storage": "local", "node": "pve1", "network_map": {}}, "no network map entry for portgroup"),
])
def test_bad_target_is_refused_before_any_write(pve, client, source_disks, policy, match):
    with pytest.raises(ConfigError, match=match):
        run(client, make_handoff("linux-bios-lsi", source_disks, **policy))
    assert [m for m, _, _ in pve.state.requests if m != "GET"] == [] and pve.state.vms == {}


def test_schema_violation_stops_before_any_call(pve, client, source_disks):
    h = make_handoff("linux-bios-lsi", source_disks)
    h.vm.nics[0].mac = "01:00:5e:00:00:01"               # multicast: Proxmox refuses it
    with pytest.raises(GuestprepError, match="net0.*multicast"):
        run(client, h)
    assert pve.state.requests == []


def test_storage_without_images_refused(pve, client, source_disks):
    pve.state.nodes["pve1"]["storages"]["local"].content = "iso,backup"
    with pytest.raises(ConfigError, match="does not hold VM disk images"):
        run(client, make_handoff("linux-bios-lsi", source_disks, storage="local"))


@pytest.mark.parametrize("status,message", [(500, "unable to create VM: got timeout"), (403, "Permission check failed")])
def test_api_error_on_create(pve, client, source_disks, status, message):
    pve.state.faults.http["POST /nodes/{node}/qemu"] = (status, message)
    with pytest.raises(PveApiError, match=str(status)):
        run(client, make_handoff("linux-bios-lsi", source_disks))
    assert pve.state.vms == {} and vm_volumes(pve, 100) == []


def test_import_task_failing_midway_leaves_nothing(pve, client, source_disks):
    pve.state.faults.task_fail["qmcreate"] = "import failed: qemu-img: error while reading sector 4096"
    with pytest.raises(TaskFailed, match="error while reading sector") as e:
        run(client, make_handoff("multi-disk-multi-nic-vlan", source_disks))
    assert "task log" in e.value.message and "nothing left" in e.value.message
    assert pve.state.vms == {} and vm_volumes(pve, 100) == []


def test_start_failing_removes_created_vm_and_disks(pve, client, source_disks):
    pve.state.faults.task_fail["qmstart"] = "start failed: QEMU exited with code 1"
    with pytest.raises(TaskFailed, match="QEMU exited"):
        run(client, make_handoff("win11-efi-vtpm", source_disks))
    assert pve.state.vms == {} and vm_volumes(pve, 100) == []


def test_keep_failed_keeps_the_vm(pve, client, source_disks):
    pve.state.faults.agent_silent = True
    with pytest.raises(BootNotVerified, match="guest agent did not answer") as e:
        run(client, make_handoff("linux-bios-lsi", source_disks), keep_failed=True, agent_timeout=0.2)
    assert "--keep-failed" in e.value.message and 100 in pve.state.vms


def test_hostside_volumes_attached_and_never_destroyed(pve, client, source_disks, tmp_path):
    vol = pve.state.add_volume("pve1", "local-zfs", 100, 40 << 30, name="vm-100-disk-0")
    other = pve.state.add_volume("pve1", "local-zfs", 100, 1 << 30, name="vm-100-disk-9")   # hostside, unattached
    h = identify(make_handoff("linux-bios-lsi", source_disks, vmid=100, volumes={"Hard disk 1": vol.volid}), tmp_path)
    write_manifest(tmp_path, h, vol.volid, vol.size)     # converted and verified by guestprep-host
    res = run(client, h)
    assert pve.state.vms[100]["config"]["scsi0"].startswith(vol.volid + ",discard=on")
    # Now a run that fails after start must not free the hostside volume.
    pve.state.vms.clear()
    pve.state.faults.agent_silent = True
    with pytest.raises(BootNotVerified) as e:
        run(client, h, agent_timeout=0.2)
    assert "LEFT in place" in e.value.message and res.vmid == 100
    assert pve.state.find_volume("pve1", vol.volid) and pve.state.find_volume("pve1", other.volid)
    assert pve.state.vms[100]["status"] == "stopped"


def test_blocked_guest_is_refused_unless_accepted(pve, client, source_disks, tmp_path):
    from guestprep.handoff import GuestFactsRef
    h = make_handoff("linux-bios-lsi", source_disks)
    h.guest_facts = GuestFactsRef(path="f.json", sha256="0" * 64, readiness="blocked")
    with pytest.raises(ConfigError, match="BLOCKED"):
        run(client, h)
    assert pve.state.vms == {}
    assert run(client, h, accept_blocked=True).vmid == 100


def test_only_subset_endpoints_are_used(pve, client, source_disks):
    from tools.gen_pve_schema import USED_ENDPOINTS
    run(client, make_handoff("win11-efi-vtpm", source_disks))
    used = {(m, p) for m, p, _ in pve.state.requests}
    assert used <= set(USED_ENDPOINTS)
