#!/usr/bin/env bash
# Lints and tests the Python worker with pinned tools in a cached venv.
# Needs only python3 (>= 3.10, with venv and pip) and access to PyPI.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export KIAPI_TEST_CACHE="${KIAPI_TEST_CACHE:-$repo_root/.cache}"
venv="$KIAPI_TEST_CACHE/pytools-venv"
requirements="$repo_root/worker/requirements-dev.txt"

# shellcheck source=../scripts/tools-venv.sh
source "$repo_root/scripts/tools-venv.sh"
ensure_tools_venv "$venv" "$requirements" ruff run-checks

cd "$repo_root"
status=0
run() {
  echo "run-checks: $*"
  "$@" || status=1
}
# The real-engine lane's Python (tiny checkpoints, patches) follows the worker's rules.
run "$venv/bin/ruff" check worker
run "$venv/bin/ruff" format --check worker
run "$venv/bin/ruff" check --config worker/pyproject.toml test/real-engine
run "$venv/bin/ruff" format --check --config worker/pyproject.toml test/real-engine
run "$venv/bin/python" -m pytest worker/tests -q
exit "$status"
