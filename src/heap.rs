//! A control block on the heap: the protocol without a mapping.
//!
//! Loom cannot see memory shared between processes, and property tests want
//! thousands of pools without a syscall each; both drive [`Control`] over
//! this block. Same code, different home. Liveness is a flag per
//! participant entry that stands in for the OFD lock of a real pool:
//! [`HeapControl::join`] takes one, [`HeapControl::kill`] drops it the way
//! the kernel drops a dead process's lock.

use crate::error::Result;
use crate::layout::{Header, Layout, MAX_PARTICIPANTS, Owner, Participant, SegmentDesc};
use crate::protocol::{Control, Recovered};
use crate::sync::AtomicU64;
use std::sync::atomic::{AtomicBool, Ordering};

/// A control block, a layout, and a stand-in for each entry's lock.
#[derive(Debug)]
pub struct HeapControl {
    header: Box<Header>,
    parts: Box<[Participant]>,
    bitmap: Box<[AtomicU64]>,
    descs: Box<[SegmentDesc]>,
    ring: Box<[AtomicU64]>,
    layout: Layout,
    /// Not a loom atomic: liveness comes from outside the protocol (the
    /// kernel), and a model decides deaths in program order.
    locks: Box<[AtomicBool]>,
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
            locks: (0..MAX_PARTICIPANTS)
                .map(|_| AtomicBool::new(false))
                .collect(),
        };
        block.control().init();
        Ok(block)
    }

    /// The protocol over this block.
    pub fn control(&self) -> Control<'_> {
        Control::new(
            &self.header,
            &self.parts,
            &self.bitmap,
            &self.descs,
            &self.ring,
            &self.layout,
        )
    }

    /// The block's geometry.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Joins as a new participant ("a process attaches").
    pub fn join(&self) -> Owner {
        let locks = &self.locks;
        let mut try_lock = |i: usize| {
            locks[i]
                .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        };
        self.control()
            .join(&mut try_lock, 1000, 0)
            .expect("a free participant entry")
    }

    /// The participant's process dies: its lock is gone, its state stays.
    pub fn kill(&self, who: Owner) {
        self.locks[who.index()].store(false, Ordering::SeqCst);
    }

    /// Whether entry `index`'s lock is free.
    pub fn is_dead(&self, index: usize) -> bool {
        !self.locks[index].load(Ordering::SeqCst)
    }

    /// Recovers every dead participant (what any survivor may do), taking
    /// each dead entry's lock while it does.
    pub fn recover_dead(&self) -> Recovered {
        let locks = &self.locks;
        self.control().recover_dead(
            &mut |i| {
                locks[i]
                    .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
            },
            &mut |i| locks[i].store(false, Ordering::SeqCst),
        )
    }
}
