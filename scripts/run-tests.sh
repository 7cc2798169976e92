#!/bin/sh
# Run the whole suite; pytest's exit 5 ("no tests collected") is a failure here.
# In parallel (pytest-xdist, a worker per core, at most 4), a test module (or class) at a time
# per worker: the BIOS and the UEFI QEMU labs (minutes, one TCG core per guest) are handed out
# first (tests/conftest.py), so they start at once and the rest runs beside them.
# (Not --dist loadgroup: with pytest 9.2 xdist 3.8's group suffix is lost, groups are ignored.)
# GUESTPREP_TEST_WORKERS=0 runs serially.
set -u
VENV="${VENV:-.venv}"
if [ -z "${GUESTPREP_TEST_WORKERS:-}" ]; then
    GUESTPREP_TEST_WORKERS=$(nproc 2>/dev/null || echo 2)
    [ "$GUESTPREP_TEST_WORKERS" -gt 4 ] && GUESTPREP_TEST_WORKERS=4
fi
mkdir -p tests/artifacts
"$VENV/bin/python" -m pytest -n "$GUESTPREP_TEST_WORKERS" --dist loadscope --no-loadscope-reorder "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
    echo "run-tests: pytest collected no tests: failing" >&2
    exit 1
fi
exit "$rc"
