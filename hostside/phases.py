"""The phases of one disk's conversion, timed and reported as they start.

inspect -> audit -> space_check -> convert -> verify -> manifest. Each phase's elapsed
time lands in the summary, the `done` event and the manifest's `timings` (`<phase>_s`).
A reporter (the CLI's progress bar or JSON lines) hears `phase(name)` when one starts and
`progress(percent)` during the copy; it ends with exactly one of `done`, `failed` or
`interrupted` (the CLI decides which: `done` only after the manifest was written).
"""

from __future__ import annotations

import contextlib
import time

TYPE_CHECKING = False   # typing is not imported at run time (start-up time, issue 17)
if TYPE_CHECKING:
    from typing import Iterator, Protocol

    class Reporter(Protocol):
        def phase(self, name: str) -> None: ...

        def __call__(self, percent: float) -> None: ...

PHASES = ("inspect", "audit", "space_check", "convert", "verify", "manifest")


class Clock:
    """Elapsed seconds per phase of one disk (`timings`: {"convert_s": 2.31, ...})."""

    def __init__(self, reporter: Reporter | None = None):
        self.reporter = reporter
        self.timings: dict[str, float] = {}
        self.current: str | None = None

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self.current = name
        if self.reporter is not None and hasattr(self.reporter, "phase"):
            self.reporter.phase(name)
        t0 = time.monotonic()
        try:
            yield
        finally:
            key = f"{name}_s"
            self.timings[key] = round(self.timings.get(key, 0.0) + time.monotonic() - t0, 3)

    def summary(self) -> str:
        """'inspect 0.01s, audit 0.00s, ...' in phase order."""
        parts = []
        for name in PHASES:
            if f"{name}_s" in self.timings:
                parts.append(f"{name.replace('_', ' ')} {self.timings[f'{name}_s']:.2f}s")
        return ", ".join(parts)
