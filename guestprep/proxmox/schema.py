"""Validate Proxmox VE API request parameters against the published API schema.

The schema is Proxmox's own ``apidata.json`` (the API viewer data). The product ships
a compact generated subset (``guestprep/data/pve_schema_subset.json``, made by
``tools/gen_pve_schema.py``); the test API server loads the full file. Both are
normalised to one shape: ``{path: {METHOD: {name: property}}}`` where indexed keys
such as ``scsi[n]`` carry ``index_max``.

What is checked, as Proxmox's JSONSchema code does: unknown and missing parameters,
types (values arrive as strings over HTTP), enums, ranges, lengths, patterns, and for
property strings (``scsi0``, ``net0``, ``efidisk0``, ``agent``...) every sub-key with
its own type/enum/format, aliases and the default key. Named string formats that the
finalizer emits (``pve-vm-cpu-conf``, ``pve-qm-boot``, ``pve-qm-smbios1``, MAC, volume
ids...) have validators below; other named formats are accepted as plain strings.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from guestprep.errors import ConfigError
from guestprep.target_policy import KNOWN_CPU_TYPES

# Proxmox does not state these ranges in the description text (qemu-server constants).
FALLBACK_INDEX_MAX = {
    "net": 31, "ipconfig": 31, "unused": 255, "hostpci": 15, "numa": 7, "virtiofs": 9,
    "usb": 13, "serial": 3, "parallel": 2, "mp": 255,
}
_INDEX_RE = re.compile(r"n is (\d+) to (\d+)")
_STRIP_KEYS = {"description", "verbose_description", "typetext", "format_description", "renderer", "print_width"}


class SchemaViolation(ConfigError):
    """One or more request parameters are invalid for the Proxmox VE API."""

    def __init__(self, method: str, path: str, errors: Mapping[str, str]):
        self.errors = dict(errors)
        detail = "; ".join(f"{k}: {v}" for k, v in sorted(self.errors.items()))
        super().__init__(f"invalid for the Proxmox VE API: {detail}", where=f"{method} {path}")


# --------------------------------------------------------------------------- loading


def _strip(prop: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in prop.items() if k not in _STRIP_KEYS}
    if isinstance(out.get("format"), dict):
        out["format"] = {k: _strip(v) for k, v in out["format"].items()}
    return out


def normalise_apidata(tree: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Full apidata tree -> {path: {METHOD: {param: property}}} without prose."""
    endpoints: dict[str, dict[str, dict[str, Any]]] = {}

    def walk(node: Mapping[str, Any]) -> None:
        for method, info in (node.get("info") or {}).items():
            props = ((info.get("parameters") or {}).get("properties")) or {}
            norm = {}
            for name, prop in props.items():
                p = _strip(prop)
                if name.endswith("[n]"):
                    m = _INDEX_RE.search(prop.get("description", ""))
                    base = name[:-3]
                    p["index_max"] = int(m.group(2)) if m else FALLBACK_INDEX_MAX.get(base, 31)
                norm[name] = p
            endpoints.setdefault(node["path"], {})[method] = norm
        for child in node.get("children") or []:
            walk(child)

    for root in tree:
        walk(root)
    return endpoints


@lru_cache(maxsize=4)
def load_full(path: str) -> "Schema":
    try:
        tree = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read the Proxmox API schema: {e}", where=path) from e
    return Schema(normalise_apidata(tree), source=path)


@lru_cache(maxsize=1)
def load_shipped() -> "Schema":
    text = resources.files("guestprep").joinpath("data", "pve_schema_subset.json").read_text("utf-8")
    doc = json.loads(text)
    return Schema(doc["endpoints"], source=f"pve_schema_subset.json ({doc.get('source', '?')})")


# --------------------------------------------------------------------------- named formats

_ID = r"[a-zA-Z0-9](?:[a-zA-Z0-9\-]*[a-zA-Z0-9])?"
_STORAGE_ID = re.compile(r"[a-z][a-z0-9\-_.]*[a-z0-9]", re.I)
_VOLID = re.compile(r"([a-z][a-z0-9\-_.]*[a-z0-9]):(.+)", re.I)
_UUID = re.compile(r"[a-fA-F0-9]{8}(?:-[a-fA-F0-9]{4}){3}-[a-fA-F0-9]{12}")
_B64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
BOOT_DEVICE = re.compile(r"(?:ide|sata|scsi|virtio|net|efidisk|tpmstate)\d+|hostpci\d+|usb\d+")


