#!/bin/sh
# Run the whole suite; pytest's exit 5 ("no tests collected") is a failure here.
set -u
VENV="${VENV:-.venv}"
mkdir -p tests/artifacts
"$VENV/bin/python" -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
    echo "run-tests: pytest collected no tests: failing" >&2
    exit 1
fi
exit "$rc"
