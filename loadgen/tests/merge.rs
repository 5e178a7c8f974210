//! `imlab load merge` refuses runs against different targets unless told they are one
//! service, and adds the refusal counts of the runs it merges.

use std::path::{Path, PathBuf};

use imlab_loadgen::merge::{Targets, merge};
use imlab_loadgen::results::{LoadResults, Provenance, write_json};

/// Two runs' directories and the merge's, under `root`.
fn two_runs_and_out(root: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (root.join("a"), root.join("b"), root.join("out"))
}

fn run(dir: &Path, target: &str, refused: u64) {
    run_as(dir, target, refused, "imlab");
}

fn run_as(dir: &Path, target: &str, refused: u64, protocol: &str) {
    let mut results = LoadResults {
        schema_version: 3,
        target: target.to_string(),
        protocol: protocol.into(),
        transport: "tcp".into(),
        qos: None,
        tls: false,
        provenance: Provenance::default(),
        phase: "done".into(),
        clients: 10,
        msg_rate: 100.0,
        pattern: "one-to-one".into(),
        heartbeat: "fixed:30s".into(),
        elapsed_s: 5.0,
        connected_now: 10,
        messages: Default::default(),
        connections: Default::default(),
        latency_ms: Default::default(),
        carriers: Vec::new(),
        lost_deliveries: Vec::new(),
        target_addresses: Vec::new(),
    };
    results.messages.refused = refused;
    results
        .messages
        .refusals_by_cause
        .insert("rate_limited".into(), refused * 2);
    write_json(dir, &results).unwrap();
    imlab_loadgen::histograms::write(dir, &[], std::time::Duration::from_secs(5)).unwrap();
}

#[test]
fn runs_against_different_targets_need_force() {
    let root = tempfile::tempdir().unwrap();
    let (a, b, out) = two_runs_and_out(root.path());
    run(&a, "127.0.0.1:7400", 1);
    run(&b, "127.0.0.2:7400", 2);
    let dirs = [a.clone(), b.clone()];
    let error = merge(&dirs, &out, Targets::MustMatch).unwrap_err();
    assert!(
        error.contains("ran against 127.0.0.1:7400 but")
            && error.contains("against 127.0.0.2:7400")
            && error.contains("--force"),
        "{error}"
    );
    assert!(!out.join("results.json").exists(), "nothing merged");

    let merged = merge(&dirs, &out, Targets::MayDiffer).unwrap();
    assert_eq!(merged.target, "127.0.0.1:7400,127.0.0.2:7400");
    assert_eq!(merged.messages.refused, 3);
    assert_eq!(merged.messages.refusals_by_cause["rate_limited"], 6);

    // Same target: merged without a word.
    run(&b, "127.0.0.1:7400", 2);
    let merged = merge(&dirs, &out, Targets::MustMatch).unwrap();
    assert_eq!(merged.clients, 20);
}

#[test]
fn runs_of_different_protocols_are_never_merged() {
    let root = tempfile::tempdir().unwrap();
    let (a, b, out) = two_runs_and_out(root.path());
    run_as(&a, "127.0.0.1:7400", 0, "imlab");
    run_as(&b, "127.0.0.1:7400", 0, "mqtt");
    for targets in [Targets::MustMatch, Targets::MayDiffer] {
        let error = merge(&[a.clone(), b.clone()], &out, targets).unwrap_err();
        assert!(
            error.contains("spoke imlab over tcp but") && error.contains("spoke mqtt over tcp"),
            "{error}"
        );
    }
    assert!(!out.join("results.json").exists(), "nothing merged");
}

/// Crossing records a worker could not keep reach the merged results and their summary:
/// the deliveries they concern are pending, counted as unrecorded.
#[test]
fn crossing_records_a_worker_could_not_keep_are_reported_by_the_merge() {
    use imlab_loadgen::crossings::Crossings;
    let root = tempfile::tempdir().unwrap();
    let (a, b, out) = two_runs_and_out(root.path());
    run(&a, "127.0.0.1:7400", 0);
    run(&b, "127.0.0.1:7400", 0);
    let worker = |first_client: u32, owed_dropped: u64| Crossings {
        run_tag: "r1".into(),
        first_client,
        n_clients: 10,
        started_unix_us: 0,
        stopped_us: 5_000_000,
        synced: Vec::new(),
        carriers: Vec::new(),
        carrier_of_client: Vec::new(),
        resent: Vec::new(),
        owed: Vec::new(),
        received: Vec::new(),
        received_dropped: 1,
        owed_dropped,
        dir: None,
    };
    worker(0, 2).write(&a).unwrap();
    worker(10, 0).write(&b).unwrap();
    let merged = merge(&[a, b], &out, Targets::MustMatch).unwrap();
    let m = &merged.messages;
    assert_eq!((m.unrecorded, m.expected_deliveries, m.pending), (4, 2, 2));
    assert!(
        merged
            .summary()
            .contains("crossing records the workers could not keep: 4"),
        "{}",
        merged.summary()
    );
}

