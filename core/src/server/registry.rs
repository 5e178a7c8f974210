//! Who is online: user -> device -> the live connection's handle.
//!
//! Delivery never blocks: a message goes into a connection's bounded outbox or not at once;
//! a full outbox marks the connection a slow consumer and kicks it (its messages stay in its
//! inbox and come back by sync after it reconnects).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
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
    pub control: SessionControl,
}

impl SessionHandle {
    pub fn kick(&self, reason: KickReason) {
        self.control.kick(reason);
    }
}

/// A connection's mailbox: its outbox, its kill switch and its task's waker, in one
/// allocation shared by the registry and the connection.
///
/// The outbox is a bounded queue under a lock rather than a channel: an idle connection's
/// empty queue allocates nothing, where futures' bounded channel cost about 190 bytes of
/// resident memory (its shared state, a stub node per queue and its sender's task handle;
/// `bench/conn-memory.sh`) and a node per message.
/// Its bound is `outbox_len_max` plus one, the capacity the channel had with its one sender.
/// The server's stop reaches logged-in connections through [`Registry::close`], not through a
/// cancellation token of each connection's own (a child token's tree node, 112 bytes on the
/// heap, and its waiter, 72 in the connection's future; reading one takes the tree's lock).
#[derive(Debug, Clone)]
pub(crate) struct SessionControl(Arc<Mailbox>);

#[derive(Debug)]
struct Mailbox {
    /// Why the connection was killed, read by the connection to send a Kick frame; set
    /// before `killed`.
    reason: Mutex<Option<KickReason>>,
    killed: AtomicBool,
    /// Pushes waiting for the connection, oldest first.
    outbox: Mutex<VecDeque<Outbound>>,
    outbox_len_max: usize,
    /// The connection's task, woken by a kill or a push.
    waker: AtomicWaker,
}

/// The outbox is full: the connection is a slow consumer.
#[derive(Debug)]
pub(crate) struct OutboxFull;

impl SessionControl {
    /// A connection's mailbox, its outbox bounded by `outbox_len_max` (plus one).
    pub fn new(outbox_len_max: usize) -> SessionControl {
        SessionControl(Arc::new(Mailbox {
            reason: Mutex::new(None),
            killed: AtomicBool::new(false),
            outbox: Mutex::new(VecDeque::new()),
            outbox_len_max,
            waker: AtomicWaker::new(),
        }))
    }

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

    /// Queues a push and wakes the connection; `OutboxFull` when `outbox_len_max + 1` wait.
    pub fn push(&self, item: Outbound) -> Result<(), OutboxFull> {
        let mut outbox = self.outbox();
        if outbox.len() > self.0.outbox_len_max {
            return Err(OutboxFull);
        }
        outbox.push_back(item);
        drop(outbox);
        self.0.waker.wake();
        Ok(())
    }

    /// Takes every push waiting; when none waits, the task of `cx` is woken by the next.
    pub fn poll_pushes(&self, cx: &mut std::task::Context<'_>) -> VecDeque<Outbound> {
        let mut outbox = self.outbox();
        if outbox.is_empty() {
            // Under the lock: a push after this check finds the waker registered.
            self.0.waker.register(cx.waker());
            return VecDeque::new();
        }
        // The queue's buffer goes with the batch: an idle connection keeps none.
        std::mem::take(&mut outbox)
    }

    /// Takes every push waiting (after the connection left the registry: no more come).
    pub fn take_pushes(&self) -> VecDeque<Outbound> {
        std::mem::take(&mut self.outbox())
    }

    fn outbox(&self) -> std::sync::MutexGuard<'_, VecDeque<Outbound>> {
        self.0.outbox.lock().unwrap_or_else(|p| p.into_inner())
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
    devices: Vec<(Arc<str>, SessionHandle)>,
    budget: Arc<SendBudget>,
}

