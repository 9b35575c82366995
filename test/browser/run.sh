#!/usr/bin/env bash
# `npm run test:browser`: the playground's tests in a real browser. Chromium comes from Debian's
# packages (installed here when missing; playwright-core drives it and downloads no browser of its
# own). The tests start their own kiapi on 127.0.0.1 with the preview engine.
set -euo pipefail
cd "$(dirname "$0")/../.."

log() { echo "[browser] $*"; }

if [[ ! -x "${KIAPI_CHROMIUM:-/usr/bin/chromium}" ]]; then
  log "installing Debian's chromium"
  sudo=""
  if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q chromium
fi

if [[ ! -f dist/test/browser/playground.test.js || ! -f dist/web/app.js ]]; then
  log "building (dist/ is missing)"
  npm run --silent build
fi

node --test --test-concurrency=1 --test-timeout=600000 dist/test/browser/
