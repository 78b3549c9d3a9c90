//! What `ls` and `stat` print: one [`PoolReport`] per pool, as text or as
//! the JSON schema documented in `cli/README.md`, and the one-line
//! diagnosis that names the bottleneck.

use crate::discover::{Holder, Kind};
use segpool::Stats;
use segpool::inspect::{Participant, Snapshot};
use serde::Serialize;
use std::fmt::Write as _;

/// The version of the JSON output; bumped on any incompatible change.
pub const SCHEMA: u32 = 1;

/// A process that holds a pool.
#[derive(Serialize, Clone, Debug)]
pub struct Process {
    pub pid: u32,
    pub command: String,
    pub fds: Vec<i32>,
}

impl From<&Holder> for Process {
    fn from(h: &Holder) -> Self {
        Process {
            pid: h.pid,
            command: h.command.clone(),
            fds: h.fds.clone(),
        }
    }
}

/// Segments per phase.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Phases {
    pub free: usize,
    pub writing: usize,
    pub queued: usize,
    pub held: usize,
}

/// Processes asleep on the pool's futex words.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Waiting {
    pub producers: u32,
    pub consumers: u32,
}

/// A process with segments in the writing phase.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriterReport {
    pub pid: u32,
    pub segments: usize,
}

/// A participant, as the pool records it: a process that created or
/// attached the pool, alive or dead (a dead one stays listed, with what it
/// owned, until some process recovers it).
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct ParticipantReport {
    pub index: usize,
    pub pid: u32,
    /// `false`: its liveness lock is gone, so the process is; `None`: the
    /// lock could not be queried.
    pub alive: Option<bool>,
    /// Segments its descriptors name it owner of: writing, committed and
    /// not taken yet, or held as a reader.
    pub segments: usize,
    pub incarnation: u64,
    /// Its threads asleep for space / for data.
    pub waiting: Waiting,
}

impl ParticipantReport {
    pub fn is_dead(&self) -> bool {
        self.alive == Some(false)
    }
}

impl From<&Participant> for ParticipantReport {
    fn from(p: &Participant) -> Self {
        ParticipantReport {
            index: p.index,
            pid: p.pid,
            alive: p.alive,
            segments: p.segments,
            incarnation: p.incarnation,
            waiting: Waiting {
                producers: p.waiting.0,
                consumers: p.waiting.1,
            },
        }
    }
}

/// Every participant of a snapshot.
pub fn participants(snap: &Snapshot) -> Vec<ParticipantReport> {
    snap.participants.iter().map(Into::into).collect()
}

/// What `recover_dead` would do now, in words, for the dead participants
/// that still own segments: `pid 123 dead, holds 2: run recovery, or any
/// blocked call will within 100 ms`. `None` when no dead process owns any.
pub fn dead_holders(ps: &[ParticipantReport]) -> Option<String> {
    let dead: Vec<String> = ps
        .iter()
        .filter(|p| p.is_dead() && p.segments > 0)
        .map(|p| format!("pid {} dead, holds {}", p.pid, p.segments))
        .collect();
    (!dead.is_empty()).then(|| {
        format!(
            "{}: run recovery, or any blocked call will within 1 s",
            dead.join("; ")
        )
    })
}

/// The waiters that are alive: the pool's counts (which include a dead
/// participant's sleepers until it is recovered) less the dead's.
pub fn live_waiting(s: &Stats, ps: &[ParticipantReport]) -> Waiting {
    let (mut producers, mut consumers) = (s.waiting_producers, s.waiting_consumers);
    for p in ps.iter().filter(|p| p.is_dead()) {
        producers = producers.saturating_sub(p.waiting.producers);
        consumers = consumers.saturating_sub(p.waiting.consumers);
    }
    Waiting {
        producers,
        consumers,
    }
}

/// `2` or `2 (1 dead)`.
pub fn participant_count(ps: &[ParticipantReport]) -> String {
    match ps.iter().filter(|p| p.is_dead()).count() {
        0 => ps.len().to_string(),
        dead => format!("{} ({dead} dead)", ps.len()),
    }
}

