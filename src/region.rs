//! This process's membership in a mapped pool: its participant entry, the
//! liveness witness that keeps the entry its own, the death watch of its
//! sleepers, recovery of the dead, and the fork guard's view of all that.
//! The mapping itself is `crate::mapping`'s.

use crate::error::{Error, Result};
use crate::handle::PoolHandle;
use crate::layout::{Layout, Owner};
use crate::liveness::{self, Witness};
use crate::mapping::Mapping;
use crate::protocol::{Control, Recovered};
use crate::watch::{Peer, Watch, Watched};
use rustix::fd::BorrowedFd;
use std::sync::Arc;
use std::time::Duration;

/// A mapped pool, shared by every handle of this process (pool, writers,
/// readers, units) through an `Arc`; unmapped when the last one drops.
///
/// It is also this process's participant in the pool: dropping the last
/// reference leaves the pool (committed units stay in the ring, the entry is
/// freed) and releases the liveness lock. In a process that inherited the
/// region through `fork`, dropping it does nothing to the pool (`crate::fork`).
#[derive(Debug)]
pub(crate) struct Region {
    mapping: Mapping,
    /// Cached `getpid()`: recorded in our participant entry.
    pid: u32,
    /// Our pidfd's inode as recorded in our entry (0: none).
    pid_ino: u64,
    /// Process-local reference counts: how many `Unit`s of this process
    /// hold each segment (the last one to drop releases it).
    holders: Box<[std::sync::atomic::AtomicU32]>,
    /// Our participant entry, once joined; `witness` holds its lock.
    me: Option<Owner>,
    witness: Witness,
    /// The process's fork generation when this region was made.
    fork_generation: u64,
    /// One recoverer at a time through `witness`'s description (see
    /// `Control::recover_dead`). Never taken in an inherited region.
    turn: std::sync::Mutex<()>,
    /// `fork_generation` while this region may act on the pool; `u64::MAX`
    /// once the witness is lost. The fast paths compare the process's
    /// generation with it, one load for both checks.
    acting_generation: std::sync::atomic::AtomicU64,
    /// The death watcher of this region's sleepers.
    watch: Watch,
    /// What recoveries run through this region did, added up (atomics, not
    /// a mutex: a child of a fork may read them).
    recovered: Tally,
    /// When the last fallback sweep ran (ms since `born`), to run them at
    /// most every `FALLBACK` however many threads wake up.
    last_sweep: std::sync::atomic::AtomicU64,
    born: std::time::Instant,
}

/// [`Recovered`], added up with atomics.
#[derive(Debug, Default)]
struct Tally([std::sync::atomic::AtomicU64; 4]);

impl Tally {
    fn add(&self, r: Recovered) {
        use std::sync::atomic::Ordering::Relaxed;
        // Relaxed: statistics.
        for (cell, n) in self
            .0
            .iter()
            .zip([r.participants, r.freed, r.delivered, r.scrubbed])
        {
            if n > 0 {
                cell.fetch_add(n as u64, Relaxed);
            }
        }
    }

    fn get(&self) -> Recovered {
        use std::sync::atomic::Ordering::Relaxed;
        let [p, f, d, s] = [0, 1, 2, 3].map(|i| self.0[i].load(Relaxed) as usize);
        Recovered {
            participants: p,
            freed: f,
            delivered: d,
            scrubbed: s,
        }
    }
}

fn holders(count: usize) -> Box<[std::sync::atomic::AtomicU32]> {
    (0..count).map(|_| Default::default()).collect()
}

fn current_pid() -> u32 {
    rustix::process::getpid()
        .as_raw_nonzero()
        .get()
        .unsigned_abs()
}

impl Region {
    /// Creates a pool and joins it.
    pub(crate) fn create(layout: Layout, named: bool, prefault_pages: bool) -> Result<Region> {
        let mut region = Region::assemble(Mapping::create(layout, named, prefault_pages)?)?;
        region.join()?;
        Ok(region)
    }

    /// Attaches to the pool a handle names, joins it, and recovers whoever
    /// died before we came (now, not at the first full pool).
    pub(crate) fn open(handle: &PoolHandle) -> Result<Region> {
        let mut region = Region::assemble(Mapping::open(handle)?)?;
        region.join()?;
        region.sweep()?;
        Ok(region)
    }

    /// A region over a mapped pool, not yet joined (it owns nothing and
    /// leaves nothing until `join` succeeds).
    fn assemble(mapping: Mapping) -> Result<Region> {
        let fork_generation = crate::fork::generation_at_birth()?;
        let witness = Witness::open(mapping.fd(), fork_generation)?;
        let watch = Watch::new()?;
        let count = mapping.layout().count;
        Ok(Region {
            mapping,
            pid: current_pid(),
            pid_ino: crate::watch::own_pid_ino(),
            holders: holders(count),
            me: None,
            witness,
            fork_generation,
            turn: Default::default(),
            acting_generation: std::sync::atomic::AtomicU64::new(fork_generation),
            watch,
            recovered: Default::default(),
            last_sweep: Default::default(),
            born: std::time::Instant::now(),
        })
    }

