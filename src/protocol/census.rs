//! The monitors' room: one pass over the block ([`Control::census`]) for
//! the statistics, the participants and the writers. Loads only (`Relaxed`,
//! and the ring's `Acquire` slot loads), so a read-only mapping of the
//! control area can be inspected with it (`crate::inspect`); fields are read one by one while the pool runs, so
//! they need not add up exactly.

use super::control::Control;
use crate::layout::{
    MAX_PARTICIPANTS, Owner, SHUT_DOWN, epoch_of, owner_of, part, phase, phase_of,
};
use crate::ring::SLOT_EPOCH_MASK;
use crate::sync::Ordering;

/// A snapshot of the pool's state, for monitoring. Fields are read one by
/// one while the pool runs, so they need not add up exactly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Units published since creation.
    pub published: u64,
    /// Units whose segments came back since creation.
    pub reclaimed: u64,
    /// Segments free.
    pub free: usize,
    /// Segments being written.
    pub writing: usize,
    /// Segments published and not yet received.
    pub queued: usize,
    /// Segments received and still held by views.
    pub held: usize,
    /// Producers asleep waiting for space.
    pub waiting_producers: u32,
    /// Consumers asleep waiting for data.
    pub waiting_consumers: u32,
    /// Current generation (number of resets).
    pub generation: u32,
    /// Whether `shutdown_arena` was called.
    pub shutdown: bool,
    /// Processes that have the pool open (participant entries in use; a
    /// dead one counts until it is recovered).
    pub participants: usize,
    /// Dead participants recovered since the pool was created.
    pub recovered_participants: u64,
    /// Segments recovery gave back since the pool was created.
    pub recovered_segments: u64,
}

/// One participant entry as seen by a monitor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParticipantView {
    /// Entry index.
    pub index: usize,
    /// Incarnation of the entry.
    pub incarnation: u64,
    /// Pid the process recorded.
    pub pid: u32,
    /// Its random token.
    pub token: u64,
    /// The inode of its pidfd, as it recorded it (0: none).
    pub pid_ino: u64,
    /// Segments its state words name it as owner of.
    pub segments: usize,
    /// Its threads asleep for space / for data.
    pub waiting: (u32, u32),
}

/// Everything a monitor reads, from one pass over the descriptors.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Census {
    /// The counts.
    pub stats: Stats,
    /// The participant entries in use, by index.
    pub participants: Vec<ParticipantView>,
    /// The owners of the units being written now (WRITING and not yet in
    /// the ring), one entry per segment.
    pub writers: Vec<Owner>,
    /// The sum of the descriptors' `len`s that are not 0 (each holds the
    /// span of the last unit committed in its segment, in any phase),
    /// clamped to `segment_size`.
    pub len_sum: u64,
    /// How many descriptors `len_sum` adds up.
    pub len_count: u64,
}

impl Control<'_> {
    /// Reads the block once for monitors: the header's counters, each
    /// participant entry, the ring's slots and each descriptor, once each.
    pub fn census(&self) -> Census {
        let life = &self.hdr.life;
        let (published, head) = self.ring.published_with(Ordering::Relaxed);
        let mut c = Census::default();
        let s = &mut c.stats;
        s.published = published;
        s.generation = life.generation.load(Ordering::Relaxed);
        s.shutdown = life.shutdown.load(Ordering::Relaxed) == SHUT_DOWN;
        s.recovered_participants = life.recovered_participants.load(Ordering::Relaxed);
        s.recovered_segments = life.recovered_segments.load(Ordering::Relaxed);
        // Entry index -> position in `c.participants`.
        let mut at = [u8::MAX; MAX_PARTICIPANTS];
        for (index, p) in self.parts.iter().enumerate() {
            let st = p.state.load(Ordering::Relaxed);
            if part::status(st) != part::ALIVE {
                continue;
            }
            let waiting = (
                p.waiting_space.load(Ordering::Relaxed),
                p.waiting_data.load(Ordering::Relaxed),
            );
            s.waiting_producers = s.waiting_producers.saturating_add(waiting.0);
            s.waiting_consumers = s.waiting_consumers.saturating_add(waiting.1);
            at[index] = c.participants.len() as u8;
            c.participants.push(ParticipantView {
                index,
                incarnation: part::incarnation(st),
                pid: p.pid.load(Ordering::Relaxed),
                token: p.token.load(Ordering::Relaxed),
                pid_ino: p.pid_ino.load(Ordering::Relaxed),
                segments: 0,
                waiting,
            });
        }
        s.participants = c.participants.len();
        // Every (segment, slot epoch) the ring holds: at most `capacity`.
        let mut in_ring: Vec<(usize, u64)> = Vec::new();
        self.ring
            .holds(&mut |seg, epoch| in_ring.push((seg, epoch)));
        in_ring.sort_unstable();
        let (mut writing, mut published_phase) = (0, 0);
        for (seg, d) in self.descs.iter().enumerate() {
            let st = d.state.load(Ordering::Relaxed);
            match phase_of(st) {
                phase::WRITING => {
                    writing += 1;
                    let key = (seg, epoch_of(st) & SLOT_EPOCH_MASK);
                    if in_ring.binary_search(&key).is_err() {
                        c.writers.extend(owner_of(st));
                    }
                }
                phase::PUBLISHED => published_phase += 1,
                phase::HELD => s.held += 1,
                _ => s.free += 1,
            }
            if let Some(o) = owner_of(st) {
                let v = at
                    .get(o.index())
                    .and_then(|&i| c.participants.get_mut(usize::from(i)));
                if let Some(v) = v.filter(|v| Owner::new(v.index, v.incarnation) == o) {
                    v.segments += 1;
                }
            }
            let len = d.len.load(Ordering::Relaxed).min(self.segment_size as u64);
            if len > 0 {
                c.len_sum = c.len_sum.saturating_add(len);
                c.len_count += 1;
            }
            s.reclaimed = s.reclaimed.wrapping_add(
                d.reclaims.load(Ordering::Relaxed) >> crate::layout::RECLAIM_EPOCH_BITS,
            );
        }
        // Committed units stay WRITING until taken: the ring says how many.
        let in_flight = writing + published_phase;
        s.queued = (published.saturating_sub(head) as usize).min(in_flight);
        s.writing = in_flight - s.queued;
        c
    }

    /// The counts of a [`census`](Self::census).
    pub fn stats(&self) -> Stats {
        self.census().stats
    }

    /// The participant entries in use, as a [`census`](Self::census) reads them.
    pub fn participants(&self) -> Vec<ParticipantView> {
        self.census().participants
    }

    /// Whether a sleeper's flag is set on each side (space, data): a
    /// snapshot that also shows flags dead sleepers left.
    pub fn flags(&self) -> (bool, bool) {
        (self.bitmap.armed(), self.ring.armed())
    }
}
