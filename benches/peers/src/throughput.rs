//! One-way throughput: a producer child streams units of one size to the
//! consumer parent for a fixed time, over one transport.
//!
//! Timing: the consumer starts its clock and CPU count at the `warmup`-th
//! unit (pages faulted in, caches warm), and stops them at the end marker
//! (a unit shorter than 64 bytes). The producer takes its CPU count over
//! the same units, and reports it on the control channel.

use crate::pools;
use crate::proc::{Parent, Peer, child_command, cpu_self};
use iceoryx2::prelude::*;
use ipc_channel::ipc::{IpcOneShotServer, IpcSender, IpcSharedMemory};
use std::fs::File;
use std::hint::black_box;
use std::io::{BufReader, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// A way to move units from one process to another (or a memcpy limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// segpool, `write_binary` (copy in, the SPDL usage).
    SegpoolCopy,
    /// The same on `segpool-v1`, the frozen pre-v2 crate.
    SegpoolV1Copy,
    /// segpool, `reserve` (write in place: 8 bytes of header, no copy).
    SegpoolLoan,
    /// The same on `segpool-v1`.
    SegpoolV1Loan,
    /// A pipe, one `write` of length prefix + payload per unit.
    Pipe,
    /// A Unix-domain stream socket, same framing.
    Uds,
    /// ipc-channel, an `IpcSharedMemory` per unit.
    IpcChannel,
    /// iceoryx2 publish-subscribe, `loan_slice_uninit` (8 bytes written).
    Iceoryx2,
    /// Single-thread `memcpy` of the payload into `depth` destinations in
    /// turn, in a shared mapping with the pool's footprint: the limit of
    /// copy-in, the anchor the copy-in transports are compared with.
    MemcpyRotate,
    /// Single-thread `memcpy` of the payload into one hot buffer: the
    /// machine's copy speed, which no rotating pool can reach.
    Memcpy,
}

pub const ALL: [Transport; 10] = [
    Transport::SegpoolCopy,
    Transport::SegpoolV1Copy,
    Transport::SegpoolLoan,
    Transport::SegpoolV1Loan,
    Transport::Pipe,
    Transport::Uds,
    Transport::IpcChannel,
    Transport::Iceoryx2,
    Transport::MemcpyRotate,
    Transport::Memcpy,
];

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::SegpoolCopy => "segpool-copy",
            Transport::SegpoolV1Copy => "segpool-v1-copy",
            Transport::SegpoolLoan => "segpool-loan",
            Transport::SegpoolV1Loan => "segpool-v1-loan",
            Transport::Pipe => "pipe",
            Transport::Uds => "uds",
            Transport::IpcChannel => "ipc-channel",
            Transport::Iceoryx2 => "iceoryx2-loan",
            Transport::MemcpyRotate => "memcpy-rotate",
            Transport::Memcpy => "memcpy",
        }
    }

    pub fn parse(s: &str) -> Transport {
        *ALL.iter()
            .find(|t| t.name() == s)
            .unwrap_or_else(|| panic!("unknown transport {s}"))
    }

    /// Whether the producer writes only a header in place (not the payload).
    pub fn is_loan(self) -> bool {
        matches!(
            self,
            Transport::SegpoolLoan | Transport::SegpoolV1Loan | Transport::Iceoryx2
        )
    }

    /// Whether this is one of the in-process memcpy limits.
    pub fn is_memcpy(self) -> bool {
        matches!(self, Transport::Memcpy | Transport::MemcpyRotate)
    }
}

/// What the consumer does with each unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consume {
    /// Reads one byte: transport cost only.
    Touch,
    /// Reads every byte (a sum over 64-bit words).
    Checksum,
}

impl Consume {
    pub fn name(self) -> &'static str {
        match self {
            Consume::Touch => "touch",
            Consume::Checksum => "checksum",
        }
    }
}

/// One measured cell.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    /// Units inside the timed window.
    pub units: u64,
    /// Wall time of the window.
    pub secs: f64,
    /// Producer CPU seconds over the window's units.
    pub prod_cpu: f64,
    /// Consumer CPU seconds over the window.
    pub cons_cpu: f64,
    /// Futex syscalls (waits + wakes) of producer and consumer, segpool only.
    pub futex: (u64, u64),
}

