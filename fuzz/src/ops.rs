//! The `ops` target: an arbitrary geometry and sequence of operations, run
//! on a real pool and on [`super::model`] side by side.

use super::model::{Op, check_sequence};
use arbitrary::{Arbitrary, Unstructured};

/// What the fuzzer's bytes decode to.
#[derive(Arbitrary, Debug)]
pub struct Input {
    /// Segment size, folded into 1..=600 (around the 64-byte alignment steps).
    pub segment_size: u16,
    /// Segment count, folded into 1..=6, or 64..=79 for two bitmap words.
    pub count: u8,
    /// The operations.
    pub ops: Vec<Op>,
}

impl Input {
    /// The pool geometry this input asks for.
    pub fn geometry(&self) -> (usize, usize) {
        let count = match self.count {
            c @ 240.. => 64 + usize::from(c - 240),
            c => 1 + usize::from(c) % 6,
        };
        (1 + usize::from(self.segment_size) % 600, count)
    }
}

/// Decodes `data` and checks it; bytes that do not decode are skipped, as
/// `fuzz_target!` would.
pub fn run(data: &[u8]) {
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let (segment_size, count) = input.geometry();
    check_sequence(segment_size, count, &input.ops);
}
