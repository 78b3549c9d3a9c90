//! The `segpool` binary against real pools held by child processes.

mod common;

use common::{Fixture, Out, SEGMENT, ShmFile, bin, run, segpool};
use serde_json::Value;
use std::process::Command;

/// Not a test: the body of the fixture process that the tests start (a
/// no-op unless `SEGPOOL_CLI_FIXTURE` is set).
#[test]
fn fixture_process() {
    if let Ok(state) = std::env::var(common::FIXTURE) {
        common::fixture_main(&state);
    }
}

fn stat_json(target: &str) -> Value {
    let out = segpool(&["stat", target, "--json"]);
    serde_json::from_str(out.ok()).unwrap_or_else(|e| panic!("bad JSON ({e}): {out:#?}"))
}

fn phases(v: &Value) -> [u64; 4] {
    let s = &v["segments"];
    ["free", "writing", "queued", "held"].map(|k| s[k].as_u64().unwrap())
}

#[test]
fn ls_finds_the_child_and_its_pool() {
    let fx = Fixture::start("mixed", false);
    let out = segpool(&["ls"]);
    let table = out.ok();
    let line = table
        .lines()
        .find(|l| l.starts_with(&format!("{} ", fx.target)))
        .unwrap_or_else(|| panic!("{} not listed:\n{table}", fx.target));
    assert!(line.contains("memfd"), "{line}");
    assert!(line.contains("8 x 64 KiB"), "{line}");
    assert!(line.contains("2/1/2/3"), "{line}");
    assert!(line.contains(&format!("{} cli-", fx.pid)), "{line}");

    let out = segpool(&["ls", "--json"]);
    let v: Value = serde_json::from_str(out.ok()).unwrap();
    assert_eq!(v["schema"], 1);
    let pool = v["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["target"] == fx.target.as_str())
        .unwrap_or_else(|| panic!("{} not in {v}", fx.target));
    assert_eq!(pool["kind"], "memfd");
    assert_eq!(pool["count"], 8);
    assert_eq!(pool["segment_size"], SEGMENT);
    assert_eq!(phases(pool), [2, 1, 2, 3]);
    assert_eq!(pool["processes"][0]["pid"], fx.pid);
}

#[test]
fn stat_text_shows_held_queued_and_the_processes() {
    let fx = Fixture::start("mixed", false);
    let out = segpool(&["stat", &fx.pid.to_string()]);
    let text = out.ok();
    for want in [
        format!("pool         {} (memfd)", fx.target),
        format!("processes    {} (", fx.pid),
        "geometry     8 segments x 64 KiB (65536 bytes), layout version 4".into(),
        "units        published 5, reclaimed 0, in flight 5".into(),
        "segments     free 2  writing 1  queued 2  held 3   (of 8)".into(),
        "waiting      producers 0  consumers 0".into(),
        format!("writing by   pid {} (1)", fx.pid),
        "shutdown     no".into(),
        "participants 1".into(),
        format!("  #0   pid {:<8} alive   6 segment(s)", fx.pid),
        "state        busy: 6/8 in use".into(),
    ] {
        assert!(text.contains(&want), "missing {want:?} in:\n{text}");
    }
}

#[test]
fn stat_json_has_the_documented_schema() {
    let fx = Fixture::start("mixed", false);
    let v = stat_json(&fx.target);
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    let mut want = vec![
        "schema",
        "target",
        "path",
        "kind",
        "name",
        "processes",
        "layout_version",
        "segment_size",
        "count",
        "published",
        "reclaimed",
        "segments",
        "waiting",
        "writers",
        "generation",
        "shutdown",
        "participants",
        "recovered_participants",
        "recovered_segments",
        "state",
        "diagnosis",
    ];
    want.sort();
    let mut got = keys.clone();
    got.sort();
    assert_eq!(got, want);
    assert_eq!(v["schema"], 1);
    assert_eq!(v["target"], fx.target.as_str());
    assert_eq!(
        v["path"],
        format!("/proc/{}", fx.target.replace(':', "/fd/"))
    );
    assert_eq!(v["name"], Value::Null);
    assert_eq!(v["layout_version"], 4);
    assert_eq!(
        (v["published"].as_u64(), v["reclaimed"].as_u64()),
        (Some(5), Some(0))
    );
    assert_eq!(phases(&v), [2, 1, 2, 3]);
    assert_eq!(v["waiting"]["producers"], 0);
    assert_eq!(
        v["writers"],
        serde_json::json!([{"pid": fx.pid, "segments": 1}])
    );
    assert_eq!(v["generation"], 0);
    assert_eq!(v["shutdown"], false);
    assert_eq!(
        v["participants"],
        serde_json::json!([{
            "index": 0, "pid": fx.pid, "alive": true, "segments": 6,
            "incarnation": v["participants"][0]["incarnation"],
            "waiting": {"producers": 0, "consumers": 0},
        }])
    );
    assert_eq!(
        (&v["recovered_participants"], &v["recovered_segments"]),
        (&serde_json::json!(0), &serde_json::json!(0))
    );
    assert_eq!(v["state"], "busy");
    assert_eq!(
        v["processes"][0]["fds"][0].as_u64().map(|f| f.to_string()),
        fx.target.split(':').nth(1).map(str::to_owned)
    );
}

#[test]
fn a_producer_asleep_on_a_full_pool_is_blamed_on_the_consumer() {
    let fx = Fixture::start("full", false);
    let v = stat_json(&fx.pid.to_string());
    assert_eq!(phases(&v), [0, 0, 0, 4]);
    assert_eq!(v["waiting"]["producers"], 1);
    assert_eq!(v["waiting"]["consumers"], 0);
    assert_eq!(v["state"], "producers_waiting");
    assert_eq!(
        v["diagnosis"],
        "producers waiting for space (1 producer asleep): consumer holds 4/4"
    );
    let text = segpool(&["stat", &fx.target]).ok().to_owned();
    assert!(
        text.contains("waiting      producers 1  consumers 0"),
        "{text}"
    );
    assert!(text.contains("consumer holds 4/4"), "{text}");
}

#[test]
fn a_consumer_asleep_on_an_empty_pool_is_blamed_on_the_producers() {
    let fx = Fixture::start("hungry", false);
    let v = stat_json(&fx.target);
    assert_eq!(phases(&v), [4, 0, 0, 0]);
    assert_eq!(v["waiting"]["consumers"], 1);
    assert_eq!(v["state"], "consumers_waiting");
    assert!(
        v["diagnosis"]
            .as_str()
            .unwrap()
            .contains("producers are slow, idle or gone")
    );
}

#[test]
fn a_shut_down_pool_says_so() {
    let fx = Fixture::start("shutdown", false);
    let v = stat_json(&fx.target);
    assert_eq!(v["shutdown"], true);
    assert_eq!(v["state"], "shutdown");
    assert_eq!(phases(&v), [2, 0, 2, 0]);
    let text = segpool(&["stat", &fx.target]).ok().to_owned();
    assert!(text.contains("shutdown     yes"), "{text}");
    assert!(
        text.contains("state        shut down: producers are refused"),
        "{text}"
    );
}

#[test]
fn a_dead_participant_is_named_until_recovered_then_counted() {
    let mut fx = Fixture::start("dead", false);
    let dead = fx.dead.expect("the fixture names the dead pid");
    let v = stat_json(&fx.target);
    assert_eq!(phases(&v), [1, 1, 1, 1], "{v}");
    let parts = v["participants"].as_array().unwrap();
    assert_eq!(parts.len(), 2, "{v}");
    assert_eq!(parts[0]["pid"], fx.pid);
    assert_eq!(parts[0]["alive"], true);
    assert_eq!(parts[0]["segments"], 1, "its queued unit: {v}");
    assert_eq!(parts[1]["pid"], dead);
    assert_eq!(parts[1]["alive"], false, "{v}");
    assert_eq!(parts[1]["segments"], 2, "one held, one being written: {v}");
    assert_eq!(parts[1]["waiting"]["producers"], 0);
    assert!(parts[1]["incarnation"].is_u64(), "{v}");
    assert_eq!(
        v["writers"],
        serde_json::json!([{"pid": dead, "segments": 1}])
    );
    assert_eq!(
        (&v["recovered_participants"], &v["recovered_segments"]),
        (&serde_json::json!(0), &serde_json::json!(0))
    );
    assert_eq!(v["state"], "busy");
    let hint =
        format!("pid {dead} dead, holds 2: run recovery, or any blocked call will within 1 s");
    let diagnosis = v["diagnosis"].as_str().unwrap();
    assert!(diagnosis.ends_with(&format!("; {hint}")), "{diagnosis}");

    let text = segpool(&["stat", &fx.target]).ok().to_owned();
    for want in [
        "participants 2 (1 dead)".to_owned(),
        format!("  #0   pid {:<8} alive   1 segment(s)", fx.pid),
        format!("  #1   pid {dead:<8} DEAD    2 segment(s) <- run recovery"),
        "recovered    0 dead participant(s), 0 segment(s) since creation".to_owned(),
        format!(
            "state        busy: 3/4 in use (1 writing, 1 queued, 1 held), nobody waiting; {hint}"
        ),
    ] {
        assert!(text.contains(&want), "missing {want:?} in:\n{text}");
    }
    let table = segpool(&["ls"]).ok().to_owned();
    let line = table
        .lines()
        .find(|l| l.starts_with(&format!("{} ", fx.target)))
        .unwrap_or_else(|| panic!("{} not listed:\n{table}", fx.target));
    assert!(line.contains("2 (1 dead)"), "{line}");
    assert!(
        line.contains(&format!("busy, pid {dead} dead holds 2")),
        "{line}"
    );
    let top = segpool(&["top", &fx.target, "-n", "1", "--json"])
        .ok()
        .to_owned();
    let t: Value = serde_json::from_str(top.trim()).unwrap();
    assert_eq!(t["participants"][1]["alive"], false, "{t}");
    assert!(t["diagnosis"].as_str().unwrap().contains(&hint), "{t}");

    // Recovery: the dead entry goes, its 2 segments come back, and the
    // pool-wide counters say so.
    let answer = fx.ask("recover");
    assert_eq!(answer, "participants=1 freed=2 delivered=0");
    let v = stat_json(&fx.target);
    assert!(v["recovered_participants"].as_u64().unwrap() >= 1, "{v}");
    assert_eq!(v["recovered_segments"], 2, "{v}");
    assert_eq!(phases(&v), [3, 0, 1, 0], "{v}");
    assert_eq!(
        v["participants"],
        serde_json::json!([{
            "index": 0, "pid": fx.pid, "alive": true, "segments": 1,
            "incarnation": v["participants"][0]["incarnation"],
            "waiting": {"producers": 0, "consumers": 0},
        }])
    );
    assert!(!v["diagnosis"].as_str().unwrap().contains("dead"), "{v}");
    let text = segpool(&["stat", &fx.target]).ok().to_owned();
    assert!(
        text.contains("recovered    1 dead participant(s), 2 segment(s) since creation"),
        "{text}"
    );
}

#[test]
fn a_named_pool_is_found_by_every_spelling_of_its_name() {
    let fx = Fixture::start("mixed", true);
    let name = fx.name.clone().unwrap();
    for target in [
        name.clone(),
        name[1..].to_owned(),
        format!("/dev/shm{name}"),
    ] {
        let v = stat_json(&target);
        assert_eq!(v["kind"], "named", "{target}");
        assert_eq!(v["name"], name.as_str());
        assert_eq!(v["target"], name.as_str());
        assert_eq!(phases(&v), [2, 1, 2, 3]);
        assert_eq!(v["processes"][0]["pid"], fx.pid);
    }
    // By pid it is opened through the fd, and still known by its name.
    let v = stat_json(&fx.pid.to_string());
    assert_eq!(v["name"], name.as_str());
    let table = segpool(&["ls"]).ok().to_owned();
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&name) && l.contains("named")),
        "{table}"
    );
}

