//! The parent side: [`Workers`] spawns the workers, iterates their units,
//! notices their deaths and tears everything down.

use super::{
    DEFAULT_GRACE, ENV_PREFIX, MSG_DONE, MSG_LEN, MSG_PASS, PARENT_PROBE_EVERY, READ_BUDGET,
    WORKER_ENV, message,
};
use crate::error::{Error, Result};
use crate::pool::SegmentPool;
use crate::reader::{Reader, Unit};
use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How a process ended, in words: "killed by signal 9 (SIGKILL)".
fn describe(status: ExitStatus) -> String {
    if let Some(sig) = status.signal() {
        let name = match sig {
            1 => "SIGHUP",
            2 => "SIGINT",
            3 => "SIGQUIT",
            4 => "SIGILL",
            6 => "SIGABRT",
            7 => "SIGBUS",
            8 => "SIGFPE",
            9 => "SIGKILL",
            11 => "SIGSEGV",
            13 => "SIGPIPE",
            15 => "SIGTERM",
            _ => "",
        };
        let core = if status.core_dumped() {
            ", core dumped"
        } else {
            ""
        };
        if name.is_empty() {
            format!("killed by signal {sig}{core}")
        } else {
            format!("killed by signal {sig} ({name}){core}")
        }
    } else {
        match status.code() {
            Some(code) => format!("exited with status {code}"),
            None => format!("ended: {status}"),
        }
    }
}

/// One worker process, as the parent sees it.
#[derive(Debug)]
struct Proc {
    child: Child,
    pid: u32,
    /// Parent's end of the socket (non-blocking); `None` once closed.
    ctl: Option<UnixStream>,
    /// A message not yet complete (at most `MSG_LEN - 1` bytes of it).
    partial: [u8; MSG_LEN],
    /// Bytes of `partial` filled.
    partial_len: usize,
    /// The worker closed its end (it is exiting).
    eof: bool,
    /// Latest generation the worker said it finished.
    done: Option<u32>,
    /// Set once it is known to have ended (a zombie, or reaped).
    dead: bool,
    /// Set once it is reaped (by us, or by someone else): from then on its
    /// pid may belong to another process.
    reaped: bool,
    /// How it ended, once reaped (`None` if someone else reaped it).
    exit: Option<ExitStatus>,
    /// Whether teardown had to SIGKILL it.
    forced: bool,
}

/// What one round of [`Proc::read_messages`] found.
#[derive(Clone, Copy, Debug, Default)]
struct Round {
    /// A `D` message came.
    news: bool,
    /// The read filled the budget: more bytes may be waiting.
    more: bool,
    /// Bytes held for this worker during the round (partial + read).
    held: usize,
}

impl Proc {
    fn new(child: Child, ctl: UnixStream) -> Proc {
        Proc {
            pid: child.id(),
            child,
            ctl: Some(ctl),
            partial: [0; MSG_LEN],
            partial_len: 0,
            eof: false,
            done: None,
            dead: false,
            reaped: false,
            exit: None,
            forced: false,
        }
    }

    /// Whether the worker ended just now (first noticed by this call),
    /// *without* reaping it: `waitid(P_PID, pid, WEXITED | WNOHANG |
    /// WNOWAIT)` leaves it a zombie, so its pid cannot be reused until
    /// [`reap`](Self::reap) (after its segments were taken back).
    fn noticed_exit(&mut self) -> bool {
        if self.dead {
            return false;
        }
        let Some(pid) = rustix::process::Pid::from_raw(self.pid as i32) else {
            return false;
        };
        let how = rustix::process::WaitIdOptions::EXITED
            | rustix::process::WaitIdOptions::NOHANG
            | rustix::process::WaitIdOptions::NOWAIT;
        match rustix::process::waitid(rustix::process::WaitId::Pid(pid), how) {
            Ok(Some(_)) => {
                self.dead = true;
                true
            }
            // Reaped by someone else (SIGCHLD ignored, or a `waitpid(-1)`
            // elsewhere in the process): dead, its status lost, its pid
            // free for reuse.
            Err(rustix::io::Errno::CHILD) => {
                self.dead = true;
                self.reaped = true;
                true
            }
            Ok(None) | Err(_) => false,
        }
    }

