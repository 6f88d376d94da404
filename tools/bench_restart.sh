#!/usr/bin/env bash
# Restart time and resident memory per session with many sessions
# (docs/BENCHMARKS.md).
#
#   tools/bench_restart.sh [--build-dir DIR] [--no-build] [--sessions N]
#                          [--attr_bytes B] [--keep]
#
# 1. starts a fresh sessiond (Release) on a free port with a temp data dir and
#    reads its RSS;
# 2. creates one marker session (Python stubs), then N sessions (default
#    1,000,000) with B bytes of attributes (default 200) with sessiond-bench
#    at concurrency 256, and reads the RSS again: (after - before) / N is the
#    resident memory per session;
# 3. SIGKILLs it and restarts it on the same data dir: time until it prints
#    LISTENING and until the marker validates VALID again; RSS after restart;
# 4. the same after a clean SIGTERM.
# Prints every command it ran. Kills everything it started and removes its
# temp dir on exit (--keep leaves it). Bounded: creating 1M sessions takes a
# few minutes; each wait has a timeout.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD_DIR="${BUILD_DIR:-$ROOT/build-release}"
SESSIONS=1000000
ATTR_BYTES=200
BUILD=1
KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) BUILD_DIR="$2"; shift 2 ;;
    --no-build) BUILD=0; shift ;;
    --sessions) SESSIONS="$2"; shift 2 ;;
    --attr_bytes) ATTR_BYTES="$2"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "bench_restart: unknown argument $1" >&2; exit 2 ;;
  esac
done

NAME=bench_restart
log() { printf '\033[1m[restart]\033[0m %s\n' "$*" >&2; }
# shellcheck source=tools/bench_lib.sh
. "$ROOT/tools/bench_lib.sh"

