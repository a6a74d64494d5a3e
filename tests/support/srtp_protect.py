#!/usr/bin/env python3
"""SRTP-protects RTP packets with pylibsrtp (PyPI; its own libsrtp build),
an implementation independent of the one callrec links.

usage: srtp_protect.py PROFILE KEY_HEX IN OUT
PROFILE: AES128_CM_SHA1_80 | AES128_CM_SHA1_32 | AEAD_AES_128_GCM | AEAD_AES_256_GCM
IN, OUT: packets, each preceded by its length as 2 bytes big-endian."""
import struct
import sys

from pylibsrtp import Policy, Session


def main():
    profile, key_hex, src, dst = sys.argv[1:5]
    policy = Policy(
        key=bytes.fromhex(key_hex),
        ssrc_type=Policy.SSRC_ANY_OUTBOUND,
        srtp_profile=getattr(Policy, "SRTP_PROFILE_" + profile),
    )
    session = Session(policy=policy)
    data = open(src, "rb").read()
    out = bytearray()
    i = 0
    while i < len(data):
        (n,) = struct.unpack(">H", data[i : i + 2])
        pkt = session.protect(data[i + 2 : i + 2 + n])
        out += struct.pack(">H", len(pkt)) + pkt
        i += 2 + n
    open(dst, "wb").write(bytes(out))


if __name__ == "__main__":
    main()