def _check_cpu_conf(value: str) -> str | None:
    parts = _split_property_string(value)
    allowed = {"cputype", "flags", "hidden", "hv-vendor-id", "phys-bits", "reported-model", "guest-phys-bits"}
    for key, val in parts:
        key = key or "cputype"
        if key not in allowed:
            return f"unknown cpu option '{key}'"
        if key in ("cputype", "reported-model"):
            if val not in KNOWN_CPU_TYPES and not (key == "cputype" and val.startswith("custom-")):
                return f"unknown CPU model '{val}'"
        elif key == "flags" and not re.fullmatch(r"[+-][a-zA-Z0-9\-_.]+(?:;[+-][a-zA-Z0-9\-_.]+)*", val):
            return f"bad cpu flags '{val}'"
        elif key == "hidden" and _bool(val) is None:
            return f"hidden must be a boolean, got '{val}'"
    return None


def _check_boot(value: str) -> str | None:
    for key, val in _split_property_string(value):
        key = key or "legacy"
        if key == "legacy":
            if not re.fullmatch(r"[acdn]{1,4}", val):
                return f"bad legacy boot order '{val}'"
        elif key == "order":
            for dev in val.split(";"):
                if not BOOT_DEVICE.fullmatch(dev):
                    return f"'{dev}' is not a bootable device name"
        else:
            return f"unknown boot option '{key}'"
    return None


def _check_smbios1(value: str) -> str | None:
    keys = {"base64", "family", "manufacturer", "product", "serial", "sku", "uuid", "version"}
    parts = dict()
    for key, val in _split_property_string(value):
        if key is None or key not in keys:
            return f"unknown smbios1 option '{key or val}'"
        parts[key] = val
    if "uuid" in parts and not _UUID.fullmatch(parts["uuid"]):
        return f"uuid '{parts['uuid']}' is not a UUID"
    if _bool(parts.get("base64", "0")):
        for k in ("family", "manufacturer", "product", "serial", "sku", "version"):
            if k in parts and not _B64.fullmatch(parts[k]):
                return f"{k} is not base64"
    return None


def _check_mac(value: str) -> str | None:
    if not re.fullmatch(r"[a-fA-F0-9]{2}(?::[a-fA-F0-9]{2}){5}", value):
        return f"'{value}' is not a MAC address"
    if int(value[:2], 16) & 1:
        return f"'{value}' is a multicast MAC address"
    return None


def _check_volume(value: str, *, qm_path: bool) -> str | None:
    if value.startswith("/"):
        return None
    if qm_path and value in ("none", "cdrom"):
        return None
    if not _VOLID.fullmatch(value):
        return f"'{value}' is not a volume id (storage:volume) or absolute path"
    return None


def _pattern_check(regex: str, name: str):
    compiled = re.compile(regex)
    return lambda v: None if compiled.fullmatch(v) else f"'{v}' is not a valid {name}"


NAMED_FORMATS = {
    "pve-node": _pattern_check(_ID, "node name"),
    "dns-name": _pattern_check(rf"(?:{_ID}\.)*{_ID}", "DNS name"),
    "pve-tag-list": _pattern_check(r"(?i)[a-z0-9_][a-z0-9_\-+.]*(?:[;, ][a-z0-9_][a-z0-9_\-+.]*)*", "tag list"),
    "pve-storage-id": lambda v: None if _STORAGE_ID.fullmatch(v) else f"'{v}' is not a storage id",
    "pve-bridge-id": _pattern_check(r"[-_.\w\d]{1,15}", "bridge name"),
    "pve-configid": _pattern_check(r"[a-zA-Z][a-zA-Z0-9_\-]+", "config id"),
    "mac-addr": _check_mac,
    "disk-size": _pattern_check(r"\d+(?:\.\d+)?[KMGT]?", "disk size"),
    "pve-volume-id": lambda v: _check_volume(v, qm_path=False) if not v.startswith("/") else f"'{v}' is not a volume id",
    "pve-volume-id-or-qm-path": lambda v: _check_volume(v, qm_path=True),
    "pve-volume-id-or-absolute-path": lambda v: _check_volume(v, qm_path=False),
    "pve-vm-cpu-conf": _check_cpu_conf,
    "pve-qm-boot": _check_boot,
    "pve-qm-smbios1": _check_smbios1,
}


# --------------------------------------------------------------------------- primitives


def _bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    s = str(value).lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off"):
        return False
    return None


def _split_property_string(value: str) -> list[tuple[str | None, str]]:
    out: list[tuple[str | None, str]] = []
    for part in value.split(","):
        if part == "":
            continue
        if "=" in part:
            k, v = part.split("=", 1)
            out.append((k, v))
        else:
            out.append((None, part))
    return out


def perl_pattern_to_python(pattern: str) -> str:
    # Proxmox prints Perl regexes; (?^:...) means "default flags" and maps to a group.
    return pattern.replace("(?^:", "(?:").replace("(?^i:", "(?i:")


