//! The models have teeth: built with one injected mistake, loom must fail.
//!
//! Each mutant is a `segpool_mutant = "..."` cfg in the library (one or two
//! lines each, marked "loom-tests mutant"). Build with it and run:
//!
//! `RUSTFLAGS='--cfg loom --cfg segpool_mutant="skip_recheck"' cargo test --release -p segpool-loom-tests --test mutants -- --nocapture`
//!
//! Every model runs against the broken library; the test asserts that the
//! models named for that mutant fail, and fail for the expected reason
//! (loom's deadlock report, or its causality report on a payload cell),
//! not for an unrelated one.
#![cfg(all(
    loom,
    any(
        segpool_mutant = "skip_recheck",
        segpool_mutant = "relaxed_release",
        segpool_mutant = "notify_load",
        segpool_mutant = "no_final_attempt"
    )
))]

use segpool_loom_tests::*;
use std::process::Command;

/// Names the model a re-invoked test binary runs (see [`child`]).
const CHILD_ENV: &str = "SEGPOOL_LOOM_MODEL";

/// Every model, by the name the expectations below use.
const MODELS: &[(&str, fn())] = &[
    ("m1/1", || one_producer_one_consumer(1, 3)),
    ("m1/2", || one_producer_one_consumer(2, 3)),
    ("m2", two_producers_one_segment),
    ("m2b", two_producers_two_segments),
    ("m3", blocked_producer_wakes_on_last_drop),
    ("m4", shutdown_wakes_both_sides),
    ("m5/timer-first", || timed_out_begin_races_reclaim(true)),
    ("m5/reclaim-first", || timed_out_begin_races_reclaim(false)),
    ("m6", unit_clones_dropped_on_two_threads),
    ("m7", reset_with_stale_view),
    ("m7b", reset_races_a_producer),
    ("m8", recover_races_a_live_claim),
];

/// Loom's report for a model that fails (each mutant expects one of them).
#[allow(dead_code)]
const DEADLOCK: &str = "deadlock";
#[allow(dead_code)]
const RACE: &str = "Causality violation";

/// Runs every model against this build and returns `(name, output)` for
/// each one loom failed. Each model runs in a child process (this test
/// binary again, running [`child`]): a failure found while a guard is
/// being dropped may abort the process instead of unwinding, and the
/// report must survive that.
fn failures() -> Vec<(&'static str, String)> {
    let exe = std::env::current_exe().expect("test binary path");
    let mut failed = Vec::new();
    for &(name, _) in MODELS {
        let out = Command::new(&exe)
            .args([
                "--exact",
                "child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, name)
            .output()
            .expect("re-run the test binary");
        let text = String::from_utf8_lossy(&out.stderr) + String::from_utf8_lossy(&out.stdout);
        if out.status.success() {
            assert!(text.contains("interleavings"), "{name} did not run: {text}");
            eprintln!("mutant missed by {name}");
        } else {
            let first = text
                .lines()
                .find(|l| l.contains(DEADLOCK) || l.contains(RACE) || l.contains("assertion"));
            eprintln!(
                "mutant caught by {name}: {}",
                first.unwrap_or("(no loom report)")
            );
            failed.push((name, text.into_owned()));
        }
    }
    failed
}

/// Runs the model named by `SEGPOOL_LOOM_MODEL`; only [`failures`] runs it.
#[test]
#[ignore = "run by the mutant tests in a child process"]
fn child() {
    let name = std::env::var(CHILD_ENV).expect("SEGPOOL_LOOM_MODEL names a model");
    let &(name, model) = MODELS
        .iter()
        .find(|(n, _)| *n == name)
        .expect("a known model");
    check(name, model);
}

/// Asserts that each model in `expect` failed with output containing its
/// substring (other models may fail too; they are printed).
fn assert_caught(expect: &[(&str, &str)]) {
    let failed = failures();
    for &(name, why) in expect {
        match failed.iter().find(|(n, _)| *n == name) {
            Some((_, out)) => assert!(
                out.contains(why),
                "{name} failed, but not with {why:?}:\n{out}"
            ),
            None => panic!("{name} passed against the mutant: the model has no teeth"),
        }
    }
}

/// The models with a blocking wait that a lost wake-up leaves asleep.
#[allow(dead_code)]
const WAITING: &[&str] = &[
    "m1/1",
    "m1/2",
    "m2",
    "m2b",
    "m3",
    "m4",
    "m5/timer-first",
    "m5/reclaim-first",
    "m6",
    "m7",
];

#[test]
#[cfg(segpool_mutant = "skip_recheck")]
fn sleeping_without_the_recheck_loses_a_wakeup() {
    let expect: Vec<_> = WAITING.iter().map(|&m| (m, DEADLOCK)).collect();
    assert_caught(&expect);
}

#[test]
#[cfg(segpool_mutant = "relaxed_release")]
fn a_relaxed_bitmap_release_races_the_next_writer() {
    assert_caught(&[
        ("m1/1", RACE),
        ("m1/2", RACE),
        ("m2", RACE),
        ("m2b", RACE),
        ("m3", RACE),
        ("m5/timer-first", RACE),
        ("m5/reclaim-first", RACE),
        ("m6", "counted before the segment is free"),
        ("m7", RACE),
    ]);
}

#[test]
#[cfg(segpool_mutant = "notify_load")]
fn a_notify_without_sequence_bump_loses_a_wakeup() {
    let expect: Vec<_> = WAITING.iter().map(|&m| (m, DEADLOCK)).collect();
    assert_caught(&expect);
}

#[test]
#[cfg(segpool_mutant = "no_final_attempt")]
fn a_timeout_that_swallows_a_wakeup_strands_the_sleeper() {
    assert_caught(&[("m5/timer-first", DEADLOCK), ("m5/reclaim-first", DEADLOCK)]);
}
