//! `ItemWriter` and `ItemReader`: one call per item for
//! `segpool.iterate_in_subprocess` (issue 16).
//!
//! The iterator moves whole items: a pickle envelope and its out-of-band
//! buffers in one unit. Through `Writer`/`Reader` that is a Python call per
//! buffer, per header field and per step of the unit; here it is one call
//! each way, and the reader sleeps on the pool's futex at once instead of
//! spinning first (the parent must not burn a core waiting for a worker).
//!
//! The unit's layout (little-endian; what `_iterate.py` writes by hand for
//! units that hold loans, through `Writer`):
//!
//! ```text
//! 0    header, 64 bytes: magic "SPI1", kind u32, worker u32, pass u32,
//!      seq u64, envelope offset u64, envelope length u64,
//!      table offset u64, buffer count u64
//! ...  the out-of-band buffers, each at a 64-byte-aligned offset
//! ...  the envelope (the pickle)
//! ...  the table: (offset u64, length u64) per buffer
//! ```

use crate::attach::{Attached, Link};
use crate::buffer::{Keeper, RawBuffer, Source, export, memoryview, release};
use crate::cell::GilCell;
use crate::errors::{ArenaDesyncError, closed, to_py};
use crate::pool::Pool;
use pyo3::exceptions::{PyTimeoutError, PyValueError};
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyTuple};
use segpool::{Error, UnitWriter};
use std::ffi::{CStr, c_int};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MAGIC: &[u8; 4] = b"SPI1";
const HEADER: usize = 64;
const ALIGN: usize = 64;
/// Copies of at least this many bytes in all run with the GIL released.
const DETACHED_COPY: usize = 256 << 10;

/// A raw pointer that may cross into a GIL-free closure.
#[derive(Clone, Copy)]
struct SendPtr(*mut u8);
// SAFETY: only dereferenced inside `Python::detach` by the copies in
// `ItemWriter::publish`, while what it points into is kept alive and
// unaliased there (see the copy's SAFETY comment).
unsafe impl Send for SendPtr {}

/// `PyBUF_ND | PyBUF_FORMAT`: a C-contiguous export (an exporter refuses
/// otherwise, as no strides are asked for), with its shape and format.
const PYBUF_ND_FORMAT: c_int = 0x0008 | 0x0004;

/// A C-contiguous export with shape and format, released on drop (with the
/// GIL: not `Send`).
struct Shaped {
    raw: RawBuffer,
}

impl Shaped {
    /// `None` (and no exception) when `obj` exports no C-contiguous buffer.
    fn new(obj: &Bound<'_, PyAny>) -> Option<Shaped> {
        // No C-contiguous export: not one of ours (the exception is dropped).
        let raw = export(obj, PYBUF_ND_FORMAT).ok()?;
        Some(Shaped { raw })
    }

    fn len(&self) -> usize {
        self.raw.len.max(0) as usize
    }

    /// The format, if it is one character that `numpy.dtype` reads as the
    /// same native type (what NumPy exports for its plain numeric dtypes).
    fn plain_format(&self) -> Option<u8> {
        if self.raw.format.is_null() {
            return None;
        }
        // SAFETY: a non-NULL format of a successful export is a
        // NUL-terminated string that lives as long as the export.
        let f = unsafe { CStr::from_ptr(self.raw.format) }.to_bytes();
        match f {
            [c] if b"?bBhHiIlLqQefdg".contains(c) => Some(*c),
            _ => None,
        }
    }

    fn shape(&self) -> &[ffi::Py_ssize_t] {
        let ndim = self.raw.ndim.max(0) as usize;
        if ndim == 0 || self.raw.shape.is_null() {
            return &[];
        }
        // SAFETY: with PyBUF_ND the exporter fills `shape` with `ndim`
        // entries that live as long as the export.
        unsafe { std::slice::from_raw_parts(self.raw.shape, ndim) }
    }
}

impl Drop for Shaped {
    fn drop(&mut self) {
        // SAFETY: a successful export, released once, with the GIL (this
        // type is not `Send`, and it never lives across a GIL release).
        unsafe { release(&mut self.raw) }
    }
}

fn align(n: usize) -> usize {
    n.next_multiple_of(ALIGN)
}

/// Seconds as a deadline: `None` waits for ever (infinite or too large).
fn deadline(secs: f64, what: &str) -> PyResult<Option<Instant>> {
    if secs.is_nan() || secs < 0.0 {
        return Err(PyValueError::new_err(format!(
            "{what}: timeout must be None or a number >= 0, not {secs}"
        )));
    }
    Ok(Duration::try_from_secs_f64(secs)
        .ok()
        .and_then(|d| Instant::now().checked_add(d)))
}

