//! Results of a load run: `results.json` (schema in `loadgen/RESULTS.md`), `timeseries.csv`
//! (one row a second) and the summary table. Rewritten every second during the run.

use std::collections::BTreeMap;
use std::path::Path;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::config::{LoadConfig, Pattern};
use crate::ledger::LoadLedger;

/// Percentiles of one latency histogram, in milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Maximum.
    pub max: f64,
}

impl Latency {
    /// Percentiles of a histogram in microseconds.
    pub fn of(histogram: &Histogram<u64>) -> Latency {
        if histogram.is_empty() {
            return Latency::default();
        }
        let ms = |us: u64| us as f64 / 1_000.0;
        Latency {
            count: histogram.len(),
            p50: ms(histogram.value_at_quantile(0.50)),
            p90: ms(histogram.value_at_quantile(0.90)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p999: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
        }
    }
}

/// Message counts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Messages {
    /// Sends handed to the client cores.
    pub sent: u64,
    /// Acked by the server.
    pub acked: u64,
    /// Deliveries of acked messages to recipient devices.
    pub delivered: u64,
    /// Deliveries acked messages owe to recipient devices.
    pub expected_deliveries: u64,
    /// Expected deliveries that never happened.
    pub lost: u64,
    /// Deliveries of a message a device already had.
    pub duplicated: u64,
    /// Deliveries older than one already delivered from the same sender.
    pub reordered: u64,
    /// Sends the server refused for good.
    pub failed: u64,
    /// Sends the client core refused (its unacked queue was full).
    pub refused_locally: u64,
}

/// Connection counts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Connections {
    /// Logins.
    pub opened: u64,
    /// Connection attempts that failed.
    pub failed: u64,
    /// Connections lost.
    pub disconnects: u64,
    /// Connections lost, by cause.
    pub disconnects_by_cause: BTreeMap<String, u64>,
    /// Logins after a client's first.
    pub reconnects: u64,
    /// Most clients logged in at once.
    pub peak_concurrent: u64,
}

/// Latencies, ms.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Latencies {
    /// TCP connect + login.
    pub connect: Latency,
    /// Planned send to ack.
    pub ack: Latency,
    /// Planned send to delivery at a recipient.
    pub deliver: Latency,
    /// Connection lost to logged in again.
    pub reconnect: Latency,
}

/// results.json.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LoadResults {
    /// Schema version.
    pub schema_version: u32,
    /// The server.
    pub target: String,
    /// Clients.
    pub clients: u64,
    /// Planned message rate.
    pub msg_rate: f64,
    /// `one-to-one` or `group:SIZE`.
    pub pattern: String,
    /// Heartbeat strategy.
    pub heartbeat: String,
    /// Seconds since the run started.
    pub elapsed_s: f64,
    /// Clients logged in when these results were taken.
    pub connected_now: u64,
    /// Message counts.
    pub messages: Messages,
    /// Connection counts.
    pub connections: Connections,
    /// Latency percentiles.
    pub latency_ms: Latencies,
}

impl LoadResults {
    /// The results so far.
    pub fn from_ledger(config: &LoadConfig, ledger: &LoadLedger) -> LoadResults {
        let (expected, delivered, lost) = ledger.delivery_counts();
        LoadResults {
            schema_version: 1,
            target: config.target.to_string(),
            clients: config.clients as u64,
            msg_rate: config.msg_rate,
            pattern: match config.pattern {
                Pattern::OneToOne => "one-to-one".into(),
                Pattern::Group(size) => format!("group:{size}"),
            },
            heartbeat: config.heartbeat.clone(),
            elapsed_s: ledger.started().elapsed().as_secs_f64(),
            connected_now: ledger.connected,
            messages: Messages {
                sent: ledger.messages.len() as u64,
                acked: ledger
                    .messages
                    .iter()
                    .filter(|m| m.acked_us.is_some())
                    .count() as u64,
                delivered,
                expected_deliveries: expected,
                lost,
                duplicated: ledger.duplicated,
                reordered: ledger.reordered,
                failed: ledger.failed,
                refused_locally: ledger.refused_locally,
            },
            connections: Connections {
                opened: ledger.connects,
                failed: ledger.connects_failed,
                disconnects: ledger.disconnects.values().sum(),
                disconnects_by_cause: ledger.disconnects.clone(),
                reconnects: ledger.reconnects,
                peak_concurrent: ledger.peak_connected,
            },
            latency_ms: Latencies {
                connect: Latency::of(&ledger.connect),
                ack: Latency::of(&ledger.ack),
                deliver: Latency::of(&ledger.deliver),
                reconnect: Latency::of(&ledger.reconnect),
            },
        }
    }

    /// The summary table for stdout.
    pub fn summary(&self) -> String {
        let m = &self.messages;
        let c = &self.connections;
        let mut out = format!(
            "messages: sent {}, acked {}, delivered {}/{} expected, lost {}, duplicated {}, reordered {}, failed {}\n",
            m.sent,
            m.acked,
            m.delivered,
            m.expected_deliveries,
            m.lost,
            m.duplicated,
            m.reordered,
            m.failed
        );
        out += &format!(
            "connections: opened {}, failed {}, disconnects {}, reconnects {}, peak {}\n",
            c.opened, c.failed, c.disconnects, c.reconnects, c.peak_concurrent
        );
        out += "latency_ms      count       p50       p90       p99     p99.9       max\n";
        for (name, l) in [
            ("connect", &self.latency_ms.connect),
            ("ack", &self.latency_ms.ack),
            ("deliver", &self.latency_ms.deliver),
            ("reconnect", &self.latency_ms.reconnect),
        ] {
            out += &format!(
                "{name:<10} {:>10} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}\n",
                l.count, l.p50, l.p90, l.p99, l.p999, l.max
            );
        }
        out
    }
}

/// Writes results.json (atomically: temp file, then rename) and timeseries.csv into `dir`.
pub fn write_results(
    dir: &Path,
    results: &LoadResults,
    ledger: &LoadLedger,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_string_pretty(results).map_err(std::io::Error::other)?;
    let temp = dir.join("results.json.tmp");
    std::fs::write(&temp, json + "\n")?;
    std::fs::rename(&temp, dir.join("results.json"))?;
    let mut csv = csv::Writer::from_path(dir.join("timeseries.csv"))?;
    for second in &ledger.seconds {
        csv.serialize(second).map_err(std::io::Error::other)?;
    }
    csv.flush()?;
    let histograms = [
        ("connect", &ledger.connect),
        ("ack", &ledger.ack),
        ("deliver", &ledger.deliver),
        ("reconnect", &ledger.reconnect),
    ];
    crate::histograms::write(dir, &histograms, ledger.started().elapsed())
}
