//! The models have teeth: built with one injected mistake, loom must fail.
//!
//! Each mutant is a `segpool_mutant = "..."` cfg in the library (one to
//! three lines each, marked "loom-tests mutant"). Build with it and run:
//!
//! `RUSTFLAGS='--cfg loom --cfg segpool_mutant="skip_recheck"' CARGO_TARGET_DIR=target/loom-skip_recheck cargo test --release -p segpool-loom-tests --test mutants -- --nocapture`
//!
//! The models named for that mutant run against the broken library (the
//! others are not run, to keep each mutant to a minute or two); the test
//! asserts that every one of them fails, and fails for the expected reason
//! (loom's deadlock report, its causality report on a payload cell, or the
//! model's own assertion message), not for an unrelated one.
#![cfg(all(
    loom,
    any(
        segpool_mutant = "skip_recheck",
        segpool_mutant = "relaxed_release",
        segpool_mutant = "notify_load",
        segpool_mutant = "no_final_attempt",
        segpool_mutant = "recover_ignores_ring",
        segpool_mutant = "stale_slot_taken",
        segpool_mutant = "flag_ignored",
        segpool_mutant = "recover_unturned",
        segpool_mutant = "leave_any_incarnation",
        segpool_mutant = "alive_unchecked"
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
    ("m5b", timed_begin_sees_a_reclaim_before_its_deadline),
    ("m6", unit_clones_dropped_on_two_threads),
    ("m7", reset_with_stale_view),
    ("m7b", reset_races_a_producer),
    ("m8", recover_races_a_live_claim),
    ("m9/uncommitted", || recover_dead_producer_races_take(false)),
    ("m9/committed", || recover_dead_producer_races_take(true)),
    ("m10", scrub_races_a_claim),
    ("m11", stale_slot_after_a_dead_consumer),
    ("m12", dead_waiter_leaves_a_flag),
    ("m13", two_recoverers_race),
    ("m14", recovery_is_exclusive_within_a_process),
    ("m15", a_wrongly_recovered_participant_stops),
];

/// Loom's reports for a model that fails.
#[allow(dead_code)]
const DEADLOCK: &str = "deadlock";
#[allow(dead_code)]
const RACE: &str = "Causality violation";