/// Run parameters shared by both sides.
#[derive(Clone, Copy, Debug)]
pub struct Cell {
    pub transport: Transport,
    pub size: usize,
    pub consume: Consume,
    /// Segments / buffer slots in flight.
    pub depth: usize,
    /// How long the producer streams after the warm-up.
    pub duration: Duration,
    /// Stop after this many measured units instead, if nonzero.
    pub max_units: u64,
    pub warmup: u64,
}

/// Segments in flight for a payload size: 16 MiB worth, 4 to 64.
pub fn depth_for(size: usize) -> usize {
    ((16 << 20) / size).clamp(4, 64)
}

/// Bytes shorter than this end the stream.
pub(crate) const END: usize = 64;

fn checksum(b: &[u8]) -> u64 {
    let mut acc = [0u64; 8];
    let chunks = b.chunks_exact(64);
    let rest = chunks.remainder();
    for c in chunks {
        for (i, w) in c.chunks_exact(8).enumerate() {
            acc[i] = acc[i].wrapping_add(u64::from_le_bytes(w.try_into().unwrap()));
        }
    }
    let tail: u64 = rest.iter().map(|&x| u64::from(x)).sum();
    acc.iter().fold(tail, |a, &x| a.wrapping_add(x))
}

/// Consumer-side bookkeeping of the timed window.
pub(crate) struct Window {
    warmup: u64,
    seen: u64,
    start: Option<(Instant, Duration)>,
    acc: u64,
    consume: Consume,
}

impl Window {
    fn new(cell: &Cell) -> Window {
        Window {
            warmup: cell.warmup,
            seen: 0,
            start: None,
            acc: 0,
            consume: cell.consume,
        }
    }

    /// Units consumed so far (the next unit's ticket, for segpool).
    pub(crate) fn seen(&self) -> u64 {
        self.seen
    }

    #[inline]
    pub(crate) fn unit(&mut self, bytes: &[u8]) {
        match self.consume {
            Consume::Touch => self.acc = self.acc.wrapping_add(u64::from(bytes[0])),
            Consume::Checksum => self.acc = self.acc.wrapping_add(checksum(bytes)),
        }
        self.seen += 1;
        if self.seen == self.warmup {
            self.start = Some((Instant::now(), cpu_self()));
        }
    }

    fn finish(self) -> (u64, f64, f64) {
        black_box(self.acc);
        let (t0, c0) = self.start.expect("stream ended inside the warm-up");
        (
            self.seen - self.warmup,
            t0.elapsed().as_secs_f64(),
            (cpu_self() - c0).as_secs_f64(),
        )
    }
}

