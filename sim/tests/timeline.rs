//! The timeline of a planted-bug failure (the scenario `imlab sim fuzz` shrank it to): the
//! lanes are the server and the devices the violation names, and the marks of the message it
//! names, and only those, are highlighted; the same scenario without the bug highlights
//! nothing. (`bench/timeline-browser.sh` opens the page in headless Chromium.)

use std::path::Path;

use imlab_sim::Planted;
use imlab_sim::run::{RunOptions, run};
use imlab_sim::scenario::Scenario;

fn timeline(planted: Planted, name: &str) -> (imlab_reports::timeline::Timeline, String) {
    let file =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/timeline/planted-volatile.toml");
    let scenario = Scenario::load(&file).unwrap();
    let dir = tempfile::Builder::new()
        .prefix(&format!("imlab-timeline-{name}-"))
        .tempdir()
        .unwrap();
    let trace = dir.path().join("trace.jsonl");
    let options = RunOptions {
        seed: scenario.seed.unwrap(),
        trace_file: Some(trace.clone()),
        planted,
        ..RunOptions::default()
    };
    let report = run(&scenario, &options, &mut |_| {}).unwrap();
    let built = imlab_sim::timeline::build(&scenario, &report, &trace).unwrap();
    let page = imlab_sim::timeline::write(dir.path(), &scenario, &report, &trace).unwrap();
    let html = std::fs::read_to_string(page).unwrap();
    (built, html)
}

#[test]
fn the_message_that_broke_no_acked_loss_is_highlighted() {
    let (timeline, html) = timeline(
        Planted {
            volatile_store: true,
            ..Planted::default()
        },
        "planted",
    );
    let names: Vec<&str> = timeline.lanes.iter().map(|l| l.name.as_str()).collect();
    assert_eq!(names, ["server", "d2", "d3"]);
    let highlighted: Vec<&str> = timeline
        .lanes
        .iter()
        .flat_map(|l| &l.marks)
        .filter(|m| m.highlight)
        .map(|m| m.label.as_str())
        .collect();
    assert_eq!(highlighted, ["send d3-4", "ack d3-4 seq 7"]);
    // The recipient missing it is the highlighted lane; the server lane shows the crash.
    assert!(timeline.lanes[1].highlight && !timeline.lanes[2].highlight);
    assert!(
        timeline.lanes[0]
            .spans
            .iter()
            .any(|s| s.label == "server_crash")
    );
    assert!(html.contains("Highlighted: message d3-4"), "{html}");
}

#[test]
fn a_clean_run_highlights_nothing() {
    let (timeline, html) = timeline(Planted::default(), "clean");
    assert!(timeline.highlight.is_empty());
    assert!(
        timeline
            .lanes
            .iter()
            .flat_map(|l| &l.marks)
            .all(|m| !m.highlight)
    );
    assert!(timeline.lanes.len() >= 3);
    assert!(!html.contains("Highlighted:"));
}
