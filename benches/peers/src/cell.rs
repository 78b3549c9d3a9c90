//! One throughput cell, whatever carries it: its parameters, what the
//! consumer does with each unit, the consumer's timed window, the
//! producer's pacing loop, and the numbers a cell yields.
//!
//! Shared by `transport` and by the runner of a pinned old version
//! (`pinned/main.rs`), so both measure a cell the same way. Imports
//! nothing of the harness but `proc`.
//!
//! Timing: the consumer starts its clock and CPU count at the `warmup`-th
//! unit (pages faulted in, caches warm), and stops them at the end marker
//! (a unit shorter than [`END`] bytes). The producer takes its CPU count
//! over the same units, and reports it on the control channel.

use crate::proc::{Parent, Peer, cpu_self};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// What the consumer does with each unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consume {
    /// Reads one byte: transport cost only.
    Touch,
    /// Reads every byte (a sum over 64-bit words).
    Checksum,
}

impl Consume {
    pub fn name(self) -> &'static str {
        match self {
            Consume::Touch => "touch",
            Consume::Checksum => "checksum",
        }
    }

    pub fn parse(s: &str) -> Consume {
        match s {
            "touch" => Consume::Touch,
            "checksum" => Consume::Checksum,
            other => panic!("consumer mode is touch or checksum, not {other}"),
        }
    }
}

/// One measured cell.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    /// Units inside the timed window.
    pub units: u64,
    /// Wall time of the window.
    pub secs: f64,
    /// Producer CPU seconds over the window's units.
    pub prod_cpu: f64,
    /// Consumer CPU seconds over the window.
    pub cons_cpu: f64,
    /// Futex syscalls (waits + wakes) of producer and consumer, segpool only.
    pub futex: (u64, u64),
}

impl Sample {
    pub fn units_per_s(&self) -> f64 {
        self.units as f64 / self.secs
    }

    /// One line of numbers, for a control channel ([`Sample::parse`]):
    /// the pinned runner's answer.
    #[allow(dead_code)] // `transport` only parses it
    pub fn line(&self) -> String {
        format!(
            "{} {} {} {} {} {}",
            self.units, self.secs, self.prod_cpu, self.cons_cpu, self.futex.0, self.futex.1
        )
    }

    /// The numbers of [`Sample::line`].
    pub fn parse(v: &[f64]) -> Sample {
        assert_eq!(v.len(), 6, "a sample is six numbers, got {v:?}");
        Sample {
            units: v[0] as u64,
            secs: v[1],
            prod_cpu: v[2],
            cons_cpu: v[3],
            futex: (v[4] as u64, v[5] as u64),
        }
    }
}

/// Run parameters shared by both sides of a cell.
#[derive(Clone, Copy, Debug)]
pub struct Cell {
    pub size: usize,
    pub consume: Consume,
    /// Segments / buffer slots in flight.
    pub depth: usize,
    /// How long the producer streams after the warm-up.
    pub duration: Duration,
    /// Stop after this many measured units instead, if nonzero.
    pub max_units: u64,
    pub warmup: u64,
}

impl Cell {
    /// A cell of `size`-byte units in a pool of `depth`, timed for
    /// `duration` after a warm-up of two pools' worth.
    pub fn new(size: usize, consume: Consume, depth: usize, duration: Duration) -> Cell {
        Cell {
            size,
            consume,
            depth,
            duration,
            max_units: 0,
            warmup: 2 * depth as u64,
        }
    }

    /// The cell as command-line words ([`Cell::from_args`] reads them back).
    pub fn args(&self) -> Vec<String> {
        vec![
            self.size.to_string(),
            self.consume.name().to_string(),
            self.depth.to_string(),
            self.duration.as_micros().to_string(),
            self.max_units.to_string(),
            self.warmup.to_string(),
        ]
    }

    /// Number of words [`Cell::args`] makes.
    pub const ARGS: usize = 6;

    pub fn from_args(a: &[String]) -> Cell {
        let num = |i: usize| -> u64 {
            a[i].parse()
                .unwrap_or_else(|_| panic!("cell argument {i}: not a number: {:?}", a[i]))
        };
        Cell {
            size: num(0) as usize,
            consume: Consume::parse(&a[1]),
            depth: num(2) as usize,
            duration: Duration::from_micros(num(3)),
            max_units: num(4),
            warmup: num(5),
        }
    }
}

