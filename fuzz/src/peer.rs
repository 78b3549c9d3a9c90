//! Tools for the targets that play a misbehaving peer (`attach`,
//! `hostile_peer`): a second, writable view of a pool's shared object, the
//! control-area fields a peer can reach, and a driver that runs operations
//! with no model, only checking that each returns.
//!
//! The peer writes through the file (`pwrite` on `/proc/self/fd/N` or
//! `/dev/shm/NAME`), not through a mapping of its own: the bytes land in the
//! same pages the pool has mapped, which is all a peer process could do, and
//! no Rust reference aliases them. The targets are single-threaded, so no
//! write races a load.

use super::model::{Op, pattern};
use arbitrary::Arbitrary;
use segpool::__private::Layout;
use segpool::{Error, PoolHandle, Reader, SegmentPool, Unit, UnitWriter, Writer};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::Duration;

/// How long a timed call in these targets may wait: short enough for
/// thousands of executions a second, long enough to reach the futex.
pub const SHORT: Duration = Duration::from_micros(200);

/// A word of the control area a peer can overwrite.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Field {
    /// The `i % 12`-th u64 of the identity block (magic, sizes, offsets).
    Ident(u8),
    /// `tail`: the next publish ticket.
    Tail,
    /// `head`: the next ticket to take.
    Head,
    /// `reclaimed`.
    Reclaimed,
    /// The producers' futex word.
    Space,
    /// The consumers' futex word.
    Data,
    /// The shutdown flag.
    Shutdown,
    /// The generation.
    Generation,
    /// A bitmap word.
    Bitmap(u8),
    /// A descriptor's `epoch | owner | phase`.
    DescState(u8),
    /// A descriptor's committed length.
    DescLen(u8),
    /// A descriptor's generation.
    DescGeneration(u8),
    /// A participant entry's `incarnation << 2 | status`.
    PartState(u8),
    /// A participant entry's pid.
    PartPid(u8),
    /// A participant entry's count of threads asleep for space.
    PartWaiting(u8),
    /// A publish-ring slot.
    Ring(u8),
}

/// Header lines are 128 bytes (see `src/layout.rs`): ident, tail, head,
/// reclaimed, space, data, life (shutdown u32, generation u32).
const LINE: usize = 128;
/// Bytes of a descriptor (state u64, len u64, generation u32, padding).
const DESC: usize = 128;
/// Bytes of a participant entry (state u64, token u64, pid u32, waiting
/// for space u32, waiting for data u32, padding).
const PART: usize = 64;

impl Field {
    /// Byte offset and width (4 or 8) of the field in a pool of `layout`.
    pub fn locate(self, l: &Layout) -> (usize, usize) {
        let desc = |i: u8, at: usize| l.descs_offset + usize::from(i) % l.count * DESC + at;
        let part = |i: u8, at: usize| {
            l.parts_offset + usize::from(i) % segpool::MAX_PARTICIPANTS * PART + at
        };
        match self {
            Field::Ident(i) => (usize::from(i) % 12 * 8, 8),
            Field::Tail => (LINE, 8),
            Field::Head => (2 * LINE, 8),
            Field::Reclaimed => (3 * LINE, 8),
            Field::Space => (4 * LINE, 4),
            Field::Data => (5 * LINE, 4),
            Field::Shutdown => (6 * LINE, 4),
            Field::Generation => (6 * LINE + 4, 4),
            Field::Bitmap(i) => (l.bitmap_offset + usize::from(i) % l.bitmap_words() * 8, 8),
            Field::DescState(i) => (desc(i, 0), 8),
            Field::DescLen(i) => (desc(i, 8), 8),
            Field::DescGeneration(i) => (desc(i, 16), 4),
            Field::PartState(i) => (part(i, 0), 8),
            Field::PartPid(i) => (part(i, 16), 4),
            Field::PartWaiting(i) => (part(i, 20), 4),
            Field::Ring(i) => (l.ring_offset + usize::from(i) % l.ring_capacity * 8, 8),
        }
    }
}

