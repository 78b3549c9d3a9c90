//! The API a binding builds on: a handle from a memfd (with a typed error
//! for each thing that is not one), the pool's descriptor, and the raw
//! addresses of a unit's and a loan's bytes.

mod common;

use rustix::fs::{MemfdFlags, SealFlags};
use segpool::{Error, PoolHandle, SegmentPool};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_millis(1500);

/// A memfd holding `bytes`, sealed against growing and shrinking (as a
/// pool's is) when `sealed`.
fn memfd(bytes: &[u8], sealed: bool) -> OwnedFd {
    let fd = rustix::fs::memfd_create(
        "segpool-test",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )
    .unwrap();
    let mut done = 0;
    while done < bytes.len() {
        done += rustix::io::pwrite(&fd, &bytes[done..], done as u64).unwrap();
    }
    if sealed {
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW).unwrap();
    }
    fd
}

/// The bytes of a live pool, read through its descriptor.
fn image(pool: &SegmentPool) -> Vec<u8> {
    let mut img = vec![0u8; pool.handle().len() as usize];
    let mut done = 0;
    while done < img.len() {
        let n = rustix::io::pread(pool.as_fd(), &mut img[done..], done as u64).unwrap();
        assert!(n > 0, "short read of the pool's memfd");
        done += n;
    }
    img
}

#[test]
fn a_handle_from_a_pools_memfd_attaches_and_owns_its_descriptor() {
    let pool = common::pool(4096, 2);
    let own = pool.as_fd().try_clone_to_owned().unwrap();
    let copy_fd = own.as_raw_fd();
    let handle = PoolHandle::from_fd(own, TIMEOUT).unwrap();
    assert_eq!(handle.len(), pool.handle().len());
    assert_eq!(handle.acquire_timeout(), TIMEOUT);
    assert_eq!(handle.raw_fd(), Some(copy_fd));
    assert_eq!(pool.handle().raw_fd(), Some(pool.as_fd().as_raw_fd()));
    // The text form names the handle's own descriptor, and parses back.
    assert_eq!(handle.to_string().parse::<PoolHandle>().unwrap(), handle);

    // A clone shares the descriptor: it stays open until the last drops.
    let clone = handle.clone();
    drop(handle);
    let attached = SegmentPool::attach(&clone).unwrap();
    assert_eq!(attached.acquire_timeout(), TIMEOUT);
    drop(clone);

    // The attachment needs no handle any more: a unit goes through it.
    common::publish(&attached.open_writer(), b"through the copy");
    let unit = pool.open_reader().recv().unwrap();
    assert_eq!(&unit[..16], b"through the copy");
}

