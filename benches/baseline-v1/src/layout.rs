//! The shared mapping's layout: the control page and the segments after it.
//!
//! ```text
//! offset 0                    Header (repr(C), 7 lines of 128 bytes)
//!   line 0  Ident              magic, version, sizes, offsets (written once)
//!   line 1  tail               next publish ticket == units published
//!   line 2  head               next ticket the consumer takes
//!   line 3  reclaimed          units whose segments came back
//!   line 4  space  FutexWord   producers sleep here; bumped on every free
//!   line 5  data   FutexWord   consumers sleep here; bumped on every publish
//!   line 6  Life               shutdown flag, iteration generation
//! bitmap_offset               ceil(count/64) x AtomicU64   (bit set = owned)
//! descs_offset                count x SegmentDesc (64 bytes each)
//! ring_offset                 ring_capacity x AtomicU64 (publish ring)
//! segments_offset (page)      count x segment_stride bytes of payload
//! ```
//!
//! Hot words sit on lines of their own so the producer's and the consumer's
//! stores do not invalidate each other's lines. Every field is an atomic:
//! another process may write any of them at any time (see the trust
//! boundary in the crate docs), and a plain read racing such a write would
//! be undefined behaviour. [`Layout`] is computed locally from
//! `(segment_size, count)`; what a peer wrote in the header is only compared
//! against it ([`Layout::validate`]), never trusted.

use crate::error::{Error, Result};
use crate::sync::{AtomicU32, AtomicU64, FutexWord, Ordering};

/// `b"SEGPOOL\0"` read as a little-endian u64.
pub const MAGIC: u64 = u64::from_le_bytes(*b"SEGPOOL\0");
/// Bumped on any change to this file's layout or to the meaning of a field.
pub const VERSION: u32 = 1;
/// The most segments a pool may have (the ring packs a segment index into 24 bits).
pub const MAX_COUNT: usize = 1 << 20;
/// Alignment of every `write_binary` offset inside a segment.
#[cfg_attr(loom, allow(dead_code))]
pub const UNIT_ALIGN: usize = 64;

/// A value on a cache line of its own. 128 bytes: x86's adjacent-line
/// prefetcher pulls lines in pairs, so 64 would still share. Ours rather than
/// `crossbeam_utils::CachePadded` because this is an ABI between processes:
/// `repr(C)` and the same 128 on every target.
#[repr(C, align(128))]
#[derive(Debug)]
pub struct Line<T>(pub T);

impl<T> core::ops::Deref for Line<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Written once by the creator before the handle leaves the process;
/// read once by `attach` and compared with the locally computed [`Layout`].
#[repr(C)]
#[derive(Debug)]
pub struct Ident {
    /// `MAGIC`.
    pub magic: AtomicU64,
    /// `VERSION`.
    pub version: AtomicU32,
    /// Page size the creator aligned segments to.
    pub page_size: AtomicU32,
    /// Usable bytes per segment.
    pub segment_size: AtomicU64,
    /// Number of segments.
    pub count: AtomicU64,
    /// Slots in the publish ring (a power of two >= count).
    pub ring_capacity: AtomicU64,
    /// Byte offset of the bitmap.
    pub bitmap_offset: AtomicU64,
    /// Byte offset of the descriptors.
    pub descs_offset: AtomicU64,
    /// Byte offset of the ring.
    pub ring_offset: AtomicU64,
    /// Byte offset of segment 0 (page-aligned).
    pub segments_offset: AtomicU64,
    /// Distance between two segments (segment_size rounded up to a page).
    pub segment_stride: AtomicU64,
    /// Length of the whole mapping.
    pub total_len: AtomicU64,
}

/// Pool-wide state that changes rarely.
#[repr(C)]
#[derive(Debug)]
pub struct Life {
    /// 0 while running; [`SHUT_DOWN`] once `shutdown_arena` ran. Sticky.
    pub shutdown: AtomicU32,
    /// Iteration number, bumped by `reset`. Claims record it; units of an
    /// older iteration are dropped by the consumer instead of delivered.
    pub generation: AtomicU32,
}

/// [`Life::shutdown`] value after `shutdown_arena`.
pub const SHUT_DOWN: u32 = 1;

