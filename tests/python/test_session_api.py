#!/usr/bin/env python3
# Copyright sessiond authors. Licensed under the Apache License 2.0.
"""A client in another language, from the .proto files alone.

Starts the real sessiond on a free 127.0.0.1 port with a temp data dir and
talks to it only through the Python stubs generated from
proto/sessiond/v1/session.proto (grpc_python_plugin; Debian python3-grpcio):
create, validate, revoke, validate again, validate garbage.

  python3 test_session_api.py --sessiond <path/to/sessiond> --stubs <build>/python
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

ARGS = None
session_pb2 = None
session_pb2_grpc = None
grpc = None

START_TIMEOUT_S = 30
RPC_TIMEOUT_S = 5


def wait_for_listening(proc, stdout_path, timeout_s):
    """Returns host:port from the daemon's `LISTENING host:port` line.

    The daemon's stdout goes to a file, not a pipe, so it can never block on
    a pipe nobody reads."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        exited = proc.poll() is not None
        with open(stdout_path, "rb") as f:
            for line in f.read().decode("utf-8", "replace").splitlines():
                if line.startswith("LISTENING "):
                    return line[len("LISTENING "):].strip()
        if exited:
            return None
        time.sleep(0.05)
    return None


class SessionApiTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="sessiond-python-test-", dir="/tmp")
        stdout_path = os.path.join(cls.tmp, "sessiond.out")
        with open(stdout_path, "wb") as out:
            cls.proc = subprocess.Popen(
                [ARGS.sessiond, "--listen", "127.0.0.1:0", "--data_dir",
                 os.path.join(cls.tmp, "data")],
                stdout=out)
        address = wait_for_listening(cls.proc, stdout_path, START_TIMEOUT_S)
        if address is None:
            cls.tearDownClass()
            raise RuntimeError("sessiond did not print LISTENING in time")
        cls.address = address
        cls.channel = grpc.insecure_channel(address)
        grpc.channel_ready_future(cls.channel).result(timeout=START_TIMEOUT_S)
        cls.stub = session_pb2_grpc.SessionServiceStub(cls.channel)

    @classmethod
    def tearDownClass(cls):
        if getattr(cls, "channel", None) is not None:
            cls.channel.close()
        if cls.proc.poll() is None:
            cls.proc.send_signal(signal.SIGTERM)
            try:
                cls.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                cls.proc.kill()
                cls.proc.wait(timeout=10)
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def validate(self, token):
        return self.stub.ValidateSession(
            session_pb2.ValidateSessionRequest(token=token),
            timeout=RPC_TIMEOUT_S)

    def test_create_validate_revoke(self):
        Outcome = session_pb2.ValidateSessionResponse
        attributes = {"role": b"admin", "cart": bytes(range(0, 200))}
        created = self.stub.CreateSession(
            session_pb2.CreateSessionRequest(
                user_id="python-user",
                ttl_ms=3600 * 1000,
                attributes=attributes,
                client=session_pb2.ClientMetadata(device="pytest",
                                                  user_agent="python3")),
            timeout=RPC_TIMEOUT_S)
        self.assertEqual(len(created.token), 43)
        self.assertTrue(created.session.session_id)
        self.assertEqual(created.session.user_id, "python-user")

        valid = self.validate(created.token)
        self.assertEqual(valid.outcome, Outcome.VALID)
        self.assertEqual(valid.session.session_id, created.session.session_id)
        self.assertEqual(dict(valid.session.attributes), attributes)
        self.assertEqual(valid.session.state, session_pb2.SESSION_STATE_ACTIVE)

        revoked = self.stub.RevokeSession(
            session_pb2.RevokeSessionRequest(
                session_id=created.session.session_id, reason="python test"),
            timeout=RPC_TIMEOUT_S)
        self.assertEqual(revoked.session.session_id, created.session.session_id)

        again = self.validate(created.token)
        self.assertEqual(again.outcome, Outcome.REVOKED)

        garbage = self.validate(b"not-a-token-at-all")
        self.assertEqual(garbage.outcome, Outcome.UNKNOWN)
        # Tokens are bytes: a raw cookie that is not UTF-8 is an outcome too.
        raw_cookie = self.validate(b"\xff\xfe\x00cookie")
        self.assertEqual(raw_cookie.outcome, Outcome.UNKNOWN)

    def test_bad_input_is_invalid_argument(self):
        with self.assertRaises(grpc.RpcError) as caught:
            self.stub.CreateSession(session_pb2.CreateSessionRequest(user_id=""),
                                    timeout=RPC_TIMEOUT_S)
        self.assertEqual(caught.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)


def main():
    global ARGS, session_pb2, session_pb2_grpc, grpc
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessiond", required=True, help="path to the sessiond binary")
    parser.add_argument("--stubs", required=True,
                        help="directory holding sessiond/v1/session_pb2*.py")
    ARGS, rest = parser.parse_known_args()
    sys.path.insert(0, ARGS.stubs)
    import grpc as grpc_module
    from sessiond.v1 import session_pb2 as pb2
    from sessiond.v1 import session_pb2_grpc as pb2_grpc
    grpc, session_pb2, session_pb2_grpc = grpc_module, pb2, pb2_grpc
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
