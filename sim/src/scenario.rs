//! Scenario files (TOML): what to simulate.
//!
//! A scenario names a duration, an optional seed, the server's store and limits, carrier
//! profiles (a preset, optionally overridden), device groups (count, carrier, heartbeat
//! strategy, app-state cycle, traffic) and a fault schedule. Unknown keys and impossible values
//! are errors that name the key, the value and the file. See `scenarios/` for examples.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use imlab_core::heartbeat::{AppState, parse_strategy};
use imlab_core::server::PushWhenBehind;
use serde::Deserialize;

use crate::carrier::{self, CarrierProfile};
use imlab_carrier::CarrierTable;
use imlab_carrier::fault::{self, FaultParams, LinkFault, Scope};

/// Why a scenario could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("{file}: {source}")]
    Read {
        /// The file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown keys or wrongly typed values.
    #[error("{file}: {message}")]
    Parse {
        /// The file.
        file: PathBuf,
        /// toml's message, with the key and line.
        message: String,
    },
    /// A value is impossible.
    #[error("{file}: key `{key}`: {message}")]
    Invalid {
        /// The file.
        file: PathBuf,
        /// Dotted path of the key.
        key: String,
        /// What is wrong, with the value.
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: Option<String>,
    #[serde(with = "humantime_serde")]
    duration: Duration,
    seed: Option<u64>,
    #[serde(with = "humantime_serde", default)]
    tick: Option<Duration>,
    #[serde(with = "humantime_serde", default)]
    quiet: Option<Duration>,
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    carriers: BTreeMap<String, CarrierTable>,
    #[serde(default)]
    devices: Vec<RawDevices>,
    #[serde(default)]
    faults: Vec<toml::Table>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    store: Option<String>,
    #[serde(with = "humantime_serde", default)]
    commit_latency: Option<Duration>,
    #[serde(with = "humantime_serde", default)]
    notify_ack_timeout: Option<Duration>,
    outbox_len_max: Option<usize>,
    fanout_queue_len_max: Option<usize>,
    #[serde(with = "humantime_serde", default)]
    token_lifetime: Option<Duration>,
    push_when_behind: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevices {
    name: String,
    count: usize,
    carrier: String,
    #[serde(default = "default_heartbeat")]
    heartbeat: String,
    #[serde(default = "one")]
    devices_per_user: usize,
    #[serde(default)]
    app_states: Vec<RawAppState>,
    #[serde(default)]
    traffic: RawTraffic,
}

fn default_heartbeat() -> String {
    "fixed:4m45s".into()
}

fn one() -> usize {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAppState {
    state: String,
    #[serde(rename = "for", with = "humantime_serde")]
    duration: Duration,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTraffic {
    #[serde(default)]
    one_to_one_per_hour: f64,
    #[serde(default)]
    group_per_hour: f64,
    group_size: Option<usize>,
    body_bytes: Option<usize>,
}

/// The keys every fault may have; the rest of a `[[faults]]` table are the kind's parameters
/// (imlab-carrier's `FaultParams`, shared with the proxy's control API).
const FAULT_COMMON_KEYS: [&str; 7] = [
    "kind", "at", "every", "duration", "target", "to", "fraction",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFault {
    kind: String,
    #[serde(with = "humantime_serde", default)]
    at: Option<Duration>,
    #[serde(with = "humantime_serde", default)]
    every: Option<Duration>,
    #[serde(with = "humantime_serde", default)]
    duration: Option<Duration>,
    target: Option<String>,
    to: Option<String>,
    fraction: Option<f64>,
}

/// The longest run a scenario asks for, its duration and quiet period together: 48 days. The
/// ledger keeps simulated times as u32 milliseconds (`ledger::SIMULATED_MS_MAX`, about 49.7
/// days), and the simulator lets a run go on an hour past its end.
pub const RUN_LENGTH_MAX: Duration = Duration::from_secs(48 * 86_400);

const _: () = assert!(
    RUN_LENGTH_MAX.as_millis() + 3_600_000 < crate::ledger::SIMULATED_MS_MAX as u128,
    "a run and the hour after it fit the ledger's u32 milliseconds"
);

/// Why `duration` and `quiet` are too long a run, if they are.
pub fn run_too_long(duration: Duration, quiet: Duration) -> Option<String> {
    // In days: humantime would say "1month 17days" for 48 days.
    let days = |d: Duration| d.as_secs_f64() / 86_400.0;
    let length = duration.saturating_add(quiet);
    (length > RUN_LENGTH_MAX).then(|| {
        format!(
            "a duration of {:.3} days and a quiet period of {:.3} days make {:.3} days, longer \
             than the {} days a run can record",
            days(duration),
            days(quiet),
            days(length),
            days(RUN_LENGTH_MAX)
        )
    })
}

/// Fault occurrences a run may hold at most, over all its faults (a day with a fault every
/// minute has 1,440): the simulator lists every window before it starts, so `every = "1ms"`
/// over a day (86 million) is refused rather than filling memory. The same bound as
/// `imlab proxy` and `imlab load` put on their schedules.
pub const FAULT_OCCURRENCES_MAX: u64 = 100_000;

/// How many times a fault starts before `until`: at `at`, then every `every`.
pub fn fault_occurrences(at: Duration, every: Option<Duration>, until: Duration) -> u64 {
    if at >= until {
        return 0;
    }
    match every {
        Some(every) if !every.is_zero() => {
            let span = (until - at).as_nanos();
            u64::try_from(span.div_ceil(every.as_nanos())).unwrap_or(u64::MAX)
        }
        _ => 1,
    }
}

/// When `faults` start more than [`FAULT_OCCURRENCES_MAX`] times before `until`: the index of
/// the fault that takes the count past it, and why.
pub fn too_many_fault_occurrences(faults: &[Fault], until: Duration) -> Option<(usize, String)> {
    let mut total: u64 = 0;
    for (i, fault) in faults.iter().enumerate() {
        let n = fault_occurrences(fault.at, fault.every, until);
        total = total.saturating_add(n);
        if total > FAULT_OCCURRENCES_MAX {
            return Some((
                i,
                format!(
                    "{} fault starts {n} times in {} (every {}), and the faults up to it {total}: \
                     more than the {FAULT_OCCURRENCES_MAX} a run can schedule",
                    fault.name,
                    humantime::format_duration(until),
                    fault.every.map_or_else(
                        || "once".into(),
                        |e| humantime::format_duration(e).to_string()
                    ),
                ),
            ));
        }
    }
    None
}

/// A durable commit's latency when the scenario names none: an SSD's fsync.
pub const DEFAULT_COMMIT_LATENCY: Duration = Duration::from_millis(2);

/// Which store the simulated server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// imlab-core's durable store with group commit, on a simulated disk: a crash loses
    /// exactly the writes whose commit had not finished (none of them acked).
    Durable,
    /// The in-memory store: a crash loses everything, and the restarted server starts a new
    /// store generation (epoch).
    Memory,
}

/// The server's setup.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSetup {
    /// The server's store.
    pub store: StoreKind,
    /// How long one durable commit (an fsync) takes; the durable store's group commit
    /// batches the sends that arrive meanwhile.
    pub commit_latency: Duration,
    /// See `ServerConfig::notify_ack_timeout`.
    pub notify_ack_timeout: Duration,
    /// See `ServerConfig::outbox_len_max`.
    pub outbox_len_max: usize,
    /// See `ServerConfig::fanout_queue_len_max`.
    pub fanout_queue_len_max: usize,
    /// See `ServerConfig::push_when_behind`: `"notify"` (the default) or `"message"`, a
    /// server that pushes every message whole, which tries the clients' handling of gaps and
    /// repeats.
    pub push_when_behind: PushWhenBehind,
    /// When set, the server checks signed tokens and devices log in with tokens their app
    /// backend issues for this long, renewed by the device's wall clock; otherwise the
    /// server runs in dev mode (any token).
    pub token_lifetime: Option<Duration>,
}

/// Traffic of one device.
#[derive(Debug, Clone, PartialEq)]
pub struct Traffic {
    /// 1:1 messages per device per hour (Poisson).
    pub one_to_one_per_hour: f64,
    /// Group messages per device per hour (Poisson).
    pub group_per_hour: f64,
    /// Members per group (users of the same device group).
    pub group_size: usize,
    /// Message body size.
    pub body_bytes: usize,
}

/// A device group.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceGroup {
    /// Its name (a fault target).
    pub name: String,
    /// Devices.
    pub count: usize,
    /// Index into `Scenario::carriers`.
    pub carrier: usize,
    /// Heartbeat strategy name (parses with `parse_strategy`).
    pub heartbeat: String,
    /// Devices per user (multi-device users).
    pub devices_per_user: usize,
    /// App-state cycle; empty means always foreground.
    pub app_states: Vec<(AppState, Duration)>,
    /// Traffic.
    pub traffic: Traffic,
}

/// What a fault does.
#[derive(Debug, Clone, PartialEq)]
pub enum FaultKind {
    /// The server process crashes and restarts after the duration.
    ServerCrash,
    /// The carrier's path to the server is cut for the duration.
    Partition {
        /// Carrier index.
        carrier: usize,
    },
    /// The carrier's radio is down for the duration.
    Outage {
        /// Carrier index.
        carrier: usize,
    },
    /// Devices of a group move to another carrier (and back after the duration, if any).
    Handover {
        /// Device group index.
        group: usize,
        /// Carrier index moved to.
        to: usize,
        /// Fraction of the group's devices.
        fraction: f64,
    },
    /// The app is killed and restarted after the duration.
    AppKill {
        /// Device group index.
        group: usize,
        /// Fraction of the group's devices.
        fraction: f64,
    },
    /// The devices' wall clocks jump (and jump back after the duration, if any).
    ClockJump {
        /// Device group index.
        group: usize,
        /// Fraction of the group's devices.
        fraction: f64,
        /// How far, in milliseconds (negative: back).
        by_ms: i64,
    },
    /// The push service delivers nothing for the duration.
    PushOutage,
    /// A carrier fault of imlab-carrier's model (latency spike, bandwidth, loss burst, reset,
    /// blackhole, slow close, byte limit, NAT rebind, age limit) on every flow of a carrier.
    Link {
        /// Carrier index.
        carrier: usize,
        /// What it does.
        fault: LinkFault,
    },
    /// The server process freezes for the duration: nothing goes in or out of its host
    /// (packets are held and delivered when it thaws).
    ServerStall,
    /// Durable commits started in the window hang until it ends.
    DiskStall,
    /// Durable commits fail for the duration (the server answers STORE_UNAVAILABLE); the
    /// server is restarted over the repaired disk when it ends.
    DiskFailure,
}

/// One scheduled fault.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    /// Its name in the fault vocabulary (`imlab_carrier::fault::KINDS`).
    pub name: String,
    /// What happens.
    pub kind: FaultKind,
    /// First occurrence.
    pub at: Duration,
    /// Repeat period, if any.
    pub every: Option<Duration>,
    /// How long it lasts (zero for instantaneous handovers).
    pub duration: Duration,
}

/// A loaded, validated scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// Display name.
    pub name: String,
    /// The file it came from (for replay commands).
    pub file: PathBuf,
    /// Simulated time with traffic and faults.
    pub duration: Duration,
    /// Seed in the file, if any (the CLI flag wins).
    pub seed: Option<u64>,
    /// Simulation tick.
    pub tick: Duration,
    /// Heal-and-quiet period after `duration`, before the invariants are checked.
    pub quiet: Duration,
    /// Server setup.
    pub server: ServerSetup,
    /// Carrier profiles, in name order.
    pub carriers: Vec<CarrierProfile>,
    /// Device groups, in file order.
    pub groups: Vec<DeviceGroup>,
    /// Faults, in file order.
    pub faults: Vec<Fault>,
}

