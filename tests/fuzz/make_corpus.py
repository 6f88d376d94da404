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
# 'H' + headers (signed by the target over fixed claims; KID stands for
# the target key's kid).
write("jwt", "header_good", 'H{"alg":"EdDSA","typ":"JWT","kid":"KID"}')
write("jwt", "header_no_kid", 'H{"alg":"EdDSA","typ":"JWT"}')
write("jwt", "header_alg_none", 'H{"alg":"none","kid":"KID"}')
write("jwt", "header_crit", 'H{"alg":"EdDSA","kid":"KID","crit":["exp"]}')
write("jwt", "header_duplicate_alg", 'H{"alg":"none","alg":"EdDSA","kid":"KID"}')
write("jwt", "header_typ", 'H{"alg":"EdDSA","kid":"KID","typ":"jwt+x"}')


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
# The same bytes are read as a MessageBatch and a SnapshotChunk too.
append = (field(1, 3) + field(2, 1) + field(3, 2) + field(4, 3) + field(5, 9) +
          field(6, 3) + field(7, entry) + field(8, 9))
heartbeat = field(1, 8) + field(2, 1) + field(3, 2) + field(4, 3) + field(8, 9)
write("peer_message", "batch",
      b"\x09" + struct.pack("<Q", 7) + field(2, 1) + field(3, 2) +
      field(4, append) + field(4, heartbeat))
snapshot_meta = field(1, 100) + field(2, 3) + field(3, 1) + field(3, 2)
write("peer_message", "snapshot_chunk",
      b"\x09" + struct.pack("<Q", 7) + field(2, 1) + field(3, 2) +
      field(4, field(1, 8) + field(2, 1) + field(3, 2) + field(4, 3) +
            field(12, snapshot_meta)) +
      field(5, 4096) + field(7, b"image bytes"))


# log entries and other values a node reads back (storage/keys.cc).
def be64(n):
    return struct.pack(">Q", n)


def token_hash(i):
    return hashlib.sha256(b"tok-%d" % i).digest()


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

# snapshot chunks (fuzz_snapshot_chunks.cc): byte 0 bit 0 = mode.
# Raw mode (0): byte 1 = chunking/size error; then an image as received,
# whose last 32 bytes are the SHA-256 of the rest.
body = b"an image body " * 20
write("snapshot_chunks", "valid_small_chunks", b"\x00\x03" + body + hashlib.sha256(body).digest())
write("snapshot_chunks", "valid_one_chunk", b"\x00\x3f" + body + hashlib.sha256(body).digest())
write("snapshot_chunks", "size_off", b"\x00\x43" + body + hashlib.sha256(body).digest())
write("snapshot_chunks", "bad_sum", b"\x00\x07" + body + bytes(32))


# Real images (storage/snapshot_files.h): magic, header, records, count,
# SHA-256; SnapshotHeader and StoredSession as in proto/sessiond/v1/command.proto.
def stored_session(i, sid=None, user=b"alice", hash_bytes=None):
    sess = (field(1, sid if sid is not None else b"sid-%d" % i) + field(2, user) +
            field(3, 1700000000000 + i) + field(4, 1800000000000) +
            field(6, 1700000000000 + i) +
            field(7, field(1, b"role") + field(2, b"user")) + field(8, 1) +
            field(9, 1) + field(12, field(1, b"laptop")))
    return field(1, hash_bytes if hash_bytes is not None else token_hash(i)) + field(2, sess)


def snapshot_header(index, term, voters, learners=(), audit_seqs=(7,), next_seq=8):
    h = field(1, index) + field(2, term)
    h += b"".join(field(3, v) for v in voters)
    h += b"".join(field(4, v) for v in learners)
    h += field(5, 1700000000000)
    cluster = (field(1, field(1, 1) + field(2, b"10.0.0.5:7001") + field(4, 1)) +
               field(2, 2000) + field(3, 1) + field(8, 9))
    h += field(6, cluster)
    selector = field(5, field(1, b"alice"))
    h += field(7, field(1, 30) + field(2, selector) + field(3, b"flush") +
               field(7, 1700000600000) + field(8, 1))
    h += field(20, field(1, b"k" * 32) + field(2, b"h" * 32) + field(3, b"s-1") +
               field(4, 1700000100000))
    h += field(21, b"c" * 32)
    for seq in audit_seqs:
        h += field(22, field(1, seq) + field(2, 1699999999000) +
                   field(7, b"/sessiond.v1.AdminService/Flush"))
    h += field(23, next_seq)
    return h


