//! The publish ring: tickets in order, each naming the segment (and the
//! claim of it) that holds the unit.
//!
//! `capacity` (a power of two, twice the segments rounded up) slots of one
//! `AtomicU64`; slot `t % capacity` serves tickets `t, t + capacity, ...`.
//!
//! ```text
//!  63       62              36 35              19 18              0
//! +--------+------------------+------------------+-----------------+
//! | WAITER | epoch (27 bits)  | segment + 1 (17) | ticket (19 bits)|
//! +--------+------------------+------------------+-----------------+
//! ```
//! - `EMPTY(t)`: segment field 0; the slot waits for ticket `t`. `WAITER`
//!   may be set: a consumer is (or was) asleep waiting for this ticket.
//! - `FULL(t, s, e)`: ticket `t` was committed from segment `s` at the
//!   claim whose epoch ends in `e`. `WAITER` is always clear.
//!
//! A publisher claims ticket `t` *and* fills its slot with one
//! compare-and-swap `EMPTY(t) -> FULL(t, s, e)`: that CAS is the commit.
//! A consumer empties a slot with one compare-and-swap
//! `FULL(t, s, e) -> EMPTY(t + capacity)` after it took the segment's
//! descriptor (`crate::protocol`). `tail` and `head` only follow (anyone who
//! sees a filled or emptied slot helps them on), so a process killed between
//! two steps never wedges the ring. The consumer no longer helps `tail`:
//! that kept the producer's line bouncing; [`Ring::published`] reads both
//! cursors instead.
//!
//! A slot is *stale* when its `(s, e)` no longer names a claim in the
//! ring's care: a consumer that died between taking the descriptor and
//! emptying the slot leaves one. Consumers recognise it by the epoch and
//! step over it. Twice the segments' worth of slots is what keeps stale
//! slots from making a publisher find its slot still full.
//!
//! Why a slot is always `EMPTY(t)` when a publisher reaches ticket `t`: the
//! publisher holds a segment, and tickets `t - capacity .. t` would need
//! more owned segments than exist if `t - capacity` were still in the ring.
//! The chain that makes this an ordering fact and not only a count is
//! spelled out in `docs/protocol.md`. A slot that is *behind* anyway was
//! written by a broken peer: [`Error::Corrupt`].

use crate::error::{Error, Result};
use crate::sync::{AtomicU64, Ordering, prefetch_write};

const TICKET_BITS: u32 = 19;
const TICKET_MASK: u64 = (1 << TICKET_BITS) - 1;
const SEG_SHIFT: u32 = TICKET_BITS;
const SEG_MASK: u64 = (1 << 17) - 1;
const EPOCH_SHIFT: u32 = SEG_SHIFT + 17;
/// The epoch bits a slot keeps.
pub const SLOT_EPOCH_MASK: u64 = (1 << 27) - 1;
/// The "a consumer may be asleep on this ticket" flag of an empty slot.
pub const WAITER: u64 = 1 << 63;
/// Bounds every retry loop: honest contention stays far below it, a peer that
/// rewrites the ring forever gets [`Error::Corrupt`] instead of a hang.
const RETRY_BUDGET: u32 = 1 << 20;

#[inline]
const fn empty(t: u64) -> u64 {
    t & TICKET_MASK
}

#[inline]
const fn full(t: u64, seg: usize, epoch: u64) -> u64 {
    empty(t) | ((seg as u64 + 1) << SEG_SHIFT) | ((epoch & SLOT_EPOCH_MASK) << EPOCH_SHIFT)
}

/// How many laps ahead of ticket `t` the slot word is (signed, wrapping in
/// the ticket's bits): 0 = this lap, > 0 = a later one, < 0 = an older one.
#[inline]
fn lap(word: u64, t: u64) -> i64 {
    let d = (word.wrapping_sub(t)) & TICKET_MASK;
    let shift = 64 - TICKET_BITS;
    ((d << shift) as i64) >> shift
}

#[inline]
fn seg_of(word: u64) -> Option<usize> {
    match (word >> SEG_SHIFT) & SEG_MASK {
        0 => None,
        s => Some(s as usize - 1),
    }
}

#[inline]
fn epoch_of(word: u64) -> u64 {
    (word >> EPOCH_SHIFT) & SLOT_EPOCH_MASK
}

/// A filled slot a consumer found at the head: what it names, and the
/// exact word, which [`Ring::consume`] empties.
#[derive(Clone, Copy, Debug)]
pub struct Peeked<'a> {
    /// The ticket.
    pub ticket: u64,
    /// The segment it names (not yet bounds-checked).
    pub seg: usize,
    /// The low bits of the claim's epoch ([`SLOT_EPOCH_MASK`]).
    pub epoch: u64,
    word: u64,
    /// Where it was found (`consume` empties it there).
    slot: &'a AtomicU64,
}

