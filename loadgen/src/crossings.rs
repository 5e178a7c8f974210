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
//! otherwise it is pending. A worker appends its records to the files every second
//! ([`RecordFiles`]) and keeps none, and no set of what it received (the merge tells repeats
//! apart); the merge streams the files and holds only the first deliveries that crossed.

use std::collections::BTreeMap;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use hdrhistogram::Histogram;
use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};

use crate::ledger::{Due, LoadLedger, RECEIVED_LEN_MAX, RemoteRepeat};

/// The file each worker writes beside results.json: who it is, when it ran, who was synced.
pub const CROSSINGS_FILE: &str = "crossings.json";
/// The deliveries it owes other workers' clients, [`OWED_BYTES`] each (little-endian:
/// sender u32, number u64, recipient u32, planned_us u64, acked_us u64).
pub const OWED_FILE: &str = "crossings-owed.bin";
/// The deliveries of other workers' messages it received, [`RECEIVED_BYTES`] each
/// (little-endian: sender u32, number u64, recipient u32, at_us u64, repeat u8: 0 never
/// allowed again, 1 allowed, 2 allowed if its sender's protocol sent it again).
pub const RECEIVED_FILE: &str = "crossings-received.bin";
/// Written by a worker once its own drain is over, holding the run's tag: its clients'
/// messages are acked (or given up on), so what they owe other workers' clients is on its
/// way. Each worker listens on until every other has written it (see `run::drain`).
pub const DRAINED_FILE: &str = "drained";

/// Written by a worker of a `--scenario` run once the chats its devices create exist on the
/// server, holding the run's tag. A chat may span workers and only its first member's first
/// device creates it, so no worker sends before every other has written it (see `run::run`).
pub const CHATS_READY_FILE: &str = "chats-ready";

/// Marks in `dir` that this worker of run `run_tag` has reached `mark` ([`DRAINED_FILE`],
/// [`CHATS_READY_FILE`]).
pub fn write_mark(dir: &Path, mark: &str, run_tag: &str) -> std::io::Result<()> {
    let temp = dir.join(format!("{mark}.tmp"));
    std::fs::write(&temp, run_tag)?;
    std::fs::rename(&temp, dir.join(mark))
}

/// Whether the worker writing `dir` has reached `mark` in run `run_tag` (a file an earlier
/// run left there holds another tag).
pub fn has_mark(dir: &Path, mark: &str, run_tag: &str) -> bool {
    std::fs::read_to_string(dir.join(mark)).is_ok_and(|tag| tag == run_tag)
}

/// Bytes of one record in [`OWED_FILE`].
pub const OWED_BYTES: usize = 32;
/// Bytes of one record in [`RECEIVED_FILE`].
pub const RECEIVED_BYTES: usize = 25;

/// The least bytes the merge holds for a first delivery that crossed between workers: its
/// entry in the table of first deliveries, (sender, number, recipient) -> time, 24 bytes and
/// the hash table's control byte.
pub const BYTES_PER_FIRST_DELIVERY: usize = 25;

/// The least memory the merge of a `--workers` run of `messages` over `workers` workers
/// holds, each message owing `to_anyone` deliveries to clients that may be any worker's (a
/// one-to-one peer: 1; a `--pattern group` run's groups stay within a worker: 0; a scenario's
/// peers' devices: [`crate::population::Population::peer_devices_per_message`]): each first
/// delivery that crossed between workers, the share `1 - 1/workers` of those, at most
/// [`RECEIVED_LEN_MAX`] a worker.
pub fn merge_bytes_for_run(messages: f64, to_anyone: f64, workers: usize) -> f64 {
    if to_anyone <= 0.0 || workers < 2 {
        return 0.0;
    }
    let crossing = messages * to_anyone * (1.0 - 1.0 / workers as f64);
    let first = crossing.min((RECEIVED_LEN_MAX * workers) as f64);
    first * BYTES_PER_FIRST_DELIVERY as f64
}

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

