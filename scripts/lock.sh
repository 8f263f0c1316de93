#!/usr/bin/env bash
# Refresh uv.lock, the one lock behind main's venv, every service venv and every test tool.
#   scripts/lock.sh                        re-lock after editing pyproject.toml (keeps every pin it can)
#   scripts/lock.sh --upgrade              move every package to the newest version pyproject allows
#   scripts/lock.sh --upgrade-package NAME move one package (repeatable), e.g. --upgrade-package fastapi
#   scripts/lock.sh --check                exit 1 when uv.lock does not match pyproject.toml
# Then run ./scripts/test.sh and commit uv.lock: the next start rebuilds exactly the venvs whose
# pins moved (each service venv is keyed by its own extra's export of the lock).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null 2>&1 || PY=python3
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$ROOT/scripts/lib/ensure_uv.sh" "$VENV"
cd "$ROOT"
if [ "${1:-}" = --check ]; then
  if ! "$VENV/bin/uv" lock --check --offline >/dev/null 2>&1 && ! "$VENV/bin/uv" lock --check; then
    echo "[lock] uv.lock does not match pyproject.toml: run scripts/lock.sh and commit uv.lock" >&2
    exit 1
  fi
  echo "[lock] uv.lock is current"
  exit 0
fi
before="$(sha256sum uv.lock 2>/dev/null | cut -c1-12 || echo none)"
"$VENV/bin/uv" lock "$@"
after="$(sha256sum uv.lock | cut -c1-12)"
if [ "$before" = "$after" ]; then
  echo "[lock] uv.lock unchanged"
else
  echo "[lock] uv.lock updated ($before -> $after, $(du -h uv.lock | cut -f1)); now run ./scripts/test.sh and commit it"
fi
