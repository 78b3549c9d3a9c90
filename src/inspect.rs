//! Read-only inspection of a live pool from outside the processes that use
//! it: what the `segpool` command-line tool is built on.
//!
//! An [`Inspector`] opens a pool's shared object by path (`/dev/shm/NAME`
//! for a named pool, `/proc/PID/fd/N` for a memfd another process holds),
//! validates its header exactly as [`SegmentPool::attach`] does, and maps
//! the control area alone, `PROT_READ`. [`Inspector::snapshot`] then reads
//! the counters, the segments' phases and owners, and the participant table
//! with plain `Relaxed` loads, and asks the kernel whether each participant
//! is alive (`F_OFD_GETLK` on its liveness lock, which only queries). Nothing
//! is ever written: no participant entry, no waiter count, no lock, no
//! recovery, no helping a cursor along, so watching a pool cannot change it.
//!
//! This module is the only place outside the protocol that knows the
//! control area's layout; everything else (the command-line tool included)
//! sees [`Snapshot`] and [`Participant`], which keep their meaning across
//! layout versions.
//!
//! A caveat shared with `attach`: a *named* object cannot be sealed, so a
//! process that truncates it under an open [`Inspector`] makes the next
//! [`snapshot`](Inspector::snapshot) fault. `snapshot` re-checks the size
//! first, which narrows that window to the snapshot itself. memfd pools are
//! sealed and cannot shrink.
//!
//! [`SegmentPool::attach`]: crate::SegmentPool::attach

use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::protocol::{Control, Stats};

use memmap2::{MmapOptions, MmapRaw};
use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{FileType, Mode, OFlags, SealFlags};
use std::path::{Path, PathBuf};

/// The `memfd_create` name a pool's memfd carries (see `mapping.rs`); a
/// `/proc/PID/fd/N` link to it reads `/memfd:segpool (deleted)`.
pub const MEMFD_NAME: &str = "segpool";

/// Prefix of a named pool's shm name (`/segpool-<pid>-<16 hex digits>`),
/// without the leading slash: the file is `/dev/shm/segpool-...`.
pub const SHM_PREFIX: &str = "segpool-";

/// A read-only view of one pool's control area.
///
/// Holds the shared object open (so it cannot vanish while watched) and a
/// `PROT_READ` mapping of its control area only, never of the segments.
#[derive(Debug)]
pub struct Inspector {
    map: MmapRaw,
    fd: OwnedFd,
    layout: Layout,
    version: u32,
    path: PathBuf,
    memfd: bool,
}

/// One look at a pool. Fields are read one by one while the pool runs, so
/// they need not add up exactly (a segment may move between two loads).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Snapshot {
    /// Usable bytes per segment.
    pub segment_size: usize,
    /// Number of segments.
    pub count: usize,
    /// Layout version of the control area.
    pub version: u32,
    /// Counters, segments per phase, waiters, generation and shutdown, with
    /// the meaning [`SegmentPool::stats`](crate::SegmentPool::stats) gives them.
    pub stats: Stats,
    /// The mean committed span (as `commit_unit` returned it) of the last
    /// unit each segment carried, over the segments that carried a non-empty
    /// one; `None` before any did. The pool counts units, not bytes: this
    /// turns units/s into an estimate of bytes/s.
    pub mean_unit_len: Option<u64>,
    /// Who is writing: `(pid, segments)` for each process that has units
    /// being written (claimed and not yet committed: committed units are
    /// queued, not written), by pid, as the descriptors record the claimer.
    /// Segments of every phase are attributed to their owner in
    /// [`participants`](Self::participants).
    pub writers: Vec<(u32, usize)>,
    /// The participant entries in use: every process that created or
    /// attached the pool and has not closed it, by entry index, with whether
    /// the kernel still sees it alive (its liveness lock held). A dead one
    /// stays listed, with the segments it owned, until some process recovers
    /// it ([`SegmentPool::recover_dead`](crate::SegmentPool::recover_dead),
    /// or a blocked call's sweep).
    pub participants: Vec<Participant>,
}