/// One participant as a line of `stat` and `top`.
pub fn participant_line(p: &ParticipantReport) -> String {
    let alive = match p.alive {
        Some(true) => "alive",
        Some(false) => "DEAD",
        None => "unknown",
    };
    let mut line = format!(
        "  #{:<3} pid {:<8} {:<7} {} segment(s)",
        p.index, p.pid, alive, p.segments
    );
    let w = p.waiting;
    if w.producers + w.consumers > 0 {
        let _ = write!(
            line,
            ", asleep: {} for space, {} for data",
            w.producers, w.consumers
        );
    }
    if p.is_dead() && p.segments > 0 {
        line.push_str(" <- run recovery, or any blocked call will within 1 s");
    }
    line
}

/// One pool, as `stat` reports it and as each entry of `ls --json`.
#[derive(Serialize, Clone, Debug)]
pub struct PoolReport {
    pub target: String,
    pub path: String,
    pub kind: &'static str,
    pub name: Option<String>,
    pub processes: Vec<Process>,
    pub layout_version: u32,
    pub segment_size: usize,
    pub count: usize,
    pub published: u64,
    pub reclaimed: u64,
    pub segments: Phases,
    pub waiting: Waiting,
    pub writers: Vec<WriterReport>,
    pub generation: u32,
    pub shutdown: bool,
    pub participants: Vec<ParticipantReport>,
    pub recovered_participants: u64,
    pub recovered_segments: u64,
    pub state: &'static str,
    pub diagnosis: String,
}

/// The envelope of `stat --json`.
#[derive(Serialize)]
pub struct StatJson<'a> {
    pub schema: u32,
    #[serde(flatten)]
    pub pool: &'a PoolReport,
}

/// A pool `ls` could not open.
#[derive(Serialize, Clone, Debug)]
pub struct Skipped {
    pub target: String,
    pub error: String,
}

/// The envelope of `ls --json`.
#[derive(Serialize)]
pub struct LsJson<'a> {
    pub schema: u32,
    pub pools: &'a [PoolReport],
    pub skipped: &'a [Skipped],
}

impl PoolReport {
    pub fn new(
        target: String,
        path: String,
        kind: Kind,
        name: Option<String>,
        holders: &[Holder],
        snap: &Snapshot,
    ) -> PoolReport {
        let s = &snap.stats;
        let ps = participants(snap);
        let (state, diagnosis) = diagnose_with(s, snap.count, &snap.writers, &ps);
        PoolReport {
            target,
            path,
            kind: kind.as_str(),
            name,
            processes: holders.iter().map(Process::from).collect(),
            layout_version: snap.version,
            segment_size: snap.segment_size,
            count: snap.count,
            published: s.published,
            reclaimed: s.reclaimed,
            segments: phases(s),
            waiting: live_waiting(s, &ps),
            writers: snap
                .writers
                .iter()
                .map(|&(pid, segments)| WriterReport { pid, segments })
                .collect(),
            generation: s.generation,
            shutdown: s.shutdown,
            participants: ps,
            recovered_participants: s.recovered_participants,
            recovered_segments: s.recovered_segments,
            state,
            diagnosis,
        }
    }

    /// The multi-line text of `stat`.
    pub fn text(&self) -> String {
        let mut o = String::new();
        let name = match &self.name {
            Some(n) => format!(", name {n}"),
            None => String::new(),
        };
        let _ = writeln!(o, "pool         {} ({}{name})", self.target, self.kind);
        let _ = writeln!(o, "opened       {} (read-only)", self.path);
        let _ = writeln!(o, "processes    {}", processes(&self.processes, true));
        let _ = writeln!(
            o,
            "geometry     {} segments x {} ({} bytes), layout version {}",
            self.count,
            bytes(self.segment_size as f64),
            self.segment_size,
            self.layout_version
        );
        let _ = writeln!(
            o,
            "units        published {}, reclaimed {}, in flight {}",
            self.published,
            self.reclaimed,
            self.published.saturating_sub(self.reclaimed)
        );
        let p = self.segments;
        let _ = writeln!(
            o,
            "segments     free {}  writing {}  queued {}  held {}   (of {})",
            p.free, p.writing, p.queued, p.held, self.count
        );
        let _ = writeln!(
            o,
            "waiting      producers {}  consumers {}{}",
            self.waiting.producers,
            self.waiting.consumers,
            dead_sleepers(&self.participants)
        );
        if !self.writers.is_empty() {
            let _ = writeln!(o, "writing by   {}", writers(&self.writers));
        }
        let _ = writeln!(o, "generation   {}", self.generation);
        let _ = writeln!(
            o,
            "shutdown     {}",
            if self.shutdown { "yes" } else { "no" }
        );
        let _ = writeln!(o, "participants {}", participant_count(&self.participants));
        for p in &self.participants {
            let _ = writeln!(o, "{}", participant_line(p));
        }
        let _ = writeln!(
            o,
            "recovered    {} dead participant(s), {} segment(s) since creation",
            self.recovered_participants, self.recovered_segments
        );
        let _ = writeln!(o, "state        {}", self.diagnosis);
        o
    }
}

