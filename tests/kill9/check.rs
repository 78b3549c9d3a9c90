//! The checks after the last kill, once every child is dead, reaped and
//! recovered, and the ring drained: the pool is whole again, and every
//! committed unit was delivered once.

use crate::config::Config;
use crate::ledger::Ledger;
use crate::report::Report;
use segpool::SegmentPool;
use std::collections::HashSet;

/// `stats()`: every segment free, none writing, queued or held, no waiter
/// counted, one participant, `published == reclaimed`; and all `count`
/// segments can be claimed again.
pub fn pool(pool: &SegmentPool, count: usize, report: &mut Report) {
    let s = pool.stats();
    report.final_stats = s;
    report.published = s.published;
    report.unaccounted = count - s.free.min(count);
    let f = &mut report.failures;
    let mut expect = |what: &str, ok: bool| {
        if !ok {
            f.push(format!("after recovery, {what}: {s:?}"));
        }
    };
    expect("every segment free", s.free == count);
    expect(
        "none writing, queued or held",
        s.writing == 0 && s.queued == 0 && s.held == 0,
    );
    expect(
        "no waiter counted",
        s.waiting_producers == 0 && s.waiting_consumers == 0,
    );
    expect("one participant (the orchestrator)", s.participants == 1);
    // Exact, kill or no kill: each segment counts its own releases in
    // its descriptor, and whoever next sees a release a killed process
    // did not count (the next claimer, a scrub) counts it, once.
    expect("published == reclaimed", s.published == s.reclaimed);
    // The index agrees with the descriptors: every segment can be
    // claimed again, at once.
    let writer = pool.open_writer();
    let mut claimed = Vec::new();
    for _ in 0..count {
        match writer.try_begin_unit() {
            Ok(Some(u)) => claimed.push(u),
            Ok(None) => break,
            Err(e) => {
                f.push(format!("claiming after recovery: {e}"));
                break;
            }
        }
    }
    if claimed.len() != count {
        f.push(format!(
            "only {} of {count} segments could be claimed after recovery",
            claimed.len()
        ));
    }
    drop(claimed); // aborted: back to the pool
    let after = pool.stats();
    if after.free != count || after.published != s.published {
        f.push(format!("aborting the claims changed the pool: {after:?}"));
    }
}

/// Every unit reported committed was delivered, but for one ticket per
/// consumer death, at the place that death allows; a unit delivered but
/// never reported is the next unit of a producer killed between its commit
/// and its report; nothing twice, nothing beyond what was published; and
/// all the kills were made. Needs [`pool`] first (for `published`).
pub fn ledger(l: &Ledger, killed_producers: &HashSet<u32>, cfg: &Config, r: &mut Report) {
    r.committed = l.committed.values().sum();
    r.delivered = l.delivered.len() as u64;
    r.duplicated = l.duplicated;
    r.out_of_order = l.out_of_order;
    r.corrupt = l.corrupt;
    r.failures.extend(l.problems.iter().cloned());
    // Delivered but never reported committed: must be the next unit of
    // a producer killed between its commit and its report.
    for (&(inc, seq), ticket) in &l.delivered {
        let n = l.committed.get(&inc).copied().unwrap_or(0);
        if seq < n {
            continue;
        }
        if seq == n && killed_producers.contains(&inc) {
            r.committed_unreported += 1;
        } else {
            r.failures.push(format!(
                "unit ({inc}, {seq}) (ticket {ticket}) delivered, but its producer \
                 reported only {n} commits"
            ));
        }
    }
    // Tickets: all of 0..published delivered, but for at most one per
    // consumer death, at the place that death allows.
    let seen: HashSet<u64> = l.tickets.iter().copied().collect();
    let allowed: HashSet<u64> = l.allowed_gaps.iter().copied().collect();
    let mut missing_allowed = 0u64;
    for t in 0..r.published {
        if seen.contains(&t) {
            continue;
        }
        if allowed.contains(&t) {
            missing_allowed += 1;
        } else {
            r.failures
                .push(format!("ticket {t} was published and never delivered"));
        }
    }
    if let Some(t) = l.tickets.iter().find(|&&t| t >= r.published) {
        r.failures.push(format!(
            "ticket {t} delivered, beyond the {} published",
            r.published
        ));
    }
    r.taken_by_killed_consumer = missing_allowed;
    // Committed units not delivered: each must be one of those tickets.
    let undelivered: u64 = l
        .committed
        .iter()
        .map(|(&inc, &n)| {
            (0..n)
                .filter(|s| !l.delivered.contains_key(&(inc, *s)))
                .count() as u64
        })
        .sum();
    r.lost = undelivered.saturating_sub(missing_allowed);
    if r.lost > 0 {
        r.failures.push(format!(
            "{undelivered} committed units never delivered; consumer deaths explain {missing_allowed}"
        ));
    }
    if r.kills < cfg.kills {
        r.failures
            .push(format!("only {} of {} kills made", r.kills, cfg.kills));
    }
}
