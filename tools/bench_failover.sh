#!/usr/bin/env bash
# Failover time of a local 3-node sessiond cluster (docs/BENCHMARKS.md):
# leader SIGKILL -> first write acknowledged through the C++ client library.
#
#   tools/bench_failover.sh [--build-dir DIR] [--no-build] [--kills N]
#                           [--writers W] [--etcd] [--etcd-flags "F..."]
#                           [--json] [--keep] [-- FLAGS for every node]
#
#   tools/bench_failover.sh --no-build --build-dir build-release
#       the daemon's defaults (--tick_ms 10 --election_ticks 27 --heartbeat_ticks 5)
#   tools/bench_failover.sh --no-build --build-dir build-release -- --tick_ms 100 --election_ticks 10 --heartbeat_ticks 1
#       etcd's timing
#
# Starts a 3-node cluster with tools/cluster.py (SESSIOND_CLUSTER_DIR in a
# temp dir, free ports, the flags after --), then runs
# `sessiond-cluster-bench failover` N times (default 20): writers (default 2)
# create sessions through the client library; the leader (pid from
# cluster.json) is SIGKILLed; the time to the first write acknowledged among
# those sent after the kill is one sample; the node is restarted with
# `cluster.py restart` and the next kill waits until it is a caught-up
# follower. Prints every command, the settings (tick, election ticks), each
# sample, median, p90 and max. With --etcd, then the same against a 3-node
# etcd cluster on loopback with its default timing (heartbeat 100 ms,
# election timeout 1000 ms; --etcd-flags "--heartbeat-interval 50
# --election-timeout 300" changes it), for reference: puts through a minimal
# client that moves to the next member after an error; the killed member is
# started again with the same argv. Everything started is stopped and the
# temp dir removed on exit (--keep leaves the logs). Bounded: about 6 s per
# kill with the defaults, every wait capped at 30 s.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build-release}"
BUILD=1
KEEP=0
KILLS=20
WRITERS=2
ETCD=0
ETCD_FLAGS=()
JSON=()
NODE_FLAGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) BUILD_DIR="$2"; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --kills) KILLS="$2"; shift 2 ;;
    --writers) WRITERS="$2"; shift 2 ;;
    --etcd) ETCD=1; shift ;;
    --etcd-flags) ETCD=1; read -r -a ETCD_FLAGS <<< "$2"; shift 2 ;;
    --json) JSON=(--json); shift ;;
    --keep) KEEP=1; shift ;;
    --) shift; NODE_FLAGS=("$@"); break ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "bench_failover: unknown argument $1" >&2; exit 2 ;;
  esac
done
BUILD_DIR="$(mkdir -p "$BUILD_DIR" && cd "$BUILD_DIR" && pwd)"
NAME=bench_failover
log() { printf '\033[1m[failover]\033[0m %s\n' "$*" >&2; }
# shellcheck source=tools/bench_lib.sh
. "$ROOT/tools/bench_lib.sh"

if [ "$ETCD" -eq 1 ] && ! command -v etcd >/dev/null; then
  echo "bench_failover: etcd not found (sudo apt-get install etcd-server)" >&2
  exit 2
fi
bench_require_python_grpc
if [ "$BUILD" -eq 1 ]; then bench_build sessiond sessiond-cluster-bench sessiond_python_stubs; fi
TOOL="$BUILD_DIR/tools/sessiond-cluster-bench"
bench_require "$BUILD_DIR/server/sessiond" "$TOOL" "$BUILD_DIR/python/sessiond/v1/admin_pb2.py"

