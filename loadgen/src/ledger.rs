//! The load ledger: every planned message until it is acked and delivered to every recipient
//! device, every connection's life, and the latency histograms.
//!
//! Latencies are measured from the planned send time (open loop), so a stalled server shows
//! up as latency, not as fewer samples.
//!
//! A ledger follows one process's clients, a range of the run's client numbers (all of them
//! unless `--workers` split the run). Messages to clients of another worker are owed there,
//! and deliveries of another worker's messages are recorded by identity here: `crossings.rs`
//! exports both and the merge of the workers' results judges them.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::time::Instant;

use hdrhistogram::Histogram;
use rustc_hash::FxHashMap;

use crate::carrier::CarrierFigures;
use crate::protocol::MsgId;

/// Deliveries of other workers' messages recorded at most; beyond, they are counted in
/// [`LoadLedger::received_dropped`] and the merge reports the run as not fully judged.
pub const RECEIVED_LEN_MAX: usize = 20_000_000;

/// A first delivery of a message sent by another worker's client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// The message.
    pub id: MsgId,
    /// The device here that got it.
    pub recipient: u32,
    /// When, µs since this ledger started.
    pub at_us: u64,
}

/// The least memory the ledger keeps for a planned message to `recipients` devices, for the
/// whole run: its record and its index entry, and for more than one recipient their list (a
/// heap chunk of at least 8 bytes) and, past 64, the list of devices it reached. Every message
/// is kept to the end so that a late or repeated delivery is judged against it.
pub fn bytes_per_message(recipients: usize) -> usize {
    let list = |len: usize| (4 * len).next_power_of_two().max(8);
    let recipients_list = if recipients > 1 { list(recipients) } else { 0 };
    let delivered_list = if recipients > MASK_BITS {
        std::mem::size_of::<Vec<u32>>() + list(recipients)
    } else {
        0
    };
    std::mem::size_of::<Planned>() + 4 + recipients_list + delivered_list
}

/// Microseconds, the histograms' unit; up to one hour, 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// One planned message: 64 bytes, and no heap allocation for a message to one device.
#[derive(Debug, Clone)]
pub struct Planned {
    /// Planned send time, µs since the run started.
    pub planned_us: u64,
    /// When the server acked it, µs since start; [`NOT_ACKED`] until then.
    acked_us: u64,
    /// Sending client.
    pub sender: u32,
    /// The sender's count of planned sends before this one.
    number: u32,
    /// Times the server refused it for now (rate limited, overloaded); the core retries.
    pub refusals: u32,
    /// The server refused it for good (unknown group...).
    pub failed: bool,
    /// The protocol allows its deliveries to be lost (MQTT QoS 0: at most once).
    pub loss_allowed: bool,
    /// The protocol sent it again itself (MQTT QoS 1 after a reconnect): a repeated delivery
    /// of it is a redelivery the protocol allows.
    pub resent: bool,
    /// Devices that must receive it (the sender's own echo excluded).
    recipients: Recipients,
    /// Devices it reached.
    delivered: Delivered,
}

/// [`Planned::acked_us`] of a message not acked.
const NOT_ACKED: u64 = u64::MAX;

/// Recipients a delivery mask covers: past them, the devices reached are listed.
const MASK_BITS: usize = 64;

/// A message's recipients: one inline (every one-to-one message), more on the heap.
#[derive(Debug, Clone)]
enum Recipients {
    One(u32),
    Many(Box<[u32]>),
}

impl Recipients {
    fn new(recipients: Vec<u32>) -> Recipients {
        match recipients.as_slice() {
            [one] => Recipients::One(*one),
            _ => Recipients::Many(recipients.into_boxed_slice()),
        }
    }

    fn as_slice(&self) -> &[u32] {
        match self {
            Recipients::One(one) => std::slice::from_ref(one),
            Recipients::Many(many) => many,
        }
    }
}

