//! `segpool`: find, inspect and watch live segpool pools from outside the
//! processes that use them.
//!
//! Read-only by construction: pools are opened `O_RDONLY`, only their
//! control area is mapped, `PROT_READ`, through `segpool::inspect`, the one
//! module that knows the layout. Attaching leaves no trace in the pool.

mod discover;
mod report;
mod target;
mod top;

use clap::{Parser, Subcommand};
use report::{LsJson, PoolReport, SCHEMA, Skipped, StatJson};
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;
use target::Target;

/// Find, inspect and watch live segpool pools (read-only).
///
/// TARGET names one pool: a PID (the pool that process holds), PID:FD (the
/// pool at that fd of that process), or a shm name (segpool-123-9f86...,
/// /segpool-123-9f86... or /dev/shm/segpool-123-9f86...). `segpool ls`
/// prints a TARGET for every pool it finds.
///
/// Exit status: 0 on success, 1 on any error (no such process or pool,
/// permission denied, a corrupt or foreign object), 2 on bad usage.
#[derive(Parser, Debug)]
#[command(name = "segpool", version, max_term_width = 100)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List every pool you can see: memfd pools held by your processes and
    /// named pools in /dev/shm, with the processes that hold each.
    Ls {
        /// Print JSON (schema in cli/README.md) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one snapshot of a pool: geometry, counters, segments per phase,
    /// waiters, generation, shutdown, the participants (alive or dead, with
    /// the segments each owns), what recovery took back, and a diagnosis.
    Stat {
        /// PID, PID:FD or shm name.
        target: String,
        /// Print JSON (schema in cli/README.md).
        #[arg(long)]
        json: bool,
    },
    /// Watch a pool live: rates, one bar per phase, waiters, the
    /// bottleneck and the participants. `q` quits. On a non-terminal stdout it prints one line
    /// per refresh.
    Top {
        /// PID, PID:FD or shm name.
        target: String,
        /// Seconds between refreshes.
        #[arg(short, long, default_value_t = 0.5, value_parser = parse_interval)]
        interval: f64,
        /// Stop after this many refreshes.
        #[arg(short = 'n', long)]
        iterations: Option<u64>,
        /// One JSON object per refresh (implies line mode).
        #[arg(long)]
        json: bool,
    },
}

fn parse_interval(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.01..=3600.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "{s:?} is not a number of seconds between 0.01 and 3600"
        )),
    }
}

/// An error for the user: printed as `segpool: MESSAGE`, exit status 1.
#[derive(Debug)]
pub struct CliError(pub String);

/// A remark on stderr that does not change the exit status.
pub fn note(msg: &str) {
    eprintln!("segpool: note: {msg}");
}

/// Writes to stdout; a closed pipe (`segpool ls | head`) is not an error.
pub fn emit(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CliError(format!("writing to stdout: {e}"))),
    }
}

fn json<T: serde::Serialize>(value: &T) -> Result<String, CliError> {
    serde_json::to_string_pretty(value)
        .map(|s| s + "\n")
        .map_err(|e| CliError(format!("encoding JSON: {e}")))
}

fn ls(as_json: bool) -> Result<(), CliError> {
    let scan = discover::scan();
    let mut pools = Vec::new();
    let mut skipped = Vec::new();
    for found in &scan.pools {
        let mut last_err = None;
        let mut report = None;
        // Any path will do; one may vanish (a holder exits) while we look.
        for path in found.paths() {
            let opened = segpool::inspect::Inspector::open_path(&path)
                .and_then(|insp| Ok((insp.snapshot()?, path.clone())));
            match opened {
                Ok((snap, path)) => {
                    report = Some(PoolReport::new(
                        found.target(),
                        path.display().to_string(),
                        found.kind,
                        found.name.clone(),
                        &found.holders,
                        &snap,
                    ));
                    break;
                }
                Err(e) => last_err = Some(target::open_error(&path, e).0),
            }
        }
        match (report, last_err) {
            (Some(r), _) => pools.push(r),
            (None, Some(error)) => skipped.push(Skipped {
                target: found.target(),
                error,
            }),
            (None, None) => {} // no path left: every holder exited
        }
    }
    if as_json {
        emit(&json(&LsJson {
            schema: SCHEMA,
            pools: &pools,
            skipped: &skipped,
        })?)?;
    } else if pools.is_empty() {
        emit("no segpool pools found\n")?;
    } else {
        emit(&report::ls_table(&pools))?;
    }
    for s in &skipped {
        note(&format!("skipped {}: {}", s.target, s.error));
    }
    if scan.unsearchable > 0 {
        note(&format!(
            "{} processes of other users were not searched (their /proc/PID/fd is not \
             readable); run as root to see their pools",
            scan.unsearchable
        ));
    }
    Ok(())
}

fn stat(target: &str, as_json: bool) -> Result<(), CliError> {
    let opened = target::open(&Target::parse(target)?)?;
    let snap = opened
        .inspector
        .snapshot()
        .map_err(|e| target::open_error(&opened.path, e))?;
    let holders = discover::find(opened.id)
        .map(|f| f.holders)
        .unwrap_or_default();
    let report = PoolReport::new(
        opened.label.clone(),
        opened.path.display().to_string(),
        opened.kind,
        opened.name.clone(),
        &holders,
        &snap,
    );
    if as_json {
        emit(&json(&StatJson {
            schema: SCHEMA,
            pool: &report,
        })?)
    } else {
        emit(&report.text())
    }
}

fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Ls { json } => ls(json),
        Command::Stat { target, json } => stat(&target, json),
        Command::Top {
            target,
            interval,
            iterations,
            json,
        } => {
            let opened = target::open(&Target::parse(&target)?)?;
            top::run(
                opened,
                top::Options {
                    interval: Duration::from_secs_f64(interval),
                    iterations,
                    json,
                },
            )
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError(msg)) => {
            eprintln!("segpool: error: {msg}");
            ExitCode::FAILURE
        }
    }
}
