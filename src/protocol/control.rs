//! [`Control`]: references into one control block, wherever it lives (a
//! shared mapping, or the heap under loom and in property tests), and the
//! few reads every room makes.

use crate::bitmap::Bitmap;
use crate::layout::{
    Header, Layout, Participant, Parts, SHUT_DOWN, SegmentDesc, pack, part, phase,
};
use crate::ring::Ring;
use crate::sync::Ordering;

/// References to one control block. Cheap to copy; all methods take `&self`.
#[derive(Clone, Copy, Debug)]
pub struct Control<'a> {
    pub(super) hdr: &'a Header,
    pub(super) parts: &'a [Participant],
    pub(super) bitmap: Bitmap<'a>,
    pub(super) descs: &'a [SegmentDesc],
    pub(super) ring: Ring<'a>,
    pub(super) segment_size: usize,
}

impl<'a> Control<'a> {
    /// A control over `parts`, which must match `layout` ([`Layout::carve`]
    /// makes them so from a block's bytes).
    pub fn new(parts: Parts<'a>, layout: &Layout) -> Self {
        // Debug only: a mismatch costs no safety (every index below is
        // bounds-checked or masked), only correctness, which the layout's
        // one computation guarantees.
        debug_assert_eq!(parts.participants.len(), crate::layout::MAX_PARTICIPANTS);
        debug_assert_eq!(parts.bitmap.len(), layout.bitmap_words());
        debug_assert_eq!(parts.descs.len(), layout.count);
        debug_assert_eq!(parts.ring.len(), layout.ring_capacity);
        let hdr = parts.header;
        Control {
            hdr,
            parts: parts.participants,
            bitmap: Bitmap::new(parts.bitmap, layout.count),
            descs: parts.descs,
            ring: Ring::new(parts.ring, &hdr.tail, &hdr.head),
            segment_size: layout.segment_size,
        }
    }

    /// The block's header (for the creator, who writes its ident).
    pub fn header(&self) -> &'a Header {
        self.hdr
    }

    /// Puts a fresh control block in its initial state. Creator only, before
    /// the block is shared.
    pub fn init(&self) {
        self.bitmap.init();
        self.ring.init();
        for d in self.descs {
            d.state.store(pack(0, None, phase::FREE), Ordering::Relaxed);
            d.len.store(0, Ordering::Relaxed);
            d.reclaims.store(0, Ordering::Relaxed);
        }
        for p in self.parts {
            p.state.store(part::pack(0, part::FREE), Ordering::Relaxed);
        }
        self.hdr.space.store(0, Ordering::Relaxed);
        self.hdr.data.store(0, Ordering::Relaxed);
        self.hdr.life.shutdown.store(0, Ordering::Relaxed);
        self.hdr.life.generation.store(0, Ordering::Relaxed);
        self.hdr
            .life
            .recovered_participants
            .store(0, Ordering::Relaxed);
        self.hdr.life.recovered_segments.store(0, Ordering::Relaxed);
    }

    /// Number of segments.
    #[inline]
    pub fn count(&self) -> usize {
        self.descs.len()
    }

    /// Units published so far.
    pub fn published(&self) -> u64 {
        self.ring.published()
    }

    /// Whether `shutdown` ran (sticky).
    #[inline]
    pub fn is_shutdown(&self) -> bool {
        // Acquire pairs with the Release store in `shutdown` (O8).
        self.hdr.life.shutdown.load(Ordering::Acquire) == SHUT_DOWN
    }

    /// The current generation.
    #[inline]
    pub fn generation(&self) -> u32 {
        // Acquire pairs with the AcqRel bump in `reset` (O9).
        self.hdr.life.generation.load(Ordering::Acquire)
    }

    /// The ring's (tail, head), for tests that look at stale slots.
    #[cfg(test)]
    pub(crate) fn ring_position(&self) -> (u64, u64) {
        self.ring.published_with(Ordering::Relaxed)
    }
}
