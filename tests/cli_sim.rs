//! End-to-end tests of `imlab sim run` and `imlab sim sweep`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use assert_cmd::cargo::cargo_bin;

fn imlab(args: &[&str]) -> Output {
    Command::new(cargo_bin("imlab"))
        .args(args)
        .output()
        .unwrap()
}

/// Writes a scenario file into a temporary directory that lives as long as the guard.
fn write_scenario(name: &str, text: &str) -> (common::KeptOnPanic, PathBuf) {
    let dir = common::temp_dir("cli-sim", name);
    let file = dir.path().join(name);
    std::fs::write(&file, text).unwrap();
    (dir, file)
}

const SMALL: &str = r#"
duration = "10m"
quiet = "2m"
[[devices]]
name = "phones"
count = 6
carrier = "us-lte"
traffic = { one_to_one_per_hour = 30.0 }
"#;

/// A store that does not survive a crash, while half the users are offline (and the push
/// service is down, so nothing wakes them): the messages waiting in their inboxes really are
/// lost. With `store = "memory"` that is volatile loss by design, reported beside the
/// verdicts; with the durable store and `--plant volatile-store` (its disk lost in the crash)
/// it is a violation of `no_acked_loss`.
const LOSSY: &str = r#"
duration = "20m"
quiet = "3m"
[server]
store = "STORE"
[[devices]]
name = "senders"
count = 4
carrier = "us-lte"
traffic = { one_to_one_per_hour = 60.0 }
[[devices]]
name = "sleepers"
count = 4
carrier = "us-lte"
app_states = [{ state = "inactive", for = "2h" }]
[[faults]]
kind = "server_crash"
at = "10m"
duration = "10s"
[[faults]]
kind = "push_outage"
at = "1s"
duration = "19m"
"#;

/// `imlab sim run FILE --seed SEED --out OUT`.
fn run_with_out(file: &Path, seed: &str, out: &Path) -> Output {
    imlab(&[
        "sim",
        "run",
        file.to_str().unwrap(),
        "--seed",
        seed,
        "--out",
        out.to_str().unwrap(),
    ])
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn run_prints_seed_hash_verdicts_metrics_and_writes_results() {
    let (_file_guard, file) = write_scenario("small.toml", SMALL);
    let out = file.with_extension("out");
    let trace = file.with_extension("jsonl");
    let output = imlab(&[
        "sim",
        "run",
        file.to_str().unwrap(),
        "--seed",
        "5",
        "--out",
        out.to_str().unwrap(),
        "--trace",
        trace.to_str().unwrap(),
    ]);
    let text = stdout(&output);
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The build beside the seed, as `--version` names it.
    assert!(
        text.contains(&format!("\nseed: 5\nbuild: {}\n", common::build_name())),
        "{text}"
    );
    let hash_line = text
        .lines()
        .find(|l| l.starts_with("trace_hash: "))
        .unwrap();
    for name in [
        "no_acked_loss",
        "no_duplicates",
        "seq_monotonic",
        "sender_order",
        "idempotent_send",
        "convergence",
    ] {
        assert!(text.contains(&format!("invariant {name}: ok")), "{text}");
    }
    assert!(text.contains("delay_ms: p50 "), "{text}");
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(results["seed"], 5);
    assert_eq!(results["commit"], common::build_commit(), "{results}");
    assert_eq!(
        format!("trace_hash: {}", results["trace_hash"].as_str().unwrap()),
        hash_line
    );
    assert!(results["metrics"]["all"]["messages_sent"].as_u64().unwrap() > 0);
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert!(csv.starts_with("group,carrier,heartbeat,devices,"), "{csv}");
    // storms.csv: the busiest second in it is the one results.json names.
    let storms = std::fs::read_to_string(out.join("storms.csv")).unwrap();
    let mut lines = storms.lines();
    assert_eq!(lines.next(), Some("second,logins,accepts"));
    let rows: Vec<Vec<u64>> = lines
        .map(|line| line.split(',').map(|n| n.parse().unwrap()).collect())
        .collect();
    let busiest = rows.iter().map(|row| row[2]).max().unwrap();
    assert!(busiest > 0, "{storms}");
    assert_eq!(results["metrics"]["storms"]["accepts_per_s_peak"], busiest);
    assert!(
        text.contains(&format!("server: peak {busiest} accepts/s")),
        "{text}"
    );
    let first_trace_line = std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .to_string();
    assert!(
        first_trace_line.starts_with("{\"at_ms\":"),
        "{first_trace_line}"
    );

    // The same seed from another process replays the same trace.
    let again = stdout(&imlab(&[
        "sim",
        "run",
        file.to_str().unwrap(),
        "--seed",
        "5",
    ]));
    assert!(again.contains(hash_line), "{again}");
}

#[test]
fn a_violation_exits_1_with_the_replay_command() {
    let (_file_guard, file) = write_scenario("lossy.toml", &LOSSY.replace("STORE", "durable"));
    let args = ["sim", "run", file.to_str().unwrap(), "--seed", "2"];
    let output = imlab(&args);
    let text = stdout(&output);
    assert!(
        output.status.success(),
        "a durable store loses nothing: {text}"
    );
    let output = imlab(&[&args[..], &["--plant", "volatile-store"]].concat());
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("invariant no_acked_loss: VIOLATED (message "),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "replay: imlab sim run {} --seed 2 --plant volatile-store",
            file.display()
        )),
        "{text}"
    );
}

