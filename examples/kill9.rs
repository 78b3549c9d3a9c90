//! The kill -9 harness: proves that a process killed at any instruction
//! loses no committed unit and that every segment it owned comes back.
//!
//! ```text
//! cargo run --release --example kill9 -- [--kills 10000] [--producers 3]
//!     [--segments 8] [--size 4096] [--held 3] [--self-kill-every 40] [--seed N]
//! ```
//!
//! One binary, four roles. The *orchestrator* (the default) creates a small
//! pool, so producers often sleep in `begin_unit`, and starts itself again as
//! `--producers` producer processes, one consumer process and one
//! *recoverer* process that runs `recover_dead` in a loop, so that kills
//! also land in the middle of a recovery (the role is in [`ROLE_ENV`]; the
//! pool comes through `configure_command`). Producers and the consumer that
//! sleep run the death watcher of liveness v3, which recovers too, so kills
//! land in their recoveries as well. Then it kills:
//! after a random delay (0 to 3 ms, drawn from three bands so that short and
//! long lives both occur) it sends `SIGKILL` to a random child, reaps it,
//! runs `recover_dead`, and starts a new incarnation in its place. Children
//! also arm a one-shot POSIX timer that delivers `SIGKILL` to themselves a
//! few microseconds later, at random points (before `begin_unit`, mid-write,
//! right before `commit_unit`, before `recv`, before dropping a view): those
//! land inside the protocol's own steps, where a kill from outside rarely
//! does. Both kinds count towards `--kills`.
//!
//! - A producer writes units of random length whose 64-byte header names
//!   it (slot, incarnation, sequence number, body length, header checksum)
//!   and whose body is a stream seeded by (incarnation, sequence). It fills
//!   the body in chunks with random pauses, and reports `K9 C seq` on its
//!   stdout once `commit_unit` returned `Ok`.
//! - The consumer verifies every unit (header checksum, length, every body
//!   byte), reports `K9 D ticket slot incarnation seq` (or `K9 X ticket why` for a
//!   corrupt one) before anything else, then holds a random number of views
//!   (up to `--held`) for a random while, so it often dies holding views.
//! - Each child writes its current phase to a shared *phase board* (a memfd
//!   every child inherits) before each step, so the orchestrator can tell
//!   where each death landed.
//!
//! After the kills the orchestrator kills the remaining children too, reaps
//! them all, recovers, drains what is left in the ring itself, and checks:
//! - every unit reported committed was delivered, except units taken by a
//!   consumer killed between `recv` and its report: each consumer death
//!   allows one missing ticket, at the one place it can be (the ticket after
//!   the last one delivered before that death);
//! - a delivered unit that was never reported committed is the next unit of
//!   a producer killed between its commit and its report;
//! - no unit and no ticket is delivered twice; tickets come in order, and
//!   per producer incarnation sequence numbers too;
//! - no payload is corrupt;
//! - `stats()`: every segment free, none writing, queued or held, no waiter
//!   counted, one participant (the orchestrator), `published == reclaimed`;
//!   and all `count` segments can be claimed again.
//!
//! Every wait is bounded; a watchdog aborts the run if it stops making
//! progress. `tests/kill9.rs` runs a few hundred kills of the same harness.

use segpool::{SegmentPool, Stats, Unit};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Names the role of a child process (absent in the orchestrator).
pub const ROLE_ENV: &str = "SEGPOOL_KILL9_ROLE";
/// The phase board's inherited file descriptor number.
const BOARD_ENV: &str = "SEGPOOL_KILL9_BOARD";
/// Prefix of every report line (a test binary prints other lines too).
const TAG: &str = "K9";
/// Bytes of a unit's header.
const HEADER: usize = 64;
const MAGIC: u64 = u64::from_le_bytes(*b"K9UNIT\0\0");
/// A child that sees neither a unit nor a segment for this long fails.
const CHILD_PATIENCE: Duration = Duration::from_secs(30);
/// No unit delivered for this long while the kills go on: a hang.
const STALL: Duration = Duration::from_secs(30);

// ----- configuration ----------------------------------------------------------

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

const USAGE: &str = "usage: kill9 [--kills N] [--producers N] [--segments N] [--size BYTES] \
                     [--held N] [--self-kill-every N (0: off)] [--seed N]";

/// Parses the orchestrator's flags.
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

// ----- small tools ----------------------------------------------------------------

/// splitmix64: a tiny generator every process can seed and replay.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn micros(&mut self, max: u64) -> Duration {
        Duration::from_micros(self.below(max + 1))
    }
}

