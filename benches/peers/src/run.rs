//! The quick and the full run: every transport at every payload size,
//! round-robin; the steady-state futex calls; two threads in one process;
//! the ping-pongs, wake-ups and blocked CPU; the report files.

use crate::cell::{Cell, Consume, depth_for};
use crate::host::{machine, stamp};
use crate::latency::PingPong;
use crate::pinned::Built;
use crate::stats::{Percentiles, median_of};
use crate::transport::{ALL, Transport};
use crate::{blocking, latency, plot, report, throughput, versions};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub const SIZES: [usize; 6] = [64, 4 << 10, 64 << 10, 1 << 20, 8 << 20, 32 << 20];

struct Plan {
    name: &'static str,
    rounds: usize,
    duration: Duration,
    ping_iters: usize,
    wake_iters: usize,
    futex_units: u64,
    /// Units per two-thread measurement, and how many rounds of the
    /// versions alternating.
    two_units: u64,
    two_pairs: usize,
}

const QUICK: Plan = Plan {
    name: "quick",
    rounds: 1,
    duration: Duration::from_millis(60),
    ping_iters: 20_000,
    wake_iters: 200,
    futex_units: 1_000_000,
    two_units: 100_000,
    two_pairs: 6,
};

const FULL: Plan = Plan {
    name: "full",
    rounds: 3,
    duration: Duration::from_millis(300),
    ping_iters: 200_000,
    wake_iters: 1_000,
    futex_units: 1_000_000,
    two_units: 500_000,
    two_pairs: 15,
};

/// What `transport [--quick] ...` was asked for.
pub struct Options {
    pub quick: bool,
    pub rounds: Option<usize>,
    /// The pinned old versions, built.
    pub pins: Vec<Built>,
    /// Only these transports (default: all, with the pinned ones of `pins`).
    pub transports: Option<Vec<Transport>>,
    /// Only these payload sizes (default: [`SIZES`]).
    pub sizes: Option<Vec<usize>>,
    /// Where the report goes (default: `benches/results`).
    pub out: Option<PathBuf>,
}