/// `   (+1 dead sleeper, not counted)`, or nothing.
pub fn dead_sleepers(ps: &[ParticipantReport]) -> String {
    let n: u32 = ps
        .iter()
        .filter(|p| p.is_dead())
        .map(|p| p.waiting.producers.saturating_add(p.waiting.consumers))
        .fold(0, u32::saturating_add);
    if n == 0 {
        String::new()
    } else {
        format!(
            "   (+{}, not counted)",
            plural(n, "dead sleeper", "dead sleepers")
        )
    }
}

/// `pid (command)` list; with `fds`, each holder's fds too.
pub fn processes(ps: &[Process], fds: bool) -> String {
    if ps.is_empty() {
        return "none (no process holds it)".into();
    }
    ps.iter()
        .map(|p| {
            if fds {
                let list: Vec<String> = p.fds.iter().map(i32::to_string).collect();
                format!("{} ({}) fd {}", p.pid, p.command, list.join(","))
            } else {
                format!("{} {}", p.pid, p.command)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `pid 12 (1), pid 14 (2)`: who writes how many segments.
pub fn writers(ws: &[WriterReport]) -> String {
    ws.iter()
        .map(|w| format!("pid {} ({})", w.pid, w.segments))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn phases(s: &Stats) -> Phases {
    Phases {
        free: s.free,
        writing: s.writing,
        queued: s.queued,
        held: s.held,
    }
}

/// `1.5 MiB`, `64 KiB`, `512 B`.
pub fn bytes(n: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 || v.fract() == 0.0 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn plural(n: impl Into<u64>, one: &str, many: &str) -> String {
    let n = n.into();
    format!("{n} {}", if n == 1 { one } else { many })
}

/// [`diagnose`] for a pool with participants: only live sleepers count as
/// waiting, and a dead participant that still owns segments is named at the
/// end (`...; pid 123 dead, holds 2: run recovery, or any blocked call will
/// within 100 ms`). The state word is [`diagnose`]'s.
pub fn diagnose_with(
    s: &Stats,
    count: usize,
    writing: &[(u32, usize)],
    ps: &[ParticipantReport],
) -> (&'static str, String) {
    let live = live_waiting(s, ps);
    let s = Stats {
        waiting_producers: live.producers,
        waiting_consumers: live.consumers,
        ..*s
    };
    let (state, mut d) = diagnose(&s, count, writing);
    if let Some(dead) = dead_holders(ps) {
        let _ = write!(d, "; {dead}");
    }
    (state, d)
}

/// A short state word, and a sentence that names the bottleneck and reads
/// on its own (it starts with the state in words).
///
/// States, first match wins: `shutdown`, `producers_waiting` (a producer
/// sleeps for a free segment, and none is free), `consumers_waiting` (a
/// consumer sleeps for a unit), `full` (no free segment, nobody asleep yet), `idle` (every segment
/// free), `busy` (anything else).
pub fn diagnose(s: &Stats, count: usize, writing: &[(u32, usize)]) -> (&'static str, String) {
    let by = if writing.is_empty() {
        String::new()
    } else {
        let ws: Vec<WriterReport> = writing
            .iter()
            .map(|&(pid, segments)| WriterReport { pid, segments })
            .collect();
        format!(" by {}", writers(&ws))
    };
    if s.shutdown {
        let mut d = String::from("shut down: producers are refused");
        if s.queued > 0 {
            let _ = write!(d, "; the consumer may still drain {} queued", s.queued);
        }
        if s.held + s.writing > 0 {
            let _ = write!(d, "; {} held, {} being written", s.held, s.writing);
        }
        return ("shutdown", d);
    }
    // A producer counted asleep while segments are free was woken and has
    // not run yet (or is stopped, e.g. by SIGSTOP): space is not what
    // holds the pipeline up, so the later rules say what does.
    if s.waiting_producers > 0 && s.free == 0 {
        let who = plural(s.waiting_producers, "producer", "producers");
        let cause = if s.held >= s.queued && s.held >= s.writing {
            let mut c = format!("consumer holds {}/{count}", s.held);
            if s.queued > 0 {
                let _ = write!(c, ", {} queued", s.queued);
            }
            c
        } else if s.queued >= s.writing {
            format!(
                "{}/{count} queued: the consumer is not taking them (slow, stuck or gone)",
                s.queued
            )
        } else {
            format!(
                "{}/{count} being written{by}: other producers hold them (raise count?)",
                s.writing
            )
        };
        return (
            "producers_waiting",
            format!("producers waiting for space ({who} asleep): {cause}"),
        );
    }
    if s.waiting_consumers > 0 {
        let cause = if s.writing > 0 {
            format!(
                "{} being written{by}, none queued: the producers are the bottleneck",
                plural(s.writing as u64, "unit", "units")
            )
        } else {
            "nothing being written: the producers are slow, idle or gone".to_owned()
        };
        let held = if s.held > 0 {
            format!(" (it holds {})", s.held)
        } else {
            String::new()
        };
        return (
            "consumers_waiting",
            format!("consumer waiting for data{held}: {cause}"),
        );
    }
    if s.free == 0 {
        return (
            "full",
            format!(
                "full: no free segment ({} writing, {} queued, {} held), nobody asleep yet",
                s.writing, s.queued, s.held
            ),
        );
    }
    if s.free == count {
        return ("idle", format!("idle: all {count} segments free"));
    }
    (
        "busy",
        format!(
            "busy: {}/{count} in use ({} writing, {} queued, {} held), nobody waiting",
            count - s.free,
            s.writing,
            s.queued,
            s.held
        ),
    )
}

/// The state word, and the dead participants that still own segments:
/// `full, pid 123 dead holds 2`.
pub fn ls_state(p: &PoolReport) -> String {
    let mut st = p.state.to_owned();
    for d in p
        .participants
        .iter()
        .filter(|d| d.is_dead() && d.segments > 0)
    {
        let _ = write!(st, ", pid {} dead holds {}", d.pid, d.segments);
    }
    st
}

/// The `ls` table.
pub fn ls_table(pools: &[PoolReport]) -> String {
    let mut rows: Vec<[String; 8]> = vec![[
        "TARGET".into(),
        "KIND".into(),
        "SEGMENTS".into(),
        "FREE/WRITE/QUEUE/HELD".into(),
        "WAIT P/C".into(),
        "PARTICIPANTS".into(),
        "STATE".into(),
        "PROCESSES".into(),
    ]];
    for p in pools {
        rows.push([
            p.target.clone(),
            p.kind.into(),
            format!("{} x {}", p.count, bytes(p.segment_size as f64)),
            format!(
                "{}/{}/{}/{}",
                p.segments.free, p.segments.writing, p.segments.queued, p.segments.held
            ),
            format!("{}/{}", p.waiting.producers, p.waiting.consumers),
            participant_count(&p.participants),
            ls_state(p),
            processes(&p.processes, false),
        ]);
    }
    let mut widths = [0; 8];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut o = String::new();
    for r in &rows {
        let mut line = String::new();
        for (i, (c, w)) in r.iter().zip(widths).enumerate() {
            if i + 1 == r.len() {
                line.push_str(c);
            } else {
                let _ = write!(line, "{c:<w$}  ");
            }
        }
        o.push_str(line.trim_end());
        o.push('\n');
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(free: usize, writing: usize, queued: usize, held: usize) -> Stats {
        Stats {
            free,
            writing,
            queued,
            held,
            ..Stats::default()
        }
    }

    #[test]
    fn a_full_pool_held_by_the_consumer_names_it() {
        let s = Stats {
            waiting_producers: 2,
            ..stats(0, 0, 0, 16)
        };
        let (state, d) = diagnose(&s, 16, &[]);
        assert_eq!(state, "producers_waiting");
        assert_eq!(
            d,
            "producers waiting for space (2 producers asleep): consumer holds 16/16"
        );
    }

    #[test]
    fn a_queue_nobody_takes_is_named() {
        let s = Stats {
            waiting_producers: 1,
            ..stats(0, 1, 6, 1)
        };
        let (_, d) = diagnose(&s, 8, &[]);
        assert!(d.contains("6/8 queued"), "{d}");
    }

    #[test]
    fn a_hungry_consumer_blames_the_producers() {
        let s = Stats {
            waiting_consumers: 1,
            ..stats(6, 2, 0, 0)
        };
        let (state, d) = diagnose(&s, 8, &[(41, 1), (42, 1)]);
        assert_eq!(state, "consumers_waiting");
        assert!(
            d.contains("2 units being written by pid 41 (1), pid 42 (1), none queued"),
            "{d}"
        );
    }

    #[test]
    fn a_producer_counted_asleep_beside_free_segments_is_not_the_bottleneck() {
        // Both workers stopped: one while asleep for space (still counted),
        // one mid-unit; the consumer sleeps for data.
        let s = Stats {
            waiting_producers: 1,
            waiting_consumers: 1,
            ..stats(15, 1, 0, 0)
        };
        let (state, d) = diagnose(&s, 16, &[(7, 1)]);
        assert_eq!(state, "consumers_waiting");
        assert!(d.contains("1 unit being written by pid 7 (1)"), "{d}");
    }

    #[test]
    fn shutdown_wins_and_quiet_pools_are_idle_or_busy() {
        let s = Stats {
            shutdown: true,
            waiting_producers: 1,
            ..stats(0, 0, 4, 0)
        };
        assert_eq!(diagnose(&s, 4, &[]).0, "shutdown");
        assert_eq!(diagnose(&stats(4, 0, 0, 0), 4, &[]).0, "idle");
        assert_eq!(diagnose(&stats(2, 0, 1, 1), 4, &[]).0, "busy");
        assert_eq!(diagnose(&stats(0, 1, 1, 2), 4, &[]).0, "full");
    }

    fn part(
        index: usize,
        pid: u32,
        alive: bool,
        segments: usize,
        w: (u32, u32),
    ) -> ParticipantReport {
        ParticipantReport {
            index,
            pid,
            alive: Some(alive),
            segments,
            incarnation: 1,
            waiting: Waiting {
                producers: w.0,
                consumers: w.1,
            },
        }
    }

    #[test]
    fn a_dead_holder_is_named_and_its_sleepers_do_not_count() {
        // The dead process held 2 and had a producer asleep; the live one
        // holds 2 and nobody live sleeps.
        let s = Stats {
            waiting_producers: 1,
            participants: 2,
            ..stats(0, 0, 0, 4)
        };
        let ps = [part(0, 10, true, 2, (0, 0)), part(1, 123, false, 2, (1, 0))];
        let (state, d) = diagnose_with(&s, 4, &[], &ps);
        assert_eq!(state, "full");
        assert_eq!(
            d,
            "full: no free segment (0 writing, 0 queued, 4 held), nobody asleep yet; \
             pid 123 dead, holds 2: run recovery, or any blocked call will within 1 s"
        );
        assert_eq!(live_waiting(&s, &ps).producers, 0);
        assert_eq!(participant_count(&ps), "2 (1 dead)");
        assert!(participant_line(&ps[1]).contains("DEAD    2 segment(s)"));
        // A dead participant that owns nothing is listed, not blamed.
        let ps = [part(0, 10, true, 0, (0, 0)), part(1, 123, false, 0, (0, 0))];
        assert_eq!(dead_holders(&ps), None);
        assert_eq!(
            diagnose_with(&stats(4, 0, 0, 0), 4, &[], &ps).1,
            "idle: all 4 segments free"
        );
    }

    #[test]
    fn sizes_read_naturally() {
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(65536.0), "64 KiB");
        assert_eq!(bytes(8.0 * 1024.0 * 1024.0), "8 MiB");
        assert_eq!(bytes(1536.0 * 1024.0), "1.5 MiB");
    }
}
