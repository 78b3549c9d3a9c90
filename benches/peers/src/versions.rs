//! The live crate against the pinned old versions on the fast path, in one
//! run: two threads in one process (alternating), and the before/after
//! table of 64 B units/s, ns per unit and futex calls per unit.

use crate::cell::{Consume, Sample};
use crate::pinned::{self, Built};
use crate::pools;
use crate::report::{Row, find, num, si};
use crate::stats::{median_of, paired};
use crate::transport::Transport;
use std::fmt::Write as _;

/// Segments of the two-thread pool and of the callgrind loop.
pub const TWO_DEPTH: usize = 64;

/// Two-thread nanoseconds per unit, one sample per run: `live`, and one
/// list per pinned version (same order as the run's [`Built`] list).
#[derive(Clone, Debug, Default)]
pub struct TwoThreads {
    pub units: u64,
    pub live: Vec<f64>,
    pub pinned: Vec<Vec<f64>>,
}

/// Two-thread ns per unit of `units` units, `pairs` times for the live crate
/// and each pinned version, the order rotating each pair so that none
/// always runs first.
pub fn two_threads(units: u64, pairs: usize, pins: &[Built]) -> TwoThreads {
    let mut t = TwoThreads {
        units,
        pinned: vec![Vec::new(); pins.len()],
        ..Default::default()
    };
    let warmup = 4 * TWO_DEPTH as u64;
    let n = pins.len() + 1;
    for pair in 0..pairs {
        for k in 0..n {
            match (k + pair) % n {
                0 => t
                    .live
                    .push(pools::two_threads(units, 64, TWO_DEPTH, warmup)),
                i => t.pinned[i - 1].push(pinned::two_threads(
                    pins[i - 1].pin,
                    units,
                    64,
                    TWO_DEPTH,
                    warmup,
                )),
            }
        }
    }
    eprintln!(
        "two threads ns/unit: live {:?} pinned {:?}",
        t.live, t.pinned
    );
    t
}

/// The two-thread table.
pub fn two_threads_md(t: &TwoThreads, pins: &[Built]) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "\n#### Two threads, one process: ns per 64 B unit (producer thread copies in, consumer thread receives and touches; pool of {TWO_DEPTH}; {} units per sample, versions alternating)\n",
        t.units
    );
    md.push_str("| crate | median ns/unit | min | max | samples | live / this (median of pair ratios) |\n|---|---:|---:|---:|---:|---:|\n");
    let rows = pins
        .iter()
        .map(|b| format!("segpool {}", b.label()))
        .zip(&t.pinned)
        .chain(std::iter::once(("segpool (live)".to_string(), &t.live)));
    for (name, v) in rows {
        let min = v.iter().copied().fold(f64::MAX, f64::min);
        let max = v.iter().copied().fold(0.0, f64::max);
        let _ = writeln!(
            md,
            "| {name} | {:.1} | {min:.1} | {max:.1} | {} | {:.3} |",
            median_of(v),
            v.len(),
            paired(&t.live, v)
        );
    }
    md
}

/// The fast-path table: each pinned version against the live crate.
/// `futex`: the live crate's steady-state cell, then each pinned version's.
pub fn before_after(rows: &[Row], two: &TwoThreads, futex: &[Sample], pins: &[Built]) -> String {
    let mut md = String::from(
        "\n#### Fast path, pinned old versions (before) and the live crate (after) in this run\n\n\
         Versions: medians over rounds (pairs for two threads); live / version: median of the \
         ratios within each round (pair).\n\n| measure |",
    );
    for b in pins {
        let _ = write!(md, " {} |", b.label());
    }
    md.push_str(" live |");
    for b in pins {
        let _ = write!(md, " live / {} |", b.pin.name());
    }
    md.push_str("\n|---|");
    for _ in 0..2 * pins.len() + 1 {
        md.push_str("---:|");
    }
    md.push('\n');
    let mut line =
        |what: &str, old: &[f64], live: f64, ratios: &[f64], fmt: &dyn Fn(f64) -> String| {
            let _ = write!(md, "| {what} |");
            for x in old {
                let _ = write!(md, " {} |", fmt(*x));
            }
            let _ = write!(md, " {} |", fmt(live));
            for r in ratios {
                let _ = write!(md, " {} |", num(*r));
            }
            md.push('\n');
        };
    for c in [Consume::Touch, Consume::Checksum] {
        for (live_t, old_t) in [
            (
                Transport::SegpoolCopy,
                Transport::PinnedCopy as fn(_) -> Transport,
            ),
            (Transport::SegpoolLoan, Transport::PinnedLoan),
        ] {
            let Some(live) = find(rows, live_t, 64, c) else {
                continue;
            };
            let olds: Vec<Option<&Row>> = pins
                .iter()
                .map(|b| find(rows, old_t(b.pin), 64, c))
                .collect();
            line(
                &format!(
                    "units/s, 64 B cross-process, {}, consumer `{}`",
                    if live_t.is_loan() { "loan" } else { "copy-in" },
                    c.name()
                ),
                &olds
                    .iter()
                    .map(|o| o.map_or(f64::NAN, |r| r.units_s))
                    .collect::<Vec<_>>(),
                live.units_s,
                &olds
                    .iter()
                    .map(|o| o.map_or(f64::NAN, |r| paired(&live.by_round, &r.by_round)))
                    .collect::<Vec<_>>(),
                &si,
            );
        }
    }
    line(
        "ns per 64 B unit, two threads in one process (median)",
        &two.pinned.iter().map(|v| median_of(v)).collect::<Vec<_>>(),
        median_of(&two.live),
        &two.pinned
            .iter()
            .map(|v| paired(&two.live, v))
            .collect::<Vec<_>>(),
        &|x| format!("{x:.1}"),
    );
    let per_unit = |s: &Sample| (s.futex.0 + s.futex.1) as f64 / s.units as f64;
    line(
        "futex syscalls per 64 B unit, both sides, steady state",
        &futex[1..].iter().map(per_unit).collect::<Vec<_>>(),
        per_unit(&futex[0]),
        // No ratio: the goal is zero, and a handful of sleeps is noise.
        &vec![f64::NAN; pins.len()],
        &|x| format!("{x:.6}"),
    );
    md.push_str(
        "\nInstructions and RMWs per unit on each side: `benches/callgrind.sh` \
         (exact counts, not timed), and the static count in `docs/benchmarks.md`.\n",
    );
    md
}
