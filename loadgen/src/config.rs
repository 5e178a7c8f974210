//! What a load run does.

use std::path::PathBuf;
use std::time::Duration;

use crate::protocol::mqtt::MqttOptions;
use crate::transport::Transport;

/// Who a message goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// A random other client.
    OneToOne,
    /// The sender's group: clients are split into groups of this size.
    Group(usize),
}

impl std::str::FromStr for Pattern {
    type Err = String;

    fn from_str(text: &str) -> Result<Pattern, String> {
        if text == "one-to-one" {
            return Ok(Pattern::OneToOne);
        }
        if let Some(size) = text.strip_prefix("group:") {
            let size: usize = size
                .parse()
                .map_err(|_| format!("--pattern {text:?}: group size must be a number"))?;
            if !(2..=10_000).contains(&size) {
                return Err(format!(
                    "--pattern {text:?}: group size must be in 2..=10000"
                ));
            }
            return Ok(Pattern::Group(size));
        }
        Err(format!("--pattern {text:?}: use one-to-one or group:SIZE"))
    }
}

/// The protocol the devices speak.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum ProtocolChoice {
    /// imlab's own (imlab-core's client core).
    #[default]
    Imlab,
    /// MQTT 3.1.1 or 5, with its options.
    Mqtt(MqttOptions),
}

impl ProtocolChoice {
    /// The WebSocket subprotocol it is offered under with `--ws`.
    pub fn ws_subprotocol(&self) -> &'static str {
        match self {
            ProtocolChoice::Imlab => imlab_core::ws::IMLAB_SUBPROTOCOL,
            // The name MQTT's specification registers for MQTT over WebSocket.
            ProtocolChoice::Mqtt(_) => "mqtt",
        }
    }

    /// How long a device's connect may take, TCP and handshakes (and login) together: the
    /// client core's connect timeout, or MQTT's `--ack-timeout` (which bounds its CONNACK).
    pub fn connect_timeout(&self) -> std::time::Duration {
        match self {
            ProtocolChoice::Imlab => imlab_core::client::ClientConfig::default().connect_timeout,
            ProtocolChoice::Mqtt(options) => options.ack_timeout,
        }
    }
}

/// A run's tag: `r` and the run's start (Unix milliseconds) in base 36, eight digits until
/// 2059, then `w` and the worker's number for a worker other than 0. Users, groups and
/// message ids carry it, so runs started apart never share a name. It is short because every
/// client keeps its user's and device's names: with a 9-byte tag they take 32 bytes together
/// (the allocator's 32-byte class) up to 99,999 clients, where the decimal milliseconds and
/// `w0` took 48.
pub fn run_tag(unix_ms: u64, worker: usize) -> String {
    let mut digits = Vec::new();
    let mut rest = unix_ms;
    loop {
        digits.push(b"0123456789abcdefghijklmnopqrstuvwxyz"[(rest % 36) as usize]);
        rest /= 36;
        if rest == 0 {
            break;
        }
    }
    digits.push(b'r');
    digits.reverse();
    let mut tag = String::from_utf8(digits).expect("ASCII digits");
    if worker != 0 {
        tag.push_str(&format!("w{worker}"));
    }
    tag
}

/// One worker's part of a run split over `--workers`: its clients are numbered
/// `first_client..first_client + clients` among `clients_total`, and its messages go to any
/// of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    /// The run's tag, shared by every worker (users, groups and message ids carry it).
    pub run_tag: String,
    /// The number of this worker's first client.
    pub first_client: u32,
    /// Clients over all workers.
    pub clients_total: usize,
    /// The other workers' results directories: a worker's drain ends once each of them has
    /// drained too (see [`crate::crossings::DRAINED_FILE`]).
    pub others: Vec<std::path::PathBuf>,
}

