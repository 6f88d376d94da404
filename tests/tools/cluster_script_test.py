#!/usr/bin/python3
# Copyright sessiond authors. Licensed under the Apache License 2.0.
"""`tools/dev.sh cluster` end to end, on the real script and binary.

Runs the script as a developer would (from another working directory), with
SESSIOND_BUILD_DIR pointing at this build tree (no rebuild) and
SESSIOND_CLUSTER_DIR at a temporary folder:

  up 3 -- --sweep_interval_ms 500   one leader, 3 processes alive, cluster.json complete
  up                     refused while the cluster is up
  kill <leader>          status shows it dead, a new leader within a bound;
                         sessiond-bench --mode client over all 3 addresses works
  restart <leader>       status shows 3 alive and reachable
  down                   every process gone, data kept
  down --wipe            the folder gone

  python3 cluster_script_test.py --dev-sh <repo>/tools/dev.sh --build-dir <build>

The nodes run in their own session, so a test killed by ctest's timeout
would leave them running: a watchdog process (this file with --watchdog)
SIGKILLs them and deletes the folder when the test process disappears.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

ARGS = None
COMMAND_TIMEOUT_S = 90
NEW_LEADER_TIMEOUT_S = 20


def pid_alive(pid):
    """Running and not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def kill_nodes(cdir):
    """SIGKILLs every node of cdir/cluster.json still running its argv."""
    try:
        with open(os.path.join(cdir, "cluster.json")) as f:
            nodes = json.load(f)["nodes"]
    except (OSError, ValueError):
        return
    for node in nodes:
        pid = node.get("pid")
        if not pid or not pid_alive(pid):
            continue
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                args = f.read().decode("utf-8", "replace").split("\0")[:-1]
            if args == node["argv"]:
                os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def watchdog(parent, tmp):
    """Waits for `parent` to exit, then removes what its test left."""
    while pid_alive(parent):
        time.sleep(0.5)
    kill_nodes(os.path.join(tmp, "cluster"))
    shutil.rmtree(tmp, ignore_errors=True)


