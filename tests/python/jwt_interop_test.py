# Copyright sessiond authors. Licensed under the Apache License 2.0.
"""A JWT signed by sessiond's code (common/signing.h), verified with PyJWT and
python3-cryptography against the JWKS sessiond renders, as an app server
would: PyJWK from the JWKS entry named by the token's kid, then
jwt.decode(..., algorithms=["EdDSA"]). Tampered, expired and foreign tokens
must fail.

usage: jwt_interop_test.py --jwt_sample <path to the jwt_sample binary>
"""

import argparse
import base64
import json
import subprocess
import sys
import unittest

import jwt

SAMPLE = None


def b64url_decode(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64url_encode(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class JwtInteropTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        out = subprocess.run([SAMPLE], check=True, capture_output=True,
                             timeout=30)
        cls.sample = json.loads(out.stdout)
        cls.jwks = cls.sample["jwks"]

    def key_for(self, token):
        """The PyJWK of the JWKS entry the token's header names."""
        header = jwt.get_unverified_header(token)
        self.assertEqual(header["alg"], "EdDSA")
        self.assertEqual(header["typ"], "JWT")
        matches = [k for k in self.jwks["keys"] if k["kid"] == header["kid"]]
        if not matches:
            raise LookupError("kid %s is not in the JWKS" % header["kid"])
        self.assertEqual(len(matches), 1)
        return jwt.PyJWK(matches[0])

    def decode(self, token):
        return jwt.decode(token, self.key_for(token).key, algorithms=["EdDSA"],
                          options={"require": ["exp", "iat", "sub"]})

    def test_jwks_shape(self):
        keys = self.jwks["keys"]
        self.assertEqual(len(keys), 2)
        for k in keys:
            self.assertEqual(set(k), {"kty", "crv", "x", "kid", "use", "alg"})
            self.assertEqual(k["kty"], "OKP")
            self.assertEqual(k["crv"], "Ed25519")
            self.assertEqual(k["use"], "sig")
            self.assertEqual(k["alg"], "EdDSA")
            self.assertEqual(len(b64url_decode(k["x"])), 32)
            # PyJWK parses every entry (the staged key too).
            self.assertEqual(jwt.PyJWK(k).key_id, k["kid"])

    def test_kid_is_the_rfc7638_thumbprint(self):
        import hashlib
        for k in self.jwks["keys"]:
            canonical = json.dumps(
                {"crv": k["crv"], "kty": k["kty"], "x": k["x"]},
                separators=(",", ":"), sort_keys=True).encode()
            self.assertEqual(k["kid"],
                             b64url_encode(hashlib.sha256(canonical).digest()))

    def test_token_verifies(self):
        claims = self.decode(self.sample["token"])
        self.assertEqual(claims, self.sample["claims"])
        header = jwt.get_unverified_header(self.sample["token"])
        self.assertEqual(header["kid"], self.sample["active_kid"])

    def test_tampered_claims_fail(self):
        head, body, sig = self.sample["token"].split(".")
        claims = json.loads(b64url_decode(body))
        claims["sub"] = "mallory"
        forged = ".".join(
            [head, b64url_encode(json.dumps(claims).encode()), sig])
        with self.assertRaises(jwt.InvalidSignatureError):
            self.decode(forged)

    def test_tampered_signature_fails(self):
        head, body, sig = self.sample["token"].split(".")
        raw = bytearray(b64url_decode(sig))
        raw[10] ^= 0x01
        with self.assertRaises(jwt.InvalidSignatureError):
            self.decode(".".join([head, body, b64url_encode(bytes(raw))]))

    def test_token_moved_to_the_other_kid_fails(self):
        head, body, sig = self.sample["token"].split(".")
        header = json.loads(b64url_decode(head))
        other = [k["kid"] for k in self.jwks["keys"]
                 if k["kid"] != header["kid"]][0]
        header["kid"] = other
        moved = ".".join(
            [b64url_encode(json.dumps(header).encode()), body, sig])
        with self.assertRaises(jwt.InvalidSignatureError):
            self.decode(moved)

    def test_expired_token_fails(self):
        with self.assertRaises(jwt.ExpiredSignatureError):
            self.decode(self.sample["expired_token"])

    def test_foreign_token_has_no_key(self):
        with self.assertRaises(LookupError):
            self.key_for(self.sample["foreign_token"])


def main():
    global SAMPLE
    parser = argparse.ArgumentParser()
    parser.add_argument("--jwt_sample", required=True)
    args, rest = parser.parse_known_args()
    SAMPLE = args.jwt_sample
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