impl Owed {
    /// The record of a ledger's due.
    pub fn of(due: &Due) -> Owed {
        Owed {
            id: (due.id().sender, due.id().number),
            recipient: due.recipient,
            planned_us: due.planned_us,
            acked_us: due.acked_us,
        }
    }
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

impl Received {
    /// The record of a ledger's delivery from elsewhere.
    pub fn of(r: &crate::ledger::Received) -> Received {
        Received {
            id: (r.sender, u64::from(r.number)),
            recipient: r.recipient,
            at_us: r.at_us,
            repeat: r.repeat,
        }
    }
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
    /// With carriers: their names, in the run's order, and each of its clients' carrier
    /// (by number), so the merge splits the deliveries that crossed to it by carrier.
    #[serde(default)]
    pub carriers: Vec<String>,
    #[serde(default)]
    pub carrier_of_client: Vec<u8>,
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
    /// Deliveries of other workers' messages it could not record (its bound was reached, or
    /// its files refused them for too long).
    pub received_dropped: u64,
    /// Deliveries its acked messages owed other workers that it could not record (its files
    /// refused them for too long): judged pending, never lost.
    #[serde(default)]
    pub owed_dropped: u64,
    /// Where it was read from: its records stay in their files there, streamed by
    /// [`Self::for_each_owed`] and [`Self::for_each_received`] after those in memory.
    #[serde(skip)]
    pub dir: Option<std::path::PathBuf>,
}

impl Crossings {
    /// Takes a worker's record from its `ledger` as it stops its clients; `carriers` names
    /// the run's carriers (none without).
    pub fn of(
        ledger: &LoadLedger,
        run_tag: &str,
        started_unix_us: u64,
        carriers: &[String],
    ) -> Crossings {
        let clients = ledger.clients();
        let owed = ledger.dues_elsewhere().map(|due| Owed::of(&due)).collect();
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
            carriers: carriers.to_vec(),
            carrier_of_client: ledger
                .carriers
                .as_ref()
                .map(|(of_client, _)| of_client.clone())
                .unwrap_or_default(),
            resent,
            owed,
            received: ledger.received.iter().map(Received::of).collect(),
            received_dropped: ledger.received_dropped,
            owed_dropped: 0,
            dir: None,
        }
    }

    /// Calls `each` on every owed delivery: those in memory, then those in its files.
    pub fn for_each_owed(&self, each: impl FnMut(Owed)) -> Result<(), String> {
        self.for_each_record(&self.owed, OWED_FILE, each, |b: &[u8; OWED_BYTES]| {
            Ok(Owed {
                id: (u32_at(b, 0), u64_at(b, 4)),
                recipient: u32_at(b, 12),
                planned_us: u64_at(b, 16),
                acked_us: u64_at(b, 24),
            })
        })
    }

    /// Calls `each` on every delivery received, in arrival order: those in memory, then
    /// those in its files.
    pub fn for_each_received(&self, each: impl FnMut(Received)) -> Result<(), String> {
        self.for_each_record(
            &self.received,
            RECEIVED_FILE,
            each,
            |b: &[u8; RECEIVED_BYTES]| {
                Ok(Received {
                    id: (u32_at(b, 0), u64_at(b, 4)),
                    recipient: u32_at(b, 12),
                    at_us: u64_at(b, 16),
                    repeat: RemoteRepeat::from_byte(b[24])
                        .ok_or_else(|| format!("repeat {} is not 0, 1 or 2", b[24]))?,
                })
            },
        )
    }

    /// Calls `each` on the records in memory, then on those `decode` reads from `file` in
    /// the worker's directory (if it has one).
    fn for_each_record<T: Copy, const N: usize>(
        &self,
        in_memory: &[T],
        file: &str,
        mut each: impl FnMut(T),
        decode: impl Fn(&[u8; N]) -> Result<T, String>,
    ) -> Result<(), String> {
        in_memory.iter().copied().for_each(&mut each);
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        stream_records(&dir.join(file), |b: &[u8; N]| {
            each(decode(b)?);
            Ok(())
        })
    }

