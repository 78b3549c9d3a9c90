//! The shared mapping: where a pool's memory comes from (create, attach,
//! seal, prefault, unlink), and the protocol over it, carved once.
//!
//! Two backings:
//! - **memfd** (default): anonymous, sealed with `F_SEAL_SHRINK | F_SEAL_GROW
//!   | F_SEAL_SEAL`, so no process can truncate it under a peer's mapping
//!   (which would turn that peer's next access into SIGBUS). Nothing has a
//!   name, so nothing is left behind: the memory goes when the last process
//!   holding the fd or a mapping exits. Children inherit it across `exec`.
//! - **named** POSIX shm (`/dev/shm/segpool-<pid>-<random>`), created `0600`
//!   with `O_EXCL`, for unrelated processes. Such an object cannot be sealed:
//!   a peer that truncates it can crash the others. The creator unlinks it on
//!   drop (or earlier, with `unlink`).
//!
//! The creator faults every page in once (`MADV_POPULATE_WRITE`, falling back
//! to `MAP_POPULATE`): the first touch of a fresh shared page costs about
//! 0.6 s per GiB, which would otherwise land on the first pass of data.
//! Attaching maps with `MAP_POPULATE`, after the header was validated
//! through a small mapping of the control area alone.

use crate::error::{Error, Result};
use crate::handle::{Backing, PoolHandle};
use crate::layout::{Header, Layout, PREFAULTED};
use crate::protocol::Control;
use crate::sync::Ordering;
use memmap2::{MmapOptions, MmapRaw};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{MemfdFlags, Mode, OFlags, SealFlags};
use std::time::Duration;

/// A mapped pool: the object, its mapping, its geometry and the protocol
/// over it. Unmapped when dropped; the creator's drop also unlinks a named
/// object, unless this process inherited the mapping through `fork`.
#[derive(Debug)]
pub(crate) struct Mapping {
    map: MmapRaw,
    fd: OwnedFd,
    layout: Layout,
    name: Option<String>,
    /// Whether dropping this mapping unlinks `name` (the creator's).
    unlink_on_drop: bool,
    /// The fork generation the mapping was made in (`crate::fork`).
    fork_generation: u64,
    /// The protocol over `map`, carved once (`Layout::carve`). Its
    /// references point into the mapping, which outlives every borrow of
    /// `self` (they are handed out only through `control(&self)`).
    ctl: Control<'static>,
}

fn page_size() -> usize {
    rustix::param::page_size()
}

impl Mapping {
    /// Creates, sizes, seals (memfd), maps, prefaults and initializes a pool
    /// (nobody has joined it yet).
    pub(crate) fn create(layout: Layout, named: bool, prefault_pages: bool) -> Result<Mapping> {
        let (fd, name) = if named {
            let name = fresh_name()?;
            let fd = rustix::shm::open(
                name.as_str(),
                rustix::shm::OFlags::CREATE | rustix::shm::OFlags::EXCL | rustix::shm::OFlags::RDWR,
                Mode::RUSR | Mode::WUSR,
            )
            .map_err(|e| Error::io("shm_open (create)", e))?;
            (fd, Some(name))
        } else {
            (memfd()?, None)
        };
        let built = Mapping::build(fd, layout, name.clone(), prefault_pages);
        if let (Err(_), Some(name)) = (&built, &name) {
            // A failure must not leave a named object behind.
            let _ = unlink_name(name);
        }
        built
    }