/// Runs one cell: spawns the producer, consumes, returns the numbers.
pub fn run(cell: &Cell, tag: &str) -> Sample {
    match cell.transport {
        Transport::Memcpy => return memcpy(cell),
        Transport::MemcpyRotate => return memcpy_rotate(cell),
        _ => {}
    }
    let mut args = vec![
        cell.transport.name().to_string(),
        cell.size.to_string(),
        cell.depth.to_string(),
        cell.duration.as_micros().to_string(),
        cell.max_units.to_string(),
        cell.warmup.to_string(),
        tag.to_string(),
    ];
    let mut cmd = child_command("tp", &[]);
    let mut win = Window::new(cell);
    let mut extra_futex = (0, 0);
    let prod: Vec<f64>;
    match cell.transport {
        Transport::SegpoolCopy | Transport::SegpoolLoan => {
            (prod, extra_futex) = pools::live::consume(cell, cmd, &args, &mut win);
        }
        Transport::SegpoolV1Copy | Transport::SegpoolV1Loan => {
            (prod, extra_futex) = pools::v1::consume(cell, cmd, &args, &mut win);
        }
        Transport::Pipe => {
            cmd.args(&args).stdout(Stdio::piped());
            let mut peer = Peer::spawn(cmd);
            let out = peer.take_stdout();
            consume_stream(out, &mut peer, &mut win);
            prod = peer.recv_numbers();
            peer.finish();
        }
        Transport::Uds => {
            let (ours, theirs) = UnixStream::pair().expect("socketpair");
            cmd.args(&args)
                .stdout(Stdio::from(std::os::fd::OwnedFd::from(theirs)));
            // Spawning consumes `cmd`, closing our copy of the child's end.
            let mut peer = Peer::spawn(cmd);
            consume_stream(ours, &mut peer, &mut win);
            prod = peer.recv_numbers();
            peer.finish();
        }
        Transport::IpcChannel => {
            let (server, name) =
                IpcOneShotServer::<Option<IpcSharedMemory>>::new().expect("ipc server");
            args.push(name);
            cmd.args(&args);
            let mut peer = Peer::spawn(cmd);
            let (rx, _hello) = server.accept().expect("ipc accept");
            go(&mut peer);
            while let Some(shm) = rx.recv().expect("ipc recv") {
                win.unit(&shm);
            }
            prod = peer.recv_numbers();
            peer.finish();
        }
        Transport::Iceoryx2 => {
            let node = NodeBuilder::new()
                .create::<ipc::Service>()
                .expect("iceoryx2 node");
            let service = ice_service(&node, tag, cell.depth)
                .create()
                .expect("iceoryx2 service");
            let sub = service.subscriber_builder().create().expect("subscriber");
            cmd.args(&args);
            let mut peer = Peer::spawn(cmd);
            crate::latency::ice_connect(&mut peer, &sub);
            loop {
                match sub.receive().expect("iceoryx2 receive") {
                    Some(s) if s.payload().len() < END => break,
                    Some(s) => win.unit(s.payload()),
                    None => std::hint::spin_loop(),
                }
            }
            prod = peer.recv_numbers();
            peer.finish();
        }
        Transport::Memcpy | Transport::MemcpyRotate => unreachable!(),
    }
    let (units, secs, cons_cpu) = win.finish();
    assert_eq!(units, prod[0] as u64, "producer and consumer disagree");
    Sample {
        units,
        secs,
        prod_cpu: prod[1],
        cons_cpu,
        futex: extra_futex,
    }
}

pub(crate) fn go(peer: &mut Peer) {
    assert_eq!(peer.recv(), "ready");
    peer.send("go");
}

fn consume_stream(stream: impl Read, peer: &mut Peer, win: &mut Window) {
    go(peer);
    let mut r = BufReader::with_capacity(256 << 10, stream);
    let mut buf = Vec::new();
    loop {
        let mut len = [0u8; 8];
        r.read_exact(&mut len).expect("read length");
        let len = u64::from_le_bytes(len) as usize;
        if len < END {
            break;
        }
        buf.resize(len, 0);
        r.read_exact(&mut buf).expect("read payload");
        win.unit(&buf);
    }
}

/// An iceoryx2 publish-subscribe service named `segpool-bench/{name}` with
/// the settings every cell shares: a subscriber buffer of `depth` samples,
/// no history, no overflow (the publisher waits), one publisher and one
/// subscriber.
pub(crate) fn ice_builder(
    node: &Node<ipc::Service>,
    name: &str,
    depth: usize,
) -> iceoryx2::service::builder::publish_subscribe::Builder<[u8], (), ipc::Service> {
    let name: ServiceName = format!("segpool-bench/{name}")
        .as_str()
        .try_into()
        .expect("service name");
    node.service_builder(&name)
        .publish_subscribe::<[u8]>()
        .subscriber_max_buffer_size(depth)
        .history_size(0)
        .enable_safe_overflow(false)
        .max_publishers(1)
        .max_subscribers(1)
}

/// The iceoryx2 service both sides of a throughput cell must agree on.
fn ice_service(
    node: &Node<ipc::Service>,
    tag: &str,
    depth: usize,
) -> iceoryx2::service::builder::publish_subscribe::Builder<[u8], (), ipc::Service> {
    ice_builder(node, tag, depth).subscriber_max_borrowed_samples(2)
}

/// Runs `copy(n)` (n units) in bursts of `per_burst` units for the cell's
/// duration, after `warm` units; the fastest burst counts (the limit, not
/// the machine's noise).
fn fastest_burst(cell: &Cell, warm: u64, per_burst: u64, mut copy: impl FnMut(u64)) -> Sample {
    copy(warm);
    let (t0, c0) = (Instant::now(), cpu_self());
    let mut best = f64::MAX;
    let mut units = 0u64;
    while t0.elapsed() < cell.duration || units == 0 {
        let t = Instant::now();
        copy(per_burst);
        best = best.min(t.elapsed().as_secs_f64());
        units += per_burst;
    }
    let cpu = (cpu_self() - c0).as_secs_f64();
    Sample {
        units: per_burst,
        secs: best,
        prod_cpu: cpu * per_burst as f64 / units as f64,
        cons_cpu: 0.0,
        futex: (0, 0),
    }
}

