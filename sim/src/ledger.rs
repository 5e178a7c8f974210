//! The ledger: what every device's app saw and did, as the invariant checker needs it.
//!
//! Sends are recorded when the app queues them (that time is the start of the message's
//! delay) and when they are acked; every processed message is appended to its device's app
//! log. Entries refer to sends by index, so an app log costs a few words per message.
//!
//! A scale scenario records every send and every delivery of a simulated day (600,000 sends
//! and 2.2 million deliveries in `scale-10k`), so the records are kept small: a send's client
//! message id is not stored but for its number (`d<device>-<n>`, the client core's form; any
//! other id is kept apart) and found again through a hash table of send indexes; times are u32
//! milliseconds (a run is at most [`SIMULATED_MS_MAX`] long, checked before it starts); a send
//! record is 40 bytes, and an app log keeps each entry as its differences from the one before
//! (about 10 bytes where the entry is 24).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::hash::Hasher;
use std::io::Write as _;

use hashbrown::HashTable;
use rustc_hash::FxHasher;

use crate::storm::StormLog;

/// The longest simulated time a run's ledger can record: its times are u32 milliseconds
/// (about 49.7 days). `run_with` refuses a scenario whose duration, quiet period and the hour
/// the simulator allows after them reach it.
pub const SIMULATED_MS_MAX: u64 = u32::MAX as u64;

/// A simulated time in ms as the ledger keeps it.
fn ms32(at_ms: u64) -> u32 {
    u32::try_from(at_ms).unwrap_or_else(|_| {
        panic!("simulated time {at_ms} ms past SIMULATED_MS_MAX: run_with checks a run's length")
    })
}

/// A client message id's hash in `Ledger::send_index`: Fx over its bytes, the same whether
/// the id is given or rendered from its record.
fn id_hash(id: &[u8]) -> u64 {
    let mut hasher = FxHasher::default();
    hasher.write(id);
    hasher.finish()
}

/// `(device, n)` of a client message id `d<device>-<n>` written as the client core writes it
/// (decimal without leading zeros, `n` below [`SendRecord::ID_APART`]): rendering them gives
/// back the same id.
fn numbered(id: &str) -> Option<(u32, u32)> {
    let (device, n) = id.strip_prefix('d')?.split_once('-')?;
    let canonical = |digits: &str| {
        !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
            && (digits == "0" || !digits.starts_with('0'))
    };
    if !canonical(device) || !canonical(n) {
        return None;
    }
    let n: u32 = n.parse().ok().filter(|n| *n != SendRecord::ID_APART)?;
    Some((device.parse().ok()?, n))
}

/// A send's client message id, as its record and `ids_apart` keep it.
enum SendId<'a> {
    /// `d<device>-<n>`.
    Numbered { device: u32, n: u32 },
    /// Any other form.
    Apart(&'a str),
}

impl SendId<'_> {
    /// The id rendered into `buffer` (`d`, two u32s and `-`: at most 22 bytes).
    fn bytes<'b>(&'b self, buffer: &'b mut [u8; 24]) -> &'b [u8] {
        match self {
            SendId::Numbered { device, n } => {
                let mut rest = &mut buffer[..];
                write!(rest, "d{device}-{n}").expect("22 bytes fit in 24");
                let written = 24 - rest.len();
                &buffer[..written]
            }
            SendId::Apart(id) => id.as_bytes(),
        }
    }

    fn hash(&self) -> u64 {
        id_hash(self.bytes(&mut [0; 24]))
    }

    fn is(&self, id: &str) -> bool {
        self.bytes(&mut [0; 24]) == id.as_bytes()
    }
}

/// The client message id of send `index`.
fn client_msg_id_of<'a>(
    sends: &[SendRecord],
    ids_apart: &'a [(u32, Box<str>)],
    index: u32,
) -> SendId<'a> {
    let send = &sends[index as usize];
    if send.number != SendRecord::ID_APART {
        return SendId::Numbered {
            device: send.device,
            n: send.number,
        };
    }
    let at = ids_apart
        .binary_search_by_key(&index, |(known, _)| *known)
        .expect("a send numbered ID_APART has its id in ids_apart");
    SendId::Apart(&ids_apart[at].1)
}