    /// Reaps the worker if it exited (records its status).
    fn reap(&mut self) {
        if self.reaped {
            return;
        }
        match self.child.try_wait() {
            Ok(Some(status)) => {
                self.exit = Some(status);
                self.dead = true;
                self.reaped = true;
            }
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::CHILD.raw_os_error()) => {
                self.dead = true;
                self.reaped = true;
            }
            Ok(None) | Err(_) => {}
        }
    }

    /// Reads at most [`READ_BUDGET`] bytes from the socket (one `read`)
    /// and handles the messages they complete. Bytes beyond the budget
    /// wait in the socket for the next round, so a worker that floods its
    /// socket costs the parent one bounded read per round, and the parent
    /// holds at most `READ_BUDGET + MSG_LEN - 1` bytes for it.
    fn read_messages(&mut self) -> Round {
        let mut round = Round::default();
        let Some(ctl) = self.ctl.as_mut() else {
            return round;
        };
        if self.eof {
            return round;
        }
        let mut buf = [0u8; READ_BUDGET];
        let n = loop {
            match ctl.read(&mut buf) {
                Ok(0) => {
                    self.eof = true;
                    return round;
                }
                Ok(n) => break n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // WouldBlock: nothing now. Other errors: treat the socket
                // as closed; reaping tells how the worker ended.
                Err(e) => {
                    if e.kind() != ErrorKind::WouldBlock {
                        self.eof = true;
                    }
                    return round;
                }
            }
        };
        round.held = self.partial_len + n;
        round.more = n == READ_BUDGET;
        for &b in &buf[..n] {
            self.partial[self.partial_len] = b;
            self.partial_len += 1;
            if self.partial_len < MSG_LEN {
                continue;
            }
            self.partial_len = 0;
            let m = self.partial;
            // Any other tag is a worker speaking another protocol: ignored,
            // so it never completes a pass by accident.
            if m[0] == MSG_DONE {
                let g = u32::from_le_bytes([m[1], m[2], m[3], m[4]]);
                self.done = Some(self.done.map_or(g, |d| d.max(g)));
                round.news = true;
            }
        }
        round
    }
}

/// State the iterator shares with the reader's probe.
#[derive(Debug, Default)]
struct Shared {
    procs: Vec<Proc>,
    /// Indices of workers noticed dead (zombies, not yet reaped) whose
    /// segments the iterator has not yet taken back.
    died: Vec<usize>,
    /// Something happened since the iterator last looked.
    news: bool,
    /// The last round left bytes unread on some socket (it read a whole
    /// budget): the iterator reads on before it sleeps.
    backlog: bool,
    /// The probe ended a wait (with [`probe_wake`]) since the iterator
    /// last looked.
    woke: bool,
    /// Most control-message bytes held for one worker in one round.
    high_water: usize,
}

impl Shared {
    /// Reads the workers' messages (one bounded read each) and notices
    /// exited workers; true if anything is new or bytes are left unread.
    fn poll(&mut self) -> bool {
        let mut news = false;
        let mut backlog = false;
        for i in 0..self.procs.len() {
            let p = &mut self.procs[i];
            let round = p.read_messages();
            self.high_water = self.high_water.max(round.held);
            news |= round.news;
            backlog |= round.more;
            if p.noticed_exit() {
                self.died.push(i);
                news = true;
            }
        }
        self.news |= news;
        self.backlog = backlog;
        news || backlog
    }
}

/// The error the reader's probe ends a wait with when [`Shared::poll`]
/// found something: not an error the caller sees.
fn probe_wake() -> Error {
    Error::Timeout(Duration::ZERO)
}

