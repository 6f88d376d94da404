#!/usr/bin/env bash
# Smoke run of the cluster benchmark scripts against this build tree (no
# rebuild): one leader kill with fast elections (tools/bench_failover.sh)
# and one follower catch-up by snapshot (tools/bench_catchup.sh), and the
# audit cost timer (tools/bench_audit.py) against one node. Checks that they
# run and report, never how fast (benchmarks are not asserted).
#
#   tests/client/bench_tools_smoke.sh <source root> <build dir>
set -euo pipefail
ROOT="$1"
BUILD="$2"
OUT="$(mktemp -d /tmp/sessiond-bench-smoke-XXXXXX)"
trap 'rm -rf "$OUT"' EXIT

expect() {  # expect <file> <substring>
  if ! grep -qF -- "$2" "$1"; then
    echo "bench_tools_smoke: '$2' missing from $(basename "$1"):" >&2
    cat "$1" >&2
    exit 1
  fi
}

"$ROOT/tools/bench_failover.sh" --no-build --build-dir "$BUILD" --kills 1 \
  -- --tick_ms 50 --election_ticks 6 --heartbeat_ticks 1 > "$OUT/failover.txt" 2> "$OUT/failover.err" \
  || { cat "$OUT/failover.txt" "$OUT/failover.err" >&2; exit 1; }
expect "$OUT/failover.txt" "tick_ms 50, election_ticks 6, heartbeat_ticks 1"
expect "$OUT/failover.txt" "kill -> first acknowledged write over 1 kills: median"

"$ROOT/tools/bench_catchup.sh" --no-build --build-dir "$BUILD" --via snapshot \
  --writes 2000 --create-batch 20 > "$OUT/catchup.txt" 2> "$OUT/catchup.err" \
  || { cat "$OUT/catchup.txt" "$OUT/catchup.err" >&2; exit 1; }
expect "$OUT/catchup.txt" "applied the leader's commit index after"
expect "$OUT/catchup.txt" "snapshot installed: yes"
# tools/bench_audit.py, a few calls against a single node.
"$BUILD/server/sessiond" --data_dir "$OUT/audit-node" --listen 127.0.0.1:0 \
  > "$OUT/audit-node.log" 2>&1 &
NODE=$!
trap 'kill -9 "$NODE" 2>/dev/null || true; rm -rf "$OUT"' EXIT
ADDR=""
for _ in $(seq 300); do  # 30 s
  ADDR="$(sed -n 's/^LISTENING //p' "$OUT/audit-node.log" | head -1)"
  [ -n "$ADDR" ] && break
  sleep 0.1
done
[ -n "$ADDR" ] || { cat "$OUT/audit-node.log" >&2; exit 1; }
/usr/bin/python3 "$ROOT/tools/bench_audit.py" "$ADDR" 5 "$BUILD" \
  > "$OUT/audit.txt" 2> "$OUT/audit.err" \
  || { cat "$OUT/audit.txt" "$OUT/audit.err" >&2; exit 1; }
expect "$OUT/audit.txt" "SetExpiryLeeway (audited)"
expect "$OUT/audit.txt" "RevokeUserSessions (audited)"
echo "bench_tools_smoke: ok"
