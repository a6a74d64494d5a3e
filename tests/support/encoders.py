#!/usr/bin/env python3
"""Independent encoders the codec tests drive through ctypes, for codecs
Debian's ffmpeg and sox cannot encode: G.729 Annex A (Belledonne's
libbcg729) and AMR-WB (VisualOn's libvo-amrwbenc).

usage: encoders.py g729|g729b|amrwb IN.raw OUT
IN.raw: signed 16-bit little-endian mono PCM (8 kHz for G.729, 16 kHz for
AMR-WB). OUT: G.729 frames back to back (10 bytes each), for g729b
(Annex B, VAD on) each 10 ms frame as a length byte then its bytes (10
speech, 2 SID, 0 not sent), or an AMR-WB storage file (RFC 4867 section
5, "#!AMR-WB\\n" then frames)."""
import ctypes
import sys


def g729(pcm, out, vad=False):
    lib = ctypes.CDLL("libbcg729.so.0")
    lib.initBcg729EncoderChannel.restype = ctypes.c_void_p
    lib.initBcg729EncoderChannel.argtypes = [ctypes.c_uint8]
    lib.bcg729Encoder.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    ctx = lib.initBcg729EncoderChannel(1 if vad else 0)
    frame = ctypes.create_string_buffer(10)
    length = ctypes.c_uint8(0)
    for i in range(0, len(pcm) - 159, 160):
        block = ctypes.create_string_buffer(pcm[i:i + 160], 160)
        lib.bcg729Encoder(ctx, block, frame, ctypes.byref(length))
        if vad:
            out.write(bytes([length.value]))
        out.write(frame.raw[: length.value])


def amrwb(pcm, out):
    lib = ctypes.CDLL("libvo-amrwbenc.so.0")
    lib.E_IF_init.restype = ctypes.c_void_p
    lib.E_IF_encode.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
    st = lib.E_IF_init()
    buf = ctypes.create_string_buffer(64)
    out.write(b"#!AMR-WB\n")
    for i in range(0, len(pcm) - 639, 640):
        block = ctypes.create_string_buffer(pcm[i:i + 640], 640)
        # Mode 8: 23.85 kbit/s.
        n = lib.E_IF_encode(st, 8, block, buf, 0)
        out.write(buf.raw[:n])


def main():
    kind, src, dst = sys.argv[1:4]
    pcm = open(src, "rb").read()
    with open(dst, "wb") as out:
        if kind == "g729b":
            g729(pcm, out, vad=True)
        else:
            {"g729": g729, "amrwb": amrwb}[kind](pcm, out)


if __name__ == "__main__":
    main()