/// A worker that stopped sending at its ledger's bound makes the merged run stopped too, at
/// the first worker's stop.
#[test]
fn the_first_worker_to_stop_sending_stops_the_merged_run() {
    use imlab_loadgen::results::SendingStopped;
    let root = tempfile::tempdir().unwrap();
    let dirs: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|d| root.path().join(d))
        .collect();
    for (dir, at_s) in dirs.iter().zip([None, Some(3.0), Some(2.0)]) {
        run(dir, "127.0.0.1:7400", 0);
        let mut results: LoadResults =
            serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap())
                .unwrap();
        results.messages.sending_stopped = at_s.map(|at_s| SendingStopped {
            at_s,
            open_messages_max: 7,
        });
        write_json(dir, &results).unwrap();
    }
    let merged = merge(&dirs, &root.path().join("out"), Targets::MustMatch).unwrap();
    assert_eq!(
        merged.messages.sending_stopped,
        Some(SendingStopped {
            at_s: 2.0,
            open_messages_max: 7
        })
    );
}

/// The runs' histograms each grew only to their own largest latency: merged, the one with
/// the larger latencies still adds into the one with the smaller, and every count is kept.
#[test]
fn histograms_of_different_ranges_merge_whole() {
    let root = tempfile::tempdir().unwrap();
    let (a, b, out) = two_runs_and_out(root.path());
    let histogram_of = |latencies_us: &[u64]| {
        let mut histogram = imlab_loadgen::histograms::latency();
        for us in latencies_us {
            imlab_loadgen::histograms::record(&mut histogram, *us);
        }
        histogram
    };
    for (dir, latencies) in [(&a, vec![800, 1_200, 5_000]), (&b, vec![900, 2_500_000])] {
        run(dir, "127.0.0.1:7400", 0);
        let deliver = histogram_of(&latencies);
        imlab_loadgen::histograms::write(
            dir,
            &[("deliver", &deliver)],
            std::time::Duration::from_secs(5),
        )
        .unwrap();
    }
    merge(&[a, b], &out, Targets::MustMatch).unwrap();
    let merged = imlab_loadgen::histograms::read(&out.join("histograms.hlog")).unwrap();
    let deliver = &merged["deliver"];
    assert_eq!(deliver.len(), 5);
    assert!(
        deliver.equivalent(deliver.max(), 2_500_000),
        "{}",
        deliver.max()
    );
    assert!(deliver.equivalent(deliver.min(), 800), "{}", deliver.min());
}

/// The runs' seconds add up into the merge's `timeseries.csv`, from each run's start: counts
/// summed, the p99 the highest of the runs', a longer run's last seconds kept; a run without
/// the file adds nothing, and a broken one is named.
#[test]
fn the_runs_seconds_add_up_into_one_timeseries() {
    let root = tempfile::tempdir().unwrap();
    let (a, b, out) = two_runs_and_out(root.path());
    let c = root.path().join("c");
    for dir in [&a, &b, &c] {
        run(dir, "127.0.0.1:7400", 0);
    }
    let header = "second,connected,sent,acked,delivered,disconnects,reconnects,deliver_ms_p99\n";
    std::fs::write(
        a.join("timeseries.csv"),
        format!("{header}0,10,5,4,3,0,0,2.5\n1,9,7,7,8,1,0,40.0\n2,10,0,1,2,0,1,3.0\n"),
    )
    .unwrap();
    std::fs::write(
        b.join("timeseries.csv"),
        format!("{header}0,10,6,6,6,0,0,7.5\n1,10,6,6,5,0,0,1.0\n"),
    )
    .unwrap();
    merge(&[a.clone(), b.clone(), c], &out, Targets::MustMatch).unwrap();
    let text = std::fs::read_to_string(out.join("timeseries.csv")).unwrap();
    assert_eq!(
        text,
        format!("{header}0,20,11,10,9,0,0,7.5\n1,19,13,13,13,1,0,40.0\n2,10,0,1,2,0,1,3.0\n")
    );

    std::fs::write(
        b.join("timeseries.csv"),
        format!("{header}0,10,six,6,6,0,0,7.5\n"),
    )
    .unwrap();
    let error = merge(&[a, b.clone()], &out, Targets::MustMatch).unwrap_err();
    assert!(
        error.contains(&b.join("timeseries.csv").display().to_string()),
        "{error}"
    );
}

