"""EFI boot facts: the ESP, the loaders under \\EFI\\*, the NVRAM boot entries, Secure Boot.

Parsed from the ``efi`` member of the Linux collector (guest_scripts/linux/collect.sh) and,
with the same record, from the ``efi`` member of the Windows collector document
(guest_scripts/windows/collect.ps1, UEFI guests). Pure functions; garbage raises CollectorError
naming the field. Paths are kept in firmware form (``\\EFI\\debian\\grubx64.efi``) and
compared case-insensitively, as FAT and the firmware do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from guestprep.errors import CollectorError

FALLBACK_PATH = "\\EFI\\BOOT\\BOOTX64.EFI"
SHIM_NAMES = ("shimx64.efi", "shim.efi")
SECOND_STAGE = ("grubx64.efi", "grub.efi")      # what shim starts from its own directory (grub.efi: SUSE)
MOK_NAMES = ("mmx64.efi", "mokmanager.efi")
FB_NAMES = ("fbx64.efi", "fallback.efi")            # shim's fallback: recreates NVRAM entries from BOOT*.CSV
_SHA_RE = re.compile(r"^[0-9a-fA-F]{64}$")


def norm(path: str) -> str:
    """Firmware form: backslashes, one leading backslash."""
    p = path.replace("/", "\\").strip()
    return "\\" + p.lstrip("\\")


def key(path: str) -> str:
    return norm(path).lower()


def parent(path: str) -> str:
    return norm(path).rsplit("\\", 1)[0]


def basename(path: str) -> str:
    return norm(path).rsplit("\\", 1)[-1]


@dataclass
class EfiFile:
    path: str                  # "\EFI\debian\grubx64.efi"
    size: int | None
    sha256: str | None         # None when the guest had no sha256sum (or not a loader)


@dataclass
class BootEntry:
    id: str                    # "0001" (Linux) or "{bootmgr}" / "{guid}" (Windows)
    label: str
    path: str | None           # the loader file the entry starts, when it names one
    active: bool = True
    device: str = ""           # the device path text (HD(2,GPT,...), partition=...)


@dataclass
class EfiFacts:
    firmware: str                            # uefi | bios
    secure_boot: bool | None
    esp_mount: str | None = None             # "/boot/efi" (Linux) or the volume path (Windows)
    esp_device: str | None = None
    esp_free_bytes: int | None = None
    esp_total_bytes: int | None = None
    files: list[EfiFile] | None = None       # None: the ESP could not be read
    entries: list[BootEntry] | None = None   # None: NVRAM not readable (no efibootmgr/bcdedit, no rights)
    boot_current: str | None = None
    boot_order: list[str] = field(default_factory=list)
    grub_install: str | None = None          # path of grub-install/grub2-install in the guest
    grub_efi_modules: bool = False           # /usr/lib/grub/x86_64-efi (grub-install can build an EFI image)
    grub_efi_signed: bool = False            # /usr/lib/grub/x86_64-efi-signed (Debian's signed grub + shim)
    unknown: dict[str, str] = field(default_factory=dict)

    def file(self, path: str) -> EfiFile | None:
        k = key(path)
        return next((f for f in self.files or [] if key(f.path) == k), None)

    @property
    def fallback(self) -> EfiFile | None:
        return self.file(FALLBACK_PATH)

    def entry(self, entry_id: str | None) -> BootEntry | None:
        return next((e for e in self.entries or [] if e.id.lower() == (entry_id or "").lower()), None)

    def active_loader(self) -> str | None:
        """The loader the guest boots through: BootCurrent's file, else the first in BootOrder on the ESP."""
        order = ([self.boot_current] if self.boot_current else []) + self.boot_order
        for eid in order:
            e = self.entry(eid)
            if e and e.path and key(e.path) != key(FALLBACK_PATH) and self.file(e.path):
                return self.file(e.path).path  # type: ignore[union-attr]
        return None

    def shim_fallback_set(self) -> bool:
        """shim's own fallback in \\EFI\\BOOT (fbx64.efi) plus a vendor BOOTX64.CSV for it to read:
        on a fresh vars store it recreates the vendor's NVRAM entry and reboots into it (RHEL ships this)."""
        has_fb = any(self.file("\\EFI\\BOOT\\" + n) for n in FB_NAMES)
        csv = any(basename(f.path).lower() in ("bootx64.csv", "boot.csv") and not key(f.path).startswith("\\efi\\boot\\")
                  for f in self.files or [])
        return has_fb and csv

    def loaders(self) -> list[EfiFile]:
        """Every .efi file outside \\EFI\\BOOT (the candidates a fallback may copy)."""
        return [f for f in self.files or [] if f.path.lower().endswith(".efi")
                and not key(f.path).startswith(key("\\EFI\\BOOT") + "\\")]

    def same(self, a: EfiFile | None, b: EfiFile | None) -> bool | None:
        """Same content? by sha256 when both have one, else by size (None: cannot tell)."""
        if a is None or b is None:
            return None
        if a.sha256 and b.sha256:
            return a.sha256.lower() == b.sha256.lower()
        if a.size is not None and b.size is not None and a.size != b.size:
            return False
        return None  # equal sizes without hashes prove nothing

    def copy_of(self, f: EfiFile, candidates: list[EfiFile]) -> tuple[str, EfiFile | None]:
        """Is ``f`` (a fallback loader) a copy of one of ``candidates``? The one comparer of the
        Linux and Windows "fallback stale" checks: ``("copy", source)``, ``("differs", None)``, or
        ``("undecided", None)`` when no hash settles it and the sizes do not rule a candidate out."""
        verdicts = [(c, self.same(f, c)) for c in candidates]
        source = next((c for c, v in verdicts if v), None)
        if source is not None:
            return "copy", source
        return ("undecided" if any(v is None for _, v in verdicts) else "differs"), None

    def matches(self, f: EfiFile | None) -> list[EfiFile]:
        """Loaders outside \\EFI\\BOOT with exactly this content (sha256)."""
        if f is None or not f.sha256:
            return []
        return [x for x in self.loaders() if x.sha256 and x.sha256.lower() == f.sha256.lower()]


