//! Helpers shared by the integration tests: a child-process harness and a
//! deterministic payload generator.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};

/// Env var that turns a run of the test binary into a child role.
pub const ROLE: &str = "SEGPOOL_TEST_ROLE";

/// The role this process plays, if it was started by [`spawn_child`].
pub fn role() -> Option<String> {
    std::env::var(ROLE).ok()
}

/// Re-executes this test binary, running only the test `entry`, with
/// `ROLE=role` and the pool's handle in the environment.
pub fn spawn_child(
    pool: &segpool::SegmentPool,
    entry: &str,
    role: &str,
    envs: &[(&str, String)],
) -> Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", entry, "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .stdout(Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    pool.configure_command(&mut cmd);
    cmd.spawn().expect("spawn child test process")
}

/// Waits for a child and asserts it exited 0.
pub fn expect_success(mut child: Child) {
    let status = child.wait().unwrap();
    assert!(status.success(), "child failed: {status}");
}

/// A pool of `count` segments of `segment` bytes that waits up to 10 s.
pub fn pool(segment: usize, count: usize) -> segpool::SegmentPool {
    segpool::SegmentPool::builder(segment, count)
        .acquire_timeout(std::time::Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Begins, writes `bytes` into and commits one unit; returns its id.
pub fn publish(w: &segpool::Writer, bytes: &[u8]) -> segpool::UnitId {
    let mut u = w.begin_unit().unwrap();
    u.write_binary(bytes).unwrap();
    let id = u.id();
    u.commit_unit().unwrap();
    id
}

/// Polls `cond` every 2 ms for up to 10 s.
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !cond() {
        assert!(
            std::time::Instant::now() < until,
            "timed out waiting for: {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// xorshift64*: a tiny deterministic generator both sides can replay.
#[derive(Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `1..=max`.
    pub fn size(&mut self, max: usize) -> usize {
        1 + (self.next() % max as u64) as usize
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// FNV-1a over the bytes: cheap, order-sensitive.
pub fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// Names of shared-memory objects this process created that still exist.
pub fn leftover_shm() -> Vec<String> {
    let prefix = format!("segpool-{}-", std::process::id());
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}
