//! A reference model of one pool, and a harness that runs every operation
//! against the real pool and the model side by side.
//!
//! The model is what the API promises, written as plainly as possible: a
//! phase per segment (free, writing, queued, held), the open units with the
//! bytes they hold, a FIFO of published units, reference counts of received
//! ones, and the counters. After every step [`Harness::check`] compares it
//! with `published`, `reclaimed` and `stats()`; every received byte is
//! compared with what was written, again when each view drops (a segment
//! handed to a writer while a view lives would show up there).
//!
//! Single-threaded and with `acquire_timeout = 0`, so every outcome is
//! determined: which error, which ticket, which bytes. Only the choice of a
//! free segment is the pool's; the model checks it was free.

use arbitrary::Arbitrary;
use segpool::{Error, Reader, SegmentPool, Unit, UnitWriter, Writer};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::Duration;

/// Alignment of every `write_binary` offset.
pub const ALIGN: usize = 64;

/// Long enough never to expire on a loaded machine, for receives the model
/// says return at once (a wrong model fails instead of hanging).
const PROMPT: Duration = Duration::from_secs(20);

/// One step. Indices (`slot`, `unit`) pick among the open units / live
/// views modulo their number; with none, the step does nothing.
#[derive(Arbitrary, Clone, Debug)]
pub enum Op {
    /// `begin_unit` with timeout 0.
    Begin,
    /// `write_binary` of `len` patterned bytes into open unit `slot`.
    Write {
        /// Which open unit.
        slot: u8,
        /// Bytes to write (may not fit).
        len: u16,
        /// Seed of the byte pattern.
        fill: u8,
    },
    /// `reserve(len)`, then fill the loan in place.
    Reserve {
        /// Which open unit.
        slot: u8,
        /// Bytes to reserve.
        len: u16,
        /// Seed of the byte pattern.
        fill: u8,
    },
    /// `spare_mut`, fill the first `len` bytes of it, then `advance(len)`.
    Spare {
        /// Which open unit.
        slot: u8,
        /// Bytes to use.
        len: u16,
        /// Seed of the byte pattern.
        fill: u8,
    },
    /// `commit_unit`.
    Commit {
        /// Which open unit.
        slot: u8,
    },
    /// `abort_unit`.
    Abort {
        /// Which open unit.
        slot: u8,
    },
    /// Dropping an open unit without committing it.
    DropWriter {
        /// Which open unit.
        slot: u8,
    },
    /// `try_recv`.
    TryRecv,
    /// `recv_timeout`: zero when the model says nothing is due.
    Recv,
    /// Cloning a received unit.
    CloneUnit {
        /// Which live view.
        unit: u8,
    },
    /// `view(offset, len)` of a live view.
    View {
        /// Which live view.
        unit: u8,
        /// Offset into it.
        offset: u16,
        /// Length.
        len: u16,
    },
    /// `read_binary(offset, len)` of a live view.
    Read {
        /// Which live view.
        unit: u8,
        /// Offset into it.
        offset: u16,
        /// Length.
        len: u16,
    },
    /// Dropping a live view (or clone).
    DropUnit {
        /// Which live view.
        unit: u8,
    },
    /// `reset`.
    Reset,
    /// `shutdown_arena`.
    Shutdown,
}

/// `len` bytes of a pattern that differs per `fill` and per position.
pub fn pattern(fill: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| fill.wrapping_add((i as u8).wrapping_mul(31)) ^ (i >> 8) as u8)
        .collect()
}

fn pick(i: u8, n: usize) -> Option<usize> {
    (n > 0).then(|| usize::from(i) % n)
}

/// Where a segment is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Free,
    Writing,
    Queued,
    Held,
}

/// Bytes of a unit as far as they are known: `None` is alignment padding,
/// which holds whatever an earlier unit left there.
type Known = Rc<[Option<u8>]>;

#[derive(Debug)]
struct Open {
    seg: usize,
    generation: u32,
    /// One entry per byte of the span so far.
    bytes: Vec<Option<u8>>,
}

