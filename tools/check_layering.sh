#!/usr/bin/env bash
# Fails when an #include crosses a layer boundary the wrong way, or when a
# *_test.cc is not registered in any CMakeLists.txt (leveldb's crash test
# silently fell out of its build; ours cannot).
set -u
root="${1:-$(cd "$(dirname "$0")/.." && pwd)}"
cd "$root" || exit 2
fail=0

forbid() {  # forbid <folder> <regex> <why>
  local dir="$1" pattern="$2" why="$3" hits
  [ -d "$dir" ] || return 0
  hits=$(grep -rnE --include='*.h' --include='*.cc' "$pattern" "$dir" || true)
  if [ -n "$hits" ]; then
    echo "layering: $why"
    echo "$hits" | sed 's/^/  /'
    fail=1
  fi
}

forbid storage '#include[[:space:]]+"server/' "storage/ must not include server/"
forbid replication '#include[[:space:]]+"server/' "replication/ must not include server/"
forbid replication '#include[[:space:]]+"storage/' "replication/ uses storage only through the interfaces it declares"
forbid storage '#include[[:space:]]+"replication/(node_driver|core/raft_core)' "storage/ may use only replication's interfaces"
forbid common '#include[[:space:]]+"(storage|replication|server|client|proto)/' "common/ is a leaf"
forbid client '#include[[:space:]]+"(storage|replication|server|common)/' "client/ depends on proto/ alone"
forbid replication/core '#include[[:space:]]+<(rocksdb/|grpcpp/|grpc/|thread>|mutex>|shared_mutex>|condition_variable>|future>|random>)' "replication/core has no I/O, threads or RNG of its own"
forbid replication/core 'std::chrono::(system_clock|steady_clock|high_resolution_clock)|absl::Now\(|time\(nullptr\)' "replication/core has no clock: time comes in as Tick()"
forbid replication/core '#include[[:space:]]+"absl/synchronization/' "replication/core has no locks"

# Every test source must be registered in a CMakeLists.txt.
while IFS= read -r test; do
  name=$(basename "$test")
  if ! grep -rqs --include=CMakeLists.txt -F "$name" .; then
    echo "layering: $test is not registered in any CMakeLists.txt"
    fail=1
  fi
done < <(find . -path ./build -prune -o -path './build-*' -prune -o -name '*_test.cc' -print)

if [ "$fail" -ne 0 ]; then exit 1; fi
echo "layering: ok"
