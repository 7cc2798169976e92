"""Which converted volumes finalize may attach (issue 13, item 2).

guestprep-host writes a manifest for every volume it converted and verified, last and
atomically; a volume without one may be a conversion that died halfway. So finalize
attaches a hand-off volume only when its manifest is present and matches: the volume id,
the size, the content digest and the identity of the hand-off that named it. A volume still
under a temporary name (``guestprep-partial-*``, ``*.partial``) is never attached.

Manifests are looked up in directories (``*.guestprep-manifest.json``; by default the hand-off's
own directory) and matched by the volume id they record. When the volume is a file (or device)
reachable here, its digest is recomputed; for a zvol or LV on a remote node the manifest's
statements are compared with the hand-off and with what Proxmox reports for the volume.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from guestprep.errors import ConfigError
from guestprep.handoff import Handoff

MANIFEST_SUFFIX = ".guestprep-manifest.json"
MANIFEST_SCHEMA = "guestprep.host-manifest/2"   # hostside.convert.MANIFEST_SCHEMA
PARTIAL_PREFIX, PARTIAL_SUFFIX = "guestprep-partial-", ".partial"   # hostside.storage's temporary names


def is_partial_name(volid: str) -> bool:
    """``local-zfs:guestprep-partial-vm-100-disk-0`` or ``local:100/vm-100-disk-0.qcow2.partial``."""
    name = volid.split(":", 1)[-1].rsplit("/", 1)[-1]
    return name.startswith(PARTIAL_PREFIX) or name.endswith(PARTIAL_SUFFIX)


def load_manifests(dirs: list[str]) -> dict[str, tuple[str, dict[str, Any]]]:
    """volid -> (file, manifest) for every readable guestprep-host manifest in ``dirs``."""
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    for d in dirs:
        try:
            names = sorted(p for p in os.listdir(d) if p.endswith(MANIFEST_SUFFIX))
        except OSError:
            continue
        for name in names:
            path = os.path.join(d, name)
            try:
                doc = json.loads(Path(path).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue              # not ours to judge here; a missing match is reported per volume
            handoff = doc.get("handoff") if isinstance(doc, Mapping) else None
            volid = handoff.get("volid") if isinstance(handoff, Mapping) else None
            if isinstance(volid, str) and doc.get("schema") == MANIFEST_SCHEMA:
                found.setdefault(volid, (path, doc))
    return found


def _recomputed_digest(path: str, algorithm: str) -> dict[str, Any] | None:
    """The digest of the volume as stored, when it is reachable here (a file or device)."""
    if not path or not os.path.exists(path):
        return None
    from hostside.convert import target_digest   # the one definition of the digest

    return target_digest(path, algorithm)


def differences(volid: str, manifest: Mapping[str, Any], h: Handoff, listed: Mapping[str, Any]) -> list[str]:
    """What does not match between the manifest, the hand-off and the volume Proxmox lists."""
    target = manifest.get("target") if isinstance(manifest.get("target"), Mapping) else {}
    handoff = manifest.get("handoff") if isinstance(manifest.get("handoff"), Mapping) else {}
    stated = target.get("digest") if isinstance(target.get("digest"), Mapping) else {}
    out = []
    if handoff.get("volid") != volid:
        out.append(f"manifest volume {handoff.get('volid')!r}")
    volname = volid.split(":", 1)[-1]
    if not str(target.get("path") or "").endswith("/" + volname):
        out.append(f"target path {target.get('path')!r} in the manifest is not volume {volname!r}")
    if handoff.get("sha256") != h.sha256:
        out.append(f"hand-off sha256 {str(handoff.get('sha256'))[:16]}… in the manifest, "
                   f"{h.sha256[:16] or 'unknown'}… here (converted from another hand-off document)")
    if handoff.get("vm_uuid") != h.vm.uuid_bios:
        out.append(f"VM uuid {handoff.get('vm_uuid')!r} in the manifest, {h.vm.uuid_bios!r} here")
    if listed.get("size") is not None and target.get("size") != listed.get("size"):
        out.append(f"size {target.get('size')} in the manifest, {listed.get('size')} on Proxmox")
    from hostside.verify import KNOWN_DIGESTS   # each recomputed exactly by its own definition

    algorithm = stated.get("algorithm")
    if not isinstance(stated.get("sha256"), str) or not isinstance(algorithm, str):
        out.append("the manifest records no content digest")
        return out
    if algorithm not in KNOWN_DIGESTS:
        # a digest of another definition cannot be compared: the same bytes give another value
        out.append(f"its content digest is {algorithm!r}, written by another guestprep-host version; this one "
                   f"computes {' or '.join(map(repr, KNOWN_DIGESTS))}: convert again with the guestprep-host that ships with this "
                   "controller")
        return out
    actual = _recomputed_digest(str(target.get("path") or ""), algorithm)
    if actual is not None and (actual["sha256"], actual["size"]) != (stated["sha256"], stated.get("size")):
        out.append(f"content digest {actual['sha256'][:16]}… (size {actual['size']}) of {target.get('path')}, "
                   f"{stated['sha256'][:16]}… (size {stated.get('size')}) in the manifest: the volume changed "
                   "after its conversion")
    return out


def check_attachable(volid: str, h: Handoff, listed: Mapping[str, Any],
                     manifests: Mapping[str, tuple[str, Mapping[str, Any]]], looked_in: list[str]) -> None:
    """ConfigError (exit 2) naming the volume and what differs; nothing is created before this."""
    where = f"volume {volid}"
    if is_partial_name(volid):
        raise ConfigError("still under a temporary name (guestprep-partial-* / *.partial): an interrupted "
                          "conversion, never attached", where=where)
    if volid not in manifests:
        raise ConfigError(f"no guestprep-host manifest for it (looked in {', '.join(looked_in) or 'nothing'}; "
                          "give --manifests DIR): an unverified volume is never attached", where=where)
    path, manifest = manifests[volid]
    diff = differences(volid, manifest, h, listed)
    if diff:
        raise ConfigError(f"its manifest {path} does not match: " + "; ".join(diff), where=where)