/// Whether `e` is [`probe_wake`]'s error (a `recv` without a timeout
/// times out in no other way).
fn is_probe_wake(e: &Error) -> bool {
    matches!(e, Error::Timeout(d) if d.is_zero())
}

/// Takes back what the dead worker `pid` held in the pool (the unit it was
/// writing); returns how many segments came back.
///
/// The parent calls it while `pid` is a zombie (noticed with `WNOWAIT`,
/// not yet reaped), so no other process can have that pid yet. Recovery
/// itself trusts no pid: it picks the participants that recorded `pid`
/// and recovers those whose liveness lock the kernel dropped (a zombie
/// holds no descriptors). Units the worker committed stay queued and are
/// still delivered; the unit it was writing comes back. This is the one
/// place that names the core's recovery call.
fn recover_dead_worker(pool: &SegmentPool, pid: u32) -> usize {
    // An error (the pool inherited through fork, our lock gone) recovers
    // nothing; the next blocked call reports it.
    pool.recover_writer(pid).unwrap_or(0)
}

/// A hook run with a dead worker's pid just before its segments are taken
/// back (tests use it to see the worker is still a zombie then).
struct RecoveryHook(Box<dyn FnMut(u32) + Send>);

impl std::fmt::Debug for RecoveryHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RecoveryHook")
    }
}

/// A worker death not yet reported to the iterator's caller.
#[derive(Debug)]
struct Gone {
    pid: u32,
    how: String,
    /// Units with tickets below this were published before the death was
    /// noticed: they are delivered first.
    mark: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PassState {
    /// No pass started yet: the first `next` starts one.
    Idle,
    /// Serving the pass of this generation.
    Running(u32),
    /// The last pass ended; `pass` starts another.
    Ended,
}

/// How a worker ended, as [`Workers::shutdown`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkerExit {
    /// Its pid.
    pub pid: u32,
    /// Its exit status; `None` if another part of this process reaped it
    /// (SIGCHLD ignored, or a `waitpid(-1)`), so the status was lost.
    pub status: Option<ExitStatus>,
    /// Whether teardown had to `SIGKILL` it after the grace period.
    pub forced: bool,
}

/// Worker processes producing into a pool, and the iterator over their
/// units. Owns the pool and the children: dropping it tears everything
/// down (see the [module docs](super) for what that means and for what
/// happens when a worker dies).
///
/// Iterating `Workers` (or the `&mut Workers` that [`pass`](Self::pass)
/// returns) yields the units of the current pass; the first `next` starts
/// the first pass. After a pass ends, `next` returns `None` until `pass`
/// starts another.
#[derive(Debug)]
pub struct Workers {
    pool: SegmentPool,
    reader: Reader,
    shared: Arc<Mutex<Shared>>,
    gone: VecDeque<Gone>,
    /// A unit taken from the ring but held back behind a death report.
    stash: Option<Unit>,
    pass: PassState,
    grace: Duration,
    last_poll: Instant,
    /// Run just before a dead worker's segments are taken back.
    recovery_hook: Option<RecoveryHook>,
    /// Filled by teardown (which runs once).
    exits: Option<Vec<WorkerExit>>,
}

