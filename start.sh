#!/usr/bin/env bash
# Start Ultravox Pipeline in the foreground:  ./start.sh [PROFILE]   (or PROFILE=name ./start.sh)
# First run installs the main venv (uv), then main builds every service venv and assembles the
# embedded models. Later runs reuse them. Ctrl-C stops everything cleanly.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PROFILE="${1:-${PROFILE:-local-pc}}"
"$ROOT/scripts/bootstrap.sh" main
cd "$ROOT"
exec "$ROOT/.venv/bin/python" "$ROOT/main.py" --profile "$PROFILE"
