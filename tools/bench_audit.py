#!/usr/bin/python3
# What auditing costs a call (docs/OPERATIONS.md, "Audit"): an audited call
# commits an entry before it runs and one after, so it waits for three
# commits where a create waits for one. Times, one call at a time through
# one endpoint: CreateSession, SetExpiryLeeway (audited) and
# RevokeUserSessions of a user with one session (audited). Prints p50 and
# p99 of each; docs/PERFORMANCE.md has the figures.
#
# usage: /usr/bin/python3 tools/bench_audit.py HOST:PORT [CALLS] [BUILD_DIR]
#   (python3-grpcio; the stubs are generated into BUILD_DIR/python,
#   build-release by default)
import os
import sys
import time

target = sys.argv[1]
calls = int(sys.argv[2]) if len(sys.argv) > 2 else 300
build = sys.argv[3] if len(sys.argv) > 3 else "build-release"
sys.path.insert(0, os.path.join(build, "python"))

import grpc  # noqa: E402
from sessiond.v1 import admin_pb2, admin_pb2_grpc  # noqa: E402
from sessiond.v1 import session_pb2, session_pb2_grpc  # noqa: E402

channel = grpc.insecure_channel(target)
admin = admin_pb2_grpc.AdminServiceStub(channel)
sessions = session_pb2_grpc.SessionServiceStub(channel)
HOUR_MS = 3600 * 1000


def create(user):
    sessions.CreateSession(
        session_pb2.CreateSessionRequest(user_id=user, ttl_ms=HOUR_MS),
        timeout=10)


def timed(name, call, before=None):
    times = []
    for i in range(calls):
        if before:
            before(i)
        start = time.perf_counter()
        call(i)
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    print("%-34s p50 %6.2f ms  p99 %6.2f ms  (%d calls)" %
          (name, times[len(times) // 2], p99, calls))


# Warm up the channel and the leader (a node just started may not lead
# yet: a few seconds of retries).
for i in range(20):
    for attempt in range(50):
        try:
            create("warm-up")
            break
        except grpc.RpcError:
            if attempt == 49:
                raise
            time.sleep(0.1)
timed("CreateSession", lambda i: create("bench-%d" % i))
timed("SetExpiryLeeway (audited)",
      lambda i: admin.SetExpiryLeeway(
          admin_pb2.SetExpiryLeewayRequest(expiry_leeway_ms=1000 + i % 2),
          timeout=10))
timed("RevokeUserSessions (audited)",
      lambda i: sessions.RevokeUserSessions(
          session_pb2.RevokeUserSessionsRequest(user_id="revoke-%d" % i),
          timeout=10),
      before=lambda i: create("revoke-%d" % i))