impl Workers {
    /// Starts `n` workers running `cmd`, each with the pool (its handle in
    /// `SEGPOOL_HANDLE`, its memfd inherited) and a socket to this process
    /// (in [`WORKER_ENV`]). The pool is theirs and this object's from now on.
    ///
    /// The workers wait for the first pass; it starts on the first `next`
    /// or [`pass`](Self::pass). If spawning worker `k` fails, workers
    /// `0..k` are torn down and the error is returned.
    pub fn spawn(pool: SegmentPool, mut cmd: Command, n: usize) -> Result<Workers> {
        if n == 0 {
            return Err(Error::InvalidConfig(
                "a Workers needs at least one worker".into(),
            ));
        }
        let shared = Arc::new(Mutex::new(Shared::default()));
        let probe_state = shared.clone();
        let reader = pool.open_reader().with_probe(
            PARENT_PROBE_EVERY,
            Arc::new(move || {
                let mut sh = lock(&probe_state);
                if sh.poll() {
                    // Not an error the caller sees: it only ends the wait so
                    // the iterator can look at what `poll` recorded.
                    sh.woke = true;
                    Err(probe_wake())
                } else {
                    Ok(())
                }
            }),
        );
        pool.configure_command(&mut cmd);
        // The fd number of the child's socket end for the spawn in progress.
        let child_fd = Arc::new(AtomicI32::new(-1));
        let fd_cell = child_fd.clone();
        // SAFETY: the closure runs in the forked child before exec, where only
        // async-signal-safe work is allowed: one atomic load and one fcntl, no
        // allocation. The fd is open in the child: the parent keeps the
        // socket end alive until `spawn` returns, so it was open at fork.
        unsafe {
            cmd.pre_exec(move || {
                // Relaxed: stored by the thread that forked, before the fork
                // copied its memory; no other thread is involved.
                let fd = fd_cell.load(Ordering::Relaxed);
                let fd = rustix::fd::BorrowedFd::borrow_raw(fd);
                rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
                Ok(())
            });
        }
        let workers = Workers {
            pool,
            reader,
            shared,
            gone: VecDeque::new(),
            stash: None,
            pass: PassState::Idle,
            grace: DEFAULT_GRACE,
            last_poll: Instant::now(),
            recovery_hook: None,
            exits: None,
        };
        let parent = std::process::id();
        for index in 0..n {
            let (ours, theirs) =
                UnixStream::pair().map_err(|e| Error::io("socketpair (worker control)", e))?;
            child_fd.store(theirs.as_raw_fd(), Ordering::Relaxed);
            // The socket's inode names this very socket: the worker checks
            // that its fd `ctl` is it, so no other process that inherits
            // the variable (one the worker runs) adopts another socket.
            let sock = rustix::fs::fstat(&theirs)
                .map_err(|e| Error::io("fstat (worker control socket)", e))?
                .st_ino;
            cmd.env(
                WORKER_ENV,
                format!(
                    "{ENV_PREFIX} ctl={} sock={sock} parent={parent} index={index} workers={n}",
                    theirs.as_raw_fd()
                ),
            );
            // On error `workers` drops here and tears down those spawned.
            let child = cmd.spawn().map_err(|e| Error::io("spawn worker", e))?;
            drop(theirs);
            ours.set_nonblocking(true)
                .map_err(|e| Error::io("set worker socket non-blocking", e))?;
            lock(&workers.shared).procs.push(Proc::new(child, ours));
        }
        Ok(workers)
    }

    /// How long teardown waits for workers to exit before killing them
    /// (default [`DEFAULT_GRACE`]).
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// The pool (for `stats`, `published`, ...).
    pub fn pool(&self) -> &SegmentPool {
        &self.pool
    }

    /// Pids of every worker spawned, dead or alive, in spawn order.
    pub fn pids(&self) -> Vec<u32> {
        lock(&self.shared).procs.iter().map(|p| p.pid).collect()
    }

    /// Segments taken back from dead processes so far (units they had
    /// begun and not committed, or held as readers): by this parent when a
    /// worker's death is noticed, or earlier by any process's recovery (a
    /// blocked `begin_unit` or `recv` recovers within 1 s). The pool-wide
    /// `stats().recovered_segments`.
    pub fn recovered(&self) -> usize {
        self.pool.stats().recovered_segments as usize
    }

    /// Runs `hook` with a dead worker's pid just before its segments are
    /// taken back (while it is still a zombie). For tests.
    #[doc(hidden)]
    pub fn on_recovery(mut self, hook: impl FnMut(u32) + Send + 'static) -> Self {
        self.recovery_hook = Some(RecoveryHook(Box::new(hook)));
        self
    }

