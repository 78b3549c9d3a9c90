//! The publish ring: tickets in order, each naming the segment that holds it.
//!
//! `capacity` (a power of two >= count) slots of one `AtomicU64`; slot
//! `t % capacity` serves tickets `t, t + capacity, t + 2*capacity, ...`.
//!
//! ```text
//!  63                    24 23                 0
//! +-----------------------+--------------------+
//! | ticket (low 40 bits)  | segment + 1 (0 = empty)
//! +-----------------------+--------------------+
//! ```
//! - `EMPTY(t)`: the slot waits for ticket `t`;
//! - `FULL(t, s)`: ticket `t` is published and lives in segment `s`.
//!
//! A publisher claims ticket `t` *and* fills its slot with one
//! compare-and-swap `EMPTY(t) -> FULL(t, s)`; a consumer takes it with one
//! compare-and-swap `FULL(t, s) -> EMPTY(t + capacity)`. `tail` and `head`
//! only follow (anyone who sees a filled or emptied slot helps them on), so a
//! process killed between the two steps never wedges the ring.
//!
//! Why a slot is always `EMPTY(t)` when a publisher reaches ticket `t`: the
//! publisher holds a segment, and tickets `t - capacity .. t` would need
//! `capacity >= count` other owned segments if `t - capacity` were still in
//! the ring. The chain that makes this an ordering fact and not only a count
//! (consumer's slot CAS -> release of a segment -> its next claim -> the
//! tail CAS this publisher acquires) is spelled out in `docs/protocol.md`.
//! A slot that is *behind* anyway was written by a broken peer:
//! [`Error::Corrupt`].
//!
//! `tail` never trails a taken ticket: the consumer advances it past the
//! ticket it takes, so `reclaimed <= published` holds at every instant.

use crate::error::{Error, Result};
use crate::sync::{AtomicU64, Ordering};

const SEG_BITS: u32 = 24;
const SEG_MASK: u64 = (1 << SEG_BITS) - 1;
const TICKET_MASK: u64 = (1 << (64 - SEG_BITS)) - 1;
/// Bounds every retry loop: honest contention stays far below it, a peer that
/// rewrites the ring forever gets [`Error::Corrupt`] instead of a hang.
const RETRY_BUDGET: u32 = 1 << 20;

#[inline]
const fn empty(t: u64) -> u64 {
    (t & TICKET_MASK) << SEG_BITS
}

#[inline]
const fn full(t: u64, seg: usize) -> u64 {
    empty(t) | (seg as u64 + 1)
}

/// Signed distance, in tickets, from `t` to the ticket a slot word names
/// (40-bit wrapping arithmetic): 0 = same lap, > 0 = slot is ahead.
#[inline]
fn lap(word: u64, t: u64) -> i64 {
    let d = ((word >> SEG_BITS).wrapping_sub(t)) & TICKET_MASK;
    // Sign-extend the 40-bit difference.
    ((d << SEG_BITS) as i64) >> SEG_BITS
}

/// The segment a FULL slot names, or None for an empty one.
#[inline]
fn seg_of(word: u64) -> Option<usize> {
    match word & SEG_MASK {
        0 => None,
        s => Some(s as usize - 1),
    }
}

/// The ring plus its two cursors.
#[derive(Clone, Copy, Debug)]
pub struct Ring<'a> {
    slots: &'a [AtomicU64],
    tail: &'a AtomicU64,
    head: &'a AtomicU64,
}

impl<'a> Ring<'a> {
    /// A view over `slots` (power-of-two length) and the two cursors.
    pub fn new(slots: &'a [AtomicU64], tail: &'a AtomicU64, head: &'a AtomicU64) -> Self {
        debug_assert!(slots.len().is_power_of_two());
        Ring { slots, tail, head }
    }

    /// Sets slot `i` to `EMPTY(i)` and both cursors to 0. Creator only.
    pub fn init(&self) {
        for (i, s) in self.slots.iter().enumerate() {
            s.store(empty(i as u64), Ordering::Relaxed);
        }
        self.tail.store(0, Ordering::Relaxed);
        self.head.store(0, Ordering::Relaxed);
    }

    #[inline]
    fn slot(&self, t: u64) -> &AtomicU64 {
        &self.slots[(t & (self.slots.len() as u64 - 1)) as usize]
    }

    /// Units published so far (the tail cursor).
    pub fn published(&self) -> u64 {
        self.tail.load(Ordering::Acquire)
    }

    /// Publishes segment `seg` (which the caller owns) under the next ticket.
    #[inline]
    pub fn push(&self, seg: usize) -> Result<u64> {
        let mut t = self.tail.load(Ordering::Acquire);
        for _ in 0..RETRY_BUDGET {
            let slot = self.slot(t);
            // Acquire: when we help the tail past a slot another publisher
            // filled, its claim must happen-before our advance: the "slot is
            // EMPTY(t)" chain in docs/protocol.md (loom model m2b).
            let word = slot.load(Ordering::Acquire);
            match lap(word, t) {
                0 if seg_of(word).is_none() => {
                    // AcqRel: Release publishes the payload and descriptor to
                    // the consumer's Acquire load of this slot in `pop`.
                    if slot
                        .compare_exchange(word, full(t, seg), Ordering::AcqRel, Ordering::Relaxed)
                        .is_ok()
                    {
                        self.advance(self.tail, t);
                        return Ok(t);
                    }
                }
                d if d >= 0 => {
                    // Ticket t is already filled (or even taken): help the
                    // tail past it and try the next ticket.
                    t = self.advance(self.tail, t);
                }
                _ => {
                    let now = self.tail.load(Ordering::Acquire);
                    if now == t {
                        return Err(Error::Corrupt(format!(
                            "publish ring slot for ticket {t} still holds an older ticket"
                        )));
                    }
                    t = now;
                }
            }
        }
        Err(Error::Corrupt("publish ring never settles".into()))
    }