#[test]
fn a_pid_that_does_not_exist_is_an_error() {
    // Above the largest pid_max Linux allows (2^22).
    let err = segpool(&["stat", "4194305"]).failed().to_owned();
    assert!(err.contains("no process with pid 4194305"), "{err}");
    let err = segpool(&["stat", "4194305:3"]).failed().to_owned();
    assert!(err.contains("no process with pid 4194305"), "{err}");
    let err = segpool(&["top", "4194305", "-n", "1"]).failed().to_owned();
    assert!(err.contains("no process with pid 4194305"), "{err}");
}

#[test]
fn a_malformed_target_is_an_error() {
    for t in ["0", "12:x", "../etc/passwd", ""] {
        let err = segpool(&["stat", t]).failed().to_owned();
        assert!(err.contains("bad TARGET"), "{t}: {err}");
    }
}

struct Sleeper(std::process::Child);

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_pid_without_a_pool_is_an_error() {
    let sleeper = Sleeper(Command::new("sleep").arg("60").spawn().unwrap());
    let pid = sleeper.0.id();
    let err = segpool(&["stat", &pid.to_string()]).failed().to_owned();
    assert!(
        err.contains(&format!("process {pid} (sleep) has no segpool pool open")),
        "{err}"
    );
    // And an fd of it that is not a pool (stdin is /dev/null or a pipe).
    let err = segpool(&["stat", &format!("{pid}:0")]).failed().to_owned();
    assert!(err.contains(&format!("/proc/{pid}/fd/0")), "{err}");
    let err = segpool(&["stat", &format!("{pid}:999")])
        .failed()
        .to_owned();
    assert!(
        err.contains(&format!("no such pool: /proc/{pid}/fd/999")),
        "{err}"
    );
}

