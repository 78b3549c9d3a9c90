//! Liveness v3: regressions named after the findings of the review of
//! protocol v2, and the promises v3 makes (sleeping is free, deaths are
//! recovered within a second, recovery never touches a live participant).
//!
//! Tests that fork, close descriptors or count system calls run in a
//! process of their own: this binary re-executes itself (`child_entry`)
//! for the role, so no other test's threads are there.

mod common;

use common::{eventually, expect_success as expect_exit_0, pool, publish, role, spawn_child};
use segpool::__private::HeapControl;
use segpool::{Error, SegmentPool, UnitId};
use std::time::{Duration, Instant};

/// Forks; the child runs `f` and `_exit`s with 0 if it returned true.
/// Returns the child's pid.
fn fork_run(f: impl FnOnce() -> bool) -> libc::pid_t {
    // SAFETY: the child only runs `f`, which uses segpool (whose fork
    // handlers keep its state usable in a child) and then `_exit`s without
    // running the parent's destructors.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(false);
        // SAFETY: ends the forked child without unwinding into the parent's
        // stack or running its destructors a second time.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    pid
}

/// Waits up to `limit` for `pid`; kills it and fails if it is still
/// running (a deadlock), fails if it did not exit 0.
fn reap(pid: libc::pid_t, limit: Duration, what: &str) {
    let until = Instant::now() + limit;
    let mut status = 0;
    loop {
        // SAFETY: waits for a child we forked.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        assert!(r >= 0, "waitpid failed");
        if r == pid {
            break;
        }
        if Instant::now() >= until {
            // SAFETY: kills the child we forked.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            // SAFETY: reaps it.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            panic!("{what}: the forked child hung (a lock split by fork?)");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "{what}: the forked child's checks failed (status {status:#x})"
    );
}

/// Not a test of its own: the body of every child process.
#[test]
fn child_entry() {
    let Some(role) = role() else { return };
    let env_pool = SegmentPool::from_env().expect("attach from the environment");
    match role.as_str() {
        "inherited_recover" => finding_1_child(),
        "fork_under_threads" => finding_4_child(&env_pool),
        "close_witness" => finding_3_child(&env_pool),
        "dup2_witness" => finding_3_dup2_child(&env_pool),
        "sleep_count" => sleeping_makes_no_system_call_child(),
        "fork_after_a_wait" => a_fork_after_a_wait_sees_one_thread_child(),
        // Finding 2's processes: one that joins, leases, and dies; one that
        // joins, leases, and must keep its lease to the end.
        "die_holding" => {
            let w = env_pool.open_writer();
            let mut u = w.begin_unit().unwrap();
            u.write_binary(b"never committed").unwrap();
            std::process::abort();
        }
        "live_holding" => {
            let w = env_pool.open_writer();
            let mut u = w.begin_unit().unwrap();
            let me = std::process::id().to_le_bytes();
            u.write_binary(&me).unwrap();
            std::thread::sleep(Duration::from_millis(30));
            u.write_binary(&me).unwrap();
            // Wrongly recovered, this would be Stale or WitnessLost.
            if let Err(e) = u.commit_unit() {
                eprintln!("live participant lost its lease: {e}");
                std::process::exit(3);
            }
        }
        // The consumer whose death a blocked producer must notice.
        "hold_then_die" => {
            let r = env_pool.open_reader();
            let held = r.recv().unwrap();
            assert_eq!(&*held, b"held");
            std::process::abort();
        }
        other => panic!("unknown role {other}"),
    }
}

// ----- finding 1: an inherited pool recovers nothing ---------------------

fn finding_1_child() {
    // Exactly the reproduction: 2 segments, one leased, fork; the child
    // reopens the fd number the fork handler closed, attaches again, leases
    // the other segment, and asks the inherited pool to recover the dead.
    let p = pool(4096, 2);
    let w = p.open_writer();
    let parents_lease = w.begin_unit().unwrap();
    let child = fork_run(|| {
        let _squatter = std::fs::File::create("/dev/null").unwrap();
        let again = SegmentPool::attach(&p.handle()).unwrap();
        let mine = again.open_writer().try_begin_unit().unwrap();
        assert!(mine.is_some(), "the second segment is free");
        assert!(matches!(p.recover_dead(), Err(Error::Forked)));
        assert!(matches!(p.recover_writer(1), Err(Error::Forked)));
        // No third lease from a 2-segment pool.
        assert!(again.open_writer().try_begin_unit().unwrap().is_none());
        drop(mine);
        true
    });
    reap(child, Duration::from_secs(20), "finding 1");
    // The parent's lease is intact and still its own.
    assert_eq!(p.stats().writing, 1);
    drop(parents_lease);
    assert_eq!(p.stats().free, 2);
}

#[test]
fn finding_1_recover_dead_on_an_inherited_pool_refuses_with_forked() {
    if role().is_some() {
        return;
    }
    let p = pool(64, 1);
    expect_exit_0(spawn_child(&p, "child_entry", "inherited_recover", &[]));
}

#[test]
fn finding_1_leave_acts_only_on_its_own_incarnation() {
    // A wrongly recovered participant A, whose entry B then joins: A's
    // leave must not free B's segment.
    let block = HeapControl::new(64, 2).unwrap();
    let ctl = block.control();
    let a = block.join();
    let _a_lease = ctl.try_begin(a).unwrap().unwrap();
    block.kill(a); // the kernel dropped A's lock (fd games): A looks dead
    assert_eq!(block.recover_dead().participants, 1);
    let b = block.join();
    assert_eq!(b.index(), a.index(), "B reuses A's entry");
    let b_lease = ctl.try_begin(b).unwrap().unwrap();
    let left = ctl.leave(a);
    assert_eq!(left, Default::default(), "A's leave touched the newcomer");
    assert!(matches!(ctl.check_alive(a), Err(Error::WitnessLost)));
    ctl.check_alive(b).unwrap();
    let ticket = ctl.commit(b_lease, 8).unwrap();
    assert_eq!(ticket, 0, "B's lease survived A's leave");
}

// ----- finding 2: recovery exclusive between threads ----------------------

#[test]
fn finding_2_two_threads_recovering_never_touch_a_live_participant() {
    if role().is_some() {
        return;
    }
    let p = pool(256, 64);
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    p.recover_dead().unwrap();
                }
            });
        }
        let mut live = Vec::new();
        for round in 0..12 {
            let mut batch = Vec::new();
            for k in 0..4 {
                let role = if (round + k) % 2 == 0 {
                    "die_holding"
                } else {
                    "live_holding"
                };
                batch.push((role, spawn_child(&p, "child_entry", role, &[])));
            }
            for (role, mut child) in batch {
                if role == "live_holding" {
                    live.push(child);
                } else {
                    let _ = child.wait();
                }
            }
        }
        for child in live {
            expect_exit_0(child);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    // Every live participant's unit arrived intact; every dead one's
    // segment came back.
    let r = p.open_reader();
    let mut n = 0;
    while let Some(u) = r.try_recv().unwrap() {
        assert_eq!(u.len(), 68, "two writes, the second 64-byte aligned");
        assert_eq!(u[..4], u[64..68], "a unit holds one writer's bytes");
        n += 1;
    }
    assert_eq!(n, 24);
    p.recover_dead().unwrap();
    assert_eq!(p.stats().free, 64);
}

