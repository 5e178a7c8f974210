//! End-to-end tests of `imlab load` against `imlab serve` on loopback.

mod common;

use std::process::{Command, Output};

use assert_cmd::cargo::cargo_bin;
use common::{ChildGuard, imlab_spawned, serve_on};

/// Starts `imlab serve` on an ephemeral port, guarded; returns it and the address it listens
/// on.
fn serve() -> (ChildGuard, String) {
    serve_on("127.0.0.1:0", &[])
}

fn load(args: &[&str]) -> Output {
    Command::new(cargo_bin("imlab"))
        .arg("load")
        .args(args)
        .output()
        .unwrap()
}

/// What a run printed, stdout then stderr.
fn said(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Reconnects in each second of a run, from its `timeseries.csv` (the seventh column).
fn reconnects_per_second(out: &std::path::Path) -> Vec<u64> {
    std::fs::read_to_string(out.join("timeseries.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|line| line.split(',').nth(6).unwrap().parse().unwrap())
        .collect()
}

/// A results directory to be made by the run, inside a temporary directory that lives as
/// long as the guard.
fn out_dir(name: &str) -> (common::KeptOnPanic, std::path::PathBuf) {
    let guard = common::temp_dir("cli-load", name);
    let out = guard.path().join("out");
    (guard, out)
}

#[test]
fn a_short_load_loses_and_duplicates_nothing() {
    let (mut server, addr) = serve();
    let (_out_guard, out) = out_dir("clean");
    let output = load(&[
        "--target",
        &addr,
        "--clients",
        "200",
        "--duration",
        "3s",
        "--msg-rate",
        "500",
        "--connect-rate",
        "1000",
        // No pause after the last send: the run ends with its last acks and deliveries.
        "--drain",
        "0s",
        "--out",
        out.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    server.kill();
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let messages = &results["messages"];
    assert_eq!(messages["sent"], 1_500, "{results}");
    assert_eq!(messages["acked"], 1_500, "{results}");
    assert_eq!(messages["expected_deliveries"], 1_500, "{results}");
    assert_eq!(messages["lost"], 0, "{results}");
    assert_eq!(messages["duplicated"], 0, "{results}");
    assert_eq!(results["connections"]["peak_concurrent"], 200, "{results}");
    assert!(results["latency_ms"]["deliver"]["count"].as_u64().unwrap() >= 1_500);
    let timeseries = std::fs::read_to_string(out.join("timeseries.csv")).unwrap();
    assert!(
        timeseries.starts_with("second,connected,sent,acked,delivered,"),
        "{timeseries}"
    );
    // The seconds add up to the run: the part of a second after the last whole one, where
    // the last acks and deliveries fell, is a row too.
    let column_sum = |column: usize| -> u64 {
        timeseries
            .lines()
            .skip(1)
            .map(|line| line.split(',').nth(column).unwrap().parse::<u64>().unwrap())
            .sum()
    };
    assert_eq!(
        [column_sum(2), column_sum(3), column_sum(4)],
        [1_500; 3],
        "sent, acked, delivered by second:\n{timeseries}"
    );
    assert!(text.contains("lost 0, duplicated 0"), "{text}");
    for chart in [
        "latency_spectrum",
        "latency_over_time",
        "connections_over_time",
    ] {
        for ext in ["png", "svg", "csv"] {
            let file = out.join(format!("{chart}.{ext}"));
            let bytes = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
            assert!(bytes > 0, "{}", file.display());
        }
    }
    // `imlab report DIR` regenerates the page from the results files alone.
    std::fs::remove_file(out.join("index.html")).unwrap();
    let output = Command::new(cargo_bin("imlab"))
        .args(["report", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let page = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(
        page.contains("<svg") && page.contains("200 clients"),
        "the page embeds its charts"
    );
}

#[test]
fn a_one_thread_durable_server_loses_nothing() {
    // `--threads 1` runs every connection on one thread, and the durable store's commits on
    // the runtime's blocking pool beside it: every send is acked once stored and delivered.
    // The generator runs its clients on one thread too (`imlab load --threads 1`).
    let data = common::temp_dir("cli-load", "one-thread-data");
    let (_server, addr) = common::serve_guarded(&[
        "--threads",
        "1",
        "--data-dir",
        data.path().to_str().unwrap(),
    ]);
    let (_out_guard, out) = out_dir("one-thread");
    let output = load(&[
        "--target",
        &addr,
        "--clients",
        "100",
        "--duration",
        "2s",
        "--msg-rate",
        "300",
        "--drain",
        "2s",
        "--threads",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]);
    let (stdout, stderr) = common::text(&output);
    assert!(output.status.success(), "{stdout}{stderr}");
    let results = common::results(&out);
    assert_eq!(results["provenance"]["threads"], 1, "{results}");
    let messages = &results["messages"];
    assert_eq!(messages["sent"], 600, "{results}");
    assert_eq!(messages["acked"], 600, "{results}");
    assert_eq!(messages["delivered"], 600, "{results}");
    assert_eq!(messages["lost"], 0, "{results}");
    assert_eq!(messages["duplicated"], 0, "{results}");
}

#[test]
fn groups_fan_out_to_every_member() {
    let (mut server, addr) = serve();
    let (_out_guard, out) = out_dir("groups");
    let output = load(&[
        "--target",
        &addr,
        "--clients",
        "40",
        "--duration",
        "2s",
        "--msg-rate",
        "50",
        "--pattern",
        "group:10",
        "--drain",
        "2s",
        "--out",
        out.to_str().unwrap(),
    ]);
    server.kill();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{text}");
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    // Each of the 100 messages owes a delivery to the 9 other members of its group.
    assert_eq!(results["messages"]["expected_deliveries"], 900, "{results}");
    assert_eq!(results["messages"]["lost"], 0, "{results}");
}

#[test]
fn bad_targets_and_arguments_are_clear_errors_and_keep_partial_results() {
    // Nothing listens on this port.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = listener.local_addr().unwrap().to_string();
    drop(listener);
    let (_out_guard, out) = out_dir("dead");
    let output = load(&[
        "--target",
        &dead,
        "--clients",
        "5",
        "--duration",
        "1s",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("no client could log in to {dead}")),
        "{stderr}"
    );
    assert!(stderr.contains("refused"), "{stderr}");
    assert!(
        out.join("results.json").exists(),
        "partial results are kept"
    );

    // A target that speaks another protocol: it answers, but not in frames.
    let http = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let http_addr = http.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for stream in http.incoming().take(50) {
            use std::io::Write;
            let mut stream = stream.unwrap();
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n");
        }
    });
    let output = load(&["--target", &http_addr, "--clients", "3", "--duration", "1s"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("no client could log in"), "{stderr}");

    for (args, expected) in [
        // Any HOST:PORT is accepted (this test sends nowhere but loopback); one without a
        // port is refused before anything connects.
        (
            vec![
                "--target",
                "127.0.0.1",
                "--clients",
                "2",
                "--duration",
                "1s",
            ],
            "no port",
        ),
        (
            vec![
                "--target",
                "127.0.0.1:7400",
                "--clients",
                "2",
                "--duration",
                "1s",
                "--pattern",
                "ring",
            ],
            "--pattern",
        ),
        (
            vec!["--target", "nowhere", "--clients", "2", "--duration", "1s"],
            "--target",
        ),
    ] {
        let output = load(&args);
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[test]
fn a_server_killed_mid_run_shows_the_drop_the_jittered_return_and_the_real_loss() {
    let (mut server, addr) = serve();
    let (_out_guard, out) = out_dir("kill");
    let clients = 100;
    let mut load = imlab_spawned(&[
        "load",
        "--target",
        &addr,
        "--clients",
        &clients.to_string(),
        "--duration",
        "30s",
        "--msg-rate",
        "100",
        "--drain",
        "5s",
        "--out",
        out.to_str().unwrap(),
    ]);
    // Every client is in once the send phase starts (the live line says so on stderr).
    let _said = load.wait_for_stderr_line(": send at", std::time::Duration::from_secs(60));
    server.kill(); // SIGKILL: no goodbye to anyone
    std::thread::sleep(std::time::Duration::from_secs(1));
    let (_restarted, _) = serve_on(&addr, &[]);
    let output = load.wait_with_output();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let connections = &results["connections"];
    // The spike: every client lost its connection, and every one came back.
    assert!(
        connections["disconnects"].as_u64().unwrap() >= clients,
        "{results}"
    );
    assert!(
        connections["reconnects"].as_u64().unwrap() >= clients,
        "{results}"
    );
    // With jitter, no single second carries the whole storm.
    let reconnects_per_second = reconnects_per_second(&out);
    let busiest = *reconnects_per_second.iter().max().unwrap();
    let seconds_with_reconnects = reconnects_per_second.iter().filter(|n| **n > 0).count();
    assert!(
        busiest < clients / 2,
        "a reconnect storm: {reconnects_per_second:?}"
    );
    assert!(seconds_with_reconnects >= 5, "{reconnects_per_second:?}");
    // The in-memory store died with the process: a message it held undelivered then is lost
    // for good (in most runs there is none: each is delivered within milliseconds). Every
    // recipient was back and synced by the end of the drain, so no missing delivery is left
    // pending, and imlab's protocol allows no loss: every missing one is counted lost.
    let messages = &results["messages"];
    assert_eq!(messages["pending"], 0, "{results}");
    assert_eq!(messages["lost_allowed"], 0, "{results}");
    assert_eq!(messages["duplicated"], 0, "{results}");
    assert!(
        messages["acked"].as_u64().unwrap() >= 2_900,
        "sends resume after the restart: {results}"
    );
    let lost = messages["lost"].as_u64().unwrap();
    assert_eq!(
        output.status.code(),
        Some(if lost > 0 { 1 } else { 0 }),
        "{text}"
    );
}

#[test]
fn results_of_two_generators_merge_with_lossless_histograms() {
    let (mut server, addr) = serve();
    let ((_a_guard, a), (_b_guard, b), (_all_guard, all)) =
        (out_dir("merge-a"), out_dir("merge-b"), out_dir("merge-all"));
    for (dir, rate) in [(&a, "100"), (&b, "200")] {
        let output = load(&[
            "--target",
            &addr,
            "--clients",
            "20",
            "--duration",
            "2s",
            "--msg-rate",
            rate,
            "--drain",
            "1s",
            "--out",
            dir.to_str().unwrap(),
        ]);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stdout)
        );
    }
    server.kill();
    let output = load(&[
        "merge",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--out",
        all.to_str().unwrap(),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let read = |dir: &std::path::Path| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap()
    };
    let (ra, rb, merged) = (read(&a), read(&b), read(&all));
    assert_eq!(merged["messages"]["sent"], 600);
    assert_eq!(merged["clients"], 40);
    let count = |r: &serde_json::Value| r["latency_ms"]["deliver"]["count"].as_u64().unwrap();
    assert_eq!(
        count(&merged),
        count(&ra) + count(&rb),
        "histograms add up exactly"
    );
    let max = |r: &serde_json::Value| r["latency_ms"]["deliver"]["max"].as_f64().unwrap();
    assert_eq!(max(&merged), max(&ra).max(max(&rb)));
    assert!(all.join("histograms.hlog").exists());

    let output = load(&["merge", "/no/such/dir", "--out", all.to_str().unwrap()]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("/no/such/dir"));
}

/// A worker whose own clients are done still takes what the other workers' clients send its
/// clients, to the end: its drain lasts until every worker has drained. Here the two workers
/// of one run are started by hand, worker 1 sending for 1 s and worker 0 for 3 s, so worker
/// 0's last two seconds of messages to worker 1's clients come after worker 1's own drain
/// (without the wait they were counted pending, every recipient online).
#[test]
fn a_worker_listens_until_every_other_worker_has_drained() {
    let (mut server, addr) = serve();
    let (_out_guard, out) = out_dir("drained");
    let workers: Vec<_> = [(0, "3s"), (1, "1s")]
        .into_iter()
        .map(|(index, duration)| {
            let dir = out.join(format!("worker-{index}"));
            common::imlab_spawned(&[
                "load",
                "--target",
                &addr,
                "--clients",
                "20",
                "--duration",
                duration,
                "--msg-rate",
                "100",
                "--drain",
                "0s",
                "--workers",
                "2",
                "--worker-index",
                &index.to_string(),
                "--run-tag",
                "drained1",
                "--first-client",
                &(20 * index).to_string(),
                "--clients-total",
                "40",
                "--out",
                dir.to_str().unwrap(),
            ])
        })
        .collect();
    for worker in workers {
        let output = worker.wait_with_output();
        assert!(output.status.success(), "{}", said(&output));
    }
    server.kill();
    let all = out.join("all");
    let output = load(&[
        "merge",
        out.join("worker-0").to_str().unwrap(),
        out.join("worker-1").to_str().unwrap(),
        "--out",
        all.to_str().unwrap(),
    ]);
    assert!(output.status.success(), "{}", said(&output));
    let results = common::results(&all);
    let messages = &results["messages"];
    assert_eq!(messages["sent"], 400, "{results}");
    assert_eq!(messages["pending"], 0, "{results}");
    assert_eq!(messages["lost"], 0, "{results}");
    assert_eq!(messages["delivered"], 400, "{results}");
}

#[test]
fn workers_and_source_addresses_split_the_load_and_merge_it() {
    let (mut server, addr) = serve();
    let (_out_guard, out) = out_dir("workers");
    let output = load(&[
        "--target",
        &addr,
        "--clients",
        "40",
        "--duration",
        "2s",
        "--msg-rate",
        "100",
        "--workers",
        "2",
        "--threads",
        "3",
        "--source-ips",
        "127.0.0.2-127.0.0.5",
        "--drain",
        "1s",
        "--out",
        out.to_str().unwrap(),
    ]);
    server.kill();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(text.contains("merged from 2 workers"), "{text}");
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(results["clients"], 40, "{results}");
    assert_eq!(results["messages"]["sent"], 200, "{results}");
    assert_eq!(results["messages"]["lost"], 0, "{results}");
    assert!(
        out.join("worker-0/results.json").exists() && out.join("worker-1/results.json").exists()
    );
    // `--threads` reaches every worker: each ran its clients on three runtime threads.
    assert_eq!(results["provenance"]["threads"], 3, "{results}");
    // The workers' seconds add up into the run's, and the charts over time are drawn.
    let sent: Vec<u64> = std::fs::read_to_string(out.join("timeseries.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|line| line.split(',').nth(2).unwrap().parse().unwrap())
        .collect();
    assert_eq!(sent.iter().sum::<u64>(), 200, "sent by second: {sent:?}");
    for chart in ["latency_over_time.png", "connections_over_time.png"] {
        assert!(out.join(chart).exists(), "{chart}");
    }
}

#[test]
fn more_clients_than_one_process_may_open_is_a_clear_error() {
    let output = load(&[
        "--target",
        "127.0.0.1:9",
        "--clients",
        "5000000",
        "--duration",
        "1s",
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("open files") && stderr.contains("--workers"),
        "{stderr}"
    );
    let output = load(&[
        "--target",
        "127.0.0.1:9",
        "--clients",
        "4",
        "--duration",
        "1s",
        "--source-ips",
        "10.0.0.1-10.0.0.4",
    ]);
    assert!(String::from_utf8_lossy(&output.stderr).contains("not a loopback address"));
}

/// A `--workers` run whose merge could not fit this machine's memory is refused before
/// anything connects, naming the flags, instead of being killed at its end: the merge holds
/// each first delivery that crossed between workers (at most 20,000,000 a worker, so here a
/// thousand workers). In one process a settled message keeps nothing (and the reorder map
/// only the pairs in flight), so a run of any length goes ahead (here to find nothing
/// listening).
#[test]
fn a_run_whose_merge_outgrows_the_memory_is_refused_before_it_starts() {
    let run = [
        "--target",
        "127.0.0.1:9",
        "--duration",
        "100000h",
        "--msg-rate",
        "1000000",
    ];
    // Judged before any worker starts (before `--workers` asks for `--out`).
    let output = load(&[&run[..], &["--clients", "2000", "--workers", "1000"]].concat());
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--msg-rate 1000000")
            && stderr.contains("--workers 1000")
            && stderr.contains("MemAvailable")
            && stderr.contains("imlab load merge"),
        "{stderr}"
    );
    let output = load(&[&run[..], &["--clients", "2"]].concat());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("MemAvailable") && stderr.contains("no client could log in"),
        "{stderr}"
    );
}

#[test]
fn messages_cross_between_workers_and_the_merge_judges_each_by_identity() {
    let (_server, addr) = common::serve_guarded(&[]);
    let out = tempfile::tempdir().unwrap();
    let output = load(&[
        "--target",
        &addr,
        "--clients",
        "40",
        "--duration",
        "2s",
        "--msg-rate",
        "200",
        "--workers",
        "2",
        "--drain",
        "1s",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let results = common::results(out.path());
    let messages = &results["messages"];
    assert_eq!(messages["sent"], 400, "{results}");
    assert_eq!(messages["expected_deliveries"], 400, "{results}");
    assert_eq!(messages["delivered"], 400, "{results}");
    assert_eq!(messages["lost"], 0, "{results}");
    assert_eq!(results["latency_ms"]["deliver"]["count"], 400, "{results}");
    // About half of each worker's messages went to the other worker's 20 clients, and every
    // one it owed there is the other's to have received.
    let crossings = |worker: usize| -> serde_json::Value {
        let file = out.path().join(format!("worker-{worker}/crossings.json"));
        serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap()
    };
    let (a, b) = (crossings(0), crossings(1));
    assert_eq!(a["run_tag"], b["run_tag"]);
    assert_eq!(
        (a["first_client"].clone(), b["first_client"].clone()),
        (0.into(), 20.into())
    );
    // Records in the binary files beside it: 32 bytes an owed delivery, 25 a received one.
    let n = |worker: usize, file: &str, bytes: u64| {
        let path = out
            .path()
            .join(format!("worker-{worker}/crossings-{file}.bin"));
        let len = std::fs::metadata(path).unwrap().len();
        assert_eq!(len % bytes, 0, "{file}");
        len / bytes
    };
    let (a_owed, b_owed) = (n(0, "owed", 32), n(1, "owed", 32));
    assert!(a_owed > 50 && b_owed > 50, "{a_owed} {b_owed}");
    assert_eq!(a_owed, n(1, "received", 25));
    assert_eq!(b_owed, n(0, "received", 25));
    let worker_0 = common::results(&out.path().join("worker-0"));
    assert_eq!(
        worker_0["messages"]["expected_deliveries"]
            .as_u64()
            .unwrap()
            + a_owed,
        worker_0["messages"]["sent"].as_u64().unwrap(),
        "{worker_0}"
    );

    // A delivery the receiving worker never saw is lost, named by the merge.
    let received = out.path().join("worker-1/crossings-received.bin");
    let bytes = std::fs::read(&received).unwrap();
    std::fs::write(&received, &bytes[..bytes.len() - 25]).unwrap();
    let remerged = out.path().join("remerged");
    let output = Command::new(cargo_bin("imlab"))
        .args(["load", "merge"])
        .arg(out.path().join("worker-0"))
        .arg(out.path().join("worker-1"))
        .arg("--out")
        .arg(&remerged)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(text.contains("FAILED: 1 deliveries lost"), "{text}");
    assert_eq!(common::results(&remerged)["messages"]["lost"], 1);
}

#[test]
fn connections_only_at_msg_rate_zero_are_held_for_the_duration() {
    let (_server, addr) = serve();
    let (_out_guard, out) = out_dir("no-sends");
    let output = load(&[
        "--target",
        &addr,
        "--clients",
        "20",
        "--duration",
        "2s",
        "--msg-rate",
        "0",
        "--drain",
        "0s",
        "--out",
        out.to_str().unwrap(),
    ]);
    let said = said(&output);
    assert!(output.status.success(), "{said}");
    let results = common::results(&out);
    assert_eq!(results["messages"]["sent"], 0, "{results}");
    assert_eq!(results["connections"]["peak_concurrent"], 20, "{results}");
    // The connections were held for the whole --duration, not dropped once nothing was left
    // to send.
    assert!(results["elapsed_s"].as_f64().unwrap() >= 2.0, "{results}");
}

/// At `--max-open-messages` the run stops sending, drains what it sent (nothing of it
/// lost), and exits INCOMPLETE saying why. With a bound of one message in flight, the first
/// send planned before its predecessor reached its recipient (at 5,000 a second: 0.2 ms
/// apart, under a loopback delivery's round trips) stops it.
#[test]
fn at_its_bound_of_messages_in_flight_the_run_stops_sending_and_says_so() {
    let (_server, addr) = serve();
    let (_out_guard, out) = out_dir("ledger-full");
    let output = load(&[
        "--target",
        &addr,
        "--clients",
        "20",
        "--duration",
        "2s",
        "--msg-rate",
        "5000",
        "--drain",
        "1s",
        "--max-open-messages",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]);
    let said = said(&output);
    assert_eq!(output.status.code(), Some(3), "{said}");
    assert!(
        said.contains("INCOMPLETE") && said.contains("1 messages in flight (--max-open-messages)"),
        "{said}"
    );
    let results = common::results(&out);
    let messages = &results["messages"];
    assert_eq!(
        messages["sending_stopped"]["open_messages_max"], 1,
        "{results}"
    );
    let sent = messages["sent"].as_u64().unwrap();
    assert!((1..10_000).contains(&sent), "{results}");
    assert_eq!(messages["acked"], sent, "{results}");
    assert_eq!(messages["delivered"], sent, "{results}");
    assert_eq!(messages["lost"], 0, "{results}");
}

#[test]
fn without_jitter_a_restart_brings_every_client_back_in_one_burst() {
    let (mut server, addr) = serve();
    let (_out_guard, out) = out_dir("no-jitter");
    let clients = 100u64;
    let mut load = imlab_spawned(&[
        "load",
        "--target",
        &addr,
        "--clients",
        &clients.to_string(),
        "--duration",
        "6s",
        "--msg-rate",
        "0",
        "--drain",
        "0s",
        "--reconnect-backoff",
        "200ms,200ms,0s",
        "--out",
        out.to_str().unwrap(),
    ]);
    // Every client is in once the send phase starts (the live line says so on stderr).
    let said = load.wait_for_stderr_line(": send at", std::time::Duration::from_secs(60));
    server.kill(); // SIGKILL: every connection drops at once
    let (_restarted, _) = serve_on(&addr, &[]);
    let output = load.wait_with_output();
    assert!(output.status.success(), "{:#?}", said.join().unwrap());
    let results = common::results(&out);
    assert!(
        results["connections"]["reconnects"].as_u64().unwrap() >= clients,
        "{results}"
    );
    // No jitter: every client tried again 200 ms after the drop, so the reconnects fall in
    // one second, or two where the burst straddles a second's boundary (with the default
    // 0-19 s of jitter they spread over many seconds, see the test above).
    let per_second = reconnects_per_second(&out);
    let burst = per_second
        .windows(2)
        .map(|pair| pair[0] + pair[1])
        .max()
        .unwrap();
    assert!(burst >= clients, "reconnects per second: {per_second:?}");
}

/// Starts `imlab proxy` (the home-wifi carrier model) on a second loopback address in front
/// of `upstream`, guarded: another address of the same service, as a gateway tier has.
fn gateway_in_front_of(upstream: &str) -> (ChildGuard, String) {
    use std::io::BufRead;
    let mut proxy = ChildGuard(
        Command::new(cargo_bin("imlab"))
            .args(["proxy", "--listen", "127.0.0.2:0", "--upstream", upstream])
            .args(["--profile", "home-wifi", "--seed", "3"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut lines = std::io::BufReader::new(proxy.0.stdout.take().unwrap()).lines();
    let line = lines.next().unwrap().unwrap();
    let addr = line
        .strip_prefix("proxy on ")
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or_else(|| panic!("{line}"))
        .to_string();
    (proxy, addr)
}

#[test]
fn a_target_of_several_addresses_deals_the_clients_round_them_past_a_refusing_one() {
    let (mut server, addr) = serve();
    let (_gateway, gateway) = gateway_in_front_of(&addr);
    let refusing = common::closed_port();
    let (_out_guard, out) = out_dir("addresses");
    let target = format!("{addr},{refusing},{gateway}");
    let output = load(&[
        "--target",
        &target,
        "--clients",
        "6",
        "--duration",
        "2s",
        "--msg-rate",
        "12",
        "--workers",
        "2",
        "--drain",
        "2s",
        "--out",
        out.to_str().unwrap(),
    ]);
    server.kill();
    let text = said(&output);
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains(&format!(
            "--target {target}: 3 addresses ({addr}, {refusing}, {gateway})"
        )),
        "{text}"
    );
    let results = common::results(&out);
    assert_eq!(results["target"], target.as_str(), "{results}");
    assert_eq!(results["messages"]["sent"], 24, "{results}");
    assert_eq!(results["messages"]["lost"], 0, "{results}");
    assert_eq!(
        results["messages"]["delivered"], results["messages"]["expected_deliveries"],
        "{results}"
    );
    // Client c (its number in the run, whichever worker holds it) tries address c mod 3
    // first: 0 and 3 the server, 1 and 4 the refusing port and then the gateway after it,
    // 2 and 5 the gateway. Summed over the two workers.
    let by_address: Vec<(String, u64, u64)> = results["target_addresses"]
        .as_array()
        .unwrap_or_else(|| panic!("{results}"))
        .iter()
        .map(|a| {
            (
                a["address"].as_str().unwrap().to_string(),
                a["connects"].as_u64().unwrap(),
                a["connect_failures"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        by_address,
        vec![
            (addr.clone(), 2, 0),
            (refusing.clone(), 0, 2),
            (gateway.clone(), 4, 0)
        ],
        "{results}"
    );
    assert!(
        text.contains(&format!(
            "connects by address: {addr} 2 (0 failed), {refusing} 0 (2 failed), {gateway} 4 (0 failed)"
        )),
        "{text}"
    );
}