impl Scenario {
    /// The same scenario cut to `duration` (faults after it dropped by the schedule) with
    /// `quiet` after it, and every device group shrunk by `divisor` (at least 2 devices):
    /// the shape of a long scenario at test size.
    pub fn shrunk(&self, duration: Duration, quiet: Duration, divisor: usize) -> Scenario {
        let mut shrunk = self.clone();
        shrunk.duration = duration.min(self.duration);
        shrunk.quiet = quiet;
        for group in &mut shrunk.groups {
            group.count = (group.count / divisor.max(1)).max(2);
        }
        shrunk
    }

    /// Total devices.
    pub fn n_devices(&self) -> usize {
        self.groups.iter().map(|g| g.count).sum()
    }

    /// Scales the device groups to about `devices` in all (`--devices` of `sim run` and of
    /// `load --scenario`), each keeping its share of the file's, at least one device a group;
    /// refused below one device a group, naming the file.
    pub fn scale_devices(&mut self, devices: usize) -> Result<(), String> {
        let total = self.n_devices().max(1);
        let n_groups = self.groups.len();
        if devices < n_groups {
            return Err(format!(
                "--devices {devices}: {} has {n_groups} device groups, so at least {n_groups}",
                self.file.display()
            ));
        }
        for group in &mut self.groups {
            group.count = (group.count * devices / total).max(1);
        }
        Ok(())
    }

