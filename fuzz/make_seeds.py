#!/usr/bin/env python3
"""Writes the hand-made seeds of fuzz/corpus/ (files named `seed-*`); run from anywhere.

Each seed follows the input layout its harness documents (imlab_core::fuzzing::frame_decoder,
imlab_core::fuzzing::login). Protobuf is encoded by hand: field numbers from core/proto/imlab.proto.
"""
import hashlib, hmac, os, struct

HERE = os.path.dirname(os.path.abspath(__file__))
SECRET = b"imlab-fuzz-secret"  # fuzzing::LOGIN_SECRET
FAR = 4_000_000_000  # fuzzing::LOGIN_TOKEN_EXPIRY_UNIX_S


def varint(n):
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def vfield(num, value):  # varint field
    return varint(num << 3) + varint(value)


def lfield(num, data):  # length-delimited field
    data = data.encode() if isinstance(data, str) else data
    return varint(num << 3 | 2) + varint(len(data)) + data


def frame(body_field, body):  # 4-byte length, then Frame { oneof body }
    payload = lfield(body_field, body)
    return struct.pack(">I", len(payload)) + payload


def token(user, expiry, secret=SECRET):
    signed = f"v1.{user}.{expiry}"
    return signed + "." + hmac.new(secret, signed.encode(), hashlib.sha256).hexdigest()


def login(user, device, tok="", heartbeat_s=60):
    return frame(1, lfield(1, user) + lfield(2, device) + lfield(3, tok) + vfield(4, heartbeat_s))


def message(seq, body=b"hi"):
    return vfield(1, seq) + vfield(2, 77) + lfield(3, "alice") + lfield(4, "phone") + lfield(5, "phone-1") + lfield(6, "bob") + lfield(8, body) + vfield(9, 1_700_000_000_000)


PING = frame(3, vfield(1, 4))
SEND_BOB = frame(5, lfield(1, "phone-1") + lfield(2, "bob") + lfield(4, b"hello"))
SEND_GROUP = frame(5, lfield(1, "phone-2") + lfield(3, "team") + lfield(4, b"hi all"))
SYNC = frame(10, vfield(1, 0) + vfield(2, 50))
ACK = frame(9, vfield(1, 1))
GROUP_CREATE = frame(12, vfield(1, 1) + lfield(2, "team") + lfield(3, "bob") + lfield(3, "carol"))
GROUP_JOIN = frame(13, vfield(1, 2) + lfield(2, "team"))
GROUP_LEAVE = frame(14, vfield(1, 3) + lfield(2, "team"))
EVERY_KIND = [
    login("alice", "phone", "v1.alice.9.ab", 285),
    frame(2, vfield(1, 12) + vfield(2, 5) + vfield(3, 427) + vfield(4, 3) + vfield(5, 1)),
    PING,
    frame(4, vfield(1, 4) + vfield(2, 6)),
    SEND_BOB,
    frame(6, lfield(1, "phone-1") + vfield(2, 9) + vfield(3, 10) + vfield(4, 11)),
    frame(7, lfield(1, message(2))),
    frame(8, vfield(1, 13)),
    ACK,
    SYNC,
    frame(11, lfield(1, message(2)) + lfield(1, message(3)) + vfield(2, 1) + vfield(3, 40)),
    GROUP_CREATE,
    GROUP_JOIN,
    GROUP_LEAVE,
    frame(15, vfield(1, 3) + lfield(2, "team") + lfield(3, "alice")),
    frame(16, vfield(1, 1) + lfield(2, "bye")),
    frame(17, vfield(1, 8) + lfield(2, "busy") + lfield(3, "phone-1") + vfield(4, 8)),
]


def raw_frame(payload):
    return struct.pack(">I", len(payload)) + payload


# frame_decoder: byte 0 = limit choice (0: 65,536, 1: 0, 5: 64), 4 chunk-plan bytes, stream.
WHOLE, ONE_BYTE, MIXED = b"\x7f" * 4, b"\x00" * 4, bytes([0x83, 0x05, 0xFF, 0x10])
DECODER = {
    "empty-input": b"",
    "login-and-ping-whole": b"\x00" + WHOLE + EVERY_KIND[0] + PING,
    "every-kind-in-1-byte-reads": b"\x00" + ONE_BYTE + b"".join(EVERY_KIND),
    "every-kind-pending-reads": b"\x00" + MIXED + b"".join(EVERY_KIND),
    "truncated-second-frame": b"\x00" + bytes([3, 3, 3, 3]) + PING + SEND_BOB[:9],
    "truncated-prefix": b"\x00" + WHOLE + PING + b"\x00\x00",
    "too-large-for-default-limit": b"\x00" + MIXED + b"\x00\x01\x00\x01" + b"\x00" * 8,
    "too-large-for-64": b"\x05" + MIXED + PING + raw_frame(lfield(5, lfield(4, b"x" * 100))),
    "malformed-wire-type": b"\x00" + WHOLE + raw_frame(b"\xff\xff\xff"),
    "malformed-utf8-user": b"\x00" + WHOLE + raw_frame(lfield(1, lfield(1, b"\xff\xfe"))),
    "malformed-nested": b"\x00" + MIXED + raw_frame(lfield(7, lfield(1, b"\x0f\x01"))),
    "empty-frame": b"\x00" + WHOLE + PING + b"\x00\x00\x00\x00",
    "empty-frame-limit-0": b"\x01" + ONE_BYTE + b"\x00\x00\x00\x00",
    "unknown-field-only": b"\x00" + WHOLE + raw_frame(vfield(100, 5)),
    # An enum as a 5-byte varint (-1 truncated to 32 bits): re-encodes as 10 bytes.
    "enum-5-byte-varint": b"\x00" + WHOLE + raw_frame(lfield(17, b"\x08\xff\xff\xff\xff\x0f")),
    # 2 wire bytes per empty Message: the decoder's worst expansion.
    "sync-response-of-empty-messages": b"\x00" + WHOLE + raw_frame(lfield(11, b"\x0a\x00" * 1_000)),
    "group-create-of-empty-members": b"\x00" + WHOLE + raw_frame(lfield(12, b"\x1a\x00" * 1_000)),
}