/// Time left until `deadline` (`Duration::MAX` for none).
fn left(deadline: Option<Instant>) -> Duration {
    deadline.map_or(Duration::MAX, |d| {
        d.saturating_duration_since(Instant::now())
    })
}

/// The worker's side: writes one whole item (header, buffers, envelope,
/// table) into a fresh unit and publishes it, in one call.
#[pyclass(module = "segpool._segpool", frozen)]
pub struct ItemWriter {
    /// The pool's attachment (the one re-attach after fork is its own); its
    /// crate writer sleeps at once while the pool is full.
    link: Arc<Link>,
}

/// A free segment for a new unit, waiting up to the pool's
/// `acquire_timeout` with the GIL released; a signal runs Python's handlers
/// (Ctrl-C raises `KeyboardInterrupt`) and the wait goes on.
fn begin(py: Python<'_>, writer: &segpool::Writer, secs: f64) -> PyResult<UnitWriter> {
    if let Some(unit) = writer.try_begin_unit().map_err(to_py)? {
        return Ok(unit);
    }
    if secs == 0.0 {
        return writer.begin_unit_timeout(Duration::ZERO).map_err(to_py);
    }
    // Checked here, for the message; the wait itself is the writer's.
    deadline(secs, "put()")?;
    crate::writer::wait_for_segment(py, writer, secs)
}

#[pymethods]
impl ItemWriter {
    #[new]
    fn new(pool: &Bound<'_, Pool>) -> PyResult<ItemWriter> {
        let link = pool.get().link();
        link.attached(pool.py(), "ItemWriter()")?;
        Ok(ItemWriter { link })
    }

    /// Bytes a unit of these buffers and this envelope spans.
    #[staticmethod]
    fn size_of(env: &Bound<'_, PyAny>, bufs: &Bound<'_, PyList>) -> PyResult<usize> {
        let mut n = HEADER;
        for b in bufs.iter() {
            n = align(n) + Source::new(&b)?.len();
        }
        Ok(align(n) + Source::new(env)?.len() + ALIGN + 16 * bufs.len())
    }

    /// Writes a unit (`head`: kind, worker, pass, seq; the buffers `bufs`,
    /// contiguous bytes-likes such as `PickleBuffer`s; the envelope `env`)
    /// and publishes it. Waits for a free segment up to the pool's
    /// `acquire_timeout`. Returns 0, or, when the unit would not fit a
    /// segment, the bytes it needs (nothing is written then).
    fn put(
        &self,
        py: Python<'_>,
        head: (u32, u32, u32, u64),
        env: &Bound<'_, PyAny>,
        bufs: &Bound<'_, PyList>,
    ) -> PyResult<usize> {
        let env = Source::new(env)?;
        let srcs = bufs
            .iter()
            .map(|b| Source::new(&b))
            .collect::<PyResult<Vec<_>>>()?;
        let parts: Vec<Part> = srcs.iter().map(|s| Part(s.as_ptr(), s.len())).collect();
        // SAFETY: each part is a `Source`'s bytes, exported until `srcs` and
        // `env` drop at the end of this function, after `publish`.
        unsafe {
            self.publish(
                py,
                head,
                &parts,
                std::slice::from_raw_parts(env.as_ptr(), env.len()),
            )
        }
    }

    /// A bare NumPy array item, without a pickle: publishes a unit whose one
    /// buffer is `array`'s bytes and whose envelope is its format character,
    /// its number of dimensions and its shape (u8, u8, u64 each). `None`
    /// (nothing written) when the array does not qualify: smaller than
    /// `threshold` bytes, not C-contiguous, or of a dtype other than the
    /// plain numeric ones (those take the pickle path). Otherwise as `put`.
    fn put_array(
        &self,
        py: Python<'_>,
        head: (u32, u32, u32, u64),
        array: &Bound<'_, PyAny>,
        threshold: usize,
    ) -> PyResult<Option<usize>> {
        let Some(src) = Shaped::new(array) else {
            return Ok(None);
        };
        let (Some(fmt), shape) = (src.plain_format(), src.shape()) else {
            return Ok(None);
        };
        if src.len() < threshold.max(1) || shape.len() > 64 {
            return Ok(None);
        }
        let mut env = Vec::with_capacity(2 + 8 * shape.len());
        env.push(fmt);
        env.push(shape.len() as u8);
        for &d in shape {
            env.extend_from_slice(&(d as u64).to_le_bytes());
        }
        let part = Part(src.raw.buf.cast_const().cast(), src.len());
        // SAFETY: the part is `src`'s bytes, exported until `src` drops at
        // the end of this function, after `publish`.
        unsafe { self.publish(py, head, &[part], &env) }.map(Some)
    }
}

