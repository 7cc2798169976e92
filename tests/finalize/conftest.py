"""Fixtures for the finalizer: the Proxmox API test server and source VM shapes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from guestprep.proxmox.client import PveClient, PveConnection
from guestprep.proxmox.schema import load_full
from tests.finalize.pve_server import PveTestServer, Storage

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def apidata(repo_root) -> Path:
    path = Path(repo_root).parent / "shared" / "pve-api" / "apidata.json"
    if not path.is_file():
        pytest.fail(f"the Proxmox API schema is missing: {path}")
    return path


@pytest.fixture(scope="session")
def full_schema(apidata):
    return load_full(str(apidata))


@pytest.fixture(scope="session")
def samples_dir(repo_root) -> Path:
    d = Path(repo_root).parent / "shared" / "samples" / "vmx"
    if not d.is_dir():
        pytest.fail(f"vmx samples missing: {d}")
    return d


IMPORT_STORAGE = "dsimport"


@pytest.fixture
def pve(apidata, tmp_path, source_disks):
    server = PveTestServer(apidata, tmp_path).start()
    # the test datastore is also an 'import' storage on pve1: API tokens import by volume id
    root = str(source_disks["boot.vmdk"].parent.parent)
    server.state.nodes["pve1"]["storages"][IMPORT_STORAGE] = Storage(IMPORT_STORAGE, "dir", "import", path=root)
    yield server
    server.stop()


@pytest.fixture
def token_conn(pve):
    st = pve.state
    token_id, secret = next(iter(st.tokens.items()))
    user, name = token_id.split("!")
    return PveConnection(host=pve.host, port=pve.port, user=user, token_name=name, token_secret=secret,
                         ca_file=str(pve.ca))


@pytest.fixture
def client(token_conn):
    return PveClient(token_conn, poll_interval=0.02, sleep=lambda s: __import__("time").sleep(min(s, 0.02)))


@pytest.fixture(scope="session")
def source_disks(tmp_path_factory) -> dict[str, Path]:
    """Real (tiny) vmdk files made by qemu-img, so import-from points at something real.

    They sit in ``<datastore>/import/``: the datastore is mapped in the policies, and the
    test server serves the same directory as an 'import' storage."""
    d = tmp_path_factory.mktemp("datastore") / "import"
    d.mkdir()
    out = {}
    for name in ("boot.vmdk", "data1.vmdk", "data2.vmdk"):
        p = d / name
        subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", str(p), "64M"], check=True)
        out[name] = p
    return out
