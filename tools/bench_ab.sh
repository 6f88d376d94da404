#!/usr/bin/env bash
# Two sessiond binaries side by side on a noisy machine: alternates them,
# each run on a fresh cluster, so that drift in the machine's speed (steal
# time, other work) falls on both alike (docs/BENCHMARKS.md).
#
#   tools/bench_ab.sh BINARY_A BINARY_B [--nodes N] [--rounds R]
#                     [--build-dir DIR] [-- sessiond-bench FLAGS]
#
# Each round starts an N-node cluster (default 3; tools/cluster.py, free
# ports, a temp dir) with A, runs sessiond-bench against its leader, takes it
# down, then the same with B; R rounds (default 3). The bench flags default to
# unary CreateSession at concurrency 64 for 8 s (`--mode unary --ops create:1
# --attr_bytes 256 --concurrency 64 --duration_s 8`). Prints one line per run
# and the mean throughput, p50/p99 and the members' CPU per operation (their
# utime + stime over the bench, as cores, over the rate) of each binary. The
# build dir (default build-release) supplies sessiond-bench and the Python
# stubs cluster.py uses. Bounded: R x 2 x (start + 1 s warm-up + duration).
#
# To compare a change with main: build main, copy its server/sessiond
# aside, build the change, and pass the copy as A and the new one as B.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="$ROOT/build-release"
NODES=3
ROUNDS=3
BENCH_FLAGS=(--mode unary --ops create:1 --attr_bytes 256 --concurrency 64 --duration_s 8)

[ $# -ge 2 ] || { sed -n '2,19p' "$0"; exit 2; }
A="$(realpath "$1")"; B="$(realpath "$2")"; shift 2
while [ $# -gt 0 ]; do
  case "$1" in
    --nodes) NODES="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --build-dir) BUILD_DIR="$2"; shift 2 ;;
    --) shift; BENCH_FLAGS=("$@"); break ;;
    *) echo "bench_ab: unknown argument $1" >&2; exit 2 ;;
  esac
done
BUILD_DIR="$(realpath "$BUILD_DIR")"
for f in "$A" "$B" "$BUILD_DIR/tools/sessiond-bench"; do
  [ -x "$f" ] || { echo "bench_ab: $f is not an executable" >&2; exit 2; }
done

# The nodes share the CPU with the generator thread by thread (bench_lib.sh).
export SESSIOND_CLUSTER_SESSION="${SESSIOND_CLUSTER_SESSION:-caller}"

WORK="$(mktemp -d /tmp/sessiond-bench-ab-XXXXXX)"
cleanup() {
  for v in A B; do
    SESSIOND_BUILD_DIR="$WORK/$v" SESSIOND_CLUSTER_DIR="$WORK/cluster" \
      "$ROOT/tools/dev.sh" cluster down --wipe >/dev/null 2>&1 || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

# cluster.py runs BUILD/server/sessiond: one shim build dir per binary, the
# rest of it (stubs) linked from the real build dir.
for v in A B; do
  mkdir -p "$WORK/$v/server"
  for f in "$BUILD_DIR"/*; do
    [ "$(basename "$f")" = server ] || ln -s "$f" "$WORK/$v/"
  done
done
cp "$A" "$WORK/A/server/sessiond"
cp "$B" "$WORK/B/server/sessiond"

# utime + stime of the given processes, in clock ticks.
members_cpu_ticks() {
  local total=0 p
  for p in "$@"; do
    total=$(( total + $(awk '{print $14 + $15}' "/proc/$p/stat") ))
  done
  echo "$total"
}

echo "A: $A"
echo "B: $B"
echo "bench: sessiond-bench --target LEADER ${BENCH_FLAGS[*]}"
for round in $(seq 1 "$ROUNDS"); do
  for v in A B; do
    export SESSIOND_BUILD_DIR="$WORK/$v" SESSIOND_CLUSTER_DIR="$WORK/cluster"
    "$ROOT/tools/dev.sh" cluster up "$NODES" >"$WORK/up.log" 2>&1 ||
      { cat "$WORK/up.log" >&2; exit 1; }
    leader="$("$ROOT/tools/dev.sh" cluster status --json | /usr/bin/python3 -c '
import json, sys
d = json.load(sys.stdin)
print([n["client_address"] for n in d["nodes"] if n["id"] == d["leader"]][0])')"
    pids="$(/usr/bin/python3 -c '
import json, sys
print(" ".join(str(n["pid"]) for n in json.load(open(sys.argv[1]))["nodes"]))' \
      "$SESSIOND_CLUSTER_DIR/cluster.json")"
    cpu_before="$(members_cpu_ticks $pids)"
    start_ns="$(date +%s%N)"
    "$BUILD_DIR/tools/sessiond-bench" --target "$leader" --warmup_s 1 \
      "${BENCH_FLAGS[@]}" --json >"$WORK/$v.$round.json" 2>/dev/null
    wall_ns=$(( $(date +%s%N) - start_ns ))
    cpu_ticks=$(( $(members_cpu_ticks $pids) - cpu_before ))
    "$ROOT/tools/dev.sh" cluster down --wipe >/dev/null 2>&1
    /usr/bin/python3 - "$WORK/$v.$round.json" "$v" "$round" "$cpu_ticks" \
      "$(getconf CLK_TCK)" "$wall_ns" <<'EOF'
import json, sys
path, v, round_, ticks, hz, wall_ns = sys.argv[1:]
doc = json.load(open(path))
r = doc["runs"][0]
# The members' CPU over the whole bench (connect, preload, warm-up, run),
# as cores, divided by the measured rate: CPU per operation.
cores = int(ticks) / int(hz) / (int(wall_ns) / 1e9)
r["members_cpu_us_per_op"] = cores * 1e6 / r["ops_per_s"] if r["ops_per_s"] else 0
json.dump(doc, open(path, "w"))
print("%s round %s: %8.0f ops/s  p50 %7.2f ms  p99 %7.2f ms  CPU %6.1f us/op" % (
    v, round_, r["ops_per_s"], r["latency_us"]["p50"] / 1e3,
    r["latency_us"]["p99"] / 1e3, r["members_cpu_us_per_op"]))
EOF
  done
done
/usr/bin/python3 - "$WORK" "$ROUNDS" <<'EOF'
import json, statistics, sys
work, rounds = sys.argv[1], int(sys.argv[2])
for v in "AB":
    runs = [json.load(open("%s/%s.%d.json" % (work, v, i)))["runs"][0]
            for i in range(1, rounds + 1)]
    print("%s mean: %8.0f ops/s  p50 %7.2f ms  p99 %7.2f ms  CPU %6.1f us/op" % (
        v, statistics.mean(r["ops_per_s"] for r in runs),
        statistics.mean(r["latency_us"]["p50"] for r in runs) / 1e3,
        statistics.mean(r["latency_us"]["p99"] for r in runs) / 1e3,
        statistics.mean(r["members_cpu_us_per_op"] for r in runs)))
EOF