/// One message the app asked to send.
#[derive(Debug, Clone)]
pub struct SendRecord {
    /// The ack's message id and store generation (0 while not acked).
    acked_msg_id: u64,
    acked_epoch: u64,
    /// Sending device.
    pub device: u32,
    /// The `n` of its client message id `d<device>-<n>`, or [`SendRecord::ID_APART`]: the id
    /// has another form and is kept in [`Ledger`]'s `ids_apart` (see [`Ledger::client_msg_id`]).
    number: u32,
    /// The conversation: a user or a chat group, as [`Conversation::packed`].
    to: u32,
    /// When the app queued it (simulated ms).
    queued_ms: u32,
    /// When the ack arrived, plus one (0: not acked).
    acked_at_plus_one: u32,
}

impl SendRecord {
    /// `number` of a send whose client message id is not `d<device>-<n>` with `n` below this.
    const ID_APART: u32 = u32::MAX;

    /// The conversation: a user or a chat group.
    pub fn to(&self) -> Conversation {
        Conversation::unpacked(self.to)
    }

    /// When the app queued it (simulated ms).
    pub fn queued_ms(&self) -> u64 {
        u64::from(self.queued_ms)
    }

    /// The server's ack, once it arrived.
    pub fn acked(&self) -> Option<Ack> {
        (self.acked_at_plus_one != 0).then(|| Ack {
            at_ms: u64::from(self.acked_at_plus_one - 1),
            msg_id: self.acked_msg_id,
            epoch: self.acked_epoch,
        })
    }
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

/// The top bit of a packed conversation: a group.
const GROUP_BIT: u32 = 1 << 31;

impl Conversation {
    /// In 4 bytes: the index, with the top bit set for a group. Indexes are device and group
    /// counts of one simulation, far below 2^31 (checked).
    fn packed(self) -> u32 {
        let (index, bit) = match self {
            Conversation::Peer(user) => (user, 0),
            Conversation::Group(group) => (group, GROUP_BIT),
        };
        assert!(
            index < GROUP_BIT,
            "conversation index {index} fits in 31 bits"
        );
        index | bit
    }

    fn unpacked(packed: u32) -> Conversation {
        if packed & GROUP_BIT == 0 {
            Conversation::Peer(packed)
        } else {
            Conversation::Group(packed & !GROUP_BIT)
        }
    }
}

/// One processed message in a device's app log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogEntry {
    /// Inbox seq.
    pub seq: u64,
    /// Server-wide id.
    pub msg_id: u64,
    /// When the app processed it (simulated ms).
    at_ms: u32,
    /// [`LogEntry::REPEAT`], or the send's index plus one (0: no send the ledger knows).
    send: u32,
}

impl LogEntry {
    /// `send` of an entry whose seq held a message the app had already shown
    /// (`ClientEvent::Repeat`): processed, not shown.
    const REPEAT: u32 = u32::MAX;

    /// The send, when the message came from a send the ledger knows.
    pub fn send(&self) -> Option<u32> {
        self.send
            .checked_sub(1)
            .filter(|_| self.send != LogEntry::REPEAT)
    }

    /// The seq held a message the app had already shown (`ClientEvent::Repeat`): processed,
    /// not shown. Not part of the app log's messages, only of its seqs.
    pub fn repeat(&self) -> bool {
        self.send == LogEntry::REPEAT
    }

    /// When the app processed it (simulated ms).
    pub fn at_ms(&self) -> u64 {
        u64::from(self.at_ms)
    }
}

