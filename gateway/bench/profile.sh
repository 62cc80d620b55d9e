#!/usr/bin/env bash
# Profiles the gateway's forward path: an nginx backend (two ports, `return 200`, 1 KiB body), the
# gateway pinned to $PROXY_CPU with two workers registered (as in run.sh), wrk -c$CONNS on $OTHER_CPUS, and
# `perf record -e cpu-clock` (a software clock: works where hardware counters are missing,
# e.g. in VMs) on the gateway process for the length of the wrk run. Prints the flat profile
# (top symbols by self time) and the gateway's CPU µs per request over the run.
#
# Needs nginx, wrk, perf and a release build (debug line tables are on in [profile.release]):
# cargo build --release --bin gpumesh --features mimalloc.
# Usage: gateway/bench/profile.sh [perf.data]   (DURATION, CONNS, TOP tune it; CALLGRAPH=1
# records call graphs with --call-graph dwarf, much larger files; CALLGRAPH=fp: frame
# pointers, enough for kernel stacks)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${GPUMESH_BIN:-$ROOT/target/release/gpumesh}
DATA=${1:-$(mktemp -d)/perf.data}
DURATION=${DURATION:-8}
CONNS=${CONNS:-16}
TOP=${TOP:-40}
PROXY_CPU=${PROXY_CPU:-1}
OTHER_CPUS=${OTHER_CPUS:-0}
B1=18301 B2=18302 GW=18330
source "$ROOT/gateway/bench/common.sh"
bench_workdir

nginx_conf "$WORK" "$(backend_servers $B1 $B2)" > "$WORK/backend.conf"
taskset -c "$OTHER_CPUS" nginx -c "$WORK/backend.conf" -p "$WORK" & PIDS+=($!)
GPUMESH_LOG=warn DHT_ENABLED=false GPUMESH_REGISTRY_TOKEN=bench \
  taskset -c "$PROXY_CPU" "$BIN" gateway --listen 127.0.0.1:$GW --allow-private-upstreams \
  --registry-rate-per-min 1000 2>"$WORK/gw.log" & PIDS+=($!); GW_PID=$!
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$GW/healthz" > /dev/null && break; sleep 0.1; done

now=$(date +%s%3N)
for w in 1 2; do
curl -sf -X POST "http://127.0.0.1:$GW/api/workers/register" -H 'authorization: Bearer bench' \
  -H 'content-type: application/json' -d @- > /dev/null <<JSON
{"peer_id":"prof$w","seq":1,"issued_at_ms":$now,"expires_at_ms":$((now + 3600000)),"state":"online",
 "services":["bench"],"tunnel_url":"http://127.0.0.1:$((B1 + w - 1))","gpus":[{"model":"NVIDIA H100 80GB HBM3",
 "uuid":"GPU-$w","vram_total_mib":81920,"vram_free_mib":81920,"util_pct":null,"mem_util_pct":null,
 "temperature_c":null,"power_w":null,"power_limit_w":null}],"host":{"cpu_util_pct":0,"cpus":1,
 "mem_total_mib":1,"mem_available_mib":1,"load_avg_1m":null},"load":{"in_flight":0,"queue_depth":0,
 "max_concurrency":64},"agent_version":"bench","started_at_ms":$now}
JSON
done
curl -sf "http://127.0.0.1:$GW/api/service/bench/x" > /dev/null

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
CG=()
case "${CALLGRAPH:-0}" in 1) CG=(--call-graph dwarf,16384) ;; fp) CG=(-g) ;; esac
echo "uptime: $(uptime)"
echo "gateway threads: $(ls /proc/$GW_PID/task | wc -l)"
t0=$(ticks "$GW_PID")
perf record -q -e cpu-clock "${CG[@]}" -p "$GW_PID" -o "$DATA" -- sleep "$DURATION" &
PERF=$!
out=$(taskset -c "$OTHER_CPUS" wrk -t1 -c"$CONNS" -d"${DURATION}s" "http://127.0.0.1:$GW/api/service/bench/x")
wait "$PERF" || true
t1=$(ticks "$GW_PID")
reqs=$(echo "$out" | awk '/requests in/ {print $1}')
echo "$out" | grep -E 'Requests/sec|requests in|Non-2xx' || true
python3 -c "import sys; t,r,hz=map(int,sys.argv[1:]); print(f'gateway CPU µs/req: {t/hz*1e6/r:.1f} ({r} requests)')" \
  "$((t1 - t0))" "$reqs" "$(getconf CLK_TCK)"
perf report -i "$DATA" --stdio --no-children --sort symbol 2>/dev/null | grep -v '^#' | grep -v '^$' | head -n "$TOP"
