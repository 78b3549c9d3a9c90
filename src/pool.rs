//! [`SegmentPool`]: creating, attaching to, and tearing down a pool.

use crate::error::{Error, Result};
use crate::handle::{ENV_VAR, PoolHandle};
use crate::layout::Layout;
use crate::mapping::{peek_header, unlink_name};
use crate::protocol::{ParticipantView, Recovered, Stats};
use crate::reader::Reader;
use crate::region::Region;
use crate::writer::Writer;
use rustix::fs::{FileType, SealFlags};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

/// Default time `begin_unit` waits for a free segment (SPDL's default too).
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(60);

/// A pool of `count` shared-memory segments of `segment_size` bytes each.
///
/// Create it in the consumer (parent) process, hand it to producers with
/// [`handle`](Self::handle) / [`configure_command`](Self::configure_command),
/// attach there with [`attach`](Self::attach) or [`from_env`](Self::from_env).
/// Any process that has the pool may open writers and readers.
///
/// ```
/// let pool = segpool::SegmentPool::new(4096, 4)?;
/// let (writer, reader) = (pool.open_writer(), pool.open_reader());
///
/// let mut unit = writer.begin_unit()?;
/// let (offset, nbytes) = unit.write_binary(b"hello")?;
/// unit.commit_unit()?;
///
/// let received = reader.recv()?;
/// assert_eq!(received.read_binary(offset, nbytes)?, b"hello");
/// drop(received); // the segment goes back to the pool
/// assert_eq!((pool.published(), pool.reclaimed()), (1, 1));
/// # Ok::<(), segpool::Error>(())
/// ```
#[derive(Debug)]
pub struct SegmentPool {
    region: Arc<Region>,
    acquire_timeout: Duration,
}

/// Builder for a [`SegmentPool`] with non-default settings.
#[derive(Clone, Debug)]
pub struct PoolBuilder {
    segment_size: usize,
    count: usize,
    acquire_timeout: Duration,
    named: bool,
    prefault: bool,
}

impl PoolBuilder {
    /// How long `begin_unit` waits for a free segment before
    /// [`Error::Timeout`]. Zero: never wait ([`Error::Exhausted`] at once).
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// Back the pool with a named POSIX shm object instead of a memfd, so
    /// unrelated processes can attach by name. The creator unlinks it when
    /// dropped. Named objects cannot be sealed: only share them with
    /// processes you trust not to truncate them.
    pub fn named(mut self, named: bool) -> Self {
        self.named = named;
        self
    }

    /// Whether to fault every page in at creation (default `true`): the
    /// first touch of a fresh shared page costs about 0.6 s per GiB, which
    /// then lands here, once, instead of on the first pass of data in the
    /// producers. `false` leaves it to the producers' first writes (SPDL's
    /// behaviour), which is cheaper when not every segment gets used and
    /// keeps the creating process's CPU out of it. Attachers follow the
    /// creator's choice (`MAP_POPULATE` only for a prefaulted pool).
    pub fn prefault(mut self, prefault: bool) -> Self {
        self.prefault = prefault;
        self
    }

    /// Creates the pool: allocates, seals, maps and (by default) prefaults
    /// its memory.
    pub fn build(self) -> Result<SegmentPool> {
        let layout = Layout::new(self.segment_size, self.count, rustix::param::page_size())?;
        Ok(SegmentPool {
            region: Arc::new(Region::create(layout, self.named, self.prefault)?),
            acquire_timeout: self.acquire_timeout,
        })
    }
}

impl SegmentPool {
    /// A memfd-backed pool with the default `acquire_timeout` (60 s).
    ///
    /// [`Error::InvalidConfig`] for a zero size or count, more than
    /// [`MAX_COUNT`](crate::MAX_COUNT) segments, or a total that overflows.
    pub fn new(segment_size: usize, count: usize) -> Result<SegmentPool> {
        Self::builder(segment_size, count).build()
    }