WORK="$(mktemp -d /tmp/sessiond-bench-restart-XXXXXX)"
PID=""
cleanup() {
  if [ -n "$PID" ]; then bench_stop "$PID"; fi
  if [ "$KEEP" -eq 1 ]; then echo "bench_restart: kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "$BUILD" -eq 1 ]; then bench_build sessiond sessiond-bench sessiond_python_stubs; fi
SESSIOND="${SESSIOND_BIN:-$BUILD_DIR/server/sessiond}"
BENCH="${BENCH_BIN:-$BUILD_DIR/tools/sessiond-bench}"
STUBS="$BUILD_DIR/python"
for f in "$SESSIOND" "$BENCH" "$STUBS/sessiond/v1/session_pb2.py"; do
  [ -e "$f" ] || { echo "bench_restart: $f missing" >&2; exit 2; }
done

PORT="$(bench_free_ports 1)"
ADDR="127.0.0.1:$PORT"
DATA="$WORK/data"
COMMANDS="$WORK/commands.txt"
: > "$COMMANDS"

now_ms() { date +%s%3N; }
rss_kb() { sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$PID/status"; }

# start <name>: starts sessiond, waits for LISTENING; sets PID, LISTEN_MS.
start() {
  local name="$1" t0
  echo "$SESSIOND --listen $ADDR --data_dir $DATA" >> "$COMMANDS"
  t0="$(now_ms)"
  "$SESSIOND" --listen "$ADDR" --data_dir "$DATA" > "$WORK/$name.out" 2> "$WORK/$name.err" &
  PID=$!
  for _ in $(seq 1 1200); do
    if grep -q '^LISTENING ' "$WORK/$name.out"; then
      LISTEN_MS=$(( $(now_ms) - t0 ))
      return 0
    fi
    kill -0 "$PID" 2>/dev/null || { cat "$WORK/$name.err" >&2; echo "bench_restart: sessiond exited" >&2; exit 1; }
    sleep 0.01
  done
  echo "bench_restart: no LISTENING within 12 s" >&2
  exit 1
}

# client <create|validate> [token]: Python stubs only. validate retries until
# VALID (bounded: 30 s) and prints the ms it waited.
client() {
  "$PY" - "$STUBS" "$ADDR" "$@" <<'EOF'
import sys, time
sys.path.insert(0, sys.argv[1])
import grpc
from sessiond.v1 import session_pb2, session_pb2_grpc
addr, what = sys.argv[2], sys.argv[3]
stub = session_pb2_grpc.SessionServiceStub(grpc.insecure_channel(addr))
if what == "create":
    r = stub.CreateSession(session_pb2.CreateSessionRequest(
        user_id="restart-marker", ttl_ms=24 * 3600 * 1000,
        attributes={"marker": b"x" * 200}), timeout=5)
    print(r.token.decode())  # bytes on the wire; always ASCII (base64url)
else:
    t0 = time.monotonic()
    while time.monotonic() - t0 < 30:
        try:
            r = stub.ValidateSession(
                session_pb2.ValidateSessionRequest(token=sys.argv[4].encode()),
                timeout=1, wait_for_ready=True)
            if r.outcome == session_pb2.ValidateSessionResponse.VALID:
                print(int((time.monotonic() - t0) * 1000))
                sys.exit(0)
            sys.exit(f"marker validated as {r.outcome}, not VALID")
        except grpc.RpcError:
            time.sleep(0.01)
    sys.exit("marker did not validate within 30 s")
EOF
}

start fresh
sleep 1
RSS0="$(rss_kb)"
log "fresh sessiond pid $PID on $ADDR, RSS ${RSS0} kB"
MARKER="$(client create)"
LOAD=("$BENCH" --target "$ADDR" --mode unary --ops create:1 --count "$SESSIONS"
      --concurrency 256 --attr_bytes "$ATTR_BYTES" --users 100000 --timeout_s 1800 --json)
echo "${LOAD[*]}" >> "$COMMANDS"
log "${LOAD[*]}"
"${LOAD[@]}" > "$WORK/load.json"
sleep 2
RSS1="$(rss_kb)"

# SIGKILL: restart replays whatever the applied state had not caught up with.
kill -9 "$PID"; wait "$PID" 2>/dev/null || true
start after-kill
KILL_LISTEN_MS="$LISTEN_MS"
KILL_VALID_MS=$(( LISTEN_MS + $(client validate "$MARKER") ))
sleep 1
RSS2="$(rss_kb)"

kill -TERM "$PID"; wait "$PID" 2>/dev/null || true
start after-term
TERM_LISTEN_MS="$LISTEN_MS"
TERM_VALID_MS=$(( LISTEN_MS + $(client validate "$MARKER") ))
sleep 1
RSS3="$(rss_kb)"

echo
echo "== machine"
echo "$(nproc) cores: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1); $(uname -sr)"
echo
echo "== commands (in order)"
cat "$COMMANDS"
echo "(marker session created and validated with the generated Python stubs)"
echo
echo "== sessiond's own startup lines"
for n in after-kill after-term; do
  echo "$n: $(grep -E 'sessions loaded|startup' "$WORK/$n.out" | tr '\n' ' ')"
done
echo
"$PY" - "$WORK/load.json" "$SESSIONS" "$RSS0" "$RSS1" "$RSS2" "$RSS3" \
  "$KILL_LISTEN_MS" "$KILL_VALID_MS" "$TERM_LISTEN_MS" "$TERM_VALID_MS" <<'EOF'
import json, sys
run = json.load(open(sys.argv[1]))["runs"][0]
n = int(sys.argv[2])
rss0, rss1, rss2, rss3 = (int(x) * 1024 for x in sys.argv[3:7])
kl, kv, tl, tv = (int(x) for x in sys.argv[7:11])
print("== results")
print(f"created {run['ok_ops']:,} sessions at {run['ops_per_s']:,.0f}/s "
      f"(c=256, errors: {run['errors'] or 'none'})")
print(f"RSS fresh {rss0 / 2**20:,.1f} MiB; after creates {rss1 / 2**20:,.1f} MiB; "
      f"after SIGKILL+restart {rss2 / 2**20:,.1f} MiB; after SIGTERM+restart {rss3 / 2**20:,.1f} MiB")
per = lambda rss: (rss - rss0) / max(1, n)
print(f"resident bytes per session: {per(rss1):,.0f} (created live), "
      f"{per(rss2):,.0f} (loaded after SIGKILL), {per(rss3):,.0f} (loaded after SIGTERM)"
      f"   target <= 450")
print(f"restart after SIGKILL: LISTENING after {kl:,} ms, marker VALID after {kv:,} ms   target <= 2000")
print(f"restart after SIGTERM: LISTENING after {tl:,} ms, marker VALID after {tv:,} ms   target <= 2000")
EOF
