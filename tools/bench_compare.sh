#!/usr/bin/env bash
# sessiond against redis-server on this machine, in one run (docs/BENCHMARKS.md).
#
#   tools/bench_compare.sh [--build-dir DIR] [--no-build] [--duration S] [--keep]
#
# Environment: BUILD_DIR, DURATION (seconds per sessiond-bench run), JOBS,
# SESSIOND_BIN / BENCH_BIN (use these binaries instead of the build's).
#
# Builds Release (sessiond, sessiond-bench) unless --no-build, then, one after
# the other so that they never compete for the CPU:
#   1. a fresh sessiond on a free port with a temp data dir:
#      sessiond-bench echo ceiling (grpc.health.v1 Check), unary validate,
#      validate open loop at half that rate (--rate), batch validate, stream
#      validate (all at concurrency 64), create at
#      concurrency 1 and 64 (synced durability);
#   2. redis-server with --appendonly yes --appendfsync always: SET at -c 64
#      and -c 1;
#   3. redis-server without persistence: GET and SET at -c 64 and -c 50
#      (-P 1), and GET -P 16 for reference;
# and prints every command it ran, a table and the ratios the targets use.
# Everything it starts is killed on exit; everything it writes is under one
# temp dir that is removed (--keep leaves it, with the raw JSON and CSV).
# Bounded: about 2-3 minutes.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build-release}"
DURATION="${DURATION:-5}"
CONCURRENCY=64
BATCH=16
VALUE_BYTES=256
PRELOAD=10000
BUILD=1
KEEP=0

while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) BUILD_DIR="$2"; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --duration) DURATION="$2"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "bench_compare: unknown argument $1" >&2; exit 2 ;;
  esac
done

NAME=bench_compare
log() { printf '\033[1m[bench]\033[0m %s\n' "$*" >&2; }
# shellcheck source=tools/bench_lib.sh
. "$ROOT/tools/bench_lib.sh"

for tool in redis-server redis-benchmark redis-cli python3; do
  command -v "$tool" >/dev/null || { echo "bench_compare: $tool not found (apt-get install redis-server redis-tools python3)" >&2; exit 2; }
done

