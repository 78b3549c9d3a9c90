//! Worker processes that produce into a pool: Rust's counterpart of SPDL's
//! `iterate_in_subprocess`, made to survive crashes on either side.
//!
//! The parent hands a [`SegmentPool`](crate::SegmentPool) and a [`Command`](std::process::Command) to
//! [`Workers::spawn`], which starts `n` copies of the command and owns the
//! pool and the children from then on. Each worker calls [`worker()`] once,
//! then writes units; the parent iterates them, pass by pass:
//!
//! ```no_run
//! use segpool::{SegmentPool, subprocess::Workers};
//! use std::process::Command;
//!
//! // parent
//! let pool = SegmentPool::new(1 << 20, 16)?;
//! let mut workers = Workers::spawn(pool, Command::new("my-decoder"), 4)?;
//! for unit in workers.pass()? {
//!     let unit = unit?; // Error::PeerGone if a worker crashed: the others go on
//!     println!("{} bytes", unit.len());
//! }
//! workers.shutdown()?; // or just drop it
//! # Ok::<(), segpool::Error>(())
//! ```
//! ```no_run
//! // worker (the `my-decoder` binary)
//! let w = segpool::subprocess::worker()?;
//! while w.next_pass()? {
//!     for item in 0..100u32 {
//!         match w.send(&item.to_le_bytes()) {
//!             Err(segpool::Error::Stale) => break, // the parent moved on
//!             r => r?,
//!         };
//!     }
//! }
//! # Ok::<(), segpool::Error>(())
//! ```
//!
//! # Channels
//! Units travel through the pool only. Beside it, each worker has a Unix
//! socket to the parent (fd inherited across `exec`, named in the
//! `SEGPOOL_WORKER` variable) that carries two 5-byte messages, `P gen`
//! (parent: "serve pass `gen`") and `D gen` (worker: "my units of pass `gen`
//! are all committed"), and whose end-of-file tells the worker that the
//! parent closed it (teardown) or died.
//!
//! The parent reads each socket a bounded amount per round (one `read` of
//! at most 256 messages), handling them as they come, between looks at the
//! ring: a worker that floods its socket costs the parent a bounded read
//! per round, never a loop or a growing buffer, and the other workers'
//! units keep coming.
//!
//! # What a worker adopts
//! `SEGPOOL_WORKER` names the socket's fd number *and its inode*, and the
//! parent's pid. [`worker()`] adopts fd `ctl` only if `/proc` shows it is
//! that very socket and the parent named is this process's parent, so a
//! program that inherited the variable from a worker (exec'd in its place,
//! or a child of it) gets [`Error::BadHandle`](crate::Error::BadHandle)
//! whatever socket it holds under that number, which stays untouched.
//! Once adopted, the socket and the memfd are close-on-exec again, so no
//! program a worker runs inherits them. Call `worker()` first thing in
//! `main`, before starting threads: then it also removes `SEGPOOL_WORKER`
//! and `SEGPOOL_HANDLE` from the environment. (With other threads running
//! it leaves them, since changing the environment then is not sound; they
//! are refused anyway, as above.)
//!
//! # Passes
//! [`Workers::pass`] calls [`SegmentPool::reset`](crate::SegmentPool::reset) (a new generation), sends
//! `P gen` to every live worker, and iterates until every live worker sent
//! `D gen` and the ring is drained. A worker's [`Worker::begin_unit`] checks
//! the generation before and after it claims a segment, so a unit of an
//! older pass never enters a newer one; if the parent abandons a pass (drops
//! the iterator early and starts another), the worker's next `begin_unit` or
//! `commit_unit` fails with [`Error::Stale`](crate::Error::Stale) and it should call
//! [`Worker::next_pass`]. Views kept from an earlier pass stay valid: their
//! segments stay out of every writer's reach until they drop.
//!
//! # Failure behaviour
//! - **A worker dies** (any signal, any point, including between
//!   `begin_unit` and `commit_unit`). The parent notices it without reaping
//!   it (`waitid` with `WNOWAIT`, checked between futex sleeps while it
//!   waits, and every few milliseconds while units flow), takes back the
//!   segment it was writing
//!   ([`SegmentPool::recover_writer`](crate::SegmentPool::recover_writer))
//!   while it is still a zombie, whose pid no new process can have, then
//!   reaps it and notes how many units were published at that moment. (A
//!   worker that something else reaped, SIGCHLD ignored say, may already
//!   have a successor under its pid: a segment it was writing is left
//!   alone, and the pool runs one short.) Iteration delivers every unit published
//!   before that mark, all of the dead worker's committed units among them,
//!   then yields one [`Error::PeerGone`](crate::Error::PeerGone) naming the pid and its signal or
//!   exit status, then goes on with the other workers: the pass ends when
//!   they are done. The dead worker takes no part in later passes. A worker
//!   that exits with status 0 is not an error: it counts as done.
//! - **The parent dies.** A worker notices with `getppid()` no longer being
//!   the parent's pid (it was re-parented): [`Worker::begin_unit`] checks
//!   before claiming, a `begin_unit` blocked on a full pool checks every
//!   [`WORKER_PROBE_EVERY`] between futex sleeps, and [`Worker::next_pass`]
//!   sees the socket's end-of-file at once. Each returns
//!   [`Error::PeerGone`](crate::Error::PeerGone) naming the parent, and unlinks a named pool (its
//!   creator can no longer). `PR_SET_PDEATHSIG` is not used by default: it
//!   fires when the *thread* that spawned the worker exits, which would kill
//!   workers whose `Workers` moved to another thread; a worker that spends
//!   long stretches outside segpool calls can opt in with
//!   [`Worker::exit_with_parent`].
//! - **Teardown** ([`Workers::shutdown`] or drop, also mid-pass):
//!   `shutdown_arena` (every blocked `begin_unit` returns
//!   [`Error::Shutdown`](crate::Error::Shutdown)), close the sockets (every `next_pass` returns
//!   `false`), wait up to the grace period ([`DEFAULT_GRACE`]) for the
//!   workers to exit, `SIGKILL` the others, reap all, unlink a named pool.
//!   Views still held keep the mapping (not the name) until they drop; a
//!   memfd pool leaves nothing behind.
//! - **A kill at any instruction** (protocol v2): the dead worker's
//!   participant entry names everything it owned, and the kernel witnesses
//!   its death (its liveness lock is gone), so recovery gives back the unit
//!   it was writing and leaves its committed units to be delivered. The
//!   kill -9 tests check that every segment is back after every trial.
//!
//! Both sides ignore `SIGPIPE` as every Rust binary does; a host that
//! restores its default action should expect it when a peer dies.

