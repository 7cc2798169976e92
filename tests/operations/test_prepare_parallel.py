"""prepare/rollback over several SSH guests at once.

The CLI plans a fleet of four "guests" that are all the test sshd (plans only read), plus
one whose port is closed. Apply and rollback run through the same parallel runner on four
guest trees under root prefixes (the step scripts over real SSH sessions), so nothing on
this machine changes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from guestprep.connectors import ConnectOptions, open_connector
from guestprep.facts.linux_model import Kernel
from guestprep.models import Credentials, Guest, Transport
from guestprep.operations import engine
from guestprep.operations.linux import journal
from guestprep.runner import run_guests

from planfixtures import PLANS, load

pytestmark = pytest.mark.integration

GUESTPREP = str(Path(sys.executable).parent / "guestprep")
FAKEBIN = Path(__file__).resolve().parent / "fakebin"
KVER = "6.1.0-18-amd64"
IMAGE = f"boot/initrd.img-{KVER}"
LINUX_OPS = ("linux.stable_device_names", "linux.nic_name_pinning", "linux.initramfs_virtio",
             "linux.qemu_guest_agent")
RESTORED = ("etc/fstab", "etc/default/grub", "boot/grub/grub.cfg", IMAGE)


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([GUESTPREP, *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "COLUMNS": "200"})


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def fleet(ssh_inventory):
    """Four guests on the test sshd, the third entry a guest whose port nobody listens on."""
    path = ssh_inventory(4)
    text = path.read_text().replace("  - name: guest002", f"  - name: gone\n    address: 127.0.0.1\n"
                                    f"    port: {closed_port()}\n    user: root\n    os: linux\n  - name: guest002")
    path.write_text(text)
    return path


def test_fleet_plan_lists_every_guest_and_the_broken_one_sets_the_exit_code(fleet, sshd, tmp_path):
    out = tmp_path / "plan.json"
    res = run("prepare", "-i", str(fleet), "--known-hosts", str(sshd.known_hosts), "-p", "5", "--timeout", "60",
              "--json-out", str(out))
    assert res.returncode == 3, res.stdout + res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    doc = json.loads(out.read_text())
    assert doc["schema"] == "guestprep.prepare/1" and doc["apply"] is False and doc["complete"] is True
    names = [g["guest"] for g in doc["guests"]]
    assert names == ["guest000", "guest001", "gone", "guest002", "guest003"]
    by = {g["guest"]: g for g in doc["guests"]}
    assert by["gone"]["status"] == "unreachable" and by["gone"]["error"] and by["gone"]["ops"] == []
    for n in ("guest000", "guest001", "guest002", "guest003"):
        # unknown: this test host may have no installed kernel, and prepare then cannot tell (issue 16 item 2)
        assert by[n]["status"] in ("planned", "unchanged", "unknown"), by[n]
        if by[n]["status"] == "unknown":
            assert [o["error"] for o in by[n]["ops"] if o["error"]] == [
                o["error"] for o in by[n]["ops"] if o["error"] and o["error"].startswith("cannot tell: ")]
        assert by[n]["applied"] == [] and by[n]["verified"] == []
        assert by[n]["failure"] is None or (by[n]["status"] == "unknown" and "cannot tell: " in by[n]["failure"])
        assert {o["operation"] for o in by[n]["ops"]} >= set(LINUX_OPS)
    assert doc["summary"]["total"] == 5 and doc["summary"]["unreachable"] == 1

    # text output: each guest's block whole (every operation once), then the table
    lines = res.stdout.splitlines()
    heads = [i for i, ln in enumerate(lines) if ln.startswith("─") and "(linux)" in ln]
    table = next(i for i, ln in enumerate(lines) if "guestprep prepare (plan)" in ln)
    assert len(heads) == 5 and heads[-1] < table
    for start, end in zip(heads, heads[1:] + [table]):
        name = lines[start].strip("─ ").split()[0]
        block = [ln for ln in lines[start + 1:end]]
        if name == "gone":
            assert len(block) == 1 and block[0].startswith("error:")
            continue
        for op in LINUX_OPS:
            assert sum(1 for ln in block if ln[2:].startswith(op + ":")) == 1, (name, op, block)
    assert all(n in "\n".join(lines[table:]) for n in names)


def comparable(doc: dict) -> dict:
    return {g["guest"]: (g["status"], g["planned"], [(o["operation"], o["error"], o["plan"]) for o in g["ops"]])
            for g in doc["guests"]}


def test_parallel_plan_equals_sequential_plan(fleet, sshd):
    common = ["prepare", "-i", str(fleet), "--known-hosts", str(sshd.known_hosts), "--timeout", "60", "--json"]
    seq, par = run(*common, "-p", "1"), run(*common, "-p", "4")
    assert seq.returncode == par.returncode == 3, seq.stderr + par.stderr
    seq_doc, par_doc = json.loads(seq.stdout), json.loads(par.stdout)
    assert (seq_doc["parallel"], par_doc["parallel"]) == (1, 4)
    assert comparable(seq_doc) == comparable(par_doc)


def test_bad_json_out_is_refused_before_any_guest_is_touched(fleet, sshd, tmp_path):
    res = run("prepare", "-i", str(fleet), "--apply", "--json-out", str(tmp_path / "missing" / "r.json"))
    assert res.returncode == 2 and "--json-out" in res.stderr and "does not exist" in res.stderr
    assert "Traceback" not in res.stderr and "guest000" not in res.stdout
    res = run("rollback", "-i", str(fleet))
    assert res.returncode == 2 and "name the guests to roll back" in res.stderr


# --------------------------------------------------------------------------- apply + rollback, trees over SSH


def make_tree(root: Path) -> Path:
    for d in ("etc/dracut.conf.d", "etc/systemd/network", "etc/default", "boot/grub", "usr/bin", "var/lib"):
        (root / d).mkdir(parents=True)
    (root / "etc/fstab").write_text("/dev/sda1 / ext4 errors=remount-ro 0 1\n/dev/sda5 none swap sw 0 0\n")
    (root / "etc/default/grub").write_text('GRUB_CMDLINE_LINUX="console=ttyS0 resume=/dev/sda5"\n')
    (root / "boot/grub/grub.cfg").write_text(f"# original grub.cfg of {root.name}\n")
    (root / IMAGE).write_text(f"usr/lib/modules/{KVER}/kernel/drivers/scsi/vmw_pvscsi.ko\n")
    for tool in FAKEBIN.iterdir():
        shutil.copy2(tool, root / "usr/bin" / tool.name)
    return root


def tree_facts():
    f = load(PLANS / "debian12-dracut-hostonly.json")["facts"]
    f.kernels = [Kernel(version=KVER, running=True, initramfs="/" + IMAGE, initramfs_size=20 * 1024 * 1024,
                        initramfs_modules={"vmw_pvscsi", "sd_mod"})]
    f.vmware_tools = {"present": False}
    f.qemu_guest_agent = {"installed": True, "enabled": True}
    f.cmdline_root = "UUID=2f6c1d1e-93b5-4d6b-a1a5-0c6b0d1f6a11"
    return f


def digest(root: Path) -> dict[str, str]:
    return {p: hashlib.sha256((root / p).read_bytes()).hexdigest() for p in RESTORED}


def test_parallel_apply_and_rollback_keep_each_guest_journal_its_own(sshd, tmp_path):
    trees = {f"t{i}": make_tree(tmp_path / f"t{i}") for i in range(4)}
    before = {n: digest(t) for n, t in trees.items()}
    guests = [Guest(name=n, address=sshd.host, port=sshd.port, transport=Transport.SSH,
                    credentials=Credentials(user="root", key_file=str(sshd.user_key), use_agent=False))
              for n in trees]
    copts = ConnectOptions(known_hosts=str(sshd.known_hosts), connect_timeout=10)
    ops = {o.id: o for o in engine.operations_for("linux")}
    printed_by: set[str] = set()

    def apply_job(g, interrupt):
        conn = interrupt.tracking(lambda g: open_connector(g, copts))(g)
        try:
            opts = {"root": str(trees[g.name]), "run_id": f"run-{g.name}", "guest": g.name}
            opts["state"] = engine.read_state(conn, "linux", opts)
            plans = {r.operation: r.plan for r in engine.plan_guest(tree_facts(), g.name, "linux", opts)}
            return g.name, [ops[i].apply(conn, plans[i], opts).ok for i in LINUX_OPS[:3]]
        finally:
            conn.close()

    run_ = run_guests(guests, apply_job, 4, crashed=lambda g, e: (g.name, repr(e)),
                      on_done=lambda r: printed_by.add(threading.current_thread().name))
    assert run_.complete and [r[0] for r in run_.results] == list(trees)
    assert all(r[1] == [True, True, True] for r in run_.results), run_.results
    assert printed_by == {threading.main_thread().name}   # output only ever comes from one thread
    for n, t in trees.items():
        assert "virtio_scsi.ko" in (t / IMAGE).read_text()
        entries = json.loads((t / "var/lib/guestprep/journal.json").read_text())
        assert entries and {e["run"] for e in entries} == {f"run-{n}"}   # never another guest's entries
        assert f"of {n}" in (t / f"var/lib/guestprep/backup/run-{n}/boot/grub/grub.cfg").read_text()

    def rollback_job(g, interrupt):
        conn = interrupt.tracking(lambda g: open_connector(g, copts))(g)
        try:
            return g.name, journal.rollback(conn, {"root": str(trees[g.name]), "run_id": "rb", "guest": g.name})
        finally:
            conn.close()

    rb = run_guests(guests, rollback_job, 4, crashed=lambda g, e: (g.name, repr(e)))
    assert all(isinstance(done, list) and done for _, done in rb.results), rb.results
    for n, t in trees.items():
        assert digest(t) == before[n], n
        assert not (t / "etc/dracut.conf.d/90-guestprep-virtio.conf").exists()


def test_a_job_that_raises_becomes_that_guests_result():
    guests = [Guest(name=f"g{i}", address="h", transport=Transport.SSH) for i in range(5)]

    def job(g, interrupt):
        if g.name == "g2":
            raise RuntimeError("bug in one guest")
        return g.name, "ok"

    res = run_guests(guests, job, 3, crashed=lambda g, e: (g.name, f"crashed: {e}"))
    assert res.results == [("g0", "ok"), ("g1", "ok"), ("g2", "crashed: bug in one guest"), ("g3", "ok"), ("g4", "ok")]
    assert res.complete and res.not_run == []