#[test]
fn a_descriptor_that_is_not_a_sealed_memfd_is_a_bad_handle() {
    let (socket, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
    let dir = std::fs::File::open("/").unwrap();
    let unsealed = memfd(&image(&common::pool(4096, 1)), false);
    for (what, fd) in [
        ("a socket", OwnedFd::from(socket)),
        ("a directory", OwnedFd::from(dir)),
        ("an unsealed memfd holding a pool", unsealed),
    ] {
        match PoolHandle::from_fd(fd, TIMEOUT) {
            Err(Error::BadHandle(m)) => assert!(m.contains("memfd"), "{what}: {m}"),
            other => panic!("{what}: {other:?}"),
        }
    }
}

#[test]
fn a_sealed_memfd_that_holds_no_pool_is_incompatible() {
    for (what, bytes, says) in [
        ("an empty memfd", vec![], "fewer than"),
        ("a memfd of zeros", vec![0u8; 8192], "magic"),
    ] {
        match PoolHandle::from_fd(memfd(&bytes, true), TIMEOUT) {
            Err(Error::Incompatible(m)) => assert!(m.contains(says), "{what}: {m}"),
            other => panic!("{what}: {other:?}"),
        }
    }
}

#[test]
fn a_pool_of_another_layout_version_is_incompatible() {
    let mut img = image(&common::pool(4096, 1));
    // The header starts with the magic, then the layout version (u32).
    assert_eq!(&img[..8], b"SEGPOOL\0");
    let version = u32::from_le_bytes(img[8..12].try_into().unwrap());
    img[8..12].copy_from_slice(&(version + 1).to_le_bytes());
    match PoolHandle::from_fd(memfd(&img, true), TIMEOUT) {
        Err(Error::Incompatible(m)) => assert!(m.contains("version"), "{m}"),
        other => panic!("{other:?}"),
    }
    // The same bytes with the version put back are a pool again.
    img[8..12].copy_from_slice(&version.to_le_bytes());
    let handle = PoolHandle::from_fd(memfd(&img, true), TIMEOUT).unwrap();
    assert_eq!(handle.len() as usize, img.len());
}

#[test]
fn a_named_pools_handle_has_no_descriptor_number() {
    let pool = SegmentPool::builder(4096, 1).named(true).build().unwrap();
    assert_eq!(pool.handle().raw_fd(), None);
    // Its object is still a descriptor of the pool.
    let size = rustix::fs::fstat(pool.as_fd()).unwrap().st_size;
    assert_eq!(size as u64, pool.handle().len());
}

#[test]
fn a_units_address_is_its_bytes() {
    let pool = common::pool(4096, 1);
    let mut u = pool.open_writer().begin_unit().unwrap();
    let (off, n) = u.write_binary(b"hello, raw world").unwrap();
    u.commit_unit().unwrap();
    let unit = pool.open_reader().recv().unwrap();
    assert_eq!(unit.as_ptr(), unit.as_bytes().as_ptr());
    assert_eq!(unit.as_ptr(), unit.as_mut_ptr().cast_const());
    let view = unit.view(off + 7, 3).unwrap();
    assert_eq!(view.as_ptr(), unit.as_ptr().wrapping_add(off + 7));
    assert_eq!(view.len(), 3);
    // SAFETY: `view` is held, so its 3 bytes are this process's and mapped;
    // no reference to them is alive while they are written, and this thread
    // is the only one touching them.
    unsafe {
        view.as_mut_ptr()
            .copy_from_nonoverlapping(b"RAW".as_ptr(), 3)
    };
    assert_eq!(unit.read_binary(off, n).unwrap(), b"hello, RAW world");
    // The segment is back once the last view drops, as without raw access.
    drop((unit, view));
    assert_eq!(pool.reclaimed(), 1);
}

#[test]
fn a_loans_address_takes_the_bytes_advance_claimed() {
    let pool = common::pool(4096, 1);
    let mut u = pool.open_writer().begin_unit().unwrap();
    assert_eq!(u.capacity(), 4096);
    let base = u.as_mut_ptr();
    let first = u.advance(5).unwrap();
    let (second, _) = u.write_binary(b"copied").unwrap();
    let third = u.advance(4).unwrap();
    assert_eq!(u.as_mut_ptr(), base, "the address does not move");
    // SAFETY: `advance` claimed both ranges of this open unit, whose
    // segment is its alone until commit; nothing else refers to them.
    unsafe {
        base.add(first)
            .copy_from_nonoverlapping(b"lent!".as_ptr(), 5);
        base.add(third)
            .copy_from_nonoverlapping(b"also".as_ptr(), 4);
    }
    u.commit_unit().unwrap();
    let unit = pool.open_reader().recv().unwrap();
    assert_eq!(unit.read_binary(first, 5).unwrap(), b"lent!");
    assert_eq!(unit.read_binary(second, 6).unwrap(), b"copied");
    assert_eq!(unit.read_binary(third, 4).unwrap(), b"also");
    assert_eq!(
        unit.as_ptr(),
        base.cast_const(),
        "the same segment, in place"
    );
}

#[test]
fn a_loan_past_the_capacity_is_refused() {
    let pool = common::pool(4096, 1);
    let mut u = pool.open_writer().begin_unit().unwrap();
    u.advance(4000).unwrap();
    assert!(matches!(u.advance(100), Err(Error::TooLarge { .. })));
}
