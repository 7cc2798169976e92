"""Snapshots and pending consolidation: the base disk alone is not the VM's current state."""

from __future__ import annotations

from typing import Iterable

from guestprep.checks.base import Outcome, fail, ok
from guestprep.checks.registry import check
from guestprep.models import Severity, SourceVM


@check(
    id="VM-SNAPSHOTS", severity=Severity.BLOCKER, os="vm",
    title="The VM has no snapshots",
    rationale="With snapshots the current data lives in delta disks; converting the base vmdk "
              "silently drops every write since the first snapshot, and copying the chain is slow "
              "and fragile.",
    remediation="Delete (consolidate) all snapshots in vSphere after confirming none is still "
                "needed, then re-run preflight.",
    references=("https://kb.vmware.com/s/article/1025279",),
)
def no_snapshots(vm: SourceVM) -> Iterable[Outcome]:
    if vm.snapshot_count:
        yield fail(vm.name, f"{vm.snapshot_count} snapshot(s) present", snapshot_count=vm.snapshot_count)
    else:
        yield ok(vm.name, "no snapshots")


@check(
    id="VM-CONSOLIDATION", severity=Severity.BLOCKER, os="vm",
    title="No disk consolidation is pending",
    rationale="'Consolidation needed' means delta files remain after a failed snapshot removal: "
              "the flat extent is stale until vSphere consolidates.",
    remediation="Run 'Snapshots > Consolidate' on the VM in vSphere and wait for the task.",
)
def no_consolidation(vm: SourceVM) -> Iterable[Outcome]:
    if vm.consolidation_needed:
        yield fail(vm.name, "vSphere reports that disk consolidation is needed")
    else:
        yield ok(vm.name, "no consolidation pending")
