#!/usr/bin/env bash
# Runs ruff and the whole test suite. Creates .venv (with test extras) on first use.
# Extra arguments go to pytest, e.g. `launch/test.sh -k gin`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
ensure_venv test
cd "$REPO_ROOT"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
exec "$VENV/bin/python" -m pytest "$@"
