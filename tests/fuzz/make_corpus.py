#!/usr/bin/env python3
"""Writes the seed inputs of tests/fuzz/corpus/ (run once; the files are
checked in, and inputs that found bugs are added next to them by hand).

usage: /usr/bin/python3 tests/fuzz/make_corpus.py
"""
import base64
import hashlib
import hmac
import json
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


# tokens: opaque (43 base64url chars), JWT-shaped, near misses.
write("token", "opaque", b64url(bytes(range(32))))
write("token", "jwt_shaped", "eyJhbGciOiJFZERTQSJ9.eyJzaWQiOiJzIn0.c2ln")
write("token", "padded", b64url(b"abc") + "==")
write("token", "bad_char", "abc$def")

# jwt: claims payloads (signed by the target), and 'T' + tokens.
for i, claims in enumerate([
        {"sid": "s1", "sub": "alice", "iat": 1700000000, "exp": 1800000000},
        {"sid": "s1", "sub": "alice", "iat": 1700000000, "exp": 1},
        {"sid": "", "sub": "\u00e9", "iat": -1, "exp": 1e300},
        {"sid": "s", "sub": "u", "iat": "1", "exp": [2]},
]):
    write("jwt", f"claims{i}", json.dumps(claims))
write("jwt", "token_three_parts", "T" + "eyJhbGciOiJFZERTQSJ9.e30." + b64url(bytes(64)))
write("jwt", "token_two_parts", "Tabc.def")
write("jwt", "token_alg_none", "T" + b64url(b'{"alg":"none"}') + ".e30.")


# page tokens: as PageTokenCodec(42) makes them (server/page_token.cc).
def page_token(user, include_revoked, after):
    key = hashlib.sha256(b"sessiond ListUserSessions page v1" +
                         struct.pack("<Q", 42)).digest()
    msg = (struct.pack("<I", len(user)) + user + bytes([include_revoked]) +
           struct.pack("<I", len(after)) + after)
    tag = hmac.new(key, msg, hashlib.sha256).digest()[:16]
    return b64url(b"\x01" + after + tag)


write("page_token", "alice", page_token(b"alice", 0, b"FAqahXZ67-Zc6zkWkWk4QQ"))
write("page_token", "alice_revoked", page_token(b"alice", 1, b"session-2"))
write("page_token", "other_user", page_token(b"bob", 0, b"session-3"))


# peer messages: RaftMessage wire bytes (proto/sessiond/v1/peer.proto).
def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field(num, value):
    if isinstance(value, int):
        return varint(num << 3) + varint(value)
    return varint(num << 3 | 2) + varint(len(value)) + value


entry = field(1, 3) + field(2, 10) + field(4, b"command")  # a RaftEntry
write("peer_message", "append",
      field(1, 3) + field(2, 1) + field(3, 2) + field(4, 3) + field(5, 9) +
      field(6, 3) + field(7, entry) + field(8, 9))
write("peer_message", "heartbeat", field(1, 8) + field(2, 1) + field(3, 2) +
      field(4, 3) + field(8, 9))
write("peer_message", "vote", field(1, 5) + field(2, 2) + field(3, 1) +
      field(4, 4) + field(5, 12) + field(6, 3))
write("peer_message", "unknown_type", field(1, 99) + field(2, 1))


# log entries and other values a node reads back (storage/keys.cc).
def be64(n):
    return struct.pack(">Q", n)


write("log_entry", "normal", be64(3) + b"\x00" + b"a command")
write("log_entry", "conf_change", be64(3) + b"\x01" + b"\x00" + be64(4))
write("log_entry", "hard_state", be64(5) + be64(2) + be64(100))
conf = struct.pack(">I", 3) + be64(1) + be64(2) + be64(3) + struct.pack(">I", 1) + be64(4)
write("log_entry", "conf_state", conf)
write("log_entry", "snapshot_meta", be64(100) + be64(5) + conf)
write("log_entry", "short", b"\x00\x01")

# stored sessions: StoredSession { bytes token_hash = 1; Session session = 2 }.
session = (field(1, b"FAqahXZ67-Zc6zkWkWk4QQ") + field(2, b"alice") +
           field(3, 1700000000000) + field(4, 1800000000000))
write("stored_session", "minimal", field(1, bytes(range(32))) + field(2, session))
write("stored_session", "short_hash", field(1, b"abc") + field(2, session))
write("stored_session", "no_session", field(1, bytes(32)))

# snapshot chunks: byte 0 = chunking/size error; then an image whose last
# 32 bytes are the SHA-256 of the rest.
body = b"an image body " * 20
write("snapshot_chunks", "valid_small_chunks", b"\x03" + body + hashlib.sha256(body).digest())
write("snapshot_chunks", "valid_one_chunk", b"\x3f" + body + hashlib.sha256(body).digest())
write("snapshot_chunks", "size_off", b"\x43" + body + hashlib.sha256(body).digest())
write("snapshot_chunks", "bad_sum", b"\x07" + body + bytes(32))

# operator files: a role file, an --initial_cluster value, a config file.
write("config", "roles", "node-1 = peer\noperator = app, admin\n"
      "token_sha256 = " + "ab" * 32 + " robot\nrobot = admin\n")
write("config", "initial_cluster", "1=10.0.0.5:7001,2=10.0.0.6:7001,3=10.0.0.7:7001")
write("config", "toml", 'listen = "127.0.0.1:50051"\ndata_dir = "/tmp/x"\n'
      'node_id = 1\nmax_ttl_ms = 86400000\n[section]\nkey = "v"\n')
write("config", "toml_bad", 'listen = \nnode_id = "one"\nunknown_flag = 3\n')
