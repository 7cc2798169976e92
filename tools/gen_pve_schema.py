#!/usr/bin/env python3
"""Generate guestprep/data/pve_schema_subset.json from Proxmox's full apidata.json.

Keeps only the endpoints the finalizer calls, with types, enums, ranges, patterns and
property-string formats and no prose. Run after updating ../shared/pve-api/:

    .venv/bin/python tools/gen_pve_schema.py [../shared/pve-api/apidata.json]
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from guestprep.proxmox.schema import normalise_apidata  # noqa: E402

# Every (method, path) the finalizer sends; a test checks the client uses no other.
USED_ENDPOINTS = [
    ("POST", "/access/ticket"),
    ("GET", "/version"),
    ("GET", "/cluster/nextid"),
    ("GET", "/cluster/resources"),
    ("GET", "/nodes"),
    ("GET", "/nodes/{node}/storage"),
    ("GET", "/nodes/{node}/storage/{storage}/content"),
    ("GET", "/nodes/{node}/network"),
    ("GET", "/nodes/{node}/qemu"),
    ("POST", "/nodes/{node}/qemu"),
    ("DELETE", "/nodes/{node}/qemu/{vmid}"),
    ("GET", "/nodes/{node}/qemu/{vmid}/config"),
    ("POST", "/nodes/{node}/qemu/{vmid}/config"),
    ("PUT", "/nodes/{node}/qemu/{vmid}/config"),
    ("POST", "/nodes/{node}/qemu/{vmid}/status/start"),
    ("POST", "/nodes/{node}/qemu/{vmid}/status/stop"),
    ("POST", "/nodes/{node}/qemu/{vmid}/status/shutdown"),
    ("GET", "/nodes/{node}/qemu/{vmid}/status/current"),
    ("POST", "/nodes/{node}/qemu/{vmid}/agent/ping"),
    ("GET", "/nodes/{node}/qemu/{vmid}/agent/network-get-interfaces"),
    ("GET", "/nodes/{node}/tasks/{upid}/status"),
    ("GET", "/nodes/{node}/tasks/{upid}/log"),
]


def main(argv: list[str]) -> int:
    src = Path(argv[1]) if len(argv) > 1 else REPO.parent / "shared" / "pve-api" / "apidata.json"
    raw = src.read_bytes()
    full = normalise_apidata(json.loads(raw))
    endpoints: dict[str, dict] = {}
    for method, path in USED_ENDPOINTS:
        if method not in full.get(path, {}):
            print(f"{src}: {method} {path} not found", file=sys.stderr)
            return 2
        endpoints.setdefault(path, {})[method] = full[path][method]
    doc = {
        "source": f"apidata.json sha256:{hashlib.sha256(raw).hexdigest()[:16]}",
        "generated_by": "tools/gen_pve_schema.py",
        "endpoints": endpoints,
    }
    out = REPO / "guestprep" / "data" / "pve_schema_subset.json"
    out.write_text(json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"wrote {out.relative_to(REPO)} ({out.stat().st_size} bytes, {len(USED_ENDPOINTS)} endpoints)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