    /// Writes it to `dir`: [`OWED_FILE`], [`RECEIVED_FILE`], then [`CROSSINGS_FILE`]. An
    /// error names the file.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let mut files = RecordFiles::create(dir)?;
        files.append(&self.owed, &self.received)?;
        self.finish(dir)
    }

    /// Writes [`CROSSINGS_FILE`] into `dir`, where [`RecordFiles`] hold its records: last,
    /// as its presence says the record files beside it are whole.
    pub fn finish(&self, dir: &Path) -> std::io::Result<()> {
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
        if text.contains("\"owed\":") {
            return Err(format!(
                "{}: its records are inside it, as imlab wrote them before 2026-12-05 (now \
                 {OWED_FILE} and {RECEIVED_FILE} beside it): merge it with the build that ran it",
                file.display()
            ));
        }
        // Whole files, or an error now rather than halfway through the merge.
        records_in(&dir.join(OWED_FILE), OWED_BYTES)?;
        records_in(&dir.join(RECEIVED_FILE), RECEIVED_BYTES)?;
        crossings.dir = Some(dir.to_path_buf());
        Ok(Some(crossings))
    }
}

/// `error`, naming `file`.
fn named_error(file: &Path, error: std::io::Error) -> std::io::Error {
    std::io::Error::new(error.kind(), format!("{}: {error}", file.display()))
}

/// A worker's record files while it runs: its records are appended as they are final (every
/// second, by the reporter), so its memory holds only those of the last second, however long
/// the run. Made at the run's start, which removes what an earlier run left in the folder.
pub struct RecordFiles {
    owed: (std::path::PathBuf, std::fs::File),
    received: (std::path::PathBuf, std::fs::File),
}

impl RecordFiles {
    /// Creates (empties) `dir`'s record files and removes its [`CROSSINGS_FILE`], so that no
    /// earlier run's record is read with this one's.
    pub fn create(dir: &Path) -> std::io::Result<RecordFiles> {
        let file = dir.join(CROSSINGS_FILE);
        match std::fs::remove_file(&file) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                return Err(named_error(&file, error));
            }
            _ => {}
        }
        let open = |name: &str| {
            let path = dir.join(name);
            std::fs::File::create(&path)
                .map(|file| (path.clone(), file))
                .map_err(|error| named_error(&path, error))
        };
        Ok(RecordFiles {
            owed: open(OWED_FILE)?,
            received: open(RECEIVED_FILE)?,
        })
    }

    /// Files at `owed` and `received` as they are, opened for writing (a test's
    /// `/dev/full`, a disk that refuses every append).
    #[cfg(test)]
    pub(crate) fn at(owed: &Path, received: &Path) -> std::io::Result<RecordFiles> {
        let open = |path: &Path| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(path)
                .map(|file| (path.to_path_buf(), file))
        };
        Ok(RecordFiles {
            owed: open(owed)?,
            received: open(received)?,
        })
    }

    /// Appends `owed` and `received` to the files (not synced: a worker that dies leaves no
    /// `crossings.json`, and then its files are not read at all). A failed append is cut off
    /// again (the files never hold half a record or a record twice) and leaves the caller's
    /// records to append again later; an error names the file.
    pub fn append(&mut self, owed: &[Owed], received: &[Received]) -> std::io::Result<()> {
        let owed_len = self
            .owed
            .1
            .metadata()
            .map_err(|e| named_error(&self.owed.0, e))?
            .len();
        append_records(&mut self.owed, owed, |o, out| {
            out.write_all(&o.id.0.to_le_bytes())?;
            out.write_all(&o.id.1.to_le_bytes())?;
            out.write_all(&o.recipient.to_le_bytes())?;
            out.write_all(&o.planned_us.to_le_bytes())?;
            out.write_all(&o.acked_us.to_le_bytes())
        })?;
        let appended = append_records(&mut self.received, received, |r, out| {
            out.write_all(&r.id.0.to_le_bytes())?;
            out.write_all(&r.id.1.to_le_bytes())?;
            out.write_all(&r.recipient.to_le_bytes())?;
            out.write_all(&r.at_us.to_le_bytes())?;
            out.write_all(&[r.repeat as u8])
        });
        if appended.is_err() {
            // Both or neither: the owed records go again with the received ones.
            let _ = self.owed.1.set_len(owed_len);
        }
        appended
    }
}

