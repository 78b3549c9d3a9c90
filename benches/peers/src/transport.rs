//! The transports a throughput cell can run over: their names and kinds.
//! Imports nothing of the harness.

/// A pinned old version of segpool (`benches/pinned.sh` maps each name to
/// its commit and builds it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pin {
    /// Protocol v1, before the v2 rewrite.
    V1,
    /// Protocol v2, before liveness v3.
    V2,
    /// Liveness v3, before issue 17's fast path.
    V3,
}

pub const PINS: [Pin; 3] = [Pin::V1, Pin::V2, Pin::V3];

impl Pin {
    /// The name `benches/pinned.sh` knows it by.
    pub fn name(self) -> &'static str {
        match self {
            Pin::V1 => "v1",
            Pin::V2 => "v2",
            Pin::V3 => "v3",
        }
    }

    pub fn parse(s: &str) -> Pin {
        *PINS
            .iter()
            .find(|p| p.name() == s)
            .unwrap_or_else(|| panic!("pinned versions are v1, v2, v3, not {s}"))
    }
}

/// A way to move units from one process to another (or a memcpy limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// segpool, `write_binary` (copy in, the SPDL usage).
    SegpoolCopy,
    /// The same on a pinned old version (its own runner process).
    PinnedCopy(Pin),
    /// segpool, `reserve` (write in place: 8 bytes of header, no copy).
    SegpoolLoan,
    /// The same on a pinned old version.
    PinnedLoan(Pin),
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

/// Every transport, in table order.
pub const ALL: [Transport; 14] = [
    Transport::SegpoolCopy,
    Transport::PinnedCopy(Pin::V1),
    Transport::PinnedCopy(Pin::V2),
    Transport::PinnedCopy(Pin::V3),
    Transport::SegpoolLoan,
    Transport::PinnedLoan(Pin::V1),
    Transport::PinnedLoan(Pin::V2),
    Transport::PinnedLoan(Pin::V3),
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
            Transport::PinnedCopy(Pin::V1) => "segpool-v1-copy",
            Transport::PinnedCopy(Pin::V2) => "segpool-v2-copy",
            Transport::PinnedCopy(Pin::V3) => "segpool-v3-copy",
            Transport::SegpoolLoan => "segpool-loan",
            Transport::PinnedLoan(Pin::V1) => "segpool-v1-loan",
            Transport::PinnedLoan(Pin::V2) => "segpool-v2-loan",
            Transport::PinnedLoan(Pin::V3) => "segpool-v3-loan",
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
            Transport::SegpoolLoan | Transport::PinnedLoan(_) | Transport::Iceoryx2
        )
    }

    /// Whether this is one of the in-process memcpy limits.
    pub fn is_memcpy(self) -> bool {
        matches!(self, Transport::Memcpy | Transport::MemcpyRotate)
    }

    /// The pinned version this transport runs, if any.
    pub fn pin(self) -> Option<Pin> {
        match self {
            Transport::PinnedCopy(p) | Transport::PinnedLoan(p) => Some(p),
            _ => None,
        }
    }
}
