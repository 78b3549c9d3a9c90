//! Two-process plumbing: the parent re-executes this binary as the child
//! (`transport child <role> <args..>`), talks to it over a line protocol on
//! the child's stdin (parent -> child) and stderr (child -> parent), and
//! reads CPU time with `getrusage`.
//!
//! Control lines from the child start with `@`; any other stderr line is the
//! child's own diagnostics and is echoed.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStderr, ChildStdin, Command, Stdio};
use std::time::Duration;

/// User + system CPU time of this process (`getrusage(RUSAGE_SELF)`).
pub fn cpu_self() -> Duration {
    let mut ru = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `ru` is a valid, writable rusage; getrusage fills it and
    // cannot fail for RUSAGE_SELF with a valid pointer.
    let ru = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, ru.as_mut_ptr());
        ru.assume_init()
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// `CLOCK_MONOTONIC` in nanoseconds: comparable across processes.
pub fn mono_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// A running child and its control channel.
pub struct Peer {
    child: Child,
    to: ChildStdin,
    from: BufReader<ChildStderr>,
}

/// A command that runs `exe` with `args` as a [`Peer`] (control channel
/// on its stdin and stderr).
pub fn peer_command(exe: &Path, args: &[String]) -> Command {
    let mut cmd = Command::new(exe);
    cmd.args(args);
    cmd.stdin(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

/// A command that re-executes this binary as a child in `role`.
pub fn child_command(role: &str, args: &[String]) -> Command {
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = peer_command(&exe, &["child".to_string(), role.to_string()]);
    cmd.args(args);
    cmd
}

impl Peer {
    /// Spawns `cmd` (from [`child_command`], maybe further configured).
    pub fn spawn(mut cmd: Command) -> Peer {
        let mut child = cmd.spawn().expect("spawn child");
        let to = child.stdin.take().expect("piped stdin");
        let from = BufReader::new(child.stderr.take().expect("piped stderr"));
        Peer { child, to, from }
    }

    /// The child's stdout, if it was piped.
    pub fn take_stdout(&mut self) -> std::process::ChildStdout {
        self.child.stdout.take().expect("piped stdout")
    }

    /// Sends one control line.
    pub fn send(&mut self, line: &str) {
        writeln!(self.to, "{line}").expect("write to child");
        self.to.flush().expect("flush to child");
    }

    /// Waits for the next control line (without its `@`), echoing others.
    pub fn recv(&mut self) -> String {
        loop {
            let mut line = String::new();
            let n = self.from.read_line(&mut line).expect("read from child");
            if n == 0 {
                let status = self.child.wait().expect("wait child");
                panic!("child exited ({status}) before answering");
            }
            match line.trim_end().strip_prefix('@') {
                Some(msg) => return msg.to_string(),
                None => eprint!("  [child] {line}"),
            }
        }
    }

    /// Waits for a control line and parses its whitespace-separated numbers.
    pub fn recv_numbers(&mut self) -> Vec<f64> {
        let line = self.recv();
        line.split_whitespace()
            .map(|w| {
                w.parse()
                    .unwrap_or_else(|_| panic!("bad child line {line:?}"))
            })
            .collect()
    }

    /// Waits for the child to exit.
    pub fn finish(mut self) {
        drop(self.to);
        let status = self.child.wait().expect("wait child");
        assert!(status.success(), "child failed: {status}");
    }
}

/// The child's end of the control channel.
pub struct Parent {
    lines: std::io::Lines<std::io::StdinLock<'static>>,
}

impl Parent {
    pub fn new() -> Parent {
        Parent {
            lines: std::io::stdin().lock().lines(),
        }
    }

    /// Sends one control line to the parent.
    pub fn send(&self, line: &str) {
        eprintln!("@{line}");
    }

    /// Waits until the parent closes the control channel.
    pub fn wait_eof(&mut self) {
        for _ in self.lines.by_ref() {}
    }

    /// Waits for the parent's next line.
    pub fn recv(&mut self) -> String {
        self.lines
            .next()
            .expect("parent closed the control channel")
            .expect("read control line")
    }
}