/// One write a peer makes over the control area.
#[derive(Arbitrary, Clone, Debug)]
pub enum Scribble {
    /// Raw bytes at `offset` (folded into the control area).
    Bytes {
        /// Offset into the control area, modulo its length.
        offset: u16,
        /// What to write (cut at the end of the control area).
        bytes: Vec<u8>,
    },
    /// A value into one field.
    Set {
        /// Which field.
        field: Field,
        /// The value (truncated to the field's width).
        value: u64,
    },
    /// Adds `delta` to one field (off-by-one peers).
    Nudge {
        /// Which field.
        field: Field,
        /// Added, wrapping.
        delta: i8,
    },
}

/// A writable second view of a pool's shared object.
#[derive(Debug)]
pub struct Shared {
    file: File,
    /// The geometry of the pool (computed, as `attach` does).
    pub layout: Layout,
}

impl Shared {
    /// Opens the object `pool`'s handle names.
    pub fn of(pool: &SegmentPool) -> Shared {
        let handle = pool.handle();
        let path = path_of(&handle);
        let file = File::options()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("open {path}: {e}"));
        let layout = [4096, 16384, 65536]
            .into_iter()
            .filter_map(|page| Layout::new(pool.segment_size(), pool.count(), page).ok())
            .find(|l| l.total_len as u64 == handle.len())
            .expect("the pool's layout for some page size");
        Shared { file, layout }
    }

    /// Bytes of the control area (everything before segment 0).
    pub fn control_len(&self) -> usize {
        self.layout.segments_offset
    }

    /// Reads the whole control area.
    pub fn read_control(&self) -> Vec<u8> {
        let mut buf = vec![0; self.control_len()];
        self.file
            .read_exact_at(&mut buf, 0)
            .expect("read control area");
        buf
    }

    /// Applies `s` to the shared object. Only the bytes `s` changes are written, so it may run while the pool
    /// is in use.
    pub fn scribble(&self, s: &Scribble) {
        let mut control = self.read_control();
        let (at, len) = apply(&mut control, &self.layout, s);
        self.file
            .write_all_at(&control[at..at + len], at as u64)
            .expect("write control area");
    }
}

/// Applies `s` to a copy of a control area laid out as `layout`; returns
/// the offset and length of the bytes it wrote.
pub fn apply(control: &mut [u8], layout: &Layout, s: &Scribble) -> (usize, usize) {
    let n = control.len();
    match s {
        Scribble::Bytes { offset, bytes } => {
            let at = usize::from(*offset) % n;
            let len = bytes.len().min(n - at);
            control[at..at + len].copy_from_slice(&bytes[..len]);
            (at, len)
        }
        Scribble::Set { field, value } => {
            let (at, width) = field.locate(layout);
            control[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
            (at, width)
        }
        Scribble::Nudge { field, delta } => {
            let (at, width) = field.locate(layout);
            let mut word = [0u8; 8];
            word[..width].copy_from_slice(&control[at..at + width]);
            let v = u64::from_le_bytes(word).wrapping_add(*delta as i64 as u64);
            control[at..at + width].copy_from_slice(&v.to_le_bytes()[..width]);
            (at, width)
        }
    }
}

/// `/proc/self/fd/N` or `/dev/shm/NAME` for a handle.
pub fn path_of(handle: &PoolHandle) -> String {
    if let Some(name) = handle.name() {
        return format!("/dev/shm{name}");
    }
    let shown = handle.to_string();
    let fd = shown
        .split(' ')
        .find_map(|w| w.strip_prefix("fd="))
        .expect("a memfd handle names its fd");
    format!("/proc/self/fd/{fd}")
}

/// Runs operations on a pool that a peer may have corrupted, with bounded
/// waits only, checking what must hold whatever the control area says:
/// every call returns, and every unit received lies inside its segment.
pub struct Driver<'w> {
    pool: &'w SegmentPool,
    writer: &'w Writer,
    reader: Reader,
    open: Vec<UnitWriter>,
    units: Vec<Unit>,
}

fn pick(i: u8, n: usize) -> Option<usize> {
    (n > 0).then(|| usize::from(i) % n)
}

impl<'w> Driver<'w> {
    /// A driver over `pool` and a writer of it.
    pub fn new(pool: &'w SegmentPool, writer: &'w Writer) -> Self {
        Driver {
            pool,
            writer,
            reader: pool.open_reader(),
            open: Vec::new(),
            units: Vec::new(),
        }
    }

