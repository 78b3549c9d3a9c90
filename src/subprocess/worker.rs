//! The worker side: [`worker()`] and the [`Worker`] it opens.

use super::{ENV_PREFIX, MSG_DONE, MSG_LEN, MSG_PASS, WORKER_ENV, WORKER_PROBE_EVERY, message};
use crate::error::{Error, Result};
use crate::handle::{ENV_VAR as HANDLE_ENV, PoolHandle};
use crate::pool::SegmentPool;
use crate::writer::{UnitWriter, Writer};
use std::cell::Cell;
use std::ffi::OsString;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once a process claimed its worker socket: the fd can have one owner.
static CLAIMED: AtomicBool = AtomicBool::new(false);

/// What [`WORKER_ENV`] says.
#[derive(Debug, PartialEq, Eq)]
struct WorkerEnv {
    ctl: RawFd,
    /// Inode of the socket the parent made for this worker.
    sock: u64,
    parent: u32,
    index: usize,
    workers: usize,
}

impl std::str::FromStr for WorkerEnv {
    type Err = Error;

    fn from_str(s: &str) -> Result<WorkerEnv> {
        let bad = |why: String| Error::BadHandle(format!("{WORKER_ENV}: {why}"));
        let mut words = s.split(' ');
        if words.next() != Some(ENV_PREFIX) {
            return Err(bad(format!("does not start with {ENV_PREFIX:?}")));
        }
        let mut fields: [Option<u64>; 5] = [None; 5];
        for word in words {
            let (key, value) = word
                .split_once('=')
                .ok_or_else(|| bad(format!("field {word:?} is not key=value")))?;
            let slot = match key {
                "ctl" => 0,
                "parent" => 1,
                "index" => 2,
                "workers" => 3,
                "sock" => 4,
                _ => return Err(bad(format!("unknown field {key:?}"))),
            };
            let v = value
                .parse::<u64>()
                .map_err(|_| bad(format!("{key}={value:?} is not a number")))?;
            if fields[slot].replace(v).is_some() {
                return Err(bad(format!("field {key:?} given twice")));
            }
        }
        let [
            Some(ctl),
            Some(parent),
            Some(index),
            Some(workers),
            Some(sock),
        ] = fields
        else {
            return Err(bad(
                "ctl=, sock=, parent=, index= and workers= are all required".into(),
            ));
        };
        let ctl = RawFd::try_from(ctl).map_err(|_| bad(format!("ctl={ctl} is out of range")))?;
        let parent = u32::try_from(parent)
            .ok()
            .filter(|&p| p > 1)
            .ok_or_else(|| bad(format!("parent={parent} is not a parent pid")))?;
        let (index, workers) = (index as usize, workers as usize);
        if index >= workers {
            return Err(bad(format!("index={index} is not below workers={workers}")));
        }
        Ok(WorkerEnv {
            ctl,
            sock,
            parent,
            index,
            workers,
        })
    }
}

/// `Ok` while `parent` is still this process's parent.
fn parent_alive(parent: u32) -> Result<()> {
    let ppid = rustix::process::getppid().map(|p| p.as_raw_nonzero().get().unsigned_abs());
    if ppid == Some(parent) {
        Ok(())
    } else {
        Err(Error::PeerGone {
            pid: parent,
            how: "the parent exited or was killed (this worker was re-parented)".into(),
        })
    }
}

/// Whether this process runs one thread (this one): `/proc/self/task`
/// lists one. False when it cannot tell.
fn single_threaded() -> bool {
    std::fs::read_dir("/proc/self/task").is_ok_and(|tasks| tasks.take(2).count() == 1)
}

/// The values of [`WORKER_ENV`] and `SEGPOOL_HANDLE`, removed from the
/// environment (when that is sound: see below) so that no program this
/// process runs inherits them.
fn take_env() -> (Option<OsString>, Option<OsString>) {
    let vars = (std::env::var_os(WORKER_ENV), std::env::var_os(HANDLE_ENV));
    if vars != (None, None) && single_threaded() {
        // SAFETY: `remove_var` is unsound only while another thread may read
        // or write the environment. This process has one thread, this one
        // (`/proc/self/task` lists only it), and no other can start before
        // these calls return: only this thread could start it, and it is
        // here. (A signal handler may not read the environment: `getenv`
        // is not async-signal-safe.) With other threads the variables stay.
        unsafe {
            std::env::remove_var(WORKER_ENV);
            std::env::remove_var(HANDLE_ENV);
        }
    }
    vars
}

