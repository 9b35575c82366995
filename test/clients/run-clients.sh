#!/usr/bin/env bash
# Generated clients against a live server: from each served OpenAPI document (root, qwen,
# ideogram4) it generates a Python client (openapi-python-client, pinned in
# test/clients/requirements.txt, in a cached venv), TypeScript types (openapi-typescript, with
# openapi-fetch to call the server; pinned by test/clients/ts/package-lock.json, installed with
# npm ci into a cached folder, never into the repo) and a second Python client with
# openapi-generator's `python` generator (the Java openapi-generator-cli jar, pinned below, fetched
# from Maven Central with Maven into the cache; the generated packages are installed into the
# clients venv). It type-checks the TypeScript client with tsc and calls every operation of every
# document through each client (test/clients/python_client_check.py,
# test/clients/ts/client-check.ts, test/clients/openapi_generator_check.py). Last, a hand-written
# Python client watches the job event streams with httpx-sse (test/clients/python_events_check.py).
#
# The server is the built CLI with the preview engine on a free 127.0.0.1 port, a temp data dir and
# a bearer token, so the documents carry the security scheme and the 401 answers the clients see.
# Needs python3 (>= 3.10, with venv and pip), node, a Java runtime (>= 11) and Maven (installed
# with apt-get when missing), and access to PyPI, the npm registry and Maven Central.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export KIAPI_TEST_CACHE="${KIAPI_TEST_CACHE:-$repo_root/.cache}"
venv="$KIAPI_TEST_CACHE/clients-venv"
ts_tools="$KIAPI_TEST_CACHE/clients-ts-tools"
here="$repo_root/test/clients"
token="client-check-token"

say() { echo "run-clients: $*"; }

# openapi-generator-cli: one jar holds every generator. Kept per version in the cache, so only the
# first run (or a version change) downloads it (~32 MB).
OPENAPI_GENERATOR_VERSION=7.25.0
og_jar="$KIAPI_TEST_CACHE/openapi-generator/openapi-generator-cli-$OPENAPI_GENERATOR_VERSION.jar"

# shellcheck source=../../scripts/tools-venv.sh
source "$repo_root/scripts/tools-venv.sh"
ensure_tools_venv "$venv" "$here/requirements.txt" openapi-python-client run-clients

