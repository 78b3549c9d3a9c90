//! A hint that a shared word is about to be written: `prefetch_write`.
//!
//! A read-modify-write of a line another core wrote last costs a load miss
//! that fetches the line shared, then a second trip to take it exclusive
//! for the write. Asking for it exclusive before the load (x86's
//! `PREFETCHW`) makes that one trip. The hint changes nothing any thread
//! can observe: no value, no ordering; under loom it is nothing at all.

/// Asks for the cache line holding `word` in a state ready to be written.
#[inline(always)]
pub(crate) fn prefetch_write<T>(word: &T) {
    prefetch_write_at(std::ptr::from_ref(word).cast());
}

/// [`prefetch_write`] by address: any address, even a dangling one, since
/// the hint never touches memory.
#[inline(always)]
pub(crate) fn prefetch_write_at(word: *const u8) {
    #[cfg(all(target_arch = "x86_64", not(loom)))]
    // SAFETY: PREFETCHW only hints the cache: it reads and writes no
    // register or memory that Rust sees, never faults (not even on a bad
    // address), and leaves the flags alone, as the options say. Every
    // AMD64 processor has it (3DNow! prefetch, CPUID 8000_0001h ECX bit
    // 8); Intel's have it from Broadwell on and decode its opcode (0F 0D)
    // as a no-op before, which is why 64-bit Windows 8.1, which requires
    // PREFETCHW, runs on them. Checking the CPUID bit here would cost two
    // instructions per hint on the fast path.
    unsafe {
        core::arch::asm!(
            "prefetchw [{0}]",
            in(reg) word,
            options(nostack, preserves_flags, readonly),
        );
    }
    #[cfg(any(not(target_arch = "x86_64"), loom))]
    let _ = word;
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn the_hint_touches_no_memory_whatever_the_address() {
        prefetch_write_at(std::ptr::null());
        prefetch_write_at(std::ptr::dangling::<u8>());
        prefetch_write_at(std::ptr::without_provenance(usize::MAX));
        let word = 7u64;
        prefetch_write(&word);
        assert_eq!(word, 7);
    }
}
