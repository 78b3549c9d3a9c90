//! A child process: its role, the spec the orchestrator hands it in the
//! environment, and its entry point.

use crate::roles::{self, Attached};

/// Names the role of a child process (absent in the orchestrator).
pub const ROLE_ENV: &str = "SEGPOOL_KILL9_ROLE";

/// What a child does; a producer names its board slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Producer(usize),
    Consumer,
    Recoverer,
}

impl Role {
    /// The role's name, in specs and in the kill table.
    pub fn name(self) -> &'static str {
        match self {
            Role::Producer(_) => "producer",
            Role::Consumer => "consumer",
            Role::Recoverer => "recoverer",
        }
    }

    /// Its board slot: the producers' own, then the consumer's, then the
    /// recoverer's.
    pub fn slot(self, producers: usize) -> usize {
        match self {
            Role::Producer(s) => s,
            Role::Consumer => producers,
            Role::Recoverer => producers + 1,
        }
    }
}

/// Everything a child is told: its role, board slot, incarnation, seed,
/// how often it arms its own kill (1/`every`; 0: never), and (consumer)
/// the most views it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    pub role: Role,
    pub slot: usize,
    pub inc: u32,
    pub seed: u64,
    pub every: u64,
    pub held: u64,
}

impl Spec {
    /// The value of [`ROLE_ENV`].
    pub fn to_env(&self) -> String {
        let Spec {
            role,
            slot,
            inc,
            seed,
            every,
            held,
        } = self;
        format!("{} {slot} {inc} {seed} {every} {held}", role.name())
    }

    /// Reads what [`Spec::to_env`] wrote.
    pub fn parse(spec: &str) -> Result<Spec, String> {
        let mut w = spec.split_whitespace();
        let name = w.next().unwrap_or_default();
        let f: Vec<u64> = w
            .map(|s| s.parse().map_err(|e| format!("role {spec}: {e}")))
            .collect::<Result<_, _>>()?;
        let &[slot, inc, seed, every, held] = f.as_slice() else {
            return Err(format!("role {spec}: five numbers expected"));
        };
        let slot = slot as usize;
        let role = match name {
            "producer" => Role::Producer(slot),
            "consumer" => Role::Consumer,
            "recoverer" => Role::Recoverer,
            _ => return Err(format!("unknown role {spec}")),
        };
        Ok(Spec {
            role,
            slot,
            inc: inc as u32,
            seed,
            every,
            held,
        })
    }
}

/// Runs the child role named in [`ROLE_ENV`], if any, and returns its exit
/// code; `None` in the orchestrator.
pub fn run_from_env() -> Option<i32> {
    let spec = std::env::var(ROLE_ENV).ok()?;
    let result = run(&spec);
    if let Err(e) = &result {
        eprintln!("kill9 child ({spec}): {e}");
    }
    Some(if result.is_ok() { 0 } else { 1 })
}

/// Whether this process is a child of the harness.
pub fn is_child() -> bool {
    std::env::var_os(ROLE_ENV).is_some()
}

fn run(spec: &str) -> Result<(), String> {
    // A safety net for the shared machine: never outlive the orchestrator
    // (the thread that spawned us lives for the whole run).
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .map_err(|e| format!("prctl(PR_SET_PDEATHSIG): {e}"))?;
    if rustix::process::getppid().is_none_or(|p| p.as_raw_nonzero().get() == 1) {
        return Err("the orchestrator is gone".into());
    }
    let s = Spec::parse(spec)?;
    let child = Attached::attach(s.slot, s.inc, s.seed)?;
    match s.role {
        Role::Producer(_) => roles::producer(child, s.every),
        Role::Consumer => roles::consumer(child, s.every, s.held),
        Role::Recoverer => roles::recoverer(child, s.every),
    }
}
