#!/usr/bin/env bash
# Runs ruff and the whole test suite. Creates .venv (with test extras) on first use.
# Extra arguments go to pytest, e.g. `launch/test.sh -k gin`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
# The container tests run as root only (podman here needs it); every test needs the "test" group.
if [ "$(id -u)" = 0 ]; then ensure_system_packages test container; else ensure_system_packages test; fi
ensure_venv test
cd "$REPO_ROOT"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
exec "$VENV/bin/python" -m pytest "$@"
