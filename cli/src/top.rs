//! `segpool top`: a live view of one pool.
//!
//! Every refresh takes one snapshot and derives rates from the counters'
//! deltas: units/s from `published`, reclaimed/s from `reclaimed`, and bytes/s
//! from units/s times the mean length of the last unit each segment carried
//! (the pool counts units, not bytes, so that figure is an estimate, marked
//! `~`).
//!
//! On a terminal (stdin and stdout both), it draws a full screen on the
//! alternate screen with stdin in non-canonical mode, and `q` (or Ctrl-C)
//! quits. Otherwise it prints one line per refresh (`key=value` pairs, or one
//! JSON object with `--json`), and `q` on stdin still quits. The pool is
//! declared vanished, and `top` exits with status 1, when no process holds
//! it any more and it has no name left in `/dev/shm`.

use crate::discover::{self, Holder, Kind};
use crate::report::{self, ParticipantReport, Phases, SCHEMA, Waiting};
use crate::target::{Opened, open_error};
use crate::{CliError, emit};
use rustix::termios::{self, LocalModes, OptionalActions, SpecialCodeIndex, Termios};
use segpool::Stats;
use serde::Serialize;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

/// How often the list of holding processes is refreshed (a /proc walk).
const HOLDERS_EVERY: Duration = Duration::from_secs(2);

/// What `top` was asked to do.
pub struct Options {
    pub interval: Duration,
    pub iterations: Option<u64>,
    pub json: bool,
}

/// Rates over the last refresh.
#[derive(Clone, Copy, Debug, Default)]
struct Rates {
    units_per_s: f64,
    reclaimed_per_s: f64,
    /// Estimated; `None` until a unit was seen in flight.
    bytes_per_s: Option<f64>,
}

/// One line of `top --json`.
#[derive(Serialize)]
struct TopJson<'a> {
    schema: u32,
    t: f64,
    target: &'a str,
    published: u64,
    reclaimed: u64,
    units_per_s: Option<f64>,
    reclaimed_per_s: Option<f64>,
    bytes_per_s: Option<f64>,
    segments: Phases,
    waiting: Waiting,
    generation: u32,
    shutdown: bool,
    participants: &'a [ParticipantReport],
    recovered_participants: u64,
    recovered_segments: u64,
    state: &'a str,
    diagnosis: &'a str,
}

