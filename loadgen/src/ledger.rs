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

use std::collections::BTreeMap;
use std::num::NonZeroU64;
use std::time::Instant;

use hdrhistogram::Histogram;
use imlab_core::shards::ShardedMap;
use rustc_hash::FxHashMap;

use crate::carrier::CarrierFigures;
use crate::histograms::{latency, record};
use crate::protocol::MsgId;

/// Deliveries of other workers' messages recorded at most (the merge holds each first one in
/// memory); beyond, they are counted in [`LoadLedger::received_dropped`] and the merge reports
/// the run as not fully judged.
pub const RECEIVED_LEN_MAX: usize = 20_000_000;

/// Messages a ledger follows in flight at most, by default (`--max-open-messages`): planned
/// and not settled (not acked yet, or acked and not yet at every recipient), with the
/// settled ones its protocol sent again. 64 bytes a record and the map's share, 80 to 150
/// bytes in all as the map grows, so at most about 0.75 GB. At the bound the run stops sending and drains (see [`LoadLedger::full`]):
/// only a target that acks what it does not deliver, or recipients that stay away, fill it.
pub const OPEN_MESSAGES_MAX: usize = 5_000_000;

/// A delivery of a message sent by another worker's client, the first or a repeat: 24 bytes
/// (the merge tells repeats apart, `crossings.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// The message: its sender and the sender's count (32 bits, as every sender's).
    pub sender: u32,
    pub number: u32,
    /// The device here that got it.
    pub recipient: u32,
    /// What the protocol said of it, should it be a repeat.
    pub repeat: RemoteRepeat,
    /// When, µs since this ledger started.
    pub at_us: u64,
}

/// What a delivery of another worker's message is if the device had it already: judged at
/// the merge, which alone knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RemoteRepeat {
    /// A duplicate.
    Duplicate = 0,
    /// A redelivery the protocol allows (MQTT's DUP, or after the device reconnected).
    Redelivery = 1,
    /// A redelivery if the sender's protocol sent the message again, a duplicate otherwise.
    RedeliveryIfResent = 2,
}

impl RemoteRepeat {
    /// The kind a byte of `crossings-received.bin` names, if any.
    pub fn from_byte(byte: u8) -> Option<RemoteRepeat> {
        match byte {
            0 => Some(RemoteRepeat::Duplicate),
            1 => Some(RemoteRepeat::Redelivery),
            2 => Some(RemoteRepeat::RedeliveryIfResent),
            _ => None,
        }
    }
}

/// The reorder map's length below which its entries are not swept (see
/// `LoadLedger::forget_pairs`): at most 65,536 pairs, under a megabyte.
const PAIRS_SWEEP_MIN: usize = 1 << 16;

/// One planned message not settled yet: 64 bytes, and no heap allocation for a message to
/// one device. A settled message keeps nothing (see `LoadLedger::open`).
#[derive(Debug, Clone)]
struct Planned {
    /// Planned send time, µs since the run started.
    planned_us: u64,
    /// When the server acked it, µs since start; [`NOT_ACKED`] until then.
    acked_us: u64,
    /// Sending client.
    sender: u32,
    /// The sender's count of planned sends before this one.
    number: u32,
    /// Times the server refused it for now (rate limited, overloaded); the core retries.
    refusals: u32,
    /// The server refused it for good (unknown group...).
    failed: bool,
    /// The protocol allows its deliveries to be lost (MQTT QoS 0: at most once).
    loss_allowed: bool,
    /// The protocol sent it again itself (MQTT QoS 1 after a reconnect): a repeated delivery
    /// of it is a redelivery the protocol allows.
    resent: bool,
    /// Devices that must receive it (the sender's own echo excluded).
    recipients: Recipients,
    /// Recipients it reached.
    delivered: Delivered,
}

/// [`Planned::acked_us`] of a message not acked.
const NOT_ACKED: u64 = u64::MAX;

/// Recipients a delivery mask covers: past them, the recipients reached are listed.
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

/// The recipients a message reached.
#[derive(Debug, Clone)]
enum Delivered {
    /// Bit i: the message reached its recipient i (at most [`MASK_BITS`] recipients).
    Mask(u64),
    /// Every recipient it reached, in order (more than [`MASK_BITS`] recipients). Boxed: 8
    /// bytes here instead of a `Vec`'s 24, for a variant few messages take.
    #[allow(clippy::box_collection)]
    List(Box<Vec<u32>>),
}

impl Planned {
    fn acked(&self) -> bool {
        self.acked_us != NOT_ACKED
    }

    /// Devices that must receive it (the sender's own echo excluded).
    fn recipients(&self) -> &[u32] {
        self.recipients.as_slice()
    }

    /// Whether it reached `device`.
    fn reached(&self, device: u32) -> bool {
        match &self.delivered {
            Delivered::Mask(mask) => self
                .recipients()
                .iter()
                .position(|r| *r == device)
                .is_some_and(|i| i < MASK_BITS && mask & (1 << i) != 0),
            Delivered::List(list) => list.contains(&device),
        }
    }

    /// Records that it reached `device`, one of its recipients not reached before.
    fn reach(&mut self, device: u32) {
        match &mut self.delivered {
            Delivered::Mask(mask) => {
                let i = self.recipients.as_slice().iter().position(|r| *r == device);
                *mask |= 1 << i.expect("a recipient");
            }
            Delivered::List(list) => list.push(device),
        }
    }
}

