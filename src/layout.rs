//! The shared mapping's layout: the control page and the segments after it.
//!
//! ```text
//! offset 0                    Header (repr(C), 7 lines of 128 bytes)
//!   line 0  Ident              magic, version, sizes, offsets (written once)
//!   line 1  tail               next publish ticket (a hint: helped on)
//!   line 2  head               next ticket a consumer takes (a hint: helped on)
//!   line 3  reclaimed          units whose segments came back
//!   line 4  space  FutexWord   producers sleep here (a sequence)
//!   line 5  data   FutexWord   consumers sleep here (a sequence)
//!   line 6  Life               shutdown flag, iteration generation
//! parts_offset    (128)       MAX_PARTICIPANTS x Participant (64 bytes each)
//! bitmap_offset   (128)       ceil(count/63) x AtomicU64   (index of owned segments
//!                                                          + one "producer asleep" flag)
//! descs_offset    (128)       count x SegmentDesc (128 bytes each)
//! ring_offset     (128)       ring_capacity x AtomicU64 (publish ring)
//! segments_offset (page)      count x segment_stride bytes of payload
//! ```
//!
//! Hot words sit on lines of their own so the producer's and the consumer's
//! stores do not invalidate each other's lines; descriptors take 128 bytes so
//! that neighbouring segments (x86 prefetches lines in pairs) never share.
//! Every field is an atomic: another process may write any of them at any
//! time (see the trust boundary in the crate docs), and a plain read racing
//! such a write would be undefined behaviour. [`Layout`] is computed locally
//! from `(segment_size, count)`; what a peer wrote in the header is only
//! compared against it ([`Layout::validate`]), never trusted.
//!
//! # Words and their bits
//! The state words are defined here, with their encodings; what moves them
//! is in [`crate::protocol`].
//!
//! ```text
//! SegmentDesc::state (u64)
//!  63                       23 22               3 2      0
//! +---------------------------+------------------+--------+
//! | epoch (41 bits)           | owner (20 bits)  | phase  |
//! +---------------------------+------------------+--------+
//!   owner = incarnation (12 bits) << 8 | participant index + 1 (8 bits); 0 = nobody
//!
//! Participant::state (u64)
//!  63                                    2 1      0
//! +---------------------------------------+--------+
//! | incarnation (counts claims of the entry) | status |   status: 0 FREE, 1 ALIVE
//! +---------------------------------------+--------+
//! ```
use crate::error::{Error, Result};
use crate::sync::{AtomicU32, AtomicU64, FutexWord, Ordering};
use std::num::NonZeroU32;

/// `b"SEGPOOL\0"` read as a little-endian u64.
pub const MAGIC: u64 = u64::from_le_bytes(*b"SEGPOOL\0");
/// Bumped on any change to this file's layout or to the meaning of a field.
/// Version 2: participants own segments; ring slots name (segment, epoch);
/// waiters are flags in the words wakers touch anyway. Version 3: releases
/// are counted in the descriptors (the RECLAIMED phase). Version 4: a
/// participant records its pidfd's inode and joins bump `roster` (deaths
/// are watched as events, `crate::watch`); the reclaim record follows every
/// claim's end, counted or not.
pub const VERSION: u32 = 4;
/// The most segments a pool may have (a ring slot packs a segment index
/// into 17 bits).
pub const MAX_COUNT: usize = 1 << 16;
/// The most processes that may have a pool open at once (each claims an
/// entry of the participant table; a descriptor names its owner in 8 bits).
#[cfg(not(loom))]
pub const MAX_PARTICIPANTS: usize = 255;
/// Under loom: enough entries for the models' participants. Every entry's
/// atomics are created, initialised and walked (`stats`, `recover_dead`) in
/// every execution, which with 255 made each model several times slower.
#[cfg(loom)]
pub const MAX_PARTICIPANTS: usize = 8;
/// Segments indexed by one bitmap word; its top bit is the waiter flag.
pub const BITS_PER_WORD: usize = 63;
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
    /// Byte offset of the participant table.
    pub parts_offset: AtomicU64,
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
    /// Dead participants recovered since creation, by any process.
    pub recovered_participants: AtomicU64,
    /// Segments recovery gave back since creation (uncommitted units of
    /// dead writers, views of dead readers), by any process.
    pub recovered_segments: AtomicU64,
    /// 1 if the creator faulted every page in ([`PREFAULTED`]); attachers
    /// then map with `MAP_POPULATE`, else they fault pages as they touch them.
    pub prefaulted: AtomicU32,
    /// Bumped by every join: watchers of deaths (`crate::watch`) learn of a
    /// participant they do not watch yet when a sleeper sees it move.
    pub roster: AtomicU64,
}