/// The body of unit `(inc, seq)`: a stream only those two determine.
fn fill_body(inc: u32, seq: u64, buf: &mut [u8]) {
    let mut rng = Rng(u64::from(inc) << 40 ^ seq ^ 0x5151_5151);
    for chunk in buf.chunks_mut(8) {
        let v = rng.next().to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

/// FNV-1a.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// Writes a unit's header: magic, slot, incarnation, seq, body length, and
/// a checksum of those.
fn write_header(h: &mut [u8], slot: u32, inc: u32, seq: u64, body: usize) {
    h[..8].copy_from_slice(&MAGIC.to_le_bytes());
    h[8..12].copy_from_slice(&slot.to_le_bytes());
    h[12..16].copy_from_slice(&inc.to_le_bytes());
    h[16..24].copy_from_slice(&seq.to_le_bytes());
    h[24..32].copy_from_slice(&(body as u64).to_le_bytes());
    let sum = fnv(&h[..32]);
    h[32..40].copy_from_slice(&sum.to_le_bytes());
}

/// Checks a received unit byte for byte; returns (slot, incarnation, seq).
fn verify(u: &[u8]) -> Result<(u32, u32, u64), String> {
    if u.len() < HEADER {
        return Err(format!("{} bytes, shorter than a header", u.len()));
    }
    if u64_at(u, 0) != MAGIC || u64_at(u, 32) != fnv(&u[..32]) {
        return Err("bad header".into());
    }
    let (slot, inc, seq, body) = (u32_at(u, 8), u32_at(u, 12), u64_at(u, 16), u64_at(u, 24));
    if body != (u.len() - HEADER) as u64 {
        return Err(format!(
            "({inc}, {seq}): header says {body} body bytes, unit has {}",
            u.len() - HEADER
        ));
    }
    let mut expect = vec![0u8; u.len() - HEADER];
    fill_body(inc, seq, &mut expect);
    if expect != u[HEADER..] {
        let at = expect.iter().zip(&u[HEADER..]).position(|(a, b)| a != b);
        return Err(format!("({inc}, {seq}): body differs at byte {at:?}"));
    }
    Ok((slot, inc, seq))
}

/// A random pause: nothing, a spin, a yield or a sleep, so kills land in
/// the middle of things and lives have every length.
fn pause(rng: &mut Rng) {
    match rng.below(10) {
        0..=4 => {}
        5 | 6 => {
            let until = Instant::now() + rng.micros(20);
            while Instant::now() < until {
                std::hint::spin_loop();
            }
        }
        7 => std::thread::yield_now(),
        8 => std::thread::sleep(rng.micros(200)),
        _ => std::thread::sleep(rng.micros(1000)),
    }
}

// ----- the phase board ----------------------------------------------------------------

/// One word per child slot in a shared memfd: `incarnation << 8 | phase`,
/// stored by the child before each step, read by the orchestrator after
/// the child died. Plain atomics, no syscall, so it shifts no timing.
struct Board {
    map: memmap2::MmapRaw,
    /// The memfd (orchestrator only; children reach it by number).
    _fd: Option<OwnedFd>,
}

impl Board {
    const SLOTS: usize = 64;
    const LEN: usize = Self::SLOTS * 8;

    /// A fresh board whose memfd every child inherits (no close-on-exec).
    fn create() -> std::io::Result<Board> {
        let fd = rustix::fs::memfd_create("segpool-kill9-board", rustix::fs::MemfdFlags::empty())?;
        rustix::fs::ftruncate(&fd, Self::LEN as u64)?;
        let map = memmap2::MmapOptions::new().len(Self::LEN).map_raw(&fd)?;
        Ok(Board { map, _fd: Some(fd) })
    }

    fn fd_number(&self) -> i32 {
        self._fd.as_ref().map_or(-1, |fd| fd.as_raw_fd())
    }

    /// The board a child inherited.
    fn inherited() -> Result<Board, String> {
        let n = std::env::var(BOARD_ENV).map_err(|_| format!("{BOARD_ENV} is not set"))?;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/self/fd/{n}"))
            .map_err(|e| format!("open the phase board (fd {n}): {e}"))?;
        let map = memmap2::MmapOptions::new()
            .len(Self::LEN)
            .map_raw(&file)
            .map_err(|e| format!("map the phase board: {e}"))?;
        Ok(Board { map, _fd: None })
    }

    fn words(&self) -> &[AtomicU64] {
        // SAFETY: the mapping is `LEN = SLOTS * 8` bytes, page-aligned (so
        // aligned for AtomicU64), and lives as long as `self`; any bit
        // pattern is a valid AtomicU64, and every process touches these
        // words only through atomic operations.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().cast::<AtomicU64>(), Self::SLOTS) }
    }

    fn set(&self, slot: usize, inc: u32, phase: Phase) {
        // Relaxed: read only after the writer is dead and reaped.
        self.words()[slot].store(u64::from(inc) << 8 | phase as u64, Ordering::Relaxed);
    }

    /// The last phase incarnation `inc` of `slot` stored, or `Starting`.
    fn get(&self, slot: usize, inc: u32) -> Phase {
        let w = self.words()[slot].load(Ordering::Relaxed);
        if w >> 8 != u64::from(inc) {
            return Phase::Starting;
        }
        Phase::ALL
            .into_iter()
            .find(|p| *p as u64 == w & 0xff)
            .unwrap_or(Phase::Starting)
    }
}

/// Where a child was: the last phase it stored before it died.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    /// Started, not yet attached (nothing stored yet).
    Starting = 0,
    /// Producer: between units.
    Idle = 1,
    /// Producer: inside `begin_unit` (claiming, or asleep on a full pool).
    Begin = 2,
    /// Producer: holds a lease, filling the segment.
    Write = 3,
    /// Producer: inside `commit_unit`.
    Commit = 4,
    /// Producer: commit returned `Ok`; reporting it.
    Report = 5,
    /// Consumer: inside `recv` (taking, or asleep on an empty ring).
    Recv = 6,
    /// Consumer: a unit taken; verifying and reporting it.
    Check = 7,
    /// Consumer: holding views for a while.
    Hold = 8,
    /// Consumer: dropping views (segments going back).
    Drop = 9,
    /// Recoverer: inside `recover_dead`.
    Recover = 10,
    /// Recoverer: between two recoveries.
    Rest = 11,
}

impl Phase {
    const ALL: [Phase; 12] = [
        Phase::Starting,
        Phase::Idle,
        Phase::Begin,
        Phase::Write,
        Phase::Commit,
        Phase::Report,
        Phase::Recv,
        Phase::Check,
        Phase::Hold,
        Phase::Drop,
        Phase::Recover,
        Phase::Rest,
    ];

    fn describe(self, asleep: bool) -> &'static str {
        match (self, asleep) {
            (Phase::Starting, _) => "starting (before attach)",
            (Phase::Idle, _) => "between units",
            (Phase::Begin, true) => "in begin_unit, asleep",
            (Phase::Begin, false) => "in begin_unit",
            (Phase::Write, _) => "mid-write",
            (Phase::Commit, _) => "in commit_unit",
            (Phase::Report, _) => "committed, reporting",
            (Phase::Recv, true) => "in recv, asleep",
            (Phase::Recv, false) => "in recv",
            (Phase::Check, _) => "took a unit, reporting",
            (Phase::Hold, _) => "holding views",
            (Phase::Drop, _) => "dropping views",
            (Phase::Recover, _) => "in recover_dead",
            (Phase::Rest, _) => "between recoveries",
        }
    }
}

