//! Liveness witnesses: how one process learns that another one is dead,
//! from the kernel rather than from a pid.
//!
//! Participant entry `i` of a pool is held by whoever holds an open file
//! description (OFD) lock on byte `LOCK_BASE + i` of the pool's file. The
//! lock belongs to an open file description of its own (the pool's file
//! opened again through `/proc/self/fd`), which the kernel releases when the
//! last descriptor of it is closed: at the holder's exit, whatever killed
//! it, and only after its memory is gone (`do_exit` drops the address space
//! before the file table). So "entry `i` is ALIVE and nobody holds lock `i`"
//! means its process is dead and can no longer touch the pool, with no pid
//! reuse, pid namespace or fork to confuse it.
//!
//! `fork` copies descriptors, and a child holding a copy of the lock's
//! description would keep its parent "alive". So every witness registers
//! its descriptor with the fork guard, whose child handler closes it in
//! every child (`crate::fork::close_in_children`); a child that `exec`s
//! closes them anyway (they are close-on-exec). (If the guard's table is
//! full, a child keeps its parent's lock until it exits: a delay for
//! recovery, never a wrong recovery.)
//!
//! Locks live far beyond the end of the file (a lock may cover bytes that do
//! not exist), so they never touch the data and never conflict with
//! anything else.

use crate::error::{Error, Result};
use rustix::fd::{AsRawFd, BorrowedFd, IntoRawFd, OwnedFd};

/// Byte of participant 0's lock.
const LOCK_BASE: i64 = 1 << 40;

/// The lock that keeps one participant entry ours.
#[derive(Debug)]
pub(crate) struct Witness {
    fd: Option<OwnedFd>,
    slot: Option<usize>,
    fork_generation: u64,
}

fn flock(kind: libc::c_int, index: usize) -> libc::flock {
    // SAFETY: `flock` is a plain C struct for which all-zero is a valid
    // value (and l_pid must be 0 for OFD locks).
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = LOCK_BASE + index as i64;
    fl.l_len = 1;
    fl
}

impl Witness {
    /// Opens a new open file description of the pool's file, registers it
    /// for the fork handler, and returns it unlocked.
    pub(crate) fn open(pool_fd: BorrowedFd<'_>, fork_generation: u64) -> Result<Witness> {
        let path = format!("/proc/self/fd/{}", pool_fd.as_raw_fd());
        // One section: a `fork` between the open and the registration would
        // give the child an unregistered copy of the description, and with
        // it our lock for the child's whole life (`crate::fork`).
        crate::fork::unsplit(|| {
            let fd = rustix::fs::open(
                path.as_str(),
                rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .map_err(|e| Error::io("open the pool again for its liveness lock", e))?;
            let slot = crate::fork::close_in_children(fd.as_raw_fd());
            Ok(Witness {
                fd: Some(fd),
                slot,
                fork_generation,
            })
        })
    }

    /// Takes lock `index` if nobody holds it. `Ok(false)`: held.
    pub(crate) fn try_lock(&self, index: usize) -> Result<bool> {
        let fd = self.fd.as_ref().expect("open until dropped");
        let fl = flock(libc::F_WRLCK, index);
        // SAFETY: `fd` is open; `fl` is a valid `flock` that lives across the
        // call; F_OFD_SETLK only reads it.
        let rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
        if rc == 0 {
            return Ok(true);
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EACCES) => Ok(false),
            _ => Err(Error::io("fcntl(F_OFD_SETLK)", err)),
        }
    }
}

impl Witness {
    /// Whether our descriptor still names the pool's file: someone may
    /// have closed it and another file taken its number (`dup2` over it,
    /// or `close_range` then an `open`). Then our lock is gone, and locks
    /// taken through the number would be taken on that other file.
    pub(crate) fn names(&self, pool_fd: BorrowedFd<'_>) -> bool {
        let fd = self.fd.as_ref().expect("open until dropped");
        match (rustix::fs::fstat(fd), rustix::fs::fstat(pool_fd)) {
            (Ok(a), Ok(b)) => (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino),
            _ => false,
        }
    }

    /// Drops lock `index` again (one taken to recover a dead entry).
    pub(crate) fn unlock(&self, index: usize) {
        let fd = self.fd.as_ref().expect("open until dropped");
        let fl = flock(libc::F_UNLCK, index);
        // SAFETY: `fd` is open; `fl` is a valid `flock` that lives across the
        // call; F_OFD_SETLK only reads it. Unlocking a byte we do not hold
        // is a no-op, so an error here leaves nothing to undo.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
    }
}

/// Whether some process holds participant `index`'s lock, asked through
/// any descriptor of the pool's file (read-only ones included).
pub(crate) fn is_held(fd: BorrowedFd<'_>, index: usize) -> Result<bool> {
    let mut fl = flock(libc::F_WRLCK, index);
    // SAFETY: `fd` is open; `fl` is a valid `flock` that F_OFD_GETLK fills in.
    let rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
    if rc != 0 {
        return Err(Error::io(
            "fcntl(F_OFD_GETLK)",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
}

impl Drop for Witness {
    fn drop(&mut self) {
        let Some(fd) = self.fd.take() else { return };
        if crate::fork::current() != self.fork_generation {
            // Inherited through fork: the child handler closed this number
            // already, and it may name another file by now.
            let _ = fd.into_raw_fd();
            return;
        }
        // One section, for the reason given in `open`: a child forked
        // between the two steps would keep an unregistered copy.
        crate::fork::unsplit(|| {
            if let Some(slot) = self.slot {
                crate::fork::keep_in_children(slot);
            }
            drop(fd); // closing the description releases the lock
        });
    }
}
