//! The shared mapping: where a pool's memory comes from, and the one place
//! that turns its bytes into the protocol's typed references.
//!
//! Two backings:
//! - **memfd** (default): anonymous, sealed with `F_SEAL_SHRINK | F_SEAL_GROW
//!   | F_SEAL_SEAL`, so no process can truncate it under a peer's mapping
//!   (which would turn that peer's next access into SIGBUS). Nothing has a
//!   name, so nothing is left behind: the memory goes when the last process
//!   holding the fd or a mapping exits. Children inherit it across `exec`.
//! - **named** POSIX shm (`/dev/shm/segpool-<pid>-<random>`), created `0600`
//!   with `O_EXCL`, for unrelated processes. Such an object cannot be sealed:
//!   a peer that truncates it can crash the others. The creator unlinks it on
//!   drop (or earlier, with `unlink`).
//!
//! The creator faults every page in once (`MADV_POPULATE_WRITE`, falling back
//! to `MAP_POPULATE`): the first touch of a fresh shared page costs about
//! 0.6 s per GiB, which would otherwise land on the first pass of data.
//! Attaching maps with `MAP_POPULATE`, after the header was validated
//! through a small mapping of the control area alone.

use crate::error::{Error, Result};
use crate::handle::{Backing, PoolHandle};
use crate::layout::{Header, Layout, MAX_PARTICIPANTS, Owner, PREFAULTED, SegmentDesc};
use crate::liveness::{self, Witness};
use crate::protocol::{Control, Recovered};
use crate::sync::{AtomicU64, Ordering};
use crate::watch::Watch;
use memmap2::{MmapOptions, MmapRaw};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{MemfdFlags, Mode, OFlags, SealFlags};
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
    map: MmapRaw,
    fd: OwnedFd,
    layout: Layout,
    name: Option<String>,
    /// Whether dropping this region unlinks `name` (the creator's region).
    unlink_on_drop: bool,
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
    /// The protocol over `map` (see `carve`). Its references point into the
    /// mapping, which outlives every borrow of the region.
    ctl: Control<'static>,
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

fn page_size() -> usize {
    rustix::param::page_size()
}

impl Region {
    /// Creates, sizes, seals (memfd), maps, prefaults and initializes a pool.
    pub(crate) fn create(layout: Layout, named: bool, prefault_pages: bool) -> Result<Region> {
        let (fd, name) = if named {
            let name = fresh_name()?;
            let fd = rustix::shm::open(
                name.as_str(),
                rustix::shm::OFlags::CREATE | rustix::shm::OFlags::EXCL | rustix::shm::OFlags::RDWR,
                Mode::RUSR | Mode::WUSR,
            )
            .map_err(|e| Error::io("shm_open (create)", e))?;
            (fd, Some(name))
        } else {
            (memfd()?, None)
        };
        let built = Region::build(fd, layout, name.clone(), prefault_pages);
        if let (Err(_), Some(name)) = (&built, &name) {
            // A failure must not leave a named object behind.
            let _ = unlink_name(name);
        }
        built
    }

