"""Property-based fuzz tests of every parser that reads outside input.

In `make test` each property runs a bounded number of examples; `make fuzz` sets
GUESTPREP_FUZZ_EXAMPLES high. The property everywhere: a clean error of the project's own
type or a valid result, within a time and memory bound; never a traceback or a hang.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

EXAMPLES = int(os.environ.get("GUESTPREP_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=os.environ.get("GUESTPREP_FUZZ_EXAMPLES") is None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
