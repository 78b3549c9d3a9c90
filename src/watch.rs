//! The death watch: blocked calls sleep with no timer, and a participant's
//! death reaches them as an event.
//!
//! A timed wake-up is not free: on a virtual machine one costs about 40 µs
//! of the sleeper's CPU, so sweeping for the dead every 100 ms costs a
//! sleeping side about 700 µs per second. Instead, a process with a thread
//! asleep on a pool runs one *watcher* thread for that pool, which sleeps
//! in `poll` on:
//! - a **pidfd** of every other participant, opened from the pid it
//!   recorded and kept only if the pidfd's inode is the one the participant
//!   recorded for itself (`Participant::pid_ino`): pidfs inodes are unique
//!   per process, so a recycled pid, or a pid of another namespace, is never
//!   mistaken for the participant. A pidfd turns readable once its process
//!   has exited, after its files, and so its liveness lock, are released;
//! - an **eventfd** of its own, poked to rescan or to stop.
//!
//! On any event the watcher sweeps ([`Watched::sweep`], exclusive under the
//! dead entry's lock as every recovery is) and rebuilds its set; recovery
//! wakes the sleepers. The pidfd is only ever a hint of *when* to look: what
//! decides *whether* a participant is dead is still its lock.
//!
//! - **New participants**: every join bumps `roster` and wakes the
//!   sleepers; a sleeper that finds `roster` moved pokes its watcher before
//!   it sleeps again (`before_sleep`).
//! - **Participants a pidfd cannot vouch for** (a pid of another pid
//!   namespace, a kernel before 6.9 whose pidfds share one inode, a process
//!   that exited while a copy of its lock's description lives on) are
//!   checked every [`FALLBACK`] instead, by the watcher alone.
//! - **No watcher** (a thread could not be started): the sleepers sleep in
//!   slices of [`FALLBACK`] and sweep between them, as protocol v2 did.
//! - **fork**: a prepare handler stops every watcher, so a `fork` never
//!   sees one (CPython warns about forking a multi-threaded process); a
//!   parent handler restarts those a sleeping thread still needs, and the
//!   others restart at their next sleep (`crate::fork::register_late`). No
//!   watcher starts while a `fork` is under way (`FORKING`).
//! - **What no event covers**: a participant that `exec`s without dropping
//!   its pool (its lock goes, its pid and pidfd stay), a futex sequence
//!   that wrapped around. The watcher sweeps every [`SAFETY_SLICE`] anyway,
//!   and sleepers wake that often; a watcher that exits for any reason is
//!   restarted by the next sleeper.
//!
//! So while nobody dies, a sleeping thread makes no system call at all and
//! the watcher one every 10 s (on kernels before 6.9, whose pidfds cannot
//! vouch for a process, one every 250 ms); a death is recovered within
//! milliseconds.

use rustix::event::{EventfdFlags, PollFd, PollFlags};
use rustix::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often participants no pidfd vouches for are checked, and how long
/// a sleeper without a watcher sleeps between its own sweeps.
pub(crate) const FALLBACK: Duration = Duration::from_millis(250);

/// The longest a watched sleeper sleeps, and how often the watcher sweeps
/// without an event: bounds what no event covers (a futex sequence that
/// wrapped around 2^32 bumps between a sleeper's read and its sleep; a
/// watcher thread that exited; a participant that `exec`ed) at one
/// wake-up, about 4 µs of CPU, every 10 s.
pub(crate) const SAFETY_SLICE: Duration = Duration::from_secs(10);

/// What a watcher watches: a pool this process takes part in (the region
/// implements it; this module names no region, so imports run one way).
pub(crate) trait Watched: Send + Sync {
    /// Joins seen so far (bumped by every join).
    fn roster(&self) -> u64;
    /// Recovers every dead participant; errors are the sleepers' to report.
    fn sweep(&self);
    /// The other participants to watch: alive, and not this process.
    fn peers(&self) -> Vec<Peer>;
}

/// `statfs.f_type` of pidfs, where pidfd inode numbers are per process.
const PIDFS_MAGIC: u64 = 0x5049_4446;

/// Every watch of this process, for the fork handlers. Locked only inside
/// `crate::fork::unsplit` sections and by the prepare handler before it
/// closes the gate, so a `fork` never finds it locked.
static WATCHES: Mutex<Vec<Weak<Ctl>>> = Mutex::new(Vec::new());

