//! The buffer protocol, by hand.
//!
//! The package targets the stable ABI of Python 3.10 (`abi3-py310`). The
//! buffer protocol (`Py_buffer`, `PyObject_GetBuffer`, `PyBuffer_Release`,
//! `PyBuffer_FillInfo` and the `Py_bf_getbuffer` type slot) entered the
//! *stable ABI* only in 3.11, so PyO3 offers neither `PyBuffer` nor
//! `__getbuffer__` to an abi3-py310 build. All of them exist, with this exact
//! struct layout and these symbol names, in every CPython since 3.3 (3.11
//! promised them; it did not change them), so this module declares them.
//!
//! Two uses:
//! - [`Source`]: the memory of a contiguous bytes-like object, for
//!   `write_binary` to copy from.
//! - [`memoryview`]: a writable `memoryview` whose exporter (a tiny heap type,
//!   `segpool._segpool.SegmentBuffer`) owns a [`Keeper`]: what keeps the bytes
//!   valid (a received unit, a loaned unit, or the mapping). Slices of that
//!   memoryview, `np.frombuffer` arrays and `torch.frombuffer` tensors all hold
//!   the exporter, so the keeper drops, and a received unit's segment goes
//!   back to the pool, when Python collects the last of them, in any order.
//!
//! This module knows nothing of pools, units or writers: the modules that
//! export bytes bring their own owner, which a [`Keeper`] holds unnamed.

use pyo3::exceptions::PyBufferError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyType;
use std::ffi::{c_char, c_int, c_void};
use std::mem::{ManuallyDrop, MaybeUninit};

/// `Py_buffer`, as CPython has laid it out since 3.3 (the one declaration
/// of it here; `item.rs` reads shaped exports through it too).
#[repr(C)]
pub(crate) struct RawBuffer {
    pub(crate) buf: *mut c_void,
    obj: *mut ffi::PyObject,
    pub(crate) len: ffi::Py_ssize_t,
    pub(crate) itemsize: ffi::Py_ssize_t,
    readonly: c_int,
    pub(crate) ndim: c_int,
    pub(crate) format: *mut c_char,
    pub(crate) shape: *mut ffi::Py_ssize_t,
    strides: *mut ffi::Py_ssize_t,
    suboffsets: *mut ffi::Py_ssize_t,
    internal: *mut c_void,
}

/// `PyBUF_SIMPLE`: one contiguous run of bytes, no format, no shape.
const PYBUF_SIMPLE: c_int = 0;
/// `PyBUF_FULL_RO`: any layout at all (strides, suboffsets, format).
const PYBUF_FULL_RO: c_int = 0x0100 | 0x0010 | 0x0008 | 0x0004;
/// `Py_bf_getbuffer` as numbered before 3.15 (abi3 builds use the old numbers).
const PY_BF_GETBUFFER: c_int = 1;

unsafe extern "C" {
    fn PyObject_GetBuffer(obj: *mut ffi::PyObject, view: *mut RawBuffer, flags: c_int) -> c_int;
    fn PyBuffer_Release(view: *mut RawBuffer);
    fn PyBuffer_FillInfo(
        view: *mut RawBuffer,
        obj: *mut ffi::PyObject,
        buf: *mut c_void,
        len: ffi::Py_ssize_t,
        readonly: c_int,
        flags: c_int,
    ) -> c_int;
}

/// Releases an export made by [`export`].
///
/// # Safety
/// `raw` is a successful export not yet released; call with the GIL held.
pub(crate) unsafe fn release(raw: &mut RawBuffer) {
    // SAFETY: the caller's contract.
    unsafe { PyBuffer_Release(raw) };
}

/// An export of `obj` with `flags`, or the exception its type raised; the
/// caller owes it a [`release`].
pub(crate) fn export(obj: &Bound<'_, PyAny>, flags: c_int) -> PyResult<RawBuffer> {
    let mut raw = MaybeUninit::<RawBuffer>::zeroed();
    // SAFETY: `obj` is a live object (we hold the GIL through `Bound`), `raw`
    // has `Py_buffer`'s layout; on success CPython filled it and holds an
    // export of `obj` until `PyBuffer_Release`, which the caller owes.
    if unsafe { PyObject_GetBuffer(obj.as_ptr(), raw.as_mut_ptr(), flags) } != 0 {
        return Err(PyErr::fetch(obj.py()));
    }
    // SAFETY: filled by the successful call above.
    Ok(unsafe { raw.assume_init() })
}

