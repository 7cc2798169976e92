"""Options shared by several commands, so each is spelled (and documented) once."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

# --------------------------------------------------------------------------- commands that reach guests

InventoryOpt = typer.Option(None, "--inventory", "-i", help="Fleet YAML or Ansible inventory (YAML/INI).",
                            dir_okay=False)
LocalOpt = typer.Option(False, "--local", help="Audit the machine guestprep runs on (no inventory needed).")
TimeoutOpt = typer.Option(300.0, "--timeout", min=1.0, help="Per-guest timeout in seconds.")
AcceptOpt = typer.Option(False, "--accept-new-host-keys",
                         help="Trust unknown SSH host keys on first use and save them. A changed key is always refused.")
KnownHostsOpt = typer.Option(None, "--known-hosts", help="known_hosts file (default ~/.ssh/known_hosts).")
InsecureOpt = typer.Option(False, "--insecure", help="Do not verify TLS certificates (WinRM/PSRP). Never the default.")
CaOpt = typer.Option(None, "--ca-bundle", help="CA bundle for TLS verification (WinRM/PSRP).")


def connect_options(timeout: float, accept_new_host_keys: bool, known_hosts: Optional[Path], insecure: bool,
                    ca_bundle: Optional[Path]):
    """The connectors' options from the command line's."""
    from guestprep.connectors import ConnectOptions

    return ConnectOptions(connect_timeout=min(timeout, 30.0), command_timeout=timeout,
                          accept_new_host_keys=accept_new_host_keys,
                          known_hosts=str(known_hosts) if known_hosts else None,
                          insecure_tls=insecure, ca_bundle=str(ca_bundle) if ca_bundle else None)


# --------------------------------------------------------------------------- prepare and rollback

# Plans only read guests, like preflight. Apply and rollback change guests: at most 8 at once keeps
# a mistake (bad package source, wrong inventory group) to a few guests before Ctrl-C, and keeps
# initramfs rebuilds off shared datastores and package mirrors in bursts of dozens.
PLAN_PARALLEL = 32
CHANGE_PARALLEL = 8

ParallelOpt = typer.Option(None, "--parallel", "-p", min=1, max=1024,
                           help=f"Guests handled at once (default {PLAN_PARALLEL} for plans, "
                                f"{CHANGE_PARALLEL} for --apply and rollback).")
JsonOutOpt = typer.Option(None, "--json-out", dir_okay=False,
                          help="Also write per-guest results (status, the operations planned, applied and "
                               "verified, errors) to FILE as JSON, atomically.")

# --------------------------------------------------------------------------- commands that reach vSphere

DEFAULT_PASSWORD_ENV = "GUESTPREP_VSPHERE_PASSWORD"

ServerOpt = typer.Option(..., "--server", "-s", help="vCenter/ESXi host[:port].")
UserOpt = typer.Option(..., "--user", "-u", help="vSphere user, e.g. administrator@vsphere.local.")
PasswordEnvOpt = typer.Option(DEFAULT_PASSWORD_ENV, "--password-env",
                              help="Environment variable holding the password (else stdin, else a prompt).")
VsphereCaOpt = typer.Option(None, "--ca-bundle", help="PEM CA bundle that signs the vCenter certificate.",
                            dir_okay=False)
ThumbOpt = typer.Option(None, "--thumbprint", help="Pin the server certificate by its SHA-256 fingerprint.")
VsphereInsecureOpt = typer.Option(False, "--insecure", help="Do not verify the TLS certificate. Never the default.")
VsphereTimeoutOpt = typer.Option(60.0, "--timeout", min=1.0, help="Seconds to wait for each vSphere HTTP request.")
