#!/usr/bin/env bash
# How long a follower that missed many writes takes to catch up
# (docs/BENCHMARKS.md).
#
#   tools/bench_catchup.sh [--build-dir DIR] [--no-build] [--writes N]
#                          [--create-batch B] [--via snapshot|log|both]
#                          [--json] [--keep] [-- EXTRA FLAGS for every node]
#
# For each way (default: both), on a fresh 3-node cluster (tools/cluster.py,
# SESSIOND_CLUSTER_DIR in a temp dir, free ports), `sessiond-cluster-bench
# catchup`: stop a follower (SIGTERM), write N sessions (default 100,000) in
# CreateSessions calls of B (default 100: N/B log entries) through the client
# library, restart the follower, and time until its applied index reaches
# the leader's commit index (ClusterStatus polled on the follower every
# 10 ms); report whether it installed a snapshot.
#   snapshot  nodes run with --log_compact_interval_ms 1000
#             --log_compact_min_entries 100 --snapshot_catch_up_entries 10,
#             and the tool waits until the leader compacted its log past the
#             follower: it must catch up with a snapshot;
#   log       the daemon's defaults (compaction every 60 s, at 10,000
#             entries): it catches up from the leader's log.
# Prints every command, the node flags, and the times. The clusters are
# stopped and the temp dir removed on exit (--keep leaves the logs).
# Bounded: well under a minute per way at the defaults; each wait is capped
# at 60 s.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build-release}"
BUILD=1
KEEP=0
WRITES=100000
CREATE_BATCH=100
VIA=both
JSON=()
EXTRA=()
while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) BUILD_DIR="$2"; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --writes) WRITES="$2"; shift 2 ;;
    --create-batch) CREATE_BATCH="$2"; shift 2 ;;
    --via) VIA="$2"; shift 2 ;;
    --json) JSON=(--json); shift ;;
    --keep) KEEP=1; shift ;;
    --) shift; EXTRA=("$@"); break ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "bench_catchup: unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$VIA" in
  snapshot) WAYS=(snapshot) ;;
  log) WAYS=(log) ;;
  both) WAYS=(snapshot log) ;;
  *) echo "bench_catchup: --via snapshot|log|both" >&2; exit 2 ;;
esac
BUILD_DIR="$(mkdir -p "$BUILD_DIR" && cd "$BUILD_DIR" && pwd)"
NAME=bench_catchup
log() { printf '\033[1m[catchup]\033[0m %s\n' "$*" >&2; }
# shellcheck source=tools/bench_lib.sh
. "$ROOT/tools/bench_lib.sh"

bench_require_python_grpc
if [ "$BUILD" -eq 1 ]; then bench_build sessiond sessiond-cluster-bench sessiond_python_stubs; fi
TOOL="$BUILD_DIR/tools/sessiond-cluster-bench"
bench_require "$BUILD_DIR/server/sessiond" "$TOOL" "$BUILD_DIR/python/sessiond/v1/admin_pb2.py"

WORK="$(mktemp -d /tmp/sessiond-bench-catchup-XXXXXX)"
export SESSIOND_BUILD_DIR="$BUILD_DIR"
CURRENT=""
cleanup() {
  if [ -n "$CURRENT" ]; then
    SESSIOND_CLUSTER_DIR="$CURRENT" "$PY" "$ROOT/tools/cluster.py" down >/dev/null 2>&1 || true
  fi
  if [ "$KEEP" -eq 1 ]; then echo "bench_catchup: kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

status=0
for way in "${WAYS[@]}"; do
  FLAGS=()
  WAIT=(--compaction_wait_s 0)
  if [ "$way" = snapshot ]; then
    FLAGS=(--log_compact_interval_ms 1000 --log_compact_min_entries 100 --snapshot_catch_up_entries 10)
    WAIT=(--compaction_wait_s 20)
  fi
  FLAGS+=("${EXTRA[@]}")
  export SESSIOND_CLUSTER_DIR="$WORK/$way"
  UP_CMD=("$PY" "$ROOT/tools/cluster.py" up 3)
  [ "${#FLAGS[@]}" -gt 0 ] && UP_CMD+=(-- "${FLAGS[@]}")
  RUN_CMD=("$TOOL" catchup --cluster_dir "$SESSIOND_CLUSTER_DIR" --writes "$WRITES"
           --create_batch "$CREATE_BATCH" --max_wait_s 60 "${WAIT[@]}" "${JSON[@]}")
  echo "== catch-up via $way: commands" >&2
  echo "SESSIOND_CLUSTER_DIR=$SESSIOND_CLUSTER_DIR SESSIOND_BUILD_DIR=$BUILD_DIR ${UP_CMD[*]}" >&2
  echo "${RUN_CMD[*]}" >&2
  CURRENT="$SESSIOND_CLUSTER_DIR"
  "${UP_CMD[@]}" >&2
  "${RUN_CMD[@]}" || status=1
  "$PY" "$ROOT/tools/cluster.py" down >/dev/null 2>&1 || true
  CURRENT=""
  echo
done
exit "$status"
