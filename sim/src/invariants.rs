//! The invariant checker (SPEC section 4), fed by the server's store and every device's
//! ledger after the network healed and a quiet period passed.
//!
//! Each check returns the first violation it finds, described with the message, device and
//! seq involved, plus how many more there are. A checker that cannot fail is a defect: the
//! tests plant a bug for every invariant and require it to be caught.
//!
//! Across the crash of a store that is volatile by design (`server.store = "memory"`), the
//! invariants mean (ARCHITECTURE.md, core/PROTOCOL.md):
//! - `no_acked_loss`: a message acked by a generation that later crashed, and missing from a
//!   recipient's app log, is volatile loss: counted in [`VolatileLoss`] and reported beside the
//!   verdicts, never silently. Everything acked by the surviving generation must arrive.
//! - `no_duplicates`: no exemption. A message shown once is never shown again, whatever
//!   generation returns it (the client dedupes by identity what an earlier generation showed,
//!   `ClientEvent::Repeat`; within one generation a send stored twice breaks `idempotent_send`
//!   and is shown twice).
//! - `seq_monotonic`: per generation; a new one starts again at seq 1 (`inbox_resets`).
//! - `sender_order`, `idempotent_send`, `convergence`: no exemption.
//!
//! A durable store gets no exemption at all: its crash loses nothing acked.

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroU64;

use imlab_core::client::SharedClientState;
use serde::Serialize;

use crate::ledger::{Conversation, Ledger};
use crate::world::{Layout, SimStore, user_id};

/// Names of the invariants, in report order.
pub const INVARIANTS: &[&str] = &[
    "no_acked_loss",
    "no_duplicates",
    "seq_monotonic",
    "sender_order",
    "idempotent_send",
    "convergence",
];

/// One invariant's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// The invariant.
    pub name: &'static str,
    /// `None` when it holds; else the first violation and a count of the rest.
    pub violation: Option<String>,
}

impl Verdict {
    /// True when the invariant holds.
    pub fn ok(&self) -> bool {
        self.violation.is_none()
    }
}

/// Collects violations of one invariant: the first in full, the rest counted.
struct Found {
    first: Option<String>,
    n_more: u64,
}

impl Found {
    fn new() -> Found {
        Found {
            first: None,
            n_more: 0,
        }
    }

    fn add(&mut self, describe: impl FnOnce() -> String) {
        if self.first.is_none() {
            self.first = Some(describe());
        } else {
            self.n_more += 1;
        }
    }

    fn verdict(self, name: &'static str) -> Verdict {
        Verdict {
            name,
            violation: self.first.map(|first| {
                if self.n_more == 0 {
                    first
                } else {
                    format!("{first} (and {} more)", self.n_more)
                }
            }),
        }
    }
}

/// What a volatile store's crashes took: deliveries of messages acked by a generation that
/// crashed before they reached the recipient's app log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VolatileLoss {
    /// (message, recipient device) pairs lost.
    pub deliveries: u64,
    /// Messages with at least one lost delivery.
    pub messages: u64,
}

/// Checks every invariant. `volatile_epoch` is the surviving store generation when the store
/// is volatile by design (None for a durable store): acks of older generations may be lost
/// with them, and are counted in the returned [`VolatileLoss`] instead.
pub fn check(
    layout: &Layout,
    ledger: &Ledger,
    store: &SimStore,
    device_states: &[SharedClientState],
    volatile_epoch: Option<u64>,
) -> (Vec<Verdict>, VolatileLoss) {
    let (acked_loss, volatile_loss) = no_acked_loss(layout, ledger, volatile_epoch);
    let inboxes = Inboxes::read(layout, ledger, store);
    let verdicts = vec![
        acked_loss,
        no_duplicates(ledger),
        seq_monotonic(ledger, &inboxes),
        sender_order(ledger),
        idempotent_send(&inboxes),
        convergence(layout, ledger, &inboxes, device_states),
    ];
    (verdicts, volatile_loss)
}

