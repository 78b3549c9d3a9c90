//! What the test binary does when it runs as a worker (or as an
//! intermediate parent): one role per `SEGPOOL_TEST_ROLE` value.

use super::payload::{HEADER, body_len, fill};
use segpool::subprocess::{self, Workers};
use segpool::{Error, SegmentPool};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::process::{Command, Stdio};
use std::time::Duration;

/// The variable that names the role.
pub const ROLE: &str = "SEGPOOL_TEST_ROLE";
/// Exit status of a worker that saw `Error::PeerGone` for its parent.
pub const EXIT_PARENT_GONE: i32 = 42;

/// Acts out `role`.
pub fn act(role: &str) -> segpool::Result<()> {
    let mut words = role.split(':');
    let kind = words.next().unwrap_or_default();
    let mut num = || -> usize { words.next().and_then(|w| w.parse().ok()).unwrap_or(0) };
    match kind {
        // produce:<units per pass>:<max body bytes>: serve passes until teardown,
        // writing after each commit the count committed so far into slot
        // `index` of the file named by SEGPOOL_TEST_LOG (if set).
        "produce" => {
            let (units, max_body) = (num() as u64, num());
            let w = subprocess::worker()?;
            let log = std::env::var("SEGPOOL_TEST_LOG")
                .ok()
                .map(|p| File::options().write(true).open(p).expect("open log"));
            while w.next_pass()? {
                let g = w.generation().expect("serving a pass");
                for seq in 0..units {
                    let body = body_len(w.index(), g, seq, max_body);
                    let mut unit = match w.begin_unit() {
                        Err(Error::Stale) => break,
                        r => r?,
                    };
                    let (_, buf) = unit.reserve(HEADER + body)?;
                    fill(buf, w.index() as u32, g, seq);
                    match unit.commit_unit() {
                        Err(Error::Stale) => break,
                        r => r?,
                    };
                    if let Some(log) = &log {
                        log.write_at(&(seq + 1).to_le_bytes(), 8 * w.index() as u64)
                            .expect("log");
                    }
                }
            }
            Ok(())
        }
        // forever:<body bytes>:<pdeathsig>: write units until an error; with
        // pdeathsig=1, ask to be SIGKILLed when the parent dies.
        "forever" => {
            let (body, pdeathsig) = (num(), num() == 1);
            let w = subprocess::worker()?;
            if pdeathsig {
                w.exit_with_parent()?;
            }
            for seq in 0.. {
                let mut unit = w.begin_unit()?;
                let g = w.generation().expect("serving a pass");
                let (_, buf) = unit.reserve(HEADER + body)?;
                fill(buf, w.index() as u32, g, seq);
                unit.commit_unit()?;
            }
            Ok(())
        }
        // crash:<units>:<others>: worker 0 commits `units` units, writes half
        // of one more and SIGKILLs itself; the others produce `others` units
        // per pass like `produce`.
        "crash" => {
            let (units, others) = (num() as u64, num() as u64);
            let w = subprocess::worker()?;
            while w.next_pass()? {
                let g = w.generation().expect("serving a pass");
                let n = if w.index() == 0 { units } else { others };
                for seq in 0..n {
                    let mut unit = w.begin_unit()?;
                    fill(unit.reserve(HEADER + 256)?.1, w.index() as u32, g, seq);
                    unit.commit_unit()?;
                }
                if w.index() == 0 {
                    let mut unit = w.begin_unit()?;
                    unit.write_binary(&[7; 100])?;
                    let me = rustix::process::getpid();
                    rustix::process::kill_process(me, rustix::process::Signal::KILL)
                        .expect("kill self");
                    unreachable!("SIGKILL is delivered before kill returns");
                }
            }
            Ok(())
        }
        // blast:<units>:<bytes>: per pass, `units` units of `bytes` bytes
        // through the loan API, body left as is (measures the transport).
        "blast" => {
            let (units, bytes) = (num(), num());
            let w = subprocess::worker()?;
            while w.next_pass()? {
                for _ in 0..units {
                    let mut unit = w.begin_unit()?;
                    unit.reserve(bytes)?.1[0] = 1;
                    unit.commit_unit()?;
                }
            }
            Ok(())
        }
        // fds: send one unit listing the inherited fds (socket, memfd) that
        // are not close-on-exec after `worker()`.
        "fds" => {
            let w = subprocess::worker()?;
            let mut open = Vec::new();
            for var in ["SEGPOOL_WORKER", "SEGPOOL_HANDLE"] {
                let value = std::env::var(var).unwrap();
                let key = if var == "SEGPOOL_WORKER" {
                    "ctl="
                } else {
                    "fd="
                };
                let n = value.split(' ').find_map(|w| w.strip_prefix(key)).unwrap();
                let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{n}")).unwrap();
                let flags = info.lines().find_map(|l| l.strip_prefix("flags:")).unwrap();
                let flags = u32::from_str_radix(flags.trim(), 8).unwrap();
                if flags & 0o2000000 == 0 {
                    open.push(format!("{var} fd {n}"));
                }
            }
            w.send(open.join(", ").as_bytes())?;
            Ok(())
        }
        // mid:<named>:<pdeathsig>: a parent with one `forever` worker and no consumer.
        // Prints "worker <pid> <pool name or ->", then "blocked" once the
        // worker waits on the full pool, then waits to be killed.
        "mid" => {
            let (named, pdeathsig) = (num() == 1, num());
            let pool = SegmentPool::builder(4096, 2).named(named).build()?;
            let name = pool.name().unwrap_or("-").to_owned();
            let mut workers =
                Workers::spawn(pool, child_cmd(&format!("forever:1000:{pdeathsig}")), 1)?;
            println!("worker {} {name}", workers.pids()[0]);
            workers.pass()?;
            while workers.pool().stats().waiting_producers == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
            println!("blocked");
            loop {
                std::thread::park();
            }
        }
        _ => panic!("unknown role {role:?}"),
    }
}

/// The command that starts this test binary as a worker acting `role`.
pub fn child_cmd(role: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("test binary path"));
    cmd.args([
        "--exact",
        "child",
        "--nocapture",
        "--test-threads=1",
        "--quiet",
    ])
    .env(ROLE, role)
    .stdin(Stdio::null());
    cmd
}
