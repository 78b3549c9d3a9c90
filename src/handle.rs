//! [`PoolHandle`]: how a pool travels to another process.
//!
//! A handle is a short string, so it fits an environment variable or an
//! argument:
//!
//! ```text
//! segpool/1 fd=7 len=8392704 timeout_ms=60000                (memfd, inherited)
//! segpool/1 shm=/segpool-4242-9f86d081884c7d65 len=... ...   (named object)
//! ```
//!
//! It carries no authority of its own: the receiving process must already
//! hold the fd (inherited across `exec`, see
//! [`SegmentPool::configure_command`](crate::SegmentPool::configure_command))
//! or be allowed to open the named object. [`SegmentPool::attach`](crate::SegmentPool::attach)
//! then validates everything the shared object says against its real size.

use crate::error::{Error, Result};
use std::fmt;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// The environment variable [`PoolHandle::from_env`] reads.
pub const ENV_VAR: &str = "SEGPOOL_HANDLE";

const PREFIX: &str = "segpool/1";
/// Longest shm name accepted (NAME_MAX).
const MAX_NAME: usize = 255;

/// Where the pool's memory is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Backing {
    /// A memfd at this descriptor number, inherited from the creator.
    Fd(i32),
    /// A POSIX shm object.
    Named(String),
}

/// Everything another process needs to attach to a pool.
///
/// Two handles are equal when they name the same backing, length and
/// timeout (whether either owns its descriptor does not count).
#[derive(Clone, Debug)]
pub struct PoolHandle {
    backing: Backing,
    len: u64,
    acquire_timeout: Duration,
    /// The descriptor `backing` names, for a handle made by
    /// [`from_fd`](Self::from_fd): it stays open while the handle (or a
    /// clone) lives. `None` for a handle that only names a number (one of
    /// a pool's, or one parsed from text).
    #[expect(dead_code, reason = "held for its Drop: keeps the descriptor open")]
    owned: Option<Arc<OwnedFd>>,
}

impl PartialEq for PoolHandle {
    fn eq(&self, other: &PoolHandle) -> bool {
        (&self.backing, self.len, self.acquire_timeout)
            == (&other.backing, other.len, other.acquire_timeout)
    }
}

impl Eq for PoolHandle {}

impl PoolHandle {
    pub(crate) fn new(backing: Backing, len: u64, acquire_timeout: Duration) -> Self {
        PoolHandle {
            backing,
            len,
            acquire_timeout,
            owned: None,
        }
    }

    /// A handle that keeps `fd` open and names it; the caller validated it
    /// (`PoolHandle::from_fd`, in `pool.rs`).
    pub(crate) fn owning(fd: OwnedFd, len: u64, acquire_timeout: Duration) -> Self {
        PoolHandle {
            backing: Backing::Fd(fd.as_raw_fd()),
            len,
            acquire_timeout,
            owned: Some(Arc::new(fd)),
        }
    }

    pub(crate) fn backing(&self) -> &Backing {
        &self.backing
    }

    /// Total bytes of the shared object.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Always false: a pool has at least one segment. (For clippy's sake.)
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The creator's `acquire_timeout`, which attached writers inherit.
    pub fn acquire_timeout(&self) -> Duration {
        self.acquire_timeout
    }

    /// The descriptor number a memfd pool's handle names, in this process;
    /// `None` for a named pool. It is open while what the handle came from
    /// lives: the pool ([`SegmentPool::handle`](crate::SegmentPool::handle))
    /// or, for a handle made by [`from_fd`](Self::from_fd), the handle
    /// itself. (A pool's own descriptor, borrowed for as long as the pool
    /// lives, is `AsFd` on [`SegmentPool`](crate::SegmentPool).)
    pub fn raw_fd(&self) -> Option<RawFd> {
        match self.backing {
            Backing::Fd(n) => Some(n),
            Backing::Named(_) => None,
        }
    }

    /// The shm name, for a named pool.
    pub fn name(&self) -> Option<&str> {
        match &self.backing {
            Backing::Named(n) => Some(n),
            Backing::Fd(_) => None,
        }
    }