pub fn run(opened: Opened, opts: Options) -> Result<(), CliError> {
    let interactive =
        !opts.json && std::io::stdout().is_terminal() && std::io::stdin().is_terminal();
    let mut screen = if interactive {
        Some(Screen::enter().map_err(|e| CliError(format!("terminal: {e}")))?)
    } else {
        None
    };
    let mut keys = Keys { open: true };
    let mut holders = discover::find(opened.id)
        .map(|f| f.holders)
        .unwrap_or_default();
    let mut holders_at = Instant::now();
    let start = Instant::now();
    let mut prev: Option<(Instant, Stats)> = None;
    let mut next = start;
    let mut refreshes = 0u64;
    let mut last_line = String::new();
    loop {
        let now = Instant::now();
        let snap = opened
            .inspector
            .snapshot()
            .map_err(|e| open_error(&opened.path, e))?;
        let s = snap.stats;
        let parts = report::participants(&snap);
        let (state, diagnosis) = report::diagnose_with(&s, snap.count, &snap.writers, &parts);
        let rates = prev.map(|(t, p)| {
            let dt = now.duration_since(t).as_secs_f64().max(1e-9);
            let units = s.published.saturating_sub(p.published) as f64 / dt;
            Rates {
                units_per_s: units,
                reclaimed_per_s: s.reclaimed.saturating_sub(p.reclaimed) as f64 / dt,
                bytes_per_s: snap.mean_unit_len.map(|m| units * m as f64),
            }
        });
        if now.duration_since(holders_at) >= HOLDERS_EVERY {
            holders = discover::find(opened.id)
                .map(|f| f.holders)
                .unwrap_or_default();
            holders_at = now;
            if holders.is_empty() && !name_exists(&opened) {
                drop(screen.take());
                return Err(CliError(format!(
                    "pool vanished: {} is no longer held by any process (last: {}, {} units published)",
                    opened.label, diagnosis, s.published
                )));
            }
        }
        let t = now.duration_since(start).as_secs_f64();
        let shown = match &mut screen {
            Some(screen) => {
                let view = View {
                    opened: &opened,
                    holders: &holders,
                    snap: &snap,
                    parts: &parts,
                    rates,
                    diagnosis: &diagnosis,
                    interval: opts.interval,
                };
                last_line = diagnosis.clone();
                screen.draw(&view.frame(screen.size()))
            }
            None if opts.json => {
                let line = serde_json::to_string(&TopJson {
                    schema: SCHEMA,
                    t: round3(t),
                    target: &opened.label,
                    published: s.published,
                    reclaimed: s.reclaimed,
                    units_per_s: rates.map(|r| round3(r.units_per_s)),
                    reclaimed_per_s: rates.map(|r| round3(r.reclaimed_per_s)),
                    bytes_per_s: rates.and_then(|r| r.bytes_per_s).map(f64::round),
                    segments: report::phases(&s),
                    waiting: report::live_waiting(&s, &parts),
                    generation: s.generation,
                    shutdown: s.shutdown,
                    participants: &parts,
                    recovered_participants: s.recovered_participants,
                    recovered_segments: s.recovered_segments,
                    state,
                    diagnosis: &diagnosis,
                })
                .map_err(|e| CliError(format!("encoding JSON: {e}")))?;
                line_out(&(line + "\n"))
            }
            None => line_out(&text_line(t, &s, &parts, rates, state, &diagnosis)),
        };
        if !shown {
            return Ok(()); // stdout closed: the reader is done with us
        }
        prev = Some((now, s));
        refreshes += 1;
        if opts.iterations.is_some_and(|n| refreshes >= n) {
            break;
        }
        next += opts.interval;
        if next < Instant::now() {
            next = Instant::now() + opts.interval; // fell behind: no burst
        }
        if keys.quit_before(next) {
            break;
        }
    }
    if screen.take().is_some() && !last_line.is_empty() {
        let _ = emit(&format!("{}: {last_line}\n", opened.label));
    }
    Ok(())
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Whether a named pool's name is still in /dev/shm (memfds have none).
fn name_exists(o: &Opened) -> bool {
    match (&o.kind, &o.name) {
        (Kind::Named, Some(name)) => std::path::Path::new(&format!("/dev/shm{name}")).exists(),
        _ => false,
    }
}

/// Writes one line; false once stdout is closed.
fn line_out(line: &str) -> bool {
    let mut out = std::io::stdout().lock();
    out.write_all(line.as_bytes())
        .and_then(|()| out.flush())
        .is_ok()
}

/// One `key=value` line, then ` | ` and the diagnosis.
fn text_line(
    t: f64,
    s: &Stats,
    parts: &[ParticipantReport],
    rates: Option<Rates>,
    state: &str,
    diagnosis: &str,
) -> String {
    let waiting = report::live_waiting(s, parts);
    let dead = parts.iter().filter(|p| p.is_dead()).count();
    let rate = |v: Option<f64>, digits: usize| match v {
        Some(v) => format!("{v:.digits$}"),
        None => "-".into(),
    };
    format!(
        "t={t:.2} published={} reclaimed={} units/s={} reclaimed/s={} GB/s={} free={} writing={} \
         queued={} held={} waiting_producers={} waiting_consumers={} generation={} shutdown={} \
         participants={} dead={dead} recovered_participants={} recovered_segments={} \
         state={state} | {diagnosis}\n",
        s.published,
        s.reclaimed,
        rate(rates.map(|r| r.units_per_s), 1),
        rate(rates.map(|r| r.reclaimed_per_s), 1),
        rate(rates.and_then(|r| r.bytes_per_s).map(|b| b / 1e9), 3),
        s.free,
        s.writing,
        s.queued,
        s.held,
        waiting.producers,
        waiting.consumers,
        s.generation,
        if s.shutdown { "yes" } else { "no" },
        parts.len(),
        s.recovered_participants,
        s.recovered_segments,
    )
}

/// Everything one full-screen frame shows.
struct View<'a> {
    opened: &'a Opened,
    holders: &'a [Holder],
    snap: &'a segpool::inspect::Snapshot,
    parts: &'a [ParticipantReport],
    rates: Option<Rates>,
    diagnosis: &'a str,
    interval: Duration,
}

