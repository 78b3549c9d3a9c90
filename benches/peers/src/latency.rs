//! Latency: 64 B ping-pong between two processes, segpool against
//! iceoryx2.

use crate::ice;
use crate::proc::{Parent, Peer, child_command};
use crate::stats::{Percentiles, percentiles};
use iceoryx2::prelude::*;
use segpool::{PoolHandle, SegmentPool};
use std::time::Instant;

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

/// Percentiles of the one-way latency (round trip / 2) of `iters` 64 B
/// ping-pongs, in ns.
pub fn ping_pong(kind: PingPong, iters: usize, tag: &str) -> Percentiles {
    percentiles(ping_pong_samples(kind, iters, tag))
}

/// One-way latency (round trip / 2) of each of `iters` 64 B ping-pongs,
/// after a warm-up, in ns.
pub fn ping_pong_samples(kind: PingPong, iters: usize, tag: &str) -> Vec<f64> {
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
            let node = ice::node();
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
                ice::send(&publ, PING);
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
            ice::send(&publ, 8);
            peer.finish();
        }
    }
    rtts
}

fn ice_pp(node: &Node<ipc::Service>, tag: &str) -> ice::Builder {
    ice::builder(node, tag, 2)
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
            let node = ice::node();
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
                        ice::send(&publ, PING);
                    }
                    None => std::hint::spin_loop(),
                }
            }
        }
    }
}
