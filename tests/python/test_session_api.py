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
import sys
import unittest

from sessiond_node import SessiondNode

ARGS = None
session_pb2 = None
session_pb2_grpc = None
grpc = None

RPC_TIMEOUT_S = 5


class SessionApiTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.node = SessiondNode(ARGS.sessiond, "sessiond-python-test-")
        cls.address = cls.node.address
        cls.stub = session_pb2_grpc.SessionServiceStub(cls.node.channel)

    @classmethod
    def tearDownClass(cls):
        cls.node.stop()

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
