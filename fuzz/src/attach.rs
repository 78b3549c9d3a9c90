//! The `attach` target: `SegmentPool::attach` (`Region::open` and
//! `Layout::validate`) given a control area and an object size the fuzzer
//! chose. It must refuse with a typed error, or give a pool whose every
//! operation returns (driven as in `hostile_peer`); an untouched control
//! area must attach and carry a unit.
//!
//! The control area starts as a real pool's (so the magic and the geometry
//! are easy to reach) and is then patched. It is attached either in place
//! (the real, sealed memfd) or copied into a named shm object of any size.

use super::model::Op;
use super::peer::{Driver, Scribble, Shared, apply};
use arbitrary::{Arbitrary, Unstructured};
use segpool::{PoolHandle, SegmentPool};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// Largest named object the target makes (its pages are faulted in).
const MAX_SIZE: u64 = 4 << 20;

/// Size of the named object.
#[derive(Arbitrary, Debug)]
pub enum Size {
    /// The real pool's size.
    Same,
    /// The real size plus `n` pages (negative: minus).
    Pages(i8),
    /// The real size plus `n` bytes.
    Bytes(i16),
    /// Any size up to 4 MiB.
    Any(u32),
}

/// What the fuzzer's bytes decode to.
#[derive(Arbitrary, Debug)]
pub struct Input {
    /// Template segment size, folded into 1..=9000 (1 to 3 pages).
    pub segment_size: u16,
    /// Template count, folded into 1..=8, or 1..=80.
    pub count: u8,
    /// Copy into a named object of size `size` (else patch the memfd).
    pub named: bool,
    /// Size of the named object.
    pub size: Size,
    /// `len=` of the handle, if not the object's size.
    pub handle_len: Option<u64>,
    /// Patches to the control area before attaching.
    pub patches: Vec<Scribble>,
    /// Operations on the attached pool.
    pub ops: Vec<Op>,
}

/// Removes a named object when dropped.
struct Unlink(String);

impl Drop for Unlink {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(format!("/dev/shm{}", self.0));
    }
}

/// Decodes `data` and attaches.
pub fn run(data: &[u8]) {
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let count = match input.count {
        c @ 200.. => 1 + usize::from(c) % 80,
        c => 1 + usize::from(c) % 8,
    };
    let template = SegmentPool::builder(1 + usize::from(input.segment_size) % 9000, count)
        .acquire_timeout(Duration::ZERO)
        .build()
        .expect("template pool");
    let shared = Shared::of(&template);
    let real_len = template.handle().len();
    let (handle, _unlink, object_len) = if input.named {
        let mut control = shared.read_control();
        for p in &input.patches {
            apply(&mut control, &shared.layout, p);
        }
        let len = match input.size {
            Size::Same => real_len,
            Size::Pages(n) => real_len.saturating_add_signed(i64::from(n) * 4096),
            Size::Bytes(n) => real_len.saturating_add_signed(n.into()),
            Size::Any(n) => u64::from(n),
        }
        .min(MAX_SIZE);
        let name = fresh_name();
        let file = std::fs::File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(format!("/dev/shm{name}"))
            .expect("create named object");
        let unlink = Unlink(name.clone());
        file.write_all_at(&control, 0).expect("write control area");
        file.set_len(len).expect("size named object");
        let shown = format!(
            "segpool/1 shm={name} len={} timeout_ms=0",
            input.handle_len.unwrap_or(len)
        );
        (shown, Some(unlink), len)
    } else {
        for p in &input.patches {
            shared.scribble(p);
        }
        let shown = template.handle().to_string();
        let shown = match input.handle_len {
            Some(n) => shown.replace(&format!("len={real_len}"), &format!("len={n}")),
            None => shown,
        };
        (shown, None, real_len)
    };
    let handle: PoolHandle = handle.parse().expect("a handle we printed parses");
    let untouched = input.patches.is_empty()
        && object_len == real_len
        && input.handle_len.is_none_or(|n| n == real_len);
    let pool = match SegmentPool::attach(&handle) {
        Ok(pool) => pool,
        Err(e) => {
            assert!(!untouched, "an intact pool was refused: {e}");
            return;
        }
    };
    assert_eq!(
        pool.handle().len(),
        object_len,
        "attached a pool of another size"
    );
    let writer = pool.open_writer();
    if untouched {
        round_trip(&pool, &writer);
    }
    let mut driver = Driver::new(&pool, &writer);
    for op in &input.ops {
        driver.apply(op);
    }
    driver.finish();
}

/// An intact pool carries a unit from the attached side to the template's.
fn round_trip(pool: &SegmentPool, writer: &segpool::Writer) {
    let data = &b"attached"[..pool.segment_size().min(8)];
    let mut u = writer.begin_unit().expect("begin on an attached pool");
    u.write_binary(data).expect("write");
    u.commit_unit().expect("commit");
    let got = pool
        .open_reader()
        .try_recv()
        .expect("recv")
        .expect("a unit");
    assert_eq!(got.as_bytes(), data);
}

/// `/segpool-fuzz-<pid>-<n>`: unique within this process, and the pid keeps
/// parallel fuzz jobs apart.
fn fresh_name() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "/segpool-fuzz-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}
