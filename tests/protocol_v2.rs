//! Regressions for the findings that led to protocol v2, each named after
//! what it pins down, each across a real process boundary: this test binary
//! re-executes itself (`child_entry`) as the process that dies or forks.
//!
//! A child "dies at an instruction" by `abort()`: no destructor runs, so
//! whatever it owned is left exactly as a `SIGKILL` would leave it, and the
//! kernel drops its liveness lock.

mod common;

use common::{eventually, expect_success as expect_exit_0, pool, publish, role, spawn_child};
use segpool::{Error, SegmentPool};
use std::process::Child;
use std::time::{Duration, Instant};

/// Waits for `child`, which must have died by SIGABRT (or SIGKILL).
fn expect_killed(mut child: Child) {
    use std::os::unix::process::ExitStatusExt;
    let status = child.wait().unwrap();
    assert!(
        matches!(status.signal(), Some(libc::SIGABRT) | Some(libc::SIGKILL)),
        "child was meant to die by a signal: {status}"
    );
}

/// Not a test of its own: the body of every child process.
#[test]
fn child_entry() {
    let Some(role) = role() else { return };
    let pool = SegmentPool::from_env().expect("attach from the environment");
    let w = pool.open_writer();
    match role.as_str() {
        // Finding 1: a producer dies with one unit committed and one open.
        "commit_then_die" => {
            publish(&w, b"committed");
            let mut open = w.begin_unit().unwrap();
            open.write_binary(b"never committed").unwrap();
            std::process::abort();
        }
        // Finding 3: a producer dies asleep in `begin_unit`.
        "sleep" => {
            let _ = w.begin_unit();
            unreachable!("the parent holds every segment and kills us first");
        }
        // Finding 4: a consumer dies holding views.
        "hold_then_die" => {
            let r = pool.open_reader();
            let n: usize = std::env::var("HOLD").unwrap().parse().unwrap();
            let held: Vec<_> = (0..n).map(|_| r.recv().unwrap()).collect();
            assert_eq!(held.len(), n);
            std::process::abort();
        }
        // Finding 2: fork without exec, handles inherited.
        "fork" => fork_child_checks(&pool),
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn a_dead_producers_committed_unit_is_delivered_and_its_open_unit_comes_back() {
    if role().is_some() {
        return;
    }
    let p = pool(4096, 2);
    expect_killed(spawn_child(&p, "child_entry", "commit_then_die", &[]));
    let s = p.stats();
    assert_eq!(
        (s.free, s.writing + s.queued),
        (0, 2),
        "both owned by the dead"
    );
    let r = p.recover_dead().unwrap();
    assert_eq!((r.participants, r.delivered, r.freed), (1, 1, 1));
    assert_eq!(
        p.recover_dead().unwrap().participants,
        0,
        "recovery is idempotent"
    );
    let u = p
        .open_reader()
        .try_recv()
        .unwrap()
        .expect("the committed unit");
    assert_eq!(&*u, b"committed");
    assert!(
        p.open_reader().try_recv().unwrap().is_none(),
        "nothing else"
    );
    drop(u);
    let s = p.stats();
    assert_eq!((s.free, s.participants), (2, 1), "every segment came back");
    assert_eq!((s.published, s.reclaimed), (1, 1));
}

#[test]
fn a_producer_that_dies_asleep_costs_at_most_one_wake_up() {
    if role().is_some() {
        return;
    }
    let p = pool(4096, 1);
    let w = p.open_writer();
    let mut mine = Some(w.begin_unit().unwrap()); // the pool is full
    let child = spawn_child(&p, "child_entry", "sleep", &[]);
    eventually("the child asleep in begin_unit", || {
        p.stats().waiting_producers == 1
    });
    // SAFETY: a plain kill(2) of our own child, whose pid we hold.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGKILL) }, 0);
    expect_killed(child);
    let (_, wakes_before) = segpool::futex_calls();
    for _ in 0..1000 {
        mine.take().unwrap().abort_unit(); // a release
        mine = Some(w.begin_unit().unwrap());
    }
    let (_, wakes_after) = segpool::futex_calls();
    assert!(
        wakes_after - wakes_before <= 1,
        "{} FUTEX_WAKE calls for 1000 releases after the sleeper died",
        wakes_after - wakes_before
    );
    assert_eq!(p.stats().waiting_producers, 1, "its count, until recovered");
    assert_eq!(p.recover_dead().unwrap().participants, 1);
    assert_eq!(p.stats().waiting_producers, 0, "waiter counts back to 0");
}

#[test]
fn a_dead_consumers_views_come_back() {
    if role().is_some() {
        return;
    }
    const COUNT: usize = 4;
    let p = pool(4096, COUNT);
    let w = p.open_writer();
    for i in 0..3u8 {
        publish(&w, &[i]);
    }
    expect_killed(spawn_child(
        &p,
        "child_entry",
        "hold_then_die",
        &[("HOLD", "3".into())],
    ));
    assert_eq!(p.stats().held, 3, "held by the dead consumer");
    let r = p.recover_dead().unwrap();
    assert_eq!((r.participants, r.freed, r.delivered), (1, 3, 0));
    let s = p.stats();
    assert_eq!((s.free, s.held, s.reclaimed), (COUNT, 0, 3));
    // And they are usable again.
    for i in 0..COUNT as u8 {
        publish(&w, &[i]);
    }
}

#[test]
fn a_blocked_producer_recovers_a_dead_consumers_segments_by_itself() {
    if role().is_some() {
        return;
    }
    let p = pool(4096, 2);
    let w = p.open_writer();
    publish(&w, b"a");
    publish(&w, b"b");
    expect_killed(spawn_child(
        &p,
        "child_entry",
        "hold_then_die",
        &[("HOLD", "2".into())],
    ));
    // Nobody calls recover_dead: the blocked begin_unit's process watches
    // for deaths and recovers by itself.
    let start = Instant::now();
    let u = w.begin_unit_timeout(Duration::from_secs(5)).unwrap();
    assert!(start.elapsed() < Duration::from_secs(5));
    drop(u);
    // The watcher frees the entry right after the segments, on its thread.
    eventually("the dead entry is freed", || p.stats().participants == 1);
}

/// The forked child's half of the fork test: runs in a process that was
/// itself started for this role (single-threaded, so `fork` is simple).
fn fork_child_checks(_env_pool: &SegmentPool) {
    let p = pool(4096, 2);
    let (w, r) = (p.open_writer(), p.open_reader());
    publish(&w, b"held by the parent");
    let view = r.recv().unwrap();
    let mut open = w.begin_unit().unwrap();
    open.write_binary(b"being written by the parent").unwrap();
    // SAFETY: fork in a single-threaded process (this role's test binary
    // runs one test, on one thread); the child only runs Rust code that the
    // fork guard makes safe, then `_exit`s.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            assert!(p.is_inherited());
            drop(view); // inherited: frees nothing
            drop(open); // inherited: aborts nothing
            assert!(matches!(w.begin_unit(), Err(Error::Forked)));
            assert!(matches!(r.try_recv(), Err(Error::Forked)));
            // Attaching again in the child works: the memfd was inherited.
            let again = SegmentPool::attach(&p.handle()).unwrap();
            assert!(!again.is_inherited());
            let w2 = again.open_writer();
            assert!(
                w2.try_begin_unit().unwrap().is_none(),
                "the parent's two segments stay the parent's"
            );
        }))
        .is_ok();
        // SAFETY: ends the forked child without running the parent's
        // destructors a second time.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waits for the child we forked.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the forked child's checks failed (status {status:#x})"
    );
    // The parent's view and open unit are intact and still its own.
    assert_eq!(&*view, b"held by the parent");
    assert!(
        w.try_begin_unit().unwrap().is_none(),
        "no segment was freed"
    );
    open.commit_unit().unwrap();
    drop(view);
    assert_eq!(&*r.recv().unwrap(), b"being written by the parent");
    let s = p.stats();
    assert_eq!((s.free, s.participants), (2, 1), "the child left cleanly");
}

#[test]
fn a_forked_child_that_drops_inherited_handles_leaves_the_parents_segments_held() {
    if role().is_some() {
        return;
    }
    let p = pool(64, 1);
    expect_exit_0(spawn_child(&p, "child_entry", "fork", &[]));
}
