#!/usr/bin/env bash
# sessiond single node and 3-node cluster against Redis and a 3-node etcd on
# this machine, in one run (docs/BENCHMARKS.md).
#
#   tools/bench_cluster.sh [--build-dir DIR] [--no-build] [--duration S]
#                          [--create-batch B] [--no-etcd] [--keep]
#                          [-- FLAGS for every sessiond cluster node]
#
# Environment: BUILD_DIR, DURATION, JOBS, SESSIOND_BIN / BENCH_BIN.
#
# Builds Release (sessiond, sessiond-bench, the Python stubs) unless
# --no-build, then, one after the other so that runs never compete for the
# CPU (each sessiond-bench run: 1 s warm-up + --duration S, default 5):
#   1. a single sessiond on a free port, temp data dir: echo ceiling, unary
#      CreateSession c=64, CreateSessions of B (default 16) c=64, unary
#      validate c=64 (10,000 preloaded sessions);
#   2. redis-server --appendonly yes --appendfsync always: SET -d 256 c=64;
#   3. a 3-node sessiond cluster (tools/cluster.py, SESSIOND_CLUSTER_DIR in
#      the temp dir, free ports, the daemon's default flags plus any given
#      after --): CreateSession c=64 on the leader; CreateSession c=64
#      through the C++ client library, without and with coalescing;
#      CreateSessions of B c=64; LINEARIZABLE validate c=64 on the leader;
#      LOCAL validate c=64 spread over the 3 nodes; LOCAL on the leader alone;
#   4. a 3-node etcd cluster on loopback (temp data dirs, free ports): put of
#      256 B c=64 through the v3 gRPC API (etcdserverpb.KV/Put) to the leader;
# and prints every command it ran, a table, the ratios the targets use and
# the fsyncs per acknowledged write of every write run (sessiond: Raft log
# fsyncs from ClusterStatus; etcd: WAL fsyncs from /metrics).
# Everything it starts is stopped on exit; everything it writes is under one
# temp dir that is removed (--keep leaves it, with the raw JSON, CSV and
# node logs). Bounded: about 2-3 minutes at the default duration.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build-release}"
DURATION="${DURATION:-5}"
CONCURRENCY=64
CREATE_BATCH=16
VALUE_BYTES=256
PRELOAD=10000
BUILD=1
KEEP=0
ETCD=1
NODE_FLAGS=()

while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) BUILD_DIR="$2"; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --duration) DURATION="$2"; shift 2 ;;
    --create-batch) CREATE_BATCH="$2"; shift 2 ;;
    --no-etcd) ETCD=0; shift ;;
    --keep) KEEP=1; shift ;;
    --) shift; NODE_FLAGS=("$@"); break ;;
    -h|--help) sed -n '2,31p' "$0"; exit 0 ;;
    *) echo "bench_cluster: unknown argument $1" >&2; exit 2 ;;
  esac
done
BUILD_DIR="$(mkdir -p "$BUILD_DIR" && cd "$BUILD_DIR" && pwd)"

NAME=bench_cluster
log() { printf '\033[1m[bench]\033[0m %s\n' "$*" >&2; }
# shellcheck source=tools/bench_lib.sh
. "$ROOT/tools/bench_lib.sh"

missing=()
for tool in redis-server redis-benchmark redis-cli "$PY"; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ "$ETCD" -eq 1 ]; then
  for tool in etcd etcdctl; do command -v "$tool" >/dev/null || missing+=("$tool"); done
fi
"$PY" -c 'import grpc, google.protobuf' 2>/dev/null || missing+=("python3-grpcio/python3-protobuf")
if [ "${#missing[@]}" -gt 0 ]; then
  echo "bench_cluster: missing: ${missing[*]}" >&2
  echo "  install: sudo apt-get install redis-server redis-tools etcd-server etcd-client python3-grpcio python3-protobuf" >&2
  echo "  (or run with --no-etcd to skip etcd)" >&2
  exit 2
fi