    /// A builder, for `acquire_timeout` and named pools.
    pub fn builder(segment_size: usize, count: usize) -> PoolBuilder {
        PoolBuilder {
            segment_size,
            count,
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
            named: false,
            prefault: true,
        }
    }

    /// Attaches to the pool a handle names, validating its control page:
    /// [`Error::Incompatible`] if it is not a segpool pool of this version,
    /// [`Error::Corrupt`] if its header disagrees with itself or with the
    /// object's real size.
    pub fn attach(handle: &PoolHandle) -> Result<SegmentPool> {
        Ok(SegmentPool {
            region: Arc::new(Region::open(handle)?),
            acquire_timeout: handle.acquire_timeout(),
        })
    }

    /// Attaches to the pool named by the `SEGPOOL_HANDLE` environment
    /// variable that [`configure_command`](Self::configure_command) set.
    pub fn from_env() -> Result<SegmentPool> {
        Self::attach(&PoolHandle::from_env()?)
    }

    /// A handle for another process.
    pub fn handle(&self) -> PoolHandle {
        self.region.handle(self.acquire_timeout)
    }

    /// Prepares `cmd` to start a process that can [`from_env`](Self::from_env):
    /// sets `SEGPOOL_HANDLE` and, for a memfd pool, lets the child inherit
    /// the fd (only that child: the fd stays close-on-exec for every other).
    /// Keep the pool alive until the command is spawned.
    pub fn configure_command<'c>(&self, cmd: &'c mut Command) -> &'c mut Command {
        cmd.env(ENV_VAR, self.handle().to_string());
        if self.region.name().is_none() {
            // The closure owns a reference to the region, so the fd stays
            // open (and keeps its number) for as long as `cmd` can spawn,
            // whenever the caller drops the pool.
            let region = self.region.clone();
            // SAFETY: the closure runs in the forked child before exec, where
            // only async-signal-safe work is allowed: it makes one fcntl
            // syscall and allocates nothing.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(cmd, move || {
                    rustix::io::fcntl_setfd(region.fd(), rustix::io::FdFlags::empty())?;
                    Ok(())
                });
            }
        }
        cmd
    }

    /// A producer endpoint. Cheap; open as many as you like, in any thread.
    pub fn open_writer(&self) -> Writer {
        Writer::new(self.region.clone(), self.acquire_timeout)
    }

    /// A consumer endpoint. Units come out in publish order.
    pub fn open_reader(&self) -> Reader {
        Reader::new(self.region.clone())
    }

    /// Number of segments.
    pub fn count(&self) -> usize {
        self.region.layout().count
    }

    /// Usable bytes per segment.
    pub fn segment_size(&self) -> usize {
        self.region.layout().segment_size
    }

    /// The configured `acquire_timeout`.
    pub fn acquire_timeout(&self) -> Duration {
        self.acquire_timeout
    }

    /// Units published since the pool was created (by any process).
    pub fn published(&self) -> u64 {
        self.region.control().published()
    }

    /// Units whose segments were returned to the pool (by any process).
    pub fn reclaimed(&self) -> u64 {
        self.region.control().reclaimed()
    }

    /// A monitoring snapshot: counters and segments per phase.
    pub fn stats(&self) -> Stats {
        self.region.control().stats()
    }

    /// Wakes every producer blocked in `begin_unit` and every consumer
    /// blocked in `recv`; from now on `begin_unit` and `commit_unit` fail
    /// with [`Error::Shutdown`], and `recv` does once the units already
    /// published are drained. Sticky; safe to call many times, from any
    /// process that attached the pool. A no-op on a pool object inherited
    /// through `fork` (the parent's pool is not the child's to stop:
    /// attach again, then call it).
    pub fn shutdown_arena(&self) {
        if self.region.inherited() {
            return;
        }
        self.region.control().shutdown();
    }

    /// Whether [`shutdown_arena`](Self::shutdown_arena) was called.
    pub fn is_shutdown(&self) -> bool {
        self.region.control().is_shutdown()
    }

    /// Starts a new iteration (generation): units published but not yet
    /// received are dropped, units still being written fail to commit with
    /// [`Error::Stale`], and units still held from the last iteration keep
    /// their segments, unharmed, until they drop. Returns how many queued
    /// units were dropped. Call it from the consumer, between passes.
    pub fn reset(&self) -> Result<u64> {
        self.region.check_not_inherited()?;
        self.region.control().reset(self.region.me())
    }

    /// The current generation (how many times [`reset`](Self::reset) ran).
    pub fn generation(&self) -> u32 {
        self.region.control().generation()
    }

    /// Recovers every participant (process) of this pool that died, and
    /// rebuilds the free-segment index: a dead producer's uncommitted units
    /// come back and its committed units are still delivered; the segments
    /// a dead consumer held come back. Safe to call from any process at any
    /// time, by many at once; returns what it did.
    ///
    /// Death is witnessed by the kernel (each participant holds an OFD lock
    /// on the pool's file), never guessed from a pid. A process with a
    /// blocked `begin_unit` or `recv` watches its peers' deaths as events
    /// and runs this within milliseconds of one (`docs/guide.md`, "Crashes
    /// and fork"), and [`attach`](Self::attach) runs it once, so most
    /// programs never call it; the
    /// [`subprocess`](crate::subprocess) parent calls it as soon as a worker
    /// dies.
    ///
    /// [`Error::Forked`] in a process that inherited the pool through
    /// `fork` (its descriptor may name another file by now: attach again),
    /// [`Error::WitnessLost`] if this process's own liveness lock is gone.
    pub fn recover_dead(&self) -> Result<Recovered> {
        self.region.sweep()
    }

    /// Takes back what a dead process `pid` owned: [`recover_dead`]
    /// restricted to participants that recorded `pid`, returning how many
    /// segments came back. Returns 0 for this process's own pid and for a
    /// process that is still alive (its liveness lock is held), so a reused
    /// pid cannot make it free a live process's segments.
    ///
    /// [`recover_dead`]: Self::recover_dead
    ///
    /// Errors as [`recover_dead`](Self::recover_dead).
    pub fn recover_writer(&self, pid: u32) -> Result<usize> {
        if pid == self.region.pid() {
            return Ok(0);
        }
        self.region.recover_pid(pid)
    }

    /// What every recovery run through this pool object (and its writers and
    /// readers, whose blocked calls sweep) did so far, added up: how many
    /// dead participants, segments freed, units delivered, index bits
    /// scrubbed. Recoveries other processes ran are not counted here.
    pub fn recovered(&self) -> Recovered {
        self.region.recovered()
    }

    /// The processes that have this pool open, as the participant table
    /// records them, each with whether it is alive.
    pub fn participants(&self) -> Vec<(ParticipantView, bool)> {
        self.region
            .control()
            .participants()
            .into_iter()
            .map(|p| (p, !self.region.is_dead(p.index)))
            .collect()
    }

    /// Whether this pool object was inherited through `fork`: then it is
    /// inert here (its writers and readers return [`Error::Forked`], its
    /// units and open unit writers free nothing when dropped) and the child
    /// should [`attach`](Self::attach) again, for example with
    /// `SegmentPool::attach(&inherited.handle())`, since the child inherited
    /// the memfd's descriptor too.
    pub fn is_inherited(&self) -> bool {
        self.region.inherited()
    }

    /// Where segment `seg` lives in this process's mapping, and its usable
    /// length: a debugging aid, for a tool that looks at a whole segment
    /// whatever its state (SPDL's test suite proves zero-copy by writing
    /// through one). A unit's and a loan's bytes have their own documented
    /// access ([raw access](crate#raw-access)), which bindings use.
    /// [`Error::OutOfBounds`] for `seg >= count`.
    ///
    /// The pointer is valid while this pool (or any writer, reader or unit
    /// of it) is alive in this process. Reading or writing through it is
    /// outside the protocol: it races with whoever owns the segment, so the
    /// caller must know the segment is its own (a test, a debugger).
    #[doc(hidden)]
    pub fn segment_raw(&self, seg: usize) -> Result<(std::ptr::NonNull<u8>, usize)> {
        let count = self.count();
        if seg >= count {
            return Err(Error::OutOfBounds {
                offset: seg,
                len: 1,
                available: count,
            });
        }
        let ptr = self.region.segment_ptr(seg);
        let ptr = std::ptr::NonNull::new(ptr).expect("a mapping is never at address 0");
        Ok((ptr, self.segment_size()))
    }

    /// The shm name of a named pool.
    pub fn name(&self) -> Option<&str> {
        self.region.name()
    }

    /// Releases this handle's reference to the mapping. Writers, readers and
    /// units still alive keep it mapped, so a view never outlives its memory;
    /// the mapping goes when the last of them drops.
    pub fn close(self) {}

    /// Removes a named pool's name from the system (processes that have it
    /// keep it). A no-op for memfd pools, which have no name; idempotent.
    pub fn unlink(&self) -> Result<()> {
        match self.region.name() {
            Some(name) => unlink_name(name),
            None => Ok(()),
        }
    }
}

