#!/usr/bin/env python3
"""Independent encoders the codec tests drive through ctypes, for codecs
Debian's ffmpeg and sox cannot encode: G.729 Annex A (Belledonne's
libbcg729), AMR-WB (VisualOn's libvo-amrwbenc) and iLBC (the RFC 3951
reference encoder that pjproject builds into the `pjsua2-python` wheel
from PyPI: its `initEncode` and `iLBC_encode` are exported C symbols).

usage: encoders.py g729|g729b|amrwb|ilbc20|ilbc30 IN.raw OUT
IN.raw: signed 16-bit little-endian mono PCM (8 kHz for G.729, 16 kHz for
AMR-WB). OUT: G.729 frames back to back (10 bytes each), for g729b
(Annex B, VAD on) each 10 ms frame as a length byte then its bytes (10
speech, 2 SID, 0 not sent), or an AMR-WB storage file (RFC 4867 section
5, "#!AMR-WB\\n" then frames), or iLBC frames back to back (38 bytes
for 20 ms, 50 for 30 ms)."""
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


def ilbc(pcm, out, mode):
    import importlib.util
    import os

    # The extension module itself is not imported (it needs no Python
    # state for these functions); ctypes loads it for its C symbols.
    spec = importlib.util.find_spec("pjsua2")
    folder = spec.submodule_search_locations[0]
    so = next(f for f in os.listdir(folder) if f.startswith("_pjsua2") and f.endswith(".so"))
    lib = ctypes.CDLL(os.path.join(folder, so))
    # RFC 3951 appendix A.1: iLBC_Enc_Inst_t is a few KiB; generously sized.
    inst = ctypes.create_string_buffer(1 << 16)
    lib.initEncode.restype = ctypes.c_short
    nbytes = lib.initEncode(inst, mode)
    assert nbytes == {20: 38, 30: 50}[mode], nbytes
    block_len = 8 * mode
    samples = len(pcm) // 2
    frame = ctypes.create_string_buffer(64)
    for i in range(0, samples - block_len + 1, block_len):
        block = (ctypes.c_float * block_len)(
            *[int.from_bytes(pcm[2 * j : 2 * j + 2], "little", signed=True) for j in range(i, i + block_len)]
        )
        lib.iLBC_encode(frame, block, inst)
        out.write(frame.raw[:nbytes])


def main():
    kind, src, dst = sys.argv[1:4]
    pcm = open(src, "rb").read()
    with open(dst, "wb") as out:
        if kind == "g729b":
            g729(pcm, out, vad=True)
        elif kind.startswith("ilbc"):
            ilbc(pcm, out, int(kind[4:]))
        else:
            {"g729": g729, "amrwb": amrwb}[kind](pcm, out)


if __name__ == "__main__":
    main()
