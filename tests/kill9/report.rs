//! The figures of one run, and the table they print as.

use crate::config::Config;
use segpool::Stats;
use std::collections::BTreeMap;
use std::time::Duration;

/// Kills per (role, phase) and per sender.
pub type KillTable = BTreeMap<(&'static str, &'static str), [u64; 3]>;

/// The figures of one run.
#[derive(Debug, Default)]
pub struct Report {
    /// Random kills made (orchestrator's and self-armed).
    pub kills: u64,
    /// Kills of the children left at the end (also random points).
    pub teardown_kills: u64,
    /// Kills by role and phase: [orchestrator, self-armed, teardown].
    pub table: KillTable,
    /// What the orchestrator's `recover_dead` right after each death found:
    /// uncommitted segments freed / views of a dead consumer freed (one
    /// figure), committed units handed on, deaths that left nothing.
    pub recovered_freed: u64,
    /// Committed units of dead producers that recovery left to be delivered.
    pub recovered_delivered: u64,
    /// Deaths after which the orchestrator found nothing to recover.
    pub recovered_nothing: u64,
    /// Longest `recover_dead` call after a death.
    pub max_recovery: Duration,
    /// Total time in those calls.
    pub total_recovery: Duration,
    /// Units reported committed by producers.
    pub committed: u64,
    /// Units delivered (verified) to a consumer.
    pub delivered: u64,
    /// Units published, per the pool.
    pub published: u64,
    /// Delivered units whose producer died between commit and report.
    pub committed_unreported: u64,
    /// Tickets a consumer took and died before reporting (allowed, one per
    /// consumer death).
    pub taken_by_killed_consumer: u64,
    /// Committed units never delivered, beyond what consumer deaths explain.
    pub lost: u64,
    /// Units or tickets delivered twice.
    pub duplicated: u64,
    /// Tickets or per-producer sequence numbers out of order.
    pub out_of_order: u64,
    /// Payloads that failed verification.
    pub corrupt: u64,
    /// Segments not free after recovery (`count - stats.free`).
    pub unaccounted: usize,
    /// `stats()` after recovery and the final drain.
    pub final_stats: Stats,
    /// Everything that went wrong; empty on success.
    pub failures: Vec<String>,
    /// Wall time of the run.
    pub elapsed: Duration,
}

impl Report {
    /// Whether every check passed.
    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }

    /// Kills of `role` in the phases whose description starts with `phase`,
    /// whoever sent them.
    pub fn killed(&self, role: &str, phase: &str) -> u64 {
        self.table
            .iter()
            .filter(|((r, p), _)| *r == role && p.starts_with(phase))
            .map(|(_, n)| n.iter().sum::<u64>())
            .sum()
    }

    /// Prints the figures as a table.
    pub fn print(&self, cfg: &Config) {
        println!(
            "kill9: {} random SIGKILLs (+{} at teardown) in {:.1} s; pool of {} x {} B, \
             {} producers, 1 consumer holding up to {} views, seed {:#x}",
            self.kills,
            self.teardown_kills,
            self.elapsed.as_secs_f64(),
            cfg.segments,
            cfg.segment_size,
            cfg.producers,
            cfg.max_held,
            cfg.seed
        );
        println!();
        println!(
            "  {:<9} {:<28} {:>12} {:>10} {:>9}",
            "killed", "where", "orchestrator", "self-timer", "teardown"
        );
        for ((role, phase), n) in &self.table {
            println!(
                "  {role:<9} {phase:<28} {:>12} {:>10} {:>9}",
                n[0], n[1], n[2]
            );
        }
        let sum = |i: usize| self.table.values().map(|n| n[i]).sum::<u64>();
        println!(
            "  {:<9} {:<28} {:>12} {:>10} {:>9}",
            "total",
            "",
            sum(0),
            sum(1),
            sum(2)
        );
        println!();
        let s = &self.final_stats;
        let rows: [(&str, String); 16] = [
            ("units committed (reported)", self.committed.to_string()),
            ("units delivered and verified", self.delivered.to_string()),
            ("units published (pool)", self.published.to_string()),
            (
                "committed, producer killed before reporting",
                self.committed_unreported.to_string(),
            ),
            (
                "taken by a consumer killed before reporting",
                self.taken_by_killed_consumer.to_string(),
            ),
            ("lost", self.lost.to_string()),
            ("duplicated", self.duplicated.to_string()),
            ("out of order", self.out_of_order.to_string()),
            ("corrupt payloads", self.corrupt.to_string()),
            (
                "recovery: segments freed / committed units handed on / nothing",
                format!(
                    "{} / {} / {}",
                    self.recovered_freed, self.recovered_delivered, self.recovered_nothing
                ),
            ),
            (
                "recover_dead after a death: max / mean",
                format!(
                    "{:.1} us / {:.1} us",
                    self.max_recovery.as_secs_f64() * 1e6,
                    self.total_recovery.as_secs_f64() * 1e6
                        / (self.kills + self.teardown_kills).max(1) as f64
                ),
            ),
            (
                "segments unaccounted after recovery",
                self.unaccounted.to_string(),
            ),
            (
                "final stats: free / writing / queued / held",
                format!("{} / {} / {} / {}", s.free, s.writing, s.queued, s.held),
            ),
            (
                "final stats: waiting producers / consumers",
                format!("{} / {}", s.waiting_producers, s.waiting_consumers),
            ),
            ("final stats: participants", s.participants.to_string()),
            (
                "final stats: published / reclaimed",
                format!("{} / {}", s.published, s.reclaimed),
            ),
        ];
        for (k, v) in rows {
            println!("  {k:<64} {v}");
        }
        println!();
        if self.ok() {
            println!("kill9: PASS");
        } else {
            println!("kill9: FAIL");
            for f in &self.failures {
                println!("  - {f}");
            }
        }
    }
}