/// Users with a live connection, by name. Hashed (Fx, fixed and unkeyed): every delivery
/// looks a user up, and a `BTreeMap<Box<str>, _>` paid a string comparison per level there
/// (`perf` of `imlab serve` at 8,000 msg/s: 2.7% of its samples). Never iterated in an
/// order that matters: only counted, and closed all (in connection order) at shutdown or a
/// crash.
type Users = HashMap<Arc<str>, OnlineUser, FxBuildHasher>;

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
        user: &Arc<str>,
        device: &Arc<str>,
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
            .entry(user.clone())
            .or_insert_with(|| OnlineUser {
                devices: Vec::with_capacity(1),
                budget: Arc::new(SendBudget::new(send_rate)),
            });
        let old = match online
            .devices
            .binary_search_by(|(d, _)| (**d).cmp(&**device))
        {
            Ok(i) => Some(std::mem::replace(&mut online.devices[i].1, handle)),
            Err(i) => {
                online.devices.insert(i, (device.clone(), handle));
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
            if handle.control.push(outbound).is_err() {
                self.counters
                    .slow_consumer_kicks
                    .fetch_add(1, Ordering::Relaxed);
                handle.kick(KickReason::SlowConsumer);
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

    fn handle(connection_id: u64) -> SessionHandle {
        SessionHandle {
            connection_id,
            control: SessionControl::new(4),
        }
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
        let before = handle(1);
        registry.register(&"alice".into(), &"phone".into(), before.clone(), 0);
        registry.close(Some(KickReason::ServerShutdown));
        assert!(killed(&before.control));
        assert_eq!(
            before.control.kick_reason(),
            Some(KickReason::ServerShutdown)
        );

        let after = handle(2);
        registry.register(&"bob".into(), &"phone".into(), after.clone(), 0);
        assert!(killed(&after.control), "registered after the close");
        assert_eq!(
            after.control.kick_reason(),
            Some(KickReason::ServerShutdown)
        );
        assert_eq!(registry.n_sessions(), 1, "only alice, registered before");
    }

    /// The outbox holds `outbox_len_max` pushes plus one (the capacity futures' channel had
    /// with its one sender); past that a push is refused and `deliver` kicks the connection as
    /// a slow consumer. Taking the pushes makes room again, in order, and a push wakes the
    /// connection's task once it found the outbox empty.
    #[test]
    fn the_outbox_is_bounded_and_a_full_one_kicks_a_slow_consumer() {
        let registry = Registry::default();
        let bob = handle(1);
        registry.register(&"bob".into(), &"phone".into(), bob.clone(), 0);
        let message = Bytes::from_static(b"hi");
        for seq in 1..=5 {
            assert!(registry.deliver("bob", seq, &message));
        }
        assert!(!killed(&bob.control), "4 + 1 pushes fit");
        assert!(registry.deliver("bob", 6, &message));
        assert!(killed(&bob.control), "the sixth kicks");
        assert_eq!(bob.control.kick_reason(), Some(KickReason::SlowConsumer));
        assert_eq!(
            registry
                .counters
                .slow_consumer_kicks
                .load(Ordering::Relaxed),
            1
        );

        let woken = Arc::new(AtomicBool::new(false));
        let waker = flag_waker(&woken);
        let mut cx = std::task::Context::from_waker(&waker);
        let seqs: Vec<u64> = bob
            .control
            .poll_pushes(&mut cx)
            .iter()
            .map(|o| o.seq)
            .collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5], "the refused sixth is not queued");
        assert!(bob.control.poll_pushes(&mut cx).is_empty());
        assert!(!woken.load(Ordering::SeqCst));
        bob.control.push(Outbound { seq: 7, message }).unwrap();
        assert!(woken.load(Ordering::SeqCst), "a push wakes the connection");
        let seqs: Vec<u64> = bob.control.take_pushes().iter().map(|o| o.seq).collect();
        assert_eq!(seqs, [7]);
    }

    fn flag_waker(flag: &Arc<AtomicBool>) -> std::task::Waker {
        struct Flag(Arc<AtomicBool>);
        impl std::task::Wake for Flag {
            fn wake(self: Arc<Self>) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        std::task::Waker::from(Arc::new(Flag(flag.clone())))
    }

    /// A crash kills without a word; a kick that came first keeps its reason.
    #[test]
    fn a_crash_kills_without_a_word_and_a_kill_wakes_the_connection() {
        let registry = Registry::default();
        let quiet = handle(1);
        let kicked = handle(2);
        registry.register(&"alice".into(), &"phone".into(), quiet.clone(), 0);
        registry.register(&"bob".into(), &"phone".into(), kicked.clone(), 0);
        kicked.kick(KickReason::SlowConsumer);

        let woken = Arc::new(AtomicBool::new(false));
        let waker = flag_waker(&woken);
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
