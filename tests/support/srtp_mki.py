#!/usr/bin/env python3
"""An SRTP sender written from RFC 3711 alone (AES_CM_128_HMAC_SHA1_80,
with an MKI), on the `cryptography` package's AES and HMAC: independent of
libsrtp. Packets before SWITCH use master key 1 (MKI 1), the rest master
key 2 (MKI 2): a rekey signalled by MKI, as RFC 4568 allows with several
key parameters on one a=crypto line.

usage: srtp_mki.py KEY1_HEX KEY2_HEX SWITCH IN OUT
KEYn: 30 bytes (16-byte master key, 14-byte master salt). IN, OUT:
packets, each preceded by its length as 2 bytes big-endian."""
import hashlib
import hmac
import struct
import sys

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

MKI_LEN = 4


def prf(master_key, master_salt, label, n):
    """RFC 3711 4.3.1 with key_derivation_rate 0: x = (label << 48) XOR salt."""
    x = int.from_bytes(master_salt, "big") ^ (label << 48)
    iv = (x << 16).to_bytes(16, "big")
    enc = Cipher(algorithms.AES(master_key), modes.CTR(iv)).encryptor()
    return enc.update(b"\0" * n)


def session(master):
    mk, ms = master[:16], master[16:30]
    return prf(mk, ms, 0, 16), prf(mk, ms, 1, 20), prf(mk, ms, 2, 14)


def protect(pkt, keys, mki, roc):
    ke, ka, ks = keys
    cc = pkt[0] & 0x0F
    hlen = 12 + 4 * cc
    if pkt[0] & 0x10:
        (xlen,) = struct.unpack(">H", pkt[hlen + 2 : hlen + 4])
        hlen += 4 + 4 * xlen
    seq = struct.unpack(">H", pkt[2:4])[0]
    ssrc = struct.unpack(">I", pkt[8:12])[0]
    index = (roc << 16) | seq
    iv = (int.from_bytes(ks, "big") << 16) ^ (ssrc << 64) ^ (index << 16)
    enc = Cipher(algorithms.AES(ke), modes.CTR(iv.to_bytes(16, "big"))).encryptor()
    body = pkt[:hlen] + enc.update(pkt[hlen:])
    tag = hmac.new(ka, body + struct.pack(">I", roc), hashlib.sha1).digest()[:10]
    return body + mki + tag


def main():
    k1, k2, switch, src, dst = sys.argv[1:6]
    keys = [session(bytes.fromhex(k1)), session(bytes.fromhex(k2))]
    mkis = [(1).to_bytes(MKI_LEN, "big"), (2).to_bytes(MKI_LEN, "big")]
    data = open(src, "rb").read()
    out = bytearray()
    i, n, roc, last = 0, 0, 0, None
    while i < len(data):
        (ln,) = struct.unpack(">H", data[i : i + 2])
        pkt = data[i + 2 : i + 2 + ln]
        seq = struct.unpack(">H", pkt[2:4])[0]
        if last is not None and seq < last:
            roc += 1
        last = seq
        k = 0 if n < int(switch) else 1
        p = protect(pkt, keys[k], mkis[k], roc)
        out += struct.pack(">H", len(p)) + p
        i += 2 + ln
        n += 1
    open(dst, "wb").write(bytes(out))


if __name__ == "__main__":
    main()