/// What the checks need of the server's store, from one read of every user's inbox (a
/// `scale-10k` day holds about two million entries; each read decodes its messages).
struct Inboxes {
    /// Each user's inbox length (its newest seq), by user id.
    lengths: BTreeMap<String, u64>,
    /// Per inbox, the first position whose seq is not the position: (user, seq, position).
    holes: Vec<(String, u64, usize)>,
    /// Messages (sender, client message id) stored under more than one msg_id, with them.
    stored_twice: BTreeMap<(String, String), BTreeSet<u64>>,
}

impl Inboxes {
    fn read(layout: &Layout, ledger: &Ledger, store: &SimStore) -> Inboxes {
        let user_ids: Vec<String> = (0..layout.users.len() as u32).map(user_id).collect();
        // The msg_id each send was first found stored under, by send index: a message the
        // ledger knows costs 8 bytes here, not a copy of its sender and id. Messages of no
        // known send are kept by their identity with every msg_id, as all were once.
        let mut first_stored: Vec<Option<NonZeroU64>> = vec![None; ledger.sends.len()];
        let mut unknown: BTreeMap<(String, String), BTreeSet<u64>> = BTreeMap::new();
        let (mut lengths, mut holes) = (BTreeMap::new(), Vec::new());
        let mut stored_twice: BTreeMap<(String, String), BTreeSet<u64>> = BTreeMap::new();
        store.read_inboxes(
            |user, entries| {
                if let Some((position, (seq, _))) = entries
                    .iter()
                    .enumerate()
                    .find(|(position, (seq, _))| *seq != *position as u64 + 1)
                {
                    holes.push((user.clone(), *seq, position + 1));
                }
                lengths.insert(user, entries.len() as u64);
            },
            // A message named by several inboxes may come once or once for each: what is
            // kept is, per send, the set of msg_ids it was stored under.
            |message| {
                let known = ledger
                    .send_index(&message.client_msg_id)
                    .filter(|send| {
                        let device = ledger.sends[*send as usize].device;
                        user_ids[layout.devices[device as usize].user as usize] == message.from_user
                    })
                    .zip(NonZeroU64::new(message.msg_id));
                let Some((send, msg_id)) = known else {
                    unknown
                        .entry((message.from_user.clone(), message.client_msg_id.clone()))
                        .or_default()
                        .insert(message.msg_id);
                    return;
                };
                match &mut first_stored[send as usize] {
                    slot @ None => *slot = Some(msg_id),
                    Some(first) if *first != msg_id => {
                        let first = first.get();
                        stored_twice
                            .entry((message.from_user.clone(), message.client_msg_id.clone()))
                            .or_default()
                            .extend([first, msg_id.get()]);
                    }
                    Some(_) => {}
                }
            },
        );
        let mut inboxes = Inboxes {
            lengths,
            holes,
            stored_twice,
        };
        inboxes
            .stored_twice
            .extend(unknown.into_iter().filter(|(_, msg_ids)| msg_ids.len() > 1));
        inboxes
    }
}

/// Calls `each` with every device that must see a message sent by `sender_device` to `to`:
/// every device of every user in the conversation, the sender's own devices included, in
/// order of user and then of the user's devices. `group_users` are each chat group's users,
/// sorted and without repeats.
fn for_each_recipient(
    layout: &Layout,
    group_users: &[Vec<u32>],
    sender_device: u32,
    to: Conversation,
    mut each: impl FnMut(u32),
) {
    let sender_user = layout.devices[sender_device as usize].user;
    let peers;
    let users: &[u32] = match to {
        Conversation::Peer(peer) if peer == sender_user => std::slice::from_ref(&sender_user),
        Conversation::Peer(peer) => {
            peers = [peer.min(sender_user), peer.max(sender_user)];
            &peers
        }
        Conversation::Group(group) => &group_users[group as usize],
    };
    for user in users {
        for device in &layout.users[*user as usize].devices {
            each(*device);
        }
    }
}