/// A run with `carriers` (names, in its order), each with the deliver latencies (µs) given
/// (none: no histograms of them, as a file written before they were saved).
fn run_with_carriers(dir: &Path, carriers: &[(&str, Option<&[u64]>)]) {
    use imlab_loadgen::carrier::CarrierResults;
    use imlab_loadgen::histograms::{carrier_tag, latency, record};
    run(dir, "127.0.0.1:7400", 0);
    let file = dir.join("results.json");
    let mut results: LoadResults =
        serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let mut tagged = Vec::new();
    for (k, (name, delivers)) in carriers.iter().enumerate() {
        let mut carrier = CarrierResults {
            name: name.to_string(),
            clients: 5,
            ..CarrierResults::default()
        };
        if let Some(delivers) = delivers {
            let mut histogram = latency();
            for us in *delivers {
                record(&mut histogram, *us);
            }
            carrier.deliver_ms = imlab_loadgen::results::Latency::of(&histogram);
            tagged.push((carrier_tag(k, "deliver"), histogram));
            tagged.push((carrier_tag(k, "reconnect"), latency()));
        }
        results.carriers.push(carrier);
    }
    write_json(dir, &results).unwrap();
    let tagged: Vec<(&str, &hdrhistogram::Histogram<u64>)> =
        tagged.iter().map(|(tag, h)| (tag.as_str(), h)).collect();
    imlab_loadgen::histograms::write(dir, &tagged, std::time::Duration::from_secs(5)).unwrap();
}

/// A carrier's percentiles in a merge come from its histograms added by name, whatever its
/// place in each run; a carrier one run has no histograms of gets none, not that of a part.
#[test]
fn carriers_percentiles_merge_by_name_from_their_histograms() {
    let root = tempfile::tempdir().unwrap();
    let (a, b, out) = two_runs_and_out(root.path());
    let ms = |n: u64| n * 1_000;
    // lte: 1, 2, 3 ms in run a and 100 ms in run b: the merged median (the least value at
    // or above half the counts) is 2 ms, its max 100 ms; wifi: 50 ms in a, b has no
    // histogram of it.
    run_with_carriers(
        &a,
        &[
            ("lte", Some(&[ms(1), ms(2), ms(3)])),
            ("wifi", Some(&[ms(50)])),
        ],
    );
    run_with_carriers(&b, &[("wifi", None), ("lte", Some(&[ms(100)]))]);
    let merged = merge(&[a, b.clone()], &out, Targets::MustMatch).unwrap();
    let carrier = |name: &str| {
        merged
            .carriers
            .iter()
            .find(|c| c.name == name)
            .unwrap()
            .clone()
    };
    let lte = carrier("lte");
    assert_eq!(lte.clients, 10);
    assert_eq!(lte.deliver_ms.count, 4);
    assert!(
        (lte.deliver_ms.p50 - 2.0).abs() < 0.01,
        "{:?}",
        lte.deliver_ms
    );
    assert!(
        (lte.deliver_ms.max - 100.0).abs() < 0.1,
        "{:?}",
        lte.deliver_ms
    );
    assert_eq!(
        carrier("wifi").deliver_ms.count,
        0,
        "a part is not the carrier's"
    );
    // The merged file keeps lte's histogram: merged again with b, it counts b's twice.
    let again = root.path().join("again");
    let merged = merge(&[out, b], &again, Targets::MustMatch).unwrap();
    let lte = merged.carriers.iter().find(|c| c.name == "lte").unwrap();
    assert_eq!(lte.deliver_ms.count, 5);
}
