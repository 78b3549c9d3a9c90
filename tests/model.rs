//! Property tests: the pool against a reference model, and many threads
//! against one consumer.
//!
//! The model and its harness live in `fuzz/src/model.rs`, shared with the
//! `ops` fuzz target, so proptest and libFuzzer check the same promises.
//! Here proptest picks the geometry and the operations (and shrinks a
//! failure to a short sequence).

#[path = "../fuzz/src/model.rs"]
mod model;

use model::{Op, check_sequence, pattern};
use proptest::prelude::*;
use segpool::{SegmentPool, Unit};
use std::collections::VecDeque;
use std::time::Duration;

/// Operations for a pool of `segment_size`-byte segments: lengths mostly
/// around the segment size (fitting, at the edge, too large), indices small.
fn op(segment_size: usize) -> impl Strategy<Value = Op> {
    let len = prop_oneof![
        4 => 0..=(segment_size as u16).saturating_add(80),
        1 => any::<u16>(),
    ];
    let small = || 0u16..=(segment_size as u16).saturating_add(8);
    let i = || any::<u8>();
    prop_oneof![
        8 => Just(Op::Begin),
        6 => (i(), len.clone(), any::<u8>()).prop_map(|(slot, len, fill)| Op::Write { slot, len, fill }),
        3 => (i(), len.clone(), any::<u8>()).prop_map(|(slot, len, fill)| Op::Reserve { slot, len, fill }),
        3 => (i(), len, any::<u8>()).prop_map(|(slot, len, fill)| Op::Spare { slot, len, fill }),
        7 => i().prop_map(|slot| Op::Commit { slot }),
        2 => i().prop_map(|slot| Op::Abort { slot }),
        2 => i().prop_map(|slot| Op::DropWriter { slot }),
        5 => Just(Op::TryRecv),
        3 => Just(Op::Recv),
        3 => i().prop_map(|unit| Op::CloneUnit { unit }),
        3 => (i(), small(), small()).prop_map(|(unit, offset, len)| Op::View { unit, offset, len }),
        3 => (i(), small(), small()).prop_map(|(unit, offset, len)| Op::Read { unit, offset, len }),
        7 => i().prop_map(|unit| Op::DropUnit { unit }),
        2 => Just(Op::Reset),
        1 => Just(Op::Shutdown),
    ]
}