/// Units per burst: about 2 MiB of payload, times 16.
fn per_burst(size: usize) -> u64 {
    ((2 << 20) / size).max(1) as u64 * 16
}

/// A source buffer as the producer of segpool-copy sees it: on the heap, 16
/// bytes past a page boundary, filled. (Source and destination at the same
/// page offset would hit the 4 KiB store-to-load aliasing penalty, which is
/// the allocator's doing, not the memory's.) Returns the buffer and the
/// payload's offset in it.
fn source(size: usize) -> (Vec<u8>, usize) {
    let mut buf = vec![0u8; size + 8192];
    let off = (4096 - buf.as_ptr() as usize % 4096) % 4096 + 16;
    for (i, b) in buf[off..off + size].iter_mut().enumerate() {
        *b = i as u8;
    }
    (buf, off)
}

/// The memcpy limit: copy the payload from one buffer into one hot,
/// page-aligned destination, one thread, in ~2 ms bursts.
fn memcpy(cell: &Cell) -> Sample {
    let (src_buf, so) = source(cell.size);
    let src = &src_buf[so..so + cell.size];
    let mut dst_buf = vec![0u8; cell.size + 8192];
    let d_o = (4096 - dst_buf.as_ptr() as usize % 4096) % 4096;
    let dst = &mut dst_buf[d_o..d_o + cell.size];
    let n = per_burst(cell.size);
    fastest_burst(cell, n.min(64), n, |k| {
        for _ in 0..k {
            dst.copy_from_slice(black_box(src));
            black_box(&mut *dst);
        }
    })
}

/// The copy-in limit: the same copy, but unit `i` goes to destination
/// `i % depth` of a `MAP_SHARED` memfd mapping with a pool's footprint
/// (`depth` page-aligned slots of the payload rounded up to a page), every
/// page faulted in beforehand. This is what a producer copying into a
/// pool's rotating segments could reach with a protocol that cost nothing:
/// once `depth * size` outgrows the caches, every unit is written to memory
/// no cache holds, which the hot-buffer `memcpy` never is.
fn memcpy_rotate(cell: &Cell) -> Sample {
    use rustix::mm::{MapFlags, ProtFlags};
    let (src_buf, so) = source(cell.size);
    let src = &src_buf[so..so + cell.size];
    let count = cell.depth;
    let stride = cell.size.next_multiple_of(rustix::param::page_size());
    let len = count * stride;
    let fd = rustix::fs::memfd_create("segpool-bench-memcpy", rustix::fs::MemfdFlags::CLOEXEC)
        .expect("memfd_create");
    rustix::fs::ftruncate(&fd, len as u64).expect("ftruncate");
    // SAFETY: a new shared mapping of a memfd only this process holds, at an
    // address the kernel picks: it aliases no Rust object. It is unmapped at
    // the end of this function, after the last use of `dst`.
    let base = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            len,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::SHARED | MapFlags::POPULATE,
            &fd,
            0,
        )
    }
    .expect("mmap");
    // SAFETY: `base` is a readable, writable mapping of `len` bytes (above),
    // zero-filled by the kernel, and nothing else refers to it while `dst`
    // lives.
    let dst = unsafe { std::slice::from_raw_parts_mut(base.cast::<u8>(), len) };
    // Fault every page in for writing, as a pool's creator does when it
    // touches its segments (MAP_POPULATE alone may map them read-only).
    for page in dst.chunks_mut(rustix::param::page_size()) {
        page[0] = 1;
    }
    let mut i = 0usize;
    let n = per_burst(cell.size).next_multiple_of(count as u64);
    let s = fastest_burst(cell, count as u64, n, |k| {
        for _ in 0..k {
            let d = &mut dst[i * stride..i * stride + cell.size];
            d.copy_from_slice(black_box(src));
            black_box(&mut *d);
            i = (i + 1) % count;
        }
    });
    // SAFETY: `base`/`len` are the mapping made above, and `dst`, the only
    // view of it, is not used after this point.
    unsafe { rustix::mm::munmap(base, len) }.expect("munmap");
    s
}