// ----- finding 3: a closed witness descriptor ------------------------------

fn finding_3_child(env_pool: &SegmentPool) {
    let w = env_pool.open_writer();
    let mut open = w.begin_unit().unwrap();
    open.write_binary(b"written before the fds went").unwrap();
    let r = env_pool.open_reader();
    // What `os.closerange(3, ...)` does: every descriptor above stderr,
    // the pool's own included (the mapping stays).
    // SAFETY: closes descriptors of this process only; nothing of this
    // role uses them afterwards except through segpool, which must notice.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    // The parent sees us dead and recovers our lease; wait for that.
    eventually("the parent recovered us", || {
        env_pool.stats().recovered_participants >= 1
    });
    assert!(matches!(open.commit_unit(), Err(Error::WitnessLost)));
    assert!(matches!(r.try_recv(), Err(Error::WitnessLost)));
    assert!(matches!(env_pool.recover_dead(), Err(Error::WitnessLost)));
    assert!(matches!(w.try_begin_unit(), Err(Error::WitnessLost)));
}

/// The same with the descriptor replaced rather than closed: `dup2` of
/// another file over every descriptor of the pool. Locks taken through the
/// number would now be taken on that file and always succeed, so a sweep
/// that only asked "does someone hold my byte" would recover live peers.
fn finding_3_dup2_child(env_pool: &SegmentPool) {
    let w = env_pool.open_writer();
    let mut open = w.begin_unit().unwrap();
    open.write_binary(b"written before the fds went").unwrap();
    let other = std::fs::File::create(
        std::env::temp_dir().join(format!("segpool-dup2-{}", std::process::id())),
    )
    .unwrap();
    use std::os::fd::AsRawFd;
    // The liveness descriptor is the last one the pool opened: the highest
    // number that names the memfd (the handle's and the region's own come
    // first). Only it is replaced; the region's descriptor stays valid.
    let witness = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let n: i32 = e.file_name().to_string_lossy().parse().ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            target
                .to_string_lossy()
                .starts_with("/memfd:segpool")
                .then_some(n)
        })
        .max()
        .expect("the pool's descriptors");
    // SAFETY: replaces a descriptor of this process; segpool must notice.
    unsafe { libc::dup2(other.as_raw_fd(), witness) };
    let _ = std::fs::remove_file(
        std::env::temp_dir().join(format!("segpool-dup2-{}", std::process::id())),
    );
    eventually("the parent recovered us", || {
        env_pool.stats().recovered_participants >= 1
    });
    // The parent attaches again, into our old entry: now someone holds
    // "our" byte, and every lock through our old number is granted.
    eventually("a newcomer took our entry", || {
        env_pool.stats().participants == 2
    });
    // Our sweep must recover nobody (the parent is alive, and so is the
    // newcomer).
    assert!(matches!(env_pool.recover_dead(), Err(Error::WitnessLost)));
    assert!(matches!(open.commit_unit(), Err(Error::WitnessLost)));
}