impl Share {
    /// Whether every other worker of this run has written `mark` in its directory
    /// ([`crate::crossings::write_mark`]).
    pub fn others_have(&self, mark: &str) -> bool {
        self.others
            .iter()
            .all(|other| crate::crossings::has_mark(other, mark, &self.run_tag))
    }
}

/// A load run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// The protocol the devices speak.
    pub protocol: ProtocolChoice,
    /// How devices reach the server: its address (resolved from `target_name` at start),
    /// source addresses, TLS, WebSocket.
    pub transport: Transport,
    /// The server as the user named it (`im.example.com:443`).
    pub target_name: String,
    /// Virtual devices (one per user).
    pub clients: usize,
    /// How long sends are scheduled for, after the ramp.
    pub duration: Duration,
    /// New connections per second during the ramp.
    pub connect_rate: f64,
    /// Messages per second over all clients (open loop).
    pub msg_rate: f64,
    /// Who messages go to.
    pub pattern: Pattern,
    /// Heartbeat strategy name.
    pub heartbeat: String,
    /// A Ping unanswered this long ends the connection.
    pub heartbeat_timeout: Duration,
    /// How long a device's DeviceAck may wait for another frame to ride along with (imlab's
    /// protocol; `ClientConfig::ack_delay`).
    pub ack_delay: Duration,
    /// Secret to sign tokens with (None: dev-mode server).
    pub auth_secret: Option<String>,
    /// Message body size.
    pub body_bytes: usize,
    /// Time after the last planned send for stragglers to arrive.
    pub drain: Duration,
    /// After the drain, how long to wait at most for disconnected recipients to log in
    /// again and sync (their missing deliveries are pending until then, not lost).
    pub reconnect_wait: Duration,
    /// Messages the ledger follows in flight at most (`--max-open-messages`): at the bound
    /// the run stops sending and drains.
    pub open_messages_max: usize,
    /// How a device waits before it reconnects (`--reconnect-backoff`).
    pub backoff: imlab_core::client::BackoffConfig,
    /// Where results go.
    pub out: Option<PathBuf>,
    /// Seed of the schedule.
    pub seed: u64,
    /// Distinguishes the ids of workers started together (0 for a single process).
    pub worker: usize,
    /// With `--carrier`: the carrier model on every connection, clients spread by weight.
    pub carriers: Vec<crate::carrier::CarrierShare>,
    /// Where the carrier model logs its decisions (`--trace FILE`, JSON Lines).
    pub carrier_trace: Option<PathBuf>,
    /// This process's part of a run split over workers (None: the whole run).
    pub share: Option<Share>,
    /// The command that started the run, recorded in results.json to reproduce it.
    pub command_line: Vec<String>,
    /// The imlab version that ran it.
    pub version: String,
    /// The git commit of the build that ran it (empty when unknown).
    pub commit: String,
    /// With `--scenario`: the scenario's devices, users, chat groups, traffic and carrier
    /// faults (then `clients` is its device count and `msg_rate` its total rate, `pattern`
    /// and `heartbeat` unused, and the carriers are the scenario's).
    pub population: Option<std::sync::Arc<crate::population::Population>>,
}

#[cfg(test)]
mod tests {
    use super::run_tag;

    /// Base 36 of the start's milliseconds (the values worked out apart from the function),
    /// and a worker's number only for workers other than 0.
    #[test]
    fn a_run_tag_is_the_start_in_base_36() {
        assert_eq!(run_tag(0, 0), "r0");
        assert_eq!(run_tag(35, 0), "rz");
        assert_eq!(run_tag(36, 3), "r10w3");
        // 2026-12-06 00:00 UTC.
        assert_eq!(run_tag(1_796_515_200_000, 0), "rmxb2rk00");
        assert_eq!(run_tag(1_796_515_200_000, 12), "rmxb2rk00w12");
        // The last eight-digit moment, in 2059.
        assert_eq!(run_tag(2_821_109_907_455, 0), "rzzzzzzzz");
    }
}