/// Bytes to copy into a unit: an address and a length.
#[derive(Clone, Copy)]
struct Part(*const u8, usize);
// SAFETY: only read inside `Python::detach` by `publish`'s copy, while its
// caller keeps the bytes exported (see `publish`'s contract).
unsafe impl Send for Part {}

impl ItemWriter {
    /// Lays out, fills and publishes one unit (see the module docs).
    ///
    /// # Safety
    /// Each part's bytes must stay valid and unchanged until this returns.
    unsafe fn publish(
        &self,
        py: Python<'_>,
        head: (u32, u32, u32, u64),
        parts: &[Part],
        env: &[u8],
    ) -> PyResult<usize> {
        let (kind, worker, pass_no, seq) = head;
        if self.link.is_closed(py) {
            return Err(closed("put()"));
        }
        // The layout, before any segment is taken.
        let mut offs = Vec::with_capacity(parts.len());
        let mut end = HEADER;
        for p in parts {
            let at = align(end);
            offs.push(at);
            end = at + p.1;
        }
        let env_off = align(end);
        let tab_off = align(env_off + env.len());
        let total = tab_off + 16 * parts.len();
        if total > self.link.segment_size() {
            return Ok(total);
        }
        let attached: Arc<Attached> = self.link.attached(py, "put()")?;
        let mut unit = begin(py, &attached.writer, self.link.acquire_timeout())?;
        let at = unit.advance(total).map_err(to_py)?;
        debug_assert_eq!(at, 0, "a fresh unit starts at offset 0");
        // The crate's raw access contract: the unit's bytes start there, and
        // `advance` claimed `0..total` of them for us.
        let base = SendPtr(unit.as_mut_ptr());
        // The header, then the table, as the last bytes to copy.
        let mut meta = Vec::with_capacity(HEADER + 16 * parts.len());
        meta.extend_from_slice(MAGIC);
        meta.extend_from_slice(&kind.to_le_bytes());
        meta.extend_from_slice(&worker.to_le_bytes());
        meta.extend_from_slice(&pass_no.to_le_bytes());
        for v in [seq, env_off as u64, env.len() as u64, tab_off as u64] {
            meta.extend_from_slice(&v.to_le_bytes());
        }
        meta.extend_from_slice(&(parts.len() as u64).to_le_bytes());
        meta.resize(HEADER, 0);
        for (p, &o) in parts.iter().zip(&offs) {
            meta.extend_from_slice(&(o as u64).to_le_bytes());
            meta.extend_from_slice(&(p.1 as u64).to_le_bytes());
        }
        let mut copies: Vec<(Part, usize)> = parts.iter().copied().zip(offs).collect();
        copies.push((Part(env.as_ptr(), env.len()), env_off));
        copies.push((Part(meta.as_ptr(), HEADER), 0));
        copies.push((Part(meta[HEADER..].as_ptr(), meta.len() - HEADER), tab_off));
        let bytes: usize = copies.iter().map(|c| c.0.1).sum();
        let copy = move || {
            let base = base;
            for (Part(from, n), at) in copies {
                if n == 0 {
                    // An exporter may hand out a null pointer for no bytes,
                    // which `copy_nonoverlapping` may not be given.
                    continue;
                }
                // SAFETY: `from` points at `n` readable bytes that the caller
                // (or `meta` and `env`, alive in this frame) keeps valid
                // until we return; the unit owns `0..total` of its segment
                // (advanced above, and `at + n <= total <= segment_size` by
                // the layout), which no one else reads or writes until
                // commit, inside the mapping `unit` keeps alive. A
                // source inside the pool (a view of a received unit) lies
                // in a HELD segment, never in this fresh unit's.
                unsafe { std::ptr::copy_nonoverlapping(from, base.0.add(at), n) }
            }
        };
        if bytes >= DETACHED_COPY {
            py.detach(copy);
        } else {
            copy();
        }
        unit.commit_unit().map_err(to_py)?;
        Ok(0)
    }
}

/// The parent's side: waits for the next unit (sleeping on the futex at
/// once, GIL released) and returns it parsed.
#[pyclass(module = "segpool._segpool", frozen)]
pub struct ItemReader {
    link: Arc<Link>,
    endpoint: GilCell<Option<(Arc<Attached>, Arc<segpool::Reader>)>>,
}

