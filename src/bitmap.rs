//! The segment index: which segments are taken (bit set) and which are free,
//! plus one flag per word that says "a producer may be asleep".
//!
//! Since protocol v2 the descriptor owns a segment and this bitmap is an
//! index of the descriptors that lets a producer find a free one in one
//! scan. It can lag behind them for a few instructions (a claimer between
//! its bit and its descriptor, a releaser between its descriptor and its
//! bit) or for good when a process dies there; `Control::scrub` rebuilds it
//! from the descriptors. It knows nothing of mappings, futexes or
//! descriptors: it is `count` bits over a slice of `AtomicU64`, so loom,
//! proptest and the fuzz targets drive it directly.
//!
//! ```text
//! word i (AtomicU64)
//!  63       62                                   0
//! +--------+--------------------------------------+
//! | WAITER | segments 63*i .. 63*i+62 (1 = taken) |
//! +--------+--------------------------------------+
//! ```
//!
//! Invariants:
//! - a bit goes 0 -> 1 only through a successful compare-and-swap in
//!   [`Bitmap::try_claim`], so two claimers never get the same bit (a
//!   claimer that then finds the descriptor owned keeps the bit: it is
//!   right for an owned segment);
//! - padding bits (index >= count in the last word) are set at creation and
//!   are never handed out, even if a peer clears them;
//! - `WAITER` is set only by [`Bitmap::arm`] (a producer about to sleep)
//!   and cleared only together with a segment's bit by [`Bitmap::release`],
//!   whose caller then wakes every sleeper. A producer that dies asleep
//!   therefore costs the next release one `FUTEX_WAKE`, and no more.
//!
//! Orderings: `release` clears with `Release` and `try_claim` sets with
//! `Acquire`, so everything the previous owner did with the segment's bytes
//! happens-before everything the next owner does with them. `arm` and
//! `release` are read-modify-writes of one word (AcqRel), which is what
//! orders a sleeper against its waker without `SeqCst` (see
//! `crate::protocol`).

use crate::layout::BITS_PER_WORD;
use crate::sync::{AtomicU64, Ordering, prefetch_write};

/// How many failed compare-and-swaps one claim tolerates before it gives up.
/// Honest contention never gets near this; it bounds a hostile peer that
/// flips bits forever.
const CAS_BUDGET: u32 = 1 << 16;

/// The "a producer may be asleep" flag of a word.
pub const WAITER: u64 = 1 << 63;
/// The segment bits of a word.
const SEGMENTS: u64 = !WAITER;

/// The word and the bit of segment `seg`: no division for the first
/// word's segments (every pool of up to 63), and one in 32 bits for the
/// rest (`seg` < `MAX_COUNT`), cheaper than in 64.
#[inline]
fn locate(seg: usize) -> (usize, u64) {
    if seg < BITS_PER_WORD {
        (0, 1u64 << seg)
    } else {
        locate_beyond(seg)
    }
}

/// [`locate`] past the first word, kept out of line so that the division
/// is never worked out ahead for the first word's segments.
#[inline(never)]
fn locate_beyond(seg: usize) -> (usize, u64) {
    const BITS: u32 = BITS_PER_WORD as u32;
    const _: () = assert!(crate::layout::MAX_COUNT <= u32::MAX as usize);
    let seg = seg as u32;
    ((seg / BITS) as usize, 1u64 << (seg % BITS))
}

/// A view of the bitmap words in the control page.
#[derive(Clone, Copy, Debug)]
pub struct Bitmap<'a> {
    words: &'a [AtomicU64],
    count: usize,
    /// The padding bits of the last word (the others have none), worked
    /// out once rather than on every scan.
    last_padding: u64,
}

impl<'a> Bitmap<'a> {
    /// A bitmap of `count` segments over `count.div_ceil(63)` words.
    pub fn new(words: &'a [AtomicU64], count: usize) -> Self {
        debug_assert_eq!(words.len(), count.div_ceil(BITS_PER_WORD));
        let last_valid = count - count.saturating_sub(1) / BITS_PER_WORD * BITS_PER_WORD;
        Bitmap {
            words,
            count,
            last_padding: SEGMENTS & !((1u64 << last_valid) - 1),
        }
    }

    /// Padding bits of word `i`: set, so they are never free.
    #[inline]
    fn padding(&self, i: usize) -> u64 {
        if i + 1 == self.words.len() {
            self.last_padding
        } else {
            0
        }
    }

    /// All free, no waiter. Creator only, before sharing.
    pub fn init(&self) {
        for (i, w) in self.words.iter().enumerate() {
            w.store(self.padding(i), Ordering::Relaxed);
        }
    }

    /// Sets the bit of some free segment and returns its index, lowest
    /// first (a fresh pool hands out segment 0 first).
    #[inline]
    pub fn try_claim(&self) -> Option<usize> {
        let mut budget = CAS_BUDGET;
        for (i, w) in self.words.iter().enumerate() {
            let padding = self.padding(i);
            // Relaxed: a stale value only costs a failed CAS.
            let mut cur = w.load(Ordering::Relaxed);
            loop {
                let free = !(cur | padding) & SEGMENTS;
                if free == 0 {
                    break;
                }
                let bit = free.trailing_zeros();
                // Acquire pairs with the Release `fetch_and` in `release`.
                match w.compare_exchange_weak(
                    cur,
                    cur | (1 << bit),
                    Ordering::Acquire,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return Some(i * BITS_PER_WORD + bit as usize),
                    Err(actual) => cur = actual,
                }
                budget -= 1;
                if budget == 0 {
                    return None;
                }
            }
        }
        None
    }

