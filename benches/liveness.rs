//! What liveness v3 promises, measured: a sleeping side costs (almost) no
//! CPU, and a death is recovered at once. Prints two tables; asserts
//! nothing about speed.
//!
//! ```text
//! cargo bench --bench liveness            # or: bash benches/liveness.sh
//! ```
//!
//! 1. **CPU per second asleep**: a producer blocked in `begin_unit` on a
//!    full pool, and a consumer blocked in `recv` on an empty one, each for
//!    3 s while another process has the pool open (so there is a peer to
//!    watch), after one short blocked call that starts the process's death
//!    watcher (once per process and pool). "thread" is the sleeping
//!    thread's CPU
//!    (`CLOCK_THREAD_CPUTIME_ID` around the whole call, its wake-up
//!    included: what the issue measured); "process" adds every other thread
//!    of the process, the death watcher among them. The floor is the same
//!    thread in a plain 3 s `sleep`: one wake-up after seconds asleep costs
//!    that much here (cold caches, a virtual machine's timer).
//! 2. **Recovery delay after SIGKILL**: a consumer process holds the only
//!    segment; the parent's producer is blocked in `begin_unit`; the parent
//!    kills the consumer and times `kill()` -> `begin_unit` returning. The
//!    delay includes the kernel tearing the process down.

use segpool::SegmentPool;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const ROLE: &str = "SEGPOOL_LIVENESS_BENCH_ROLE";
const ASLEEP: Duration = Duration::from_secs(3);
const ROUNDS: usize = 5;
const TRIALS: usize = 100;

fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

fn process_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

fn spawn(pool: &SegmentPool, role: &str) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.env(ROLE, role);
    pool.configure_command(&mut cmd);
    cmd.spawn().expect("spawn a peer")
}

fn child(role: &str) {
    let pool = SegmentPool::from_env().expect("attach");
    match role {
        // A peer that is just there (a process to watch).
        "idle" => std::thread::sleep(ASLEEP + Duration::from_secs(2)),
        // Holds the only unit until killed.
        "hold" => {
            let u = pool.open_reader().recv().expect("a unit");
            std::hint::black_box(&u);
            std::thread::sleep(Duration::from_secs(60));
        }
        other => panic!("unknown role {other}"),
    }
}

fn wait_until(mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < until, "the peer never got ready");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// CPU µs per second asleep, `ROUNDS` calls: (thread, process) each. One
/// pool and peer for all; a short blocked call first starts the process's
/// watcher, once per process and pool, as in a running pipeline.
fn asleep(producer: bool, spin: bool) -> Vec<(f64, f64)> {
    let pool = SegmentPool::builder(4096, 1).build().unwrap();
    let w = pool.open_writer().spin(spin);
    let _full = producer.then(|| w.begin_unit().unwrap());
    let mut peer = spawn(&pool, "idle");
    wait_until(|| pool.stats().participants == 2);
    let r = pool.open_reader().spin(spin);
    let block = |t: Duration| {
        if producer {
            w.begin_unit_timeout(t).map(drop)
        } else {
            r.recv_timeout(t).map(drop)
        }
    };
    let _ = block(Duration::from_millis(200));
    let rounds = (0..ROUNDS)
        .map(|_| {
            let (p0, t0, start) = (process_cpu(), thread_cpu(), Instant::now());
            let outcome = block(ASLEEP);
            let (t1, p1) = (thread_cpu(), process_cpu());
            let secs = start.elapsed().as_secs_f64();
            assert!(matches!(outcome, Err(segpool::Error::Timeout(_))));
            let per_sec = |d: Duration| d.as_secs_f64() * 1e6 / secs;
            (per_sec(t1 - t0), per_sec(p1 - p0))
        })
        .collect();
    let _ = peer.kill();
    let _ = peer.wait();
    rounds
}

/// The floor: the same thread asleep in `nanosleep` for as long.
fn floor() -> Vec<f64> {
    (0..ROUNDS)
        .map(|_| {
            let (t0, start) = (thread_cpu(), Instant::now());
            std::thread::sleep(ASLEEP);
            (thread_cpu() - t0).as_secs_f64() * 1e6 / start.elapsed().as_secs_f64()
        })
        .collect()
}

fn recovery_delay() -> Duration {
    let pool = SegmentPool::builder(4096, 1)
        .acquire_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let w = pool.open_writer();
    let mut u = w.begin_unit().unwrap();
    u.write_binary(b"held").unwrap();
    u.commit_unit().unwrap();
    let mut holder = spawn(&pool, "hold");
    wait_until(|| pool.stats().held == 1);
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            let got = w.begin_unit().map(drop);
            (got, Instant::now())
        });
        // Let the waiter fall asleep.
        wait_until(|| pool.stats().waiting_producers == 1);
        let killed = Instant::now();
        holder.kill().unwrap();
        let (got, back) = waiter.join().unwrap();
        got.expect("the dead holder's segment came back");
        let _ = holder.wait();
        back - killed
    })
}

fn stats(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

fn main() {
    if let Ok(role) = std::env::var(ROLE) {
        child(&role);
        return;
    }
    println!(
        "## CPU per second asleep (3 s per round, {ROUNDS} rounds; µs/s: min / median / max)\n"
    );
    println!("| side | sleeping thread | whole process |");
    println!("|---|---|---|");
    for (name, producer, spin) in [
        ("producer blocked in begin_unit", true, true),
        ("consumer blocked in recv", false, true),
        ("producer, `spin(false)`", true, false),
        ("consumer, `spin(false)`", false, false),
    ] {
        let (mut t, mut p): (Vec<f64>, Vec<f64>) = asleep(producer, spin).into_iter().unzip();
        let (t, p) = (stats(&mut t), stats(&mut p));
        println!(
            "| {name} | {:.1} / {:.1} / {:.1} | {:.1} / {:.1} / {:.1} |",
            t.0, t.1, t.2, p.0, p.1, p.2
        );
    }
    let f = stats(&mut floor());
    println!(
        "| floor: `std::thread::sleep` for as long | {:.1} / {:.1} / {:.1} | |",
        f.0, f.1, f.2
    );
    let mut d: Vec<f64> = (0..TRIALS)
        .map(|_| recovery_delay().as_secs_f64() * 1e3)
        .collect();
    let (min, median, max) = stats(&mut d);
    println!("\n## Recovery delay after SIGKILL ({TRIALS} trials; ms)\n");
    println!("| min | median | max |");
    println!("|---|---|---|");
    println!("| {min:.2} | {median:.2} | {max:.2} |");
}
