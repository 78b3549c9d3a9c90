//! Every segpool code path the benchmark drives, over the crate named
//! `segpool`, through its public API only.
//!
//! `transport` compiles this file against the crate at `../..` (whatever
//! the branch holds); the runner of a pinned old version (`pinned/main.rs`,
//! built by `benches/pinned.sh`) compiles the same file against the crate
//! as it stood at the pinned commit. So a before/after comparison drives
//! both crates with the same text, and neither gets an advantage from the
//! harness. The file must therefore build against every pinned version
//! (`benches/pinned.sh` lists them): use only calls they all have.

use crate::cell::{Cell, END, Window, go};
use crate::proc::Peer;
use std::hint::black_box;
use std::process::Command;
use std::time::{Duration, Instant};

/// Futex syscalls (waits, wakes) this process made through the crate.
pub fn futex_calls() -> (u64, u64) {
    segpool::futex_calls()
}

/// Consumer side of a cross-process cell: makes the pool, spawns the
/// producer (`cmd`, which must run [`produce`]), receives until the end
/// marker, and closes the window.
pub fn consume(cell: &Cell, mut cmd: Command) -> crate::cell::Sample {
    let futex0 = futex_calls();
    let mut win = Window::new(cell);
    let pool = segpool::SegmentPool::builder(cell.size, cell.depth)
        .acquire_timeout(Duration::from_secs(60))
        .build()
        .expect("pool");
    pool.configure_command(&mut cmd);
    let reader = pool.open_reader();
    let mut peer = Peer::spawn(cmd);
    go(&mut peer);
    loop {
        let u = reader.recv().expect("recv");
        assert_eq!(u.ticket(), win.seen(), "units out of order or lost");
        if u.len() < END {
            break;
        }
        win.unit(&u);
    }
    let prod = peer.recv_numbers();
    peer.finish();
    let f = futex_calls();
    win.finish(&prod, (f.0 - futex0.0, f.1 - futex0.1))
}

/// Producer side of a cross-process cell: attaches to the pool named in
/// the environment and streams the cell's units into it (copy a payload
/// in, or, with `loan`, reserve `size` bytes and write 8 of them).
pub fn produce(cell: &Cell, loan: bool) {
    let src = crate::cell::payload(cell.size);
    let pool = segpool::SegmentPool::from_env().expect("attach pool");
    let w = pool.open_writer();
    crate::cell::stream(cell, futex_calls, &mut |seq, end| {
        let mut u = w.begin_unit().expect("begin_unit");
        if end {
            // An empty unit ends the stream.
        } else if loan {
            let (_, buf) = u.reserve(cell.size).expect("reserve");
            buf[..8].copy_from_slice(&seq.to_le_bytes());
        } else {
            u.write_binary(&src).expect("write_binary");
        }
        u.commit_unit().expect("commit_unit");
    });
}

/// One unit in: `begin_unit`, `write_binary(src)`, `commit_unit`. Not
/// inlined, so callgrind can count it apart (`oneloop`).
#[inline(never)]
pub fn produce_one(w: &segpool::Writer, src: &[u8]) {
    let mut u = w.begin_unit().expect("begin_unit");
    u.write_binary(src).expect("write_binary");
    u.commit_unit().expect("commit_unit");
}

/// One unit out: `recv`, read one byte, drop (the segment goes back).
#[inline(never)]
pub fn consume_one(r: &segpool::Reader) -> u8 {
    let u = r.recv().expect("recv");
    u[0]
}

/// Producer thread + consumer thread in this process over one pool of
/// `depth` segments, `units` units of `size` bytes copied in: wall
/// nanoseconds per unit, timed by the consumer from unit `warmup` to the
/// last.
pub fn two_threads(units: u64, size: usize, depth: usize, warmup: u64) -> f64 {
    let pool = segpool::SegmentPool::builder(size, depth)
        .acquire_timeout(Duration::from_secs(60))
        .build()
        .expect("pool");
    let (w, r) = (pool.open_writer(), pool.open_reader());
    let src = vec![7u8; size];
    std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..warmup + units {
                produce_one(&w, &src);
            }
        });
        let mut acc = 0u8;
        for _ in 0..warmup {
            acc = acc.wrapping_add(consume_one(&r));
        }
        let t0 = Instant::now();
        for _ in 0..units {
            acc = acc.wrapping_add(consume_one(&r));
        }
        let ns = t0.elapsed().as_nanos() as f64 / units as f64;
        black_box(acc);
        ns
    })
}

/// One thread: `units` times [`produce_one`] then [`consume_one`], over a
/// pool of `depth` segments of `size` bytes (the loop `benches/callgrind.sh`
/// counts instructions of).
pub fn one_loop(units: u64, size: usize, depth: usize) {
    let pool = segpool::SegmentPool::new(size, depth).expect("pool");
    let (w, r) = (pool.open_writer(), pool.open_reader());
    let src = vec![7u8; size];
    let mut acc = 0u8;
    for _ in 0..units {
        produce_one(&w, &src);
        acc = acc.wrapping_add(consume_one(&r));
    }
    black_box(acc);
}
