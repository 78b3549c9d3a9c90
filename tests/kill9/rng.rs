//! Randomness every process can seed and replay, and the random pauses that
//! give lives every length.

use std::time::{Duration, Instant};

/// splitmix64: a tiny generator every process can seed and replay (any
/// seed, zero included, gives a full stream).
#[derive(Clone, Debug)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Uniform in `0..=max` microseconds.
    pub fn micros(&mut self, max: u64) -> Duration {
        Duration::from_micros(self.below(max + 1))
    }
}

/// Busy-waits until `until` (a sleep would overshoot short waits).
pub fn spin_until(until: Instant) {
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

/// A random pause: nothing, a spin, a yield or a sleep, so kills land in
/// the middle of things and lives have every length.
pub fn pause(rng: &mut Rng) {
    match rng.below(10) {
        0..=4 => {}
        5 | 6 => spin_until(Instant::now() + rng.micros(20)),
        7 => std::thread::yield_now(),
        8 => std::thread::sleep(rng.micros(200)),
        _ => std::thread::sleep(rng.micros(1000)),
    }
}
