//! `transport fastpath`: the table of issue 17, in one run. 64 B units
//! between two processes (copy-in and loan, consumer touching the bytes) at
//! pool depths 16 and 64 for the live crate, iceoryx2 and a pinned previous
//! version, alternating within each round; ping-pong p50 and p99 of segpool
//! and iceoryx2, alternating in chunks; instructions per unit before and
//! after when `benches/fastpath.sh` passes them in (from callgrind).
//!
//! Every ratio is paired: the median over rounds (chunks) of the ratio of
//! two cells measured seconds apart.

use crate::cell::{Cell, Consume};
use crate::latency::{PingPong, ping_pong_samples};
use crate::pinned::Built;
use crate::report::{num, si};
use crate::stats::{median_of, paired, percentiles};
use crate::throughput;
use crate::transport::Transport;
use std::fmt::Write as _;
use std::time::Duration;

/// Ping-pong chunks, alternating segpool and iceoryx2.
const CHUNKS: usize = 10;

pub const DEPTHS: [usize; 2] = [16, 64];

/// Units/s of one (transport, depth) over the rounds (NaN: did not run).
struct Series {
    transport: Transport,
    depth: usize,
    by_round: Vec<f64>,
}

/// Runs `rounds` rounds of `duration` per cell and `pings` ping-pong round
/// trips per design, against the previous version `before` if it could be
/// built, and returns the Markdown table; `instructions` (per 64 B unit,
/// producer + consumer: before, after), if counted, make its first row.
pub fn run(
    rounds: usize,
    duration: Duration,
    pings: usize,
    before: Option<&Built>,
    instructions: Option<(f64, f64)>,
) -> String {
    let pid = std::process::id();
    let mut cells = vec![
        Transport::SegpoolCopy,
        Transport::SegpoolLoan,
        Transport::Iceoryx2,
    ];
    if let Some(b) = &before {
        cells.push(Transport::PinnedCopy(b.pin));
        cells.push(Transport::PinnedLoan(b.pin));
    }
    let mut series: Vec<Series> = DEPTHS
        .iter()
        .flat_map(|&depth| {
            cells.iter().map(move |&transport| Series {
                transport,
                depth,
                by_round: vec![f64::NAN; rounds],
            })
        })
        .collect();
    let mut n = 0usize;
    for round in 0..rounds {
        let k = series.len();
        for i in 0..k {
            // Rotate each round, backwards every other round, so that no
            // cell always follows the same neighbour.
            let i = if round % 2 == 1 { k - 1 - i } else { i };
            let s = &mut series[(i + round) % k];
            let cell = Cell::new(64, Consume::Touch, s.depth, duration);
            n += 1;
            let sample = throughput::run(s.transport, &cell, &format!("{pid}/fp{n}"));
            s.by_round[round] = sample.units_per_s();
            eprintln!(
                "round {round} depth {:>2} {:<16} {:>12.0} units/s",
                s.depth,
                s.transport.name(),
                s.by_round[round]
            );
        }
    }
    // Ping-pong: segpool and iceoryx2 alternate in chunks.
    let chunk = (pings / CHUNKS).max(1);
    let (mut seg, mut ice) = (Vec::new(), Vec::new());
    let (mut seg_all, mut ice_all) = (Vec::new(), Vec::new());
    for c in 0..CHUNKS {
        for k in 0..2 {
            let kind = if (k + c) % 2 == 0 {
                PingPong::SegpoolSpin
            } else {
                PingPong::Iceoryx2
            };
            let v = ping_pong_samples(kind, chunk, &format!("{pid}/fpp{c}-{k}"));
            let (per_chunk, all) = if kind == PingPong::Iceoryx2 {
                (&mut ice, &mut ice_all)
            } else {
                (&mut seg, &mut seg_all)
            };
            per_chunk.push(percentiles(v.clone()));
            all.extend(v);
        }
    }
    let (seg_p, ice_p) = (percentiles(seg_all), percentiles(ice_all));
    eprintln!("ping-pong segpool {seg_p:?} iceoryx2 {ice_p:?}");

    let find = |t: Transport, depth: usize| {
        series
            .iter()
            .find(|s| (s.transport, s.depth) == (t, depth))
            .map(|s| s.by_round.as_slice())
    };
    let before_name = before.map_or("not built".to_string(), |b| b.label());
    let mut md = String::new();
    let _ = writeln!(
        md,
        "| measure | iceoryx2 | before: {before_name} | after: live | after / iceoryx2 | after / before |\n|---|---:|---:|---:|---:|---:|"
    );
    if let Some((ir_before, ir_after)) = instructions {
        let _ = writeln!(
            md,
            "| instructions per 64 B unit, producer + consumer (callgrind, exact) | - | {ir_before:.0} | {ir_after:.0} | - | {} |",
            num(ir_after / ir_before)
        );
    }
    for depth in DEPTHS {
        for (live, old) in [
            (
                Transport::SegpoolCopy,
                Transport::PinnedCopy as fn(_) -> Transport,
            ),
            (Transport::SegpoolLoan, Transport::PinnedLoan),
        ] {
            let l = find(live, depth).unwrap_or(&[]);
            let i = find(Transport::Iceoryx2, depth).unwrap_or(&[]);
            let b = before.and_then(|b| find(old(b.pin), depth)).unwrap_or(&[]);
            let _ = writeln!(
                md,
                "| 64 B units/s, {}, pool of {depth} (median of {} rounds) | {} | {} | {} | {} | {} |",
                if live.is_loan() { "loan" } else { "copy-in" },
                rounds,
                si(median_of(i)),
                si(median_of(b)),
                si(median_of(l)),
                ratio_cell(l, i),
                ratio_cell(l, b),
            );
        }
    }
    for (what, pick) in [("p50", 0usize), ("p99", 1)] {
        let get = |p: &crate::stats::Percentiles| if pick == 0 { p.p50 } else { p.p99 };
        let (s, i): (Vec<f64>, Vec<f64>) =
            (seg.iter().map(get).collect(), ice.iter().map(get).collect());
        let _ = writeln!(
            md,
            "| ping-pong {what}, one way, ns ({} round trips each; ratio: median over {} alternating chunks) | {:.0} | - | {:.0} | {} | - |",
            seg_p.n,
            CHUNKS,
            get(&ice_p),
            get(&seg_p),
            num(paired(&s, &i)),
        );
    }
    md
}

/// `median (min-max)` of the paired ratios `a[i] / b[i]`; `-` if none.
fn ratio_cell(a: &[f64], b: &[f64]) -> String {
    let r: Vec<f64> = a
        .iter()
        .zip(b)
        .map(|(x, y)| x / y)
        .filter(|r| r.is_finite())
        .collect();
    if r.is_empty() {
        return "-".into();
    }
    let lo = r.iter().copied().fold(f64::MAX, f64::min);
    let hi = r.iter().copied().fold(0.0, f64::max);
    format!("**{}** ({}-{})", num(median_of(&r)), num(lo), num(hi))
}
