#!/usr/bin/env bash
# Lints and tests the Python worker with pinned tools in a cached venv.
# Needs only python3 (>= 3.10, with venv and pip) and access to PyPI.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export KIAPI_TEST_CACHE="${KIAPI_TEST_CACHE:-$repo_root/.cache}"
venv="$(dirname "$(dirname "$(bash "$repo_root/worker/tools-python.sh")")")"

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
# So do the test helpers in Python (the fake service managers of the kiapi service tests).
run "$venv/bin/ruff" check --config worker/pyproject.toml test/support
run "$venv/bin/ruff" format --check --config worker/pyproject.toml test/support
run "$venv/bin/ruff" check --config worker/pyproject.toml test/clients/python_events_check.py
run "$venv/bin/ruff" format --check --config worker/pyproject.toml test/clients/python_events_check.py
run "$venv/bin/ruff" check --config worker/pyproject.toml test/clients/python_openai_check.py
run "$venv/bin/ruff" format --check --config worker/pyproject.toml test/clients/python_openai_check.py
run "$venv/bin/python" -m pytest worker/tests -q
exit "$status"
