//! `transport`: segpool against the physical limit, its peers and its own
//! old versions, side by side in one run.
//!
//! ```text
//! transport [--quick] [--rounds N] [--transports a,b,..] [--sizes n,..]
//!           [--pinned v1,v3|none] [--out DIR]
//! transport fastpath [--rounds N] [--ms MS] [--pings N] [--before v3|none]
//!                    [--instructions BEFORE,AFTER]       issue 17's table
//! transport cell <transport> <size> <touch|checksum> <ms>    one cell
//! transport latency [round trips]                            ping-pongs only
//! transport blocked                                          blocked-producer CPU only
//! transport two-threads [units] [--pinned v1,v3]             in-process, versions alternating
//! transport oneloop <units> [size]                           one-thread loop, for callgrind
//! ```
//! Every transport runs in the same process pair layout (producer = child,
//! consumer = this process, or the runner of a pinned old version, which
//! spawns its own producer), over the same payload sizes, alternating
//! round-robin so that noise hits all of them alike. Writes
//! `DIR/<stamp>-<mode>.{md,csv,png}` and `DIR/latest-<mode>.*` (DIR
//! defaults to `benches/results` beside this package).
//!
//! Imports go one way. In the groups below, a file imports only files of
//! the groups after its own (and none of its own group):
//! 1. `main`;
//! 2. `run` (the quick and full runs), `fastpath` (issue 17's table);
//! 3. `versions` (the live crate against pinned old versions), `plot`;
//! 4. `throughput`, `latency`, `blocking`, `report`;
//! 5. `pools` (the crate's code paths), `pinned` (the old versions'
//!    runners), `memcpy`, `ice`;
//! 6. `cell` (a throughput cell's parameters, window and pacing);
//! 7. `proc`, `stats`, `transport`, `host`, which import nothing of the
//!    harness.

mod blocking;
mod cell;
mod fastpath;
mod host;
mod ice;
mod latency;
mod memcpy;
mod pinned;
mod plot;
mod pools;
mod proc;
mod report;
mod run;
mod stats;
mod throughput;
mod transport;
mod versions;

use cell::{Cell, Consume, depth_for};
use latency::PingPong;
use pinned::Built;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use transport::{Pin, Transport};

/// The pinned old versions a run includes unless `--pinned` says otherwise.
const DEFAULT_PINS: [Pin; 2] = [Pin::V1, Pin::V3];

/// The previous version, for `fastpath`.
const BEFORE: Pin = Pin::V3;

/// The command line: positional words and `--flag value` pairs.
struct Args(Vec<String>);

impl Args {
    fn value(&self, flag: &str) -> Option<&str> {
        let i = self.0.iter().position(|a| a == flag)?;
        Some(
            self.0
                .get(i + 1)
                .unwrap_or_else(|| panic!("{flag} needs a value")),
        )
    }

    fn has(&self, flag: &str) -> bool {
        self.0.iter().any(|a| a == flag)
    }

    fn word(&self, i: usize) -> Option<&str> {
        self.0.get(i).map(String::as_str)
    }

    /// `--pinned a,b` (or `none`), else `default`.
    fn pins(&self, flag: &str, default: &[Pin]) -> Vec<Pin> {
        match self.value(flag) {
            Some("none") => Vec::new(),
            Some(list) => list.split(',').map(Pin::parse).collect(),
            None => default.to_vec(),
        }
    }
}

