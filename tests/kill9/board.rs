//! The phase board: where each child was when it died.
//!
//! One word per child slot in a shared memfd, `incarnation << 8 | phase`,
//! stored by the child before each step and read by the orchestrator after
//! the child died. Plain atomics, no syscall, so it shifts no timing.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};

/// The phase board's inherited file descriptor number.
pub const BOARD_ENV: &str = "SEGPOOL_KILL9_BOARD";

/// A mapping of the board.
pub struct Board {
    map: memmap2::MmapRaw,
    /// The memfd (orchestrator only; children reach it by number).
    fd: Option<OwnedFd>,
}

impl Board {
    /// Child slots: the producers, then the consumer, then the recoverer.
    pub const SLOTS: usize = 64;
    const LEN: usize = Self::SLOTS * 8;

    /// A fresh board whose memfd every child inherits (no close-on-exec).
    pub fn create() -> std::io::Result<Board> {
        let fd = rustix::fs::memfd_create("segpool-kill9-board", rustix::fs::MemfdFlags::empty())?;
        rustix::fs::ftruncate(&fd, Self::LEN as u64)?;
        let map = memmap2::MmapOptions::new().len(Self::LEN).map_raw(&fd)?;
        Ok(Board { map, fd: Some(fd) })
    }

    /// The descriptor number children find the board at.
    pub fn fd_number(&self) -> i32 {
        self.fd.as_ref().map_or(-1, |fd| fd.as_raw_fd())
    }

    /// The board a child inherited (its number in [`BOARD_ENV`]).
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
        Ok(Board { map, fd: None })
    }

    fn words(&self) -> &[AtomicU64] {
        // SAFETY: the mapping is `LEN = SLOTS * 8` bytes, page-aligned (so
        // aligned for AtomicU64), and lives as long as `self`; any bit
        // pattern is a valid AtomicU64, and every process touches these
        // words only through atomic operations.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr().cast::<AtomicU64>(), Self::SLOTS) }
    }

    /// Incarnation `inc` of `slot` enters `phase`.
    fn set(&self, slot: usize, inc: u32, phase: Phase) {
        // Relaxed: read only after the writer is dead and reaped.
        self.words()[slot].store(u64::from(inc) << 8 | phase as u64, Ordering::Relaxed);
    }

    /// The last phase incarnation `inc` of `slot` stored, or `Starting`.
    pub fn get(&self, slot: usize, inc: u32) -> Phase {
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

/// A child's own word on the board.
pub struct Slot {
    board: Board,
    /// Its slot.
    pub index: usize,
    /// Its incarnation.
    pub inc: u32,
}

impl Slot {
    /// Incarnation `inc` of slot `index`, on the board it inherited.
    pub fn inherited(index: usize, inc: u32) -> Result<Slot, String> {
        let board = Board::inherited()?;
        Ok(Slot { board, index, inc })
    }

    /// Stores that this child enters `phase`.
    pub fn enter(&self, phase: Phase) {
        self.board.set(self.index, self.inc, phase);
    }
}

/// Where a child was: the last phase it stored before it died.
///
/// | phase | role | where |
/// | --- | --- | --- |
/// | `Starting` | any | started, not yet attached (nothing stored yet) |
/// | `Idle` | producer | between units |
/// | `Begin` | producer | inside `begin_unit` (claiming, or asleep on a full pool) |
/// | `Write` | producer | holds a lease, filling the segment |
/// | `Commit` | producer | inside `commit_unit` |
/// | `Report` | producer | commit returned `Ok`; reporting it |
/// | `Recv` | consumer | inside `recv` (taking, or asleep on an empty ring) |
/// | `Check` | consumer | a unit taken; verifying and reporting it |
/// | `Hold` | consumer | holding views for a while |
/// | `Drop` | consumer | dropping views (segments going back) |
/// | `Recover` | recoverer | inside `recover_dead` |
/// | `Rest` | recoverer | between two recoveries |
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Starting,
    Idle,
    Begin,
    Write,
    Commit,
    Report,
    Recv,
    Check,
    Hold,
    Drop,
    Recover,
    Rest,
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

    /// The row of the kill table a death in this phase counts in;
    /// `asleep`: the participant table showed the process in a wait.
    pub fn describe(self, asleep: bool) -> &'static str {
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
