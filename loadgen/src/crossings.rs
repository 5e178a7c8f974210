//! Messages between the workers of one run (`--workers N`): each worker writes
//! `crossings.json` beside its results, and the merge judges what crossed.
//!
//! A worker's ledger knows its own clients' sends and its own clients' deliveries. A message
//! from worker A's client to worker B's is owed at B; B's ledger records its delivery by
//! identity (`MsgId`, recipient, time) without knowing the send. So each worker exports the
//! deliveries it owes elsewhere ([`Owed`], with planned and ack times) and those it received
//! from elsewhere ([`Received`]), plus which of its clients were synced when it stopped. The
//! merge matches them by identity: received is delivered (its latency from the sender's
//! planned time, both on the wall clock the workers share); not received by a recipient that
//! was synced when its worker stopped, after the message was acked, is lost; otherwise it is
//! pending. Repeats and reorders were counted by the receiving worker already.

use std::path::Path;

use hdrhistogram::Histogram;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::ledger::LoadLedger;
use crate::protocol::MsgId;

/// The file each worker writes beside results.json.
pub const CROSSINGS_FILE: &str = "crossings.json";

/// A delivery an acked message owes to a client of another worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

/// A first delivery of another worker's message here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Received {
    /// Sender and the sender's count.
    pub id: (u32, u64),
    /// The recipient (a client of this worker).
    pub recipient: u32,
    /// µs since this worker started.
    pub at_us: u64,
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
    /// Deliveries its acked messages owe to other workers' clients.
    pub owed: Vec<Owed>,
    /// First deliveries of other workers' messages to its clients.
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
        Crossings {
            run_tag: run_tag.to_string(),
            first_client: clients.start,
            n_clients: clients.len() as u32,
            started_unix_us,
            stopped_us: ledger.now_us(),
            synced: clients.clone().filter(|c| ledger.synced(*c)).collect(),
            owed,
            received: ledger
                .received
                .iter()
                .map(|r| Received {
                    id: (r.id.sender, r.id.number),
                    recipient: r.recipient,
                    at_us: r.at_us,
                })
                .collect(),
            received_dropped: ledger.received_dropped,
        }
    }

    /// Writes it to `dir`.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let json = serde_json::to_string(self).map_err(std::io::Error::other)?;
        std::fs::write(dir.join(CROSSINGS_FILE), json)
    }

    /// Reads `dir`'s, if it has one.
    pub fn read(dir: &Path) -> Result<Option<Crossings>, String> {
        let file = dir.join(CROSSINGS_FILE);
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(format!("{}: {error}", file.display())),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|error| format!("{}: {error}", file.display()))
    }
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
}

/// Matches every worker's owed deliveries against every worker's received ones; records the
/// latency of each match (µs) in `deliver`.
pub fn judge(workers: &[Crossings], deliver: &mut Histogram<u64>) -> Judged {
    let mut judged = Judged::default();
    let mut received: FxHashMap<(MsgId, u32), u64> = FxHashMap::default();
    for worker in workers {
        judged.unrecorded += worker.received_dropped;
        for r in &worker.received {
            let id = MsgId {
                sender: r.id.0,
                number: r.id.1,
            };
            received.insert((id, r.recipient), worker.started_unix_us + r.at_us);
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
                unrecorded: 0,
            }
        );
        assert_eq!(deliver.len(), 1);
        assert_eq!(deliver.max(), deliver.highest_equivalent(3_000));
    }
}