/// One process that created or attached a pool, as the pool records it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Participant {
    /// Its slot in the pool's participant table.
    pub index: usize,
    /// How many times the slot was taken before (with `index`, names this
    /// process's tenure of the slot; descriptors name their owner by both).
    pub incarnation: u64,
    /// Its process id, as it recorded it.
    pub pid: u32,
    /// Whether it is still alive: `Some(false)` once nobody holds its
    /// liveness lock (the kernel dropped it at the process's exit, whatever
    /// killed it), `None` if the lock cannot be queried.
    pub alive: Option<bool>,
    /// Segments whose descriptors name it as owner now: units it is
    /// writing, units it committed that no consumer took yet, and units it
    /// holds as a reader.
    pub segments: usize,
    /// Its threads asleep waiting for space (producers) and for data
    /// (consumers). A dead participant's counts stay until it is recovered;
    /// [`Stats`]' waiter counts include them.
    pub waiting: (u32, u32),
}

/// `path: errno`, keeping the errno's kind (so `PermissionDenied` and
/// `NotFound` stay recognisable) and naming the path in the message.
fn io_at(op: &'static str, path: &Path, e: rustix::io::Errno) -> Error {
    let source = std::io::Error::from(e);
    Error::Io {
        op,
        source: std::io::Error::new(source.kind(), format!("{}: {source}", path.display())),
    }
}

impl Inspector {
    /// Opens the pool at `path` read-only: `/dev/shm/segpool-...` for a
    /// named pool, or `/proc/PID/fd/N` for a memfd that process `PID` holds
    /// (which needs the same user as `PID`, or `CAP_SYS_PTRACE`).
    ///
    /// The object must be a regular file. Its header is validated as
    /// `attach` validates it: [`Error::Incompatible`] for a wrong magic,
    /// layout version or page size, or a memfd that is not sealed against
    /// resizing; [`Error::Corrupt`] for a header that disagrees with itself
    /// or with the object's size (a truncated object included);
    /// [`Error::Io`], whose message names `path`, when it cannot be opened
    /// (`PermissionDenied`, `NotFound` for a process or name that is gone).
    /// `Corrupt` and `Incompatible` messages do not repeat the path: the
    /// caller has it. Never panics, whatever the object holds.
    pub fn open_path(path: &Path) -> Result<Inspector> {
        // Refuse anything but a regular file before opening it: opening a
        // FIFO blocks, and opening a device can have side effects.
        let st = rustix::fs::stat(path).map_err(|e| io_at("stat pool", path, e))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(Error::Incompatible(
                "not a regular file, so not a segpool pool".into(),
            ));
        }
        let fd = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_at("open pool", path, e))?;
        let st = rustix::fs::fstat(&fd).map_err(|e| io_at("fstat pool", path, e))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(Error::Incompatible(
                "not a regular file, so not a segpool pool".into(),
            ));
        }
        let memfd = is_memfd(&fd);
        if memfd {
            // As `attach` does for an inherited fd: a pool's memfd is always
            // sealed, so one that is not was never a pool.
            let seals = rustix::fs::fcntl_get_seals(&fd).unwrap_or(SealFlags::empty());
            if !seals.contains(SealFlags::SHRINK | SealFlags::GROW) {
                return Err(Error::Incompatible(format!(
                    "a memfd that is not sealed against resizing (seals {seals:?}), \
                     so not a segpool pool"
                )));
            }
        }
        let size = usize::try_from(st.st_size).map_err(|_| {
            Error::Corrupt(format!("shared object has negative size {}", st.st_size))
        })?;
        let peeked = crate::mapping::peek_header(&fd, size)?;
        let (layout, version) = (peeked.layout, peeked.version);
        // The control area alone: header, bitmap, descriptors and ring all
        // end before `segments_offset` (checked by `Layout::new`).
        let map = MmapOptions::new()
            .len(layout.segments_offset)
            .map_raw_read_only(&fd)
            .map_err(|e| Error::io("mmap (control area)", e))?;
        Ok(Inspector {
            map,
            fd,
            layout,
            version,
            path: path.to_owned(),
            memfd,
        })
    }

    /// The path this inspector was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the pool is a memfd (else a named shm object).
    pub fn is_memfd(&self) -> bool {
        self.memfd
    }

    /// Usable bytes per segment.
    pub fn segment_size(&self) -> usize {
        self.layout.segment_size
    }

    /// Number of segments.
    pub fn count(&self) -> usize {
        self.layout.count
    }

    /// Reads the control area once. Only loads: the pool is not changed.
    ///
    /// [`Error::Corrupt`] if the shared object shrank below the control
    /// area since it was opened (only a named object can: see the module
    /// docs); [`Error::Io`] if it cannot be checked.
    pub fn snapshot(&self) -> Result<Snapshot> {
        let st = rustix::fs::fstat(&self.fd).map_err(|e| io_at("fstat pool", &self.path, e))?;
        if usize::try_from(st.st_size).map_or(true, |s| s < self.layout.segments_offset) {
            return Err(Error::Corrupt(format!(
                "the shared object shrank to {} bytes while being watched",
                st.st_size
            )));
        }
        let l = &self.layout;
        // SAFETY: the read-only mapping holds `control_len` bytes,
        // page-aligned, and lives as long as `self`; only the census runs
        // on it, which makes `Relaxed` loads only (see `Layout::carve`).
        let ctl = Control::new(unsafe { l.carve(self.map.as_ptr()) }, l);
        let census = ctl.census();
        let participants: Vec<Participant> = census
            .participants
            .iter()
            .map(|v| Participant {
                index: v.index,
                incarnation: v.incarnation,
                pid: v.pid,
                alive: crate::liveness::is_held(self.fd.as_fd(), v.index).ok(),
                segments: v.segments,
                waiting: v.waiting,
            })
            .collect();
        let mut writers: Vec<(u32, usize)> = Vec::new();
        for owner in &census.writers {
            // The writer's pid, through its participant entry (0: unknown).
            let pid = census
                .participants
                .iter()
                .find(|v| v.index == owner.index())
                .map_or(0, |v| v.pid);
            match writers.binary_search_by_key(&pid, |&(p, _)| p) {
                Ok(i) => writers[i].1 += 1,
                Err(i) => writers.insert(i, (pid, 1)),
            }
        }
        let (len_sum, len_n) = (census.len_sum, census.len_count);
        let stats = census.stats;
        Ok(Snapshot {
            segment_size: l.segment_size,
            count: l.count,
            version: self.version,
            stats,
            mean_unit_len: (len_n > 0).then(|| len_sum / len_n),
            writers,
            participants,
        })
    }
}