/// Runs the model `name` against this build in a child process (this test
/// binary again, running [`child`]): a failure found while a guard is
/// being dropped may abort the process instead of unwinding, and the
/// report must survive that. Returns the output if loom failed it.
fn run_child(name: &str) -> Option<String> {
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = Command::new(&exe);
    cmd.args([
        "--exact",
        "child",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, name);
    // m14's bad interleaving needs one preemption, but loom's bounded
    // search only reaches it at bound 3 (about 3 minutes).
    if name == "m14" {
        cmd.env("LOOM_MAX_PREEMPTIONS", "3");
    }
    let out = cmd.output().expect("re-run the test binary");
    let text = String::from_utf8_lossy(&out.stderr) + String::from_utf8_lossy(&out.stdout);
    if out.status.success() {
        assert!(text.contains("interleavings"), "{name} did not run: {text}");
        eprintln!("mutant missed by {name}");
        return None;
    }
    // Loom's own report, else the line after the first panic location
    // (the model's assertion message).
    let lines: Vec<&str> = text.lines().collect();
    let first = lines
        .iter()
        .position(|l| l.contains(DEADLOCK) || l.contains(RACE))
        .or_else(|| {
            lines
                .iter()
                .position(|l| l.contains("panicked at"))
                .map(|i| (i + 1).min(lines.len() - 1))
        })
        .map(|i| lines[i]);
    eprintln!(
        "mutant caught by {name}: {}",
        first.unwrap_or("(no report)")
    );
    Some(text.into_owned())
}

/// Runs the model named by `SEGPOOL_LOOM_MODEL`; only [`run_child`] runs it.
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

/// Runs each model in `expect` and asserts that it failed with output
/// containing its substring.
fn assert_caught(expect: &[(&str, &str)]) {
    for &(name, why) in expect {
        assert!(
            MODELS.iter().any(|(n, _)| *n == name),
            "unknown model {name}"
        );
        match run_child(name) {
            Some(out) => assert!(
                out.contains(why),
                "{name} failed, but not with {why:?}:\n{out}"
            ),
            None => panic!("{name} passed against the mutant: the model has no teeth"),
        }
    }
}

#[test]
#[cfg(segpool_mutant = "skip_recheck")]
fn sleeping_without_the_recheck_loses_a_wakeup() {
    assert_caught(&[
        ("m1/1", DEADLOCK),
        ("m3", DEADLOCK),
        ("m4", DEADLOCK),
        ("m5/reclaim-first", DEADLOCK),
        ("m6", DEADLOCK),
        ("m7", DEADLOCK),
        ("m12", DEADLOCK),
    ]);
}

#[test]
#[cfg(segpool_mutant = "notify_load")]
fn a_notify_without_sequence_bump_loses_a_wakeup() {
    assert_caught(&[
        ("m1/1", DEADLOCK),
        ("m3", DEADLOCK),
        ("m4", DEADLOCK),
        ("m5/reclaim-first", DEADLOCK),
        ("m6", DEADLOCK),
        ("m7", DEADLOCK),
        ("m12", DEADLOCK),
    ]);
}

#[test]
#[cfg(segpool_mutant = "no_final_attempt")]
fn a_timeout_that_swallows_a_wakeup_misses_the_segment() {
    assert_caught(&[("m5b", "came back before its deadline")]);
}

/// What a claimer does when the release it acquired through the bitmap did
/// not also carry the FREE descriptor: its Relaxed descriptor load sees the
/// segment still owned, and it leaves its bit set over a FREE descriptor.
#[allow(dead_code)]
const LEAK: &str = "the index leaks none";

#[test]
#[cfg(segpool_mutant = "relaxed_release")]
fn a_relaxed_release_races_the_next_writer() {
    // Bytes unordered (causality), or the next claimer misses the FREE
    // state and the segment is lost to the index: a producer sleeps for it
    // forever (deadlock) or the pool ends with it unclaimable (LEAK).
    assert_caught(&[
        ("m1/1", RACE),
        ("m3", DEADLOCK),
        ("m5/reclaim-first", DEADLOCK),
        ("m6", DEADLOCK),
        ("m7", LEAK),
        ("m8", DEADLOCK),
        ("m10", LEAK),
    ]);
}

#[test]
#[cfg(segpool_mutant = "recover_ignores_ring")]
fn recovery_that_ignores_the_ring_frees_committed_units() {
    assert_caught(&[
        ("m9/committed", "recovery freed a committed unit"),
        ("m13", "each segment once"),
    ]);
}

#[test]
#[cfg(segpool_mutant = "stale_slot_taken")]
fn a_stale_slot_taken_as_live_delivers_the_wrong_unit() {
    assert_caught(&[("m11", "the stale slot stepped over")]);
}

#[test]
#[cfg(segpool_mutant = "flag_ignored")]
fn a_release_that_ignores_the_flag_strands_the_sleeper() {
    assert_caught(&[
        ("m3", DEADLOCK),
        ("m5/reclaim-first", DEADLOCK),
        ("m6", DEADLOCK),
        ("m12", DEADLOCK),
    ]);
}

#[test]
#[cfg(segpool_mutant = "recover_unturned")]
fn two_threads_of_one_process_recovering_at_once_recover_a_live_newcomer() {
    assert_caught(&[("m14", "Recovered { participants: 2")]);
}

#[test]
#[cfg(segpool_mutant = "leave_any_incarnation")]
fn a_leave_of_an_old_incarnation_frees_the_newcomers_segments() {
    assert_caught(&[("m15", "A's leave freed B's")]);
}

#[test]
#[cfg(segpool_mutant = "alive_unchecked")]
fn a_wrongly_recovered_participant_that_does_not_check_goes_on_quietly() {
    assert_caught(&[("m15", "A's commit")]);
}