/// A device's app log: its entries in processing order, each kept as its differences from
/// the entry before (seq, msg_id and time, zigzag LEB128) and its send mark (LEB128), about 10
/// bytes where a [`LogEntry`] is 24. Read back in order with [`AppLog::iter`].
#[derive(Debug, Clone, Default)]
pub struct AppLog {
    bytes: Vec<u8>,
    len: usize,
    /// The last entry pushed: what the next one is written against.
    last: LogEntry,
}

/// The most bytes an entry takes: two 64-bit varints (seq and msg_id), two 32-bit ones (the
/// time's difference and the send mark).
const ENTRY_BYTES_MAX: usize = 10 + 10 + 5 + 5;

impl AppLog {
    /// Appends an entry.
    pub fn push(&mut self, entry: LogEntry) {
        let free = self.bytes.capacity() - self.bytes.len();
        if free < ENTRY_BYTES_MAX {
            // A quarter more at a time, not double: a day's log is most of what a device
            // keeps, and doubling leaves up to half of it unused.
            self.bytes
                .reserve_exact((self.bytes.len() / 4).max(4 * ENTRY_BYTES_MAX));
        }
        let last = self.last;
        for value in [
            zigzag(entry.seq.wrapping_sub(last.seq)),
            zigzag(entry.msg_id.wrapping_sub(last.msg_id)),
            zigzag(i64::from(entry.at_ms.wrapping_sub(last.at_ms) as i32) as u64),
            u64::from(entry.send),
        ] {
            prost::encoding::encode_varint(value, &mut self.bytes);
        }
        self.last = entry;
        self.len += 1;
    }

    /// Entries logged.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is logged.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The entries in processing order.
    pub fn iter(&self) -> AppLogIter<'_> {
        AppLogIter {
            bytes: &self.bytes,
            last: LogEntry::default(),
        }
    }
}

impl<'a> IntoIterator for &'a AppLog {
    type Item = LogEntry;
    type IntoIter = AppLogIter<'a>;

    fn into_iter(self) -> AppLogIter<'a> {
        self.iter()
    }
}

/// An [`AppLog`]'s entries, decoded in order.
#[derive(Debug, Clone)]
pub struct AppLogIter<'a> {
    bytes: &'a [u8],
    last: LogEntry,
}

impl Iterator for AppLogIter<'_> {
    type Item = LogEntry;

    fn next(&mut self) -> Option<LogEntry> {
        if self.bytes.is_empty() {
            return None;
        }
        let mut next = || {
            prost::encoding::decode_varint(&mut self.bytes)
                .expect("an app log ends on a whole entry")
        };
        let last = self.last;
        let seq = last.seq.wrapping_add(unzigzag(next()));
        let msg_id = last.msg_id.wrapping_add(unzigzag(next()));
        let at_ms = last.at_ms.wrapping_add(unzigzag(next()) as u32);
        let send = next() as u32;
        self.last = LogEntry {
            seq,
            msg_id,
            at_ms,
            send,
        };
        Some(self.last)
    }
}

/// A signed difference (two's complement in a u64) as a small unsigned number.
fn zigzag(difference: u64) -> u64 {
    let signed = difference as i64;
    ((signed << 1) ^ (signed >> 63)) as u64
}

fn unzigzag(value: u64) -> u64 {
    (value >> 1) ^ (value & 1).wrapping_neg()
}

/// Per-device records.
#[derive(Debug, Clone, Default)]
pub struct DeviceLedger {
    /// The app log, in processing order.
    pub log: AppLog,
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
    pub wakeups: u32,
    /// Wake-ups the push host wrote to this device's channel (one behind an expired NAT
    /// mapping swallows them: written, never received).
    pub wakeups_written: u32,
    /// Positions in `log` where the server's store became a new generation (the next entry
    /// starts again at seq 1).
    pub inbox_resets: Vec<usize>,
    /// The heartbeat intervals the device used, with the time each Ping was sent: kept only
    /// when the run asks for them (`RunOptions::heartbeat_series`, the heartbeat comparison).
    pub heartbeat_intervals: Vec<(u64, u64)>,
}

