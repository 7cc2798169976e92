"""`guestprep-host reclaim --manifest M`: remove the partial target a killed conversion left.

For a cleanup that converts nothing (a rehearsal's temporary volumes, an abandoned cutover): the
claim beside the manifest (hostside/claim.py) names the partial target and the process that made
it; when that process is gone, the partial is removed, then the claim. Only a name of the shape a
conversion gives its temporary target is ever touched (`/abs/path.partial`, a zvol or LV called
`guestprep-partial-*`), whatever the claim says.
"""

from __future__ import annotations

import os

from hostside import claim
from hostside.errors import TargetRefused
from hostside.storage import (PARTIAL_PREFIX, PARTIAL_SUFFIX, FileTarget, LvmThinTarget, Target,
                              ZvolTarget)


def target_of(doc: dict, where: str) -> Target:
    kind, partial = doc.get("kind"), doc["partial"]
    target: Target | None = None
    if kind in ("qcow2", "raw") and os.path.isabs(partial) and partial.endswith(PARTIAL_SUFFIX):
        target = FileTarget(kind, partial[:-len(PARTIAL_SUFFIX)])
    elif kind == "zvol":
        parent, _, name = partial.rpartition("/")
        if parent and name.startswith(PARTIAL_PREFIX) and len(name) > len(PARTIAL_PREFIX):
            target = ZvolTarget(f"{parent}/{name[len(PARTIAL_PREFIX):]}")
    elif kind == "lvmthin" and isinstance(doc.get("target"), str):
        target = LvmThinTarget(doc["target"])
    if target is None or target.partial_name() != partial:
        raise TargetRefused(f"the claim names {partial!r} ({kind}), which is not a temporary "
                            "target name a conversion gives: not removing it", where)
    return target


def reclaim(manifest: str) -> dict:
    where = claim.path_for(manifest)
    parent = os.path.dirname(os.path.abspath(manifest))
    if not os.path.isdir(parent):   # a mistyped path must not read as "nothing to remove"
        raise TargetRefused("the manifest's directory does not exist", parent)
    doc = claim.read(manifest)
    if doc is None:
        return {"claim": None, "partial": None, "removed": False,
                "manifest_exists": os.path.lexists(manifest)}
    if doc.get("empty"):
        claim.release(manifest)
        return {"claim": where, "partial": None, "removed": False}
    if claim.owner_alive(doc):
        raise TargetRefused(f"the conversion that holds this claim is still running "
                            f"({claim.describe(doc)})", where)
    return {"claim": where, **claim.discard(manifest, target_of(doc, where), doc)}