// ----- child side --------------------------------------------------------------

/// The producer child: `tp <transport> <size> <depth> <dur_us> <max> <warmup> <tag> [ipc]`.
pub fn child(args: &[String]) {
    let t = Transport::parse(&args[0]);
    let size: usize = args[1].parse().unwrap();
    let depth: usize = args[2].parse().unwrap();
    let duration = Duration::from_micros(args[3].parse().unwrap());
    let max_units: u64 = args[4].parse().unwrap();
    let warmup: u64 = args[5].parse().unwrap();
    let tag = &args[6];
    let mut parent = Parent::new();
    let src: Vec<u8> = (0..size).map(|i| (i * 7) as u8).collect();
    // The futex counter of the crate this cell drives (zero for the others).
    let futex_calls = match t {
        Transport::SegpoolV1Copy | Transport::SegpoolV1Loan => pools::v1::futex_calls,
        _ => pools::live::futex_calls,
    };
    // Producer loop shared by every transport: `send(seq, end)` moves one unit.
    let mut stream = |send: &mut dyn FnMut(u64, bool)| {
        parent.send("ready");
        assert_eq!(parent.recv(), "go");
        for seq in 0..warmup {
            send(seq, false);
        }
        let (t0, c0) = (Instant::now(), cpu_self());
        let f0 = futex_calls();
        let mut n = 0u64;
        loop {
            let done = if max_units > 0 {
                n >= max_units
            } else {
                n > 0 && n.is_multiple_of(64) && t0.elapsed() >= duration
            };
            if done {
                break;
            }
            send(warmup + n, false);
            n += 1;
        }
        let cpu = (cpu_self() - c0).as_secs_f64();
        let f = futex_calls();
        send(0, true);
        parent.send(&format!("{n} {cpu} {} {}", f.0 - f0.0, f.1 - f0.1));
        // Stay until the parent is done: some transports drop what is still
        // queued when the sender goes away.
        parent.wait_eof();
    };
    match t {
        Transport::SegpoolCopy | Transport::SegpoolLoan => {
            pools::live::produce(t.is_loan(), size, &src, &mut stream);
        }
        Transport::SegpoolV1Copy | Transport::SegpoolV1Loan => {
            pools::v1::produce(t.is_loan(), size, &src, &mut stream);
        }
        Transport::Pipe | Transport::Uds => {
            let fd = std::io::stdout().as_fd().try_clone_to_owned().expect("dup");
            let mut out = File::from(fd);
            let mut framed = (size as u64).to_le_bytes().to_vec();
            framed.extend_from_slice(&src);
            stream(&mut |_, end| {
                if end {
                    out.write_all(&0u64.to_le_bytes()).expect("write end");
                } else {
                    out.write_all(&framed).expect("write unit");
                }
            });
        }
        Transport::IpcChannel => {
            let tx = IpcSender::<Option<IpcSharedMemory>>::connect(args[7].clone())
                .expect("ipc connect");
            tx.send(None).expect("ipc hello");
            stream(&mut |_, end| {
                let msg = (!end).then(|| IpcSharedMemory::from_bytes(&src));
                tx.send(msg).expect("ipc send");
            });
        }
        Transport::Iceoryx2 => {
            let node = NodeBuilder::new()
                .create::<ipc::Service>()
                .expect("iceoryx2 node");
            let service = ice_service(&node, tag, depth).open().expect("open service");
            let publisher = service
                .publisher_builder()
                .initial_max_slice_len(size)
                .max_loaned_samples(1)
                .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
                .create()
                .expect("publisher");
            stream(&mut |seq, end| {
                let len = if end { 8 } else { size };
                let mut s = publisher.loan_slice_uninit(len).expect("loan");
                for (d, b) in s.payload_mut()[..8].iter_mut().zip(seq.to_le_bytes()) {
                    d.write(b);
                }
                // SAFETY: the sample lives in a shared-memory data segment
                // that the kernel zero-filled when it was created and that
                // only ever holds bytes written by us: every byte of the
                // slice is an initialized u8 (old payload or zero).
                let s = unsafe { s.assume_init() };
                s.send().expect("send");
            });
        }
        Transport::Memcpy | Transport::MemcpyRotate => unreachable!(),
    }
}
