#!/usr/bin/env bash
# Side-by-side loopback benchmark: direct vs nginx vs HAProxy vs the gpumesh gateway.
#
# Two fixed fast backends (nginx `return 200` of a 1 KiB body, one worker process) stand in for
# GPU workers. Each proxy balances over both (nginx `random two least_conn` with upstream
# keep-alive and one worker process; HAProxy `balance random(2)` with one thread; the gateway
# with both registered through its coordinator registry) and is pinned to one core with
# taskset; wrk and the backends get the other cores. For each target:
#   - throughput: wrk -c$CONNS for $DURATION;
#   - latency below saturation: wrk -c1 (one request at a time) p50/p99;
#   - proxy CPU per request: (utime+stime of the proxy's processes) / requests served.
#
# Needs: nginx, haproxy, wrk (apt-get install nginx haproxy wrk) and a release build
# (cargo build --release --bin gpumesh --features mimalloc). Usage: gateway/bench/run.sh [results.md]
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${GPUMESH_BIN:-$ROOT/target/release/gpumesh}
OUT=${1:-/dev/stdout}
DURATION=${DURATION:-8s}
CONNS=${CONNS:-16}
PROXY_CPU=${PROXY_CPU:-1}
OTHER_CPUS=${OTHER_CPUS:-0}
B1=18101 B2=18102 NGINX=18110 HAPROXY=18120 GW=18130
source "$ROOT/gateway/bench/common.sh"
bench_workdir

mkdir -p "$WORK/nb" "$WORK/np"
nginx_conf "$WORK/nb" "$(backend_servers $B1 $B2)" > "$WORK/backend.conf"
nginx_conf "$WORK/np" \
  "$(nginx_balancer $NGINX "server 127.0.0.1:$B1; server 127.0.0.1:$B2;")" > "$WORK/proxy.conf"
cat > "$WORK/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 3s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend f
  bind 127.0.0.1:$HAPROXY
  default_backend workers
backend workers
  balance random(2)
  server w1 127.0.0.1:$B1
  server w2 127.0.0.1:$B2
EOF

taskset -c "$OTHER_CPUS" nginx -c "$WORK/backend.conf" -p "$WORK/nb" & PIDS+=($!)
taskset -c "$PROXY_CPU" nginx -c "$WORK/proxy.conf" -p "$WORK/np" & PIDS+=($!); NGINX_PID=$!
taskset -c "$PROXY_CPU" haproxy -f "$WORK/haproxy.cfg" -db & PIDS+=($!); HAPROXY_PID=$!
GPUMESH_LOG=warn DHT_ENABLED=false GPUMESH_REGISTRY_TOKEN=bench \
  taskset -c "$PROXY_CPU" "$BIN" gateway --listen 127.0.0.1:$GW --allow-private-upstreams \
  --registry-rate-per-min 1000 2>"$WORK/gw.log" & PIDS+=($!); GW_PID=$!
sleep 1.5

now=$(date +%s%3N)
for w in 1 2; do
  port=$((B1 + w - 1))
  curl -sf -X POST "http://127.0.0.1:$GW/api/workers/register" -H 'authorization: Bearer bench' \
    -H 'content-type: application/json' -d @- > /dev/null <<EOF
{"peer_id":"bench$w","seq":1,"issued_at_ms":$now,"expires_at_ms":$((now + 3600000)),"state":"online",
 "services":["bench"],"tunnel_url":"http://127.0.0.1:$port","gpus":[{"model":"NVIDIA H100 80GB HBM3",
 "uuid":"GPU-$w","vram_total_mib":81920,"vram_free_mib":81920,"util_pct":null,"mem_util_pct":null,
 "temperature_c":null,"power_w":null,"power_limit_w":null}],"host":{"cpu_util_pct":0,"cpus":1,
 "mem_total_mib":1,"mem_available_mib":1,"load_avg_1m":null},"load":{"in_flight":0,"queue_depth":0,
 "max_concurrency":64},"agent_version":"bench","started_at_ms":$now}
EOF
done
curl -sf "http://127.0.0.1:$GW/api/service/bench/x" | head -c 16 > /dev/null

# CPU ticks (utime+stime) of a process and its children threads/processes.
ticks() {
  local total=0
  for pid in "$1" $(pgrep -P "$1" || true); do
    read -r ut st < <(awk '{print $14, $15}' "/proc/$pid/stat")
    total=$((total + ut + st))
  done
  echo "$total"
}

HZ=$(getconf CLK_TCK)
row() { # name url pid
  local name=$1 url=$2 pid=${3:-}
  local t0=0 t1=0
  [ -n "$pid" ] && t0=$(ticks "$pid")
  local thr
  thr=$(taskset -c "$OTHER_CPUS" wrk -t1 -c"$CONNS" -d"$DURATION" --latency "$url")
  [ -n "$pid" ] && t1=$(ticks "$pid")
  local lat
  lat=$(taskset -c "$OTHER_CPUS" wrk -t1 -c1 -d"$DURATION" --latency "$url")
  python3 - "$name" "$HZ" "$t0" "$t1" "$thr" "$lat" <<'PY'
import re, sys
name, hz, t0, t1 = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
thr, lat = sys.argv[5], sys.argv[6]
def total(text):
    return int(re.search(r"(\d+) requests in", text).group(1))
def rps(text):
    return float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
def pct(text, p):
    m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)", text, re.M)
    v, u = float(m.group(1)), m.group(2)
    return v * {"us": 1, "ms": 1000, "s": 1e6}[u]
errs = re.search(r"Non-2xx or 3xx responses: (\d+)", thr)
cpu = f"{(t1 - t0) / hz * 1e6 / total(thr):.1f}" if t1 > t0 else "—"
print(f"| {name} | {rps(thr):,.0f} | {pct(lat, 50):.0f} | {pct(lat, 99):.0f} | {pct(thr, 99):.0f} | "
      f"{cpu} | {errs.group(1) if errs else 0} |")
PY
}

{
  echo "| target | req/s (c=$CONNS) | p50 µs (c=1) | p99 µs (c=1) | p99 µs (c=$CONNS) | proxy CPU µs/req | non-2xx |"
  echo "|---|---|---|---|---|---|---|"
  row direct "http://127.0.0.1:$B1/x"
  row "nginx 1.22 random two least_conn" "http://127.0.0.1:$NGINX/x" "$NGINX_PID"
  row "HAProxy $(haproxy -v | head -1 | awk '{print $3}') random(2)" "http://127.0.0.1:$HAPROXY/x" "$HAPROXY_PID"
  row "gpumesh gateway" "http://127.0.0.1:$GW/api/service/bench/x" "$GW_PID"
} > "$OUT"
