"""Local transport: the machine guestprep runs on is the guest (``--local``)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from typing import Sequence

from guestprep import secrets
from guestprep.connectors import ConnectOptions, sudo as sudo_mod
from guestprep.connectors.base import Script
from guestprep.errors import CommandTimeout, GuestprepError
from guestprep.models import CommandResult, Guest


def script_argv(script: Script) -> list[str]:
    """A Script as argv: ``sh -c TEXT NAME ARGS...`` (stdin stays free for data)."""
    if script.interpreter != "sh":
        raise GuestprepError(f"{script.name}: interpreter {script.interpreter!r} is not available on Linux guests")
    return ["sh", "-c", script.text, f"guestprep-{script.name}", *script.args]


class LocalConnector:
    def __init__(self, guest: Guest, options: ConnectOptions | None = None):
        self.guest = guest
        self.name = guest.name
        self.options = options or ConnectOptions()
        self._nopasswd: bool | None = None

    def _privileged(self, argv: list[str], stdin: bytes | None) -> tuple[list[str], bytes | None]:
        if os.geteuid() == 0:
            return argv, stdin
        if self._nopasswd is None:
            self._nopasswd = subprocess.run(sudo_mod.PROBE, capture_output=True).returncode == 0
        where = f"guest {self.guest.name}"
        password = None if self._nopasswd else secrets.from_env(
            self.guest.credentials.sudo_password_env, "sudo password", where)
        if not self._nopasswd and password is None:
            raise GuestprepError("sudo needs a password: set sudo_password_env in the inventory", where=where)
        return sudo_mod.wrap(argv, self._nopasswd), sudo_mod.stdin_with_password(password, stdin, self._nopasswd)

    def run(self, command: Sequence[str] | Script, *, stdin: bytes | None = None, timeout: float = 300.0,
            sudo: bool = False) -> CommandResult:
        argv = script_argv(command) if isinstance(command, Script) else list(command)
        if sudo:
            argv, stdin = self._privileged(argv, stdin)
        start = time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)
        try:
            out, err = proc.communicate(stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise CommandTimeout(f"command did not finish within {timeout:g} s", where=f"guest {self.guest.name}")
        return CommandResult(proc.returncode, out, err, time.monotonic() - start)

    def put(self, local: str, remote: str, *, mode: int = 0o600) -> None:
        shutil.copyfile(local, remote)
        os.chmod(remote, mode)

    def get(self, remote: str, local: str) -> None:
        shutil.copyfile(remote, local)

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
