//! Fuzzes with each planted bug in turn and shrinks what it finds: the table behind
//! `bench/fuzz-planted.sh` (cases to find, scenarios per minute, shrink time and size).
//!
//! Usage: `cargo run --release -p imlab-sim --features planted-bugs --example fuzz_planted --
//! OUT_DIR [BUDGET_PER_BUG]`; the shrunk scenarios are written to OUT_DIR.

use std::time::Duration;

use imlab_sim::Planted;
use imlab_sim::fuzz::{FuzzOptions, fuzz, run_case};

fn bug(name: &'static str) -> (&'static str, Planted) {
    let mut planted = Planted::default();
    match name {
        "ack_before_store" => planted.ack_before_store = true,
        "skip_dedupe" => planted.skip_dedupe = true,
        "push_skips_seq_check" => planted.push_skips_seq_check = true,
        "volatile_store" => planted.volatile_store = true,
        "ack_before_commit" => planted.ack_before_commit = true,
        "weak_link_blind" => planted.weak_link_blind = true,
        "repeats_shown_again" => planted.repeats_shown_again = true,
        "gap_jumps_ahead" => planted.gap_jumps_ahead = true,
        "resends_newest_first" => planted.resends_newest_first = true,
        "no_sync_on_connect" => planted.no_sync_on_connect = true,
        other => panic!("no planted bug {other}"),
    }
    (name, planted)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let out = std::path::PathBuf::from(args.next().expect("usage: fuzz_planted OUT_DIR [BUDGET]"));
    let budget = args.next().map_or(Duration::from_secs(300), |b| {
        humantime::parse_duration(&b).expect("a budget like 5m")
    });
    let only: Vec<String> = args.collect();
    std::fs::create_dir_all(&out).expect("creating OUT_DIR");
    let names = [
        "ack_before_store",
        "skip_dedupe",
        "push_skips_seq_check",
        "volatile_store",
        "ack_before_commit",
        "weak_link_blind",
        "repeats_shown_again",
        "gap_jumps_ahead",
        "resends_newest_first",
        "no_sync_on_connect",
    ];
    println!(
        "| planted bug | found at case | scenarios/min | invariant | shrink s | shrink runs | \
         original | shrunk | shrunk fails |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for name in names
        .into_iter()
        .filter(|n| only.is_empty() || only.iter().any(|o| o == n))
    {
        let (name, planted) = bug(name);
        let options = FuzzOptions {
            seed: 1,
            budget,
            first_case: 0,
            cases_max: u64::MAX,
            jobs: 2,
            planted,
            shrink_runs_max: 300,
        };
        let report = fuzz(&options, &|_, _, _| {});
        let per_min = report.cases as f64 / (report.wall.as_secs_f64() / 60.0);
        match report.found {
            None => println!(
                "| {name} | not found in {} cases | {per_min:.1} | | | | | | |",
                report.cases
            ),
            Some(found) => {
                let again = run_case(&found.shrunk, found.seed, planted)
                    .iter()
                    .any(|f| f.invariant == found.failure.invariant);
                std::fs::write(
                    out.join(format!("{name}.toml")),
                    found.shrunk.to_toml(found.seed),
                )
                .expect("writing the shrunk scenario");
                println!(
                    "| {name} | {} | {per_min:.1} | {} | {:.0} | {} | {} | {} | {again} |",
                    found.case,
                    found.failure.invariant,
                    found.shrink_wall.as_secs_f64(),
                    found.shrink_runs,
                    found.original.size(),
                    found.shrunk.size(),
                );
            }
        }
    }
}
