"""Facts: run the collector for a guest's OS in one round trip, parse into typed records."""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

from guestprep.connectors import implied_os
from guestprep.models import Guest, OSFamily


def os_of(guest: Guest) -> str:
    """The guest's OS family; ``auto`` is decided by transport (connectors.implied_os), else Linux."""
    os = guest.os if guest.os is not OSFamily.AUTO else implied_os(guest.transport)
    return "windows" if os is OSFamily.WINDOWS else "linux"


def collect(conn: Any, os: str, timeout: float = 300.0, sudo: bool = False) -> Any:
    if os == "linux":
        from guestprep.facts import linux

        return linux.collect(conn, timeout=timeout, sudo=sudo)
    if os == "windows":
        from guestprep.facts import windows

        return windows.collect(conn, timeout=timeout)
    raise ValueError(f"no collector for OS {os!r}")


def summarize(os: str, facts: Any) -> dict[str, Any]:
    if os == "linux":
        return {
            "hostname": facts.hostname,
            "distro": facts.distro_name,
            "family": facts.family,
            "running_kernel": facts.running_kernel,
            "kernels": [k.version for k in facts.kernels],
            "initramfs_generator": facts.initramfs_generator,
            "boot_mode": facts.boot_mode,
            "virtualization": facts.virtualization,
        }
    if os == "windows":
        from guestprep.facts import windows

        return windows.summarize(facts)
    return {}


def to_jsonable(obj: Any) -> Any:
    """Typed facts -> plain JSON (sets sorted, enums by value)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, (set, frozenset)):
        return sorted(to_jsonable(x) for x in obj)
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(x) for x in obj]
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    return obj
