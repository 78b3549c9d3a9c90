//! Blocking: the wake-up of a blocked producer against a raw futex
//! wake-up, and the CPU a blocked producer burns.

use crate::ice;
use crate::proc::{Parent, Peer, child_command, cpu_self, mono_ns};
use crate::stats::{Percentiles, percentiles};
use iceoryx2::prelude::*;
use segpool::SegmentPool;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// How long the consumer holds the only segment before releasing it: long
/// enough for the producer's spin phase to end and the futex sleep to start.
const HOLD: Duration = Duration::from_millis(2);

/// segpool: a pool of one segment; the consumer holds it, the producer
/// blocks in `begin_unit`; latency = drop of the unit -> `begin_unit`
/// returns in the other process (`CLOCK_MONOTONIC` on both sides).
/// `consumer_spin`: whether the consumer's `recv`, which it enters right
/// after the drop, spins first (the default) or parks at once.
pub fn wake_segpool(iters: usize, consumer_spin: bool) -> Percentiles {
    let pool = SegmentPool::builder(64, 1)
        .acquire_timeout(Duration::from_secs(30))
        .build()
        .expect("pool");
    let mut cmd = child_command("wake", &["segpool".to_string(), iters.to_string()]);
    pool.configure_command(&mut cmd);
    let r = pool.open_reader().spin(consumer_spin);
    let peer = Peer::spawn(cmd);
    let mut lat = Vec::with_capacity(iters);
    let mut t0 = 0u64;
    for i in 0..=iters {
        let u = r.recv().expect("recv");
        let t1 = u64::from_le_bytes(u[..8].try_into().unwrap());
        if i > 0 {
            lat.push(t1.saturating_sub(t0) as f64);
        }
        std::thread::sleep(HOLD);
        t0 = mono_ns();
        drop(u);
    }
    peer.finish();
    percentiles(lat)
}

/// A page of shared memory for the raw futex test (named POSIX shm,
/// unlinked as soon as both sides have it).
struct SharedPage {
    ptr: *mut core::ffi::c_void,
}

impl SharedPage {
    fn open(name: &str, create: bool) -> SharedPage {
        use rustix::shm::OFlags;
        let flags = if create {
            OFlags::CREATE | OFlags::EXCL | OFlags::RDWR
        } else {
            OFlags::RDWR
        };
        let fd = rustix::shm::open(name, flags, rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR)
            .expect("shm_open");
        if create {
            rustix::fs::ftruncate(&fd, 4096).expect("ftruncate");
        }
        // SAFETY: a fresh shared mapping of a 4096-byte object we just
        // opened; no existing memory is affected.
        let ptr = unsafe {
            rustix::mm::mmap(
                core::ptr::null_mut(),
                4096,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::SHARED,
                &fd,
                0,
            )
        }
        .expect("mmap");
        SharedPage { ptr }
    }

    fn word(&self) -> &AtomicU32 {
        // SAFETY: the mapping is page-aligned, 4096 bytes, lives as long as
        // `self`, and is only accessed through atomics by both processes.
        unsafe { &*(self.ptr as *const AtomicU32) }
    }

    fn stamp(&self) -> &AtomicU64 {
        // SAFETY: as in `word`; offset 64 is 8-aligned and inside the page.
        unsafe { &*(self.ptr.cast::<u8>().add(64) as *const AtomicU64) }
    }
}

impl Drop for SharedPage {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `open` made; no reference into
        // it outlives `self` (they all borrow it).
        let _ = unsafe { rustix::mm::munmap(self.ptr, 4096) };
    }
}

/// The floor: a raw shared `FUTEX_WAKE` of a sleeper in another process,
/// same hold time, same clock.
pub fn wake_futex(iters: usize, tag: &str) -> Percentiles {
    let name = format!("/segpool-bench-{}", tag.replace('/', "-"));
    let page = SharedPage::open(&name, true);
    let cmd = child_command(
        "wake",
        &["futex".to_string(), iters.to_string(), name.clone()],
    );
    let mut peer = Peer::spawn(cmd);
    assert_eq!(peer.recv(), "ready");
    let _ = rustix::shm::unlink(name.as_str());
    let (w, stamp) = (page.word(), page.stamp());
    let mut lat = Vec::with_capacity(iters);
    for i in 0..iters as u32 {
        std::thread::sleep(HOLD);
        let t0 = mono_ns();
        // Release pairs with the child's Acquire load after its wait.
        w.store(2 * i + 1, Ordering::Release);
        let _ = rustix::thread::futex::wake(w, rustix::thread::futex::Flags::empty(), 1);
        while w.load(Ordering::Acquire) != 2 * i + 2 {
            std::thread::sleep(Duration::from_micros(20));
        }
        lat.push(stamp.load(Ordering::Relaxed).saturating_sub(t0) as f64);
    }
    peer.finish();
    percentiles(lat)
}

