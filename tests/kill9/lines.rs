//! What children tell the orchestrator: one line on stdout per event,
//! written in one `write(2)` (stdout is line-buffered), tagged so that the
//! test harness's own output on the same stream is told apart.

use std::io::Write;

/// Prefix of every report line (a test binary prints other lines too).
const TAG: &str = "K9";

/// One event a child reports.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// Producer: `commit_unit` of its unit `seq` returned `Ok`.
    Committed { seq: u64 },
    /// Consumer: the unit under `ticket` verified; its header named
    /// producer slot `slot`, incarnation `inc`, sequence number `seq`.
    Delivered {
        ticket: u64,
        slot: u32,
        inc: u32,
        seq: u64,
    },
    /// Consumer: the unit under `ticket` failed verification.
    Corrupt { ticket: u64, why: String },
}

impl Line {
    /// Writes the line on stdout.
    pub fn send(&self) -> Result<(), String> {
        let mut out = std::io::stdout().lock();
        match self {
            Line::Committed { seq } => writeln!(out, "{TAG} C {seq}"),
            Line::Delivered {
                ticket,
                slot,
                inc,
                seq,
            } => writeln!(out, "{TAG} D {ticket} {slot} {inc} {seq}"),
            Line::Corrupt { ticket, why } => writeln!(out, "{TAG} X {ticket} {why}"),
        }
        .map_err(|e| format!("report: {e}"))
    }

    /// Reads a report: `None` for a line that is not one (the test
    /// harness's own output), `Some(Err(text))` for one that cannot be read.
    pub fn parse(line: &str) -> Option<Result<Line, &str>> {
        // A test binary's harness may print before us on the same line.
        let at = line.find(&format!("{TAG} "))?;
        let w: Vec<&str> = line[at + TAG.len() + 1..].split_whitespace().collect();
        let num = |i: usize| w.get(i).and_then(|s| s.parse::<u64>().ok());
        let parsed = match (w.first().copied(), w.len()) {
            (Some("C"), _) => num(1).map(|seq| Line::Committed { seq }),
            (Some("D"), 5) => match (num(1), num(2), num(3), num(4)) {
                (Some(ticket), Some(slot), Some(inc), Some(seq)) => Some(Line::Delivered {
                    ticket,
                    slot: slot as u32,
                    inc: inc as u32,
                    seq,
                }),
                _ => None,
            },
            (Some("X"), _) => num(1).map(|ticket| Line::Corrupt {
                ticket,
                why: w[2..].join(" "),
            }),
            _ => None,
        };
        Some(parsed.ok_or(line))
    }
}