/// Whether `fd` is a memfd: its `/proc/self/fd` link reads `/memfd:...`.
fn is_memfd(fd: &impl AsFd) -> bool {
    use rustix::fd::AsRawFd;
    let link = format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd());
    std::fs::read_link(link).is_ok_and(|t| t.as_os_str().as_encoded_bytes().starts_with(b"/memfd:"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SegmentPool;
    use crate::handle::Backing;
    use std::io::Write;
    use std::time::Duration;

    /// The `/proc/self/fd/N` path of a memfd pool of this process.
    fn fd_path(pool: &SegmentPool) -> PathBuf {
        match pool.handle().backing() {
            Backing::Fd(n) => PathBuf::from(format!("/proc/self/fd/{n}")),
            Backing::Named(n) => panic!("expected a memfd pool, got {n}"),
        }
    }

    /// A file in /dev/shm that is removed on drop, even if the test fails.
    struct ShmFile(PathBuf);

    impl ShmFile {
        fn with(tag: &str, bytes: &[u8]) -> ShmFile {
            let path = PathBuf::from(format!(
                "/dev/shm/segpool-inspect-test-{}-{tag}",
                std::process::id()
            ));
            let f = ShmFile(path);
            let mut file = std::fs::File::create(&f.0).unwrap();
            file.write_all(bytes).unwrap();
            f
        }
    }

    impl Drop for ShmFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// The bytes of a valid pool of `count` segments of 4096 bytes.
    fn pool_bytes(count: usize) -> Vec<u8> {
        let pool = SegmentPool::new(4096, count).unwrap();
        std::fs::read(fd_path(&pool)).unwrap()
    }

    fn ident_offset(field: &str) -> usize {
        match field {
            "magic" => 0,
            "version" => 8,
            "segment_size" => 16,
            "count" => 24,
            "total_len" => 88,
            _ => unreachable!(),
        }
    }

    /// A memfd pool of `count` 4 KiB segments.
    fn memfd_pool(count: usize, acquire_timeout: Duration) -> SegmentPool {
        let builder = SegmentPool::builder(4096, count);
        builder.acquire_timeout(acquire_timeout).build().unwrap()
    }

    #[test]
    fn a_live_pool_is_seen_as_its_own_stats_say() {
        let pool = memfd_pool(8, Duration::ZERO);
        let insp = Inspector::open_path(&fd_path(&pool)).unwrap();
        assert!(insp.is_memfd());
        assert_eq!((insp.segment_size(), insp.count()), (4096, 8));

        let writer = pool.open_writer();
        let reader = pool.open_reader();
        for n in [100usize, 200, 300] {
            let mut u = writer.begin_unit().unwrap();
            u.write_binary(&vec![7; n]).unwrap();
            u.commit_unit().unwrap();
        }
        let held = reader.recv().unwrap(); // 100 bytes, held
        let _writing = writer.begin_unit().unwrap();

        let snap = insp.snapshot().unwrap();
        assert_eq!(snap.stats, pool.stats());
        assert_eq!(snap.version, crate::layout::VERSION);
        assert_eq!((snap.segment_size, snap.count), (4096, 8));
        assert_eq!(
            (
                snap.stats.free,
                snap.stats.writing,
                snap.stats.queued,
                snap.stats.held
            ),
            (4, 1, 2, 1)
        );
        assert_eq!(snap.stats.published, 3);
        assert_eq!(snap.mean_unit_len, Some(200)); // 100, 200, 300
        let me = std::process::id();
        assert_eq!(
            snap.participants,
            [Participant {
                index: 0,
                incarnation: snap.participants[0].incarnation,
                pid: me,
                alive: Some(true),
                segments: 4, // writing one, holding one, two committed in the ring
                waiting: (0, 0),
            }]
        );
        assert_eq!(
            snap.writers,
            [(me, 1)],
            "committed units are not 'being written'"
        );

        drop(held);
        pool.shutdown_arena();
        let snap = insp.snapshot().unwrap();
        assert_eq!(snap.stats.reclaimed, 1);
        assert!(snap.stats.shutdown);
    }

    #[test]
    fn a_sleeper_is_counted_on_its_participant() {
        let pool = memfd_pool(1, Duration::from_secs(60));
        let insp = Inspector::open_path(&fd_path(&pool)).unwrap();
        let mut u = pool.open_writer().begin_unit().unwrap();
        u.write_binary(b"x").unwrap();
        u.commit_unit().unwrap();
        let held = pool.open_reader().recv().unwrap();
        let w = pool.open_writer();
        let sleeper = std::thread::spawn(move || w.begin_unit().map(drop));
        let until = std::time::Instant::now() + Duration::from_secs(30);
        while pool.stats().waiting_producers == 0 {
            assert!(std::time::Instant::now() < until, "never fell asleep");
            std::thread::sleep(Duration::from_millis(2));
        }
        let snap = insp.snapshot().unwrap();
        assert_eq!(snap.participants.len(), 1);
        let me = &snap.participants[0];
        assert_eq!((me.alive, me.segments, me.waiting), (Some(true), 1, (1, 0)));
        assert_eq!(snap.stats.participants, 1);
        assert_eq!(
            (
                snap.stats.recovered_participants,
                snap.stats.recovered_segments
            ),
            (0, 0)
        );
        pool.shutdown_arena();
        assert!(sleeper.join().unwrap().is_err(), "woken by shutdown");
        drop(held);
    }

    #[test]
    fn inspecting_writes_nothing() {
        let pool = SegmentPool::new(4096, 4).unwrap();
        let path = fd_path(&pool);
        let before = std::fs::read(&path).unwrap();
        let insp = Inspector::open_path(&path).unwrap();
        for _ in 0..3 {
            insp.snapshot().unwrap();
        }
        drop(insp);
        assert!(
            std::fs::read(&path).unwrap() == before,
            "the pool's bytes changed"
        );
    }

    #[test]
    fn a_named_pool_opens_through_dev_shm() {
        let pool = SegmentPool::builder(8192, 3).named(true).build().unwrap();
        let path = PathBuf::from(format!("/dev/shm{}", pool.name().unwrap()));
        let insp = Inspector::open_path(&path).unwrap();
        assert!(!insp.is_memfd());
        let snap = insp.snapshot().unwrap();
        assert_eq!(
            (snap.segment_size, snap.count, snap.stats.free),
            (8192, 3, 3)
        );
    }

    #[test]
    fn a_foreign_object_is_incompatible() {
        let f = ShmFile::with("foreign", &vec![0x5a; 8192]);
        let e = Inspector::open_path(&f.0).unwrap_err();
        assert!(
            matches!(e, Error::Incompatible(ref m) if m.contains("bad magic")),
            "{e}"
        );
    }

    #[test]
    fn another_layout_version_is_incompatible() {
        let mut bytes = pool_bytes(4);
        let at = ident_offset("version");
        let other = crate::layout::VERSION + 1;
        bytes[at..at + 4].copy_from_slice(&other.to_le_bytes());
        let f = ShmFile::with("v2", &bytes);
        let e = Inspector::open_path(&f.0).unwrap_err();
        assert!(
            matches!(e, Error::Incompatible(ref m) if m.contains(&format!("version {other}"))),
            "{e}"
        );
    }

    #[test]
    fn an_inconsistent_header_is_corrupt() {
        let mut bytes = pool_bytes(4);
        let at = ident_offset("count");
        bytes[at..at + 8].copy_from_slice(&5u64.to_le_bytes());
        let f = ShmFile::with("count", &bytes);
        let e = Inspector::open_path(&f.0).unwrap_err();
        assert!(matches!(e, Error::Corrupt(_)), "{e}");
    }

    #[test]
    fn a_truncated_pool_is_corrupt() {
        let bytes = pool_bytes(4);
        // A valid header over fewer bytes than it describes.
        let f = ShmFile::with("short", &bytes[..bytes.len() - 4096]);
        let e = Inspector::open_path(&f.0).unwrap_err();
        assert!(
            matches!(e, Error::Corrupt(ref m) if m.contains("shared object holds")),
            "{e}"
        );
        // Shorter than the header itself: refused before mapping it.
        let f = ShmFile::with("tiny", &bytes[..100]);
        let e = Inspector::open_path(&f.0).unwrap_err();
        assert!(
            matches!(e, Error::Corrupt(ref m) if m.contains("header")),
            "{e}"
        );
        let f = ShmFile::with("empty", &[]);
        assert!(matches!(Inspector::open_path(&f.0), Err(Error::Corrupt(_))));
    }

    #[test]
    fn a_missing_path_is_an_io_error_naming_it() {
        let path = Path::new("/dev/shm/segpool-does-not-exist-0");
        let e = Inspector::open_path(path).unwrap_err();
        match &e {
            Error::Io { source, .. } => {
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            }
            other => panic!("expected Io, got {other:?}"),
        }
        assert!(e.to_string().contains(path.to_str().unwrap()), "{e}");
    }

    #[test]
    fn a_directory_or_device_is_refused_before_opening() {
        for p in ["/dev/shm", "/dev/null"] {
            let e = Inspector::open_path(Path::new(p)).unwrap_err();
            assert!(
                matches!(e, Error::Incompatible(ref m) if m.contains("not a regular file")),
                "{p}: {e}"
            );
        }
    }

    #[test]
    fn an_unsealed_memfd_is_refused() {
        let fd = rustix::fs::memfd_create(MEMFD_NAME, rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        let bytes = pool_bytes(2);
        rustix::io::write(&fd, &bytes).unwrap();
        use rustix::fd::AsRawFd;
        let path = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        let e = Inspector::open_path(&path).unwrap_err();
        assert!(
            matches!(e, Error::Incompatible(ref m) if m.contains("sealed")),
            "{e}"
        );
    }

    #[test]
    fn random_headers_never_panic() {
        let good = pool_bytes(4);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for i in 0..200 {
            let mut bytes = good.clone();
            // Overwrite 1 to 4 random words of the identity line (the first
            // 88 bytes) with random values, some of them small.
            for _ in 0..1 + next() % 4 {
                let at = (next() % 11) as usize * 8;
                let v = if next() % 2 == 0 {
                    next() % 8192
                } else {
                    next()
                };
                bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
            }
            let f = ShmFile::with(&format!("random{i}"), &bytes);
            if let Ok(insp) = Inspector::open_path(&f.0) {
                let snap = insp.snapshot().unwrap();
                assert!(snap.stats.free <= snap.count);
            }
        }
    }
}