/// Everything the devices recorded.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    /// Sends by index.
    pub sends: Vec<SendRecord>,
    /// Send indexes by their client message id (hashed with Fx, never iterated): the ids
    /// themselves are not kept but for `ids_apart`. An id queued again replaces the earlier
    /// send here.
    send_index: HashTable<u32>,
    /// The client message ids not of the form `d<device>-<n>` (the sending device's own
    /// name), by send index, in index order.
    ids_apart: Vec<(u32, Box<str>)>,
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
        let index = u32::try_from(self.sends.len())
            .ok()
            // Below u32::MAX - 1: a log entry keeps the index plus one beside its REPEAT mark.
            .filter(|index| *index < LogEntry::REPEAT - 1)
            .expect("fewer than 4 billion sends in one simulation");
        let number = match numbered(&client_msg_id) {
            Some((of, n)) if of == device => n,
            _ => {
                self.ids_apart.push((index, client_msg_id.as_str().into()));
                SendRecord::ID_APART
            }
        };
        self.sends.push(SendRecord {
            acked_msg_id: 0,
            acked_epoch: 0,
            device,
            number,
            to: to.packed(),
            queued_ms: ms32(at_ms),
            acked_at_plus_one: 0,
        });
        let Ledger {
            sends,
            send_index,
            ids_apart,
            ..
        } = self;
        let id_of = |known: u32| client_msg_id_of(sends, ids_apart, known);
        match send_index.entry(
            id_hash(client_msg_id.as_bytes()),
            |known| id_of(*known).is(&client_msg_id),
            |known| id_of(*known).hash(),
        ) {
            hashbrown::hash_table::Entry::Occupied(mut known) => *known.get_mut() = index,
            hashbrown::hash_table::Entry::Vacant(slot) => {
                slot.insert(index);
            }
        }
    }

    /// The index of the newest send queued with `client_msg_id`.
    pub fn send_index(&self, client_msg_id: &str) -> Option<u32> {
        self.send_index
            .find(id_hash(client_msg_id.as_bytes()), |known| {
                client_msg_id_of(&self.sends, &self.ids_apart, *known).is(client_msg_id)
            })
            .copied()
    }

    /// The client message id of send `index`.
    pub fn client_msg_id(&self, index: u32) -> Cow<'_, str> {
        match client_msg_id_of(&self.sends, &self.ids_apart, index) {
            SendId::Numbered { device, n } => Cow::Owned(format!("d{device}-{n}")),
            SendId::Apart(id) => Cow::Borrowed(id),
        }
    }

    /// The `n` of send `index`'s client message id `d<device>-<n>` (0 for an id of another form).
    pub fn message_number(&self, index: u32) -> u64 {
        match client_msg_id_of(&self.sends, &self.ids_apart, index) {
            SendId::Numbered { n, .. } => u64::from(n),
            SendId::Apart(id) => id
                .rsplit_once('-')
                .and_then(|(_, n)| n.parse().ok())
                .unwrap_or(0),
        }
    }

    /// Records an ack from store generation `epoch`.
    pub fn acked(&mut self, client_msg_id: &str, msg_id: u64, epoch: u64, at_ms: u64) {
        if let Some(index) = self.send_index(client_msg_id) {
            let send = &mut self.sends[index as usize];
            if send.acked_at_plus_one == 0 {
                // Below u32::MAX: SIMULATED_MS_MAX leaves the hour after a run's end.
                send.acked_at_plus_one = ms32(at_ms) + 1;
                send.acked_msg_id = msg_id;
                send.acked_epoch = epoch;
            }
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
        let send = self.send_index(client_msg_id);
        self.devices[device as usize].log.push(LogEntry {
            seq,
            msg_id,
            at_ms: ms32(at_ms),
            send: send.map_or(0, |send| send + 1),
        });
    }

    /// Records a seq whose message the device had already shown.
    pub fn repeated(&mut self, device: u32, seq: u64, msg_id: u64, at_ms: u64) {
        self.devices[device as usize].log.push(LogEntry {
            seq,
            msg_id,
            at_ms: ms32(at_ms),
            send: LogEntry::REPEAT,
        });
    }

    /// Delays (ms) from queueing to processing, over every delivery of a known send.
    pub fn delays_ms(&self) -> Vec<u64> {
        let mut delays: Vec<u64> = self
            .devices
            .iter()
            .flat_map(|device| device.log.iter())
            .filter_map(|entry| {
                let send = &self.sends[entry.send()? as usize];
                Some(entry.at_ms().saturating_sub(send.queued_ms()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_delivery_finds_its_send_among_many() {
        let mut ledger = Ledger::new(2);
        for n in 0..10_000u64 {
            ledger.queued(0, format!("d0-{n}"), Conversation::Peer(1), n);
        }
        // Newest first, so that a lookup that stopped at the first slot it probed would
        // be caught as well as one that matched any id.
        for n in (0..10_000u64).rev() {
            ledger.delivered(1, n + 1, 100 + n, &format!("d0-{n}"), 20_000 + n);
        }
        ledger.delivered(1, 10_001, 5, "d0-unknown", 30_000);
        let log = &ledger.devices[1].log;
        for (entry, n) in log.iter().zip((0..10_000u32).rev()) {
            assert_eq!(entry.send(), Some(n), "delivery of d0-{n}");
            assert_eq!(ledger.client_msg_id(n), format!("d0-{n}"));
        }
        assert_eq!(log.iter().last().unwrap().send(), None, "an id no send had");
        assert_eq!(
            ledger.delays_ms()[0],
            20_000,
            "d0-0: queued at 0, shown at 20,000"
        );
    }

    #[test]
    fn the_first_send_is_index_zero_and_a_repeat_has_none() {
        let mut ledger = Ledger::new(1);
        ledger.queued(0, "d0-0".into(), Conversation::Group(3), 7);
        ledger.delivered(0, 1, 1, "d0-0", 9);
        ledger.repeated(0, 2, 1, 10);
        let log = log_of(&ledger);
        assert_eq!((log[0].send(), log[0].repeat()), (Some(0), false));
        assert_eq!((log[1].send(), log[1].repeat()), (None, true));
        assert_eq!((log[0].at_ms(), log[1].at_ms()), (9, 10));
        ledger.delivered(0, 3, 2, "d0-unknown", 11);
        assert_eq!(
            (log_of(&ledger)[2].send(), log_of(&ledger)[2].repeat()),
            (None, false)
        );
    }

    fn log_of(ledger: &Ledger) -> Vec<LogEntry> {
        ledger.devices[0].log.iter().collect()
    }

    #[test]
    fn records_keep_their_fields_exactly_in_fewer_bytes() {
        // 600,000 sends in scale-10k's day: 72 bytes, then 48 with the id boxed apart.
        assert_eq!(std::mem::size_of::<SendRecord>(), 40);
        let mut ledger = Ledger::new(2);
        let last_ms = SIMULATED_MS_MAX - 1;
        let conversations = [
            Conversation::Peer(0),
            Conversation::Group(0),
            Conversation::Peer(GROUP_BIT - 1),
            Conversation::Group(GROUP_BIT - 1),
        ];
        for (n, to) in conversations.into_iter().enumerate() {
            ledger.queued(1, format!("d1-{n}"), to, last_ms - 10);
        }
        assert_eq!(ledger.sends[2].acked(), None, "not acked yet");
        ledger.acked("d1-2", u64::MAX, u64::MAX - 1, 0);
        ledger.acked("d1-3", 7, 2, last_ms - 1);
        ledger.delivered(0, u64::MAX, u64::MAX - 2, "d1-3", last_ms);
        let sends: Vec<_> = ledger
            .sends
            .iter()
            .map(|s| (s.to(), s.queued_ms()))
            .collect();
        let expected: Vec<_> = conversations.iter().map(|to| (*to, last_ms - 10)).collect();
        assert_eq!(sends, expected);
        let acks = [ledger.sends[2].acked(), ledger.sends[3].acked()];
        let ack = |at_ms, msg_id, epoch| {
            Some(Ack {
                at_ms,
                msg_id,
                epoch,
            })
        };
        assert_eq!(
            acks,
            [ack(0, u64::MAX, u64::MAX - 1), ack(last_ms - 1, 7, 2)]
        );
        let entry = log_of(&ledger)[0];
        assert_eq!(
            (
                entry.seq,
                entry.msg_id,
                entry.at_ms(),
                entry.send(),
                entry.repeat()
            ),
            (u64::MAX, u64::MAX - 2, last_ms, Some(3), false)
        );
    }

    #[test]
    #[should_panic(expected = "fits in 31 bits")]
    fn a_conversation_index_past_31_bits_is_refused() {
        Ledger::new(1).queued(0, "d0-0".into(), Conversation::Peer(GROUP_BIT), 0);
    }

    #[test]
    fn an_id_queued_again_names_the_newer_send() {
        let mut ledger = Ledger::new(1);
        ledger.queued(0, "d0-0".into(), Conversation::Peer(0), 1);
        ledger.queued(0, "d0-1".into(), Conversation::Peer(0), 2);
        ledger.queued(0, "d0-0".into(), Conversation::Peer(0), 3);
        ledger.acked("d0-0", 11, 1, 4);
        ledger.delivered(0, 1, 11, "d0-0", 5);
        assert_eq!(log_of(&ledger)[0].send(), Some(2));
        assert_eq!(ledger.sends[0].acked(), None);
        assert_eq!(ledger.sends[2].acked().map(|ack| ack.msg_id), Some(11));
    }

    fn entry(seq: u64, msg_id: u64, at_ms: u32, send: u32) -> LogEntry {
        LogEntry {
            seq,
            msg_id,
            at_ms,
            send,
        }
    }

    proptest::proptest! {
        #[test]
        fn an_app_log_reads_back_every_entry_it_was_given(
            entries in proptest::collection::vec(
                (
                    proptest::prop_oneof![0..4u64, proptest::num::u64::ANY],
                    proptest::num::u64::ANY,
                    proptest::num::u32::ANY,
                    proptest::prop_oneof![
                        proptest::strategy::Just(0u32),
                        proptest::strategy::Just(LogEntry::REPEAT),
                        proptest::num::u32::ANY,
                    ],
                ),
                0..200,
            )
        ) {
            let entries: Vec<LogEntry> = entries
                .into_iter()
                .map(|(seq, msg_id, at_ms, send)| entry(seq, msg_id, at_ms, send))
                .collect();
            let mut log = AppLog::default();
            for (pushed, entry) in entries.iter().enumerate() {
                proptest::prop_assert_eq!(log.len(), pushed);
                log.push(*entry);
            }
            proptest::prop_assert_eq!(log.len(), entries.len());
            proptest::prop_assert_eq!(log.is_empty(), entries.is_empty());
            proptest::prop_assert_eq!(log.iter().collect::<Vec<_>>(), entries.clone());
            proptest::prop_assert_eq!((&log).into_iter().count(), entries.len());
            proptest::prop_assert!(log.bytes.len() <= entries.len() * ENTRY_BYTES_MAX);
        }
    }

    #[test]
    fn an_app_log_keeps_the_extremes_and_steps_back() {
        let entries = [
            entry(u64::MAX, u64::MAX, u32::MAX, LogEntry::REPEAT - 1),
            // A new store generation: seqs and msg_ids start again, and time steps back.
            entry(1, 0, 0, 0),
            entry(u64::MAX, 1, u32::MAX, LogEntry::REPEAT),
            entry(0, u64::MAX, 1, 1),
        ];
        let mut log = AppLog::default();
        for entry in entries {
            log.push(entry);
        }
        assert_eq!(log.iter().collect::<Vec<_>>(), entries);
        assert_eq!(
            log.iter()
                .map(|entry| (entry.send(), entry.repeat()))
                .collect::<Vec<_>>(),
            [
                (Some(LogEntry::REPEAT - 2), false),
                (None, false),
                (None, true),
                (Some(0), false),
            ]
        );
    }

    #[test]
    fn a_days_app_log_costs_under_half_its_entries() {
        // What scale-10k's devices log: consecutive seqs, msg_ids thousands apart (the
        // server's, shared by every user), minutes apart, sends anywhere in 600,000.
        let mut log = AppLog::default();
        let entries = 2_000u32;
        for n in 0..entries {
            log.push(entry(
                u64::from(n) + 1,
                5_000_000 + 9_999 * u64::from(n),
                60_000 + 391_000 * n,
                (n * 2_711) % 600_000 + 1,
            ));
            // Grown a quarter at a time (at least four entries' worth): the spare capacity is
            // at most a quarter of what is written.
            let (encoded, capacity) = (log.bytes.len(), log.bytes.capacity());
            assert!(
                capacity <= encoded + (encoded / 4).max(4 * ENTRY_BYTES_MAX),
                "capacity {capacity} for {encoded} bytes"
            );
        }
        let entry_bytes = std::mem::size_of::<LogEntry>();
        let encoded = log.bytes.len();
        assert!(
            encoded <= entries as usize * entry_bytes / 2,
            "{encoded} bytes for {entries} entries of {entry_bytes}"
        );
    }

    #[test]
    fn client_message_ids_of_the_core_s_form_are_numbers_and_the_rest_kept_apart() {
        assert_eq!(numbered("d0-0"), Some((0, 0)));
        assert_eq!(
            numbered("d4294967295-4294967294"),
            Some((u32::MAX, u32::MAX - 1))
        );
        for apart in [
            "d0-4294967295", // n would be ID_APART
            "d0-4294967296",
            "d4294967296-1",
            "d01-2",
            "d1-02",
            "d-1",
            "d1-",
            "d1-+2",
            "u1-2",
            "d1-2-3",
            "",
        ] {
            assert_eq!(numbered(apart), None, "{apart:?}");
        }
        let mut ledger = Ledger::new(8);
        let ids = [
            (3, "d3-1"),
            (3, "d3-4294967295"),
            (4, "d3-2"), // the form, but not the sender's own name
            (5, "not-a-core-id"),
            (6, "d06-1"),
            (7, "d7-0"),
        ];
        for (device, id) in ids {
            ledger.queued(device, id.into(), Conversation::Peer(0), 1);
        }
        assert_eq!(ledger.ids_apart.len(), 4, "{:?}", ledger.ids_apart);
        for (index, (_, id)) in ids.iter().enumerate() {
            assert_eq!(ledger.client_msg_id(index as u32), *id);
            assert_eq!(ledger.send_index(id), Some(index as u32), "{id}");
        }
        assert_eq!(ledger.send_index("d3-2x"), None);
        assert_eq!(
            ledger.send_index("d4-2"),
            None,
            "d3-2 was sent by d4, not d4-2"
        );
        assert_eq!(
            ids.map(|(_, id)| id)
                .iter()
                .enumerate()
                .map(|(index, _)| ledger.message_number(index as u32))
                .collect::<Vec<_>>(),
            [1, 4_294_967_295, 2, 0, 1, 0]
        );
        // The same id queued again, by another device (so the newer send keeps it apart):
        // the newer send is the one found.
        ledger.queued(5, "d3-1".into(), Conversation::Peer(0), 2);
        assert_eq!(ledger.send_index("d3-1"), Some(6));
        ledger.queued(3, "d3-1".into(), Conversation::Peer(0), 3);
        assert_eq!(ledger.send_index("d3-1"), Some(7));
        assert_eq!(ledger.client_msg_id(6), "d3-1");
    }
}
