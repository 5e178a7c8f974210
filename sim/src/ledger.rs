//! The ledger: what every device's app saw and did, as the invariant checker needs it.
//!
//! Sends are recorded when the app queues them (that time is the start of the message's
//! delay) and when they are acked; every processed message is appended to its device's app
//! log. Entries refer to sends by index, so an app log costs a few words per message.

use std::collections::BTreeMap;

use crate::storm::StormLog;

/// One message the app asked to send.
#[derive(Debug, Clone)]
pub struct SendRecord {
    /// Sending device.
    pub device: u32,
    /// Its client message id.
    pub client_msg_id: String,
    /// The conversation: a user or a chat group.
    pub to: Conversation,
    /// When the app queued it (simulated ms).
    pub queued_ms: u64,
    /// When the server's ack arrived, with what it named.
    pub acked: Option<Ack>,
}

/// A send's ack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// When it arrived (simulated ms).
    pub at_ms: u64,
    /// The message id the server assigned.
    pub msg_id: u64,
    /// The store generation that acked it (`LoginReply.inbox_epoch` of the connection).
    pub epoch: u64,
}

/// A conversation by index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Conversation {
    /// 1:1 with this user.
    Peer(u32),
    /// A chat group.
    Group(u32),
}

/// One processed message in a device's app log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogEntry {
    /// Inbox seq.
    pub seq: u64,
    /// Server-wide id.
    pub msg_id: u64,
    /// The send, when the message came from a send the ledger knows.
    pub send: Option<u32>,
    /// When the app processed it (simulated ms).
    pub at_ms: u64,
    /// The seq held a message the app had already shown (`ClientEvent::Repeat`): processed,
    /// not shown. Not part of the app log's messages, only of its seqs.
    pub repeat: bool,
}

/// Per-device records.
#[derive(Debug, Clone, Default)]
pub struct DeviceLedger {
    /// The app log, in processing order.
    pub log: Vec<LogEntry>,
    /// Logins.
    pub connects: u32,
    /// Logins before the scenario ended (the heal phase's reconnect is not counted).
    pub connects_in_scenario: u32,
    /// True while logged in.
    pub connected: bool,
    /// Connections that ended, by cause.
    pub disconnects: BTreeMap<String, u32>,
    /// Pings sent.
    pub heartbeats_sent: u64,
    /// Pongs received.
    pub heartbeats_answered: u64,
    /// Old seqs dropped by the client's dedupe.
    pub duplicates_dropped: u64,
    /// Wake-ups received over the push channel.
    pub wakeups: u64,
    /// Positions in `log` where the server's store became a new generation (the next entry
    /// starts again at seq 1).
    pub inbox_resets: Vec<usize>,
    /// The heartbeat intervals the device used, with the time each Ping was sent.
    pub heartbeat_intervals: Vec<(u64, u64)>,
}

/// Everything the devices recorded.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    /// Sends by index.
    pub sends: Vec<SendRecord>,
    /// Client message id -> send index.
    pub send_index: BTreeMap<String, u32>,
    /// Per device.
    pub devices: Vec<DeviceLedger>,
    /// Logins and server crashes, for the reconnection storms.
    pub storms: StormLog,
}

impl Ledger {
    /// An empty ledger for `n_devices` devices.
    pub fn new(n_devices: usize) -> Ledger {
        Ledger {
            devices: vec![DeviceLedger::default(); n_devices],
            ..Ledger::default()
        }
    }

    /// Records a queued send.
    pub fn queued(&mut self, device: u32, client_msg_id: String, to: Conversation, at_ms: u64) {
        let index = self.sends.len() as u32;
        self.send_index.insert(client_msg_id.clone(), index);
        self.sends.push(SendRecord {
            device,
            client_msg_id,
            to,
            queued_ms: at_ms,
            acked: None,
        });
    }

    /// Records an ack from store generation `epoch`.
    pub fn acked(&mut self, client_msg_id: &str, msg_id: u64, epoch: u64, at_ms: u64) {
        if let Some(index) = self.send_index.get(client_msg_id) {
            let send = &mut self.sends[*index as usize];
            send.acked.get_or_insert(Ack {
                at_ms,
                msg_id,
                epoch,
            });
        }
    }

    /// Records a processed message.
    pub fn delivered(
        &mut self,
        device: u32,
        seq: u64,
        msg_id: u64,
        client_msg_id: &str,
        at_ms: u64,
    ) {
        let send = self.send_index.get(client_msg_id).copied();
        self.devices[device as usize].log.push(LogEntry {
            seq,
            msg_id,
            send,
            at_ms,
            repeat: false,
        });
    }

    /// Records a seq whose message the device had already shown.
    pub fn repeated(&mut self, device: u32, seq: u64, msg_id: u64, at_ms: u64) {
        self.devices[device as usize].log.push(LogEntry {
            seq,
            msg_id,
            send: None,
            at_ms,
            repeat: true,
        });
    }

    /// Delays (ms) from queueing to processing, over every delivery of a known send.
    pub fn delays_ms(&self) -> Vec<u64> {
        let mut delays: Vec<u64> = self
            .devices
            .iter()
            .flat_map(|device| device.log.iter())
            .filter_map(|entry| {
                let send = &self.sends[entry.send? as usize];
                Some(entry.at_ms.saturating_sub(send.queued_ms))
            })
            .collect();
        delays.sort_unstable();
        delays
    }
}

/// The `q` quantile (0..=1) of sorted values, or 0 when empty.
pub fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}
