#!/usr/bin/python3
# Copyright sessiond authors. Licensed under the Apache License 2.0.
"""A local N-node sessiond cluster on 127.0.0.1, for development.

Run through `tools/dev.sh cluster ...` (which builds first when needed):

  up [N] [-- FLAGS...]   build (Release) if needed, start N nodes (default 3)
                         on free 127.0.0.1 ports, wait for a leader, print
                         the nodes; FLAGS go to every node. A cluster left
                         by `down` (data kept) is started again as it was.
  status [--json]        the nodes, whether each process is alive, and the
                         cluster as ClusterStatus reports it
  kill ID                SIGKILL one node
  stop ID                SIGTERM one node and wait until it exits
  restart ID             start a stopped or killed node again (same argv,
                         ports and data dir) and wait until it serves
  down [--wipe]          SIGTERM every node, SIGKILL what is left after
                         30 s; --wipe also deletes the data, logs and
                         cluster.json

Environment:
  SESSIOND_CLUSTER_DIR   where data, logs and cluster.json live
                         (default: <repo>/.cluster)
  SESSIOND_BUILD_DIR     use this build dir as it is (no build step): its
                         server/sessiond and python/ stubs
  SESSIOND_CLUSTER_TIMEOUT  seconds `up` and `restart` wait (default 60)
  SESSIOND_CLUSTER_SESSION  `own` (default): each node in a session of its
                         own (setsid); `caller`: in this script's session,
                         in a process group of its own (the benchmarks: see
                         below)

Nodes run in their own session (setsid) with stdin closed and stdout and
stderr appended to <cluster dir>/logs/nodeN.log, so they outlive this script
and the terminal. Linux's scheduler (with sched_autogroup_enabled, the
default) shares the CPU fairly between sessions before threads: each node
then gets as much CPU as the whole session that runs a load generator, and
on a machine with fewer cores than busy processes the generator starves.
The benchmark scripts set SESSIOND_CLUSTER_SESSION=caller, so that the nodes
and the generator compete thread by thread, as etcd and Redis started by the
same scripts do (docs/BENCHMARKS.md). <cluster dir>/cluster.json records, for each node, the
exact argv (absolute paths) that starts it again.

Standard library only (plus Debian's python3-grpcio and the stubs the build
generates), for /usr/bin/python3.
"""

import argparse
import datetime
import fcntl
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEV_SH = os.path.join(ROOT, "tools", "dev.sh")
SCHEMA_VERSION = 1
DEFAULT_NODES = 3
MAX_NODES = 9
RPC_TIMEOUT_S = 2.0
STOP_TIMEOUT_S = 30.0  # sessiond drains for --shutdown_grace_ms (5 s) first
KILL_TIMEOUT_S = 10.0
POLL_S = 0.1


class Failure(Exception):
    """A message for the user; exit code 1 (2 for usage errors)."""

    def __init__(self, message, code=1):
        super().__init__(message)
        self.code = code


def log(message):
    if sys.stderr.isatty():
        sys.stderr.write("\033[1m[cluster]\033[0m %s\n" % message)
    else:
        sys.stderr.write("[cluster] %s\n" % message)
    sys.stderr.flush()


def up_timeout_s():
    value = os.environ.get("SESSIOND_CLUSTER_TIMEOUT", "60")
    try:
        return float(value)
    except ValueError:
        raise Failure("SESSIOND_CLUSTER_TIMEOUT must be a number of seconds, "
                      "not %r" % value, 2)


def cluster_dir():
    return os.path.abspath(
        os.environ.get("SESSIOND_CLUSTER_DIR") or os.path.join(ROOT, ".cluster"))


def json_path(cdir):
    return os.path.join(cdir, "cluster.json")


def display(path):
    """`path` relative to the working directory when under it (shorter)."""
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


# ---------------------------------------------------------------- state file


