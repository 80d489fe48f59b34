#!/usr/bin/env bash
# Set up .venv and run the test suite. Extra arguments go to pytest (e.g. -m "not slow", -k store).
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh || exit 1
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
    echo "scripts/test.sh: pytest collected no tests (exit 5): the selection matched nothing" >&2
    exit 1
fi
exit "$rc"