#[derive(Debug)]
struct Queued {
    ticket: u64,
    seg: usize,
    generation: u32,
    bytes: Known,
}

#[derive(Debug)]
struct Taken {
    seg: usize,
    refs: usize,
}

#[derive(Clone, Debug)]
struct View {
    ticket: u64,
    generation: u32,
    start: usize,
    len: usize,
    bytes: Known,
}

impl View {
    fn known(&self) -> &[Option<u8>] {
        &self.bytes[self.start..self.start + self.len]
    }
}

/// The reference model.
#[derive(Debug)]
pub struct Model {
    segment_size: usize,
    phases: Vec<Phase>,
    open: Vec<Open>,
    queue: VecDeque<Queued>,
    taken: HashMap<u64, Taken>,
    views: Vec<View>,
    published: u64,
    reclaimed: u64,
    generation: u32,
    shutdown: bool,
}

impl Model {
    /// A fresh pool of `count` segments of `segment_size` bytes.
    pub fn new(segment_size: usize, count: usize) -> Self {
        Model {
            segment_size,
            phases: vec![Phase::Free; count],
            open: Vec::new(),
            queue: VecDeque::new(),
            taken: HashMap::new(),
            views: Vec::new(),
            published: 0,
            reclaimed: 0,
            generation: 0,
            shutdown: false,
        }
    }

    fn in_phase(&self, p: Phase) -> usize {
        self.phases.iter().filter(|&&q| q == p).count()
    }

    /// Where a write of `len` bytes lands after `cursor`, if it fits.
    fn place(&self, cursor: usize, len: usize) -> (usize, bool) {
        let offset = cursor.next_multiple_of(ALIGN);
        (offset, offset + len <= self.segment_size)
    }

    fn written(&mut self, slot: usize, offset: usize, data: &[u8]) {
        let o = &mut self.open[slot];
        o.bytes.resize(offset, None);
        o.bytes.extend(data.iter().map(|&b| Some(b)));
    }

    fn receive(&mut self, q: Queued) {
        self.phases[q.seg] = Phase::Held;
        self.taken.insert(
            q.ticket,
            Taken {
                seg: q.seg,
                refs: 1,
            },
        );
        self.views.push(View {
            ticket: q.ticket,
            generation: q.generation,
            start: 0,
            len: q.bytes.len(),
            bytes: q.bytes,
        });
    }

    fn drop_view(&mut self, i: usize) {
        let v = self.views.remove(i);
        let t = self
            .taken
            .get_mut(&v.ticket)
            .expect("a view's unit is taken");
        t.refs -= 1;
        if t.refs == 0 {
            let seg = self.taken.remove(&v.ticket).expect("present").seg;
            self.phases[seg] = Phase::Free;
            self.reclaimed += 1;
        }
    }
}

/// Asserts that `bytes` agree with every known byte of `known`.
fn same_bytes(bytes: &[u8], known: &[Option<u8>], ctx: &dyn Fn() -> String) {
    assert_eq!(bytes.len(), known.len(), "{}: length", ctx());
    for (i, (&b, k)) in bytes.iter().zip(known).enumerate() {
        if let Some(k) = *k {
            assert_eq!(b, k, "{}: byte {i} of {}", ctx(), bytes.len());
        }
    }
}

/// The real pool and the model, stepped together.
pub struct Harness<'w> {
    pool: &'w SegmentPool,
    writer: &'w Writer,
    reader: Reader,
    open: Vec<UnitWriter>,
    units: Vec<Unit>,
    model: Model,
    step: usize,
}

impl<'w> Harness<'w> {
    /// A harness over a fresh `pool` (with `acquire_timeout = 0`) and a
    /// writer of it.
    pub fn new(pool: &'w SegmentPool, writer: &'w Writer) -> Self {
        let model = Model::new(pool.segment_size(), pool.count());
        let h = Harness {
            pool,
            writer,
            reader: pool.open_reader(),
            open: Vec::new(),
            units: Vec::new(),
            model,
            step: 0,
        };
        h.check();
        h
    }

