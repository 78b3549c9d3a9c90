//! Loom models of the segpool protocol (v2: participants own segments).
//!
//! Build and run with `RUSTFLAGS="--cfg loom" cargo test --release -p
//! segpool-loom-tests` (see `docs/protocol.md` for the bounds and the
//! mutants). Without `--cfg loom` this crate is empty.
//!
//! Each model drives the library's own protocol code ([`Control`] over a
//! [`HeapControl`]) from 2-4 loom threads. Every thread that plays a process
//! is a participant: it has an [`Owner`] from [`HeapControl::join`] (taken
//! by the main thread before the race starts, so joining is not part of
//! what is interleaved). The protocol hands out segment indices but never
//! touches payload bytes, so the models keep one
//! `loom::cell::UnsafeCell<u64>` per segment and move "bytes" through it the
//! way `Writer` and `Reader` do: write after `begin`, read after `take`. A
//! writer and a reader (or two writers) touching one segment without a
//! happens-before edge between them is a causality violation that loom
//! reports, which is how exclusivity (invariant 1) and the payload orderings
//! are checked; a thread asleep forever is reported as a deadlock, which is
//! how "no lost wake-up" (invariant 2) is checked.
//!
//! A process *dies* in a model by stopping: its thread returns after a
//! chosen step (a lease taken and never committed, a unit committed, a unit
//! taken and never released, a flag set by a wait that timed out), then
//! [`HeapControl::kill`] drops its liveness lock and another thread
//! recovers it. Nothing the dead thread did afterwards exists, so the
//! models see every instant a death could leave behind at a step boundary.
//!
//! Every model is a plain function, so `tests/models.rs` runs it as is and
//! `tests/mutants.rs` runs it against a deliberately broken build of the
//! library and asserts that loom fails.
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::thread;
use segpool::__private::{Control, Description, HeapControl, Lease, Owner, Taken, Wait};
use segpool::{Error, Recovered};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Bytes a unit commits: one `u64`.
const UNIT_LEN: usize = 8;
/// A timeout that never passes in real time: under loom a timed wait ends
/// only when the model calls `expire_timers`.
const LONG: Duration = Duration::from_secs(3600);
/// Branches one execution may take. Loom's default (1,000) counts every
/// atomic access, and a heap block has `MAX_PARTICIPANTS` (255) entries that
/// `init`, `stats` and `recover_dead` each walk once; uncontended accesses
/// cost path length, not interleavings.
const MAX_BRANCHES: usize = 20_000;

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

    /// A new participant ("a process attaches").
    pub fn join(&self) -> Owner {
        self.block.join()
    }

    /// `who`'s process dies: its liveness lock is dropped, its state stays.
    pub fn kill(&self, who: Owner) {
        self.block.kill(who);
    }

    /// What a survivor's sweep does: recovers every dead participant, scrubs.
    pub fn recover_dead(&self) -> Recovered {
        self.block.recover_dead()
    }

    /// A new open file description of the pool: a process of its own, for
    /// liveness locks (every thread using one description holds its locks).
    pub fn description(&self) -> Description {
        self.block.description()
    }

    /// A participant joining through `d`.
    pub fn join_as(&self, d: &Description) -> Owner {
        self.block.join_as(d)
    }

    /// A sweep through description `d` by participant `me`.
    pub fn recover_dead_as(&self, d: &Description, me: Option<Owner>) -> Recovered {
        self.block.recover_dead_as(d, me)
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
    /// returns the ticket. As the endpoint does, a try first (the
    /// protocol's first try, then its loop), then the wait.
    pub fn produce(&self, me: Owner, v: u64) -> Result<u64, Error> {
        let lease = match self.ctl().try_begin(me)? {
            Some(lease) => lease,
            None => self.ctl().begin(me, &Wait::timeout(None))?,
        };
        self.write(&lease, v);
        self.ctl().commit(lease, UNIT_LEN)
    }

    /// `recv` + read + drop of the unit: returns (ticket, payload). As the
    /// endpoint does, a try first (the first try, then the loop), then the
    /// wait.
    pub fn consume(&self, me: Owner) -> Result<(u64, u64), Error> {
        let t = match self.ctl().try_take(me)? {
            Some(t) => t,
            None => self.ctl().take(me, &Wait::timeout(None))?,
        };
        let v = self.read(&t);
        assert!(self.ctl().release(&t), "first release of a unit");
        Ok((t.ticket, v))
    }

    /// Asserts the pool is at rest: every descriptor free, nobody counted
    /// asleep, the counters equal `units` (invariant 3), no consumer's flag
    /// left in the ring, and the index agrees with the descriptors: every
    /// segment can be claimed again (a bit left set over a free descriptor
    /// would hide it), after which no producer's flag is left either (a
    /// flag left by a waiter that found a segment after all costs the next
    /// release one wake-up, and no more).
    pub fn assert_quiescent(&self, units: u64) {
        self.assert_at_rest(units);
        let (_, data) = self.ctl().flags();
        assert!(!data, "a consumer's flag left in the ring");
        let me = self.join();
        let leases: Vec<Lease> = (0..self.payload.len())
            .map(|_| {
                self.ctl()
                    .try_begin(me)
                    .unwrap()
                    .expect("every free segment can be claimed: the index leaks none")
            })
            .collect();
        for lease in leases {
            assert!(self.ctl().abort(lease));
        }
        assert_eq!(self.ctl().flags(), (false, false), "flags after a release");
        assert_eq!(self.ctl().leave(me).freed, 0);
        self.assert_at_rest(units);
    }

    /// The counters and descriptors part of [`Pool::assert_quiescent`].
    pub fn assert_at_rest(&self, units: u64) {
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
        let released = self.pool.ctl().release(&self.taken);
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
    if std::env::var_os("LOOM_MAX_BRANCHES").is_none() {
        builder.max_branches = MAX_BRANCHES;
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
    let (me, producer_id) = (pool.join(), pool.join());
    let p = Arc::clone(&pool);
    let producer = thread::spawn(move || {
        for i in 0..units {
            assert_eq!(
                p.produce(producer_id, value(1, i)).unwrap(),
                i,
                "tickets in order"
            );
        }
    });
    for i in 0..units {
        assert_eq!(pool.consume(me).unwrap(), (i, value(1, i)));
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
    let me = pool.join();
    let producers: Vec<_> = (1..=2)
        .map(|p| {
            let pool = Arc::clone(&pool);
            let id = pool.join();
            thread::spawn(move || pool.produce(id, value(p, 0)).unwrap())
        })
        .collect();
    let (t0, a) = pool.consume(me).unwrap();
    let (t1, b) = pool.consume(me).unwrap();
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
/// commits two units, producer 2 one, while the consumer takes them and
/// publishers and consumer help each other's cursors on. Every unit arrives
/// once with its bytes, each producer's units in the order it committed
/// them, tickets 0, 1, 2 in order.
pub fn two_producers_two_segments() {
    let pool = Pool::new(2);
    let me = pool.join();
    let producers: Vec<_> = [(1, 2), (2, 1)]
        .into_iter()
        .map(|(p, units)| {
            let pool = Arc::clone(&pool);
            let id = pool.join();
            thread::spawn(move || {
                let tickets: Vec<u64> = (0..units)
                    .map(|i| pool.produce(id, value(p, i)).unwrap())
                    .collect();
                assert!(tickets.is_sorted(), "a producer's tickets increase");
            })
        })
        .collect();
    let mut next = [0u64; 2];
    for ticket in 0..3 {
        let (t, v) = pool.consume(me).unwrap();
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
    let (me, id) = (pool.join(), pool.join());
    assert_eq!(pool.produce(id, value(1, 0)).unwrap(), 0);
    let p = Arc::clone(&pool);
    let producer = thread::spawn(move || p.produce(id, value(1, 1)).unwrap());
    assert_eq!(pool.consume(me).unwrap(), (0, value(1, 0)));
    assert_eq!(pool.consume(me).unwrap(), (1, value(1, 1)));
    assert_eq!(producer.join().unwrap(), 1);
    pool.assert_quiescent(2);
}

/// Model 4: `shutdown` races a producer blocked on a full pool and a
/// consumer blocked on an empty ring: both return `Shutdown`, both
/// participants count no sleeper afterwards, and a late commit frees its
/// segment instead of publishing.
pub fn shutdown_wakes_both_sides() {
    let pool = Pool::new(1);
    let (me, pid, cid) = (pool.join(), pool.join(), pool.join());
    // Hold the only segment, uncommitted: full for producers, empty for consumers.
    let lease = pool.ctl().try_begin(me).unwrap().expect("a free segment");
    let p = Arc::clone(&pool);
    let producer = thread::spawn(move || p.ctl().begin(pid, &Wait::timeout(None)).unwrap_err());
    let c = Arc::clone(&pool);
    let consumer = thread::spawn(move || c.ctl().take(cid, &Wait::timeout(None)).unwrap_err());
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
    assert!(
        !pool.ctl().flags().0,
        "the late commit's release cleared the producer's flag"
    );
}

/// Model 5: a producer whose `begin` times out races the reclaim of the
/// only segment, while a second producer sleeps without a deadline. The
/// timed one either gets the segment or `Timeout`; the sleeper counts
/// return to zero; and the sleeper is always woken by the next reclaim
/// (a wake-up consumed by the timed-out waiter must not be lost).
/// `expire_first` picks whether the timer fires before or after the reclaim
/// in the main thread; loom interleaves both with every step of the others.
pub fn timed_out_begin_races_reclaim(expire_first: bool) {
    let pool = Pool::new(1);
    let (me, a_id, b_id) = (pool.join(), pool.join(), pool.join());
    pool.produce(me, value(1, 0)).unwrap();
    let held = pool.ctl().try_take(me).unwrap().expect("published");
    let a = Arc::clone(&pool);
    let timed = thread::spawn(
        move || match a.ctl().begin(a_id, &Wait::timeout(Some(LONG))) {
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
        let lease = b.ctl().begin(b_id, &Wait::timeout(None)).unwrap();
        b.write(&lease, value(3, 0));
        assert!(b.ctl().abort(lease));
    });
    if expire_first {
        pool.ctl().expire_timers();
    }
    assert_eq!(pool.read(&held), value(1, 0));
    assert!(pool.ctl().release(&held));
    if !expire_first {
        pool.ctl().expire_timers();
    }
    timed.join().unwrap();
    sleeper.join().unwrap();
    pool.assert_quiescent(1);
}

/// Model 5b: the reclaim comes before the timer. A producer's timed
/// `begin` sleeps on a full pool; the main thread releases the held
/// segment and then makes the timer fire. The release happened before the
/// deadline passed and nobody else wants the segment, so the timed `begin`
/// must get it, even when the timer and the release's wake-up reach the
/// sleeper together (the futex emulation then reports `TimedOut`): that is
/// what the last attempt after a timeout is for. Since v2 wakes every
/// sleeper, a swallowed wake-up strands nobody else (m5 passes without
/// the last attempt); this is what is left to lose.
pub fn timed_begin_sees_a_reclaim_before_its_deadline() {
    let pool = Pool::new(1);
    let (me, id) = (pool.join(), pool.join());
    pool.produce(me, value(1, 0)).unwrap();
    let held = pool.ctl().try_take(me).unwrap().expect("published");
    let a = Arc::clone(&pool);
    let timed = thread::spawn(move || {
        let lease = a
            .ctl()
            .begin(id, &Wait::timeout(Some(LONG)))
            .expect("a segment that came back before its deadline");
        a.write(&lease, value(2, 0));
        assert!(a.ctl().abort(lease));
    });
    assert_eq!(pool.read(&held), value(1, 0));
    assert!(pool.ctl().release(&held));
    pool.ctl().expire_timers();
    timed.join().unwrap();
    pool.assert_quiescent(1);
}

/// Model 6: two clones of one received unit dropped on two threads, while
/// a producer waits for the segment. It is released exactly once,
/// `reclaimed` rises by one and is visible to the producer that gets the
/// segment (it is counted before the bit is freed), and both readers'
/// accesses happen-before the producer's write.
pub fn unit_clones_dropped_on_two_threads() {
    let pool = Pool::new(1);
    let me = pool.join();
    pool.produce(me, value(1, 0)).unwrap();
    let taken = pool.ctl().try_take(me).unwrap().expect("published");
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
    let lease = pool.ctl().begin(me, &Wait::timeout(None)).unwrap();
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
    assert!(!pool.ctl().release(&taken), "a stale release");
    assert_eq!(pool.consume(me).unwrap(), (1, value(1, 1)));
    pool.assert_quiescent(2);
}

/// Model 7: `reset` while a view from the previous generation is still
/// held. The stale view's drop (and a duplicate of it) races the reset and
/// a producer of the new generation: the first drop frees only its own
/// segment, the duplicate frees nothing, the unit queued before the reset
/// is never delivered, and the new unit is.
pub fn reset_with_stale_view() {
    let pool = Pool::new(2);
    let (me, id) = (pool.join(), pool.join());
    pool.produce(id, value(1, 0)).unwrap();
    pool.produce(id, value(1, 1)).unwrap();
    let stale = pool.ctl().try_take(me).unwrap().expect("published");
    let v = Arc::clone(&pool);
    let viewer = thread::spawn(move || {
        assert_eq!(v.read(&stale), value(1, 0));
        assert!(v.ctl().release(&stale), "its own segment");
        assert!(!v.ctl().release(&stale), "a stale duplicate");
    });
    assert_eq!(
        pool.ctl().reset(me).unwrap(),
        1,
        "the queued unit is dropped"
    );
    let p = Arc::clone(&pool);
    let producer = thread::spawn(move || p.produce(id, value(2, 0)).unwrap());
    let t = pool.ctl().take(me, &Wait::timeout(None)).unwrap();
    assert_eq!((t.ticket, t.generation), (2, 1));
    assert_eq!(pool.read(&t), value(2, 0));
    assert!(pool.ctl().release(&t));
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
    let (me, id) = (pool.join(), pool.join());
    let p = Arc::clone(&pool);
    let producer = thread::spawn(move || match p.produce(id, value(1, 0)) {
        Ok(ticket) => Some(ticket),
        Err(Error::Stale) => None,
        Err(e) => panic!("commit racing reset: {e}"),
    });
    let dropped = pool.ctl().reset(me).unwrap();
    let committed = producer.join().unwrap();
    let delivered = pool.ctl().try_take(me).unwrap();
    if let Some(t) = delivered {
        assert_eq!(
            t.generation, 1,
            "a unit of the old generation was delivered"
        );
        assert_eq!(pool.read(&t), value(1, 0));
        assert!(pool.ctl().release(&t));
    }
    assert!(dropped <= 1);
    assert!(delivered.is_none() || (committed == Some(0) && dropped == 0));
    pool.assert_quiescent(u64::from(committed.is_some()));
}

/// Model 8: recovery of a dead writer races a live writer's claim. The dead
/// producer claimed the only segment (unless the live one got there
/// first), wrote its bytes, and died before committing; a live producer
/// waits for space while a survivor runs `recover_dead` (recovery, then
/// scrub). Recovery frees the dead claim exactly when there was one, never
/// touches the live claim (its CAS is from a state naming the dead owner),
/// the dead writer's bytes happen-before the live writer's (through the
/// free), and the live unit arrives.
pub fn recover_races_a_live_claim() {
    let pool = Pool::new(1);
    let (me, dead, live) = (pool.join(), pool.join(), pool.join());
    let d = Arc::clone(&pool);
    let doomed = thread::spawn(move || match d.ctl().try_begin(dead).unwrap() {
        Some(lease) => {
            d.write(&lease, value(9, 0));
            true // and dies: the lease is never committed or aborted
        }
        None => false,
    });
    let p = Arc::clone(&pool);
    let producer = thread::spawn(move || p.produce(live, value(1, 0)).unwrap());
    let claimed = doomed.join().unwrap();
    pool.kill(dead);
    // In a spawned thread: see "a pitfall" in docs/protocol.md, section 9.
    let r = Arc::clone(&pool);
    let recovery = thread::spawn(move || r.recover_dead());
    let rec = recovery.join().unwrap();
    assert_eq!(rec.participants, 1, "{rec:?}");
    assert_eq!(
        (rec.freed, rec.delivered),
        (usize::from(claimed), 0),
        "recovery frees exactly the dead claim: {rec:?}"
    );
    assert_eq!(producer.join().unwrap(), 0);
    assert_eq!(pool.consume(me).unwrap(), (0, value(1, 0)));
    pool.assert_quiescent(1);
}

/// Model 9: recovery of a dead producer races a consumer's take. The
/// producer claims the only segment, writes, and dies either before its
/// commit (`committed == false`: the lease is never used again) or after
/// it (the ring slot holds its claim; the descriptor is still WRITING under
/// its name). A consumer is already waiting; a survivor recovers. A
/// committed unit is delivered exactly once with its bytes (whether the
/// consumer takes it from WRITING before recovery or from PUBLISHED after)
/// and never freed by recovery; an uncommitted one is freed, never
/// delivered, and a live producer's unit comes out instead.
pub fn recover_dead_producer_races_take(committed: bool) {
    let pool = Pool::new(1);
    let (me, dead, live) = (pool.join(), pool.join(), pool.join());
    let d = Arc::clone(&pool);
    let doomed = thread::spawn(move || {
        let lease = d.ctl().try_begin(dead).unwrap().expect("a free segment");
        d.write(&lease, value(9, 0));
        if committed {
            assert_eq!(d.ctl().commit(lease, UNIT_LEN).unwrap(), 0);
        }
    });
    let c = Arc::clone(&pool);
    let consumer = thread::spawn(move || c.consume(me).unwrap());
    doomed.join().unwrap();
    pool.kill(dead);
    let r = Arc::clone(&pool);
    let recovery = thread::spawn(move || r.recover_dead());
    let rec = recovery.join().unwrap();
    assert_eq!(rec.participants, 1, "{rec:?}");
    if committed {
        assert_eq!(rec.freed, 0, "recovery freed a committed unit: {rec:?}");
        assert!(rec.delivered <= 1, "{rec:?}");
        assert_eq!(
            consumer.join().unwrap(),
            (0, value(9, 0)),
            "the committed unit"
        );
    } else {
        assert_eq!(
            (rec.freed, rec.delivered),
            (1, 0),
            "an uncommitted unit is freed, not delivered: {rec:?}"
        );
        assert_eq!(pool.produce(live, value(1, 0)).unwrap(), 0);
        assert_eq!(
            consumer.join().unwrap(),
            (0, value(1, 0)),
            "the live unit, not the dead one"
        );
    }
    pool.assert_quiescent(1);
}

/// Model 10: `scrub` races claims. A scrubber cannot tell an orphan bit
/// (a bit over a FREE descriptor, left by a claimer that died between its
/// bitmap CAS and its descriptor CAS) from a live claimer that is between
/// the two right now, and may clear the live claimer's bit; a second
/// claimer may then set it again, and either claimer's abort races the
/// scrub too. The descriptor CAS still decides: never two owners (payload
/// cells), and at rest the index agrees with the descriptors again (every
/// segment claimable, no flag left: `assert_quiescent`), whatever the
/// scrub did. Before the fix of `scrub` (it no longer sets bits missing over
/// owned segments) this model found a bit set over a FREE descriptor: the
/// scrub read the descriptor owned, the owner freed it and cleared the bit,
/// and the scrub then set the bit; no producer could claim the segment.
pub fn scrub_races_a_claim() {
    let pool = Pool::new(1);
    let claimers: Vec<_> = (1..=2)
        .map(|p| {
            let pool = Arc::clone(&pool);
            let id = pool.join();
            thread::spawn(move || match pool.ctl().try_begin(id).unwrap() {
                Some(lease) => {
                    pool.write(&lease, value(p, 0));
                    assert!(pool.ctl().abort(lease), "its own claim");
                    true
                }
                None => false,
            })
        })
        .collect();
    let s = Arc::clone(&pool);
    let scrubber = thread::spawn(move || s.ctl().scrub());
    let claims = claimers.into_iter().map(|h| h.join().unwrap());
    let claimed = claims.filter(|&c| c).count();
    assert!(claimed >= 1, "a free segment and two claimers: one gets it");
    assert!(scrubber.join().unwrap() <= 1);
    pool.assert_quiescent(0);
}

/// Model 11: a stale slot. A consumer takes ticket 0 and dies holding it:
/// recovery frees the HELD segment, and a producer claims it again and
/// publishes ticket 1 from it. The consumer's death may fall between its
/// descriptor CAS and its slot CAS, so slot 0 still names the segment at
/// the old epoch while its descriptor is WRITING at the new one. The next
/// consumer steps over the stale slot and gets ticket 1 once, with its
/// bytes, never the re-claimed segment under ticket 0. (The producer runs
/// after the recovery, in the consumer's thread: with it in a thread of its
/// own the model explores 39,409 interleavings at bound 2 in about a minute,
/// for the same stale-slot states.)
///
/// Loom cannot stop a thread inside `try_take`, so the doomed consumer runs
/// to its end while a recoverer retries until the descriptor CAS has made
/// the segment the dead participant's: the consumer's remaining steps (its
/// slot CAS and `head` advance) are the ones any consumer makes for a stale
/// slot, so letting them fall anywhere later, or after the next consumer
/// did them, covers a death at that point.
pub fn stale_slot_after_a_dead_consumer() {
    let pool = Pool::new(1);
    let (me, dead, live) = (pool.join(), pool.join(), pool.join());
    assert_eq!(pool.produce(live, value(1, 0)).unwrap(), 0);
    // 1: the doomed consumer gave up without taking (it found itself
    // recovered before its take: `WitnessLost`, as a real process whose
    // lock is gone would).
    let gave_up = Arc::new(loom::sync::atomic::AtomicUsize::new(0));
    let d = Arc::clone(&pool);
    let g = Arc::clone(&gave_up);
    let doomed = thread::spawn(move || match d.ctl().try_take(dead) {
        Ok(t) => assert_eq!(t.expect("published").ticket, 0), // and dies
        Err(Error::WitnessLost) => g.store(1, loom::sync::atomic::Ordering::Release),
        Err(e) => panic!("{e:?}"),
    });
    pool.kill(dead);
    let r = Arc::clone(&pool);
    let g = Arc::clone(&gave_up);
    let recovery = thread::spawn(move || {
        loop {
            let rec = r.ctl().recover(dead.index(), dead.incarnation());
            assert_eq!(rec.delivered, 0, "{rec:?}");
            if rec.freed == 1 || g.load(loom::sync::atomic::Ordering::Acquire) == 1 {
                break;
            }
            thread::yield_now();
        }
    });
    recovery.join().unwrap();
    // The recovery ends only once the doomed consumer either took ticket 0
    // (and the recovery freed it) or gave up: which one is settled now, while
    // the doomed thread may still be emptying slot 0 (the stale-slot case).
    if gave_up.load(loom::sync::atomic::Ordering::Acquire) == 1 {
        assert_eq!(pool.consume(me).unwrap(), (0, value(1, 0)));
    }
    assert_eq!(pool.produce(live, value(1, 1)).unwrap(), 1);
    assert_eq!(
        pool.consume(me).unwrap(),
        (1, value(1, 1)),
        "the next ticket once, the stale slot stepped over"
    );
    doomed.join().unwrap();
    pool.assert_quiescent(2);
}

/// Model 12: a dead waiter. A producer flags the bitmap and sleeps on a full
/// pool; its wait times out and it dies, leaving the flag set (nothing
/// counts dead sleepers, and recovery leaves flags alone). A live producer
/// then waits too. The release of the held segment sees the flag, clears
/// it in the same RMW (so it makes the one wake-up, and the release after
/// it none), and the live sleeper behind the dead one always wakes; no flag
/// is left once the pool is at rest.
pub fn dead_waiter_leaves_a_flag() {
    let pool = Pool::new(1);
    let (me, dead, live) = (pool.join(), pool.join(), pool.join());
    pool.produce(me, value(1, 0)).unwrap();
    let held = pool.ctl().try_take(me).unwrap().expect("published");
    let d = Arc::clone(&pool);
    let doomed = thread::spawn(move || {
        let r = d.ctl().begin(dead, &Wait::timeout(Some(LONG)));
        assert!(matches!(r, Err(Error::Timeout(_))), "{r:?}");
    });
    pool.ctl().expire_timers();
    doomed.join().unwrap();
    pool.kill(dead);
    assert_eq!(pool.ctl().flags(), (true, false), "the dead sleeper's flag");
    let rec = pool.recover_dead();
    assert_eq!((rec.participants, rec.freed), (1, 0), "{rec:?}");
    let p = Arc::clone(&pool);
    let sleeper = thread::spawn(move || p.produce(live, value(2, 0)).unwrap());
    assert_eq!(pool.read(&held), value(1, 0));
    assert!(pool.ctl().release(&held));
    assert_eq!(pool.consume(me).unwrap(), (1, value(2, 0)));
    assert_eq!(sleeper.join().unwrap(), 1);
    assert_eq!(pool.ctl().flags(), (false, false), "a flag left at rest");
    pool.assert_quiescent(2);
}

/// Model 13: two survivors recover the same dead participant at once. It
/// held a unit as a reader (HELD), had committed a unit as a writer
/// (WRITING, in the ring) and had a lease open (WRITING, not in the ring).
/// Between them the recoverers free the held and the open segment once
/// each, hand the committed unit to the ring once, count `reclaimed` once
/// and free the entry once; the committed unit is then delivered.
pub fn two_recoverers_race() {
    let pool = Pool::new(3);
    let (me, dead) = (pool.join(), pool.join());
    assert_eq!(pool.produce(me, value(1, 0)).unwrap(), 0);
    let held = pool.ctl().try_take(dead).unwrap().expect("published");
    assert_eq!(pool.read(&held), value(1, 0));
    let lease = pool.ctl().try_begin(dead).unwrap().expect("a free segment");
    pool.write(&lease, value(2, 0));
    assert_eq!(pool.ctl().commit(lease, UNIT_LEN).unwrap(), 1);
    let open = pool.ctl().try_begin(dead).unwrap().expect("a free segment");
    pool.write(&open, value(2, 1));
    pool.kill(dead);
    // Two survivor processes: a description each.
    let recoverers: Vec<_> = (0..2)
        .map(|_| {
            let r = Arc::clone(&pool);
            let d = pool.description();
            thread::spawn(move || r.recover_dead_as(&d, None))
        })
        .collect();
    let mut total = Recovered::default();
    for h in recoverers {
        total += h.join().unwrap();
    }
    assert_eq!(
        (total.participants, total.freed, total.delivered),
        (1, 2, 1),
        "each segment once: {total:?}"
    );
    assert_eq!(pool.ctl().reclaimed(), 1, "the held unit counted once");
    assert_eq!(pool.consume(me).unwrap(), (1, value(2, 0)));
    pool.assert_quiescent(2);
}

/// Model 14: recovery is exclusive between the threads of one process. A
/// lock of the kernel's belongs to an open file description, so both
/// threads of survivor P may "claim" the dead participant's entry; if both
/// went on, one could free the entry, a newcomer R join it and lease a
/// segment, and the other recover R. With the description's recovery turn
/// they take turns, and R's lease is always R's to commit.
pub fn recovery_is_exclusive_within_a_process() {
    let pool = Pool::new(2);
    let dead = pool.join();
    let _lost = pool.ctl().try_begin(dead).unwrap().expect("a free segment");
    let p_desc = Arc::new(pool.description());
    let p = pool.join_as(&p_desc);
    pool.kill(dead);
    let sweepers: Vec<_> = (0..2)
        .map(|_| {
            let (pl, d) = (Arc::clone(&pool), Arc::clone(&p_desc));
            thread::spawn(move || pl.recover_dead_as(&d, Some(p)))
        })
        .collect();
    let r_pool = Arc::clone(&pool);
    let newcomer = thread::spawn(move || {
        let r = r_pool.join();
        let lease = r_pool.ctl().try_begin(r).unwrap().expect("a free segment");
        r_pool.write(&lease, value(3, 0));
        (r, lease)
    });
    let mut total = Recovered::default();
    for h in sweepers {
        total += h.join().unwrap();
    }
    let (r, lease) = newcomer.join().unwrap();
    // The sweepers, or R's join (which recovers an ALIVE entry whose lock
    // it gets), recovered the dead participant: once, and never R.
    assert!(total.participants <= 1, "{total:?}");
    assert_eq!(pool.ctl().stats().recovered_participants, 1, "once");
    assert!(pool.ctl().check_alive(r).is_ok(), "R was recovered alive");
    assert_eq!(
        pool.ctl().commit(lease, UNIT_LEN).unwrap(),
        0,
        "R's lease is R's"
    );
    assert_eq!(pool.consume(p).unwrap(), (0, value(3, 0)));
    pool.kill(r);
    pool.recover_dead();
    pool.assert_quiescent(1);
}

/// Model 15: a participant whose lock the kernel dropped while it lived
/// (a descriptor closed behind its back) is recovered, and a newcomer B
/// joins its entry. The survivor A then notices at its commit
/// (`WitnessLost`, not a quiet `Stale`), and its `leave` frees nothing of
/// B's: it acts on its own incarnation only.
pub fn a_wrongly_recovered_participant_stops() {
    let pool = Pool::new(2);
    let (me, a) = (pool.join(), pool.join());
    let lease = pool.ctl().try_begin(a).unwrap().expect("a free segment");
    pool.write(&lease, value(1, 0));
    pool.kill(a);
    let rec = thread::spawn({
        let pl = Arc::clone(&pool);
        move || pl.recover_dead()
    });
    assert_eq!(rec.join().unwrap().freed, 1);
    let b = pool.join();
    assert_eq!(b.index(), a.index(), "B takes A's entry");
    let b_lease = pool.ctl().try_begin(b).unwrap().expect("a free segment");
    pool.write(&b_lease, value(2, 0));
    let r = pool.ctl().commit(lease, UNIT_LEN);
    assert!(matches!(r, Err(Error::WitnessLost)), "A's commit: {r:?}");
    assert_eq!(
        pool.ctl().leave(a),
        Recovered::default(),
        "A's leave freed B's"
    );
    assert_eq!(pool.ctl().commit(b_lease, UNIT_LEN).unwrap(), 0);
    assert_eq!(pool.consume(me).unwrap(), (0, value(2, 0)));
    pool.kill(b);
    pool.recover_dead();
    pool.assert_quiescent(1);
}