mod parent;
mod worker;

pub use parent::{WorkerExit, Workers};
pub use worker::{Worker, worker};

use std::time::Duration;

/// The environment variable that tells a worker where its parent is.
pub const WORKER_ENV: &str = "SEGPOOL_WORKER";
/// How long teardown waits for workers to exit before `SIGKILL`.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(2);
/// How often a blocked worker checks that its parent lives.
pub const WORKER_PROBE_EVERY: Duration = Duration::from_millis(20);
/// How often the parent reaps and reads its workers while it waits.
const PARENT_PROBE_EVERY: Duration = Duration::from_millis(10);

/// First word of [`WORKER_ENV`]'s value.
const ENV_PREFIX: &str = "segpool-worker/2";
/// "Serve pass `gen`" (parent to worker).
const MSG_PASS: u8 = b'P';
/// "Pass `gen` is fully committed" (worker to parent).
const MSG_DONE: u8 = b'D';
/// Bytes of every control message: a tag, then a little-endian generation.
const MSG_LEN: usize = 5;
/// Most bytes the parent reads from one worker's socket per round (one
/// `read`): 256 messages. A worker that floods its socket costs the parent
/// this much work and memory per round; the rest waits in the socket.
const READ_BUDGET: usize = 256 * MSG_LEN;

/// One control message.
fn message(tag: u8, generation: u32) -> [u8; MSG_LEN] {
    let g = generation.to_le_bytes();
    [tag, g[0], g[1], g[2], g[3]]
}