/// A contiguous bytes-like object's memory, exported for as long as this
/// value lives. Not `Send`: it is released (which needs the GIL) where it was
/// taken.
pub(crate) struct Source {
    raw: RawBuffer,
}

impl Source {
    /// Exports `obj` as plain contiguous bytes: `TypeError` if it is not
    /// bytes-like, `BufferError` if it is but not C-contiguous (whichever
    /// exception its type raises for that: NumPy says `ValueError`,
    /// memoryview `BufferError`).
    pub(crate) fn new(obj: &Bound<'_, PyAny>) -> PyResult<Source> {
        match export(obj, PYBUF_SIMPLE) {
            Ok(raw) => Ok(Source { raw }),
            Err(refused) => match export(obj, PYBUF_FULL_RO) {
                Ok(mut strided) => {
                    // SAFETY: a successful export, released once, here.
                    unsafe { PyBuffer_Release(&mut strided) };
                    Err(PyBufferError::new_err(format!(
                        "write_binary needs a C-contiguous bytes-like object, and this {} is \
                         not contiguous ({refused}): pass a contiguous copy \
                         (numpy.ascontiguousarray(x), tensor.contiguous(), bytes(x))",
                        obj.get_type().name()?
                    )))
                }
                Err(_) => Err(refused),
            },
        }
    }

    /// Start of the bytes.
    pub(crate) fn as_ptr(&self) -> *const u8 {
        self.raw.buf.cast_const().cast()
    }

    /// Number of bytes.
    pub(crate) fn len(&self) -> usize {
        // A PyBUF_SIMPLE export has a non-negative byte length.
        self.raw.len.max(0) as usize
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        // SAFETY: `raw` came from a successful `PyObject_GetBuffer` and is
        // released once; `Source` is not `Send`, so this runs on the thread
        // that took it, which holds the GIL (no code here releases it around
        // a `Source`'s lifetime end).
        unsafe { PyBuffer_Release(&mut self.raw) }
    }
}

