//! Messages between the workers of one run (`--workers N`): each worker writes
//! `crossings.json` and two binary record files beside its results, and the merge judges
//! what crossed.
//!
//! A worker's ledger knows its own clients' sends and its own clients' deliveries. A message
//! from worker A's client to worker B's is owed at B; B's ledger records each delivery of it
//! by identity (`MsgId`, recipient, time, and whether the protocol allows it as a repeat)
//! without knowing the send. So each worker exports the deliveries it owes elsewhere
//! ([`Owed`], with planned and ack times), every delivery it received from elsewhere
//! ([`Received`], repeats included, in arrival order), the messages its protocol sent again
//! itself, and which of its clients were synced when it stopped. The merge matches them by
//! identity: a first delivery received is delivered (its latency from the sender's planned
//! time, both on the wall clock the workers share), a later one a redelivery or a duplicate
//! and an older one than its sender's newest at that device a reorder; not received by a
//! recipient that was synced when its worker stopped, after the message was acked, is lost;
//! otherwise it is pending. The receiving worker keeps no set of what it received (24 bytes a
//! delivery, where a record and a set entry took about 60): the merge tells repeats apart.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use hdrhistogram::Histogram;
use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};

use crate::ledger::{LoadLedger, RemoteRepeat};
use crate::protocol::MsgId;

/// The file each worker writes beside results.json: who it is, when it ran, who was synced.
pub const CROSSINGS_FILE: &str = "crossings.json";
/// The deliveries it owes other workers' clients, [`OWED_BYTES`] each (little-endian:
/// sender u32, number u64, recipient u32, planned_us u64, acked_us u64).
pub const OWED_FILE: &str = "crossings-owed.bin";
/// The deliveries of other workers' messages it received, [`RECEIVED_BYTES`] each
/// (little-endian: sender u32, number u64, recipient u32, at_us u64, repeat u8: 0 never
/// allowed again, 1 allowed, 2 allowed if its sender's protocol sent it again).
pub const RECEIVED_FILE: &str = "crossings-received.bin";
/// Bytes of one record in [`OWED_FILE`].
pub const OWED_BYTES: usize = 32;
/// Bytes of one record in [`RECEIVED_FILE`].
pub const RECEIVED_BYTES: usize = 25;

/// A delivery an acked message owes to a client of another worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owed {
    /// Sender and the sender's count.
    pub id: (u32, u64),
    /// The recipient (another worker's client).
    pub recipient: u32,
    /// Planned send time, µs since the sending worker started.
    pub planned_us: u64,
    /// Ack time, µs since the sending worker started.
    pub acked_us: u64,
}

/// A delivery of another worker's message here, the first or a repeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Sender and the sender's count.
    pub id: (u32, u64),
    /// The recipient (a client of this worker).
    pub recipient: u32,
    /// µs since this worker started.
    pub at_us: u64,
    /// What the protocol said of it, should it be a repeat.
    pub repeat: RemoteRepeat,
}

/// One worker's side of the messages that crossed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Crossings {
    /// The run's tag, the same in every worker of one run.
    pub run_tag: String,
    /// This worker's clients: `first_client..first_client + n_clients`.
    pub first_client: u32,
    /// How many.
    pub n_clients: u32,
    /// The worker's start on the wall clock (µs since the Unix epoch): every `_us` here counts
    /// from it.
    pub started_unix_us: u64,
    /// When it stopped its clients (and took this record), µs since its start.
    pub stopped_us: u64,
    /// Its clients logged in and synced when it stopped.
    pub synced: Vec<u32>,
    /// Its messages that its protocol sent again by itself (MQTT QoS 1 after a reconnect):
    /// a repeat of one at another worker's client is a redelivery the protocol allows.
    #[serde(default)]
    pub resent: Vec<(u32, u64)>,
    /// Deliveries its acked messages owe to other workers' clients ([`OWED_FILE`]).
    #[serde(skip)]
    pub owed: Vec<Owed>,
    /// Deliveries of other workers' messages to its clients, in arrival order
    /// ([`RECEIVED_FILE`]).
    #[serde(skip)]
    pub received: Vec<Received>,
    /// Deliveries of other workers' messages it could not record (its bound was reached).
    pub received_dropped: u64,
}

