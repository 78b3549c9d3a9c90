//! The ownership bitmap: which segments are owned (bit set) and which are free.
//!
//! Knows nothing of mappings, futexes or descriptors: it is a set of
//! `count` bits over a slice of `AtomicU64`, so loom, proptest and the fuzz
//! targets drive it directly.
//!
//! Invariants:
//! - a bit goes 0 -> 1 only through a successful compare-and-swap in
//!   [`Bitmap::try_claim`], so two claimers never get the same segment;
//! - padding bits (index >= count in the last word) are set at creation and
//!   are never handed out, even if a peer clears them.
//!
//! Orderings: `release` clears with `Release` and `try_claim` sets with
//! `Acquire`, so everything the previous owner did with the segment's bytes
//! happens-before everything the next owner does with them.

use crate::sync::{AtomicU64, Ordering};

/// How many failed compare-and-swaps one claim tolerates before it gives up.
/// Honest contention never gets near this; it bounds a hostile peer that
/// flips bits forever.
const CAS_BUDGET: u32 = 1 << 16;

/// A view of the bitmap words in the control page.
#[derive(Clone, Copy, Debug)]
pub struct Bitmap<'a> {
    words: &'a [AtomicU64],
    count: usize,
}

impl<'a> Bitmap<'a> {
    /// The bitmap of `count` segments over `words` (`ceil(count/64)` of them).
    pub fn new(words: &'a [AtomicU64], count: usize) -> Self {
        debug_assert_eq!(words.len(), count.div_ceil(64));
        Bitmap { words, count }
    }

    /// Marks every segment free and every padding bit owned. Creator only.
    pub fn init(&self) {
        for (i, w) in self.words.iter().enumerate() {
            let valid = (self.count - i * 64).min(64);
            let padding = if valid == 64 { 0 } else { !0u64 << valid };
            w.store(padding, Ordering::Relaxed);
        }
    }

    /// Claims any free segment and returns its index, or `None` if all are owned.
    #[inline]
    pub fn try_claim(&self) -> Option<usize> {
        let mut budget = CAS_BUDGET;
        for (i, w) in self.words.iter().enumerate() {
            let valid = (self.count - i * 64).min(64);
            let padding = if valid == 64 { 0 } else { !0u64 << valid };
            // Relaxed: a stale value only costs a failed CAS below.
            let mut cur = w.load(Ordering::Relaxed);
            loop {
                let free = !(cur | padding);
                if free == 0 {
                    break;
                }
                let bit = free.trailing_zeros();
                match w.compare_exchange_weak(
                    cur,
                    cur | (1 << bit),
                    // Acquire pairs with the Release in `release`.
                    Ordering::Acquire,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return Some(i * 64 + bit as usize),
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

    /// Returns segment `seg` to the free set. Returns whether it was owned
    /// (false means a double free: a corrupt peer, never our own code).
    #[inline]
    pub fn release(&self, seg: usize) -> bool {
        let (w, bit) = (seg / 64, 1u64 << (seg % 64));
        // Release pairs with the Acquire in `try_claim`.
        #[cfg(not(segpool_mutant = "relaxed_release"))]
        let order = Ordering::Release;
        #[cfg(segpool_mutant = "relaxed_release")] // loom-tests mutant
        let order = Ordering::Relaxed;
        self.words[w].fetch_and(!bit, order) & bit != 0
    }

    /// Whether segment `seg` is owned right now (a racy snapshot).
    pub fn is_owned(&self, seg: usize) -> bool {
        self.words[seg / 64].load(Ordering::Relaxed) & (1 << (seg % 64)) != 0
    }

    /// How many segments are free right now (a racy snapshot).
    #[cfg(test)]
    pub fn free_count(&self) -> usize {
        (0..self.count).filter(|&s| !self.is_owned(s)).count()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn words(count: usize) -> Vec<AtomicU64> {
        (0..count.div_ceil(64)).map(|_| AtomicU64::new(0)).collect()
    }

    #[test]
    fn hands_out_each_segment_once_then_none() {
        for count in [1, 63, 64, 65, 130] {
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
    fn release_frees_exactly_that_segment_out_of_order() {
        let w = words(70);
        let b = Bitmap::new(&w, 70);
        b.init();
        while b.try_claim().is_some() {}
        assert!(b.release(66));
        assert!(b.release(3));
        assert_eq!(b.free_count(), 2);
        let mut again = vec![b.try_claim().unwrap(), b.try_claim().unwrap()];
        again.sort();
        assert_eq!(again, vec![3, 66]);
        assert_eq!(b.try_claim(), None);
    }

    #[test]
    fn double_release_is_reported() {
        let w = words(8);
        let b = Bitmap::new(&w, 8);
        b.init();
        let s = b.try_claim().unwrap();
        assert!(b.release(s));
        assert!(!b.release(s));
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
