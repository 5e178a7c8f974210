//! Who is online: user -> device -> the live connection's handle.
//!
//! Delivery never blocks: a message goes into a connection's bounded outbox with `try_send`;
//! a full outbox marks the connection a slow consumer and kicks it (its messages stay in its
//! inbox and come back by sync after it reconnects).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::channel::mpsc;
use futures::task::AtomicWaker;
use rustc_hash::FxBuildHasher;

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
///
/// A flag, the reason and the connection's waker in one allocation: the server's stop reaches
/// live connections through [`Registry::close`], not through a cancellation token of each
/// connection's own (a child token's tree node and its waiter were about 190 bytes of every
/// idle connection, and reading one takes the tree's lock).
#[derive(Debug, Clone, Default)]
pub(crate) struct SessionControl(Arc<Kill>);

#[derive(Debug, Default)]
struct Kill {
    /// Why the connection was killed, read by the connection to send a Kick frame; set
    /// before `killed`.
    reason: Mutex<Option<KickReason>>,
    killed: AtomicBool,
    /// The connection's task, woken by a kill.
    waker: AtomicWaker,
}

impl SessionControl {
    /// Asks the connection to close with `reason`; the first reason wins.
    pub fn kick(&self, reason: KickReason) {
        let mut slot = self.0.reason.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert(reason);
        drop(slot);
        self.kill();
    }

    /// Asks the connection to close without a word (a crash), unless a kick came first.
    pub fn kill(&self) {
        self.0.killed.store(true, Ordering::Release);
        self.0.waker.wake();
    }

    /// True once killed; until then the task of `cx` is woken by a kill.
    pub fn poll_killed(&self, cx: &mut std::task::Context<'_>) -> bool {
        if self.0.killed.load(Ordering::Acquire) {
            return true;
        }
        self.0.waker.register(cx.waker());
        self.0.killed.load(Ordering::Acquire)
    }

    pub fn kick_reason(&self) -> Option<KickReason> {
        *self.0.reason.lock().unwrap_or_else(|p| p.into_inner())
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
/// order that matters: only counted, and closed all (in connection order) at shutdown or a
/// crash.
type Users = HashMap<Box<str>, OnlineUser, FxBuildHasher>;

#[derive(Default)]
pub(crate) struct Registry {
    online: Mutex<Online>,
    pub counters: RegistryCounters,
}

#[derive(Default)]
struct Online {
    users: Users,
    /// Set by [`Registry::close`]: every connection registered from then on is killed at once
    /// (with this kick, if any), so none can slip in after the server stopped.
    closed: Option<Option<KickReason>>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Online> {
        self.online.lock().unwrap_or_else(|p| p.into_inner())
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
        let mut guard = self.lock();
        if let Some(closed) = guard.closed {
            drop(guard);
            close(&handle.control, closed);
            return Arc::new(SendBudget::new(send_rate));
        }
        let online = guard
            .users
            .entry(user.into())
            .or_insert_with(|| OnlineUser {
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
        drop(guard);
        if let Some(old) = old {
            self.counters.replaced_kicks.fetch_add(1, Ordering::Relaxed);
            old.kick(KickReason::Replaced);
        }
        budget
    }

    /// Removes (user, device) if it still belongs to `connection_id`.
    pub fn unregister(&self, user: &str, device: &str, connection_id: u64) {
        let mut guard = self.lock();
        let users = &mut guard.users;
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
        let mut guard = self.lock();
        let Some(online) = guard.users.get_mut(user) else {
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
            .users
            .values()
            .map(|online| online.devices.len())
            .sum()
    }

    /// Closes every connection, for shutdown (`Some(reason)`: each is kicked with it) or a
    /// crash (`None`: killed without a word), and every connection that registers from now on.
    ///
    /// In accept order (by connection id), not the map's: the order their tasks wake in is
    /// part of a simulated crash's trace.
    pub fn close(&self, kick: Option<KickReason>) {
        let mut guard = self.lock();
        guard.closed.get_or_insert(kick);
        let mut live: Vec<&SessionHandle> = guard
            .users
            .values()
            .flat_map(|online| online.devices.iter().map(|(_, handle)| handle))
            .collect();
        live.sort_unstable_by_key(|handle| handle.connection_id);
        for handle in live {
            close(&handle.control, kick);
        }
    }
}

/// Kicks a connection with `kick`, or kills it without a word.
fn close(control: &SessionControl, kick: Option<KickReason>) {
    match kick {
        Some(reason) => control.kick(reason),
        None => control.kill(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(connection_id: u64) -> (SessionHandle, mpsc::Receiver<Outbound>) {
        let (outbox, outbox_rx) = mpsc::channel(4);
        let handle = SessionHandle {
            connection_id,
            outbox,
            control: SessionControl::default(),
        };
        (handle, outbox_rx)
    }

    fn killed(control: &SessionControl) -> bool {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        control.poll_killed(&mut cx)
    }

    /// A login that registers after the server closed the registry (a shutdown racing a
    /// login on another thread) is closed at once, with the same word, and is not kept: the
    /// server would otherwise wait on it forever.
    #[test]
    fn a_connection_registering_after_close_is_closed_at_once() {
        let registry = Registry::default();
        let (before, _rx_before) = handle(1);
        registry.register("alice", "phone", before.clone(), 0);
        registry.close(Some(KickReason::ServerShutdown));
        assert!(killed(&before.control));
        assert_eq!(
            before.control.kick_reason(),
            Some(KickReason::ServerShutdown)
        );

        let (after, _rx_after) = handle(2);
        registry.register("bob", "phone", after.clone(), 0);
        assert!(killed(&after.control), "registered after the close");
        assert_eq!(
            after.control.kick_reason(),
            Some(KickReason::ServerShutdown)
        );
        assert_eq!(registry.n_sessions(), 1, "only alice, registered before");
    }

    /// A crash kills without a word; a kick that came first keeps its reason.
    #[test]
    fn a_crash_kills_without_a_word_and_a_kill_wakes_the_connection() {
        let registry = Registry::default();
        let (quiet, _rx_quiet) = handle(1);
        let (kicked, _rx_kicked) = handle(2);
        registry.register("alice", "phone", quiet.clone(), 0);
        registry.register("bob", "phone", kicked.clone(), 0);
        kicked.kick(KickReason::SlowConsumer);

        let woken = Arc::new(AtomicBool::new(false));
        struct Flag(Arc<AtomicBool>);
        impl std::task::Wake for Flag {
            fn wake(self: Arc<Self>) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let waker = std::task::Waker::from(Arc::new(Flag(woken.clone())));
        assert!(
            !quiet
                .control
                .poll_killed(&mut std::task::Context::from_waker(&waker))
        );

        registry.close(None);
        assert!(
            woken.load(Ordering::SeqCst),
            "the kill woke the connection's task"
        );
        assert!(killed(&quiet.control));
        assert_eq!(quiet.control.kick_reason(), None);
        assert_eq!(kicked.control.kick_reason(), Some(KickReason::SlowConsumer));
    }
}