/// The devices a message reached.
#[derive(Debug, Clone)]
enum Delivered {
    /// Bit i: the message reached its recipient i. While it has at most [`MASK_BITS`]
    /// recipients and reached no other device.
    Mask(u64),
    /// Every device it reached, in order: past [`MASK_BITS`] recipients, or once it reached a
    /// device that is not a recipient. Boxed: 8 bytes here instead of a `Vec`'s 24, for a
    /// variant few messages take.
    #[allow(clippy::box_collection)]
    List(Box<Vec<u32>>),
}

impl Planned {
    /// When the server acked it, µs since the run started.
    pub fn acked_us(&self) -> Option<u64> {
        (self.acked_us != NOT_ACKED).then_some(self.acked_us)
    }

    /// The sender's count of planned sends before this one.
    pub fn number(&self) -> u64 {
        u64::from(self.number)
    }

    /// Devices that must receive it (the sender's own echo excluded).
    pub fn recipients(&self) -> &[u32] {
        self.recipients.as_slice()
    }

    /// Whether it reached `device`.
    pub fn reached(&self, device: u32) -> bool {
        match &self.delivered {
            Delivered::Mask(mask) => self
                .recipients()
                .iter()
                .position(|r| *r == device)
                .is_some_and(|i| i < MASK_BITS && mask & (1 << i) != 0),
            Delivered::List(list) => list.contains(&device),
        }
    }

    /// Records that it reached `device` (not reached before).
    fn reach(&mut self, device: u32) {
        if let Delivered::Mask(mask) = &mut self.delivered {
            match self.recipients.as_slice().iter().position(|r| *r == device) {
                Some(i) if i < MASK_BITS => {
                    *mask |= 1 << i;
                    return;
                }
                _ => {
                    let reached = self
                        .recipients
                        .as_slice()
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| *i < MASK_BITS && *mask & (1 << i) != 0)
                        .map(|(_, r)| *r)
                        .collect();
                    self.delivered = Delivered::List(Box::new(reached));
                }
            }
        }
        if let Delivered::List(list) = &mut self.delivered {
            list.push(device);
        }
    }
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
    /// The first client number this ledger follows; it follows `first_client..+n_clients`.
    first_client: u32,
    /// First deliveries of other workers' messages, in arrival order.
    pub received: Vec<Received>,
    /// Identities in `received` (with the recipient), to count repeats as duplicates.
    received_ids: rustc_hash::FxHashSet<(u32, MsgId)>,
    /// Deliveries of other workers' messages not recorded: `received` was full.
    pub received_dropped: u64,
    /// Planned messages.
    pub messages: Vec<Planned>,
    /// Per sender, by message number: the index in `messages` (senders number their sends
    /// 0, 1, 2...).
    by_sender: Vec<Vec<u32>>,
    /// (recipient, sender) -> the newest message number delivered, for reorder counting. Fx
    /// hashing: it is on every delivery's path, and nothing iterates it. It grows with the
    /// pairs that exchanged a message (to the clients squared), so its numbers are 32-bit, as
    /// `Planned`'s are: 12 bytes an entry instead of 16.
    last_number: FxHashMap<(u32, u32), u32>,
    /// Deliveries of a message a device already had, beyond what the protocol allows.
    pub duplicated: u64,
    /// Deliveries of a message a device already had that the protocol allows (MQTT QoS 1:
    /// a publish marked DUP, one after a reconnect, or of a message its sender sent again).
    pub redelivered: u64,
    /// Deliveries older than one already delivered from the same sender.
    pub reordered: u64,
    /// Sends the client core refused (its unacked queue was full).
    pub refused_locally: u64,
    /// Sends the server refused for good.
    pub failed: u64,
    /// The server's refusals of sends for now, by cause (`rate_limited`, `overloaded`...).
    pub send_refusals: BTreeMap<String, u64>,
    /// Failed login attempts, by cause (`auth_failed`, `connection_refused`...).
    pub login_failures: BTreeMap<String, u64>,
    /// The server's breaches of its protocol that devices saw, by kind (a handful of fixed
    /// words, see `DeviceEvents::protocol_violation`).
    pub protocol_violations: BTreeMap<String, u64>,
    /// Clients whose core stopped for good (the server refused their credentials).
    pub clients_stopped: u64,
    /// Group confirmations the devices reported (see `Device::join_group`).
    pub groups_ready: u64,
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
    /// Per client: logged in now.
    online: Vec<bool>,
    /// Per client: sends the server refused for now.
    refusals_by_sender: Vec<u32>,
    /// Per client: a login attempt failed, or the core stopped for good.
    ever_failed: Vec<bool>,
    stopped: Vec<bool>,
    /// Per client: messages planned before this time (µs since start) may be missing without
    /// loss: the device came back without a session, so the protocol kept nothing for it
    /// while it was away (see [`LoadLedger::session_reset`]).
    reset_before_us: Vec<u64>,
    /// Per client: it has logged in more than once (a redelivery after a reconnect is allowed
    /// where the protocol says so).
    reconnected: Vec<bool>,
    /// Per client: the inbox's newest seq at its latest login, and the seq it has processed.
    login_max_seq: Vec<u64>,
    processed_seq: Vec<u64>,
    /// With `--carrier`: each client's carrier, and each carrier's figures.
    pub carriers: Option<(Vec<u8>, Vec<CarrierFigures>)>,
    /// Per-second counters, closed seconds.
    pub seconds: Vec<Second>,
    current: Second,
    current_deliver: Histogram<u64>,
    /// The settled front of `messages` (acked and delivered to every local recipient: its
    /// share of the verdict can no longer change) and that share, so the results written
    /// every second judge only the messages still in flight instead of the whole run while
    /// the devices wait for the lock.
    settled: Cell<(usize, Verdict)>,
}

