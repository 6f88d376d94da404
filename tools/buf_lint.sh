#!/usr/bin/env bash
# Lints the proto set with buf (proto/buf.yaml: STANDARD rules, google/
# excluded, each exception explained there; docs/API.md, "Proto style and buf
# lint"). The ctest proto_buf_lint runs it (label lint).
#
#   tools/buf_lint.sh [--cache-dir DIR]               buf lint proto/
#   tools/buf_lint.sh [--cache-dir DIR] --breaking REF
#                     buf breaking proto/ against git REF (any commit-ish:
#                     main, HEAD~1, a tag): wire and generated-source
#                     compatibility (FILE rules). Not run by ctest.
#
# buf is not a Debian package. The script uses `buf` from PATH when it is at
# least 1.32 (buf.yaml is v2), else npm's @bufbuild/buf at the pinned version,
# installed once into DIR (default $SESSIOND_BUF_CACHE, else build/.buf-npm;
# ctest passes <build dir>/.buf-npm), with a throwaway npm cache (nothing
# goes to ~/.npm).
#
# Exit: 0 clean; 1 findings (or buf could not read the set); 2 bad usage;
# 77 buf cannot be had (no npm, or the registry is unreachable), after saying
# why.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUF_VERSION=1.75.0
BUF_MIN_VERSION=1.32.0  # first release reading buf.yaml v2
NPM_TIMEOUT_S=180       # the whole install, well under ctest's 300 s

cache_dir="${SESSIOND_BUF_CACHE:-$ROOT/build/.buf-npm}"
breaking_ref=""
while [ $# -gt 0 ]; do
  case "$1" in
    --cache-dir) [ $# -ge 2 ] || { echo "buf_lint: --cache-dir needs a value" >&2; exit 2; }
      cache_dir="$2"; shift 2 ;;
    --breaking) [ $# -ge 2 ] || { echo "buf_lint: --breaking needs a git ref" >&2; exit 2; }
      breaking_ref="$2"; shift 2 ;;
    -h|--help) sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "buf_lint: unknown argument: $1" >&2; exit 2 ;;
  esac
done

skip() { echo "buf_lint: SKIPPED: $*" >&2; exit 77; }

# version_at_least <have> <want>
version_at_least() {
  [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]
}

# Prints a usable buf's path, or nothing.
find_buf() {
  local path_buf have
  path_buf="$(command -v buf 2>/dev/null || true)"
  if [ -n "$path_buf" ]; then
    have="$("$path_buf" --version 2>/dev/null || true)"
    if [ -n "$have" ] && version_at_least "$have" "$BUF_MIN_VERSION"; then
      echo "$path_buf"
      return
    fi
    echo "buf_lint: ignoring $path_buf (version '${have}', need >= $BUF_MIN_VERSION)" >&2
  fi
  local cached="$cache_dir/node_modules/.bin/buf"
  if [ -x "$cached" ] && [ "$("$cached" --version 2>/dev/null)" = "$BUF_VERSION" ]; then
    echo "$cached"
  fi
}

# Installs @bufbuild/buf@BUF_VERSION into cache_dir (through a temporary
# folder, so an interrupted install leaves nothing half-made behind).
install_buf() {
  command -v npm >/dev/null 2>&1 || skip "buf is not on PATH and npm is not installed (apt-get install npm, or put buf >= $BUF_MIN_VERSION on PATH)"
  mkdir -p "$(dirname "$cache_dir")" || skip "cannot create $(dirname "$cache_dir")"
  local tmp="$cache_dir.tmp.$$" log
  rm -rf "$tmp"
  mkdir -p "$tmp" || skip "cannot create $tmp"
  echo "buf_lint: installing @bufbuild/buf@$BUF_VERSION into $cache_dir" >&2
  # Bounded: npm's own defaults retry an unreachable registry for minutes.
  if ! log="$(timeout "$NPM_TIMEOUT_S" npm install --prefix "$tmp" --cache "$tmp/.npm-cache" \
      --no-audit --no-fund --no-save --no-package-lock --loglevel=error \
      --fetch-timeout=30000 --fetch-retries=1 --fetch-retry-maxtimeout=10000 \
      "@bufbuild/buf@$BUF_VERSION" 2>&1)"; then
    rm -rf "$tmp"
    printf '%s\n' "$log" | grep -v -e '^npm error  *at ' -e 'complete log' | head -n 6 >&2
    skip "npm could not install @bufbuild/buf@$BUF_VERSION (registry unreachable?)"
  fi
  rm -rf "$tmp/.npm-cache"
  local have
  have="$("$tmp/node_modules/.bin/buf" --version 2>/dev/null || true)"
  if [ "$have" != "$BUF_VERSION" ]; then
    rm -rf "$tmp"
    skip "the installed buf does not run here (got '${have}'; no binary for $(uname -sm)?)"
  fi
  rm -rf "$cache_dir"
  mv "$tmp" "$cache_dir" || { rm -rf "$tmp"; skip "cannot move the install to $cache_dir"; }
}

buf="$(find_buf)"
if [ -z "$buf" ]; then
  install_buf
  buf="$cache_dir/node_modules/.bin/buf"
fi

cd "$ROOT" || exit 2
if [ -n "$breaking_ref" ]; then
  # Resolved here, so HEAD means this worktree's HEAD; buf clones from the
  # repository's common git dir.
  sha="$(git rev-parse --verify --quiet "${breaking_ref}^{commit}")" ||
    { echo "buf_lint: not a commit: $breaking_ref" >&2; exit 2; }
  git_dir="$(git rev-parse --path-format=absolute --git-common-dir)" || exit 2
  echo "buf_lint: buf $("$buf" --version) breaking proto/ against $breaking_ref ($sha)" >&2
  "$buf" breaking proto --against "$git_dir#ref=$sha,subdir=proto"
else
  echo "buf_lint: buf $("$buf" --version) lint proto/" >&2
  "$buf" lint proto
fi
rc=$?
case "$rc" in
  0) echo "buf_lint: clean" >&2; exit 0 ;;
  100)
    if [ -n "$breaking_ref" ]; then
      echo "buf_lint: breaking changes above, against $breaking_ref" >&2
    else
      echo "buf_lint: findings above (proto/buf.yaml lists the accepted exceptions)" >&2
    fi
    exit 1 ;;
  *) echo "buf_lint: buf failed (exit $rc)" >&2; exit 1 ;;
esac
