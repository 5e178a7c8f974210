//! A run's timeline (`imlab sim run --timeline`, and every shrunk failure of `imlab sim
//! fuzz`): reads the run's trace (JSON Lines) and lays it out as imlab-reports' `Timeline`:
//! a lane for the server (fault windows, crashes) and one per involved device (the devices a
//! violation names, or the first few when every invariant held) with its connections, NAT
//! mappings and their expiry, heartbeats, sends, acks, deliveries and app events. The marks of
//! the messages a violation names (client message ids like `d15-43`) are highlighted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use imlab_reports::timeline::{Lane, Mark, Span, Timeline};
use serde_json::Value;

use crate::results::replay_command;
use crate::run::RunReport;
use crate::scenario::Scenario;

/// Device lanes at most.
pub const DEVICE_LANES_MAX: usize = 12;
/// Marks per lane at most, and spans (connections, NAT mappings, fault windows) per lane at
/// most; later ones are left out and counted in the page's notes.
pub const LANE_MARKS_MAX: usize = 20_000;
/// Device lanes shown when no violation names any device.
const DEFAULT_DEVICE_LANES: usize = 6;

/// The words of a violation that name devices (`d14`, `d14's`) and messages (`d15-43`).
fn named(violations: &[String]) -> (BTreeSet<u32>, BTreeSet<String>) {
    let mut devices = BTreeSet::new();
    let mut messages = BTreeSet::new();
    for text in violations {
        for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')) {
            let Some(rest) = word.strip_prefix('d') else {
                continue;
            };
            let (device, counter) = rest.split_once('-').unwrap_or((rest, ""));
            let Ok(device) = device.parse::<u32>() else {
                continue;
            };
            devices.insert(device);
            if !counter.is_empty() && counter.chars().all(|c| c.is_ascii_digit()) {
                messages.insert(word.to_string());
            }
        }
    }
    (devices, messages)
}

fn u64_of(line: &Value, key: &str) -> u64 {
    line[key].as_u64().unwrap_or(0)
}

fn str_of<'a>(line: &'a Value, key: &str) -> &'a str {
    line[key].as_str().unwrap_or("")
}

/// Builds the timeline of `report` from its trace file.
pub fn build(
    scenario: &Scenario,
    report: &RunReport,
    trace_file: &Path,
) -> std::io::Result<Timeline> {
    let violations: Vec<String> = report
        .verdicts
        .iter()
        .filter_map(|v| v.violation.clone())
        .collect();
    let (named_devices, messages) = named(&violations);
    let devices: Vec<u32> = if named_devices.is_empty() {
        (0..scenario.n_devices().min(DEFAULT_DEVICE_LANES) as u32).collect()
    } else {
        named_devices
            .iter()
            .copied()
            .take(DEVICE_LANES_MAX)
            .collect()
    };
    // Streamed: a long run's trace can be far larger than memory should hold at once.
    let mut lanes = Lanes::new(scenario, &devices, &named_devices, &messages);
    let reader = std::io::BufReader::new(std::fs::File::open(trace_file)?);
    for line in std::io::BufRead::lines(reader) {
        if let Ok(line) = serde_json::from_str::<Value>(&line?) {
            lanes.end_ms = lanes.end_ms.max(u64_of(&line, "at_ms"));
            lanes.add(&line);
        }
    }
    let end_ms = lanes.end_ms;
    let highlight = match violations.first() {
        None => String::new(),
        Some(first) if messages.is_empty() => format!("the devices named by: {first}"),
        Some(first) => format!(
            "message {} ({first})",
            messages.iter().cloned().collect::<Vec<_>>().join(", ")
        ),
    };
    let (lanes, notes) = lanes.finish();
    Ok(Timeline {
        title: scenario.name.clone(),
        subtitle: format!(
            "seed {}, trace hash {}; replay: {}",
            report.seed,
            report.trace_hash,
            replay_command(scenario, report.seed)
        ),
        end_ms,
        lanes,
        verdicts: report
            .verdicts
            .iter()
            .map(|v| (v.name.to_string(), v.violation.clone()))
            .collect(),
        highlight,
        notes,
    })
}

/// Lanes being filled from trace lines.
struct Lanes<'a> {
    messages: &'a BTreeSet<String>,
    end_ms: u64,
    server: Lane,
    devices: BTreeMap<u32, Lane>,
    /// Open connection per device: since, and open NAT mapping per (carrier, flow).
    connected_since: BTreeMap<u32, u64>,
    flows: BTreeMap<(u64, u64), (u32, u64)>,
    /// Open server fault windows by what started them.
    open_faults: BTreeMap<String, u64>,
    left_out: BTreeMap<String, u64>,
}