/// Segments in flight for a payload size: 16 MiB worth, 4 to 64.
pub fn depth_for(size: usize) -> usize {
    ((16 << 20) / size).clamp(4, 64)
}

/// Bytes shorter than this end the stream.
pub const END: usize = 64;

fn checksum(b: &[u8]) -> u64 {
    let mut acc = [0u64; 8];
    let chunks = b.chunks_exact(64);
    let rest = chunks.remainder();
    for c in chunks {
        for (i, w) in c.chunks_exact(8).enumerate() {
            acc[i] = acc[i].wrapping_add(u64::from_le_bytes(w.try_into().unwrap()));
        }
    }
    let tail: u64 = rest.iter().map(|&x| u64::from(x)).sum();
    acc.iter().fold(tail, |a, &x| a.wrapping_add(x))
}

/// Consumer-side bookkeeping of the timed window.
pub struct Window {
    warmup: u64,
    seen: u64,
    start: Option<(Instant, Duration)>,
    acc: u64,
    consume: Consume,
}

impl Window {
    pub fn new(cell: &Cell) -> Window {
        Window {
            warmup: cell.warmup,
            seen: 0,
            start: None,
            acc: 0,
            consume: cell.consume,
        }
    }

    /// Units consumed so far (the next unit's ticket, for segpool).
    pub fn seen(&self) -> u64 {
        self.seen
    }

    #[inline]
    pub fn unit(&mut self, bytes: &[u8]) {
        match self.consume {
            Consume::Touch => self.acc = self.acc.wrapping_add(u64::from(bytes[0])),
            Consume::Checksum => self.acc = self.acc.wrapping_add(checksum(bytes)),
        }
        self.seen += 1;
        if self.seen == self.warmup {
            self.start = Some((Instant::now(), cpu_self()));
        }
    }

    /// Closes the window: `prod` is the producer's line (units, CPU
    /// seconds, futex waits, futex wakes), `futex` the consumer's futex
    /// calls over the cell.
    pub fn finish(self, prod: &[f64], futex: (u64, u64)) -> Sample {
        black_box(self.acc);
        let (t0, c0) = self.start.expect("stream ended inside the warm-up");
        let units = self.seen - self.warmup;
        assert_eq!(units, prod[0] as u64, "producer and consumer disagree");
        Sample {
            units,
            secs: t0.elapsed().as_secs_f64(),
            prod_cpu: prod[1],
            cons_cpu: (cpu_self() - c0).as_secs_f64(),
            futex: (prod[2] as u64 + prod[3] as u64, futex.0 + futex.1),
        }
    }
}

/// Parent side of the start: waits for the child's `ready`, says `go`.
pub fn go(peer: &mut Peer) {
    assert_eq!(peer.recv(), "ready");
    peer.send("go");
}

/// The producer's loop, shared by every transport: says `ready`, waits for
/// `go`, sends the warm-up units, then units until the cell's duration (or
/// unit count) is reached, then the end marker (`send(_, true)`); reports
/// `units cpu_s futex_waits futex_wakes` and stays until the parent closes
/// the channel (some transports drop what is still queued when the sender
/// goes away). `futex_calls` is the counter of the crate the cell drives
/// (zeros for the others).
pub fn stream(cell: &Cell, futex_calls: fn() -> (u64, u64), send: &mut dyn FnMut(u64, bool)) {
    let mut parent = Parent::new();
    parent.send("ready");
    assert_eq!(parent.recv(), "go");
    for seq in 0..cell.warmup {
        send(seq, false);
    }
    let (t0, c0) = (Instant::now(), cpu_self());
    let f0 = futex_calls();
    let mut n = 0u64;
    loop {
        let done = if cell.max_units > 0 {
            n >= cell.max_units
        } else {
            n > 0 && n.is_multiple_of(64) && t0.elapsed() >= cell.duration
        };
        if done {
            break;
        }
        send(cell.warmup + n, false);
        n += 1;
    }
    let cpu = (cpu_self() - c0).as_secs_f64();
    let f = futex_calls();
    send(0, true);
    parent.send(&format!("{n} {cpu} {} {}", f.0 - f0.0, f.1 - f0.1));
    parent.wait_eof();
}

/// A payload of `size` bytes for the producers that copy one in.
pub fn payload(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i * 7) as u8).collect()
}
