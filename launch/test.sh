#!/usr/bin/env bash
# Runs ruff and the whole test suite. Creates .venv (with test extras) on first use.
# Extra arguments go to pytest, e.g. `launch/test.sh -k gin`. `launch/test.sh --quick` runs the
# quick tier for the edit loop: every test not marked slow (every module, in about 3 minutes).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
# An unsupported Python is named before minutes of apt-get on a new machine.
check_python
# The container tests run as root only (podman here needs it); every test needs the "test" group.
if [ "$(id -u)" = 0 ]; then ensure_system_packages test container; else ensure_system_packages test; fi
ensure_venv test
cd "$REPO_ROOT"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
quick=()
if [ "${1:-}" = "--quick" ]; then
  shift
  quick=(-m "not slow")
fi
# Three workers on two cores: start-ups are single-threaded and fault tests wait on purpose, so
# two workers left the cores idle a sixth of the time (docs/testing.md). Tests sharing a session
# fixture share a worker.
exec "$VENV/bin/python" -m pytest -n 3 --dist loadgroup "${quick[@]}" "$@"
