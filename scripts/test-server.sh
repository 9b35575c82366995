# Sourced by test/fuzz/run-fuzz.sh and test/clients/run-clients.sh: the built server they start,
# on a free 127.0.0.1 port, stopped (TERM, then KILL after 10 s) and its work dir removed on exit.

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
