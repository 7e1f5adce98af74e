//! Cache-line flush, store fence and non-temporal copy, picked at run time.
#![allow(
    unsafe_code,
    reason = "cache-line flush, fence and non-temporal copy instructions (inline asm and intrinsics)"
)]

use super::FlushInstr;

/// Writes at least this long (a page) use non-temporal stores, as the kernel's
/// DAX write path does (`memcpy_flushcache`): they bypass the cache, so only a
/// fence is needed to make them durable, they skip the read-for-ownership of
/// each line, and they do not evict hot data. Measured here (P2-write, 4 KiB
/// random overwrites over 64 MiB): 2.17 M/s against 1.68 M/s with memcpy.
/// The cost: data written this way is not in the cache, so a program that
/// reads it back at once pays a miss; writes into mapped files therefore use
/// cached stores (`Device::write_cached`; LMDB through the shim 0.66x -> 0.79x
/// of tmpfs).
pub const NT_THRESHOLD: usize = 4 << 10;

/// The best flush instruction this CPU has: clwb > clflushopt > clflush (CPUID).
pub fn detect_flush_instr() -> FlushInstr {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::__cpuid_count;
        // CPUID is available on every x86-64 CPU; leaf 7 exists when the max leaf
        // (leaf 0 EAX) is >= 7.
        let max = __cpuid_count(0, 0).eax;
        if max >= 7 {
            let ebx = __cpuid_count(7, 0).ebx;
            if ebx & (1 << 24) != 0 {
                return FlushInstr::Clwb;
            }
            if ebx & (1 << 23) != 0 {
                return FlushInstr::Clflushopt;
            }
        }
        let edx = __cpuid_count(1, 0).edx;
        if edx & (1 << 19) != 0 {
            return FlushInstr::Clflush;
        }
    }
    FlushInstr::None
}

/// Write back the cache lines covering `[ptr, ptr+len)`.
///
/// # Safety
/// `[ptr, ptr+len)` must be mapped memory of this process (flushing does not
/// change its content, but touching an unmapped address faults).
pub unsafe fn flush_lines(ptr: *const u8, len: usize, instr: FlushInstr) {
    if len == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        let start = ptr as usize & !63;
        let end = ptr as usize + len;
        let mut p = start;
        while p < end {
            // SAFETY: `p` lies in a cache line that overlaps the caller's mapped
            // range (the caller's contract); these instructions only write the line
            // back and never modify memory or registers other than flags.
            unsafe {
                match instr {
                    FlushInstr::Clwb => {
                        std::arch::asm!("clwb [{0}]", in(reg) p, options(nostack, preserves_flags))
                    }
                    FlushInstr::Clflushopt => {
                        std::arch::asm!("clflushopt [{0}]", in(reg) p, options(nostack, preserves_flags))
                    }
                    FlushInstr::Clflush => {
                        std::arch::asm!("clflush [{0}]", in(reg) p, options(nostack, preserves_flags))
                    }
                    FlushInstr::None => return,
                }
            }
            p += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (ptr, instr);
}

/// Order every earlier flush and non-temporal store of this thread before later stores.
pub fn sfence() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: sfence has no operands and no memory effects beyond ordering; SSE is
    // part of the x86-64 baseline.
    unsafe {
        std::arch::x86_64::_mm_sfence()
    };
    // ORDERING: a full CPU fence orders this thread's earlier stores before
    // its later ones; elsewhere than x86-64 `flush_lines` writes nothing back,
    // so this gives ordering only, not durability.
    #[cfg(not(target_arch = "x86_64"))]
    std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
}

/// Copy `src` to `dst` with non-temporal stores for the 16-byte-aligned middle;
/// the unaligned head and tail are copied normally and flushed with `instr`.
/// A following [`sfence`] makes the whole copy durable.
///
/// # Safety
/// `dst..dst+src.len()` must be valid for writes and not overlap `src`.
pub unsafe fn copy_nt(dst: *mut u8, src: &[u8], instr: FlushInstr) {
    let len = src.len();
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_stream_si128};
        let head = (dst as usize).wrapping_neg() & 15;
        let head = head.min(len);
        let body = (len - head) & !15;
        let tail = len - head - body;
        // SAFETY: all three copies stay inside `dst..dst+len` and `src`, which the
        // caller guarantees valid and disjoint; `dst+head` is 16-byte aligned as
        // `_mm_stream_si128` requires; loads are unaligned loads.
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), dst, head);
            flush_lines(dst, head, instr);
            let mut i = 0;
            while i < body {
                let v = _mm_loadu_si128(src.as_ptr().add(head + i) as *const __m128i);
                _mm_stream_si128(dst.add(head + i) as *mut __m128i, v);
                i += 16;
            }
            std::ptr::copy_nonoverlapping(
                src.as_ptr().add(head + body),
                dst.add(head + body),
                tail,
            );
            flush_lines(dst.add(head + body), tail, instr);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: as documented for the caller.
    unsafe {
        let _ = instr;
        std::ptr::copy_nonoverlapping(src.as_ptr(), dst, len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn d2_flush_instruction_detected_from_cpuid() {
        let i = detect_flush_instr();
        #[cfg(target_arch = "x86_64")]
        assert_ne!(i, FlushInstr::None, "every x86-64 CPU has at least clflush");
        let mut buf = vec![1u8; 4096];
        // SAFETY: `buf` is live, mapped memory of this process.
        unsafe { flush_lines(buf.as_ptr(), buf.len(), i) };
        sfence();
        buf[0] = 2;
        assert_eq!(buf[0], 2);
    }

    #[test]
    fn d2_nontemporal_copy_all_alignments() {
        let src: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        let instr = detect_flush_instr();
        for dst_off in 0..17 {
            for len in [0, 1, 15, 16, 17, 31, 64, 100, 257] {
                let mut dst = vec![0u8; 320];
                // SAFETY: dst_off + len <= 17 + 257 < 320, so the destination is
                // inside `dst`; `src` and `dst` are different allocations.
                unsafe { copy_nt(dst.as_mut_ptr().add(dst_off), &src[..len], instr) };
                sfence();
                assert_eq!(
                    &dst[dst_off..dst_off + len],
                    &src[..len],
                    "off {dst_off} len {len}"
                );
                assert!(dst[..dst_off].iter().all(|&b| b == 0));
                assert!(dst[dst_off + len..].iter().all(|&b| b == 0));
            }
        }
    }
}