WORK="$(mktemp -d /tmp/sessiond-bench-cluster-XXXXXX)"
CLUSTER_DIR="$WORK/cluster"
PIDS=()
CLUSTER_UP=0
cleanup() {
  if [ "$CLUSTER_UP" -eq 1 ]; then
    SESSIOND_CLUSTER_DIR="$CLUSTER_DIR" SESSIOND_BUILD_DIR="$BUILD_DIR" \
      "$PY" "$ROOT/tools/cluster.py" down >/dev/null 2>&1 || true
  fi
  bench_stop "${PIDS[@]}"
  if [ "$KEEP" -eq 1 ]; then
    echo "bench_cluster: raw results kept in $WORK" >&2
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

COMMANDS="$WORK/commands.txt"
: > "$COMMANDS"
note() { echo "$*" >> "$COMMANDS"; log "$*"; }
run_logged() {  # run_logged <output file> <command...>: records and runs it
  local out="$1"; shift
  note "$*"
  "$@" > "$out"
}

if [ "$BUILD" -eq 1 ]; then bench_build sessiond sessiond-bench sessiond_python_stubs; fi
SESSIOND="${SESSIOND_BIN:-$BUILD_DIR/server/sessiond}"
BENCH="${BENCH_BIN:-$BUILD_DIR/tools/sessiond-bench}"
bench_require "$SESSIOND" "$BENCH" "$BUILD_DIR/python/sessiond/v1/admin_pb2.py"

COMMON=(--duration_s "$DURATION" --warmup_s 1 --json)
CREATE=(--ops create:1 --attr_bytes "$VALUE_BYTES" --concurrency "$CONCURRENCY")
VALIDATE=(--ops validate:1 --attr_bytes 200 --preload "$PRELOAD" --concurrency "$CONCURRENCY")

# --- 1. single node --------------------------------------------------------------
PORT="$(bench_free_ports 1)"
mkdir -p "$WORK/single"
note "$SESSIOND --listen 127.0.0.1:$PORT --data_dir $WORK/single/data"
"$SESSIOND" --listen "127.0.0.1:$PORT" --data_dir "$WORK/single/data" \
  > "$WORK/single/out" 2> "$WORK/single/err" &
SINGLE_PID=$!
PIDS+=("$SINGLE_PID")
ADDR="$(bench_wait_listening "$SINGLE_PID" "$WORK/single/out" "$WORK/single/err")"
run_logged "$WORK/s_echo.json" "$BENCH" --target "$ADDR" "${COMMON[@]}" --mode echo --concurrency "$CONCURRENCY"
run_logged "$WORK/s_create.json" "$BENCH" --target "$ADDR" "${COMMON[@]}" "${CREATE[@]}"
run_logged "$WORK/s_create_batch.json" "$BENCH" --target "$ADDR" "${COMMON[@]}" "${CREATE[@]}" --create_batch "$CREATE_BATCH"
run_logged "$WORK/s_validate.json" "$BENCH" --target "$ADDR" "${COMMON[@]}" "${VALIDATE[@]}"
kill "$SINGLE_PID"; wait "$SINGLE_PID" 2>/dev/null || true

# --- 2. redis appendfsync always -------------------------------------------------
bench_start_redis redis --appendonly yes --appendfsync always
run_logged "$WORK/redis_set_always.csv" redis-benchmark -h 127.0.0.1 -p "$RPORT" \
  -d "$VALUE_BYTES" -r 100000 --csv -t set -c "$CONCURRENCY" -P 1 -n 100000
kill "$RPID"; wait "$RPID" 2>/dev/null || true

# --- 3. sessiond cluster ---------------------------------------------------------
export SESSIOND_CLUSTER_DIR="$CLUSTER_DIR" SESSIOND_BUILD_DIR="$BUILD_DIR"
if [ "${#NODE_FLAGS[@]}" -gt 0 ]; then
  note "SESSIOND_CLUSTER_DIR=$CLUSTER_DIR SESSIOND_BUILD_DIR=$BUILD_DIR $PY $ROOT/tools/cluster.py up 3 -- ${NODE_FLAGS[*]}"
  CLUSTER_UP=1
  "$PY" "$ROOT/tools/cluster.py" up 3 -- "${NODE_FLAGS[@]}" > "$WORK/cluster_up.txt"
else
  note "SESSIOND_CLUSTER_DIR=$CLUSTER_DIR SESSIOND_BUILD_DIR=$BUILD_DIR $PY $ROOT/tools/cluster.py up 3"
  CLUSTER_UP=1
  "$PY" "$ROOT/tools/cluster.py" up 3 > "$WORK/cluster_up.txt"
fi
"$PY" "$ROOT/tools/cluster.py" status --json > "$WORK/cluster_status.json"
TARGETS="$("$PY" -c 'import json, sys; print(",".join(n["client_address"] for n in json.load(open(sys.argv[1]))["nodes"]))' "$WORK/cluster_status.json")"
log "cluster nodes: $TARGETS"
CT=(--targets "$TARGETS")
run_logged "$WORK/c_create.json" "$BENCH" "${CT[@]}" "${COMMON[@]}" "${CREATE[@]}"
run_logged "$WORK/c_client.json" "$BENCH" "${CT[@]}" "${COMMON[@]}" --mode client "${CREATE[@]}"
run_logged "$WORK/c_client_coalesce.json" "$BENCH" "${CT[@]}" "${COMMON[@]}" --mode client --coalesce "${CREATE[@]}"
run_logged "$WORK/c_create_batch.json" "$BENCH" "${CT[@]}" "${COMMON[@]}" "${CREATE[@]}" --create_batch "$CREATE_BATCH"
run_logged "$WORK/c_lin_leader.json" "$BENCH" "${CT[@]}" "${COMMON[@]}" "${VALIDATE[@]}" --consistency linearizable --read_from leader
run_logged "$WORK/c_local_all.json" "$BENCH" "${CT[@]}" "${COMMON[@]}" "${VALIDATE[@]}" --consistency local
run_logged "$WORK/c_local_leader.json" "$BENCH" "${CT[@]}" "${COMMON[@]}" "${VALIDATE[@]}" --consistency local --read_from leader
"$PY" "$ROOT/tools/cluster.py" status > "$WORK/cluster_status_end.txt" 2>&1 || true
"$PY" "$ROOT/tools/cluster.py" down > /dev/null
CLUSTER_UP=0

# --- 4. etcd cluster -------------------------------------------------------------
if [ "$ETCD" -eq 1 ]; then
  mapfile -t EP < <(bench_free_ports 6)
  INITIAL="e1=http://127.0.0.1:${EP[3]},e2=http://127.0.0.1:${EP[4]},e3=http://127.0.0.1:${EP[5]}"
  ETCD_ENDPOINTS=""
  mkdir -p "$WORK/etcd"
  for i in 0 1 2; do
    name="e$((i + 1))"
    client="127.0.0.1:${EP[$i]}"
    peer="http://127.0.0.1:${EP[$((i + 3))]}"
    args=(--name "$name" --data-dir "$WORK/etcd/$name"
          --listen-client-urls "http://$client" --advertise-client-urls "http://$client"
          --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer"
          --initial-cluster "$INITIAL" --initial-cluster-token "bench-$$"
          --initial-cluster-state new --logger zap --log-outputs stderr)
    note "etcd ${args[*]}"
    etcd "${args[@]}" > "$WORK/etcd/$name.log" 2>&1 &
    PIDS+=("$!")
    ETCD_ENDPOINTS="${ETCD_ENDPOINTS:+$ETCD_ENDPOINTS,}$client"
  done
  healthy=0
  for _ in $(seq 1 150); do
    if ETCDCTL_API=3 etcdctl --endpoints "$ETCD_ENDPOINTS" endpoint health >/dev/null 2>&1; then
      healthy=1; break
    fi
    sleep 0.2
  done
  [ "$healthy" -eq 1 ] || { tail -n 20 "$WORK"/etcd/*.log >&2; echo "bench_cluster: etcd not healthy in 30 s" >&2; exit 1; }
  etcd_fsyncs() {  # the WAL fsync and backend commit counters of every member
    "$PY" - "$ETCD_ENDPOINTS" <<'EOF'
import json, sys, urllib.request
out = {"wal_fsync": 0, "backend_commit": 0}
for ep in sys.argv[1].split(","):
    text = urllib.request.urlopen(f"http://{ep}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith("etcd_disk_wal_fsync_duration_seconds_count "):
            out["wal_fsync"] += int(float(line.split()[1]))
        if line.startswith("etcd_disk_backend_commit_duration_seconds_count "):
            out["backend_commit"] += int(float(line.split()[1]))
print(json.dumps(out))
EOF
  }
  etcd_fsyncs > "$WORK/etcd_metrics_before.json"
  run_logged "$WORK/etcd_put.json" "$BENCH" --etcd --targets "$ETCD_ENDPOINTS" "${COMMON[@]}" \
    --value_bytes "$VALUE_BYTES" --concurrency "$CONCURRENCY"
  etcd_fsyncs > "$WORK/etcd_metrics_after.json"
fi

# --- report ----------------------------------------------------------------------
echo
echo "== machine"
echo "$(nproc) cores: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1); $(uname -sr)"
echo "$(redis-server --version | head -n 1)"
[ "$ETCD" -eq 1 ] && echo "$(etcd --version | head -n 1)"
if [ "${#NODE_FLAGS[@]}" -gt 0 ]; then
  echo "sessiond cluster node flags: ${NODE_FLAGS[*]}"
else
  echo "sessiond cluster node flags: none (the daemon defaults)"
fi
echo
echo "== commands (in order)"
cat "$COMMANDS"
echo
"$PY" - "$WORK" "$CONCURRENCY" "$CREATE_BATCH" "$ETCD" <<'EOF'
import csv, json, os, sys
work, conc, cb, etcd = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"

def doc(name):
    return json.load(open(f"{work}/{name}.json"))

def bench(name):
    return doc(name)["runs"][0]

def redis(name, test):
    with open(f"{work}/{name}.csv") as f:
        for row in csv.DictReader(f):
            if row["test"].split()[0] == test:
                return {"ops_per_s": float(row["rps"]),
                        "p50_us": float(row["p50_latency_ms"]) * 1000,
                        "p99_us": float(row["p99_latency_ms"]) * 1000,
                        "p999_us": None, "errors": "-"}
    raise SystemExit(f"no {test} in {name}.csv")

def sd(run):
    l = run["latency_us"]
    return {"ops_per_s": run["ops_per_s"], "calls_per_s": run["calls_per_s"],
            "p50_us": l["p50"], "p99_us": l["p99"], "p999_us": l["p999"],
            "errors": sum(run["errors"].values()), "run": run}

rows = [
    ("s_echo", f"single: echo ceiling (health Check) c={conc}"),
    ("s_create", f"single: CreateSession c={conc}"),
    ("s_create_batch", f"single: CreateSessions {cb}/call c={conc} (sessions/s)"),
    ("s_validate", f"single: ValidateSession c={conc}"),
    ("redis", f"redis SET 256 B c={conc} appendfsync always"),
    ("c_create", f"cluster: CreateSession c={conc} on the leader"),
    ("c_client", f"cluster: CreateSession c={conc} via client library"),
    ("c_client_coalesce", f"cluster: same, client coalesce_creates on"),
    ("c_create_batch", f"cluster: CreateSessions {cb}/call c={conc} (sessions/s)"),
    ("c_lin_leader", f"cluster: validate LINEARIZABLE c={conc} on the leader"),
    ("c_local_all", f"cluster: validate LOCAL c={conc} over 3 nodes"),
    ("c_local_leader", f"cluster: validate LOCAL c={conc} on the leader"),
]
if etcd:
    rows.append(("etcd_put", f"etcd 3 nodes: put 256 B c={conc} (gRPC KV/Put)"))
v = {}
for key, _ in rows:
    v[key] = redis("redis_set_always", "SET") if key == "redis" else sd(bench(key))

fmt = lambda x: "-" if x is None else f"{x:,.0f}"
print("== results")
print(f"{'workload':56s} {'ops/s':>10s} {'calls/s':>9s} {'p50 us':>8s} {'p99 us':>8s} {'p99.9 us':>9s} {'errors':>6s}")
for key, label in rows:
    r = v[key]
    print(f"{label:56s} {fmt(r['ops_per_s']):>10s} {fmt(r.get('calls_per_s')):>9s} "
          f"{fmt(r['p50_us']):>8s} {fmt(r['p99_us']):>8s} {fmt(r['p999_us']):>9s} "
          f"{str(r['errors']):>6s}")

def ratio(a, b):
    return v[a]["ops_per_s"] / v[b]["ops_per_s"] if v[b]["ops_per_s"] else float("nan")

print()
print("== ratios (target)")
def line(label, value, target):
    print(f"{label:56s} {value:>10s}   {target}")
if etcd:
    line(f"cluster create c={conc} / etcd put c={conc}", f"{ratio('c_create', 'etcd_put'):.2f}", ">= 3.0")
line(f"cluster create c={conc} p99", f"{v['c_create']['p99_us'] / 1000:.2f} ms", "< 10 ms")
line(f"single create c={conc} / echo ceiling", f"{ratio('s_create', 's_echo'):.2f}", ">= 0.6")
line(f"single CreateSessions ({cb}/call) / redis SET always", f"{ratio('s_create_batch', 'redis'):.2f}", ">= 1.0")
line("cluster LINEARIZABLE validate (leader) / single validate", f"{ratio('c_lin_leader', 's_validate'):.2f}", ">= 0.8")
line("cluster LOCAL validate over 3 nodes / on the leader", f"{ratio('c_local_all', 'c_local_leader'):.2f}", "> 1.0")
line("cluster client create: coalesce on / off", f"{ratio('c_client_coalesce', 'c_client'):.2f}", "(reference)")
line("cluster create via client (no coalescing) / direct", f"{ratio('c_client', 'c_create'):.2f}", "(reference)")

print()
print("== fsyncs per acknowledged write (whole run, warm-up included)")
print(f"{'run':56s} {'writes':>9s} {'fsyncs':>8s} {'leader':>8s} {'per write':>10s} {'leader/write':>12s}")
for key, label in rows:
    if key == "redis" or key == "etcd_put":
        continue
    f = v[key]["run"].get("fsync")
    if not f or not f["acked_writes"]:
        continue
    print(f"{label:56s} {f['acked_writes']:>9,} {f['synced_log_writes']:>8,} "
          f"{f.get('leader_synced_log_writes', 0):>8,} {f['fsyncs_per_write']:>10.4f} "
          f"{f.get('leader_fsyncs_per_write', float('nan')):>12.4f}"
          + (f"  ({f['members_counted']}/{f['members']} members counted)" if f['members_counted'] != f['members'] else "")
          + ("  (leadership changed)" if f.get("leader_changed") else ""))
if etcd:
    before = json.load(open(f"{work}/etcd_metrics_before.json"))
    after = json.load(open(f"{work}/etcd_metrics_after.json"))
    puts = v["etcd_put"]["run"]["acked_writes"]
    wal = after["wal_fsync"] - before["wal_fsync"]
    commits = after["backend_commit"] - before["backend_commit"]
    if puts:
        print(f"{'etcd put (WAL fsyncs, 3 members; /metrics)':56s} {puts:>9,} {wal:>8,} {'-':>8s} "
              f"{wal / puts:>10.4f} {'-':>12s}   backend commits: {commits:,}")
EOF