/// A geometry (segment size around the 64-byte alignment steps; counts of
/// one bitmap word or two) and up to 80 operations on it.
fn scenario() -> impl Strategy<Value = (usize, usize, Vec<Op>)> {
    let geometry = (
        prop_oneof![1usize..=8, 56usize..=72, 120usize..=200, Just(4096)],
        prop_oneof![8 => 1usize..=5, 1 => 63usize..=66],
    );
    geometry.prop_flat_map(|(size, count)| {
        (
            Just(size),
            Just(count),
            prop::collection::vec(op(size), 0..80),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    /// After every step, `published`, `reclaimed`, the segments per phase,
    /// the generation and the shutdown flag equal the model's, every error
    /// is the one the model predicts, and every received byte is the one
    /// written (checked again when each view drops).
    #[test]
    fn the_pool_behaves_like_the_model((segment_size, count, ops) in scenario()) {
        check_sequence(segment_size, count, &ops);
    }
}

/// The payload producer `p` writes as its `seq`-th unit: a header and a
/// body whose length and bytes depend on both.
fn payload(p: u32, seq: u32, segment_size: usize) -> Vec<u8> {
    let body = (p as usize * 131 + seq as usize * 17) % (segment_size - 8 + 1);
    let mut v = Vec::with_capacity(8 + body);
    v.extend_from_slice(&p.to_le_bytes());
    v.extend_from_slice(&seq.to_le_bytes());
    v.extend(pattern((p * 7 + seq) as u8, body));
    v
}

/// A small deterministic generator for the consumer's hold pattern.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        // xorshift64*: fine for choosing what to drop next.
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

/// Drops the held unit at `i` after checking its bytes are still intact:
/// no producer may have been handed its segment while it was held.
fn release(held: &mut VecDeque<(Unit, Vec<u8>)>, i: usize) {
    let (u, want) = held.remove(i).expect("index in range");
    assert_eq!(
        u.as_bytes(),
        &want[..],
        "unit {} changed while held",
        u.ticket()
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    /// Producer threads each write numbered units (by `write_binary` or the
    /// loan API) while one consumer receives them, holds a random number
    /// for a random while and drops them in random order: every unit
    /// arrives exactly once, in ticket order, in its producer's order, with
    /// its bytes intact for as long as it is held, and every segment comes
    /// back at the end.
    #[test]
    fn producers_and_a_holding_consumer_deliver_every_unit_once(
        producers in 1u32..=4,
        per_producer in 1u32..=250,
        count in 2usize..=6,
        segment_size in 8usize..=300,
        seed in any::<u64>(),
    ) {
        let pool = SegmentPool::builder(segment_size, count)
            .acquire_timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let total = u64::from(producers * per_producer);
        std::thread::scope(|s| {
            for p in 0..producers {
                let w = pool.open_writer();
                s.spawn(move || {
                    for seq in 0..per_producer {
                        let data = payload(p, seq, segment_size);
                        let mut u = w.begin_unit().unwrap();
                        if seq % 2 == 0 {
                            u.write_binary(&data).unwrap();
                        } else {
                            u.reserve(data.len()).unwrap().1.copy_from_slice(&data);
                        }
                        u.commit_unit().unwrap();
                    }
                });
            }
            let reader = pool.open_reader();
            let mut rng = Rng(seed | 1);
            let mut next = vec![0u32; producers as usize];
            let mut held: VecDeque<(Unit, Vec<u8>)> = VecDeque::new();
            for ticket in 0..total {
                // Hold at most count - 1, so producers can always progress.
                while held.len() >= count - 1 || (!held.is_empty() && rng.below(3) == 0) {
                    let i = rng.below(held.len());
                    release(&mut held, i);
                }
                if rng.below(8) == 0 {
                    std::thread::sleep(Duration::from_micros(rng.below(300) as u64));
                }
                let u = reader.recv_timeout(Duration::from_secs(60)).unwrap();
                assert_eq!(u.ticket(), ticket);
                let head = u.read_binary(0, 8).unwrap();
                let p = u32::from_le_bytes(head[..4].try_into().unwrap());
                let seq = u32::from_le_bytes(head[4..].try_into().unwrap());
                assert!(p < producers, "unknown producer {p}");
                assert_eq!(seq, next[p as usize], "producer {p} out of order or repeated");
                next[p as usize] += 1;
                let want = payload(p, seq, segment_size);
                assert_eq!(u.as_bytes(), &want[..]);
                held.push_back((u, want));
            }
            while !held.is_empty() {
                let i = rng.below(held.len());
                release(&mut held, i);
            }
            assert!(next.iter().all(|&n| n == per_producer));
        });
        prop_assert_eq!(pool.published(), total);
        prop_assert_eq!(pool.reclaimed(), total);
        prop_assert_eq!(pool.stats().free, count);
    }
}

/// Hand-written sequences for the rules most worth pinning down, so they
/// are checked on every run whatever proptest draws.
#[test]
fn reset_and_shutdown_rules_against_the_model() {
    use Op::*;
    let w = |len| Write {
        slot: 0,
        len,
        fill: 1,
    };
    // A queued unit is dropped by reset (and counted reclaimed); a unit being
    // written fails with Stale; a held one keeps its bytes.
    check_sequence(
        128,
        3,
        &[
            Begin,
            w(10),
            Commit { slot: 0 },
            TryRecv,
            Begin,
            w(20),
            Commit { slot: 0 },
            Begin,
            w(30),
            Reset,
            Commit { slot: 0 },
            TryRecv,
            DropUnit { unit: 0 },
        ],
    );
    // After shutdown: begin and commit fail, published units still drain.
    check_sequence(
        64,
        2,
        &[
            Begin,
            w(64),
            Commit { slot: 0 },
            Begin,
            Shutdown,
            Begin,
            Commit { slot: 0 },
            Recv,
            Recv,
            TryRecv,
            CloneUnit { unit: 0 },
            DropUnit { unit: 1 },
            DropUnit { unit: 0 },
        ],
    );
    // Too large: nothing is written and the unit stays open.
    check_sequence(
        100,
        1,
        &[Begin, w(101), w(100), w(1), Commit { slot: 0 }, Recv],
    );
}