/// A header that claims to be ours (magic, version 4, this page size) but
/// whose offsets are all zero.
fn corrupt_header() -> Vec<u8> {
    let mut b = vec![0u8; 64 << 10];
    b[0..8].copy_from_slice(b"SEGPOOL\0");
    b[8..12].copy_from_slice(&4u32.to_le_bytes());
    b[12..16].copy_from_slice(&4096u32.to_le_bytes());
    b[16..24].copy_from_slice(&4096u64.to_le_bytes());
    b[24..32].copy_from_slice(&4u64.to_le_bytes());
    b
}

#[test]
fn a_corrupt_named_pool_is_an_error_not_a_panic() {
    let f = ShmFile::new("corrupt", &corrupt_header());
    let err = segpool(&["stat", &f.name()]).failed().to_owned();
    assert!(
        err.contains(&format!("{}: corrupt control page", f.0.display())),
        "{err}"
    );
    let err = segpool(&["top", &f.name(), "-n", "1"]).failed().to_owned();
    assert!(err.contains("corrupt control page"), "{err}");

    let f = ShmFile::new("foreign", &[0xab; 10000]);
    let err = segpool(&["stat", &f.name()]).failed().to_owned();
    assert!(
        err.contains("incompatible shared object: bad magic"),
        "{err}"
    );

    let f = ShmFile::new("truncated", &corrupt_header()[..300]);
    let err = segpool(&["stat", &f.name()]).failed().to_owned();
    assert!(err.contains("less than the 896-byte header"), "{err}");

    let err = segpool(&["stat", "segpool-clitest-no-such-name"])
        .failed()
        .to_owned();
    assert!(
        err.contains("no such pool: /dev/shm/segpool-clitest-no-such-name"),
        "{err}"
    );
}