// ----- the self-kill timer -------------------------------------------------------

/// A one-shot POSIX timer that sends this process `SIGKILL`: a kill that
/// lands a chosen few microseconds from a chosen point, wherever the
/// process is by then.
struct Tripwire(libc::timer_t);

impl Tripwire {
    fn new() -> Result<Tripwire, String> {
        // SAFETY: all-zero is a valid `sigevent` (a C struct of integers and
        // a union of an integer and a pointer).
        let mut ev: libc::sigevent = unsafe { std::mem::zeroed() };
        ev.sigev_notify = libc::SIGEV_SIGNAL;
        ev.sigev_signo = libc::SIGKILL;
        let mut id: libc::timer_t = std::ptr::null_mut();
        // SAFETY: `ev` and `id` are valid for the call; the kernel reads `ev`
        // and writes the new timer's id into `id`.
        let rc = unsafe { libc::timer_create(libc::CLOCK_MONOTONIC, &mut ev, &mut id) };
        if rc != 0 {
            return Err(format!("timer_create: {}", std::io::Error::last_os_error()));
        }
        Ok(Tripwire(id))
    }

    /// Kills this process `after` from now.
    fn arm(&self, after: Duration) {
        self.arm_at(monotonic_ns() + after.as_nanos() as u64);
    }