impl<'a> Lanes<'a> {
    fn new(
        scenario: &Scenario,
        devices: &[u32],
        named_devices: &BTreeSet<u32>,
        messages: &'a BTreeSet<String>,
    ) -> Lanes<'a> {
        let layout = crate::world::Layout::new(scenario, 0);
        let lanes = devices
            .iter()
            .map(|d| {
                let note = layout
                    .devices
                    .get(*d as usize)
                    .map_or(String::new(), |spec| {
                        let group = &scenario.groups[spec.group];
                        format!(
                            "{} on {}, u{}",
                            group.name, scenario.carriers[group.carrier].name, spec.user
                        )
                    });
                let lane = Lane {
                    name: format!("d{d}"),
                    note,
                    // A device a violation names, not only as a message's sender.
                    highlight: named_devices.contains(d)
                        && !messages.iter().any(|m| m.starts_with(&format!("d{d}-"))),
                    ..Lane::default()
                };
                (*d, lane)
            })
            .collect();
        Lanes {
            messages,
            end_ms: 0,
            server: Lane {
                name: "server".into(),
                note: "faults, crashes".into(),
                ..Lane::default()
            },
            devices: lanes,
            connected_since: BTreeMap::new(),
            flows: BTreeMap::new(),
            open_faults: BTreeMap::new(),
            left_out: BTreeMap::new(),
        }
    }

    fn mark(&mut self, device: Option<u32>, at_ms: u64, kind: &str, label: String) {
        let highlight = label.split(' ').any(|word| self.messages.contains(word));
        let lane = match device {
            None => &mut self.server,
            Some(d) => match self.devices.get_mut(&d) {
                Some(lane) => lane,
                None => return,
            },
        };
        if lane.marks.len() >= LANE_MARKS_MAX {
            *self.left_out.entry(lane.name.clone()).or_default() += 1;
            return;
        }
        lane.marks.push(Mark {
            at_ms,
            kind: kind.into(),
            label,
            highlight,
        });
    }

    fn span(&mut self, device: Option<u32>, start_ms: u64, end_ms: u64, kind: &str, label: String) {
        let lane = match device {
            None => &mut self.server,
            Some(d) => match self.devices.get_mut(&d) {
                Some(lane) => lane,
                None => return,
            },
        };
        if lane.spans.len() >= LANE_MARKS_MAX {
            *self.left_out.entry(lane.name.clone()).or_default() += 1;
            return;
        }
        lane.spans.push(Span {
            start_ms,
            end_ms,
            kind: kind.into(),
            label,
        });
    }

    fn add(&mut self, line: &Value) {
        let at = u64_of(line, "at_ms");
        let device = line["device"].as_u64().map(|d| d as u32);
        match str_of(line, "event") {
            "fault" => self.fault(at, str_of(line, "what")),
            "connected" => {
                if let Some(d) = device {
                    self.connected_since.insert(d, at);
                }
            }
            "disconnected" => {
                if let Some(d) = device
                    && let Some(since) = self.connected_since.remove(&d)
                {
                    let cause = str_of(line, "cause").to_string();
                    self.span(
                        device,
                        since,
                        at,
                        "connected",
                        format!("logged in; ended: {cause}"),
                    );
                }
            }
            "flow_opened" if str_of(line, "target") == "im" => {
                if let Some(d) = device {
                    let key = (u64_of(line, "carrier"), u64_of(line, "flow"));
                    self.flows.insert(key, (d, at));
                }
            }
            "nat_expired" => {
                let key = (u64_of(line, "carrier"), u64_of(line, "flow"));
                if let Some((d, since)) = self.flows.remove(&key) {
                    self.span(Some(d), since, at, "nat", "NAT mapping (expired)".into());
                    self.mark(
                        Some(d),
                        at,
                        "nat_expired",
                        format!("NAT mapping of flow {} expired", key.1),
                    );
                }
            }
            "flow_fault" => {
                let flow = u64_of(line, "flow");
                self.mark(
                    device,
                    at,
                    "flow",
                    format!("{} on flow {flow}", str_of(line, "fault")),
                );
            }
            "flow_ended" => {
                let key = (u64_of(line, "carrier"), u64_of(line, "flow"));
                let why = str_of(line, "why");
                if let Some((d, since)) = self.flows.get(&key).copied() {
                    if str_of(line, "side") == "phone" {
                        self.flows.remove(&key);
                        self.span(
                            Some(d),
                            since,
                            at,
                            "nat",
                            format!("NAT mapping; phone side ended: {why}"),
                        );
                    }
                    self.mark(
                        Some(d),
                        at,
                        "flow",
                        format!("{} side ended: {why}", str_of(line, "side")),
                    );
                }
            }
            "heartbeat" => {
                let what = if line["answered"] == true {
                    "answered"
                } else {
                    "sent"
                };
                self.mark(device, at, "heartbeat", format!("heartbeat {what}"));
            }
            "send_queued" => {
                let id = str_of(line, "client_msg_id");
                self.mark(device, at, "send", format!("send {id}"));
            }
            "acked" => {
                let id = str_of(line, "client_msg_id");
                let seq = u64_of(line, "seq");
                self.mark(device, at, "ack", format!("ack {id} seq {seq}"));
            }
            "delivered" => {
                let (seq, msg_id) = (u64_of(line, "seq"), u64_of(line, "msg_id"));
                self.mark(
                    device,
                    at,
                    "deliver",
                    format!("delivered seq {seq} msg_id {msg_id}"),
                );
            }
            "wake_up" => self.mark(device, at, "wakeup", "push wake-up".into()),
            "app" => self.mark(device, at, "app", format!("app {}", str_of(line, "what"))),
            _ => {}
        }
    }

    /// A driver fault line: windows pair a start with its end ("X" then "X over" or
    /// "X healed"; a crash with the restart).
    fn fault(&mut self, at: u64, what: &str) {
        let end_of = what
            .strip_suffix(" over")
            .or_else(|| what.strip_suffix(" healed"))
            .map(str::to_string)
            .or_else(|| (what == "server_restart").then(|| "server_crash".to_string()));
        match end_of {
            Some(start) => {
                if let Some(since) = self.open_faults.remove(&start) {
                    self.span(None, since, at, "fault", start);
                }
            }
            None if what == "heal" => {
                for (start, since) in std::mem::take(&mut self.open_faults) {
                    self.span(None, since, at, "fault", start);
                }
                self.mark(
                    None,
                    at,
                    "fault",
                    "heal: faults end, devices reconnect".into(),
                );
            }
            None => {
                self.open_faults.insert(what.to_string(), at);
                self.mark(None, at, "fault", what.to_string());
            }
        }
    }

    fn finish(mut self) -> (Vec<Lane>, Vec<String>) {
        let end = self.end_ms;
        for (d, since) in std::mem::take(&mut self.connected_since) {
            self.span(Some(d), since, end, "connected", "logged in".into());
        }
        for ((_, flow), (d, since)) in std::mem::take(&mut self.flows) {
            self.span(
                Some(d),
                since,
                end,
                "nat",
                format!("NAT mapping of flow {flow}"),
            );
        }
        for (start, since) in std::mem::take(&mut self.open_faults) {
            self.span(None, since, end, "fault", start);
        }
        let notes = self
            .left_out
            .iter()
            .map(|(lane, n)| format!("{lane}: {n} marks or spans beyond {LANE_MARKS_MAX} left out"))
            .collect();
        let mut lanes = vec![self.server];
        lanes.extend(self.devices.into_values());
        (lanes, notes)
    }
}