impl Crossings {
    /// Takes a worker's record from its `ledger` as it stops its clients.
    pub fn of(ledger: &LoadLedger, run_tag: &str, started_unix_us: u64) -> Crossings {
        let clients = ledger.clients();
        let owed = ledger
            .dues_elsewhere()
            .map(|due| Owed {
                id: (due.id().sender, due.id().number),
                recipient: due.recipient,
                planned_us: due.planned_us,
                acked_us: due.acked_us,
            })
            .collect();
        let mut resent: Vec<(u32, u64)> = ledger
            .resent_ids()
            .map(|id| (id.sender, id.number))
            .collect();
        resent.sort_unstable();
        Crossings {
            run_tag: run_tag.to_string(),
            first_client: clients.start,
            n_clients: clients.len() as u32,
            started_unix_us,
            stopped_us: ledger.now_us(),
            synced: clients.clone().filter(|c| ledger.synced(*c)).collect(),
            resent,
            owed,
            received: ledger
                .received
                .iter()
                .map(|r| Received {
                    id: (r.sender, u64::from(r.number)),
                    recipient: r.recipient,
                    at_us: r.at_us,
                    repeat: r.repeat,
                })
                .collect(),
            received_dropped: ledger.received_dropped,
        }
    }

    /// Writes it to `dir`: [`OWED_FILE`], [`RECEIVED_FILE`], then [`CROSSINGS_FILE`]. An
    /// error names the file.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        write_records(&dir.join(OWED_FILE), &self.owed, |o, out| {
            out.write_all(&o.id.0.to_le_bytes())?;
            out.write_all(&o.id.1.to_le_bytes())?;
            out.write_all(&o.recipient.to_le_bytes())?;
            out.write_all(&o.planned_us.to_le_bytes())?;
            out.write_all(&o.acked_us.to_le_bytes())
        })?;
        write_records(&dir.join(RECEIVED_FILE), &self.received, |r, out| {
            out.write_all(&r.id.0.to_le_bytes())?;
            out.write_all(&r.id.1.to_le_bytes())?;
            out.write_all(&r.recipient.to_le_bytes())?;
            out.write_all(&r.at_us.to_le_bytes())?;
            out.write_all(&[r.repeat as u8])
        })?;
        // Last: its presence says the record files beside it are whole.
        let file = dir.join(CROSSINGS_FILE);
        let json = serde_json::to_string(self).map_err(std::io::Error::other)?;
        std::fs::write(&file, json).map_err(|error| named_error(&file, error))
    }

    /// Reads `dir`'s, if it has one.
    pub fn read(dir: &Path) -> Result<Option<Crossings>, String> {
        let file = dir.join(CROSSINGS_FILE);
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(format!("{}: {error}", file.display())),
        };
        let mut crossings: Crossings =
            serde_json::from_str(&text).map_err(|error| format!("{}: {error}", file.display()))?;
        crossings.owed = read_records(&dir.join(OWED_FILE), |b: &[u8; OWED_BYTES]| {
            Ok(Owed {
                id: (u32_at(b, 0), u64_at(b, 4)),
                recipient: u32_at(b, 12),
                planned_us: u64_at(b, 16),
                acked_us: u64_at(b, 24),
            })
        })?;
        crossings.received = read_records(&dir.join(RECEIVED_FILE), |b: &[u8; RECEIVED_BYTES]| {
            Ok(Received {
                id: (u32_at(b, 0), u64_at(b, 4)),
                recipient: u32_at(b, 12),
                at_us: u64_at(b, 16),
                repeat: RemoteRepeat::from_byte(b[24])
                    .ok_or_else(|| format!("repeat {} is not 0, 1 or 2", b[24]))?,
            })
        })?;
        Ok(Some(crossings))
    }
}

/// `error`, naming `file`.
fn named_error(file: &Path, error: std::io::Error) -> std::io::Error {
    std::io::Error::new(error.kind(), format!("{}: {error}", file.display()))
}

