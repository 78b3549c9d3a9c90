//! The pool's behaviour within one process: what users of the API can rely on.

use segpool::{Error, SegmentPool};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn pool(segment_size: usize, count: usize, timeout: Duration) -> SegmentPool {
    SegmentPool::builder(segment_size, count)
        .acquire_timeout(timeout)
        .build()
        .unwrap()
}

fn publish(w: &segpool::Writer, bytes: &[u8]) {
    let mut u = w.begin_unit().unwrap();
    u.write_binary(bytes).unwrap();
    u.commit_unit().unwrap();
}

#[test]
fn zero_sizes_are_refused() {
    assert!(matches!(
        SegmentPool::new(0, 4),
        Err(Error::InvalidConfig(_))
    ));
    assert!(matches!(
        SegmentPool::new(4096, 0),
        Err(Error::InvalidConfig(_))
    ));
}

#[test]
fn sizes_that_overflow_are_refused() {
    assert!(matches!(
        SegmentPool::new(usize::MAX / 2, 3),
        Err(Error::InvalidConfig(_))
    ));
    assert!(matches!(
        SegmentPool::new(64, segpool::MAX_COUNT + 1),
        Err(Error::InvalidConfig(_))
    ));
}

#[test]
fn a_unit_larger_than_a_segment_is_refused_not_truncated() {
    let p = pool(1000, 1, Duration::from_secs(5));
    let w = p.open_writer();
    let mut u = w.begin_unit().unwrap();
    let err = u.write_binary(&[7u8; 1001]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::TooLarge {
                requested: 1001,
                needed: 1001,
                segment_size: 1000,
                ..
            }
        ),
        "{err}"
    );
    // Nothing was written, the unit is still usable and exactly full fits.
    assert_eq!(u.len(), 0);
    assert_eq!(u.write_binary(&[7u8; 1000]).unwrap(), (0, 1000));
    // A second binary starts at the next 64-byte boundary, past the end.
    assert!(matches!(
        u.write_binary(&[1]),
        Err(Error::TooLarge { offset: 1024, .. })
    ));
    assert!(matches!(u.reserve(1), Err(Error::TooLarge { .. })));
}

#[test]
fn write_binary_offsets_are_64_byte_aligned_and_read_back() {
    let p = pool(4096, 2, Duration::from_secs(5));
    let (w, r) = (p.open_writer(), p.open_reader());
    let mut u = w.begin_unit().unwrap();
    let a = u.write_binary(b"abc").unwrap();
    let b = u.write_binary(&[9u8; 100]).unwrap();
    let c = u.write_binary(b"").unwrap();
    assert_eq!(a, (0, 3));
    assert_eq!(b, (64, 100));
    assert_eq!(c, (192, 0));
    assert_eq!(u.commit_unit().unwrap(), 192);
    let got = r.recv().unwrap();
    assert_eq!(got.len(), 192);
    assert_eq!(got.read_binary(a.0, a.1).unwrap(), b"abc");
    assert_eq!(got.read_binary(b.0, b.1).unwrap(), &[9u8; 100][..]);
    assert!(matches!(
        got.read_binary(190, 3),
        Err(Error::OutOfBounds { .. })
    ));
    assert!(matches!(
        got.read_binary(usize::MAX, 2),
        Err(Error::OutOfBounds { .. })
    ));
}

#[test]
fn the_loan_api_writes_in_place() {
    let p = pool(1 << 16, 1, Duration::from_secs(5));
    let (w, r) = (p.open_writer(), p.open_reader());
    let mut u = w.begin_unit().unwrap();
    let (off, buf) = u.reserve(8).unwrap();
    buf.copy_from_slice(&42u64.to_le_bytes());
    let (spare_off, spare) = u.spare_mut();
    assert_eq!(spare_off, 64);
    assert_eq!(spare.len(), (1 << 16) - 64);
    spare[..5].copy_from_slice(b"hello");
    assert_eq!(u.advance(5).unwrap(), 64);
    assert!(matches!(u.advance(1 << 16), Err(Error::TooLarge { .. })));
    u.commit_unit().unwrap();
    let got = r.recv().unwrap();
    assert_eq!(got.read_binary(off, 8).unwrap(), 42u64.to_le_bytes());
    assert_eq!(got.read_binary(64, 5).unwrap(), b"hello");
}