    /// Kills this process at `at` on the monotonic clock (nanoseconds).
    fn arm_at(&self, at: u64) {
        /// `<time.h>`'s flag for an absolute expiry (libc has no Linux one).
        const TIMER_ABSTIME: libc::c_int = 1;
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (at / 1_000_000_000) as libc::time_t,
                tv_nsec: (at % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: `self.0` is a timer `timer_create` made and nothing
        // deleted; `spec` is valid for the call; a null old value is allowed.
        let rc = unsafe { libc::timer_settime(self.0, TIMER_ABSTIME, &spec, std::ptr::null_mut()) };
        assert_eq!(rc, 0, "timer_settime failed");
    }
}

/// The monotonic clock (the timer's) in nanoseconds.
fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

// ----- children -------------------------------------------------------------------

/// Runs the child role named in [`ROLE_ENV`], if any, and returns its exit
/// code; `None` in the orchestrator.
pub fn child_from_env() -> Option<i32> {
    let role = std::env::var(ROLE_ENV).ok()?;
    let result = child(&role);
    if let Err(e) = &result {
        eprintln!("kill9 child ({role}): {e}");
    }
    Some(if result.is_ok() { 0 } else { 1 })
}

/// Whether this process is a child of the harness.
pub fn is_child() -> bool {
    std::env::var_os(ROLE_ENV).is_some()
}

fn child(role: &str) -> Result<(), String> {
    // A safety net for the shared machine: never outlive the orchestrator
    // (the thread that spawned us lives for the whole run).
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .map_err(|e| format!("prctl(PR_SET_PDEATHSIG): {e}"))?;
    if rustix::process::getppid().is_none_or(|p| p.as_raw_nonzero().get() == 1) {
        return Err("the orchestrator is gone".into());
    }
    let f: Vec<u64> = role
        .split_whitespace()
        .skip(1)
        .map(|s| s.parse().map_err(|e| format!("role {role}: {e}")))
        .collect::<Result<_, _>>()?;
    match (role.split_whitespace().next(), f.as_slice()) {
        (Some("producer"), &[slot, inc, seed, every]) => {
            producer(slot as usize, inc as u32, Rng(seed), every)
        }
        (Some("consumer"), &[slot, inc, seed, every, held]) => {
            consumer(slot as usize, inc as u32, Rng(seed), every, held)
        }
        (Some("recoverer"), &[slot, inc, seed, every]) => {
            recoverer(slot as usize, inc as u32, Rng(seed), every)
        }
        _ => Err(format!("unknown role {role}")),
    }
}

fn report(line: std::fmt::Arguments<'_>) -> Result<(), String> {
    // Stdout is line-buffered: one write(2) per report.
    writeln!(std::io::stdout().lock(), "{TAG} {line}").map_err(|e| format!("report: {e}"))
}

/// Runs `recover_dead` in a loop, now and then with its own death armed to
/// land inside it: whatever a recovery killed half-way left, the next one
/// (the orchestrator's, or a watcher's) must finish.
fn recoverer(slot: usize, inc: u32, mut rng: Rng, every: u64) -> Result<(), String> {
    let board = Board::inherited()?;
    let trip = Tripwire::new()?;
    let pool = SegmentPool::from_env().map_err(|e| format!("attach: {e}"))?;
    loop {
        board.set(slot, inc, Phase::Rest);
        pause(&mut rng);
        if every > 0 && rng.below(every) < 4 {
            trip.arm(rng.micros(20));
        }
        board.set(slot, inc, Phase::Recover);
        pool.recover_dead()
            .map_err(|e| format!("recover_dead: {e}"))?;
    }
}

fn producer(slot: usize, inc: u32, mut rng: Rng, every: u64) -> Result<(), String> {
    let board = Board::inherited()?;
    let trip = Tripwire::new()?;
    let pool = SegmentPool::from_env().map_err(|e| format!("attach: {e}"))?;
    let writer = pool.open_writer();
    let body_max = pool.segment_size() - HEADER;
    for seq in 0u64.. {
        board.set(slot, inc, Phase::Idle);
        pause(&mut rng);
        // Where this unit's self-kill is armed, if it has one: before
        // `begin_unit`, mid-write, or (half of them) timed to land in the
        // commit.
        let spot = (every > 0 && rng.below(every) == 0).then(|| rng.below(4).min(2));
        if spot == Some(0) {
            trip.arm(rng.micros(30));
        }
        board.set(slot, inc, Phase::Begin);
        let mut unit = writer
            .begin_unit_timeout(CHILD_PATIENCE)
            .map_err(|e| format!("begin_unit: {e}"))?;
        board.set(slot, inc, Phase::Write);
        let body = 1 + rng.below(body_max as u64) as usize;
        let (offset, buf) = unit
            .reserve(HEADER + body)
            .map_err(|e| format!("reserve: {e}"))?;
        debug_assert_eq!(offset, 0);
        let mut whole = vec![0u8; body];
        fill_body(inc, seq, &mut whole);
        let chunks = 1 + rng.below(4) as usize;
        for (i, part) in whole.chunks(body.div_ceil(chunks)).enumerate() {
            let at = HEADER + i * body.div_ceil(chunks);
            buf[at..at + part.len()].copy_from_slice(part);
            if i == 0 && spot == Some(1) {
                trip.arm(rng.micros(30));
            }
            pause(&mut rng);
        }
        write_header(&mut buf[..HEADER], slot as u32, inc, seq, body);
        if spot == Some(2) {
            // The kill arrives some (unknown, roughly constant) time after
            // the timer's expiry: start the commit at a random moment around
            // it, so that the kill lands at a random point of the commit
            // much more often than a random delay would.
            let expiry = monotonic_ns() + 20_000;
            trip.arm_at(expiry);
            let start = expiry - 1_000 + rng.below(4_000);
            while monotonic_ns() < start {
                std::hint::spin_loop();
            }
        }
        board.set(slot, inc, Phase::Commit);
        unit.commit_unit()
            .map_err(|e| format!("commit_unit: {e}"))?;
        board.set(slot, inc, Phase::Report);
        report(format_args!("C {seq}"))?;
    }
    unreachable!("a producer runs until it is killed")
}

fn consumer(slot: usize, inc: u32, mut rng: Rng, every: u64, max_held: u64) -> Result<(), String> {
    let board = Board::inherited()?;
    let trip = Tripwire::new()?;
    let pool = SegmentPool::from_env().map_err(|e| format!("attach: {e}"))?;
    let reader = pool.open_reader();
    let mut held: VecDeque<Unit> = VecDeque::new();
    loop {
        board.set(slot, inc, Phase::Recv);
        let spot = (every > 0 && rng.below(every) == 0).then(|| rng.below(2));
        if spot == Some(0) {
            trip.arm(rng.micros(30));
        }
        let unit = reader
            .recv_timeout(CHILD_PATIENCE)
            .map_err(|e| format!("recv: {e}"))?;
        board.set(slot, inc, Phase::Check);
        match verify(&unit) {
            Ok((s, i, seq)) => report(format_args!("D {} {s} {i} {seq}", unit.ticket()))?,
            Err(why) => report(format_args!("X {} {why}", unit.ticket()))?,
        }
        board.set(slot, inc, Phase::Hold);
        // Sometimes keep a sub-view instead (it holds the segment alone).
        if rng.below(4) == 0 && unit.len() > HEADER {
            let view = unit
                .view(HEADER, unit.len() - HEADER)
                .map_err(|e| format!("view: {e}"))?;
            drop(unit);
            held.push_back(view);
        } else {
            held.push_back(unit);
        }
        pause(&mut rng);
        let keep = rng.below(max_held + 1) as usize;
        if spot == Some(1) && held.len() > keep {
            // As for the producer's commit: a kill at a random point of the
            // release of the segment the last view drops.
            let expiry = monotonic_ns() + 20_000;
            trip.arm_at(expiry);
            let start = expiry - 1_000 + rng.below(4_000);
            while monotonic_ns() < start {
                std::hint::spin_loop();
            }
        }
        board.set(slot, inc, Phase::Drop);
        while held.len() > keep {
            held.pop_front();
        }
    }
}

// ----- the ledger -------------------------------------------------------------------

/// What the children reported, checked as it comes in.
#[derive(Debug, Default)]
struct Ledger {
    /// Producer incarnation -> units it reported committed (seqs `0..n`).
    committed: HashMap<u32, u64>,
    /// Producer incarnation -> its slot.
    slot_of: HashMap<u32, u32>,
    /// (incarnation, seq) -> ticket it was delivered under.
    delivered: HashMap<(u32, u64), u64>,
    /// Tickets delivered, in delivery order (strictly increasing if sound).
    tickets: Vec<u64>,
    /// Per producer incarnation, the last seq delivered.
    last_seq: HashMap<u32, u64>,
    /// Tickets a consumer death may have swallowed (one per death).
    allowed_gaps: Vec<u64>,
    /// The next ticket a new consumer takes first: one past the last
    /// ticket delivered or allowed to be missing.
    frontier: u64,
    duplicated: u64,
    out_of_order: u64,
    corrupt: u64,
    problems: Vec<String>,
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

