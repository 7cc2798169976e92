"""A vCenter simulator whose /folder demands a live session cookie (tests/cutover/vcsim_folder/main.go),
and the lab VM's disk placed in the simulated datastore itself, as an ESXi descriptor + flat extent,
so the node can only read it over HTTPS."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.cutover.conftest import Lab
from tests.support.cachelock import exclusive
from tests.vsphere import simulator as simlib

GO_MAIN = Path(__file__).resolve().parent / "vcsim_folder" / "main.go"


def build() -> Path:
    """Built once per source hash into the suite's cache (the Go build cache is shared with the
    plain simulator's: a few seconds)."""
    digest = hashlib.sha256(GO_MAIN.read_bytes()).hexdigest()[:16]
    cache = simlib._cache_root()
    out_dir = cache / f"vcsim-folder-{digest}"
    binary = out_dir / "vcsim"
    if binary.exists():
        return binary
    if not shutil.which("go"):
        raise simlib.SimulatorUnavailable("`go` not found: apt-get install golang-go")
    out_dir.mkdir(parents=True, exist_ok=True)
    with exclusive(out_dir.with_name(out_dir.name + ".lock"), "the cookie-checking simulator"):
        if not binary.exists():
            work = Path(tempfile.mkdtemp(prefix="build-", dir=out_dir))
            try:
                shutil.copy(GO_MAIN, work / "main.go")
                env = dict(os.environ, GO111MODULE="off", GOPATH=simlib.GOPATH, GOCACHE=str(cache / "gocache"),
                           GOFLAGS="", CGO_ENABLED="0")
                r = subprocess.run(["go", "build", "-o", str(work / "vcsim"), "main.go"], cwd=work, env=env,
                                   capture_output=True, text=True, timeout=600)
                if r.returncode != 0:
                    raise simlib.SimulatorUnavailable(f"building the simulator failed:\n{r.stderr[-2000:]}")
                os.replace(work / "vcsim", binary)
            finally:
                shutil.rmtree(work, ignore_errors=True)
    return binary


def place_disk_in_datastore(lab_) -> Path:
    """The lab VM's disk becomes the simulated datastore's own file, as ESXi keeps it: the
    descriptor at the VM's datastore path and its ``-flat.vmdk`` beside it. The policy then maps no
    datastore: the node has no mount and must stream. Returns the descriptor's path."""
    from guestprep.operations.vm import target

    _, facts = target.load(lab_.vs, lab_.vm_name, "test")
    ds_name, rel = facts.disks[0].datastore_path[1:].split("] ", 1)
    ds = next(d for d in lab_.vm.datastore if d.name == ds_name)
    root = Path(ds.info.url)
    desc = root / rel
    desc.parent.mkdir(parents=True, exist_ok=True)
    for stale in (desc, desc.with_name(desc.stem + "-flat.vmdk")):
        stale.unlink(missing_ok=True)
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "vmdk", "-o", "subformat=monolithicFlat",
                    str(lab_.raw), str(desc)], check=True)
    shutil.rmtree(lab_.ds, ignore_errors=True)   # the copy Lab made for a mounted datastore: gone
    policy = json.loads(lab_.policy.read_text())
    policy.pop("datastores", None)
    lab_.policy.write_text(json.dumps(policy))
    return desc


# --------------------------------------------------------------------------- fixtures (imported by the test modules)


@pytest.fixture(scope="module")
def folder_sim(tmp_path_factory):
    import secrets as pysecrets

    try:
        binary = build()
    except simlib.SimulatorUnavailable as exc:
        pytest.fail(f"vCenter simulator unavailable: {exc}")
    d = tmp_path_factory.mktemp("vcsim-folder")
    delay_file = d / "folder-delay-ms"
    saved = os.environ.get("VCSIM_FOLDER_DELAY_FILE")
    os.environ["VCSIM_FOLDER_DELAY_FILE"] = str(delay_file)   # the simulator's environment, read once
    try:
        s = simlib.Simulator(binary, simlib.make_certs(d), "pw-" + pysecrets.token_hex(8), vms_per_pool=4)
    finally:
        os.environ.pop("VCSIM_FOLDER_DELAY_FILE") if saved is None else os.environ.update(
            VCSIM_FOLDER_DELAY_FILE=saved)
    s.delay_file = delay_file
    yield s
    s.close()


@pytest.fixture(scope="module")
def folder_vs(folder_sim):

    s = folder_sim.connect()
    yield s
    s.close()


@pytest.fixture
def slab(tmp_path, folder_sim, folder_vs, sshd, apidata, zipapp):
    """``slab(VM, vmid)``: a Lab whose disk only the simulator's /folder serves."""
    made = []

    def make(vm_name: str, vmid: int) -> Lab:
        d = tmp_path / vm_name
        d.mkdir()
        made.append(Lab(d, folder_sim, folder_vs, sshd, apidata, zipapp, vm_name, vmid, "10.0.0.42"))
        made[-1].descriptor = place_disk_in_datastore(made[-1])
        return made[-1]

    yield make
    folder_sim.delay_file.unlink(missing_ok=True)
    for lab_ in made:
        lab_.close()
