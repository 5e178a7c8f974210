//! The fault vocabulary: every fault imlab knows, by the one name that scenario files
//! (`[[faults]] kind = "..."`), `imlab proxy`'s control API (`POST /faults`) and the load
//! generator use, with its parameters and their checks.
//!
//! Faults come in four scopes ([`Scope`]). Carrier faults ([`LinkFault`]) act on flows and are
//! carried out by imlab-carrier's [`FlowModel`](crate::FlowModel) while their window is open,
//! whoever drives it. Machine faults (server crash, stall, disk), device faults (app kill) and
//! push faults are carried out by the driver that owns the machine (the simulator); a proxy
//! refuses them by name.
//!
//! Parameters are one flat table ([`FaultParams`]) so that TOML and JSON read the same keys;
//! a key a kind does not take is an error naming it.

use std::time::Duration;

use serde::Deserialize;

/// Who carries a fault out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The carrier model, on every flow of the carrier (simulator and proxy).
    Carrier,
    /// The IM server's machine (the simulator only).
    Server,
    /// Devices of a group (the simulator only).
    Device,
    /// The push service (the simulator only).
    Push,
}

/// Every fault kind: (name, scope, what it does). The names are the vocabulary.
pub const KINDS: &[(&str, Scope, &str)] = &[
    (
        "outage",
        Scope::Carrier,
        "radio down: nothing passes for the window",
    ),
    (
        "partition",
        Scope::Carrier,
        "the path to the IM server is cut for the window",
    ),
    (
        "handover",
        Scope::Carrier,
        "devices move to another network; old connections die",
    ),
    (
        "latency_spike",
        Scope::Carrier,
        "`added` delay plus up to `jitter` for the window",
    ),
    (
        "bandwidth",
        Scope::Carrier,
        "the link carries `kbps` for the window",
    ),
    (
        "loss_burst",
        Scope::Carrier,
        "Gilbert-Elliott bursty loss for the window",
    ),
    (
        "reset",
        Scope::Carrier,
        "every open flow is reset, both ways, at once",
    ),
    (
        "blackhole",
        Scope::Carrier,
        "flows open in the window are accepted and swallowed",
    ),
    (
        "slow_close",
        Scope::Carrier,
        "closes (FINs) take `delay` longer in the window",
    ),
    (
        "close_after_bytes",
        Scope::Carrier,
        "a flow is closed after `bytes` in the window",
    ),
    (
        "nat_rebind",
        Scope::Carrier,
        "every mapping moves to a new port: server side half-open",
    ),
    (
        "max_age",
        Scope::Carrier,
        "the carrier cuts flows older than `age` in the window",
    ),
    (
        "server_crash",
        Scope::Server,
        "the server process dies and restarts after the window",
    ),
    (
        "server_stall",
        Scope::Server,
        "the server process freezes for the window (GC, VM steal)",
    ),
    (
        "disk_stall",
        Scope::Server,
        "durable commits hang until the window ends",
    ),
    (
        "disk_failure",
        Scope::Server,
        "commits fail (STORE_UNAVAILABLE); restart at the end",
    ),
    (
        "app_kill",
        Scope::Device,
        "the app is killed and restarted after the window",
    ),
    (
        "clock_jump",
        Scope::Device,
        "the device's wall clock jumps `by` (\"-2h\", \"+3h\"); back after the window",
    ),
    (
        "push_outage",
        Scope::Push,
        "the push service delivers nothing for the window",
    ),
];