    fn delivered(&mut self, ticket: u64, slot: u32, inc: u32, seq: u64) {
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

    fn corrupt(&mut self, ticket: u64, why: &str) {
        self.corrupt += 1;
        self.tickets.push(ticket);
        self.frontier = self.frontier.max(ticket + 1);
        self.problem(format!("ticket {ticket} corrupt: {why}"));
    }

    /// A consumer died: the one ticket it may have taken without reporting
    /// is the frontier (consumers take tickets in order, one at a time, and
    /// report each before taking the next; a stale slot that an earlier
    /// death left is stepped over, hence the frontier counts allowed gaps).
    fn consumer_died(&mut self) {
        self.allowed_gaps.push(self.frontier);
        self.frontier += 1;
    }

    /// Parses one report line of child `(role, inc)`.
    fn line(&mut self, role: Role, inc: u32, line: &str) {
        // A test binary's harness may print before us on the same line.
        let Some(at) = line.find(&format!("{TAG} ")) else {
            return; // the harness's own output
        };
        let rest = &line[at + TAG.len() + 1..];
        let w: Vec<&str> = rest.split_whitespace().collect();
        let num = |i: usize| w.get(i).and_then(|s| s.parse::<u64>().ok());
        match (role, w.first().copied()) {
            (Role::Producer(_), Some("C")) if num(1).is_some() => {
                self.committed(inc, num(1).unwrap_or_default())
            }
            (Role::Consumer, Some("D")) if w.len() == 5 && (1..5).all(|i| num(i).is_some()) => {
                let n = |i| num(i).unwrap_or_default();
                self.delivered(n(1), n(2) as u32, n(3) as u32, n(4));
            }
            (Role::Consumer, Some("X")) if num(1).is_some() => {
                let why = w[2..].join(" ");
                self.corrupt(num(1).unwrap_or_default(), &why);
            }
            _ => self.problem(format!("unreadable report from {role:?} {inc}: {line:?}")),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

// ----- the orchestrator ---------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Role {
    Producer(usize),
    Consumer,
    Recoverer,
}

/// Who sent the `SIGKILL`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum By {
    /// The orchestrator, after a random delay.
    Orchestrator,
    /// The child's own timer, armed at a random point.
    SelfArmed,
    /// The orchestrator, at the end of the run.
    Teardown,
}

/// One child process.
struct Kid {
    role: Role,
    inc: u32,
    child: Child,
    reader: Option<JoinHandle<()>>,
}

/// Kills per (role, phase) and per sender.
pub type KillTable = BTreeMap<(String, &'static str), [u64; 3]>;

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

/// The orchestrator's state.
struct Run<'c> {
    cfg: &'c Config,
    make_cmd: &'c dyn Fn() -> Command,
    pool: SegmentPool,
    board: Board,
    ledger: Arc<Mutex<Ledger>>,
    rng: Rng,
    next_inc: u32,
    /// Producer incarnations that died by SIGKILL.
    killed_producers: HashSet<u32>,
    report: Report,
    /// Bumped whenever the main loop moves on (for the watchdog).
    heartbeat: Arc<AtomicU64>,
}

impl Run<'_> {
    fn spawn(&mut self, role: Role) -> Result<Kid, String> {
        self.next_inc += 1;
        let inc = self.next_inc;
        let seed = self.rng.next();
        let every = self.cfg.self_kill_every;
        let spec = match role {
            Role::Producer(slot) => format!("producer {slot} {inc} {seed} {every}"),
            Role::Consumer => format!(
                "consumer {} {inc} {seed} {every} {}",
                self.cfg.producers, self.cfg.max_held
            ),
            Role::Recoverer => format!("recoverer {} {inc} {seed} {every}", self.cfg.producers + 1),
        };
        if let Role::Producer(slot) = role {
            lock(&self.ledger).slot_of.insert(inc, slot as u32);
        }
        let mut cmd = (self.make_cmd)();
        cmd.env(ROLE_ENV, &spec)
            .env(BOARD_ENV, self.board.fd_number().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        self.pool.configure_command(&mut cmd);
        let mut child = cmd.spawn().map_err(|e| format!("spawn {spec}: {e}"))?;
        let out = child.stdout.take().expect("stdout is piped");
        let ledger = self.ledger.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                match line {
                    Ok(line) => lock(&ledger).line(role, inc, &line),
                    Err(_) => break,
                }
            }
        });
        Ok(Kid {
            role,
            inc,
            child,
            reader: Some(reader),
        })
    }

