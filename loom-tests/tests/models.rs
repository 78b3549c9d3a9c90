//! The loom models, one test each (names follow `docs/protocol.md`).
//!
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release -p segpool-loom-tests --test models -- --nocapture`
#![cfg(loom)]

use segpool_loom_tests::*;

#[test]
fn m1_one_producer_one_consumer_one_segment() {
    check("m1 spsc count=1 units=3", || {
        one_producer_one_consumer(1, 3)
    });
}

#[test]
fn m1_one_producer_one_consumer_two_segments() {
    check("m1 spsc count=2 units=3", || {
        one_producer_one_consumer(2, 3)
    });
}

#[test]
fn m2_two_producers_one_segment() {
    check("m2 two producers count=1", two_producers_one_segment);
}

#[test]
fn m2b_two_producers_two_segments() {
    check("m2b two producers count=2", two_producers_two_segments);
}

#[test]
fn m3_blocked_producer_wakes_on_last_drop() {
    check("m3 blocked producer", blocked_producer_wakes_on_last_drop);
}

#[test]
fn m4_shutdown_wakes_both_sides() {
    check("m4 shutdown", shutdown_wakes_both_sides);
}

#[test]
fn m5_timed_out_begin_races_reclaim_timer_first() {
    check("m5 timeout, timer first", || {
        timed_out_begin_races_reclaim(true)
    });
}

#[test]
fn m5_timed_out_begin_races_reclaim_reclaim_first() {
    check("m5 timeout, reclaim first", || {
        timed_out_begin_races_reclaim(false)
    });
}

#[test]
fn m5b_timed_begin_sees_a_reclaim_before_its_deadline() {
    check(
        "m5b reclaim before the deadline",
        timed_begin_sees_a_reclaim_before_its_deadline,
    );
}

#[test]
fn m6_unit_clones_dropped_on_two_threads() {
    check("m6 unit clones", unit_clones_dropped_on_two_threads);
}

#[test]
fn m7_reset_with_stale_view() {
    check("m7 reset, stale view", reset_with_stale_view);
}

#[test]
fn m7b_reset_races_a_producer() {
    check("m7b reset races a producer", reset_races_a_producer);
}

#[test]
fn m8_recover_races_a_live_claim() {
    check("m8 recover races a live claim", recover_races_a_live_claim);
}

#[test]
fn m9_recover_dead_producer_races_take_uncommitted() {
    check("m9 recover vs take, died before commit", || {
        recover_dead_producer_races_take(false)
    });
}

#[test]
fn m9_recover_dead_producer_races_take_committed() {
    check("m9 recover vs take, died after commit", || {
        recover_dead_producer_races_take(true)
    });
}

#[test]
fn m10_scrub_races_a_claim() {
    check("m10 scrub races a claim", scrub_races_a_claim);
}

#[test]
fn m11_stale_slot_after_a_dead_consumer() {
    check("m11 stale slot", stale_slot_after_a_dead_consumer);
}

#[test]
fn m12_dead_waiter_leaves_a_flag() {
    check("m12 dead waiter", dead_waiter_leaves_a_flag);
}

#[test]
fn m13_two_recoverers_race() {
    check("m13 two recoverers", two_recoverers_race);
}

#[test]
fn m14_recovery_is_exclusive_within_a_process() {
    check(
        "m14 one recoverer per description",
        recovery_is_exclusive_within_a_process,
    );
}

#[test]
fn m15_a_wrongly_recovered_participant_stops() {
    check(
        "m15 wrongly recovered",
        a_wrongly_recovered_participant_stops,
    );
}
