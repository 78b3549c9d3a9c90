//! What the writer hands SPDL and the reader gets back: opaque integers that
//! name the unit (issue 14, finding 7).
//!
//! SPDL's offload treats the offset `write_binary` returns and the span
//! `commit_unit` returns as opaque (it stores them in the envelope and gives
//! them back to the reader). So each carries the crate's [`UnitId`]:
//! - the span is the id's 64 bits (SPDL packs the span as an unsigned 64-bit
//!   integer);
//! - an offset is `id << 64 | 1 << 63 | offset in the segment` (an offset in
//!   a segment is below 2^63, as no mapping is larger): a bare offset, with
//!   bit 63 clear, is never mistaken for one, and the low bits keep the
//!   offset's 64-byte alignment.

use crate::errors::ArenaDesyncError;
use pyo3::prelude::*;
use segpool::UnitId;

const SHIFT: u32 = 64;
const MARK: u128 = 1 << 63;

/// The span token of a unit.
pub(crate) fn span(id: UnitId) -> u64 {
    id.to_bits()
}

/// The offset token of `offset` in the unit `id`.
pub(crate) fn offset(id: UnitId, offset: usize) -> u128 {
    debug_assert!(
        (offset as u128) < MARK,
        "an offset in a segment is below 2^63"
    );
    (u128::from(id.to_bits()) << SHIFT) | MARK | offset as u128
}

/// The unit and offset an offset token names; `ArenaDesyncError` if `token`
/// is no offset token (an offset from elsewhere: another arena, or a number
/// computed by hand).
pub(crate) fn parse_offset(token: &Bound<'_, PyAny>) -> PyResult<(UnitId, usize)> {
    let not_ours = || {
        ArenaDesyncError::new_err(format!(
            "read_binary: offset {token} is not one that write_binary() or reserve() of this \
             package returned: pass the offset from the envelope unchanged"
        ))
    };
    let raw: u128 = token.extract().map_err(|_| not_ours())?;
    if raw & MARK == 0 {
        return Err(not_ours());
    }
    let within = usize::try_from(raw & (MARK - 1)).map_err(|_| not_ours())?;
    let bits = u64::try_from(raw >> SHIFT).map_err(|_| not_ours())?;
    Ok((UnitId::from_bits(bits), within))
}

/// The unit a span token names; `ArenaDesyncError` if `token` is no span.
pub(crate) fn parse_span(token: &Bound<'_, PyAny>) -> PyResult<UnitId> {
    let bits: u64 = token.extract().map_err(|_| {
        ArenaDesyncError::new_err(format!(
            "end_unit: span {token} is not one that commit_unit() of this package returned: \
             pass the span from the envelope unchanged"
        ))
    })?;
    Ok(UnitId::from_bits(bits))
}
