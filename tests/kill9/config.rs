//! What a run does: the orchestrator's flags, and the bounds on every wait.

use crate::board::Board;
use crate::payload::HEADER;
use std::time::Duration;

/// A child that sees neither a unit nor a segment for this long fails.
pub const CHILD_PATIENCE: Duration = Duration::from_secs(30);
/// No unit delivered for this long while the kills go on: a hang.
pub const STALL: Duration = Duration::from_secs(30);
/// The orchestrator's main loop stuck this long: a hang (the watchdog
/// aborts the process rather than block a CI job).
pub const WATCHDOG: Duration = Duration::from_secs(60);

/// What to run.
#[derive(Clone, Debug)]
pub struct Config {
    /// Random kills to make (orchestrator's and self-armed together).
    pub kills: u64,
    /// Producer processes.
    pub producers: usize,
    /// Segments in the pool.
    pub segments: usize,
    /// Bytes per segment.
    pub segment_size: usize,
    /// Most views the consumer holds at once.
    pub max_held: usize,
    /// A child arms its self-kill timer with probability 1/n per unit
    /// (0: never).
    pub self_kill_every: u64,
    /// Seed of every random choice (children derive theirs from it).
    pub seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            kills: 10_000,
            producers: 3,
            segments: 8,
            segment_size: 4096,
            max_held: 3,
            self_kill_every: 40,
            seed: 0x6b69_6c6c_2d39_0001,
        }
    }
}

const USAGE: &str = "flags: [--kills N] [--producers N] [--segments N] [--size BYTES] \
                     [--held N] [--self-kill-every N (0: off)] [--seed N]";

/// Parses the orchestrator's flags (defaults: [`Config::default`]).
pub fn parse_args(args: impl Iterator<Item = String>) -> Result<Config, String> {
    let mut c = Config::default();
    let mut it = args;
    while let Some(flag) = it.next() {
        let mut value = || -> Result<u64, String> {
            let v = it.next().ok_or(format!("{flag} needs a value"))?;
            v.parse().map_err(|e| format!("{flag} {v}: {e}"))
        };
        match flag.as_str() {
            "--kills" => c.kills = value()?,
            "--producers" => c.producers = value()? as usize,
            "--segments" => c.segments = value()? as usize,
            "--size" => c.segment_size = value()? as usize,
            "--held" => c.max_held = value()? as usize,
            "--self-kill-every" => c.self_kill_every = value()?,
            "--seed" => c.seed = value()?,
            "-h" | "--help" => return Err(USAGE.into()),
            f => return Err(format!("unknown flag {f}\n{USAGE}")),
        }
    }
    // The consumer and the recoverer take the two slots after the producers.
    if c.producers == 0 || c.producers + 1 >= Board::SLOTS {
        return Err(format!("--producers must be 1..{}", Board::SLOTS - 2));
    }
    if c.segment_size <= HEADER {
        return Err(format!("--size must exceed the {HEADER}-byte header"));
    }
    if c.max_held >= c.segments {
        return Err("--held must leave producers a segment".into());
    }
    Ok(c)
}
