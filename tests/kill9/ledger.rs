//! The ledger: what the children reported, checked as it comes in.

use crate::child::Role;
use crate::lines::Line;
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

/// The reports so far, and what they already showed wrong.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Producer incarnation -> units it reported committed (seqs `0..n`).
    pub committed: HashMap<u32, u64>,
    /// Producer incarnation -> its slot.
    pub slot_of: HashMap<u32, u32>,
    /// (incarnation, seq) -> ticket it was delivered under.
    pub delivered: HashMap<(u32, u64), u64>,
    /// Tickets delivered, in delivery order (strictly increasing if sound).
    pub tickets: Vec<u64>,
    /// Per producer incarnation, the last seq delivered.
    last_seq: HashMap<u32, u64>,
    /// Tickets a consumer death may have swallowed (one per death).
    pub allowed_gaps: Vec<u64>,
    /// The next ticket a new consumer takes first: one past the last
    /// ticket delivered or allowed to be missing.
    frontier: u64,
    pub duplicated: u64,
    pub out_of_order: u64,
    pub corrupt: u64,
    /// What went wrong (the first 50).
    pub problems: Vec<String>,
}

impl Ledger {
    fn problem(&mut self, p: String) {
        if self.problems.len() < 50 {
            self.problems.push(p);
        }
    }

    fn committed(&mut self, inc: u32, seq: u64) {
        let n = self.committed.insert(inc, seq + 1).unwrap_or(0);
        if seq != n {
            self.problem(format!("producer {inc} reported seq {seq} after {n} units"));
        }
    }

    /// The unit `(inc, seq)` of slot `slot` was delivered under `ticket`.
    pub fn delivered(&mut self, ticket: u64, slot: u32, inc: u32, seq: u64) {
        if let Some(&last) = self.tickets.last() {
            if ticket <= last {
                self.out_of_order += 1;
                self.problem(format!("ticket {ticket} delivered after ticket {last}"));
            }
        }
        self.tickets.push(ticket);
        self.frontier = self.frontier.max(ticket + 1);
        if self.slot_of.get(&inc) != Some(&slot) {
            self.problem(format!(
                "unit ({inc}, {seq}) names slot {slot}, but no producer incarnation {inc} ran there"
            ));
        }
        if let Some(t) = self.delivered.insert((inc, seq), ticket) {
            self.duplicated += 1;
            self.problem(format!(
                "unit ({inc}, {seq}) delivered twice: tickets {t} and {ticket}"
            ));
        }
        if let Some(&last) = self.last_seq.get(&inc) {
            if seq <= last {
                self.out_of_order += 1;
                self.problem(format!("producer {inc}: seq {seq} after seq {last}"));
            }
        }
        self.last_seq.insert(inc, seq);
    }

    /// The unit under `ticket` failed verification.
    pub fn corrupt(&mut self, ticket: u64, why: &str) {
        self.corrupt += 1;
        self.tickets.push(ticket);
        self.frontier = self.frontier.max(ticket + 1);
        self.problem(format!("ticket {ticket} corrupt: {why}"));
    }

    /// A consumer died: the one ticket it may have taken without reporting
    /// is the frontier (consumers take tickets in order, one at a time, and
    /// report each before taking the next; a stale slot that an earlier
    /// death left is stepped over, hence the frontier counts allowed gaps).
    pub fn consumer_died(&mut self) {
        self.allowed_gaps.push(self.frontier);
        self.frontier += 1;
    }

    /// Settles one line of child `(role, inc)`'s stdout.
    pub fn line(&mut self, role: Role, inc: u32, line: &str) {
        let Some(report) = Line::parse(line) else {
            return; // the test harness's own output
        };
        match (role, report) {
            (Role::Producer(_), Ok(Line::Committed { seq })) => self.committed(inc, seq),
            (
                Role::Consumer,
                Ok(Line::Delivered {
                    ticket,
                    slot,
                    inc,
                    seq,
                }),
            ) => self.delivered(ticket, slot, inc, seq),
            (Role::Consumer, Ok(Line::Corrupt { ticket, why })) => self.corrupt(ticket, &why),
            _ => self.problem(format!("unreadable report from {role:?} {inc}: {line:?}")),
        }
    }
}

/// Locks the ledger, whether or not a reader thread panicked holding it.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