impl View<'_> {
    /// The frame's lines, for a terminal of `cols` x `rows`.
    fn frame(&self, (cols, rows): (usize, usize)) -> Vec<String> {
        let s = &self.snap.stats;
        let count = self.snap.count;
        let mut l = Vec::new();
        let title = format!(
            "segpool top  {} ({})  {} x {}  layout v{}",
            self.opened.label,
            self.opened.kind.as_str(),
            count,
            report::bytes(self.snap.segment_size as f64),
            self.snap.version
        );
        let help = format!("every {:.1} s, q quits", self.interval.as_secs_f64());
        let pad = cols
            .saturating_sub(title.chars().count() + help.len())
            .max(2);
        l.push(format!("{title}{}{help}", " ".repeat(pad)));
        let procs: Vec<report::Process> = self.holders.iter().map(Into::into).collect();
        l.push(format!("processes  {}", report::processes(&procs, false)));
        l.push(String::new());
        let (units, reclaimed, gbs) = match self.rates {
            Some(r) => (
                format!("{:>10.1} units/s", r.units_per_s),
                format!("{:>10.1} units/s", r.reclaimed_per_s),
                match r.bytes_per_s {
                    Some(b) => format!("~{:.2} GB/s", b / 1e9),
                    None => "~? GB/s".into(),
                },
            ),
            None => (
                "         - units/s".into(),
                "         - units/s".into(),
                String::new(),
            ),
        };
        l.push(format!("published  {:>14}  {units}  {gbs}", s.published));
        l.push(format!("reclaimed  {:>14}  {reclaimed}", s.reclaimed));
        l.push(format!(
            "in flight  {:>14}  generation {}  shutdown {}",
            s.published.saturating_sub(s.reclaimed),
            s.generation,
            if s.shutdown { "YES" } else { "no" }
        ));
        l.push(String::new());
        let width = cols.saturating_sub(30).clamp(10, 64);
        for (name, n) in [
            ("free", s.free),
            ("writing", s.writing),
            ("queued", s.queued),
            ("held", s.held),
        ] {
            let filled = (n.min(count) * width).div_ceil(count.max(1));
            l.push(format!(
                "{name:<9}[{}{}] {n:>5}/{count}",
                "#".repeat(filled),
                " ".repeat(width - filled)
            ));
        }
        l.push(String::new());
        let waiting = report::live_waiting(s, self.parts);
        l.push(format!(
            "waiting    producers {}  consumers {}{}",
            waiting.producers,
            waiting.consumers,
            report::dead_sleepers(self.parts)
        ));
        l.push(String::new());
        l.extend(wrap(self.diagnosis, cols.max(20), ">> ", "   "));
        l.push(String::new());
        l.push(format!(
            "participants {}   recovered since creation: {} dead, {} segment(s)",
            report::participant_count(self.parts),
            s.recovered_participants,
            s.recovered_segments
        ));
        for p in self.parts {
            l.push(report::participant_line(p));
        }
        l.truncate(rows.max(1));
        l.iter()
            .map(|line| line.chars().take(cols.max(1)).collect())
            .collect()
    }
}

/// `text` as lines of at most `cols` characters, broken between words, the
/// first one after `first`, the others after `rest`.
fn wrap(text: &str, cols: usize, first: &str, rest: &str) -> Vec<String> {
    let mut lines = vec![first.to_owned()];
    let mut fresh = true;
    for word in text.split(' ') {
        let line = lines.last_mut().expect("never empty");
        if !fresh && line.chars().count() + 1 + word.chars().count() > cols {
            lines.push(rest.to_owned());
            fresh = true;
        }
        let line = lines.last_mut().expect("never empty");
        if !fresh {
            line.push(' ');
        }
        line.push_str(word);
        fresh = false;
    }
    lines
}