def image(header, records, count=None, magic=b"SDSNAP01"):
    out = magic + varint(len(header)) + header
    for r in records:
        out += varint(len(r)) + r
    out += varint(0) + be64(len(records) if count is None else count)
    return out + hashlib.sha256(out).digest()


hdr = snapshot_header(12, 2, [1, 2, 3], [5])
three = [stored_session(i) for i in (1, 2, 3)]
write("snapshot_chunks", "raw_image", b"\x00\x07" + image(hdr, three))
write("snapshot_chunks", "raw_image_one_chunk", b"\x00\x3f" + image(hdr, three[:1]))
write("snapshot_chunks", "raw_image_count_off", b"\x00\x3f" + image(hdr, three, count=2))
write("snapshot_chunks", "raw_image_bad_magic", b"\x00\x3f" + image(hdr, three, magic=b"SDSNAP00"))


# Framed mode (1): byte 1 = flags (1: header from the input, 2: membership
# reversed, 4: announced at another index); then pieces, each a big-endian
# 16-bit length and the bytes: the header (with flag 1), then records.
def framed(flags, pieces):
    return b"\x01" + bytes([flags]) + b"".join(struct.pack(">H", len(p)) + p for p in pieces)


write("snapshot_chunks", "framed_records", framed(0, three))
write("snapshot_chunks", "framed_no_records", framed(0, []))
write("snapshot_chunks", "framed_header", framed(1, [hdr] + three))
write("snapshot_chunks", "framed_header_reversed",
      framed(3, [snapshot_header(12, 2, [3, 1, 2], [6, 5])] + three[:2]))
write("snapshot_chunks", "framed_other_index", framed(4, three[:1]))
write("snapshot_chunks", "framed_duplicate_hash", framed(0, [three[0], three[0]]))
write("snapshot_chunks", "framed_duplicate_session_id",
      framed(0, [stored_session(1), stored_session(2, sid=b"sid-1")]))
write("snapshot_chunks", "framed_record_short_hash",
      framed(0, [three[0], stored_session(4, hash_bytes=token_hash(4)[:31])]))
write("snapshot_chunks", "framed_record_no_user",
      framed(0, [three[0], b"", stored_session(5, user=b"")]))
write("snapshot_chunks", "framed_record_not_parsing", framed(0, [three[0], b"\xff\xff"]))
write("snapshot_chunks", "framed_audit_out_of_order",
      framed(1, [snapshot_header(12, 2, [1, 2, 3], audit_seqs=(5, 3), next_seq=9)] + three[:1]))
write("snapshot_chunks", "framed_audit_next_seq_behind",
      framed(1, [snapshot_header(12, 2, [1, 2, 3], audit_seqs=(5,), next_seq=5)]))

# operator files: a role file, an --initial_cluster value, a config file.
write("config", "roles", "node-1 = peer\noperator = app, admin\n"
      "token_sha256 = " + "ab" * 32 + " robot\nrobot = admin\n")
write("config", "initial_cluster", "1=10.0.0.5:7001,2=10.0.0.6:7001,3=10.0.0.7:7001")
write("config", "toml", 'listen = "127.0.0.1:50051"\ndata_dir = "/tmp/x"\n'
      'node_id = 1\nmax_ttl_ms = 86400000\n[section]\nkey = "v"\n')
write("config", "toml_bad", 'listen = \nnode_id = "one"\nunknown_flag = 3\n')

# command-log entries (fuzz_command.cc): entries, each a flags byte (1: a
# conf change, 2: replica A starts a new Apply call here), a big-endian
# 16-bit length and the payload: a serialized sessiond.v1.internal.Command
# (proto/sessiond/v1/command.proto) or an encoded ConfChange. Each seed
# makes the sessions its operation works on first.
T0 = 1700000000000


