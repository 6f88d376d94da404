#!/usr/bin/env python3
"""Runs clang's thread-safety analysis over sessiond's own sources.

GCC ignores ABSL_GUARDED_BY and friends, so the annotations would be
decoration without this check. It replays each compile command from
compile_commands.json with clang++ -fsyntax-only -Wthread-safety -Werror.

usage: check_thread_safety.py <build dir> <source root> [clang++]
"""
import json
import os
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

CHECKED_DIRS = ("common/", "storage/", "replication/", "server/", "client/")
# GCC-only flags clang rejects or warns about.
DROPPED_FLAGS = {"-fno-fat-lto-objects", "-Wno-maybe-uninitialized"}


def main() -> int:
    build, root = sys.argv[1], os.path.realpath(sys.argv[2])
    clang = sys.argv[3] if len(sys.argv) > 3 else "clang++-14"
    with open(os.path.join(build, "compile_commands.json")) as f:
        commands = json.load(f)
    jobs = []
    for entry in commands:
        source = os.path.realpath(entry["file"])
        rel = os.path.relpath(source, root)
        if not rel.startswith(CHECKED_DIRS) or not rel.endswith(".cc"):
            continue
        args = shlex.split(entry["command"])[1:]
        out = []
        skip = False
        for a in args:
            if skip:
                skip = False
                continue
            if a == "-o":
                skip = True
                continue
            if a == "-c" or a in DROPPED_FLAGS:
                continue
            out.append(a)
        cmd = [clang, "-fsyntax-only", "-Wthread-safety", "-Werror=thread-safety",
               "-Wno-unknown-warning-option", "-Wno-unused-command-line-argument"]
        cmd += [a for a in out if not a.startswith("-Werror") or a == "-Werror=thread-safety"]
        jobs.append((rel, cmd, entry["directory"]))

    def run(job):
        rel, cmd, cwd = job
        r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
        return rel, r.returncode, r.stderr

    failed = 0
    with ThreadPoolExecutor(max_workers=2) as pool:
        for rel, code, err in pool.map(run, jobs):
            if code != 0:
                failed += 1
                print(f"thread-safety: {rel} failed:\n{err}")
    print(f"thread-safety: {len(jobs) - failed} of {len(jobs)} files clean")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