def load(cdir, required=True):
    path = json_path(cdir)
    try:
        with open(path) as f:
            cluster = json.load(f)
    except FileNotFoundError:
        if required:
            raise Failure("no cluster in %s (no cluster.json); start one with "
                          "`tools/dev.sh cluster up`" % cdir)
        return None
    except (OSError, ValueError) as e:
        raise Failure("cannot read %s: %s (remove the folder with "
                      "`tools/dev.sh cluster down --wipe`)" % (path, e))
    if cluster.get("version") != SCHEMA_VERSION:
        raise Failure("%s has version %r, this script writes %d: remove it "
                      "with `tools/dev.sh cluster down --wipe`"
                      % (path, cluster.get("version"), SCHEMA_VERSION))
    return cluster


def save(cdir, cluster):
    """Atomically: a crash never leaves a half-written cluster.json."""
    path = json_path(cdir)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(cluster, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def find_node(cluster, node_id):
    try:
        wanted = int(node_id)
    except ValueError:
        raise Failure("node id must be a number, not %r" % node_id, 2)
    for node in cluster["nodes"]:
        if node["id"] == wanted:
            return node
    raise Failure("no node %d in this cluster (ids: %s)" % (
        wanted, ", ".join(str(n["id"]) for n in cluster["nodes"])), 2)


class Lock:
    """Serializes the commands that change the cluster (flock on .lock)."""

    def __init__(self, cdir):
        os.makedirs(cdir, exist_ok=True)
        self.fd = os.open(os.path.join(cdir, ".lock"),
                          os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log("another `cluster` command is running on %s; waiting" % cdir)
            fcntl.flock(self.fd, fcntl.LOCK_EX)

    def release(self):
        os.close(self.fd)


# ----------------------------------------------------------------- processes


def is_alive(node):
    """True when node["pid"] is running node["argv"] (not a zombie, not a
    reused pid running something else)."""
    pid = node.get("pid")
    if not pid:
        return False
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            cmdline = f.read()
    except OSError:
        return False
    state = stat[stat.rindex(")") + 2:].split(" ", 1)[0]
    if state in ("Z", "X", "x"):
        return False
    args = [a.decode("utf-8", "replace") for a in cmdline.split(b"\0")[:-1]]
    return args == node["argv"]


def wait_dead(node, timeout_s):
    deadline = time.monotonic() + timeout_s
    while is_alive(node):
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_S)
    return True


def signal_node(node, sig):
    try:
        os.kill(node["pid"], sig)
    except ProcessLookupError:
        pass


def node_argv(cluster, node):
    argv = [cluster["sessiond"],
            "--node_id", str(node["id"]),
            "--initial_cluster", cluster["initial_cluster"],
            "--listen", node["client_address"],
            "--data_dir", node["data_dir"],
            "--cluster_token", cluster["cluster_token"]]
    tls = cluster.get("tls")
    if tls:
        cert = os.path.join(tls, "node-%d" % node["id"])
        argv += ["--tls_cert", cert + ".pem", "--tls_key", cert + "-key.pem",
                 "--tls_ca", os.path.join(tls, "ca.pem"),
                 "--auth_file", os.path.join(tls, "roles.conf")]
    return argv + cluster["extra_args"]


# The identities `up --tls` makes certificates for, and their roles.
TLS_IDENTITIES = {"operator": "app, admin", "app": "app", "reader": "reader"}


def make_tls(cdir, count):
    """A development CA, node and client certificates (tools/dev-ca.sh) and
    a role file in cdir/tls; returns that folder."""
    tls = os.path.join(cdir, "tls")
    result = subprocess.run(
        [os.path.join(ROOT, "tools", "dev-ca.sh"), "--nodes", str(count), tls]
        + list(TLS_IDENTITIES), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    if result.returncode != 0:
        raise Failure("tools/dev-ca.sh failed:\n" + result.stdout)
    with open(os.path.join(tls, "roles.conf"), "w") as out:
        out.write("# tools/dev.sh cluster up --tls (server/auth.h's format)\n")
        for i in range(1, count + 1):
            out.write("node-%d = peer\n" % i)
        # Each node's certificate sends Raft traffic as that node only.
        for i in range(1, count + 1):
            out.write("node_id = %d node-%d\n" % (i, i))
        for identity, roles in TLS_IDENTITIES.items():
            out.write("%s = %s\n" % (identity, roles))
    return tls


def channel(cluster, address):
    """A channel to a node's client address: TLS as the operator when the
    cluster has TLS."""
    grpc = stubs(cluster)[0]
    # A developer's http_proxy must not catch 127.0.0.1.
    options = [("grpc.enable_http_proxy", 0)]
    tls = cluster.get("tls")
    if not tls:
        return grpc.insecure_channel(address, options=options)

    def read(name):
        with open(os.path.join(tls, name), "rb") as f:
            return f.read()
    credentials = grpc.ssl_channel_credentials(
        root_certificates=read("ca.pem"),
        private_key=read("operator-key.pem"),
        certificate_chain=read("operator.pem"))
    return grpc.secure_channel(address, credentials, options=options)


def start_node(node):
    """Starts node["argv"] detached, output appended to its log. Returns the
    Popen and the log offset its output starts at."""
    os.makedirs(node["data_dir"], exist_ok=True)
    os.makedirs(os.path.dirname(node["log"]), exist_ok=True)
    if not os.access(node["argv"][0], os.X_OK):
        raise Failure("%s is not an executable (build it: `tools/dev.sh build "
                      "Release sessiond`)" % node["argv"][0])
    with open(node["log"], "ab") as out:
        out.write(("==== %s tools/dev.sh cluster: starting node %d: %s\n" % (
            datetime.datetime.now().isoformat(timespec="seconds"),
            node["id"], shlex.join(node["argv"]))).encode())
        out.flush()
        offset = out.tell()
        proc = subprocess.Popen(
            node["argv"], stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, cwd=os.path.dirname(node["data_dir"]),
            close_fds=True, **session_args())
    node["pid"] = proc.pid
    return proc, offset


def session_args():
    """Popen arguments that detach a node (SESSIOND_CLUSTER_SESSION)."""
    mode = os.environ.get("SESSIOND_CLUSTER_SESSION", "own")
    if mode == "own":
        return {"start_new_session": True}
    if mode == "caller":
        # A process group of its own: a Ctrl-C at the terminal does not
        # reach it, and it shares the caller's scheduling autogroup.
        return {"process_group": 0}
    raise Failure("SESSIOND_CLUSTER_SESSION=%s: expected own or caller" % mode)


def log_since(node, offset):
    try:
        with open(node["log"], "rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def log_tail(node, offset=0, lines=15):
    text = log_since(node, offset).rstrip("\n").splitlines()[-lines:]
    return "\n".join("    " + line for line in text)


def listening(node, offset):
    """The address of the `LISTENING host:port` line written since offset."""
    for line in log_since(node, offset).splitlines():
        if line.startswith("LISTENING "):
            return line[len("LISTENING "):].strip()
    return None


def wait_listening(started, deadline):
    """started: [(node, proc, offset)]. Waits until each prints LISTENING;
    raises Failure (with its log) when one exits first or time runs out."""
    waiting = list(started)
    while waiting:
        for item in list(waiting):
            node, proc, offset = item
            if listening(node, offset) is not None:
                waiting.remove(item)
                continue
            code = proc.poll()
            if code is not None:
                raise Failure(
                    "node %d exited with code %d before serving (%s); the end "
                    "of its log %s:\n%s" % (
                        node["id"], code,
                        {1: "cannot start", 2: "bad flags"}.get(code, "crash"),
                        display(node["log"]), log_tail(node, offset)))
        if waiting and time.monotonic() >= deadline:
            raise Failure("node(s) %s did not print LISTENING in time; logs: %s"
                          % (", ".join(str(n["id"]) for n, _, _ in waiting),
                             ", ".join(display(n["log"]) for n, _, _ in waiting)))
        if waiting:
            time.sleep(POLL_S)


# --------------------------------------------------------------------- admin

_stubs = None


def stubs(cluster):
    """(grpc, admin_pb2, admin_pb2_grpc) from the build's python/ folder."""
    global _stubs
    if _stubs is None:
        path = cluster["python_stubs"]
        if not os.path.exists(os.path.join(path, "sessiond", "v1",
                                           "admin_pb2.py")):
            raise Failure("no Python stubs in %s (build them: `tools/dev.sh "
                          "build Release sessiond_python_stubs`)" % path)
        sys.path.insert(0, path)
        try:
            import grpc  # Debian's python3-grpcio
            from sessiond.v1 import admin_pb2, admin_pb2_grpc
        except ImportError as e:
            raise Failure("cannot load grpc or the stubs (%s): install "
                          "python3-grpcio and python3-protobuf "
                          "(`tools/dev.sh deps`)" % e)
        _stubs = (grpc, admin_pb2, admin_pb2_grpc)
    return _stubs


def ask_status(cluster, address):
    """The ClusterStatusResponse of the node at address, or None."""
    grpc, admin_pb2, admin_pb2_grpc = stubs(cluster)
    chan = channel(cluster, address)
    try:
        stub = admin_pb2_grpc.AdminServiceStub(chan)
        return stub.ClusterStatus(admin_pb2.ClusterStatusRequest(),
                                  timeout=RPC_TIMEOUT_S)
    except grpc.RpcError:
        return None
    finally:
        chan.close()


def gather(cluster):
    """The cluster as one dict: each node of cluster.json with its process
    state and its member status, as the first live node whose known leader
    leads (else the first that answers) reports it."""
    alive = {n["id"]: is_alive(n) for n in cluster["nodes"]}
    response = None
    for node in cluster["nodes"]:
        if not alive[node["id"]]:
            continue
        r = ask_status(cluster, node["client_address"])
        if r is None:
            continue
        if response is None:
            response = r
        # A follower still names a leader that just died for an election
        # timeout: prefer an answer whose leader says it leads.
        if any(m.node_id == r.leader and m.role == "leader"
               for m in r.members):
            response = r
            break
    members = {m.node_id: m for m in response.members} if response else {}
    nodes = []
    for node in cluster["nodes"]:
        row = {
            "id": node["id"],
            "client_address": node["client_address"],
            "peer_address": node["peer_address"],
            "pid": node["pid"],
            "alive": alive[node["id"]],
            "data_dir": node["data_dir"],
            "log": node["log"],
        }
        row.update(member_dict(members.pop(node["id"], None)))
        nodes.append(row)
    # Members added with AdminService.AddMember, not started by this script.
    for member in members.values():
        row = {"id": member.node_id, "client_address": member.client_address,
               "peer_address": member.peer_address, "pid": None,
               "alive": None, "data_dir": None, "log": None}
        row.update(member_dict(member))
        nodes.append(row)
    return {
        "cluster_dir": cluster["cluster_dir"],
        "cluster_id": ("0x%016x" % response.cluster_id) if response else None,
        "answered_by": response.answered_by if response else None,
        "leader": (response.leader or None) if response else None,
        "term": response.term if response else None,
        "nodes": nodes,
    }


def member_dict(m):
    if m is None:
        return {"role": None, "reachable": None, "error": None, "voter": None,
                "term": None, "leader": None, "commit_index": None,
                "applied_index": None, "lag": None, "live_sessions": None,
                "started": None}
    return {"role": m.role, "reachable": m.reachable, "error": m.error,
            "voter": m.voter, "term": m.term, "leader": m.leader or None,
            "commit_index": m.commit_index, "applied_index": m.applied_index,
            "lag": m.lag, "live_sessions": m.live_sessions,
            "started": m.started}


def leader_of(view):
    """The id of the one live node whose own role is leader, else None."""
    leaders = [n["id"] for n in view["nodes"]
               if n["role"] == "leader" and n["alive"] is not False]
    return leaders[0] if len(leaders) == 1 else None


# -------------------------------------------------------------------- output


def table(view):
    def cell(value, missing="-"):
        return missing if value is None else str(value)

    headers = ["ID", "CLIENT", "PEER", "PID", "PROCESS", "ROLE", "TERM",
               "COMMIT", "APPLIED", "LAG", "SESSIONS"]
    rows = []
    for n in view["nodes"]:
        role = n["role"]
        if role == "unreachable" or (role and n["reachable"] is False):
            role = "unreachable"
        process = {True: "alive", False: "dead", None: "-"}[n["alive"]]
        numbers = [n["term"], n["commit_index"], n["applied_index"], n["lag"],
                   n["live_sessions"]]
        if not n["reachable"]:
            numbers = [None] * len(numbers)
        rows.append([str(n["id"]), n["client_address"], n["peer_address"],
                     cell(n["pid"]), process, cell(role, "?")]
                    + [cell(v) for v in numbers])
    widths = [max(len(r[i]) for r in rows + [headers])
              for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
             for r in [headers] + rows]
    if view["answered_by"] is None:
        head = "cluster in %s: no node answered ClusterStatus" % display(
            view["cluster_dir"])
    else:
        leader = "leader %s" % (view["leader"] or "none")
        if view["leader"] and view["leader"] != leader_of(view):
            leader = "no leader answers (node %d last knew %d)" % (
                view["answered_by"], view["leader"])
        head = "cluster %s in %s: %s, term %d (as node %d sees it)" % (
            view["cluster_id"], display(view["cluster_dir"]), leader,
            view["term"], view["answered_by"])
    return head + "\n" + "\n".join(lines)


def print_clients(cluster):
    addresses = ",".join(n["client_address"] for n in cluster["nodes"])
    print()
    print("client addresses: %s" % addresses)
    print("logs:             %s" % display(
        os.path.join(cluster["cluster_dir"], "logs", "node*.log")))
    print("cluster.json:     %s" % display(json_path(cluster["cluster_dir"])))
    tls = cluster.get("tls")
    if tls:
        print("tls:              %s (roles.conf: %s)" % (
            display(tls), ", ".join("%s = %s" % kv
                                    for kv in TLS_IDENTITIES.items())))
        print("sessionctl:       sessionctl --endpoints %s --tls-ca %s "
              "--tls-cert %s --tls-key %s status" % (
                  addresses, display(os.path.join(tls, "ca.pem")),
                  display(os.path.join(tls, "operator.pem")),
                  display(os.path.join(tls, "operator-key.pem"))))


# ------------------------------------------------------------------ commands


def build():
    """(build dir): SESSIOND_BUILD_DIR as it is, else a Release build."""
    given = os.environ.get("SESSIOND_BUILD_DIR")
    if given:
        return os.path.abspath(given)
    subprocess.run(["bash", DEV_SH, "deps"], check=True)
    result = subprocess.run(
        ["bash", DEV_SH, "build", "Release", "sessiond",
         "sessiond_python_stubs"], stdout=subprocess.PIPE, text=True)
    if result.returncode != 0:
        raise Failure("the build failed (output above)")
    return result.stdout.strip().splitlines()[-1]


def running_nodes(cluster):
    return [n for n in cluster["nodes"] if is_alive(n)]


def refuse_if_up(cluster, cdir):
    live = running_nodes(cluster)
    if live:
        raise Failure("a cluster is already up in %s (running: %s); "
                      "`tools/dev.sh cluster down` first" % (
                          display(cdir), ", ".join("node %d pid %d" % (
                              n["id"], n["pid"]) for n in live)))


def free_ports(count):
    """count distinct free TCP ports on 127.0.0.1 (all held at once, so
    they differ; a small race with other programs remains)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def new_cluster(cdir, build_dir, count, extra):
    ports = free_ports(2 * count)
    nodes = []
    for i in range(1, count + 1):
        nodes.append({
            "id": i,
            "client_address": "127.0.0.1:%d" % ports[i - 1],
            "peer_address": "127.0.0.1:%d" % ports[count + i - 1],
            "pid": None,
            "data_dir": os.path.join(cdir, "data", "node%d" % i),
            "log": os.path.join(cdir, "logs", "node%d.log" % i),
            "argv": None,
        })
    return {
        "version": SCHEMA_VERSION,
        "created": datetime.datetime.now().isoformat(timespec="seconds"),
        "cluster_dir": cdir,
        "build_dir": build_dir,
        "sessiond": os.path.join(build_dir, "server", "sessiond"),
        "python_stubs": os.path.join(build_dir, "python"),
        # Keeps this cluster's id apart from any other built on the same
        # ports (the id is derived from the token and --initial_cluster).
        "cluster_token": "dev-" + secrets.token_hex(4),
        "initial_cluster": ",".join(
            "%d=%s" % (n["id"], n["peer_address"]) for n in nodes),
        "extra_args": extra,
        "nodes": nodes,
    }


def wait_leader(cluster, deadline, need_reachable):
    """Polls until one live node leads (and, with need_reachable, every
    node of cluster.json answers and has announced itself to the cluster,
    so status shows its client address). Returns the last view and whether
    it got there."""
    view = None
    while True:
        view = gather(cluster)
        ok = leader_of(view) is not None
        if ok and need_reachable:
            ok = all(n["reachable"] and n["started"] for n in view["nodes"]
                     if n["pid"] is not None)
        if ok or time.monotonic() >= deadline:
            return view, ok
        for node in cluster["nodes"]:
            if node["pid"] and not is_alive(node):
                raise Failure("node %d (pid %d) exited; the end of its log "
                              "%s:\n%s" % (node["id"], node["pid"],
                                           display(node["log"]),
                                           log_tail(node)))
        time.sleep(0.2)


def cmd_up(args, extra):
    cdir = cluster_dir()
    lock = Lock(cdir)
    try:
        cluster = load(cdir, required=False)
        if cluster is not None:
            refuse_if_up(cluster, cdir)
            if args.nodes is not None and args.nodes != len(cluster["nodes"]):
                raise Failure(
                    "%s holds a stopped cluster of %d nodes; `tools/dev.sh "
                    "cluster up` starts it again, `tools/dev.sh cluster down "
                    "--wipe` deletes it for a new one of %d" % (
                        display(cdir), len(cluster["nodes"]), args.nodes), 2)
        elif os.path.isdir(os.path.join(cdir, "data")) and \
                os.listdir(os.path.join(cdir, "data")):
            raise Failure("%s has data but no cluster.json; delete it with "
                          "`tools/dev.sh cluster down --wipe`" % display(
                              os.path.join(cdir, "data")))
        count = args.nodes if args.nodes is not None else DEFAULT_NODES
        if not 1 <= count <= MAX_NODES:
            raise Failure("N must be in [1, %d]" % MAX_NODES, 2)

        build_dir = build()
        sessiond = os.path.join(build_dir, "server", "sessiond")
        if not os.access(sessiond, os.X_OK):
            raise Failure("no sessiond binary at %s (SESSIOND_BUILD_DIR=%s?)"
                          % (sessiond, build_dir))
        fresh = cluster is None
        if fresh:
            cluster = new_cluster(cdir, build_dir, count, extra)
            if args.tls:
                cluster["tls"] = make_tls(cdir, count)
            log("starting a new %d-node cluster%s in %s" % (
                count, " with mutual TLS" if args.tls else "", display(cdir)))
        else:
            # Same ids, ports, token and data dirs; today's binary; the new
            # extra flags when given, else the saved ones.
            cluster["build_dir"] = build_dir
            cluster["sessiond"] = sessiond
            cluster["python_stubs"] = os.path.join(build_dir, "python")
            if extra:
                cluster["extra_args"] = extra
            log("starting the stopped %d-node cluster in %s again (its data "
                "kept; `cluster down --wipe` for a new one)" % (
                    len(cluster["nodes"]), display(cdir)))
        stubs(cluster)  # fail before starting anything when they are missing
        for node in cluster["nodes"]:
            node["argv"] = node_argv(cluster, node)
        deadline = time.monotonic() + up_timeout_s()
        started = []
        try:
            for node in cluster["nodes"]:
                proc, offset = start_node(node)
                started.append((node, proc, offset))
        finally:
            save(cdir, cluster)  # whatever started, `down` can find it
        try:
            wait_listening(started, deadline)
        except Failure as e:
            if not fresh:
                raise
            # A new cluster that could not start (bad flags, a port taken):
            # nothing worth keeping but the logs, and the next `up` starts
            # afresh (with new ports) instead of resuming this one.
            for node, proc, _ in started:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            shutil.rmtree(os.path.join(cdir, "data"), ignore_errors=True)
            os.remove(json_path(cdir))
            raise Failure("%s\nnothing was left running; the logs stay in %s"
                          % (e, display(os.path.join(cdir, "logs"))))
        log("every node serves; waiting for a leader")
        view, ok = wait_leader(cluster, deadline, need_reachable=True)
        if not ok:
            print(table(view))
            raise Failure(
                "no leader after %.0f s (nodes left running). Logs: %s; "
                "`tools/dev.sh cluster status` to look again, `tools/dev.sh "
                "cluster down` to stop" % (
                    up_timeout_s(), display(os.path.join(
                        cdir, "logs", "node*.log"))))
        print(table(view))
        print_clients(cluster)
    finally:
        lock.release()


def cmd_status(args):
    cdir = cluster_dir()
    cluster = load(cdir)
    if os.environ.get("SESSIOND_BUILD_DIR"):
        cluster["python_stubs"] = os.path.join(
            os.path.abspath(os.environ["SESSIOND_BUILD_DIR"]), "python")
    view = gather(cluster)
    if args.json:
        json.dump(view, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(table(view))


def cmd_kill(args):
    cdir = cluster_dir()
    lock = Lock(cdir)
    try:
        cluster = load(cdir)
        node = find_node(cluster, args.id)
        if not is_alive(node):
            log("node %d is not running" % node["id"])
            return
        signal_node(node, signal.SIGKILL)
        if not wait_dead(node, KILL_TIMEOUT_S):
            raise Failure("node %d (pid %d) still runs after SIGKILL" % (
                node["id"], node["pid"]))
        print("node %d (pid %d) killed" % (node["id"], node["pid"]))
    finally:
        lock.release()


def cmd_stop(args):
    cdir = cluster_dir()
    lock = Lock(cdir)
    try:
        cluster = load(cdir)
        node = find_node(cluster, args.id)
        if not is_alive(node):
            log("node %d is not running" % node["id"])
            return
        signal_node(node, signal.SIGTERM)
        if not wait_dead(node, STOP_TIMEOUT_S):
            raise Failure("node %d (pid %d) did not exit %.0f s after SIGTERM; "
                          "`tools/dev.sh cluster kill %d`; log: %s" % (
                              node["id"], node["pid"], STOP_TIMEOUT_S,
                              node["id"], display(node["log"])))
        print("node %d (pid %d) stopped" % (node["id"], node["pid"]))
    finally:
        lock.release()


def cmd_restart(args):
    cdir = cluster_dir()
    lock = Lock(cdir)
    try:
        cluster = load(cdir)
        node = find_node(cluster, args.id)
        if is_alive(node):
            raise Failure("node %d is running (pid %d); `tools/dev.sh cluster "
                          "stop %d` or `kill %d` first" % (
                              node["id"], node["pid"], node["id"], node["id"]))
        deadline = time.monotonic() + up_timeout_s()
        proc, offset = start_node(node)
        save(cdir, cluster)
        wait_listening([(node, proc, offset)], deadline)
        # Serving: its admin API answers and reports itself.
        while True:
            r = ask_status(cluster, node["client_address"])
            me = [m for m in r.members if m.node_id == node["id"]] if r else []
            if me and me[0].reachable:
                break
            if proc.poll() is not None:
                raise Failure("node %d exited with code %d; the end of its "
                              "log %s:\n%s" % (node["id"], proc.returncode,
                                               display(node["log"]),
                                               log_tail(node, offset)))
            if time.monotonic() >= deadline:
                raise Failure("node %d printed LISTENING but ClusterStatus did "
                              "not answer in time; log: %s" % (
                                  node["id"], display(node["log"])))
            time.sleep(POLL_S)
        # Best effort, a few seconds: until it has heard from a leader, so
        # the role and term printed are not those of its first instant.
        settle = min(deadline, time.monotonic() + 5)
        while not me[0].leader and time.monotonic() < settle:
            time.sleep(0.2)
            r = ask_status(cluster, node["client_address"])
            me = [m for m in r.members if m.node_id == node["id"]] if r else me
        print("node %d restarted (pid %d), serving on %s as %s, term %d" % (
            node["id"], node["pid"], node["client_address"], me[0].role,
            me[0].term))
    finally:
        lock.release()


def cmd_down(args):
    cdir = cluster_dir()
    if not os.path.isdir(cdir):
        log("no cluster in %s" % display(cdir))
        return
    lock = Lock(cdir)
    try:
        cluster = load(cdir, required=False)
        live = running_nodes(cluster) if cluster else []
        for node in live:
            signal_node(node, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for node in live:
            if wait_dead(node, max(0.0, deadline - time.monotonic())):
                print("node %d (pid %d) stopped" % (node["id"], node["pid"]))
            else:
                signal_node(node, signal.SIGKILL)
                wait_dead(node, KILL_TIMEOUT_S)
                print("node %d (pid %d) did not exit %.0f s after SIGTERM: "
                      "killed" % (node["id"], node["pid"], STOP_TIMEOUT_S))
        if cluster is None:
            log("no cluster.json in %s" % display(cdir))
        elif not live:
            log("no node was running")
        if args.wipe:
            lock.release()
            lock = None
            shutil.rmtree(cdir)
            print("deleted %s" % display(cdir))
        elif cluster is not None:
            print("data and logs kept in %s: `tools/dev.sh cluster up` starts "
                  "this cluster again, `tools/dev.sh cluster down --wipe` "
                  "deletes it" % display(cdir))
    finally:
        if lock is not None:
            lock.release()


def main(argv):
    extra = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    parser = argparse.ArgumentParser(
        prog="tools/dev.sh cluster",
        description="A local sessiond cluster on 127.0.0.1.",
        epilog="See tools/cluster.py for the environment variables.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    p = sub.add_parser("up", help="start N nodes (default 3) and wait for a "
                       "leader; flags after -- go to every node")
    p.add_argument("nodes", nargs="?", type=int, metavar="N")
    p.add_argument("--tls", action="store_true",
                   help="a new cluster with mutual TLS and roles: "
                   "tools/dev-ca.sh certificates in .cluster/tls")
    p = sub.add_parser("status", help="nodes, processes and ClusterStatus")
    p.add_argument("--json", action="store_true", help="machine output")
    for name, text in (("kill", "SIGKILL a node"),
                       ("stop", "SIGTERM a node and wait until it exits"),
                       ("restart", "start a stopped node again and wait "
                        "until it serves")):
        p = sub.add_parser(name, help=text)
        p.add_argument("id", metavar="ID")
    p = sub.add_parser("down", help="SIGTERM every node (SIGKILL after 30 s)")
    p.add_argument("--wipe", action="store_true",
                   help="also delete data, logs and cluster.json")
    args = parser.parse_args(argv)
    if extra and args.command != "up":
        parser.error("flags after -- are for `up` only")
    try:
        if args.command == "up":
            cmd_up(args, extra)
        else:
            {"status": cmd_status, "kill": cmd_kill, "stop": cmd_stop,
             "restart": cmd_restart, "down": cmd_down}[args.command](args)
    except Failure as e:
        log(str(e))
        return e.code
    except KeyboardInterrupt:
        log("interrupted; `tools/dev.sh cluster status` shows what runs")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
