//! The pinned old versions: built at run time by `benches/pinned.sh` from
//! this clone's history (no copy of an old crate in the tree), and run as
//! their own processes (`pinned-<name>`, from `pinned/main.rs`), which
//! drive the old crate with the same `cell` and `pools` files as ours.

use crate::cell::{Cell, Sample};
use crate::proc::{Peer, peer_command};
use crate::transport::Pin;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;

/// A built pinned version.
#[derive(Clone, Debug)]
pub struct Built {
    pub pin: Pin,
    /// The commit it was built from.
    pub rev: String,
    pub binary: PathBuf,
}

impl Built {
    /// `v1 (5acaaa0)`.
    pub fn label(&self) -> String {
        format!(
            "{} ({})",
            self.pin.name(),
            &self.rev[..7.min(self.rev.len())]
        )
    }
}

static BUILT: Mutex<Vec<Built>> = Mutex::new(Vec::new());

/// The repository root (the crate under test).
fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Builds (or finds built) the runners of `pins`: `Err` says why not (the
/// script's own message is on stderr), e.g. a shallow clone without the
/// pinned commits.
pub fn build(pins: &[Pin]) -> Result<Vec<Built>, String> {
    let mut built = BUILT.lock().unwrap();
    let missing: Vec<&str> = pins
        .iter()
        .filter(|p| !built.iter().any(|b| b.pin == **p))
        .map(|p| p.name())
        .collect();
    if !missing.is_empty() {
        let out = Command::new("bash")
            .arg(repo().join("benches/pinned.sh"))
            .args(&missing)
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("benches/pinned.sh: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "benches/pinned.sh {} failed ({})",
                missing.join(" "),
                out.status
            ));
        }
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let w: Vec<&str> = line.split_whitespace().collect();
            if let [name, rev, binary] = w[..] {
                built.push(Built {
                    pin: Pin::parse(name),
                    rev: rev.to_string(),
                    binary: PathBuf::from(binary),
                });
            }
        }
    }
    Ok(pins
        .iter()
        .map(|p| {
            built
                .iter()
                .find(|b| b.pin == *p)
                .expect("pinned.sh printed every version asked for")
                .clone()
        })
        .collect())
}

fn binary(pin: Pin) -> PathBuf {
    build(&[pin])
        .unwrap_or_else(|e| panic!("pinned version {}: {e}", pin.name()))
        .remove(0)
        .binary
}

/// One cross-process cell on `pin`: its runner is the consumer and spawns
/// its own producer.
pub fn run_cell(pin: Pin, loan: bool, cell: &Cell) -> Sample {
    let mut args = vec![
        "cell".to_string(),
        (if loan { "loan" } else { "copy" }).to_string(),
    ];
    args.extend(cell.args());
    let mut peer = Peer::spawn(peer_command(&binary(pin), &args));
    let s = Sample::parse(&peer.recv_numbers());
    peer.finish();
    s
}

/// Two threads in the runner's process: ns per unit (see `pools::two_threads`).
pub fn two_threads(pin: Pin, units: u64, size: usize, depth: usize, warmup: u64) -> f64 {
    let args: Vec<String> = [
        "two-threads".to_string(),
        units.to_string(),
        size.to_string(),
        depth.to_string(),
        warmup.to_string(),
    ]
    .to_vec();
    let mut peer = Peer::spawn(peer_command(&binary(pin), &args));
    let ns = peer.recv_numbers()[0];
    peer.finish();
    ns
}