/// The replay line carries every flag that changes the run (`--devices`, `--duration` as one
/// shell word, `--plant`), and running it gives the same trace.
#[test]
fn the_replay_line_reproduces_a_run_with_overrides_exactly() {
    let (_file_guard, file) = write_scenario("lossy.toml", &LOSSY.replace("STORE", "durable"));
    let output = imlab(&[
        "sim",
        "run",
        file.to_str().unwrap(),
        "--seed",
        "2",
        "--devices",
        "6",
        "--duration",
        "12m 30s",
        "--plant",
        "volatile-store",
    ]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("(6 devices, 750s +"), "{text}");
    let replay = text
        .lines()
        .find_map(|l| l.strip_prefix("replay: imlab "))
        .unwrap_or_else(|| panic!("no replay line: {text}"));
    assert_eq!(
        replay,
        format!(
            "sim run {} --seed 2 --devices 6 --duration 12m30s --plant volatile-store",
            file.display()
        )
    );
    let again = imlab(&replay.split(' ').collect::<Vec<_>>());
    let again_text = stdout(&again);
    assert_eq!(again.status.code(), Some(1), "{again_text}");
    let hash = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("trace_hash: "))
            .map(str::to_string)
    };
    assert!(hash(&text).is_some());
    assert_eq!(hash(&text), hash(&again_text), "{again_text}");
    // Without the overrides, a different run.
    let plain = imlab(&["sim", "run", file.to_str().unwrap(), "--seed", "2"]);
    assert_ne!(hash(&text), hash(&stdout(&plain)));
}

#[test]
fn a_volatile_stores_crash_loss_is_reported_apart_from_the_verdicts() {
    let (_file_guard, file) = write_scenario("volatile.toml", &LOSSY.replace("STORE", "memory"));
    let out = file.with_extension("out");
    let output = run_with_out(&file, "2", &out);
    let text = stdout(&output);
    assert!(output.status.success(), "{text}");
    assert!(text.contains("invariant no_acked_loss: ok"), "{text}");
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let deliveries = results["volatile_loss"]["deliveries"].as_u64().unwrap();
    let messages = results["volatile_loss"]["messages"].as_u64().unwrap();
    // The sleepers' inboxes held messages acked before the crash: each lost once per sleeper.
    assert!(messages > 0 && deliveries >= messages, "{results}");
    assert!(
        text.contains(&format!(
            "volatile loss: {deliveries} deliveries of {messages} acked messages"
        )),
        "{text}"
    );
}

