# Sourced by worker/run-checks.sh and test/fuzz/run-fuzz.sh: a cached venv of pinned test tools.
# Needs python3 (>= 3.10, with venv and pip) and access to PyPI.

# ensure_tools_venv VENV REQUIREMENTS MARKER_BIN LOG_PREFIX
# (Re)creates VENV with REQUIREMENTS unless it is current. The stamp covers the requirements and
# the interpreter, so a change to either reinstalls; MARKER_BIN must exist in VENV/bin.
ensure_tools_venv() {
  local venv="$1" requirements="$2" marker="$3" prefix="$4"
  python3 - <<'PY' || { echo "$prefix: python3 >= 3.10 is required" >&2; return 1; }
import sys
sys.exit(0 if sys.version_info >= (3, 10) else 1)
PY
  local stamp="$venv/.requirements.sha256" wanted
  wanted="$( { cat "$requirements"; python3 -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)"
  if [[ ! -x "$venv/bin/$marker" || ! -f "$stamp" || "$(cat "$stamp")" != "$wanted" ]]; then
    echo "$prefix: preparing $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
    echo "$wanted" > "$stamp"
  fi
}
