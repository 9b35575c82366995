#!/usr/bin/env bash
# Re-creates the engine locks (worker/locks/{darwin-arm64,linux-cuda13,linux-cpu}.txt) with pip's
# resolver, for every flavour in worker/kiapi_worker/pins.py and Python 3.11-3.13. After changing
# the mflux pin (or to take newer dependency releases), run this one command and commit the locks.
# Needs python3 and PyPI (KIAPI_LOCK_INDEX_URL for another index); pip comes from the cached tools
# venv (worker/requirements-dev.txt pins it), so every run resolves with the same pip.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export KIAPI_TEST_CACHE="${KIAPI_TEST_CACHE:-$repo_root/.cache}"
venv="$KIAPI_TEST_CACHE/pytools-venv"

# shellcheck source=../../scripts/tools-venv.sh
source "$repo_root/scripts/tools-venv.sh"
ensure_tools_venv "$venv" "$repo_root/worker/requirements-dev.txt" ruff update-locks

"$venv/bin/python" "$repo_root/worker/locks/lockgen.py" update "$@"
for flavour in metal cuda13 cpu; do
  echo "update-locks: checking $flavour"
  "$venv/bin/python" "$repo_root/worker/locks/lockgen.py" check "$flavour" 3.11
done
