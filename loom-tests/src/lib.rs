//! Loom models of the segpool protocol.
//!
//! Build and run with `RUSTFLAGS="--cfg loom" cargo test --release -p
//! segpool-loom-tests` (see `docs/protocol.md` for the bounds and the
//! mutants). Without `--cfg loom` this crate is empty.
//!
//! Each model drives the library's own protocol code ([`Control`] over a
//! [`HeapControl`]) from 2-3 loom threads. The protocol hands out segment
//! indices but never touches payload bytes, so the models keep one
//! `loom::cell::UnsafeCell<u64>` per segment and move "bytes" through it the
//! way `Writer` and `Reader` do: write after `begin`, read after `take`. A
//! writer and a reader (or two writers) touching one segment without a
//! happens-before edge between them is a causality violation that loom
//! reports, which is how exclusivity (invariant 1) and the payload orderings
//! are checked; a thread asleep forever is reported as a deadlock, which is
//! how "no lost wake-up" (invariant 2) is checked.
//!
//! Every model is a plain function, so `tests/models.rs` runs it as is and
//! `tests/mutants.rs` runs it against a deliberately broken build of the
//! library and asserts that loom fails.
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::thread;
use segpool::__private::{Control, HeapControl, Lease, Taken, Wait};
use segpool::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Pid the models write into descriptors (only `recover` reads it).
const PID: u32 = 7;
/// Bytes a unit commits: one `u64`.
const UNIT_LEN: usize = 8;
/// A timeout that never passes in real time: under loom a timed wait ends
/// only when the model calls `expire_timers`.
const LONG: Duration = Duration::from_secs(3600);

/// The payload a model writes as unit `i` of producer `p`.
pub fn value(p: u64, i: u64) -> u64 {
    (p << 32) | (i + 1)
}

/// A control block plus one modelled payload cell per segment.
pub struct Pool {
    block: HeapControl,
    payload: Vec<UnsafeCell<u64>>,
}

// SAFETY: the payload cells are shared the way segments are: the protocol
// hands each to one owner at a time, which is the claim under test, and
// loom's `UnsafeCell` panics on any access that claim does not order.
unsafe impl Sync for Pool {}

impl Pool {
    /// A fresh pool of `count` segments (call inside the model).
    pub fn new(count: usize) -> Arc<Pool> {
        Arc::new(Pool {
            block: HeapControl::new(UNIT_LEN, count).expect("valid geometry"),
            payload: (0..count).map(|_| UnsafeCell::new(0)).collect(),
        })
    }

    /// The protocol over this pool's block.
    pub fn ctl(&self) -> Control<'_> {
        self.block.control()
    }

    /// Writes `v` into the leased segment, as `UnitWriter::write_binary` does.
    pub fn write(&self, lease: &Lease, v: u64) {
        // SAFETY: loom checks this access: it panics unless every earlier
        // access to this cell happens-before it (the lease makes us its owner).
        self.payload[lease.seg].with_mut(|p| unsafe { *p = v });
    }

    /// Reads a taken unit's payload, as `Unit::read_binary` does.
    pub fn read(&self, t: &Taken) -> u64 {
        assert_eq!(t.len, UNIT_LEN, "committed span");
        // SAFETY: as in `write`: loom checks the writer's store happens-before.
        self.payload[t.seg].with(|p| unsafe { *p })
    }

    /// `begin_unit` (waiting forever) + `write_binary` + `commit_unit`;
    /// returns the ticket.
    pub fn produce(&self, v: u64) -> Result<u64, Error> {
        let lease = self.ctl().begin(PID, &Wait::timeout(None))?;
        self.write(&lease, v);
        self.ctl().commit(lease, UNIT_LEN)
    }

    /// `recv` + read + drop of the unit: returns (ticket, payload).
    pub fn consume(&self) -> Result<(u64, u64), Error> {
        let t = self.ctl().take(&Wait::timeout(None))?;
        let v = self.read(&t);
        assert!(
            self.ctl().release(t.seg, t.epoch),
            "first release of a unit"
        );
        Ok((t.ticket, v))
    }

    /// Asserts the pool is at rest: every segment free, nobody counted
    /// asleep on either futex word (invariant 2's bookkeeping), and the
    /// counters equal `units` (invariant 3).
    pub fn assert_quiescent(&self, units: u64) {
        let s = self.ctl().stats();
        assert_eq!(s.free, self.payload.len(), "{s:?}");
        assert_eq!((s.waiting_producers, s.waiting_consumers), (0, 0), "{s:?}");
        assert_eq!((s.published, s.reclaimed), (units, units), "{s:?}");
    }
}

