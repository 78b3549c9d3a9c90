//! What the test binary does when it runs as a worker (or as an
//! intermediate parent): one role per `SEGPOOL_TEST_ROLE` value.

use super::payload::{HEADER, body_len, fill};
use segpool::subprocess::{self, Workers};
use segpool::{Error, SegmentPool};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
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
            // Read before `worker()`, which may take them out of the environment.
            let vars = ["SEGPOOL_WORKER", "SEGPOOL_HANDLE"].map(|v| (v, std::env::var(v).unwrap()));
            let w = subprocess::worker()?;
            let mut open = Vec::new();
            for (var, value) in vars {
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
        // flood:<units>:<bytes>: like `produce` (one pass of `units` units of
        // up to 256 bytes), but worker 0 also writes `bytes` bytes of junk
        // control messages to its socket during the pass (from a second
        // thread, done before its `D`), as fast as the parent reads them.
        "flood" => {
            let (units, flood) = (num() as u64, num());
            let ctl = ctl_fd(&std::env::var("SEGPOOL_WORKER").expect("SEGPOOL_WORKER"));
            let w = subprocess::worker()?;
            while w.next_pass()? {
                let flooder = (w.index() == 0).then(|| {
                    // SAFETY: fd `ctl` is the control socket `w` owns and keeps
                    // open for this borrow, which lasts one dup.
                    let fd = unsafe { rustix::fd::BorrowedFd::borrow_raw(ctl) };
                    let mut sock = File::from(rustix::io::fcntl_dupfd_cloexec(fd, 0).expect("dup"));
                    std::thread::spawn(move || {
                        // A tag the parent does not know: costs reading, changes nothing.
                        let junk = [b'X'; 1024 * 5];
                        let mut left = flood - flood % 5;
                        while left > 0 {
                            let n = left.min(junk.len());
                            if sock.write_all(&junk[..n]).is_err() {
                                return; // the parent closed its end
                            }
                            left -= n;
                        }
                    })
                });
                let g = w.generation().expect("serving a pass");
                for seq in 0..units {
                    let body = body_len(w.index(), g, seq, 256);
                    let mut unit = w.begin_unit()?;
                    fill(unit.reserve(HEADER + body)?.1, w.index() as u32, g, seq);
                    unit.commit_unit()?;
                }
                // Its `D` must not land in the middle of a junk write.
                if let Some(f) = flooder {
                    f.join().expect("flooder");
                }
            }
            Ok(())
        }
        // reexec:<mode>: open the worker, close it, and run a program that
        // holds a socket of its own under the control fd's number and calls
        // `worker()` (role `adopt`): mode 0 execs it in this process's place
        // with the environment as `worker()` left it, mode 1 the same but
        // handing it both variables as they were, mode 2 starts it as a child.
        "reexec" => {
            let mode = num();
            let vars = ["SEGPOOL_WORKER", "SEGPOOL_HANDLE"].map(|v| (v, std::env::var(v).unwrap()));
            let n = ctl_fd(&vars[0].1);
            let w = subprocess::worker()?;
            drop(w); // closes fd n: free for whatever the program opens next
            let mut cmd = child_cmd(&format!("adopt:{n}"));
            if mode == 1 {
                cmd.envs(vars);
            }
            if mode == 2 {
                let status = cmd.status().expect("start the grandchild");
                assert!(status.success(), "grandchild: {status}");
                return Ok(());
            }
            let e = std::os::unix::process::CommandExt::exec(&mut cmd);
            panic!("exec: {e}");
        }
        // adopt:<n>: put a socket of this process's own under fd n, call
        // `worker()`, and write to SEGPOOL_TEST_LOG what became of it:
        // "refused: <why>" (BadHandle, fd n untouched), "adopted", or "other: ...".
        "adopt" => {
            let n: RawFd = num() as RawFd;
            let (a, b) = UnixStream::pair().expect("socketpair");
            let fd = rustix::io::fcntl_dupfd_cloexec(&a, n).expect("dup");
            let link = || std::fs::read_link(format!("/proc/self/fd/{n}")).ok();
            let verdict = if fd.as_raw_fd() != n {
                format!("setup: fd {n} was taken")
            } else {
                let before = link();
                let r = subprocess::worker();
                let after = link();
                match r {
                    Ok(_) => "adopted".to_owned(),
                    Err(Error::BadHandle(why)) if after == before => format!("refused: {why}"),
                    Err(e) => format!("other: {e} (fd {n}: {before:?} -> {after:?})"),
                }
            };
            std::fs::write(std::env::var("SEGPOOL_TEST_LOG").expect("log"), verdict).expect("log");
            // fd n may have been closed under us: do not close it again.
            std::mem::forget((a, b, fd));
            Ok(())
        }
        // forked: fork a single-threaded copy of this process that calls
        // `worker()` and reports whether both variables left its
        // environment; write "cleared" or "kept" to SEGPOOL_TEST_LOG, then
        // serve as a worker (this process's own environment is untouched).
        "forked" => {
            // SAFETY: the child runs only this test's code: one `worker()`
            // call (which fails: its parent is not the `Workers`), two
            // environment reads, `_exit`. This process's other thread is
            // libtest's main thread, blocked on a channel, holding no lock the
            // child needs; glibc makes `malloc` usable in a forked child.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0, "fork failed");
            if pid == 0 {
                let _ = subprocess::worker();
                let gone = std::env::var_os("SEGPOOL_WORKER").is_none()
                    && std::env::var_os("SEGPOOL_HANDLE").is_none();
                // SAFETY: ends the forked child at once, running nothing of
                // the parent's (no atexit handlers, no unwinding).
                unsafe { libc::_exit(if gone { 0 } else { 1 }) };
            }
            let mut status = 0;
            // SAFETY: waits for the child just forked; `status` outlives the call.
            let r = unsafe { libc::waitpid(pid, &mut status, 0) };
            assert_eq!(r, pid, "waitpid");
            let verdict = match (libc::WIFEXITED(status), libc::WEXITSTATUS(status)) {
                (true, 0) => "cleared".to_owned(),
                (true, 1) => "kept".to_owned(),
                _ => format!("child ended with status {status:#x}"),
            };
            std::fs::write(std::env::var("SEGPOOL_TEST_LOG").expect("log"), verdict).expect("log");
            let w = subprocess::worker()?;
            w.send(b"served")?;
            Ok(())
        }
        _ => panic!("unknown role {role:?}"),
    }
}

/// The control socket's fd number in a `SEGPOOL_WORKER` value.
fn ctl_fd(value: &str) -> RawFd {
    value
        .split(' ')
        .find_map(|w| w.strip_prefix("ctl="))
        .and_then(|n| n.parse().ok())
        .expect("ctl= in SEGPOOL_WORKER")
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
