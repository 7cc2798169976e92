"""tests/efi: EFI facts, checks and operations (fixtures built by build_fixtures.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