/// A delivery an acked message owes to a client of another worker, for the workers' merge
/// (`crossings.rs`): set aside when the message settles here, as its record is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// The message's sender and the sender's count before it (32 bits, as in `Planned`).
    sender: u32,
    number: u32,
    /// The other worker's client.
    pub recipient: u32,
    /// Planned send time, µs since this ledger started.
    pub planned_us: u64,
    /// Ack time, µs since this ledger started.
    pub acked_us: u64,
}

impl Due {
    /// The message.
    pub fn id(&self) -> MsgId {
        MsgId {
            sender: self.sender,
            number: u64::from(self.number),
        }
    }
}

/// The deliveries acked `message` owes to clients outside `clients` (other workers').
fn dues_of(message: &Planned, clients: std::ops::Range<u32>) -> impl Iterator<Item = Due> + '_ {
    message
        .recipients()
        .iter()
        .filter(move |recipient| !clients.contains(recipient))
        .map(|recipient| Due {
            sender: message.sender,
            number: message.number,
            recipient: *recipient,
            planned_us: message.planned_us,
            acked_us: message.acked_us,
        })
}

/// Counters of one second, for timeseries.csv.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
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

/// A moment (µs since the run started) that may be absent, in 8 bytes where an
/// `Option<u64>` takes 16: the ledger keeps two per client, tens of thousands of clients.
#[derive(Debug, Clone, Copy, Default)]
struct Since(Option<NonZeroU64>);

impl Since {
    fn set(&mut self, us: u64) {
        self.0 = NonZeroU64::new(us.saturating_add(1));
    }

    fn set_unless_set(&mut self, us: u64) {
        if self.0.is_none() {
            self.set(us);
        }
    }

    fn take(&mut self) -> Option<u64> {
        self.0.take().map(|stored| stored.get() - 1)
    }
}