/// Builds the timeline and writes `timeline.html` into `dir`; returns its path.
pub fn write(
    dir: &Path,
    scenario: &Scenario,
    report: &RunReport,
    trace_file: &Path,
) -> Result<std::path::PathBuf, String> {
    let timeline = build(scenario, report, trace_file)
        .map_err(|error| format!("reading {}: {error}", trace_file.display()))?;
    let file = dir.join("timeline.html");
    imlab_reports::timeline::write_timeline(&file, &timeline).map_err(|error| error.to_string())?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lane's spans are bounded as its marks are: a device that logs in and out more than
    /// `LANE_MARKS_MAX` times keeps that many connection spans, and the rest are counted in
    /// the notes.
    #[test]
    fn a_lanes_spans_past_the_bound_are_left_out_and_counted() {
        let scenario = Scenario::parse(
            "duration = \"1h\"\n[carriers.c]\npreset = \"cmcc-3g\"\n[[devices]]\nname = \"p\"\ncount = 1\ncarrier = \"c\"\n",
            Path::new("spans.toml"),
        )
        .unwrap();
        let messages = BTreeSet::new();
        let mut lanes = Lanes::new(&scenario, &[0], &BTreeSet::new(), &messages);
        for n in 0..(LANE_MARKS_MAX as u64 + 5) {
            let at = 2 * n;
            lanes.add(&serde_json::json!({"at_ms": at, "event": "connected", "device": 0}));
            lanes.add(&serde_json::json!({
                "at_ms": at + 1, "event": "disconnected", "device": 0, "cause": "reset"
            }));
        }
        let (lanes, notes) = lanes.finish();
        let device = lanes.iter().find(|lane| lane.name == "d0").unwrap();
        assert_eq!(device.spans.len(), LANE_MARKS_MAX);
        assert!(
            notes
                .iter()
                .any(|note| note.starts_with("d0: ") && note.contains("beyond 20000")),
            "{notes:?}"
        );
    }
}