def check_value(prop: Mapping[str, Any], value: Any) -> str | None:
    """None when ``value`` fits ``prop``; otherwise the reason it does not."""
    typ = prop.get("type", "string")
    if typ == "boolean":
        if _bool(value) is None:
            return f"'{value}' is not a boolean"
        return None
    if typ == "integer":
        if isinstance(value, bool) or not re.fullmatch(r"[+-]?\d+", str(value).strip()):
            return f"'{value}' is not an integer"
        num: float = int(str(value))
    elif typ == "number":
        try:
            num = float(str(value))
        except ValueError:
            return f"'{value}' is not a number"
    else:
        num = None  # type: ignore[assignment]
    if num is not None:
        if "minimum" in prop and num < prop["minimum"]:
            return f"{value} is less than the minimum {prop['minimum']}"
        if "maximum" in prop and num > prop["maximum"]:
            return f"{value} is greater than the maximum {prop['maximum']}"
        if "enum" in prop and str(value) not in [str(e) for e in prop["enum"]]:
            return f"'{value}' is not one of {prop['enum']}"
        return None
    s = str(value)
    if "enum" in prop and s not in prop["enum"]:
        return f"'{s}' is not one of {', '.join(map(str, prop['enum']))}"
    if "maxLength" in prop and len(s) > prop["maxLength"]:
        return f"longer than {prop['maxLength']} characters"
    if "minLength" in prop and len(s) < prop["minLength"]:
        return f"shorter than {prop['minLength']} characters"
    if "pattern" in prop and not re.fullmatch(perl_pattern_to_python(prop["pattern"]), s):
        return f"'{s}' does not match the pattern {prop['pattern']}"
    fmt = prop.get("format")
    if isinstance(fmt, dict):
        return check_property_string(fmt, s)
    if isinstance(fmt, str) and fmt in NAMED_FORMATS:
        return NAMED_FORMATS[fmt](s)
    return None


def check_property_string(fmt: Mapping[str, Any], value: str) -> str | None:
    default_key = next((k for k, p in fmt.items() if p.get("default_key")), None)
    seen: dict[str, str] = {}
    for key, val in _split_property_string(value):
        if key is None:
            if default_key is None:
                return f"'{val}' has no key and this property has no default key"
            key = default_key
        sub = fmt.get(key)
        if sub is None:
            return f"unknown sub-key '{key}'"
        if "keyAlias" in sub:  # net0: virtio=MAC means model=virtio,macaddr=MAC
            if sub["keyAlias"] in seen:
                return f"duplicate sub-key '{sub['keyAlias']}'"
            seen[sub["keyAlias"]] = key
            key, sub = sub["alias"], fmt[sub["alias"]]
        elif "alias" in sub:
            key, sub = sub["alias"], fmt[sub["alias"]]
        if key in seen:
            return f"duplicate sub-key '{key}'"
        problem = check_value(sub, val)
        if problem:
            return f"{key}: {problem}"
        seen[key] = val
    for key, sub in fmt.items():
        if not sub.get("optional") and "alias" not in sub and key not in seen:
            return f"missing required sub-key '{key}'"
    return None


# --------------------------------------------------------------------------- schema


@dataclass
class Schema:
    endpoints: dict[str, dict[str, dict[str, Any]]]
    source: str = ""

    def has(self, method: str, path: str) -> bool:
        return method in self.endpoints.get(path, {})

    def property_for(self, method: str, path: str, name: str) -> dict[str, Any] | None:
        props = self.endpoints[path][method]
        if name in props:
            return props[name]
        m = re.fullmatch(r"([a-z\-_]+?)(\d+)", name)
        if m and f"{m.group(1)}[n]" in props:
            prop = props[f"{m.group(1)}[n]"]
            if int(m.group(2)) <= prop.get("index_max", 31):
                return prop
        return None

    def errors(self, method: str, path: str, params: Mapping[str, Any], path_params: Mapping[str, Any] = {}) -> dict[str, str]:
        """All violations of ``params`` (+ values bound in the path) for METHOD path."""
        if not self.has(method, path):
            return {"(endpoint)": f"{method} {path} is not in the Proxmox VE API ({self.source})"}
        props = self.endpoints[path][method]
        errors: dict[str, str] = {}
        given = {**{k: v for k, v in params.items() if v is not None}, **path_params}
        for name, value in given.items():
            prop = self.property_for(method, path, name)
            if prop is None:
                errors[name] = "property is not defined in schema and the schema does not allow additional properties"
                continue
            problem = check_value(prop, value)
            if problem:
                errors[name] = problem
        for name, prop in props.items():
            if name.endswith("[n]") or prop.get("optional") or name in given:
                continue
            errors[name] = "property is missing and it is not optional"
        for name, prop in props.items():
            req = prop.get("requires")
            if name in given and isinstance(req, str) and req not in given:
                errors[name] = f"requires '{req}'"
        return errors

    def validate(self, method: str, path: str, params: Mapping[str, Any], path_params: Mapping[str, Any] = {}) -> None:
        errs = self.errors(method, path, params, path_params)
        if errs:
            raise SchemaViolation(method, path, errs)
