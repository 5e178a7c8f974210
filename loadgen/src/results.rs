//! Results of a load run: `results.json` (schema in `loadgen/RESULTS.md`), `timeseries.csv`
//! (one row a second) and the summary table. Rewritten every second during the run.

use std::collections::BTreeMap;
use std::path::Path;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::config::{LoadConfig, Pattern};
use crate::ledger::{LOST_LISTED_MAX, LoadLedger, LostDelivery};
use crate::protocol::Describe;

fn imlab() -> String {
    "imlab".into()
}

fn tcp() -> String {
    "tcp".into()
}

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
    /// Expected deliveries not made although the recipient was logged in and synced at the
    /// end: lost.
    pub lost: u64,
    /// Expected deliveries not made, the recipient back and synced, that the protocol allows
    /// to be lost (MQTT QoS 0; a message sent while a device without a session was away).
    #[serde(default)]
    pub lost_allowed: u64,
    /// Expected deliveries not made to a recipient that was not back (logged in and synced)
    /// by the end of the drain: not lost, not delivered either.
    #[serde(default)]
    pub pending: u64,
    /// Sends never acked that the server refused for now at least once, or that were queued
    /// behind their sender's refused sends (rate limited, overloaded): held back by the server.
    #[serde(default)]
    pub refused: u64,
    /// Sends never acked, with no refusal for them or their sender's other sends: still
    /// unanswered when the run ended.
    #[serde(default)]
    pub unacked: u64,
    /// The server's refusals of sends (each retry counts), by cause.
    #[serde(default)]
    pub refusals_by_cause: BTreeMap<String, u64>,
    /// Deliveries of a message a device already had, beyond what the protocol allows.
    pub duplicated: u64,
    /// Repeated deliveries the protocol allows (MQTT QoS 1: DUP set, after a reconnect, or
    /// of a message its sender sent again).
    #[serde(default)]
    pub redelivered: u64,
    /// Deliveries older than one already delivered from the same sender.
    pub reordered: u64,
    /// Sends the server refused for good.
    pub failed: u64,
    /// Sends the client core refused (its unacked queue was full).
    pub refused_locally: u64,
    /// The server's breaches of its protocol that devices saw, by kind
    /// (`packet_id_reused_before_pubrel`, `qos2_resent_under_new_packet_id`).
    #[serde(default)]
    pub protocol_violations: BTreeMap<String, u64>,
    /// Records of deliveries that crossed between `--workers` that a worker could not keep
    /// (its bound reached, or its files refusing them): set by the merge. A delivery it
    /// cannot tell is pending, never lost (with a receiving worker's records missing, no
    /// crossing delivery is judged lost).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unrecorded: u64,
    /// Sending stopped early: the ledger followed as many messages in flight as it may.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sending_stopped: Option<SendingStopped>,
}

/// Why and when a run stopped sending before its planned end.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct SendingStopped {
    /// Seconds into the run.
    pub at_s: f64,
    /// The ledger's bound it reached (`--max-open-messages`): messages planned and not
    /// settled (not acked, or acked and not at every recipient), with the settled ones the
    /// protocol sent again.
    pub open_messages_max: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Connection counts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Connections {
    /// Logins.
    pub opened: u64,
    /// Connection attempts that failed.
    pub failed: u64,
    /// Failed login attempts by cause (`auth_failed`, `token_expired`, `overloaded`,
    /// `login_timeout`, `connection_refused`...).
    #[serde(default)]
    pub login_failures_by_cause: BTreeMap<String, u64>,
    /// Clients that never logged in because the server refused them.
    #[serde(default)]
    pub clients_refused: u64,
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

/// How to run this again: recorded so a results file can be reproduced.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Provenance {
    /// The command line, one argument per entry.
    pub command_line: Vec<String>,
    /// The imlab version.
    pub version: String,
    /// The git commit of the build that ran it (`-dirty` when tracked files differed; empty
    /// when unknown, and in results written before builds were named).
    #[serde(default)]
    pub commit: String,
    /// Seed of the send schedule.
    pub seed: u64,
    /// Planned send duration, seconds (after the ramp).
    pub duration_s: f64,
    /// Runtime threads that ran the clients, in each process (`imlab load --threads`; 0 in
    /// results written before it was recorded).
    #[serde(default)]
    pub threads: usize,
}

