#!/usr/bin/env bash
# Create or refresh the main virtualenv (.venv) from the committed uv.lock, idempotently.
#   scripts/bootstrap.sh [EXTRAS]     EXTRAS defaults to "main"; tests use "main,dev".
# Needs only python3.11 on PATH. System packages come from apt-get when missing (root only).
# Installs exactly the locked versions (uv sync --locked): a fresh machine gets what CI tested,
# whatever is newest on PyPI today. A re-run with an unchanged lock, pyproject.toml and protos
# does nothing but a hash check. A lock that no longer matches pyproject.toml is an error that
# says to run scripts/lock.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EXTRAS="${1:-main}"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3

log() { printf '[bootstrap] %s\n' "$*" >&2; }

apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then log "please install: ${missing[*]} (apt-get install ${missing[*]})"; return 0; fi
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null || true
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# libsndfile for soundfile (ffmpeg-free decoding happens in PyAV wheels); a C++ toolchain and
# cmake for the LLM venv, which compiles llama-cpp-python (GGML_NATIVE=OFF) once.
apt_install libsndfile1 ca-certificates g++ make cmake

[ -f "$ROOT/uv.lock" ] || { log "no uv.lock in $ROOT: run scripts/lock.sh to create it"; exit 1; }

# The venv keeps every extra it was ever given (./start.sh after the tests must not uninstall
# pytest under a running suite): sync the union, exactly, so nothing unlocked stays behind.
if [ -f "$VENV/.bootstrap-extras" ]; then
  EXTRAS="$(printf '%s,%s' "$(cat "$VENV/.bootstrap-extras")" "$EXTRAS" | tr ',' '\n' | sed '/^$/d' | sort -u | paste -sd, -)"
fi

# The stamp keys on what decides the install: the lock, pyproject.toml (its extras and build
# settings), the protos the build generates code from, the extras and the Python.
hash_now="$( { cat "$ROOT/uv.lock" "$ROOT/pyproject.toml" "$ROOT"/protos/uvpb/*.proto; echo "$EXTRAS"; "$PY" -V 2>&1; } \
  | sha256sum | cut -c1-16)"
stamp="$VENV/.bootstrap-$hash_now"
if [ -f "$stamp" ] && [ -x "$VENV/bin/python" ] && [ -x "$VENV/bin/uv" ] && [ -d "$ROOT/src/uvpb" ]; then
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$PY" -m venv "$VENV"
fi
"$ROOT/scripts/lib/ensure_uv.sh" "$VENV"

extra_args=()
IFS=',' read -r -a extras <<<"$EXTRAS"
for e in "${extras[@]}"; do [ -n "$e" ] && extra_args+=(--extra "$e"); done
log "installing the locked project with extras [$EXTRAS] (uv cache: $("$VENV/bin/uv" cache dir))"
# --locked: fail rather than re-resolve when uv.lock and pyproject.toml disagree.
# --reinstall-package: rebuild the editable project so src/uvpb is regenerated from protos/.
if ! UV_PROJECT_ENVIRONMENT="$VENV" UV_PYTHON_DOWNLOADS=never \
    "$VENV/bin/uv" sync --project "$ROOT" --locked --python "$VENV/bin/python" "${extra_args[@]}" \
    --reinstall-package ultravox-pipeline; then
  log "uv sync failed. If it says the lockfile needs to be updated, pyproject.toml changed without"
  log "uv.lock: run scripts/lock.sh, then commit uv.lock."
  exit 1
fi

rm -f "$VENV"/.bootstrap-*
echo "$EXTRAS" >"$VENV/.bootstrap-extras"
touch "$stamp"
log "main venv ready (locked versions from uv.lock)"