/// The fixed part of the control page.
#[repr(C)]
#[derive(Debug)]
pub struct Header {
    /// Identity and geometry.
    pub ident: Line<Ident>,
    /// Next publish ticket; equals the number of units published.
    /// Advanced (with help) right after a ticket's ring slot is filled.
    pub tail: Line<AtomicU64>,
    /// Next ticket the consumer takes.
    pub head: Line<AtomicU64>,
    /// Units whose segments were returned to the pool.
    pub reclaimed: Line<AtomicU64>,
    /// Producers wait here for a free segment. See [`crate::protocol`] for its bits.
    pub(crate) space: Line<FutexWord>,
    /// Consumers wait here for a published unit.
    pub(crate) data: Line<FutexWord>,
    /// Shutdown flag and generation.
    pub life: Line<Life>,
}

impl Header {
    /// A zeroed header, for a control block on the heap (loom, tests).
    pub fn new() -> Self {
        let z64 = || AtomicU64::new(0);
        Header {
            ident: Line(Ident {
                magic: z64(),
                version: AtomicU32::new(0),
                page_size: AtomicU32::new(0),
                segment_size: z64(),
                count: z64(),
                ring_capacity: z64(),
                bitmap_offset: z64(),
                descs_offset: z64(),
                ring_offset: z64(),
                segments_offset: z64(),
                segment_stride: z64(),
                total_len: z64(),
            }),
            tail: Line(z64()),
            head: Line(z64()),
            reclaimed: Line(z64()),
            space: Line(FutexWord::new(0)),
            data: Line(FutexWord::new(0)),
            life: Line(Life {
                shutdown: AtomicU32::new(0),
                generation: AtomicU32::new(0),
            }),
        }
    }
}

impl Default for Header {
    fn default() -> Self {
        Header::new()
    }
}

impl SegmentDesc {
    /// A free descriptor at epoch 0.
    pub fn new() -> Self {
        SegmentDesc {
            state: AtomicU64::new(0),
            len: AtomicU64::new(0),
            generation: AtomicU32::new(0),
            owner: AtomicU32::new(0),
        }
    }
}

impl Default for SegmentDesc {
    fn default() -> Self {
        SegmentDesc::new()
    }
}

/// Phase of a segment, the low 2 bits of [`SegmentDesc::state`].
pub mod phase {
    /// In the free pool (its bitmap bit is clear, or about to be).
    pub const FREE: u64 = 0;
    /// Claimed by a writer that has not committed.
    pub const WRITING: u64 = 1;
    /// Committed and in the ring; no consumer has taken it yet.
    pub const PUBLISHED: u64 = 2;
    /// Taken by a consumer; freed when the last view drops.
    pub const HELD: u64 = 3;
    /// Mask of the phase bits.
    pub const MASK: u64 = 3;
}

/// Per-segment descriptor, one cache line each.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct SegmentDesc {
    /// `epoch << 2 | phase`. The epoch counts claims of this segment; every
    /// handle (lease, unit) remembers the epoch it got, and every transition
    /// is a compare-and-swap from `(epoch, expected phase)`, so a stale or
    /// duplicated handle can never move a segment it does not own.
    pub state: AtomicU64,
    /// Committed span in bytes (valid once PUBLISHED).
    pub len: AtomicU64,
    /// Generation the claim belongs to.
    pub generation: AtomicU32,
    /// Pid of the process that claimed it (for crash recovery and stats).
    pub owner: AtomicU32,
}

/// Packs a descriptor state word.
#[inline]
pub const fn pack(epoch: u64, phase: u64) -> u64 {
    (epoch << 2) | phase
}

/// The epoch of a state word.
#[inline]
pub const fn epoch_of(state: u64) -> u64 {
    state >> 2
}

/// The phase of a state word.
#[inline]
pub const fn phase_of(state: u64) -> u64 {
    state & phase::MASK
}

#[cfg(not(loom))]
const _: () = {
    use core::mem::{align_of, size_of};
    assert!(size_of::<Ident>() == 88);
    assert!(size_of::<Header>() == 7 * 128);
    assert!(align_of::<Header>() == 128);
    assert!(size_of::<SegmentDesc>() == 64);
    assert!(size_of::<FutexWord>() == 4);
};

