//! The units producers write: a 64-byte header that names the unit (magic,
//! producer slot, incarnation, sequence number, body length, and a
//! checksum of those) and a body that only (incarnation, sequence)
//! determines, so a consumer can check every byte.

use crate::common::checksum;
use crate::rng::Rng;

/// Bytes of a unit's header.
pub const HEADER: usize = 64;
const MAGIC: u64 = u64::from_le_bytes(*b"K9UNIT\0\0");

/// The body of unit `(inc, seq)`: a stream only those two determine.
pub fn fill_body(inc: u32, seq: u64, buf: &mut [u8]) {
    let mut rng = Rng(u64::from(inc) << 40 ^ seq ^ 0x5151_5151);
    for chunk in buf.chunks_mut(8) {
        let v = rng.next().to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// Writes a unit's header: magic, slot, incarnation, seq, body length, and
/// a checksum of those.
pub fn write_header(h: &mut [u8], slot: u32, inc: u32, seq: u64, body: usize) {
    h[..8].copy_from_slice(&MAGIC.to_le_bytes());
    h[8..12].copy_from_slice(&slot.to_le_bytes());
    h[12..16].copy_from_slice(&inc.to_le_bytes());
    h[16..24].copy_from_slice(&seq.to_le_bytes());
    h[24..32].copy_from_slice(&(body as u64).to_le_bytes());
    let sum = checksum(&h[..32]);
    h[32..40].copy_from_slice(&sum.to_le_bytes());
}

/// Checks a received unit byte for byte; returns (slot, incarnation, seq).
pub fn verify(u: &[u8]) -> Result<(u32, u32, u64), String> {
    if u.len() < HEADER {
        return Err(format!("{} bytes, shorter than a header", u.len()));
    }
    if u64_at(u, 0) != MAGIC || u64_at(u, 32) != checksum(&u[..32]) {
        return Err("bad header".into());
    }
    let (slot, inc, seq, body) = (u32_at(u, 8), u32_at(u, 12), u64_at(u, 16), u64_at(u, 24));
    if body != (u.len() - HEADER) as u64 {
        return Err(format!(
            "({inc}, {seq}): header says {body} body bytes, unit has {}",
            u.len() - HEADER
        ));
    }
    let mut expect = vec![0u8; u.len() - HEADER];
    fill_body(inc, seq, &mut expect);
    if expect != u[HEADER..] {
        let at = expect.iter().zip(&u[HEADER..]).position(|(a, b)| a != b);
        return Err(format!("({inc}, {seq}): body differs at byte {at:?}"));
    }
    Ok((slot, inc, seq))
}
