#!/usr/bin/env bash
# Create .venv with the tested stack pinned by constraints.txt and wearspec installed (editable,
# with the dev extras). Re-running is cheap: nothing is reinstalled while constraints.txt and
# pyproject.toml are unchanged.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
"$PY" - <<'PYCHECK'
import sys
if sys.version_info < (3, 10):
    sys.exit(f"wearspec needs Python >= 3.10, found {sys.version.split()[0]}")
PYCHECK
want="$(cat constraints.txt pyproject.toml | sha256sum | cut -d' ' -f1)"
stamp=.venv/.wearspec-env
if [ -x .venv/bin/python ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
echo "setting up .venv (torch and the pinned stack; first time only, a few minutes)" >&2
"$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# PIP_CONSTRAINT also reaches pip's isolated build environment, so nothing pulls another torch.
PIP_CONSTRAINT="$PWD/constraints.txt" .venv/bin/python -m pip install -q -c constraints.txt -e ".[dev]"
echo "$want" > "$stamp"
