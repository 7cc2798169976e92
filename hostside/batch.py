"""Convert the disks of one run: check every disk first, then convert them one by one.

Every source is inspected and audited and every target preflighted before the first
target is created, so a bad disk in a hand-off stops the run with nothing written.
A failure during a later conversion removes that disk's partial target; disks already
converted are complete and verified, keep their manifests, and are named in the error
(rerun the rest with --disk LABEL).
"""

from __future__ import annotations

import os
from hostside.record import dataclass, field
TYPE_CHECKING = False   # typing is not imported at run time (start-up time, issue 17)

from hostside import audit as audit_mod
from hostside import convert as convert_mod
from hostside import image, storage
from hostside.errors import GuestprepError, TargetRefused
from hostside.phases import Clock

if TYPE_CHECKING:   # the hand-off modules are imported by --handoff runs only
    from typing import Callable

    from guestprep.handoff import Handoff
    from hostside.handoff import DiskJob


@dataclass
class TargetOptions:
    allow_qcow2_on_zfs: bool = False
    volblocksize: str | None = None     # None: the storage's blocksize, else 16k
    overwrite_device: bool = False


@dataclass
class Ready:
    job: DiskJob
    source: image.Source
    target: storage.Target
    audit: dict
    prep: convert_mod.Prepared | None = None   # None: dry run, directory not made yet
    notes: list[str] = field(default_factory=list)
    clock: Clock = field(default_factory=Clock)

    def plan_dict(self) -> dict:
        d = self.job.to_dict()
        d.update(source_info=self.source.to_dict(), target=self.target.to_dict(),
                 audit=self.audit, notes=self.notes,
                 manifest=self.prep.manifest_path if self.prep else None,
                 required_bytes=int(self.prep.measured["required"]) if self.prep else None)
        return d


def _with_disk(exc: GuestprepError, job: DiskJob, single: bool) -> GuestprepError:
    if not single:
        disk = f"disk {job.label!r} ({job.where})"
        exc.where = f"{disk}: {exc.where}" if exc.where else disk
    return exc


def _firmware_note(doc: Handoff | None, job: DiskJob, audit: dict) -> str | None:
    if doc is None:
        return None
    from hostside.handoff import boot_label
    if job.label != boot_label(doc) or not audit.get("performed"):
        return None
    implied, declared = audit.get("firmware"), doc.vm.firmware
    if (implied == "uefi") != (declared == "efi") and implied in ("uefi", "bios"):
        return (f"the boot disk's layout implies {implied.upper()} but source_vm.firmware is "
                f"{declared}: finalize builds the VM from source_vm; check before the cutover")
    return None


def _missing_dirs(path: str) -> list[str]:
    """`path` and the ancestors of it that do not exist, outermost first."""
    out = []
    while path and not os.path.isdir(path):
        out.insert(0, path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return out


def prepare_all(jobs: list[DiskJob], doc: Handoff | None, src_opts: image.SourceOptions,
                secrets, topts: TargetOptions,
                copts: convert_mod.ConvertOptions, *, dry_run: bool,
                made_dirs: list[str], reporter_for: Callable | None = None) -> list[Ready]:
    """Inspect, audit and preflight every job; create nothing but missing image dirs
    (recorded in `made_dirs` so the caller can remove them again). `reporter_for(job)`
    hears each phase as it starts (progress bar / JSON events)."""
    single = doc is None
    out: list[Ready] = []
    for job in jobs:
        if job.skipped:
            continue
        try:
            assert job.source is not None and job.kind is not None and job.dest is not None
            clock = Clock(reporter_for(job) if reporter_for else None)
            with clock.phase("inspect"):
                src = image.inspect(job.source, src_opts, secrets)
                target = storage.make_target(
                    job.kind, job.dest, allow_qcow2_on_zfs=topts.allow_qcow2_on_zfs,
                    volblocksize=topts.volblocksize or job.volblocksize or "16k",
                    overwrite_device=topts.overwrite_device)
            with clock.phase("audit"):
                audit = audit_mod.manifest_section(src, doc.vm.name if doc else None)
            ready = Ready(job, src, target, audit, clock=clock)
            note = _firmware_note(doc, job, ready.audit)
            if note:
                job.warnings.append(note)
            missing = _missing_dirs(job.makes_dir) if job.makes_dir else []
            if missing and dry_run:
                ready.notes.append(f"creates directory {missing[-1]}")
            else:
                for d in missing:
                    try:
                        os.mkdir(d, 0o755)
                    except OSError as exc:
                        raise TargetRefused(f"cannot create the image directory: {exc.strerror}",
                                            d) from None
                    made_dirs.append(d)
                ready.prep = convert_mod.prepare(src, target, copts, clock)
        except GuestprepError as exc:
            raise _with_disk(exc, job, single) from None
        out.append(ready)
    return out


def remove_dirs(made_dirs: list[str]) -> None:
    for d in reversed(made_dirs):
        try:
            os.rmdir(d)   # only if still empty: never removes anything but what we made
        except OSError:
            pass


def execute_all(readies: list[Ready], doc: Handoff | None,
                progress_for: Callable[[DiskJob], Callable] | None = None) -> list[dict]:
    """Convert one disk after the other. Each disk's reporter ends with `done` (manifest
    written), or `failed` / `interrupted` (nothing else follows for that run)."""
    single = doc is None
    manifests: list[dict] = []
    for r in readies:
        assert r.prep is not None
        extra: dict = {"audit": r.audit, "handoff": None}
        if doc is not None:
            extra["handoff"] = dict(doc.identity(), disk=r.job.label, volid=r.job.volid,
                                    document_volid=r.job.document_volid,
                                    source_from=r.job.source_from, warnings=r.job.warnings)
        progress = r.clock.reporter or (progress_for(r.job) if progress_for else None)
        try:
            manifests.append(convert_mod.execute(r.prep, progress, extra))
        except GuestprepError as exc:
            exc = _with_disk(exc, r.job, single)
            if manifests:
                exc.message += ("; converted before this failure (complete, verified, manifests "
                                "kept): " + ", ".join(m["handoff"]["disk"] for m in manifests))
            raise exc from None
        done = getattr(progress, "done", None)
        if done:
            done(manifests[-1]["timings"])
    return manifests
