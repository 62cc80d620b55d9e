#!/usr/bin/env bash
# Schema-driven fuzzing of the gateway's HTTP API with schemathesis, against a real gateway.
#
#   hardening/api-fuzz.sh [MAX_SECONDS]        # default 120: schemathesis's time budget
#
# Builds `gpumesh` (release; GPUMESH_BIN=path skips the build), starts on loopback only a
# gateway (DHT seed, registry token set, private upstreams allowed: the workers are local) and
# two agents with fake GPUs and the in-process mock service, then runs
# `schemathesis run http://127.0.0.1:PORT/openapi.json --checks all` with the bearer token,
# and stops everything it started. schemathesis lives in a venv under target/ (never in git;
# GPUMESH_API_FUZZ_VENV moves it). Reports: target/api-fuzz/ (junit + the gateway's log).
# Exit status: schemathesis's (0 = no failure).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
budget="${1:-120}"
case "$budget" in
  '' | *[!0-9]*) echo "usage: $0 [MAX_SECONDS]" >&2; exit 64 ;;
esac
out="$root/target/api-fuzz"
venv="${GPUMESH_API_FUZZ_VENV:-$root/target/api-fuzz-venv}"
mkdir -p "$out"

if [ ! -x "$venv/bin/st" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --upgrade pip
  "$venv/bin/pip" install --quiet 'schemathesis>=4.32,<5'
fi

bin="${GPUMESH_BIN:-}"
if [ -z "$bin" ]; then
  (cd "$root" && cargo build --release --bin gpumesh)
  bin="$root/target/release/gpumesh"
fi

free_port() { "$venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
token="$("$venv/bin/python" -c 'import secrets; print(secrets.token_hex(16))')"
state="$(mktemp -d /tmp/gpumesh-api-fuzz.XXXXXX)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$state"
}
trap cleanup EXIT INT TERM

gw_port="$(free_port)"
gw="http://127.0.0.1:$gw_port"
# The token goes through the environment only (never argv, so never in `ps`).
GPUMESH_REGISTRY_TOKEN="$token" RUST_LOG="${RUST_LOG:-warn}" "$bin" gateway \
  --listen "127.0.0.1:$gw_port" --dht-listen 127.0.0.1 --dht-port 0 \
  --allow-private-upstreams \
  --bootstrap-rate-per-min 1000000 --registry-rate-per-min 1000000 \
  >"$out/gateway.log" 2>&1 &
pids+=("$!")

for i in 1 2; do
  mock="$(free_port)"
  GPUMESH_REGISTRY_TOKEN="$token" RUST_LOG="${RUST_LOG:-warn}" "$bin" agent \
    --service ocr --service embed --gpu-profile a100 --fake-seed "$i" \
    --mock-service --mock-listen "127.0.0.1:$mock" --public-url "http://127.0.0.1:$mock" \
    --report-listen "127.0.0.1:$(free_port)" --dht-port 0 \
    --bootstrap-url "$gw/api/dht/bootstrap" --state-dir "$state/agent-$i" \
    >"$out/agent-$i.log" 2>&1 &
  pids+=("$!")
done

# Wait (generously: a loaded machine) until both workers are in the gateway's view.
deadline=$(( $(date +%s) + 120 ))
until [ "$(curl -fsS "$gw/api/workers" 2>/dev/null | "$venv/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["count"])' 2>/dev/null || echo 0)" -ge 2 ]; do
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "workers did not appear in the gateway's view; see $out/*.log" >&2
    exit 1
  fi
  sleep 1
done
echo "gateway $gw with 2 workers; schemathesis for up to ${budget}s" >&2

# 502/504 are a worker's failure and 503 "no eligible worker / not ready" an availability
# answer, all documented (docs/gateway.md): not counted as server errors. 500 and every other
# 5xx still fail the run.
cat >"$out/schemathesis.toml" <<'TOML'
[checks.not_a_server_error]
expected-statuses = ["2xx", "3xx", "4xx", "502", "503", "504"]
TOML

set +e
NO_COLOR=1 "$venv/bin/st" --config-file "$out/schemathesis.toml" run "$gw/openapi.json" \
  --checks all \
  --header "Authorization: Bearer $token" \
  --max-time "$budget" \
  --request-timeout 10 \
  --workers 2 \
  --seed "${GPUMESH_API_FUZZ_SEED:-7}" \
  --report junit --report-dir "$out" \
  2>&1 | tee "$out/schemathesis.txt"
status=${PIPESTATUS[0]}
set -e
# The gateway must still be serving after the run.
curl -fsS "$gw/healthz" >/dev/null || { echo "gateway stopped answering" >&2; status=1; }
exit "$status"