/// Opens this process's [`Worker`]: attaches to the pool its parent
/// [`Workers`](super::Workers) passed and to the control socket.
///
/// Call it first thing in `main`, before starting threads: it then also
/// removes [`WORKER_ENV`] and `SEGPOOL_HANDLE` from the environment, so
/// programs this worker runs never see them. (With other threads running
/// it leaves them, as changing the environment then is not sound; they are
/// harmless anyway, see below.) It sets close-on-exec on the inherited
/// socket and memfd, so no program this worker runs inherits them either.
///
/// It adopts the control socket only if fd `ctl` is the very socket the
/// parent made for this worker (its inode, named in [`WORKER_ENV`]) and the
/// parent named there is this process's parent: a program a worker runs
/// (exec'd in its place, or a child of it) that inherited the variables
/// gets [`Error::BadHandle`], whatever socket it has under that number,
/// and its fds are left untouched.
///
/// [`Error::BadHandle`] when not started by a `Workers` (the variables are
/// missing, malformed or inherited, or `worker` was already called in this
/// process); [`Error::PeerGone`] when the parent already died.
pub fn worker() -> Result<Worker> {
    if CLAIMED.load(Ordering::Relaxed) {
        return Err(Error::BadHandle(
            "worker() was already called in this process".into(),
        ));
    }
    let (worker_var, handle_var) = take_env();
    let env: WorkerEnv = match worker_var.map(OsString::into_string) {
        Some(Ok(s)) => s.parse()?,
        None => {
            return Err(Error::BadHandle(format!(
                "{WORKER_ENV} is not set: this process was not started by segpool::subprocess::Workers"
            )));
        }
        Some(Err(_)) => {
            return Err(Error::BadHandle(format!("{WORKER_ENV} is not valid UTF-8")));
        }
    };
    // The very socket the parent made for us? Asked of /proc, so no fd is
    // touched before we know: a process that inherited the variable from a
    // worker (a program it ran) may have anything under that number.
    let link = std::fs::read_link(format!("/proc/self/fd/{}", env.ctl)).map_err(|e| {
        Error::BadHandle(format!(
            "{WORKER_ENV}: control fd {} is not open ({e}): the variable was inherited, \
             not set by segpool::subprocess::Workers for this process",
            env.ctl
        ))
    })?;
    let want = format!("socket:[{}]", env.sock);
    if link.as_os_str() != want.as_str() {
        return Err(Error::BadHandle(format!(
            "{WORKER_ENV}: control fd {} is {}, not the parent's socket {want}: the variable \
             was inherited, not set by segpool::subprocess::Workers for this process",
            env.ctl,
            link.display()
        )));
    }
    // Our socket, so the variable is ours: the parent named in it made us.
    parent_alive(env.parent)?;
    if CLAIMED.swap(true, Ordering::Relaxed) {
        return Err(Error::BadHandle(
            "worker() was already called in this process".into(),
        ));
    }
    // SAFETY: /proc says fd `env.ctl` is open and is the socket (by inode)
    // the parent made for this process and let it inherit (clearing
    // close-on-exec on it for this child only), so no code in this process
    // opened it or owns it, and `CLAIMED` makes this the only adoption of
    // it. From here `ctl` owns and closes it.
    let ctl = unsafe { UnixStream::from_raw_fd(env.ctl) };
    // Inherited without close-on-exec (so it survived our exec): restore it,
    // so programs this worker runs do not keep the socket, or the pool's
    // memory, alive after it exits.
    rustix::io::fcntl_setfd(&ctl, rustix::io::FdFlags::CLOEXEC)
        .map_err(|e| Error::io("fcntl(FD_CLOEXEC) on the control socket", e))?;
    let handle: PoolHandle = match handle_var.map(OsString::into_string) {
        Some(Ok(s)) => s.parse()?,
        None => {
            return Err(Error::BadHandle(format!(
                "{HANDLE_ENV} is not set (but {WORKER_ENV} is)"
            )));
        }
        Some(Err(_)) => {
            return Err(Error::BadHandle(format!("{HANDLE_ENV} is not valid UTF-8")));
        }
    };
    if let crate::handle::Backing::Fd(n) = handle.backing() {
        // Close-on-exec before `attach` (which opens the memfd anew through
        // /proc), so no program this worker runs inherits it even if
        // attaching fails. The handle came with our socket from our
        // parent, so fd `n` is the memfd it let us inherit.
        if std::fs::read_link(format!("/proc/self/fd/{n}")).is_ok() {
            // SAFETY: fd `n` is open (just checked) and nothing in this
            // process owns it (inherited, never adopted); the borrow lasts
            // one fcntl call.
            let fd = unsafe { rustix::fd::BorrowedFd::borrow_raw(*n) };
            rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::CLOEXEC)
                .map_err(|e| Error::io("fcntl(FD_CLOEXEC) on the inherited pool fd", e))?;
        }
    }
    let pool = SegmentPool::attach(&handle)?;
    let parent = env.parent;
    let writer = pool
        .open_writer()
        .with_probe(WORKER_PROBE_EVERY, Arc::new(move || parent_alive(parent)));
    Ok(Worker {
        pool,
        writer,
        ctl,
        parent,
        index: env.index,
        workers: env.workers,
        pass: Cell::new(None),
        started: Cell::new(false),
    })
}

