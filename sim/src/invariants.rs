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
//!   generation returns it (the client dedupes by identity, `ClientEvent::Repeat`).
//! - `seq_monotonic`: per generation; a new one starts again at seq 1 (`inbox_resets`).
//! - `sender_order`, `idempotent_send`, `convergence`: no exemption.
//!
//! A durable store gets no exemption at all: its crash loses nothing acked.

use std::collections::{BTreeMap, BTreeSet};

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
    let verdicts = vec![
        acked_loss,
        no_duplicates(ledger),
        seq_monotonic(ledger, store),
        sender_order(ledger),
        idempotent_send(store),
        convergence(layout, ledger, store, device_states),
    ];
    (verdicts, volatile_loss)
}

/// The devices that must see a message sent by `sender` to `to`: every device of every
/// user in the conversation, the sender's own devices included.
fn recipients(layout: &Layout, sender_device: u32, to: Conversation) -> Vec<u32> {
    let sender_user = layout.devices[sender_device as usize].user;
    let users: BTreeSet<u32> = match to {
        Conversation::Peer(peer) => [peer, sender_user].into(),
        Conversation::Group(group) => layout.chat_groups[group as usize].iter().copied().collect(),
    };
    users
        .into_iter()
        .flat_map(|user| layout.users[user as usize].devices.iter().copied())
        .collect()
}

fn no_acked_loss(
    layout: &Layout,
    ledger: &Ledger,
    volatile_epoch: Option<u64>,
) -> (Verdict, VolatileLoss) {
    let logged: Vec<BTreeSet<u32>> = ledger
        .devices
        .iter()
        .map(|device| device.log.iter().filter_map(|entry| entry.send()).collect())
        .collect();
    let mut found = Found::new();
    let mut volatile = VolatileLoss::default();
    for (index, send) in ledger.sends.iter().enumerate() {
        let Some(ack) = send.acked else {
            continue;
        };
        let crashed_with_its_store = volatile_epoch.is_some_and(|epoch| ack.epoch != epoch);
        let mut lost_here = 0;
        for device in recipients(layout, send.device, send.to) {
            if logged[device as usize].contains(&(index as u32)) {
                continue;
            }
            if crashed_with_its_store {
                lost_here += 1;
                continue;
            }
            found.add(|| {
                format!(
                    "message {} acked at {} ms (store generation {}) is missing from device \
                     d{device}'s app log",
                    send.client_msg_id, ack.at_ms, ack.epoch
                )
            });
        }
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
        for entry in record.log.iter().filter(|entry| !entry.repeat) {
            let key = entry
                .send()
                .map_or((1, entry.msg_id), |send| (0, u64::from(send)));
            if !seen.insert(key) {
                found.add(|| {
                    let what = entry.send().map_or_else(
                        || format!("msg_id {}", entry.msg_id),
                        |send| format!("message {}", ledger.sends[send as usize].client_msg_id),
                    );
                    format!(
                        "device d{device} logged {what} twice (again at seq {}, {} ms)",
                        entry.seq, entry.at_ms
                    )
                });
            }
        }
    }
    found.verdict("no_duplicates")
}

fn seq_monotonic(ledger: &Ledger, store: &SimStore) -> Verdict {
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
                        entry.seq, entry.at_ms
                    )
                });
            }
            previous = entry.seq;
        }
    }
    for user in store.users() {
        for (expected, (seq, _)) in store.inbox(&user).iter().enumerate() {
            if *seq != expected as u64 + 1 {
                found.add(|| format!("inbox of {user} has seq {seq} at position {}", expected + 1));
                break;
            }
        }
    }
    found.verdict("seq_monotonic")
}

/// The client message number of `d<device>-<n>`.
fn message_number(client_msg_id: &str) -> u64 {
    client_msg_id
        .rsplit_once('-')
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(0)
}

fn sender_order(ledger: &Ledger) -> Verdict {
    let mut found = Found::new();
    for (device, record) in ledger.devices.iter().enumerate() {
        let mut last: BTreeMap<(u32, Conversation), (u64, &str)> = BTreeMap::new();
        for entry in &record.log {
            let Some(index) = entry.send() else { continue };
            let send = &ledger.sends[index as usize];
            let number = message_number(&send.client_msg_id);
            let key = (send.device, send.to);
            if let Some((previous, previous_id)) = last.get(&key)
                && number < *previous
            {
                found.add(|| {
                    format!(
                        "device d{device} saw {} after {previous_id} (sent later by d{})",
                        send.client_msg_id, send.device
                    )
                });
            }
            last.insert(key, (number, &send.client_msg_id));
        }
    }
    found.verdict("sender_order")
}

fn idempotent_send(store: &SimStore) -> Verdict {
    let mut found = Found::new();
    let mut stored: BTreeMap<(String, String), BTreeSet<u64>> = BTreeMap::new();
    for user in store.users() {
        for (_, message) in store.inbox(&user) {
            stored
                .entry((message.from_user.clone(), message.client_msg_id.clone()))
                .or_default()
                .insert(message.msg_id);
        }
    }
    for ((user, client_msg_id), msg_ids) in &stored {
        if msg_ids.len() > 1 {
            found.add(|| {
                format!(
                    "send {client_msg_id} of {user} was stored {} times: msg_ids {msg_ids:?}",
                    msg_ids.len()
                )
            });
        }
    }
    found.verdict("idempotent_send")
}

fn convergence(
    layout: &Layout,
    ledger: &Ledger,
    store: &SimStore,
    device_states: &[SharedClientState],
) -> Verdict {
    let mut found = Found::new();
    for (device, spec) in layout.devices.iter().enumerate() {
        if !ledger.devices[device].connected {
            continue;
        }
        let max_seq = store.inbox(&user_id(spec.user)).len() as u64;
        let last_seq = imlab_core::client::lock(&device_states[device]).last_seq;
        if last_seq != max_seq {
            found.add(|| format!("device d{device} is at seq {last_seq}, its inbox at {max_seq}"));
        }
    }
    found.verdict("convergence")
}