/// The names of every fault kind, comma-separated (for error messages and help).
pub fn kind_names() -> String {
    KINDS
        .iter()
        .map(|(name, _, _)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The scope of a fault kind, or None for an unknown name.
pub fn scope_of(kind: &str) -> Option<Scope> {
    KINDS
        .iter()
        .find(|(name, _, _)| *name == kind)
        .map(|(_, scope, _)| *scope)
}

/// True for kinds that happen at one instant: they need no duration (a handover and a
/// clock jump may take one, after which they are undone).
pub fn is_instant(kind: &str) -> bool {
    matches!(kind, "reset" | "nat_rebind" | "handover" | "clock_jump")
}

/// The largest clock jump, either way: ten years (a phone that boots to its RTC's default).
pub const CLOCK_JUMP_MAX: Duration = Duration::from_secs(10 * 365 * 24 * 3_600);

/// Parses a signed duration such as `"-2h"` or `"+1h30m"`: the sign is required, so the
/// direction is never a guess. Returns milliseconds.
pub fn parse_signed_duration(text: &str) -> Result<i64, String> {
    let (sign, rest) = match text.trim().split_at_checked(1) {
        Some(("+", rest)) => (1, rest),
        Some(("-", rest)) => (-1, rest),
        _ => {
            return Err(format!(
                "{text:?} needs a sign: \"+3h\" (the clock runs ahead) or \"-2h\" (behind)"
            ));
        }
    };
    let magnitude = humantime::parse_duration(rest.trim())
        .map_err(|error| format!("{text:?} is not a signed duration like \"-2h\": {error}"))?;
    if magnitude.is_zero() {
        return Err(format!("{text:?} jumps nowhere: must not be zero"));
    }
    if magnitude > CLOCK_JUMP_MAX {
        return Err(format!("{text:?} is more than ten years (3650d)"));
    }
    Ok(sign * magnitude.as_millis() as i64)
}

/// Which way a link fault applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Phone to server and server to phone.
    #[default]
    Both,
    /// Phone to server only.
    Up,
    /// Server to phone only.
    Down,
}

impl Direction {
    /// True when the fault applies to traffic going up (phone to server) or down.
    pub fn applies(self, up: bool) -> bool {
        match self {
            Direction::Both => true,
            Direction::Up => up,
            Direction::Down => !up,
        }
    }
}

/// The Gilbert-Elliott two-state loss model (netem's `gemodel`): each transmission first
/// moves the chain (good to bad with `p_enter_bad`, bad to good with `p_leave_bad`), then is
/// lost with the state's loss rate. Mean burst length is `1 / p_leave_bad` transmissions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GilbertElliott {
    /// Probability per transmission of moving from the good state to the bad one.
    pub p_enter_bad: f64,
    /// Probability per transmission of moving from the bad state back to the good one.
    pub p_leave_bad: f64,
    /// Loss rate in the good state (on top of the profile's own loss).
    pub loss_good: f64,
    /// Loss rate in the bad state.
    pub loss_bad: f64,
}

/// What a carrier fault does to flows while its window is open.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LinkFault {
    /// Each delivery takes `added` plus a uniform draw in [0, `jitter`] longer.
    LatencySpike {
        /// Added one-way delay.
        added: Duration,
        /// Extra uniform jitter on top.
        jitter: Duration,
        /// Which way.
        direction: Direction,
    },
    /// The link's bandwidth is `kbps`.
    Bandwidth {
        /// Kilobits per second.
        kbps: u32,
        /// Which way.
        direction: Direction,
    },
    /// Bursty loss.
    LossBurst {
        /// The chain.
        model: GilbertElliott,
        /// Which way.
        direction: Direction,
    },
    /// At the window's start every open flow is reset (RST to both sides).
    Reset,
    /// Flows open during the window are swallowed for good: the carrier accepts, forwards
    /// nothing either way and answers nothing; both sides are left to their timeouts.
    Blackhole,
    /// A close (FIN) reaches the other side `delay` late.
    SlowClose {
        /// Added delay of a FIN.
        delay: Duration,
    },
    /// A flow that carried `bytes` in the direction during the window is closed both ways.
    CloseAfterBytes {
        /// Byte budget per flow.
        bytes: u64,
        /// Which way's bytes count.
        direction: Direction,
    },
    /// At the window's start every mapping moves to a new public port: the phone's next
    /// packet reaches the server as an unknown flow and is answered with a RST, the server's
    /// side of the old flow is half-open.
    NatRebind,
    /// The carrier cuts (RST both ways) every flow older than `age`.
    MaxAge {
        /// Age limit.
        age: Duration,
    },
}