/// Appends `records` to `file` (its path and handle), each by `write`; a failed
/// append is cut off again; an error names the file.
fn append_records<T>(
    (path, file): &mut (std::path::PathBuf, std::fs::File),
    records: &[T],
    write: impl Fn(&T, &mut BufWriter<&std::fs::File>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    if records.is_empty() {
        return Ok(());
    }
    let length = file
        .metadata()
        .map_err(|error| named_error(path, error))?
        .len();
    let written = (|| {
        use std::io::Seek;
        let mut handle: &std::fs::File = file;
        handle.seek(std::io::SeekFrom::Start(length))?;
        let mut out = BufWriter::new(handle);
        for record in records {
            write(record, &mut out)?;
        }
        out.flush()
    })();
    if let Err(error) = written {
        let _ = file.set_len(length);
        return Err(named_error(path, error));
    }
    Ok(())
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// How many records of `size` bytes `file` holds; an error names it if it is missing or not a
/// whole number of them (cut short).
fn records_in(file: &Path, size: usize) -> Result<u64, String> {
    let len = std::fs::metadata(file)
        .map_err(|error| format!("{}: {error}", file.display()))?
        .len();
    if len % size as u64 != 0 {
        return Err(format!(
            "{}: {len} bytes is not a whole number of {size}-byte records (cut short?)",
            file.display()
        ));
    }
    Ok(len / size as u64)
}

/// Calls `each` on `file`'s records of `N` bytes each, in order, reading them a buffer at a
/// time (a merge holds no file whole); an error names the file and the record.
fn stream_records<const N: usize>(
    file: &Path,
    mut each: impl FnMut(&[u8; N]) -> Result<(), String>,
) -> Result<(), String> {
    let named = |what: String| format!("{}: {what}", file.display());
    let count = records_in(file, N)?;
    let handle = std::fs::File::open(file).map_err(|error| named(error.to_string()))?;
    let mut reader = BufReader::with_capacity(1 << 16, handle);
    let mut bytes = [0u8; N];
    for index in 0..count {
        reader
            .read_exact(&mut bytes)
            .map_err(|error| named(format!("record {index}: {error}")))?;
        each(&bytes).map_err(|what| named(format!("record {index}: {what}")))?;
    }
    Ok(())
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
    /// Owed deliveries the sending workers could not record (their files refused them for
    /// too long): in `expected` and `pending`.
    pub owed_unrecorded: u64,
    /// Repeats of a delivery the protocol does not allow.
    pub duplicated: u64,
    /// Repeats the protocol allows (MQTT's DUP, after a reconnect, or of a message resent).
    pub redelivered: u64,
    /// First deliveries older than one the device had from the same sender.
    pub reordered: u64,
}

/// Matches every worker's owed deliveries against every worker's received ones; records the
/// latency of each match (µs) in `deliver`, and in `by_carrier` under its recipient's
/// carrier when the recipient's worker ran carriers. Each worker's received deliveries are replayed in
/// arrival order, as its ledger would have judged them: a repeat of a (message, recipient) is
/// a redelivery if the protocol allowed it (or its sender's worker resent the message) and a
/// duplicate otherwise; a first delivery older than its sender's newest at that device is a
/// reorder.
pub fn judge(
    workers: &[Crossings],
    deliver: &mut Histogram<u64>,
    by_carrier: &mut BTreeMap<String, Histogram<u64>>,
) -> Result<Judged, String> {
    let mut judged = Judged::default();
    let resent: FxHashSet<(u32, u64)> = workers
        .iter()
        .flat_map(|w| w.resent.iter().copied())
        .collect();
    // (sender, number, recipient) -> the first delivery's time on the shared clock: the
    // merge's table that grows with the run (at most `RECEIVED_LEN_MAX` entries a worker).
    // Numbers are 32-bit, as every ledger's: a larger one is no message of this run.
    let mut received: FxHashMap<(u32, u32, u32), u64> = FxHashMap::default();
    for worker in workers {
        judged.unrecorded += worker.received_dropped;
        // (recipient, sender) -> the newest number delivered: recipients are this worker's.
        let mut newest: FxHashMap<(u32, u32), u32> = FxHashMap::default();
        worker.for_each_received(|r| {
            let Ok(number) = u32::try_from(r.id.1) else {
                return;
            };
            match received.entry((r.id.0, number, r.recipient)) {
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
                    if number < *last {
                        judged.reordered += 1;
                    } else {
                        *last = number;
                    }
                }
            }
        })?;
    }
    let home = |client: u32| {
        workers
            .iter()
            .find(|w| (w.first_client..w.first_client + w.n_clients).contains(&client))
    };
    for worker in workers {
        judged.owed_unrecorded += worker.owed_dropped;
        judged.expected += worker.owed_dropped;
        judged.pending += worker.owed_dropped;
        worker.for_each_owed(|owed| {
            judged.expected += 1;
            let planned = worker.started_unix_us + owed.planned_us;
            let key = u32::try_from(owed.id.1).map(|number| (owed.id.0, number, owed.recipient));
            if let Some(at) = key.ok().and_then(|key| received.get(&key)) {
                judged.delivered += 1;
                let us = at.saturating_sub(planned).max(1);
                crate::histograms::record(deliver, us);
                let carrier = home(owed.recipient).and_then(|w| {
                    let k = w
                        .carrier_of_client
                        .get((owed.recipient - w.first_client) as usize)?;
                    w.carriers.get(*k as usize)
                });
                if let Some(name) = carrier {
                    let histogram = by_carrier
                        .entry(name.clone())
                        .or_insert_with(crate::histograms::latency);
                    crate::histograms::record(histogram, us);
                }
                return;
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
        })?;
    }
    Ok(judged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::MsgId;

    fn worker(first_client: u32, started_unix_us: u64) -> Crossings {
        Crossings {
            run_tag: "r1".into(),
            first_client,
            n_clients: 2,
            started_unix_us,
            stopped_us: 10_000_000,
            synced: vec![first_client, first_client + 1],
            carriers: Vec::new(),
            carrier_of_client: Vec::new(),
            resent: Vec::new(),
            owed: Vec::new(),
            received: Vec::new(),
            received_dropped: 0,
            owed_dropped: 0,
            dir: None,
        }
    }

    /// The entry `BYTES_PER_FIRST_DELIVERY` counts: key and value.
    #[test]
    fn a_first_delivery_in_the_merge_takes_24_bytes_and_a_control_byte() {
        assert_eq!(
            std::mem::size_of::<((u32, u32, u32), u64)>() + 1,
            BYTES_PER_FIRST_DELIVERY
        );
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
        let crossings = Crossings::of(&ledger, "r1", 0, &[]);
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
        // Worker 1's client 2 is on its second carrier.
        b.carriers = vec!["lte".into(), "wifi".into()];
        b.carrier_of_client = vec![1, 0];
        let mut deliver = Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        let mut by_carrier = BTreeMap::new();
        let judged = judge(&[a, b], &mut deliver, &mut by_carrier).unwrap();
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
        // The delivery counts for its recipient's carrier, and for no other.
        assert_eq!(by_carrier.keys().collect::<Vec<_>>(), ["wifi"]);
        assert_eq!(by_carrier["wifi"].len(), 1);
        assert_eq!(by_carrier["wifi"].max(), deliver.highest_equivalent(3_000));
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
        let judged = judge(&[a, b], &mut deliver, &mut BTreeMap::new()).unwrap();
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

    /// Owed deliveries a worker could not record are expected and pending, never lost or
    /// delivered, and counted; the rest are judged as ever (a missing one to a synced
    /// recipient still lost).
    #[test]
    fn owed_deliveries_a_worker_could_not_record_are_pending() {
        let mut a = worker(0, 0);
        let b = {
            let mut b = worker(2, 0);
            b.received = vec![received(0, 0, 2, 5_000, RemoteRepeat::Duplicate)];
            b
        };
        let owed = |number| Owed {
            id: (0, number),
            recipient: 2,
            planned_us: 1_000,
            acked_us: 2_000,
        };
        a.owed = vec![owed(0), owed(1)];
        a.owed_dropped = 3;
        let mut deliver = Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        let judged = judge(&[a, b], &mut deliver, &mut BTreeMap::new()).unwrap();
        assert_eq!(
            judged,
            Judged {
                expected: 5,
                delivered: 1,
                lost: 1,
                pending: 3,
                owed_unrecorded: 3,
                ..Judged::default()
            }
        );
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
        let mut read = Crossings::read(dir.path()).unwrap().unwrap();
        assert_eq!(read.dir.as_deref(), Some(dir.path()));
        let (owed, received) = records(&read);
        assert_eq!((&owed, &received), (&a.owed, &a.received));
        // The records stay in their files: the header alone was read.
        (read.owed, read.received, read.dir) = (owed, received, None);
        assert_eq!(read, a);
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
        let read = Crossings::read(dir.path()).unwrap().unwrap();
        let error = read.for_each_received(|_| {}).unwrap_err();
        assert!(
            error.contains(RECEIVED_FILE) && error.contains("record 0: repeat 9"),
            "{error}"
        );
        let mut deliver = Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        assert_eq!(
            judge(&[read], &mut deliver, &mut BTreeMap::new()).unwrap_err(),
            error
        );
        assert_eq!(Crossings::read(&dir.path().join("none")).unwrap(), None);
        // A folder an earlier build wrote: its records inside crossings.json, named as such.
        let legacy = r#"{"run_tag":"r1","first_client":0,"n_clients":2,"started_unix_us":0,
            "stopped_us":1,"synced":[],"owed":[],"received":[],"received_dropped":0}"#;
        std::fs::write(dir.path().join(CROSSINGS_FILE), legacy).unwrap();
        let error = Crossings::read(dir.path()).unwrap_err();
        assert!(error.contains("before 2026-12-05"), "{error}");
    }

    /// Every record of `crossings`, in memory or in its files.
    fn records(crossings: &Crossings) -> (Vec<Owed>, Vec<Received>) {
        let (mut owed, mut received) = (Vec::new(), Vec::new());
        crossings.for_each_owed(|o| owed.push(o)).unwrap();
        crossings.for_each_received(|r| received.push(r)).unwrap();
        (owed, received)
    }

    fn owed_record(number: u64) -> Owed {
        Owed {
            id: (1, number),
            recipient: 3,
            planned_us: 10 * number,
            acked_us: 10 * number + 1,
        }
    }

    /// A worker appends its records as the run goes: what each append brought is read back
    /// in order, a new run's files start empty and without the earlier run's crossings.json,
    /// and an append that fails leaves both files as they were, naming the file.
    #[test]
    fn records_are_appended_as_the_run_goes_and_a_failed_append_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let header = worker(0, 0);
        header.write(dir.path()).unwrap();
        let mut files = RecordFiles::create(dir.path()).unwrap();
        assert_eq!(
            Crossings::read(dir.path()).unwrap(),
            None,
            "stale header gone"
        );
        let first = received(2, 0, 0, 5, RemoteRepeat::Duplicate);
        files.append(&[owed_record(0)], &[first]).unwrap();
        files
            .append(&[owed_record(1), owed_record(2)], &[])
            .unwrap();
        header.finish(dir.path()).unwrap();
        let (owed, received) = records(&Crossings::read(dir.path()).unwrap().unwrap());
        assert_eq!(owed, vec![owed_record(0), owed_record(1), owed_record(2)]);
        assert_eq!(received, vec![first]);

        // The received file can no longer be written: the owed records of that append are
        // cut off again, so the caller can append both later without a record twice.
        let path = dir.path().join(RECEIVED_FILE);
        files.received.1 = std::fs::File::open(&path).unwrap();
        let error = files
            .append(&[owed_record(3)], &[first])
            .unwrap_err()
            .to_string();
        assert!(error.contains(RECEIVED_FILE), "{error}");
        let (owed, received) = records(&Crossings::read(dir.path()).unwrap().unwrap());
        assert_eq!(owed.len(), 3, "the failed append's owed record cut off");
        assert_eq!(received, vec![first]);
    }
}
