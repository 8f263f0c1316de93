#!/usr/bin/env bash
# Start Ultravox Pipeline in the foreground:  ./start.sh [PROFILE]   (or PROFILE=name ./start.sh)
# First run installs the main venv from uv.lock, then main builds every service venv (each from
# the same lock) and assembles the embedded models. Later runs reuse them. Ctrl-C stops
# everything cleanly. From another shell in this folder: ./sm list (the service manager CLI).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PROFILE="${1:-${PROFILE:-local-pc}}"
"$ROOT/scripts/bootstrap.sh" main
cd "$ROOT"
echo "[start] profile $PROFILE; once ready: http://${HOST:-127.0.0.1}:${PORT:-8080}/ (demo page)," \
  "and from another shell here: ./sm list" >&2
exec "$ROOT/.venv/bin/python" "$ROOT/main.py" --profile "$PROFILE"