/// CPU burnt by a producer blocked for one second: `(spin-then-park,
/// blocking wait, iceoryx2 publisher with a full subscriber)`, in µs.
pub fn blocked_cpu(tag: &str) -> (f64, f64, f64) {
    let mut out = [0.0; 2];
    for (i, spin) in [true, false].into_iter().enumerate() {
        let pool = SegmentPool::builder(64, 1)
            .acquire_timeout(Duration::from_secs(30))
            .build()
            .expect("pool");
        let mut cmd = child_command("wake", &["blocked".to_string(), spin.to_string()]);
        pool.configure_command(&mut cmd);
        let r = pool.open_reader();
        let mut peer = Peer::spawn(cmd);
        let u = r.recv().expect("first unit");
        assert_eq!(peer.recv(), "blocking");
        std::thread::sleep(Duration::from_secs(1));
        drop(u);
        let _second = r.recv().expect("second unit");
        out[i] = peer.recv_numbers()[0];
        peer.finish();
    }
    // iceoryx2: a subscriber buffer of one that the consumer leaves full.
    let node = ice::node();
    let svc = ice_blocked(&node, tag).create().expect("svc");
    let sub = svc.subscriber_builder().create().expect("sub");
    let cmd = child_command("wake", &["iceoryx2".to_string(), tag.to_string()]);
    let mut peer = Peer::spawn(cmd);
    ice::connect(&mut peer, &sub);
    assert_eq!(peer.recv(), "blocking");
    std::thread::sleep(Duration::from_secs(1));
    let mut got = 0;
    while got < 2 {
        if sub.receive().expect("receive").is_some() {
            got += 1;
        }
    }
    let ice = peer.recv_numbers()[0];
    peer.finish();
    (out[0], out[1], ice)
}

fn ice_blocked(node: &Node<ipc::Service>, tag: &str) -> ice::Builder {
    ice::builder(node, &format!("{tag}/blocked"), 1)
}

/// Child side of the wake-up and blocked-CPU tests.
pub fn wake_child(args: &[String]) {
    let mut parent = Parent::new();
    match args[0].as_str() {
        "segpool" => {
            let iters: usize = args[1].parse().unwrap();
            let pool = SegmentPool::from_env().expect("attach");
            let w = pool.open_writer();
            for _ in 0..=iters {
                let mut u = w.begin_unit().expect("begin");
                let t1 = mono_ns();
                u.write_binary(&t1.to_le_bytes()).expect("write");
                u.commit_unit().expect("commit");
            }
        }
        "futex" => {
            let iters: u32 = args[1].parse().unwrap();
            let page = SharedPage::open(&args[2], false);
            let (w, stamp) = (page.word(), page.stamp());
            parent.send("ready");
            for i in 0..iters {
                // Acquire pairs with the parent's Release store.
                while w.load(Ordering::Acquire) == 2 * i {
                    let _ = rustix::thread::futex::wait(
                        w,
                        rustix::thread::futex::Flags::empty(),
                        2 * i,
                        None,
                    );
                }
                stamp.store(mono_ns(), Ordering::Relaxed);
                // Release: the parent reads the stamp after seeing this value.
                w.store(2 * i + 2, Ordering::Release);
            }
        }
        "blocked" => {
            let spin: bool = args[1].parse().unwrap();
            let pool = SegmentPool::from_env().expect("attach");
            let w = pool.open_writer().spin(spin);
            let u = w.begin_unit().expect("begin");
            u.commit_unit().expect("commit");
            parent.send("blocking");
            let c0 = cpu_self();
            let u = w.begin_unit().expect("blocked begin");
            let cpu = cpu_self() - c0;
            u.commit_unit().expect("commit");
            parent.send(&format!("{}", cpu.as_secs_f64() * 1e6));
        }
        _ => {
            let node = ice::node();
            let svc = ice_blocked(&node, &args[1]).open().expect("svc");
            let publ = svc
                .publisher_builder()
                .initial_max_slice_len(64)
                .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
                .create()
                .expect("pub");
            parent.send("ready");
            assert_eq!(parent.recv(), "go");
            ice::send(&publ, 64);
            parent.send("blocking");
            let c0 = cpu_self();
            ice::send(&publ, 64);
            let cpu = cpu_self() - c0;
            parent.send(&format!("{}", cpu.as_secs_f64() * 1e6));
        }
    }
    parent.wait_eof();
}