/// [`Life::prefaulted`] value of a pool whose creator faulted its pages in.
#[cfg_attr(loom, allow(dead_code))]
pub const PREFAULTED: u32 = 1;

/// [`Life::shutdown`] value after `shutdown_arena`.
pub const SHUT_DOWN: u32 = 1;

/// The fixed part of the control page.
#[repr(C)]
#[derive(Debug)]
pub struct Header {
    /// Identity and geometry.
    pub ident: Line<Ident>,
    /// Next publish ticket. Advanced (with help) right after a ticket's ring
    /// slot is filled, so it may trail the ring by the tickets of publishers
    /// that were preempted or died between the two steps.
    pub tail: Line<AtomicU64>,
    /// Next ticket a consumer takes; the same kind of hint as `tail`.
    pub head: Line<AtomicU64>,
    /// Unused since layout version 2 (`reclaimed` is summed from the
    /// descriptors' `reclaims`); kept so the lines keep their places.
    pub reclaimed: Line<AtomicU64>,
    /// Producers sleep here for a free segment: a 32-bit sequence, bumped
    /// by a waker that found a producer's flag in the bitmap.
    pub(crate) space: Line<FutexWord>,
    /// Consumers sleep here for a published unit: a sequence, bumped by a
    /// publisher that found a consumer's flag in its ring slot.
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
                parts_offset: z64(),
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
                recovered_participants: z64(),
                recovered_segments: z64(),
                prefaulted: AtomicU32::new(0),
                roster: z64(),
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
            reclaims: AtomicU64::new(0),
        }
    }
}

impl Default for SegmentDesc {
    fn default() -> Self {
        SegmentDesc::new()
    }
}

/// Phase of a segment, the low 3 bits of [`SegmentDesc::state`].
pub mod phase {
    /// In the free pool. Owned by nobody (its bitmap bit may still be set:
    /// the index follows the descriptor).
    pub const FREE: u64 = 0;
    /// Claimed by a writer, which owns it. Stays WRITING after the commit
    /// put its ticket in the ring, until a consumer takes it: the ring slot,
    /// not the phase, says "committed".
    pub const WRITING: u64 = 1;
    /// Committed and in the ring, owned by nobody: what recovery leaves of
    /// a dead writer's committed unit, for a consumer to take.
    pub const PUBLISHED: u64 = 2;
    /// Taken by a consumer, which owns it; freed when its last view drops.
    pub const HELD: u64 = 3;
    /// Free again after it was HELD: like FREE, plus "this epoch's release
    /// counts in `reclaimed`" (see [`SegmentDesc::reclaims`]).
    pub const RECLAIMED: u64 = 4;
    /// Mask of the phase bits.
    pub const MASK: u64 = 7;

    /// Whether a phase is one of the two free ones.
    #[inline]
    pub const fn is_free(phase: u64) -> bool {
        phase == FREE || phase == RECLAIMED
    }
}

