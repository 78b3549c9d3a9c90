//! The integration tests' harness: a child process that holds a real pool in
//! a known state (the fixture), and a way to run the `segpool` binary with a
//! time limit. Every child is killed, and every name it made is removed from
//! `/dev/shm`, when its guard drops: also when a test fails.
#![allow(dead_code)]

use segpool::{SegmentPool, Unit};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Env var that turns a run of the test binary into a fixture process.
pub const FIXTURE: &str = "SEGPOOL_CLI_FIXTURE";
/// Set (to anything) for a named pool instead of a memfd.
pub const FIXTURE_NAMED: &str = "SEGPOOL_CLI_FIXTURE_NAMED";
/// Segment size of every fixture pool.
pub const SEGMENT: usize = 64 << 10;

/// A fixture process, killed (and its pool's name removed) on drop.
pub struct Fixture {
    child: Child,
    stdin: Option<ChildStdin>,
    /// The child's pid.
    pub pid: u32,
    /// `PID:FD` for a memfd pool, `/segpool-...` for a named one.
    pub target: String,
    /// The shm name, for a named pool.
    pub name: Option<String>,
    /// The pid of the process that attached and died (state `dead`).
    pub dead: Option<u32>,
    /// The child's `DONE ...` answers (see [`ask`](Self::ask)).
    done: Option<mpsc::Receiver<String>>,
}

impl Fixture {
    /// Starts a fixture in `state` (see [`fixture_main`]) and waits until
    /// the pool is in it.
    pub fn start(state: &str, named: bool) -> Fixture {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "--exact",
            "fixture_process",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(FIXTURE, state)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        if named {
            cmd.env(FIXTURE_NAMED, "1");
        } else {
            cmd.env_remove(FIXTURE_NAMED);
        }
        let mut child = cmd.spawn().expect("spawn the fixture");
        let stdout = child.stdout.take().unwrap();
        let stdin = child.stdin.take();
        let pid = child.id();
        let mut fx = Fixture {
            child,
            stdin,
            pid,
            target: String::new(),
            name: None,
            dead: None,
            done: None,
        };
        // A thread reads the child's stdout to the end, so it never blocks
        // on a full pipe; the READY line comes back through one channel, the
        // DONE lines (answers to `ask`) through the other.
        let (tx, rx) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::channel();
        fx.done = Some(done_rx);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.strip_prefix("READY ") {
                    let _ = tx.send(rest.to_owned());
                } else if let Some(rest) = line.strip_prefix("DONE ") {
                    let _ = done_tx.send(rest.to_owned());
                }
            }
        });
        let ready = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("fixture {state} did not get ready"));
        // "target=... [name=...]"
        for word in ready.split(' ') {
            if let Some(t) = word.strip_prefix("target=") {
                fx.target = t.to_owned();
            }
            if let Some(n) = word.strip_prefix("name=") {
                fx.name = Some(n.to_owned());
            }
            if let Some(p) = word.strip_prefix("dead=") {
                fx.dead = Some(p.parse().expect("dead=PID"));
            }
        }
        assert!(
            !fx.target.is_empty(),
            "READY line without a target: {ready}"
        );
        fx
    }

    /// Sends `command` as one line to the child's stdin (only the `dead`
    /// state reads commands) and returns its `DONE ...` answer.
    pub fn ask(&mut self, command: &str) -> String {
        let stdin = self.stdin.as_mut().expect("stdin open");
        stdin.write_all(format!("{command}\n").as_bytes()).unwrap();
        stdin.flush().unwrap();
        self.done
            .as_ref()
            .unwrap()
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("fixture did not answer {command:?}"))
    }

    /// Lets the child finish on its own (closes its stdin) and waits for it.
    pub fn finish(mut self) -> ExitStatus {
        drop(self.stdin.take());
        wait_with_limit(&mut self.child, Duration::from_secs(30))
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(name) = &self.name {
            let _ = std::fs::remove_file(format!("/dev/shm{name}"));
        }
    }
}

