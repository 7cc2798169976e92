"""Host-side error types: each maps to the exit code the CLI returns.

They extend guestprep.errors so the controller can render them like any other
operator-facing error (message + where, never a traceback).
"""

from __future__ import annotations

from guestprep.errors import EXIT_FINDINGS, EXIT_UNREACHABLE, ConfigError, GuestprepError


class InputError(ConfigError):
    """The source image is unreadable, malformed or unsupported (exit 2)."""


class TargetRefused(ConfigError):
    """The target exists, lacks space, or breaks a storage rule (exit 2)."""


class ToolMissing(GuestprepError):
    """qemu-img, zfs, lvcreate... is not installed on this node (exit 3)."""

    exit_code = EXIT_UNREACHABLE


class SourceUnreachable(GuestprepError):
    """An HTTPS source refused us: TLS verification, session cookie, network (exit 3)."""

    exit_code = EXIT_UNREACHABLE


class ToolFailed(GuestprepError):
    """A tool ran and failed (exit 3)."""

    exit_code = EXIT_UNREACHABLE


class VerificationFailed(GuestprepError):
    """The converted target does not match its source (exit 1)."""

    exit_code = EXIT_FINDINGS


class Interrupted(GuestprepError):
    """Ctrl-C / SIGTERM during a conversion; the partial target was removed."""

    exit_code = 130
