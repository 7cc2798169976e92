"""Logging in to vCenter/ESXi from a command: the password from the environment variable named
by --password-env, else from stdin when it is not a terminal, else from a hidden prompt; never argv."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import typer

from guestprep import secrets
from guestprep.errors import ConfigError


def vsphere_password(env_name: str) -> str:
    if not env_name:
        raise ConfigError("empty environment variable name", where="--password-env")
    value = os.environ.get(env_name)
    if value is None:
        if not sys.stdin.isatty():
            value = sys.stdin.readline().rstrip("\r\n")
            if not value:
                raise ConfigError(f"no password: set {env_name} or pipe it on stdin", where="password")
        else:
            value = typer.prompt("vSphere password", hide_input=True)
    secrets.register(value)
    return value


def open_session(server: str, user: str, password_env: str, ca_bundle: Optional[Path],
                 thumbprint: Optional[str], insecure: bool, timeout: float):
    from guestprep.vsphere.client import connect

    return connect(server, user, vsphere_password(password_env), ca_bundle=str(ca_bundle) if ca_bundle else None,
                   thumbprint=thumbprint, insecure=insecure, timeout=timeout)
