#!/usr/bin/env python3
# Copyright sessiond authors. Licensed under the Apache License 2.0.
"""Error details read from another language.

Starts the real sessiond (127.0.0.1, free port, temp data dir, at most one
live session per user) and, through Python stubs generated from the .proto
files alone (sessiond/v1 and google/rpc), reads the google.rpc.ErrorInfo of
refused calls from the "grpc-status-details-bin" trailing metadata, as any
gRPC client can: USER_SESSION_LIMIT for a create over the cap,
SESSION_REVOKED for a touch of a revoked session. Also GetSession,
RotateSessionToken and a create retried with its request_id.

  python3 test_error_details.py --sessiond <path/to/sessiond> --stubs <build>/python
"""

import argparse
import sys
import unittest

from sessiond_node import SessiondNode
import uuid

ARGS = None
grpc = None
session_pb2 = None
session_pb2_grpc = None
status_pb2 = None
error_details_pb2 = None

RPC_TIMEOUT_S = 5
DETAILS_KEY = "grpc-status-details-bin"


def error_info(rpc_error):
    """(ErrorInfo, RetryInfo or None) from a failed call's trailing metadata."""
    details_bin = None
    for key, value in rpc_error.trailing_metadata() or ():
        if key == DETAILS_KEY:
            details_bin = value
    if details_bin is None:
        return None, None
    status = status_pb2.Status.FromString(details_bin)
    if status.code != rpc_error.code().value[0]:
        raise AssertionError("details code %d, call code %s" %
                             (status.code, rpc_error.code()))
    info, retry = None, None
    for any_detail in status.details:
        if any_detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            any_detail.Unpack(info)
        elif any_detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            any_detail.Unpack(retry)
    return info, retry


class ErrorDetailsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.node = SessiondNode(ARGS.sessiond, "sessiond-python-details-", ["--max_sessions_per_user", "1"])
        cls.stub = session_pb2_grpc.SessionServiceStub(cls.node.channel)

    @classmethod
    def tearDownClass(cls):
        cls.node.stop()

    def create(self, user_id, request_id=""):
        return self.stub.CreateSession(
            session_pb2.CreateSessionRequest(user_id=user_id, ttl_ms=3600 * 1000,
                                             request_id=request_id),
            timeout=RPC_TIMEOUT_S)

    def test_a_create_over_the_cap_says_user_session_limit(self):
        first = self.create("py-capped")
        with self.assertRaises(grpc.RpcError) as caught:
            self.create("py-capped")
        self.assertEqual(caught.exception.code(),
                         grpc.StatusCode.FAILED_PRECONDITION)
        info, retry = error_info(caught.exception)
        self.assertIsNotNone(info)
        self.assertEqual(info.domain, "sessiond.dev")
        self.assertEqual(info.reason, "USER_SESSION_LIMIT")
        self.assertIsNone(retry)
        # Nothing changed: still the one session.
        listed = self.stub.ListUserSessions(
            session_pb2.ListUserSessionsRequest(user_id="py-capped"),
            timeout=RPC_TIMEOUT_S)
        self.assertEqual([s.session_id for s in listed.sessions],
                         [first.session.session_id])

    def test_a_touch_of_a_revoked_session_says_session_revoked(self):
        created = self.create("py-revoked")
        self.stub.RevokeSession(
            session_pb2.RevokeSessionRequest(token=created.token),
            timeout=RPC_TIMEOUT_S)
        with self.assertRaises(grpc.RpcError) as caught:
            self.stub.TouchSession(
                session_pb2.TouchSessionRequest(token=created.token),
                timeout=RPC_TIMEOUT_S)
        self.assertEqual(caught.exception.code(),
                         grpc.StatusCode.FAILED_PRECONDITION)
        self.assertEqual(caught.exception.details(), "session is revoked")
        info, _ = error_info(caught.exception)
        self.assertEqual(info.reason, "SESSION_REVOKED")
        # NOT_FOUND carries no details.
        with self.assertRaises(grpc.RpcError) as caught:
            self.stub.TouchSession(
                session_pb2.TouchSessionRequest(token=b"A" * 43),
                timeout=RPC_TIMEOUT_S)
        self.assertEqual(caught.exception.code(), grpc.StatusCode.NOT_FOUND)
        self.assertEqual(error_info(caught.exception), (None, None))

    def test_get_rotate_and_a_retried_create(self):
        request_id = str(uuid.uuid4())
        first = self.create("py-retry", request_id)
        again = self.create("py-retry", request_id)
        self.assertTrue(again.replayed)
        self.assertEqual(again.token, first.token)
        got = self.stub.GetSession(
            session_pb2.GetSessionRequest(session_id=first.session.session_id),
            timeout=RPC_TIMEOUT_S)
        self.assertEqual(got.session, first.session)
        rotated = self.stub.RotateSessionToken(
            session_pb2.RotateSessionTokenRequest(token=first.token),
            timeout=RPC_TIMEOUT_S)
        self.assertNotEqual(rotated.token, first.token)
        Outcome = session_pb2.ValidateSessionResponse
        old = self.stub.ValidateSession(
            session_pb2.ValidateSessionRequest(token=first.token),
            timeout=RPC_TIMEOUT_S)
        self.assertEqual(old.outcome, Outcome.UNKNOWN)
        # The rotated session is no longer the request_id's token.
        with self.assertRaises(grpc.RpcError) as caught:
            self.create("py-retry", request_id)
        info, _ = error_info(caught.exception)
        self.assertEqual(info.reason, "REQUEST_ID_SESSION_ENDED")


def main():
    global ARGS, grpc, session_pb2, session_pb2_grpc, status_pb2, error_details_pb2
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessiond", required=True, help="path to the sessiond binary")
    parser.add_argument("--stubs", required=True,
                        help="directory holding sessiond/v1 and google/rpc *_pb2.py")
    ARGS, rest = parser.parse_known_args()
    sys.path.insert(0, ARGS.stubs)
    import grpc as grpc_module
    from google.rpc import error_details_pb2 as details_module
    from google.rpc import status_pb2 as status_module
    from sessiond.v1 import session_pb2 as pb2
    from sessiond.v1 import session_pb2_grpc as pb2_grpc
    grpc, session_pb2, session_pb2_grpc = grpc_module, pb2, pb2_grpc
    status_pb2, error_details_pb2 = status_module, details_module
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
