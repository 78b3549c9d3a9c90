//! The main job: a parent process creates a pool, starts itself again as
//! worker processes (`segpool::subprocess::Workers`), and the workers stream
//! payloads through the pool while the parent consumes them in place,
//! verifies each checksum, and prints throughput and the CPU time each side
//! spent.
//!
//! ```text
//! cargo run --release --example pipeline -- [--units 1000] [--size 8388608]
//!     [--count 8] [--workers 1] [--mode copy|loan] [--verify full|touch]
//! ```
//! - `--mode copy` (default): the worker prepares each payload in its own
//!   memory and `write_binary` copies it in, as SPDL users do;
//! - `--mode loan`: the worker fills the segment in place (`reserve`), no copy;
//! - `--verify full` (default): the parent reads every byte (checksum);
//!   `--verify touch` reads the header and one byte per unit (transport cost).

use segpool::subprocess::{Workers, worker};
use segpool::{Error, SegmentPool, Unit};
use std::process::Command;
use std::time::{Duration, Instant};

const HEADER: usize = 64;

#[derive(Clone, Debug)]
struct Args {
    units: u64,
    size: usize,
    count: usize,
    workers: usize,
    loan: bool,
    full: bool,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        units: 1000,
        size: 8 << 20,
        count: 8,
        workers: 1,
        loan: false,
        full: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--units" => a.units = value()?.parse().map_err(|e| format!("--units: {e}"))?,
            "--size" => a.size = value()?.parse().map_err(|e| format!("--size: {e}"))?,
            "--count" => a.count = value()?.parse().map_err(|e| format!("--count: {e}"))?,
            "--workers" => a.workers = value()?.parse().map_err(|e| format!("--workers: {e}"))?,
            "--mode" => match value()?.as_str() {
                "copy" => a.loan = false,
                "loan" => a.loan = true,
                m => return Err(format!("--mode {m}: expected copy or loan")),
            },
            "--verify" => match value()?.as_str() {
                "full" => a.full = true,
                "touch" => a.full = false,
                m => return Err(format!("--verify {m}: expected full or touch")),
            },
            "-h" | "--help" => {
                return Err(
                    "usage: pipeline [--units N] [--size BYTES] [--count SEGMENTS] \
                            [--workers N] [--mode copy|loan] [--verify full|touch]"
                        .into(),
                );
            }
            f => return Err(format!("unknown flag {f}")),
        }
    }
    if a.size % 8 != 0 || a.size == 0 {
        return Err("--size must be a positive multiple of 8".into());
    }
    Ok(a)
}

/// A checksum the compiler vectorizes: wrapping sum and xor of the words.
fn checksum(bytes: &[u8]) -> u64 {
    let (mut sum, mut xor) = (0u64, 0u64);
    for w in bytes.chunks_exact(8) {
        let v = u64::from_le_bytes(w.try_into().unwrap());
        sum = sum.wrapping_add(v);
        xor ^= v;
    }
    sum.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ xor
}

/// CPU seconds (user + system) of this process and of its reaped children.
fn cpu_seconds() -> (f64, f64) {
    let usage = |who| {
        let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
        // SAFETY: `ru` is a valid, writable rusage; getrusage only writes it.
        let ok = unsafe { libc::getrusage(who, ru.as_mut_ptr()) } == 0;
        // SAFETY: zero-initialised, and filled by getrusage when it succeeded.
        let ru = unsafe { ru.assume_init() };
        let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
        if ok {
            secs(ru.ru_utime) + secs(ru.ru_stime)
        } else {
            f64::NAN
        }
    };
    (usage(libc::RUSAGE_SELF), usage(libc::RUSAGE_CHILDREN))
}

fn produce(a: &Args) -> segpool::Result<()> {
    let w = worker()?;
    // A source buffer with room to slide a window, so units differ.
    let mut source = vec![0u8; a.size + 4096];
    let mut x = 0x243f_6a88_85a3_08d3u64;
    for chunk in source.chunks_exact_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    let windows: Vec<u64> = (0..64)
        .map(|k| checksum(&source[k * 64..k * 64 + a.size]))
        .collect();
    while w.next_pass()? {
        // Worker `index` of `n` produces units index, index + n, ...
        for seq in (w.index() as u64..a.units).step_by(w.workers()) {
            let mut unit = match w.begin_unit() {
                Err(Error::Stale) => break, // the parent moved on
                r => r?,
            };
            if a.loan {
                let (_, buf) = unit.reserve(HEADER + a.size)?;
                let payload = &mut buf[HEADER..];
                for (i, chunk) in payload.chunks_exact_mut(8).enumerate() {
                    let v = seq ^ (i as u64).wrapping_mul(0x100_0000_01b3);
                    chunk.copy_from_slice(&v.to_le_bytes());
                }
                let sum = checksum(payload);
                buf[..8].copy_from_slice(&seq.to_le_bytes());
                buf[8..16].copy_from_slice(&sum.to_le_bytes());
            } else {
                let k = (seq % 64) as usize;
                let mut head = [0u8; HEADER];
                head[..8].copy_from_slice(&seq.to_le_bytes());
                head[8..16].copy_from_slice(&windows[k].to_le_bytes());
                unit.write_binary(&head)?;
                unit.write_binary(&source[k * 64..k * 64 + a.size])?;
            }
            unit.commit_unit()?;
        }
    }
    Ok(())
}