/// Bits of the owner field below the epoch.
const OWNER_SHIFT: u32 = 3;
const OWNER_BITS: u32 = 20;
const EPOCH_SHIFT: u32 = OWNER_SHIFT + OWNER_BITS;
/// Largest epoch; epochs wrap within it.
pub const EPOCH_MASK: u64 = u64::MAX >> EPOCH_SHIFT;
/// Incarnation bits kept in an owner tag.
const INCARNATION_BITS: u32 = 12;

/// Per-segment descriptor, on lines of its own.
#[repr(C, align(128))]
#[derive(Debug)]
pub struct SegmentDesc {
    /// `epoch | owner | phase` (see the module docs). The epoch counts claims
    /// of this segment; every handle (lease, unit) remembers the epoch it
    /// got, and every transition is a compare-and-swap from the whole word,
    /// so a stale or duplicated handle can never move a segment it does not
    /// own. The owner is the participant accountable for the segment: it is
    /// set exactly when the phase is WRITING or HELD.
    pub state: AtomicU64,
    /// Committed span in bytes (written before the commit's ring slot).
    pub len: AtomicU64,
    /// Generation the claim belongs to.
    pub generation: AtomicU32,
    /// `count << 24 | epoch`: how many of this segment's units were
    /// reclaimed, and the epoch (low 24 bits) of the last one counted. A
    /// release moves the state to RECLAIMED at epoch `e`, then counts `e`
    /// here with a compare-and-swap that only moves the epoch forward, so
    /// whoever next sees that RECLAIMED state (the releaser, the next
    /// claimer, a scrub) can finish a count a killed releaser did not make,
    /// exactly once. The pool's `reclaimed` is the sum over segments.
    pub reclaims: AtomicU64,
}

/// Bits of [`SegmentDesc::reclaims`] that hold the epoch.
pub const RECLAIM_EPOCH_BITS: u32 = 24;

/// Who owns a segment: a participant entry and the incarnation of it that
/// claimed the segment, so a recoverer of one incarnation never touches
/// what the next process in the same entry owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Owner(NonZeroU32);

impl Owner {
    /// Owner tag for entry `index` at `incarnation`.
    pub fn new(index: usize, incarnation: u64) -> Owner {
        debug_assert!(index < MAX_PARTICIPANTS);
        let inc = (incarnation & ((1 << INCARNATION_BITS) - 1)) as u32;
        // Never zero: the low byte is `index + 1` (so `Option<Owner>`, and
        // the leases and units that hold one, need no separate tag).
        Owner(NonZeroU32::MIN.saturating_add((inc << 8) | index as u32))
    }

    /// The participant entry.
    #[inline]
    pub fn index(self) -> usize {
        (self.0.get() & 0xff) as usize - 1
    }

    /// The low bits of the incarnation this tag keeps.
    #[inline]
    pub fn incarnation(self) -> u64 {
        u64::from(self.0.get() >> 8)
    }

    /// Whether the participant entry state `st` is ALIVE at the
    /// incarnation this tag names (compared in the tag's bits).
    #[inline]
    pub fn is_entry(self, st: u64) -> bool {
        const KEPT: u64 = ((1 << INCARNATION_BITS) - 1) << 2 | part::MASK;
        st & KEPT == part::pack(self.incarnation(), part::ALIVE)
    }

    fn bits(self) -> u64 {
        u64::from(self.0.get())
    }
}

/// Packs a descriptor state word.
#[inline]
pub const fn pack(epoch: u64, owner: Option<Owner>, phase: u64) -> u64 {
    let owner = match owner {
        Some(o) => o.0.get() as u64,
        None => 0,
    };
    ((epoch & EPOCH_MASK) << EPOCH_SHIFT) | (owner << OWNER_SHIFT) | phase
}

/// The epoch of a state word.
#[inline]
pub const fn epoch_of(state: u64) -> u64 {
    state >> EPOCH_SHIFT
}

/// The phase of a state word.
#[inline]
pub const fn phase_of(state: u64) -> u64 {
    state & phase::MASK
}

