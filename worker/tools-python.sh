#!/usr/bin/env bash
# Builds (or reuses) the worker's tools venv (worker/requirements-dev.txt: pytest, ruff, numpy,
# Pillow) and prints its python on stdout (everything else goes to stderr). run-checks.sh runs the
# worker's checks in it; the node tests of step previews run the worker on the fake mflux with it,
# since previews need numpy and Pillow (which mflux brings) and a bare python3 has neither.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${KIAPI_TEST_CACHE:-$repo_root/.cache}/pytools-venv"
# shellcheck source=../scripts/tools-venv.sh
source "$repo_root/scripts/tools-venv.sh"
ensure_tools_venv "$venv" "$repo_root/worker/requirements-dev.txt" ruff run-checks >&2
echo "$venv/bin/python"
