#!/usr/bin/env bash
# The official OpenAI Python SDK against a live server: test/clients/python_openai_check.py, with
# the `openai` package pinned in test/clients/openai-requirements.txt (a cached venv). The Node
# SDK's run is a node integration test (test/integration/openai-images.test.ts).
#
# The server is the built CLI with the preview engine on a free 127.0.0.1 port, a temp data dir, a
# bearer token (so the 401 case is real), 20 ms preview steps (streams have steps to preview) and
# KIAPI_MAX_QUEUE=2 (so the 429 case needs only three jobs).
# Needs python3 (>= 3.10, with venv and pip), node, and access to PyPI.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export KIAPI_TEST_CACHE="${KIAPI_TEST_CACHE:-$repo_root/.cache}"
venv="$KIAPI_TEST_CACHE/openai-sdk-venv"
here="$repo_root/test/clients"
token="openai-sdk-check-token"

say() { echo "run-openai-sdk: $*"; }

# shellcheck source=../../scripts/tools-venv.sh
source "$repo_root/scripts/tools-venv.sh"
ensure_tools_venv "$venv" "$here/openai-requirements.txt" python run-openai-sdk
# The marker above is only the interpreter: make sure the SDK itself is there.
"$venv/bin/python" -c 'import openai' || { say "the openai package is missing from $venv; delete it and rerun"; exit 1; }

cd "$repo_root"
# shellcheck source=../../scripts/test-server.sh
source "$repo_root/scripts/test-server.sh"
ensure_build say

mkdir -p "$repo_root/.cache"
work="$(mktemp -d "$repo_root/.cache/openai-sdk-run-XXXXXX")"
stop_server_on_exit
start_test_server say KIAPI_PREVIEW_STEP_MS=20 KIAPI_MAX_QUEUE=2 KIAPI_AUTH_TOKEN="$token"
say "server on $base"

status=0
"$venv/bin/python" "$here/python_openai_check.py" "$base" "$token" || status=1

server_findings say || status=1
if [[ $status -eq 0 ]]; then say "ok"; else say "FAILED"; fi
exit "$status"
