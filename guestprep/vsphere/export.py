"""Write the fleet inventory (YAML) and one SourceVM JSON per VM from a vSphere read.

Files are written to a temporary name, flushed to disk and renamed into place, so a failed
run never leaves half a fleet file. Facts are first written whole into a hidden staging
directory and moved in only once every VM's file is on disk: a run interrupted while writing
them (Ctrl-C, a VM that fails to serialise, a full disk) leaves the facts and the fleet file
of the previous run as they were. The fleet file refers to facts by a path relative to itself.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import yaml

from guestprep.errors import ConfigError
from guestprep.models import SourceVM
from guestprep.vsphere.ostype import os_family

FLEET_SCHEMA = "guestprep.fleet/1"


def facts_file_name(vm: SourceVM) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", vm.name).strip("._")[:80] or "vm"
    return f"{safe}__{re.sub(r'[^A-Za-z0-9-]+', '_', vm.moref or 'nomoref')}.json"


def pick_address(vm: SourceVM) -> tuple[str, str]:
    """(address, where it came from): IPv4 first, then global IPv6, then the guest hostname."""
    ips = vm.usable_ips()
    v4 = [ip for ip in ips if ipaddress.ip_address(ip.split("%")[0]).version == 4]
    if v4:
        return v4[0], "guest-ip"
    if ips:
        return ips[0], "guest-ip"
    if vm.guest_hostname:
        return vm.guest_hostname, "guest-hostname"
    return vm.name, "vm-name"


_GUEST_NAME_BAD = re.compile(r"[^A-Za-z0-9._@-]+")


def guest_name(vm: SourceVM) -> str:
    """The fleet file's guest name: the VM name with characters inventories refuse made hyphens."""
    return _GUEST_NAME_BAD.sub("-", vm.name).strip("-._@")[:200] or (vm.moref or "vm")


def guest_entry(vm: SourceVM, facts_rel: str | None, name: str | None = None) -> dict[str, Any]:
    family = os_family(vm.guest_id, vm.guest_full_name)
    address, origin = pick_address(vm)
    if origin == "vm-name":
        address = name or guest_name(vm)
    entry: dict[str, Any] = {
        "name": name or guest_name(vm),
        "address": address,
        "os": family or "linux",
        "transport": "winrm" if family == "windows" else "ssh",
    }
    vars_: dict[str, Any] = {"vsphere_moref": vm.moref, "vm_name": vm.name, "address_source": origin, "guest_id": vm.guest_id}
    if family is None:
        vars_["os_guessed"] = True  # unknown guestId: preflight should auto-detect
    if facts_rel:
        vars_["vm_facts"] = facts_rel
    entry["vars"] = vars_
    return entry


STAGING_MARK = ".guestprep-staging-"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_new(path: Path, text: str, mode: int, *, sync: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        if sync:
            f.flush()
            os.fsync(f.fileno())
    os.chmod(path, mode)   # the umask may have narrowed it


def _atomic_write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        os.unlink(tmp)
        _write_new(Path(tmp), text, mode, sync=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _umask() -> int:
    """The process umask, read without setting it (Linux 4.7+), 022 when unknown."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


class _FactsStage:
    """Facts written whole into a hidden directory beside the facts directory, moved in by
    commit(): one rename when the facts directory is new, one rename per file otherwise
    (other files a user keeps there are left alone)."""

    def __init__(self, facts_dir: Path) -> None:
        facts_dir.parent.mkdir(parents=True, exist_ok=True)
        self.prefix = f".{facts_dir.name}{STAGING_MARK}"
        self._remove_dead(facts_dir.parent)
        self.facts_dir = facts_dir
        self.mode = (facts_dir.stat().st_mode & 0o7777 if facts_dir.is_dir()
                     else 0o777 & ~_umask())
        self.stage = Path(tempfile.mkdtemp(prefix=f"{self.prefix}{os.getpid()}-",
                                           dir=facts_dir.parent))
        self.names: list[str] = []

    def _remove_dead(self, parent: Path) -> None:
        """Staging directories of killed runs (the pid in the name is gone)."""
        for entry in parent.glob(self.prefix + "*"):
            pid = entry.name[len(self.prefix):].split("-", 1)[0]
            if not pid.isdigit() or entry.is_symlink() or not entry.is_dir():
                continue
            try:
                os.kill(int(pid), 0)
                continue                  # its run is still going
            except ProcessLookupError:
                shutil.rmtree(entry, ignore_errors=True)
            except PermissionError:
                continue                  # alive, another user's

    def add(self, name: str, text: str) -> None:
        _write_new(self.stage / name, text, 0o644, sync=False)
        self.names.append(name)

    def commit(self) -> None:
        # Not flushed file by file (1,000 fsyncs): the promise is against an interrupted
        # run, not a power cut, and an inventory is re-read in seconds.
        try:
            os.rename(self.stage, self.facts_dir)       # a new (or empty) facts directory: atomic
            self.facts_dir.chmod(self.mode)             # mkdtemp made it 0700
        except OSError:
            if not self.facts_dir.is_dir():
                raise
            for name in self.names:                      # renames only: milliseconds
                os.replace(self.stage / name, self.facts_dir / name)
            self.discard()
        _fsync_dir(self.facts_dir)
        _fsync_dir(self.facts_dir.parent)

    def discard(self) -> None:
        shutil.rmtree(self.stage, ignore_errors=True)


def write(vms: list[SourceVM], out: Path, facts_dir: Path | None, *, server: str) -> dict[str, Any]:
    """Write facts (if asked) then the fleet file; return a summary for the terminal."""
    if out.exists() and out.is_dir():
        raise ConfigError("is a directory, expected a file path", where=str(out))
    if facts_dir is not None and facts_dir.exists() and not facts_dir.is_dir():
        raise ConfigError("exists and is not a directory", where=str(facts_dir))
    stage = _FactsStage(facts_dir) if facts_dir is not None else None
    try:
        guests, skipped = _entries(vms, out, facts_dir, stage)
        if stage is not None:
            stage.commit()
    except BaseException:
        if stage is not None:
            stage.discard()
        raise
    doc = {"version": 1, "guests": guests}
    header = (f"# guestprep fleet inventory ({FLEET_SCHEMA}) from vSphere {server}: {len(guests)} guest(s)\n"
              "# generated by `guestprep inventory vsphere`; VM-level facts are in vars.vm_facts\n")
    _atomic_write(out, header + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False))
    return {"guests": len(guests), "skipped": skipped, "out": str(out),
            "facts_dir": str(facts_dir) if facts_dir else None}


def _entries(vms: list[SourceVM], out: Path, facts_dir: Path | None,
             stage: _FactsStage | None) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    guests: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    names: set[str] = set()
    guest_names: set[str] = set()
    for vm in vms:
        if vm.extra.get("template"):
            skipped.append({"name": vm.name, "reason": "template"})
            continue
        rel = None
        if facts_dir is not None and stage is not None:
            fname = facts_file_name(vm)
            if fname in names:
                raise ConfigError(f"two VMs map to the same facts file {fname}", where=str(facts_dir))
            names.add(fname)
            stage.add(fname, json.dumps(vm.to_dict(), indent=1, sort_keys=True) + "\n")
            rel = os.path.relpath((facts_dir / fname).resolve(), out.resolve().parent)
        gname = guest_name(vm)
        if gname in guest_names:  # two VMs with one name (other folders): keep both, tell them apart
            gname = f"{gname}-{vm.moref}"
        guest_names.add(gname)
        guests.append(guest_entry(vm, rel, gname))
    return guests, skipped