/// Everything a run measured.
pub struct LoadLedger {
    started: Instant,
    /// The first client number this ledger follows; it follows `first_client..+n_clients`.
    first_client: u32,
    /// Deliveries of other workers' messages, repeats included, in arrival order.
    pub received: Vec<Received>,
    /// Deliveries of other workers' messages recorded in all (`received` holds those not
    /// taken yet, see [`Self::take_crossing_records`]).
    received_recorded: u64,
    /// Deliveries of other workers' messages not recorded: [`RECEIVED_LEN_MAX`] were.
    pub received_dropped: u64,
    /// Messages not settled yet, by sender and the sender's count before it: their records.
    /// A message settles once acked and delivered to every recipient of this ledger: its
    /// share of the verdict is counted then and its record dropped, so the ledger holds
    /// records only for messages in flight, however long the run. A later repeat of it is
    /// judged by its identity alone: a message its sender planned that is not open here is
    /// settled.
    open: OpenRecords,
    /// Most messages open at once.
    open_peak: usize,
    /// Records of open and resent settled messages at most ([`OPEN_MESSAGES_MAX`]).
    open_max: usize,
    /// When the run stopped sending because the ledger was full (µs since start).
    full_at_us: Option<u64>,
    /// Per sender of this ledger: how many sends it planned (its next send's number).
    planned_by_sender: Vec<u32>,
    /// Messages planned in all, and the last one (the only one that may be refused locally).
    planned_total: u64,
    last_planned: Option<MsgId>,
    /// The second the last planned send was counted in (`seconds`' index; its length is the
    /// current one): a refusal takes it back there, also once that second has closed.
    last_planned_second: usize,
    /// Settled messages the protocol sent again itself: a repeat of one at a device that
    /// never reconnected is a redelivery the protocol allows.
    resent_settled: rustc_hash::FxHashSet<(u32, u32)>,
    /// Settled messages: how many, their share of the verdict (it can no longer change),
    /// and their deliveries owed at other workers.
    settled: u64,
    settled_verdict: Verdict,
    settled_dues: Vec<Due>,
    /// The open messages counted as they change (see [`OpenCounts`]).
    counts: OpenCounts,
    /// Per sender: open messages neither acked nor failed.
    unacked_by_sender: Vec<u32>,
    /// Per recipient: deliveries acked open messages owe it, not made yet.
    owed_to: Vec<u32>,
    /// (recipient, sender) -> the newest message number delivered, for reorder counting of
    /// this ledger's senders (another worker's are judged at the merge). Fx hashing: it is on
    /// every delivery's path. An entry is kept only while a delivery could still be checked
    /// against it (see [`Self::forget_pairs`]), so it holds about the pairs with messages in
    /// flight. 16 bytes an entry: the pair and the number 32-bit, as `Planned`'s are, and the
    /// sweep it was made in.
    ///
    /// In sharded tables, each growing alone, as the open records are: it holds
    /// millions of pairs when many recipients owe deliveries.
    last_number: ShardedMap<(u32, u32), LastDelivered>,
    /// `last_number`'s length at which a sweep of it starts next.
    pairs_sweep_at: usize,
    /// The sweep of `last_number` (see [`Self::forget_pairs`]).
    pairs_sweep: PairsSweep,
    /// Entries a sweep's step looks at ([`PAIRS_SWEEP_STEP`]; tests hold it still with 0).
    pairs_sweep_step: usize,
    /// Deliveries of a message a device already had, beyond what the protocol allows, or to
    /// a device it was not for.
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
    /// Per client: since when it has been connecting, and since when it has been down.
    connecting_since: Vec<Since>,
    down_since: Vec<Since>,
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
            received_recorded: 0,
            received_dropped: 0,
            open: OpenRecords::default(),
            open_peak: 0,
            open_max: OPEN_MESSAGES_MAX,
            full_at_us: None,
            planned_by_sender: vec![0; n_clients],
            planned_total: 0,
            last_planned: None,
            last_planned_second: 0,
            resent_settled: rustc_hash::FxHashSet::default(),
            settled: 0,
            counts: OpenCounts::default(),
            unacked_by_sender: vec![0; n_clients],
            owed_to: vec![0; n_clients],
            settled_verdict: Verdict::default(),
            settled_dues: Vec::new(),
            last_number: ShardedMap::default(),
            pairs_sweep_at: PAIRS_SWEEP_MIN,
            pairs_sweep: PairsSweep::default(),
            pairs_sweep_step: PAIRS_SWEEP_STEP,
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
            connect: latency(),
            ack: latency(),
            deliver: latency(),
            reconnect: latency(),
            connects_failed: 0,
            connects: 0,
            disconnects: BTreeMap::new(),
            reconnects: 0,
            connected: 0,
            peak_connected: 0,
            connecting_since: vec![Since::default(); n_clients],
            down_since: vec![Since::default(); n_clients],
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
            current_deliver: latency(),
        }
    }

    /// Client `client`'s slot in the per-client vectors, if this ledger follows it.
    fn local(&self, client: u32) -> Option<usize> {
        let slot = client.checked_sub(self.first_client)? as usize;
        (slot < self.online.len()).then_some(slot)
    }

    /// Counts `change` (1 or -1) open messages of sender `slot` that are neither acked nor
    /// failed.
    fn count_unacked(&mut self, slot: usize, change: i32) {
        let by_sender = &mut self.unacked_by_sender[slot];
        *by_sender = by_sender.checked_add_signed(change).expect("unacked sends");
        let c = &mut self.counts;
        c.unacked = c
            .unacked
            .checked_add_signed(change.into())
            .expect("unacked");
        if self.refusals_by_sender[slot] > 0 {
            c.unacked_refused = c
                .unacked_refused
                .checked_add_signed(change.into())
                .expect("unacked refused");
        }
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
        let count = &mut self.planned_by_sender[sender];
        assert_eq!(
            u64::from(*count),
            id.number,
            "sender {} numbers its sends in order",
            id.sender
        );
        let number = *count;
        *count = count
            .checked_add(1)
            .expect("at most 2^32 sends of one sender");
        if self.pairs_sweep.phase.is_some() {
            // A sweep under way may have walked this message's table already (see
            // `forget_pairs`).
            for device in &recipients {
                if self.last_number.get(&(*device, id.sender)).is_some() {
                    note_owed(&mut self.pairs_sweep.owed, (*device, id.sender), number);
                }
            }
        }
        let delivered = if recipients.len() > MASK_BITS {
            Delivered::List(Box::default())
        } else {
            Delivered::Mask(0)
        };
        let record = Planned {
            planned_us,
            acked_us: NOT_ACKED,
            sender: id.sender,
            number,
            recipients: Recipients::new(recipients),
            delivered,
            refusals: 0,
            failed: false,
            loss_allowed: false,
            resent: false,
        };
        self.open.insert((id.sender, number), record);
        self.count_unacked(sender, 1);
        self.open_peak = self.open_peak.max(self.open.len());
        self.planned_total += 1;
        self.last_planned = Some(id);
        self.last_planned_second = self.seconds.len();
        self.current.sent += 1;
        self.forget_pairs();
    }

    /// Sets the most messages the ledger follows ([`OPEN_MESSAGES_MAX`] unless set).
    pub fn set_open_max(&mut self, max: usize) {
        self.open_max = max;
    }

    /// Whether the ledger follows as many messages as it may: open ones and the settled ones
    /// its protocol sent again. Then nothing more may be planned; the run stops sending
    /// (see [`Self::stop_sending_full`]).
    pub fn full(&self) -> bool {
        self.open.len() + self.resent_settled.len() >= self.open_max
    }

    /// The run stops sending now because the ledger is [full](Self::full).
    pub fn stop_sending_full(&mut self) {
        let now = self.now_us();
        self.full_at_us.get_or_insert(now);
    }

    /// When the run stopped sending because the ledger was full (µs since start), and its
    /// bound.
    pub fn full_at_us(&self) -> Option<(u64, usize)> {
        self.full_at_us.map(|at| (at, self.open_max))
    }

    /// Most messages open (planned, not settled) at once: the records the ledger held.
    pub fn open_peak(&self) -> usize {
        self.open_peak
    }

    /// How many messages were planned (and not refused locally).
    pub fn planned_count(&self) -> u64 {
        self.planned_total
    }

    /// Deliveries acked messages owe to other workers' clients (the workers' merge judges
    /// them): those of settled messages, then those of messages still open.
    pub fn dues_elsewhere(&self) -> impl Iterator<Item = Due> + '_ {
        let clients = self.clients();
        let open_dues = self
            .open
            .values()
            .filter(|message| message.acked())
            .flat_map(move |message| dues_of(message, clients.clone()));
        self.settled_dues.iter().copied().chain(open_dues)
    }

    /// The key of message `id` if this ledger's client planned it (open or settled).
    fn key(&self, id: MsgId) -> Option<(u32, u32)> {
        let count = *self.planned_by_sender.get(self.local(id.sender)?)?;
        let number = u32::try_from(id.number).ok()?;
        (number < count).then_some((id.sender, number))
    }

    /// The record of message `id`, if it was planned and is not settled.
    fn open_mut(&mut self, id: MsgId) -> Option<&mut Planned> {
        let key = self.key(id)?;
        self.open.get_mut(&key)
    }

    /// Settles open message `key` if it is acked and reached every recipient of this
    /// ledger: counts its share of the verdict, sets its dues at other workers aside, and
    /// drops its record.
    fn settle_if_done(&mut self, key: (u32, u32)) {
        let Some(message) = self.open.get(&key) else {
            return;
        };
        if !message.acked() {
            return;
        }
        let mut share = Verdict::default();
        for recipient in message.recipients() {
            if self.local(*recipient).is_none() {
                share.elsewhere += 1;
            } else if message.reached(*recipient) {
                share.expected += 1;
                share.delivered += 1;
            } else {
                return;
            }
        }
        let message = self.open.remove(&key).expect("an open message's record");
        let c = &mut self.counts;
        c.acked -= 1;
        c.expected -= share.expected;
        c.reached -= share.delivered;
        c.elsewhere -= share.elsewhere;
        if share.elsewhere > 0 {
            let clients = self.clients();
            self.settled_dues.extend(dues_of(&message, clients));
        }
        let v = &mut self.settled_verdict;
        v.expected += share.expected;
        v.delivered += share.delivered;
        v.elsewhere += share.elsewhere;
        self.settled += 1;
        if message.resent {
            self.resent_settled.insert(key);
        }
    }

    /// The server acked a send.
    pub fn acked(&mut self, id: MsgId) {
        let now = self.now_us();
        let Some(key) = self.key(id) else {
            return;
        };
        let Some(message) = self.open.get_mut(&key) else {
            return;
        };
        if message.acked_us == NOT_ACKED {
            message.acked_us = now;
            let latency = now.saturating_sub(message.planned_us).max(1);
            let failed = message.failed;
            record(&mut self.ack, latency);
            self.current.acked += 1;
            if !failed {
                self.count_unacked(self.slot(id.sender), -1);
            }
            // Its deliveries, owed from now on (some may have come before the ack).
            self.counts.acked += 1;
            let message = &self.open[&key];
            for recipient in message.recipients() {
                match self.local(*recipient) {
                    None => self.counts.elsewhere += 1,
                    Some(slot) => {
                        self.counts.expected += 1;
                        if message.reached(*recipient) {
                            self.counts.reached += 1;
                        } else {
                            self.owed_to[slot] += 1;
                        }
                    }
                }
            }
            self.settle_if_done(key);
        }
    }

    /// The client core refused the last planned send: it never left, and owes nothing.
    pub fn refused_locally(&mut self, id: MsgId) {
        assert_eq!(
            self.last_planned,
            Some(id),
            "only the last planned send is refused"
        );
        let sender = self.slot(id.sender);
        self.planned_by_sender[sender] -= 1;
        let number = self.planned_by_sender[sender];
        self.open
            .remove(&(id.sender, number))
            .expect("a settled message is never refused");
        self.count_unacked(sender, -1);
        self.planned_total -= 1;
        self.last_planned = None;
        self.refused_locally += 1;
        // The plan and its refusal are two holds of the lock; the second may have closed
        // between them.
        match self.seconds.get_mut(self.last_planned_second) {
            Some(closed) => closed.sent -= 1,
            None => self.current.sent -= 1,
        }
    }

    /// The server refused a send for good.
    pub fn send_failed(&mut self, id: MsgId) {
        self.failed += 1;
        if let Some(message) = self.open_mut(id) {
            let was_unacked = !message.acked() && !message.failed;
            message.failed = true;
            if was_unacked {
                self.count_unacked(self.slot(id.sender), -1);
            }
        }
    }

    /// The server refused a send for now (`cause`: `rate_limited`, `overloaded`...); the
    /// client core sends it again.
    pub fn send_refused(&mut self, id: MsgId, cause: &str) {
        *self.send_refusals.entry(cause.to_string()).or_default() += 1;
        if let Some(message) = self.open_mut(id) {
            message.refusals += 1;
            let sender = self.slot(id.sender);
            self.refusals_by_sender[sender] += 1;
            if self.refusals_by_sender[sender] == 1 {
                // Its sends not acked are held back by the server from now on.
                self.counts.unacked_refused += u64::from(self.unacked_by_sender[sender]);
            }
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

    /// The protocol allows message `id`'s deliveries to be lost (at most once delivery).
    pub fn loss_allowed(&mut self, id: MsgId) {
        // A settled message lost nothing.
        if let Some(message) = self.open_mut(id) {
            message.loss_allowed = true;
        }
    }

    /// The protocol sent message `id` again by itself: its repeats are allowed redeliveries.
    pub fn resent(&mut self, id: MsgId) {
        let Some(key) = self.key(id) else {
            return;
        };
        match self.open.get_mut(&key) {
            Some(message) => message.resent = true,
            None => {
                self.resent_settled.insert(key);
            }
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
            self.received_from_elsewhere(device, id, repeat, now);
            return;
        }
        let Some(key) = self.key(id) else {
            return;
        };
        if id.sender == device {
            // Its own echo.
            return;
        }
        let resent = match self.open.get(&key) {
            Some(message) => {
                if !message.recipients().contains(&device) {
                    // A device it was not for: the server misrouted it.
                    self.duplicated += 1;
                    return;
                }
                if !message.reached(device) {
                    self.first_delivery(device, id, key, now);
                    self.settle_if_done(key);
                    return;
                }
                message.resent
            }
            // Settled: every recipient has it, so this is a repeat (or a misrouted copy,
            // which a settled message no longer tells apart).
            None => self.resent_settled.contains(&key),
        };
        let reconnected = self
            .local(device)
            .is_some_and(|slot| self.reconnected[slot]);
        let allowed = match repeat {
            Repeat::Redelivery => true,
            Repeat::RedeliveryAfterReconnect => resent || reconnected,
            Repeat::Duplicate => false,
        };
        if allowed {
            self.redelivered += 1;
        } else {
            self.duplicated += 1;
        }
    }

    /// Open message `id` (`key`) reached `device`, one of its recipients, for the first time.
    fn first_delivery(&mut self, device: u32, id: MsgId, key: (u32, u32), now: u64) {
        let slot = self.slot(device);
        let message = self.open.get_mut(&key).expect("an open message's record");
        message.reach(device);
        if message.acked() {
            self.counts.reached += 1;
            self.owed_to[slot] -= 1;
        }
        let latency = now.saturating_sub(message.planned_us).max(1);
        record(&mut self.deliver, latency);
        record(&mut self.current_deliver, latency);
        self.current.delivered += 1;
        self.check_order(device, id.sender, id.number);
        if let Some(slot) = self.local(device)
            && let Some(carrier) = self.carrier(slot)
        {
            record(&mut carrier.deliver, latency);
        }
    }

    /// A device got a message of another worker's client: recorded by identity (its planned
    /// time is known there) with what the protocol said of it should it be a repeat; repeats
    /// and reorders are told apart at the merge, which sees every worker's records.
    fn received_from_elsewhere(&mut self, device: u32, id: MsgId, repeat: Repeat, now: u64) {
        // No sender plans more than 2^32 messages: not a message of this run.
        let Ok(number) = u32::try_from(id.number) else {
            return;
        };
        if self.received_recorded >= RECEIVED_LEN_MAX as u64 {
            self.received_dropped += 1;
            return;
        }
        self.received_recorded += 1;
        let reconnected = self
            .local(device)
            .is_some_and(|slot| self.reconnected[slot]);
        let repeat = match repeat {
            Repeat::Duplicate => RemoteRepeat::Duplicate,
            Repeat::Redelivery => RemoteRepeat::Redelivery,
            Repeat::RedeliveryAfterReconnect if reconnected => RemoteRepeat::Redelivery,
            Repeat::RedeliveryAfterReconnect => RemoteRepeat::RedeliveryIfResent,
        };
        self.received.push(Received {
            sender: id.sender,
            number,
            recipient: device,
            repeat,
            at_us: now,
        });
        // Repeats included: rare, and only the merge can tell.
        self.current.delivered += 1;
    }

    /// Deliveries of other workers' messages so far, repeats included (recorded or not).
    pub fn received_from_elsewhere_count(&self) -> u64 {
        self.received_recorded + self.received_dropped
    }

    /// Takes the records for other workers that are final: the deliveries settled messages
    /// owe elsewhere and the deliveries received from elsewhere, so far (a worker appends
    /// them to its record files every second and keeps none).
    pub fn take_crossing_records(&mut self) -> (Vec<Due>, Vec<Received>) {
        (
            std::mem::take(&mut self.settled_dues),
            std::mem::take(&mut self.received),
        )
    }

    /// Messages of this ledger's senders that the protocol sent again by itself, settled or
    /// open (for the merge: a repeat of one at another worker is allowed).
    pub fn resent_ids(&self) -> impl Iterator<Item = MsgId> + '_ {
        let open = self
            .open
            .values()
            .filter(|message| message.resent)
            .map(|message| (message.sender, message.number));
        self.resent_settled
            .iter()
            .copied()
            .chain(open)
            .map(|(sender, number)| MsgId {
                sender,
                number: u64::from(number),
            })
    }

    /// Counts a first delivery to `device` of `sender`'s message `number` as reordered if a
    /// later one of the sender's reached it before.
    fn check_order(&mut self, device: u32, sender: u32, number: u64) {
        // This ledger's senders stop before 2^32 sends, at their index's bound.
        let number = u32::try_from(number).unwrap_or(u32::MAX);
        let made_in = self.pairs_sweep.generation;
        let last = self.last_number.get_or_insert_with(
            &(device, sender),
            |pair| *pair,
            || LastDelivered { number: 0, made_in },
        );
        if number < last.number {
            self.reordered += 1;
        } else {
            last.number = number;
        }
        if self.pairs_sweep.phase.is_none() && self.last_number.len() >= self.pairs_sweep_at {
            self.pairs_sweep.start();
        }
        self.forget_pairs();
    }

    /// Drops, a step at a time, the reorder entries no delivery can be checked against any
    /// more: a pair (device, sender) whose newest number delivered is below every message of
    /// that sender still owed to that device. A first delivery comes only for an open message
    /// (a settled one's is a repeat), so a delivery older than the entry could only be such a
    /// message: with none, the entry says nothing more, and a later delivery from that sender
    /// starts it again. A sweep starts when the map has doubled since the last one (amortized
    /// over the deliveries that grew it), so it holds about twice the pairs with messages in
    /// flight, however long the run and however many clients met.
    ///
    /// A sweep walks the open records, then the map, about [`PAIRS_SWEEP_STEP`] entries a call
    /// (a delivery or, while it runs, a plan), so that no call holds the ledger's lock for a walk
    /// of everything: the whole walk at once took 198-254 ms at 2.5 million open records, and
    /// every device's event waited. What changes while it walks keeps it exact: a message
    /// planned during it is noted at once if its pair has an entry, and an entry made during
    /// it is kept until the next one.
    fn forget_pairs(&mut self) {
        let PairsSweep {
            generation,
            phase: phase_now,
            owed,
        } = &mut self.pairs_sweep;
        let Some(phase) = phase_now else {
            return;
        };
        let mut budget = self.pairs_sweep_step;
        match phase {
            SweepPhase::Owed { next_shard } => {
                while budget > 0 && *next_shard < self.open.0.shards() {
                    for (_, message) in self.open.0.shard_iter(*next_shard) {
                        // A recipient is a lookup: a group message counts its members.
                        budget = budget.saturating_sub(message.recipients().len().max(1));
                        for device in message.recipients() {
                            let pair = (*device, message.sender);
                            if !message.reached(*device) && self.last_number.get(&pair).is_some() {
                                note_owed(owed, pair, message.number);
                            }
                        }
                    }
                    *next_shard += 1;
                }
                if *next_shard == self.open.0.shards() {
                    *phase = SweepPhase::Forget { next_shard: 0 };
                }
            }
            SweepPhase::Forget { next_shard } => {
                while budget > 0 && *next_shard < self.last_number.shards() {
                    let generation = *generation;
                    budget = budget.saturating_sub(self.last_number.shard_len(*next_shard));
                    self.last_number.retain_shard(*next_shard, |pair, last| {
                        last.made_in == generation
                            || owed.get(pair).is_some_and(|least| *least < last.number)
                    });
                    *next_shard += 1;
                }
                if *next_shard == self.last_number.shards() {
                    *phase_now = None;
                    *owed = FxHashMap::default();
                    self.pairs_sweep_at = (2 * self.last_number.len()).max(PAIRS_SWEEP_MIN);
                }
            }
        }
    }

    /// Reorder entries held (see `last_number`).
    pub fn pairs_held(&self) -> usize {
        self.last_number.len()
    }

    /// A sweep of the reorder map is under way (it may hold more than its mark until done).
    pub fn pairs_sweeping(&self) -> bool {
        self.pairs_sweep.phase.is_some()
    }

    /// A client starts connecting.
    pub fn connecting(&mut self, client: u32) {
        let now = self.now_us();
        let client = self.slot(client);
        self.connecting_since[client].set(now);
    }

    /// A client logged in; its inbox held up to `max_seq`.
    pub fn connected(&mut self, client: u32, max_seq: u64) {
        let now = self.now_us();
        let client = self.slot(client);
        self.online[client] = true;
        self.login_max_seq[client] = max_seq;
        if let Some(since) = self.connecting_since[client].take() {
            record(&mut self.connect, now.saturating_sub(since).max(1));
        }
        let down = self.down_since[client].take();
        if let Some(down) = down {
            record(&mut self.reconnect, now.saturating_sub(down).max(1));
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
                record(&mut carrier.reconnect, now.saturating_sub(down).max(1));
            }
            carrier.reconnects += u64::from(again);
        }
        self.ever_connected[client] = true;
        self.connects += 1;
        self.connected += 1;
        self.peak_connected = self.peak_connected.max(self.connected);
    }

    /// Whether `client` is logged in now: [`LoadLedger::connected`] since its last
    /// disconnection.
    pub fn online(&self, client: u32) -> bool {
        self.online[self.slot(client)]
    }

    /// A connection ended or an attempt failed.
    pub fn disconnected(&mut self, client: u32, cause: &str, was_connected: bool) {
        let now = self.now_us();
        let client = self.slot(client);
        if was_connected {
            self.online[client] = false;
            self.connected -= 1;
            self.current.disconnects += 1;
            self.down_since[client].set_unless_set(now);
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
        if drained {
            return self.verdict_of_records(true);
        }
        // Mid-run, from the counts: a scan of every open record each second, under the
        // ledger's lock, grew with the messages in flight (up to `--max-open-messages`).
        let c = &self.counts;
        let mut verdict = self.settled_verdict;
        verdict.refused += c.unacked_refused;
        verdict.unacked += c.unacked - c.unacked_refused;
        verdict.expected += c.expected;
        verdict.delivered += c.reached;
        verdict.pending += c.expected - c.reached;
        verdict.elsewhere += c.elsewhere;
        // Every test's per-second results check the counts against the records.
        debug_assert_eq!(verdict, self.verdict_of_records(false), "counted verdict");
        verdict
    }

    /// [`Self::verdict`] from the open records, one by one.
    fn verdict_of_records(&self, drained: bool) -> Verdict {
        let mut verdict = self.settled_verdict;
        for message in self.open.values() {
            if !message.acked() {
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
        if !drained {
            return Vec::new();
        }
        // The first `max` in planned order (planned time, then sender and number: open
        // records are kept in no order), in a heap whose top is the latest kept.
        let mut first = std::collections::BinaryHeap::with_capacity(max + 1);
        for message in self.open.values().filter(|m| m.acked()) {
            for recipient in message.recipients() {
                if self.owed(message, *recipient, drained) == Owed::Lost {
                    first.push((
                        message.planned_us,
                        message.sender,
                        message.number,
                        *recipient,
                    ));
                    if first.len() > max {
                        first.pop();
                    }
                }
            }
        }
        let lost = first.into_sorted_vec().into_iter();
        let lost = lost.map(|(planned_us, sender, number, recipient)| LostDelivery {
            sender,
            number: u64::from(number),
            recipient,
            planned_ms: planned_us as f64 / 1_000.0,
        });
        lost.collect()
    }

    /// Planned messages the server acked.
    pub fn acked_count(&self) -> usize {
        // Every test's results, each second, check the count against the records.
        debug_assert_eq!(
            self.counts.acked,
            self.open.values().filter(|m| m.acked()).count() as u64,
            "open messages acked"
        );
        (self.settled + self.counts.acked) as usize
    }

    /// Sends on their way: neither acked, failed nor refused, from a client that has not
    /// stopped for good (its core resends them once it is connected again).
    pub fn sends_in_flight(&self) -> usize {
        let counted = (0..self.unacked_by_sender.len())
            .filter(|slot| self.refusals_by_sender[*slot] == 0 && !self.stopped[*slot])
            .map(|slot| self.unacked_by_sender[slot] as usize)
            .sum();
        debug_assert_eq!(
            counted,
            self.sends_in_flight_of_records(),
            "sends in flight"
        );
        counted
    }

    /// [`Self::sends_in_flight`] from the open records, one by one.
    fn sends_in_flight_of_records(&self) -> usize {
        self.open
            .values()
            .filter(|m| {
                let sender = self.slot(m.sender);
                !m.acked()
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
        let counted = self
            .clients()
            .filter(|client| {
                let slot = self.slot(*client);
                self.owed_to[slot] > 0 && !self.synced(*client) && !self.stopped[slot]
            })
            .count();
        debug_assert_eq!(
            counted,
            self.recipients_pending_of_records(),
            "recipients pending"
        );
        counted
    }

    /// [`Self::recipients_pending`] from the open records, one by one.
    fn recipients_pending_of_records(&self) -> usize {
        let mut waiting = vec![false; self.online.len()];
        for message in self.open.values().filter(|m| m.acked()) {
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

/// The open messages' records by (sender, number), in sharded hash tables that each
/// grow alone (see `imlab_core::shards`): one table doubling at 3,670,016 records held the
/// ledger's lock, and every device's event report behind it, 0.7-1.4 s.
#[derive(Default)]
struct OpenRecords(ShardedMap<(u32, u32), Planned>);

impl OpenRecords {
    fn get(&self, key: &(u32, u32)) -> Option<&Planned> {
        self.0.get(key)
    }

    fn get_mut(&mut self, key: &(u32, u32)) -> Option<&mut Planned> {
        self.0.get_mut(key)
    }

    fn insert(&mut self, key: (u32, u32), record: Planned) {
        let old = self.0.insert(key, record);
        assert!(old.is_none(), "message {key:?} planned twice");
    }

    fn remove(&mut self, key: &(u32, u32)) -> Option<Planned> {
        self.0.remove(key)
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    /// Every record, in no order that means anything.
    fn values(&self) -> impl Iterator<Item = &Planned> {
        self.0.values()
    }
}

impl std::ops::Index<&(u32, u32)> for OpenRecords {
    type Output = Planned;

    fn index(&self, key: &(u32, u32)) -> &Planned {
        self.get(key).expect("an open message's record")
    }
}

/// A reorder entry: the newest number delivered from a sender to a device, and the sweep
/// during which the entry was made (see `LoadLedger::forget_pairs`).
#[derive(Debug, Clone, Copy)]
struct LastDelivered {
    number: u32,
    made_in: u32,
}

/// Recipients of open records, then reorder entries, a sweep looks at in one step: at least
/// one table of them, whole (about 2,400 open records a table at 2.5 million open, 4,900 at
/// `--max-open-messages`' default). 4,096 made steps of 0.3 ms (`cargo bench -p imlab-loadgen
/// --bench ledger_pauses`: p99.99 338-359 µs), 1,024 of a table's walk (153-165 µs).
const PAIRS_SWEEP_STEP: usize = 1_024;

/// The reorder map's sweep (see `LoadLedger::forget_pairs`).
#[derive(Debug, Default)]
struct PairsSweep {
    /// Sweeps begun; an entry made during the one under way is kept by it.
    generation: u32,
    phase: Option<SweepPhase>,
    /// (device, sender) -> the least number of the sender's open messages not at the device,
    /// for the pairs with an entry.
    owed: FxHashMap<(u32, u32), u32>,
}

#[derive(Debug)]
enum SweepPhase {
    /// Noting what the open records owe, a table of them at a time.
    Owed { next_shard: usize },
    /// Dropping the entries nothing owed could reorder, a table at a time.
    Forget { next_shard: usize },
}

impl PairsSweep {
    fn start(&mut self) {
        self.generation += 1;
        self.phase = Some(SweepPhase::Owed { next_shard: 0 });
    }
}

/// Notes in a sweep's `owed` that `pair` owes its sender's message `number`.
fn note_owed(owed: &mut FxHashMap<(u32, u32), u32>, pair: (u32, u32), number: u32) {
    let least = owed.entry(pair).or_insert(u32::MAX);
    *least = (*least).min(number);
}

/// Counts over a ledger's open messages, kept as they change, so that the per-second verdict
/// and the drain's checks need not scan every open record (debug builds compare them with a
/// scan at every read).
#[derive(Debug, Clone, Default)]
struct OpenCounts {
    /// Acked.
    acked: u64,
    /// Over the acked ones: deliveries owed to this ledger's clients, those made, and those
    /// owed to other workers' clients.
    expected: u64,
    reached: u64,
    elsewhere: u64,
    /// Neither acked nor failed, and of those, the sends of senders the server refused at
    /// least once (held back, [`Verdict::refused`]).
    unacked: u64,
    unacked_refused: u64,
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

    #[test]
    fn a_since_keeps_a_moment_of_zero_and_the_first_of_two() {
        let mut since = Since::default();
        assert_eq!(since.take(), None);
        since.set(0);
        since.set_unless_set(5);
        assert_eq!(
            since.take(),
            Some(0),
            "the run's first microsecond is a moment"
        );
        assert_eq!(since.take(), None, "taken");
        since.set(7);
        since.set(9);
        assert_eq!(since.take(), Some(9));
        assert_eq!(std::mem::size_of::<Since>(), 8);
    }

    /// A send refused by its device is taken back from the second it was planned in, also
    /// when that second closed between the plan and the refusal (two holds of the lock): the
    /// seconds' sends add up to the run's.
    #[test]
    fn a_refusal_after_its_second_closed_is_taken_back_there() {
        let mut ledger = LoadLedger::new(2);
        ledger.connected(0, 0);
        ledger.connected(1, 0);
        let first = MsgId {
            sender: 0,
            number: 0,
        };
        ledger.planned(first, 1, vec![1]);
        ledger.tick();
        ledger.refused_locally(first);
        // Planned again under the same number, sent this time, refused in its own second.
        ledger.planned(first, 2, vec![1]);
        let second = MsgId {
            sender: 0,
            number: 1,
        };
        ledger.planned(second, 3, vec![1]);
        ledger.refused_locally(second);
        ledger.tick();
        let sent: Vec<u64> = ledger.seconds.iter().map(|s| s.sent).collect();
        assert_eq!(sent, [0, 1]);
        assert_eq!(ledger.refused_locally, 2);
    }

    /// The reorder map's sweep walks the open records and the map a step at a time, and what
    /// changes between its steps keeps it exact: a message planned after the walk of the open
    /// records is noted at once, and an entry made during the sweep is kept by it, so both
    /// later reorders are still caught; an entry nothing owed could reorder is dropped.
    #[test]
    fn the_reorder_sweep_stays_exact_while_messages_come_between_its_steps() {
        let mut ledger = LoadLedger::new(10);
        for client in 0..10 {
            ledger.connected(client, 0);
        }
        let mut numbers = [0u64; 10];
        let mut plan = |ledger: &mut LoadLedger, sender: u32, to: u32| {
            let id = MsgId {
                sender,
                number: numbers[sender as usize],
            };
            numbers[sender as usize] += 1;
            ledger.planned(id, 1, vec![to]);
            ledger.acked(id);
            id
        };
        // Client 4's first message to 5 stays on its way through the sweep.
        let b1 = plan(&mut ledger, 4, 5);
        let a0 = plan(&mut ledger, 0, 1);
        ledger.delivered(1, a0);
        let done = plan(&mut ledger, 2, 3);
        ledger.delivered(3, done);
        assert_eq!(ledger.pairs_held(), 2);

        // The sweep moves only when the test says (a step of everything there is).
        ledger.pairs_sweep_step = 0;
        let step = |ledger: &mut LoadLedger| {
            ledger.pairs_sweep_step = usize::MAX;
            ledger.forget_pairs();
            ledger.pairs_sweep_step = 0;
        };
        ledger.pairs_sweep.start();
        step(&mut ledger);
        assert!(
            matches!(
                ledger.pairs_sweep.phase,
                Some(SweepPhase::Forget { next_shard: 0 })
            ),
            "the open records walked"
        );
        // Planned after the walk, with its pair's entry there: noted by the plan.
        let a1 = plan(&mut ledger, 0, 1);
        let a2 = plan(&mut ledger, 0, 1);
        ledger.delivered(1, a2);
        // An entry made during the sweep, by a message newer than one walked without it.
        let b2 = plan(&mut ledger, 4, 5);
        ledger.delivered(5, b2);
        assert!(ledger.pairs_sweeping());
        step(&mut ledger);
        assert!(!ledger.pairs_sweeping());
        assert_eq!(
            ledger.pairs_held(),
            2,
            "(3, 2) dropped, (1, 0) and (5, 4) kept"
        );
        assert_eq!(ledger.reordered, 0);
        ledger.delivered(1, a1);
        assert_eq!(ledger.reordered, 1, "a message planned during the sweep");
        ledger.delivered(5, b1);
        assert_eq!(ledger.reordered, 2, "an entry made during the sweep");
        assert_eq!(ledger.duplicated, 0);
    }

    /// Open records spread over every table, none past its share by far (a table picked by
    /// the hash's top bits, which its own table also reads, would leave most empty); each is
    /// found again in its own.
    #[test]
    fn open_records_spread_evenly_over_their_tables() {
        let n_clients = 1_000;
        let mut ledger = LoadLedger::new(n_clients);
        let n = 20_480u64;
        for k in 0..n {
            let sender = (k % n_clients as u64) as u32;
            let id = MsgId {
                sender,
                number: k / n_clients as u64,
            };
            ledger.planned(id, k, vec![(sender + 1) % n_clients as u32]);
        }
        let sizes = ledger.open.0.shard_lens();
        assert_eq!(sizes.iter().sum::<usize>(), n as usize);
        assert_eq!(ledger.open.len(), n as usize);
        // 20 a table on average, 13 to 27 by their shares (see `imlab_core::shards::shard_of`):
        // none empty, none past 60.
        let (least, most) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
        assert!(
            *least > 0 && *most <= 60,
            "tables of {least} to {most} records"
        );
        assert_eq!(ledger.open[&(7, 3)].planned_us, 3_007);
    }

    /// An open message's record, a delivery owed at another worker and one received from
    /// another, the sizes README's figures count on.
    #[test]
    fn an_open_record_takes_64_bytes_a_due_32_and_a_delivery_from_elsewhere_24() {
        assert_eq!(std::mem::size_of::<Planned>(), 64);
        assert_eq!(std::mem::size_of::<Due>(), 32);
        assert_eq!(std::mem::size_of::<Received>(), 24);
    }
}
