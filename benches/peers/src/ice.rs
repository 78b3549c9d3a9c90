//! iceoryx2 set-up shared by the throughput and latency cells: the
//! publish-subscribe service every cell configures alike, the subscriber's
//! connection hand-shake, and one sample sent.

use crate::proc::Peer;
use iceoryx2::prelude::*;

pub type Builder = iceoryx2::service::builder::publish_subscribe::Builder<[u8], (), ipc::Service>;
pub type Publisher = iceoryx2::port::publisher::Publisher<ipc::Service, [u8], ()>;
pub type Subscriber = iceoryx2::port::subscriber::Subscriber<ipc::Service, [u8], ()>;

/// A new iceoryx2 node of this process.
pub fn node() -> Node<ipc::Service> {
    NodeBuilder::new()
        .create::<ipc::Service>()
        .expect("iceoryx2 node")
}

/// An iceoryx2 publish-subscribe service named `segpool-bench/{name}` with
/// the settings every cell shares: a subscriber buffer of `depth` samples,
/// no history, no overflow (the publisher waits), one publisher and one
/// subscriber.
pub fn builder(node: &Node<ipc::Service>, name: &str, depth: usize) -> Builder {
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

/// Waits for the child's publisher, lets the subscriber connect to it (a
/// sample sent before that can be lost), then tells the child to go.
pub fn connect(peer: &mut Peer, sub: &Subscriber) {
    assert_eq!(peer.recv(), "ready");
    sub.has_samples().expect("subscriber connects");
    peer.send("go");
}

/// Sends one sample of `len` bytes, every byte written.
pub fn send(p: &Publisher, len: usize) {
    let mut s = p.loan_slice_uninit(len).expect("loan");
    for b in s.payload_mut() {
        b.write(7);
    }
    // SAFETY: every byte of the payload was written just above.
    let s = unsafe { s.assume_init() };
    s.send().expect("send");
}