#[test]
fn finding_3_a_process_whose_witness_is_replaced_by_dup2_recovers_nobody() {
    if role().is_some() {
        return;
    }
    let p = pool(64, 3);
    let w = p.open_writer();
    let mut mine = w.begin_unit().unwrap();
    mine.write_binary(b"the parent's, live").unwrap();
    let child = spawn_child(&p, "child_entry", "dup2_witness", &[]);
    eventually("the child's lease is recovered", || {
        p.recover_dead().unwrap().freed == 1
    });
    let newcomer = SegmentPool::attach(&p.handle()).unwrap();
    expect_exit_0(child);
    mine.commit_unit()
        .expect("the live parent's lease survived the child's sweep");
    drop(newcomer);
    assert_eq!(&*p.open_reader().recv().unwrap(), b"the parent's, live");
}

#[test]
fn finding_3_a_process_whose_witness_is_closed_stops_with_witness_lost() {
    if role().is_some() {
        return;
    }
    let p = pool(64, 2);
    let child = spawn_child(&p, "child_entry", "close_witness", &[]);
    // The child's lease comes back once its lock is gone.
    eventually("the child's lease is recovered", || {
        p.recover_dead().unwrap().freed == 1
    });
    expect_exit_0(child);
    assert_eq!(p.stats().free, 2);
    assert_eq!(p.published(), 0, "nothing was published after the loss");
}

