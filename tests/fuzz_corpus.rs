//! Replays every file of `fuzz/corpus/<target>/` through the same checking
//! code as the fuzz targets (`fuzz/src`), so what the fuzzers found (and the
//! seeds) is checked on every `cargo test`, without nightly or libFuzzer.

#[path = "../fuzz/src/lib.rs"]
mod fuzz;

use std::path::PathBuf;

/// Runs `check` on each corpus file of `target`, naming the file first so a
/// failure says which input it was.
fn replay(target: &str, check: fn(&[u8])) {
    let dir: PathBuf = [env!("CARGO_MANIFEST_DIR"), "fuzz", "corpus", target]
        .iter()
        .collect();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} has no seed inputs", dir.display());
    for path in files {
        let data = std::fs::read(&path).expect("corpus file");
        eprintln!("replaying {}", path.display());
        check(&data);
    }
}

#[test]
fn ops_corpus_agrees_with_the_model() {
    replay("ops", fuzz::ops::run);
}

#[test]
fn attach_corpus_is_refused_or_works() {
    replay("attach", fuzz::attach::run);
}

#[test]
fn hostile_peer_corpus_never_panics_or_hangs() {
    replay("hostile_peer", fuzz::hostile_peer::run);
}

#[test]
fn handle_corpus_parses_or_is_refused() {
    replay("handle", fuzz::handle::run);
}

/// Regression, found by `hostile_peer` (input kept as
/// `corpus/hostile_peer/crash-ring-cursor-overflow`): a peer that moved the
/// consumer's `head` near `u64::MAX` made `Ring::advance` overflow, a panic
/// where overflow checks are on. The cursors now wrap, the call returns, and
/// the pool goes on carrying units.
#[test]
fn a_head_moved_near_u64_max_wraps_instead_of_panicking() {
    use fuzz::peer::{Field, Scribble, Shared};
    use segpool::SegmentPool;
    use std::time::Duration;

    let pool = SegmentPool::builder(64, 4)
        .acquire_timeout(Duration::ZERO)
        .build()
        .unwrap();
    Shared::of(&pool).scribble(&Scribble::Set {
        field: Field::Head,
        value: u64::MAX - 2,
    });
    let reader = pool.open_reader();
    assert!(matches!(reader.try_recv(), Ok(None)));
    let writer = pool.open_writer();
    let mut u = writer.begin_unit().unwrap();
    u.write_binary(b"after the wrap").unwrap();
    u.commit_unit().unwrap();
    let got = reader.try_recv().unwrap().expect("the unit just committed");
    assert_eq!(got.as_bytes(), b"after the wrap");
}

/// The hostile peer of the `hostile_peer` target, but concurrent: while two
/// producers and a consumer run (every call with a 1 ms bound), a third
/// thread overwrites counters, cursors, bitmap words, descriptors, ring
/// slots or futex words at a random moment. Each call must return, normally
/// or with an error; reaching the end of every round is the property. Many
/// short rounds on fresh pools, since one corrupt cursor can leave a pool
/// refusing everything (with `Error::Corrupt`) for good. (Not a fuzz target:
/// libFuzzer needs a run to be a function of its input.)
#[test]
fn a_peer_scribbling_while_the_pool_runs_never_wedges_it() {
    use fuzz::peer::{Field, Scribble, Shared};
    use segpool::SegmentPool;
    use std::time::Duration;

    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    // Every field but the shutdown flag (which ends a round at once) and the
    // identity (read only by attach).
    let field = |i: u64| match i % 11 {
        0 => Field::Tail,
        1 => Field::Head,
        2 => Field::Reclaimed,
        3 => Field::Space,
        4 => Field::Data,
        5 => Field::Generation,
        6 => Field::Bitmap(i as u8),
        7 => Field::DescState(i as u8),
        8 => Field::DescLen(i as u8),
        9 => Field::DescGeneration(i as u8),
        _ => Field::Ring(i as u8),
    };
    for round in 0..40 {
        let pool = SegmentPool::builder(256, 4)
            .acquire_timeout(Duration::from_millis(1))
            .build()
            .unwrap();
        let peer = Shared::of(&pool);
        let scribbles: Vec<(u64, Scribble)> = (0..1 + round % 3)
            .map(|_| {
                let (r, f) = (next(), field(next() >> 3));
                let s = match r % 4 {
                    0 => Scribble::Set {
                        field: f,
                        value: r >> 8,
                    },
                    1 => Scribble::Set {
                        field: f,
                        value: r % 8,
                    },
                    _ => Scribble::Nudge {
                        field: f,
                        delta: (r >> 40) as i8 % 3,
                    },
                };
                (r % 3000, s)
            })
            .collect();
        std::thread::scope(|s| {
            for p in 0..2u8 {
                let w = pool.open_writer();
                s.spawn(move || {
                    for i in 0..300u32 {
                        if let Ok(mut u) = w.begin_unit() {
                            let _ = u.write_binary(&[p; 100]);
                            if i % 7 != 0 {
                                let _ = u.commit_unit();
                            }
                        }
                    }
                });
            }
            s.spawn(|| {
                let r = pool.open_reader();
                let mut held = Vec::new();
                for i in 0..600u32 {
                    if let Ok(u) = r.recv_timeout(Duration::from_millis(1)) {
                        assert!(u.len() <= 256 && u.segment() < 4);
                        std::hint::black_box(u.as_bytes().iter().fold(0u8, |a, &b| a ^ b));
                        held.push(u);
                    }
                    if held.len() > 2 || i % 5 == 0 {
                        held.clear();
                    }
                    if i % 200 == 199 {
                        let _ = pool.reset();
                    }
                }
            });
            s.spawn(|| {
                for (delay_us, scribble) in &scribbles {
                    std::thread::sleep(Duration::from_micros(*delay_us));
                    peer.scribble(scribble);
                }
            });
        });
        pool.shutdown_arena();
        let r = pool.open_reader();
        for _ in 0..8 {
            if r.recv_timeout(Duration::from_millis(1)).is_err() {
                break;
            }
        }
    }
}
