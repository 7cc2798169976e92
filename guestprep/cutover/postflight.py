"""The optional post-phase preflight at ``verify``: the guest assessed again, on Proxmox now, over
the transport its inventory entry names (SSH for Linux, WinRM for Windows), with the checks whose
phase is ``post`` or ``any`` — the same runner and checks as `guestprep preflight --phase post`.

Enabled per wave by the policy's ``cutover.options.post_preflight`` (wave.post_preflight_spec).
Its findings go into the step's outputs; open findings at or above ``fail_on`` fail ``verify``
(and so start the run's rollback/hold policy).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from guestprep.errors import ConfigError


def _inventory(wave, spec: dict[str, Any]) -> Path:
    raw = spec.get("inventory") or wave.inventory
    if not raw:
        raise ConfigError("the wave names no inventory to find the guest in: set "
                          "options.post_preflight.inventory", where=f"{wave.path}: options.post_preflight")
    p = Path(raw).expanduser()
    if not p.is_absolute() and not p.exists():   # planned elsewhere: beside the wave, then
        p = wave.path.parent / p
    return p


def guest_of(wave, vm_name: str, spec: dict[str, Any]):
    """The inventory entry the plan preflighted for this VM (``vars.vm_name``, else the guest name)."""
    from guestprep import inventory

    inv = _inventory(wave, spec)
    for g in inventory.select_guests([], inv, False):
        if str(g.vars.get("vm_name") or g.name) == vm_name:
            return g
    raise ConfigError(f"no guest for VM {vm_name!r} in the inventory", where=str(inv))


def _ports(guest) -> list[int]:
    from guestprep.models import Transport

    if guest.port:
        return [guest.port]
    if guest.transport is Transport.SSH:
        return [int(guest.vars.get("ansible_port") or 22)]
    return [int(guest.vars["ansible_port"])] if guest.vars.get("ansible_port") else [5986, 5985]


def _answers(address: str, port: int, ssh: bool, timeout: float) -> bool:
    """The service listens (and for SSH, greets: RFC 4253 4.2, the server sends its 'SSH-' line first)."""
    import socket

    try:
        with socket.create_connection((address, port), timeout=timeout) as s:
            if not ssh:
                return True
            s.settimeout(timeout)
            seen = b""
            while len(seen) < 8192:          # lines before the version line are allowed (RFC 4253 4.2)
                chunk = s.recv(256)
                if not chunk:
                    return False
                seen += chunk
                if b"SSH-" in seen:
                    return True
            return False
    except OSError:
        return False


def wait_for_service(guest, timeout: float, *, every: float = 5.0) -> dict[str, Any]:
    """Wait until the guest's SSH/WinRM service answers, up to ``timeout`` seconds.

    On a freshly started copy the guest agent answers before sshd (or WinRM) does — on Debian
    qemu-guest-agent is started early and ssh.service after the network (seen in the booting lab:
    the agent answered, sshd started minutes later under load) — so the preflight's single connect
    would judge a good copy unreachable and roll the cutover back. Only the service's readiness
    is awaited here; trust (host keys, certificates, credentials) is judged once, by the preflight."""
    import time

    from guestprep.models import Transport

    ssh = guest.transport is Transport.SSH
    ports, started, attempts = _ports(guest), time.monotonic(), 0
    while True:
        attempts += 1
        for port in ports:
            if _answers(guest.address, port, ssh, min(10.0, max(1.0, timeout))):
                return {"ready": True, "port": port, "attempts": attempts,
                        "waited_s": round(time.monotonic() - started, 1)}
        left = timeout - (time.monotonic() - started)
        if left <= 0:
            return {"ready": False, "ports": ports, "attempts": attempts,
                    "waited_s": round(time.monotonic() - started, 1)}
        time.sleep(min(every, left))


def run(wave, vm_name: str, spec: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """(outputs, the open findings at or above fail_on as one-line texts)."""
    from guestprep.connectors import ConnectOptions
    from guestprep.models import Severity, Status
    from guestprep.preflight import FleetOptions, run_preflight
    from guestprep.report import waivers

    guest = guest_of(wave, vm_name, spec)
    service = wait_for_service(guest, spec["timeout"])   # then judged once, whatever the wait found
    connect = ConnectOptions(known_hosts=spec.get("known_hosts"), command_timeout=spec["timeout"])
    report = run_preflight([guest], FleetOptions(parallel=1, timeout=spec["timeout"], phase="post", connect=connect))
    if spec.get("waivers"):
        report.apply_waivers(waivers.load(spec["waivers"]))   # the readiness recorded is the waived one
    rep = report.guests[0]
    findings = [{"check": f.check_id, "severity": f.severity.value, "status": f.status.value,
                 "resource": f.resource, "message": f.message}
                for f in rep.findings if f.status is not Status.PASS]
    counts: dict[str, int] = {}
    for f in rep.findings:
        counts[f.status.value] = counts.get(f.status.value, 0) + 1
    failing = []
    if spec["fail_on"] != "none":
        floor = Severity(spec["fail_on"]).rank
        failing = [f"{f.check_id} [{f.severity.value} {f.status.value}] {f.message}" for f in rep.findings
                   if f.status.is_open and f.severity.rank >= floor]
    out = {"phase": "post", "guest": guest.name, "address": guest.address, "transport": guest.transport.value,
           "readiness": rep.readiness.value, "counts": counts, "findings": findings, "fail_on": spec["fail_on"],
           "error": rep.error, "service": service}
    return out, failing
