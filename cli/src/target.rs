//! TARGET: how the user names one pool (`PID`, `PID:FD` or a shm name), and
//! opening it read-only.

use crate::discover::{self, Kind};
use crate::{CliError, note};
use segpool::inspect::{Inspector, SHM_PREFIX};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

/// A pool as the user named it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The pool process `PID` holds (its first, if it holds several).
    Pid(u32),
    /// The pool at fd `FD` of process `PID`.
    PidFd(u32, i32),
    /// A named pool: `segpool-...`, `/segpool-...` or `/dev/shm/segpool-...`.
    Name(String),
}

impl Target {
    /// Parses a TARGET argument.
    pub fn parse(s: &str) -> Result<Target, CliError> {
        let bad = |why: &str| CliError(format!("bad TARGET {s:?}: {why}"));
        if s.bytes().all(|b| b.is_ascii_digit()) && !s.is_empty() {
            return match s.parse::<u32>() {
                Ok(pid) if pid > 0 => Ok(Target::Pid(pid)),
                _ => Err(bad("not a valid pid")),
            };
        }
        if let Some((pid, fd)) = s.split_once(':') {
            let pid = pid
                .parse::<u32>()
                .ok()
                .filter(|&p| p > 0)
                .ok_or_else(|| bad("PID:FD needs a pid before the colon"))?;
            let fd = fd
                .parse::<i32>()
                .ok()
                .filter(|&f| f >= 0)
                .ok_or_else(|| bad("PID:FD needs an fd number after the colon"))?;
            return Ok(Target::PidFd(pid, fd));
        }
        let file = s
            .strip_prefix("/dev/shm/")
            .or_else(|| s.strip_prefix('/'))
            .unwrap_or(s);
        let valid = !file.is_empty()
            && !file.starts_with('.')
            && file
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !valid {
            return Err(bad(
                "expected a pid, PID:FD, or a shm name like segpool-123-9f86d081884c7d65",
            ));
        }
        if !file.starts_with(SHM_PREFIX) {
            note(&format!(
                "{file} does not look like a segpool name ({SHM_PREFIX}...); trying it anyway"
            ));
        }
        Ok(Target::Name(format!("/{file}")))
    }
}

/// A target, found and opened.
pub struct Opened {
    /// How reports name it (`PID:FD` or `/segpool-...`).
    pub label: String,
    /// What was opened.
    pub path: PathBuf,
    pub kind: Kind,
    /// The shm name of a named pool.
    pub name: Option<String>,
    /// (device, inode), to find the processes that hold it.
    pub id: (u64, u64),
    pub inspector: Inspector,
}

/// Turns an error opening `path` into a message that names it.
pub fn open_error(path: &Path, e: segpool::Error) -> CliError {
    let p = path.display();
    match &e {
        segpool::Error::Io { source, .. } => match source.kind() {
            ErrorKind::PermissionDenied => CliError(format!(
                "permission denied: {p} (the pool belongs to another user: run as that user, \
                 or as root)"
            )),
            ErrorKind::NotFound => CliError(format!(
                "no such pool: {p} (the process exited, has no such fd, or the name was removed)"
            )),
            _ => CliError(format!("cannot open {p}: {e}")),
        },
        _ => CliError(format!("{p}: {e}")),
    }
}

/// Opens `path` read-only and records what it is.
pub fn open_path(path: PathBuf, label: String) -> Result<Opened, CliError> {
    let inspector = Inspector::open_path(&path).map_err(|e| open_error(&path, e))?;
    use std::os::unix::fs::MetadataExt;
    // The inspector holds the object open, so this is the same object.
    let meta =
        std::fs::metadata(&path).map_err(|e| CliError(format!("{}: {e}", path.display())))?;
    let kind = if inspector.is_memfd() {
        Kind::Memfd
    } else {
        Kind::Named
    };
    let name = match kind {
        Kind::Memfd => None,
        Kind::Named if label.starts_with('/') => Some(label.clone()),
        Kind::Named => std::fs::read_link(&path)
            .ok()
            .and_then(|t| t.to_str().map(str::to_owned))
            .and_then(|t| {
                let t = t.strip_suffix(" (deleted)").unwrap_or(&t).to_owned();
                t.strip_prefix("/dev/shm").map(str::to_owned)
            }),
    };
    Ok(Opened {
        label,
        path,
        kind,
        name,
        id: (meta.dev(), meta.ino()),
        inspector,
    })
}

/// Finds and opens the pool `target` names.
pub fn open(target: &Target) -> Result<Opened, CliError> {
    match target {
        Target::Pid(pid) => {
            let fds = match discover::pool_fds(*pid) {
                Ok(fds) => fds,
                Err(e) if e.kind() == ErrorKind::PermissionDenied => {
                    return Err(CliError(format!(
                        "permission denied: /proc/{pid}/fd (process {pid} belongs to another \
                         user: run as that user, or as root)"
                    )));
                }
                Err(_) if !discover::alive(*pid) => {
                    return Err(CliError(format!("no process with pid {pid}")));
                }
                Err(e) => return Err(CliError(format!("/proc/{pid}/fd: {e}"))),
            };
            let Some(first) = fds.first() else {
                return Err(CliError(format!(
                    "process {pid} ({}) has no segpool pool open",
                    discover::command(*pid)
                )));
            };
            let mut distinct: Vec<&discover::PoolFd> = Vec::new();
            for f in &fds {
                if !distinct.iter().any(|d| d.id == f.id) {
                    distinct.push(f);
                }
            }
            if distinct.len() > 1 {
                let list: Vec<String> =
                    distinct.iter().map(|d| format!("{pid}:{}", d.fd)).collect();
                note(&format!(
                    "process {pid} holds {} pools ({}); showing {pid}:{} (name one as PID:FD)",
                    distinct.len(),
                    list.join(", "),
                    first.fd
                ));
            }
            open_path(
                PathBuf::from(format!("/proc/{pid}/fd/{}", first.fd)),
                format!("{pid}:{}", first.fd),
            )
        }
        Target::PidFd(pid, fd) => {
            if !discover::alive(*pid) {
                return Err(CliError(format!("no process with pid {pid}")));
            }
            open_path(
                PathBuf::from(format!("/proc/{pid}/fd/{fd}")),
                format!("{pid}:{fd}"),
            )
        }
        Target::Name(name) => open_path(PathBuf::from(format!("/dev/shm{name}")), name.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse() {
        assert_eq!(Target::parse("42").unwrap(), Target::Pid(42));
        assert_eq!(Target::parse("42:7").unwrap(), Target::PidFd(42, 7));
        for s in ["segpool-1-ab", "/segpool-1-ab", "/dev/shm/segpool-1-ab"] {
            assert_eq!(
                Target::parse(s).unwrap(),
                Target::Name("/segpool-1-ab".into()),
                "{s}"
            );
        }
        for s in [
            "",
            "0",
            "99999999999",
            "x:1",
            "1:x",
            "1:-1",
            "/dev/shm/",
            "a/b",
            "../x",
            ".x",
        ] {
            assert!(Target::parse(s).is_err(), "{s:?} was accepted");
        }
    }
}
