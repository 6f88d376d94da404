# Shell pieces the tools/bench_*.sh scripts share; sourced, never run.
#
# The caller sets ROOT, BUILD_DIR and NAME (its name in messages, e.g.
# bench_cluster), and defines log(). Functions that start processes add
# their pids to the caller's PIDS array and record the command in
# $COMMANDS when that is set.

PY=/usr/bin/python3

# Cluster nodes in the caller's session, so that they, the load generator,
# etcd and Redis share the CPU thread by thread (tools/cluster.py; with a
# session per node, each node got as much CPU as the generator's whole
# session, and the generator starved: docs/BENCHMARKS.md). `own` in the
# environment measures that way again.
export SESSIOND_CLUSTER_SESSION="${SESSIOND_CLUSTER_SESSION:-caller}"

# bench_build TARGET...: configures BUILD_DIR as Release and builds TARGETs.
bench_build() {
  local targets=()
  for t in "$@"; do targets+=(--target "$t"); done
  log "building Release in $BUILD_DIR"
  cmake -S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$BUILD_DIR" -j "${JOBS:-2}" "${targets[@]}" >/dev/null
}

# bench_require FILE...: exits 2 naming the first one missing.
bench_require() {
  for f in "$@"; do
    [ -e "$f" ] || { echo "$NAME: $f missing (build it, or --build-dir)" >&2; exit 2; }
  done
}

# bench_require_python_grpc: exits 2 without Debian's grpcio and protobuf.
bench_require_python_grpc() {
  "$PY" -c 'import grpc, google.protobuf' 2>/dev/null || {
    echo "$NAME: python3-grpcio/python3-protobuf missing (sudo apt-get install python3-grpcio python3-protobuf)" >&2
    exit 2
  }
}

# bench_free_ports N: N distinct free ports on 127.0.0.1, one per line.
bench_free_ports() {
  "$PY" - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
for s in socks:
    print(s.getsockname()[1])
EOF
}

# bench_stop PID...: SIGTERM, up to 10 s to exit, then SIGKILL.
bench_stop() {
  for pid in "$@"; do kill "$pid" 2>/dev/null || true; done
  for pid in "$@"; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
}

# bench_wait_listening PID OUT ERR: prints the address of sessiond's
# LISTENING line in OUT once it appears (30 s at most); exits 1, showing
# ERR, when the process ends first.
bench_wait_listening() {
  local pid="$1" out="$2" err="$3" addr=""
  for _ in $(seq 1 300); do
    addr="$(sed -n 's/^LISTENING \([^ ]*\).*/\1/p' "$out" | head -n 1)"
    [ -n "$addr" ] && { echo "$addr"; return 0; }
    kill -0 "$pid" 2>/dev/null || { cat "$err" >&2; echo "$NAME: sessiond exited" >&2; exit 1; }
    sleep 0.1
  done
  echo "$NAME: sessiond did not print LISTENING in 30 s" >&2
  exit 1
}

# bench_start_redis DIR_NAME [redis-server args...]: a redis-server on a
# free port, data in $WORK/DIR_NAME, log in $WORK/DIR_NAME.log; sets RPORT
# and RPID once it answers PING (10 s at most, else exits 1).
bench_start_redis() {
  local name="$1"; shift
  RPORT="$(bench_free_ports 1)"
  mkdir -p "$WORK/$name"
  [ -n "${COMMANDS:-}" ] && echo "redis-server --port $RPORT --bind 127.0.0.1 --dir $WORK/$name --save '' $*" >> "$COMMANDS"
  redis-server --port "$RPORT" --bind 127.0.0.1 --dir "$WORK/$name" --save '' \
    --daemonize no "$@" > "$WORK/$name.log" 2>&1 &
  RPID=$!
  PIDS+=("$RPID")
  for _ in $(seq 1 100); do
    [ "$(redis-cli -p "$RPORT" ping 2>/dev/null)" = "PONG" ] && return 0
    sleep 0.1
  done
  echo "$NAME: redis-server did not answer PING" >&2
  exit 1
}