/// A worker's end: the pool, a writer, and the link to the parent.
///
/// Serve passes with [`next_pass`](Self::next_pass) and write units with
/// [`begin_unit`](Self::begin_unit) or [`send`](Self::send); both notice a
/// dead parent ([`Error::PeerGone`]) and a torn-down pool
/// ([`Error::Shutdown`]). Exiting the process is always fine: the parent
/// counts a worker that exits with status 0 as done.
#[derive(Debug)]
pub struct Worker {
    pool: SegmentPool,
    writer: Writer,
    ctl: UnixStream,
    parent: u32,
    index: usize,
    workers: usize,
    /// Generation of the pass being served.
    pass: Cell<Option<u32>>,
    /// Whether `next_pass` ran once (else `begin_unit` runs it).
    started: Cell<bool>,
}

impl Worker {
    /// This worker's index, `0..workers()`, in spawn order.
    pub fn index(&self) -> usize {
        self.index
    }

    /// How many workers the parent spawned.
    pub fn workers(&self) -> usize {
        self.workers
    }

    /// The parent's pid.
    pub fn parent(&self) -> u32 {
        self.parent
    }

    /// The pool.
    pub fn pool(&self) -> &SegmentPool {
        &self.pool
    }

    /// The writer underneath (with the parent check installed as its
    /// probe), for threads of this worker. Units begun on it skip
    /// [`begin_unit`](Self::begin_unit)'s generation check: compare
    /// `pool().generation()` with [`generation`](Self::generation) yourself.
    pub fn writer(&self) -> &Writer {
        &self.writer
    }

    /// Generation of the pass being served, if any.
    pub fn generation(&self) -> Option<u32> {
        self.pass.get()
    }

    /// `Ok` while the parent lives; [`Error::PeerGone`] (and a named pool
    /// unlinked) once it died.
    pub fn check_parent(&self) -> Result<()> {
        parent_alive(self.parent).inspect_err(|_| self.parent_gone())
    }

    fn parent_gone(&self) {
        // The creator cannot unlink a named pool any more; a memfd pool has
        // no name. ENOENT (a sibling was first) is fine.
        let _ = self.pool.unlink();
    }

    /// Asks the kernel to `SIGKILL` this process when its parent dies
    /// (`PR_SET_PDEATHSIG`), for workers that spend long stretches outside
    /// segpool calls. Caveat: "parent" is the *thread* that spawned this
    /// worker; use it only if the `Workers` was spawned from a thread that
    /// outlives it (the main thread, say).
    pub fn exit_with_parent(&self) -> Result<()> {
        rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
            .map_err(|e| Error::io("prctl(PR_SET_PDEATHSIG)", e))?;
        // The parent may have died before the prctl: then no signal comes.
        self.check_parent()
    }