/// The owner named by a state word, if any.
#[inline]
pub fn owner_of(state: u64) -> Option<Owner> {
    let bits = ((state >> OWNER_SHIFT) & ((1 << OWNER_BITS) - 1)) as u32;
    NonZeroU32::new(bits)
        .filter(|b| b.get() & 0xff != 0)
        .map(Owner)
}

impl Owner {
    /// Whether `state` names this owner.
    #[inline]
    pub fn owns(self, state: u64) -> bool {
        (state >> OWNER_SHIFT) & ((1 << OWNER_BITS) - 1) == self.bits()
    }
}

/// One entry of the participant table: a process that created or attached
/// the pool. The entry is claimed while holding an OFD lock on a byte of
/// the pool's file that only this entry uses (`crate::liveness`), so the
/// kernel, not a pid, witnesses whether its process is alive.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct Participant {
    /// `incarnation << 2 | status`; see [`part`].
    pub state: AtomicU64,
    /// Random token of this incarnation (tells incarnations apart in stats).
    pub token: AtomicU64,
    /// Pid of the process, as it sees itself (for people and for
    /// `recover_writer`; recovery never trusts it).
    pub pid: AtomicU32,
    /// This process's threads asleep waiting for space (monitoring only).
    pub waiting_space: AtomicU32,
    /// This process's threads asleep waiting for data (monitoring only).
    pub waiting_data: AtomicU32,
    /// The inode number of a pidfd of the process (unique per process on
    /// kernels whose pidfds live in pidfs, 6.9 and later), or 0: lets a
    /// watcher check that the pidfd it opened from `pid` is this process
    /// before it sleeps on it (`crate::watch`). Never trusted for recovery.
    pub pid_ino: AtomicU64,
}

impl Participant {
    /// A free entry.
    pub fn new() -> Self {
        Participant {
            state: AtomicU64::new(0),
            token: AtomicU64::new(0),
            pid: AtomicU32::new(0),
            waiting_space: AtomicU32::new(0),
            waiting_data: AtomicU32::new(0),
            pid_ino: AtomicU64::new(0),
        }
    }
}

impl Default for Participant {
    fn default() -> Self {
        Participant::new()
    }
}

/// [`Participant::state`] encoding.
pub mod part {
    /// Nobody: the entry may be claimed.
    pub const FREE: u64 = 0;
    /// Claimed by a process that holds the entry's lock, or did until it
    /// died (then any survivor recovers it).
    pub const ALIVE: u64 = 1;
    /// Mask of the status bits.
    pub const MASK: u64 = 3;

    /// Packs an entry state.
    #[inline]
    pub const fn pack(incarnation: u64, status: u64) -> u64 {
        (incarnation << 2) | status
    }

    /// The incarnation of an entry state.
    #[inline]
    pub const fn incarnation(state: u64) -> u64 {
        state >> 2
    }

    /// The status of an entry state.
    pub const fn status(state: u64) -> u64 {
        state & MASK
    }
}