    fn build(
        fd: OwnedFd,
        layout: Layout,
        name: Option<String>,
        prefault_pages: bool,
    ) -> Result<Region> {
        rustix::fs::ftruncate(&fd, layout.total_len as u64)
            .map_err(|e| Error::io("ftruncate", e))?;
        if name.is_none() {
            rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)
                .map_err(|e| Error::io("fcntl(F_ADD_SEALS)", e))?;
        }
        let map = MmapOptions::new()
            .len(layout.total_len)
            .map_raw(&fd)
            .map_err(|e| Error::io("mmap", e))?;
        if prefault_pages {
            prefault(&map, layout.total_len)?;
        }
        let mut region = Region::assemble(map, fd, layout, name, true)?;
        region.control().init();
        let prefaulted = if prefault_pages { PREFAULTED } else { 0 };
        // Relaxed: read by attachers after the handle reached them, as the ident.
        region
            .header()
            .life
            .prefaulted
            .store(prefaulted, Ordering::Relaxed);
        layout.write_ident(&region.header().ident);
        region.join()?;
        Ok(region)
    }

    /// A region over a mapped pool, not yet joined (it owns nothing and
    /// leaves nothing until `join` succeeds).
    fn assemble(
        map: MmapRaw,
        fd: OwnedFd,
        layout: Layout,
        name: Option<String>,
        unlink_on_drop: bool,
    ) -> Result<Region> {
        let fork_generation = crate::fork::generation_at_birth()?;
        let witness = Witness::open(fd.as_fd(), fork_generation)?;
        let watch = Watch::new()?;
        // SAFETY: `ctl` lives in the same struct as `map` and is only
        // handed out through `control(&self)`.
        let ctl = unsafe { Region::carve(&map, &layout) };
        Ok(Region {
            map,
            fd,
            layout,
            name,
            unlink_on_drop,
            pid: current_pid(),
            pid_ino: crate::watch::own_pid_ino(),
            holders: holders(layout.count),
            me: None,
            witness,
            fork_generation,
            ctl,
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

    /// Opens and validates the pool a handle names.
    pub(crate) fn open(handle: &PoolHandle) -> Result<Region> {
        let (fd, name) = match handle.backing() {
            Backing::Fd(n) => {
                // Re-open through /proc rather than adopting the raw number:
                // no unsafe ownership claim on an fd we did not open, and a
                // number that is not open (or not ours) fails cleanly.
                let path = format!("/proc/self/fd/{n}");
                let fd =
                    rustix::fs::open(path.as_str(), OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
                        .map_err(|e| Error::io("open inherited pool fd", e))?;
                let seals = rustix::fs::fcntl_get_seals(&fd).unwrap_or(SealFlags::empty());
                if !seals.contains(SealFlags::SHRINK | SealFlags::GROW) {
                    return Err(Error::Incompatible(format!(
                        "fd {n} is not a sealed segpool memfd (seals {seals:?})"
                    )));
                }
                (fd, None)
            }
            Backing::Named(name) => {
                let fd = rustix::shm::open(name, rustix::shm::OFlags::RDWR, Mode::empty())
                    .map_err(|e| Error::io("shm_open (attach)", e))?;
                (fd, Some(name.to_owned()))
            }
        };
        let size = rustix::fs::fstat(&fd)
            .map_err(|e| Error::io("fstat", e))?
            .st_size;
        let size = usize::try_from(size)
            .map_err(|_| Error::Corrupt(format!("shared object has negative size {size}")))?;
        let peeked = peek_header(&fd, size)?;
        let layout = peeked.layout;
        // Populate only what the creator faulted in: populating a lazy pool
        // would allocate every page here instead of where it is written.
        let populate = peeked.prefaulted;
        let mut options = MmapOptions::new();
        options.len(layout.total_len);
        if populate {
            options.populate();
        }
        let map = options.map_raw(&fd).map_err(|e| Error::io("mmap", e))?;
        if handle.len() != layout.total_len as u64 {
            return Err(Error::Corrupt(format!(
                "handle says {} bytes, the pool holds {}",
                handle.len(),
                layout.total_len
            )));
        }
        let mut region = Region::assemble(map, fd, layout, name, false)?;
        region.join()?;
        // Whoever died before we came is recovered now, not at the first
        // full pool.
        region.sweep()?;
        Ok(region)
    }
}

/// What a pool's header says, once validated.
pub(crate) struct Peeked {
    /// The geometry, recomputed locally and compared field by field.
    pub(crate) layout: Layout,
    /// The layout version the header names (the one this build speaks).
    pub(crate) version: u32,
    /// Whether the creator faulted every page in.
    pub(crate) prefaulted: bool,
}

/// Validates the header of a shared object of `size` bytes through a small
/// read-only mapping of the header alone, as `attach` and the inspector
/// both do: [`Error::Incompatible`] for a foreign object or another layout
/// version, [`Error::Corrupt`] for a header that disagrees with itself or
/// with `size`. Never panics, whatever the object holds.
pub(crate) fn peek_header(fd: &OwnedFd, size: usize) -> Result<Peeked> {
    let head_len = core::mem::size_of::<Header>();
    if size < head_len {
        return Err(Error::Corrupt(format!(
            "shared object holds {size} bytes, less than the {head_len}-byte header"
        )));
    }
    let peek = MmapOptions::new()
        .len(head_len)
        .map_raw_read_only(fd)
        .map_err(|e| Error::io("mmap (header)", e))?;
    // SAFETY: `peek` maps `head_len` = size_of::<Header>() bytes of an object
    // at least that long, page-aligned (align 128 suffices); every field is
    // an atomic, valid for any bit pattern; `Layout::validate` and we only
    // make Relaxed loads of at most 8 bytes, which Rust allows on read-only
    // memory (see `core::sync::atomic`); the reference dies before `peek`.
    let header = unsafe { &*peek.as_ptr().cast::<Header>() };
    let layout = Layout::validate(&header.ident, size, page_size())?;
    Ok(Peeked {
        layout,
        version: header.ident.version.load(Ordering::Relaxed),
        prefaulted: header.life.prefaulted.load(Ordering::Relaxed) == PREFAULTED,
    })
}

/// A sealable memfd that can never be made executable: `MFD_NOEXEC_SEAL`
/// (Linux 6.3+), which `vm.memfd_noexec=2` requires; older kernels refuse
/// the flag with `EINVAL` and get a plain one.
fn memfd() -> Result<OwnedFd> {
    let flags = MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING;
    match rustix::fs::memfd_create("segpool", flags | MemfdFlags::NOEXEC_SEAL) {
        Err(rustix::io::Errno::INVAL) => rustix::fs::memfd_create("segpool", flags),
        other => other,
    }
    .map_err(|e| Error::io("memfd_create", e))
}

/// Faults in every page of a fresh mapping, once. Running out of memory
/// here is an error now, not a SIGBUS or an OOM kill at the first write.
fn prefault(map: &MmapRaw, len: usize) -> Result<()> {
    let ptr = map.as_mut_ptr();
    // SAFETY: `ptr..ptr+len` is exactly our mapping; MADV_POPULATE_WRITE
    // only faults pages in, it does not change their contents.
    let done =
        unsafe { rustix::mm::madvise(ptr.cast(), len, rustix::mm::Advice::LinuxPopulateWrite) };
    match done {
        Ok(()) => Ok(()),
        // Kernels before 5.14 do not know the advice: write one byte per
        // page. The mapping is fresh and not yet shared, and the bytes are
        // zero already. (A shortage then still shows as SIGBUS.)
        Err(rustix::io::Errno::INVAL) => {
            let page = page_size();
            for off in (0..len).step_by(page) {
                // SAFETY: `off < len`, inside our mapping; nobody else can
                // see it yet, so a plain volatile write races with nothing.
                unsafe { ptr.add(off).write_volatile(0) };
            }
            Ok(())
        }
        Err(e) => Err(Error::InvalidConfig(format!(
            "cannot back a pool of {len} bytes with memory ({e}): make it smaller, free \
             memory, or raise the shared-memory limits (/dev/shm size, memory cgroup)"
        ))),
    }
}

impl Region {
    /// The pool's geometry (computed locally, never re-read from the peer).
    pub(crate) fn layout(&self) -> &Layout {
        &self.layout
    }

    fn header(&self) -> &Header {
        // SAFETY: the mapping is at least `total_len >= size_of::<Header>()`
        // bytes, page-aligned, lives as long as `self`; all fields are
        // atomics (any bit pattern valid; peers' writes are atomic races).
        unsafe { &*self.map.as_ptr().cast::<Header>() }
    }

    /// The protocol over this mapping, carved out of it once (`carve`): a
    /// copy of a few references, shortened to `&self`'s lifetime.
    #[inline]
    pub(crate) fn control(&self) -> Control<'_> {
        self.ctl
    }

    /// The protocol's view of the mapping's control area.
    ///
    /// # Safety
    /// The returned references point into `map`'s memory (never into the
    /// region struct, which may move): the caller must not use them after
    /// `map` is unmapped. `Region` keeps it in a field next to `map` and
    /// hands out copies only with its own borrow's lifetime.
    unsafe fn carve(map: &MmapRaw, l: &Layout) -> Control<'static> {
        // SAFETY: `Layout::new` (run locally for our own geometry, or to
        // validate a peer's) places the header, participants, bitmap,
        // descriptors and ring inside `total_len`, 128-byte aligned, without
        // overlap; the mapping has exactly `total_len` bytes, page-aligned;
        // all these types hold atomics only, valid for every bit pattern
        // (peers' writes are atomic races); the 'static lifetime is the
        // caller's to keep (see above).
        unsafe {
            let at = |offset: usize| map.as_mut_ptr().add(offset);
            debug_assert!(l.ring_offset + l.ring_capacity * 8 <= l.total_len);
            Control::new(
                &*at(0).cast::<Header>(),
                core::slice::from_raw_parts(at(l.parts_offset).cast(), MAX_PARTICIPANTS),
                core::slice::from_raw_parts(at(l.bitmap_offset).cast(), l.bitmap_words()),
                core::slice::from_raw_parts(at(l.descs_offset).cast::<SegmentDesc>(), l.count),
                core::slice::from_raw_parts(at(l.ring_offset).cast::<AtomicU64>(), l.ring_capacity),
                l,
            )
        }
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

    /// `Err(Forked)` in a process that inherited this region through fork,
    /// `Err(WitnessLost)` once our liveness lock was found gone.
    #[inline]
    pub(crate) fn check_not_inherited(&self) -> Result<()> {
        // Relaxed: a process-local word this process wrote (`lose_witness`).
        let acting = self
            .acting_generation
            .load(std::sync::atomic::Ordering::Relaxed);
        if crate::fork::current() != acting {
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
        matches!(liveness::is_held(self.fd.as_fd(), index), Ok(false))
    }

    /// Joins seen so far (see `crate::watch`).
    pub(crate) fn roster(&self) -> u64 {
        self.control().roster()
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

    /// A sweep for the watcher thread: errors (we were forked from, our
    /// lock is gone) are what the sleepers report, not the watcher.
    pub(crate) fn sweep_quietly(&self) {
        let _ = self.sweep();
    }

    /// The other participants a watcher should watch: alive, and not this
    /// process (another region of ours never dies first). A participant of
    /// another pid namespace may have our pid number: only the pidfd inode
    /// tells it from us, so without one (kernels before 6.9) such a
    /// participant is taken for us and not watched.
    pub(crate) fn peers(&self) -> Vec<crate::watch::Peer> {
        let me = self.me();
        let ours =
            |pid: u32, ino: u64| pid == self.pid && (self.pid_ino == 0 || ino == self.pid_ino);
        self.control()
            .participants()
            .into_iter()
            .filter(|p| p.index != me.index() && !ours(p.pid, p.pid_ino))
            .map(|p| crate::watch::Peer {
                key: (p.index, p.incarnation),
                pid: p.pid,
                pid_ino: p.pid_ino,
            })
            .collect()
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
            witness.names(self.fd.as_fd())
                && matches!(liveness::is_held(self.fd.as_fd(), me), Ok(true))
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
                    && witness.names(self.fd.as_fd())
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
        assert!(
            seg < self.layout.count,
            "segment index checked by the protocol"
        );
        // SAFETY: seg < count, so the offset is inside the mapping.
        unsafe { self.map.as_mut_ptr().add(self.layout.segment_offset(seg)) }
    }

    /// The process-local count of units holding `seg` (< count).
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
        self.fd.as_fd()
    }

    /// The shm name, for named pools.
    pub(crate) fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// A handle that names this region.
    pub(crate) fn handle(&self, acquire_timeout: Duration) -> PoolHandle {
        use rustix::fd::AsRawFd;
        let backing = match &self.name {
            Some(n) => Backing::Named(n.clone()),
            None => Backing::Fd(self.fd.as_raw_fd()),
        };
        PoolHandle::new(backing, self.layout.total_len as u64, acquire_timeout)
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        if self.inherited() {
            // The parent's: it still owns our entry, our segments and the
            // name. The witness leaks its (already closed) descriptor.
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
        if self.unlink_on_drop {
            if let Some(name) = &self.name {
                // ENOENT: already unlinked by `unlink`; nothing else to do.
                let _ = rustix::shm::unlink(name.as_str());
            }
        }
    }
}

/// `/segpool-<pid>-<16 random hex digits>`: unpredictable, so another user
/// cannot pre-create it (and O_EXCL refuses if anyone did).
fn fresh_name() -> Result<String> {
    let mut buf = [0u8; 8];
    rustix::rand::getrandom(&mut buf, rustix::rand::GetRandomFlags::empty())
        .map_err(|e| Error::io("getrandom", e))?;
    Ok(format!(
        "/segpool-{}-{:016x}",
        rustix::process::getpid().as_raw_nonzero(),
        u64::from_le_bytes(buf)
    ))
}

/// Removes a named shm object.
pub(crate) fn unlink_name(name: &str) -> Result<()> {
    match rustix::shm::unlink(name) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(Error::io("shm_unlink", e)),
    }
}
