//! The `hostile_peer` target: a working pool, and between the producer's and
//! the consumer's operations a peer that overwrites the control area
//! (counters, bitmap, descriptors, ring, futex words, identity) with
//! whatever it likes. Every call must return, normally or with a typed
//! error, within its bounded timeout; no panic, no out-of-bounds access.

use super::model::Op;
use super::peer::{Driver, Scribble, Shared};
use arbitrary::{Arbitrary, Unstructured};
use segpool::SegmentPool;
use std::time::Duration;

/// One step of the session.
#[derive(Arbitrary, Debug)]
pub enum Action {
    /// A pool operation.
    Op(Op),
    /// The peer writes over the control area.
    Scribble(Scribble),
    /// Recovery as a survivor runs it (`recover_writer`, `recover_dead`).
    Recover,
}

/// What the fuzzer's bytes decode to.
#[derive(Arbitrary, Debug)]
pub struct Input {
    /// Segment size, folded into 1..=300.
    pub segment_size: u16,
    /// Segment count, folded into 1..=6, or 64..=79.
    pub count: u8,
    /// The session.
    pub actions: Vec<Action>,
}

/// Decodes `data` and runs the session.
pub fn run(data: &[u8]) {
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let count = match input.count {
        c @ 240.. => 64 + usize::from(c - 240),
        c => 1 + usize::from(c) % 6,
    };
    let pool = SegmentPool::builder(1 + usize::from(input.segment_size) % 300, count)
        .acquire_timeout(Duration::ZERO)
        .build()
        .expect("pool");
    let peer = Shared::of(&pool);
    let writer = pool.open_writer();
    let mut driver = Driver::new(&pool, &writer);
    for action in &input.actions {
        match action {
            Action::Op(op) => driver.apply(op),
            Action::Scribble(s) => peer.scribble(s),
            Action::Recover => driver.recover(),
        }
    }
    driver.finish();
}