fn no_acked_loss(
    layout: &Layout,
    ledger: &Ledger,
    volatile_epoch: Option<u64>,
) -> (Verdict, VolatileLoss) {
    // Each device's logged sends, sorted: 4 bytes an entry (a set of them took about 13).
    let logged: Vec<Box<[u32]>> = ledger
        .devices
        .iter()
        .map(|device| {
            let mut sends: Vec<u32> = device.log.iter().filter_map(|entry| entry.send()).collect();
            sends.sort_unstable();
            sends.dedup();
            sends.into_boxed_slice()
        })
        .collect();
    let group_users: Vec<Vec<u32>> = layout
        .chat_groups
        .iter()
        .map(|members| {
            let mut users = members.clone();
            users.sort_unstable();
            users.dedup();
            users
        })
        .collect();
    let mut found = Found::new();
    let mut volatile = VolatileLoss::default();
    for (index, send) in ledger.sends.iter().enumerate() {
        let Some(ack) = send.acked() else {
            continue;
        };
        let crashed_with_its_store = volatile_epoch.is_some_and(|epoch| ack.epoch != epoch);
        let mut lost_here = 0;
        for_each_recipient(layout, &group_users, send.device, send.to(), |device| {
            if logged[device as usize]
                .binary_search(&(index as u32))
                .is_ok()
            {
                return;
            }
            if crashed_with_its_store {
                lost_here += 1;
                return;
            }
            found.add(|| {
                format!(
                    "message {} acked at {} ms (store generation {}) is missing from device \
                     d{device}'s app log",
                    ledger.client_msg_id(index as u32),
                    ack.at_ms,
                    ack.epoch
                )
            });
        });
        volatile.deliveries += lost_here;
        volatile.messages += u64::from(lost_here > 0);
    }
    (found.verdict("no_acked_loss"), volatile)
}

fn no_duplicates(ledger: &Ledger) -> Verdict {
    let mut found = Found::new();
    for (device, record) in ledger.devices.iter().enumerate() {
        // A message is its send (msg_ids restart with a new store generation); a message of
        // no known send is its msg_id.
        let mut seen = BTreeSet::new();
        for entry in record.log.iter().filter(|entry| !entry.repeat()) {
            let key = entry
                .send()
                .map_or((1, entry.msg_id), |send| (0, u64::from(send)));
            if !seen.insert(key) {
                found.add(|| {
                    let what = entry.send().map_or_else(
                        || format!("msg_id {}", entry.msg_id),
                        |send| format!("message {}", ledger.client_msg_id(send)),
                    );
                    format!(
                        "device d{device} logged {what} twice (again at seq {}, {} ms)",
                        entry.seq,
                        entry.at_ms()
                    )
                });
            }
        }
    }
    found.verdict("no_duplicates")
}

fn seq_monotonic(ledger: &Ledger, inboxes: &Inboxes) -> Verdict {
    let mut found = Found::new();
    for (device, record) in ledger.devices.iter().enumerate() {
        let mut previous = 0u64;
        for (position, entry) in record.log.iter().enumerate() {
            if record.inbox_resets.contains(&position) {
                // A new store generation: seqs start again.
                previous = 0;
            }
            if entry.seq != previous + 1 {
                found.add(|| {
                    format!(
                        "device d{device} processed seq {} after seq {previous} at {} ms",
                        entry.seq,
                        entry.at_ms()
                    )
                });
            }
            previous = entry.seq;
        }
    }
    for (user, seq, position) in &inboxes.holes {
        found.add(|| format!("inbox of {user} has seq {seq} at position {position}"));
    }
    found.verdict("seq_monotonic")
}

fn sender_order(ledger: &Ledger) -> Verdict {
    let mut found = Found::new();
    for (device, record) in ledger.devices.iter().enumerate() {
        let mut last: BTreeMap<(u32, Conversation), (u64, u32)> = BTreeMap::new();
        for entry in &record.log {
            let Some(index) = entry.send() else { continue };
            let send = &ledger.sends[index as usize];
            let number = ledger.message_number(index);
            let key = (send.device, send.to());
            if let Some((previous, previous_index)) = last.get(&key)
                && number < *previous
            {
                found.add(|| {
                    format!(
                        "device d{device} saw {} after {} (sent later by d{})",
                        ledger.client_msg_id(index),
                        ledger.client_msg_id(*previous_index),
                        send.device
                    )
                });
            }
            last.insert(key, (number, index));
        }
    }
    found.verdict("sender_order")
}

fn idempotent_send(inboxes: &Inboxes) -> Verdict {
    let mut found = Found::new();
    for ((user, client_msg_id), msg_ids) in &inboxes.stored_twice {
        found.add(|| {
            format!(
                "send {client_msg_id} of {user} was stored {} times: msg_ids {msg_ids:?}",
                msg_ids.len()
            )
        });
    }
    found.verdict("idempotent_send")
}