impl LoadLedger {
    /// A ledger for `n_clients` clients numbered from 0, starting now.
    pub fn new(n_clients: usize) -> LoadLedger {
        LoadLedger::for_clients(0, n_clients)
    }

    /// A ledger for the clients numbered `first_client..first_client + n_clients`.
    pub fn for_clients(first_client: u32, n_clients: usize) -> LoadLedger {
        LoadLedger {
            started: Instant::now(),
            first_client,
            received: Vec::new(),
            received_ids: rustc_hash::FxHashSet::default(),
            received_dropped: 0,
            messages: Vec::new(),
            by_sender: vec![Vec::new(); n_clients],
            last_number: FxHashMap::default(),
            duplicated: 0,
            redelivered: 0,
            reordered: 0,
            refused_locally: 0,
            failed: 0,
            send_refusals: BTreeMap::new(),
            login_failures: BTreeMap::new(),
            protocol_violations: BTreeMap::new(),
            clients_stopped: 0,
            groups_ready: 0,
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
            online: vec![false; n_clients],
            refusals_by_sender: vec![0; n_clients],
            ever_failed: vec![false; n_clients],
            stopped: vec![false; n_clients],
            reset_before_us: vec![0; n_clients],
            reconnected: vec![false; n_clients],
            login_max_seq: vec![0; n_clients],
            processed_seq: vec![0; n_clients],
            carriers: None,
            seconds: Vec::new(),
            current: Second::default(),
            current_deliver: histogram(),
            settled: Cell::new((0, Verdict::default())),
        }
    }

    /// Client `client`'s slot in the per-client vectors, if this ledger follows it.
    fn local(&self, client: u32) -> Option<usize> {
        let slot = client.checked_sub(self.first_client)? as usize;
        (slot < self.online.len()).then_some(slot)
    }

    /// The slot of a client of this ledger's own (its devices report only about themselves).
    fn slot(&self, client: u32) -> usize {
        self.local(client).unwrap_or_else(|| {
            panic!(
                "client {client} is not among this ledger's {} clients from {}",
                self.online.len(),
                self.first_client
            )
        })
    }

    /// The client numbers this ledger follows.
    pub fn clients(&self) -> std::ops::Range<u32> {
        self.first_client..self.first_client + self.online.len() as u32
    }

