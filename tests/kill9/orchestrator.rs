//! The orchestrator: starts the children, kills them one at a time at
//! random, recovers after each death and starts the next incarnation;
//! after the last kill it kills the rest, drains the ring and checks.

use crate::board::Board;
use crate::check;
use crate::child::{ROLE_ENV, Role, Spec};
use crate::config::{CHILD_PATIENCE, Config, STALL, WATCHDOG};
use crate::ledger::{Ledger, lock};
use crate::payload::verify;
use crate::report::Report;
use crate::rng::{Rng, spin_until};
use segpool::SegmentPool;
use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Who sent the `SIGKILL` (the kill table's column).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum By {
    /// The orchestrator, after a random delay.
    Orchestrator = 0,
    /// The child's own timer, armed at a random point.
    SelfArmed = 1,
    /// The orchestrator, at the end of the run.
    Teardown = 2,
}

/// One child process, and the thread that reads its reports.
struct Kid {
    role: Role,
    inc: u32,
    child: Child,
    reader: Option<JoinHandle<()>>,
}

/// The orchestrator's state.
struct Run<'c> {
    cfg: &'c Config,
    make_cmd: &'c dyn Fn() -> Command,
    pool: SegmentPool,
    board: Board,
    ledger: Arc<Mutex<Ledger>>,
    rng: Rng,
    next_inc: u32,
    /// Producer incarnations that died by SIGKILL.
    killed_producers: HashSet<u32>,
    report: Report,
    /// Bumped whenever the main loop moves on (for the watchdog).
    heartbeat: Arc<AtomicU64>,
}

