#!/usr/bin/env bash
# Coverage-guided fuzzing of gpumesh's decoders with cargo-fuzz (libFuzzer), on stable Rust.
#
#   hardening/fuzz.sh [SECONDS] [TARGET...]     # default: 60 s for each target in fuzz/
#
# Stable only: `--sanitizer none` needs no nightly flags (no RUSTC_BOOTSTRAP); the targets are
# safe Rust, so AddressSanitizer would add little. Seeds come from the checked-in corpus
# fuzz/corpus/<target>; what the fuzzer adds goes to fuzz/target/work/<target> (ignored by
# git), crashes to fuzz/artifacts/<target>. Logs: fuzz/target/logs/<target>.log.
# Exits 1 when any target crashed, leaked past the RSS cap or timed out on one input.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
fuzz="$root/fuzz"
secs="${1:-60}"
shift || true
case "$secs" in
  '' | *[!0-9]*) echo "usage: $0 [SECONDS] [TARGET...]" >&2; exit 64 ;;
esac

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "cargo-fuzz not found; installing it (cargo install cargo-fuzz)" >&2
  cargo install cargo-fuzz --locked
fi

cd "$fuzz"
if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

cargo fuzz build -s none -O
mkdir -p target/logs
failed=0
printf '%-20s %8s %12s %10s %6s %6s %8s %s\n' target wall_s execs execs/s cov ft rss_mb result
for t in "${targets[@]}"; do
  mkdir -p "target/work/$t" "corpus/$t"
  extra=()
  [ -f "dicts/$t.dict" ] && extra+=("-dict=dicts/$t.dict")
  log="target/logs/$t.log"
  start=$(date +%s)
  # -rss_limit_mb: an input that makes a decoder allocate without bound fails the run.
  # -timeout: one input taking over 10 s is a hang.
  if cargo fuzz run -s none -O "$t" "target/work/$t" "corpus/$t" -- \
      -max_total_time="$secs" -rss_limit_mb=1024 -timeout=10 -max_len=8192 \
      -print_final_stats=1 "${extra[@]}" >"$log" 2>&1; then
    result=ok
  else
    result="FAILED (see fuzz/$log, fuzz/artifacts/$t)"
    failed=1
  fi
  took=$(( $(date +%s) - start ))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  printf '%-20s %8s %12s %10s %6s %6s %8s %s\n' "$t" "$took" "${execs:-?}" "${rate:-?}" \
    "${cov:-?}" "${ft:-?}" "${rss:-?}" "$result"
done
exit "$failed"
