#!/usr/bin/env bash
# Coverage-guided fuzzing of one decoder with libFuzzer and AddressSanitizer
# (clang-14). The ordinary build replays the same targets on their corpus in
# ctest (label fuzz); this is the longer run, on demand.
#
#   tools/fuzz.sh NAME SECONDS     e.g. tools/fuzz.sh jwt 600
#   tools/fuzz.sh --list
#
# Builds build-fuzz/ (clang, -DSESSIOND_FUZZ=ON: every source with
# -fsanitize=fuzzer-no-link,address), then runs fuzz_NAME on a copy of
# tests/fuzz/corpus/NAME (libFuzzer adds what it finds there, in
# build-fuzz/corpus/NAME, not in the checked-in corpus). A crash leaves
# crash-* in build-fuzz/; reproduce it with the ordinary build:
#   build-release/tests/fuzz/fuzz_NAME build-fuzz/crash-...
# then fix it and add the file to tests/fuzz/corpus/NAME/ (a regression
# test from then on).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="$ROOT/build-fuzz"
TARGETS=$(sed -n 's/^sessiond_fuzz(\([a-z_]*\) .*/\1/p' "$ROOT/tests/fuzz/CMakeLists.txt")

if [ "${1:-}" = "--list" ]; then echo "$TARGETS"; exit 0; fi
if [ $# -ne 2 ] || ! grep -qx "$1" <<<"$TARGETS" || ! [[ "$2" =~ ^[0-9]+$ ]]; then
  sed -n '2,17p' "$0" >&2
  echo "targets: $(echo $TARGETS)" >&2
  exit 2
fi
NAME="$1"
SECONDS_TO_RUN="$2"

"$ROOT/tools/dev.sh" deps
if ! dpkg-query -W -f='${Status}' libclang-rt-14-dev 2>/dev/null | grep -q "install ok installed"; then
  sudo=(); [ "$(id -u)" -ne 0 ] && sudo=(sudo)
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libclang-rt-14-dev
fi
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER=clang-14 -DCMAKE_CXX_COMPILER=clang++-14 \
  -DSESSIOND_FUZZ=ON -DSESSIOND_BUILD_BENCHMARKS=OFF >/dev/null
cmake --build "$BUILD" -j "${JOBS:-2}" --target "fuzz_$NAME"
mkdir -p "$BUILD/corpus/$NAME"
cp -n "$ROOT/tests/fuzz/corpus/$NAME/"* "$BUILD/corpus/$NAME/" 2>/dev/null || true
cd "$BUILD"
exec "./tests/fuzz/fuzz_$NAME" -max_total_time="$SECONDS_TO_RUN" \
  -print_final_stats=1 "corpus/$NAME"
