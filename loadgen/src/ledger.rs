//! The load ledger: every planned message until it is acked and delivered to every recipient
//! device, every connection's life, and the latency histograms.
//!
//! Latencies are measured from the planned send time (open loop), so a stalled server shows
//! up as latency, not as fewer samples.

use std::collections::BTreeMap;
use std::time::Instant;

use hdrhistogram::Histogram;
use rustc_hash::FxHashMap;

/// Microseconds, the histograms' unit; up to one hour, 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// One planned message.
#[derive(Debug, Clone)]
pub struct Planned {
    /// Planned send time, µs since the run started.
    pub planned_us: u64,
    /// Sending client.
    pub sender: u32,
    /// Devices that must receive it (the sender's own echo excluded).
    pub recipients: Vec<u32>,
    /// When the server acked it, µs since start.
    pub acked_us: Option<u64>,
    /// Devices it reached.
    pub delivered: Vec<u32>,
}

/// Counters of one second, for timeseries.csv.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Second {
    /// Seconds since the run started.
    pub second: u64,
    /// Clients logged in at the end of the second.
    pub connected: u64,
    /// Sends made.
    pub sent: u64,
    /// Acks received.
    pub acked: u64,
    /// Deliveries.
    pub delivered: u64,
    /// Connections lost.
    pub disconnects: u64,
    /// Logins after a client's first.
    pub reconnects: u64,
    /// p99 send-to-delivery latency of this second's deliveries, ms.
    pub deliver_ms_p99: f64,
}

/// Everything a run measured.
pub struct LoadLedger {
    started: Instant,
    /// Planned messages.
    pub messages: Vec<Planned>,
    /// client_msg_id -> index in `messages`. Fx hashing: the ledger is on every delivery's
    /// path, and nothing iterates these maps.
    index: FxHashMap<String, u32>,
    /// (recipient, sender) -> the newest message number delivered, for reorder counting.
    last_number: FxHashMap<(u32, u32), u64>,
    /// Deliveries of a message a device already had.
    pub duplicated: u64,
    /// Deliveries older than one already delivered from the same sender.
    pub reordered: u64,
    /// Sends the client core refused (its unacked queue was full).
    pub refused_locally: u64,
    /// Sends the server refused for good.
    pub failed: u64,
    /// Groups the server confirmed.
    pub groups_created: u64,
    /// The last connection failure (for a clear error when nobody gets in).
    pub last_failure: Option<String>,
    /// TCP connect + login time.
    pub connect: Histogram<u64>,
    /// Planned send to ack.
    pub ack: Histogram<u64>,
    /// Planned send to delivery at a recipient device.
    pub deliver: Histogram<u64>,
    /// Connection lost to logged in again.
    pub reconnect: Histogram<u64>,
    /// Connection attempts that failed.
    pub connects_failed: u64,
    /// Logins.
    pub connects: u64,
    /// Connections lost, by cause.
    pub disconnects: BTreeMap<String, u64>,
    /// Logins after a client's first.
    pub reconnects: u64,
    /// Clients logged in now.
    pub connected: u64,
    /// Most clients logged in at once.
    pub peak_connected: u64,
    connecting_since: Vec<Option<u64>>,
    down_since: Vec<Option<u64>>,
    ever_connected: Vec<bool>,
    /// Per-second counters, closed seconds.
    pub seconds: Vec<Second>,
    current: Second,
    current_deliver: Histogram<u64>,
}

impl LoadLedger {
    /// A ledger for `n_clients` clients, starting now.
    pub fn new(n_clients: usize) -> LoadLedger {
        LoadLedger {
            started: Instant::now(),
            messages: Vec::new(),
            index: FxHashMap::default(),
            last_number: FxHashMap::default(),
            duplicated: 0,
            reordered: 0,
            refused_locally: 0,
            failed: 0,
            groups_created: 0,
            last_failure: None,
            connect: histogram(),
            ack: histogram(),
            deliver: histogram(),
            reconnect: histogram(),
            connects_failed: 0,
            connects: 0,
            disconnects: BTreeMap::new(),
            reconnects: 0,
            connected: 0,
            peak_connected: 0,
            connecting_since: vec![None; n_clients],
            down_since: vec![None; n_clients],
            ever_connected: vec![false; n_clients],
            seconds: Vec::new(),
            current: Second::default(),
            current_deliver: histogram(),
        }
    }

    /// µs since the run started.
    pub fn now_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    /// The run's start.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Closes the current second (called once a second).
    pub fn tick(&mut self) {
        let mut second = std::mem::take(&mut self.current);
        second.second = self.seconds.len() as u64;
        second.connected = self.connected;
        second.deliver_ms_p99 = if self.current_deliver.is_empty() {
            0.0
        } else {
            self.current_deliver.value_at_quantile(0.99) as f64 / 1_000.0
        };
        self.current_deliver.reset();
        self.seconds.push(second);
    }