impl Provenance {
    /// The command line as one shell line (arguments with spaces or quotes quoted).
    pub fn shell_line(&self) -> String {
        self.command_line
            .iter()
            .map(|arg| {
                if !arg.is_empty()
                    && arg
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+".contains(c))
                {
                    arg.clone()
                } else {
                    format!("'{}'", arg.replace('\'', "'\\''"))
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// results.json.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LoadResults {
    /// Schema version.
    pub schema_version: u32,
    /// The server as named on the command line (host name or address, and port).
    pub target: String,
    /// The protocol the devices spoke: `imlab`, `mqtt`.
    #[serde(default = "imlab")]
    pub protocol: String,
    /// What it ran over: `tcp`, `tls`, `ws`, `wss`.
    #[serde(default = "tcp")]
    pub transport: String,
    /// MQTT's quality of service; absent for protocols without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qos: Option<u8>,
    /// Whether the connections were encrypted (TLS, or WebSocket over TLS).
    #[serde(default)]
    pub tls: bool,
    /// How to run this again.
    #[serde(default)]
    pub provenance: Provenance,
    /// `ramp`, `send`, `drain`, `done` or `interrupted` (Ctrl-C).
    #[serde(default)]
    pub phase: String,
    /// Clients.
    pub clients: u64,
    /// Planned message rate.
    pub msg_rate: f64,
    /// `one-to-one`, `group:SIZE` or `scenario:NAME` (`--scenario`).
    pub pattern: String,
    /// Heartbeat strategy (with `--scenario`, each device group's: `name=strategy, ...`).
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
    /// With `--carrier`: every carrier's figures and the model's decisions on its
    /// connections.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub carriers: Vec<crate::carrier::CarrierResults>,
    /// The lost deliveries, message by message (the first `LOST_LISTED_MAX`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lost_deliveries: Vec<LostDelivery>,
    /// When `--target` resolved to more than one address: each address's TCP connects and
    /// failed connects, in `--target`'s order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_addresses: Vec<TargetAddress>,
}

/// One of the target's addresses, and how clients fared connecting to it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TargetAddress {
    /// `IP:PORT`.
    pub address: String,
    /// TCP connects it accepted.
    pub connects: u64,
    /// TCP connects to it that failed, each then tried on the next address.
    pub connect_failures: u64,
}

impl LoadResults {
    /// The results so far.
    pub fn from_ledger(
        config: &LoadConfig,
        protocol: &Describe,
        ledger: &LoadLedger,
        phase: &str,
    ) -> LoadResults {
        let verdict = ledger.verdict(phase == "done");
        LoadResults {
            schema_version: 3,
            target: config.target_name.clone(),
            protocol: protocol.protocol.to_string(),
            transport: protocol.transport.to_string(),
            qos: protocol.qos,
            tls: matches!(protocol.transport, "tls" | "wss"),
            provenance: Provenance {
                command_line: config.command_line.clone(),
                version: config.version.clone(),
                commit: config.commit.clone(),
                seed: config.seed,
                duration_s: config.duration.as_secs_f64(),
                // What ran, not what was asked: read from the runtime the results are built on.
                threads: tokio::runtime::Handle::try_current()
                    .map(|runtime| runtime.metrics().num_workers())
                    .unwrap_or(0),
            },
            phase: phase.to_string(),
            clients: config.clients as u64,
            msg_rate: config.msg_rate,
            pattern: match (&config.population, config.pattern) {
                (Some(population), _) => format!("scenario:{}", population.name),
                (None, Pattern::OneToOne) => "one-to-one".into(),
                (None, Pattern::Group(size)) => format!("group:{size}"),
            },
            heartbeat: match &config.population {
                // Each device group's strategy, by name.
                Some(population) => population
                    .groups
                    .iter()
                    .map(|group| format!("{}={}", group.name, group.heartbeat))
                    .collect::<Vec<_>>()
                    .join(", "),
                None => config.heartbeat.clone(),
            },
            elapsed_s: ledger.started().elapsed().as_secs_f64(),
            connected_now: ledger.connected,
            messages: Messages {
                sent: ledger.planned_count(),
                acked: ledger.acked_count() as u64,
                delivered: verdict.delivered,
                expected_deliveries: verdict.expected,
                lost: verdict.lost,
                lost_allowed: verdict.lost_allowed,
                pending: verdict.pending,
                refused: verdict.refused,
                unacked: verdict.unacked,
                refusals_by_cause: ledger.send_refusals.clone(),
                duplicated: ledger.duplicated,
                redelivered: ledger.redelivered,
                reordered: ledger.reordered,
                failed: ledger.failed,
                refused_locally: ledger.refused_locally,
                protocol_violations: ledger.protocol_violations.clone(),
                unrecorded: 0,
                sending_stopped: ledger.full_at_us().map(|(at_us, max)| SendingStopped {
                    at_s: at_us as f64 / 1e6,
                    open_messages_max: max as u64,
                }),
            },
            connections: Connections {
                opened: ledger.connects,
                failed: ledger.connects_failed,
                login_failures_by_cause: ledger.login_failures.clone(),
                clients_refused: ledger.clients_refused() as u64,
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
            carriers: Vec::new(),
            lost_deliveries: ledger.lost_deliveries(phase == "done", LOST_LISTED_MAX),
            target_addresses: {
                let counts = config.transport.targets.counts();
                if counts.len() > 1 {
                    counts
                        .iter()
                        .map(|c| TargetAddress {
                            address: c.address.to_string(),
                            connects: c.connects,
                            connect_failures: c.failures,
                        })
                        .collect()
                } else {
                    Vec::new()
                }
            },
        }
    }

    /// `imlab over tcp`, `mqtt QoS 1 over tls`.
    pub fn protocol_line(&self) -> String {
        match self.qos {
            Some(qos) => format!("{} QoS {qos} over {}", self.protocol, self.transport),
            None => format!("{} over {}", self.protocol, self.transport),
        }
    }

    /// The summary table for stdout.
    pub fn summary(&self) -> String {
        let m = &self.messages;
        let c = &self.connections;
        let mut out = format!("protocol: {}\n", self.protocol_line());
        out += &format!(
            "messages: sent {}, acked {}, refused {}, unacked {}, failed {}\n",
            m.sent, m.acked, m.refused, m.unacked, m.failed
        );
        out += &format!(
            "deliveries: {}/{} expected, pending {}, lost {}, duplicated {}, reordered {}\n",
            m.delivered, m.expected_deliveries, m.pending, m.lost, m.duplicated, m.reordered
        );
        if !self.lost_deliveries.is_empty() {
            let shown: Vec<String> = self
                .lost_deliveries
                .iter()
                .take(5)
                .map(|l| {
                    format!(
                        "{}#{} to {} (planned at {:.3} s)",
                        l.sender,
                        l.number,
                        l.recipient,
                        l.planned_ms / 1_000.0
                    )
                })
                .collect();
            out += &format!(
                "lost, sender#number to recipient (results.json lists up to {}): {}\n",
                LOST_LISTED_MAX,
                shown.join(", ")
            );
        }
        if m.lost_allowed > 0 || m.redelivered > 0 {
            out += &format!(
                "allowed by the protocol: lost {}, redelivered {}\n",
                m.lost_allowed, m.redelivered
            );
        }
        if let Some(stopped) = &m.sending_stopped {
            out += &format!(
                "sending stopped at {:.1} s: {} messages in flight, the most the ledger follows \
                 (--max-open-messages): the target acked messages it did not deliver, or their \
                 recipients stayed away\n",
                stopped.at_s, stopped.open_messages_max
            );
        }
        if m.unrecorded > 0 {
            out += &format!(
                "crossing records the workers could not keep: {} (the deliveries they concern \
                 are pending, not lost)\n",
                m.unrecorded
            );
        }
        if !m.protocol_violations.is_empty() {
            out += &format!(
                "the server broke its protocol: {}\n",
                crate::causes::list(&m.protocol_violations)
            );
        }
        if !m.refusals_by_cause.is_empty() {
            out += &format!(
                "sends refused by the server (each retry counts): {}\n",
                crate::causes::list(&m.refusals_by_cause)
            );
        }
        out += &format!(
            "connections: opened {}, failed {}, disconnects {}, reconnects {}, peak {}\n",
            c.opened, c.failed, c.disconnects, c.reconnects, c.peak_concurrent
        );
        if !c.login_failures_by_cause.is_empty() {
            out += &format!(
                "logins failed: {} ({} clients never got in)\n",
                crate::causes::list(&c.login_failures_by_cause),
                c.clients_refused
            );
        }
        if !self.target_addresses.is_empty() {
            let each: Vec<String> = self
                .target_addresses
                .iter()
                .map(|a| {
                    format!(
                        "{} {} ({} failed)",
                        a.address, a.connects, a.connect_failures
                    )
                })
                .collect();
            out += &format!("connects by address: {}\n", each.join(", "));
        }
        for carrier in &self.carriers {
            out += &format!(
                "carrier {}: {} clients, disconnects {} ({} silent), reconnects {}, NAT expired {}, \
                 resets {}, deliver {}\n",
                carrier.name,
                carrier.clients,
                carrier.disconnects,
                carrier.silent_disconnects,
                carrier.reconnects,
                carrier.model.nat_expired,
                carrier.model.resets,
                if carrier.deliver_ms.count == 0 {
                    // None yet, or a merge (per-carrier histograms are not merged).
                    "p50 - p99 -".to_string()
                } else {
                    format!(
                        "p50 {:.2} ms p99 {:.2} ms",
                        carrier.deliver_ms.p50, carrier.deliver_ms.p99
                    )
                }
            );
        }
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

/// Writes results.json atomically (temp file, then rename) into `dir`.
pub fn write_json(dir: &Path, results: &LoadResults) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::to_string_pretty(results).map_err(std::io::Error::other)?;
    let temp = dir.join("results.json.tmp");
    std::fs::write(&temp, json + "\n")?;
    std::fs::rename(&temp, dir.join("results.json"))
}

/// The per-second file beside results.json (see [`crate::ledger::Second`]).
pub const TIMESERIES_FILE: &str = "timeseries.csv";

/// Appends the seconds of `files` that `file` lacks (it holds `seconds_written`); a failed
/// append is cut off again, so the file never holds half a row or a row twice.
fn append_timeseries(
    file: &Path,
    files: &LedgerFiles,
    seconds_written: &mut usize,
) -> std::io::Result<()> {
    let Some(skip) = seconds_written.checked_sub(files.seconds_from) else {
        return Err(std::io::Error::other(format!(
            "{}: {} seconds written, but the copy to append starts at {}",
            file.display(),
            seconds_written,
            files.seconds_from
        )));
    };
    // A copy taken before the last append may hold nothing new.
    let new = &files.seconds[skip.min(files.seconds.len())..];
    if *seconds_written > 0 && new.is_empty() {
        return Ok(());
    }
    let fresh = *seconds_written == 0;
    let out = if fresh {
        std::fs::File::create(file)?
    } else {
        std::fs::OpenOptions::new().append(true).open(file)?
    };
    let length = out.metadata()?.len();
    let mut csv = csv::WriterBuilder::new()
        .has_headers(fresh)
        .from_writer(&out);
    let written = new
        .iter()
        .try_for_each(|second| csv.serialize(second).map_err(std::io::Error::other))
        .and_then(|()| csv.flush());
    drop(csv);
    if let Err(error) = written {
        let _ = out.set_len(length);
        return Err(error);
    }
    *seconds_written += new.len();
    Ok(())
}

/// What results files need of the ledger besides [`LoadResults`]: taken under the ledger's
/// lock (a copy of the histograms and per-second counters), written without it, so devices
/// never wait for the disk or the histograms' compression.
#[derive(Clone)]
pub struct LedgerFiles {
    /// The closed seconds from `seconds_from` on (those before are in timeseries.csv).
    seconds_from: usize,
    seconds: Vec<crate::ledger::Second>,
    /// The run's four (in [`crate::histograms::TAGS`] order), then each carrier's deliver
    /// and reconnect.
    histograms: Vec<(String, hdrhistogram::Histogram<u64>)>,
    elapsed: std::time::Duration,
}

impl LedgerFiles {
    /// Copies what the files need from `ledger`, its seconds from `seconds_written` on. The
    /// last closed second waits for the next copy unless the run has `ended`: a send planned
    /// in it and refused by its device just after it closed is taken back from it.
    pub fn of(ledger: &LoadLedger, seconds_written: usize, ended: bool) -> LedgerFiles {
        let closed = ledger.seconds.len();
        let settled = if ended {
            closed
        } else {
            closed.saturating_sub(1)
        };
        let seconds_from = seconds_written.min(settled);
        let mut histograms: Vec<(String, hdrhistogram::Histogram<u64>)> = [
            ("connect", &ledger.connect),
            ("ack", &ledger.ack),
            ("deliver", &ledger.deliver),
            ("reconnect", &ledger.reconnect),
        ]
        .into_iter()
        .map(|(tag, histogram)| (tag.to_string(), histogram.clone()))
        .collect();
        for (k, figures) in ledger
            .carriers
            .iter()
            .flat_map(|(_, f)| f.iter().enumerate())
        {
            for (kind, histogram) in [
                ("deliver", &figures.deliver),
                ("reconnect", &figures.reconnect),
            ] {
                histograms.push((crate::histograms::carrier_tag(k, kind), histogram.clone()));
            }
        }
        LedgerFiles {
            seconds_from,
            seconds: ledger.seconds[seconds_from..settled].to_vec(),
            histograms,
            elapsed: ledger.started().elapsed(),
        }
    }
}

/// Writes results.json and histograms.hlog into `dir`, and appends to timeseries.csv the
/// seconds it lacks: `seconds_written` of them are in it (none: it is written anew, header
/// first), and it counts those appended. Appending keeps a second's cost the same however
/// long the run (a day's file is about 5 MB; rewriting it every second wrote hundreds of GB).
pub fn write_results(
    dir: &Path,
    results: &LoadResults,
    files: &LedgerFiles,
    seconds_written: &mut usize,
) -> std::io::Result<()> {
    write_json(dir, results)?;
    append_timeseries(&dir.join(TIMESERIES_FILE), files, seconds_written)?;
    let histograms: Vec<(&str, &hdrhistogram::Histogram<u64>)> = files
        .histograms
        .iter()
        .map(|(tag, h)| (tag.as_str(), h))
        .collect();
    crate::histograms::write(dir, &histograms, files.elapsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// While the run goes on, the last closed second waits for the next write (a refusal
    /// may still take a send back from it); once it has ended every second is written.
    #[test]
    fn the_last_closed_second_waits_until_the_run_ends() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("timeseries.csv");
        let mut ledger = LoadLedger::new(2);
        let mut written = 0;
        let mut append = |ledger: &LoadLedger, ended: bool| {
            let files = LedgerFiles::of(ledger, written, ended);
            append_timeseries(&file, &files, &mut written).unwrap();
            written
        };
        ledger.tick();
        assert_eq!(append(&ledger, false), 0);
        ledger.tick();
        ledger.tick();
        assert_eq!(append(&ledger, false), 2);
        assert_eq!(append(&ledger, true), 3);
        let text = std::fs::read_to_string(dir.path().join("timeseries.csv")).unwrap();
        assert_eq!(text.lines().count(), 4, "{text}");
    }

    /// timeseries.csv gets each closed second once, in order, header first, however the
    /// writes fall: seconds closed between writes or none, a copy taken before the last
    /// write, and a file left by an earlier run in the same directory.
    #[test]
    fn timeseries_csv_gets_each_second_once_however_the_writes_fall() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("timeseries.csv");
        std::fs::write(&file, "left by an earlier run\n").unwrap();
        let mut ledger = LoadLedger::new(2);
        let mut written = 0;
        let mut stale = None;
        for (i, ticks) in [0, 2, 0, 3, 1].into_iter().enumerate() {
            for _ in 0..ticks {
                ledger.tick();
            }
            let files = LedgerFiles::of(&ledger, written, true);
            if i == 1 {
                // Seconds 0 and 1, appended again below after later writes.
                stale = Some(files.clone());
            }
            append_timeseries(&file, &files, &mut written).unwrap();
        }
        append_timeseries(&file, &stale.unwrap(), &mut written).unwrap();
        assert_eq!(written, 6);
        let text = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("second,connected,sent,"), "{text}");
        let seconds: Vec<&str> = lines[1..]
            .iter()
            .map(|line| line.split(',').next().unwrap())
            .collect();
        assert_eq!(seconds, ["0", "1", "2", "3", "4", "5"], "{text}");
    }
}
