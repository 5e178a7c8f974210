//! `imlab report DIR`: regenerate charts and `index.html` from the results files in DIR (a
//! heartbeat comparison, a load run or a simulation run). Also used by `imlab load --out` at
//! the end of a run.

use std::path::{Path, PathBuf};

use anyhow::Context;
use imlab_reports::load::{LatencySpectrum, LoadReport, read_timeseries_csv, write_load_report};

/// Regenerate charts and index.html from a results directory.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  imlab report report\n  imlab report out/load")]
pub struct ReportArgs {
    /// A directory written by `imlab heartbeat compare --out`, `imlab load --out` or `imlab sim
    /// run --out`.
    dir: PathBuf,
}

pub fn run_command(args: ReportArgs) -> anyhow::Result<std::process::ExitCode> {
    let dir = &args.dir;
    let files = if dir.join("heartbeat.csv").exists() {
        let report = imlab_reports::heartbeat::read_heartbeat_report(dir)?;
        imlab_reports::heartbeat::write_heartbeat_report(dir, &report)?
    } else if dir.join("storms.csv").exists() {
        // A simulation run (`imlab sim run --out`).
        let report = imlab_reports::sim::read_sim_report(dir)?;
        imlab_reports::sim::write_sim_report(dir, &report)?
    } else if dir.join("metrics.csv").exists() {
        anyhow::bail!(
            "{}: a simulation run without storms.csv (written by an imlab before the run page \
             existed): run it again with `imlab sim run FILE --out DIR` (its replay command is \
             in results.json)",
            dir.display()
        );
    } else if dir.join("results.json").exists() {
        load_report(dir)?
    } else {
        anyhow::bail!(
            "{}: no heartbeat.csv (imlab heartbeat compare), results.json (imlab load) or \
             storms.csv (imlab sim run) in it",
            dir.display()
        );
    };
    println!(
        "report: {} ({} files)",
        dir.join("index.html").display(),
        files.len()
    );
    Ok(std::process::ExitCode::SUCCESS)
}

/// Writes the charts and page of a load run's results directory.
pub fn load_report(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let results_file = dir.join("results.json");
    let results_json = std::fs::read_to_string(&results_file)
        .with_context(|| format!("reading {}", results_file.display()))?;
    let results: imlab_loadgen::results::LoadResults = serde_json::from_str(&results_json)
        .with_context(|| format!("reading {}", results_file.display()))?;
    let histograms =
        imlab_loadgen::histograms::read(&dir.join(imlab_loadgen::histograms::HISTOGRAMS_FILE))
            .map_err(anyhow::Error::msg)?;
    let spectra = imlab_loadgen::histograms::TAGS
        .iter()
        .filter_map(|tag| {
            let points = imlab_loadgen::histograms::spectrum(histograms.get(*tag)?);
            (!points.is_empty()).then(|| LatencySpectrum {
                name: tag.to_string(),
                points,
            })
        })
        .collect();
    let timeseries = dir.join("timeseries.csv");
    let seconds = if timeseries.exists() {
        read_timeseries_csv(&timeseries)?
    } else {
        Vec::new()
    };
    let m = &results.messages;
    let c = &results.connections;
    let mut summary = vec![
        ("target".to_string(), results.target.clone()),
        ("protocol".into(), results.protocol_line()),
        ("clients".into(), results.clients.to_string()),
        ("pattern".into(), results.pattern.clone()),
        (
            "messages sent / acked".into(),
            format!("{} / {}", m.sent, m.acked),
        ),
        (
            "sends refused / unacked / failed".into(),
            format!("{} / {} / {}", m.refused, m.unacked, m.failed),
        ),
        (
            "deliveries made / expected".into(),
            format!("{} / {}", m.delivered, m.expected_deliveries),
        ),
        (
            "pending / lost / duplicated / reordered".into(),
            format!(
                "{} / {} / {} / {}",
                m.pending, m.lost, m.duplicated, m.reordered
            ),
        ),
        (
            "server protocol violations".into(),
            imlab_loadgen::causes::list(&m.protocol_violations),
        ),
        (
            "logins failed".into(),
            imlab_loadgen::causes::list(&c.login_failures_by_cause),
        ),
        (
            "disconnects / reconnects".into(),
            format!("{} / {}", c.disconnects, c.reconnects),
        ),
        ("peak connections".into(), c.peak_concurrent.to_string()),
        (
            "deliver p50 / p99 / max (ms)".into(),
            format!(
                "{:.2} / {:.2} / {:.2}",
                results.latency_ms.deliver.p50,
                results.latency_ms.deliver.p99,
                results.latency_ms.deliver.max
            ),
        ),
    ];
    for carrier in &results.carriers {
        summary.push((
            format!("carrier {}", carrier.name),
            format!(
                "{} clients; disconnects {} ({} silent), reconnects {}; NAT expired {}, resets {}; \
                 deliver p50 / p99 {:.2} / {:.2} ms",
                carrier.clients,
                carrier.disconnects,
                carrier.silent_disconnects,
                carrier.reconnects,
                carrier.model.nat_expired,
                carrier.model.resets,
                carrier.deliver_ms.p50,
                carrier.deliver_ms.p99
            ),
        ));
    }
    let report = LoadReport {
        title: format!(
            "imlab load: {} clients against {}",
            results.clients, results.target
        ),
        summary,
        spectra,
        seconds,
        results_json,
        command: results.provenance.shell_line(),
        seed: results.provenance.seed,
    };
    Ok(write_load_report(dir, &report)?)
}
