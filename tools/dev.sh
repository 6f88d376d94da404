#!/usr/bin/env bash
# The two commands of the README's quick start, and a few helpers.
#
#   tools/dev.sh run     install missing Debian packages, build Release, start
#                        one sessiond on 127.0.0.1 with its data under .data/
#   tools/dev.sh test    install missing packages, build Release (warnings
#                        as errors), run the whole suite
#   tools/dev.sh deps    only install missing packages
#   tools/dev.sh build   only build (BUILD_TYPE=Release|RelWithDebInfo|Debug)
#   tools/dev.sh cluster up [N] [-- FLAGS]   a local N-node cluster (default 3)
#                        on free 127.0.0.1 ports, data and logs in .cluster/;
#                        then: cluster status [--json] | kill ID | stop ID |
#                        restart ID | down [--wipe]  (see tools/cluster.py)
set -euo pipefail
# A failed build inside $(build ...) must stop the script, not run ctest on
# a half-built tree (bash does not pass errexit into command substitutions).
shopt -s inherit_errexit

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
JOBS="${JOBS:-2}"

PACKAGES=(
  build-essential cmake pkg-config git clang-14
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev librocksdb-dev libssl-dev libjemalloc-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libcli11-dev nlohmann-json3-dev libcpp-httplib-dev libspdlog-dev
  python3 python3-grpcio python3-protobuf
  libsystemd-dev
  jq
  redis-server redis-tools
  faketime libfaketime
)

log() { printf '\033[1m[dev]\033[0m %s\n' "$*" >&2; }

deps() {
  local missing=()
  for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$p")
    fi
  done
  if [ "${#missing[@]}" -eq 0 ]; then
    log "all Debian packages present"
    return 0
  fi
  log "installing: ${missing[*]}"
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# build [type] [target...]: configures and builds; prints the build dir last.
build() {
  local type="${1:-${BUILD_TYPE:-RelWithDebInfo}}"
  shift || true
  local targets=()
  for t in "$@"; do targets+=(--target "$t"); done
  local dir="$ROOT/build"
  if [ "$type" = "Release" ]; then dir="$ROOT/build-release"; fi
  log "building $type in $dir"
  # SESSIOND_CMAKE_ARGS: extra configure flags (the test command adds
  # -DSESSIOND_WERROR=ON); an unset option keeps what the tree has.
  # shellcheck disable=SC2086
  cmake -S "$ROOT" -B "$dir" -DCMAKE_BUILD_TYPE="$type" ${SESSIOND_CMAKE_ARGS:-} >&2
  cmake --build "$dir" -j "$JOBS" "${targets[@]}" >&2
  echo "$dir"
}

cmd_run() {
  deps
  local dir
  dir="$(build Release sessiond sessiond-bench sessiond_python_stubs | tail -n 1)"
  local addr="${SESSIOND_ADDR:-127.0.0.1:50051}"
  local data="${SESSIOND_DATA_DIR:-$ROOT/.data/node1}"
  mkdir -p "$data"
  log "sessiond listening on $addr, data in $data"
  log "try:  $dir/tools/sessiond-bench --target $addr --mode unary --ops create:1,validate:4 --count 1000"
  log "  or: PYTHONPATH=$dir/python /usr/bin/python3  (stubs: sessiond.v1.session_pb2[_grpc]; see README)"
  exec "$dir/server/sessiond" --listen "$addr" --data_dir "$data" "$@"
}

cmd_test() {
  deps
  local dir
  # The tree the benchmarks and `run` use (Release), so CI builds exactly
  # what users run, with warnings as errors.
  dir="$(SESSIOND_CMAKE_ARGS="-DSESSIOND_WERROR=ON" build Release | tail -n 1)"
  cd "$dir"
  ctest --output-on-failure -j "$JOBS" --timeout 900 "$@"
}

# Everything but the build lives in tools/cluster.py (JSON, ports, gRPC
# ClusterStatus); it calls `dev.sh deps` and `dev.sh build` back for `up`.
# SESSIOND_BUILD_DIR: use that build as it is; SESSIOND_CLUSTER_DIR: the
# cluster's folder instead of .cluster/.
cmd_cluster() {
  exec /usr/bin/python3 "$ROOT/tools/cluster.py" "$@"
}

case "${1:-}" in
  run) shift; cmd_run "$@" ;;
  test) shift; cmd_test "$@" ;;
  deps) deps ;;
  build) shift; build "$@" ;;
  cluster) shift; cmd_cluster "$@" ;;
  *) sed -n '2,12p' "$0"; exit 2 ;;
esac
