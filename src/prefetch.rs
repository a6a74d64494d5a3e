//! Software prefetch for the media path.
//!
//! A shard worker holds hundreds of calls whose state (jitter rings, WAV
//! buffers) does not fit the core's cache, and packets of different calls
//! interleave, so nearly every packet's state is a cache miss that the
//! hardware prefetcher cannot predict. The worker knows from its ring which
//! calls the next packets belong to, so it asks for their memory a few
//! packets ahead and the loads overlap instead of queueing one after the
//! other. A prefetch is only a hint: it never faults and changes no result.

/// Asks for the cache line holding `p` (any address, valid or not).
#[inline(always)]
pub fn line<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch does not access memory architecturally; any
    // address is allowed, and SSE is part of the x86_64 baseline.
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// Asks for every cache line of `bytes` bytes from `p`.
#[inline(always)]
pub fn range<T>(p: *const T, bytes: usize) {
    let start = p as usize & !63;
    let end = p as usize + bytes;
    let mut a = start;
    while a < end {
        line(a as *const u8);
        a += 64;
    }
}