    /// Runs `op` on both and checks they agree.
    pub fn apply(&mut self, op: &Op) {
        self.step += 1;
        let step = self.step;
        let ctx = move || format!("step {step}: {op:?}");
        let m = &mut self.model;
        match *op {
            Op::Begin => {
                let got = self.writer.begin_unit();
                if m.shutdown {
                    assert!(matches!(got, Err(Error::Shutdown)), "{}: {got:?}", ctx());
                } else if m.in_phase(Phase::Free) == 0 {
                    let count = m.phases.len();
                    assert!(
                        matches!(got, Err(Error::Exhausted { count: c }) if c == count),
                        "{}: {got:?}",
                        ctx()
                    );
                } else {
                    let u = got.unwrap_or_else(|e| panic!("{}: {e}", ctx()));
                    let seg = u.segment();
                    assert_eq!(
                        m.phases.get(seg),
                        Some(&Phase::Free),
                        "{}: handed segment {seg}, which is not free",
                        ctx()
                    );
                    assert!(u.is_empty(), "{}", ctx());
                    m.phases[seg] = Phase::Writing;
                    m.open.push(Open {
                        seg,
                        generation: m.generation,
                        bytes: Vec::new(),
                    });
                    self.open.push(u);
                }
            }
            Op::Write { slot, len, fill } => {
                let Some(i) = pick(slot, self.open.len()) else {
                    return self.check();
                };
                let data = pattern(fill, len.into());
                let got = self.open[i].write_binary(&data);
                let (offset, fits) = m.place(m.open[i].bytes.len(), data.len());
                if fits {
                    assert_eq!(got.ok(), Some((offset, data.len())), "{}", ctx());
                    m.written(i, offset, &data);
                } else {
                    assert!(
                        matches!(got, Err(Error::TooLarge { requested, offset: o, .. })
                            if requested == data.len() && o == offset),
                        "{}: {got:?}",
                        ctx()
                    );
                }
            }
            Op::Reserve { slot, len, fill } => {
                let Some(i) = pick(slot, self.open.len()) else {
                    return self.check();
                };
                let data = pattern(fill, len.into());
                let (offset, fits) = m.place(m.open[i].bytes.len(), data.len());
                match self.open[i].reserve(data.len()) {
                    Ok((o, buf)) => {
                        assert!(fits, "{}: reserve fit past the end", ctx());
                        assert_eq!((o, buf.len()), (offset, data.len()), "{}", ctx());
                        buf.copy_from_slice(&data);
                        m.written(i, offset, &data);
                    }
                    Err(e) => assert!(
                        !fits && matches!(e, Error::TooLarge { .. }),
                        "{}: {e:?}",
                        ctx()
                    ),
                }
            }
            Op::Spare { slot, len, fill } => {
                let Some(i) = pick(slot, self.open.len()) else {
                    return self.check();
                };
                let cursor = m.open[i].bytes.len();
                let (offset, fits) = m.place(cursor, len.into());
                let data = pattern(fill, len.into());
                let (o, spare) = self.open[i].spare_mut();
                assert_eq!(o, offset.min(m.segment_size), "{}: spare offset", ctx());
                assert_eq!(spare.len(), m.segment_size - o, "{}: spare length", ctx());
                let n = data.len().min(spare.len());
                spare[..n].copy_from_slice(&data[..n]);
                let got = self.open[i].advance(data.len());
                if fits {
                    assert_eq!(got.ok(), Some(offset), "{}", ctx());
                    m.written(i, offset, &data);
                } else {
                    assert!(
                        matches!(got, Err(Error::TooLarge { .. })),
                        "{}: {got:?}",
                        ctx()
                    );
                }
            }
            Op::Commit { slot } => {
                let Some(i) = pick(slot, self.open.len()) else {
                    return self.check();
                };
                let got = self.open.remove(i).commit_unit();
                let o = m.open.remove(i);
                if m.shutdown {
                    assert!(matches!(got, Err(Error::Shutdown)), "{}: {got:?}", ctx());
                    m.phases[o.seg] = Phase::Free;
                } else if o.generation != m.generation {
                    assert!(matches!(got, Err(Error::Stale)), "{}: {got:?}", ctx());
                    m.phases[o.seg] = Phase::Free;
                } else {
                    assert_eq!(got.ok(), Some(o.bytes.len()), "{}: span", ctx());
                    m.phases[o.seg] = Phase::Queued;
                    m.queue.push_back(Queued {
                        ticket: m.published,
                        seg: o.seg,
                        generation: o.generation,
                        bytes: o.bytes.into(),
                    });
                    m.published += 1;
                }
            }
            Op::Abort { slot } | Op::DropWriter { slot } => {
                let Some(i) = pick(slot, self.open.len()) else {
                    return self.check();
                };
                let u = self.open.remove(i);
                if matches!(op, Op::Abort { .. }) {
                    u.abort_unit();
                } else {
                    drop(u);
                }
                let o = m.open.remove(i);
                m.phases[o.seg] = Phase::Free;
            }
            Op::TryRecv | Op::Recv => {
                let due = !m.queue.is_empty() || m.shutdown;
                let got = match op {
                    Op::TryRecv => self.reader.try_recv(),
                    _ if due => self.reader.recv_timeout(PROMPT).map(Some),
                    _ => match self.reader.recv_timeout(Duration::ZERO) {
                        Err(Error::Timeout(_)) => Ok(None),
                        other => other.map(Some),
                    },
                };
                match m.queue.pop_front() {
                    Some(q) => {
                        let u = got
                            .unwrap_or_else(|e| panic!("{}: {e}", ctx()))
                            .unwrap_or_else(|| panic!("{}: a unit is queued", ctx()));
                        assert_eq!(
                            (u.ticket(), u.segment(), u.generation()),
                            (q.ticket, q.seg, q.generation),
                            "{}: (ticket, segment, generation)",
                            ctx()
                        );
                        same_bytes(u.as_bytes(), &q.bytes, &ctx);
                        m.receive(q);
                        self.units.push(u);
                    }
                    None if m.shutdown => {
                        assert!(matches!(got, Err(Error::Shutdown)), "{}: {got:?}", ctx())
                    }
                    None => assert!(matches!(got, Ok(None)), "{}: {got:?}", ctx()),
                }
            }
            Op::CloneUnit { unit } => {
                let Some(i) = pick(unit, self.units.len()) else {
                    return self.check();
                };
                self.units.push(self.units[i].clone());
                let v = m.views[i].clone();
                m.taken.get_mut(&v.ticket).expect("taken").refs += 1;
                m.views.push(v);
            }
            Op::View { unit, offset, len } | Op::Read { unit, offset, len } => {
                let Some(i) = pick(unit, self.units.len()) else {
                    return self.check();
                };
                let (offset, len) = (usize::from(offset), usize::from(len));
                let v = &m.views[i];
                let fits = offset + len <= v.len;
                let u = &self.units[i];
                if let Op::Read { .. } = op {
                    match u.read_binary(offset, len) {
                        Ok(b) if fits => same_bytes(b, &v.known()[offset..offset + len], &ctx),
                        other => assert!(
                            !fits && matches!(other, Err(Error::OutOfBounds { .. })),
                            "{}: {other:?}",
                            ctx()
                        ),
                    }
                } else {
                    match u.view(offset, len) {
                        Ok(sub) if fits => {
                            assert_eq!(sub.ticket(), v.ticket, "{}", ctx());
                            same_bytes(sub.as_bytes(), &v.known()[offset..offset + len], &ctx);
                            let sv = View {
                                start: v.start + offset,
                                len,
                                ..v.clone()
                            };
                            m.taken.get_mut(&sv.ticket).expect("taken").refs += 1;
                            m.views.push(sv);
                            self.units.push(sub);
                        }
                        other => assert!(
                            !fits && matches!(other, Err(Error::OutOfBounds { .. })),
                            "{}: {other:?}",
                            ctx()
                        ),
                    }
                }
            }
            Op::DropUnit { unit } => {
                let Some(i) = pick(unit, self.units.len()) else {
                    return self.check();
                };
                let u = self.units.remove(i);
                // The bytes are still what was written, however many units
                // came and went while this view lived.
                same_bytes(u.as_bytes(), m.views[i].known(), &ctx);
                assert_eq!(u.generation(), m.views[i].generation, "{}", ctx());
                drop(u);
                m.drop_view(i);
            }
            Op::Reset => {
                let got = self.pool.reset();
                let dropped = m.queue.len() as u64;
                for q in m.queue.drain(..) {
                    m.phases[q.seg] = Phase::Free;
                }
                m.reclaimed += dropped;
                m.generation += 1;
                assert_eq!(got.ok(), Some(dropped), "{}: units dropped", ctx());
            }
            Op::Shutdown => {
                self.pool.shutdown_arena();
                m.shutdown = true;
            }
        }
        self.check();
    }