/// A received unit shared by clones, like `segpool::Unit`: the segment is
/// released when the last clone drops.
struct View {
    pool: Arc<Pool>,
    taken: Taken,
}

impl Drop for View {
    fn drop(&mut self) {
        let released = self.pool.ctl().release(self.taken.seg, self.taken.epoch);
        assert!(released, "the last clone of a unit frees its segment");
    }
}

/// What one model run explored.
#[derive(Debug)]
pub struct Report {
    /// Executions (interleavings) loom ran.
    pub interleavings: usize,
    /// Wall time of the whole exploration.
    pub elapsed: Duration,
}

/// Runs `model` under loom with the environment's bounds (`LOOM_MAX_PREEMPTIONS`,
/// default 2), prints and returns how many interleavings it explored.
pub fn check(name: &str, model: impl Fn() + Sync + Send + 'static) -> Report {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(2);
    }
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&runs);
    let start = Instant::now();
    builder.check(move || {
        counter.fetch_add(1, Ordering::Relaxed);
        model();
    });
    let report = Report {
        interleavings: runs.load(Ordering::Relaxed),
        elapsed: start.elapsed(),
    };
    eprintln!(
        "loom model {name}: {} interleavings in {:.2?} (preemption bound {})",
        report.interleavings,
        report.elapsed,
        builder.preemption_bound.unwrap_or(0)
    );
    report
}

// ----- the models ------------------------------------------------------------

/// Model 1: one producer, one consumer, `units` units over `count` segments.
/// Every unit arrives once, in ticket order, with its bytes; the counters
/// stay within `reclaimed <= published <= reclaimed + count`.
pub fn one_producer_one_consumer(count: usize, units: u64) {
    let pool = Pool::new(count);
    let p = Arc::clone(&pool);
    let producer = thread::spawn(move || {
        for i in 0..units {
            assert_eq!(p.produce(value(1, i)).unwrap(), i, "tickets in order");
        }
    });
    for i in 0..units {
        assert_eq!(pool.consume().unwrap(), (i, value(1, i)));
        // The consumer does every release, so `reclaimed` is exact here;
        // `published` may lag what the producer did, never lead it.
        let reclaimed = pool.ctl().reclaimed();
        let published = pool.ctl().published();
        assert_eq!(reclaimed, i + 1);
        assert!(published >= reclaimed && published - reclaimed <= count as u64);
    }
    producer.join().unwrap();
    pool.assert_quiescent(units);
}

/// Model 2: two producers race for the single segment while one consumer
/// drains. Never two owners (loom's cell check), no lost wake-up (loom's
/// deadlock check), both units delivered once, in ticket order.
pub fn two_producers_one_segment() {
    let pool = Pool::new(1);
    let producers: Vec<_> = (1..=2)
        .map(|p| {
            let pool = Arc::clone(&pool);
            thread::spawn(move || pool.produce(value(p, 0)).unwrap())
        })
        .collect();
    let (t0, a) = pool.consume().unwrap();
    let (t1, b) = pool.consume().unwrap();
    assert_eq!((t0, t1), (0, 1));
    let mut got = [a, b];
    got.sort();
    assert_eq!(got, [value(1, 0), value(2, 0)]);
    let mut tickets: Vec<u64> = producers.into_iter().map(|h| h.join().unwrap()).collect();
    tickets.sort();
    assert_eq!(tickets, [0, 1]);
    pool.assert_quiescent(2);
}

/// Model 2b: two producers and one consumer over two segments; producer 1
/// commits two units, producer 2 one: the ring (capacity 2) laps while
/// publishers and the consumer help each other's cursors on. Every unit
/// arrives once with its bytes, each producer's units in the order it
/// committed them, tickets 0, 1, 2 in order.
pub fn two_producers_two_segments() {
    let pool = Pool::new(2);
    let producers: Vec<_> = [(1, 2), (2, 1)]
        .into_iter()
        .map(|(p, units)| {
            let pool = Arc::clone(&pool);
            thread::spawn(move || {
                let tickets: Vec<u64> = (0..units)
                    .map(|i| pool.produce(value(p, i)).unwrap())
                    .collect();
                assert!(tickets.is_sorted(), "a producer's tickets increase");
            })
        })
        .collect();
    let mut next = [0u64; 2];
    for ticket in 0..3 {
        let (t, v) = pool.consume().unwrap();
        assert_eq!(t, ticket);
        let p = (v >> 32) as usize;
        assert!(p == 1 || p == 2, "payload {v:#x}");
        assert_eq!(
            v,
            value(p as u64, next[p - 1]),
            "producer {p}'s units in order"
        );
        next[p - 1] += 1;
    }
    for h in producers {
        h.join().unwrap();
    }
    pool.assert_quiescent(3);
}

