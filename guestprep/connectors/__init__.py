"""Transports to guests: one table from transport to connector class (:data:`CONNECTORS`).

Each connector parses its own part of the guest's spec (address, port, credentials,
``ansible_winrm_*``/``ansible_psrp_*`` vars) when it is built from the guest. A new transport is
a :class:`~guestprep.models.Transport` member, its module and one row here; the rule what
``os: auto`` means over it lives in the same row.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass

from guestprep.models import Guest, OSFamily, Transport


@dataclass(frozen=True)
class ConnectOptions:
    """Per-run connection policy (from CLI flags); secure by default."""

    connect_timeout: float = 15.0
    command_timeout: float = 300.0
    accept_new_host_keys: bool = False   # SSH trust-on-first-use only when asked
    known_hosts: str | None = None       # default: ~/.ssh/known_hosts
    insecure_tls: bool = False           # WinRM/PSRP/vSphere/Proxmox: verify unless asked
    ca_bundle: str | None = None
    keepalive: int = 30


@dataclass(frozen=True)
class ConnectorEntry:
    """Where a transport's connector class lives, and the OS ``os: auto`` means over it."""

    module: str
    cls: str
    implied_os: OSFamily = OSFamily.AUTO


# Named by module so that a run imports only the client libraries (paramiko, pywinrm, pypsrp)
# of the transports its guests use.
CONNECTORS: dict[Transport, ConnectorEntry] = {
    Transport.LOCAL: ConnectorEntry("guestprep.connectors.local", "LocalConnector"),
    Transport.SSH: ConnectorEntry("guestprep.connectors.ssh", "SSHConnector"),
    Transport.WINRM: ConnectorEntry("guestprep.connectors.winrm", "WinRMConnector", OSFamily.WINDOWS),
    Transport.PSRP: ConnectorEntry("guestprep.connectors.psrp", "PSRPConnector", OSFamily.WINDOWS),
}


def implied_os(transport: Transport) -> OSFamily:
    """What ``os: auto`` means over ``transport``: WinRM and PSRP reach only Windows, the rest say nothing."""
    return CONNECTORS[transport].implied_os


def connector_class(transport: Transport) -> type:
    entry = CONNECTORS.get(transport)
    if entry is None:
        raise ValueError(f"unknown transport {transport!r}")
    return getattr(importlib.import_module(entry.module), entry.cls)


def open_connector(guest: Guest, options: ConnectOptions | None = None):
    """Return a connected :class:`~guestprep.connectors.base.Connector` for ``guest``."""
    from guestprep.connectors import runlog

    if not runlog.enabled():
        return connector_class(guest.transport)(guest, options or ConnectOptions())
    started = time.monotonic()
    where = {"guest": guest.name, "transport": guest.transport.value, "address": guest.address, "port": guest.port}
    try:
        conn = connector_class(guest.transport)(guest, options or ConnectOptions())
    except BaseException as exc:
        runlog.record("connect", **where, ok=False, error=str(exc), detail=getattr(exc, "detail", None),
                      duration_s=round(time.monotonic() - started, 3))
        raise
    runlog.record("connect", **where, ok=True, duration_s=round(time.monotonic() - started, 3))
    return runlog.instrument(conn, guest)