    fn keep(&mut self, got: Result<Option<Unit>, Error>) {
        if let Ok(Some(u)) = got {
            assert!(
                u.segment() < self.pool.count(),
                "unit in segment {}",
                u.segment()
            );
            assert!(
                u.len() <= self.pool.segment_size(),
                "unit of {} bytes",
                u.len()
            );
            // Touch every byte: under ASan an out-of-bounds view fails here.
            std::hint::black_box(u.as_bytes().iter().fold(0u8, |a, &b| a ^ b));
            self.units.push(u);
        }
    }

    /// Runs one operation; its result only has to exist.
    pub fn apply(&mut self, op: &Op) {
        match *op {
            Op::Begin => match self.writer.begin_unit() {
                Ok(u) => self.open.push(u),
                Err(Error::Exhausted { .. }) => {
                    if let Ok(u) = self.writer.begin_unit_timeout(SHORT) {
                        self.open.push(u);
                    }
                }
                Err(_) => {}
            },
            Op::Write { slot, len, fill } | Op::Reserve { slot, len, fill } => {
                if let Some(i) = pick(slot, self.open.len()) {
                    let data = pattern(fill, len.into());
                    if let Ok((offset, n)) = self.open[i].write_binary(&data) {
                        assert!(offset + n <= self.pool.segment_size());
                    }
                }
            }
            Op::Spare { slot, len, fill } => {
                if let Some(i) = pick(slot, self.open.len()) {
                    let (_, spare) = self.open[i].spare_mut();
                    spare.iter_mut().take(len.into()).for_each(|b| *b = fill);
                    let _ = self.open[i].advance(len.into());
                }
            }
            Op::Commit { slot } => {
                if let Some(i) = pick(slot, self.open.len()) {
                    let _ = self.open.remove(i).commit_unit();
                }
            }
            Op::Abort { slot } | Op::DropWriter { slot } => {
                if let Some(i) = pick(slot, self.open.len()) {
                    self.open.remove(i).abort_unit();
                }
            }
            Op::TryRecv => {
                let got = self.reader.try_recv();
                self.keep(got);
            }
            Op::Recv => {
                let got = self.reader.recv_timeout(SHORT).map(Some);
                self.keep(got);
            }
            Op::CloneUnit { unit } => {
                if let Some(i) = pick(unit, self.units.len()) {
                    self.units.push(self.units[i].clone());
                }
            }
            Op::View { unit, offset, len } | Op::Read { unit, offset, len } => {
                if let Some(i) = pick(unit, self.units.len()) {
                    let u = &self.units[i];
                    if let Ok(b) = u.read_binary(offset.into(), len.into()) {
                        std::hint::black_box(b.last());
                    }
                    if let Ok(v) = u.view(offset.into(), len.into()) {
                        self.keep(Ok(Some(v)));
                    }
                }
            }
            Op::DropUnit { unit } => {
                if let Some(i) = pick(unit, self.units.len()) {
                    self.units.remove(i);
                }
            }
            Op::Reset => {
                let _ = self.pool.reset();
            }
            Op::Shutdown => self.pool.shutdown_arena(),
        }
        std::hint::black_box(self.pool.stats());
    }

    /// Runs recovery as a survivor would: for this pid (refused: we are
    /// alive) and for every participant the table says is dead, which a
    /// peer may have forged.
    pub fn recover(&mut self) {
        let _ = self.pool.recover_writer(std::process::id());
        let _ = std::hint::black_box(self.pool.recover_dead());
    }

    /// Drops every unit and open writer, then shuts down and drains: all of
    /// it bounded, however corrupt the control area is.
    pub fn finish(mut self) {
        self.units.clear();
        self.open.clear();
        self.pool.shutdown_arena();
        // At most `count` units can be queued in an honest pool; a corrupt
        // ring may claim more, so bound the drain.
        for _ in 0..self.pool.count() + 2 {
            match self.reader.recv_timeout(SHORT) {
                Ok(u) => self.keep(Ok(Some(u))),
                Err(_) => break,
            }
        }
        self.units.clear();
    }
}
