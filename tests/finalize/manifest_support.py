"""A guestprep-host manifest as convert writes it, for finalize tests (hostside's real digest)."""

from __future__ import annotations

import json
from pathlib import Path

from guestprep.finalize.manifests import MANIFEST_SUFFIX
from guestprep.handoff import Handoff
from hostside.convert import MANIFEST_SCHEMA, target_digest


def identify(h: Handoff, tmp_path: Path) -> Handoff:
    """Give an in-memory hand-off the identity load_handoff would (path, sha256)."""
    h.path, h.sha256 = str(tmp_path / "vm.handoff.json"), "ab" * 32
    return h


def write_manifest(directory: Path, h: Handoff, volid: str, size: int, *, target_file: Path | None = None,
                   **handoff_changes) -> Path:
    """The manifest of ``volid``: for a reachable file, its real digest; else a zvol's stated one."""
    volname = volid.split(":", 1)[1]
    if target_file is not None:
        path, digest = str(target_file), target_digest(str(target_file))
    else:
        path = f"/dev/zvol/rpool/data/{volname}"
        digest = {"algorithm": "sha256-data-runs/2", "sha256": "cd" * 32, "size": size}
    doc = {"schema": MANIFEST_SCHEMA,
           "target": {"kind": "zvol", "path": path, "size": size, "digest": digest},
           "handoff": {**h.identity(), "disk": h.disks[0].label, "volid": volid, **handoff_changes}}
    out = directory / (volname.replace("/", "_") + MANIFEST_SUFFIX)
    out.write_text(json.dumps(doc))
    return out
