#!/usr/bin/env bash
# Run the whole test suite: unit (seconds, no models), integration (real service subprocesses
# with real small models), end-to-end (./start.sh plus real clients).
#   ./scripts/test.sh [unit|integration|e2e ...] [-- extra pytest args]
# Installs what it needs on a fresh machine (apt packages, the main venv, the service venvs).
# On failure the service logs of the failing tests are printed, and kept under var/test-logs/.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

tiers=()
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --) shift; extra=("$@"); break ;;
    *) tiers+=("$1"); shift ;;
  esac
done
[ ${#tiers[@]} -eq 0 ] && tiers=(unit integration e2e)

if [ "$(id -u)" = 0 ]; then
  need=()
  # chromium + chromium-driver: the demo page's browser tests; prometheus (+ promtool) and
  # prometheus-alertmanager (+ amtool): the monitoring config, rules and scrape tests.
  for pkg in espeak-ng libsndfile1 procps iproute2 chromium chromium-driver prometheus prometheus-alertmanager; do dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg"); done
  if [ ${#need[@]} -gt 0 ]; then
    echo "[test] apt-get install ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || true
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
fi

# The lock decides every installed version: a pyproject.toml edit without `scripts/lock.sh` fails
# here, before anything is installed from a lock that no longer says what the code needs.
scripts/lock.sh --check
scripts/bootstrap.sh main,dev
PY="$ROOT/.venv/bin/python"

if [[ " ${tiers[*]} " != " unit " ]]; then
  echo "[test] preparing service venvs (first run installs the model packages)"
  "$PY" main.py --prepare-only --log-format text
fi

export UV_TEST_LOG_DIR="$ROOT/var/test-logs"
# As root (CI) every tool is installed above, so a skip would only hide untested code: fail instead.
[ "$(id -u)" = 0 ] && export UV_TEST_STRICT="${UV_TEST_STRICT:-1}"
rm -rf "$UV_TEST_LOG_DIR"; mkdir -p "$UV_TEST_LOG_DIR"
status=0
reports=()
for tier in "${tiers[@]}"; do
  echo "[test] ===== $tier ====="
  report="$UV_TEST_LOG_DIR/junit-$tier.xml"
  reports+=("$report")
  timeout_s=300; [ "$tier" != unit ] && timeout_s=900
  "$PY" -m pytest "tests/$tier" -q -rfE --timeout="$timeout_s" --junitxml="$report" "${extra[@]}" || status=$?
  [ $status -ne 0 ] && break
done

"$PY" - "${reports[@]}" <<'PYEOF'
import sys, xml.etree.ElementTree as ET
p = f = s = 0
for path in sys.argv[1:]:
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        continue
    for suite in root.iter("testsuite"):
        t, fl, er, sk = (int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
        p += t - fl - er - sk; f += fl + er; s += sk
print(f"total: {p} passed, {f} failed, {s} skipped")
PYEOF
if [ $status -ne 0 ]; then
  echo "[test] FAILED (exit $status). Service logs kept in $UV_TEST_LOG_DIR"
fi
exit $status