/// Set by the prepare handler while a `fork` is under way: no watcher
/// starts then (it would be copied into nothing, and counted by CPython).
static FORKING: AtomicBool = AtomicBool::new(false);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One region's watch: the watcher thread, if running, and what sleepers
/// tell it.
#[derive(Debug)]
pub(crate) struct Watch {
    ctl: Arc<Ctl>,
}

#[derive(Debug)]
struct Ctl {
    /// Poked to make the watcher rescan, or stop.
    poke: OwnedFd,
    /// Set to make the watcher exit at its next wake-up.
    stop: AtomicBool,
    /// Whether a watcher thread runs (or is being started).
    running: AtomicBool,
    /// Set once a thread could not be started: sleepers then sweep
    /// themselves.
    failed: AtomicBool,
    /// The roster the watcher last scanned.
    seen_roster: AtomicU64,
    /// This process's threads asleep on the region: the parent fork
    /// handler restarts a watcher only where some are.
    sleepers: AtomicU32,
    /// The watcher thread's kernel id (0: none yet), to wait until the
    /// kernel has taken it out of the process (see `halt`).
    tid: std::sync::atomic::AtomicI32,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    thread: Option<JoinHandle<()>>,
    region: Option<Weak<dyn Watched>>,
}

/// A sleeper counted in [`Ctl::sleepers`] while it lives.
pub(crate) struct Sleeping<'w>(&'w AtomicU32);

impl Drop for Sleeping<'_> {
    fn drop(&mut self) {
        // Relaxed: read by the fork handler only, as a hint.
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Watch {
    /// A watch with no thread yet.
    pub(crate) fn new() -> crate::Result<Watch> {
        let poke = rustix::event::eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
            .map_err(|e| crate::Error::io("eventfd", e))?;
        Ok(Watch {
            ctl: Arc::new(Ctl {
                poke,
                stop: AtomicBool::new(false),
                running: AtomicBool::new(false),
                failed: AtomicBool::new(false),
                seen_roster: AtomicU64::new(u64::MAX),
                sleepers: AtomicU32::new(0),
                tid: std::sync::atomic::AtomicI32::new(0),
                inner: Mutex::new(Inner::default()),
            }),
        })
    }

    /// Counts a thread of this process as asleep on the region until the
    /// guard drops.
    pub(crate) fn sleeping(&self) -> Sleeping<'_> {
        // SeqCst, with `halt`'s store of `running` and `restart_after_fork`'s
        // load of `sleepers`: either the forker sees this sleeper and
        // restarts the watcher, or this sleeper's next `before_sleep` sees
        // `running` false and starts one (a store-buffering pattern, which
        // Release/Acquire does not exclude).
        self.ctl.sleepers.fetch_add(1, Ordering::SeqCst);
        Sleeping(&self.ctl.sleepers)
    }

    /// What a sleeper runs before each sleep: makes sure a watcher runs and
    /// has seen the current `roster`. Returns the longest the sleep may
    /// last and whether the sleeper must sweep by itself:
    /// [`SAFETY_SLICE`] when a watcher runs, [`FALLBACK`] and `true` when
    /// none could be started.
    pub(crate) fn before_sleep<W: Watched + 'static>(&self, region: &Arc<W>) -> (Duration, bool) {
        let ctl = &self.ctl;
        // SeqCst: see `sleeping`.
        if !ctl.running.load(Ordering::SeqCst) && !ctl.failed.load(Ordering::Acquire) {
            let weak: Weak<dyn Watched> = Arc::downgrade(region) as Weak<dyn Watched>;
            start(ctl, weak);
        }
        if ctl.failed.load(Ordering::Acquire) || !ctl.running.load(Ordering::SeqCst) {
            // No watcher (none could start, or a fork is under way): sweep
            // by ourselves between short sleeps.
            return (FALLBACK, true);
        }
        // Relaxed: a hint; the watcher rescans whenever poked.
        if ctl.seen_roster.load(Ordering::Relaxed) != region.roster() {
            ctl.poke();
        }
        (SAFETY_SLICE, false)
    }

    /// Stops the watcher and waits for it to exit (unless this is the
    /// watcher itself, dropping the last reference to its region).
    pub(crate) fn stop(&self) {
        crate::fork::unsplit(|| {
            let mut reg = lock(&WATCHES);
            reg.retain(|w| w.strong_count() > 0 && !std::ptr::eq(w.as_ptr(), &*self.ctl));
        });
        self.ctl.halt();
    }
}