#[test]
fn ls_skips_a_corrupt_pool_with_a_note_and_lists_the_rest() {
    let fx = Fixture::start("shutdown", false);
    let f = ShmFile::new("ls-corrupt", &corrupt_header());
    let out = segpool(&["ls"]);
    let table = out.ok();
    assert!(table.contains(&fx.target), "{table}");
    assert!(
        out.stderr
            .contains(&format!("segpool: note: skipped /{}: ", f.name())),
        "{out:#?}"
    );
    let v: Value = serde_json::from_str(segpool(&["ls", "--json"]).ok()).unwrap();
    let skipped = v["skipped"].as_array().unwrap();
    assert!(
        skipped
            .iter()
            .any(|s| s["target"] == format!("/{}", f.name()).as_str()
                && s["error"].as_str().unwrap().contains("corrupt")),
        "{v}"
    );
}

/// `key=value` pairs of one line of `top` (before the ` | `).
fn fields(line: &str) -> std::collections::HashMap<String, String> {
    let (kv, _) = line
        .split_once(" | ")
        .unwrap_or_else(|| panic!("no diagnosis: {line}"));
    kv.split(' ')
        .map(|w| {
            let (k, v) = w
                .split_once('=')
                .unwrap_or_else(|| panic!("{w:?} in {line}"));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

#[test]
fn top_prints_one_line_per_refresh_on_a_pipe() {
    let fx = Fixture::start("stream", false);
    let out = segpool(&["top", &fx.target, "-n", "4", "--interval", "0.2"]);
    let lines: Vec<&str> = out.ok().lines().collect();
    assert_eq!(lines.len(), 4, "{out:#?}");
    let parsed: Vec<_> = lines.iter().map(|l| fields(l)).collect();
    assert_eq!(parsed[0]["units/s"], "-");
    let published: Vec<u64> = parsed
        .iter()
        .map(|f| f["published"].parse().unwrap())
        .collect();
    assert!(published.windows(2).all(|w| w[0] <= w[1]), "{published:?}");
    assert!(published[3] > published[0], "nothing moved: {published:?}");
    let rate: f64 = parsed[3]["units/s"].parse().unwrap();
    assert!(rate > 0.0, "{lines:?}");
    let gbs: f64 = parsed[3]["GB/s"].parse().unwrap();
    assert!(gbs > 0.0 && gbs < 1.0, "{lines:?}");
    let ts: Vec<f64> = parsed.iter().map(|f| f["t"].parse().unwrap()).collect();
    assert!(ts[3] - ts[0] > 0.5 && ts[3] - ts[0] < 3.0, "{ts:?}");
    for f in &parsed {
        let sum: u64 = ["free", "writing", "queued", "held"]
            .iter()
            .map(|k| f[*k].parse::<u64>().unwrap())
            .sum();
        assert!(sum <= 8, "{f:?}");
        assert_eq!(f["shutdown"], "no");
    }
}

#[test]
fn top_json_lines_parse_and_show_the_waiting_producer() {
    let fx = Fixture::start("full", false);
    let out = segpool(&["top", &fx.target, "-n", "3", "--interval", "0.05", "--json"]);
    let lines: Vec<Value> = out
        .ok()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["units_per_s"], Value::Null);
    for v in &lines {
        assert_eq!(v["schema"], 1);
        assert_eq!(v["waiting"]["producers"], 1);
        assert_eq!(v["state"], "producers_waiting");
    }
    assert_eq!(lines[2]["units_per_s"], 0.0);
}

#[test]
fn top_quits_on_q() {
    let fx = Fixture::start("mixed", false);
    let started = std::time::Instant::now();
    let out = run(
        Command::new(bin()).args(["top", &fx.target, "--interval", "0.1"]),
        Some("q\n"),
    );
    out.ok();
    assert!(started.elapsed().as_secs() < 10);
    assert!(!out.stdout.is_empty());
}

#[test]
fn top_says_when_the_pool_vanishes() {
    let fx = Fixture::start("mixed", false);
    let target = fx.target.clone();
    let watcher =
        std::thread::spawn(move || segpool(&["top", &target, "-n", "200", "--interval", "0.1"]));
    std::thread::sleep(std::time::Duration::from_millis(500));
    // The watching `top` holds the pool too, read-only: it is not listed.
    let v = stat_json(&fx.target);
    let pids: Vec<u64> = v["processes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["pid"].as_u64().unwrap())
        .collect();
    assert_eq!(pids, [u64::from(fx.pid)]);
    assert!(fx.finish().success());
    let out: Out = watcher.join().unwrap();
    let err = out.failed();
    assert!(err.contains("pool vanished"), "{err}");
    assert!(out.stdout.lines().count() < 200, "it never noticed");
}

/// Copies the binary where an unprivileged user can run it; removed on drop.
struct Unprivileged(std::path::PathBuf);

impl Unprivileged {
    fn new() -> Unprivileged {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("segpool-cli-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let exe = dir.join("segpool");
        std::fs::copy(bin(), &exe).unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        Unprivileged(dir)
    }

    fn run(&self, args: &[&str]) -> Out {
        use std::os::unix::process::CommandExt;
        run(
            Command::new(self.0.join("segpool"))
                .args(args)
                .uid(65534)
                .gid(65534)
                .current_dir("/"),
            None,
        )
    }
}

impl Drop for Unprivileged {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn another_users_pool_is_a_permission_error_naming_the_path() {
    // SAFETY-free check of our uid: only root can make a pool another user
    // (nobody) may not open, and drop to that user.
    let root = std::fs::metadata("/proc/self").map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid() == 0
    });
    if root.ok() != Some(true) {
        eprintln!("skipped: needs root to run segpool as another user");
        return;
    }
    let named = Fixture::start("mixed", true);
    let memfd = Fixture::start("mixed", false);
    let nobody = Unprivileged::new();
    let name = named.name.clone().unwrap();
    let err = nobody.run(&["stat", &name]).failed().to_owned();
    assert!(
        err.contains(&format!("permission denied: /dev/shm{name}")),
        "{err}"
    );
    let err = nobody.run(&["stat", &memfd.target]).failed().to_owned();
    let path = format!("/proc/{}", memfd.target.replace(':', "/fd/"));
    assert!(err.contains(&format!("permission denied: {path}")), "{err}");
    let err = nobody
        .run(&["stat", &memfd.pid.to_string()])
        .failed()
        .to_owned();
    assert!(
        err.contains(&format!("permission denied: /proc/{}/fd", memfd.pid)),
        "{err}"
    );
    // `ls` as nobody: the named pool is seen but skipped, with a note.
    let out = nobody.run(&["ls"]);
    out.ok();
    assert!(
        out.stderr
            .contains(&format!("skipped {name}: permission denied")),
        "{out:#?}"
    );
}

#[test]
fn looking_at_a_pool_changes_none_of_its_bytes() {
    let fx = Fixture::start("full", false);
    let path = format!("/proc/{}", fx.target.replace(':', "/fd/"));
    let before = std::fs::read(&path).unwrap();
    segpool(&["stat", &fx.target]).ok();
    segpool(&["stat", &fx.pid.to_string(), "--json"]).ok();
    segpool(&["top", &fx.target, "-n", "3", "--interval", "0.05"]).ok();
    segpool(&["ls"]).ok();
    let after = std::fs::read(&path).unwrap();
    assert_eq!(before.len(), after.len());
    // Not assert_eq!: a diff of 300 KiB of bytes would drown the message.
    let first = before.iter().zip(&after).position(|(a, b)| a != b);
    assert_eq!(first, None, "the pool changed at byte {first:?}");
}