class DevClusterTestCase(unittest.TestCase):
    """A temp dir for a `tools/dev.sh cluster`, and a watchdog: whatever
    happens, no node outlives the test. The test's module has ARGS
    (build_dir, dev_sh) and runs watchdog() for `--watchdog PID DIR`."""

    prefix = "sessiond-cluster-test-"
    down_timeout = 60

    def setUp(self):
        module = sys.modules[type(self).__module__]
        self.args = module.ARGS
        self.tmp = tempfile.mkdtemp(prefix=self.prefix, dir="/tmp")
        self.cdir = os.path.join(self.tmp, "cluster")
        self.env = dict(os.environ, SESSIOND_BUILD_DIR=self.args.build_dir,
                        SESSIOND_CLUSTER_DIR=self.cdir)
        self.watchdog = subprocess.Popen(
            [sys.executable, os.path.abspath(module.__file__), "--watchdog",
             str(os.getpid()), self.tmp],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            start_new_session=True)

    def tearDown(self):
        if os.path.exists(os.path.join(self.cdir, "cluster.json")):
            subprocess.run(["bash", self.args.dev_sh, "cluster", "down"],
                           env=self.env, cwd=self.tmp,
                           timeout=self.down_timeout,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            kill_nodes(self.cdir)
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.watchdog.kill()
        self.watchdog.wait()


class ClusterScriptTest(DevClusterTestCase):

    def run_script(self, *args, ok=True):
        started = time.monotonic()
        result = subprocess.run(
            ["bash", ARGS.dev_sh, "cluster"] + list(args), env=self.env,
            cwd=self.tmp, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, timeout=COMMAND_TIMEOUT_S)
        sys.stderr.write("$ dev.sh cluster %s  (exit %d, %.1f s)\n%s%s" % (
            " ".join(args), result.returncode, time.monotonic() - started,
            result.stdout, result.stderr))
        if ok:
            self.assertEqual(result.returncode, 0, result.stderr)
        return result

    def status(self):
        return json.loads(self.run_script("status", "--json").stdout)

    def cluster_json(self):
        with open(os.path.join(self.cdir, "cluster.json")) as f:
            return json.load(f)

    def leaders(self, view):
        return [n["id"] for n in view["nodes"] if n["role"] == "leader"]

    def test_up_kill_restart_down(self):
        # up: a table with every node, and one leader.
        up = self.run_script("up", "3", "--", "--sweep_interval_ms", "500")
        for line in ("ID", "CLIENT", "PEER", "PID", "ROLE", "leader"):
            self.assertIn(line, up.stdout)
        self.assertIn("client addresses: ", up.stdout)

        cluster = self.cluster_json()
        self.assertEqual([n["id"] for n in cluster["nodes"]], [1, 2, 3])
        ports = set()
        for node in cluster["nodes"]:
            for key in ("client_address", "peer_address", "pid", "data_dir",
                        "log", "argv"):
                self.assertIn(key, node)
            ports.add(node["client_address"])
            ports.add(node["peer_address"])
            self.assertTrue(os.path.isabs(node["argv"][0]), node["argv"])
            self.assertTrue(os.path.isabs(node["data_dir"]))
            self.assertTrue(node["data_dir"].startswith(self.cdir))
            self.assertEqual(node["argv"][-2:], ["--sweep_interval_ms", "500"])
            self.assertTrue(pid_alive(node["pid"]))
            self.assertTrue(os.path.getsize(node["log"]) > 0)
            # Detached: a session of its own (setsid).
            self.assertEqual(os.getsid(node["pid"]), node["pid"])
        self.assertEqual(len(ports), 6)  # all distinct

        view = self.status()
        self.assertEqual(len(view["nodes"]), 3)
        self.assertTrue(all(n["alive"] for n in view["nodes"]), view)
        self.assertEqual(len(self.leaders(view)), 1, view)
        leader = self.leaders(view)[0]
        self.assertEqual(view["leader"], leader)

        # A second `up` is refused while this one runs.
        again = self.run_script("up", ok=False)
        self.assertNotEqual(again.returncode, 0)
        self.assertIn("already up", again.stderr)

        # kill the leader: it shows dead, another node leads.
        self.run_script("kill", str(leader))
        deadline = time.monotonic() + NEW_LEADER_TIMEOUT_S
        while True:
            view = self.status()
            dead = [n for n in view["nodes"] if n["id"] == leader][0]
            self.assertFalse(dead["alive"], view)
            new = [i for i in self.leaders(view) if i != leader]
            if len(new) == 1:
                break
            self.assertLess(time.monotonic(), deadline,
                            "no new leader %d s after the kill: %s" % (
                                NEW_LEADER_TIMEOUT_S, view))
            time.sleep(0.3)
        self.assertEqual(view["leader"], new[0])
        self.assertIn(dead["role"], ("unreachable", None))

        # A client given every address, the dead one too, still writes
        # and reads (the README's next step after a kill).
        addresses = ",".join(n["client_address"]
                             for n in self.cluster_json()["nodes"])
        bench = subprocess.run(
            [os.path.join(self.args.build_dir, "tools", "sessiond-bench"),
             "--targets", addresses, "--mode", "client",
             "--ops", "create:1,validate:1", "--count", "20"],
            capture_output=True, text=True, timeout=60)
        self.assertEqual(bench.returncode, 0, bench.stdout + bench.stderr)
        self.assertIn("errors: none", bench.stdout)

        # restart it: same argv, 3 alive, all answering.
        before = [n for n in self.cluster_json()["nodes"] if n["id"] == leader][0]
        self.run_script("restart", str(leader))
        after = [n for n in self.cluster_json()["nodes"] if n["id"] == leader][0]
        self.assertEqual(after["argv"], before["argv"])
        self.assertNotEqual(after["pid"], before["pid"])
        deadline = time.monotonic() + NEW_LEADER_TIMEOUT_S
        while True:
            view = self.status()
            self.assertTrue(all(n["alive"] for n in view["nodes"]), view)
            if all(n["reachable"] for n in view["nodes"]) and \
                    len(self.leaders(view)) == 1:
                break
            self.assertLess(time.monotonic(), deadline, view)
            time.sleep(0.3)

        # The table form reads too.
        table = self.run_script("status").stdout
        self.assertEqual(table.count("alive"), 3, table)

        # down: every process gone, data kept; down --wipe: folder gone.
        pids = [n["pid"] for n in self.cluster_json()["nodes"]]
        self.run_script("down")
        self.assertFalse(any(pid_alive(p) for p in pids), pids)
        self.assertTrue(os.path.isdir(os.path.join(self.cdir, "data")))
        view = self.status()
        self.assertFalse(any(n["alive"] for n in view["nodes"]), view)
        self.run_script("down", "--wipe")
        self.assertFalse(os.path.exists(self.cdir))

    def test_benchmarks_start_nodes_in_the_callers_session(self):
        # SESSIOND_CLUSTER_SESSION=caller (tools/bench_lib.sh): the node
        # shares this process's session, so the scheduler's autogroup, and
        # has a process group of its own, so a Ctrl-C does not reach it.
        self.env["SESSIOND_CLUSTER_SESSION"] = "sideways"
        refused = self.run_script("up", "1", ok=False)
        self.assertNotEqual(refused.returncode, 0)
        self.assertIn("SESSIOND_CLUSTER_SESSION=sideways: expected own or "
                      "caller", refused.stderr)
        shutil.rmtree(self.cdir, ignore_errors=True)

        self.env["SESSIOND_CLUSTER_SESSION"] = "caller"
        self.run_script("up", "1")
        node = self.cluster_json()["nodes"][0]
        self.assertEqual(os.getsid(node["pid"]), os.getsid(0))
        self.assertEqual(os.getpgid(node["pid"]), node["pid"])
        self.run_script("down", "--wipe")
        self.assertFalse(pid_alive(node["pid"]))

    def test_up_tls_is_mutual_tls_with_roles(self):
        # A mutual-TLS cluster: status (over TLS as the operator) sees a
        # leader; a plaintext client gets nothing; the reader's certificate
        # may validate but not create.
        up = self.run_script("up", "3", "--tls")
        self.assertIn("with mutual TLS", up.stderr)
        self.assertIn("--tls-cert", up.stdout)
        view = self.status()
        self.assertEqual(len(self.leaders(view)), 1, view)
        tls = self.cluster_json()["tls"]
        for name in ("ca.pem", "node-1.pem", "operator.pem", "reader.pem",
                     "roles.conf"):
            self.assertTrue(os.path.exists(os.path.join(tls, name)), name)
        sys.path.insert(0, os.path.join(ARGS.build_dir, "python"))
        import grpc
        from sessiond.v1 import session_pb2, session_pb2_grpc
        address = self.cluster_json()["nodes"][0]["client_address"]
        options = [("grpc.enable_http_proxy", 0)]
        plain = grpc.insecure_channel(address, options=options)
        with self.assertRaises(grpc.RpcError) as refused:
            session_pb2_grpc.SessionServiceStub(plain).ValidateSession(
                session_pb2.ValidateSessionRequest(token=b"x"), timeout=5)
        self.assertEqual(refused.exception.code(),
                         grpc.StatusCode.UNAVAILABLE)

        def read(name):
            with open(os.path.join(tls, name), "rb") as f:
                return f.read()
        reader = grpc.secure_channel(address, grpc.ssl_channel_credentials(
            read("ca.pem"), read("reader-key.pem"), read("reader.pem")),
            options=options)
        stub = session_pb2_grpc.SessionServiceStub(reader)
        answer = stub.ValidateSession(
            session_pb2.ValidateSessionRequest(token=b"x"), timeout=10)
        self.assertEqual(answer.outcome,
                         session_pb2.ValidateSessionResponse.UNKNOWN)
        with self.assertRaises(grpc.RpcError) as denied:
            stub.CreateSession(session_pb2.CreateSessionRequest(user_id="u"),
                               timeout=10)
        self.assertEqual(denied.exception.code(),
                         grpc.StatusCode.PERMISSION_DENIED)
        self.run_script("down", "--wipe")



def main():
    global ARGS
    if len(sys.argv) == 4 and sys.argv[1] == "--watchdog":
        watchdog(int(sys.argv[2]), sys.argv[3])
        return
    parser = argparse.ArgumentParser()
    parser.add_argument("--dev-sh", required=True)
    parser.add_argument("--build-dir", required=True)
    ARGS, rest = parser.parse_known_args()
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