/// The pool's memfd (or named shm object), borrowed for as long as the pool
/// lives: to pass it to another process (`SCM_RIGHTS`, a
/// `multiprocessing` start), which makes a [`PoolHandle`] of its copy with
/// [`PoolHandle::from_fd`].
impl AsFd for SegmentPool {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.region.fd()
    }
}

// Here rather than in `handle.rs`: it validates the object through
// `region`, which itself depends on `handle`.
impl PoolHandle {
    /// The handle of the pool in the memfd `fd` (one that a process got
    /// from another through `SCM_RIGHTS`, inheritance, or
    /// `/proc/PID/fd/N`), with `acquire_timeout` for the writers of a pool
    /// attached through it. The handle owns `fd` (and its clones share it):
    /// it stays open until the last of them drops, so
    /// [`SegmentPool::attach`] can use it any time before; the attached pool
    /// opens the memfd again and needs no handle after.
    ///
    /// Errors, before anything is mapped read-write:
    /// - [`Error::BadHandle`] if `fd` is not a sealed memfd (a pipe, a
    ///   socket, a directory, a plain file, or a named pool's shm object:
    ///   attach to those by name);
    /// - [`Error::Incompatible`] if it is a sealed memfd that holds no
    ///   segpool pool (too short, or no segpool magic), or a pool of
    ///   another layout version or page size;
    /// - [`Error::Corrupt`] if the pool's header disagrees with itself or
    ///   with the memfd's size;
    /// - [`Error::Io`] if the kernel refuses to describe or map it.
    pub fn from_fd(fd: OwnedFd, acquire_timeout: Duration) -> Result<PoolHandle> {
        let n = fd.as_raw_fd();
        let stat = rustix::fs::fstat(&fd).map_err(|e| Error::io("fstat (pool fd)", e))?;
        let kind = FileType::from_raw_mode(stat.st_mode);
        if kind != FileType::RegularFile {
            return Err(Error::BadHandle(format!(
                "fd {n} is a {kind:?}, not a memfd: pass the descriptor of a segpool pool's memfd"
            )));
        }
        let seals = rustix::fs::fcntl_get_seals(&fd).unwrap_or(SealFlags::empty());
        if !seals.contains(SealFlags::SHRINK | SealFlags::GROW) {
            return Err(Error::BadHandle(format!(
                "fd {n} is not a sealed memfd (seals {seals:?}), so not a segpool pool's: pass \
                 the descriptor of a segpool pool's memfd (a named pool attaches by name)"
            )));
        }
        let size = usize::try_from(stat.st_size).unwrap_or(0);
        if size < core::mem::size_of::<crate::layout::Header>() {
            return Err(Error::Incompatible(format!(
                "fd {n} holds {size} bytes, fewer than a segpool pool's header: not a segpool pool"
            )));
        }
        let layout = peek_header(&fd, size)?.layout;
        Ok(PoolHandle::owning(
            fd,
            layout.total_len as u64,
            acquire_timeout,
        ))
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io {
            op: "I/O",
            source: e,
        }
    }
}