impl Ctl {
    fn poke(&self) {
        // A full counter (2^64 - 2 pokes) or EAGAIN still leaves it
        // readable, which is all a poke has to do.
        let _ = rustix::io::write(&self.poke, &1u64.to_ne_bytes());
    }

    /// Tells the thread to exit and joins it.
    fn halt(&self) {
        // Release pairs with the watcher's Acquire load of `stop`.
        self.stop.store(true, Ordering::Release);
        self.poke();
        let thread = lock(&self.inner).thread.take();
        if let Some(t) = thread {
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
                // `join` returns once the thread cleared its id, a moment
                // before the kernel takes it out of the process's thread
                // count, which is what CPython reads right after `fork` to
                // warn about threads: wait for that too (bounded).
                let tid = self.tid.load(Ordering::Relaxed);
                if tid > 0 {
                    let task = format!("/proc/self/task/{tid}");
                    for _ in 0..2000 {
                        if rustix::fs::access(task.as_str(), rustix::fs::Access::EXISTS).is_err() {
                            break;
                        }
                        std::thread::sleep(Duration::from_micros(25));
                    }
                }
            }
        }
        // SeqCst: see `Watch::sleeping`.
        self.running.store(false, Ordering::SeqCst);
    }
}

/// Starts the watcher thread of `ctl` unless one runs.
fn start(ctl: &Arc<Ctl>, region: Weak<dyn Watched>) {
    if !crate::fork::register_late(prepare_fork, after_fork_in_parent, after_fork_in_child) {
        ctl.failed.store(true, Ordering::Release);
        return;
    }
    crate::fork::unsplit(|| {
        let mut inner = lock(&ctl.inner);
        // Held across the spawn, so the prepare handler (which sets
        // `FORKING` and then locks it) either finds this watcher registered
        // or makes us see `FORKING`.
        let mut reg = lock(&WATCHES);
        if ctl.running.load(Ordering::SeqCst) || FORKING.load(Ordering::SeqCst) {
            return;
        }
        inner.region = Some(region.clone());
        ctl.stop.store(false, Ordering::Relaxed);
        let me = ctl.clone();
        let spawned = std::thread::Builder::new()
            .name("segpool-watch".into())
            .stack_size(64 << 10)
            .spawn(move || {
                // Whatever ends the thread (a stop, the region gone, a
                // panic), the next sleeper sees `running` false and starts
                // another.
                struct Exit<'c>(&'c Ctl);
                impl Drop for Exit<'_> {
                    fn drop(&mut self) {
                        self.0.running.store(false, Ordering::SeqCst);
                    }
                }
                let _exit = Exit(&me);
                // Relaxed: read by `halt` after joining this thread.
                me.tid.store(
                    rustix::thread::gettid().as_raw_nonzero().get(),
                    Ordering::Relaxed,
                );
                watch(&me, &region);
            });
        match spawned {
            Ok(t) => {
                inner.thread = Some(t);
                // SeqCst: see `Watch::sleeping`.
                ctl.running.store(true, Ordering::SeqCst);
                reg.retain(|w| w.strong_count() > 0);
                if !reg.iter().any(|w| std::ptr::eq(w.as_ptr(), &**ctl)) {
                    reg.push(Arc::downgrade(ctl));
                }
            }
            Err(_) => ctl.failed.store(true, Ordering::Release),
        }
    });
}

/// Before `fork` (a late handler: ahead of the fork guard's own and of
/// every library registered before the first watcher started), outside the
/// gate (a watcher may be dropping the last reference to a region, which
/// enters a section): stops every watcher of this process, and any from
/// starting until the fork is done.
extern "C" fn prepare_fork() {
    FORKING.store(true, Ordering::SeqCst);
    let all: Vec<Arc<Ctl>> = lock(&WATCHES).iter().filter_map(Weak::upgrade).collect();
    for ctl in all {
        if ctl.running.load(Ordering::SeqCst) {
            ctl.halt();
        }
    }
}

/// After `fork`, in the parent: restarts the watchers that a sleeping
/// thread still needs.
extern "C" fn after_fork_in_parent() {
    FORKING.store(false, Ordering::SeqCst);
    let all: Vec<Arc<Ctl>> =
        crate::fork::unsplit(|| lock(&WATCHES).iter().filter_map(Weak::upgrade).collect());
    for ctl in all {
        // SeqCst: see `Watch::sleeping`.
        if ctl.sleepers.load(Ordering::SeqCst) > 0 {
            // Cloned out first: `start` locks `inner` again.
            let region = lock(&ctl.inner).region.clone();
            if let Some(region) = region {
                start(&ctl, region);
            }
        }
    }
}

