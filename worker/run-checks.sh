#!/usr/bin/env bash
# Lints and tests the Python worker with pinned tools in a cached venv.
# Needs only python3 (>= 3.10, with venv and pip) and access to PyPI.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export KIAPI_TEST_CACHE="${KIAPI_TEST_CACHE:-$repo_root/.cache}"
venv="$KIAPI_TEST_CACHE/pytools-venv"
requirements="$repo_root/worker/requirements-dev.txt"
stamp="$venv/.requirements.sha256"

python3 - <<'PY' || { echo "run-checks: python3 >= 3.10 is required" >&2; exit 1; }
import sys
sys.exit(0 if sys.version_info >= (3, 10) else 1)
PY

# The stamp covers the requirements and the interpreter, so a change to either reinstalls.
wanted="$( { cat "$requirements"; python3 -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)"
if [[ ! -x "$venv/bin/python" || ! -f "$stamp" || "$(cat "$stamp")" != "$wanted" ]]; then
  echo "run-checks: preparing $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
  echo "$wanted" > "$stamp"
fi

cd "$repo_root"
status=0
run() {
  echo "run-checks: $*"
  "$@" || status=1
}
run "$venv/bin/ruff" check worker
run "$venv/bin/ruff" format --check worker
run "$venv/bin/python" -m pytest worker/tests -q
exit "$status"
