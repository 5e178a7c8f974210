//! Input that used to go silently wrong now errors or warns, naming the input; `--out` is
//! checked before any work, every command; `imlab report` knows a simulation's folder.

mod common;

use std::path::{Path, PathBuf};

use common::{imlab, text};

const SMALL: &str = r#"
duration = "10m"
quiet = "1m"
[[devices]]
name = "phones"
count = 4
carrier = "us-lte"
traffic = { one_to_one_per_hour = 30.0 }
"#;

/// SMALL plus a fault on its own carrier (which a comparison cannot carry over).
const WITH_OUTAGE: &str = r#"
duration = "10m"
quiet = "1m"
[carriers.metro]
preset = "us-lte"
[[devices]]
name = "phones"
count = 4
carrier = "metro"
[[faults]]
kind = "outage"
target = "metro"
at = "5m"
duration = "1m"
[[faults]]
kind = "server_crash"
at = "6m"
duration = "10s"
"#;

fn scenario(dir: &Path, name: &str, text: &str) -> PathBuf {
    let file = dir.join(name);
    std::fs::write(&file, text).unwrap();
    file
}

/// A path that cannot be a directory: below a regular file.
fn unwritable(dir: &Path) -> PathBuf {
    let file = dir.join("a-file");
    std::fs::write(&file, "").unwrap();
    file.join("out")
}

#[test]
fn out_is_checked_before_any_work_and_each_cause_is_said_once() {
    let dir = tempfile::tempdir().unwrap();
    let small = scenario(dir.path(), "small.toml", SMALL);
    let bad = unwritable(dir.path());
    let bad = bad.to_str().unwrap();
    let small = small.to_str().unwrap();
    // The load target has nothing listening: a run that started would fail on it instead.
    let closed = common::closed_port();
    for args in [
        vec!["sim", "run", small, "--out", bad],
        vec!["sim", "sweep", small, "--seeds", "1..2", "--out", bad],
        vec![
            "heartbeat",
            "compare",
            "--profiles",
            "cmcc-3g",
            "--out",
            bad,
        ],
        vec![
            "load",
            "--target",
            &closed,
            "--clients",
            "2",
            "--duration",
            "1s",
            "--out",
            bad,
        ],
        vec![
            "load",
            "--target",
            &closed,
            "--clients",
            "4",
            "--duration",
            "1s",
            "--workers",
            "2",
            "--out",
            bad,
        ],
        vec!["load", "merge", small, "--out", bad],
    ] {
        let output = imlab(&args);
        let (stdout, stderr) = text(&output);
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stdout}{stderr}");
        assert!(
            stderr.starts_with(&format!("Error: --out {bad}: cannot write there: ")),
            "{args:?}: {stderr}"
        );
        assert_eq!(stderr.matches("os error").count(), 1, "{args:?}: {stderr}");
        assert!(stdout.is_empty(), "no work was done: {args:?}: {stdout}");
    }
}

#[test]
fn heartbeat_compare_says_which_faults_of_the_template_it_drops() {
    let dir = tempfile::tempdir().unwrap();
    let template = scenario(dir.path(), "outage.toml", WITH_OUTAGE);
    let out = dir.path().join("report");
    let output = imlab(&[
        "heartbeat",
        "compare",
        "--scenario",
        template.to_str().unwrap(),
        // Spaces after commas are fine.
        "--strategies",
        "wechat, fixed:4m45s",
        "--profiles",
        "cmcc-3g",
        "--devices",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!(
            "warning: --scenario {}: faults[0] (outage): not applied",
            template.display()
        )),
        "{stderr}"
    );
    assert!(
        !stderr.contains("faults[1]"),
        "server_crash carries over: {stderr}"
    );
    assert!(stdout.contains("fixed:4m45s"), "{stdout}");
    // imlab-adaptive did not run: no finding about it against wechat.
    assert!(!stdout.contains("not dominated"), "{stdout}");
}

#[test]
fn sim_run_takes_devices_and_duration_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let file = scenario(dir.path(), "outage.toml", WITH_OUTAGE);
    let output = imlab(&[
        "sim",
        "run",
        file.to_str().unwrap(),
        "--devices",
        "2",
        "--duration",
        "5m30s",
    ]);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.starts_with("scenario: outage (2 devices, 330s + 60s quiet)"),
        "{stdout}"
    );
    assert!(
        stderr.contains("note: --duration 5m 30s: 1 fault(s) of"),
        "the crash at 6m is dropped, said: {stderr}"
    );
}