# The TypeScript tools, reinstalled whenever their lock or the node version changes.
ts_stamp="$( { cat "$here/ts/package-lock.json"; node --version; } | sha256sum | cut -d' ' -f1)"
if [[ ! -f "$ts_tools/.stamp" || "$(cat "$ts_tools/.stamp")" != "$ts_stamp" ]]; then
  say "preparing $ts_tools"
  rm -rf "$ts_tools"
  mkdir -p "$ts_tools"
  cp "$here/ts/package.json" "$here/ts/package-lock.json" "$ts_tools/"
  (cd "$ts_tools" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$ts_stamp" > "$ts_tools/.stamp"
fi

# Java and Maven come with this project's machines; elsewhere they are installed from Debian's
# packages (as root, like CI).
apt_updated=""
ensure_command() {
  local cmd="$1" package="$2"
  command -v "$cmd" > /dev/null && return 0
  say "$cmd is missing: installing the Debian package $package"
  if [[ -z "$apt_updated" ]]; then apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$package" > /dev/null
}
ensure_command java default-jre-headless
ensure_command mvn maven
if [[ ! -f "$og_jar" ]]; then
  say "fetching openapi-generator-cli $OPENAPI_GENERATOR_VERSION from Maven Central"
  # --strict-checksums: a jar whose checksum does not match the repository's is refused. Maven's
  # output is shown only when it fails.
  mvn_log="$(mktemp)"
  if ! mvn --batch-mode --quiet --strict-checksums dependency:copy \
      -Dartifact="org.openapitools:openapi-generator-cli:$OPENAPI_GENERATOR_VERSION:jar" \
      -DoutputDirectory="$(dirname "$og_jar")" > "$mvn_log" 2>&1 || [[ ! -f "$og_jar" ]]; then
    say "fetching openapi-generator-cli failed:"; cat "$mvn_log"; rm -f "$mvn_log"; exit 1
  fi
  rm -f "$mvn_log"
fi

cd "$repo_root"
# shellcheck source=../../scripts/test-server.sh
source "$repo_root/scripts/test-server.sh"
ensure_build say

# Inside the repo (.cache is ignored by git) so tsc finds @types/node in the repo's node_modules.
mkdir -p "$repo_root/.cache"
work="$(mktemp -d "$repo_root/.cache/clients-run-XXXXXX")"
stop_server_on_exit
# 20 ms per preview step: the examples (4 and 12 steps) stay quick, while a 100-step job is still
# running when the clients cancel it.
start_test_server say KIAPI_PREVIEW_STEP_MS=20 KIAPI_AUTH_TOKEN="$token"
say "server on $base"

status=0
mkdir -p "$work/docs" "$work/py" "$work/ts/generated" "$work/og"
og_configs=()
for pair in root:/openapi.json qwen:/v1/image/qwen/openapi.json ideogram4:/v1/image/ideogram4/openapi.json; do
  name="${pair%%:*}"
  python3 -c 'import sys, urllib.request; sys.stdout.buffer.write(urllib.request.urlopen(sys.argv[1], timeout=30).read())' \
    "$base${pair#*:}" > "$work/docs/$name.json"
  # Only the package: its tests and docs pages are not used here and would double the files written.
  cat > "$work/og/$name.json" <<JSON
{"generatorName": "python", "inputSpec": "$work/docs/$name.json", "outputDir": "$work/og/$name",
 "packageName": "kiapi_og_$name",
 "globalProperties": {"apiTests": "false", "modelTests": "false", "apiDocs": "false", "modelDocs": "false"}}
JSON
  og_configs+=("$work/og/$name.json")
done

# openapi-generator runs in the background while the other two clients are generated and checked:
# one JVM for the three documents (batch mode), only its first compiler tier (a short run gains
# nothing from the optimising one; ~1 s less), then pip installs the packages as a user would,
# without dependencies (the venv pins what they import). The generator validates each document
# first and fails on an invalid one.
(
  java -XX:TieredStopAtLevel=1 -jar "$og_jar" batch --fail-fast --threads 3 "${og_configs[@]}" &&
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation \
      --force-reinstall --no-compile "$work/og/root" "$work/og/qwen" "$work/og/ideogram4"
) > "$work/og.log" 2>&1 &
og_pid=$!

for name in root qwen ideogram4; do
  # --fail-on-warning: a document the generator only partly understands is a failure, not a
  # client with operations silently missing. PATH: the generator runs ruff from its venv.
  if ! PATH="$venv/bin:$PATH" "$venv/bin/openapi-python-client" generate --path "$work/docs/$name.json" \
      --output-path "$work/py/kiapi_$name" --meta none --fail-on-warning > "$work/py-$name.log" 2>&1; then
    say "openapi-python-client failed on $name:"; cat "$work/py-$name.log"; status=1
  fi
  if ! "$ts_tools/node_modules/.bin/openapi-typescript" "$work/docs/$name.json" -o "$work/ts/generated/$name.ts" > "$work/ts-$name.log" 2>&1; then
    say "openapi-typescript failed on $name:"; cat "$work/ts-$name.log"; status=1
  fi
done

if [[ $status -eq 0 ]]; then
  say "Python client: calling every operation"
  "$venv/bin/python" "$here/python_client_check.py" "$base" "$token" "$work/py" || status=1

  say "TypeScript client: tsc, then calling every operation"
  cp "$here/ts/client-check.ts" "$here/ts/tsconfig.json" "$work/ts/"
  echo '{"type": "module"}' > "$work/ts/package.json"
  ln -s "$ts_tools/node_modules" "$work/ts/node_modules"
  if (cd "$work/ts" && "$repo_root/node_modules/.bin/tsc" -p tsconfig.json); then
    node "$work/ts/out/client-check.js" "$base" "$token" || status=1
  else
    say "the TypeScript client does not type-check against the generated types"
    status=1
  fi
fi

if wait "$og_pid"; then
  say "openapi-generator Python client: calling every operation"
  "$venv/bin/python" "$here/openapi_generator_check.py" "$base" "$token" || status=1
else
  say "openapi-generator failed to generate or install the clients:"; cat "$work/og.log"; status=1
fi

say "Python SSE client (httpx-sse): watching job events"
"$venv/bin/python" "$here/python_events_check.py" "$base" "$token" || status=1

server_findings say || status=1
if [[ $status -eq 0 ]]; then say "ok"; else say "FAILED"; fi
exit "$status"
