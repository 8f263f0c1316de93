#!/usr/bin/env bash
# Put the uv that uv.lock pins into VENV (created by `python -m venv`), with pip, once.
#   scripts/lib/ensure_uv.sh VENV
# The version comes from the lock (the `uv` package of the main extra), so the tool that installs
# everything is itself the locked one. Falls back to the pyproject pin when there is no lock yet.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="$1"
want="$("$VENV/bin/python" - "$ROOT" <<'PYEOF'
import re, sys, tomllib
from pathlib import Path
root = Path(sys.argv[1])
lock = root / "uv.lock"
if lock.is_file():
    for pkg in tomllib.loads(lock.read_text()).get("package", []):
        if pkg["name"] == "uv":
            print(pkg["version"]); raise SystemExit
extras = tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]
print(next(re.sub(r"^uv==", "", r) for r in extras["main"] if r.startswith("uv==")))
PYEOF
)"
have="$("$VENV/bin/uv" --version 2>/dev/null | awk '{print $2}' || true)"
if [ "$have" != "$want" ]; then
  printf '[bootstrap] installing uv %s into %s\n' "$want" "$VENV" >&2
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "uv==$want"
fi
