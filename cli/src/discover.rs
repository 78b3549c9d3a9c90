//! Finding pools: which shared objects are segpool pools, and which
//! processes hold them.
//!
//! - memfd pools have no name: they show up only as `/proc/PID/fd/N` links
//!   whose target reads `/memfd:segpool (deleted)`;
//! - named pools are files `/dev/shm/segpool-*`, and the processes that use
//!   them hold an fd whose link names that file.
//!
//! Every fd of the same object has the same (device, inode) when followed
//! (`stat` of the link path), which is how fds are grouped into pools across
//! processes. Read-only fds are left out: they belong to observers such as
//! another `segpool`, never to a process that uses the pool. Nothing here
//! opens a pool: it only reads directories, links, `fdinfo` and `comm`.

use segpool::inspect::{MEMFD_NAME, SHM_PREFIX};
use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// Where a pool's memory lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A sealed memfd, reachable through a holder's `/proc/PID/fd/N`.
    Memfd,
    /// A POSIX shm object in `/dev/shm`.
    Named,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Memfd => "memfd",
            Kind::Named => "named",
        }
    }
}

/// A process that has a pool open.
#[derive(Clone, Debug)]
pub struct Holder {
    pub pid: u32,
    /// `/proc/PID/comm`, or `?` if it could not be read.
    pub command: String,
    /// The fds through which it holds the pool, ascending.
    pub fds: Vec<i32>,
}

/// One pool: an object and the processes that hold it.
#[derive(Clone, Debug)]
pub struct Found {
    pub kind: Kind,
    /// (device, inode) of the object.
    pub id: (u64, u64),
    /// The shm name (`/segpool-...`) of a named pool.
    pub name: Option<String>,
    /// A named pool whose name was removed while processes still hold it.
    pub unlinked: bool,
    /// By pid, ascending.
    pub holders: Vec<Holder>,
}

impl Found {
    /// The paths to open it through, best first: its `/dev/shm` file, then
    /// each holder's fd.
    pub fn paths(&self) -> Vec<PathBuf> {
        let mut paths = Vec::new();
        if let (Some(name), false) = (&self.name, self.unlinked) {
            paths.push(PathBuf::from(format!("/dev/shm{name}")));
        }
        for h in &self.holders {
            for fd in &h.fds {
                paths.push(PathBuf::from(format!("/proc/{}/fd/{fd}", h.pid)));
            }
        }
        paths
    }

    /// How to name it as a TARGET: its shm name, or the first `PID:FD`.
    pub fn target(&self) -> String {
        match (&self.name, self.unlinked, self.holders.first()) {
            (Some(name), false, _) => name.clone(),
            (_, _, Some(h)) => format!("{}:{}", h.pid, h.fds[0]),
            (Some(name), true, None) => name.clone(),
            (None, _, None) => format!("inode {}", self.id.1),
        }
    }
}

/// One fd of a process that is a segpool object.
#[derive(Clone, Debug)]
pub struct PoolFd {
    pub fd: i32,
    pub kind: Kind,
    pub name: Option<String>,
    pub unlinked: bool,
    pub id: (u64, u64),
}

/// What a scan of the system found.
#[derive(Debug, Default)]
pub struct Scan {
    /// By kind, then name or first holder.
    pub pools: Vec<Found>,
    /// Processes whose fds we may not list (another user's).
    pub unsearchable: usize,
}

/// Reads what a `/proc/PID/fd/N` link says about a pool, if it is one.
fn classify(target: &std::ffi::OsStr) -> Option<(Kind, Option<String>, bool)> {
    let t = target.to_str()?;
    if t == format!("/memfd:{MEMFD_NAME} (deleted)") {
        return Some((Kind::Memfd, None, false));
    }
    let rest = t.strip_prefix("/dev/shm/")?;
    if !rest.starts_with(SHM_PREFIX) {
        return None;
    }
    let (file, unlinked) = match rest.strip_suffix(" (deleted)") {
        Some(f) => (f, true),
        None => (rest, false),
    };
    Some((Kind::Named, Some(format!("/{file}")), unlinked))
}

/// The segpool fds of process `pid`, ascending. `Err` if its fd directory
/// cannot be read (`NotFound`: no such process; `PermissionDenied`).
pub fn pool_fds(pid: u32) -> io::Result<Vec<PoolFd>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let Ok(entry) = entry else { continue };
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        // The fd may close between the listing and these calls: skip it.
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let Some((kind, name, unlinked)) = classify(target.as_os_str()) else {
            continue;
        };
        if read_only(pid, fd) {
            continue; // an observer (another `segpool`), not a user of the pool
        }
        let Ok(meta) = std::fs::metadata(entry.path()) else {
            continue;
        };
        out.push(PoolFd {
            fd,
            kind,
            name,
            unlinked,
            id: (meta.dev(), meta.ino()),
        });
    }
    out.sort_by_key(|p| p.fd);
    Ok(out)
}