fn main() {
    let args = Args(std::env::args().skip(1).collect());
    iceoryx2::prelude::set_log_level(iceoryx2::prelude::LogLevel::Error);
    match args.word(0) {
        Some("child") => match args.word(1) {
            Some("tp") => throughput::child(&args.0[2..]),
            Some("pp") => latency::pp_child(&args.0[2..]),
            Some("wake") => blocking::wake_child(&args.0[2..]),
            other => panic!("unknown child role {other:?}"),
        },
        Some("cell") => {
            // One cell, for profiling: `cell <transport> <size> <touch|checksum> <ms>`.
            let transport = Transport::parse(&args.0[1]);
            let size: usize = args.0[2].parse().expect("size");
            let ms = args.0[4].parse().expect("ms");
            let cell = Cell::new(
                size,
                Consume::parse(&args.0[3]),
                depth_for(size),
                Duration::from_millis(ms),
            );
            let s = throughput::run(transport, &cell, &format!("{}/cell", std::process::id()));
            println!("{s:?} -> {:.0} units/s", s.units_per_s());
        }
        Some("latency") => {
            // Ping-pongs only: `latency <round trips>`.
            let iters = args.word(1).map_or(20_000, |n| n.parse().expect("count"));
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
        }
        Some("oneloop") => {
            // `oneloop <units> [size]`: benches/callgrind.sh runs it.
            let units: u64 = args.0[1].parse().expect("units");
            let size = args.word(2).map_or(64, |s| s.parse().expect("size"));
            pools::one_loop(units, size, versions::TWO_DEPTH);
        }
        Some("two-threads") => {
            let units = args
                .word(1)
                .map_or(1_000_000, |n| n.parse().expect("units"));
            let pins = build_pins(&args.pins("--pinned", &DEFAULT_PINS), false);
            let t = versions::two_threads(units, 5, &pins);
            println!("{}", versions::two_threads_md(&t, &pins));
        }
        Some("blocked") => {
            println!(
                "{:?}",
                blocking::blocked_cpu(&format!("{}/b", std::process::id()))
            );
        }
        Some("fastpath") => fastpath(&args),
        _ => {
            let quick = args.has("--quick");
            // The quick run (CI's harness check) goes on without the old
            // versions if they cannot be built; the full run needs them.
            let pins = build_pins(&args.pins("--pinned", &DEFAULT_PINS), !quick);
            run::run(run::Options {
                quick,
                rounds: args
                    .value("--rounds")
                    .map(|n| n.parse().expect("--rounds N")),
                pins,
                // `--transports a,b,..`: only these (e.g. the segpool rows
                // and the anchor, for a before/after run with many rounds).
                transports: args
                    .value("--transports")
                    .map(|l| l.split(',').map(Transport::parse).collect()),
                // `--sizes 64,4096,..`: only these payload sizes, in bytes.
                sizes: args.value("--sizes").map(|l| {
                    l.split(',')
                        .map(|n| n.parse().expect("--sizes: bytes"))
                        .collect()
                }),
                out: args.value("--out").map(PathBuf::from),
            })
        }
    }
}

/// Builds the runners of `pins`. Without them the "before" rows cannot
/// run: `required` stops the run, else it goes on without them.
fn build_pins(pins: &[Pin], required: bool) -> Vec<Built> {
    if pins.is_empty() {
        return Vec::new();
    }
    match pinned::build(pins) {
        Ok(b) => b,
        Err(e) if required => {
            eprintln!("error: the pinned old versions are needed for this run: {e}");
            eprintln!("(pass --pinned none to leave their rows out)");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("warning: no pinned old versions in this run: {e}");
            Vec::new()
        }
    }
}

/// `transport fastpath ...`: prints issue 17's table.
fn fastpath(args: &Args) {
    let before = args.pins("--before", &[BEFORE]);
    let rounds = args
        .value("--rounds")
        .map_or(10, |n| n.parse().expect("--rounds N"));
    let ms = args
        .value("--ms")
        .map_or(300, |n| n.parse().expect("--ms MS"));
    let pings = args
        .value("--pings")
        .map_or(200_000, |n| n.parse().expect("--pings N"));
    let built = build_pins(&before, true);
    let instructions = args.value("--instructions").map(|v| {
        let (b, a) = v.split_once(',').expect("--instructions BEFORE,AFTER");
        (b.parse().expect("a number"), a.parse().expect("a number"))
    });
    let started = Instant::now();
    let table = fastpath::run(
        rounds,
        Duration::from_millis(ms),
        pings,
        built.first(),
        instructions,
    );
    println!(
        "### Fast path against iceoryx2 and the previous version ({}; {} rounds of {} ms per cell, {:.0} s)\n\n{}\n{table}",
        host::stamp(),
        rounds,
        ms,
        started.elapsed().as_secs_f64(),
        host::machine()
    );
}
