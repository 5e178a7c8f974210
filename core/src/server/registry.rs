//! Who is online: user -> device -> the live connection's handle.
//!
//! Delivery never blocks: a message goes into a connection's bounded outbox with `try_send`;
//! a full outbox marks the connection a slow consumer and kicks it (its messages stay in its
//! inbox and come back by sync after it reconnects).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::channel::mpsc;
use rustc_hash::FxBuildHasher;
use tokio_util::sync::CancellationToken;

use crate::proto::KickReason;

/// What other connections queue in a connection's outbox: a message for this device, written
/// as NotifyData and tracked for the device's ack: its seq in the device's inbox and the
/// message's encoding without the seq ([`crate::codec::encode_message_without_seq`]), made
/// once for all its deliveries. (The connection's own replies go straight to its buffer.)
#[derive(Debug)]
pub(crate) struct Outbound {
    pub seq: u64,
    pub message: Bytes,
}

/// A live, logged-in connection as the rest of the server sees it.
#[derive(Debug, Clone)]
pub(crate) struct SessionHandle {
    pub connection_id: u64,
    /// The connection's outbox. futures' bounded channel rather than tokio's: it allocates
    /// per queued item instead of a 32-slot block up front, about 1 KB less per idle
    /// connection (`bench/conn-memory.sh`). Its bound is `outbox_len_max` plus one slot for
    /// its one sender, the registry's.
    pub outbox: mpsc::Sender<Outbound>,
    pub control: SessionControl,
}

impl SessionHandle {
    pub fn kick(&self, reason: KickReason) {
        self.control.kick(reason);
    }
}

/// Kills a connection. Holds no outbox sender, so the connection's own tasks can keep it
/// without keeping the outbox open.
#[derive(Debug, Clone, Default)]
pub(crate) struct SessionControl {
    pub kill: CancellationToken,
    /// Why the connection was killed, read by the connection to send a Kick frame.
    pub kick_reason: Arc<Mutex<Option<KickReason>>>,
}

impl SessionControl {
    /// Asks the connection to close with `reason`; the first reason wins.
    pub fn kick(&self, reason: KickReason) {
        let mut slot = self.kick_reason.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert(reason);
        drop(slot);
        self.kill.cancel();
    }

    pub fn kick_reason(&self) -> Option<KickReason> {
        *self.kick_reason.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Counters of the registry, for stats and tests.
#[derive(Debug, Default)]
pub(crate) struct RegistryCounters {
    pub slow_consumer_kicks: AtomicU64,
    pub replaced_kicks: AtomicU64,
}

/// A user's send budget: a token bucket shared by all of the user's live connections,
/// refilled at `rate` sends per second up to a burst of one second's worth. It lives while the
/// user has a connection.
#[derive(Debug)]
pub(crate) struct SendBudget {
    rate: u32,
    state: Mutex<(f64, tokio::time::Instant)>,
}

impl SendBudget {
    fn new(rate: u32) -> SendBudget {
        SendBudget {
            rate,
            state: Mutex::new((f64::from(rate), tokio::time::Instant::now())),
        }
    }

    /// Takes one send from the budget; false when it is spent (0 = no limit).
    pub fn try_take(&self) -> bool {
        if self.rate == 0 {
            return true;
        }
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = tokio::time::Instant::now();
        let refill = now.duration_since(state.1).as_secs_f64() * f64::from(self.rate);
        state.0 = (state.0 + refill).min(f64::from(self.rate));
        state.1 = now;
        if state.0 >= 1.0 {
            state.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A user with a live connection: their devices' connections and their send budget.
///
/// The devices are a sorted list, not a map: a user has a few devices, and a map's first node
/// (room for 11 entries) cost about 800 bytes per idle connection (`bench/conn-memory.sh`).
/// Lookups are binary searches either way.
#[derive(Debug)]
struct OnlineUser {
    /// Sorted by device.
    devices: Vec<(Box<str>, SessionHandle)>,
    budget: Arc<SendBudget>,
}

/// Users with a live connection, by name. Hashed (Fx, fixed and unkeyed): every delivery
/// looks a user up, and a `BTreeMap<Box<str>, _>` paid a string comparison per level there
/// (`perf` of `imlab serve` at 8,000 msg/s: 2.7% of its samples). Never iterated in an
/// order that matters: only counted, and kicked all at shutdown.
type Users = HashMap<Box<str>, OnlineUser, FxBuildHasher>;

#[derive(Default)]
pub(crate) struct Registry {
    users: Mutex<Users>,
    pub counters: RegistryCounters,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Users> {
        self.users.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a connection for (user, device); an older connection of the same device is
    /// kicked as replaced. Returns the user's send budget (`send_rate` per second, 0 = no
    /// limit), shared with the user's other connections.
    pub fn register(
        &self,
        user: &str,
        device: &str,
        handle: SessionHandle,
        send_rate: u32,
    ) -> Arc<SendBudget> {
        let mut users = self.lock();
        let online = users.entry(user.into()).or_insert_with(|| OnlineUser {
            devices: Vec::with_capacity(1),
            budget: Arc::new(SendBudget::new(send_rate)),
        });
        let old = match online.devices.binary_search_by(|(d, _)| (**d).cmp(device)) {
            Ok(i) => Some(std::mem::replace(&mut online.devices[i].1, handle)),
            Err(i) => {
                online.devices.insert(i, (device.into(), handle));
                None
            }
        };
        let budget = online.budget.clone();
        drop(users);
        if let Some(old) = old {
            self.counters.replaced_kicks.fetch_add(1, Ordering::Relaxed);
            old.kick(KickReason::Replaced);
        }
        budget
    }

    /// Removes (user, device) if it still belongs to `connection_id`.
    pub fn unregister(&self, user: &str, device: &str, connection_id: u64) {
        let mut users = self.lock();
        if let Some(online) = users.get_mut(user) {
            if let Ok(i) = online.devices.binary_search_by(|(d, _)| (**d).cmp(device))
                && online.devices[i].1.connection_id == connection_id
            {
                online.devices.remove(i);
            }
            if online.devices.is_empty() {
                users.remove(user);
            }
        }
    }

    /// Offers a message at `seq` to every live device of `user`; `message` is its encoding
    /// without the seq. Returns false when the user has no live device (the caller then
    /// pushes).
    pub fn deliver(&self, user: &str, seq: u64, message: &Bytes) -> bool {
        let mut users = self.lock();
        let Some(online) = users.get_mut(user) else {
            return false;
        };
        for (_, handle) in &mut online.devices {
            let outbound = Outbound {
                seq,
                message: message.clone(),
            };
            match handle.outbox.try_send(outbound) {
                Ok(()) => {}
                Err(error) if error.is_full() => {
                    self.counters
                        .slow_consumer_kicks
                        .fetch_add(1, Ordering::Relaxed);
                    handle.kick(KickReason::SlowConsumer);
                }
                // The connection is closing; the message waits in the inbox.
                Err(_) => {}
            }
        }
        !online.devices.is_empty()
    }

    /// Live (user, device) pairs.
    pub fn n_sessions(&self) -> usize {
        self.lock()
            .values()
            .map(|online| online.devices.len())
            .sum()
    }

    /// Kicks every connection, for shutdown.
    pub fn kick_all(&self, reason: KickReason) {
        for online in self.lock().values() {
            for (_, handle) in &online.devices {
                handle.kick(reason);
            }
        }
    }
}