#[cfg(not(loom))]
const _: () = {
    use core::mem::{align_of, size_of};
    assert!(size_of::<Ident>() == 96);
    assert!(size_of::<Header>() == 7 * 128);
    assert!(align_of::<Header>() == 128);
    assert!(size_of::<SegmentDesc>() == 128);
    assert!(size_of::<Participant>() == 64);
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
    /// Byte offset of the participant table.
    pub parts_offset: usize,
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

/// The control area's parts, typed: what the protocol's `Control` is
/// made of. The one place that turns a block's bytes into them is
/// [`Layout::carve`]; the heap's block (`crate::heap`) builds them from
/// boxes of its own.
#[derive(Clone, Copy, Debug)]
pub struct Parts<'a> {
    /// The header.
    pub header: &'a Header,
    /// `MAX_PARTICIPANTS` entries.
    pub participants: &'a [Participant],
    /// `bitmap_words()` words.
    pub bitmap: &'a [AtomicU64],
    /// `count` descriptors.
    pub descs: &'a [SegmentDesc],
    /// `ring_capacity` slots.
    pub ring: &'a [AtomicU64],
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
        // Twice the segments: a consumer that dies between taking a unit and
        // emptying its slot leaves a stale ticket, which must not make a
        // publisher find its slot still full (see `crate::ring`).
        let ring_capacity = count.next_power_of_two() * 2;
        let words = count.div_ceil(BITS_PER_WORD);
        let parts_offset = core::mem::size_of::<Header>();
        let bitmap_offset = parts_offset + MAX_PARTICIPANTS * 64;
        let bitmap_offset = align_up(bitmap_offset, 128).ok_or_else(overflow)?;
        let descs_offset = align_up(bitmap_offset + words * 8, 128).ok_or_else(overflow)?;
        let ring_offset = align_up(descs_offset + count * 128, 128).ok_or_else(overflow)?;
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
            parts_offset,
            bitmap_offset,
            descs_offset,
            ring_offset,
            segments_offset,
            segment_stride,
            total_len,
        })
    }

    /// The control area at `base`, typed.
    ///
    /// # Safety
    /// `base` must point to at least [`control_len`](Self::control_len)
    /// bytes, aligned to 128, that stay mapped (and are not reused as
    /// anything else) for `'a`. Writable memory is needed for every
    /// `Control` method except the monitors' ones (`census`, `stats`),
    /// which make only `Relaxed` loads of at most 8 bytes, allowed on
    /// read-only memory on the 64-bit targets we build for (see
    /// `core::sync::atomic`).
    pub unsafe fn carve<'a>(&self, base: *const u8) -> Parts<'a> {
        debug_assert!(self.ring_offset + self.ring_capacity * 8 <= self.segments_offset);
        // SAFETY: `new` placed the header, participants, bitmap,
        // descriptors and ring inside `control_len`, each 128-byte aligned
        // (the header at 0), without overlap; the caller guarantees the
        // memory for `'a`. Every one of these types holds atomics only,
        // valid for every bit pattern (a peer's writes are atomic races,
        // never undefined behaviour).
        unsafe {
            let at = |offset: usize| base.add(offset);
            Parts {
                header: &*base.cast::<Header>(),
                participants: core::slice::from_raw_parts(
                    at(self.parts_offset).cast::<Participant>(),
                    MAX_PARTICIPANTS,
                ),
                bitmap: core::slice::from_raw_parts(
                    at(self.bitmap_offset).cast::<AtomicU64>(),
                    self.bitmap_words(),
                ),
                descs: core::slice::from_raw_parts(
                    at(self.descs_offset).cast::<SegmentDesc>(),
                    self.count,
                ),
                ring: core::slice::from_raw_parts(
                    at(self.ring_offset).cast::<AtomicU64>(),
                    self.ring_capacity,
                ),
            }
        }
    }

    /// Number of `AtomicU64` words in the bitmap.
    pub fn bitmap_words(&self) -> usize {
        self.count.div_ceil(BITS_PER_WORD)
    }

    /// Bytes of the control area (everything before segment 0): what a
    /// read-only inspector maps.
    pub fn control_len(&self) -> usize {
        self.segments_offset
    }

    /// Byte offset of segment `seg` (which the caller has bounds-checked).
    #[inline]
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
        st(&ident.parts_offset, self.parts_offset);
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
            ("parts_offset", ld(&ident.parts_offset), expect.parts_offset),
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
        assert!(l.descs_offset + 130 * 128 <= l.ring_offset);
        assert!(l.bitmap_offset + 3 * 8 <= l.descs_offset);
        assert!(l.parts_offset + MAX_PARTICIPANTS * 64 <= l.bitmap_offset);
        assert_eq!(l.ring_capacity, 512);
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