fn wait_with_limit(child: &mut Child, limit: Duration) -> ExitStatus {
    let until = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child {} ran past {limit:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What one run of `segpool` did.
#[derive(Debug)]
pub struct Out {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// Asserts exit status 0 and returns stdout.
    pub fn ok(&self) -> &str {
        assert!(self.status.success(), "segpool failed: {self:#?}");
        &self.stdout
    }

    /// Asserts exit status 1 without a panic, and returns stderr.
    pub fn failed(&self) -> &str {
        assert_eq!(self.status.code(), Some(1), "expected exit 1: {self:#?}");
        assert!(
            !self.stderr.contains("panicked"),
            "segpool panicked: {self:#?}"
        );
        assert!(self.stderr.starts_with("segpool: error: "), "{self:#?}");
        &self.stderr
    }
}

/// The binary under test.
pub fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_segpool"))
}

/// Runs `segpool ARGS` (stdin from `/dev/null`), killed after 60 s.
pub fn segpool(args: &[&str]) -> Out {
    run(Command::new(bin()).args(args), None)
}

/// Runs a prepared command, feeding `input` to its stdin (else /dev/null).
pub fn run(cmd: &mut Command, input: Option<&str>) -> Out {
    cmd.stdin(if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn segpool");
    if let Some(input) = input {
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(input.as_bytes());
        // Keep it open until the child exits: EOF is not what we test.
        std::mem::forget(stdin);
    }
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let status = wait_with_limit(&mut child, Duration::from_secs(60));
    Out {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// A file in /dev/shm written by a test, removed on drop.
pub struct ShmFile(pub PathBuf);

impl ShmFile {
    pub fn new(tag: &str, bytes: &[u8]) -> ShmFile {
        let f = ShmFile(PathBuf::from(format!(
            "/dev/shm/segpool-clitest-{}-{tag}",
            std::process::id()
        )));
        std::fs::write(&f.0, bytes).unwrap();
        f
    }

    /// Its name as a TARGET (`segpool-clitest-...`).
    pub fn name(&self) -> String {
        self.0.file_name().unwrap().to_str().unwrap().to_owned()
    }
}

impl Drop for ShmFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn publish(pool: &SegmentPool, n: usize) {
    let w = pool.open_writer();
    for i in 0..n {
        let mut u = w.begin_unit().unwrap();
        u.write_binary(&vec![i as u8; 1000 * (i + 1)]).unwrap();
        u.commit_unit().unwrap();
    }
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < until, "fixture: {what} never happened");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The fixture process: builds a pool in `state`, prints
/// `READY target=... [name=...]`, and holds it until stdin closes.
///
/// States:
/// - `mixed`: 8 segments; 2 free, 1 writing, 2 queued, 3 held;
/// - `full`: 4 segments all held by the consumer, one producer asleep in
///   `begin_unit`;
/// - `hungry`: 4 segments all free, one consumer asleep in `recv`;
/// - `shutdown`: 4 segments, 2 queued, then `shutdown_arena`;
/// - `stream`: 8 segments, a producer and a consumer moving 32 KiB units
///   continuously;
/// - `dead`: 4 segments; 2 published, then a second process (this binary
///   again, state `dead-child`) attaches, takes one unit, begins writing
///   another and aborts. Not recovered: the dead participant still owns 2
///   segments (1 held, 1 writing), the fixture 1 (queued). The fixture then
///   reads commands, one a line: `recover` runs `recover_dead` and answers
///   `DONE participants=N freed=N delivered=N`.
pub fn fixture_main(state: &str) {
    if state == "dead-child" {
        dead_child();
    }
    let named = std::env::var_os(FIXTURE_NAMED).is_some();
    let count = if matches!(state, "mixed" | "stream") {
        8
    } else {
        4
    };
    let pool = SegmentPool::builder(SEGMENT, count)
        .named(named)
        .acquire_timeout(Duration::from_secs(600))
        .build()
        .unwrap();
    let reader = pool.open_reader();
    let mut held: Vec<Unit> = Vec::new();
    let mut writing = Vec::new();
    let mut dead = None;
    match state {
        "mixed" => {
            publish(&pool, 5);
            for _ in 0..3 {
                held.push(reader.recv().unwrap());
            }
            writing.push(pool.open_writer().begin_unit().unwrap());
        }
        "full" => {
            publish(&pool, count);
            for _ in 0..count {
                held.push(reader.recv().unwrap());
            }
            let w = pool.open_writer();
            std::thread::spawn(move || {
                let _ = w.begin_unit(); // asleep until shutdown
            });
            wait_until("a producer asleep", || pool.stats().waiting_producers == 1);
        }
        "hungry" => {
            let r = pool.open_reader();
            std::thread::spawn(move || {
                let _ = r.recv(); // asleep until shutdown
            });
            wait_until("a consumer asleep", || pool.stats().waiting_consumers == 1);
        }
        "shutdown" => {
            publish(&pool, 2);
            pool.shutdown_arena();
        }
        "stream" => {
            let w = pool.open_writer();
            std::thread::spawn(move || {
                let payload = vec![7u8; 32 << 10];
                while let Ok(mut u) = w.begin_unit() {
                    if u.write_binary(&payload).is_err() || u.commit_unit().is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            });
            let r = pool.open_reader();
            std::thread::spawn(move || while r.recv().is_ok() {});
            wait_until("a unit delivered", || pool.reclaimed() > 0);
        }
        "dead" => {
            publish(&pool, 2);
            let mut cmd = Command::new(std::env::current_exe().unwrap());
            cmd.args([
                "--exact",
                "fixture_process",
                "--nocapture",
                "--test-threads=1",
                "-q",
            ])
            .env(FIXTURE, "dead-child")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
            pool.configure_command(&mut cmd);
            let mut child = cmd.spawn().expect("spawn the dying child");
            let pid = child.id();
            let status = wait_with_limit(&mut child, Duration::from_secs(60));
            {
                use std::os::unix::process::ExitStatusExt;
                assert_eq!(status.signal(), Some(SIGABRT), "{status}");
            }
            dead = Some(pid);
        }
        other => panic!("unknown fixture state {other}"),
    }
    let target = match pool.name() {
        Some(name) => format!("{name} name={name}"),
        None => {
            let handle = pool.handle().to_string();
            let fd = handle
                .split(' ')
                .find_map(|w| w.strip_prefix("fd="))
                .expect("a memfd handle names its fd");
            format!("{}:{fd}", std::process::id())
        }
    };
    match dead {
        Some(pid) => {
            println!("READY target={target} dead={pid}");
            for line in std::io::stdin().lines() {
                let Ok(line) = line else { break };
                if line.trim() == "recover" {
                    let r = pool.recover_dead().expect("recover_dead");
                    println!(
                        "DONE participants={} freed={} delivered={}",
                        r.participants, r.freed, r.delivered
                    );
                }
            }
        }
        None => {
            println!("READY target={target}");
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
        }
    }
    // Wake the sleepers, remove the name, and leave without joining them.
    pool.shutdown_arena();
    pool.unlink().unwrap();
    drop(writing);
    drop(held);
    std::process::exit(0);
}

/// SIGABRT's number (6 on every Linux architecture).
const SIGABRT: i32 = 6;

/// The second process of state `dead`: attaches through the environment,
/// takes one unit (held), begins another (writing), and dies at once, as a
/// crash would leave them: `abort` runs no destructor.
fn dead_child() -> ! {
    let pool = SegmentPool::from_env().expect("attach from the environment");
    let unit = pool
        .open_reader()
        .try_recv()
        .unwrap()
        .expect("a queued unit");
    let mut open = pool.open_writer().begin_unit().unwrap();
    open.write_binary(b"never committed").unwrap();
    std::mem::forget((unit, open));
    std::process::abort();
}
