//! The kill -9 harness (`examples/kill9.rs`), a bounded sample for CI:
//! a few hundred random `SIGKILL`s of producers (mid-write, committing,
//! asleep in `begin_unit`) and of a consumer holding views, then every
//! committed unit must have arrived once and intact, and every segment must
//! be back. `cargo run --release --example kill9` is the long run.
//!
//! The test binary is its own child: the harness re-executes it with the
//! role in `SEGPOOL_KILL9_ROLE`, running only the `child` test.

#[allow(dead_code)]
#[path = "../examples/kill9.rs"]
mod kill9;

use std::process::Command;

/// Not a test of its own: the body of every child process.
#[test]
fn child() {
    if let Some(code) = kill9::child_from_env() {
        std::process::exit(code);
    }
}

#[test]
fn random_kill_dash_nine_loses_nothing_and_every_segment_comes_back() {
    if kill9::is_child() {
        return;
    }
    let kills = std::env::var("SEGPOOL_KILL9_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let cfg = kill9::Config {
        kills,
        seed: 0x6b69_6c6c_0000_0ce1,
        ..kill9::Config::default()
    };
    let exe = std::env::current_exe().unwrap();
    let report = kill9::run(&cfg, &|| {
        let mut cmd = Command::new(&exe);
        cmd.args(["--exact", "child", "--nocapture", "--test-threads=1", "-q"]);
        cmd
    })
    .expect("the harness starts");
    report.print(&cfg);
    assert!(
        report.ok(),
        "kill -9 harness failed: {:#?}",
        report.failures
    );
    assert!(report.kills >= kills);
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
    let killed = |role: &str, phase: &str| {
        report
            .table
            .iter()
            .filter(|((r, p), _)| r == role && p.starts_with(phase))
            .map(|(_, n)| n.iter().sum::<u64>())
            .sum::<u64>()
    };
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
    assert!(kill9::leftover_shm().is_empty(), "left in /dev/shm");
}
