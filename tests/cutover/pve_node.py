"""The Proxmox API test server (tests/finalize/pve_server.py) joined to a node's disk: the ``local``
dir storage of pve1 lists the volumes guestprep-host wrote under ``<path>/images/<vmid>/``, the
way Proxmox lists a dir storage's files, so finalize attaches what the node converted.

Only wraps the server (its file is not edited): before each request the storage is re-read
from disk. Volumes the server itself allocates stay in memory as before.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from tests.finalize.pve_server import PveTestServer, Storage, Volume

VOLUME_FILE = re.compile(r"vm-(\d+)-disk-\d+\.(qcow2|raw)")


class PveNodeServer(PveTestServer):
    def __init__(self, apidata: Path, tls_dir: Path, storage_dir: Path):
        super().__init__(apidata, tls_dir)
        self.storage_dir = storage_dir
        (storage_dir / "images").mkdir(parents=True, exist_ok=True)
        self.state.nodes["pve1"]["storages"]["local"] = Storage("local", "dir", "images,iso", path=str(storage_dir))
        inner = self.api.handle

        def handle(method, path, params, headers):
            with self.state.lock:
                self._sync_from_disk()
            return inner(method, path, params, headers)

        self.api.handle = handle  # the HTTP handler calls api.handle

    def _sync_from_disk(self) -> None:
        st = self.state.nodes["pve1"]["storages"]["local"]
        for f in (self.storage_dir / "images").glob("*/*"):
            m = VOLUME_FILE.fullmatch(f.name)
            if not m or f.parent.name != m.group(1):
                continue  # temporary (.partial) names are not volumes yet
            volid = f"local:{m.group(1)}/{f.name}"
            if volid not in st.volumes:  # Proxmox lists a volume's virtual size
                info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(f)], check=True,
                                                 capture_output=True, text=True).stdout)
                st.volumes[volid] = Volume(volid, int(info["virtual-size"]), m.group(2), int(m.group(1)))

    # what a test asserts: how many VMs and volumes exist for a vmid
    def vms_with(self, vmid: int) -> list[int]:
        return [v for v in self.state.vms if v == vmid]

    def volumes_of(self, vmid: int) -> list[str]:
        return sorted(v.volid for st in self.state.nodes["pve1"]["storages"].values()
                      for v in st.volumes.values() if v.vmid == vmid)