impl Run<'_> {
    fn spawn(&mut self, role: Role) -> Result<Kid, String> {
        self.next_inc += 1;
        let spec = Spec {
            role,
            slot: role.slot(self.cfg.producers),
            inc: self.next_inc,
            seed: self.rng.next(),
            every: self.cfg.self_kill_every,
            held: self.cfg.max_held as u64,
        };
        let inc = spec.inc;
        if let Role::Producer(slot) = role {
            lock(&self.ledger).slot_of.insert(inc, slot as u32);
        }
        let mut cmd = (self.make_cmd)();
        cmd.env(ROLE_ENV, spec.to_env())
            .env(crate::board::BOARD_ENV, self.board.fd_number().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        self.pool.configure_command(&mut cmd);
        let mut child = cmd.spawn().map_err(|e| format!("spawn {spec:?}: {e}"))?;
        let out = child.stdout.take().expect("stdout is piped");
        let ledger = self.ledger.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                match line {
                    Ok(line) => lock(&ledger).line(role, inc, &line),
                    Err(_) => break,
                }
            }
        });
        Ok(Kid {
            role,
            inc,
            child,
            reader: Some(reader),
        })
    }

    /// Waits (bounded) for a child that was sent SIGKILL.
    fn reap(kid: &mut Kid) -> Result<ExitStatus, String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match kid.child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_micros(50))
                }
                Ok(None) => return Err(format!("{:?} {} did not die", kid.role, kid.inc)),
                Err(e) => return Err(format!("wait for {:?} {}: {e}", kid.role, kid.inc)),
            }
        }
    }

    /// Handles a child's death: checks how it died, notes where it was,
    /// recovers, and settles its reports.
    fn buried(&mut self, mut kid: Kid, status: ExitStatus, by: By, asleep: bool) {
        let phase = self.board.get(kid.role.slot(self.cfg.producers), kid.inc);
        let start = Instant::now();
        let r = self.pool.recover_dead().expect("recover_dead");
        let took = start.elapsed();
        self.report.max_recovery = self.report.max_recovery.max(took);
        self.report.total_recovery += took;
        self.report.recovered_freed += r.freed as u64;
        self.report.recovered_delivered += r.delivered as u64;
        self.report.recovered_nothing += u64::from(r.freed + r.delivered == 0);
        if let Some(reader) = kid.reader.take() {
            let _ = reader.join(); // ends at EOF: the child is dead
        }
        if status.signal() != Some(libc::SIGKILL) {
            self.report
                .failures
                .push(format!("{:?} {} ended with {status}", kid.role, kid.inc));
        }
        match kid.role {
            Role::Consumer => lock(&self.ledger).consumer_died(),
            Role::Producer(_) => {
                self.killed_producers.insert(kid.inc);
            }
            Role::Recoverer => {}
        }
        self.report
            .table
            .entry((kid.role.name(), phase.describe(asleep)))
            .or_default()[by as usize] += 1;
        match by {
            By::Teardown => self.report.teardown_kills += 1,
            _ => self.report.kills += 1,
        }
    }

    /// Buries a child that died of itself and starts its successor.
    fn replace(
        &mut self,
        kids: &mut Vec<Kid>,
        i: usize,
        status: ExitStatus,
        by: By,
        asleep: bool,
    ) -> Result<(), String> {
        let kid = kids.swap_remove(i);
        let role = kid.role;
        self.buried(kid, status, by, asleep);
        kids.push(self.spawn(role)?);
        Ok(())
    }

    /// Whether the participant table says process `pid` sleeps in a wait.
    fn asleep(&self, pid: u32) -> bool {
        self.pool
            .participants()
            .iter()
            .any(|(p, _)| p.pid == pid && (p.waiting.0 > 0 || p.waiting.1 > 0))
    }

    fn beat(&self) {
        self.heartbeat.fetch_add(1, Ordering::Relaxed);
    }

    fn kill_loop(&mut self, kids: &mut Vec<Kid>) -> Result<(), String> {
        let mut last_progress = (0usize, Instant::now());
        while self.report.kills < self.cfg.kills {
            self.beat();
            // Deaths the children's own timers caused (or failures).
            let mut i = 0;
            while i < kids.len() {
                match kids[i].child.try_wait().map_err(|e| format!("wait: {e}"))? {
                    Some(status) => self.replace(kids, i, status, By::SelfArmed, false)?,
                    None => i += 1,
                }
            }
            if !self.report.failures.is_empty() {
                return Ok(());
            }
            // A random delay from one of three bands.
            let delay = match self.rng.below(3) {
                0 => self.rng.micros(100),
                1 => self.rng.micros(1000),
                _ => self.rng.micros(3000),
            };
            if delay < Duration::from_micros(100) {
                spin_until(Instant::now() + delay);
            } else {
                std::thread::sleep(delay);
            }
            // A random victim: the consumer a quarter of the time, the
            // recoverer an eighth, a producer otherwise.
            let pick = self.rng.below(8);
            let victim = if pick < 2 {
                kids.iter().position(|k| k.role == Role::Consumer)
            } else if pick == 2 {
                kids.iter().position(|k| k.role == Role::Recoverer)
            } else {
                let producers: Vec<usize> = (0..kids.len())
                    .filter(|&i| matches!(kids[i].role, Role::Producer(_)))
                    .collect();
                Some(producers[self.rng.below(producers.len() as u64) as usize])
            }
            .expect("every role has a live child");
            let asleep = self.asleep(kids[victim].child.id());
            if let Some(status) = kids[victim]
                .child
                .try_wait()
                .map_err(|e| format!("wait: {e}"))?
            {
                // Its own timer was quicker.
                self.replace(kids, victim, status, By::SelfArmed, false)?;
                continue;
            }
            kids[victim]
                .child
                .kill()
                .map_err(|e| format!("kill: {e}"))?;
            let status = Self::reap(&mut kids[victim])?;
            self.replace(kids, victim, status, By::Orchestrator, asleep)?;
            // No unit delivered for STALL while children live: a hang.
            let delivered = lock(&self.ledger).tickets.len();
            if delivered != last_progress.0 {
                last_progress = (delivered, Instant::now());
            } else if last_progress.1.elapsed() > STALL {
                return Err(format!(
                    "hang: no unit delivered for {STALL:?}; stats {:?}; participants {:?}",
                    self.pool.stats(),
                    self.pool.participants()
                ));
            }
        }
        Ok(())
    }

    /// Kills the children left, recovers, drains the ring, and checks.
    fn finish(&mut self, kids: Vec<Kid>) {
        for mut kid in kids {
            self.beat();
            let asleep = self.asleep(kid.child.id());
            let _ = kid.child.kill(); // an error: it died already
            match Self::reap(&mut kid) {
                Ok(status) => self.buried(kid, status, By::Teardown, asleep),
                Err(e) => self.report.failures.push(e),
            }
        }
        // Every child is dead and reaped. Recover whatever is left (the
        // deaths above were recovered one by one; this must find nothing).
        let r = self.pool.recover_dead().expect("recover_dead");
        if r.participants != 0 {
            self.report
                .failures
                .push(format!("a last recover_dead still found {r:?}"));
        }
        // The final consumer is this process: drain the ring.
        let reader = self.pool.open_reader();
        loop {
            match reader.try_recv() {
                Ok(Some(u)) => {
                    let mut l = lock(&self.ledger);
                    match verify(&u) {
                        Ok((s, i, seq)) => l.delivered(u.ticket(), s, i, seq),
                        Err(why) => l.corrupt(u.ticket(), &why),
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    self.report.failures.push(format!("final drain: {e}"));
                    break;
                }
            }
        }
        drop(reader);
        check::pool(&self.pool, self.cfg.segments, &mut self.report);
        let ledger = lock(&self.ledger);
        check::ledger(&ledger, &self.killed_producers, self.cfg, &mut self.report);
    }
}

