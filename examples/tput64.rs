//! Steady-state throughput of 64-byte units between two processes: a
//! producer process copies each unit in, the parent takes it and reads its
//! first byte. Prints one line, `units_per_sec <N>`.
//!
//! ```text
//! cargo run --release --example tput64 -- [--units 2000000] [--count 64]
//! cargo run --release --example tput64 -- --oneloop 100000
//! ```
//!
//! `--oneloop N` runs N units through one thread instead (begin_unit,
//! write_binary, commit_unit, recv, read one byte, drop), each inside
//! `one_unit`, for callgrind to count instructions per unit exactly.
//!
//! It uses only calls protocol v2 already had, so `benches/liveness.sh` can
//! build this same file against the previous version of the crate and
//! report both in one run.

use segpool::SegmentPool;
use std::time::{Duration, Instant};

const ROLE: &str = "SEGPOOL_TPUT64_ROLE";

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.windows(2)
        .find(|w| w[0] == name)
        .map(|w| w[1].parse().expect("a number"))
        .unwrap_or(default)
}

/// One 64 B unit in and out, in one thread: what callgrind counts.
#[inline(never)]
fn one_unit(w: &segpool::Writer, r: &segpool::Reader, payload: &[u8; 64]) -> u8 {
    let mut u = w.begin_unit().expect("begin");
    u.write_binary(payload).expect("write");
    u.commit_unit().expect("commit");
    let unit = r.try_recv().expect("recv").expect("a unit");
    unit[0]
}

fn main() {
    let oneloop = arg("--oneloop", 0);
    if oneloop > 0 {
        let pool = SegmentPool::new(4096, 64).expect("pool");
        let (w, r) = (pool.open_writer(), pool.open_reader());
        let payload = [7u8; 64];
        let mut sum = 0u64;
        for _ in 0..oneloop {
            sum += u64::from(one_unit(&w, &r, std::hint::black_box(&payload)));
        }
        assert_eq!(sum, 7 * oneloop);
        return;
    }
    let units = arg("--units", 2_000_000);
    if std::env::var(ROLE).is_ok() {
        let pool = SegmentPool::from_env().expect("attach");
        let w = pool.open_writer();
        let payload = [7u8; 64];
        for _ in 0..units {
            let mut u = w.begin_unit().expect("begin");
            u.write_binary(&payload).expect("write");
            u.commit_unit().expect("commit");
        }
        return;
    }
    let count = arg("--count", 64) as usize;
    let pool = SegmentPool::builder(4096, count)
        .acquire_timeout(Duration::from_secs(30))
        .build()
        .expect("pool");
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args(std::env::args().skip(1)).env(ROLE, "producer");
    pool.configure_command(&mut cmd);
    let reader = pool.open_reader();
    let mut child = cmd.spawn().expect("spawn the producer");
    // The first unit starts the clock: process start-up is not measured.
    let first = reader.recv().expect("first unit");
    let start = Instant::now();
    let mut sum = u64::from(first[0]);
    drop(first);
    for _ in 1..units {
        let u = reader.recv().expect("unit");
        sum += u64::from(u[0]);
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(sum, 7 * units, "every unit arrived intact");
    assert!(child.wait().expect("producer").success());
    println!("units_per_sec {:.0}", (units - 1) as f64 / secs);
}