    /// Compares the pool's counters and phases with the model's.
    pub fn check(&self) {
        let (m, pool, step) = (&self.model, self.pool, self.step);
        let s = pool.stats();
        let want = (
            m.published,
            m.reclaimed,
            m.in_phase(Phase::Free),
            m.in_phase(Phase::Writing),
            m.in_phase(Phase::Queued),
            m.in_phase(Phase::Held),
            m.generation,
            m.shutdown,
        );
        let got = (
            pool.published(),
            pool.reclaimed(),
            s.free,
            s.writing,
            s.queued,
            s.held,
            pool.generation(),
            pool.is_shutdown(),
        );
        assert_eq!(
            got, want,
            "after step {step}: (published, reclaimed, free, writing, queued, held, generation, shutdown)"
        );
        assert_eq!((s.published, s.reclaimed), (got.0, got.1), "stats counters");
        assert_eq!(
            (s.generation, s.shutdown),
            (got.6, got.7),
            "stats lifecycle"
        );
        // Invariant 3 on the real counters.
        assert!(s.reclaimed <= s.published, "reclaimed > published");
        assert!(
            s.published - s.reclaimed <= pool.count() as u64,
            "more units outstanding than segments"
        );
        for (u, o) in self.open.iter().zip(&m.open) {
            assert_eq!((u.segment(), u.len()), (o.seg, o.bytes.len()), "open unit");
        }
    }

    /// Drops everything still open or held, checking each view's bytes, and
    /// checks that every segment came back.
    pub fn finish(mut self) {
        while !self.units.is_empty() {
            self.apply(&Op::DropUnit { unit: 0 });
        }
        while !self.open.is_empty() {
            self.apply(&Op::DropWriter { slot: 0 });
        }
        // Units published before a shutdown still come out: drain them all.
        while !self.model.queue.is_empty() {
            self.apply(&Op::TryRecv);
            self.apply(&Op::DropUnit { unit: 0 });
        }
        assert_eq!(self.pool.stats().free, self.pool.count(), "segments lost");
    }
}

/// Builds a pool of the given geometry (timeout 0) and runs `ops` on it and
/// on the model; panics at the first disagreement.
pub fn check_sequence(segment_size: usize, count: usize, ops: &[Op]) {
    let pool = SegmentPool::builder(segment_size, count)
        .acquire_timeout(Duration::ZERO)
        .build()
        .unwrap_or_else(|e| panic!("pool {segment_size} x {count}: {e}"));
    let writer = pool.open_writer();
    let mut h = Harness::new(&pool, &writer);
    for op in ops {
        h.apply(op);
    }
    h.finish();
}
