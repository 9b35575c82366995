#!/usr/bin/env bash
# The cluster suite: installs what it needs (test/cluster/install.sh), then runs the tests in
# dist/test/cluster/ (build first: `npm run build`). Each test file starts and stops its own
# servers on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/../.."
start=$SECONDS
bash test/cluster/install.sh >/dev/null
echo "=== cluster: services installed in $((SECONDS - start)) s"
exec node --test --test-concurrency=1 --test-timeout=300000 dist/test/cluster/
