"""linux.stable_device_names: /dev/sdX in fstab, crypttab and root=/resume= become UUID=.

Kernel names follow probe order and change with the controller; UUIDs travel with the
filesystem. The bootloader configuration is regenerated only when /etc/default/grub
changed, and the generated file is backed up first.
"""

from __future__ import annotations

import re
from typing import Any

from guestprep.errors import OperationError
from guestprep.facts.linux_model import LinuxFacts
from guestprep.models import Plan
from guestprep.operations.base import operation
from guestprep.operations.linux import changes as C
from guestprep.operations.linux.operation import LinuxOperation
from guestprep.operations.linux import state as S

UNSTABLE_DEV_RE = re.compile(r"^/dev/(sd[a-z]+|hd[a-z]+|vd[a-z]+|xvd[a-z]+|nvme\d+n\d+|cciss/c\d+d\d+)(p?\d+)?$")


# what blkid prints for ext/xfs/btrfs/swap/LUKS/vfat UUIDs and PARTUUIDs; anything else
# (blanks, quotes, newlines from a garbled or hostile guest) must never reach fstab
ID_RE = re.compile(r"^[0-9A-Za-z][0-9A-Za-z-]{0,63}$")


def stable_names(facts: LinuxFacts) -> dict[str, str]:
    """/dev/<name> -> UUID=... (or PARTUUID=... for a partition without a filesystem UUID)."""
    out: dict[str, str] = {}
    for d in facts.block_devices:
        for p in d.partitions:
            if p.uuid and ID_RE.match(p.uuid):
                out[f"/dev/{p.name}"] = f"UUID={p.uuid}"
            elif p.partuuid and ID_RE.match(p.partuuid):
                out[f"/dev/{p.name}"] = f"PARTUUID={p.partuuid}"
    return out


def _rewrite_table(text: str, field: int, names: dict[str, str], unresolved: list[str]) -> str:
    """Replace field ``field`` (0-based) of each non-comment line, keeping the line's spacing."""
    out = []
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith("#") or not line.strip():
            out.append(line)
            continue
        parts = re.split(r"(\s+)", line.rstrip("\n"))
        words = [i for i, p in enumerate(parts) if p and not p.isspace()]
        if len(words) > field:
            i = words[field]
            spec = parts[i]
            if UNSTABLE_DEV_RE.match(spec):
                if spec in names:
                    parts[i] = names[spec]
                else:
                    unresolved.append(spec)
        out.append("".join(parts) + ("\n" if line.endswith("\n") else ""))
    return "".join(out)


def _rewrite_grub_default(text: str, names: dict[str, str], unresolved: list[str]) -> str:
    def fix_value(m: re.Match) -> str:
        def tok(t: re.Match) -> str:
            key, dev = t.group(1), t.group(2)
            if UNSTABLE_DEV_RE.match(dev):
                if dev in names:
                    return f"{key}{names[dev]}"
                unresolved.append(dev)
            return t.group(0)

        return re.sub(r"\b(root=|resume=)(\S+?)(?=[\s\"']|$)", tok, m.group(0))

    return re.sub(r"^GRUB_CMDLINE_LINUX(_DEFAULT)?=.*$", fix_value, text, flags=re.M)


def bootloader_refresh(facts: LinuxFacts) -> list[str] | None:
    cfg = facts.bootloader_config
    if facts.bootloader != "grub2" or not cfg:
        return None
    if facts.family == "debian":
        return ["update-grub"]
    if facts.family in ("rhel", "suse") or cfg.startswith("/boot/grub2/"):
        return ["grub2-mkconfig", "-o", cfg]
    return ["grub-mkconfig", "-o", cfg]


@operation
class StableDeviceNames(LinuxOperation):
    id = "linux.stable_device_names"
    order = 10
    title = "Stable device names (UUID=) in fstab, crypttab and the kernel command line"
    fixes = ("LNX-UNSTABLE-DEVNAMES",)

    def plan(self, facts: LinuxFacts, guest: str, options: dict[str, Any]) -> Plan:
        plan = Plan(self.id, guest, verify="LNX-UNSTABLE-DEVNAMES")
        st = options.get("state") or {}
        names = stable_names(facts)
        unresolved: list[str] = []
        for path, field in (("/etc/fstab", 0), ("/etc/crypttab", 1)):
            old = S.text(st, path)
            if old is None:
                continue
            new = _rewrite_table(old, field, names, unresolved)
            if new != old:
                plan.changes.append(C.write_file(path, new, old))
        grub_changed = False
        old = S.text(st, "/etc/default/grub")
        if old is not None:
            new = _rewrite_grub_default(old, names, unresolved)
            if facts.cmdline_root and UNSTABLE_DEV_RE.match(facts.cmdline_root) and \
                    re.search(r"^GRUB_DISABLE_LINUX_UUID=[\"']?true", new, re.M):
                # grub-mkconfig wrote root=/dev/sdX because it was told not to use UUIDs
                new = re.sub(r"^GRUB_DISABLE_LINUX_UUID=.*$", "GRUB_DISABLE_LINUX_UUID=false", new, flags=re.M)
            if new != old:
                plan.changes.append(C.write_file("/etc/default/grub", new, old))
                grub_changed = True
        running_unstable = bool(facts.cmdline_root and UNSTABLE_DEV_RE.match(facts.cmdline_root))
        if unresolved:
            raise OperationError(f"no UUID or PARTUUID known for {', '.join(sorted(set(unresolved)))} (blkid gave "
                                 "nothing: collect facts as root or with sudo); nothing was changed")
        if grub_changed or running_unstable:
            refresh = bootloader_refresh(facts)
            if refresh:
                plan.changes.append(C.run(refresh, backups=[facts.bootloader_config]))
                if running_unstable and not grub_changed:
                    plan.warnings.append(f"the running kernel has root={facts.cmdline_root}: the regenerated "
                                         f"{facts.bootloader_config} uses UUID= from the next boot on")
            else:
                plan.warnings.append(f"bootloader {facts.bootloader or 'unknown'}: regenerate its configuration by hand")
        plan.reason = (f"{len(plan.changes)} change(s) to use UUID= instead of kernel device names"
                       if plan.changes else "fstab, crypttab and the kernel command line already use stable names")
        return plan