    /// Fetches the first word ready to be written, for a claim about to
    /// scan it (a cache hint, see `crate::sync::prefetch_write`). Only a
    /// claim's first try asks: a producer polling a full pool must not
    /// take the line from the releasing consumer on every poll.
    #[inline]
    pub fn prefetch_claim(&self) {
        if let Some(w) = self.words.first() {
            prefetch_write(w);
        }
    }

    /// Clears `seg`'s bit and the word's waiter flag. Returns whether the
    /// flag was set: then the caller must wake every sleeping producer.
    #[inline]
    pub fn release(&self, seg: usize) -> bool {
        let (w, bit) = locate(seg);
        // Release pairs with the Acquire CAS in `try_claim`: the previous
        // owner's accesses happen-before the next owner's. Acquire pairs
        // with the Release half of `arm`: a producer's sequence load before
        // it armed happens-before our wake-up (see `crate::protocol`).
        #[cfg(not(segpool_mutant = "relaxed_release"))]
        let order = Ordering::AcqRel;
        #[cfg(segpool_mutant = "relaxed_release")] // loom-tests mutant
        let order = Ordering::Acquire;
        let word = &self.words[w];
        // A claimer wrote the word last, most likely: on x86 this RMW is a
        // load and a CAS, so fetch the line ready to be written.
        prefetch_write(word);
        let prev = word.fetch_and(!(bit | WAITER), order);
        #[cfg(segpool_mutant = "flag_ignored")] // loom-tests mutant: flag not reported
        let prev = prev & !WAITER;
        prev & WAITER != 0
    }

    /// Clears the waiter flag on every word, after a release found one and
    /// before its caller wakes every sleeper: each woken producer flags the
    /// words again before it sleeps again, and one that flagged and has not
    /// slept yet will find the sequence bumped (see `crate::protocol`). So
    /// one sleep costs one wake-up, not one per word.
    pub fn disarm(&self) {
        for w in self.words {
            // Relaxed load: only decides whether to write. AcqRel RMW: the
            // same handshake as `release` for the flag it clears.
            if w.load(Ordering::Relaxed) & WAITER != 0 {
                w.fetch_and(!WAITER, Ordering::AcqRel);
            }
        }
    }

    /// Sets the waiter flag on every word (a producer about to sleep).
    /// Returns whether any segment was free meanwhile: then the producer
    /// must try again instead of sleeping.
    pub fn arm(&self) -> bool {
        let mut free = false;
        for (i, w) in self.words.iter().enumerate() {
            // AcqRel: pairs with `release` (the other end of the handshake).
            let prev = w.fetch_or(WAITER, Ordering::AcqRel);
            free |= !(prev | self.padding(i)) & SEGMENTS != 0;
        }
        free
    }

    /// Whether `seg`'s bit is set (a snapshot).
    pub fn is_owned(&self, seg: usize) -> bool {
        let (w, bit) = locate(seg);
        self.words[w].load(Ordering::Relaxed) & bit != 0
    }

    /// Whether any word has its waiter flag set (a snapshot).
    pub fn armed(&self) -> bool {
        self.words
            .iter()
            .any(|w| w.load(Ordering::Relaxed) & WAITER != 0)
    }

    /// Number of clear bits (a snapshot).
    pub fn free_count(&self) -> usize {
        (0..self.count).filter(|&s| !self.is_owned(s)).count()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn words(count: usize) -> Vec<AtomicU64> {
        (0..count.div_ceil(BITS_PER_WORD))
            .map(|_| AtomicU64::new(0))
            .collect()
    }

    #[test]
    fn hands_out_each_segment_once_then_none() {
        for count in [1, 62, 63, 64, 126, 130] {
            let w = words(count);
            let b = Bitmap::new(&w, count);
            b.init();
            let mut got: Vec<usize> = std::iter::from_fn(|| b.try_claim()).collect();
            got.sort();
            assert_eq!(got, (0..count).collect::<Vec<_>>(), "count {count}");
            assert_eq!(b.free_count(), 0);
        }
    }

    #[test]
    fn a_fresh_bitmap_hands_out_segment_zero_first() {
        let w = words(8);
        let b = Bitmap::new(&w, 8);
        b.init();
        assert_eq!(b.try_claim(), Some(0));
    }

    #[test]
    fn release_frees_exactly_that_segment_out_of_order() {
        let w = words(70);
        let b = Bitmap::new(&w, 70);
        b.init();
        while b.try_claim().is_some() {}
        assert!(!b.release(66));
        assert!(!b.release(3));
        assert_eq!(b.free_count(), 2);
        let mut again = vec![b.try_claim().unwrap(), b.try_claim().unwrap()];
        again.sort();
        assert_eq!(again, vec![3, 66]);
        assert_eq!(b.try_claim(), None);
    }

    #[test]
    fn arming_reports_a_free_segment_and_the_next_release_reports_the_flag_once() {
        let w = words(70);
        let b = Bitmap::new(&w, 70);
        b.init();
        assert!(b.arm(), "all free: no reason to sleep");
        while b.try_claim().is_some() {}
        assert!(!b.arm(), "full: sleep");
        assert!(b.armed());
        assert!(b.release(5), "the flag of word 0 was set: wake");
        assert!(!b.release(6), "cleared with the first release");
        assert!(b.release(64), "word 1 had its own flag");
        assert!(!b.armed());
    }

    #[test]
    fn cleared_padding_bits_are_never_handed_out() {
        let w = words(3);
        let b = Bitmap::new(&w, 3);
        b.init();
        w[0].store(0, Ordering::Relaxed); // a peer clears the padding
        let got: Vec<usize> = std::iter::from_fn(|| b.try_claim()).collect();
        assert_eq!(got, vec![0, 1, 2]);
    }
}
