//! The pool across a real process boundary: this test binary re-executes
//! itself (`child_entry`) as the producer.

mod common;

use common::{Rng, checksum, expect_success, role, spawn_child};
use segpool::{Error, SegmentPool};
use std::time::Duration;

const SEGMENT: usize = 64 * 1024;
const RANDOM_UNITS: u64 = 10_000;
const SEED: u64 = 0x5eed_1234_abcd_0001;

/// Not a test of its own: the body of every child process.
#[test]
fn child_entry() {
    let Some(role) = role() else { return };
    let pool = SegmentPool::from_env().expect("attach from the environment");
    let w = pool.open_writer();
    match role.as_str() {
        "random" => {
            let mut rng = Rng(SEED);
            let mut buf = vec![0u8; SEGMENT];
            for _ in 0..RANDOM_UNITS {
                let n = rng.size(SEGMENT);
                rng.fill(&mut buf[..n]);
                let mut u = w.begin_unit().unwrap();
                assert_eq!(u.write_binary(&buf[..n]).unwrap(), (0, n));
                u.commit_unit().unwrap();
            }
        }
        "tagged" => {
            let id: u32 = std::env::var("PRODUCER_ID").unwrap().parse().unwrap();
            let each: u32 = std::env::var("EACH").unwrap().parse().unwrap();
            for i in 0..each {
                publish_tagged(&w, id, i);
            }
        }
        "blocked" => {
            // The pool is full: block until the parent shuts it down.
            assert!(matches!(w.begin_unit(), Err(Error::Shutdown)));
        }
        "shutdown" => pool.shutdown_arena(),
        other => panic!("unknown role {other}"),
    }
}

/// A unit: `[id u32][i u32][pad..][payload of (i % 300) bytes][checksum u64]`.
fn publish_tagged(w: &segpool::Writer, id: u32, i: u32) {
    let mut payload = vec![0u8; (i % 300) as usize];
    Rng(u64::from(id) << 32 | u64::from(i) | 1).fill(&mut payload);
    let mut u = w.begin_unit().unwrap();
    u.write_binary(&[id.to_le_bytes(), i.to_le_bytes()].concat())
        .unwrap();
    let (off, n) = u.write_binary(&payload).unwrap();
    assert_eq!((off, n), (64, payload.len()));
    u.write_binary(&checksum(&payload).to_le_bytes()).unwrap();
    u.commit_unit().unwrap();
}

/// Checks a tagged unit's payload against its checksum; returns (id, i).
fn read_tagged(u: &segpool::Unit) -> (u32, u32) {
    let id = u32::from_le_bytes(u.read_binary(0, 4).unwrap().try_into().unwrap());
    let i = u32::from_le_bytes(u.read_binary(4, 4).unwrap().try_into().unwrap());
    let n = (i % 300) as usize;
    let payload = u.read_binary(64, n).unwrap();
    let sum_at = (64 + n).next_multiple_of(64);
    let sum = u64::from_le_bytes(u.read_binary(sum_at, 8).unwrap().try_into().unwrap());
    assert_eq!(
        checksum(payload),
        sum,
        "payload of unit ({id}, {i}) is corrupt"
    );
    (id, i)
}

#[test]
fn ten_thousand_units_of_random_sizes_cross_intact() {
    if role().is_some() {
        return;
    }
    let pool = SegmentPool::builder(SEGMENT, 4)
        .acquire_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let child = spawn_child(&pool, "child_entry", "random", &[]);
    let r = pool.open_reader();
    let mut rng = Rng(SEED);
    let mut expect = vec![0u8; SEGMENT];
    for ticket in 0..RANDOM_UNITS {
        let u = r.recv_timeout(Duration::from_secs(60)).unwrap();
        let n = rng.size(SEGMENT);
        rng.fill(&mut expect[..n]);
        assert_eq!(u.ticket(), ticket);
        assert_eq!(u.len(), n, "unit {ticket}");
        assert!(
            checksum(&u) == checksum(&expect[..n]) && *u == expect[..n],
            "unit {ticket} differs"
        );
    }
    expect_success(child);
    assert!(r.try_recv().unwrap().is_none());
    assert_eq!(pool.published(), RANDOM_UNITS);
    assert_eq!(pool.reclaimed(), RANDOM_UNITS);
}

#[test]
fn producer_processes_and_threads_share_one_pool_exactly_once() {
    if role().is_some() {
        return;
    }
    const EACH: u32 = 2_000;
    let pool = SegmentPool::builder(1024, 3)
        .acquire_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let children: Vec<_> = (0..2u32)
        .map(|id| {
            let envs = [("PRODUCER_ID", id.to_string()), ("EACH", EACH.to_string())];
            spawn_child(&pool, "child_entry", "tagged", &envs)
        })
        .collect();
    let mut seen = vec![vec![false; EACH as usize]; 4];
    std::thread::scope(|s| {
        for id in 2..4u32 {
            let w = pool.open_writer();
            s.spawn(move || (0..EACH).for_each(|i| publish_tagged(&w, id, i)));
        }
        let r = pool.open_reader();
        for _ in 0..4 * EACH {
            let u = r.recv_timeout(Duration::from_secs(60)).unwrap();
            let (id, i) = read_tagged(&u);
            let slot = &mut seen[id as usize][i as usize];
            assert!(!*slot, "unit ({id}, {i}) delivered twice");
            *slot = true;
        }
    });
    children.into_iter().for_each(expect_success);
    assert!(seen.iter().flatten().all(|&s| s), "a unit was lost");
    assert_eq!(pool.reclaimed(), u64::from(4 * EACH));
}

#[test]
fn shutdown_in_one_process_wakes_waiters_in_another() {
    if role().is_some() {
        return;
    }
    let pool = SegmentPool::builder(64, 1)
        .acquire_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let w = pool.open_writer();
    let mut u = w.begin_unit().unwrap();
    u.write_binary(b"fill").unwrap();
    u.commit_unit().unwrap();
    let r = pool.open_reader();
    let held = r.recv().unwrap(); // full and empty: both sides would block

    // A producer in a child blocks; our shutdown must wake it.
    let blocked = spawn_child(&pool, "child_entry", "blocked", &[]);
    while pool.stats().waiting_producers == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    // Our consumer blocks; a child's shutdown must wake it.
    std::thread::scope(|s| {
        let consumer = s.spawn(|| r.recv().map(|_| ()));
        while pool.stats().waiting_consumers == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        expect_success(spawn_child(&pool, "child_entry", "shutdown", &[]));
        assert!(matches!(consumer.join().unwrap(), Err(Error::Shutdown)));
    });
    expect_success(blocked);
    drop(held);
}

#[test]
fn a_named_pool_serves_a_process_that_attaches_by_name() {
    if role().is_some() {
        return;
    }
    let pool = SegmentPool::builder(1024, 2)
        .named(true)
        .acquire_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let envs = [
        ("PRODUCER_ID", "7".to_string()),
        ("EACH", "500".to_string()),
    ];
    let child = spawn_child(&pool, "child_entry", "tagged", &envs);
    let r = pool.open_reader();
    for i in 0..500 {
        assert_eq!(
            read_tagged(&r.recv_timeout(Duration::from_secs(60)).unwrap()),
            (7, i)
        );
    }
    expect_success(child);
    let name = pool.name().unwrap().to_owned();
    drop((r, pool)); // the creator's last reference unlinks the name
    assert!(!std::path::Path::new(&format!("/dev/shm{name}")).exists());
    assert!(common::leftover_shm().iter().all(|n| n.contains("-test-")));
}