#[test]
fn sweep_reports_failing_seeds_and_a_summary() {
    let (_lossy_guard, lossy) =
        write_scenario("lossy-sweep.toml", &LOSSY.replace("STORE", "durable"));
    let output = imlab(&[
        "sim",
        "sweep",
        lossy.to_str().unwrap(),
        "--seeds",
        "1..3",
        "--jobs",
        "2",
        "--plant",
        "volatile-store",
    ]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    // The header names the build the seeds' hashes hold for.
    assert!(
        text.contains(&format!("2 at a time, build {}\n", common::build_name())),
        "{text}"
    );
    assert!(text.contains("seed 1: FAILED (no_acked_loss"), "{text}");
    assert!(text.contains("seeds: 3, failed: 3"), "{text}");

    let (_small_guard, small) = write_scenario("small-sweep.toml", SMALL);
    let output = imlab(&["sim", "sweep", small.to_str().unwrap(), "--seeds", "1..2"]);
    assert!(output.status.success());
    assert!(stdout(&output).contains("seeds: 2, failed: 0"));
}

#[test]
fn a_bad_scenario_is_a_clear_error() {
    let (_file_guard, file) = write_scenario(
        "bad.toml",
        &SMALL.replace("count = 6", "count = 6\nspeed = 1"),
    );
    let output = imlab(&["sim", "run", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("bad.toml") && stderr.contains("speed"),
        "{stderr}"
    );
    let output = imlab(&["sim", "run", Path::new("/no/such.toml").to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&output.stderr).contains("/no/such.toml"));
}

#[test]
fn heartbeat_compare_writes_the_report() {
    let out_guard = common::temp_dir("cli-sim", "heartbeat");
    let out = out_guard.path().join("out");
    let output = imlab(&[
        "heartbeat",
        "compare",
        "--strategies",
        "wechat,fixed:28m",
        "--profiles",
        "cmcc-3g",
        "--devices",
        "2",
        "--duration",
        "1h",
        "--out",
        out.to_str().unwrap(),
    ]);
    let text = stdout(&output);
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        text.contains("fixed:28m") && text.contains("cmcc-3g"),
        "{text}"
    );
    for file in [
        "heartbeat.csv",
        "intervals.csv",
        "battery.png",
        "battery.svg",
        "pareto.svg",
        "index.html",
    ] {
        let bytes = std::fs::metadata(out.join(file))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(bytes > 0, "{file} missing or empty");
    }
    let csv = std::fs::read_to_string(out.join("heartbeat.csv")).unwrap();
    assert!(csv.lines().count() == 3, "{csv}");
    // `imlab report DIR` regenerates the same page from the results files.
    let page = std::fs::read_to_string(out.join("index.html")).unwrap();
    std::fs::remove_file(out.join("index.html")).unwrap();
    let output = imlab(&["report", out.to_str().unwrap()]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(out.join("index.html")).unwrap(),
        page
    );
    let output = imlab(&["report", "/no/such/dir"]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("/no/such/dir"));

    let output = imlab(&[
        "heartbeat",
        "compare",
        "--strategies",
        "sometimes",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("sometimes"));
}

/// A sweep in three shards, merged: the merged summary equals the unsharded sweep's (same
/// failing seeds with the same replay lines, same spread), and merging refuses a missing
/// shard, a seed twice and a shard of another sweep, naming the directories.
#[test]
fn sharded_sweeps_merge_into_the_unsharded_sweep() {
    let (_lossy_guard, lossy) =
        write_scenario("lossy-shard.toml", &LOSSY.replace("STORE", "durable"));
    let dir = lossy.parent().unwrap().join("shards");
    let _ = std::fs::remove_dir_all(&dir);
    let shard = |spec: &str, name: &str| {
        let out = dir.join(name);
        let output = imlab(&[
            "sim",
            "sweep",
            lossy.to_str().unwrap(),
            "--seeds",
            "1..4",
            "--shard",
            spec,
            "--jobs",
            "1",
            "--plant",
            "volatile-store",
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
        out.to_str().unwrap().to_string()
    };
    let (s0, s1, s2) = (shard("0/3", "s0"), shard("1/3", "s1"), shard("2/3", "s2"));
    assert!(
        std::fs::read_to_string(Path::new(&s0).join("sweep.csv"))
            .unwrap()
            .lines()
            .skip(1)
            .map(|l| l.split(',').next().unwrap().to_string())
            .eq(["1", "4"])
    );
    let merged = dir.join("merged");
    let output = imlab(&[
        "sim",
        "sweep",
        "merge",
        &s0,
        &s1,
        &s2,
        "--out",
        merged.to_str().unwrap(),
    ]);
    let merged_text = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{merged_text}");
    let whole = imlab(&[
        "sim",
        "sweep",
        lossy.to_str().unwrap(),
        "--seeds",
        "1..4",
        "--jobs",
        "2",
        "--plant",
        "volatile-store",
    ]);
    let summary = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| {
                l.starts_with("  ") || l.contains("across seeds") || l.starts_with("seeds:")
            })
            .map(str::to_string)
            .collect()
    };
    assert_eq!(summary(&merged_text), summary(&stdout(&whole)));
    assert!(merged_text.contains("seeds: 4, failed: 4"), "{merged_text}");
    assert!(
        merged_text.contains("--plant volatile-store"),
        "{merged_text}"
    );

    let error = |args: &[&str]| {
        let output = imlab(args);
        assert_eq!(output.status.code(), Some(1));
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let missing = error(&["sim", "sweep", "merge", &s0, &s2]);
    assert!(
        missing.contains("seeds missing: 2") && missing.contains("1/3"),
        "{missing}"
    );
    let twice = error(&["sim", "sweep", "merge", &s0, &s1, &s2, &s1]);
    assert!(
        twice.contains("is in both") && twice.contains("s1"),
        "{twice}"
    );
    let (_other_guard, other) = write_scenario("other-shard.toml", SMALL);
    let other_out = dir.join("other");
    imlab(&[
        "sim",
        "sweep",
        other.to_str().unwrap(),
        "--seeds",
        "1..4",
        "--shard",
        "1/3",
        "--out",
        other_out.to_str().unwrap(),
    ]);
    let mixed = error(&[
        "sim",
        "sweep",
        "merge",
        &s0,
        other_out.to_str().unwrap(),
        &s2,
    ]);
    assert!(
        mixed.contains("different sweep") && mixed.contains("scenario_hash"),
        "{mixed}"
    );
    // A shard run by another build: refused, unless mixed builds are allowed; the merged
    // sweep.json then names both builds.
    let meta_file = Path::new(&s1).join("sweep.json");
    let mut meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&meta_file).unwrap()).unwrap();
    assert_eq!(meta["commit"], common::build_commit(), "{meta}");
    meta["commit"] = "0123456789ab".into();
    std::fs::write(&meta_file, meta.to_string()).unwrap();
    let other_build = error(&["sim", "sweep", "merge", &s0, &s1, &s2]);
    assert!(
        other_build.contains("commit") && other_build.contains("0123456789ab"),
        "{other_build}"
    );
    let mixed_out = dir.join("mixed");
    let output = imlab(&[
        "sim",
        "sweep",
        "merge",
        &s0,
        &s1,
        &s2,
        "--allow-mixed-builds",
        "--out",
        mixed_out.to_str().unwrap(),
    ]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("different builds"), "{text}");
    assert_eq!(summary(&text), summary(&merged_text));
    let mixed_meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(mixed_out.join("sweep.json")).unwrap())
            .unwrap();
    let commits = mixed_meta["commit"].as_str().unwrap();
    assert!(
        commits.contains("0123456789ab") && commits.contains(&common::build_commit()),
        "{mixed_meta}"
    );
    let bad = imlab(&[
        "sim",
        "sweep",
        lossy.to_str().unwrap(),
        "--seeds",
        "1..4",
        "--shard",
        "3/3",
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("below the count"));
}

/// `sim fuzz` with a planted bug finds a failing case, shrinks it to a smaller scenario that
/// still fails, and its replay line reproduces the failure.
#[test]
fn fuzz_finds_shrinks_and_replays_a_planted_bug() {
    let out_guard = common::temp_dir("cli-sim", "fuzz");
    let out = out_guard.path().join("out");
    // A known failing case (fuzz seed 1 finds it at case 19): seed 1's cases 19..20.
    let output = imlab(&[
        "sim",
        "fuzz",
        "--seed",
        "1",
        "--first-case",
        "19",
        "--cases",
        "1",
        "--jobs",
        "2",
        "--shrink-runs",
        "12",
        "--plant",
        "volatile-store",
        "--out",
        out.to_str().unwrap(),
    ]);
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("violation: case 19 seed ") && text.contains(": no_acked_loss: "),
        "{text}"
    );
    let replay = text
        .lines()
        .find_map(|l| l.strip_prefix("replay: imlab "))
        .unwrap();
    let original = std::fs::read_to_string(out.join("original.toml")).unwrap();
    let shrunk = std::fs::read_to_string(out.join("shrunk.toml")).unwrap();
    assert!(shrunk.len() < original.len(), "{shrunk}");
    let again = imlab(&replay.split(' ').collect::<Vec<_>>());
    let again_text = stdout(&again);
    assert_eq!(again.status.code(), Some(1), "{again_text}");
    assert!(
        again_text.contains("invariant no_acked_loss: VIOLATED"),
        "{again_text}"
    );
}