    /// µs since the run started.
    pub fn now_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    /// The run's start.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Splits the figures by carrier: `of_client[c]` is client c's carrier, of `n` carriers.
    pub fn split_by_carrier(&mut self, of_client: Vec<u8>, n: usize) {
        let figures = (0..n)
            .map(|k| {
                CarrierFigures::new(of_client.iter().filter(|c| **c as usize == k).count() as u64)
            })
            .collect();
        self.carriers = Some((of_client, figures));
    }

    /// The figures of the carrier of the client in slot `slot`, with `--carrier`.
    fn carrier(&mut self, slot: usize) -> Option<&mut CarrierFigures> {
        let (of_client, figures) = self.carriers.as_mut()?;
        figures.get_mut(*of_client.get(slot)? as usize)
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
    ///
    /// Senders number their sends in order from 0: `id.number` is the count of `id.sender`'s
    /// earlier planned sends (a send refused locally gives its number back).
    pub fn planned(&mut self, id: MsgId, planned_us: u64, recipients: Vec<u32>) {
        let sender = self.slot(id.sender);
        let numbers = &mut self.by_sender[sender];
        assert_eq!(
            numbers.len() as u64,
            id.number,
            "sender {} numbers its sends in order",
            id.sender
        );
        let index = u32::try_from(self.messages.len()).expect("at most 2^32 planned messages");
        numbers.push(index);
        let delivered = if recipients.len() > MASK_BITS {
            Delivered::List(Box::default())
        } else {
            Delivered::Mask(0)
        };
        self.messages.push(Planned {
            planned_us,
            acked_us: NOT_ACKED,
            sender: id.sender,
            // Below the message count, itself below 2^32 (the index above).
            number: id.number as u32,
            recipients: Recipients::new(recipients),
            delivered,
            refusals: 0,
            failed: false,
            loss_allowed: false,
            resent: false,
        });
        self.current.sent += 1;
    }

    /// Every planned message with its identity, sender by sender.
    pub fn planned_messages(&self) -> impl Iterator<Item = (MsgId, &Planned)> {
        self.by_sender
            .iter()
            .enumerate()
            .flat_map(move |(slot, numbers)| {
                numbers.iter().enumerate().map(move |(number, index)| {
                    let id = MsgId {
                        sender: self.first_client + slot as u32,
                        number: number as u64,
                    };
                    (id, &self.messages[*index as usize])
                })
            })
    }

    /// The index of message `id`, if it was planned.
    fn index(&self, id: MsgId) -> Option<u32> {
        self.by_sender
            .get(self.local(id.sender)?)?
            .get(usize::try_from(id.number).ok()?)
            .copied()
    }

    /// The server acked a send.
    pub fn acked(&mut self, id: MsgId) {
        let now = self.now_us();
        let Some(index) = self.index(id) else {
            return;
        };
        let message = &mut self.messages[index as usize];
        if message.acked_us == NOT_ACKED {
            message.acked_us = now;
            let _ = self
                .ack
                .record(now.saturating_sub(message.planned_us).max(1));
            self.current.acked += 1;
        }
    }

    /// The client core refused the last planned send: it never left, and owes nothing.
    pub fn refused_locally(&mut self, id: MsgId) {
        let sender = self.slot(id.sender);
        let numbers = &mut self.by_sender[sender];
        assert_eq!(
            numbers.len() as u64,
            id.number + 1,
            "only a sender's last planned send is refused"
        );
        let index = numbers.pop().expect("a planned send was recorded");
        assert_eq!(
            index as usize,
            self.messages.len() - 1,
            "only the last planned send is refused"
        );
        self.messages.pop();
        assert!(
            self.settled.get().0 <= self.messages.len(),
            "a settled message is never refused"
        );
        self.refused_locally += 1;
        self.current.sent -= 1;
    }

    /// The server refused a send for good.
    pub fn send_failed(&mut self, id: MsgId) {
        self.failed += 1;
        if let Some(index) = self.index(id) {
            self.messages[index as usize].failed = true;
        }
    }

    /// The server refused a send for now (`cause`: `rate_limited`, `overloaded`...); the
    /// client core sends it again.
    pub fn send_refused(&mut self, id: MsgId, cause: &str) {
        *self.send_refusals.entry(cause.to_string()).or_default() += 1;
        if let Some(index) = self.index(id) {
            let sender = self.slot(self.messages[index as usize].sender);
            self.messages[index as usize].refusals += 1;
            self.refusals_by_sender[sender] += 1;
        }
    }

    /// A client's login attempt failed (`cause`: `auth_failed`, `connection_refused`...).
    pub fn login_failed(&mut self, client: u32, cause: &str) {
        *self.login_failures.entry(cause.to_string()).or_default() += 1;
        let client = self.slot(client);
        self.ever_failed[client] = true;
    }

    /// A client's core stopped for good (its credentials were refused).
    pub fn client_stopped(&mut self, client: u32) {
        self.clients_stopped += 1;
        let client = self.slot(client);
        self.stopped[client] = true;
    }

    /// Clients that never got in: they failed to log in, were refused for good, or were
    /// never started (the ramp stopped early). With no login at all, once every client is
    /// among them, the target refuses everyone.
    pub fn clients_refused(&self) -> usize {
        (0..self.online.len())
            .filter(|c| (self.ever_failed[*c] || self.stopped[*c]) && !self.ever_connected[*c])
            .count()
    }

    /// Whether every client that can still come back is logged in and synced.
    pub fn all_synced(&self) -> bool {
        self.clients()
            .all(|c| self.stopped[self.slot(c)] || self.synced(c))
    }

    /// A client has processed its inbox up to `seq` (0 again after an inbox reset).
    pub fn processed(&mut self, client: u32, seq: u64) {
        let client = self.slot(client);
        self.processed_seq[client] = seq;
    }

    /// Whether a client is logged in and has processed everything its inbox held at login:
    /// a message it still lacks then was never going to come. False for clients of other
    /// workers.
    pub fn synced(&self, client: u32) -> bool {
        let Some(client) = self.local(client) else {
            return false;
        };
        self.online[client] && self.processed_seq[client] >= self.login_max_seq[client]
    }

    /// Makes room for `n` more planned messages up front, so the send loop never stops to
    /// grow the ledger.
    pub fn reserve(&mut self, n: usize) {
        self.messages.reserve(n);
    }

    /// The protocol allows message `id`'s deliveries to be lost (at most once delivery).
    pub fn loss_allowed(&mut self, id: MsgId) {
        if let Some(index) = self.index(id) {
            self.messages[index as usize].loss_allowed = true;
        }
    }

    /// The protocol sent message `id` again by itself: its repeats are allowed redeliveries.
    pub fn resent(&mut self, id: MsgId) {
        if let Some(index) = self.index(id) {
            self.messages[index as usize].resent = true;
        }
    }

    /// `client` came back without a session: the protocol kept nothing for it while it was
    /// away, so what was planned before now and has not reached it may be missing without
    /// loss. Deliveries planned from now on are owed as usual.
    pub fn session_reset(&mut self, client: u32) {
        let slot = self.slot(client);
        self.reset_before_us[slot] = self.now_us();
    }

    /// Whether `recipient` may lack `message` without a loss.
    fn may_lack(&self, message: &Planned, recipient: u32) -> bool {
        message.loss_allowed
            || self
                .local(recipient)
                .is_some_and(|slot| message.planned_us < self.reset_before_us[slot])
    }

    /// A client processed a message.
    pub fn delivered(&mut self, device: u32, id: MsgId) {
        self.delivered_as(device, id, Repeat::Duplicate);
    }

    /// A client processed a message; if it already had it, `repeat` says whether the protocol
    /// allows that ([`Repeat::Redelivery`]) or not.
    pub fn delivered_as(&mut self, device: u32, id: MsgId, repeat: Repeat) {
        let now = self.now_us();
        if self.local(id.sender).is_none() {
            self.received_from_elsewhere(device, id, now);
            return;
        }
        let Some(index) = self.index(id) else {
            return;
        };
        let reconnected = self
            .local(device)
            .is_some_and(|slot| self.reconnected[slot]);
        let message = &mut self.messages[index as usize];
        if message.sender == device {
            return;
        }
        if message.reached(device) {
            let allowed = match repeat {
                Repeat::Redelivery => true,
                Repeat::RedeliveryAfterReconnect => message.resent || reconnected,
                Repeat::Duplicate => false,
            };
            if allowed {
                self.redelivered += 1;
            } else {
                self.duplicated += 1;
            }
            return;
        }
        message.reach(device);
        let sender = message.sender;
        let latency = now.saturating_sub(message.planned_us).max(1);
        let _ = self.deliver.record(latency);
        let _ = self.current_deliver.record(latency);
        self.current.delivered += 1;
        self.check_order(device, sender, id.number);
        if let Some(slot) = self.local(device)
            && let Some(carrier) = self.carrier(slot)
        {
            let _ = carrier.deliver.record(latency);
        }
    }

    /// A device got a message of another worker's client: recorded by identity (its planned
    /// time is known there), repeats counted as duplicates, order checked per sender.
    fn received_from_elsewhere(&mut self, device: u32, id: MsgId, now: u64) {
        if self.received_ids.contains(&(device, id)) {
            self.duplicated += 1;
            return;
        }
        if self.received.len() >= RECEIVED_LEN_MAX {
            self.received_dropped += 1;
            return;
        }
        self.received_ids.insert((device, id));
        self.received.push(Received {
            id,
            recipient: device,
            at_us: now,
        });
        self.current.delivered += 1;
        self.check_order(device, id.sender, id.number);
    }

    /// Counts a first delivery to `device` of `sender`'s message `number` as reordered if a
    /// later one of the sender's reached it before.
    fn check_order(&mut self, device: u32, sender: u32, number: u64) {
        // Another worker's sender past 2^32 sends saturates (this ledger's own senders stop
        // before, at its index's bound); no run's memory gets that far.
        let number = u32::try_from(number).unwrap_or(u32::MAX);
        let last = self.last_number.entry((device, sender)).or_insert(0);
        if number < *last {
            self.reordered += 1;
        } else {
            *last = number;
        }
    }

    /// A client starts connecting.
    pub fn connecting(&mut self, client: u32) {
        let now = self.now_us();
        let client = self.slot(client);
        self.connecting_since[client] = Some(now);
    }

    /// A client logged in; its inbox held up to `max_seq`.
    pub fn connected(&mut self, client: u32, max_seq: u64) {
        let now = self.now_us();
        let client = self.slot(client);
        self.online[client] = true;
        self.login_max_seq[client] = max_seq;
        if let Some(since) = self.connecting_since[client].take() {
            let _ = self.connect.record(now.saturating_sub(since).max(1));
        }
        let down = self.down_since[client].take();
        if let Some(down) = down {
            let _ = self.reconnect.record(now.saturating_sub(down).max(1));
        }
        let again = self.ever_connected[client];
        if again {
            self.reconnected[client] = true;
            self.reconnects += 1;
            self.current.reconnects += 1;
        }
        if let Some(carrier) = self.carrier(client) {
            carrier.connects += 1;
            if let Some(down) = down {
                let _ = carrier.reconnect.record(now.saturating_sub(down).max(1));
            }
            carrier.reconnects += u64::from(again);
        }
        self.ever_connected[client] = true;
        self.connects += 1;
        self.connected += 1;
        self.peak_connected = self.peak_connected.max(self.connected);
    }

    /// A connection ended or an attempt failed.
    pub fn disconnected(&mut self, client: u32, cause: &str, was_connected: bool) {
        let now = self.now_us();
        let client = self.slot(client);
        if was_connected {
            self.online[client] = false;
            self.connected -= 1;
            self.current.disconnects += 1;
            self.down_since[client].get_or_insert(now);
            *self.disconnects.entry(cause.to_string()).or_default() += 1;
            if let Some(carrier) = self.carrier(client) {
                *carrier.disconnects.entry(cause.to_string()).or_default() += 1;
            }
        } else {
            self.connects_failed += 1;
        }
    }

    /// Where every planned message stands now (see [`Verdict`]). Before the drain has
    /// finished (`drained` false: mid-run, or cut short by Ctrl-C) nothing is lost yet: a
    /// missing delivery is pending.
    pub fn verdict(&self, drained: bool) -> Verdict {
        let (settled, mut verdict) = self.settled();
        for message in &self.messages[settled..] {
            if message.acked_us().is_none() {
                if message.failed {
                    // Counted in `failed`.
                } else if message.refusals > 0
                    || self.refusals_by_sender[self.slot(message.sender)] > 0
                {
                    // Refused itself, or queued behind its sender's refused sends (the
                    // client core resends in order): held back by the server either way.
                    verdict.refused += 1;
                } else {
                    verdict.unacked += 1;
                }
                continue;
            }
            for recipient in message.recipients() {
                if self.local(*recipient).is_none() {
                    // Owed at another worker: judged when the workers' results merge.
                    verdict.elsewhere += 1;
                    continue;
                }
                verdict.expected += 1;
                match self.owed(message, *recipient, drained) {
                    Owed::Delivered => verdict.delivered += 1,
                    Owed::LostAllowed => verdict.lost_allowed += 1,
                    Owed::Lost => verdict.lost += 1,
                    Owed::Pending => verdict.pending += 1,
                }
            }
        }
        verdict
    }

    /// How many messages at the front of `messages` are settled, and their share of the
    /// verdict; advances the cached front first.
    fn settled(&self) -> (usize, Verdict) {
        let (mut settled, mut verdict) = self.settled.get();
        while let Some(share) = self
            .messages
            .get(settled)
            .and_then(|message| self.settled_share(message))
        {
            verdict.expected += share.expected;
            verdict.delivered += share.delivered;
            verdict.elsewhere += share.elsewhere;
            settled += 1;
        }
        self.settled.set((settled, verdict));
        (settled, verdict)
    }

    /// A settled message's share of the verdict; `None` while it is not settled.
    fn settled_share(&self, message: &Planned) -> Option<Verdict> {
        message.acked_us()?;
        let mut share = Verdict::default();
        for recipient in message.recipients() {
            if self.local(*recipient).is_none() {
                share.elsewhere += 1;
            } else if message.reached(*recipient) {
                share.expected += 1;
                share.delivered += 1;
            } else {
                return None;
            }
        }
        Some(share)
    }

    /// Where the delivery of acked `message` to `recipient` stands.
    fn owed(&self, message: &Planned, recipient: u32, drained: bool) -> Owed {
        if message.reached(recipient) {
            Owed::Delivered
        } else if !(drained && self.synced(recipient)) {
            Owed::Pending
        } else if self.may_lack(message, recipient) {
            Owed::LostAllowed
        } else {
            Owed::Lost
        }
    }

    /// The lost deliveries, message by message, the first `max` in planned order (none
    /// before the drain has finished).
    pub fn lost_deliveries(&self, drained: bool, max: usize) -> Vec<LostDelivery> {
        let mut lost = Vec::new();
        let (settled, _) = self.settled();
        for message in self.messages[settled..]
            .iter()
            .filter(|m| m.acked_us().is_some())
        {
            for recipient in message.recipients() {
                if lost.len() == max {
                    return lost;
                }
                if self.owed(message, *recipient, drained) == Owed::Lost {
                    lost.push(LostDelivery {
                        sender: message.sender,
                        number: message.number(),
                        recipient: *recipient,
                        planned_ms: message.planned_us as f64 / 1_000.0,
                    });
                }
            }
        }
        lost
    }

    /// Planned messages the server acked.
    pub fn acked_count(&self) -> usize {
        let (settled, _) = self.settled();
        settled
            + self.messages[settled..]
                .iter()
                .filter(|m| m.acked_us().is_some())
                .count()
    }

    /// Sends on their way: neither acked, failed nor refused, from a client that has not
    /// stopped for good (its core resends them once it is connected again).
    pub fn sends_in_flight(&self) -> usize {
        // Settled messages are acked.
        let (settled, _) = self.settled();
        self.messages[settled..]
            .iter()
            .filter(|m| {
                let sender = self.slot(m.sender);
                m.acked_us().is_none()
                    && !m.failed
                    && m.refusals == 0
                    && self.refusals_by_sender[sender] == 0
                    && !self.stopped[sender]
            })
            .count()
    }

    /// Clients owed a delivery that are not back and synced (and may still come back): what
    /// the end of the drain waits for.
    pub fn recipients_pending(&self) -> usize {
        let mut waiting = vec![false; self.online.len()];
        for message in self.messages.iter().filter(|m| m.acked_us().is_some()) {
            for recipient in message.recipients() {
                let Some(slot) = self.local(*recipient) else {
                    continue;
                };
                if !message.reached(*recipient) && !self.synced(*recipient) && !self.stopped[slot] {
                    waiting[slot] = true;
                }
            }
        }
        waiting.iter().filter(|w| **w).count()
    }
}

/// Where the planned messages stand. Every planned message is acked, refused, failed or
/// unacked; every delivery an acked message owes is delivered, pending or lost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Never acked, and the server refused it, or sends of its sender queued with it, for now
    /// at least once (rate limited, overloaded): the server held it back, nothing was lost.
    pub refused: u64,
    /// Never acked, and neither it nor its sender's other sends were refused: still in flight
    /// when the run ended.
    pub unacked: u64,
    /// Deliveries acked messages owe to recipient devices.
    pub expected: u64,
    /// Of those, made.
    pub delivered: u64,
    /// Not made, and the recipient was not logged in and synced at the end: it may still come.
    pub pending: u64,
    /// Not made although the recipient was logged in and had synced past its login: lost.
    pub lost: u64,
    /// Deliveries acked messages owe to other workers' clients (not in `expected`): judged
    /// when the workers' results merge.
    pub elsewhere: u64,
    /// Not made, the recipient back and synced, but the protocol allows the loss (MQTT QoS 0,
    /// or a message sent while a device without a session was away).
    pub lost_allowed: u64,
}

