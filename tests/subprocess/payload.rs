//! Unit payloads that say what they are: a header (worker index,
//! generation, sequence number, body length, checksum) and a body drawn
//! from a generator seeded by the first three.

use segpool::Unit;

/// Bytes of the header in front of every body.
pub const HEADER: usize = 32;

/// splitmix64.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The generator seed of one unit.
pub fn seed(index: u32, g: u32, seq: u64) -> u64 {
    mix(((index as u64) << 32 | g as u64) ^ mix(seq))
}

/// Body bytes of unit `seq` (a multiple of 8, at most `max`).
pub fn body_len(index: usize, g: u32, seq: u64, max: usize) -> usize {
    (mix(seed(index as u32, g, seq)) as usize % (max / 8 + 1)) * 8
}

/// Writes the header and the generated body into `buf` (HEADER + body bytes).
pub fn fill(buf: &mut [u8], index: u32, g: u32, seq: u64) {
    let (head, body) = buf.split_at_mut(HEADER);
    let mut s = seed(index, g, seq);
    let mut sum = 0u64;
    for w in body.chunks_exact_mut(8) {
        s = mix(s);
        sum = sum.wrapping_mul(31).wrapping_add(s);
        w.copy_from_slice(&s.to_le_bytes());
    }
    head[0..4].copy_from_slice(&index.to_le_bytes());
    head[4..8].copy_from_slice(&g.to_le_bytes());
    head[8..16].copy_from_slice(&seq.to_le_bytes());
    head[16..24].copy_from_slice(&(body.len() as u64).to_le_bytes());
    head[24..32].copy_from_slice(&sum.to_le_bytes());
}

/// What a unit says it is: (worker index, generation, seq), after checking
/// its length, its checksum and that its body is the one generated for it.
pub fn check(unit: &Unit) -> (u32, u32, u64) {
    let b = unit.as_bytes();
    assert!(b.len() >= HEADER, "unit of {} bytes has no header", b.len());
    let word = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
    let index = u32::from_le_bytes(b[0..4].try_into().unwrap());
    let g = u32::from_le_bytes(b[4..8].try_into().unwrap());
    let (seq, len, sum) = (word(8), word(16) as usize, word(24));
    assert_eq!(b.len(), HEADER + len, "unit length vs its header");
    let mut s = seed(index, g, seq);
    let mut got = 0u64;
    for (k, w) in b[HEADER..].chunks_exact(8).enumerate() {
        let w = u64::from_le_bytes(w.try_into().unwrap());
        s = mix(s);
        assert_eq!(w, s, "worker {index} unit {seq}: body word {k} corrupted");
        got = got.wrapping_mul(31).wrapping_add(w);
    }
    assert_eq!(got, sum, "worker {index} unit {seq}: checksum");
    (index, g, seq)
}