    /// The most control-message bytes the parent held for one worker at
    /// once (read in one round plus an incomplete message): at most
    /// `READ_BUDGET + MSG_LEN - 1` however fast workers write. For tests.
    #[doc(hidden)]
    pub fn control_high_water(&self) -> usize {
        lock(&self.shared).high_water
    }

    /// Workers not yet known to have exited.
    pub fn live(&self) -> usize {
        let mut sh = lock(&self.shared);
        sh.poll();
        sh.procs.iter().filter(|p| !p.dead).count()
    }

    /// Starts a new pass and returns the iterator over it: resets the pool
    /// (units of an unfinished pass are dropped; views you hold stay valid)
    /// and tells every live worker to serve the new generation.
    pub fn pass(&mut self) -> Result<&mut Self> {
        self.start_pass()?;
        Ok(self)
    }

    fn start_pass(&mut self) -> Result<u32> {
        // A unit held back behind a death report belongs to the old pass.
        self.stash = None;
        self.pass = PassState::Ended;
        self.pool.reset()?;
        let generation = self.pool.generation();
        let msg = message(MSG_PASS, generation);
        let mut sh = lock(&self.shared);
        for p in sh.procs.iter_mut().filter(|p| !p.dead && !p.eof) {
            let Some(ctl) = p.ctl.as_mut() else { continue };
            match ctl.write_all(&msg) {
                Ok(()) => {}
                // The worker is gone or going: reaping will tell how.
                Err(e)
                    if matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset) =>
                {
                    p.eof = true
                }
                Err(e) => return Err(Error::io("tell worker to start a pass", e)),
            }
        }
        drop(sh);
        self.pass = PassState::Running(generation);
        Ok(generation)
    }

    /// Reads the workers' messages and notices deaths, then handles each
    /// death: takes back the dead worker's segments *while it is a zombie*,
    /// then reaps it, then queues a report if it exited abnormally.
    fn poll(&mut self) {
        self.last_poll = Instant::now();
        let mut sh = lock(&self.shared);
        sh.poll();
        sh.news = false;
        sh.woke = false;
        let died = std::mem::take(&mut sh.died);
        for i in died {
            let p = &mut sh.procs[i];
            let pid = p.pid;
            // Not reaped yet (only noticed with `WNOWAIT`): a zombie keeps
            // its pid, so no process can have reused it, nothing can race
            // the recovery, and the segments found are surely the dead
            // worker's. A worker someone else reaped may have a successor
            // with its pid already: its segments are left alone.
            if !p.reaped {
                if let Some(RecoveryHook(hook)) = self.recovery_hook.as_mut() {
                    hook(pid);
                }
                recover_dead_worker(&self.pool, pid);
            }
            p.reap();
            let finished = matches!(self.pass, PassState::Running(g) if p.done == Some(g));
            let how = match p.exit {
                Some(status) if status.success() => continue,
                Some(status) => describe(status),
                // Status unknown: an error unless it had finished the pass.
                None if finished => continue,
                None => "exited; its status was collected elsewhere (is SIGCHLD ignored?)".into(),
            };
            self.gone.push_back(Gone {
                pid,
                how,
                mark: self.pool.published(),
            });
        }
    }

    /// Whether every live worker finished pass `generation`.
    fn pass_complete(&self, generation: u32) -> bool {
        lock(&self.shared)
            .procs
            .iter()
            .all(|p| p.dead || p.done == Some(generation))
    }

    /// One look at the ring: `Some(item)` is what `next` returns now,
    /// `None` means nothing is queued.
    fn look(&mut self) -> Option<Option<Result<Unit>>> {
        match self.reader.try_recv() {
            Ok(Some(u)) => Some(Some(self.deliver(u))),
            Ok(None) => None,
            Err(Error::Shutdown) => Some(self.finish()),
            Err(e) => {
                self.pass = PassState::Ended;
                Some(Some(Err(e)))
            }
        }
    }

    /// `u`, unless a death noticed before `u` was published must be
    /// reported first: then that report, with `u` kept for the next call.
    fn deliver(&mut self, u: Unit) -> Result<Unit> {
        match self.gone.front() {
            Some(g) if g.mark <= u.ticket() => {
                let g = self.gone.pop_front().expect("front exists");
                self.stash = Some(u);
                Err(Error::PeerGone {
                    pid: g.pid,
                    how: g.how,
                })
            }
            _ => Ok(u),
        }
    }

    /// The iteration's end: pending death reports first, then `None`.
    fn finish(&mut self) -> Option<Result<Unit>> {
        if let Some(g) = self.gone.pop_front() {
            return Some(Err(Error::PeerGone {
                pid: g.pid,
                how: g.how,
            }));
        }
        self.pass = PassState::Ended;
        None
    }

    /// One step of the iteration (see [`Iterator::next`]).
    fn step(&mut self, generation: u32) -> Option<Result<Unit>> {
        loop {
            if let Some(u) = self.stash.take() {
                return Some(self.deliver(u));
            }
            // `news`: a death or message seen by `live` or by the probe;
            // `backlog`: bytes left unread by the last round.
            let (news, backlog) = {
                let sh = lock(&self.shared);
                (sh.news, sh.backlog)
            };
            if news || backlog || self.last_poll.elapsed() >= PARENT_PROBE_EVERY {
                self.poll();
            }
            if let Some(item) = self.look() {
                return item;
            }
            // Nothing queued. Look at the workers *before* the last look at
            // the ring: a worker sends `D` after its last commit, and a dead
            // worker publishes nothing after it is noticed dead, so if they were
            // all done then and the ring is empty after, the pass is over.
            self.poll();
            let complete = self.pass_complete(generation);
            if let Some(item) = self.look() {
                return item;
            }
            if let Some(g) = self.gone.pop_front() {
                return Some(Err(Error::PeerGone {
                    pid: g.pid,
                    how: g.how,
                }));
            }
            if complete {
                return self.finish();
            }
            // A socket holds more than a round reads: read on (a budget per
            // worker per round, with a look at the ring between rounds)
            // rather than sleep.
            if lock(&self.shared).backlog {
                continue;
            }
            // Sleep until a unit comes; the probe ends the wait early when
            // a worker exits or says something.
            let woken = self.reader.recv();
            if let Some(item) = self.woken(woken) {
                return item;
            }
        }
    }

    /// What `step` makes of the blocking `recv`'s result: `None` to look
    /// again (the probe ended the wait: a worker said something or died),
    /// else the item `next` returns. Only the probe's own wake-up is looked
    /// past; any other error ([`Error::Corrupt`], an I/O error, ...) is
    /// returned and ends the pass.
    fn woken(&mut self, r: Result<Unit>) -> Option<Option<Result<Unit>>> {
        match r {
            Ok(u) => Some(Some(self.deliver(u))),
            Err(e) if is_probe_wake(&e) && std::mem::take(&mut lock(&self.shared).woke) => None,
            Err(Error::Shutdown) => Some(self.finish()),
            Err(e) => {
                self.pass = PassState::Ended;
                Some(Some(Err(e)))
            }
        }
    }

    /// Tears down now and reports how each worker ended: `shutdown_arena`,
    /// close the sockets, wait up to the grace period, `SIGKILL` the rest,
    /// reap all, unlink a named pool. The error, if any, is the unlink's.
    pub fn shutdown(mut self) -> Result<Vec<WorkerExit>> {
        self.teardown()
    }

    fn teardown(&mut self) -> Result<Vec<WorkerExit>> {
        if let Some(exits) = &self.exits {
            return Ok(exits.clone());
        }
        if self.pool.is_inherited() {
            // A copy inherited through fork: the workers, the pool and the
            // name are the parent's. Leave them alone (closing our copies
            // of the sockets is harmless: the parent holds its own).
            self.exits = Some(Vec::new());
            return Ok(Vec::new());
        }
        self.stash = None;
        self.pass = PassState::Ended;
        self.pool.shutdown_arena();
        let mut sh = lock(&self.shared);
        for p in &mut sh.procs {
            // End-of-file for a worker waiting in `next_pass`.
            p.ctl = None;
        }
        let deadline = Instant::now() + self.grace;
        loop {
            let mut all = true;
            for p in &mut sh.procs {
                p.reap();
                all &= p.reaped;
            }
            if all || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        for p in sh.procs.iter_mut().filter(|p| !p.reaped) {
            // Errors: it exited meanwhile (kill) or was reaped elsewhere
            // (wait); either way nothing more can be done for it.
            let killed = p.child.kill().is_ok();
            p.exit = p.child.wait().ok();
            p.dead = true;
            p.reaped = true;
            // A worker that exited on its own just before the kill was not forced.
            p.forced = killed && p.exit.and_then(|s| s.signal()) == Some(9);
        }
        let exits: Vec<WorkerExit> = sh
            .procs
            .iter()
            .map(|p| WorkerExit {
                pid: p.pid,
                status: p.exit,
                forced: p.forced,
            })
            .collect();
        drop(sh);
        self.exits = Some(exits.clone());
        // Views still held keep the mapping; the name goes now.
        self.pool.unlink()?;
        Ok(exits)
    }
}

