//! Micro-benchmarks of the pool in one process: the cost of the protocol
//! itself, without a second process or a payload copy worth mentioning.
//!
//! - `claim_release/N`: `begin_unit` + drop (abort) of a segment, N threads
//!   sharing one pool;
//! - `publish_recv/N`: `begin_unit`, a 64 B `write_binary`, `commit_unit`,
//!   `recv`, drop, N threads sharing one pool (each thread receives whatever
//!   unit comes next, so units cross threads when N > 1).
//!
//! Run: `cargo bench --bench pool` (add `-- --quick` for a short run).
//! The cross-process comparison with the peers lives in `benches/peers`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use segpool::SegmentPool;
use std::hint::black_box;
use std::time::{Duration, Instant};

const THREADS: [usize; 3] = [1, 2, 4];

/// Runs `op` `iters` times in total, split over `threads` threads that start
/// together; returns the wall time of the slowest.
fn timed(threads: usize, iters: u64, op: &(dyn Fn() + Sync)) -> Duration {
    let barrier = std::sync::Barrier::new(threads);
    let per = iters.div_ceil(threads as u64);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    let t0 = Instant::now();
                    for _ in 0..per {
                        op();
                    }
                    t0.elapsed()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("bench thread"))
            .max()
            .unwrap_or_default()
    })
}

fn claim_release(c: &mut Criterion) {
    let mut g = c.benchmark_group("claim_release");
    g.throughput(Throughput::Elements(1));
    for threads in THREADS {
        let pool = SegmentPool::new(4096, 64).expect("pool");
        let writer = pool.open_writer();
        g.bench_with_input(BenchmarkId::from_parameter(threads), &threads, |b, &n| {
            b.iter_custom(|iters| {
                timed(n, iters, &|| {
                    let unit = writer.begin_unit().expect("begin_unit");
                    black_box(unit.segment());
                    drop(unit);
                })
            })
        });
    }
    g.finish();
}

fn publish_recv(c: &mut Criterion) {
    let mut g = c.benchmark_group("publish_recv");
    g.throughput(Throughput::Elements(1));
    let payload = [0x5au8; 64];
    for threads in THREADS {
        let pool = SegmentPool::new(4096, 64).expect("pool");
        let (writer, reader) = (pool.open_writer(), pool.open_reader());
        g.bench_with_input(BenchmarkId::from_parameter(threads), &threads, |b, &n| {
            b.iter_custom(|iters| {
                timed(n, iters, &|| {
                    let mut unit = writer.begin_unit().expect("begin_unit");
                    unit.write_binary(&payload).expect("write_binary");
                    unit.commit_unit().expect("commit_unit");
                    // Every thread publishes before it receives, so a unit
                    // is always there: `recv` never blocks for long.
                    let got = reader.recv().expect("recv");
                    black_box(got[0]);
                })
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = claim_release, publish_recv
}
criterion_main!(benches);
