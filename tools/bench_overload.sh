#!/usr/bin/env bash
# Overload (issue 9): does one node keep answering validations while creates
# arrive at 3x the rate it sustains?
#
#   1. the sustainable create rate S: closed loop, --concurrency 64;
#   2. validations alone, open loop at --validate-rate, their p99 (baseline);
#   3. the same validations while a second generator offers creates open loop
#      at 3 x S: their p99, and what became of the creates (accepted, shed
#      with RESOURCE_EXHAUSTED, ...).
# Prints one JSON document; docs/PERFORMANCE.md, "Overload", has the figures.
#
# usage: tools/bench_overload.sh [--build-dir DIR] [--seconds N]
#                                [--validate-rate R] [--factor F] [--pin]
#                                [-- SESSIOND_FLAGS...]
# --pin: the node alone on CPU 0, the generators on CPU 1 with the create
# flood at nice 19, so the validations' generator is not starved by the
# flood's (closer to load coming from other machines). Needs taskset.
# CREATE_CONNECTIONS=N: the flood's connections (default 2).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NAME=bench_overload
BUILD_DIR="$ROOT/build-release"
SECONDS_PER_RUN=15
VALIDATE_RATE=2000
FACTOR=3
PIN=0
while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) BUILD_DIR="$2"; shift 2 ;;
    --seconds) SECONDS_PER_RUN="$2"; shift 2 ;;
    --validate-rate) VALIDATE_RATE="$2"; shift 2 ;;
    --factor) FACTOR="$2"; shift 2 ;;
    --pin) PIN=1; shift ;;
    --) shift; break ;;
    *) sed -n '2,19p' "$0"; exit 2 ;;
  esac
done
log() { printf '[%s] %s\n' "$NAME" "$*" >&2; }
# shellcheck source=tools/bench_lib.sh
. "$ROOT/tools/bench_lib.sh"
SESSIOND="$BUILD_DIR/server/sessiond"
BENCH="$BUILD_DIR/tools/sessiond-bench"
bench_require "$SESSIOND" "$BENCH"

WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

PORT="$(bench_free_ports 1)"
TARGET="127.0.0.1:$PORT"
NODE_CPU=()
GEN_CPU=()
FLOOD_CPU=()
if [ "$PIN" = 1 ]; then
  command -v taskset >/dev/null || { log "--pin needs taskset (util-linux)"; exit 2; }
  NODE_CPU=(taskset -c 0)
  GEN_CPU=(taskset -c 1)
  FLOOD_CPU=(taskset -c 1 nice -n 19)
fi
"${NODE_CPU[@]}" "$SESSIOND" --listen "$TARGET" --data_dir "$WORK/data" "$@" >"$WORK/sessiond.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do
  grep -q LISTENING "$WORK/sessiond.log" && break
  sleep 0.1
done
grep -q LISTENING "$WORK/sessiond.log" || { log "sessiond did not start"; exit 1; }

# One run's result (sessiond-bench --json puts each run under .runs).
run() { "${GEN_CPU[@]}" "$BENCH" --target "$TARGET" --json "$@" 2>/dev/null | jq '.runs[0]'; }
flood() { "${FLOOD_CPU[@]}" "$BENCH" --target "$TARGET" --json "$@" 2>/dev/null | jq '.runs[0]'; }

log "1/3 sustainable create rate (closed loop, c=64, ${SECONDS_PER_RUN}s)"
SUSTAINED="$(run --mode unary --ops create:1 --concurrency 64 --warmup_s 2 \
  --duration_s "$SECONDS_PER_RUN")"
S="$(jq '.ops_per_s' <<<"$SUSTAINED")"
OFFERED="$(jq -n "$S * $FACTOR")"
log "   S = $S creates/s; offering $OFFERED"

log "2/3 validations alone at $VALIDATE_RATE/s"
ALONE="$(run --mode unary --ops validate:1 --preload 10000 --rate "$VALIDATE_RATE" \
  --concurrency 256 --warmup_s 2 --duration_s "$SECONDS_PER_RUN")"

log "3/3 the same validations while creates are offered at $OFFERED/s"
flood --mode unary --ops create:1 --rate "$OFFERED" --concurrency 4096 \
  --connections "${CREATE_CONNECTIONS:-2}" \
  --deadline_ms 2000 --warmup_s 1 --duration_s "$((SECONDS_PER_RUN + 4))" \
  >"$WORK/creates.json" &
CREATOR=$!
sleep 2
LOADED="$(run --mode unary --ops validate:1 --preload 10000 --rate "$VALIDATE_RATE" \
  --concurrency 256 --warmup_s 1 --duration_s "$SECONDS_PER_RUN")"
wait "$CREATOR" || true
CREATES="$(cat "$WORK/creates.json")"

jq -n --argjson sustained "$SUSTAINED" --argjson alone "$ALONE" \
  --argjson loaded "$LOADED" --argjson creates "$CREATES" \
  --arg factor "$FACTOR" '{
    sustainable_creates_per_s: $sustained.ops_per_s,
    offered_creates_per_s: ($sustained.ops_per_s * ($factor | tonumber)),
    creates_accepted_per_s: $creates.ops_per_s,
    create_errors: $creates.errors,
    create_p99_ms: ($creates.latency_us.p99 / 1000),
    validate_p99_ms_alone: ($alone.latency_us.p99 / 1000),
    validate_p99_ms_loaded: ($loaded.latency_us.p99 / 1000),
    validate_p99_ratio: ($loaded.latency_us.p99 / $alone.latency_us.p99),
    validate_errors_loaded: $loaded.errors
  }'