impl Iterator for Workers {
    type Item = Result<Unit>;

    /// The next unit of the current pass, or a worker's death
    /// ([`Error::PeerGone`], after the units published before it was
    /// noticed); `None` when every live worker finished the pass and its
    /// units were all delivered, or after teardown. Other errors
    /// ([`Error::Corrupt`], ...) end the pass.
    fn next(&mut self) -> Option<Result<Unit>> {
        match self.pass {
            PassState::Ended => None,
            PassState::Running(g) => self.step(g),
            PassState::Idle => match self.start_pass() {
                Ok(g) => self.step(g),
                Err(e) => Some(Err(e)),
            },
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        // Only the unlink can fail, and nothing could be done about it here.
        let _ = self.teardown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (issue finding b): `Err(_) if news => continue` looked
    /// past *any* error from the blocking `recv` while news was pending, so
    /// a real one (a peer's corrupt ticket, consumed with the error) was
    /// lost. Only the probe's own wake-up may be looked past.
    #[test]
    fn a_real_error_from_the_wait_ends_the_pass_even_with_news_pending() {
        let pool = SegmentPool::new(4096, 2).unwrap();
        let mut workers = Workers::spawn(pool, Command::new("true"), 1).unwrap();
        let real = [
            Error::Corrupt("ticket 7 names segment 9 of 2".into()),
            Error::io("futex wait", std::io::Error::from_raw_os_error(14)),
        ];
        for e in real {
            let what = e.to_string();
            workers.pass = PassState::Running(1);
            // A worker's message or death, noticed by a probe round.
            lock(&workers.shared).news = true;
            match workers.woken(Err(e)) {
                Some(Some(Err(got))) => assert_eq!(got.to_string(), what),
                other => panic!("{what}: swallowed, got {other:?}"),
            }
            assert_eq!(workers.pass, PassState::Ended, "{what}: the pass goes on");
        }
        // The probe's own wake-up is looked past (once).
        workers.pass = PassState::Running(1);
        lock(&workers.shared).woke = true;
        assert!(workers.woken(Err(probe_wake())).is_none());
        assert!(matches!(
            workers.woken(Err(probe_wake())),
            Some(Some(Err(Error::Timeout(_))))
        ));
    }

    #[test]
    fn exit_statuses_are_described_in_words() {
        assert_eq!(
            describe(ExitStatus::from_raw(9)),
            "killed by signal 9 (SIGKILL)"
        );
        assert_eq!(
            describe(ExitStatus::from_raw(3 << 8)),
            "exited with status 3"
        );
    }
}
