//! G.711 in AVX2 registers, 16 samples in 16-bit lanes at a time, for
//! [`super::decode_law_into`], [`super::encode_law_into`] and
//! [`super::encode_law_stereo_into`]: the reference algorithm of
//! `ulaw_to_linear`, `alaw_to_linear`, `linear14_to_ulaw` and
//! `linear13_to_alaw` (ITU-T G.711, as in the classic Sun `g711.c`).
//! AVX2 has no 16-bit variable shift, so a per-lane shift by the segment
//! is a multiply by a power of two that `pshufb` looks up in a 16-byte
//! table. Every intermediate fits in 16 bits: the largest magnitude is
//! 32,256.

use super::Law;
use std::arch::x86_64::*;

/// Decodes whole blocks of 16 codes; returns how many it decoded.
#[target_feature(enable = "avx2")]
pub(super) fn decode_avx2(law: Law, payload: &[u8], out: &mut [i16]) -> usize {
    let blocks = payload.len().min(out.len()) / 16;
    for (src, dst) in payload
        .chunks_exact(16)
        .zip(out.chunks_exact_mut(16))
        .take(blocks)
    {
        // SAFETY: `src` is 16 readable bytes and `dst` 16 writable
        // samples (32 bytes); both accesses are unaligned ones.
        unsafe {
            let codes = _mm_loadu_si128(src.as_ptr().cast());
            let v = match law {
                Law::Ulaw => ulaw16(codes),
                Law::Alaw => alaw16(codes),
            };
            _mm256_storeu_si256(dst.as_mut_ptr().cast(), v);
        }
    }
    blocks * 16
}

/// Encodes whole blocks of 16 samples; returns how many it encoded.
#[target_feature(enable = "avx2")]
pub(super) fn encode_avx2(law: Law, samples: &[i16], out: &mut [u8]) -> usize {
    let blocks = samples.len().min(out.len()) / 16;
    for (src, dst) in samples
        .chunks_exact(16)
        .zip(out.chunks_exact_mut(16))
        .take(blocks)
    {
        // SAFETY: `src` is 16 readable samples (32 bytes) and `dst` 16
        // writable bytes; both accesses are unaligned ones.
        unsafe {
            let codes = encode16(law, _mm256_loadu_si256(src.as_ptr().cast()));
            _mm_storeu_si128(dst.as_mut_ptr().cast(), codes);
        }
    }
    blocks * 16
}

/// Encodes whole blocks of 16 stereo frames into 32 interleaved codes;
/// returns how many frames it encoded.
#[target_feature(enable = "avx2")]
pub(super) fn encode_stereo_avx2(law: Law, left: &[i16], right: &[i16], out: &mut [u8]) -> usize {
    let blocks = left.len().min(right.len()).min(out.len() / 2) / 16;
    for ((l, r), dst) in left
        .chunks_exact(16)
        .zip(right.chunks_exact(16))
        .zip(out.chunks_exact_mut(32))
        .take(blocks)
    {
        // SAFETY: `l` and `r` are 16 readable samples each and `dst`
        // 32 writable bytes; all accesses are unaligned ones.
        unsafe {
            let a = encode16(law, _mm256_loadu_si256(l.as_ptr().cast()));
            let b = encode16(law, _mm256_loadu_si256(r.as_ptr().cast()));
            let p = dst.as_mut_ptr();
            _mm_storeu_si128(p.cast(), _mm_unpacklo_epi8(a, b));
            _mm_storeu_si128(p.add(16).cast(), _mm_unpackhi_epi8(a, b));
        }
    }
    blocks * 16
}

/// 16 samples to their 16 codes, in order.
#[target_feature(enable = "avx2")]
fn encode16(law: Law, x: __m256i) -> __m128i {
    let codes = match law {
        Law::Ulaw => ulaw_encode16(x),
        Law::Alaw => alaw_encode16(x),
    };
    // Words (all below 256) to bytes.
    _mm_packus_epi16(
        _mm256_castsi256_si128(codes),
        _mm256_extracti128_si256::<1>(codes),
    )
}

/// The segment of each lane's magnitude `v`: how many of the segment
/// ends `ends` lie below it.
#[target_feature(enable = "avx2")]
fn segment(v: __m256i, ends: &[i16]) -> __m256i {
    let mut seg = _mm256_setzero_si256();
    for &e in ends {
        // A true compare is -1 in the lane.
        seg = _mm256_sub_epi16(seg, _mm256_cmpgt_epi16(v, _mm256_set1_epi16(e)));
    }
    seg
}

/// `v >> s` for a segment-dependent shift `s`, as the high half of
/// `v * 2^(16 - s)`; `high[seg]` is the high byte of that power.
#[target_feature(enable = "avx2")]
fn shift_by_segment(v: __m256i, seg: __m256i, high: [i8; 8]) -> __m256i {
    let t = _mm256_broadcastsi128_si256(_mm_setr_epi8(
        high[0], high[1], high[2], high[3], high[4], high[5], high[6], high[7], 0, 0, 0, 0, 0, 0,
        0, 0,
    ));
    // Low byte index 0x80 (zero), high byte index the segment.
    let idx = _mm256_or_si256(_mm256_slli_epi16(seg, 8), _mm256_set1_epi16(0x80));
    _mm256_mulhi_epu16(v, _mm256_shuffle_epi8(t, idx))
}

