//! `attach` refuses every control page it cannot trust, with a typed error.

mod common;

use segpool::{Error, PoolHandle, SegmentPool};
use std::io::Write;

/// Byte offsets of header fields (see `Ident` in src/layout.rs).
const MAGIC: usize = 0;
const VERSION: usize = 8;
const COUNT: usize = 24;
const RING_OFFSET: usize = 64;

/// A named shm object holding `bytes`, removed on drop.
struct Object(String);

impl Object {
    fn new(tag: &str, bytes: &[u8]) -> Object {
        let name = format!("/segpool-{}-test-{tag}", std::process::id());
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(format!("/dev/shm{name}"))
            .unwrap();
        f.write_all(bytes).unwrap();
        Object(name)
    }

    fn attach(&self, len: usize) -> segpool::Result<SegmentPool> {
        let h: PoolHandle = format!("segpool/1 shm={} len={len} timeout_ms=0", self.0)
            .parse()
            .unwrap();
        SegmentPool::attach(&h)
    }
}

impl Drop for Object {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(format!("/dev/shm{}", self.0));
    }
}

/// The bytes of a real, valid pool's shared object.
fn valid_image() -> Vec<u8> {
    let p = SegmentPool::builder(4096, 3).named(true).build().unwrap();
    std::fs::read(format!("/dev/shm{}", p.name().unwrap())).unwrap()
}

fn patch(img: &[u8], at: usize, value: &[u8]) -> Vec<u8> {
    let mut v = img.to_vec();
    v[at..at + value.len()].copy_from_slice(value);
    v
}

#[test]
fn a_copy_of_a_valid_image_attaches() {
    let img = valid_image();
    let obj = Object::new("valid", &img);
    let p = obj.attach(img.len()).unwrap();
    assert_eq!((p.count(), p.segment_size()), (3, 4096));
}

#[test]
fn a_wrong_magic_is_incompatible() {
    let img = valid_image();
    let obj = Object::new("magic", &patch(&img, MAGIC, b"NOTSEGPL"));
    assert!(matches!(obj.attach(img.len()), Err(Error::Incompatible(m)) if m.contains("magic")));
}

#[test]
fn a_wrong_version_is_incompatible() {
    let img = valid_image();
    let obj = Object::new("version", &patch(&img, VERSION, &99u32.to_le_bytes()));
    assert!(matches!(obj.attach(img.len()), Err(Error::Incompatible(m)) if m.contains("version")));
}

#[test]
fn older_layout_versions_are_incompatible() {
    let img = valid_image();
    // 1: protocol v1; 3: protocol v2 (no pidfd identities, no roster).
    for old in [1u32, 3] {
        let obj = Object::new("old", &patch(&img, VERSION, &old.to_le_bytes()));
        let want = format!("layout version {old}, this build speaks 4");
        assert!(matches!(obj.attach(img.len()), Err(Error::Incompatible(m)) if m.contains(&want)));
    }
}

#[test]
fn an_inconsistent_header_is_corrupt() {
    let img = valid_image();
    // The count no longer matches the offsets and the length.
    let obj = Object::new("count", &patch(&img, COUNT, &4u64.to_le_bytes()));
    assert!(matches!(obj.attach(img.len()), Err(Error::Corrupt(_))));
    // An offset that points elsewhere.
    let obj = Object::new("offset", &patch(&img, RING_OFFSET, &8u64.to_le_bytes()));
    assert!(matches!(obj.attach(img.len()), Err(Error::Corrupt(m)) if m.contains("ring_offset")));
    // Absurd geometry must not overflow or allocate.
    let obj = Object::new("huge", &patch(&img, COUNT, &u64::MAX.to_le_bytes()));
    assert!(matches!(obj.attach(img.len()), Err(Error::Corrupt(_))));
}

#[test]
fn a_truncated_object_is_corrupt() {
    let img = valid_image();
    let short = &img[..img.len() - 4096];
    let obj = Object::new("short", short);
    assert!(matches!(obj.attach(short.len()), Err(Error::Corrupt(m)) if m.contains("holds")));
    let tiny = Object::new("tiny", &img[..100]);
    assert!(matches!(tiny.attach(100), Err(Error::Corrupt(_))));
    let empty = Object::new("empty", &[]);
    assert!(matches!(empty.attach(0), Err(Error::Corrupt(_))));
}

#[test]
fn a_handle_whose_length_disagrees_is_corrupt() {
    let img = valid_image();
    let obj = Object::new("len", &img);
    assert!(matches!(obj.attach(img.len() + 1), Err(Error::Corrupt(_))));
}

#[test]
fn a_missing_object_or_fd_is_an_io_error() {
    let h: PoolHandle = "segpool/1 shm=/segpool-no-such-object len=1 timeout_ms=0"
        .parse()
        .unwrap();
    assert!(matches!(SegmentPool::attach(&h), Err(Error::Io { .. })));
    let h: PoolHandle = "segpool/1 fd=987654 len=1 timeout_ms=0".parse().unwrap();
    assert!(matches!(SegmentPool::attach(&h), Err(Error::Io { .. })));
}

#[test]
fn an_fd_that_is_not_a_sealed_memfd_is_incompatible() {
    use std::os::fd::AsRawFd;
    let f = tempfile_in_dev_shm();
    let h: PoolHandle = format!("segpool/1 fd={} len=4096 timeout_ms=0", f.as_raw_fd())
        .parse()
        .unwrap();
    assert!(matches!(SegmentPool::attach(&h), Err(Error::Incompatible(m)) if m.contains("sealed")));
}

fn tempfile_in_dev_shm() -> std::fs::File {
    let path = format!("/dev/shm/segpool-{}-test-unsealed", std::process::id());
    let f = std::fs::File::create(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    f.set_len(4096).unwrap();
    f
}

#[test]
fn missing_handle_env_says_so() {
    // SEGPOOL_HANDLE is not set in the test environment.
    if std::env::var_os(segpool::ENV_VAR).is_none() {
        let err = SegmentPool::from_env().unwrap_err();
        assert!(
            matches!(&err, Error::BadHandle(m) if m.contains("not set")),
            "{err}"
        );
    }
}

#[test]
fn a_dropped_named_pool_leaves_nothing_in_dev_shm() {
    // Its own pool's name only: the other tests of this binary run at the
    // same time and have named pools of their own alive (`.ci/run` checks
    // the whole of /dev/shm once every test is done).
    let name = {
        let p = SegmentPool::builder(4096, 3).named(true).build().unwrap();
        let name = p.name().unwrap().to_owned();
        assert!(std::path::Path::new(&format!("/dev/shm{name}")).exists());
        name
    };
    assert!(!std::path::Path::new(&format!("/dev/shm{name}")).exists());
}