/// `--progress` draws on a terminal (here a pseudo-terminal from util-linux's `script`) and
/// stays silent when stderr is a pipe.
#[test]
fn progress_shows_on_a_terminal_only() {
    let (_dir, file) = write_scenario("progress.toml", SMALL);
    let file = file.display().to_string();
    let piped = imlab(&["sim", "run", &file, "--progress"]);
    assert!(piped.status.success(), "{piped:?}");
    let stderr = String::from_utf8_lossy(&piped.stderr);
    assert!(
        !stderr.contains("simulated") && !stderr.contains("ETA"),
        "progress drawn into a pipe: {stderr}"
    );

    let command = format!("{} sim run {file} --progress", cargo_bin("imlab").display());
    let terminal = Command::new("script")
        .args(["--quiet", "--return", "--command", &command, "/dev/null"])
        .output()
        .expect("util-linux script runs");
    assert!(terminal.status.success(), "{terminal:?}");
    let screen = String::from_utf8_lossy(&terminal.stdout);
    assert!(
        screen.contains("12m simulated") && screen.contains("events/s") && screen.contains("ETA"),
        "no progress on the terminal: {screen}"
    );
    assert!(screen.contains("invariant no_acked_loss: ok"), "{screen}");

    let quiet = Command::new("script")
        .args([
            "--quiet",
            "--return",
            "--command",
            &command.replace(" --progress", ""),
            "/dev/null",
        ])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&quiet.stdout).contains("events/s"),
        "a bar without --progress"
    );
}