// ----- finding 4: fork while other threads use segpool ---------------------

fn finding_4_child(env_pool: &SegmentPool) {
    let stop = std::sync::atomic::AtomicBool::new(false);
    let handle = env_pool.handle();
    std::thread::scope(|s| {
        // Opens and closes liveness descriptors, and recovers (taking the
        // recovery turn), as fast as it can while the main thread forks.
        s.spawn(|| {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let again = SegmentPool::attach(&handle).unwrap();
                again.recover_dead().unwrap();
                drop(again);
                let fresh = SegmentPool::new(4096, 1).unwrap();
                fresh.recover_dead().unwrap();
            }
        });
        for i in 0..40 {
            let child = fork_run(|| {
                assert!(matches!(env_pool.recover_dead(), Err(Error::Forked)));
                // A new pool in the child works end to end.
                let p = SegmentPool::new(4096, 2).unwrap();
                let id = publish(&p.open_writer(), b"in the child");
                let u = p.open_reader().recv_id(id).unwrap().unwrap();
                assert_eq!(&*u, b"in the child");
                true
            });
            reap(child, Duration::from_secs(20), &format!("fork {i}"));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
}

#[test]
fn finding_4_a_fork_beside_threads_using_segpool_gives_a_working_child() {
    if role().is_some() {
        return;
    }
    let p = pool(64, 1);
    expect_exit_0(spawn_child(&p, "child_entry", "fork_under_threads", &[]));
    // Every entry the forking process used came back: nothing leaked into
    // a child kept a lock.
    p.recover_dead().unwrap();
    assert_eq!(p.stats().participants, 1);
}

// ----- finding 5: reclaimed exact for any number of claims -----------------

#[test]
fn finding_5_reclaimed_stays_exact_past_2_pow_23_and_2_pow_24_uncounted_claims() {
    // v2 keyed the count on 24 epoch bits: a release after 2^23 + k claims
    // that ended uncounted, or after exactly 2^24 of them, was ignored.
    for aborts in [(1u64 << 23) + 10, (1 << 24) - 1] {
        let block = HeapControl::new(64, 1).unwrap();
        let ctl = block.control();
        let me = block.join();
        for _ in 0..aborts {
            let lease = ctl.try_begin(me).unwrap().unwrap();
            assert!(ctl.abort(lease));
        }
        let lease = ctl.try_begin(me).unwrap().unwrap();
        ctl.commit(lease, 8).unwrap();
        let t = ctl.try_take(me).unwrap().unwrap();
        assert!(ctl.release(&t));
        assert_eq!(
            (ctl.published(), ctl.reclaimed()),
            (1, 1),
            "after {aborts} aborted claims"
        );
    }
}

// ----- finding 7 (the crate's part): units by name ------------------------

#[test]
fn finding_7_recv_id_takes_the_named_unit_whatever_the_commit_order() {
    let p = pool(64, 8);
    let (a, b) = (p.open_writer(), p.open_writer());
    let ids: Vec<(UnitId, &[u8])> = vec![
        (publish(&a, b"a1"), b"a1"),
        (publish(&b, b"b1"), b"b1"),
        (publish(&a, b"a2"), b"a2"),
        (publish(&b, b"b2"), b"b2"),
    ];
    let r = p.open_reader();
    // Envelopes arrive in another order than the commits.
    for &i in &[3, 0, 2, 1] {
        let (id, bytes) = ids[i];
        let u = r.recv_id(id).unwrap().expect("the named unit");
        assert_eq!(&*u, bytes);
        assert_eq!(u.id(), id);
    }
    assert_eq!(r.pending(), 0);
    // A name no unit has finds nothing; what it took on the way stays
    // pending and comes out of `recv` in publish order.
    publish(&a, b"x");
    publish(&a, b"y");
    assert!(r.recv_id(UnitId::from_bits(u64::MAX)).unwrap().is_none());
    assert_eq!(r.pending(), 2);
    assert_eq!(&*r.recv().unwrap(), b"x");
    assert_eq!(&*r.try_recv().unwrap().unwrap(), b"y");
    assert!(r.try_recv().unwrap().is_none());
}

#[test]
fn recv_id_keeps_what_it_stashed_when_the_pool_shuts_down() {
    let p = pool(64, 4);
    let w = p.open_writer();
    publish(&w, b"one");
    publish(&w, b"two");
    p.shutdown_arena();
    let r = p.open_reader();
    assert!(r.recv_id(UnitId::from_bits(u64::MAX)).unwrap().is_none());
    assert_eq!(r.pending(), 2, "stashed, not hidden");
    assert_eq!(&*r.recv().unwrap(), b"one");
    assert_eq!(&*r.recv().unwrap(), b"two");
    assert!(matches!(r.recv(), Err(Error::Shutdown)));
}

#[test]
fn a_reader_asleep_in_recv_gets_a_unit_its_clone_stashed() {
    let p = pool(64, 4);
    let w = p.open_writer();
    let r1 = p.open_reader();
    let r2 = r1.clone();
    std::thread::scope(|s| {
        let sleeper = s.spawn(|| r1.recv_timeout(Duration::from_secs(20)).map(|u| u.to_vec()));
        eventually("r1 sleeps", || p.stats().waiting_consumers == 1);
        let a = publish(&w, b"a");
        let b = publish(&w, b"b");
        // r1 may take `a` itself; if r2 gets there first it stashes `a`
        // on its way to `b`, and r1 must wake for it.
        let got_b = r2.recv_id(b).unwrap();
        let got1 = sleeper.join().unwrap().expect("r1 received a unit");
        match got_b {
            Some(u) => {
                assert_eq!(&*u, b"b");
                assert_eq!(got1, b"a");
            }
            None => {
                // r1 took `a` and then `b`? It takes one unit only.
                assert_eq!(got1, b"a");
                assert_eq!(&*r2.recv_id(b).unwrap().unwrap(), b"b");
            }
        }
        let _ = a;
    });
}

// ----- the wait: free while nobody dies, events when someone does --------

fn sleeping_makes_no_system_call_child() {
    let p = pool(64, 1);
    let r = p.open_reader().spin(false);
    let (waits_before, _) = segpool::futex_calls();
    assert!(matches!(
        r.recv_timeout(Duration::from_millis(600)),
        Err(Error::Timeout(_))
    ));
    let (waits_after, _) = segpool::futex_calls();
    assert!(
        waits_after - waits_before <= 2,
        "{} FUTEX_WAITs in 600 ms: the sleep was sliced",
        waits_after - waits_before
    );
}

/// Threads of this process, as the kernel counts them (what CPython's
/// "multi-threaded fork" warning reads).
fn threads() -> usize {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = stat.rsplit(')').next().unwrap();
    after.split_whitespace().nth(17).unwrap().parse().unwrap()
}

fn a_fork_after_a_wait_sees_one_thread_child() {
    // The test harness has threads of its own: count ours on top.
    let base = threads();
    let p = pool(64, 1);
    let r = p.open_reader();
    assert!(matches!(
        r.recv_timeout(Duration::from_millis(100)),
        Err(Error::Timeout(_))
    ));
    assert_eq!(threads(), base + 1, "the wait started a watcher");
    for _ in 0..20 {
        let child = fork_run(|| true);
        // What CPython reads in the parent right after `fork` returns.
        assert_eq!(threads(), base, "a watcher was running across the fork");
        reap(child, Duration::from_secs(10), "fork after a wait");
    }
    // The next wait starts one again.
    assert!(r.recv_timeout(Duration::from_millis(50)).is_err());
    assert_eq!(threads(), base + 1);
}

#[test]
fn a_fork_after_a_wait_sees_no_watcher_thread() {
    if role().is_some() {
        return;
    }
    let p = pool(64, 1);
    expect_exit_0(spawn_child(&p, "child_entry", "fork_after_a_wait", &[]));
}

#[test]
fn a_blocked_wait_sleeps_without_periodic_wake_ups() {
    // v2 woke every 100 ms to sweep; v3's sleepers are woken by events
    // only (their process's watcher turns deaths into wake-ups).
    if role().is_some() {
        return;
    }
    let p = pool(64, 1);
    expect_exit_0(spawn_child(&p, "child_entry", "sleep_count", &[]));
}

#[test]
fn a_blocked_producer_gets_a_dead_consumers_segment_within_a_second() {
    if role().is_some() {
        return;
    }
    let p = pool(64, 1);
    let w = p.open_writer();
    publish(&w, b"held");
    let mut child = spawn_child(&p, "child_entry", "hold_then_die", &[]);
    eventually("the child holds the unit", || p.stats().held == 1);
    let waiter = std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            let u = w.begin_unit_timeout(Duration::from_secs(30));
            (u.map(drop), Instant::now())
        });
        let _ = child.wait();
        let died = Instant::now();
        let (got, at) = waiter.join().unwrap();
        got.expect("the dead consumer's segment came back");
        at.saturating_duration_since(died)
    });
    assert!(
        waiter < Duration::from_secs(1),
        "recovered {waiter:?} after the death: the guide promises within 1 s"
    );
}

