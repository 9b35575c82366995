#!/usr/bin/env bash
# `npm test`: runs every suite even when one fails, then prints a summary and exits non-zero if
# any failed. Stopping at the first failure hid every later suite's result from a CI run.
set -uo pipefail
cd "$(dirname "$0")/.."

names=()
results=()
run() {
  local name="$1"
  shift
  echo "=== ${name}: $*"
  local start=$SECONDS
  "$@"
  local status=$?
  names+=("$name")
  results+=("$status $((SECONDS - start))")
  if [[ $status -ne 0 ]]; then echo "=== ${name}: FAILED (exit ${status})"; fi
}

# systemd-analyze (Debian's systemd package) checks the unit file `kiapi service` writes; the
# tests install what they need, so `npm ci && npm test` works on a fresh machine.
if ! command -v systemd-analyze >/dev/null; then
  sudo=""; [[ $(id -u) == 0 ]] || sudo="sudo"
  $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends systemd >/dev/null \
    || echo "=== could not install systemd (for systemd-analyze); the unit-file checks will fail"
fi

run typecheck npm run --silent typecheck
run lint npm run --silent lint
run build npm run --silent build
# The node tests, the fuzz run and the generated clients need the build; without one they would only repeat its failure.
if [[ "${results[2]%% *}" == 0 ]]; then
  run node-tests npm run --silent test:node
else
  names+=("node-tests"); results+=("skipped 0")
fi
run worker-checks npm run --silent test:worker
if [[ "${results[2]%% *}" == 0 ]]; then
  run real-engine npm run --silent test:real-engine
  run fuzz npm run --silent test:fuzz
  run clients npm run --silent test:clients
  run openai-sdk npm run --silent test:openai-sdk
  run browser npm run --silent test:browser
  run cluster npm run --silent test:cluster
else
  names+=("real-engine" "fuzz" "clients" "openai-sdk" "browser" "cluster"); results+=("skipped 0" "skipped 0" "skipped 0" "skipped 0" "skipped 0" "skipped 0")
fi

echo
echo "=== summary"
failed=0
for i in "${!names[@]}"; do
  read -r status secs <<<"${results[$i]}"
  if [[ "$status" == 0 ]]; then
    printf '  ok      %-14s %ss\n' "${names[$i]}" "$secs"
  elif [[ "$status" == skipped ]]; then
    printf '  SKIPPED %-14s (the build failed)\n' "${names[$i]}"
    failed=1
  else
    printf '  FAILED  %-14s exit %s after %ss\n' "${names[$i]}" "$status" "$secs"
    failed=1
  fi
done
exit "$failed"