/// A view of the ring and its two cursors in the control page.
#[derive(Clone, Copy, Debug)]
pub struct Ring<'a> {
    slots: &'a [AtomicU64],
    tail: &'a AtomicU64,
    head: &'a AtomicU64,
}

impl<'a> Ring<'a> {
    /// A ring over `slots` (a power of two) and its cursors.
    pub fn new(slots: &'a [AtomicU64], tail: &'a AtomicU64, head: &'a AtomicU64) -> Self {
        debug_assert!(slots.len().is_power_of_two());
        Ring { slots, tail, head }
    }

    /// Empty ring, cursors at 0. Creator only, before sharing.
    pub fn init(&self) {
        for (i, s) in self.slots.iter().enumerate() {
            s.store(empty(i as u64), Ordering::Relaxed);
        }
        self.tail.store(0, Ordering::Relaxed);
        self.head.store(0, Ordering::Relaxed);
    }

    #[inline]
    fn slot(&self, t: u64) -> &'a AtomicU64 {
        &self.slots[(t & (self.slots.len() as u64 - 1)) as usize]
    }

    /// Units published so far: at least every ticket taken, and every ticket
    /// whose publisher's `tail` advance is visible.
    pub fn published(&self) -> u64 {
        // Acquire pairs with `advance` (O4 in docs/protocol.md).
        self.published_with(Ordering::Acquire).0
    }

    /// `(published, head)` read with `order`: monitors on a read-only
    /// mapping use `Relaxed`.
    pub fn published_with(&self, order: Ordering) -> (u64, u64) {
        let tail = self.tail.load(order);
        let head = self.head.load(order);
        let published = if head.wrapping_sub(tail) as i64 > 0 {
            head
        } else {
            tail
        };
        (published, head)
    }

    /// Publishes segment `seg` at `epoch`: the next ticket, and whether a
    /// consumer had flagged that slot (then the caller must wake consumers).
    #[inline]
    pub fn push(&self, seg: usize, epoch: u64) -> Result<(u64, bool)> {
        match self.push_first(seg, epoch) {
            Some(pushed) => Ok(pushed),
            None => self.push_again(seg, epoch),
        }
    }

    /// The loop's first try alone, small enough to inline: the slot at
    /// `tail` is empty at its lap and our CAS fills it. `None` if it finds
    /// anything else or loses the CAS, having changed nothing; the loop
    /// then starts over from `tail`. Orderings as in the loop.
    #[inline(always)]
    fn push_first(&self, seg: usize, epoch: u64) -> Option<(u64, bool)> {
        let t = self.tail.load(Ordering::Acquire);
        let slot = self.slot(t);
        // The CAS below writes the line a consumer emptied last.
        prefetch_write(slot);
        let word = slot.load(Ordering::Acquire);
        if lap(word, t) != 0 || seg_of(word).is_some() || !self.within_lap(self.tail, t) {
            return None;
        }
        slot.compare_exchange(
            word,
            full(t, seg, epoch),
            Ordering::AcqRel,
            Ordering::Relaxed,
        )
        .ok()?;
        self.advance(self.tail, t);
        Some((t, word & WAITER != 0))
    }

    /// The whole of `push`, for when its first try did not do.
    #[cold]
    #[inline(never)]
    fn push_again(&self, seg: usize, epoch: u64) -> Result<(u64, bool)> {
        // Acquire pairs with `advance`: every earlier claim and publish
        // happens-before our slot load (docs/protocol.md, section 4).
        let mut t = self.tail.load(Ordering::Acquire);
        for _ in 0..RETRY_BUDGET {
            let slot = self.slot(t);
            // Acquire: when we help `tail` past another publisher's slot,
            // its claim must happen-before our advance (O5).
            let word = slot.load(Ordering::Acquire);
            match lap(word, t) {
                // The slot keeps 19 bits of the ticket: a publisher stalled
                // for 2^19 tickets could match a later lap's slot. `tail`
                // only moves forward, so a `t` that is not within one lap
                // of it is stale: start again from `tail`.
                0 if seg_of(word).is_none() && !self.within_lap(self.tail, t) => {
                    t = self.tail.load(Ordering::Acquire);
                }
                0 if seg_of(word).is_none() => {
                    // AcqRel: Release publishes the descriptor's len and
                    // generation and the payload (O1); Acquire pairs with a
                    // consumer's `arm` (its sequence load happens-before our
                    // wake-up).
                    if slot
                        .compare_exchange(
                            word,
                            full(t, seg, epoch),
                            Ordering::AcqRel,
                            Ordering::Relaxed,
                        )
                        .is_ok()
                    {
                        self.advance(self.tail, t);
                        return Ok((t, word & WAITER != 0));
                    }
                    // Lost to another publisher, or a consumer flagged the
                    // slot meanwhile: look again.
                }
                d if d >= 0 => {
                    // Ticket t is taken (filled, or even emptied already):
                    // help `tail` on and try the next.
                    t = self.advance(self.tail, t);
                }
                _ => {
                    let now = self.tail.load(Ordering::Acquire);
                    if now == t {
                        return Err(Error::corrupt(format_args!(
                            "publish ring slot for ticket {t} still holds an older ticket"
                        )));
                    }
                    t = now;
                }
            }
        }
        Err(Error::corrupt(format_args!("publish ring never settles")))
    }

    /// [`peek`](Self::peek)'s first look alone, small enough to inline:
    /// the filled slot at `head` if that is what it finds; `None` for
    /// anything else (empty, `head` lagging or stale, a broken slot), which
    /// `peek` then sorts out. Changes nothing.
    #[inline(always)]
    pub fn peek_first(&self) -> Option<Peeked<'a>> {
        let h = self.head.load(Ordering::Acquire);
        // Acquire pairs with the publisher's slot CAS (O1), as in `peek`.
        let slot = self.slot(h);
        let word = slot.load(Ordering::Acquire);
        match (lap(word, h), seg_of(word)) {
            (0, Some(seg)) if self.within_lap(self.head, h) => {
                // A unit: `consume` will write the slot. The load fetched
                // the line shared; ask for it writable while the caller
                // takes the descriptor.
                prefetch_write(slot);
                Some(Peeked {
                    ticket: h,
                    seg,
                    epoch: epoch_of(word),
                    word,
                    slot,
                })
            }
            _ => None,
        }
    }

    /// The filled slot at the head, if any (only tickets below `end` when
    /// given). Helps `head` past slots already emptied.
    #[inline(always)]
    pub fn peek(&self, end: Option<u64>) -> Result<Option<Peeked<'a>>> {
        let mut h = self.head.load(Ordering::Acquire);
        for _ in 0..RETRY_BUDGET {
            if end.is_some_and(|e| e.wrapping_sub(h) as i64 <= 0) {
                return Ok(None);
            }
            // Acquire pairs with the publisher's slot CAS (O1).
            let slot = self.slot(h);
            let word = slot.load(Ordering::Acquire);
            match (lap(word, h), seg_of(word)) {
                (0, None) => return Ok(None),
                (0, Some(_)) if !self.within_lap(self.head, h) => {
                    // Stale `h` (see `push`): start again from `head`.
                    h = self.head.load(Ordering::Acquire);
                }
                (0, Some(seg)) => {
                    return Ok(Some(Peeked {
                        ticket: h,
                        seg,
                        epoch: epoch_of(word),
                        word,
                        slot,
                    }));
                }
                (d, _) if d > 0 => h = self.advance(self.head, h),
                _ => {
                    let now = self.head.load(Ordering::Acquire);
                    if now == h {
                        return Err(Error::corrupt(format_args!(
                            "publish ring slot for ticket {h} is behind the consumer"
                        )));
                    }
                    h = now;
                }
            }
        }
        Err(Error::corrupt(format_args!("publish ring never settles")))
    }

    /// Empties the slot `p` came from (if nobody did yet) and moves `head`
    /// past it.
    #[inline]
    pub fn consume(&self, p: &Peeked<'a>) {
        let cap = self.slots.len() as u64;
        // AcqRel: Release hands our take to the next lap's publisher (section
        // 4's chain) and to a consumer that helps `head` past it (O6).
        // Failure: another consumer emptied it first, which is as good.
        let _ = p.slot.compare_exchange(
            p.word,
            empty(p.ticket.wrapping_add(cap)),
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
        self.advance(self.head, p.ticket);
    }

    /// Flags the head slot before a consumer sleeps. Returns `true` if it
    /// must not sleep (the slot is filled, or the head moved on).
    pub fn arm(&self) -> bool {
        let h = self.head.load(Ordering::Acquire);
        let slot = self.slot(h);
        let word = slot.load(Ordering::Acquire);
        if lap(word, h) != 0 || seg_of(word).is_some() {
            return true;
        }
        if word & WAITER != 0 {
            return false;
        }
        // AcqRel: pairs with the publisher's slot CAS, the other end of the
        // handshake (see `crate::protocol`).
        slot.compare_exchange(word, word | WAITER, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
    }

    /// Whether any slot holds `FULL(_, seg, epoch)`: recovery's question "did
    /// this dead writer commit?". Reads every slot once.
    pub fn holds(&self, found: &mut dyn FnMut(usize, u64)) {
        for s in self.slots {
            // Acquire: a slot we see filled had its publisher's writes
            // published (the recoverer may hand the unit to a consumer).
            let word = s.load(Ordering::Acquire);
            if let Some(seg) = seg_of(word) {
                found(seg, epoch_of(word));
            }
        }
    }

    /// Whether the head slot carries a consumer's flag (a snapshot).
    pub fn armed(&self) -> bool {
        let h = self.head.load(Ordering::Relaxed);
        self.slot(h).load(Ordering::Relaxed) & WAITER != 0
    }

    /// Whether ticket `t` is within one lap ahead of `cursor` (a 64-bit
    /// count that only moves forward).
    #[inline]
    fn within_lap(&self, cursor: &AtomicU64, t: u64) -> bool {
        // Relaxed: a stale cursor only makes this more permissive by the
        // tickets it lags, never by a lap's worth of them.
        t.wrapping_sub(cursor.load(Ordering::Relaxed)) < self.slots.len() as u64
    }

    /// Moves `cursor` from `from` to `from + 1` if nobody did; returns where
    /// it is now.
    #[inline]
    fn advance(&self, cursor: &AtomicU64, from: u64) -> u64 {
        let next = from.wrapping_add(1);
        // AcqRel on success, Acquire on failure: every cursor write after
        // init is this RMW, so a load of the cursor synchronizes with all
        // earlier advances (one release sequence; O4).
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

    fn pop(r: &Ring<'_>) -> Option<(u64, usize, u64)> {
        let p = r.peek(None).unwrap()?;
        r.consume(&p);
        Some((p.ticket, p.seg, p.epoch))
    }

    #[test]
    fn tickets_come_out_in_order_across_many_laps() {
        let f = Fixture::new(4);
        let r = f.ring();
        for lap in 0..100u64 {
            for i in 0..3 {
                assert_eq!(r.push(i, lap).unwrap(), (lap * 3 + i as u64, false));
            }
            for i in 0..3 {
                assert_eq!(pop(&r), Some((lap * 3 + i as u64, i, lap)));
            }
            assert_eq!(pop(&r), None);
        }
        assert_eq!(r.published(), 300);
    }

    #[test]
    fn lap_is_signed_and_wraps_in_the_ticket_bits() {
        assert_eq!(lap(empty(5), 5), 0);
        assert_eq!(lap(empty(9), 5), 4);
        assert_eq!(lap(empty(1), 5), -4);
        assert_eq!(lap(empty(2), TICKET_MASK), 3);
        assert_eq!(lap(full(7, 3, 9), 7), 0);
        assert_eq!(lap(empty(7) | WAITER, 7), 0);
    }

    #[test]
    fn a_slot_names_its_segment_and_the_low_bits_of_the_epoch() {
        let w = full(12, 65535, SLOT_EPOCH_MASK + 5);
        assert_eq!(seg_of(w), Some(65535));
        assert_eq!(epoch_of(w), 4);
        assert_eq!(w & WAITER, 0);
    }

    #[test]
    fn a_flagged_slot_is_filled_and_reports_the_waiter_once() {
        let f = Fixture::new(4);
        let r = f.ring();
        assert!(!r.arm(), "empty: the consumer may sleep");
        assert!(r.armed());
        assert_eq!(r.push(2, 1).unwrap(), (0, true));
        assert!(r.arm(), "filled: the consumer must not sleep");
        assert_eq!(r.push(3, 1).unwrap(), (1, false));
    }

    #[test]
    fn a_slot_left_behind_by_a_peer_is_corrupt_not_a_hang() {
        let f = Fixture::new(2);
        let r = f.ring();
        f.slots[0].store(full(0, 0, 0), Ordering::Relaxed);
        f.tail.store(2, Ordering::Relaxed); // claims ticket 2 while slot 0 holds ticket 0
        assert!(matches!(r.push(1, 0), Err(Error::Corrupt(_))));
    }

    #[test]
    fn a_lagging_tail_is_helped_on_and_published_never_trails_head() {
        let f = Fixture::new(4);
        let r = f.ring();
        f.slots[0].store(full(0, 2, 0), Ordering::Relaxed); // its publisher died before advancing
        assert_eq!(pop(&r), Some((0, 2, 0)));
        assert_eq!(r.published(), 1, "head counts the taken ticket");
        assert_eq!(r.push(1, 0).unwrap().0, 1);
        assert_eq!(pop(&r), Some((1, 1, 0)));
    }
}