#[test]
fn acquire_timeout_zero_returns_exhausted_at_once() {
    let p = pool(64, 2, Duration::ZERO);
    let w = p.open_writer();
    let _a = w.begin_unit().unwrap();
    let _b = w.begin_unit().unwrap();
    assert!(matches!(w.begin_unit(), Err(Error::Exhausted { count: 2 })));
    assert!(w.try_begin_unit().unwrap().is_none());
}

#[test]
fn acquire_timeout_expiry_returns_timeout() {
    let timeout = Duration::from_millis(100);
    let p = pool(64, 1, timeout);
    let w = p.open_writer();
    let _held = w.begin_unit().unwrap();
    let start = Instant::now();
    let err = w.begin_unit().unwrap_err();
    assert!(matches!(err, Error::Timeout(t) if t == timeout), "{err}");
    assert!(start.elapsed() >= timeout, "returned before the timeout");
    assert_eq!(
        p.stats().waiting_producers,
        0,
        "the waiter count went back to zero"
    );
}

#[test]
fn dropping_an_uncommitted_unit_aborts_it_and_frees_the_segment() {
    let p = pool(64, 1, Duration::ZERO);
    let w = p.open_writer();
    {
        let mut u = w.begin_unit().unwrap();
        u.write_binary(b"never published").unwrap();
    }
    let u = w.begin_unit().unwrap();
    u.abort_unit();
    assert_eq!(p.published(), 0);
    assert_eq!(p.reclaimed(), 0);
    assert_eq!(p.stats().free, 1);
    assert!(p.open_reader().try_recv().unwrap().is_none());
}

#[test]
fn a_blocked_producer_wakes_when_a_unit_is_dropped_and_not_before() {
    let p = pool(64, 1, Duration::from_secs(30));
    let (w, r) = (p.open_writer(), p.open_reader());
    publish(&w, b"x");
    let held = r.recv().unwrap();
    let got_one = AtomicBool::new(false);
    std::thread::scope(|s| {
        let t = s.spawn(|| {
            let u = w.begin_unit();
            got_one.store(true, Ordering::SeqCst);
            u.map(|u| u.segment())
        });
        // Wait until it is asleep on the futex, then give it time to (wrongly) return.
        while p.stats().waiting_producers == 0 {
            std::thread::yield_now();
        }
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            !got_one.load(Ordering::SeqCst),
            "producer returned while the pool was full"
        );
        let seg = held.segment();
        drop(held);
        assert_eq!(t.join().unwrap().unwrap(), seg);
    });
    assert_eq!(p.reclaimed(), 1);
}

#[test]
fn shutdown_wakes_a_blocked_producer_and_a_blocked_consumer() {
    let p = pool(64, 1, Duration::from_secs(60));
    let (w, r) = (p.open_writer(), p.open_reader());
    publish(&w, b"x");
    let held = r.recv().unwrap(); // pool full, ring empty: both sides block
    std::thread::scope(|s| {
        let producer = s.spawn(|| w.begin_unit().map(|_| ()));
        let consumer = s.spawn(|| r.recv().map(|_| ()));
        while p.stats().waiting_producers == 0 || p.stats().waiting_consumers == 0 {
            std::thread::yield_now();
        }
        p.shutdown_arena();
        p.shutdown_arena(); // idempotent
        assert!(matches!(producer.join().unwrap(), Err(Error::Shutdown)));
        assert!(matches!(consumer.join().unwrap(), Err(Error::Shutdown)));
    });
    drop(held);
    assert!(
        matches!(w.begin_unit(), Err(Error::Shutdown)),
        "shutdown is sticky"
    );
    assert!(p.is_shutdown());
}

