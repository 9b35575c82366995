#!/usr/bin/env bash
# Fuzzes kiapi against its own OpenAPI documents with schemathesis (pinned in
# test/fuzz/requirements.txt, installed into a cached venv like worker/run-checks.sh does).
#
# Starts the built server (node dist/src/cli/main.js run) with the preview engine on a free
# 127.0.0.1 port and a temp data dir, runs `st run` against both capability documents and then the
# root document (so its stateful phase finds real jobs and files), stops the server, and exits
# non-zero on any failure. The last line is the summary: `fuzz: N passed, M failed` (test cases).
#
# Needs python3 (>= 3.10, with venv and pip), node and access to PyPI. Knobs (for reproducing):
#   KIAPI_FUZZ_MAX_EXAMPLES  cases per operation and phase (default 250)
#   KIAPI_FUZZ_MIN_CASES     fail when fewer cases were generated in total (default 2000)
#   KIAPI_FUZZ_SEED          schemathesis --seed (default: random; each run prints its seed)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export KIAPI_TEST_CACHE="${KIAPI_TEST_CACHE:-$repo_root/.cache}"
venv="$KIAPI_TEST_CACHE/fuzz-venv"
requirements="$repo_root/test/fuzz/requirements.txt"
max_examples="${KIAPI_FUZZ_MAX_EXAMPLES:-250}"
min_cases="${KIAPI_FUZZ_MIN_CASES:-2000}"
started=$SECONDS

say() { echo "run-fuzz: $*"; }

# shellcheck source=../../scripts/tools-venv.sh
source "$repo_root/scripts/tools-venv.sh"
ensure_tools_venv "$venv" "$requirements" st run-fuzz

cd "$repo_root"
# shellcheck source=../../scripts/test-server.sh
source "$repo_root/scripts/test-server.sh"
ensure_build say

work="$(mktemp -d "${TMPDIR:-/tmp}/kiapi-fuzz-XXXXXX")"
stop_server_on_exit
# Small default sizes keep the many generations that omit width/height cheap; the caps stay at
# their defaults (2048, 100 steps), which the preview engine renders in well under a second.
start_test_server say KIAPI_PREVIEW_STEP_MS=0 \
  KIAPI_QWEN_DEFAULT_WIDTH=256 KIAPI_QWEN_DEFAULT_HEIGHT=256 \
  KIAPI_IDEOGRAM4_DEFAULT_WIDTH=256 KIAPI_IDEOGRAM4_DEFAULT_HEIGHT=256 \
  KIAPI_SYNC_TIMEOUT_S=120
say "server on $base (data dir $work/data)"

# Checks: every schemathesis check but two. positive_data_acceptance: the seed contract keeps the
# size and step bounds in descriptions (width/height are plain integers in the schema), so a
# schema-valid width of 17 is rightly refused with 422. negative_data_rejection: kiapi accepts the
# original's lax spellings on purpose ("256" for an integer, "yes" or 1 for a boolean, a numeric
# `limit` query string; docs/compatibility.md §4.4), which the contract's types do not express, so
# the fuzzer's "wrong type" cases are sometimes valid; what must still be refused is covered by
# test/integration/lax-inputs.test.ts and family-validation.test.ts. Every other check must
# pass, among them not_a_server_error, status_code_conformance, content_type_conformance,
# response_schema_conformance, response_headers_conformance, unsupported_method (405 + Allow)
# and use_after_free.
# The two event streams are left out. GET /v1/events streams until the client goes (a
# dashboard's feed), so every case would wait out the request timeout. A job's stream ends with
# the job, but its documented body is text (OpenAPI 3.1 cannot give each event a schema apart from
# the body's, and the client generators read `schema` as the body), while schemathesis checks each
# event against that schema. Both are covered by test/integration/job-events.test.ts, the
# generated-client checks and test/clients/python_events_check.py.
# --workers 1: with Python 3.11's ast module, concurrent workers crash hypothesis while it
# describes strategies ("AST constructor recursion depth mismatch"), a runner error, not ours.
st_args=(--checks all --exclude-checks positive_data_acceptance,negative_data_rejection
  --exclude-operation-id all_events_v1_events_get --exclude-operation-id job_events_v1_jobs__job_id__events_get
  --max-examples "$max_examples" --workers 1 --request-timeout 120
  --generation-database none --no-color)
if [[ -n "${KIAPI_FUZZ_SEED:-}" ]]; then st_args+=(--seed "$KIAPI_FUZZ_SEED"); fi

total_cases=0
total_failed=0
status=0
# The families first: their generations leave jobs and files for the root document's links.
for doc in /v1/image/qwen/openapi.json /v1/image/ideogram4/openapi.json /openapi.json; do
  out="$work/st-$(echo "$doc" | tr '/.' '__').txt"
  say "st run $base$doc"
  set +e
  (cd "$work" && "$venv/bin/st" run "$base$doc" "${st_args[@]}") > "$out" 2>&1
  code=$?
  set -e
  # Only the conclusion goes to the log unless something failed.
  if [[ $code -ne 0 ]]; then cat "$out"; else sed -n '/=== SUMMARY ===/,$p' "$out"; fi
  cases="$(sed -n 's/^ *\([0-9][0-9]*\) generated.*/\1/p' "$out" | tail -n 1)"
  failed="$(sed -n 's/^ *[0-9][0-9]* generated, \([0-9][0-9]*\) found.*/\1/p' "$out" | tail -n 1)"
  cases="${cases:-0}"
  failed="${failed:-0}"
  if [[ $code -ne 0 && $failed -eq 0 ]]; then failed=1; fi # a runner error counts as one failure
  total_cases=$((total_cases + cases))
  total_failed=$((total_failed + failed))
  if [[ $code -ne 0 ]]; then status=1; fi
done

if ! kill -0 "$server_pid" 2>/dev/null; then
  say "the server died during the run:"
  cat "$work/server.log"
  status=1
  total_failed=$((total_failed + 1))
fi
# Anything the server logged at error level (an unhandled error, a failed job) is a finding too.
if grep -q '"level":\(50\|60\)' "$work/server.log"; then
  say "the server logged errors:"
  grep '"level":\(50\|60\)' "$work/server.log" | head -n 20
  status=1
  total_failed=$((total_failed + 1))
fi
if [[ $total_cases -lt $min_cases ]]; then
  say "only $total_cases cases were generated; at least $min_cases are required (KIAPI_FUZZ_MIN_CASES)"
  status=1
fi

say "$total_cases cases over 3 documents in $((SECONDS - started)) s (schemathesis $("$venv/bin/st" --version | awk '{print $NF}'), --max-examples $max_examples)"
echo "fuzz: $((total_cases - total_failed < 0 ? 0 : total_cases - total_failed)) passed, $total_failed failed"
exit "$status"