/// The quick or full run: every transport at every size, then the fast
/// path against the pinned versions, latency and blocking.
pub fn run(o: Options) {
    let mut plan = if o.quick { QUICK } else { FULL };
    if let Some(n) = o.rounds {
        plan.rounds = n;
    }
    let pins = o.pins;
    let transports: Vec<Transport> = o.transports.unwrap_or_else(|| {
        ALL.into_iter()
            .filter(|t| t.pin().is_none_or(|p| pins.iter().any(|b| b.pin == p)))
            .collect()
    });
    let sizes = o.sizes.unwrap_or_else(|| SIZES.to_vec());
    let out: PathBuf = o
        .out
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../results"));
    let started = Instant::now();
    let pid = std::process::id();
    let mut md = String::new();
    let _ = writeln!(
        md,
        "### Run `{}` ({}), {} round(s) of {} ms per cell\n",
        plan.name,
        stamp(),
        plan.rounds,
        plan.duration.as_millis()
    );
    let _ = writeln!(md, "{}", machine());
    for b in &pins {
        let _ = writeln!(
            md,
            "Pinned old version {}: built from commit `{}` by `benches/pinned.sh`.\n",
            b.pin.name(),
            b.rev
        );
    }

    // ----- throughput, round-robin ---------------------------------------------
    let mut samples = Vec::new();
    let mut cell_no = 0usize;
    for round in 0..plan.rounds {
        for &size in &sizes {
            for consume in [Consume::Touch, Consume::Checksum] {
                let n = transports.len();
                for k in 0..n {
                    // Rotate the order each round, and run it backwards every
                    // other round: rotation alone keeps the cyclic order, so
                    // segpool-v1-loan would always follow segpool-loan.
                    let k = if round % 2 == 1 { n - 1 - k } else { k };
                    let transport = transports[(k + round) % n];
                    let cell = Cell::new(size, consume, depth_for(size), plan.duration);
                    cell_no += 1;
                    let s = throughput::run(transport, &cell, &format!("{pid}/{cell_no}"));
                    eprintln!(
                        "round {round} {:>7} {:<8} {:<16} {:>12.0} units/s {:>8.3} GB/s",
                        report::size_name(size),
                        consume.name(),
                        transport.name(),
                        s.units_per_s(),
                        s.units as f64 * size as f64 / s.secs / 1e9
                    );
                    samples.push((round, transport, size, consume, s));
                }
            }
        }
    }
    let rows = report::rows(&samples);
    let throughput_md = report::markdown(&rows, &sizes);

    // ----- futex calls per unit in steady state ----------------------------------
    let futex_cell = |transport: Transport| {
        let cell = Cell {
            max_units: plan.futex_units,
            warmup: 128,
            ..Cell::new(64, Consume::Touch, 64, Duration::ZERO)
        };
        let s = throughput::run(
            transport,
            &cell,
            &format!("{pid}/futex-{}", transport.name()),
        );
        eprintln!(
            "{}: futex calls over {} units: {:?}",
            transport.name(),
            s.units,
            s.futex
        );
        s
    };
    let mut futex = vec![futex_cell(Transport::SegpoolCopy)];
    futex.extend(
        pins.iter()
            .map(|b| futex_cell(Transport::PinnedCopy(b.pin))),
    );

    // ----- two threads in one process, versions alternating -----------------------
    let two = versions::two_threads(plan.two_units, plan.two_pairs, &pins);

    // ----- latency -------------------------------------------------------------------
    let mut pp = Vec::new();
    for kind in [
        PingPong::SegpoolSpin,
        PingPong::SegpoolBlock,
        PingPong::Iceoryx2,
    ] {
        let iters = if kind == PingPong::SegpoolBlock {
            plan.ping_iters / 10
        } else {
            plan.ping_iters
        };
        let p = latency::ping_pong(kind, iters, &format!("{pid}/pp{}", pp.len()));
        eprintln!("ping-pong {}: {:?}", kind.name(), p);
        pp.push((kind, p));
    }
    let mut wake_s = Vec::new();
    let mut wake_p = Vec::new();
    let mut wake_f = Vec::new();
    // Alternate the wake-up measurements in chunks, for the same reason.
    for chunk in 0..4 {
        wake_s.push(blocking::wake_segpool(plan.wake_iters / 4, true));
        wake_p.push(blocking::wake_segpool(plan.wake_iters / 4, false));
        wake_f.push(blocking::wake_futex(
            plan.wake_iters / 4,
            &format!("{pid}-w{chunk}"),
        ));
    }
    let merge = |v: &[Percentiles]| Percentiles {
        p50: median_of(&v.iter().map(|p| p.p50).collect::<Vec<_>>()),
        p99: median_of(&v.iter().map(|p| p.p99).collect::<Vec<_>>()),
        n: v.iter().map(|p| p.n).sum(),
    };
    let (wake_s, wake_p, wake_f) = (merge(&wake_s), merge(&wake_p), merge(&wake_f));
    eprintln!("wake-up segpool {wake_s:?} consumer parks {wake_p:?} raw futex {wake_f:?}");
    let blocked = blocking::blocked_cpu(&format!("{pid}/blocked"));
    eprintln!("blocked 1 s CPU µs: {blocked:?}");

    // ----- report ----------------------------------------------------------------------
    if !pins.is_empty() {
        md.push_str(&versions::before_after(&rows, &two, &futex, &pins));
    }
    md.push_str(&throughput_md);
    md.push_str(&latency_md(&pp));
    md.push_str(&blocking_md(wake_f, wake_s, wake_p, blocked));
    let _ = writeln!(
        md,
        "\n#### Futex syscalls in steady state: {} units of 64 B, copy-in, pool of 64\n",
        futex[0].units
    );
    md.push_str("| crate | side | futex calls | per unit |\n|---|---|---:|---:|\n");
    let names = std::iter::once("segpool (live)".to_string())
        .chain(pins.iter().map(|b| format!("segpool {}", b.label())));
    for (name, f) in names.zip(&futex) {
        let _ = writeln!(
            md,
            "| {name} | producer | {} | {:.6} |\n| {name} | consumer | {} | {:.6} |",
            f.futex.0,
            f.futex.0 as f64 / f.units as f64,
            f.futex.1,
            f.futex.1 as f64 / f.units as f64
        );
    }
    md.push_str(&versions::two_threads_md(&two, &pins));
    let _ = writeln!(
        md,
        "\n({:.2} M units/s during this run; total bench time {:.0} s)",
        futex[0].units_per_s() / 1e6,
        started.elapsed().as_secs_f64()
    );

    std::fs::create_dir_all(&out).expect("create output dir");
    let st = stamp().replace([':', ' '], "-");
    let write = |name: &str, body: &[u8]| {
        for file in [
            format!("{st}-{}.{name}", plan.name),
            format!("latest-{}.{name}", plan.name),
        ] {
            std::fs::write(out.join(&file), body).expect("write result");
        }
    };
    write("md", md.as_bytes());
    write("csv", report::csv(&rows).as_bytes());
    let png = out.join(format!("latest-{}.png", plan.name));
    match plot::plot(&rows, &sizes, &png) {
        Ok(()) => {
            let _ = std::fs::copy(&png, out.join(format!("{st}-{}.png", plan.name)));
        }
        Err(e) => eprintln!("plot failed: {e}"),
    }
    println!("{md}");
    eprintln!("results in {}", out.display());
}

