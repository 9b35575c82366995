#!/usr/bin/env bash
# Builds (or reuses) the engine venv of the real-engine lane from the checked-in lock, exactly as
# `kiapi activate` installs it, and prints the venv's python on stdout (everything else to stderr).
#
#   bash test/real-engine/engine-venv.sh [cpu|cuda13|metal]
#
# cpu (default): MLX's CPU flavour (mlx + mlx-cpu wheels) on Linux, no GPU needed.
# cuda13: Linux with an NVIDIA GPU. metal: macOS on Apple silicon.
# The venv lives in ${KIAPI_TEST_CACHE:-<repo>/.cache}/engine-venv-<flavour> and is rebuilt when the
# lock or the interpreter changes. Needs Python >= 3.11 (the engine's own Requires-Python) and PyPI.
set -euo pipefail

flavour="${1:-cpu}"
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
case "$flavour" in
  cpu) lock="$repo_root/worker/locks/linux-cpu.txt" ;;
  cuda13) lock="$repo_root/worker/locks/linux-cuda13.txt" ;;
  metal) lock="$repo_root/worker/locks/darwin-arm64.txt" ;;
  *) echo "engine-venv: unknown flavour '$flavour' (cpu, cuda13 or metal)" >&2; exit 2 ;;
esac

# The first interpreter that meets the engine's Requires-Python (KIAPI_LANE_PYTHON wins).
find_python() {
  local candidate
  for candidate in ${KIAPI_LANE_PYTHON:-} python3 python3.13 python3.12 python3.11; do
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
      command -v "$candidate"
      return 0
    fi
  done
  return 1
}
python="$(find_python)" || {
  echo "engine-venv: no Python >= 3.11 found (mflux needs it); set KIAPI_LANE_PYTHON" >&2
  exit 1
}

cache="${KIAPI_TEST_CACHE:-$repo_root/.cache}"
venv="$cache/engine-venv-$flavour"
stamp="$venv/.lock.sha256"
wanted="$( { cat "$lock"; "$python" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)"
if [[ ! -x "$venv/bin/python" || ! -f "$stamp" || "$(cat "$stamp")" != "$wanted" ]]; then
  echo "engine-venv: building $venv from $(basename "$lock") with $python" >&2
  rm -rf "$venv"
  mkdir -p "$cache"
  "$python" -m venv "$venv"
  # The lock is complete (mflux's unused torch is left out on purpose), so nothing is resolved here.
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --only-binary=:all: -r "$lock" >&2
  echo "$wanted" > "$stamp"
fi
echo "$venv/bin/python"