/// μ-law of the top 14 bits (`linear14_to_ulaw`): magnitude by ones'
/// complement, clipped, biased by 0x21; segment and 4 mantissa bits.
/// Clipping at 8158 instead of the reference's 8159 gives the same
/// code (0x7f before the sign mask) without the reference's segment 8.
#[target_feature(enable = "avx2")]
fn ulaw_encode16(x: __m256i) -> __m256i {
    let v = _mm256_srai_epi16(x, 2);
    let neg = _mm256_cmpgt_epi16(_mm256_setzero_si256(), v);
    let v = _mm256_xor_si256(v, neg);
    let v = _mm256_add_epi16(
        _mm256_min_epi16(v, _mm256_set1_epi16(8158)),
        _mm256_set1_epi16(0x21),
    );
    let seg = segment(v, &[0x3f, 0x7f, 0xff, 0x1ff, 0x3ff, 0x7ff, 0xfff]);
    // v >> (seg + 1): 2^(15 - seg) has high byte 2^(7 - seg).
    let mant = shift_by_segment(v, seg, [-128, 64, 32, 16, 8, 4, 2, 1]);
    let code = _mm256_or_si256(
        _mm256_slli_epi16(seg, 4),
        _mm256_and_si256(mant, _mm256_set1_epi16(0x0f)),
    );
    // Positive: ^0xff; negative: ^0x7f.
    let mask = _mm256_xor_si256(
        _mm256_set1_epi16(0xff),
        _mm256_and_si256(neg, _mm256_set1_epi16(0x80)),
    );
    _mm256_xor_si256(code, mask)
}

/// A-law of the top 13 bits (`linear13_to_alaw`): magnitude by ones'
/// complement; segment and 4 bits shifted by max(segment, 1).
#[target_feature(enable = "avx2")]
fn alaw_encode16(x: __m256i) -> __m256i {
    let v = _mm256_srai_epi16(x, 3);
    let neg = _mm256_cmpgt_epi16(_mm256_setzero_si256(), v);
    let v = _mm256_xor_si256(v, neg);
    let seg = segment(v, &[0x1f, 0x3f, 0x7f, 0xff, 0x1ff, 0x3ff, 0x7ff]);
    // v >> max(seg, 1): 2^(16 - s) has high byte 2^(8 - s).
    let q = shift_by_segment(v, seg, [-128, -128, 64, 32, 16, 8, 4, 2]);
    let code = _mm256_or_si256(
        _mm256_slli_epi16(seg, 4),
        _mm256_and_si256(q, _mm256_set1_epi16(0x0f)),
    );
    // Positive: ^0xd5; negative: ^0x55.
    let mask = _mm256_xor_si256(
        _mm256_set1_epi16(0xd5),
        _mm256_and_si256(neg, _mm256_set1_epi16(0x80)),
    );
    _mm256_xor_si256(code, mask)
}

/// 2^s for the segment in each 16-bit lane's low byte; the high byte
/// is zeroed (an index with bit 7 set makes `pshufb` write zero).
#[target_feature(enable = "avx2")]
fn pow2(seg: __m256i, table: [i8; 16]) -> __m256i {
    let t = _mm256_broadcastsi128_si256(_mm_setr_epi8(
        table[0], table[1], table[2], table[3], table[4], table[5], table[6], table[7], table[8],
        table[9], table[10], table[11], table[12], table[13], table[14], table[15],
    ));
    _mm256_shuffle_epi8(t, _mm256_or_si256(seg, _mm256_set1_epi16(0x8000u16 as i16)))
}

/// μ-law: t = ((mantissa << 3) + 0x84) << segment; ±(t - 0x84).
#[target_feature(enable = "avx2")]
fn ulaw16(codes: __m128i) -> __m256i {
    let u = _mm256_xor_si256(_mm256_cvtepu8_epi16(codes), _mm256_set1_epi16(0xff));
    let mant = _mm256_and_si256(u, _mm256_set1_epi16(0x0f));
    let seg = _mm256_and_si256(_mm256_srli_epi16(u, 4), _mm256_set1_epi16(7));
    let base = _mm256_add_epi16(_mm256_slli_epi16(mant, 3), _mm256_set1_epi16(0x84));
    let pow = pow2(seg, [1, 2, 4, 8, 16, 32, 64, -128, 0, 0, 0, 0, 0, 0, 0, 0]);
    let t = _mm256_sub_epi16(_mm256_mullo_epi16(base, pow), _mm256_set1_epi16(0x84));
    // Sign bit set: negative (0x84 - t = -(t - 0x84)).
    let neg = _mm256_cmpeq_epi16(
        _mm256_and_si256(u, _mm256_set1_epi16(0x80)),
        _mm256_set1_epi16(0x80),
    );
    _mm256_sub_epi16(_mm256_xor_si256(t, neg), neg)
}

/// A-law: t = (mantissa << 4) + 8 in segment 0, else
/// ((mantissa << 4) + 0x108) << (segment - 1); sign bit set: positive.
#[target_feature(enable = "avx2")]
fn alaw16(codes: __m128i) -> __m256i {
    let a = _mm256_xor_si256(_mm256_cvtepu8_epi16(codes), _mm256_set1_epi16(0x55));
    let mant = _mm256_slli_epi16(_mm256_and_si256(a, _mm256_set1_epi16(0x0f)), 4);
    let seg = _mm256_and_si256(_mm256_srli_epi16(a, 4), _mm256_set1_epi16(7));
    let seg0 = _mm256_cmpeq_epi16(seg, _mm256_setzero_si256());
    let add = _mm256_blendv_epi8(_mm256_set1_epi16(0x108), _mm256_set1_epi16(8), seg0);
    let pow = pow2(seg, [1, 1, 2, 4, 8, 16, 32, 64, 0, 0, 0, 0, 0, 0, 0, 0]);
    let t = _mm256_mullo_epi16(_mm256_add_epi16(mant, add), pow);
    let neg = _mm256_cmpeq_epi16(
        _mm256_and_si256(a, _mm256_set1_epi16(0x80)),
        _mm256_setzero_si256(),
    );
    _mm256_sub_epi16(_mm256_xor_si256(t, neg), neg)
}
