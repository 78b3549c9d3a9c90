//! A control block on the heap: the protocol without a mapping.
//!
//! Loom cannot see memory shared between processes, and property tests want
//! thousands of pools without a syscall each; both drive [`Control`] over
//! this block. Same code, different home.

use crate::error::Result;
use crate::layout::{Header, Layout, SegmentDesc};
use crate::protocol::Control;
use crate::sync::AtomicU64;

/// Owns a header, bitmap, descriptors and ring for `count` segments.
#[derive(Debug)]
pub struct HeapControl {
    header: Box<Header>,
    bitmap: Box<[AtomicU64]>,
    descs: Box<[SegmentDesc]>,
    ring: Box<[AtomicU64]>,
    layout: Layout,
}

impl HeapControl {
    /// A fresh, initialized block for `count` segments of `segment_size` bytes.
    pub fn new(segment_size: usize, count: usize) -> Result<Self> {
        let layout = Layout::new(segment_size, count, 4096)?;
        let block = HeapControl {
            header: Box::new(Header::new()),
            bitmap: (0..layout.bitmap_words())
                .map(|_| AtomicU64::new(0))
                .collect(),
            descs: (0..count).map(|_| SegmentDesc::new()).collect(),
            ring: (0..layout.ring_capacity)
                .map(|_| AtomicU64::new(0))
                .collect(),
            layout,
        };
        block.control().init();
        Ok(block)
    }

    /// The protocol over this block.
    pub fn control(&self) -> Control<'_> {
        Control::new(
            &self.header,
            &self.bitmap,
            &self.descs,
            &self.ring,
            &self.layout,
        )
    }

    /// The block's layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }
}
