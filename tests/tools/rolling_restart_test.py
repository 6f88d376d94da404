#!/usr/bin/python3
# Copyright sessiond authors. Licensed under the Apache License 2.0.
"""tools/rolling-restart.sh on a real 3-node cluster, under load.

The cluster is `tools/dev.sh cluster up 3` (SESSIOND_BUILD_DIR: this build,
no rebuild; SESSIOND_CLUSTER_DIR: a temporary folder), the restart command
`tools/dev.sh cluster stop {id} && tools/dev.sh cluster restart {id}` (SIGTERM,
then the same argv again), the script drives it with sessionctl only.

  test_rolling_restart_under_load   a load of creates, each created session
      validated at once and again later (default consistency, any node,
      UNAVAILABLE retried on the next node within a deadline, as the C++
      client library does) runs while the
      script restarts all three nodes: the script exits 0, every node was
      restarted exactly once (the command ran once per id, every pid
      changed), no node was restarted while it led, no validation of an
      acknowledged session answered anything but VALID, and at the end
      every acknowledged session validates VALID on every node
      (LINEARIZABLE on that node).
  test_refuses_and_stops            with node 2 down the script refuses
      (exit 1, naming node 2) and restarts nothing; with a restart command
      that only stops the node it stops part way (exit 3) naming that node,
      and touches no other.

  python3 rolling_restart_test.py --dev-sh <repo>/tools/dev.sh \\
      --script <repo>/tools/rolling-restart.sh --sessionctl <sessionctl> \\
      --build-dir <build> [--consistency LINEARIZABLE]

Bounded: every command has a timeout, the load stops with the script (and
at MAX_CREATES), every retry loop has a deadline; nothing asserts a time.
"""

import argparse
import collections
import json
import os
import random
import re
import shlex
import subprocess
import sys
import threading
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_script_test import (  # noqa: E402
    DevClusterTestCase, pid_alive, watchdog)

ARGS = None
grpc = None
session_pb2 = None
session_pb2_grpc = None

UP_TIMEOUT_S = 120
SCRIPT_TIMEOUT_S = 240  # three nodes, each bounded by --timeout below
NODE_TIMEOUT_S = 60     # the script's --timeout: one node coming back
RPC_TIMEOUT_S = 5
VALIDATE_DEADLINE_S = 20  # retrying UNAVAILABLE on the next node
FINAL_DEADLINE_S = 60
WORKERS = 4
MAX_CREATES = 20000
BATCH = 5000


# What the C++ client library retries a read on (client/session_client.h):
# the store could not answer, never an outcome. CANCELLED counts as
# UNAVAILABLE: this client never cancels, so the server did (gRPC cancels a
# call that races its shutdown).
RETRIED = ()


def load_stubs():
    global grpc, session_pb2, session_pb2_grpc, RETRIED
    sys.path.insert(0, os.path.join(ARGS.build_dir, "python"))
    import grpc as grpc_module  # Debian's python3-grpcio
    from sessiond.v1 import session_pb2 as pb2, session_pb2_grpc as pb2_grpc
    grpc, session_pb2, session_pb2_grpc = grpc_module, pb2, pb2_grpc
    RETRIED = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED,
               grpc.StatusCode.DEADLINE_EXCEEDED,
               grpc.StatusCode.RESOURCE_EXHAUSTED)