def entry(payload, flags=0):
    return bytes([flags]) + struct.pack(">H", len(payload)) + payload


def command(ts, op_field, op):
    return field(1, ts) + field(op_field, op)


def attr(key, value):  # one map<string, bytes> entry
    return field(1, key) + field(2, value)


def create_op(i, user=b"alice", ttl=3600000, idle=0, extra=b""):
    return (field(1, token_hash(i)) + field(2, b"sid-%d" % i) + field(3, user) +
            (field(5, idle) if idle else b"") +
            field(6, attr(b"role", b"user")) + field(7, field(1, b"laptop") + field(2, b"10.0.0.9")) +
            field(8, ttl) + extra)


def create(i, ts=T0, **kw):
    return entry(command(ts, 2, create_op(i, **kw)))


def write_entries(name, *entries):
    write("command", name, b"".join(entries))


write_entries("create", create(1, idle=600000))
write_entries("create_absolute_expiry",
              entry(command(T0, 2, field(1, token_hash(1)) + field(2, b"sid-1") +
                            field(3, b"alice") + field(4, T0 + 1000))))
write_entries("create_batch", entry(command(T0, 10, field(1, create_op(2)) + field(1, create_op(3, user=b"bob")))))
write_entries("create_user_cap",
              create(1), create(2, extra=field(23, 1)))
touch = lambda i, seen: field(1, field(1, token_hash(i)) + field(2, seen))
write_entries("touch", create(1, idle=600000),
              entry(command(T0 + 1000, 3, touch(1, T0 + 1000))))
write_entries("touch_batch", create(1, idle=600000), create(2),
              entry(command(T0 + 2000, 3, touch(1, T0 + 1500) + touch(2, T0 + 2000) +
                            field(1, field(1, token_hash(1)) + field(2, T0 + 2000) + field(3, T0 + 1800)))))
write_entries("update", create(1),
              entry(command(T0 + 10, 4, field(1, token_hash(1)) + field(2, 1) +
                            field(3, attr(b"plan", b"pro")) + field(4, b"role"))))
write_entries("revoke_by_hash", create(1),
              entry(command(T0 + 10, 5, field(1, field(1, token_hash(1))) + field(2, b"logout"))))
write_entries("revoke_by_session_id", create(1),
              entry(command(T0 + 10, 5, field(1, field(2, b"sid-1")) + field(2, b"admin"))))
write_entries("revoke_user", create(1), create(2), create(3, user=b"bob"),
              entry(command(T0 + 10, 6, field(1, b"alice") + field(2, b"sid-2") + field(3, b"everywhere"))))
# A restorable revocation (its id: the index of its entry, 3), restored,
# then purged once its retention passed.
write_entries("revoke_user_restore_purge", create(1), create(2),
              entry(command(T0 + 10, 6, field(1, b"alice") + field(3, b"stolen") + field(4, 60000))),
              entry(command(T0 + 20, 12, field(1, 3))),
              entry(command(T0 + 100000, 13, field(1, 3))))
write_entries("expire", create(1, ttl=1000), create(2),
              entry(command(T0 + 5000, 7, field(1, token_hash(1)) + field(1, token_hash(2)))))
write_entries("member",
              entry(command(T0, 8, field(1, 0) + field(2, 1) + field(3, b"10.0.0.5:7001") + field(4, b"10.0.0.5:50051"))),
              entry(command(T0, 8, field(1, 1) + field(2, 4) + field(3, b"10.0.0.8:7001"))),
              entry(command(T0, 8, field(1, 2) + field(2, 3))))
write_entries("settings", entry(command(T0, 9, field(1, 2000) + field(2, 300000))))
selector = field(3, field(1, b"alice") + field(1, b"bob"))
pending = field(1, b"confirm-1") + field(2, selector) + field(3, b"incident") + field(4, 60000)
write_entries("bulk_revoke", create(1), create(2, user=b"bob"),
              entry(command(T0 + 10, 11, field(1, pending))),
              entry(command(T0 + 20, 11, field(2, field(1, b"confirm-1") + field(2, selector)))))