# --------------------------------------------------------------------------- Linux


def _int(v: Any) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def _df_bytes(cmd: Any) -> tuple[int | None, int | None]:
    if not isinstance(cmd, Mapping) or cmd.get("rc") != 0 or not isinstance(cmd.get("out"), str):
        return None, None
    lines = [l for l in (cmd.get("out") or "").splitlines() if l.strip()]
    if len(lines) < 2:
        return None, None
    f = lines[-1].split()
    if len(f) < 4:
        return None, None
    total, free = _int(f[1]), _int(f[3])
    return (free * 1024 if free is not None else None), (total * 1024 if total is not None else None)


def _opt_str(raw: Mapping[str, Any], key: str, where: str) -> str | None:
    v = raw.get(key)
    if v is not None and not isinstance(v, str):
        raise CollectorError(f"{key} is a {type(v).__name__}, expected a string", where=where)
    return v or None


def parse_file_lines(text: str, where: str) -> list[EfiFile]:
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        f = line.split("\t")
        if len(f) != 3:
            raise CollectorError(f"line {n} is not SIZE<TAB>SHA256<TAB>PATH: {line[:80]!r}", where=where)
        size, sha, path = f
        if sha != "-" and not _SHA_RE.match(sha):
            raise CollectorError(f"line {n}: {sha[:80]!r} is not a sha256", where=where)
        out.append(EfiFile(norm(path), _int(size), sha.lower() if sha != "-" else None))
    return out