    /// Claims a participant entry under a liveness lock.
    fn join(&mut self) -> Result<()> {
        let mut token = [0u8; 8];
        rustix::rand::getrandom(&mut token, rustix::rand::GetRandomFlags::empty())
            .map_err(|e| Error::io("getrandom", e))?;
        let mut lock_error = None;
        let witness = &self.witness;
        let mut try_lock = |i: usize| match witness.try_lock(i) {
            Ok(got) => got,
            Err(e) => {
                lock_error.get_or_insert(e);
                false
            }
        };
        let joined = self.control().join(
            &mut try_lock,
            self.pid,
            u64::from_le_bytes(token),
            self.pid_ino,
        );
        match (joined, lock_error) {
            (Ok(me), _) => {
                self.me = Some(me);
                Ok(())
            }
            (Err(_), Some(e)) => Err(e),
            (Err(e), None) => Err(e),
        }
    }

    /// The pool's geometry (computed locally, never re-read from the peer).
    pub(crate) fn layout(&self) -> &Layout {
        self.mapping.layout()
    }

    /// The protocol over this pool's control area.
    #[inline]
    pub(crate) fn control(&self) -> &Control<'_> {
        self.mapping.control()
    }

    /// This process's participant tag.
    #[inline]
    pub(crate) fn me(&self) -> Owner {
        // A region is only handed out once `join` succeeded.
        self.me.expect("joined")
    }

    /// Whether this region was inherited through `fork` (one relaxed load).
    #[inline]
    pub(crate) fn inherited(&self) -> bool {
        crate::fork::current() != self.fork_generation
    }

    /// Whether this process may act on the pool through this region: not
    /// inherited through fork, and our liveness lock not found gone (what
    /// [`check_not_inherited`](Self::check_not_inherited) says, as a bool).
    #[inline]
    pub(crate) fn acting(&self) -> bool {
        // Relaxed: a process-local word this process wrote (`lose_witness`).
        let acting = self
            .acting_generation
            .load(std::sync::atomic::Ordering::Relaxed);
        crate::fork::current() == acting
    }

    /// `Err(Forked)` in a process that inherited this region through fork,
    /// `Err(WitnessLost)` once our liveness lock was found gone.
    #[inline]
    pub(crate) fn check_not_inherited(&self) -> Result<()> {
        if !self.acting() {
            return Err(if self.inherited() {
                Error::Forked
            } else {
                Error::WitnessLost
            });
        }
        Ok(())
    }

    /// Marks our liveness lock lost: every later call fails.
    fn lose_witness(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        // Relaxed: a sticky word read by this process only.
        self.acting_generation.store(u64::MAX, Relaxed);
    }

    /// Whether participant `index` is dead: its entry's lock is free. An
    /// error asking the kernel counts as alive (never recover on a doubt).
    pub(crate) fn is_dead(&self, index: usize) -> bool {
        matches!(liveness::is_held(self.mapping.fd(), index), Ok(false))
    }

    /// What a blocked call runs before each sleep: the death watch, then
    /// (without a watcher) a sweep at most every `FALLBACK`. Returns the
    /// longest the sleep may last.
    pub(crate) fn before_sleep(self: &Arc<Self>) -> Result<Duration> {
        self.check_not_inherited()?;
        let (slice, sweep) = self.watch.before_sleep(self);
        if sweep {
            self.sweep_now_and_then(crate::watch::FALLBACK)?;
        }
        Ok(slice)
    }

    /// Counts a thread of this process as asleep on the region (for the
    /// fork handlers) until the guard drops.
    pub(crate) fn sleeping(&self) -> crate::watch::Sleeping<'_> {
        self.watch.sleeping()
    }

    /// [`sweep`](Self::sweep), unless one ran in this process less than
    /// `every` ago: what sleepers without a watcher run between sleeps, so
    /// that a wake-up of many sleepers does not become as many sweeps.
    fn sweep_now_and_then(&self, every: Duration) -> Result<()> {
        use std::sync::atomic::Ordering::Relaxed;
        let now = self.born.elapsed().as_millis() as u64;
        let last = self.last_sweep.load(Relaxed);
        // Relaxed: a rate limit; the sweeps themselves are exclusive.
        // 0: never swept yet.
        if (last == 0 || now.saturating_sub(last) >= every.as_millis() as u64)
            && self
                .last_sweep
                .compare_exchange(last, now.max(1), Relaxed, Relaxed)
                .is_ok()
        {
            self.sweep()?;
        }
        Ok(())
    }

    /// Recovers every dead participant and scrubs the index.
    pub(crate) fn sweep(&self) -> Result<Recovered> {
        self.recover_where(&|_| true)
    }

    /// Recovers the dead participants `pick` selects (by entry index), each
    /// under its liveness lock, then scrubs the index.
    fn recover_where(&self, pick: &dyn Fn(usize) -> bool) -> Result<Recovered> {
        // Never through an inherited region: its descriptor number was
        // closed at the fork and may name another file by now.
        self.check_not_inherited()?;
        let owner = self.me();
        let me = owner.index();
        // Fail closed: if our own lock is gone (some code in this process
        // closed a descriptor it did not own), our view of who is dead is
        // no longer the kernel's, and recovering could free live segments.
        // Three checks, because each alone can be fooled: someone holds
        // our byte (a newcomer may, in our entry), our entry is still ours,
        // and our descriptor still names the pool's file (locks taken
        // through a number that now names another file always succeed).
        let witness = &self.witness;
        let ours = || {
            witness.names(self.mapping.fd())
                && matches!(liveness::is_held(self.mapping.fd(), me), Ok(true))
                && self.control().check_alive(owner).is_ok()
        };
        if !ours() {
            self.lose_witness();
            return Err(Error::WitnessLost);
        }
        let r = self.control().recover_dead(
            &self.turn,
            &mut |i| {
                // Checked again under the turn, right before each claim.
                i != me
                    && pick(i)
                    && witness.names(self.mapping.fd())
                    && matches!(witness.try_lock(i), Ok(true))
            },
            &mut |i| witness.unlock(i),
        );
        self.recovered.add(r);
        Ok(r)
    }

    /// Everything recoveries run through this region did so far.
    pub(crate) fn recovered(&self) -> Recovered {
        self.recovered.get()
    }

    /// Recovers the dead participants that recorded `pid`; returns the
    /// segments that came back.
    pub(crate) fn recover_pid(&self, pid: u32) -> Result<usize> {
        let ctl = self.control();
        let named: Vec<usize> = ctl
            .participants()
            .iter()
            .filter(|p| p.pid == pid)
            .map(|p| p.index)
            .collect();
        Ok(self.recover_where(&|i| named.contains(&i))?.freed)
    }

    /// Start of segment `seg` (< count): `segment_size` writable bytes.
    #[inline]
    pub(crate) fn segment_ptr(&self, seg: usize) -> *mut u8 {
        self.mapping.segment_ptr(seg)
    }

    /// Where segment `seg` (< count, or a panic) starts, in bytes from
    /// [`base`](Self::base): worked out once per unit by a writer.
    #[inline]
    pub(crate) fn segment_offset(&self, seg: usize) -> usize {
        self.mapping.segment_offset(seg)
    }

    /// The mapping's first byte.
    #[inline]
    pub(crate) fn base(&self) -> *mut u8 {
        self.mapping.base()
    }

    /// The process-local count of views holding `seg` (< count) while it
    /// is held; a segment given back by its only view keeps a stale 1,
    /// which the next take overwrites (see `Reader::unit`).
    #[inline]
    pub(crate) fn holders(&self, seg: usize) -> &std::sync::atomic::AtomicU32 {
        &self.holders[seg]
    }

    /// This process's pid, cached.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// The memfd or shm object.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.mapping.fd()
    }

    /// The shm name, for named pools.
    pub(crate) fn name(&self) -> Option<&str> {
        self.mapping.name()
    }

    /// A handle that names this region.
    pub(crate) fn handle(&self, acquire_timeout: Duration) -> PoolHandle {
        self.mapping.handle(acquire_timeout)
    }
}