/// Checks a unit; returns its sequence number.
fn verify(u: &Unit, a: &Args) -> Result<u64, String> {
    let seq = u64::from_le_bytes(u[..8].try_into().unwrap());
    let want_sum = u64::from_le_bytes(u[8..16].try_into().unwrap());
    if seq >= a.units || u.len() != HEADER + a.size {
        return Err(format!(
            "unit {}: header says seq {seq}, {} bytes",
            u.ticket(),
            u.len()
        ));
    }
    if a.full {
        let sum = checksum(&u[HEADER..]);
        if sum != want_sum {
            return Err(format!(
                "unit {seq}: checksum {sum:#x}, expected {want_sum:#x}"
            ));
        }
    } else {
        std::hint::black_box(u[HEADER + a.size / 2]);
    }
    Ok(seq)
}

fn parent(a: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let create = Instant::now();
    let pool = SegmentPool::builder(HEADER + a.size, a.count)
        .acquire_timeout(Duration::from_secs(60))
        .build()?;
    let created = create.elapsed();
    // Children's CPU as a difference: `cargo run` execs this binary, so the
    // process may already carry its build's reaped children.
    let (cpu0, children0) = cpu_seconds();
    let start = Instant::now();
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(std::env::args().skip(1)); // the workers parse the same flags
    let mut workers = Workers::spawn(pool, cmd, a.workers)?;
    let mut seen = vec![false; a.units as usize];
    for unit in workers.pass()? {
        let seq = verify(&unit?, a)?;
        if std::mem::replace(&mut seen[seq as usize], true) {
            return Err(format!("unit {seq} delivered twice").into());
        }
    }
    let wall = start.elapsed().as_secs_f64();
    if let Some(missing) = seen.iter().position(|s| !s) {
        return Err(format!("unit {missing} never arrived").into());
    }
    let (published, reclaimed) = (workers.pool().published(), workers.pool().reclaimed());
    for exit in workers.shutdown()? {
        if exit.forced || exit.status.is_some_and(|s| !s.success()) {
            return Err(format!("worker {} ended badly: {exit:?}", exit.pid).into());
        }
    }
    let (cpu1, child_cpu) = cpu_seconds();
    let parent_cpu = cpu1 - cpu0;
    let child_cpu = child_cpu - children0;
    let bytes = (a.units as f64) * a.size as f64;
    println!(
        "segpool pipeline: {} units x {} bytes ({:.2} MiB), {} segments, {} worker(s), \
         mode {}, verify {}",
        a.units,
        a.size,
        a.size as f64 / (1 << 20) as f64,
        a.count,
        a.workers,
        if a.loan { "loan" } else { "copy" },
        if a.full { "full" } else { "touch" },
    );
    println!(
        "  pool created and prefaulted in {:.1} ms",
        created.as_secs_f64() * 1e3
    );
    println!(
        "  wall {:.3} s (spawn to last unit)   {:.0} units/s   {:.2} GB/s",
        wall,
        a.units as f64 / wall,
        bytes / wall / 1e9
    );
    for (side, cpu) in [
        ("parent (consumer)", parent_cpu),
        ("workers (producers)", child_cpu),
    ] {
        println!(
            "  CPU {side}: {cpu:.3} s = {:.2} us/unit = {:.3} s/GB",
            cpu / a.units as f64 * 1e6,
            cpu / (bytes / 1e9)
        );
    }
    println!(
        "  published {published} reclaimed {reclaimed}, every unit exactly once, checksums: {}",
        if a.full {
            "all verified"
        } else {
            "not read (--verify touch)"
        }
    );
    Ok(())
}

fn main() {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let is_worker = std::env::var_os(segpool::subprocess::WORKER_ENV).is_some();
    let result = if is_worker {
        produce(&args).map_err(|e| e.into())
    } else {
        parent(&args)
    };
    if let Err(e) = result {
        eprintln!(
            "pipeline {}: {e}",
            if is_worker { "worker" } else { "parent" }
        );
        std::process::exit(1);
    }
}