#[test]
fn units_published_before_shutdown_are_still_received() {
    let p = pool(64, 4, Duration::from_secs(5));
    let (w, r) = (p.open_writer(), p.open_reader());
    publish(&w, b"a");
    publish(&w, b"b");
    let late = w.begin_unit().unwrap();
    p.shutdown_arena();
    assert!(matches!(late.commit_unit(), Err(Error::Shutdown)));
    assert_eq!(&*r.recv().unwrap(), b"a");
    assert_eq!(&*r.recv().unwrap(), b"b");
    assert!(matches!(r.recv(), Err(Error::Shutdown)));
    assert_eq!(p.stats().free, 4, "the refused unit's segment came back");
}

#[test]
fn holding_one_unit_forever_does_not_stop_the_others() {
    let p = pool(64, 2, Duration::from_secs(10));
    let (w, r) = (p.open_writer(), p.open_reader());
    publish(&w, b"kept");
    let kept = r.recv().unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..5_000u32 {
                publish(&w, &i.to_le_bytes());
            }
        });
        for i in 0..5_000u32 {
            let u = r.recv().unwrap();
            assert_eq!(u.read_binary(0, 4).unwrap(), i.to_le_bytes());
            assert_ne!(u.segment(), kept.segment());
        }
    });
    assert_eq!(&*kept, b"kept");
    assert_eq!(p.reclaimed(), 5_000);
}

#[test]
fn reclaim_is_out_of_order() {
    let p = pool(64, 3, Duration::ZERO);
    let (w, r) = (p.open_writer(), p.open_reader());
    for b in [b"0", b"1", b"2"] {
        publish(&w, b);
    }
    let units: Vec<_> = (0..3).map(|_| r.recv().unwrap()).collect();
    assert!(matches!(w.begin_unit(), Err(Error::Exhausted { .. })));
    let middle = units[1].segment();
    let mut units = units;
    units.remove(1);
    let u = w.begin_unit().unwrap();
    assert_eq!(
        u.segment(),
        middle,
        "exactly the dropped unit's segment came back"
    );
    assert_eq!(p.reclaimed(), 1);
}

#[test]
fn clones_and_views_keep_the_segment_until_the_last_one_drops() {
    let p = pool(64, 1, Duration::ZERO);
    let (w, r) = (p.open_writer(), p.open_reader());
    publish(&w, b"hello world");
    let u = r.recv().unwrap();
    let clone = u.clone();
    let view = u.view(6, 5).unwrap();
    assert!(u.view(6, 6).is_err());
    drop(u);
    let on_thread = std::thread::spawn(move || clone.to_vec()).join().unwrap();
    assert_eq!(on_thread, b"hello world");
    assert!(matches!(w.begin_unit(), Err(Error::Exhausted { .. })));
    assert_eq!(&*view, b"world");
    assert_eq!(view.read_binary(0, 5).unwrap(), b"world");
    drop(view);
    assert_eq!(p.reclaimed(), 1);
    assert!(w.begin_unit().is_ok());
}

/// The only view of a unit gives its segment back without touching the
/// count (a load, not a decrement), which leaves the count behind: the next
/// take of that segment must count afresh, whichever way the round before
/// ended.
#[test]
fn a_segment_taken_again_counts_its_views_afresh_however_the_last_round_ended() {
    let p = pool(64, 1, Duration::ZERO);
    let (w, r) = (p.open_writer(), p.open_reader());
    for round in 0..6u8 {
        publish(&w, &[round]);
        let u = r.recv().unwrap();
        if round % 2 == 1 {
            let clone = u.clone();
            drop(u);
            assert!(
                matches!(w.try_begin_unit(), Ok(None)),
                "round {round}: the clone still holds the segment"
            );
            assert_eq!(clone[0], round);
            drop(clone);
        } else {
            drop(u);
        }
        assert_eq!(p.reclaimed(), u64::from(round) + 1, "round {round}");
    }
}