/// Model 3: the pool is full (its one segment published); a producer blocks
/// for space while the consumer takes the unit and drops its view. The
/// producer always wakes and its bytes reach the consumer.
pub fn blocked_producer_wakes_on_last_drop() {
    let pool = Pool::new(1);
    assert_eq!(pool.produce(value(1, 0)).unwrap(), 0);
    let p = Arc::clone(&pool);
    let producer = thread::spawn(move || p.produce(value(1, 1)).unwrap());
    assert_eq!(pool.consume().unwrap(), (0, value(1, 0)));
    assert_eq!(pool.consume().unwrap(), (1, value(1, 1)));
    assert_eq!(producer.join().unwrap(), 1);
    pool.assert_quiescent(2);
}

/// Model 4: `shutdown` races a producer blocked on a full pool and a
/// consumer blocked on an empty ring: both return `Shutdown`, and both
/// futex words count no waiter afterwards.
pub fn shutdown_wakes_both_sides() {
    let pool = Pool::new(1);
    // Hold the only segment, uncommitted: full for producers, empty for consumers.
    let lease = pool.ctl().try_begin(PID).unwrap().expect("a free segment");
    let p = Arc::clone(&pool);
    let producer = thread::spawn(move || p.ctl().begin(PID, &Wait::timeout(None)).unwrap_err());
    let c = Arc::clone(&pool);
    let consumer = thread::spawn(move || c.ctl().take(&Wait::timeout(None)).unwrap_err());
    pool.ctl().shutdown();
    assert!(matches!(producer.join().unwrap(), Error::Shutdown));
    assert!(matches!(consumer.join().unwrap(), Error::Shutdown));
    assert!(matches!(
        pool.ctl().commit(lease, UNIT_LEN),
        Err(Error::Shutdown)
    ));
    let s = pool.ctl().stats();
    assert_eq!((s.waiting_producers, s.waiting_consumers), (0, 0), "{s:?}");
    assert_eq!((s.free, s.published), (1, 0), "{s:?}");
}

/// Model 5: a producer whose `begin` times out races the reclaim of the
/// only segment, while a second producer sleeps without a deadline. The
/// timed one either gets the segment or `Timeout`; the waiter count
/// returns to zero; and the sleeper is always woken by the next reclaim
/// (a wake-up consumed by the timed-out waiter must not be lost).
/// `expire_first` picks whether the timer fires before or after the reclaim
/// in the main thread; loom interleaves both with every step of the others.
pub fn timed_out_begin_races_reclaim(expire_first: bool) {
    let pool = Pool::new(1);
    pool.produce(value(1, 0)).unwrap();
    let held = pool.ctl().try_take().unwrap().expect("published");
    let a = Arc::clone(&pool);
    let timed = thread::spawn(
        move || match a.ctl().begin(PID, &Wait::timeout(Some(LONG))) {
            Ok(lease) => {
                a.write(&lease, value(2, 0));
                assert!(a.ctl().abort(lease));
                true
            }
            Err(Error::Timeout(_)) => false,
            Err(e) => panic!("timed begin: {e}"),
        },
    );
    let b = Arc::clone(&pool);
    let sleeper = thread::spawn(move || {
        let lease = b.ctl().begin(PID, &Wait::timeout(None)).unwrap();
        b.write(&lease, value(3, 0));
        assert!(b.ctl().abort(lease));
    });
    if expire_first {
        pool.ctl().expire_timers();
    }
    assert_eq!(pool.read(&held), value(1, 0));
    assert!(pool.ctl().release(held.seg, held.epoch));
    if !expire_first {
        pool.ctl().expire_timers();
    }
    timed.join().unwrap();
    sleeper.join().unwrap();
    pool.assert_quiescent(1);
}

/// Model 6: two clones of one received unit dropped on two threads, while
/// a producer waits for the segment. It is released exactly once,
/// `reclaimed` rises by one and is visible to the producer that gets the
/// segment (it is counted before the bit is freed), and both readers'
/// accesses happen-before the producer's write.
pub fn unit_clones_dropped_on_two_threads() {
    let pool = Pool::new(1);
    pool.produce(value(1, 0)).unwrap();
    let taken = pool.ctl().try_take().unwrap().expect("published");
    let view = loom::sync::Arc::new(View {
        pool: Arc::clone(&pool),
        taken,
    });
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let view = view.clone();
            thread::spawn(move || {
                assert_eq!(view.pool.read(&view.taken), value(1, 0));
                drop(view);
            })
        })
        .collect();
    drop(view);
    let lease = pool.ctl().begin(PID, &Wait::timeout(None)).unwrap();
    assert_eq!(
        pool.ctl().reclaimed(),
        1,
        "counted before the segment is free"
    );
    pool.write(&lease, value(1, 1));
    assert_eq!(pool.ctl().commit(lease, UNIT_LEN).unwrap(), 1);
    for r in readers {
        r.join().unwrap();
    }
    assert!(
        !pool.ctl().release(taken.seg, taken.epoch),
        "a stale release"
    );
    assert_eq!(pool.consume().unwrap(), (1, value(1, 1)));
    pool.assert_quiescent(2);
}

