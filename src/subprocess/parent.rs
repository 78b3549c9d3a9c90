//! The parent side: [`Workers`] spawns the workers, iterates their units,
//! notices their deaths and tears everything down.

use super::{
    DEFAULT_GRACE, ENV_PREFIX, MSG_DONE, MSG_LEN, MSG_PASS, PARENT_PROBE_EVERY, WORKER_ENV, message,
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
    /// Bytes of a message not yet complete.
    inbox: Vec<u8>,
    /// The worker closed its end (it is exiting).
    eof: bool,
    /// Latest generation the worker said it finished.
    done: Option<u32>,
    /// Set once it is known to have ended.
    dead: bool,
    /// How it ended, once reaped (`None` if someone else reaped it).
    exit: Option<ExitStatus>,
    /// Whether teardown had to SIGKILL it.
    forced: bool,
}

impl Proc {
    /// Reaps the worker if it exited; true if it did just now.
    fn reap(&mut self) -> bool {
        if self.dead {
            return false;
        }
        match self.child.try_wait() {
            Ok(Some(status)) => {
                self.exit = Some(status);
                self.dead = true;
                true
            }
            // Reaped by someone else (SIGCHLD ignored, or a `waitpid(-1)`
            // elsewhere in the process): dead, its status lost.
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::CHILD.raw_os_error()) => {
                self.dead = true;
                true
            }
            Ok(None) | Err(_) => false,
        }
    }

    /// Reads every complete message waiting on the socket; true if a
    /// `D` message came.
    fn read_messages(&mut self) -> bool {
        let Some(ctl) = self.ctl.as_mut() else {
            return false;
        };
        let mut news = false;
        let mut buf = [0u8; 64];
        while !self.eof {
            match ctl.read(&mut buf) {
                Ok(0) => self.eof = true,
                Ok(n) => self.inbox.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // WouldBlock: nothing more now. Other errors: treat the
                // socket as closed; reaping tells how the worker ended.
                Err(e) => {
                    if e.kind() != ErrorKind::WouldBlock {
                        self.eof = true;
                    }
                    break;
                }
            }
        }
        let whole = self.inbox.len() - self.inbox.len() % MSG_LEN;
        for m in self.inbox[..whole].chunks_exact(MSG_LEN) {
            // Any other tag is a worker speaking another protocol: ignored,
            // so it never completes a pass by accident.
            if m[0] == MSG_DONE {
                let g = u32::from_le_bytes([m[1], m[2], m[3], m[4]]);
                self.done = Some(self.done.map_or(g, |d| d.max(g)));
                news = true;
            }
        }
        self.inbox.drain(..whole);
        news
    }
}

/// State the iterator shares with the reader's probe.
#[derive(Debug, Default)]
struct Shared {
    procs: Vec<Proc>,
    /// Indices of workers reaped but not yet handled by the iterator.
    reaped: Vec<usize>,
    /// Something happened since the iterator last looked.
    news: bool,
}

impl Shared {
    /// Reaps exited workers and reads their messages; true if anything new.
    fn poll(&mut self) -> bool {
        let mut news = false;
        for i in 0..self.procs.len() {
            let p = &mut self.procs[i];
            news |= p.read_messages();
            if p.reap() {
                self.reaped.push(i);
                news = true;
            }
        }
        self.news |= news;
        news
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
    /// Segments taken back from dead workers so far.
    recovered: usize,
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
                if lock(&probe_state).poll() {
                    // Not an error the caller sees: it only ends the wait so
                    // the iterator can look at what `poll` recorded.
                    Err(Error::Timeout(Duration::ZERO))
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
            recovered: 0,
            exits: None,
        };
        let parent = std::process::id();
        for index in 0..n {
            let (ours, theirs) =
                UnixStream::pair().map_err(|e| Error::io("socketpair (worker control)", e))?;
            child_fd.store(theirs.as_raw_fd(), Ordering::Relaxed);
            cmd.env(
                WORKER_ENV,
                format!(
                    "{ENV_PREFIX} ctl={} parent={parent} index={index} workers={n}",
                    theirs.as_raw_fd()
                ),
            );
            // On error `workers` drops here and tears down those spawned.
            let child = cmd.spawn().map_err(|e| Error::io("spawn worker", e))?;
            drop(theirs);
            ours.set_nonblocking(true)
                .map_err(|e| Error::io("set worker socket non-blocking", e))?;
            lock(&workers.shared).procs.push(Proc {
                pid: child.id(),
                child,
                ctl: Some(ours),
                inbox: Vec::new(),
                eof: false,
                done: None,
                dead: false,
                exit: None,
                forced: false,
            });
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

    /// Segments taken back from dead workers so far (units they had begun
    /// and not committed).
    pub fn recovered(&self) -> usize {
        self.recovered
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

    /// Reaps and reads the workers, then handles deaths: recovers their
    /// segments and queues a report for each abnormal exit.
    fn poll(&mut self) {
        self.last_poll = Instant::now();
        let reaped = {
            let mut sh = lock(&self.shared);
            sh.poll();
            sh.news = false;
            let indices: Vec<usize> = sh.reaped.drain(..).collect();
            indices
                .into_iter()
                .map(|i| {
                    let p = &sh.procs[i];
                    let finished = matches!(self.pass, PassState::Running(g) if p.done == Some(g));
                    (p.pid, p.exit, finished)
                })
                .collect::<Vec<_>>()
        };
        for (pid, status, finished) in reaped {
            // Reaped, so dead: nothing of it can race the recovery, and its
            // pid cannot have been reused by a process holding this pool
            // (we spawn none after the first pass's workers).
            self.recovered += self.pool.recover_writer(pid);
            let how = match status {
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
            // `news`: a death or message seen by `live` or by the probe.
            if self.last_poll.elapsed() >= PARENT_PROBE_EVERY || lock(&self.shared).news {
                self.poll();
            }
            if let Some(item) = self.look() {
                return item;
            }
            // Nothing queued. Look at the workers *before* the last look at
            // the ring: a worker sends `D` after its last commit, and a dead
            // worker publishes nothing after it is reaped, so if they were
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
            // Sleep until a unit comes; the probe ends the wait early when
            // a worker exits or says it is done.
            match self.reader.recv() {
                Ok(u) => return Some(self.deliver(u)),
                Err(_) if lock(&self.shared).news => continue,
                Err(Error::Shutdown) => return self.finish(),
                Err(e) => {
                    self.pass = PassState::Ended;
                    return Some(Err(e));
                }
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
                all &= p.dead;
            }
            if all || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        for p in sh.procs.iter_mut().filter(|p| !p.dead) {
            // Errors: it exited meanwhile (kill) or was reaped elsewhere
            // (wait); either way nothing more can be done for it.
            let killed = p.child.kill().is_ok();
            p.exit = p.child.wait().ok();
            p.dead = true;
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
