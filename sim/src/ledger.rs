//! The ledger: what every device's app saw and did, as the invariant checker needs it.
//!
//! Sends are recorded when the app queues them (that time is the start of the message's
//! delay) and when they are acked; every processed message is appended to its device's app
//! log. Entries refer to sends by index, so an app log costs a few words per message.
//!
//! A scale scenario records every send and every delivery of a simulated day (600,000 sends
//! and 2.2 million deliveries in `scale-10k`), so the records are kept small: a send's client
//! message id is stored once, in its record, and found again through a hash table of send
//! indexes; times are u32 milliseconds (a run is at most [`SIMULATED_MS_MAX`] long, checked
//! before it starts); a send record is 48 bytes and a log entry 24.

use std::collections::BTreeMap;
use std::hash::BuildHasher;

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;

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

/// One message the app asked to send.
#[derive(Debug, Clone)]
pub struct SendRecord {
    /// Its client message id.
    pub client_msg_id: Box<str>,
    /// The ack's message id and store generation (0 while not acked).
    acked_msg_id: u64,
    acked_epoch: u64,
    /// Sending device.
    pub device: u32,
    /// The conversation: a user or a chat group, as [`Conversation::packed`].
    to: u32,
    /// When the app queued it (simulated ms).
    queued_ms: u32,
    /// When the ack arrived, plus one (0: not acked).
    acked_at_plus_one: u32,
}

impl SendRecord {
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// themselves are only in `sends`. An id queued again replaces the earlier send here.
    send_index: HashTable<u32>,
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
        let hash = FxBuildHasher.hash_one(client_msg_id.as_str());
        let sends = &self.sends;
        match self.send_index.entry(
            hash,
            |known| *sends[*known as usize].client_msg_id == *client_msg_id,
            |known| FxBuildHasher.hash_one(&*sends[*known as usize].client_msg_id),
        ) {
            hashbrown::hash_table::Entry::Occupied(mut known) => *known.get_mut() = index,
            hashbrown::hash_table::Entry::Vacant(slot) => {
                slot.insert(index);
            }
        }
        self.sends.push(SendRecord {
            client_msg_id: client_msg_id.into_boxed_str(),
            acked_msg_id: 0,
            acked_epoch: 0,
            device,
            to: to.packed(),
            queued_ms: ms32(at_ms),
            acked_at_plus_one: 0,
        });
    }

    /// The index of the newest send queued with `client_msg_id`.
    pub fn send_index(&self, client_msg_id: &str) -> Option<u32> {
        let hash = FxBuildHasher.hash_one(client_msg_id);
        self.send_index
            .find(hash, |known| {
                *self.sends[*known as usize].client_msg_id == *client_msg_id
            })
            .copied()
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
            assert_eq!(&*ledger.sends[n as usize].client_msg_id, format!("d0-{n}"));
        }
        assert_eq!(log.last().unwrap().send(), None, "an id no send had");
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
        let log = &ledger.devices[0].log;
        assert_eq!((log[0].send(), log[0].repeat()), (Some(0), false));
        assert_eq!((log[1].send(), log[1].repeat()), (None, true));
        assert_eq!((log[0].at_ms(), log[1].at_ms()), (9, 10));
        ledger.delivered(0, 3, 2, "d0-unknown", 11);
        assert_eq!(
            (log_of(&ledger)[2].send(), log_of(&ledger)[2].repeat()),
            (None, false)
        );
    }

    fn log_of(ledger: &Ledger) -> &[LogEntry] {
        &ledger.devices[0].log
    }

    #[test]
    fn records_keep_their_fields_exactly_in_fewer_bytes() {
        // 2.2 million log entries and 600,000 sends in scale-10k's day: 32 and 72 bytes before.
        assert_eq!(std::mem::size_of::<LogEntry>(), 24);
        assert_eq!(std::mem::size_of::<SendRecord>(), 48);
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
        let entry = ledger.devices[0].log[0];
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
        assert_eq!(ledger.devices[0].log[0].send(), Some(2));
        assert_eq!(ledger.sends[0].acked(), None);
        assert_eq!(ledger.sends[2].acked().map(|ack| ack.msg_id), Some(11));
    }
}
