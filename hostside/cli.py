"""guestprep-host: runs on the Proxmox node (standard library + qemu tools)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print("guestprep-host: not implemented yet", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