/// The last two views of a unit dropped on two threads at once: exactly
/// one of them gives the segment back, every round (none would leave the
/// one-segment pool exhausted; a second release would count nothing).
#[test]
fn the_last_two_views_dropped_at_once_give_the_segment_back_exactly_once() {
    let p = pool(64, 1, Duration::ZERO);
    let (w, r) = (p.open_writer(), p.open_reader());
    for round in 0..2000u64 {
        publish(&w, b"x");
        let u = r.recv().unwrap();
        let clone = u.clone();
        let start = std::sync::Arc::new(std::sync::Barrier::new(2));
        let other = std::thread::spawn({
            let start = start.clone();
            move || {
                start.wait();
                drop(clone);
            }
        });
        start.wait();
        drop(u);
        other.join().unwrap();
        assert_eq!(p.reclaimed(), round + 1, "round {round}");
    }
}

#[test]
fn a_view_outlives_close_and_still_reads_the_right_bytes() {
    let p = pool(1 << 12, 2, Duration::ZERO);
    let (w, r) = (p.open_writer(), p.open_reader());
    publish(&w, &[0xab; 4000]);
    let u = r.recv().unwrap();
    p.close();
    drop((w, r));
    assert_eq!(u.len(), 4000);
    assert!(u.iter().all(|&b| b == 0xab));
}

#[test]
fn several_producer_threads_deliver_every_unit_exactly_once() {
    const PRODUCERS: u32 = 4;
    const EACH: u32 = 5_000;
    let p = pool(128, 4, Duration::from_secs(30));
    let r = p.open_reader();
    let mut seen = vec![vec![false; EACH as usize]; PRODUCERS as usize];
    std::thread::scope(|s| {
        for id in 0..PRODUCERS {
            let w = p.open_writer();
            s.spawn(move || {
                for i in 0..EACH {
                    let mut u = w.begin_unit().unwrap();
                    u.write_binary(&id.to_le_bytes()).unwrap();
                    u.write_binary(&i.to_le_bytes()).unwrap();
                    u.commit_unit().unwrap();
                }
            });
        }
        for ticket in 0..u64::from(PRODUCERS * EACH) {
            let u = r.recv().unwrap();
            assert_eq!(u.ticket(), ticket);
            let id = u32::from_le_bytes(u.read_binary(0, 4).unwrap().try_into().unwrap());
            let i = u32::from_le_bytes(u.read_binary(64, 4).unwrap().try_into().unwrap());
            let slot = &mut seen[id as usize][i as usize];
            assert!(!*slot, "unit ({id}, {i}) delivered twice");
            *slot = true;
        }
    });
    assert!(seen.iter().flatten().all(|&s| s));
    assert!(r.try_recv().unwrap().is_none());
}

#[test]
fn recv_timeout_and_try_recv_on_an_empty_pool() {
    let p = pool(64, 1, Duration::ZERO);
    let r = p.open_reader();
    assert!(r.try_recv().unwrap().is_none());
    let t = Duration::from_millis(50);
    assert!(matches!(r.recv_timeout(t), Err(Error::Timeout(d)) if d == t));
}

#[test]
fn reset_starts_a_generation_without_harming_held_views() {
    let p = pool(64, 3, Duration::ZERO);
    let (w, r) = (p.open_writer(), p.open_reader());
    publish(&w, b"held");
    publish(&w, b"queued");
    let held = r.recv().unwrap();
    let writing = w.begin_unit().unwrap();
    assert_eq!(p.reset().unwrap(), 1, "the queued unit is dropped");
    assert_eq!(p.generation(), 1);
    assert!(matches!(writing.commit_unit(), Err(Error::Stale)));
    // The held view keeps its bytes and its segment.
    assert_eq!(&*held, b"held");
    let s = p.stats();
    assert_eq!((s.held, s.free), (1, 2));
    publish(&w, b"new");
    let u = r.recv().unwrap();
    assert_eq!((&*u, u.generation()), (&b"new"[..], 1));
    assert_ne!(u.segment(), held.segment());
    drop(held);
    drop(u);
    assert_eq!(p.stats().free, 3);
    assert!(r.try_recv().unwrap().is_none());
}