/// Two server crashes among twelve phones, half of whose apps are killed at the second: the
/// storms the run page must show.
const CRASHES: &str = r#"
duration = "12m"
quiet = "2m"
[[devices]]
name = "phones"
count = 12
carrier = "us-lte"
traffic = { one_to_one_per_hour = 30.0 }
[[faults]]
kind = "server_crash"
at = "3m"
every = "5m"
duration = "20s"
[[faults]]
kind = "app_kill"
target = "phones"
at = "8m"
duration = "3m"
fraction = 0.5
"#;

#[test]
fn the_run_page_shows_every_crash_and_its_storm() {
    let (_file_guard, file) = write_scenario("crashes.toml", CRASHES);
    let out = file.with_extension("out");
    let output = run_with_out(&file, "2", &out);
    let text = stdout(&output);
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains(&format!("report: {}", out.join("index.html").display())),
        "{text}"
    );
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let crashes = results["metrics"]["storms"]["crashes"].as_array().unwrap();
    assert_eq!(crashes.len(), 2, "{results}");
    let page = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(
        page.contains("<h1>imlab sim run: crashes (seed 2)</h1>"),
        "{page}"
    );
    assert!(page.contains("every invariant held"));
    assert!(page.contains("imlab sim run ") && page.contains("--seed 2"));
    // One chart over the run and one per crash, each drawn and inlined.
    for chart in ["storms_over_run", "storm_1", "storm_2"] {
        assert!(out.join(format!("{chart}.svg")).exists(), "{chart}");
        assert!(page.contains(&format!("<h2 id=\"{chart}\">")), "{chart}");
    }
    assert!(!out.join("storm_3.svg").exists());
    assert!(
        page.contains("Crash 2 at 480 s"),
        "the second chart's title"
    );
    // Each crash's row of the table carries results.json's numbers; the second names the
    // devices whose app was killed before they were back.
    assert_eq!(crashes[0]["devices_left"], 0, "{results}");
    assert!(
        crashes[1]["devices_left"].as_u64().unwrap() > 0,
        "{results}"
    );
    for (n, crash) in crashes.iter().enumerate() {
        let left = match crash["devices_left"].as_u64().unwrap() {
            0 => String::new(),
            left => format!(" ({left} stopped trying)"),
        };
        let row = format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{} of {}{left}</td><td>{:.1}</td>",
            n + 1,
            crash["crashed_at_s"].as_f64().unwrap(),
            crash["restarted_at_s"].as_f64().unwrap(),
            crash["devices_back"],
            crash["devices_connected"],
            crash["back_50_s"].as_f64().unwrap(),
        );
        assert!(page.contains(&row), "{row} in\n{page}");
    }
    // The server's counters, summed over its three incarnations, in the summary.
    let server = &results["metrics"]["server"];
    let logins = &server["logins"];
    let stored = &server["messages_stored"];
    assert!(
        page.contains(&format!(
            "<td>server</td><td>logins {logins}, stored {stored}, "
        )),
        "{page}"
    );
    let peak = &results["metrics"]["storms"]["accepts_per_s_peak"];
    assert!(
        page.contains(&format!(
            "<td>most accepts in one second (server)</td><td>{peak}</td>"
        )),
        "{page}"
    );

    // `imlab report DIR` draws the same page from the run's files alone.
    std::fs::remove_file(out.join("index.html")).unwrap();
    std::fs::remove_file(out.join("storm_2.svg")).unwrap();
    let output = imlab(&["report", out.to_str().unwrap()]);
    assert!(output.status.success(), "{}", stdout(&output));
    assert_eq!(
        std::fs::read_to_string(out.join("index.html")).unwrap(),
        page
    );
    assert!(out.join("storm_2.svg").exists());

    // A run directory without storms.csv (an older imlab's) is named as such.
    std::fs::remove_file(out.join("storms.csv")).unwrap();
    let output = imlab(&["report", out.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("a simulation run without storms.csv"),
        "{stderr}"
    );
}
