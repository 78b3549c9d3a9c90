//! A control block on the heap: the protocol without a mapping.
//!
//! Loom cannot see memory shared between processes, and property tests want
//! thousands of pools without a syscall each; both drive [`Control`] over
//! this block. Same code, different home.
//!
//! Liveness stands in for the kernel's OFD locks with their real semantics:
//! a lock is held by an open file *description* ([`Description`]), not by a
//! thread, so every thread using one description "holds" the locks it took
//! and may take them again. A process is one description
//! ([`HeapControl::join`] makes one per participant); [`HeapControl::kill`]
//! drops its lock the way the kernel drops a dead process's lock. Each
//! description also carries the recovery turn that `Control::recover_dead`
//! requires, as a region does.

use crate::error::Result;
use crate::layout::{Header, Layout, MAX_PARTICIPANTS, Owner, Participant, Parts, SegmentDesc};
use crate::protocol::{Control, Recovered};
use crate::sync::{AtomicU64, Mutex, Ordering};
use std::sync::atomic::AtomicU64 as StdAtomicU64;

/// An open file description of the pool: what holds liveness locks, shared
/// by the threads of one process.
#[derive(Debug)]
pub struct Description {
    id: u64,
    turn: Mutex<()>,
}

/// A control block, a layout, and a stand-in for each entry's lock.
#[derive(Debug)]
pub struct HeapControl {
    header: Box<Header>,
    parts: Box<[Participant]>,
    bitmap: Box<[AtomicU64]>,
    descs: Box<[SegmentDesc]>,
    ring: Box<[AtomicU64]>,
    layout: Layout,
    /// The description holding each entry's lock (0: none). Loom atomics:
    /// which description holds a lock, and when it lets go, is what makes
    /// recovery exclusive or not (model m14), so the models interleave
    /// these steps with the protocol's. A death (`kill`) is still decided
    /// by the model, in program order.
    locks: Box<[AtomicU64]>,
    /// Ids for new descriptions (0 means "unlocked"); outside the model.
    next_description: StdAtomicU64,
    /// The description `recover_dead` uses: a survivor process.
    survivor: Description,
}

impl HeapControl {
    /// A fresh block for `count` segments of `segment_size` bytes.
    pub fn new(segment_size: usize, count: usize) -> Result<Self> {
        let layout = Layout::new(segment_size, count, 4096)?;
        let block = HeapControl {
            header: Box::new(Header::new()),
            parts: (0..MAX_PARTICIPANTS).map(|_| Participant::new()).collect(),
            bitmap: (0..layout.bitmap_words())
                .map(|_| AtomicU64::new(0))
                .collect(),
            descs: (0..count).map(|_| SegmentDesc::new()).collect(),
            ring: (0..layout.ring_capacity)
                .map(|_| AtomicU64::new(0))
                .collect(),
            layout,
            locks: (0..MAX_PARTICIPANTS).map(|_| AtomicU64::new(0)).collect(),
            next_description: StdAtomicU64::new(2),
            survivor: Description {
                id: 1,
                turn: Mutex::new(()),
            },
        };
        block.control().init();
        Ok(block)
    }