#[test]
fn stats_count_segments_by_phase() {
    let p = pool(64, 4, Duration::ZERO);
    let (w, r) = (p.open_writer(), p.open_reader());
    publish(&w, b"a");
    publish(&w, b"b");
    let _held = r.recv().unwrap();
    let _writing = w.begin_unit().unwrap();
    let s = p.stats();
    assert_eq!((s.free, s.writing, s.queued, s.held), (1, 1, 1, 1));
    assert_eq!((s.published, s.reclaimed), (2, 0));
}

#[test]
fn recover_takes_back_exactly_the_dead_writers_segments() {
    use segpool::__private::HeapControl;
    let block = HeapControl::new(64, 3).unwrap();
    let c = block.control();
    let (dead, alive) = (block.join(), block.join());
    let lost = c.try_begin(dead).unwrap().unwrap(); // its process dies mid-write
    let live = c.try_begin(alive).unwrap().unwrap();
    assert_eq!(c.stats().writing, 2);
    assert_eq!(block.recover_dead().freed, 0, "nobody is dead yet");
    block.kill(dead);
    let r = block.recover_dead();
    assert_eq!((r.participants, r.freed, r.delivered), (1, 1, 0));
    assert_eq!((c.stats().writing, c.stats().free), (1, 2));
    assert_eq!(block.recover_dead(), Default::default(), "idempotent");
    assert!(!c.abort(lost), "the dead writer's lease is stale now");
    assert!(c.abort(live), "the live writer's lease is untouched");
}

#[test]
fn recover_writer_refuses_this_processs_own_pid() {
    let p = pool(64, 1, Duration::ZERO);
    let w = p.open_writer();
    let _mine = w.begin_unit().unwrap();
    assert_eq!(p.recover_writer(std::process::id()).unwrap(), 0);
    assert!(
        matches!(w.begin_unit(), Err(Error::Exhausted { .. })),
        "no second owner"
    );
}

#[test]
fn a_named_pool_attaches_by_name_and_leaves_nothing_in_dev_shm() {
    let p = SegmentPool::builder(4096, 2).named(true).build().unwrap();
    let name = p.name().unwrap().to_owned();
    assert!(std::path::Path::new(&format!("/dev/shm{name}")).exists());
    let handle: segpool::PoolHandle = p.handle().to_string().parse().unwrap();
    let other = SegmentPool::attach(&handle).unwrap();
    publish(&other.open_writer(), b"via name");
    assert_eq!(&*p.open_reader().recv().unwrap(), b"via name");
    drop(other);
    drop(p);
    assert!(!std::path::Path::new(&format!("/dev/shm{name}")).exists());
}

#[test]
fn unlink_removes_the_name_while_the_pool_keeps_working() {
    let p = SegmentPool::builder(64, 1).named(true).build().unwrap();
    let name = p.name().unwrap().to_owned();
    p.unlink().unwrap();
    p.unlink().unwrap(); // idempotent
    assert!(!std::path::Path::new(&format!("/dev/shm{name}")).exists());
    publish(&p.open_writer(), b"still works");
    assert_eq!(&*p.open_reader().recv().unwrap(), b"still works");
}

#[test]
fn the_memfd_handle_attaches_in_the_same_process() {
    let p = pool(64, 1, Duration::from_millis(1234));
    let other = SegmentPool::attach(&p.handle()).unwrap();
    assert_eq!(other.acquire_timeout(), Duration::from_millis(1234));
    assert_eq!((other.count(), other.segment_size()), (1, 64));
    publish(&p.open_writer(), b"shared");
    assert_eq!(&*other.open_reader().recv().unwrap(), b"shared");
    assert_eq!(p.reclaimed(), 1);
}

