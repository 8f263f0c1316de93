#!/usr/bin/env bash
# Run Prometheus, Alertmanager and (when installed) Grafana for a local Ultravox Pipeline.
#
#   scripts/start_monitoring.sh [start] [--main URL]   start what is not running yet, print the URLs
#   scripts/start_monitoring.sh stop                   stop what this script started
#   scripts/start_monitoring.sh status                 say what runs, and Prometheus' targets
#   scripts/start_monitoring.sh config [--main URL] [--scrape-interval 1s] [--alertmanager HOST:PORT]
#                                                      print monitoring/prometheus.yml for that main
#
# Everything binds to 127.0.0.1; data, logs and pid files live under var/monitoring/. Prometheus
# and Alertmanager come from Debian's packages (apt-get install as root when missing). Grafana is
# not packaged by Debian: it is started when installed, else the script says how to get it.
# No systemd: the daemons run detached (setsid) and `stop` ends them by their pid files. Every
# wait is bounded, so the script returns.
#
# Environment (flags win): ULTRAVOX_MAIN_URL (default: the last start's, else http://127.0.0.1:${PORT:-8080}),
# PROMETHEUS_PORT (9090), ALERTMANAGER_PORT (9093), GRAFANA_PORT (3000), GRAFANA_HOME (Grafana's
# install folder, for a tarball), UV_MONITORING_DIR (var/monitoring), UV_API_KEY (main's API key:
# written to $UV_MONITORING_DIR/api_key, mode 0600, and sent by Prometheus on target discovery).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MON="$ROOT/monitoring"
DIR="${UV_MONITORING_DIR:-$ROOT/var/monitoring}"
case "$DIR" in /*) ;; *) DIR="$PWD/$DIR" ;; esac  # the rendered config names files in it
MAIN_URL="${ULTRAVOX_MAIN_URL:-}"
PROM_PORT="${PROMETHEUS_PORT:-9090}"
AM_PORT="${ALERTMANAGER_PORT:-9093}"
GRAFANA_PORT="${GRAFANA_PORT:-3000}"
SCRAPE_INTERVAL=""
ALERTMANAGER=""

log() { printf '[monitoring] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'; }

# Main's API key (UV_API_KEY) into $DIR/api_key, readable by this user only, for Prometheus'
# credentials_file: the key stays out of the rendered config and out of `ps`.
write_api_key() {
  mkdir -p "$DIR"
  (umask 077 && printf '%s' "$UV_API_KEY" >"$DIR/api_key.tmp")
  chmod 600 "$DIR/api_key.tmp" && mv -f "$DIR/api_key.tmp" "$DIR/api_key"
}

# The one place monitoring/prometheus.yml is adapted to a deployment: main's URL, the rule files'
# absolute path (the rendered file lives elsewhere), optionally the intervals and Alertmanager,
# and, when UV_API_KEY is set, the key for main's target discovery (its /metrics is open, and the
# services' /metrics never take main's key, so the scrapes themselves carry none).
render_config() {
  local url="${MAIN_URL%/}" am="${ALERTMANAGER:-127.0.0.1:$AM_PORT}"
  case "$url" in http://*|https://*) ;; *) die "--main must be a URL like http://127.0.0.1:8080, got '$url'" ;; esac
  if [ -n "${UV_API_KEY:-}" ]; then
    case "$DIR" in *'#'*|*$'\n'*) die "UV_MONITORING_DIR must not contain '#' or a newline: $DIR" ;; esac
    write_api_key
  fi
  sed -e "s#http://127.0.0.1:8080/api/monitoring/targets#$url/api/monitoring/targets#" \
      ${UV_API_KEY:+-e "s#^        \# authorization: {.*}#        authorization: {type: Bearer, credentials_file: $DIR/api_key}#"} \
      -e "s#^  - rules/\\*\\.yml#  - $MON/rules/*.yml#" \
      -e "s#targets: \\[\"127.0.0.1:9093\"\\]#targets: [\"$am\"]#" \
      ${SCRAPE_INTERVAL:+-e "s#^  scrape_interval: .*#  scrape_interval: $SCRAPE_INTERVAL#"} \
      ${SCRAPE_INTERVAL:+-e "s#^  evaluation_interval: .*#  evaluation_interval: $SCRAPE_INTERVAL#"} \
      ${SCRAPE_INTERVAL:+-e "s#^        refresh_interval: .*#        refresh_interval: $SCRAPE_INTERVAL#"} \
      "$MON/prometheus.yml"
}

apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || die "please install: ${missing[*]} (sudo apt-get install ${missing[*]})"
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null || true
  # The packages' init scripts may try to start system-wide daemons; without systemd that fails
  # harmlessly, and ours run from here with our own flags either way.
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# pid of a daemon this script started and that still runs that binary, else nothing.
running_pid() {
  local name="$1" bin="$2" pid
  [ -f "$DIR/$name.pid" ] || return 0
  pid="$(cat "$DIR/$name.pid")"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$bin"; then
    echo "$pid"
  fi
}

# Start "$@" detached in its own session, output to $DIR/$name.log, pid to $DIR/$name.pid.
spawn() {
  local name="$1"; shift
  setsid "$@" >>"$DIR/$name.log" 2>&1 </dev/null &
  echo $! >"$DIR/$name.pid"
}

wait_ready() {
  local name="$1" url="$2" tries=60
  while [ $tries -gt 0 ]; do
    curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null && return 0
    [ -n "$(running_pid "$name" "${3:-$name}")" ] || { tail -n 20 "$DIR/$name.log" >&2; die "$name exited; log: $DIR/$name.log"; }
    sleep 0.5; tries=$((tries - 1))
  done
  die "$name not ready at $url after 30 s; log: $DIR/$name.log"
}

start_prometheus() {
  local pid; pid="$(running_pid prometheus /usr/bin/prometheus)"
  [ -n "${UV_API_KEY:-}" ] || rm -f "$DIR/api_key"  # a key of an earlier start must not linger
  render_config >"$DIR/prometheus.yml"
  promtool check config "$DIR/prometheus.yml" >/dev/null || die "rendered config is invalid: $DIR/prometheus.yml"
  if [ -n "$pid" ]; then
    log "prometheus already running (pid $pid); reloading its config"
    kill -HUP "$pid"
    return 0
  fi
  mkdir -p "$DIR/prometheus"
  spawn prometheus /usr/bin/prometheus --config.file="$DIR/prometheus.yml" \
    --storage.tsdb.path="$DIR/prometheus" --storage.tsdb.retention.time=15d \
    --web.listen-address="127.0.0.1:$PROM_PORT" --web.enable-lifecycle
  wait_ready prometheus "http://127.0.0.1:$PROM_PORT/-/ready" /usr/bin/prometheus
}

start_alertmanager() {
  local pid; pid="$(running_pid alertmanager /usr/bin/prometheus-alertmanager)"
  if [ -n "$pid" ]; then log "alertmanager already running (pid $pid)"; return 0; fi
  amtool check-config "$MON/alertmanager.yml" >/dev/null || die "invalid $MON/alertmanager.yml"
  mkdir -p "$DIR/alertmanager"
  # --cluster.listen-address= turns off the gossip port (0.0.0.0:9094 by default).
  spawn alertmanager /usr/bin/prometheus-alertmanager --config.file="$MON/alertmanager.yml" \
    --storage.path="$DIR/alertmanager" --web.listen-address="127.0.0.1:$AM_PORT" --cluster.listen-address=
  wait_ready alertmanager "http://127.0.0.1:$AM_PORT/-/ready" /usr/bin/prometheus-alertmanager
}

# Grafana's command line into GRAFANA_CMD (empty when Grafana is not installed).
GRAFANA_CMD=()
find_grafana() {
  local home="${GRAFANA_HOME:-}"
  if [ -z "$home" ]; then
    for d in /usr/share/grafana /opt/grafana; do [ -d "$d" ] && home="$d" && break; done
  fi
  if [ -n "$home" ] && [ -x "$home/bin/grafana" ]; then GRAFANA_CMD=("$home/bin/grafana" server --homepath "$home")
  elif command -v grafana >/dev/null 2>&1; then
    GRAFANA_CMD=("$(command -v grafana)" server --homepath "${home:-/usr/share/grafana}")
  elif command -v grafana-server >/dev/null 2>&1; then
    GRAFANA_CMD=("$(command -v grafana-server)" --homepath "${home:-/usr/share/grafana}")
  fi
}

grafana_howto() {
  cat >&2 <<EOF
[monitoring] Grafana is not installed (Debian does not package it). To get it:
  Grafana's apt repository (root):
    apt-get install -y gnupg wget && mkdir -p /etc/apt/keyrings
    wget -qO- https://apt.grafana.com/gpg.key | gpg --dearmor > /etc/apt/keyrings/grafana.gpg
    echo "deb [signed-by=/etc/apt/keyrings/grafana.gpg] https://apt.grafana.com stable main" \\
      > /etc/apt/sources.list.d/grafana.list
    apt-get update && apt-get install -y grafana
  or the standalone tarball from https://grafana.com/grafana/download (then GRAFANA_HOME=<its folder>).
  Then run this script again: it starts Grafana on 127.0.0.1:$GRAFANA_PORT with the dashboards provisioned.
  With a Grafana elsewhere: add a Prometheus data source at http://127.0.0.1:$PROM_PORT, then
  Dashboards > New > Import each file of $MON/grafana/dashboards/ (or copy
  $MON/grafana/provisioning/ into its provisioning folder and set ULTRAVOX_PROMETHEUS_URL and
  ULTRAVOX_DASHBOARDS in its environment).
EOF
}

start_grafana() {
  local pid
  find_grafana
  if [ ${#GRAFANA_CMD[@]} -eq 0 ]; then grafana_howto; return 1; fi
  pid="$(running_pid grafana grafana)"
  if [ -n "$pid" ]; then log "grafana already running (pid $pid)"; return 0; fi
  mkdir -p "$DIR/grafana/data" "$DIR/grafana/logs" "$DIR/grafana/plugins"
  spawn grafana env GF_PATHS_PROVISIONING="$MON/grafana/provisioning" GF_PATHS_DATA="$DIR/grafana/data" \
    GF_PATHS_LOGS="$DIR/grafana/logs" GF_PATHS_PLUGINS="$DIR/grafana/plugins" \
    GF_SERVER_HTTP_ADDR=127.0.0.1 GF_SERVER_HTTP_PORT="$GRAFANA_PORT" GF_ANALYTICS_REPORTING_ENABLED=false \
    GF_ANALYTICS_CHECK_FOR_UPDATES=false ULTRAVOX_PROMETHEUS_URL="http://127.0.0.1:$PROM_PORT" \
    ULTRAVOX_DASHBOARDS="$MON/grafana/dashboards" "${GRAFANA_CMD[@]}"
  wait_ready grafana "http://127.0.0.1:$GRAFANA_PORT/api/health" grafana
}

stop_one() {
  local name="$1" bin="$2" pid; pid="$(running_pid "$name" "$bin")"
  if [ -z "$pid" ]; then rm -f "$DIR/$name.pid"; return 0; fi
  kill -TERM "$pid"
  for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  if kill -0 "$pid" 2>/dev/null; then log "$name (pid $pid) ignored SIGTERM for 10 s; SIGKILL"; kill -KILL "$pid"; fi
  rm -f "$DIR/$name.pid"
  log "stopped $name (pid $pid)"
}

TARGETS_PY='
import json, sys
targets = json.loads(sys.argv[1])["data"]["activeTargets"]
if not targets:
    print("  none yet: is main running at the --main URL? (discovery refreshes every few seconds)")
for t in targets:
    row = (t["labels"].get("instance", "?"), t["health"], t["scrapeUrl"], t.get("lastError") or "")
    print("  %-8s %-8s %s %s" % row)
'
show_targets() {
  local body
  body="$(curl -fsS --max-time 3 "http://127.0.0.1:$PROM_PORT/api/v1/targets?state=active" 2>/dev/null)" \
    || { log "Prometheus is not answering on 127.0.0.1:$PROM_PORT"; return 0; }
  python3 -c "$TARGETS_PY" "$body"
}

status() {
  for spec in prometheus:/usr/bin/prometheus alertmanager:/usr/bin/prometheus-alertmanager grafana:grafana; do
    local name="${spec%%:*}" pid; pid="$(running_pid "$name" "${spec#*:}")"
    if [ -n "$pid" ]; then printf '%-13s running (pid %s)\n' "$name" "$pid"; else printf '%-13s not running\n' "$name"; fi
  done
  [ -n "$(running_pid prometheus /usr/bin/prometheus)" ] && { echo "targets:"; show_targets; }
  return 0
}

cmd="start"
case "${1:-}" in start|stop|status|config) cmd="$1"; shift ;; -h|--help) usage; exit 0 ;; esac
while [ $# -gt 0 ]; do
  case "$1" in
    --main) MAIN_URL="${2:?--main needs a URL}"; shift 2 ;;
    --scrape-interval) SCRAPE_INTERVAL="${2:?--scrape-interval needs a duration like 1s}"; shift 2 ;;
    --alertmanager) ALERTMANAGER="${2:?--alertmanager needs HOST:PORT}"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument '$1'" ;;
  esac
done
# No --main and no ULTRAVOX_MAIN_URL: the main of the last start, else main's default port.
if [ -z "$MAIN_URL" ] && [ "$cmd" != config ]; then MAIN_URL="$(cat "$DIR/main_url" 2>/dev/null || true)"; fi
MAIN_URL="${MAIN_URL:-http://127.0.0.1:${PORT:-8080}}"
if [ -n "$SCRAPE_INTERVAL" ] && ! [[ "$SCRAPE_INTERVAL" =~ ^[0-9]+(ms|s|m)$ ]]; then
  die "--scrape-interval must be a duration like 1s or 500ms, got '$SCRAPE_INTERVAL'"
fi

case "$cmd" in
  config) render_config ;;
  status) status ;;
  stop)
    stop_one grafana grafana
    stop_one alertmanager /usr/bin/prometheus-alertmanager
    stop_one prometheus /usr/bin/prometheus
    ;;
  start)
    apt_install prometheus prometheus-alertmanager
    mkdir -p "$DIR"
    echo "$MAIN_URL" >"$DIR/main_url"
    start_prometheus
    start_alertmanager
    grafana_ok=1; start_grafana || grafana_ok=0
    curl -fsS -o /dev/null --max-time 2 "${MAIN_URL%/}/health" 2>/dev/null \
      || log "main does not answer at $MAIN_URL yet; Prometheus will find its targets once it does (./start.sh)"
    echo "Prometheus:   http://127.0.0.1:$PROM_PORT   (targets: http://127.0.0.1:$PROM_PORT/targets, alerts: /alerts)"
    echo "Alertmanager: http://127.0.0.1:$AM_PORT"
    [ "$grafana_ok" = 1 ] && echo "Grafana:      http://127.0.0.1:$GRAFANA_PORT   (admin / admin on first login; folder Ultravox)"
    echo "Scraping main at $MAIN_URL; data and logs in $DIR; stop with: $0 stop"
    ;;
esac