#[test]
fn a_duration_longer_than_a_run_can_record_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = scenario(dir.path(), "small.toml", SMALL);
    let output = imlab(&["sim", "run", file.to_str().unwrap(), "--duration", "48days"]);
    let (stdout, stderr) = text(&output);
    assert!(!output.status.success(), "{stdout}{stderr}");
    assert!(
        stderr.contains("--duration: a duration of 48.000 days and a quiet period of 0.001 days make 48.001 days, longer than the 48 days"),
        "{stderr}"
    );
    assert!(!stdout.contains("trace_hash"), "nothing ran: {stdout}");
}

#[test]
fn sweep_prints_each_seed_the_spread_and_saves_a_csv() {
    let dir = tempfile::tempdir().unwrap();
    let small = scenario(dir.path(), "small.toml", SMALL);
    let out = dir.path().join("sweep");
    let output = imlab(&[
        "sim",
        "sweep",
        small.to_str().unwrap(),
        "--seeds",
        "1..3",
        "--jobs",
        "2",
        "--out",
        out.to_str().unwrap(),
    ]);
    let (stdout, stderr) = text(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    for seed in 1..=3 {
        assert!(stdout.contains(&format!("seed {seed}: ok (")), "{stdout}");
    }
    assert!(
        stdout.contains("delay_ms p99 across seeds: min "),
        "{stdout}"
    );
    assert!(
        stdout.contains("silent disconnects across seeds: min "),
        "{stdout}"
    );
    let csv = std::fs::read_to_string(out.join("sweep.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 4, "{csv}");
    assert!(
        lines[0].starts_with("seed,verdict,trace_hash,wall_s,delay_ms_p99"),
        "{csv}"
    );
    assert!(lines[1].starts_with("1,ok,"), "{csv}");
}

#[test]
fn presets_are_listed_with_parameters_and_sources() {
    let output = imlab(&["sim", "presets"]);
    let (stdout, _) = text(&output);
    assert!(output.status.success());
    for name in [
        "cmcc-3g",
        "cu-2g",
        "ct-3g",
        "us-lte",
        "home-wifi",
        "subway",
        "elevator",
    ] {
        assert!(
            stdout.contains(&format!("{name}\n  nat ")),
            "{name}: {stdout}"
        );
    }
    assert!(
        stdout.contains("source: China Mobile 2G/3G NAT 5 min"),
        "{stdout}"
    );
}

#[test]
fn serve_refuses_an_empty_secret() {
    let output = imlab(&["serve", "--listen", "127.0.0.1:0", "--auth-secret", ""]);
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--auth-secret") && stderr.contains("is empty"),
        "{stderr}"
    );
}

#[test]
fn serve_refuses_a_store_bound_of_no_messages() {
    let output = imlab(&["serve", "--listen", "127.0.0.1:0", "--max-messages", "0"]);
    let (_, stderr) = text(&output);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("'0' for '--max-messages <N>'"), "{stderr}");
}

#[test]
fn serve_refuses_a_write_buffer_smaller_than_a_frame() {
    let output = imlab(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--write-buffer-bytes",
        "1000",
    ]);
    let (_, stderr) = text(&output);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("--write-buffer-bytes (1000) must be at least --max-frame-bytes"),
        "{stderr}"
    );
}

#[test]
fn help_examples_are_never_wrapped_inside_a_command() {
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["sim", "run", "--help"],
        vec!["sim", "sweep", "--help"],
        vec!["heartbeat", "compare", "--help"],
        vec!["load", "--help"],
    ] {
        let output = imlab(&args);
        let (help, _) = text(&output);
        let examples = &help[help.find("Example").unwrap_or_else(|| panic!("{args:?}"))..];
        let mut lines = examples.lines().skip(1).peekable();
        while let Some(line) = lines.next() {
            if line.is_empty() {
                break;
            }
            assert!(
                line.len() <= 78,
                "{args:?}: too wide for a terminal: {line:?}"
            );
            // A line is a command, or continues one after a ` \`.
            assert!(
                line.starts_with("  imlab ")
                    || line.starts_with("  IMLAB_")
                    || line.starts_with("  RUST_LOG=")
                    || line.starts_with("      --"),
                "{args:?}: a wrapped command: {line:?}"
            );
            if lines
                .peek()
                .is_some_and(|next| next.starts_with("      --"))
            {
                assert!(
                    line.ends_with(" \\"),
                    "{args:?}: {line:?} does not continue"
                );
            }
        }
    }
}
