"""One disk to convert: what the command line or a hand-off document asks for.

Kept apart from hostside.handoff so that a single-disk `convert SRC` does not import the
hand-off reader (guestprep.handoff and the models it needs): start-up time is part of
every conversion.
"""

from __future__ import annotations

from hostside.record import dataclass, field
TYPE_CHECKING = False   # typing is not imported at run time (start-up time, issue 17)

if TYPE_CHECKING:
    from typing import Any


@dataclass
class DiskJob:
    label: str
    where: str                      # "FILE: disks[i]" for messages
    source: str | None = None
    source_from: str = ""           # which field (or flag) gave the source
    kind: str | None = None         # hostside target kind
    dest: str | None = None
    volid: str | None = None        # Proxmox volume id of the target (None: --dest)
    document_volid: str | None = None
    makes_dir: str | None = None
    volblocksize: str | None = None
    skipped: str | None = None      # reason the disk is not converted
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "source": self.source, "source_from": self.source_from,
                "kind": self.kind, "dest": self.dest, "volid": self.volid,
                "document_volid": self.document_volid, "skipped": self.skipped,
                "warnings": self.warnings}
