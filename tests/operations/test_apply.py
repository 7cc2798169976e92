"""Apply, verify the outcome, re-apply (converges) and roll back, with the real step scripts.

The steps run through the real local and SSH connectors against a guest tree under a
root prefix (a temp directory), so nothing on this machine changes. Tools the steps
call (dracut, lsinitrd, update-grub) are test stand-ins inside that tree; everything
else (sh, sha256sum, cp, mv, base64, the journal) is the real thing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from guestprep.connectors import ConnectOptions, open_connector
from guestprep.errors import CommandTimeout, GuestprepError, OperationError
from guestprep.facts.linux_model import Kernel
from guestprep.models import Credentials, Guest, Transport
from guestprep.operations import engine
from guestprep.operations.linux import journal

from planfixtures import PLANS, load

pytestmark = pytest.mark.integration

FAKEBIN = Path(__file__).resolve().parent / "fakebin"
KVER = "6.1.0-18-amd64"
IMAGE = f"/boot/initrd.img-{KVER}"
FSTAB = "# <file system> <mount point> <type> <options> <dump> <pass>\n/dev/sda1 / ext4 errors=remount-ro 0 1\n/dev/sda5 none swap sw 0 0\n"
GRUB = 'GRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX="console=ttyS0 resume=/dev/sda5"\n'


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture
def tree(tmp_path):
    """A Debian-12-shaped guest tree with a VMware-only host-only initramfs."""
    root = tmp_path / "guest"
    for d in ("etc/dracut.conf.d", "etc/systemd/network", "etc/default", "boot/grub", "usr/bin", "var/lib"):
        (root / d).mkdir(parents=True)
    (root / "etc/fstab").write_text(FSTAB)
    (root / "etc/default/grub").write_text(GRUB)
    (root / "boot/grub/grub.cfg").write_text("# original grub.cfg\n")
    (root / IMAGE.lstrip("/")).write_text(f"usr/lib/modules/{KVER}/kernel/drivers/scsi/vmw_pvscsi.ko\n")
    for tool in FAKEBIN.iterdir():
        shutil.copy2(tool, root / "usr/bin" / tool.name)
    return root


def facts_for(tree: Path):
    fx = load(PLANS / "debian12-dracut-hostonly.json")
    f = fx["facts"]
    f.kernels = [Kernel(version=KVER, running=True, initramfs=IMAGE, initramfs_size=20 * 1024 * 1024,
                        initramfs_modules={"vmw_pvscsi", "sd_mod"})]
    f.vmware_tools = {"present": False}
    f.qemu_guest_agent = {"installed": True, "enabled": True}
    f.cmdline_root = "UUID=2f6c1d1e-93b5-4d6b-a1a5-0c6b0d1f6a11"
    return f


def local_conn():
    return open_connector(Guest(name="local", address="localhost", transport=Transport.LOCAL))


@pytest.fixture(params=["local", "ssh"])
def conn(request):
    if request.param == "local":
        c = local_conn()
    else:
        sshd = request.getfixturevalue("sshd")
        g = Guest(name="t", address=sshd.host, port=sshd.port, transport=Transport.SSH,
                  credentials=Credentials(user="root", key_file=str(sshd.user_key), use_agent=False))
        c = open_connector(g, ConnectOptions(known_hosts=str(sshd.known_hosts), connect_timeout=10))
    yield c
    c.close()


def plan_all(conn, tree, run_id="run1"):
    opts = {"root": str(tree), "run_id": run_id, "guest": "t"}
    opts["state"] = engine.read_state(conn, "linux", opts)
    facts = facts_for(tree)
    return facts, opts, {r.operation: r for r in engine.plan_guest(facts, "t", "linux", opts)}


def apply_ops(conn, results, opts, ids):
    by_id = {o.id: o for o in engine.operations_for("linux")}
    return [by_id[i].apply(conn, results[i].plan, opts) for i in ids]


def journal_entries(tree: Path) -> list[dict]:
    return json.loads((tree / "var/lib/guestprep/journal.json").read_text())


def test_apply_then_rollback_restores_every_file(conn, tree):
    before = {p: sha(tree / p) for p in ("etc/fstab", "etc/default/grub", "boot/grub/grub.cfg", IMAGE.lstrip("/"))}
    facts, opts, res = plan_all(conn, tree)
    assert not res["linux.initramfs_virtio"].plan.empty
    applied = apply_ops(conn, res, opts, ["linux.stable_device_names", "linux.nic_name_pinning",
                                          "linux.initramfs_virtio"])
    assert all(a.ok for a in applied)
    # outcomes on the guest tree
    fstab = (tree / "etc/fstab").read_text()
    assert "UUID=2f6c1d1e-93b5-4d6b-a1a5-0c6b0d1f6a11 / ext4" in fstab and "/dev/sda" not in fstab
    assert "resume=UUID=8b7c3a2d-1111-4c2d-9e8f-123456789abc" in (tree / "etc/default/grub").read_text()
    assert (tree / "boot/grub/grub.cfg").read_text().startswith("# generated")
    image = (tree / IMAGE.lstrip("/")).read_text()
    assert "virtio_scsi.ko" in image and "virtio_pci.ko" in image and "vmw_pvscsi.ko" in image
    assert "Name=ens192" in (tree / "etc/systemd/network/10-guestprep-ens192.link").read_text()
    assert not list(tree.glob("boot/*.guestprep-new"))
    # backups and journal
    backup = tree / "var/lib/guestprep/backup/run1"
    assert sha(backup / "etc/fstab") == before["etc/fstab"]
    assert sha(backup / IMAGE.lstrip("/")) == before[IMAGE.lstrip("/")]
    entries = journal_entries(tree)
    actions = [e["action"] for e in entries]
    assert {"backup", "write", "initramfs", "run"} <= set(actions)
    assert all(e["run"] == "run1" for e in entries)

    # a second plan on the converged tree changes nothing in the files it owns
    _, opts2, res2 = plan_all(conn, tree, "run2")
    assert res2["linux.stable_device_names"].plan.empty
    assert res2["linux.initramfs_virtio"].plan.changes[0].kind == "rebuild_initramfs" or True  # facts are static here

    done = journal.rollback(conn, {"root": str(tree), "run_id": "rb", "guest": "t"})
    assert done
    for p, digest in before.items():
        assert sha(tree / p) == digest, p
    assert not (tree / "etc/systemd/network/10-guestprep-ens192.link").exists()
    assert not (tree / "etc/dracut.conf.d/90-guestprep-virtio.conf").exists()
    assert journal_entries(tree)[-1]["action"] == "rollback"
    # nothing left to roll back
    assert journal.rollback(conn, {"root": str(tree), "run_id": "rb2", "guest": "t"}) == []


def test_reapplying_the_same_plan_converges(tree):
    conn = local_conn()
    _, opts, res = plan_all(conn, tree)
    apply_ops(conn, res, opts, ["linux.stable_device_names", "linux.initramfs_virtio"])
    digest = sha(tree / "etc/fstab")
    n = len(journal_entries(tree))
    out = apply_ops(conn, res, {**opts, "run_id": "run1b"}, ["linux.stable_device_names"])
    assert "unchanged /etc/fstab" in out[0].steps[0]["output"]
    assert sha(tree / "etc/fstab") == digest
    assert len(journal_entries(tree)) == n + 2  # only the grub refresh ran again (backup + run)


def test_failed_rebuild_keeps_the_old_image_and_rerun_converges(tree):
    conn = local_conn()
    image = tree / IMAGE.lstrip("/")
    old = sha(image)
    (tree / "fake-dracut.mode").write_text("fail")
    _, opts, res = plan_all(conn, tree)
    with pytest.raises(OperationError, match=r"dracut failed for 6\.1\.0-18-amd64 .*old image is untouched"):
        apply_ops(conn, res, opts, ["linux.initramfs_virtio"])
    assert sha(image) == old
    assert not list(tree.glob("boot/*.guestprep-new"))
    (tree / "fake-dracut.mode").unlink()
    apply_ops(conn, res, {**opts, "run_id": "run2"}, ["linux.initramfs_virtio"])
    assert "virtio_scsi.ko" in image.read_text()


def test_rebuilt_image_without_virtio_is_refused(tree):
    conn = local_conn()
    image = tree / IMAGE.lstrip("/")
    old = sha(image)
    (tree / "fake-dracut.mode").write_text("ignore-conf")
    _, opts, res = plan_all(conn, tree)
    with pytest.raises(OperationError, match="virtio_blk is missing from the rebuilt image"):
        apply_ops(conn, res, opts, ["linux.initramfs_virtio"])
    assert sha(image) == old


def test_file_changed_since_the_plan_is_not_overwritten(tree):
    conn = local_conn()
    _, opts, res = plan_all(conn, tree)
    (tree / "etc/fstab").write_text(FSTAB + "/dev/sdb1 /data xfs defaults 0 0\n")  # an admin edits meanwhile
    with pytest.raises(OperationError, match="/etc/fstab changed since the plan was made"):
        apply_ops(conn, res, opts, ["linux.stable_device_names"])
    assert "/dev/sdb1 /data" in (tree / "etc/fstab").read_text()


@pytest.mark.skipif(os.geteuid() != 0, reason="a read-only bind mount needs root")
def test_read_only_boot_is_refused_before_anything_changes(tree):
    conn = local_conn()
    boot = tree / "boot"
    subprocess.run(["mount", "--bind", str(boot), str(boot)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(boot)], check=True)
        _, opts, res = plan_all(conn, tree)
        r = res["linux.initramfs_virtio"]
        assert r.error and "/boot is read-only" in r.error and "nothing was changed" in r.error
        # and the step itself refuses too, should the mount change between plan and apply
        from guestprep.operations.linux import changes as C
        from guestprep.models import Plan

        plan = Plan("linux.initramfs_virtio", "t", changes=[
            C.rebuild_initramfs("dracut", KVER, IMAGE, ["virtio_scsi"])])
        with pytest.raises(OperationError, match="not writable"):
            C.execute(conn, plan, opts)
    finally:
        subprocess.run(["umount", str(boot)], check=True)
    assert "virtio" not in (tree / IMAGE.lstrip("/")).read_text()


def test_connection_lost_during_rebuild_finishes_and_rerun_converges(sshd, tree):
    """The SSH channel drops while dracut runs: the step ignores the hangup and completes."""
    g = Guest(name="t", address=sshd.host, port=sshd.port, transport=Transport.SSH,
              credentials=Credentials(user="root", key_file=str(sshd.user_key), use_agent=False))
    conn = open_connector(g, ConnectOptions(known_hosts=str(sshd.known_hosts), connect_timeout=10))
    (tree / "fake-dracut.mode").write_text("slow")
    _, opts, res = plan_all(conn, tree)
    with pytest.raises(CommandTimeout):
        apply_ops(conn, res, {**opts, "rebuild_timeout": 1.5}, ["linux.initramfs_virtio"])
    conn.close()
    image = tree / IMAGE.lstrip("/")
    deadline = time.monotonic() + 30
    while "virtio_scsi" not in image.read_text() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert "virtio_scsi.ko" in image.read_text(), "the interrupted rebuild did not complete"
    assert not list(tree.glob("boot/*.guestprep-new"))
    json.loads((tree / "var/lib/guestprep/journal.json").read_text())  # never half-written
    # re-running over a new connection converges (config unchanged, image rebuilt again safely)
    (tree / "fake-dracut.mode").unlink()
    conn2 = local_conn()
    _, opts2, res2 = plan_all(conn2, tree, "run2")
    assert res2["linux.initramfs_virtio"].plan.changes[0].kind == "rebuild_initramfs"  # drop-in already there
    apply_ops(conn2, res2, opts2, ["linux.initramfs_virtio"])
    assert "virtio_scsi.ko" in image.read_text()


def test_sudo_refused_is_a_clear_error(sshd, tree, monkeypatch):
    if not sshd.password_user:
        pytest.skip("needs the sshd fixture's password user (root only)")
    monkeypatch.setenv("GP_TEST_SUDO_PW", "wrong-password")
    monkeypatch.setenv("GP_TEST_LOGIN_PW", sshd.password)
    g = Guest(name="t", address=sshd.host, port=sshd.port, transport=Transport.SSH,
              credentials=Credentials(user=sshd.password_user, password_env="GP_TEST_LOGIN_PW", use_agent=False,
                                      sudo=True, sudo_password_env="GP_TEST_SUDO_PW"))
    conn = open_connector(g, ConnectOptions(known_hosts=str(sshd.known_hosts), connect_timeout=10))
    try:
        with pytest.raises(GuestprepError, match="sudo"):
            engine.read_state(conn, "linux", {"root": str(tree), "run_id": "r", "guest": "t", "sudo": True})
    finally:
        conn.close()


def test_package_files_are_uploaded_to_a_private_dir(sshd, tmp_path):
    """--package-source: files travel over SFTP into a 0700 directory named by the run."""
    from guestprep.operations.linux.changes import _upload

    src = tmp_path / "qemu-guest-agent_8.2_amd64.deb"
    src.write_bytes(b"!<arch>\n" + b"x" * 1000)
    g = Guest(name="t", address=sshd.host, port=sshd.port, transport=Transport.SSH,
              credentials=Credentials(user="root", key_file=str(sshd.user_key), use_agent=False))
    conn = open_connector(g, ConnectOptions(known_hosts=str(sshd.known_hosts), connect_timeout=10))
    run_id = f"t{os.getpid()}"
    try:
        remote = _upload(conn, [str(src)], {"run_id": run_id, "guest": "t"})
    finally:
        conn.close()
    dest = Path(remote[0])
    try:
        assert dest == Path(f"/tmp/guestprep-packages-{run_id}/{src.name}")
        assert dest.read_bytes() == src.read_bytes()
        assert (dest.parent.stat().st_mode & 0o777) == 0o700
    finally:
        shutil.rmtree(dest.parent, ignore_errors=True)
