"""Error types that the CLI turns into clear messages and exit codes (never tracebacks)."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


class GuestprepError(Exception):
    """Base: a message meant for the operator. ``where`` names the file/field/guest."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, where: str | None = None):
        super().__init__(message)
        self.message = message
        self.where = where

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


class ConfigError(GuestprepError):
    """Bad inventory, bad options, bad input file."""


class ConnectionFailed(GuestprepError):
    """The guest could not be reached or refused authentication."""

    exit_code = EXIT_UNREACHABLE


class HostKeyError(ConnectionFailed):
    """SSH host key unknown (without --accept-new-host-keys) or changed."""


class CommandTimeout(GuestprepError):
    exit_code = EXIT_UNREACHABLE


class CollectorError(GuestprepError):
    """A collector printed something that is not the JSON document it promised."""

    exit_code = EXIT_UNREACHABLE


class OperationError(GuestprepError):
    """An operation failed on the guest; the guest was left as the message says."""

    exit_code = EXIT_FINDINGS