fn convergence(
    layout: &Layout,
    ledger: &Ledger,
    inboxes: &Inboxes,
    device_states: &[SharedClientState],
) -> Verdict {
    let mut found = Found::new();
    for (device, spec) in layout.devices.iter().enumerate() {
        if !ledger.devices[device].connected {
            continue;
        }
        let max_seq = inboxes
            .lengths
            .get(&user_id(spec.user))
            .copied()
            .unwrap_or(0);
        let last_seq = imlab_core::client::lock(&device_states[device]).last_seq;
        if last_seq != max_seq {
            found.add(|| format!("device d{device} is at seq {last_seq}, its inbox at {max_seq}"));
        }
    }
    found.verdict("convergence")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use imlab_core::proto::Target;
    use imlab_core::store::{AppendRequest, MemoryStore, MemoryStoreLimits, Store};

    use super::*;
    use crate::world::{DeviceSpec, UserSpec};

    /// Users u0 and u1, with one device each (d0, d1).
    pub(super) fn two_users() -> Layout {
        Layout {
            devices: (0..2)
                .map(|user| DeviceSpec {
                    user,
                    group: 0,
                    nat_timeouts: Vec::new(),
                })
                .collect(),
            users: (0..2)
                .map(|device| UserSpec {
                    devices: vec![device],
                    groups: Vec::new(),
                })
                .collect(),
            chat_groups: Vec::new(),
        }
    }

    pub(super) async fn send(store: &dyn Store, client_msg_id: &str) {
        store
            .append(AppendRequest {
                from_user: "u0".into(),
                from_device: "d0".into(),
                client_msg_id: client_msg_id.into(),
                to: Target::Peer("u1".into()),
                body: Bytes::from_static(b"hi"),
                server_time_ms: 0,
            })
            .await
            .expect("stored");
    }

    #[allow(
        clippy::needless_update,
        reason = "the limits have one more field, the planted-bug switch, with planted-bugs on"
    )]
    fn store_with_window(dedupe_window_len: usize) -> MemoryStore {
        MemoryStore::with_limits(MemoryStoreLimits {
            dedupe_window_len,
            ..MemoryStoreLimits::default()
        })
    }

    /// Sends d0-1, d0-2, d0-1 again, then x-1 (a message the ledger never saw), d0-3 and x-1
    /// again, and checks what the one read of the inboxes makes of them.
    async fn checked(dedupe_window_len: usize) -> (Inboxes, Verdict) {
        let layout = two_users();
        let mut ledger = Ledger::new(2);
        for id in ["d0-1", "d0-2", "d0-3"] {
            ledger.queued(0, id.into(), Conversation::Peer(1), 0);
        }
        let store = store_with_window(dedupe_window_len);
        for id in ["d0-1", "d0-2", "d0-1", "x-1", "d0-3", "x-1"] {
            send(&store, id).await;
        }
        let store = SimStore::Memory(Arc::new(store));
        let inboxes = Inboxes::read(&layout, &ledger, &store);
        let verdict = idempotent_send(&inboxes);
        (inboxes, verdict)
    }

    #[tokio::test]
    async fn one_read_of_the_inboxes_finds_sends_stored_twice_known_or_not() {
        // A window of one send: each repeat comes after another send, so it is stored again.
        let (inboxes, verdict) = checked(1).await;
        assert_eq!(
            verdict.violation.as_deref(),
            Some("send d0-1 of u0 was stored 2 times: msg_ids {1, 3} (and 1 more)")
        );
        assert_eq!(
            inboxes.stored_twice.get(&("u0".into(), "x-1".into())),
            Some(&BTreeSet::from([4, 6]))
        );
        // Both users' inboxes hold all six, in seq order.
        assert_eq!(
            inboxes.lengths,
            BTreeMap::from([("u0".into(), 6), ("u1".into(), 6)])
        );
        assert!(inboxes.holes.is_empty());

        // The store's window covers the repeats: stored once each, nothing found.
        let (inboxes, verdict) = checked(16).await;
        assert!(verdict.ok(), "{verdict:?}");
        assert_eq!(inboxes.lengths.get("u1"), Some(&4));
    }
}

