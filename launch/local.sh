#!/usr/bin/env bash
# Trains SAC on Minitaur on a local cluster: replay server, learner, collectors, evaluator.
# Creates .venv on first use. Flags: --root_dir --num_collectors --gin_file --gin_bindings --port
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
ensure_venv
exec "$VENV/bin/python" -m distributed_sac.tools.launcher "$@"