class Load:
    """WORKERS threads: create a session on a random node; once it is
    acknowledged, validate it and two earlier ones, each on a random node.
    Records every acknowledged token and every validation that answered
    anything but VALID (or failed for good). Counters are per phase, the
    phase being what the rolling restart is doing (set by the caller)."""

    def __init__(self, endpoints):
        self.endpoints = endpoints
        self.channels = [grpc.insecure_channel(
            a, options=[("grpc.enable_http_proxy", 0)]) for a in endpoints]
        self.stubs = [session_pb2_grpc.SessionServiceStub(c)
                      for c in self.channels]
        self.mu = threading.Lock()
        self.acked = []       # tokens of acknowledged creates
        self.failures = []    # one line per failed validation
        self.counts = collections.Counter()
        self.phase = "before"
        self.phase_counts = collections.defaultdict(collections.Counter)
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.worker, args=(i,),
                                         daemon=True) for i in range(WORKERS)]

    def start(self):
        for t in self.threads:
            t.start()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            # A worker is at most in one create or one validate deadline.
            t.join(timeout=VALIDATE_DEADLINE_S + 2 * RPC_TIMEOUT_S)
            if t.is_alive():
                raise AssertionError("a load worker did not stop")

    def close(self):
        for c in self.channels:
            c.close()

    def count(self, key):
        with self.mu:
            self.counts[key] += 1
            self.phase_counts[self.phase][key] += 1

    def worker(self, index):
        rng = random.Random(index)
        while not self.stop.is_set():
            with self.mu:
                if len(self.acked) >= MAX_CREATES:
                    return
            node = rng.randrange(len(self.stubs))
            try:
                created = self.stubs[node].CreateSession(
                    session_pb2.CreateSessionRequest(
                        user_id="rolling-%d" % index, ttl_ms=3600 * 1000),
                    timeout=RPC_TIMEOUT_S)
            except grpc.RpcError as e:
                # Not acknowledged: it may or may not exist; never checked.
                self.count("create " + e.code().name)
                time.sleep(0.02)
                continue
            with self.mu:
                self.acked.append(created.token)
                earlier = rng.sample(self.acked, min(2, len(self.acked)))
            self.count("create OK")
            for token in [created.token] + earlier:
                self.validate(token, rng)

    def validate(self, token, rng):
        deadline = time.monotonic() + VALIDATE_DEADLINE_S
        node = rng.randrange(len(self.stubs))
        while True:
            try:
                r = self.stubs[node].ValidateSession(
                    session_pb2.ValidateSessionRequest(
                        token=token, consistency=ARGS.consistency),
                    timeout=RPC_TIMEOUT_S)
            except grpc.RpcError as e:
                if e.code() in RETRIED and time.monotonic() < deadline:
                    self.count("validate retried (%s)" % e.code().name)
                    node = (node + 1) % len(self.stubs)
                    time.sleep(0.02)
                    continue
                self.fail("node %s: %s %s" % (
                    self.endpoints[node], e.code().name, e.details()))
                return
            if r.outcome != session_pb2.ValidateSessionResponse.VALID:
                self.fail("node %s answered %s (consistency %s, stale %s, "
                          "staleness_ms %d, applied_index %d)" % (
                              self.endpoints[node],
                              session_pb2.ValidateSessionResponse.Outcome.Name(
                                  r.outcome),
                              session_pb2.Consistency.Name(r.consistency),
                              r.stale, r.staleness_ms, r.applied_index))
                return
            self.count("validate VALID")
            return

    def fail(self, text):
        with self.mu:
            self.failures.append("[%s] %s" % (self.phase, text))
            self.counts["validate FAILED"] += 1
            self.phase_counts[self.phase]["validate FAILED"] += 1