    /// Takes the next published ticket: `Some((ticket, segment))`, or `None`
    /// if the next ticket is not published yet.
    ///
    /// The segment index is *not* bounds-checked here: the caller checks it
    /// against `count` before using it.
    ///
    /// With `end` (a value [`published`](Self::published) returned), only
    /// tickets below it are taken: `None` once the next one is not.
    #[inline]
    pub fn pop(&self, end: Option<u64>) -> Result<Option<(u64, usize)>> {
        let cap = self.slots.len() as u64;
        let mut h = self.head.load(Ordering::Acquire);
        for _ in 0..RETRY_BUDGET {
            if end.is_some_and(|e| e.wrapping_sub(h) as i64 <= 0) {
                return Ok(None);
            }
            let slot = self.slot(h);
            // Acquire pairs with the publisher's Release CAS in `push`.
            let word = slot.load(Ordering::Acquire);
            match (lap(word, h), seg_of(word)) {
                (0, None) => return Ok(None),
                (0, Some(seg)) => {
                    if slot
                        .compare_exchange(
                            word,
                            empty(h.wrapping_add(cap)),
                            Ordering::AcqRel,
                            Ordering::Relaxed,
                        )
                        .is_ok()
                    {
                        self.advance(self.head, h);
                        // Keep `published >= taken`: help the tail past h if
                        // its publisher has not yet.
                        if self.tail.load(Ordering::Acquire) == h {
                            self.advance(self.tail, h);
                        }
                        return Ok(Some((h, seg)));
                    }
                }
                (d, _) if d > 0 => h = self.advance(self.head, h),
                _ => {
                    let now = self.head.load(Ordering::Acquire);
                    if now == h {
                        return Err(Error::Corrupt(format!(
                            "publish ring slot for ticket {h} is behind the consumer"
                        )));
                    }
                    h = now;
                }
            }
        }
        Err(Error::Corrupt("publish ring never settles".into()))
    }

    /// Moves `cursor` from `from` to `from + 1` unless someone already moved
    /// it; returns its value afterwards.
    #[inline]
    fn advance(&self, cursor: &AtomicU64, from: u64) -> u64 {
        // AcqRel: every cursor update is an RMW, so an Acquire load of any
        // later value synchronizes with all earlier advances (one release
        // sequence), which is what the "slot is EMPTY(t)" argument needs.
        // Wrapping: a peer may have written any value, u64::MAX included.
        let next = from.wrapping_add(1);
        match cursor.compare_exchange(from, next, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => next,
            Err(now) => now,
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    struct Fixture {
        slots: Vec<AtomicU64>,
        tail: AtomicU64,
        head: AtomicU64,
    }

    impl Fixture {
        fn new(cap: usize) -> Self {
            let f = Fixture {
                slots: (0..cap).map(|_| AtomicU64::new(0)).collect(),
                tail: AtomicU64::new(0),
                head: AtomicU64::new(0),
            };
            f.ring().init();
            f
        }
        fn ring(&self) -> Ring<'_> {
            Ring::new(&self.slots, &self.tail, &self.head)
        }
    }

    #[test]
    fn tickets_come_out_in_order_across_many_laps() {
        let f = Fixture::new(4);
        let r = f.ring();
        for lap in 0..100u64 {
            for i in 0..3 {
                assert_eq!(r.push(i).unwrap(), lap * 3 + i as u64);
            }
            for i in 0..3 {
                assert_eq!(r.pop(None).unwrap(), Some((lap * 3 + i as u64, i)));
            }
            assert_eq!(r.pop(None).unwrap(), None);
        }
        assert_eq!(r.published(), 300);
    }

    #[test]
    fn lap_is_signed_and_wraps_at_40_bits() {
        assert_eq!(lap(empty(5), 5), 0);
        assert_eq!(lap(empty(9), 5), 4);
        assert_eq!(lap(empty(1), 5), -4);
        assert_eq!(lap(empty(2), TICKET_MASK), 3);
    }

    #[test]
    fn a_slot_left_behind_by_a_peer_is_corrupt_not_a_hang() {
        let f = Fixture::new(2);
        let r = f.ring();
        f.slots[0].store(full(0, 0), Ordering::Relaxed);
        f.tail.store(2, Ordering::Relaxed); // claims ticket 2 while slot 0 holds ticket 0
        assert!(matches!(r.push(1), Err(Error::Corrupt(_))));
    }

    #[test]
    fn a_lagging_tail_is_helped_on() {
        let f = Fixture::new(4);
        let r = f.ring();
        // A publisher filled ticket 0 and died before moving the tail.
        f.slots[0].store(full(0, 2), Ordering::Relaxed);
        assert_eq!(r.push(1).unwrap(), 1);
        assert_eq!(r.pop(None).unwrap(), Some((0, 2)));
        assert_eq!(r.pop(None).unwrap(), Some((1, 1)));
    }
}