impl ItemReader {
    fn endpoint(&self, py: Python<'_>) -> PyResult<(Arc<Attached>, Arc<segpool::Reader>)> {
        let current = self.endpoint.with(py, |e| e.clone());
        if let Some((a, r)) = current.filter(|(a, _)| !a.is_inherited()) {
            return Ok((a, r));
        }
        let attached = self.link.attached(py, "ItemReader.recv()")?;
        let reader = Arc::new(attached.pool.open_reader().interruptible(true).spin(false));
        let fresh = (attached, reader);
        let old = self.endpoint.replace(py, Some(fresh.clone()));
        drop(old);
        Ok(fresh)
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> usize {
    // An offset or a length read from the unit: larger than the address
    // space only in a corrupt unit, which the bounds checks then refuse.
    usize::try_from(u64::from_le_bytes(
        b[at..at + 8].try_into().expect("8 bytes"),
    ))
    .unwrap_or(usize::MAX)
}

#[pymethods]
impl ItemReader {
    #[new]
    fn new(pool: &Bound<'_, Pool>) -> PyResult<ItemReader> {
        let link = pool.get().link();
        link.attached(pool.py(), "ItemReader()")?;
        Ok(ItemReader {
            link,
            endpoint: GilCell::new(None),
        })
    }

    /// The next unit, waiting up to `timeout` seconds (`None`: for ever;
    /// `TimeoutError` after): `(kind, worker, pass, seq, envelope, buffers)`,
    /// the envelope as `bytes`, the buffers as memoryviews over the unit,
    /// which returns to the pool when the last of them (and everything made
    /// from them) is collected. A unit not written by `put` (no magic):
    /// kind 0, and the rest empty. `ArenaDesyncError` for a unit whose
    /// header does not add up.
    #[pyo3(signature = (timeout = None))]
    fn recv<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Bound<'py, PyTuple>> {
        let (_attached, reader) = self.endpoint(py)?;
        let unit = match reader.try_recv().map_err(to_py)? {
            Some(unit) => unit,
            None => {
                let deadline = match timeout {
                    Some(t) => deadline(t, "recv()")?,
                    None => None,
                };
                loop {
                    let left = left(deadline);
                    if left.is_zero() {
                        return Err(PyTimeoutError::new_err(format!(
                            "recv(): no unit was published within {}s",
                            timeout.unwrap_or(0.0)
                        )));
                    }
                    let r = &reader;
                    match py.detach(|| r.recv_timeout(left)) {
                        Ok(unit) => break unit,
                        Err(Error::Interrupted) => py.check_signals()?,
                        Err(Error::Timeout(_)) => continue,
                        Err(e) => return Err(to_py(e)),
                    }
                }
            }
        };
        let b = unit.as_bytes();
        let empty = || -> PyResult<Bound<'py, PyTuple>> {
            (
                0u32,
                0u32,
                0u32,
                0u64,
                PyBytes::new(py, b""),
                PyList::empty(py),
            )
                .into_pyobject(py)
        };
        if b.len() < HEADER || &b[..4] != MAGIC {
            return empty();
        }
        let (kind, worker, pass_no) = (u32_at(b, 4), u32_at(b, 8), u32_at(b, 12));
        let seq = u64_at(b, 16) as u64;
        let (env_off, env_len, tab_off, n) =
            (u64_at(b, 24), u64_at(b, 32), u64_at(b, 40), u64_at(b, 48));
        let bad = || {
            ArenaDesyncError::new_err(format!(
                "segpool iterator: unit {:#x} ({} bytes) has a header that does not add up \
                 (envelope {env_len} bytes at {env_off}, {n} buffers listed at {tab_off}): \
                 something other than iterate_in_subprocess's workers wrote into this pool",
                unit.id().to_bits(),
                b.len()
            ))
        };
        let fits = |off: usize, len: usize| off.checked_add(len).is_some_and(|e| e <= b.len());
        if !fits(env_off, env_len) || n.checked_mul(16).is_none_or(|t| !fits(tab_off, t)) {
            return Err(bad());
        }
        let env = PyBytes::new(py, &b[env_off..env_off + env_len]);
        let bufs = PyList::empty(py);
        for i in 0..n {
            let (off, len) = (u64_at(b, tab_off + 16 * i), u64_at(b, tab_off + 16 * i + 8));
            let view = unit.view(off, len).map_err(|_| bad())?;
            let ptr = view.as_mut_ptr();
            // SAFETY: the crate's "Raw access" contract: `len` bytes at
            // `ptr` are the view's (`view` checked them against the unit),
            // mapped and handed to no writer while the view the keeper owns
            // lives; they are this process's to read and write meanwhile,
            // and no Rust reference to them outlives this loop (`b` is not
            // used after it).
            let mv = unsafe { memoryview(py, Keeper::new(view), ptr, len)? };
            bufs.append(mv)?;
        }
        (kind, worker, pass_no, seq, env, bufs).into_pyobject(py)
    }
}

/// Adds this module's classes to `segpool._segpool`.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<ItemWriter>()?;
    m.add_class::<ItemReader>()?;
    Ok(())
}