    /// The protocol over this block.
    pub fn control(&self) -> Control<'_> {
        let parts = Parts {
            header: &self.header,
            participants: &self.parts,
            bitmap: &self.bitmap,
            descs: &self.descs,
            ring: &self.ring,
        };
        Control::new(parts, &self.layout)
    }

    /// The block's geometry.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// A new open file description ("a process opens the pool").
    pub fn description(&self) -> Description {
        Description {
            id: self
                .next_description
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            turn: Mutex::new(()),
        }
    }

    /// Takes entry `i`'s lock through `d`: granted if nobody holds it or
    /// `d` already does (an OFD lock conflicts only with other descriptions).
    fn try_lock(&self, d: &Description, i: usize) -> bool {
        // AcqRel: the kernel's lock is a full barrier between its holders.
        match self.locks[i].compare_exchange(0, d.id, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => true,
            Err(holder) => holder == d.id,
        }
    }

    /// Drops entry `i`'s lock if `d` holds it.
    fn unlock(&self, d: &Description, i: usize) {
        let _ = self.locks[i].compare_exchange(d.id, 0, Ordering::AcqRel, Ordering::Relaxed);
    }

    /// Joins as a new participant ("a process attaches") through a
    /// description of its own.
    pub fn join(&self) -> Owner {
        self.join_as(&self.description())
    }

    /// Joins through `d`.
    pub fn join_as(&self, d: &Description) -> Owner {
        self.control()
            .join(&mut |i| self.try_lock(d, i), 1000, 0, 0)
            .expect("a free participant entry")
    }

    /// The participant's process dies: its lock is gone, its state stays.
    pub fn kill(&self, who: Owner) {
        self.locks[who.index()].store(0, Ordering::Release);
    }

    /// Whether entry `index`'s lock is free.
    pub fn is_dead(&self, index: usize) -> bool {
        self.locks[index].load(Ordering::Acquire) == 0
    }

    /// Recovers every dead participant (what any survivor may do), taking
    /// each dead entry's lock while it does.
    pub fn recover_dead(&self) -> Recovered {
        self.recover_dead_as(&self.survivor, None)
    }

    /// Recovers every dead participant through description `d`, as the
    /// process whose entry is `me` (never recovered by itself).
    pub fn recover_dead_as(&self, d: &Description, me: Option<Owner>) -> Recovered {
        let mine = me.map(Owner::index);
        self.control().recover_dead(
            &d.turn,
            &mut |i| Some(i) != mine && self.try_lock(d, i),
            &mut |i| self.unlock(d, i),
        )
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::layout::{pack, phase};
    use std::time::{Duration, Instant};

    /// Finding 6 of the v2 review: nested retry budgets never looked at the
    /// caller's deadline. Three stale slots at the head: a take whose
    /// deadline has passed steps over one and stops, where one without a
    /// deadline steps over all three.
    #[test]
    fn finding_6_a_passed_deadline_stops_a_take_among_stale_slots() {
        let block = HeapControl::new(64, 4).unwrap();
        let ctl = block.control();
        let me = block.join();
        for _ in 0..3 {
            let lease = ctl.try_begin(me).unwrap().unwrap();
            let (seg, epoch) = (lease.seg, lease.epoch());
            ctl.commit(lease, 8).unwrap();
            // What a hostile peer (or a dead consumer) leaves: the slot
            // names a claim the descriptor no longer has.
            block.descs[seg]
                .state
                .store(pack(epoch, None, phase::FREE), Ordering::Relaxed);
        }
        let past = Instant::now();
        std::thread::sleep(Duration::from_millis(1));
        assert!(ctl.try_take_until(me, Some(past)).unwrap().is_none());
        let left = ctl.ring_position();
        assert_eq!(
            left,
            (3, 1),
            "one stale slot stepped over, then the deadline"
        );
        assert!(ctl.try_take(me).unwrap().is_none());
        assert_eq!(ctl.ring_position(), (3, 3));
    }

    /// Two units committed, their tickets 0 and 1.
    fn two_units(block: &HeapControl, me: Owner) -> [usize; 2] {
        let ctl = block.control();
        [0, 1].map(|_| {
            let lease = ctl.try_begin(me).unwrap().unwrap();
            let seg = lease.seg;
            ctl.commit(lease, 8).unwrap();
            seg
        })
    }

    /// A take's first try (inlined into the endpoints) hands a unit of an
    /// older generation back, as the loop does, and the loop goes on to
    /// the next unit: nothing old is delivered, nothing is lost or leaked.
    #[test]
    fn a_take_hands_back_a_unit_from_before_a_reset_and_takes_the_next() {
        let block = HeapControl::new(64, 4).unwrap();
        let (ctl, me) = (block.control(), block.join());
        let [old, _] = two_units(&block, me);
        // What a producer that committed across a `reset` leaves behind.
        block.descs[old]
            .generation
            .store(u32::MAX, Ordering::Relaxed);
        let t = ctl.try_take(me).unwrap().expect("the second unit");
        assert_eq!((t.ticket, t.generation), (1, 0));
        let s = ctl.stats();
        assert_eq!((s.free, s.held, s.reclaimed), (3, 1, 1), "{s:?}");
        assert!(ctl.release(&t));
        assert_eq!(ctl.stats().reclaimed, 2);
    }

    /// A take's first try finds a span no segment holds: the unit is
    /// released and reported corrupt, and the next take gets the next one.
    #[test]
    fn a_take_releases_and_reports_a_unit_whose_span_overflows_its_segment() {
        let block = HeapControl::new(64, 4).unwrap();
        let (ctl, me) = (block.control(), block.join());
        let [bad, _] = two_units(&block, me);
        block.descs[bad].len.store(65, Ordering::Relaxed);
        let err = ctl.try_take(me).unwrap_err();
        assert!(
            err.to_string()
                .contains("ticket 0 claims 65 bytes in a 64-byte segment"),
            "{err}"
        );
        assert_eq!(ctl.stats().free, 3, "the bad unit's segment is back");
        assert_eq!(ctl.try_take(me).unwrap().expect("the next unit").ticket, 1);
    }

    /// A claim's first try sets a free bit whose descriptor turns out owned
    /// (the index lagging it): the bit stays set, as is right for an owned
    /// segment, and the claim goes on to the next free segment.
    #[test]
    fn a_claim_steps_over_a_segment_the_index_shows_free_but_is_owned() {
        let block = HeapControl::new(64, 4).unwrap();
        let (ctl, me) = (block.control(), block.join());
        let stranger = Owner::new(MAX_PARTICIPANTS - 1, 7);
        block.descs[0]
            .state
            .store(pack(1, Some(stranger), phase::WRITING), Ordering::Relaxed);
        let lease = ctl.try_begin(me).unwrap().expect("a free segment");
        assert_eq!(lease.seg, 1);
        let index = crate::bitmap::Bitmap::new(&block.bitmap, 4);
        assert!(index.is_owned(0) && index.is_owned(1));
    }
}