/// The terminal in full-screen mode; restored on drop (also on an error
/// return or a panic, which unwinds).
struct Screen {
    saved: Termios,
}

impl Screen {
    fn enter() -> rustix::io::Result<Screen> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd())?;
        let mut raw = saved.clone();
        // Keys arrive one by one, unechoed; Ctrl-C arrives as a byte (so the
        // terminal is always restored) rather than as SIGINT.
        raw.local_modes
            .remove(LocalModes::ICANON | LocalModes::ECHO | LocalModes::ISIG);
        raw.special_codes[SpecialCodeIndex::VMIN] = 1;
        raw.special_codes[SpecialCodeIndex::VTIME] = 0;
        termios::tcsetattr(stdin.as_fd(), OptionalActions::Now, &raw)?;
        let screen = Screen { saved };
        // Alternate screen, hidden cursor, cleared.
        let _ = write_tty("\x1b[?1049h\x1b[?25l\x1b[2J");
        Ok(screen)
    }

    /// Terminal size as (columns, rows), 80x24 if unknown.
    fn size(&self) -> (usize, usize) {
        match termios::tcgetwinsize(std::io::stdout().as_fd()) {
            Ok(w) if w.ws_col > 0 && w.ws_row > 0 => (w.ws_col as usize, w.ws_row as usize),
            _ => (80, 24),
        }
    }

    /// Draws a frame over the last one; false if the terminal went away.
    fn draw(&mut self, lines: &[String]) -> bool {
        let mut buf = String::from("\x1b[H");
        for (i, line) in lines.iter().enumerate() {
            if i > 0 {
                buf.push_str("\r\n");
            }
            let _ = write!(buf, "{line}\x1b[K");
        }
        buf.push_str("\x1b[J");
        write_tty(&buf).is_ok()
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = write_tty("\x1b[?25h\x1b[?1049l");
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), OptionalActions::Now, &self.saved);
    }
}

fn write_tty(s: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(s.as_bytes())?;
    out.flush()
}

/// Keys on stdin, read between refreshes.
struct Keys {
    /// False after end of file (stdin is `/dev/null` or a closed pipe).
    open: bool,
}

impl Keys {
    /// Waits until `deadline`; true if `q`, `Q` or Ctrl-C came first.
    fn quit_before(&mut self, deadline: Instant) -> bool {
        use rustix::event::{PollFd, PollFlags, Timespec, poll};
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            if !self.open {
                std::thread::sleep(left);
                return false;
            }
            let stdin = std::io::stdin();
            let timeout = Timespec {
                tv_sec: left.as_secs() as i64,
                tv_nsec: left.subsec_nanos() as _,
            };
            let mut fds = [PollFd::new(&stdin, PollFlags::IN)];
            match poll(&mut fds, Some(&timeout)) {
                Ok(0) => return false,
                Ok(_) => {
                    let mut buf = [0u8; 64];
                    match rustix::io::read(stdin.as_fd(), &mut buf) {
                        Ok(0) => self.open = false,
                        Ok(n) => {
                            if buf[..n].iter().any(|b| matches!(b, b'q' | b'Q' | 0x03)) {
                                return true;
                            }
                        }
                        Err(rustix::io::Errno::INTR | rustix::io::Errno::AGAIN) => {}
                        Err(_) => self.open = false,
                    }
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(_) => self.open = false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::wrap;

    #[test]
    fn a_long_diagnosis_wraps_between_words() {
        let lines = wrap("aaa bbb ccc ddd", 10, ">> ", "   ");
        assert_eq!(lines, [">> aaa bbb", "   ccc ddd"]);
        assert_eq!(wrap("short", 80, ">> ", "   "), [">> short"]);
    }
}
