//! The names of claims and units: what a producer holds while it writes
//! ([`Lease`]), what a consumer holds while it reads ([`Taken`]), and the
//! name both share ([`UnitId`]).

use crate::layout::{EPOCH_MASK, Owner, epoch_of};

/// Ownership of a segment being written: what `begin` hands out. Three
/// words (a writer moves it with every unit): the epoch lives in `state`.
#[derive(Debug, PartialEq, Eq)]
pub struct Lease {
    /// Segment index (< count).
    pub seg: usize,
    /// Generation the claim belongs to.
    pub generation: u32,
    /// Who claimed it.
    pub owner: Owner,
    /// The descriptor's state word this claim set: WRITING, `owner`, and
    /// the claim's epoch.
    pub(super) state: u64,
}

impl Lease {
    /// Epoch of this claim.
    #[inline]
    pub fn epoch(&self) -> u64 {
        epoch_of(self.state) & EPOCH_MASK
    }

    /// The name of the unit this lease writes.
    pub fn id(&self) -> UnitId {
        UnitId::new(self.seg, self.epoch())
    }

    #[inline]
    pub(super) fn state(&self) -> u64 {
        self.state
    }
}

/// The name of one unit: its segment and the epoch of the claim that wrote
/// it. Every claim of a segment has a new epoch, so no two units of a pool
/// share a name (until a segment's 2^41 claims wrap around).
///
/// Opaque: a producer can send it beside the unit (an envelope through
/// another channel), and a consumer takes exactly that unit with
/// [`Reader::recv_id`](crate::Reader::recv_id), whatever order units were
/// committed in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UnitId(u64);

impl UnitId {
    const SEG_BITS: u32 = 16;

    pub(super) fn new(seg: usize, epoch: u64) -> UnitId {
        const _: () = assert!(crate::layout::MAX_COUNT <= 1 << UnitId::SEG_BITS);
        UnitId(((epoch & EPOCH_MASK) << Self::SEG_BITS) | seg as u64)
    }

    /// The id as 64 bits (to send it somewhere).
    pub fn to_bits(self) -> u64 {
        self.0
    }

    /// An id from [`to_bits`](Self::to_bits). Any value is accepted; one no
    /// unit has simply names nothing.
    pub fn from_bits(bits: u64) -> UnitId {
        UnitId(bits)
    }
}

/// A unit a consumer took: the segment is HELD until
/// [`Control::release`](super::Control::release).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    /// Publish ticket (0, 1, 2, ... in publish order).
    pub ticket: u64,
    /// Segment index (bounds-checked).
    pub seg: usize,
    /// Epoch the release must present.
    pub epoch: u64,
    /// Committed span in bytes (bounds-checked against `segment_size`).
    pub len: usize,
    /// Generation it was written in.
    pub generation: u32,
    /// Who holds it.
    pub owner: Owner,
}

impl Taken {
    /// The name of the unit (the one its writer's lease had).
    pub fn id(&self) -> UnitId {
        UnitId::new(self.seg, self.epoch)
    }
}