    /// Ends the pass being served (tells the parent every unit of it is
    /// committed) and waits for the parent to start the next one.
    /// `Ok(true)`: serve it. `Ok(false)`: the parent is tearing down; exit.
    /// [`Error::PeerGone`] if the parent died.
    pub fn next_pass(&self) -> Result<bool> {
        self.started.set(true);
        if let Some(g) = self.pass.take() {
            if let Err(e) = (&self.ctl).write_all(&message(MSG_DONE, g)) {
                self.check_parent()?;
                // Alive but closed its end: teardown.
                if matches!(e.kind(), ErrorKind::BrokenPipe | ErrorKind::ConnectionReset) {
                    return Ok(false);
                }
                return Err(Error::io("tell the parent a pass is done", e));
            }
        }
        loop {
            let mut m = [0u8; MSG_LEN];
            match (&self.ctl).read_exact(&mut m) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => {
                    self.check_parent()?;
                    return Ok(false);
                }
                Err(e) => {
                    self.check_parent()?;
                    return Err(Error::io("wait for the parent's next pass", e));
                }
            }
            if m[0] != MSG_PASS {
                return Err(Error::Corrupt(format!(
                    "unknown message {:?} from the parent",
                    m[0] as char
                )));
            }
            let g = u32::from_le_bytes([m[1], m[2], m[3], m[4]]);
            // A pass the parent already replaced: skip it (it waits for
            // nothing from us there).
            if g == self.pool.generation() {
                self.pass.set(Some(g));
                return Ok(true);
            }
        }
    }

    /// Claims a segment for a unit of the current pass (waiting for the
    /// first pass if [`next_pass`](Self::next_pass) was never called).
    ///
    /// [`Error::Stale`]: the parent started another pass (call `next_pass`);
    /// [`Error::Shutdown`]: teardown; [`Error::PeerGone`]: the parent died
    /// (checked before claiming, and while blocked on a full pool); the
    /// pool's [`Error::Timeout`] after `acquire_timeout`.
    pub fn begin_unit(&self) -> Result<UnitWriter> {
        self.check_parent()?;
        if !self.started.get() && !self.next_pass()? {
            return Err(Error::Shutdown);
        }
        let Some(g) = self.pass.get() else {
            return Err(Error::Shutdown);
        };
        if self.pool.generation() != g {
            return Err(Error::Stale);
        }
        let unit = self.writer.begin_unit().inspect_err(|e| {
            if matches!(e, Error::PeerGone { .. }) {
                self.parent_gone();
            }
        })?;
        // Claimed after a reset: the lease is of the new generation, and
        // would commit a unit of this (old) pass into the new one.
        if self.pool.generation() != g {
            unit.abort_unit();
            return Err(Error::Stale);
        }
        Ok(unit)
    }

    /// One unit holding `data`: `begin_unit`, `write_binary`, `commit_unit`.
    /// Returns its span.
    pub fn send(&self, data: &[u8]) -> Result<usize> {
        let mut unit = self.begin_unit()?;
        unit.write_binary(data)?;
        unit.commit_unit()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_env_round_trips_and_refuses_garbage() {
        let ok: WorkerEnv = "segpool-worker/2 ctl=5 sock=123 parent=77 index=1 workers=3"
            .parse()
            .unwrap();
        assert_eq!(
            ok,
            WorkerEnv {
                ctl: 5,
                sock: 123,
                parent: 77,
                index: 1,
                workers: 3
            }
        );
        for s in [
            "",
            "segpool-worker/1 ctl=5 sock=123 parent=77 index=1 workers=3",
            "segpool-worker/2 ctl=5 parent=77 index=1 workers=3",
            "segpool-worker/2 ctl=5 sock=123 parent=77 index=1",
            "segpool-worker/2 ctl=5 ctl=6 sock=123 parent=77 index=1 workers=3",
            "segpool-worker/2 ctl=-5 sock=123 parent=77 index=1 workers=3",
            "segpool-worker/2 ctl=99999999999 sock=123 parent=77 index=1 workers=3",
            "segpool-worker/2 ctl=5 sock=-1 parent=77 index=1 workers=3",
            "segpool-worker/2 ctl=5 sock=123 parent=1 index=1 workers=3",
            "segpool-worker/2 ctl=5 sock=123 parent=77 index=3 workers=3",
            "segpool-worker/2 ctl=5 sock=123 parent=77 index=0 workers=3 extra=1",
        ] {
            assert!(
                matches!(s.parse::<WorkerEnv>(), Err(Error::BadHandle(_))),
                "{s:?} was accepted"
            );
        }
    }
}
