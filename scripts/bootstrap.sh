#!/usr/bin/env bash
# Create or refresh the main virtualenv (.venv) with uv, idempotently.
#   scripts/bootstrap.sh [EXTRAS]     EXTRAS defaults to "main"; tests use "main,dev".
# Needs only python3.11 on PATH. System packages come from apt-get when missing (root only).
# A re-run with unchanged pyproject.toml does nothing but a hash check.
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

# libsndfile for soundfile; ffmpeg-free decoding happens in PyAV wheels.
apt_install libsndfile1 ca-certificates

hash_now="$( { cat "$ROOT/pyproject.toml"; echo "$EXTRAS"; "$PY" -V 2>&1; } | sha256sum | cut -c1-16)"
stamp="$VENV/.bootstrap-$hash_now"
if [ -f "$stamp" ] && [ -x "$VENV/bin/python" ] && [ -d "$ROOT/src/uvpb" ]; then
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$PY" -m venv "$VENV"
fi
if [ ! -x "$VENV/bin/uv" ]; then
  log "installing uv"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "uv==0.13.9"
fi
log "installing the project with extras [$EXTRAS] (uv cache: ${UV_CACHE_DIR:-~/.cache/uv})"
VIRTUAL_ENV="$VENV" "$VENV/bin/uv" pip install --python "$VENV/bin/python" -e "$ROOT[$EXTRAS]"

touch "$stamp"
log "main venv ready"