    fn build(
        fd: OwnedFd,
        layout: Layout,
        name: Option<String>,
        prefault_pages: bool,
    ) -> Result<Mapping> {
        rustix::fs::ftruncate(&fd, layout.total_len as u64)
            .map_err(|e| Error::io("ftruncate", e))?;
        if name.is_none() {
            rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)
                .map_err(|e| Error::io("fcntl(F_ADD_SEALS)", e))?;
        }
        let map = MmapOptions::new()
            .len(layout.total_len)
            .map_raw(&fd)
            .map_err(|e| Error::io("mmap", e))?;
        if prefault_pages {
            prefault(&map, layout.total_len)?;
        }
        let mapping = Mapping::assemble(map, fd, layout, name, true);
        mapping.control().init();
        let prefaulted = if prefault_pages { PREFAULTED } else { 0 };
        let header = mapping.control().header();
        // Relaxed: read by attachers after the handle reached them, as the ident.
        header.life.prefaulted.store(prefaulted, Ordering::Relaxed);
        layout.write_ident(&header.ident);
        Ok(mapping)
    }

    /// Opens, validates and maps the pool a handle names.
    pub(crate) fn open(handle: &PoolHandle) -> Result<Mapping> {
        let (fd, name) = match handle.backing() {
            Backing::Fd(n) => {
                // Re-open through /proc rather than adopting the raw number:
                // no unsafe ownership claim on an fd we did not open, and a
                // number that is not open (or not ours) fails cleanly.
                let path = format!("/proc/self/fd/{n}");
                let fd =
                    rustix::fs::open(path.as_str(), OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
                        .map_err(|e| Error::io("open inherited pool fd", e))?;
                let seals = rustix::fs::fcntl_get_seals(&fd).unwrap_or(SealFlags::empty());
                if !seals.contains(SealFlags::SHRINK | SealFlags::GROW) {
                    return Err(Error::Incompatible(format!(
                        "fd {n} is not a sealed segpool memfd (seals {seals:?})"
                    )));
                }
                (fd, None)
            }
            Backing::Named(name) => {
                let fd = rustix::shm::open(name, rustix::shm::OFlags::RDWR, Mode::empty())
                    .map_err(|e| Error::io("shm_open (attach)", e))?;
                (fd, Some(name.to_owned()))
            }
        };
        let size = rustix::fs::fstat(&fd)
            .map_err(|e| Error::io("fstat", e))?
            .st_size;
        let size = usize::try_from(size)
            .map_err(|_| Error::Corrupt(format!("shared object has negative size {size}")))?;
        let peeked = peek_header(&fd, size)?;
        let layout = peeked.layout;
        // Populate only what the creator faulted in: populating a lazy pool
        // would allocate every page here instead of where it is written.
        let populate = peeked.prefaulted;
        let mut options = MmapOptions::new();
        options.len(layout.total_len);
        if populate {
            options.populate();
        }
        let map = options.map_raw(&fd).map_err(|e| Error::io("mmap", e))?;
        if handle.len() != layout.total_len as u64 {
            return Err(Error::Corrupt(format!(
                "handle says {} bytes, the pool holds {}",
                handle.len(),
                layout.total_len
            )));
        }
        Ok(Mapping::assemble(map, fd, layout, name, false))
    }

    fn assemble(
        map: MmapRaw,
        fd: OwnedFd,
        layout: Layout,
        name: Option<String>,
        unlink_on_drop: bool,
    ) -> Mapping {
        // SAFETY: `map` holds `total_len >= control_len` bytes, page-aligned
        // and writable, and lives in the same struct as `ctl`, which is
        // handed out only with a borrow of that struct (`control`), so no
        // reference outlives the mapping; the references point into the
        // mapping, never into the struct, which may move.
        let ctl = Control::new(unsafe { layout.carve(map.as_ptr()) }, &layout);
        Mapping {
            map,
            fd,
            layout,
            name,
            unlink_on_drop,
            fork_generation: crate::fork::current(),
            ctl,
        }
    }

    /// The protocol over this mapping, borrowed (a `Control` is a dozen
    /// words: the fast paths do not copy it), its lifetime shortened to
    /// `&self`'s.
    #[inline]
    pub(crate) fn control(&self) -> &Control<'_> {
        &self.ctl
    }

    /// The pool's geometry (computed locally, never re-read from a peer).
    pub(crate) fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Start of segment `seg` (< count): `segment_size` writable bytes.
    #[inline]
    pub(crate) fn segment_ptr(&self, seg: usize) -> *mut u8 {
        let offset = self.segment_offset(seg);
        // SAFETY: `segment_offset` checked seg < count, so the offset (and
        // the segment's `segment_size` bytes past it) is inside the mapping.
        unsafe { self.base().add(offset) }
    }

    /// Where segment `seg` (< count, or a panic) starts, in bytes from
    /// [`base`](Self::base).
    #[inline]
    pub(crate) fn segment_offset(&self, seg: usize) -> usize {
        assert!(
            seg < self.layout.count,
            "segment index checked by the protocol"
        );
        self.layout.segment_offset(seg)
    }

    /// The mapping's first byte.
    #[inline]
    pub(crate) fn base(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    /// The memfd or shm object.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The shm name, for named pools.
    pub(crate) fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// A handle that names this pool.
    pub(crate) fn handle(&self, acquire_timeout: Duration) -> PoolHandle {
        use rustix::fd::AsRawFd;
        let backing = match &self.name {
            Some(n) => Backing::Named(n.clone()),
            None => Backing::Fd(self.fd.as_raw_fd()),
        };
        PoolHandle::new(backing, self.layout.total_len as u64, acquire_timeout)
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // In a child of a `fork` the name is the parent's.
        if self.unlink_on_drop && crate::fork::current() == self.fork_generation {
            if let Some(name) = &self.name {
                // ENOENT: already unlinked by `unlink`; nothing else to do.
                let _ = rustix::shm::unlink(name.as_str());
            }
        }
    }
}