#[test]
fn steady_state_makes_no_futex_syscall() {
    // One thread, never blocking: publish and receive alternately.
    let p = pool(64, 2, Duration::from_secs(5));
    let (w, r) = (p.open_writer(), p.open_reader());
    let before = segpool::futex_calls();
    for i in 0..10_000u32 {
        publish(&w, &i.to_le_bytes());
        drop(r.recv().unwrap());
    }
    let after = segpool::futex_calls();
    // Other tests in this binary may sleep concurrently; this one never
    // sleeps, so any difference comes from them. Run alone to be exact:
    // `cargo test --test pool steady_state`.
    if std::env::args().any(|a| a == "steady_state_makes_no_futex_syscall") {
        assert_eq!(after, before);
    }
    assert_eq!(p.published(), 10_000);
}

#[cfg(feature = "bytes")]
#[test]
fn a_unit_becomes_bytes_without_a_copy() {
    let p = pool(64, 1, Duration::ZERO);
    let (w, r) = (p.open_writer(), p.open_reader());
    publish(&w, b"zero copy");
    let u = r.recv().unwrap();
    let addr = u.as_ptr();
    let b = u.into_bytes();
    assert_eq!(b.as_ptr(), addr);
    let tail = b.slice(5..);
    drop(b);
    assert!(
        matches!(w.begin_unit(), Err(Error::Exhausted { .. })),
        "a slice keeps it held"
    );
    assert_eq!(&tail[..], b"copy");
    drop(tail);
    assert!(w.begin_unit().is_ok());
}

#[cfg(feature = "bytemuck")]
#[test]
fn typed_views_check_alignment() {
    let p = pool(4096, 1, Duration::ZERO);
    let (w, r) = (p.open_writer(), p.open_reader());
    let floats = [1.5f32, -2.0, 3.25];
    let mut u = w.begin_unit().unwrap();
    let (off, _) = u.write_binary(bytemuck::cast_slice(&floats)).unwrap();
    u.commit_unit().unwrap();
    let got = r.recv().unwrap();
    assert_eq!(got.cast_slice::<f32>(off, 3).unwrap(), &floats);
    assert!(matches!(
        got.cast_slice::<f32>(off + 1, 2),
        Err(Error::Misaligned { align: 4, .. })
    ));
    assert!(matches!(
        got.cast_slice::<f32>(off, 4),
        Err(Error::OutOfBounds { .. })
    ));
}

#[test]
fn handles_can_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<SegmentPool>();
    send_sync::<segpool::Writer>();
    send_sync::<segpool::Reader>();
    send_sync::<segpool::Unit>();
    send::<segpool::UnitWriter>();
}

#[test]
fn waits_that_skip_the_spin_still_wake_on_their_condition() {
    let p = pool(64, 1, Duration::from_secs(30));
    let w = p.open_writer().spin(false);
    let r = p.open_reader().spin(false);
    std::thread::scope(|s| {
        // A consumer asleep on an empty pool wakes on publish.
        let consumer = s.spawn(|| r.recv().map(|u| u.to_vec()));
        while p.stats().waiting_consumers == 0 {
            std::thread::yield_now();
        }
        publish(&w, b"first");
        assert_eq!(consumer.join().unwrap().unwrap(), b"first");
    });
    publish(&w, b"second");
    let held = r.recv().unwrap();
    std::thread::scope(|s| {
        // A producer asleep on a full pool wakes when the unit drops.
        let producer = s.spawn(|| w.begin_unit().map(|u| u.segment()));
        while p.stats().waiting_producers == 0 {
            std::thread::yield_now();
        }
        let seg = held.segment();
        drop(held);
        assert_eq!(producer.join().unwrap().unwrap(), seg);
    });
}

#[test]
fn a_lazy_pool_round_trips_and_an_attacher_follows_its_choice() {
    let p = SegmentPool::builder(1 << 20, 4)
        .prefault(false)
        .named(true)
        .build()
        .unwrap();
    let other = SegmentPool::attach(&p.handle()).unwrap();
    let w = other.open_writer();
    let mut u = w.begin_unit().unwrap();
    u.write_binary(&vec![9u8; 1 << 20]).unwrap();
    u.commit_unit().unwrap();
    let got = p.open_reader().recv().unwrap();
    assert!(got.iter().all(|&b| b == 9) && got.len() == 1 << 20);
}
