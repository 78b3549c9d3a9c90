//! Every segpool code path the benchmark drives, written once and expanded
//! for two crates: `live` is the crate at `../..` (whatever the branch holds)
//! and `v1` is `segpool-v1`, the protocol as it stood before the v2 rewrite,
//! frozen in `benches/baseline-v1`. Rows of both run in one process, so a
//! before/after comparison is a pair of rows of the same run.
//!
//! Both expansions are the same text, so neither side gets an advantage
//! from the harness. Should the live API ever part from v1's, split the
//! macro into two copies and keep them line for line alike where the APIs
//! agree.

/// Expands to `pub mod $name` over the crate `$krate`.
macro_rules! segpool_paths {
    ($name:ident, $krate:ident) => {
        pub mod $name {
            use crate::proc::Peer;
            use crate::throughput::{Cell, END, Window, go};
            use std::hint::black_box;
            use std::process::Command;
            use std::time::{Duration, Instant};

            /// Futex syscalls (waits, wakes) this process made through the crate.
            pub fn futex_calls() -> (u64, u64) {
                $krate::futex_calls()
            }

            /// Consumer side of a cross-process cell: makes the pool, spawns
            /// the producer (`cmd` + `args`), receives until the end marker.
            /// Returns the producer's numbers and the futex calls of both sides.
            pub fn consume(
                cell: &Cell,
                mut cmd: Command,
                args: &[String],
                win: &mut Window,
            ) -> (Vec<f64>, (u64, u64)) {
                let futex0 = futex_calls();
                let pool = $krate::SegmentPool::builder(cell.size, cell.depth)
                    .acquire_timeout(Duration::from_secs(60))
                    .build()
                    .expect("pool");
                pool.configure_command(cmd.args(args));
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
                let futex = (
                    prod[2] as u64 + prod[3] as u64,
                    f.0 - futex0.0 + f.1 - futex0.1,
                );
                (prod, futex)
            }

            /// Producer side of a cross-process cell: attaches to the pool
            /// named in the environment and hands `stream` its send step
            /// (copy `src` in, or loan `size` bytes and write 8 of them).
            pub fn produce(
                loan: bool,
                size: usize,
                src: &[u8],
                stream: &mut dyn FnMut(&mut dyn FnMut(u64, bool)),
            ) {
                let pool = $krate::SegmentPool::from_env().expect("attach pool");
                let w = pool.open_writer();
                stream(&mut |seq, end| {
                    let mut u = w.begin_unit().expect("begin_unit");
                    if end {
                        // An empty unit ends the stream.
                    } else if loan {
                        let (_, buf) = u.reserve(size).expect("reserve");
                        buf[..8].copy_from_slice(&seq.to_le_bytes());
                    } else {
                        u.write_binary(src).expect("write_binary");
                    }
                    u.commit_unit().expect("commit_unit");
                });
            }

            /// One unit in: `begin_unit`, `write_binary(src)`, `commit_unit`.
            /// Not inlined, so callgrind can count it apart (`oneloop`).
            #[inline(never)]
            pub fn produce_one(w: &$krate::Writer, src: &[u8]) {
                let mut u = w.begin_unit().expect("begin_unit");
                u.write_binary(src).expect("write_binary");
                u.commit_unit().expect("commit_unit");
            }

            /// One unit out: `recv`, read one byte, drop (the segment goes back).
            #[inline(never)]
            pub fn consume_one(r: &$krate::Reader) -> u8 {
                let u = r.recv().expect("recv");
                u[0]
            }

            /// Producer thread + consumer thread in this process over one
            /// pool of `depth` segments, `units` units of `size` bytes copied
            /// in: wall nanoseconds per unit, timed by the consumer from unit
            /// `warmup` to the last.
            pub fn two_threads(units: u64, size: usize, depth: usize, warmup: u64) -> f64 {
                let pool = $krate::SegmentPool::builder(size, depth)
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

            /// One thread: `units` times [`produce_one`] then [`consume_one`],
            /// over a pool of `depth` segments of `size` bytes (the loop
            /// `benches/callgrind.sh` counts instructions of).
            pub fn one_loop(units: u64, size: usize, depth: usize) {
                let pool = $krate::SegmentPool::new(size, depth).expect("pool");
                let (w, r) = (pool.open_writer(), pool.open_reader());
                let src = vec![7u8; size];
                let mut acc = 0u8;
                for _ in 0..units {
                    produce_one(&w, &src);
                    acc = acc.wrapping_add(consume_one(&r));
                }
                black_box(acc);
            }
        }
    };
}

segpool_paths!(live, segpool);
segpool_paths!(v1, segpool_v1);