/// Model 7: `reset` while a view from the previous generation is still
/// held. The stale view's drop (and a duplicate of it) races the reset and
/// a producer of the new generation: the first drop frees only its own
/// segment, the duplicate frees nothing, the unit queued before the reset
/// is never delivered, and the new unit is.
pub fn reset_with_stale_view() {
    let pool = Pool::new(2);
    pool.produce(value(1, 0)).unwrap();
    pool.produce(value(1, 1)).unwrap();
    let stale = pool.ctl().try_take().unwrap().expect("published");
    let v = Arc::clone(&pool);
    let viewer = thread::spawn(move || {
        assert_eq!(v.read(&stale), value(1, 0));
        assert!(v.ctl().release(stale.seg, stale.epoch), "its own segment");
        assert!(
            !v.ctl().release(stale.seg, stale.epoch),
            "a stale duplicate"
        );
    });
    assert_eq!(pool.ctl().reset().unwrap(), 1, "the queued unit is dropped");
    let p = Arc::clone(&pool);
    let producer = thread::spawn(move || p.produce(value(2, 0)).unwrap());
    let t = pool.ctl().take(&Wait::timeout(None)).unwrap();
    assert_eq!((t.ticket, t.generation), (2, 1));
    assert_eq!(pool.read(&t), value(2, 0));
    assert!(pool.ctl().release(t.seg, t.epoch));
    assert_eq!(producer.join().unwrap(), 2);
    viewer.join().unwrap();
    pool.assert_quiescent(3);
}

/// Model 7b: `reset` races a producer between its `begin` and its
/// `commit`. Whatever the interleaving, a unit claimed in the old
/// generation is never delivered: it fails to commit (`Stale`), or the
/// reset drops it from the ring, or the consumer drops it when it pops it.
/// A unit claimed after the reset is delivered with its bytes.
pub fn reset_races_a_producer() {
    let pool = Pool::new(1);
    let p = Arc::clone(&pool);
    let producer = thread::spawn(move || match p.produce(value(1, 0)) {
        Ok(ticket) => Some(ticket),
        Err(Error::Stale) => None,
        Err(e) => panic!("commit racing reset: {e}"),
    });
    let dropped = pool.ctl().reset().unwrap();
    let committed = producer.join().unwrap();
    let delivered = pool.ctl().try_take().unwrap();
    if let Some(t) = delivered {
        assert_eq!(
            t.generation, 1,
            "a unit of the old generation was delivered"
        );
        assert_eq!(pool.read(&t), value(1, 0));
        assert!(pool.ctl().release(t.seg, t.epoch));
    }
    assert!(dropped <= 1);
    assert!(delivered.is_none() || (committed == Some(0) && dropped == 0));
    pool.assert_quiescent(u64::from(committed.is_some()));
}

/// Model 8: `recover` for a dead writer races a live writer's claim of the
/// segment the dead one owned before. The owner field names the dead pid
/// until the live claim overwrites it; `recover` must never free the live
/// writer's segment: it frees nothing, the live commit succeeds and the
/// unit arrives with its bytes.
///
/// `recover` runs in a spawned thread, not in the main one: loom 0.7 does
/// not explore a race between a spawned thread's stores and loads that the
/// main thread makes right after spawning it (with `recover` in the main
/// thread this model explores one interleaving and misses the bug it is
/// for; see `docs/protocol.md`).
pub fn recover_races_a_live_claim() {
    const DEAD: u32 = 666;
    let pool = Pool::new(1);
    let lease = pool.ctl().try_begin(DEAD).unwrap().expect("a free segment");
    assert!(pool.ctl().abort(lease), "the owner field still names DEAD");
    let p = Arc::clone(&pool);
    let live = thread::spawn(move || p.produce(value(1, 0)).unwrap());
    let r = Arc::clone(&pool);
    let recovery = thread::spawn(move || r.ctl().recover(DEAD));
    assert_eq!(recovery.join().unwrap(), 0, "freed a live writer's segment");
    assert_eq!(live.join().unwrap(), 0);
    assert_eq!(pool.consume().unwrap(), (0, value(1, 0)));
    pool.assert_quiescent(1);
}