# login: byte 0 = mode (bits 0-1 shape: 0 raw, 1 length byte, 2 chosen token, 3 valid login;
# bit 2 HMAC; bit 3 silent client; bits 4-5 write size: all, 1, 7, 64 bytes; bits 6-7 frame
# limit: 65,536, 4,096, 2,000, 1,200), then the shape's bytes.
RAW, PREFIXED, TOKEN, VALID, HMAC, SILENT = 0, 1, 2, 3, 4, 8
W1, W7, W64 = 1 << 4, 2 << 4, 3 << 4
L4096, L2000, L1200 = 1 << 6, 2 << 6, 3 << 6
LOGIN_PAYLOAD = EVERY_KIND[0][4:]
AFTER_LOGIN = PING + SEND_BOB + GROUP_CREATE + SEND_GROUP + SYNC + ACK + GROUP_JOIN + GROUP_LEAVE
LOGIN = {
    "raw-nothing-then-close": bytes([RAW]),
    "raw-nothing-silent": bytes([RAW | SILENT]),
    "raw-partial-frame-then-close": bytes([RAW]) + b"\x00\x00\x00\x09\x01",
    "raw-garbage": bytes([RAW]) + b"\x00\x00\x00\x03\xff\xff\xff",
    "raw-too-large": bytes([RAW]) + b"\x00\x01\x00\x01",
    "raw-ping-first": bytes([RAW]) + PING,
    "raw-bad-user-id": bytes([RAW]) + login("al ice", "phone"),
    "raw-hmac-valid-token": bytes([RAW | HMAC]) + login("alice", "phone", token("alice", FAR)) + PING,
    "prefixed-partial-silent": bytes([PREFIXED | SILENT, 20]) + b"\x0a\x03",
    "prefixed-login-in-7-byte-writes": bytes([PREFIXED | W7, len(LOGIN_PAYLOAD)]) + LOGIN_PAYLOAD + PING,
    "token-hmac-valid": bytes([TOKEN | HMAC, 0x60, len(token("alice", FAR))]) + token("alice", FAR).encode() + PING,
    "token-hmac-expired": bytes([TOKEN | HMAC, 0x00, len(token("alice", 1_000))]) + token("alice", 1_000).encode(),
    "token-hmac-wrong-user": bytes([TOKEN | HMAC, 0x01, len(token("alice", FAR))]) + token("alice", FAR).encode(),
    "token-hmac-garbage": bytes([TOKEN | HMAC, 0x00, 5]) + b"v1.x.",
    "token-empty-user": bytes([TOKEN, 0x02, 0]),
    "valid-dev-session": bytes([VALID, 0x60]) + AFTER_LOGIN,
    "valid-hmac-session-silent": bytes([VALID | HMAC | SILENT, 0x65]) + AFTER_LOGIN,
    "valid-then-bad-frame": bytes([VALID, 0x00]) + PING + b"\x00\x00\x00\x02\xff\xff",
    "valid-then-too-large-in-1-byte-writes": bytes([VALID | W1, 0x00]) + PING + b"\x7f\xff\xff\xff",
    "valid-then-too-large-for-1200": bytes([VALID | L1200 | W64, 0x00]) + PING + frame(5, lfield(1, "p-1") + lfield(2, "bob") + lfield(4, b"x" * 1_300)),
    # Replies echo what a client sent: near the limit, they must still fit it.
    "valid-long-client-msg-id-for-1200": bytes([VALID | L1200, 0x00]) + frame(5, lfield(1, "x" * 1_100)),
    "valid-big-group-for-1200": bytes([VALID | L1200, 0x00]) + frame(12, vfield(1, 1) + lfield(2, "g") + b"".join(lfield(3, f"member{i:03}-" + "m" * 100) for i in range(9))),
    "valid-big-body-for-4096": bytes([VALID | L4096, 0x00]) + frame(5, lfield(1, "p-1") + lfield(2, "alice") + lfield(4, b"b" * 3_072)) + SYNC,
    "valid-then-server-frames": bytes([VALID, 0x04]) + EVERY_KIND[0] + b"".join(EVERY_KIND[1:]),
    "valid-longest-heartbeat-silent": bytes([VALID | SILENT, 0xE0]) + PING,
    "valid-shortest-heartbeat-silent": bytes([VALID | SILENT, 0x00]) + PING + SYNC,
}

for target, seeds in (("frame_decoder", DECODER), ("login", LOGIN)):
    for name, data in seeds.items():
        with open(os.path.join(HERE, "corpus", target, "seed-" + name), "wb") as f:
            f.write(data)