    fn slot(&self, role: Role) -> usize {
        match role {
            Role::Producer(s) => s,
            Role::Consumer => self.cfg.producers,
            Role::Recoverer => self.cfg.producers + 1,
        }
    }

    /// Waits (bounded) for a child that was sent SIGKILL.
    fn reap(kid: &mut Kid) -> Result<ExitStatus, String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match kid.child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_micros(50))
                }
                Ok(None) => return Err(format!("{:?} {} did not die", kid.role, kid.inc)),
                Err(e) => return Err(format!("wait for {:?} {}: {e}", kid.role, kid.inc)),
            }
        }
    }

    /// Handles a child's death: checks how it died, notes where it was,
    /// recovers, and settles its reports.
    fn buried(&mut self, mut kid: Kid, status: ExitStatus, by: By, asleep: bool) {
        let phase = self.board.get(self.slot(kid.role), kid.inc);
        let start = Instant::now();
        let r = self.pool.recover_dead().expect("recover_dead");
        let took = start.elapsed();
        self.report.max_recovery = self.report.max_recovery.max(took);
        self.report.total_recovery += took;
        self.report.recovered_freed += r.freed as u64;
        self.report.recovered_delivered += r.delivered as u64;
        self.report.recovered_nothing += u64::from(r.freed + r.delivered == 0);
        if let Some(reader) = kid.reader.take() {
            let _ = reader.join(); // ends at EOF: the child is dead
        }
        if status.signal() != Some(libc::SIGKILL) {
            self.report
                .failures
                .push(format!("{:?} {} ended with {status}", kid.role, kid.inc));
        }
        match kid.role {
            Role::Consumer => lock(&self.ledger).consumer_died(),
            Role::Producer(_) => {
                self.killed_producers.insert(kid.inc);
            }
            Role::Recoverer => {}
        }
        let role = match kid.role {
            Role::Producer(_) => "producer",
            Role::Consumer => "consumer",
            Role::Recoverer => "recoverer",
        };
        let column = match by {
            By::Orchestrator => 0,
            By::SelfArmed => 1,
            By::Teardown => 2,
        };
        self.report
            .table
            .entry((role.to_string(), phase.describe(asleep)))
            .or_default()[column] += 1;
        match by {
            By::Teardown => self.report.teardown_kills += 1,
            _ => self.report.kills += 1,
        }
    }

    /// Whether the participant table says process `pid` sleeps in a wait.
    fn asleep(&self, pid: u32) -> bool {
        self.pool
            .participants()
            .iter()
            .any(|(p, _)| p.pid == pid && (p.waiting.0 > 0 || p.waiting.1 > 0))
    }

    fn beat(&self) {
        self.heartbeat.fetch_add(1, Ordering::Relaxed);
    }

    fn kill_loop(&mut self, kids: &mut Vec<Kid>) -> Result<(), String> {
        let mut last_progress = (0usize, Instant::now());
        while self.report.kills < self.cfg.kills {
            self.beat();
            // Deaths the children's own timers caused (or failures).
            let mut i = 0;
            while i < kids.len() {
                if let Some(status) = kids[i].child.try_wait().map_err(|e| format!("wait: {e}"))? {
                    let kid = kids.swap_remove(i);
                    let role = kid.role;
                    self.buried(kid, status, By::SelfArmed, false);
                    kids.push(self.spawn(role)?);
                    continue;
                }
                i += 1;
            }
            if !self.report.failures.is_empty() {
                return Ok(());
            }
            // A random delay from one of three bands.
            let delay = match self.rng.below(3) {
                0 => self.rng.micros(100),
                1 => self.rng.micros(1000),
                _ => self.rng.micros(3000),
            };
            if delay < Duration::from_micros(100) {
                let until = Instant::now() + delay;
                while Instant::now() < until {
                    std::hint::spin_loop();
                }
            } else {
                std::thread::sleep(delay);
            }
            // A random victim: the consumer a quarter of the time, the
            // recoverer an eighth, a producer otherwise.
            let pick = self.rng.below(8);
            let victim = if pick < 2 {
                kids.iter().position(|k| k.role == Role::Consumer)
            } else if pick == 2 {
                kids.iter().position(|k| k.role == Role::Recoverer)
            } else {
                let producers: Vec<usize> = (0..kids.len())
                    .filter(|&i| matches!(kids[i].role, Role::Producer(_)))
                    .collect();
                Some(producers[self.rng.below(producers.len() as u64) as usize])
            }
            .expect("every role has a live child");
            let asleep = self.asleep(kids[victim].child.id());
            if let Some(status) = kids[victim]
                .child
                .try_wait()
                .map_err(|e| format!("wait: {e}"))?
            {
                // Its own timer was quicker.
                let kid = kids.swap_remove(victim);
                let role = kid.role;
                self.buried(kid, status, By::SelfArmed, false);
                kids.push(self.spawn(role)?);
                continue;
            }
            kids[victim]
                .child
                .kill()
                .map_err(|e| format!("kill: {e}"))?;
            let status = Self::reap(&mut kids[victim])?;
            let kid = kids.swap_remove(victim);
            let role = kid.role;
            self.buried(kid, status, By::Orchestrator, asleep);
            kids.push(self.spawn(role)?);
            // No unit delivered for STALL while children live: a hang.
            let delivered = lock(&self.ledger).tickets.len();
            if delivered != last_progress.0 {
                last_progress = (delivered, Instant::now());
            } else if last_progress.1.elapsed() > STALL {
                return Err(format!(
                    "hang: no unit delivered for {STALL:?}; stats {:?}; participants {:?}",
                    self.pool.stats(),
                    self.pool.participants()
                ));
            }
        }
        Ok(())
    }

    /// Kills the children left, recovers, drains the ring, and checks.
    fn finish(&mut self, kids: Vec<Kid>) {
        for mut kid in kids {
            self.beat();
            let asleep = self.asleep(kid.child.id());
            let _ = kid.child.kill(); // an error: it died already
            match Self::reap(&mut kid) {
                Ok(status) => self.buried(kid, status, By::Teardown, asleep),
                Err(e) => self.report.failures.push(e),
            }
        }
        // Every child is dead and reaped. Recover whatever is left (the
        // deaths above were recovered one by one; this must find nothing).
        let r = self.pool.recover_dead().expect("recover_dead");
        if r.participants != 0 {
            self.report
                .failures
                .push(format!("a last recover_dead still found {r:?}"));
        }
        // The final consumer is this process: drain the ring.
        let reader = self.pool.open_reader();
        loop {
            match reader.try_recv() {
                Ok(Some(u)) => {
                    let mut l = lock(&self.ledger);
                    match verify(&u) {
                        Ok((s, i, seq)) => l.delivered(u.ticket(), s, i, seq),
                        Err(why) => l.corrupt(u.ticket(), &why),
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    self.report.failures.push(format!("final drain: {e}"));
                    break;
                }
            }
        }
        drop(reader);
        self.check_pool();
        self.check_ledger();
    }

    fn check_pool(&mut self) {
        let count = self.cfg.segments;
        let s = self.pool.stats();
        self.report.final_stats = s;
        self.report.published = s.published;
        self.report.unaccounted = count - s.free.min(count);
        let f = &mut self.report.failures;
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
        let writer = self.pool.open_writer();
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
        let after = self.pool.stats();
        if after.free != count || after.published != s.published {
            f.push(format!("aborting the claims changed the pool: {after:?}"));
        }
    }

    fn check_ledger(&mut self) {
        let l = lock(&self.ledger);
        let r = &mut self.report;
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
            if seq == n && self.killed_producers.contains(&inc) {
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
        if r.kills < self.cfg.kills {
            r.failures
                .push(format!("only {} of {} kills made", r.kills, self.cfg.kills));
        }
    }
}

/// Runs the harness: `make_cmd` gives a command that runs this file's
/// [`child_from_env`] (the environment and stdout are set here).
pub fn run(cfg: &Config, make_cmd: &dyn Fn() -> Command) -> Result<Report, String> {
    let started = Instant::now();
    let pool = SegmentPool::builder(cfg.segment_size, cfg.segments)
        .acquire_timeout(CHILD_PATIENCE)
        .build()
        .map_err(|e| format!("create the pool: {e}"))?;
    let board = Board::create().map_err(|e| format!("create the phase board: {e}"))?;
    let heartbeat = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicU64::new(0));
    // The watchdog: a main loop that stops moving for a minute is a hang,
    // and a hang must fail loudly rather than block a CI job.
    let watchdog = {
        let (heartbeat, stop) = (heartbeat.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut last = (u64::MAX, Instant::now());
            while stop.load(Ordering::Relaxed) == 0 {
                std::thread::sleep(Duration::from_millis(100));
                let now = heartbeat.load(Ordering::Relaxed);
                if now != last.0 {
                    last = (now, Instant::now());
                } else if last.1.elapsed() > Duration::from_secs(60) {
                    eprintln!("kill9: the orchestrator made no progress for 60 s: hang");
                    std::process::abort();
                }
            }
        })
    };
    let mut run = Run {
        cfg,
        make_cmd,
        pool,
        board,
        ledger: Arc::new(Mutex::new(Ledger::default())),
        rng: Rng(cfg.seed),
        next_inc: 0,
        killed_producers: HashSet::new(),
        report: Report::default(),
        heartbeat,
    };
    let mut kids = Vec::new();
    let mut result = Ok(());
    for slot in 0..cfg.producers {
        match run.spawn(Role::Producer(slot)) {
            Ok(k) => kids.push(k),
            Err(e) => result = Err(e),
        }
    }
    for role in [Role::Consumer, Role::Recoverer] {
        if result.is_ok() {
            match run.spawn(role) {
                Ok(k) => kids.push(k),
                Err(e) => result = Err(e),
            }
        }
    }
    if result.is_ok() {
        result = run.kill_loop(&mut kids);
    }
    // Also on error: no child may outlive the run.
    run.finish(kids);
    stop.store(1, Ordering::Relaxed);
    let _ = watchdog.join();
    if let Err(e) = result {
        run.report.failures.insert(0, e);
    }
    run.report.elapsed = started.elapsed();
    Ok(run.report)
}

/// Nothing of ours in `/dev/shm` (the pool is a memfd: there never is).
pub fn leftover_shm() -> Vec<String> {
    let prefix = format!("segpool-{}-", std::process::id());
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}

fn main() {
    if let Some(code) = child_from_env() {
        std::process::exit(code);
    }
    let cfg = match parse_args(std::env::args().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let exe = std::env::current_exe().expect("the path of this executable");
    let report = match run(&cfg, &|| Command::new(&exe)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("kill9: {e}");
            std::process::exit(1);
        }
    };
    report.print(&cfg);
    let left = leftover_shm();
    if !left.is_empty() {
        eprintln!("kill9: left in /dev/shm: {left:?}");
        std::process::exit(1);
    }
    if !report.ok() {
        std::process::exit(1);
    }
}