/// Geometry of a pool, computed locally from `(segment_size, count)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Usable bytes per segment.
    pub segment_size: usize,
    /// Number of segments.
    pub count: usize,
    /// Slots in the publish ring.
    pub ring_capacity: usize,
    /// Page size segments are aligned to.
    pub page_size: usize,
    /// Byte offset of the bitmap.
    pub bitmap_offset: usize,
    /// Byte offset of the descriptors.
    pub descs_offset: usize,
    /// Byte offset of the ring.
    pub ring_offset: usize,
    /// Byte offset of segment 0.
    pub segments_offset: usize,
    /// Distance between segments.
    pub segment_stride: usize,
    /// Length of the whole mapping.
    pub total_len: usize,
}

fn align_up(x: usize, a: usize) -> Option<usize> {
    Some(x.checked_add(a - 1)? & !(a - 1))
}

impl Layout {
    /// The layout for `count` segments of `segment_size` bytes, or
    /// [`Error::InvalidConfig`] for zero sizes, too many segments, or a total
    /// that overflows the address space.
    pub fn new(segment_size: usize, count: usize, page_size: usize) -> Result<Layout> {
        let bad = |why: String| Err(Error::InvalidConfig(why));
        if segment_size == 0 {
            return bad("segment_size must be at least 1 byte".into());
        }
        if count == 0 {
            return bad("count must be at least 1 segment".into());
        }
        if count > MAX_COUNT {
            return bad(format!(
                "count {count} exceeds the maximum of {MAX_COUNT} segments"
            ));
        }
        if !page_size.is_power_of_two() || page_size < 128 {
            return bad(format!(
                "page size {page_size} is not a power of two >= 128"
            ));
        }
        let overflow = || {
            Error::InvalidConfig(format!(
                "{count} segments of {segment_size} bytes overflow the address space"
            ))
        };
        let ring_capacity = count.next_power_of_two();
        let words = count.div_ceil(64);
        let bitmap_offset = core::mem::size_of::<Header>();
        let descs_offset = align_up(bitmap_offset + words * 8, 128).ok_or_else(overflow)?;
        let ring_offset = align_up(descs_offset + count * 64, 128).ok_or_else(overflow)?;
        let segments_offset =
            align_up(ring_offset + ring_capacity * 8, page_size).ok_or_else(overflow)?;
        let segment_stride = align_up(segment_size, page_size).ok_or_else(overflow)?;
        let total_len = segment_stride
            .checked_mul(count)
            .and_then(|s| s.checked_add(segments_offset))
            .filter(|&t| t <= isize::MAX as usize)
            .ok_or_else(overflow)?;
        Ok(Layout {
            segment_size,
            count,
            ring_capacity,
            page_size,
            bitmap_offset,
            descs_offset,
            ring_offset,
            segments_offset,
            segment_stride,
            total_len,
        })
    }

    /// Number of `AtomicU64` words in the bitmap.
    pub fn bitmap_words(&self) -> usize {
        self.count.div_ceil(64)
    }

    /// Byte offset of segment `seg` (which the caller has bounds-checked).
    pub fn segment_offset(&self, seg: usize) -> usize {
        debug_assert!(seg < self.count);
        self.segments_offset + seg * self.segment_stride
    }

    /// Writes this layout into a fresh header (creator only, before sharing).
    pub fn write_ident(&self, ident: &Ident) {
        let st = |a: &AtomicU64, v: usize| a.store(v as u64, Ordering::Relaxed);
        ident.version.store(VERSION, Ordering::Relaxed);
        ident
            .page_size
            .store(self.page_size as u32, Ordering::Relaxed);
        st(&ident.segment_size, self.segment_size);
        st(&ident.count, self.count);
        st(&ident.ring_capacity, self.ring_capacity);
        st(&ident.bitmap_offset, self.bitmap_offset);
        st(&ident.descs_offset, self.descs_offset);
        st(&ident.ring_offset, self.ring_offset);
        st(&ident.segments_offset, self.segments_offset);
        st(&ident.segment_stride, self.segment_stride);
        st(&ident.total_len, self.total_len);
        // Relaxed is enough: the header reaches another process only through
        // the handle (a pipe, an environment, exec), which orders it.
        ident.magic.store(MAGIC, Ordering::Relaxed);
    }

