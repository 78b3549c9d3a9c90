//! `transport`: segpool against the physical limit and its peers, side by
//! side in one run.
//!
//! ```text
//! transport [--quick] [--rounds N] [--transports a,b,..] [--sizes n,..] [--out DIR]
//! transport cell <transport> <size> <touch|checksum> <ms>    one cell
//! transport latency [round trips]                            ping-pongs only
//! transport blocked                                          blocked-producer CPU only
//! transport two-threads [units]                              in-process v1 vs live only
//! transport oneloop <live|v1> <units> [size]                 one-thread loop, for callgrind
//! ```
//! Every transport runs in the same process pair layout (producer = child,
//! consumer = this process), over the same payload sizes, alternating
//! round-robin so that noise hits all of them alike. Writes
//! `DIR/<stamp>-<mode>.{md,csv,png}` and `DIR/latest-<mode>.*` (DIR
//! defaults to `benches/results` beside this package).

mod latency;
mod pools;
mod proc;
mod report;
mod throughput;

use latency::{Percentiles, PingPong};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use throughput::{ALL, Cell, Consume, Transport};

const SIZES: [usize; 6] = [64, 4 << 10, 64 << 10, 1 << 20, 8 << 20, 32 << 20];

struct Plan {
    name: &'static str,
    rounds: usize,
    duration: Duration,
    ping_iters: usize,
    wake_iters: usize,
    futex_units: u64,
    /// Units per two-thread measurement, and how many (v1, live) pairs.
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

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("child") {
        iceoryx2::prelude::set_log_level(iceoryx2::prelude::LogLevel::Error);
        match args[1].as_str() {
            "tp" => throughput::child(&args[2..]),
            "pp" => latency::pp_child(&args[2..]),
            "wake" => latency::wake_child(&args[2..]),
            other => panic!("unknown child role {other}"),
        }
        return;
    }
    iceoryx2::prelude::set_log_level(iceoryx2::prelude::LogLevel::Error);
    if args.first().map(String::as_str) == Some("cell") {
        // One cell, for profiling: `cell <transport> <size> <touch|checksum> <ms>`.
        let transport = *ALL.iter().find(|t| t.name() == args[1]).expect("transport");
        let size: usize = args[2].parse().expect("size");
        let consume = if args[3] == "touch" {
            Consume::Touch
        } else {
            Consume::Checksum
        };
        let depth = throughput::depth_for(size);
        let cell = Cell {
            transport,
            size,
            consume,
            depth,
            duration: Duration::from_millis(args[4].parse().expect("ms")),
            max_units: 0,
            warmup: 2 * depth as u64,
        };
        let s = throughput::run(&cell, &format!("{}/cell", std::process::id()));
        println!("{s:?} -> {:.0} units/s", s.units as f64 / s.secs);
        return;
    }
    if args.first().map(String::as_str) == Some("latency") {
        // Ping-pongs only: `latency <round trips>`.
        let iters: usize = args.get(1).map_or(20_000, |n| n.parse().expect("count"));
        for (i, kind) in [
            PingPong::SegpoolSpin,
            PingPong::SegpoolBlock,
            PingPong::Iceoryx2,
        ]
        .into_iter()
        .enumerate()
        {
            let tag = format!("{}/lat{i}", std::process::id());
            println!(
                "{}: {:?}",
                kind.name(),
                latency::ping_pong(kind, iters, &tag)
            );
        }
        return;
    }
    if args.first().map(String::as_str) == Some("oneloop") {
        // `oneloop <live|v1> <units> [size]`: benches/callgrind.sh runs it.
        let units: u64 = args[2].parse().expect("units");
        let size: usize = args.get(3).map_or(64, |s| s.parse().expect("size"));
        match args[1].as_str() {
            "live" => pools::live::one_loop(units, size, TWO_DEPTH),
            "v1" => pools::v1::one_loop(units, size, TWO_DEPTH),
            other => panic!("oneloop: crate is live or v1, not {other}"),
        }
        return;
    }
    if args.first().map(String::as_str) == Some("two-threads") {
        let units: u64 = args.get(1).map_or(1_000_000, |n| n.parse().expect("units"));
        let t = two_threads(units, 5);
        println!("{}", two_threads_md(&t));
        return;
    }
    if args.first().map(String::as_str) == Some("blocked") {
        println!(
            "{:?}",
            latency::blocked_cpu(&format!("{}/b", std::process::id()))
        );
        return;
    }
    let mut plan = if args.iter().any(|a| a == "--quick") {
        QUICK
    } else {
        FULL
    };
    let value_of = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
    };
    if let Some(n) = value_of("--rounds") {
        plan.rounds = n.parse().expect("--rounds N");
    }
    // `--transports a,b,..`: only these (e.g. the four segpool rows and the
    // anchor, for a before/after run with many rounds).
    let transports: Vec<Transport> = match value_of("--transports") {
        Some(list) => list.split(',').map(Transport::parse).collect(),
        None => ALL.to_vec(),
    };
    // `--sizes 64,4096,..`: only these payload sizes, in bytes.
    let sizes: Vec<usize> = match value_of("--sizes") {
        Some(list) => list
            .split(',')
            .map(|n| n.parse().expect("--sizes: bytes"))
            .collect(),
        None => SIZES.to_vec(),
    };
    let out: PathBuf = value_of("--out")
        .map(PathBuf::from)
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
                    let depth = throughput::depth_for(size);
                    let cell = Cell {
                        transport,
                        size,
                        consume,
                        depth,
                        duration: plan.duration,
                        max_units: 0,
                        warmup: 2 * depth as u64,
                    };
                    cell_no += 1;
                    let s = throughput::run(&cell, &format!("{pid}/{cell_no}"));
                    eprintln!(
                        "round {round} {:>7} {:<8} {:<13} {:>12.0} units/s {:>8.3} GB/s",
                        report::size_name(size),
                        consume.name(),
                        transport.name(),
                        s.units as f64 / s.secs,
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
    let futex_cell = |transport| {
        let s = throughput::run(
            &Cell {
                transport,
                size: 64,
                consume: Consume::Touch,
                depth: 64,
                duration: Duration::ZERO,
                max_units: plan.futex_units,
                warmup: 128,
            },
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
    let futex_v1 = futex_cell(Transport::SegpoolV1Copy);
    let futex = futex_cell(Transport::SegpoolCopy);

    // ----- two threads in one process, v1 and live alternating --------------------
    let two = two_threads(plan.two_units, plan.two_pairs);

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
        wake_s.push(latency::wake_segpool(plan.wake_iters / 4, true));
        wake_p.push(latency::wake_segpool(plan.wake_iters / 4, false));
        wake_f.push(latency::wake_futex(
            plan.wake_iters / 4,
            &format!("{pid}-w{chunk}"),
        ));
    }
    let merge = |v: &[Percentiles]| Percentiles {
        p50: report_median(v.iter().map(|p| p.p50).collect()),
        p99: report_median(v.iter().map(|p| p.p99).collect()),
        n: v.iter().map(|p| p.n).sum(),
    };
    let (wake_s, wake_p, wake_f) = (merge(&wake_s), merge(&wake_p), merge(&wake_f));
    eprintln!("wake-up segpool {wake_s:?} consumer parks {wake_p:?} raw futex {wake_f:?}");
    let blocked = latency::blocked_cpu(&format!("{pid}/blocked"));
    eprintln!("blocked 1 s CPU µs: {blocked:?}");

    // ----- report ----------------------------------------------------------------------
    md.push_str(&report::before_after(&rows, &two, (&futex_v1, &futex)));
    md.push_str(&throughput_md);
    let _ = writeln!(
        md,
        "\n#### Latency: 64 B ping-pong between two processes, one way (round trip / 2)\n"
    );
    md.push_str("| design | p50 ns | p99 ns | x segpool spin p50 | round trips |\n|---|---:|---:|---:|---:|\n");
    let base = pp[0].1.p50;
    for (kind, p) in &pp {
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
    let _ = writeln!(md, "\n#### Blocking\n");
    md.push_str("| measure | p50 | p99 | samples |\n|---|---:|---:|---:|\n");
    let _ = writeln!(
        md,
        "| raw shared futex wake-up (another process) | {:.1} µs | {:.1} µs | {} |",
        wake_f.p50 / 1e3,
        wake_f.p99 / 1e3,
        wake_f.n
    );
    let _ = writeln!(
        md,
        "| segpool: unit dropped -> blocked `begin_unit` returns (consumer then spins in `recv`, default) | {:.1} µs ({:.2}x futex) | {:.1} µs ({:.2}x futex) | {} |",
        wake_s.p50 / 1e3,
        wake_s.p50 / wake_f.p50,
        wake_s.p99 / 1e3,
        wake_s.p99 / wake_f.p99,
        wake_s.n
    );
    let _ = writeln!(
        md,
        "| same, consumer `spin(false)` (parks at once) | {:.1} µs ({:.2}x futex) | {:.1} µs ({:.2}x futex) | {} |",
        wake_p.p50 / 1e3,
        wake_p.p50 / wake_f.p50,
        wake_p.p99 / 1e3,
        wake_p.p99 / wake_f.p99,
        wake_p.n
    );
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
    let _ = writeln!(
        md,
        "\n#### Futex syscalls in steady state: {} units of 64 B, copy-in, pool of 64\n",
        futex.units
    );
    md.push_str("| crate | side | futex calls | per unit |\n|---|---|---:|---:|\n");
    for (name, f) in [("segpool v1", &futex_v1), ("segpool", &futex)] {
        let _ = writeln!(
            md,
            "| {name} | producer | {} | {:.6} |\n| {name} | consumer | {} | {:.6} |",
            f.futex.0,
            f.futex.0 as f64 / f.units as f64,
            f.futex.1,
            f.futex.1 as f64 / f.units as f64
        );
    }
    md.push_str(&two_threads_md(&two));
    let _ = writeln!(
        md,
        "\n({:.2} M units/s during this run; total bench time {:.0} s)",
        futex.units as f64 / futex.secs / 1e6,
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
    match report::plot(&rows, &sizes, &png) {
        Ok(()) => {
            let _ = std::fs::copy(&png, out.join(format!("{st}-{}.png", plan.name)));
        }
        Err(e) => eprintln!("plot failed: {e}"),
    }
    println!("{md}");
    eprintln!("results in {}", out.display());
}

/// Segments of the two-thread pool and of the callgrind loop.
const TWO_DEPTH: usize = 64;

/// Two-thread ns per unit of `units` units, `pairs` times for each crate:
/// v1 then live, then live then v1, and so on, so neither always runs first.
fn two_threads(units: u64, pairs: usize) -> report::TwoThreads {
    let mut t = report::TwoThreads {
        units,
        ..Default::default()
    };
    let warmup = 4 * TWO_DEPTH as u64;
    for pair in 0..pairs {
        for k in 0..2 {
            if (k + pair) % 2 == 0 {
                t.v1.push(pools::v1::two_threads(units, 64, TWO_DEPTH, warmup));
            } else {
                t.live
                    .push(pools::live::two_threads(units, 64, TWO_DEPTH, warmup));
            }
        }
    }
    eprintln!("two threads ns/unit: v1 {:?} live {:?}", t.v1, t.live);
    t
}

/// The two-thread table.
fn two_threads_md(t: &report::TwoThreads) -> String {
    let mut md = String::new();
    let _ = writeln!(
        md,
        "\n#### Two threads, one process: ns per 64 B unit (producer thread copies in, consumer thread receives and touches; pool of {TWO_DEPTH}; {} units per sample, v1 and live alternating)\n",
        t.units
    );
    md.push_str("| crate | median ns/unit | min | max | samples | x v1 (median of pair ratios) |\n|---|---:|---:|---:|---:|---:|\n");
    for (name, v) in [("segpool v1", &t.v1), ("segpool", &t.live)] {
        let min = v.iter().copied().fold(f64::MAX, f64::min);
        let max = v.iter().copied().fold(0.0, f64::max);
        let med = report::median_of(v);
        let _ = writeln!(
            md,
            "| {name} | {med:.1} | {min:.1} | {max:.1} | {} | {:.3} |",
            v.len(),
            report::paired(v, &t.v1)
        );
    }
    md
}

fn report_median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// UTC time of the run, `YYYY-MM-DDTHH:MM:SSZ`.
fn stamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `nproc` and the CPU model, for the report.
fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "Machine: {cpus} CPUs available, `{model}`, Linux {}; shared with other work, so compare ratios within this run only.\n",
        kernel.trim()
    )
}