write_entries("flush", create(1),
              entry(command(T0 + 10, 11, field(1, field(1, b"t") + field(2, field(1, b""))))),
              entry(command(T0 + 20, 11, field(2, field(1, b"t") + field(2, field(1, b""))))))
write_entries("rotate", create(1),
              entry(command(T0 + 10, 20, field(1, token_hash(1)) + field(2, token_hash(9)))))
request = field(20, hashlib.sha256(b"request").digest()) + field(21, 60000) + field(25, b"d" * 32)
write_entries("create_key_request_replay",
              entry(command(T0, 21, field(1, b"K" * 32))),
              create(1, extra=request), create(1, ts=T0 + 10, extra=request),
              entry(command(T0 + 120000, 22, field(1, 100))))
write_entries("expiry_breaker", create(1),
              entry(command(T0 + 10, 23, field(1, field(5, b"mass expiry") + field(4, T0 + 5)))),
              entry(command(T0 + 20, 23, field(2, field(1, 2) + field(2, b"resumed")))))


def kid_of(public_key):  # RFC 7638 thumbprint (common/signing.cc)
    jwk = '{"crv":"Ed25519","kty":"OKP","x":"%s"}' % b64url(public_key)
    return b64url(hashlib.sha256(jwk.encode()).digest()).encode()


def stage(public_key, bootstrap):
    return field(1, field(1, kid_of(public_key)) + field(2, 1) + field(3, public_key) +
                 field(4, bytes(69)) + (field(5, 1) if bootstrap else b""))


# Key rotation: a bootstrap key signs a session, a second key is staged and
# activated once published for the JWKS max-age, the first is retired
# (forced: it still signs a live session) and purged; a create signed by it
# is then refused.
key1, key2 = bytes(range(32)), bytes(range(32, 64))
write_entries("key_ring",
              entry(command(T0, 9, field(2, 1000))),
              entry(command(T0, 24, stage(key1, True))),
              create(1, extra=field(24, kid_of(key1))),
              entry(command(T0 + 10, 24, stage(key2, False))),
              entry(command(T0 + 5000, 24, field(2, field(1, kid_of(key2)) + field(2, 4)))),
              entry(command(T0 + 6000, 24, field(3, field(1, kid_of(key1)) + field(2, 1) + field(3, 1)))),
              entry(command(T0 + 8000, 24, field(4, field(1, T0 + 7000)))),
              create(2, ts=T0 + 9000, extra=field(24, kid_of(key1))))
write_entries("audit",
              entry(command(T0, 25, field(1, field(3, b"operator") + field(7, b"/sessiond.v1.AdminService/Flush") +
                                        field(8, b"{}")) + field(2, 60000) + field(3, 10))),
              entry(command(T0 + 120000, 25, field(2, 60000))))
write_entries("tick", entry(command(T0, 26, b"")), entry(command(T0 + 5000, 26, b"")))
write_entries("clock_catch_up", create(1), create(2, ts=T0 + 100),
              entry(command(T0 + 200, 27, field(1, T0 + 3600000) + field(2, T0 + 50))))


def conf_change(kind, node):
    return bytes([kind]) + struct.pack("<Q", node)


write_entries("conf_changes", entry(conf_change(0, 4), 1), entry(conf_change(1, 4), 1),
              entry(conf_change(2, 3), 1),
              entry(command(T0, 8, field(1, 0) + field(2, 3))))
# Settings and breaker changes that later entries of the same Apply call see,
# cut into calls differently on the two replicas.
write_entries("batched", create(1, ttl=1000), create(2, ttl=1000),
              entry(command(T0 + 1100, 23, field(1, field(5, b"storm"))), 2),
              entry(command(T0 + 1200, 7, field(1, token_hash(1)))),
              entry(command(T0 + 1300, 9, field(1, 500)), 2),
              entry(command(T0 + 1400, 7, field(1, token_hash(2)))))
write_entries("not_a_command", entry(b"\xff\xfe\xfd"), entry(b""), entry(conf_change(7, 1), 1))