/// Writes `records` to `file`, each by `write`, and syncs it; an error names the file.
fn write_records<T>(
    file: &Path,
    records: &[T],
    write: impl Fn(&T, &mut BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let written = (|| {
        let mut out = BufWriter::new(std::fs::File::create(file)?);
        for record in records {
            write(record, &mut out)?;
        }
        out.into_inner().map_err(|e| e.into_error())?.sync_all()
    })();
    written.map_err(|error| named_error(file, error))
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// Reads `file`'s records of `N` bytes each, in order; an error names the file and the
/// record (a file cut short, a field out of range).
fn read_records<T, const N: usize>(
    file: &Path,
    parse: impl Fn(&[u8; N]) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    let named = |what: String| format!("{}: {what}", file.display());
    let handle = std::fs::File::open(file).map_err(|error| named(error.to_string()))?;
    let len = handle
        .metadata()
        .map_err(|error| named(error.to_string()))?
        .len();
    if len % N as u64 != 0 {
        return Err(named(format!(
            "{len} bytes is not a whole number of {N}-byte records (cut short?)"
        )));
    }
    let mut reader = BufReader::new(handle);
    let mut records = Vec::with_capacity((len / N as u64) as usize);
    let mut bytes = [0u8; N];
    for index in 0..len / N as u64 {
        reader
            .read_exact(&mut bytes)
            .map_err(|error| named(format!("record {index}: {error}")))?;
        records.push(parse(&bytes).map_err(|what| named(format!("record {index}: {what}")))?);
    }
    Ok(records)
}

/// What the merge found for the deliveries that crossed between workers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Judged {
    /// Deliveries owed across workers.
    pub expected: u64,
    /// Of those, made.
    pub delivered: u64,
    /// Not made, the recipient synced after the ack and before its worker stopped.
    pub lost: u64,
    /// Not made, and the recipient was not synced then (or its worker left no record).
    pub pending: u64,
    /// Deliveries the receiving workers could not record (bound reached): when not 0, no
    /// missing delivery is judged lost (it may be among them), only pending.
    pub unrecorded: u64,
    /// Repeats of a delivery the protocol does not allow.
    pub duplicated: u64,
    /// Repeats the protocol allows (MQTT's DUP, after a reconnect, or of a message resent).
    pub redelivered: u64,
    /// First deliveries older than one the device had from the same sender.
    pub reordered: u64,
}

/// Matches every worker's owed deliveries against every worker's received ones; records the
/// latency of each match (µs) in `deliver`. Each worker's received deliveries are replayed in
/// arrival order, as its ledger would have judged them: a repeat of a (message, recipient) is
/// a redelivery if the protocol allowed it (or its sender's worker resent the message) and a
/// duplicate otherwise; a first delivery older than its sender's newest at that device is a
/// reorder.
pub fn judge(workers: &[Crossings], deliver: &mut Histogram<u64>) -> Judged {
    let mut judged = Judged::default();
    let resent: FxHashSet<(u32, u64)> = workers
        .iter()
        .flat_map(|w| w.resent.iter().copied())
        .collect();
    // (message, recipient) -> the first delivery's time on the shared clock.
    let mut received: FxHashMap<(MsgId, u32), u64> = FxHashMap::default();
    for worker in workers {
        judged.unrecorded += worker.received_dropped;
        // (recipient, sender) -> the newest number delivered: recipients are this worker's.
        let mut newest: FxHashMap<(u32, u32), u64> = FxHashMap::default();
        for r in &worker.received {
            let id = MsgId {
                sender: r.id.0,
                number: r.id.1,
            };
            match received.entry((id, r.recipient)) {
                std::collections::hash_map::Entry::Occupied(_) => {
                    let allowed = match r.repeat {
                        RemoteRepeat::Duplicate => false,
                        RemoteRepeat::Redelivery => true,
                        RemoteRepeat::RedeliveryIfResent => resent.contains(&r.id),
                    };
                    if allowed {
                        judged.redelivered += 1;
                    } else {
                        judged.duplicated += 1;
                    }
                }
                std::collections::hash_map::Entry::Vacant(first) => {
                    first.insert(worker.started_unix_us + r.at_us);
                    let last = newest.entry((r.recipient, r.id.0)).or_insert(0);
                    if r.id.1 < *last {
                        judged.reordered += 1;
                    } else {
                        *last = r.id.1;
                    }
                }
            }
        }
    }
    let home = |client: u32| {
        workers
            .iter()
            .find(|w| (w.first_client..w.first_client + w.n_clients).contains(&client))
    };
    for worker in workers {
        for owed in &worker.owed {
            judged.expected += 1;
            let id = MsgId {
                sender: owed.id.0,
                number: owed.id.1,
            };
            let planned = worker.started_unix_us + owed.planned_us;
            if let Some(at) = received.get(&(id, owed.recipient)) {
                judged.delivered += 1;
                let _ = deliver.record(at.saturating_sub(planned).max(1));
                continue;
            }
            let acked = worker.started_unix_us + owed.acked_us;
            // A receiving worker that ran out of room may have had it: never judge it lost.
            let lost = judged.unrecorded == 0
                && home(owed.recipient).is_some_and(|w| {
                    acked < w.started_unix_us + w.stopped_us
                        && w.synced.binary_search(&owed.recipient).is_ok()
                });
            if lost {
                judged.lost += 1;
            } else {
                judged.pending += 1;
            }
        }
    }
    judged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(first_client: u32, started_unix_us: u64) -> Crossings {
        Crossings {
            run_tag: "r1".into(),
            first_client,
            n_clients: 2,
            started_unix_us,
            stopped_us: 10_000_000,
            synced: vec![first_client, first_client + 1],
            resent: Vec::new(),
            owed: Vec::new(),
            received: Vec::new(),
            received_dropped: 0,
        }
    }

    /// A worker owes every acked message's deliveries to other workers' clients, whether
    /// the message settled here (acked, every local recipient reached) or is still open;
    /// an unacked one owes nothing yet.
    #[test]
    fn a_worker_owes_the_remote_deliveries_of_settled_and_open_messages() {
        let mut ledger = LoadLedger::for_clients(0, 2);
        let id = |number| MsgId { sender: 0, number };
        // To a remote client alone: settles at its ack.
        ledger.planned(id(0), 10, vec![5]);
        ledger.acked(id(0));
        // To a local and a remote one: settles once the local one has it.
        ledger.planned(id(1), 20, vec![1, 6]);
        ledger.acked(id(1));
        ledger.delivered(1, id(1));
        // Acked, its local recipient not reached: open.
        ledger.planned(id(2), 30, vec![1, 7]);
        ledger.acked(id(2));
        // Not acked: owes nothing yet.
        ledger.planned(id(3), 40, vec![8]);
        assert_eq!(ledger.open_peak(), 2);
        let crossings = Crossings::of(&ledger, "r1", 0);
        let mut owed: Vec<((u32, u64), u32, u64)> = crossings
            .owed
            .iter()
            .map(|o| {
                assert_ne!(
                    o.acked_us,
                    u64::MAX,
                    "an ack time, not the ledger's mark: {o:?}"
                );
                (o.id, o.recipient, o.planned_us)
            })
            .collect();
        owed.sort();
        assert_eq!(
            owed,
            vec![((0, 0), 5, 10), ((0, 1), 6, 20), ((0, 2), 7, 30)]
        );
    }

    #[test]
    fn owed_deliveries_are_matched_by_identity_on_the_shared_clock() {
        // Worker 0 (clients 0, 1) started 500 ms before worker 1 (clients 2, 3).
        let mut a = worker(0, 1_000_000);
        let mut b = worker(2, 1_500_000);
        let owed = |sender, number, recipient, planned_us, acked_us| Owed {
            id: (sender, number),
            recipient,
            planned_us,
            acked_us,
        };
        a.owed = vec![
            owed(0, 0, 2, 1_000_000, 1_001_000),   // delivered
            owed(0, 1, 3, 2_000_000, 2_001_000),   // lost: 3 synced, nothing came
            owed(1, 0, 2, 11_000_000, 11_001_000), // pending: acked after b stopped
        ];
        b.synced = vec![3];
        b.received = vec![Received {
            id: (0, 0),
            recipient: 2,
            at_us: 503_000, // 1_000_000 + 1_000_000 planned; 1_500_000 + 503_000 received
            repeat: RemoteRepeat::Duplicate,
        }];
        // Pending: client 0 was not synced when worker 0 stopped.
        b.owed = vec![owed(2, 0, 0, 1_000_000, 1_001_000)];
        a.synced = vec![1];
        let mut deliver = Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        let judged = judge(&[a, b], &mut deliver);
        assert_eq!(
            judged,
            Judged {
                expected: 4,
                delivered: 1,
                lost: 1,
                pending: 2,
                ..Judged::default()
            }
        );
        assert_eq!(deliver.len(), 1);
        assert_eq!(deliver.max(), deliver.highest_equivalent(3_000));
    }

    fn received(
        sender: u32,
        number: u64,
        recipient: u32,
        at_us: u64,
        repeat: RemoteRepeat,
    ) -> Received {
        Received {
            id: (sender, number),
            recipient,
            at_us,
            repeat,
        }
    }

    /// The merge replays each worker's deliveries in arrival order: a repeat is a duplicate
    /// unless the protocol allowed it (or the sender's worker resent the message), a first
    /// delivery older than its sender's newest at that device is a reorder, and the first
    /// delivery alone is matched (its time, not a repeat's).
    #[test]
    fn repeats_and_reorders_of_messages_that_crossed_are_judged_at_the_merge() {
        use RemoteRepeat::{Duplicate, Redelivery, RedeliveryIfResent};
        let mut a = worker(0, 0);
        let mut b = worker(2, 0);
        let owed = |number, recipient| Owed {
            id: (0, number),
            recipient,
            planned_us: 1_000,
            acked_us: 2_000,
        };
        a.owed = vec![owed(0, 2), owed(1, 2), owed(2, 3), owed(3, 3), owed(4, 3)];
        a.resent = vec![(0, 3)];
        b.received = vec![
            received(0, 1, 2, 5_000, Duplicate),
            received(0, 0, 2, 6_000, Duplicate), // older than 1 at client 2: reordered
            received(0, 0, 2, 7_000, Duplicate), // a repeat: duplicated
            received(0, 2, 3, 8_000, Duplicate), // client 3's order is its own
            received(0, 2, 3, 9_000, Redelivery), // allowed
            received(0, 3, 3, 9_500, Duplicate),
            received(0, 3, 3, 10_000, RedeliveryIfResent), // resent by worker 0: allowed
            received(0, 4, 3, 10_500, Duplicate),
            received(0, 4, 3, 11_000, RedeliveryIfResent), // not resent: duplicated
        ];
        let mut deliver = Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        let judged = judge(&[a, b], &mut deliver);
        assert_eq!(
            judged,
            Judged {
                expected: 5,
                delivered: 5,
                duplicated: 2,
                redelivered: 2,
                reordered: 1,
                ..Judged::default()
            }
        );
        // Message 0 at client 2: its first delivery, 6 ms after it was planned at 1 ms.
        assert_eq!(deliver.min(), deliver.lowest_equivalent(4_000));
        assert_eq!(deliver.max(), deliver.highest_equivalent(9_500));
    }

    /// Written and read back whole; a record file cut short is refused, naming it.
    #[test]
    fn the_record_files_round_trip_and_a_cut_one_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = worker(0, 1_000);
        a.resent = vec![(1, 7)];
        a.owed = vec![Owed {
            id: (1, u64::from(u32::MAX)),
            recipient: 3,
            planned_us: 10,
            acked_us: u64::MAX - 1,
        }];
        a.received = vec![
            received(2, 5, 0, 20, RemoteRepeat::RedeliveryIfResent),
            received(3, 0, 1, 30, RemoteRepeat::Redelivery),
        ];
        a.received_dropped = 4;
        a.write(dir.path()).unwrap();
        assert_eq!(
            std::fs::metadata(dir.path().join(RECEIVED_FILE))
                .unwrap()
                .len(),
            2 * RECEIVED_BYTES as u64
        );
        assert_eq!(Crossings::read(dir.path()).unwrap(), Some(a));
        let file = dir.path().join(RECEIVED_FILE);
        let bytes = std::fs::read(&file).unwrap();
        std::fs::write(&file, &bytes[..bytes.len() - 1]).unwrap();
        let error = Crossings::read(dir.path()).unwrap_err();
        assert!(
            error.contains(RECEIVED_FILE) && error.contains("cut short"),
            "{error}"
        );
        let mut bad = bytes.clone();
        bad[RECEIVED_BYTES - 1] = 9;
        std::fs::write(&file, &bad).unwrap();
        let error = Crossings::read(dir.path()).unwrap_err();
        assert!(error.contains("record 0: repeat 9"), "{error}");
        assert_eq!(Crossings::read(&dir.path().join("none")).unwrap(), None);
    }
}