/// Whether fd `fd` of `pid` was opened read-only (`/proc/PID/fdinfo/FD`
/// says `flags: ...` in octal, access mode in the low two bits). A pool's
/// creator and attachers always hold it read-write; `segpool` itself, and
/// any other observer, read-only.
fn read_only(pid: u32, fd: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))
        .ok()
        .and_then(|info| {
            let flags = info.lines().find_map(|l| l.strip_prefix("flags:"))?;
            u32::from_str_radix(flags.trim(), 8).ok()
        })
        .is_some_and(|flags| flags & 0o3 == 0)
}

/// `/proc/PID/comm` without its newline, or `?`.
pub fn command(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim_end().to_owned())
        .unwrap_or_else(|_| "?".into())
}

/// Whether process `pid` exists.
pub fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Every pool this user can see: the memfds and named objects held by the
/// processes whose fds we may list, and every `/dev/shm/segpool-*` file
/// (held or not). This process itself is left out.
pub fn scan() -> Scan {
    let me = std::process::id();
    let mut scan = Scan::default();
    let mut pools: BTreeMap<(u64, u64), Found> = BTreeMap::new();
    let pids = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me);
    for pid in pids {
        let fds = match pool_fds(pid) {
            Ok(fds) => fds,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                scan.unsearchable += 1;
                continue;
            }
            Err(_) => continue, // exited during the scan
        };
        if fds.is_empty() {
            continue;
        }
        let command = command(pid);
        for pfd in fds {
            let found = pools.entry(pfd.id).or_insert_with(|| Found {
                kind: pfd.kind,
                id: pfd.id,
                name: pfd.name.clone(),
                unlinked: pfd.unlinked,
                holders: Vec::new(),
            });
            match found.holders.last_mut() {
                Some(h) if h.pid == pid => h.fds.push(pfd.fd),
                _ => found.holders.push(Holder {
                    pid,
                    command: command.clone(),
                    fds: vec![pfd.fd],
                }),
            }
        }
    }
    // Named objects nobody holds (a crashed creator, or another user's).
    for entry in std::fs::read_dir("/dev/shm")
        .into_iter()
        .flatten()
        .flatten()
    {
        let file = entry.file_name();
        let Some(file) = file.to_str().filter(|f| f.starts_with(SHM_PREFIX)) else {
            continue;
        };
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let id = (meta.dev(), meta.ino());
        let found = pools.entry(id).or_insert_with(|| Found {
            kind: Kind::Named,
            id,
            name: None,
            unlinked: false,
            holders: Vec::new(),
        });
        found.name = Some(format!("/{file}"));
        found.unlinked = false;
    }
    scan.pools = pools.into_values().collect();
    for p in &mut scan.pools {
        p.holders.sort_by_key(|h| h.pid);
    }
    scan.pools
        .sort_by_key(|p| (p.kind == Kind::Named, p.target_sort_key()));
    scan
}

impl Found {
    fn target_sort_key(&self) -> (Option<u32>, Option<String>) {
        (self.holders.first().map(|h| h.pid), self.name.clone())
    }
}

/// Finds the pool with object id `id` in a fresh scan.
pub fn find(id: (u64, u64)) -> Option<Found> {
    scan().pools.into_iter().find(|p| p.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn link_targets_are_classified() {
        assert_eq!(
            classify(OsStr::new("/memfd:segpool (deleted)")),
            Some((Kind::Memfd, None, false))
        );
        assert_eq!(
            classify(OsStr::new("/dev/shm/segpool-12-00ff")),
            Some((Kind::Named, Some("/segpool-12-00ff".into()), false))
        );
        assert_eq!(
            classify(OsStr::new("/dev/shm/segpool-12-00ff (deleted)")),
            Some((Kind::Named, Some("/segpool-12-00ff".into()), true))
        );
        for other in [
            "/memfd:other (deleted)",
            "/memfd:segpool-x (deleted)",
            "/dev/shm/iox2_x",
            "socket:[1234]",
            "/tmp/segpool-1",
        ] {
            assert_eq!(classify(OsStr::new(other)), None, "{other}");
        }
    }
}