/// What a pool's header says, once validated.
pub(crate) struct Peeked {
    /// The geometry, recomputed locally and compared field by field.
    pub(crate) layout: Layout,
    /// The layout version the header names (the one this build speaks).
    pub(crate) version: u32,
    /// Whether the creator faulted every page in.
    pub(crate) prefaulted: bool,
}

/// Validates the header of a shared object of `size` bytes through a small
/// read-only mapping of the header alone, as `attach` and the inspector
/// both do: [`Error::Incompatible`] for a foreign object or another layout
/// version, [`Error::Corrupt`] for a header that disagrees with itself or
/// with `size`. Never panics, whatever the object holds.
pub(crate) fn peek_header(fd: &OwnedFd, size: usize) -> Result<Peeked> {
    let head_len = core::mem::size_of::<Header>();
    if size < head_len {
        return Err(Error::Corrupt(format!(
            "shared object holds {size} bytes, less than the {head_len}-byte header"
        )));
    }
    let peek = MmapOptions::new()
        .len(head_len)
        .map_raw_read_only(fd)
        .map_err(|e| Error::io("mmap (header)", e))?;
    // SAFETY: `peek` maps `head_len` = size_of::<Header>() bytes of an object
    // at least that long, page-aligned (align 128 suffices); every field is
    // an atomic, valid for any bit pattern; `Layout::validate` and we only
    // make Relaxed loads of at most 8 bytes, which Rust allows on read-only
    // memory (see `core::sync::atomic`); the reference dies before `peek`.
    let header = unsafe { &*peek.as_ptr().cast::<Header>() };
    let layout = Layout::validate(&header.ident, size, page_size())?;
    Ok(Peeked {
        layout,
        version: header.ident.version.load(Ordering::Relaxed),
        prefaulted: header.life.prefaulted.load(Ordering::Relaxed) == PREFAULTED,
    })
}

/// A sealable memfd that can never be made executable: `MFD_NOEXEC_SEAL`
/// (Linux 6.3+), which `vm.memfd_noexec=2` requires; older kernels refuse
/// the flag with `EINVAL` and get a plain one.
fn memfd() -> Result<OwnedFd> {
    let flags = MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING;
    match rustix::fs::memfd_create("segpool", flags | MemfdFlags::NOEXEC_SEAL) {
        Err(rustix::io::Errno::INVAL) => rustix::fs::memfd_create("segpool", flags),
        other => other,
    }
    .map_err(|e| Error::io("memfd_create", e))
}

/// Faults in every page of a fresh mapping, once. Running out of memory
/// here is an error now, not a SIGBUS or an OOM kill at the first write.
fn prefault(map: &MmapRaw, len: usize) -> Result<()> {
    let ptr = map.as_mut_ptr();
    // SAFETY: `ptr..ptr+len` is exactly our mapping; MADV_POPULATE_WRITE
    // only faults pages in, it does not change their contents.
    let done =
        unsafe { rustix::mm::madvise(ptr.cast(), len, rustix::mm::Advice::LinuxPopulateWrite) };
    match done {
        Ok(()) => Ok(()),
        // Kernels before 5.14 do not know the advice: write one byte per
        // page. The mapping is fresh and not yet shared, and the bytes are
        // zero already. (A shortage then still shows as SIGBUS.)
        Err(rustix::io::Errno::INVAL) => {
            let page = page_size();
            for off in (0..len).step_by(page) {
                // SAFETY: `off < len`, inside our mapping; nobody else can
                // see it yet, so a plain volatile write races with nothing.
                unsafe { ptr.add(off).write_volatile(0) };
            }
            Ok(())
        }
        Err(e) => Err(Error::InvalidConfig(format!(
            "cannot back a pool of {len} bytes with memory ({e}): make it smaller, free \
             memory, or raise the shared-memory limits (/dev/shm size, memory cgroup)"
        ))),
    }
}

/// `/segpool-<pid>-<16 random hex digits>`: unpredictable, so another user
/// cannot pre-create it (and O_EXCL refuses if anyone did).
fn fresh_name() -> Result<String> {
    let mut buf = [0u8; 8];
    rustix::rand::getrandom(&mut buf, rustix::rand::GetRandomFlags::empty())
        .map_err(|e| Error::io("getrandom", e))?;
    Ok(format!(
        "/segpool-{}-{:016x}",
        rustix::process::getpid().as_raw_nonzero(),
        u64::from_le_bytes(buf)
    ))
}

/// Removes a named shm object.
pub(crate) fn unlink_name(name: &str) -> Result<()> {
    match rustix::shm::unlink(name) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(Error::io("shm_unlink", e)),
    }
}
