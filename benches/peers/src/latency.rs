//! Latency and blocking: 64 B ping-pong, wake-up of a blocked producer
//! against a raw futex wake-up, and the CPU a blocked producer burns.

use crate::proc::{Parent, Peer, child_command, cpu_self, mono_ns};
use crate::throughput::ice_builder;
use iceoryx2::prelude::*;
use segpool::{PoolHandle, SegmentPool};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Percentiles of a set of nanosecond samples.
#[derive(Clone, Copy, Debug, Default)]
pub struct Percentiles {
    pub p50: f64,
    pub p99: f64,
    pub n: usize,
}

pub fn percentiles(mut v: Vec<f64>) -> Percentiles {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    Percentiles {
        p50: at(0.50),
        p99: at(0.99),
        n: v.len(),
    }
}

const PING: usize = 64;

/// Which ping-pong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PingPong {
    /// segpool, default waits (spin, then futex).
    SegpoolSpin,
    /// segpool, `spin(false)`: straight to the futex.
    SegpoolBlock,
    /// iceoryx2, both sides busy-poll `receive` (its own benchmark's design).
    Iceoryx2,
}

impl PingPong {
    pub fn name(self) -> &'static str {
        match self {
            PingPong::SegpoolSpin => "segpool spin-then-park",
            PingPong::SegpoolBlock => "segpool blocking wait",
            PingPong::Iceoryx2 => "iceoryx2 busy-poll",
        }
    }
}

/// One-way latency (round trip / 2) of `iters` 64 B ping-pongs, in ns.
pub fn ping_pong(kind: PingPong, iters: usize, tag: &str) -> Percentiles {
    let warm = iters / 10 + 100;
    let mut rtts = Vec::with_capacity(iters);
    let mut cmd = child_command("pp", &[]);
    match kind {
        PingPong::SegpoolSpin | PingPong::SegpoolBlock => {
            let spin = kind == PingPong::SegpoolSpin;
            let ping = SegmentPool::new(PING, 2).expect("pool");
            let pong = SegmentPool::new(PING, 2).expect("pool");
            ping.configure_command(&mut cmd);
            pong.configure_command(&mut cmd);
            cmd.args([
                "segpool".to_string(),
                spin.to_string(),
                ping.handle().to_string(),
                pong.handle().to_string(),
            ]);
            let w = ping.open_writer().spin(spin);
            let r = pong.open_reader().spin(spin);
            let mut peer = Peer::spawn(cmd);
            assert_eq!(peer.recv(), "ready");
            let msg = [7u8; PING];
            for i in 0..warm + iters {
                let t0 = Instant::now();
                let mut u = w.begin_unit().expect("begin");
                u.write_binary(&msg).expect("write");
                u.commit_unit().expect("commit");
                let back = r.recv().expect("recv");
                std::hint::black_box(back[0]);
                drop(back);
                if i >= warm {
                    rtts.push(t0.elapsed().as_nanos() as f64 / 2.0);
                }
            }
            let u = w.begin_unit().expect("begin");
            u.commit_unit().expect("commit end");
            peer.finish();
        }
        PingPong::Iceoryx2 => {
            let node = NodeBuilder::new().create::<ipc::Service>().expect("node");
            let ping_svc = ice_pp(&node, &format!("{tag}/ping")).create().expect("svc");
            let pong_svc = ice_pp(&node, &format!("{tag}/pong")).create().expect("svc");
            let sub = pong_svc.subscriber_builder().create().expect("sub");
            cmd.args(["iceoryx2".to_string(), tag.to_string()]);
            let mut peer = Peer::spawn(cmd);
            assert_eq!(peer.recv(), "ready");
            let publ = ping_svc
                .publisher_builder()
                .initial_max_slice_len(PING)
                .create()
                .expect("pub");
            for i in 0..warm + iters {
                let t0 = Instant::now();
                ice_send(&publ, PING);
                loop {
                    if let Some(s) = sub.receive().expect("receive") {
                        std::hint::black_box(s.payload()[0]);
                        break;
                    }
                    std::hint::spin_loop();
                }
                if i >= warm {
                    rtts.push(t0.elapsed().as_nanos() as f64 / 2.0);
                }
            }
            ice_send(&publ, 8);
            peer.finish();
        }
    }
    percentiles(rtts)
}