/// Lost deliveries listed in results.json, at most.
pub const LOST_LISTED_MAX: usize = 100;

/// Where one owed delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owed {
    Delivered,
    Pending,
    LostAllowed,
    Lost,
}

/// One delivery judged lost: which message, to whom.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LostDelivery {
    /// The sending device.
    pub sender: u32,
    /// The sender's count of sends before it.
    pub number: u64,
    /// The device it never reached.
    pub recipient: u32,
    /// Its planned send time, ms since the run started.
    pub planned_ms: f64,
}

/// What a repeated delivery of a message is, as the protocol sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeat {
    /// Never allowed: a duplicate.
    Duplicate,
    /// Allowed: the protocol marked it as a redelivery (MQTT's DUP flag).
    Redelivery,
    /// Allowed if the recipient has reconnected during the run or the sender sent the message
    /// again (at-least-once delivery across a lost ack); a duplicate otherwise.
    RedeliveryAfterReconnect,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every planned message is kept to the run's end, so its record is what a long run's
    /// memory is made of: 64 bytes, with nothing on the heap for a message to one device.
    #[test]
    fn a_planned_message_takes_64_bytes_and_no_heap_at_one_recipient() {
        assert_eq!(std::mem::size_of::<Planned>(), 64);
        assert_eq!(bytes_per_message(1), 64 + 4);
        assert_eq!(bytes_per_message(3), 64 + 4 + 16);
        assert_eq!(bytes_per_message(100), 64 + 4 + 512 + 24 + 512);
    }
}