/// Aborts the process when the main loop stops moving for [`WATCHDOG`]: a
/// hang must fail loudly rather than block a CI job. Stops when `stop` is
/// set.
fn watchdog(heartbeat: Arc<AtomicU64>, stop: Arc<AtomicU64>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut last = (u64::MAX, Instant::now());
        while stop.load(Ordering::Relaxed) == 0 {
            std::thread::sleep(Duration::from_millis(100));
            let now = heartbeat.load(Ordering::Relaxed);
            if now != last.0 {
                last = (now, Instant::now());
            } else if last.1.elapsed() > WATCHDOG {
                eprintln!("kill9: the orchestrator made no progress for {WATCHDOG:?}: hang");
                std::process::abort();
            }
        }
    })
}

/// Runs the harness: `make_cmd` gives a command that runs
/// [`crate::child::run_from_env`] (the environment and stdout are set here).
pub fn run(cfg: &Config, make_cmd: &dyn Fn() -> Command) -> Result<Report, String> {
    let started = Instant::now();
    let pool = SegmentPool::builder(cfg.segment_size, cfg.segments)
        .acquire_timeout(CHILD_PATIENCE)
        .build()
        .map_err(|e| format!("create the pool: {e}"))?;
    let board = Board::create().map_err(|e| format!("create the phase board: {e}"))?;
    let heartbeat = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicU64::new(0));
    let watchdog = watchdog(heartbeat.clone(), stop.clone());
    let mut run = Run {
        cfg,
        make_cmd,
        pool,
        board,
        ledger: Arc::new(Mutex::new(Ledger::default())),
        rng: Rng(cfg.seed),
        next_inc: 0,
        killed_producers: HashSet::new(),
        report: Report::default(),
        heartbeat,
    };
    let mut kids = Vec::new();
    let mut result = Ok(());
    let roles = (0..cfg.producers)
        .map(Role::Producer)
        .chain([Role::Consumer, Role::Recoverer]);
    for role in roles {
        match run.spawn(role) {
            Ok(k) => kids.push(k),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    if result.is_ok() {
        result = run.kill_loop(&mut kids);
    }
    // Also on error: no child may outlive the run.
    run.finish(kids);
    stop.store(1, Ordering::Relaxed);
    let _ = watchdog.join();
    if let Err(e) = result {
        run.report.failures.insert(0, e);
    }
    run.report.elapsed = started.elapsed();
    Ok(run.report)
}