/// What keeps the bytes a `SegmentBuffer` exports valid: any owner whose
/// life holds them (a received unit, a loan, the pool's attachment), held
/// for its `Drop` alone, which runs when Python collects the exporter.
pub(crate) struct Keeper(#[expect(dead_code, reason = "held only for its Drop")] Box<dyn Send>);

impl Keeper {
    pub(crate) fn new(owner: impl Send + 'static) -> Keeper {
        Keeper(Box::new(owner))
    }
}

/// The exporter's object layout: a Python object header, then Rust fields.
#[repr(C)]
struct ExporterObject {
    ob_base: ffi::PyObject,
    buf: *mut u8,
    len: ffi::Py_ssize_t,
    keeper: ManuallyDrop<Keeper>,
}

static EXPORTER_TYPE: PyOnceLock<Py<PyType>> = PyOnceLock::new();

/// `bf_getbuffer`: a writable, one-dimensional run of unsigned bytes.
unsafe extern "C" fn getbuffer(
    obj: *mut ffi::PyObject,
    view: *mut RawBuffer,
    flags: c_int,
) -> c_int {
    let this = obj.cast::<ExporterObject>();
    // SAFETY: CPython calls this slot only for instances of our type, which
    // `memoryview()` below initialised completely; `PyBuffer_FillInfo`
    // checks `view` for NULL, honours `flags` (FORMAT gives "B"), and takes
    // a reference to `obj` for the export.
    unsafe { PyBuffer_FillInfo(view, obj, (*this).buf.cast(), (*this).len, 0, flags) }
}

/// `tp_dealloc`: drops the keeper, frees the object, releases the type.
unsafe extern "C" fn dealloc(obj: *mut ffi::PyObject) {
    // SAFETY: called once, by CPython, when the last reference to one of our
    // fully initialised instances goes (the GIL is held). The keeper is
    // dropped exactly once; then the memory goes back through the type's
    // own `tp_free`, and the reference `PyType_GenericAlloc` took on our heap
    // type is released.
    unsafe {
        let this = obj.cast::<ExporterObject>();
        ManuallyDrop::drop(&mut (*this).keeper);
        let tp = ffi::Py_TYPE(obj);
        let free: ffi::freefunc = std::mem::transmute(ffi::PyType_GetSlot(tp, ffi::Py_tp_free));
        free(obj.cast());
        ffi::Py_DECREF(tp.cast());
    }
}

/// Creates the exporter type; call once, at import.
pub(crate) fn init_type(py: Python<'_>) -> PyResult<Bound<'_, PyType>> {
    let ty = EXPORTER_TYPE.get_or_try_init(py, || -> PyResult<Py<PyType>> {
        let mut slots = [
            ffi::PyType_Slot {
                slot: ffi::Py_tp_dealloc,
                pfunc: dealloc as *mut c_void,
            },
            ffi::PyType_Slot {
                slot: PY_BF_GETBUFFER,
                pfunc: getbuffer as *mut c_void,
            },
            ffi::PyType_Slot {
                slot: ffi::Py_tp_doc,
                pfunc:
                    c"Exports the bytes of a segpool segment; memoryviews over it keep them alive."
                        .as_ptr()
                        .cast_mut()
                        .cast(),
            },
            ffi::PyType_Slot {
                slot: 0,
                pfunc: std::ptr::null_mut(),
            },
        ];
        let mut spec = ffi::PyType_Spec {
            name: c"segpool._segpool.SegmentBuffer".as_ptr(),
            basicsize: c_int::try_from(size_of::<ExporterObject>()).expect("small struct"),
            itemsize: 0,
            flags: (ffi::Py_TPFLAGS_DEFAULT | ffi::Py_TPFLAGS_DISALLOW_INSTANTIATION) as _,
            slots: slots.as_mut_ptr(),
        };
        // SAFETY: the spec is complete and NULL-terminated; `name` and the
        // doc string are 'static; CPython copies the slots it keeps. No
        // `tp_new` and DISALLOW_INSTANTIATION: only `memoryview()` below
        // creates instances, always fully initialised.
        let raw = unsafe { ffi::PyType_FromSpec(&mut spec) };
        // SAFETY: a new reference to a type object, or NULL with an exception.
        let any = unsafe { Bound::from_owned_ptr_or_err(py, raw)? };
        Ok(any.cast_into::<PyType>()?.unbind())
    })?;
    Ok(ty.bind(py).clone())
}

/// A writable memoryview of `len` bytes at `buf`, which stay valid while
/// `keeper` lives.
///
/// # Safety
/// `buf..buf+len` must be valid for reads and writes for as long as `keeper`
/// is alive, and writing them must race with nothing the protocol knows of
/// (for a unit's or a loan's bytes, the crate's "Raw access" contract says
/// when that holds).
pub(crate) unsafe fn memoryview<'py>(
    py: Python<'py>,
    keeper: Keeper,
    buf: *mut u8,
    len: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let ty = init_type(py)?;
    let tp = ty.as_type_ptr();
    // SAFETY: `tp` is our heap type; GenericAlloc returns a zeroed instance
    // with one reference (and a reference taken on the type), or NULL with
    // an exception set.
    let obj = unsafe { ffi::PyType_GenericAlloc(tp, 0) };
    if obj.is_null() {
        return Err(PyErr::fetch(py));
    }
    let len = ffi::Py_ssize_t::try_from(len).expect("a segment is smaller than isize::MAX");
    // SAFETY: `obj` is a fresh instance of our type, `basicsize` bytes, not
    // yet visible to any other code; we initialise every Rust field before
    // anything can call a slot on it. The caller vouches for `buf`.
    let exporter = unsafe {
        let this = obj.cast::<ExporterObject>();
        std::ptr::addr_of_mut!((*this).buf).write(buf);
        std::ptr::addr_of_mut!((*this).len).write(len);
        std::ptr::addr_of_mut!((*this).keeper).write(ManuallyDrop::new(keeper));
        Bound::from_owned_ptr(py, obj)
    };
    // SAFETY: `exporter` is a live object supporting the buffer protocol;
    // the result is a new reference or NULL with an exception.
    unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyMemoryView_FromObject(exporter.as_ptr())) }
}
