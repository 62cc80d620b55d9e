#!/usr/bin/env bash
# The quality run: 8 mock GPU workers of mixed classes (2× H100, A100, RTX 3090, T4; one H100
# turns 10× slow for the middle third), behind nginx `random two least_conn` (upstream
# keep-alive, one worker process) and behind the gateway, under the same open-loop load.
# The driver (gateway/examples/quality_run.rs) owns the workers and the load; this script
# writes nginx's config into a temp dir, starts nginx and the gateway (both pinned to
# $PROXY_CPU), runs the driver (pinned to $OTHER_CPUS), and stops everything on exit.
#
# Needs nginx (apt-get install -y nginx-light wrk is done when missing) and release builds:
#   cargo build --release --bin gpumesh --features mimalloc
#   cargo build --release -p gpumesh-gateway --example quality_run
# Usage: gateway/bench/quality.sh [results.md]   (RATE, SECS, CALIB_SECS tune the load;
# HEDGE_AFTER_MS is the gateway's --hedge-after-ms, default 150: a GET with no answer after
# 150 ms also goes to a second worker; 0 turns hedging off)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${GPUMESH_BIN:-$ROOT/target/release/gpumesh}
DRIVER=${QUALITY_DRIVER:-$ROOT/target/release/examples/quality_run}
OUT=${1:-/dev/stdout}
RATE=${RATE:-150} SECS=${SECS:-45} CALIB_SECS=${CALIB_SECS:-6}
HEDGE_AFTER_MS=${HEDGE_AFTER_MS:-150}
PROXY_CPU=${PROXY_CPU:-1}
OTHER_CPUS=${OTHER_CPUS:-0}
BASE=18201 NGINX=18240 GW=18230
if ! command -v nginx > /dev/null; then apt-get install -y nginx-light wrk; fi
source "$ROOT/gateway/bench/common.sh"
bench_workdir

SERVERS=""
for i in $(seq 0 7); do SERVERS+="server 127.0.0.1:$((BASE + i)); "; done
nginx_conf "$WORK" "$(nginx_balancer $NGINX "$SERVERS")" > "$WORK/nginx.conf"

taskset -c "$PROXY_CPU" nginx -c "$WORK/nginx.conf" -p "$WORK" & PIDS+=($!)
GPUMESH_LOG=warn DHT_ENABLED=false GPUMESH_REGISTRY_TOKEN=bench \
  taskset -c "$PROXY_CPU" "$BIN" gateway --listen 127.0.0.1:$GW --allow-private-upstreams \
  --registry-rate-per-min 1000 --registry-ttl-secs 3600 --hedge-after-ms "$HEDGE_AFTER_MS" \
  2>"$WORK/gw.log" & PIDS+=($!)
sleep 1.5

{
  echo "uptime: $(uptime)"
  echo "gateway: --hedge-after-ms $HEDGE_AFTER_MS"
  echo
  timeout 900 taskset -c "$OTHER_CPUS" "$DRIVER" --gateway "http://127.0.0.1:$GW" \
    --nginx "http://127.0.0.1:$NGINX" --token bench --base-port $BASE --rate "$RATE" \
    --secs "$SECS" --calib-secs "$CALIB_SECS"
} > "$OUT"