#[test]
fn an_interruptible_wait_returns_interrupted_on_a_signal() {
    extern "C" fn nothing(_: libc::c_int) {}
    // SAFETY: installs a handler that does nothing, without SA_RESTART,
    // for a signal this test binary uses for nothing else.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = nothing as extern "C" fn(libc::c_int) as usize;
        libc::sigaction(libc::SIGUSR2, &sa, std::ptr::null_mut());
    }
    let p = pool(64, 1);
    let w = p.open_writer().interruptible(true);
    let _held = w.begin_unit().unwrap();
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = s.spawn(move || {
            // SAFETY: pthread_self has no preconditions.
            tx.send(unsafe { libc::pthread_self() }).unwrap();
            w.begin_unit_timeout(Duration::from_secs(30)).map(drop)
        });
        let thread = rx.recv().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        // SAFETY: the waiter thread is alive until joined below.
        unsafe { libc::pthread_kill(thread, libc::SIGUSR2) };
        assert!(matches!(waiter.join().unwrap(), Err(Error::Interrupted)));
    });
}

// ----- finding 8 (the crate's part) ----------------------------------------

#[test]
fn finding_8_the_memfd_can_never_be_executable() {
    let p = pool(64, 1);
    let fd = p.handle().to_string();
    let n: i32 = fd
        .split("fd=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .expect("a memfd pool's handle names its fd");
    // SAFETY: F_GET_SEALS on an fd this process owns.
    let seals = unsafe { libc::fcntl(n, libc::F_GET_SEALS) };
    assert!(seals >= 0);
    // SAFETY: all-zero is a valid `stat` (a C struct of integers).
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat fills `st` for an open fd.
    assert_eq!(unsafe { libc::fstat(n, &mut st) }, 0);
    assert_eq!(st.st_mode & 0o111, 0, "no exec bit on the memfd");
    // MFD_NOEXEC_SEAL (Linux 6.3+) also seals it: F_SEAL_EXEC = 0x20.
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut v = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|x| x.parse::<u32>().unwrap_or(0));
    let (major, minor) = (v.next().unwrap_or(0), v.next().unwrap_or(0));
    if (major, minor) >= (6, 3) {
        assert_ne!(seals & 0x20, 0, "F_SEAL_EXEC set (seals {seals:#x})");
    }
}