/// The checker's read of the durable store (the simulated disk), which reads each named
/// message once after the inboxes.
#[cfg(test)]
mod durable_tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;

    use imlab_core::store::{
        DurableStore, DurableStoreLimits, Engine, MemEngine, Partition, WriteBatch,
        durable_keys as keys,
    };

    use super::tests::{send, two_users};
    use super::*;
    use crate::disk::SimDisk;

    /// d0-1, d0-2, d0-1 again, x-1, d0-3 on a durable store over `engine`, which stores each
    /// once (its dedupe records outlive any window): msg_ids 1 to 4, each in u0's and u1's
    /// inboxes.
    async fn durable(engine: &Arc<MemEngine>) -> SimStore {
        let disk = SimDisk::new(
            engine.clone(),
            Vec::new(),
            Vec::new(),
            Arc::new(AtomicU64::new(0)),
        );
        let store = DurableStore::open(Arc::new(disk), DurableStoreLimits::default(), 1)
            .await
            .expect("opened");
        for id in ["d0-1", "d0-2", "d0-1", "x-1", "d0-3"] {
            send(&store, id).await;
        }
        SimStore::Durable(Arc::new(store))
    }

    /// Each user's (seq, msg_id) entries, and the (msg_id, client message id) of each
    /// message as handed over.
    type Read = (BTreeMap<String, Vec<(u64, u64)>>, Vec<(u64, String)>);

    fn read(store: &SimStore) -> Read {
        let (mut inboxes, mut messages) = (BTreeMap::new(), Vec::new());
        store.read_inboxes(
            |user, entries| {
                inboxes.insert(user, entries.to_vec());
            },
            |message| messages.push((message.msg_id, message.client_msg_id.clone())),
        );
        (inboxes, messages)
    }

    async fn delete(engine: &MemEngine, partition: Partition, key: Vec<u8>) {
        let mut batch = WriteBatch::new();
        batch.delete(partition, key);
        engine.commit(batch).await.expect("committed");
    }

    #[tokio::test]
    async fn each_named_message_is_read_once_in_msg_id_order() {
        let engine = Arc::new(MemEngine::new());
        let store = durable(&engine).await;
        let (inboxes, messages) = read(&store);
        let entries: Vec<(u64, u64)> = (1..=4).map(|seq| (seq, seq)).collect();
        assert_eq!(
            inboxes,
            BTreeMap::from([("u0".into(), entries.clone()), ("u1".into(), entries)])
        );
        // Named twice each (the sender's inbox and the peer's), handed over once.
        let ids = ["d0-1", "d0-2", "x-1", "d0-3"].map(String::from);
        assert_eq!(messages, (1..=4).zip(ids).collect::<Vec<_>>());
        // And the checks read them as the memory store's entries would be.
        let mut ledger = Ledger::new(2);
        for id in ["d0-1", "d0-2", "d0-3"] {
            ledger.queued(0, id.into(), Conversation::Peer(1), 0);
        }
        let checked = Inboxes::read(&two_users(), &ledger, &store);
        assert!(idempotent_send(&checked).ok());
        assert_eq!(
            checked.lengths,
            BTreeMap::from([("u0".into(), 4), ("u1".into(), 4)])
        );
        assert!(checked.holes.is_empty());
    }

    #[tokio::test]
    async fn a_hole_in_an_inbox_is_found_not_a_panic() {
        let engine = Arc::new(MemEngine::new());
        let store = durable(&engine).await;
        delete(&engine, Partition::Inbox, keys::inbox_key("u1", 2)).await;
        let checked = Inboxes::read(&two_users(), &Ledger::new(2), &store);
        assert_eq!(checked.holes, vec![("u1".to_string(), 3, 2)]);
        assert_eq!(checked.lengths.get("u1"), Some(&3));
    }

    #[tokio::test]
    #[should_panic(expected = "message 3 is named by an inbox but missing from the simulated disk")]
    async fn a_named_message_missing_from_the_disk_is_named() {
        let engine = Arc::new(MemEngine::new());
        let store = durable(&engine).await;
        delete(&engine, Partition::Messages, keys::message_key(3)).await;
        read(&store);
    }
}
