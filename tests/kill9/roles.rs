//! What the children do: producers, the consumer and the recoverer, each
//! until it is killed. Each stores its phase on the board before each step
//! and now and then arms its own `SIGKILL` at a chosen point.

use crate::board::{Phase, Slot};
use crate::config::CHILD_PATIENCE;
use crate::lines::Line;
use crate::payload::{HEADER, fill_body, verify, write_header};
use crate::rng::{Rng, pause};
use crate::tripwire::Tripwire;
use segpool::{SegmentPool, Unit};
use std::collections::VecDeque;

/// What every role has once attached: its place on the board, its timer, the
/// pool it inherited, and its random stream.
pub struct Attached {
    me: Slot,
    trip: Tripwire,
    pool: SegmentPool,
    rng: Rng,
}

impl Attached {
    /// Attaches to what the orchestrator handed down: incarnation `inc` in
    /// board slot `slot`.
    pub fn attach(slot: usize, inc: u32, seed: u64) -> Result<Attached, String> {
        Ok(Attached {
            me: Slot::inherited(slot, inc)?,
            trip: Tripwire::new()?,
            pool: SegmentPool::from_env().map_err(|e| format!("attach: {e}"))?,
            rng: Rng(seed),
        })
    }
}

/// Runs `recover_dead` in a loop, now and then with its own death armed to
/// land inside it: whatever a recovery killed half-way left, the next one
/// (the orchestrator's, or a watcher's) must finish.
pub fn recoverer(mut c: Attached, every: u64) -> Result<(), String> {
    loop {
        c.me.enter(Phase::Rest);
        pause(&mut c.rng);
        if every > 0 && c.rng.below(every) < 4 {
            c.trip.arm(c.rng.micros(20));
        }
        c.me.enter(Phase::Recover);
        c.pool
            .recover_dead()
            .map_err(|e| format!("recover_dead: {e}"))?;
    }
}

/// Writes units of random length, filled in chunks with random pauses,
/// and reports each once `commit_unit` returned `Ok`.
pub fn producer(mut c: Attached, every: u64) -> Result<(), String> {
    let writer = c.pool.open_writer();
    let body_max = c.pool.segment_size() - HEADER;
    let rng = &mut c.rng;
    for seq in 0u64.. {
        c.me.enter(Phase::Idle);
        pause(rng);
        // Where this unit's self-kill is armed, if it has one: before
        // `begin_unit`, mid-write, or (half of them) timed to land in the
        // commit.
        let spot = (every > 0 && rng.below(every) == 0).then(|| rng.below(4).min(2));
        if spot == Some(0) {
            c.trip.arm(rng.micros(30));
        }
        c.me.enter(Phase::Begin);
        let mut unit = writer
            .begin_unit_timeout(CHILD_PATIENCE)
            .map_err(|e| format!("begin_unit: {e}"))?;
        c.me.enter(Phase::Write);
        let body = 1 + rng.below(body_max as u64) as usize;
        let (offset, buf) = unit
            .reserve(HEADER + body)
            .map_err(|e| format!("reserve: {e}"))?;
        debug_assert_eq!(offset, 0);
        let mut whole = vec![0u8; body];
        fill_body(c.me.inc, seq, &mut whole);
        let chunks = 1 + rng.below(4) as usize;
        for (i, part) in whole.chunks(body.div_ceil(chunks)).enumerate() {
            let at = HEADER + i * body.div_ceil(chunks);
            buf[at..at + part.len()].copy_from_slice(part);
            if i == 0 && spot == Some(1) {
                c.trip.arm(rng.micros(30));
            }
            pause(rng);
        }
        write_header(&mut buf[..HEADER], c.me.index as u32, c.me.inc, seq, body);
        if spot == Some(2) {
            c.trip.arm_around_next_step(rng);
        }
        c.me.enter(Phase::Commit);
        unit.commit_unit()
            .map_err(|e| format!("commit_unit: {e}"))?;
        c.me.enter(Phase::Report);
        Line::Committed { seq }.send()?;
    }
    unreachable!("a producer runs until it is killed")
}

/// Verifies every unit byte for byte and reports it before anything else,
/// then holds up to `max_held` views for a random while, so that it often
/// dies holding views.
pub fn consumer(mut c: Attached, every: u64, max_held: u64) -> Result<(), String> {
    let reader = c.pool.open_reader();
    let mut held: VecDeque<Unit> = VecDeque::new();
    let rng = &mut c.rng;
    loop {
        c.me.enter(Phase::Recv);
        let spot = (every > 0 && rng.below(every) == 0).then(|| rng.below(2));
        if spot == Some(0) {
            c.trip.arm(rng.micros(30));
        }
        let unit = reader
            .recv_timeout(CHILD_PATIENCE)
            .map_err(|e| format!("recv: {e}"))?;
        c.me.enter(Phase::Check);
        let ticket = unit.ticket();
        match verify(&unit) {
            Ok((slot, inc, seq)) => Line::Delivered {
                ticket,
                slot,
                inc,
                seq,
            },
            Err(why) => Line::Corrupt { ticket, why },
        }
        .send()?;
        c.me.enter(Phase::Hold);
        // Sometimes keep a sub-view instead (it holds the segment alone).
        if rng.below(4) == 0 && unit.len() > HEADER {
            let view = unit
                .view(HEADER, unit.len() - HEADER)
                .map_err(|e| format!("view: {e}"))?;
            drop(unit);
            held.push_back(view);
        } else {
            held.push_back(unit);
        }
        pause(rng);
        let keep = rng.below(max_held + 1) as usize;
        if spot == Some(1) && held.len() > keep {
            // As for the producer's commit: a kill at a random point of the
            // release of the segment the last view drops.
            c.trip.arm_around_next_step(rng);
        }
        c.me.enter(Phase::Drop);
        while held.len() > keep {
            held.pop_front();
        }
    }
}