    /// Loads and validates a scenario file.
    pub fn load(file: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(file).map_err(|source| ScenarioError::Read {
            file: file.to_path_buf(),
            source,
        })?;
        Scenario::parse(&text, file)
    }

    /// Parses and validates scenario text; `file` is named in errors.
    pub fn parse(text: &str, file: &Path) -> Result<Scenario, ScenarioError> {
        let raw: RawScenario = toml::from_str(text).map_err(|error| ScenarioError::Parse {
            file: file.to_path_buf(),
            message: error.to_string().trim_end().to_string(),
        })?;
        Validator { file }.scenario(raw)
    }
}

struct Validator<'a> {
    file: &'a Path,
}

impl Validator<'_> {
    fn invalid(&self, key: impl Into<String>, message: impl Into<String>) -> ScenarioError {
        ScenarioError::Invalid {
            file: self.file.to_path_buf(),
            key: key.into(),
            message: message.into(),
        }
    }

    fn scenario(&self, raw: RawScenario) -> Result<Scenario, ScenarioError> {
        if raw.duration.is_zero() {
            return Err(self.invalid("duration", "must be positive, got 0s"));
        }
        let quiet = raw.quiet.unwrap_or(Duration::from_secs(5 * 60));
        if let Some(why) = run_too_long(raw.duration, quiet) {
            return Err(self.invalid("duration", why));
        }
        let tick = raw.tick.unwrap_or(Duration::from_millis(10));
        if tick.is_zero() || tick > Duration::from_secs(1) {
            return Err(self.invalid("tick", format!("must be in (0, 1s], got {tick:?}")));
        }
        let server = self.server(raw.server)?;
        let mut carrier_index = BTreeMap::new();
        let mut carriers = Vec::new();
        for (name, raw_carrier) in raw.carriers {
            carrier_index.insert(name.clone(), carriers.len());
            carriers.push(self.carrier(&name, raw_carrier)?);
        }
        let mut groups = Vec::new();
        let mut group_index = BTreeMap::new();
        for (i, raw_group) in raw.devices.into_iter().enumerate() {
            let group = self.group(i, raw_group, &mut carrier_index, &mut carriers)?;
            if group_index.insert(group.name.clone(), i).is_some() {
                return Err(self.invalid(
                    format!("devices[{i}].name"),
                    format!("{:?} names two device groups", group.name),
                ));
            }
            groups.push(group);
        }
        if groups.is_empty() {
            return Err(self.invalid("devices", "a scenario needs at least one [[devices]] group"));
        }
        let duration = raw.duration;
        let faults = raw
            .faults
            .into_iter()
            .enumerate()
            .map(|(i, table)| {
                let (fault, params) = self.split_fault(i, table)?;
                let fault = self.fault(i, fault, params, &carrier_index, &group_index)?;
                if matches!(fault.kind, FaultKind::DiskStall | FaultKind::DiskFailure)
                    && server.store != StoreKind::Durable
                {
                    return Err(self.invalid(
                        format!("faults[{i}].kind"),
                        format!(
                            "a {} fault needs a disk: set server.store = \"durable\"",
                            fault.name
                        ),
                    ));
                }
                // A fault the run never reaches is a typo, not a scenario.
                if matches!(fault.kind, FaultKind::ClockJump { .. })
                    && server.token_lifetime.is_none()
                {
                    return Err(self.invalid(
                        format!("faults[{i}].kind"),
                        "a clock_jump fault moves what devices believe about their tokens' \
                         expiry: set server.token_lifetime (e.g. \"1h\") so tokens expire",
                    ));
                }
                if fault.at >= duration {
                    return Err(self.invalid(
                        format!("faults[{i}].at"),
                        format!(
                            "{} is not before the scenario's duration {}: the fault would \
                             never happen",
                            humantime::format_duration(fault.at),
                            humantime::format_duration(duration)
                        ),
                    ));
                }
                Ok(fault)
            })
            .collect::<Result<Vec<_>, _>>()?;
        if let Some((i, why)) = too_many_fault_occurrences(&faults, duration) {
            return Err(self.invalid(format!("faults[{i}].every"), why));
        }
        Ok(Scenario {
            name: raw.name.unwrap_or_else(|| {
                self.file
                    .file_stem()
                    .map_or("scenario".into(), |s| s.to_string_lossy().into_owned())
            }),
            file: self.file.to_path_buf(),
            duration: raw.duration,
            seed: raw.seed,
            tick,
            quiet,
            server,
            carriers,
            groups,
            faults,
        })
    }

    fn server(&self, raw: RawServer) -> Result<ServerSetup, ScenarioError> {
        let store = match raw.store.as_deref() {
            None | Some("durable") => StoreKind::Durable,
            Some("memory") => StoreKind::Memory,
            Some(other) => {
                return Err(self.invalid(
                    "server.store",
                    format!("unknown store {other:?}; known: \"durable\", \"memory\""),
                ));
            }
        };
        let commit_latency = raw.commit_latency.unwrap_or(DEFAULT_COMMIT_LATENCY);
        if commit_latency > Duration::from_secs(1) {
            return Err(self.invalid(
                "server.commit_latency",
                format!("{commit_latency:?} is longer than any disk's fsync (at most 1s)"),
            ));
        }
        let defaults = imlab_core::server::ServerConfig::default();
        let outbox_len_max = raw.outbox_len_max.unwrap_or(defaults.outbox_len_max);
        if outbox_len_max == 0 {
            return Err(self.invalid("server.outbox_len_max", "must be positive, got 0"));
        }
        let fanout_queue_len_max = raw
            .fanout_queue_len_max
            .unwrap_or(defaults.fanout_queue_len_max);
        if fanout_queue_len_max == 0 {
            return Err(self.invalid("server.fanout_queue_len_max", "must be positive, got 0"));
        }
        let token_lifetime = raw.token_lifetime;
        if let Some(lifetime) = token_lifetime
            && lifetime < Duration::from_secs(60)
        {
            return Err(self.invalid(
                "server.token_lifetime",
                format!(
                    "{} is shorter than a login takes on a weak link (at least 1m)",
                    humantime::format_duration(lifetime)
                ),
            ));
        }
        let push_when_behind = match raw.push_when_behind.as_deref() {
            None | Some("notify") => PushWhenBehind::Notify,
            Some("message") => PushWhenBehind::Message,
            Some(other) => {
                return Err(self.invalid(
                    "server.push_when_behind",
                    format!("unknown policy {other:?}; known: \"notify\", \"message\""),
                ));
            }
        };
        Ok(ServerSetup {
            push_when_behind,
            token_lifetime,
            store,
            commit_latency,
            notify_ack_timeout: raw
                .notify_ack_timeout
                .unwrap_or(defaults.notify_ack_timeout),
            outbox_len_max,
            fanout_queue_len_max,
        })
    }

    fn carrier(&self, name: &str, raw: CarrierTable) -> Result<CarrierProfile, ScenarioError> {
        raw.into_profile(name).map_err(|error| {
            let key = if error.key.is_empty() {
                format!("carriers.{name}")
            } else {
                format!("carriers.{name}.{}", error.key)
            };
            self.invalid(key, error.message)
        })
    }

    fn group(
        &self,
        i: usize,
        raw: RawDevices,
        carrier_index: &mut BTreeMap<String, usize>,
        carriers: &mut Vec<CarrierProfile>,
    ) -> Result<DeviceGroup, ScenarioError> {
        let key = |field: &str| format!("devices[{i}].{field}");
        if raw.count == 0 {
            return Err(self.invalid(key("count"), "must be positive, got 0"));
        }
        if raw.devices_per_user == 0 || raw.devices_per_user > 8 {
            return Err(self.invalid(
                key("devices_per_user"),
                format!("must be in 1..=8, got {}", raw.devices_per_user),
            ));
        }
        imlab_core::auth::validate_id("device group", &raw.name)
            .map_err(|message| self.invalid(key("name"), message))?;
        // A carrier not declared under [carriers] may name a preset directly.
        let carrier = match carrier_index.get(&raw.carrier) {
            Some(index) => *index,
            None => {
                let profile = carrier::preset(&raw.carrier).ok_or_else(|| {
                    self.invalid(
                        key("carrier"),
                        format!(
                            "{:?} is neither a [carriers] entry nor a preset ({})",
                            raw.carrier,
                            carrier::PRESET_NAMES.join(", ")
                        ),
                    )
                })?;
                carrier_index.insert(raw.carrier.clone(), carriers.len());
                carriers.push(profile);
                carriers.len() - 1
            }
        };
        if let Err(error) = parse_strategy(&raw.heartbeat) {
            return Err(self.invalid(key("heartbeat"), error));
        }
        let app_states = raw
            .app_states
            .into_iter()
            .enumerate()
            .map(|(j, state)| {
                let app_state = match state.state.as_str() {
                    "foreground" => AppState::Foreground,
                    "background" => AppState::Background,
                    "inactive" => AppState::Inactive,
                    other => {
                        return Err(self.invalid(
                            key(&format!("app_states[{j}].state")),
                            format!("{other:?}; use foreground, background or inactive"),
                        ));
                    }
                };
                if state.duration.is_zero() {
                    return Err(
                        self.invalid(key(&format!("app_states[{j}].for")), "must be positive")
                    );
                }
                Ok((app_state, state.duration))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let traffic = &raw.traffic;
        for (field, rate) in [
            ("traffic.one_to_one_per_hour", traffic.one_to_one_per_hour),
            ("traffic.group_per_hour", traffic.group_per_hour),
        ] {
            if !(0.0..=3_600.0).contains(&rate) {
                return Err(self.invalid(key(field), format!("must be in [0, 3600], got {rate}")));
            }
        }
        let group_size = traffic.group_size.unwrap_or(8);
        if !(2..=5_000).contains(&group_size) {
            return Err(self.invalid(
                key("traffic.group_size"),
                format!("must be in 2..=5000, got {group_size}"),
            ));
        }
        let body_bytes = traffic.body_bytes.unwrap_or(100);
        if body_bytes > 16 * 1024 {
            return Err(self.invalid(
                key("traffic.body_bytes"),
                format!("must be at most 16384, got {body_bytes}"),
            ));
        }
        Ok(DeviceGroup {
            name: raw.name,
            count: raw.count,
            carrier,
            heartbeat: raw.heartbeat,
            devices_per_user: raw.devices_per_user,
            app_states,
            traffic: Traffic {
                one_to_one_per_hour: traffic.one_to_one_per_hour,
                group_per_hour: traffic.group_per_hour,
                group_size,
                body_bytes,
            },
        })
    }

    /// Splits a `[[faults]]` table into its common keys and the kind's parameters.
    fn split_fault(
        &self,
        i: usize,
        table: toml::Table,
    ) -> Result<(RawFault, FaultParams), ScenarioError> {
        let (common, params): (toml::Table, toml::Table) = table
            .into_iter()
            .partition(|(key, _)| FAULT_COMMON_KEYS.contains(&key.as_str()));
        let raw: RawFault = common.try_into().map_err(|error: toml::de::Error| {
            self.invalid(format!("faults[{i}]"), error.message().to_string())
        })?;
        let params: FaultParams = params.try_into().map_err(|error: toml::de::Error| {
            self.invalid(format!("faults[{i}]"), error.message().to_string())
        })?;
        Ok((raw, params))
    }

    fn fault(
        &self,
        i: usize,
        raw: RawFault,
        params: FaultParams,
        carriers: &BTreeMap<String, usize>,
        groups: &BTreeMap<String, usize>,
    ) -> Result<Fault, ScenarioError> {
        let key = |field: &str| format!("faults[{i}].{field}");
        let target = |kind: &str| {
            raw.target.clone().ok_or_else(|| {
                self.invalid(key("target"), format!("a {kind} fault needs a target"))
            })
        };
        let carrier = |name: String| {
            carriers.get(&name).copied().ok_or_else(|| {
                self.invalid(
                    key("target"),
                    format!("{name:?} is not a carrier of this scenario"),
                )
            })
        };
        let group = |name: String| {
            groups.get(&name).copied().ok_or_else(|| {
                self.invalid(key("target"), format!("{name:?} is not a device group"))
            })
        };
        let fraction = raw.fraction.unwrap_or(1.0);
        if !(0.0..=1.0).contains(&fraction) || fraction == 0.0 {
            return Err(self.invalid(
                key("fraction"),
                format!("must be in (0, 1], got {fraction}"),
            ));
        }
        let kind = match raw.kind.as_str() {
            "server_crash" => FaultKind::ServerCrash,
            "partition" => FaultKind::Partition {
                carrier: carrier(target("partition")?)?,
            },
            "outage" => FaultKind::Outage {
                carrier: carrier(target("outage")?)?,
            },
            "handover" => {
                let to = raw
                    .to
                    .clone()
                    .ok_or_else(|| self.invalid(key("to"), "a handover needs `to` (a carrier)"))?;
                let to = carriers.get(&to).copied().ok_or_else(|| {
                    self.invalid(
                        key("to"),
                        format!("{to:?} is not a carrier of this scenario"),
                    )
                })?;
                FaultKind::Handover {
                    group: group(target("handover")?)?,
                    to,
                    fraction,
                }
            }
            "app_kill" => FaultKind::AppKill {
                group: group(target("app_kill")?)?,
                fraction,
            },
            "clock_jump" => FaultKind::ClockJump {
                group: group(target("clock_jump")?)?,
                fraction,
                by_ms: params
                    .clock_jump_ms()
                    .map_err(|error| self.invalid(key(&error.key), error.message))?,
            },
            "push_outage" => FaultKind::PushOutage,
            "server_stall" => FaultKind::ServerStall,
            "disk_stall" => FaultKind::DiskStall,
            "disk_failure" => FaultKind::DiskFailure,
            other if fault::scope_of(other) == Some(Scope::Carrier) => {
                let link = params
                    .link_fault(other)
                    .map_err(|error| self.invalid(key(&error.key), error.message))?
                    .expect("every carrier fault but outage, partition, handover is a LinkFault");
                FaultKind::Link {
                    carrier: carrier(target(other)?)?,
                    fault: link,
                }
            }
            other => {
                return Err(self.invalid(
                    key("kind"),
                    format!("unknown fault {other:?}; known: {}", fault::kind_names()),
                ));
            }
        };
        if !matches!(kind, FaultKind::Link { .. }) {
            params
                .check_keys(&raw.kind)
                .map_err(|error| self.invalid(key(&error.key), error.message))?;
        }
        let (at, every) = match (raw.at, raw.every) {
            (None, None) => {
                return Err(self.invalid(key("at"), "a fault needs `at` or `every`"));
            }
            (at, Some(every)) if every.is_zero() => {
                let _ = at;
                return Err(self.invalid(key("every"), "must be positive, got 0s"));
            }
            (Some(at), every) => (at, every),
            (None, Some(every)) => (every, Some(every)),
        };
        let duration = raw.duration.unwrap_or(Duration::ZERO);
        let instant = fault::is_instant(&raw.kind);
        let undone = matches!(
            kind,
            FaultKind::Handover { .. } | FaultKind::ClockJump { .. }
        );
        if instant && !undone && !duration.is_zero() {
            return Err(self.invalid(
                key("duration"),
                format!(
                    "a {} fault happens at one instant and takes no duration",
                    raw.kind
                ),
            ));
        }
        if !instant && duration.is_zero() {
            return Err(self.invalid(
                key("duration"),
                format!("a {} fault needs a duration", raw.kind),
            ));
        }
        if let Some(every) = every
            && duration >= every
        {
            return Err(self.invalid(
                key("duration"),
                format!("{duration:?} must be shorter than every {every:?}"),
            ));
        }
        Ok(Fault {
            name: raw.kind,
            kind,
            at,
            every,
            duration,
        })
    }
}