    /// Reads a peer's header and returns the layout it describes, provided
    /// every field matches what `Layout::new` computes for its sizes and the
    /// whole fits in `mapped_len` bytes.
    ///
    /// [`Error::Incompatible`] for a wrong magic or version (not our format),
    /// [`Error::Corrupt`] for a header that claims our format but is
    /// inconsistent. Never panics, whatever the header holds.
    pub fn validate(ident: &Ident, mapped_len: usize, page_size: usize) -> Result<Layout> {
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let magic = ld(&ident.magic);
        if magic != MAGIC {
            return Err(Error::Incompatible(format!(
                "bad magic {magic:#018x}: not a segpool control page"
            )));
        }
        let version = ident.version.load(Ordering::Relaxed);
        if version != VERSION {
            return Err(Error::Incompatible(format!(
                "layout version {version}, this build speaks {VERSION}"
            )));
        }
        let peer_page = ident.page_size.load(Ordering::Relaxed) as usize;
        if peer_page != page_size {
            return Err(Error::Incompatible(format!(
                "created with {peer_page}-byte pages, this process uses {page_size}"
            )));
        }
        let corrupt = |what: &str| Error::Corrupt(format!("control page header: {what}"));
        let segment_size = usize::try_from(ld(&ident.segment_size))
            .map_err(|_| corrupt("segment_size does not fit in usize"))?;
        let count = usize::try_from(ld(&ident.count))
            .map_err(|_| corrupt("count does not fit in usize"))?;
        let expect = Layout::new(segment_size, count, page_size)
            .map_err(|e| corrupt(&format!("impossible geometry ({e})")))?;
        let fields = [
            (
                "ring_capacity",
                ld(&ident.ring_capacity),
                expect.ring_capacity,
            ),
            (
                "bitmap_offset",
                ld(&ident.bitmap_offset),
                expect.bitmap_offset,
            ),
            ("descs_offset", ld(&ident.descs_offset), expect.descs_offset),
            ("ring_offset", ld(&ident.ring_offset), expect.ring_offset),
            (
                "segments_offset",
                ld(&ident.segments_offset),
                expect.segments_offset,
            ),
            (
                "segment_stride",
                ld(&ident.segment_stride),
                expect.segment_stride,
            ),
            ("total_len", ld(&ident.total_len), expect.total_len),
        ];
        for (name, got, want) in fields {
            if got != want as u64 {
                return Err(corrupt(&format!(
                    "{name} is {got}, the geometry implies {want}"
                )));
            }
        }
        if expect.total_len != mapped_len {
            return Err(corrupt(&format!(
                "it describes {} bytes but the shared object holds {mapped_len}",
                expect.total_len
            )));
        }
        Ok(expect)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_start_page_aligned_after_the_control_area() {
        let l = Layout::new(1000, 130, 4096).unwrap();
        assert_eq!(l.segments_offset % 4096, 0);
        assert_eq!(l.segment_stride, 4096);
        assert!(l.ring_offset + l.ring_capacity * 8 <= l.segments_offset);
        assert!(l.descs_offset + 130 * 64 <= l.ring_offset);
        assert!(l.bitmap_offset + 3 * 8 <= l.descs_offset);
        assert_eq!(l.ring_capacity, 256);
        assert_eq!(l.total_len, l.segments_offset + 130 * 4096);
    }

    #[test]
    fn zero_sizes_are_refused() {
        assert!(matches!(
            Layout::new(0, 4, 4096),
            Err(Error::InvalidConfig(_))
        ));
        assert!(matches!(
            Layout::new(4096, 0, 4096),
            Err(Error::InvalidConfig(_))
        ));
    }

    #[test]
    fn overflowing_geometry_is_refused() {
        assert!(matches!(
            Layout::new(usize::MAX / 2, 4, 4096),
            Err(Error::InvalidConfig(_))
        ));
        assert!(matches!(
            Layout::new(1 << 44, 1 << 20, 4096),
            Err(Error::InvalidConfig(_))
        ));
        assert!(matches!(
            Layout::new(64, MAX_COUNT + 1, 4096),
            Err(Error::InvalidConfig(_))
        ));
    }
}