_ENTRY_RE = re.compile(r"^Boot([0-9A-Fa-f]{4})(\*?)\s+(.*)$")
_FILE_RE = re.compile(r"File\(([^)]*)\)|(?<![\w(])(\\[^\s)]*?\.efi)\b", re.I)
_DEVPATH_START = re.compile(r"\b(HD|PciRoot|FvVol|Fv|VenHw|VenMsg|MAC|BBS|Uri|VenMedia|Acpi|Sata|Scsi)\(")


def parse_efibootmgr(text: str) -> tuple[list[BootEntry], str | None, list[str]]:
    entries: list[BootEntry] = []
    current, order = None, []
    for line in text.splitlines():
        if line.startswith("BootCurrent:"):
            current = line.split(":", 1)[1].strip() or None
        elif line.startswith("BootOrder:"):
            order = [x.strip() for x in line.split(":", 1)[1].split(",") if x.strip()]
        else:
            m = _ENTRY_RE.match(line)
            if not m:
                continue
            rest = m.group(3)
            if "\t" in rest:
                label, _, dev = rest.partition("\t")
            else:  # older efibootmgr: "label HD(...)/File(...)" on one blank-separated line
                d = _DEVPATH_START.search(rest)
                label, dev = (rest[:d.start()], rest[d.start():]) if d else (rest, "")
            fm = _FILE_RE.search(dev)
            path = norm(fm.group(1) or fm.group(2)) if fm else None
            entries.append(BootEntry(m.group(1).upper(), label.strip(), path, m.group(2) == "*", dev.strip()))
    return entries, current, order


def _firmware_of(raw: Any, where: str) -> str:
    """The ``firmware`` of an efi member (either collector's), which must be an object."""
    if not isinstance(raw, Mapping):
        raise CollectorError(f"expected an object, got {type(raw).__name__}", where=where)
    firmware = raw.get("firmware")
    if firmware not in ("uefi", "bios"):
        raise CollectorError(f"firmware is {firmware!r}, expected 'uefi' or 'bios'", where=where)
    return firmware


def parse_linux_efi(raw: Any, where: str = "collector document: efi") -> EfiFacts:
    firmware = _firmware_of(raw, where)
    sb = str(raw.get("secure_boot") or "").strip()
    facts = EfiFacts(firmware=firmware, secure_boot=None if not sb else sb == "1")
    if firmware == "uefi" and not sb:
        facts.unknown["secure_boot"] = "SecureBoot EFI variable not readable"
    facts.esp_mount = _opt_str(raw, "esp_mount", where)
    facts.grub_install = _opt_str(raw, "grub_install", where)
    facts.grub_efi_modules = raw.get("grub_efi_modules") == "1"
    facts.grub_efi_signed = raw.get("grub_efi_signed") == "1"
    facts.esp_device = _opt_str(raw, "esp_device", where)
    files = raw.get("files")
    if facts.esp_mount and isinstance(files, str):
        facts.files = parse_file_lines(files, f"{where}.files")
        facts.esp_free_bytes, facts.esp_total_bytes = _df_bytes(raw.get("df") or {})
    elif files is not None and not isinstance(files, str):
        raise CollectorError(f"files is a {type(files).__name__}, expected lines of text", where=where)
    else:
        facts.unknown["esp"] = "no vfat ESP mounted on /boot/efi, /efi or /boot"
    ebm = raw.get("efibootmgr") or {}
    if not isinstance(ebm, Mapping):
        raise CollectorError("efibootmgr is not a command record", where=where)
    if ebm.get("rc") == 0 and isinstance(ebm.get("out") or "", str):
        facts.entries, facts.boot_current, facts.boot_order = parse_efibootmgr(ebm.get("out") or "")
    elif firmware == "uefi":
        err = str(ebm.get("err") or "").strip().splitlines()
        facts.unknown["entries"] = ("efibootmgr: " + err[-1][:160]) if err else "efibootmgr failed"
    return facts


# --------------------------------------------------------------------------- Windows


