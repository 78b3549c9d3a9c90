//! The runner of a pinned old version: `benches/pinned.sh` checks the crate
//! out at a pinned commit (from this clone's history) and builds this file
//! against it, as the binary `pinned-<name>`. `transport` launches it for
//! the old version's rows; `benches/callgrind.sh` counts its `oneloop`.
//!
//! It compiles the harness's own `cell`, `pools` and `proc` files, so the
//! old crate is driven by the same text as the live one.
//!
//! ```text
//! pinned-<name> cell <copy|loan> <cell args>    one cross-process cell; prints the sample
//! pinned-<name> two-threads <units> <size> <depth> <warmup>    ns per unit
//! pinned-<name> oneloop <units> [size]          one-thread loop, for callgrind
//! ```

#![allow(dead_code)] // the shared files hold more than the runner uses

#[path = "../src/cell.rs"]
mod cell;
#[path = "../src/pools.rs"]
mod pools;
#[path = "../src/proc.rs"]
mod proc;

/// Segments of the callgrind loop (as `transport oneloop`).
const ONELOOP_DEPTH: usize = 64;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize| -> u64 {
        args.get(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("argument {i}: a number expected, in {args:?}"))
    };
    match args.first().map(String::as_str) {
        Some("cell") => {
            // Consumer: the producer is this binary again (`child ...`).
            let c = cell::Cell::from_args(&args[2..2 + cell::Cell::ARGS]);
            let mut cmd = proc::child_command("tp", &[]);
            cmd.arg(&args[1]).args(c.args());
            let s = pools::consume(&c, cmd);
            proc::Parent::new().send(&s.line());
        }
        Some("child") => {
            // `child tp <copy|loan> <cell args>`
            let c = cell::Cell::from_args(&args[3..3 + cell::Cell::ARGS]);
            pools::produce(&c, args[2] == "loan");
        }
        Some("two-threads") => {
            let ns = pools::two_threads(num(1), num(2) as usize, num(3) as usize, num(4));
            proc::Parent::new().send(&ns.to_string());
        }
        Some("oneloop") => {
            let size = args.get(2).map_or(64, |_| num(2) as usize);
            pools::one_loop(num(1), size, ONELOOP_DEPTH);
        }
        _ => {
            eprintln!(
                "usage: {{cell <copy|loan> <cell args> | two-threads <units> <size> <depth> <warmup> | oneloop <units> [size]}}"
            );
            std::process::exit(2);
        }
    }
}
