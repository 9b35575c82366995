# Sourced by test/fuzz/run-fuzz.sh, test/clients/run-clients.sh and test/clients/run-openai-sdk.sh:
# the built server they start, on a free 127.0.0.1 port, waited for, checked afterwards, stopped
# (TERM, then KILL after 10 s) and its work dir removed on exit. The server's output goes to
# "$work/server.log".

# ensure_build LOG_FUNCTION: builds dist/ when it is missing (the scripts also run on their own).
ensure_build() {
  if [[ ! -f dist/src/cli/main.js ]]; then
    "$1" "building (dist/ is missing)"
    npx tsc -p tsconfig.json
  fi
}

# free_port: a port nothing listens on right now.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# stop_server_on_exit: at exit, stops "$server_pid" (if set and alive) and removes "$work".
stop_server_on_exit() {
  server_pid=""
  trap _stop_test_server EXIT
}

_stop_test_server() {
  if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}

# start_test_server LOG_FUNCTION [KIAPI_NAME=value ...]: starts the built server with the preview
# engine on a free port, its data in "$work/data", with the settings given and none of the
# caller's own KIAPI_* settings (the documents the suites check advertise what the server reads);
# sets "$server_pid" and "$base" and waits until /health answers.
start_test_server() {
  local say_fn="$1"
  shift
  local unset_args=() name
  while IFS= read -r name; do unset_args+=(-u "$name"); done < <(env | sed -n 's/^\(KIAPI_[A-Za-z0-9_]*\)=.*/\1/p')
  local port
  port="$(free_port)"
  base="http://127.0.0.1:$port"
  env "${unset_args[@]}" KIAPI_ENGINE=preview KIAPI_DATA_DIR="$work/data" KIAPI_LOG_LEVEL=warn "$@" \
    node dist/src/cli/main.js run --host 127.0.0.1 --port "$port" > "$work/server.log" 2>&1 &
  server_pid=$!
  wait_healthy "$base" "$say_fn"
}

# wait_healthy BASE LOG_FUNCTION: waits up to 60 s for BASE/health to answer 200; otherwise prints
# the server's log and exits 1.
wait_healthy() {
  python3 - "$1" <<'PY' || { "$2" "the server did not become healthy:"; cat "$work/server.log"; exit 1; }
import sys, time, urllib.request
deadline = time.time() + 60
while time.time() < deadline:
    try:
        with urllib.request.urlopen(sys.argv[1] + "/health", timeout=2) as r:
            if r.status == 200:
                sys.exit(0)
    except Exception:
        time.sleep(0.2)
sys.exit(1)
PY
}

# server_findings LOG_FUNCTION: fails (1) when the server died during the run or logged anything
# at error level (an unhandled error, a failed job): either is a finding of the run.
server_findings() {
  local found=0
  if ! kill -0 "$server_pid" 2>/dev/null; then
    "$1" "the server died during the run:"; cat "$work/server.log"; found=1
  fi
  if grep -q '"level":\(50\|60\)' "$work/server.log"; then
    "$1" "the server logged errors:"; grep '"level":\(50\|60\)' "$work/server.log" | head -n 20; found=1
  fi
  return "$found"
}