/// In the child (async-signal-safe: one atomic store). Watcher threads are
/// not copied into it, and the inherited regions they watched are inert.
extern "C" fn after_fork_in_child() {
    FORKING.store(false, Ordering::Relaxed);
}

/// A participant the watcher may watch.
pub(crate) struct Peer {
    /// Entry index and incarnation, to notice a pidfd that fired for a
    /// process whose lock is still held.
    pub(crate) key: (usize, u64),
    pub(crate) pid: u32,
    pub(crate) pid_ino: u64,
}

/// The inode of a pidfd of this process if pidfds are per-process inodes
/// here (pidfs), else 0: what a participant records at join.
pub(crate) fn own_pid_ino() -> u64 {
    let Ok(fd) = rustix::process::pidfd_open(
        rustix::process::getpid(),
        rustix::process::PidfdFlags::empty(),
    ) else {
        return 0;
    };
    pidfs_ino(&fd).unwrap_or(0)
}

fn pidfs_ino(fd: &OwnedFd) -> Option<u64> {
    let fs = rustix::fs::fstatfs(fd).ok()?;
    if fs.f_type as u64 != PIDFS_MAGIC {
        return None;
    }
    let st = rustix::fs::fstat(fd).ok()?;
    Some(st.st_ino)
}

/// A pidfd for `peer`, if one can vouch for it.
fn pidfd_of(peer: &Peer) -> Option<OwnedFd> {
    if peer.pid_ino == 0 {
        return None;
    }
    let pid = rustix::process::Pid::from_raw(i32::try_from(peer.pid).ok()?)?;
    let fd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()?;
    (pidfs_ino(&fd) == Some(peer.pid_ino)).then_some(fd)
}

/// The watcher thread's body.
fn watch(ctl: &Ctl, region: &Weak<dyn Watched>) {
    // Participants whose pidfd fired while their lock stayed held: checked
    // every FALLBACK from then on (a copy of the description outlives
    // them), not watched again through a pidfd that stays readable.
    let mut held_after_exit: Vec<(usize, u64)> = Vec::new();
    loop {
        // Acquire pairs with `halt`'s Release.
        if ctl.stop.load(Ordering::Acquire) {
            return;
        }
        let Some(r) = region.upgrade() else { return };
        let roster = r.roster();
        // Relaxed: a hint for sleepers (see `before_sleep`).
        ctl.seen_roster.store(roster, Ordering::Relaxed);
        r.sweep();
        let peers = r.peers();
        drop(r);
        held_after_exit.retain(|k| peers.iter().any(|p| p.key == *k));
        let mut untrusted = false;
        let mut fds: Vec<((usize, u64), OwnedFd)> = Vec::new();
        for p in &peers {
            match pidfd_of(p) {
                Some(fd) if !held_after_exit.contains(&p.key) => fds.push((p.key, fd)),
                _ => untrusted = true,
            }
        }
        let mut set: Vec<PollFd<'_>> = fds
            .iter()
            .map(|(_, fd)| PollFd::new(fd, PollFlags::IN))
            .collect();
        set.push(PollFd::new(&ctl.poke, PollFlags::IN));
        let every = if untrusted { FALLBACK } else { SAFETY_SLICE };
        let timeout = rustix::time::Timespec {
            tv_sec: every.as_secs() as i64,
            tv_nsec: i64::from(every.subsec_nanos()),
        };
        // EINTR and errors: go round again (sweep, rescan).
        let _ = rustix::event::poll(&mut set, Some(&timeout));
        let fired: Vec<(usize, u64)> = set
            .iter()
            .zip(&fds)
            .filter(|(p, _)| !p.revents().is_empty())
            .map(|(_, (k, _))| *k)
            .collect();
        drop(set);
        let mut buf = [0u8; 8];
        let _ = rustix::io::read(ctl.poke.as_fd(), &mut buf);
        if !fired.is_empty() {
            // Its lock goes before the pidfd fires; sweep, and whatever is
            // still held is checked by the fallback from now on.
            if let Some(r) = region.upgrade() {
                r.sweep();
                let alive = r.peers();
                held_after_exit.extend(fired.iter().filter(|k| alive.iter().any(|p| p.key == **k)));
            }
        }
    }
}
