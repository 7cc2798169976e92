"""Transports to guests. :func:`open_connector` picks the backend for a guest."""

from __future__ import annotations

from dataclasses import dataclass

from guestprep.models import Guest, Transport


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


def open_connector(guest: Guest, options: ConnectOptions | None = None):
    """Return a connected :class:`~guestprep.connectors.base.Connector` for ``guest``."""
    options = options or ConnectOptions()
    if guest.transport is Transport.LOCAL:
        from guestprep.connectors.local import LocalConnector

        return LocalConnector(guest, options)
    if guest.transport is Transport.SSH:
        from guestprep.connectors.ssh import SSHConnector

        return SSHConnector(guest, options)
    if guest.transport is Transport.WINRM:
        from guestprep.connectors.winrm import WinRMConnector

        return WinRMConnector(guest, options)
    if guest.transport is Transport.PSRP:
        from guestprep.connectors.psrp import PSRPConnector

        return PSRPConnector(guest, options)
    raise ValueError(f"unknown transport {guest.transport!r}")
