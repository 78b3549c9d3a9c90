//! Regressions for defects found in review, each asserting the correct
//! behaviour (each failed on the code before its fix).

use segpool::__private::HeapControl;
use segpool::{Error, SegmentPool};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// `reset` once drained the ring to empty, dropping units that producers
/// woken by its own releases committed in the new generation.
#[test]
fn reset_never_drops_units_of_the_new_generation() {
    const N: usize = 512;
    let mut lost = 0;
    for _trial in 0..10 {
        let pool = SegmentPool::builder(64, N)
            .acquire_timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let w = pool.open_writer();
        for _ in 0..N {
            let mut u = w.begin_unit().unwrap();
            u.write_binary(&[0]).unwrap();
            u.commit_unit().unwrap();
        }
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    // Producers of the next pass, blocked on the full pool.
                    while !stop.load(Ordering::Relaxed) {
                        let Ok(mut u) = w.begin_unit_timeout(Duration::from_millis(200)) else {
                            continue;
                        };
                        u.write_binary(&[1]).unwrap();
                        let _ = u.commit_unit();
                    }
                });
            }
            std::thread::sleep(Duration::from_millis(20));
            let dropped = pool.reset().unwrap();
            lost += dropped.saturating_sub(N as u64);
            stop.store(true, Ordering::Relaxed);
        });
        // Everything still queued is of the new generation and delivered.
        let r = pool.open_reader();
        while let Some(u) = r.try_recv().unwrap() {
            assert_eq!((u.generation(), &*u), (1, &[1u8][..]));
        }
    }
    assert_eq!(lost, 0, "reset dropped {lost} units of the new generation");
}

/// `recover(dead)` once read the owner before the state, so it could free a
/// segment a live writer had just claimed (the owner field still naming the
/// dead pid from an earlier claim): two owners of one segment. Since v2 the
/// owner lives in the state word itself; this pins that down.
#[test]
fn recover_never_frees_a_live_writers_segment() {
    let block = HeapControl::new(64, 1).unwrap();
    let (dead, live) = (block.join(), block.join());
    block.kill(dead);
    let stolen = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let c = block.control();
            while !stop.load(Ordering::Relaxed) {
                c.recover(dead.index(), dead.incarnation());
            }
        });
        let c = block.control();
        for _ in 0..300_000 {
            if let Ok(Some(l)) = c.try_begin(dead) {
                c.abort(l); // a zombie lease of the dead owner
            }
            if let Ok(Some(l)) = c.try_begin(live) {
                if !c.abort(l) {
                    stolen.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert_eq!(
        stolen.load(Ordering::Relaxed),
        0,
        "recover(dead) freed a live writer's segment"
    );
}

/// A probe period of `Duration::MAX` once overflowed an `Instant` and panicked.
#[test]
fn a_huge_probe_period_does_not_panic() {
    let pool = SegmentPool::new(64, 1).unwrap();
    let r = pool
        .open_reader()
        .with_probe(Duration::MAX, Arc::new(|| Ok(())));
    assert!(matches!(
        r.recv_timeout(Duration::from_millis(10)),
        Err(Error::Timeout(_))
    ));
}

/// A probe that panics must not leave a waiter counted forever.
#[test]
fn a_panicking_probe_does_not_leave_a_waiter_counted() {
    let pool = SegmentPool::new(64, 1).unwrap();
    let r = pool.open_reader().with_probe(
        Duration::from_millis(1),
        Arc::new(|| panic!("probe failed")),
    );
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        r.recv_timeout(Duration::from_secs(5))
    }));
    assert!(res.is_err(), "the probe's panic propagates");
    assert_eq!(pool.stats().waiting_consumers, 0);
}

/// A producer that waited across a `reset` once got a lease of the new
/// generation for a unit it began in the old one.
#[test]
fn a_producer_blocked_across_reset_commits_stale() {
    let pool = SegmentPool::builder(64, 1)
        .acquire_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let w = pool.open_writer();
    let held = w.begin_unit().unwrap();
    std::thread::scope(|s| {
        let blocked = s.spawn(|| {
            let u = w.begin_unit().unwrap();
            u.commit_unit()
        });
        while pool.stats().waiting_producers == 0 {
            std::thread::yield_now();
        }
        pool.reset().unwrap();
        held.abort_unit(); // frees the segment: the blocked producer gets it
        assert!(matches!(blocked.join().unwrap(), Err(Error::Stale)));
    });
    assert!(pool.open_reader().try_recv().unwrap().is_none());
}