fn ice_pp(
    node: &Node<ipc::Service>,
    tag: &str,
) -> iceoryx2::service::builder::publish_subscribe::Builder<[u8], (), ipc::Service> {
    ice_builder(node, tag, 2)
}

fn ice_send(p: &iceoryx2::port::publisher::Publisher<ipc::Service, [u8], ()>, len: usize) {
    let mut s = p.loan_slice_uninit(len).expect("loan");
    for b in s.payload_mut() {
        b.write(7);
    }
    // SAFETY: every byte of the payload was written just above.
    let s = unsafe { s.assume_init() };
    s.send().expect("send");
}

/// Child side of the ping-pongs: echo until a short unit arrives.
pub fn pp_child(args: &[String]) {
    let parent = Parent::new();
    match args[0].as_str() {
        "segpool" => {
            let spin: bool = args[1].parse().unwrap();
            let ping = SegmentPool::attach(&args[2].parse::<PoolHandle>().unwrap()).unwrap();
            let pong = SegmentPool::attach(&args[3].parse::<PoolHandle>().unwrap()).unwrap();
            let r = ping.open_reader().spin(spin);
            let w = pong.open_writer().spin(spin);
            parent.send("ready");
            let mut msg = [0u8; PING];
            loop {
                let u = r.recv().expect("recv");
                if u.len() < PING {
                    break;
                }
                msg.copy_from_slice(&u);
                drop(u);
                let mut out = w.begin_unit().expect("begin");
                out.write_binary(&msg).expect("write");
                out.commit_unit().expect("commit");
            }
        }
        _ => {
            let tag = &args[1];
            let node = NodeBuilder::new().create::<ipc::Service>().expect("node");
            let ping_svc = ice_pp(&node, &format!("{tag}/ping")).open().expect("svc");
            let pong_svc = ice_pp(&node, &format!("{tag}/pong")).open().expect("svc");
            let sub = ping_svc.subscriber_builder().create().expect("sub");
            let publ = pong_svc
                .publisher_builder()
                .initial_max_slice_len(PING)
                .create()
                .expect("pub");
            parent.send("ready");
            loop {
                match sub.receive().expect("receive") {
                    Some(s) if s.payload().len() < PING => break,
                    Some(s) => {
                        std::hint::black_box(s.payload()[0]);
                        drop(s);
                        ice_send(&publ, PING);
                    }
                    None => std::hint::spin_loop(),
                }
            }
        }
    }
}

// ----- wake-up of a blocked producer -------------------------------------------

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
    let node = NodeBuilder::new().create::<ipc::Service>().expect("node");
    let svc = ice_blocked(&node, tag).create().expect("svc");
    let sub = svc.subscriber_builder().create().expect("sub");
    let cmd = child_command("wake", &["iceoryx2".to_string(), tag.to_string()]);
    let mut peer = Peer::spawn(cmd);
    ice_connect(&mut peer, &sub);
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

/// Waits for the child's publisher, lets the subscriber connect to it (a
/// sample sent before that can be lost), then tells the child to go.
pub fn ice_connect(
    peer: &mut Peer,
    sub: &iceoryx2::port::subscriber::Subscriber<ipc::Service, [u8], ()>,
) {
    assert_eq!(peer.recv(), "ready");
    sub.has_samples().expect("subscriber connects");
    peer.send("go");
}

fn ice_blocked(
    node: &Node<ipc::Service>,
    tag: &str,
) -> iceoryx2::service::builder::publish_subscribe::Builder<[u8], (), ipc::Service> {
    ice_builder(node, &format!("{tag}/blocked"), 1)
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
            let node = NodeBuilder::new().create::<ipc::Service>().expect("node");
            let svc = ice_blocked(&node, &args[1]).open().expect("svc");
            let publ = svc
                .publisher_builder()
                .initial_max_slice_len(64)
                .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
                .create()
                .expect("pub");
            parent.send("ready");
            assert_eq!(parent.recv(), "go");
            ice_send(&publ, 64);
            parent.send("blocking");
            let c0 = cpu_self();
            ice_send(&publ, 64);
            let cpu = cpu_self() - c0;
            parent.send(&format!("{}", cpu.as_secs_f64() * 1e6));
        }
    }
    parent.wait_eof();
}