    /// A planned send was handed to the client core.
    pub fn planned(
        &mut self,
        client_msg_id: String,
        planned_us: u64,
        sender: u32,
        recipients: Vec<u32>,
    ) {
        self.index.insert(client_msg_id, self.messages.len() as u32);
        self.messages.push(Planned {
            planned_us,
            sender,
            recipients,
            acked_us: None,
            delivered: Vec::new(),
        });
        self.current.sent += 1;
    }

    /// The server acked a send.
    pub fn acked(&mut self, client_msg_id: &str) {
        let now = self.now_us();
        let Some(&index) = self.index.get(client_msg_id) else {
            return;
        };
        let message = &mut self.messages[index as usize];
        if message.acked_us.is_none() {
            message.acked_us = Some(now);
            let _ = self
                .ack
                .record(now.saturating_sub(message.planned_us).max(1));
            self.current.acked += 1;
        }
    }

    /// The client core refused the last planned send: it never left, and owes nothing.
    pub fn refused_locally(&mut self, client_msg_id: &str) {
        let index = self
            .index
            .remove(client_msg_id)
            .expect("a planned send was recorded");
        assert_eq!(
            index as usize,
            self.messages.len() - 1,
            "only the last planned send is refused"
        );
        self.messages.pop();
        self.refused_locally += 1;
        self.current.sent -= 1;
    }

    /// The server refused a send for good.
    pub fn send_failed(&mut self) {
        self.failed += 1;
    }

    /// Makes room for `n` more planned messages up front, so the send loop never stops to
    /// grow the ledger.
    pub fn reserve(&mut self, n: usize) {
        self.messages.reserve(n);
        self.index.reserve(n);
    }

    /// A client processed a message.
    pub fn delivered(&mut self, device: u32, client_msg_id: &str) {
        let now = self.now_us();
        let Some(&index) = self.index.get(client_msg_id) else {
            return;
        };
        let message = &mut self.messages[index as usize];
        if message.sender == device {
            return;
        }
        if message.delivered.contains(&device) {
            self.duplicated += 1;
            return;
        }
        message.delivered.push(device);
        let latency = now.saturating_sub(message.planned_us).max(1);
        let _ = self.deliver.record(latency);
        let _ = self.current_deliver.record(latency);
        self.current.delivered += 1;
        let number = message_number(client_msg_id);
        let last = self
            .last_number
            .entry((device, message.sender))
            .or_insert(0);
        if number < *last {
            self.reordered += 1;
        } else {
            *last = number;
        }
    }

    /// A client starts connecting.
    pub fn connecting(&mut self, client: u32) {
        let now = self.now_us();
        self.connecting_since[client as usize] = Some(now);
    }

    /// A client logged in.
    pub fn connected(&mut self, client: u32) {
        let now = self.now_us();
        let client = client as usize;
        if let Some(since) = self.connecting_since[client].take() {
            let _ = self.connect.record(now.saturating_sub(since).max(1));
        }
        if let Some(down) = self.down_since[client].take() {
            let _ = self.reconnect.record(now.saturating_sub(down).max(1));
        }
        if self.ever_connected[client] {
            self.reconnects += 1;
            self.current.reconnects += 1;
        }
        self.ever_connected[client] = true;
        self.connects += 1;
        self.connected += 1;
        self.peak_connected = self.peak_connected.max(self.connected);
    }

    /// A connection ended or an attempt failed.
    pub fn disconnected(&mut self, client: u32, cause: &str, was_connected: bool) {
        let now = self.now_us();
        let client = client as usize;
        if was_connected {
            self.connected -= 1;
            self.current.disconnects += 1;
            self.down_since[client].get_or_insert(now);
            *self.disconnects.entry(cause.to_string()).or_default() += 1;
        } else {
            self.connects_failed += 1;
        }
    }

    /// Expected deliveries of acked messages, deliveries made, and deliveries missing.
    pub fn delivery_counts(&self) -> (u64, u64, u64) {
        let mut expected = 0;
        let mut delivered = 0;
        for message in self.messages.iter().filter(|m| m.acked_us.is_some()) {
            expected += message.recipients.len() as u64;
            delivered += message
                .recipients
                .iter()
                .filter(|r| message.delivered.contains(r))
                .count() as u64;
        }
        (expected, delivered, expected - delivered)
    }
}

/// `n` of a client message id `<device>-<n>`.
fn message_number(client_msg_id: &str) -> u64 {
    client_msg_id
        .rsplit_once('-')
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(0)
}
