#!/usr/bin/env bash
# The real-engine lane: real mflux + MLX (from the checked-in lock) with tiny random checkpoints
# made here, driven through kiapi's HTTP server and CLI. Part of `npm test`; on a Mac or an NVIDIA
# box run the same lane on the GPU with
#
#   npm run build && bash test/real-engine/run.sh metal     # or: cuda13
#
# Needs the build (dist/), Python >= 3.11 and PyPI the first time (the venv is cached).
# `bash test/real-engine/run.sh cpu --bench` runs the real-engine benchmark on the same fixtures.
set -euo pipefail

flavour="${1:-cpu}"
shift || true
# Further arguments name test files (default: the whole lane).
tests=("$@")
[[ ${#tests[@]} -gt 0 ]] || tests=(dist/test/real-engine/)
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$repo_root"

python="$(bash test/real-engine/engine-venv.sh "$flavour")"
work="$(mktemp -d "${TMPDIR:-/tmp}/kiapi-real-engine.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# The tiny checkpoints, laid out as on the Hub, in a Hugging Face cache of their own (never downloaded).
PYTHONPATH="$repo_root/test/real-engine" "$python" -m tiny_models build --hub-cache "$work/hub" --seed 0 > "$work/models.json"
echo "real-engine: tiny models $(cat "$work/models.json" | head -c 300)…" >&2

export KIAPI_REAL_ENGINE_PYTHON="$python"
export KIAPI_REAL_ENGINE_FLAVOUR="$flavour"
export KIAPI_TINY_HUB="$work/hub"
export KIAPI_TINY_MODELS_JSON="$work/models.json"
if [[ "${tests[0]}" == "--bench" ]]; then
  node dist/bench/run.js real-engine
  exit
fi
# One file at a time: each test server runs a worker that uses both cores.
node --test --test-concurrency=1 --test-timeout=600000 "${tests[@]}"