impl LinkFault {
    /// The fault's name in the vocabulary.
    pub fn name(&self) -> &'static str {
        match self {
            LinkFault::LatencySpike { .. } => "latency_spike",
            LinkFault::Bandwidth { .. } => "bandwidth",
            LinkFault::LossBurst { .. } => "loss_burst",
            LinkFault::Reset => "reset",
            LinkFault::Blackhole => "blackhole",
            LinkFault::SlowClose { .. } => "slow_close",
            LinkFault::CloseAfterBytes { .. } => "close_after_bytes",
            LinkFault::NatRebind => "nat_rebind",
            LinkFault::MaxAge { .. } => "max_age",
        }
    }
}

/// A carrier fault and its window [start, end); instant faults have `end == start`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinkWindow {
    /// Start.
    pub start: Duration,
    /// End (exclusive).
    pub end: Duration,
    /// What happens.
    pub fault: LinkFault,
}

impl LinkWindow {
    /// True while the window is open at `at`.
    pub fn open_at(&self, at: Duration) -> bool {
        self.start <= at && at < self.end
    }
}

/// The parameters of any fault, as one flat table of optional keys (TOML or JSON).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FaultParams {
    /// latency_spike: added one-way delay.
    #[serde(with = "humantime_serde", default)]
    pub added: Option<Duration>,
    /// latency_spike: uniform jitter on top.
    #[serde(with = "humantime_serde", default)]
    pub jitter: Option<Duration>,
    /// bandwidth: kilobits per second.
    pub kbps: Option<u32>,
    /// latency_spike, bandwidth, loss_burst, close_after_bytes: which way.
    pub direction: Option<Direction>,
    /// loss_burst: good to bad per transmission.
    pub p_enter_bad: Option<f64>,
    /// loss_burst: bad to good per transmission.
    pub p_leave_bad: Option<f64>,
    /// loss_burst: loss in the good state (default 0).
    pub loss_good: Option<f64>,
    /// loss_burst: loss in the bad state (default 1).
    pub loss_bad: Option<f64>,
    /// slow_close: added FIN delay.
    #[serde(with = "humantime_serde", default)]
    pub delay: Option<Duration>,
    /// close_after_bytes: bytes per flow.
    pub bytes: Option<u64>,
    /// max_age: the age limit.
    #[serde(with = "humantime_serde", default)]
    pub age: Option<Duration>,
    /// clock_jump: how far the device's wall clock jumps, signed (`"-2h"`, `"+3h"`).
    pub by: Option<String>,
}