class RollingRestartTest(DevClusterTestCase):
    prefix = "sessiond-rolling-test-"
    down_timeout = 90

    def setUp(self):
        super().setUp()
        self.restarts = os.path.join(self.tmp, "restarts.log")
        self.env.pop("SESSIOND_ENDPOINTS", None)

    def cluster(self, *args):
        result = subprocess.run(
            ["bash", ARGS.dev_sh, "cluster"] + list(args), env=self.env,
            cwd=self.tmp, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, timeout=UP_TIMEOUT_S)
        sys.stderr.write("$ dev.sh cluster %s  (exit %d)\n%s%s" % (
            " ".join(args), result.returncode, result.stdout, result.stderr))
        self.assertEqual(result.returncode, 0, result.stderr)
        return result

    def nodes(self):
        with open(os.path.join(self.cdir, "cluster.json")) as f:
            return {n["id"]: n for n in json.load(f)["nodes"]}

    def restart_command(self, stop_only=False):
        dev = shlex.quote(ARGS.dev_sh)
        cmd = "echo {id} >> %s && bash %s cluster stop {id}" % (
            shlex.quote(self.restarts), dev)
        if not stop_only:
            cmd += " && bash %s cluster restart {id}" % dev
        return cmd

    def start_script(self, endpoints, *extra):
        argv = ["bash", ARGS.script, "--endpoints", ",".join(endpoints),
                "--sessionctl", ARGS.sessionctl,
                "--timeout", str(NODE_TIMEOUT_S)] + list(extra)
        sys.stderr.write("$ %s\n" % shlex.join(argv))
        return subprocess.Popen(argv, env=self.env, cwd=self.tmp,
                                stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

    def run_script(self, endpoints, *extra):
        proc = self.start_script(endpoints, *extra)
        try:
            out, _ = proc.communicate(timeout=SCRIPT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            self.fail("the script did not finish in %d s:\n%s" % (
                SCRIPT_TIMEOUT_S, out))
        sys.stderr.write("%s(exit %d)\n" % (out, proc.returncode))
        return proc.returncode, out

    def restarted_ids(self):
        try:
            with open(self.restarts) as f:
                return [int(line) for line in f.read().split()]
        except FileNotFoundError:
            return []

    def final_check(self, endpoints, tokens):
        """Every token VALID on every node, read LINEARIZABLE there (the
        node has applied everything acknowledged before the call)."""
        Outcome = session_pb2.ValidateSessionResponse
        for address in endpoints:
            channel = grpc.insecure_channel(
                address, options=[("grpc.enable_http_proxy", 0),
                                  ("grpc.max_receive_message_length",
                                   64 * 1024 * 1024)])
            stub = session_pb2_grpc.SessionServiceStub(channel)
            try:
                for start in range(0, len(tokens), BATCH):
                    chunk = tokens[start:start + BATCH]
                    request = session_pb2.BatchValidateSessionsRequest(
                        requests=[session_pb2.ValidateSessionRequest(token=t)
                                  for t in chunk],
                        consistency=session_pb2.LINEARIZABLE)
                    deadline = time.monotonic() + FINAL_DEADLINE_S
                    while True:
                        try:
                            r = stub.BatchValidateSessions(
                                request, timeout=2 * RPC_TIMEOUT_S)
                            break
                        except grpc.RpcError as e:
                            if e.code() != grpc.StatusCode.UNAVAILABLE or \
                                    time.monotonic() >= deadline:
                                raise
                            time.sleep(0.2)
                    self.assertEqual(len(r.responses), len(chunk))
                    bad = collections.Counter(
                        Outcome.Outcome.Name(x.outcome)
                        for x in r.responses if x.outcome != Outcome.VALID)
                    self.assertFalse(bad, "node %s: acknowledged sessions "
                                     "not VALID at the end: %s" % (
                                         address, dict(bad)))
            finally:
                channel.close()

    def test_rolling_restart_under_load(self):
        self.cluster("up", "3")
        before = self.nodes()
        endpoints = [before[i]["client_address"] for i in sorted(before)]

        load = Load(endpoints)
        try:
            load.start()
            # Some acknowledged sessions before anything is restarted
            # (bounded: the load stops by itself at MAX_CREATES).
            deadline = time.monotonic() + 30
            while load.counts["create OK"] < 50:
                self.assertLess(time.monotonic(), deadline,
                                "no load: %s" % dict(load.counts))
                time.sleep(0.1)

            proc = self.start_script(
                endpoints, "--restart-cmd", self.restart_command())
            lines = []
            # The script's progress names the phase the load's counters
            # are filed under: "restart N" from its "node N (...): running"
            # line until its "node N: done".
            deadline = time.monotonic() + SCRIPT_TIMEOUT_S
            reader = threading.Thread(
                target=lambda: lines.extend(self.follow(proc, load)),
                daemon=True)
            reader.start()
            try:
                proc.wait(timeout=max(1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            reader.join(timeout=10)
            load.phase = "after"
            # A little load after the last restart, then stop it.
            mark = load.counts["create OK"]
            deadline = time.monotonic() + 30
            while load.counts["create OK"] < mark + 20 and \
                    time.monotonic() < deadline:
                time.sleep(0.1)
            load.finish()
        finally:
            load.stop.set()
            load.close()

        out = "".join(lines)
        sys.stderr.write("load: %s\n" % dict(load.counts))
        for phase, counts in load.phase_counts.items():
            sys.stderr.write("  %s: %s\n" % (phase, dict(counts)))
        self.assertEqual(proc.returncode, 0, out)
        self.assertIn("done: restarted", out)

        # Every node restarted exactly once, none while it led.
        self.assertEqual(sorted(self.restarted_ids()), [1, 2, 3], out)
        roles = re.findall(r"node (\d+) \((\w+), [^)]*\): running:", out)
        self.assertEqual(sorted(int(i) for i, _ in roles), [1, 2, 3], out)
        self.assertNotIn("leader", [role for _, role in roles], out)
        after = self.nodes()
        for i in (1, 2, 3):
            self.assertNotEqual(after[i]["pid"], before[i]["pid"], i)
            self.assertEqual(after[i]["argv"], before[i]["argv"], i)
            self.assertTrue(pid_alive(after[i]["pid"]), i)

        # Under load the whole time, and no validation failed.
        for i in (1, 2, 3):
            self.assertGreater(
                load.phase_counts["restart %d" % i]["validate VALID"], 0,
                "no validation while node %d restarted" % i)
        stale = sum("stale True" in f for f in load.failures)
        self.assertEqual(
            load.failures, [],
            "%d validation(s) of acknowledged sessions failed, %d of them "
            "answered from a node's own table marked stale (the default "
            "consistency's fallback when no leader confirmed the read):\n%s"
            % (len(load.failures), stale, "\n".join(load.failures[:20])))
        self.assertGreater(load.counts["validate VALID"], 0)

        # Every acknowledged create is on every node.
        self.final_check(endpoints, list(load.acked))

    def follow(self, proc, load):
        """Yields the script's output lines, echoing them, and sets the
        load's phase from them."""
        for line in proc.stdout:
            sys.stderr.write(line)
            m = re.search(r"node (\d+) \([^)]*\): running:", line)
            if m:
                load.phase = "restart %s" % m.group(1)
            m = re.search(r"node (\d+): done", line)
            if m:
                load.phase = "between"
            yield line

    def test_refuses_and_stops(self):
        self.cluster("up", "3")
        before = self.nodes()
        endpoints = [before[i]["client_address"] for i in sorted(before)]

        # One node down: refused before anything is touched.
        self.cluster("stop", "2")
        code, out = self.run_script(endpoints, "--restart-cmd",
                                    self.restart_command())
        self.assertEqual(code, 1, out)
        self.assertIn("REFUSED", out)
        self.assertRegex(out, r"node 2 \(\S+\) is unreachable")
        self.assertEqual(self.restarted_ids(), [])
        for i in (1, 3):
            self.assertEqual(self.nodes()[i]["pid"], before[i]["pid"])

        # Healthy again; a restart command that only stops the node: the
        # script stops at the first node (exit 3), names it, and restarts
        # no other.
        self.cluster("restart", "2")
        pids = {i: n["pid"] for i, n in self.nodes().items()}
        code, out = self.run_script(endpoints, "--timeout", "5",
                                    "--restart-cmd",
                                    self.restart_command(stop_only=True))
        self.assertEqual(code, 3, out)
        ids = self.restarted_ids()
        self.assertEqual(len(ids), 1, out)
        self.assertIn("STOPPED: node %d did not come back" % ids[0], out)
        self.assertIn("--nodes", out)  # how to go on
        for i in (1, 2, 3):
            if i != ids[0]:
                self.assertEqual(self.nodes()[i]["pid"], pids[i], i)
                self.assertTrue(pid_alive(pids[i]), i)


def main():
    global ARGS
    if len(sys.argv) == 4 and sys.argv[1] == "--watchdog":
        watchdog(int(sys.argv[2]), sys.argv[3])
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--dev-sh", required=True)
    parser.add_argument("--script", required=True)
    parser.add_argument("--sessionctl", required=True)
    parser.add_argument("--build-dir", required=True)
    parser.add_argument("--consistency", default="CONSISTENCY_DEFAULT",
                        help="of the load's validations (what ctest runs: "
                        "CONSISTENCY_DEFAULT; LINEARIZABLE to compare)")
    ARGS, rest = parser.parse_known_args()
    load_stubs()
    ARGS.consistency = session_pb2.Consistency.Value(ARGS.consistency)
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
