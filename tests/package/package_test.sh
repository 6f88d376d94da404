#!/usr/bin/env bash
# The packages (docs/OPERATIONS.md, "Packages"), built from this build tree
# and used the way an app developer would. Everything goes to a temporary
# directory; nothing is installed on the machine and no root is needed.
#
#   package_test.sh debs <source root> <build dir> <cmake> <cpack>
#     cpack builds sessiond_*.deb and libsessiond-client-dev_*.deb from the
#     build tree (as built: it builds nothing), checks what each holds,
#     extracts both with dpkg-deb -x into a temporary root, and builds
#     tests/package/app there with find_package(sessiond) alone; the app
#     validates a token against a closed port and must get UNAVAILABLE.
#   package_test.sh client-only <source root> <cmake> [--build]
#     configures the source with -DSESSIOND_CLIENT_ONLY=ON while the
#     server's dependencies are disabled for find_package (a REQUIRED one
#     would fail), and with --build builds the client library.
set -euo pipefail
MODE="$1"
OUT="$(mktemp -d /tmp/sessiond-package-XXXXXX)"
trap 'rm -rf "$OUT"' EXIT

fail() {
  echo "package_test: $*" >&2
  exit 1
}
# expect <file> <substring>
expect() {
  grep -qF -- "$2" "$1" || { cat "$1" >&2; fail "'$2' missing from $(basename "$1")"; }
}
# run <log> <command...>: the command's output goes to <log>, shown if it fails.
run() {
  local log="$1"
  shift
  "$@" > "$log" 2>&1 || { cat "$log" >&2; fail "failed: $*"; }
}
# one <glob>: the one file that matches.
one() {
  local matches=($1)
  [ "${#matches[@]}" -eq 1 ] && [ -f "${matches[0]}" ] || fail "not one file: $1"
  echo "${matches[0]}"
}

debs() {
  local root="$1" build="$2" cmake="$3" cpack="$4"
  # CPACK_CMAKE_GENERATOR=Ninja: cpack then runs no "preinstall" step, which
  # with Makefiles would build every stale target of the shared build tree.
  run "$OUT/cpack.log" "$cpack" --config "$build/CPackConfig.cmake" \
    -B "$OUT/debs" -D CPACK_CMAKE_GENERATOR=Ninja
  local server dev
  server="$(one "$OUT/debs/sessiond_*.deb")"
  dev="$(one "$OUT/debs/libsessiond-client-dev_*.deb")"

  dpkg-deb -c "$server" > "$OUT/server.list"
  for path in ./usr/bin/sessiond ./usr/bin/sessionctl \
      ./usr/lib/systemd/system/sessiond.service ./usr/lib/sysusers.d/sessiond.conf \
      ./usr/share/bash-completion/completions/sessionctl; do
    expect "$OUT/server.list" " $path"
  done
  if grep -qE '[.]a$|/include/' "$OUT/server.list"; then
    fail "client files in $(basename "$server")"
  fi
  dpkg-deb -f "$server" Package Depends > "$OUT/server.control"
  # (RocksDB is not among them: Debian's CMake package links librocksdb.a.)
  for field in "Package: sessiond" "libgrpc++1.51" libprotobuf32 libabsl20220623; do
    expect "$OUT/server.control" "$field"
  done

  dpkg-deb -c "$dev" > "$OUT/dev.list"
  for path in ./usr/include/sessiond/client/session_client.h \
      ./usr/include/sessiond/v1/session.grpc.pb.h ./usr/include/sessiond/v1/session.pb.h \
      ./usr/include/sessiond/third_party/google/rpc/error_details.pb.h \
      ./usr/lib/libsessiond_client.a ./usr/lib/cmake/sessiond/sessiondConfig.cmake \
      ./usr/lib/cmake/sessiond/sessiondConfigVersion.cmake \
      ./usr/share/sessiond/proto/sessiond/v1/session.proto; do
    expect "$OUT/dev.list" " $path"
  done
  if grep -qF ./usr/bin/ "$OUT/dev.list"; then
    fail "binaries in $(basename "$dev")"
  fi
  dpkg-deb -f "$dev" Package Depends > "$OUT/dev.control"
  for field in "Package: libsessiond-client-dev" "libgrpc++-dev" libprotobuf-dev libabsl-dev; do
    expect "$OUT/dev.control" "$field"
  done

  local sysroot="$OUT/root"
  dpkg-deb -x "$server" "$sysroot"
  dpkg-deb -x "$dev" "$sysroot"
  # A daemon linked with jemalloc (SESSIOND_JEMALLOC, the default) depends on
  # its package.
  if readelf -d "$sysroot/usr/bin/sessiond" | grep -q 'libjemalloc'; then
    expect "$OUT/server.control" libjemalloc2
  fi
  expect "$sysroot/usr/lib/systemd/system/sessiond.service" \
    "ExecStart=/usr/bin/sessiond --config /etc/sessiond/sessiond.toml"
  run "$OUT/version.log" "$sysroot/usr/bin/sessiond" --version

  run "$OUT/app-configure.log" "$cmake" -S "$root/tests/package/app" -B "$OUT/app" \
    -DCMAKE_BUILD_TYPE=Release -DCMAKE_PREFIX_PATH="$sysroot/usr"
  expect "$OUT/app-configure.log" "from $sysroot/usr/lib/cmake/sessiond"
  run "$OUT/app-build.log" "$cmake" --build "$OUT/app"
  local port
  port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  run "$OUT/app.log" timeout 60 "$OUT/app/package_app" "$port"
  cat "$OUT/app.log"
}

client_only() {
  local root="$1" cmake="$2" build="${3:-}"
  local disabled=()
  for package in RocksDB GTest benchmark CLI11 spdlog nlohmann_json; do
    disabled+=("-DCMAKE_DISABLE_FIND_PACKAGE_$package=ON")
  done
  run "$OUT/configure.log" "$cmake" -S "$root" -B "$OUT/client-only" \
    -DCMAKE_BUILD_TYPE=Release -DSESSIOND_CLIENT_ONLY=ON "${disabled[@]}"
  if grep -E '^(CPPHTTPLIB_FOUND|SYSTEMD_FOUND|RocksDB_DIR|GTest_DIR|benchmark_DIR|CLI11_DIR|spdlog_DIR)' \
      "$OUT/client-only/CMakeCache.txt"; then
    fail "SESSIOND_CLIENT_ONLY looked for a server dependency"
  fi
  if [ "$build" = --build ]; then
    run "$OUT/build.log" "$cmake" --build "$OUT/client-only" -j2 --target sessiond_client
  fi
}

case "$MODE" in
  debs) debs "$2" "$3" "$4" "$5" ;;
  client-only) client_only "$2" "$3" "${4:-}" ;;
  *) fail "unknown mode $MODE" ;;
esac
echo "package_test $MODE: ok"