def parse_bcdedit_firmware(text: str) -> tuple[list[BootEntry], list[str]]:
    """``bcdedit /enum firmware`` blocks -> entries and {fwbootmgr}'s displayorder.

    The block titles are localized; the element names (identifier, path, description,
    displayorder) are not, so only those are read.
    """
    entries: list[BootEntry] = []
    order: list[str] = []
    for block in re.split(r"\r?\n\s*\r?\n", text):
        rec: dict[str, list[str]] = {}
        last = None
        for line in block.splitlines():
            if not line.strip() or set(line.strip()) == {"-"}:
                continue
            if line[:1].isspace() and last:
                rec[last].append(line.strip())
                continue
            m = re.match(r"^(\w+)\s+(.*)$", line.strip())
            if m:
                last = m.group(1).lower()
                rec.setdefault(last, []).append(m.group(2).strip())
            else:
                last = None
        ident = (rec.get("identifier") or [""])[0]
        if not ident:
            continue
        if ident.lower() == "{fwbootmgr}":
            order = rec.get("displayorder", [])
            continue
        path = (rec.get("path") or [None])[0]
        entries.append(BootEntry(ident, (rec.get("description") or [""])[0], norm(path) if path else None,
                                 True, (rec.get("device") or [""])[0]))
    return entries, order


def parse_windows_efi(raw: Any, where: str = "windows collector: efi") -> EfiFacts:
    firmware = _firmware_of(raw, where)
    sb = raw.get("secure_boot")
    if sb is not None and not isinstance(sb, bool):
        raise CollectorError(f"secure_boot is {sb!r}, expected true, false or null", where=where)
    facts = EfiFacts(firmware=firmware, secure_boot=sb)
    unknown = raw.get("unknown") or {}
    if not isinstance(unknown, Mapping):
        raise CollectorError("unknown is not an object", where=where)
    facts.unknown.update({str(k): str(v) for k, v in unknown.items()})
    esp = raw.get("esp")
    if isinstance(esp, Mapping):
        facts.esp_mount = esp.get("access_path") or None
        facts.esp_device = f"disk {esp.get('disk')} partition {esp.get('partition')}"
        facts.esp_free_bytes, facts.esp_total_bytes = _int(esp.get("free")), _int(esp.get("size"))
    elif esp is not None:
        raise CollectorError("esp is not an object", where=where)
    files = raw.get("files")
    if isinstance(files, list):
        facts.files = []
        for i, f in enumerate(files):
            if not isinstance(f, Mapping) or not isinstance(f.get("path"), str):
                raise CollectorError(f"files[{i}] has no path", where=where)
            sha = f.get("sha256")
            if sha is not None and not (isinstance(sha, str) and _SHA_RE.match(sha)):
                raise CollectorError(f"files[{i}].sha256 {str(sha)[:80]!r} is not a sha256", where=where)
            facts.files.append(EfiFile(norm(f["path"]), _int(f.get("size")), sha.lower() if sha else None))
    elif files is not None:
        raise CollectorError("files is not a list", where=where)
    elif firmware == "uefi":
        facts.unknown.setdefault("esp", "ESP not readable")
    bcd = raw.get("bcdedit") or {}
    if isinstance(bcd, Mapping) and bcd.get("rc") == 0 and isinstance(bcd.get("out") or "", str):
        facts.entries, facts.boot_order = parse_bcdedit_firmware(bcd.get("out") or "")
        # Windows boots through {bootmgr} (the firmware entry bcdedit calls Windows Boot Manager)
        facts.boot_current = "{bootmgr}" if facts.entry("{bootmgr}") else None
    elif firmware == "uefi":
        err = bcd.get("err") if isinstance(bcd, Mapping) else None
        facts.unknown.setdefault("entries", "bcdedit /enum firmware failed: " + str(err or "")[:160])
    return facts


def windows_efi(facts: Any) -> EfiFacts | None:
    """The EFI record of a WindowsFacts (parsed with the collector document); None: not reported."""
    return getattr(facts, "efi", None)