/// A fault parameter that is missing, misplaced or impossible.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("key `{key}`: {message}")]
pub struct ParamError {
    /// The key.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

fn param_error(key: &str, message: impl Into<String>) -> ParamError {
    ParamError {
        key: key.into(),
        message: message.into(),
    }
}

fn probability(key: &str, value: Option<f64>, default: Option<f64>) -> Result<f64, ParamError> {
    let value = value
        .or(default)
        .ok_or_else(|| param_error(key, "is required for loss_burst"))?;
    if !(0.0..=1.0).contains(&value) {
        return Err(param_error(key, format!("must be in [0, 1], got {value}")));
    }
    Ok(value)
}

impl FaultParams {
    /// The keys set, by name.
    fn set_keys(&self) -> Vec<&'static str> {
        let mut keys = Vec::new();
        let mut check = |name: &'static str, set: bool| {
            if set {
                keys.push(name);
            }
        };
        check("added", self.added.is_some());
        check("jitter", self.jitter.is_some());
        check("kbps", self.kbps.is_some());
        check("direction", self.direction.is_some());
        check("p_enter_bad", self.p_enter_bad.is_some());
        check("p_leave_bad", self.p_leave_bad.is_some());
        check("loss_good", self.loss_good.is_some());
        check("loss_bad", self.loss_bad.is_some());
        check("delay", self.delay.is_some());
        check("bytes", self.bytes.is_some());
        check("age", self.age.is_some());
        check("by", self.by.is_some());
        keys
    }

    /// Checks that only keys `kind` takes are set.
    pub fn check_keys(&self, kind: &str) -> Result<(), ParamError> {
        let allowed: &[&str] = match kind {
            "latency_spike" => &["added", "jitter", "direction"],
            "bandwidth" => &["kbps", "direction"],
            "loss_burst" => &[
                "p_enter_bad",
                "p_leave_bad",
                "loss_good",
                "loss_bad",
                "direction",
            ],
            "slow_close" => &["delay"],
            "close_after_bytes" => &["bytes", "direction"],
            "max_age" => &["age"],
            "clock_jump" => &["by"],
            _ => &[],
        };
        match self.set_keys().into_iter().find(|k| !allowed.contains(k)) {
            Some(key) => Err(param_error(key, format!("a {kind} fault does not take it"))),
            None => Ok(()),
        }
    }

    /// A clock_jump's `by`, in milliseconds (negative: the clock goes back).
    pub fn clock_jump_ms(&self) -> Result<i64, ParamError> {
        self.check_keys("clock_jump")?;
        let by = self
            .by
            .as_deref()
            .ok_or_else(|| param_error("by", "is required for clock_jump (e.g. \"-2h\")"))?;
        parse_signed_duration(by).map_err(|message| param_error("by", message))
    }

    /// The carrier fault `kind` names, with these parameters; None for a kind of another
    /// scope or one the driver carries out itself (outage, partition, handover).
    pub fn link_fault(&self, kind: &str) -> Result<Option<LinkFault>, ParamError> {
        self.check_keys(kind)?;
        let direction = self.direction.unwrap_or_default();
        let fault = match kind {
            "latency_spike" => {
                let added = self
                    .added
                    .ok_or_else(|| param_error("added", "is required for latency_spike"))?;
                let jitter = self.jitter.unwrap_or_default();
                if added.is_zero() && jitter.is_zero() {
                    return Err(param_error(
                        "added",
                        "a spike needs `added` or `jitter` > 0",
                    ));
                }
                if added + jitter > Duration::from_secs(600) {
                    return Err(param_error("added", "added + jitter must be at most 10m"));
                }
                LinkFault::LatencySpike {
                    added,
                    jitter,
                    direction,
                }
            }
            "bandwidth" => {
                let kbps = self
                    .kbps
                    .ok_or_else(|| param_error("kbps", "is required for bandwidth"))?;
                if kbps == 0 {
                    return Err(param_error("kbps", "must be positive, got 0"));
                }
                LinkFault::Bandwidth { kbps, direction }
            }
            "loss_burst" => {
                let model = GilbertElliott {
                    p_enter_bad: probability("p_enter_bad", self.p_enter_bad, None)?,
                    p_leave_bad: probability("p_leave_bad", self.p_leave_bad, None)?,
                    loss_good: probability("loss_good", self.loss_good, Some(0.0))?,
                    loss_bad: probability("loss_bad", self.loss_bad, Some(1.0))?,
                };
                if model.p_leave_bad == 0.0 {
                    return Err(param_error(
                        "p_leave_bad",
                        "must be positive, or a burst never ends",
                    ));
                }
                LinkFault::LossBurst { model, direction }
            }
            "reset" => LinkFault::Reset,
            "blackhole" => LinkFault::Blackhole,
            "slow_close" => LinkFault::SlowClose {
                delay: self
                    .delay
                    .ok_or_else(|| param_error("delay", "is required for slow_close"))?,
            },
            "close_after_bytes" => {
                let bytes = self
                    .bytes
                    .ok_or_else(|| param_error("bytes", "is required for close_after_bytes"))?;
                if bytes == 0 {
                    return Err(param_error("bytes", "must be positive, got 0"));
                }
                LinkFault::CloseAfterBytes { bytes, direction }
            }
            "nat_rebind" => LinkFault::NatRebind,
            "max_age" => {
                let age = self
                    .age
                    .ok_or_else(|| param_error("age", "is required for max_age"))?;
                if age.is_zero() {
                    return Err(param_error("age", "must be positive, got 0s"));
                }
                LinkFault::MaxAge { age }
            }
            _ => return Ok(None),
        };
        Ok(Some(fault))
    }
}
