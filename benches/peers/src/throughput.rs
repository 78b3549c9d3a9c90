//! One-way throughput: a producer child streams units of one size to the
//! consumer parent for a fixed time, over one transport (see `cell` for
//! the timing).

use crate::cell::{Cell, END, Sample, Window, go, payload, stream};
use crate::proc::{Peer, child_command};
use crate::transport::Transport;
use crate::{ice, memcpy, pinned, pools};
use iceoryx2::prelude::*;
use ipc_channel::ipc::{IpcOneShotServer, IpcSender, IpcSharedMemory};
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::process::Stdio;

/// Runs one cell: spawns the producer, consumes, returns the numbers.
/// `tag` names this cell's iceoryx2 service (unique within the run).
pub fn run(transport: Transport, cell: &Cell, tag: &str) -> Sample {
    let mut args = vec![transport.name().to_string()];
    args.extend(cell.args());
    args.push(tag.to_string());
    let mut cmd = child_command("tp", &args);
    let mut win = Window::new(cell);
    let prod: Vec<f64>;
    match transport {
        Transport::Memcpy => return memcpy::memcpy(cell),
        Transport::MemcpyRotate => return memcpy::memcpy_rotate(cell),
        Transport::SegpoolCopy | Transport::SegpoolLoan => return pools::consume(cell, cmd),
        Transport::PinnedCopy(p) => return pinned::run_cell(p, false, cell),
        Transport::PinnedLoan(p) => return pinned::run_cell(p, true, cell),
        Transport::Pipe => {
            cmd.stdout(Stdio::piped());
            let mut peer = Peer::spawn(cmd);
            let out = peer.take_stdout();
            consume_stream(out, &mut peer, &mut win);
            prod = peer.recv_numbers();
            peer.finish();
        }
        Transport::Uds => {
            let (ours, theirs) = UnixStream::pair().expect("socketpair");
            cmd.stdout(Stdio::from(std::os::fd::OwnedFd::from(theirs)));
            // Spawning consumes `cmd`, closing our copy of the child's end.
            let mut peer = Peer::spawn(cmd);
            consume_stream(ours, &mut peer, &mut win);
            prod = peer.recv_numbers();
            peer.finish();
        }
        Transport::IpcChannel => {
            let (server, name) =
                IpcOneShotServer::<Option<IpcSharedMemory>>::new().expect("ipc server");
            cmd.arg(name);
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
            let node = ice::node();
            let service = ice_service(&node, tag, cell.depth)
                .create()
                .expect("iceoryx2 service");
            let sub = service.subscriber_builder().create().expect("subscriber");
            let mut peer = Peer::spawn(cmd);
            ice::connect(&mut peer, &sub);
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
    }
    win.finish(&prod, (0, 0))
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

/// The iceoryx2 service both sides of a throughput cell must agree on.
fn ice_service(node: &Node<ipc::Service>, tag: &str, depth: usize) -> ice::Builder {
    ice::builder(node, tag, depth).subscriber_max_borrowed_samples(2)
}

/// No futex counter: the transports that are not segpool.
fn no_futex() -> (u64, u64) {
    (0, 0)
}

// ----- child side --------------------------------------------------------------

/// The producer child: `tp <transport> <cell args> <tag> [ipc server]`.
pub fn child(args: &[String]) {
    let t = Transport::parse(&args[0]);
    let cell = Cell::from_args(&args[1..1 + Cell::ARGS]);
    let rest = &args[1 + Cell::ARGS..];
    let tag = &rest[0];
    let src = payload(cell.size);
    match t {
        Transport::SegpoolCopy | Transport::SegpoolLoan => pools::produce(&cell, t.is_loan()),
        Transport::Pipe | Transport::Uds => {
            let fd = std::io::stdout().as_fd().try_clone_to_owned().expect("dup");
            let mut out = File::from(fd);
            let mut framed = (cell.size as u64).to_le_bytes().to_vec();
            framed.extend_from_slice(&src);
            stream(&cell, no_futex, &mut |_, end| {
                if end {
                    out.write_all(&0u64.to_le_bytes()).expect("write end");
                } else {
                    out.write_all(&framed).expect("write unit");
                }
            });
        }
        Transport::IpcChannel => {
            let tx = IpcSender::<Option<IpcSharedMemory>>::connect(rest[1].clone())
                .expect("ipc connect");
            tx.send(None).expect("ipc hello");
            stream(&cell, no_futex, &mut |_, end| {
                let msg = (!end).then(|| IpcSharedMemory::from_bytes(&src));
                tx.send(msg).expect("ipc send");
            });
        }
        Transport::Iceoryx2 => {
            let node = ice::node();
            let service = ice_service(&node, tag, cell.depth)
                .open()
                .expect("open service");
            let publisher = service
                .publisher_builder()
                .initial_max_slice_len(cell.size)
                .max_loaned_samples(1)
                .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
                .create()
                .expect("publisher");
            stream(&cell, no_futex, &mut |seq, end| {
                let len = if end { 8 } else { cell.size };
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
        Transport::PinnedCopy(_) | Transport::PinnedLoan(_) => {
            unreachable!("a pinned version's runner spawns its own producer")
        }
        Transport::Memcpy | Transport::MemcpyRotate => unreachable!("memcpy runs in-process"),
    }
}