    /// The handle in [`ENV_VAR`], or [`Error::BadHandle`] saying it is missing.
    pub fn from_env() -> Result<PoolHandle> {
        match std::env::var(ENV_VAR) {
            Ok(s) => s.parse(),
            Err(std::env::VarError::NotPresent) => Err(Error::BadHandle(format!(
                "{ENV_VAR} is not set: this process was not started by a segpool parent"
            ))),
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(Error::BadHandle(format!("{ENV_VAR} is not valid UTF-8")))
            }
        }
    }
}

impl fmt::Display for PoolHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(PREFIX)?;
        match &self.backing {
            Backing::Fd(fd) => write!(f, " fd={fd}")?,
            Backing::Named(n) => write!(f, " shm={n}")?,
        }
        write!(
            f,
            " len={} timeout_ms={}",
            self.len,
            self.acquire_timeout.as_millis().min(u64::MAX as u128)
        )
    }
}

fn valid_name(n: &str) -> bool {
    n.len() > 1
        && n.len() <= MAX_NAME
        && n.starts_with('/')
        && n[1..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !n[1..].starts_with('.')
}

impl FromStr for PoolHandle {
    type Err = Error;

    /// Parses the [`Display`](fmt::Display) form. Every field must appear
    /// exactly once; unknown fields, bad numbers and names with a `/` after
    /// the first character are refused.
    fn from_str(s: &str) -> Result<PoolHandle> {
        let bad = |why: String| Error::BadHandle(why);
        let mut words = s.split(' ');
        if words.next() != Some(PREFIX) {
            return Err(bad(format!("does not start with {PREFIX:?}")));
        }
        let (mut backing, mut len, mut timeout) = (None, None, None);
        for word in words {
            let (key, value) = word
                .split_once('=')
                .ok_or_else(|| bad(format!("field {word:?} is not key=value")))?;
            let number = |v: &str| {
                v.parse::<u64>()
                    .map_err(|_| bad(format!("{key}={v:?} is not a number")))
            };
            let slot_taken = match key {
                "fd" => {
                    let fd = i32::try_from(number(value)?)
                        .map_err(|_| bad(format!("fd={value} is out of range")))?;
                    backing.replace(Backing::Fd(fd)).is_some()
                }
                "shm" => {
                    if !valid_name(value) {
                        return Err(bad(format!("shm={value:?} is not a valid shm name")));
                    }
                    backing.replace(Backing::Named(value.to_owned())).is_some()
                }
                "len" => len.replace(number(value)?).is_some(),
                "timeout_ms" => timeout
                    .replace(Duration::from_millis(number(value)?))
                    .is_some(),
                _ => return Err(bad(format!("unknown field {key:?}"))),
            };
            if slot_taken {
                return Err(bad(format!(
                    "field {key:?} given twice (or fd and shm both)"
                )));
            }
        }
        Ok(PoolHandle::new(
            backing.ok_or_else(|| bad("neither fd= nor shm= given".into()))?,
            len.ok_or_else(|| bad("len= missing".into()))?,
            timeout.ok_or_else(|| bad("timeout_ms= missing".into()))?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_parse_round_trip() {
        for backing in [Backing::Fd(7), Backing::Named("/segpool-1-abc".into())] {
            let h = PoolHandle::new(backing, 123_456, Duration::from_millis(1500));
            let back: PoolHandle = h.to_string().parse().unwrap();
            assert_eq!(back, h);
        }
    }

    #[test]
    fn malformed_handles_are_refused_with_a_reason() {
        for s in [
            "",
            "segpool/2 fd=3 len=1 timeout_ms=0",
            "segpool/1 fd=3 len=1",
            "segpool/1 fd=3 fd=4 len=1 timeout_ms=0",
            "segpool/1 fd=3 shm=/x len=1 timeout_ms=0",
            "segpool/1 fd=-1 len=1 timeout_ms=0",
            "segpool/1 fd=99999999999 len=1 timeout_ms=0",
            "segpool/1 shm=/../etc/passwd len=1 timeout_ms=0",
            "segpool/1 shm=noslash len=1 timeout_ms=0",
            "segpool/1 shm=/ len=1 timeout_ms=0",
            "segpool/1 fd=3 len=1 timeout_ms=0 extra=1",
            "segpool/1  fd=3 len=1 timeout_ms=0",
        ] {
            assert!(
                matches!(s.parse::<PoolHandle>(), Err(Error::BadHandle(_))),
                "{s:?} was accepted"
            );
        }
    }
}