WORK="$(mktemp -d /tmp/sessiond-bench-failover-XXXXXX)"
export SESSIOND_CLUSTER_DIR="$WORK/cluster" SESSIOND_BUILD_DIR="$BUILD_DIR"
UP=0
MEMBERS="$WORK/etcd/members.json"
cleanup() {
  if [ "$UP" -eq 1 ]; then "$PY" "$ROOT/tools/cluster.py" down >/dev/null 2>&1 || true; fi
  if [ -f "$MEMBERS" ]; then
    # The pids the tool last recorded (it restarts killed members), each
    # checked to run that member's argv before it is signalled.
    "$PY" - "$MEMBERS" <<'EOF' || true
import json, os, signal, sys, time
nodes = json.load(open(sys.argv[1]))["nodes"]
def runs(n):
    try:
        with open("/proc/%d/cmdline" % n["pid"], "rb") as f:
            return [a.decode() for a in f.read().split(b"\0")[:-1]] == n["argv"]
    except (OSError, TypeError):
        return False
live = [n for n in nodes if runs(n)]
for n in live:
    os.kill(n["pid"], signal.SIGTERM)
deadline = time.monotonic() + 10
while time.monotonic() < deadline and any(runs(n) for n in live):
    time.sleep(0.1)
for n in live:
    if runs(n):
        os.kill(n["pid"], signal.SIGKILL)
EOF
  fi
  if [ "$KEEP" -eq 1 ]; then echo "bench_failover: kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

UP_CMD=("$PY" "$ROOT/tools/cluster.py" up 3)
[ "${#NODE_FLAGS[@]}" -gt 0 ] && UP_CMD+=(-- "${NODE_FLAGS[@]}")
RUN_CMD=("$TOOL" failover --cluster_dir "$SESSIOND_CLUSTER_DIR" --kills "$KILLS" --writers "$WRITERS" "${JSON[@]}")
echo "== commands" >&2
echo "SESSIOND_CLUSTER_DIR=$SESSIOND_CLUSTER_DIR SESSIOND_BUILD_DIR=$BUILD_DIR ${UP_CMD[*]}" >&2
echo "${RUN_CMD[*]}" >&2
UP=1
"${UP_CMD[@]}" >&2
status=0
"${RUN_CMD[@]}" || status=1
"$PY" "$ROOT/tools/cluster.py" down >/dev/null 2>&1 || true
UP=0

if [ "$ETCD" -eq 1 ]; then
  echo
  ETCD_BIN="$(command -v etcd)"
  mapfile -t EP < <(bench_free_ports 6)
  INITIAL="e1=http://127.0.0.1:${EP[3]},e2=http://127.0.0.1:${EP[4]},e3=http://127.0.0.1:${EP[5]}"
  mkdir -p "$WORK/etcd"
  echo "== etcd commands" >&2
  ARGVS=()
  for i in 0 1 2; do
    name="e$((i + 1))"
    client="127.0.0.1:${EP[$i]}"
    peer="http://127.0.0.1:${EP[$((i + 3))]}"
    args=("$ETCD_BIN" --name "$name" --data-dir "$WORK/etcd/$name"
          --listen-client-urls "http://$client" --advertise-client-urls "http://$client"
          --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer"
          --initial-cluster "$INITIAL" --initial-cluster-token "failover-$$"
          --initial-cluster-state new --logger zap --log-outputs stderr
          "${ETCD_FLAGS[@]}")
    echo "${args[*]}" >&2
    "${args[@]}" >> "$WORK/etcd/$name.log" 2>&1 &
    # id, client address, pid, log, argv (one argument per line)
    ARGVS+=("$((i + 1))" "$client" "$!" "$WORK/etcd/$name.log" "$(printf '%s\n' "${args[@]}")")
  done
  "$PY" - "$MEMBERS" "${ARGVS[@]}" <<'EOF'
import json, sys
out, rest = sys.argv[1], sys.argv[2:]
nodes = []
for i in range(0, len(rest), 5):
    nodes.append({"id": int(rest[i]), "client_address": rest[i + 1],
                  "pid": int(rest[i + 2]), "log": rest[i + 3],
                  "argv": rest[i + 4].splitlines()})
json.dump({"nodes": nodes}, open(out, "w"), indent=2)
EOF
  ETCD_CMD=("$TOOL" failover --etcd_members "$MEMBERS" --kills "$KILLS" --writers "$WRITERS" "${JSON[@]}")
  echo "${ETCD_CMD[*]}" >&2
  "${ETCD_CMD[@]}" || status=1
fi
exit "$status"
