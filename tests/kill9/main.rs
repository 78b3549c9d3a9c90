//! The kill -9 harness: proves that a process killed at any instruction
//! loses no committed unit and that every segment it owned comes back.
//!
//! ```text
//! cargo test --release --test kill9                            # CI's sample: 400 kills
//! cargo test --release --test kill9 -- --ignored --nocapture   # the long run: 10,000
//! SEGPOOL_KILL9="--kills 1000 --seed 7" cargo test --release --test kill9 -- --ignored --nocapture
//! ```
//!
//! One binary, four roles. The *orchestrator* ([`orchestrator`]) creates a
//! small pool, so producers often sleep in `begin_unit`, and starts this
//! test binary again as producer processes, one consumer process and one
//! *recoverer* process that runs `recover_dead` in a loop ([`roles`]), so
//! that kills also land in the middle of a recovery. Producers and the
//! consumer that sleep run the death watcher of liveness v3, which recovers
//! too, so kills land in their recoveries as well. The orchestrator kills a
//! random child after a random delay (0 to 3 ms, from three bands so that
//! short and long lives both occur), reaps it, runs `recover_dead`, and
//! starts a new incarnation in its place. Children also arm a one-shot
//! POSIX timer ([`tripwire`]) that delivers `SIGKILL` to themselves a few
//! microseconds later, at chosen points (before `begin_unit`, mid-write,
//! right before `commit_unit`, before `recv`, before dropping a view):
//! those land inside the protocol's own steps, where a kill from outside
//! rarely does. Both kinds count towards `--kills`.
//!
//! Units carry a header that names them and a body only that name
//! determines ([`payload`]); children report what they committed and what
//! they received on stdout ([`lines`]); each stores its current phase on a
//! shared *phase board* ([`board`]) before each step, so the orchestrator
//! can tell where each death landed. The orchestrator settles the reports
//! as they come ([`ledger`]), and after the last kill checks the pool and
//! the ledger ([`check`]) and prints the figures ([`report`]).
//!
//! The modules import downwards only, each from those below it:
//!
//! | module | its one job | imports |
//! | --- | --- | --- |
//! | `orchestrator` | spawn, kill, recover, respawn; drain at the end | `check`, `ledger`, `child`, `report`, `config`, `board`, `payload`, `rng` |
//! | `check` | the checks after the last kill | `ledger`, `report`, `config` |
//! | `report` | the figures of a run, printed as a table | `config` |
//! | `ledger` | the children's reports, settled as they come | `child`, `lines` |
//! | `child` | a child's role, its spec in the environment, its entry | `roles` |
//! | `roles` | producer, consumer, recoverer | `config`, `board`, `tripwire`, `payload`, `lines`, `rng` |
//! | `config` | the flags, and the bounds on every wait | `board`, `payload` |
//! | `tripwire` | the self-kill timer | `rng` |
//! | `payload` | the unit format and its byte-for-byte check | `rng`, `common` |
//! | `board` | the phase board | |
//! | `lines` | the report lines children write | |
//! | `rng` | a replayable generator, random pauses | |
//!
//! `common` is `tests/common`, the helpers every test shares.
//!
//! The test binary is its own child: the orchestrator re-executes it with
//! the role in [`child::ROLE_ENV`], running only the `child` test.

#[path = "../common/mod.rs"]
mod common;

mod board;
mod check;
mod child;
mod config;
mod ledger;
mod lines;
mod orchestrator;
mod payload;
mod report;
mod rng;
mod roles;
mod tripwire;

use config::Config;
use report::Report;
use std::process::Command;

/// Not a test of its own: the body of every child process.
#[test]
fn child() {
    if let Some(code) = child::run_from_env() {
        std::process::exit(code);
    }
}

/// Runs the harness with this test binary as the children, prints the
/// figures, and checks what every run must show.
fn run_and_check(cfg: &Config) -> Report {
    let exe = std::env::current_exe().unwrap();
    let report = orchestrator::run(cfg, &|| {
        let mut cmd = Command::new(&exe);
        cmd.args(["--exact", "child", "--nocapture", "--test-threads=1", "-q"]);
        cmd
    })
    .expect("the harness starts");
    report.print(cfg);
    assert!(
        report.ok(),
        "kill -9 harness failed: {:#?}",
        report.failures
    );
    assert!(report.kills >= cfg.kills);
    assert!(common::leftover_shm().is_empty(), "left in /dev/shm");
    report
}

/// CI's bounded sample: a few hundred random `SIGKILL`s of producers
/// (mid-write, committing, asleep in `begin_unit`) and of a consumer holding
/// views, then every committed unit must have arrived once and intact, and
/// every segment must be back. `SEGPOOL_KILL9_KILLS` changes the count.
#[test]
fn random_kill_dash_nine_loses_nothing_and_every_segment_comes_back() {
    if child::is_child() {
        return;
    }
    let kills = std::env::var("SEGPOOL_KILL9_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let cfg = Config {
        kills,
        seed: 0x6b69_6c6c_0000_0ce1,
        ..Config::default()
    };
    let report = run_and_check(&cfg);
    // The figures the issue names, each asserted on its own.
    assert_eq!(report.lost, 0, "committed units lost");
    assert_eq!(report.duplicated, 0, "units delivered twice");
    assert_eq!(report.corrupt, 0, "corrupt payloads");
    assert_eq!(report.unaccounted, 0, "segments not back after recovery");
    let s = report.final_stats;
    assert_eq!((s.writing, s.queued, s.held), (0, 0, 0));
    assert_eq!((s.waiting_producers, s.waiting_consumers), (0, 0));
    assert_eq!(s.participants, 1);
    assert_eq!(s.published, s.reclaimed);
    assert!(report.committed > 0 && report.delivered > 0);
    // The sample must reach the places it claims to test.
    let killed = |role: &str, phase: &str| report.killed(role, phase);
    assert!(
        killed("producer", "mid-write") > 0,
        "no producer killed mid-write"
    );
    assert!(
        killed("producer", "in begin_unit") > 0,
        "no producer killed in begin_unit"
    );
    assert!(
        killed("consumer", "holding views") > 0,
        "no consumer killed holding views"
    );
    assert!(report.recovered_freed > 0 && report.recovered_delivered > 0);
}

/// The long run: 10,000 kills by default; the flags in `SEGPOOL_KILL9`
/// (`--kills N --producers N --segments N --size BYTES --held N
/// --self-kill-every N --seed N`) change it. Every check of the harness
/// must pass (the report lists what failed).
#[test]
#[ignore = "the long run (about 70 s): cargo test --release --test kill9 -- --ignored --nocapture"]
fn long_run() {
    if child::is_child() {
        return;
    }
    let flags = std::env::var("SEGPOOL_KILL9").unwrap_or_default();
    let cfg = config::parse_args(flags.split_whitespace().map(String::from))
        .unwrap_or_else(|e| panic!("SEGPOOL_KILL9={flags:?}: {e}"));
    run_and_check(&cfg);
}