/// The ping-pong table.
fn latency_md(pp: &[(PingPong, Percentiles)]) -> String {
    let mut md = String::from(
        "\n#### Latency: 64 B ping-pong between two processes, one way (round trip / 2)\n\n\
         | design | p50 ns | p99 ns | x segpool spin p50 | round trips |\n|---|---:|---:|---:|---:|\n",
    );
    let base = pp[0].1.p50;
    for (kind, p) in pp {
        let _ = writeln!(
            md,
            "| {} | {:.0} | {:.0} | {:.2} | {} |",
            kind.name(),
            p.p50,
            p.p99,
            p.p50 / base,
            p.n
        );
    }
    md
}

/// The wake-up and blocked-CPU tables.
fn blocking_md(
    wake_f: Percentiles,
    wake_s: Percentiles,
    wake_p: Percentiles,
    blocked: (f64, f64, f64),
) -> String {
    let mut md = String::from(
        "\n#### Blocking\n\n| measure | p50 | p99 | samples |\n|---|---:|---:|---:|\n",
    );
    let _ = writeln!(
        md,
        "| raw shared futex wake-up (another process) | {:.1} µs | {:.1} µs | {} |",
        wake_f.p50 / 1e3,
        wake_f.p99 / 1e3,
        wake_f.n
    );
    for (what, w) in [
        (
            "segpool: unit dropped -> blocked `begin_unit` returns (consumer then spins in `recv`, default)",
            wake_s,
        ),
        ("same, consumer `spin(false)` (parks at once)", wake_p),
    ] {
        let _ = writeln!(
            md,
            "| {what} | {:.1} µs ({:.2}x futex) | {:.1} µs ({:.2}x futex) | {} |",
            w.p50 / 1e3,
            w.p50 / wake_f.p50,
            w.p99 / 1e3,
            w.p99 / wake_f.p99,
            w.n
        );
    }
    md.push_str("\n| producer blocked for 1 s on a full pool | CPU burnt |\n|---|---:|\n");
    let _ = writeln!(
        md,
        "| segpool, spin-then-park (default) | {:.0} µs |",
        blocked.0
    );
    let _ = writeln!(md, "| segpool, `spin(false)` | {:.0} µs |", blocked.1);
    let _ = writeln!(
        md,
        "| iceoryx2, `RetryUntilDelivered` | {:.0} µs |",
        blocked.2
    );
    md
}