impl Watched for Region {
    fn roster(&self) -> u64 {
        self.control().roster()
    }

    /// A sweep for the watcher thread: errors (we were forked from, our
    /// lock is gone) are what the sleepers report, not the watcher.
    fn sweep(&self) {
        let _ = Region::sweep(self);
    }

    /// The other participants a watcher should watch: alive, and not this
    /// process (another region of ours never dies first). A participant of
    /// another pid namespace may have our pid number: only the pidfd inode
    /// tells it from us, so without one (kernels before 6.9) such a
    /// participant is taken for us and not watched.
    fn peers(&self) -> Vec<Peer> {
        let me = self.me();
        let ours =
            |pid: u32, ino: u64| pid == self.pid && (self.pid_ino == 0 || ino == self.pid_ino);
        self.control()
            .participants()
            .into_iter()
            .filter(|p| p.index != me.index() && !ours(p.pid, p.pid_ino))
            .map(|p| Peer {
                key: (p.index, p.incarnation),
                pid: p.pid,
                pid_ino: p.pid_ino,
            })
            .collect()
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        if self.inherited() {
            // The parent's: it still owns our entry, our segments and the
            // name (the mapping's drop knows it too). The witness leaks its
            // (already closed) descriptor.
            return;
        }
        self.watch.stop();
        // Every writer, reader and unit of this region is gone (they hold
        // it), so this hands committed units to the ring and frees the entry;
        // the witness's drop then releases the lock. A region whose join
        // failed owns nothing and leaves nothing.
        if let Some(me) = self.me {
            self.control().leave(me);
        }
        // Then the mapping's drop unlinks a creator's named object.
    }
}