WORK="$(mktemp -d /tmp/sessiond-bench-compare-XXXXXX)"
PIDS=()
cleanup() {
  bench_stop "${PIDS[@]}"
  if [ "$KEEP" -eq 1 ]; then
    echo "bench_compare: raw results kept in $WORK" >&2
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

COMMANDS="$WORK/commands.txt"
: > "$COMMANDS"
run_logged() {  # run_logged <output file> <command...>: records and runs it
  local out="$1"; shift
  echo "$*" >> "$COMMANDS"
  log "$*"
  "$@" > "$out"
}

if [ "$BUILD" -eq 1 ]; then bench_build sessiond sessiond-bench; fi
SESSIOND="${SESSIOND_BIN:-$BUILD_DIR/server/sessiond}"
BENCH="${BENCH_BIN:-$BUILD_DIR/tools/sessiond-bench}"
[ -x "$SESSIOND" ] || { echo "bench_compare: $SESSIOND missing" >&2; exit 2; }
[ -x "$BENCH" ] || { echo "bench_compare: $BENCH missing" >&2; exit 2; }

# --- 1. sessiond --------------------------------------------------------------
PORT="$(bench_free_ports 1)"
mkdir -p "$WORK/sessiond-data"
echo "$SESSIOND --listen 127.0.0.1:$PORT --data_dir $WORK/sessiond-data" >> "$COMMANDS"
"$SESSIOND" --listen "127.0.0.1:$PORT" --data_dir "$WORK/sessiond-data" \
  > "$WORK/sessiond.out" 2> "$WORK/sessiond.err" &
SESSIOND_PID=$!
PIDS+=("$SESSIOND_PID")
ADDR="$(bench_wait_listening "$SESSIOND_PID" "$WORK/sessiond.out" "$WORK/sessiond.err")"
log "sessiond (pid $SESSIOND_PID) on $ADDR"

COMMON=(--target "$ADDR" --duration_s "$DURATION" --warmup_s 1 --json)
run_logged "$WORK/echo.json" "$BENCH" "${COMMON[@]}" --mode echo --concurrency "$CONCURRENCY"
run_logged "$WORK/validate.json" "$BENCH" "${COMMON[@]}" --mode unary --ops validate:1 \
  --concurrency "$CONCURRENCY" --preload "$PRELOAD" --attr_bytes 200
# The same validate load, open loop at half the closed-loop throughput: the
# latency below saturation (a closed loop's mean is concurrency / throughput).
HALF_RATE="$(python3 -c 'import json, sys; print(max(1, int(json.load(open(sys.argv[1]))["runs"][0]["ops_per_s"] / 2)))' "$WORK/validate.json")"
run_logged "$WORK/validate_half.json" "$BENCH" "${COMMON[@]}" --mode unary --ops validate:1 \
  --concurrency "$CONCURRENCY" --preload "$PRELOAD" --attr_bytes 200 --rate "$HALF_RATE"
run_logged "$WORK/batch.json" "$BENCH" "${COMMON[@]}" --mode batch --batch "$BATCH" \
  --concurrency "$CONCURRENCY" --preload "$PRELOAD" --attr_bytes 200
run_logged "$WORK/stream.json" "$BENCH" "${COMMON[@]}" --mode stream \
  --concurrency "$CONCURRENCY" --preload "$PRELOAD" --attr_bytes 200
run_logged "$WORK/create.json" "$BENCH" "${COMMON[@]}" --mode unary --ops create:1 \
  --attr_bytes "$VALUE_BYTES" --sweep "1,$CONCURRENCY"
kill "$SESSIOND_PID"; wait "$SESSIOND_PID" 2>/dev/null || true

# --- 2./3. redis ----------------------------------------------------------------
stop_redis() { kill "$RPID"; wait "$RPID" 2>/dev/null || true; }
rb() {  # rb <output> <redis-benchmark args...>
  local out="$1"; shift
  run_logged "$out" redis-benchmark -h 127.0.0.1 -p "$RPORT" -d "$VALUE_BYTES" \
    -r 100000 --csv "$@"
}

bench_start_redis redis-aof --appendonly yes --appendfsync always
rb "$WORK/redis_set_always_c64.csv" -t set -c "$CONCURRENCY" -P 1 -n 100000
rb "$WORK/redis_set_always_c1.csv" -t set -c 1 -P 1 -n 1000
stop_redis

bench_start_redis redis-mem --appendonly no
rb "$WORK/redis_c64.csv" -t set,get -c "$CONCURRENCY" -P 1 -n 200000
rb "$WORK/redis_c50.csv" -t set,get -c 50 -P 1 -n 200000
rb "$WORK/redis_get_p16.csv" -t get -c "$CONCURRENCY" -P "$BATCH" -n 1000000
stop_redis

# --- report ---------------------------------------------------------------------
echo
echo "== machine"
echo "$(nproc) cores: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1); $(uname -sr)"
echo "$(redis-server --version | head -n 1)"
echo
echo "== commands (in order)"
cat "$COMMANDS"
echo
python3 - "$WORK" "$CONCURRENCY" "$BATCH" <<'EOF'
import csv, json, sys
work, conc, batch = sys.argv[1], sys.argv[2], sys.argv[3]

def bench(name, index=0):
    return json.load(open(f"{work}/{name}.json"))["runs"][index]

def redis(name, test):
    with open(f"{work}/{name}.csv") as f:
        for row in csv.DictReader(f):
            if row["test"].split()[0] == test:
                return {"ops_per_s": float(row["rps"]),
                        "p50_us": float(row["p50_latency_ms"]) * 1000,
                        "p99_us": float(row["p99_latency_ms"]) * 1000,
                        "p999_us": None}
    raise SystemExit(f"no {test} in {name}.csv")

def sd(run):
    l = run["latency_us"]
    errors = sum(run["errors"].values())
    return {"ops_per_s": run["ops_per_s"], "p50_us": l["p50"], "p99_us": l["p99"],
            "p999_us": l["p999"], "errors": errors}

rows = [
    (f"sessiond echo ceiling (health Check) c={conc}", sd(bench("echo"))),
    (f"sessiond ValidateSession unary c={conc}", sd(bench("validate"))),
    (f"sessiond ValidateSession open loop at half that rate", sd(bench("validate_half"))),
    (f"sessiond BatchValidate {batch}/call c={conc} (tokens/s)", sd(bench("batch"))),
    (f"sessiond StreamValidate c={conc}", sd(bench("stream"))),
    ("sessiond CreateSession c=1 (synced)", sd(bench("create", 0))),
    (f"sessiond CreateSession c={conc} (synced)", sd(bench("create", 1))),
    (f"redis GET c={conc} -P 1", redis("redis_c64", "GET")),
    (f"redis SET c={conc} -P 1 (no persistence)", redis("redis_c64", "SET")),
    ("redis GET c=50 -P 1", redis("redis_c50", "GET")),
    ("redis SET c=50 -P 1 (no persistence)", redis("redis_c50", "SET")),
    (f"redis GET c={conc} -P {batch} (pipelined, reference)", redis("redis_get_p16", "GET")),
    (f"redis SET c={conc} appendfsync always", redis("redis_set_always_c64", "SET")),
    ("redis SET c=1 appendfsync always", redis("redis_set_always_c1", "SET")),
]
fmt = lambda v: "-" if v is None else f"{v:,.0f}"
print("== results")
print(f"{'workload':58s} {'ops/s':>10s} {'p50 us':>9s} {'p99 us':>9s} {'p99.9 us':>9s} {'errors':>7s}")
for name, r in rows:
    print(f"{name:58s} {fmt(r['ops_per_s']):>10s} {fmt(r['p50_us']):>9s} "
          f"{fmt(r['p99_us']):>9s} {fmt(r['p999_us']):>9s} {str(r.get('errors', '-')):>7s}")
v = dict(rows)
def ratio(a, b):
    return v[a]["ops_per_s"] / v[b]["ops_per_s"] if v[b]["ops_per_s"] else float("nan")
echo, val, half = rows[0][0], rows[1][0], rows[2][0]
batchr, stream = rows[3][0], rows[4][0]
c1, c64 = rows[5][0], rows[6][0]
rget, rset_always, rset_always_c1 = rows[7][0], rows[12][0], rows[13][0]
print()
print("== ratios (target)")
def line(label, value, target):
    print(f"{label:44s} {value:>8s}   {target}")
line("unary validate / echo ceiling", f"{ratio(val, echo):.2f}", ">= 0.80")
line("unary validate p99 (closed loop, c=64)", f"{v[val]['p99_us'] / 1000:.2f} ms", "< 2 ms")
line("unary validate p99 (open loop, half rate)", f"{v[half]['p99_us'] / 1000:.2f} ms", "< 2 ms")
line(f"batch validate / redis GET c={conc}", f"{ratio(batchr, rget):.2f}", ">= 1.0")
line(f"stream validate / redis GET c={conc}", f"{ratio(stream, rget):.2f}", ">= 1.0")
line(f"create c={conc} / redis SET always c={conc}", f"{ratio(c64, rset_always):.2f}", ">= 1.0")
c1_rate = v[c1]["ops_per_s"]
line("create c=1 (one synced write each)",
     f"{c1_rate:,.0f}/s", f"= {1e6 / c1_rate if c1_rate else float('nan'):,.0f} us per create; "
     f"redis SET always c=1: {v[rset_always_c1]['ops_per_s']:,.0f}/s")
EOF
