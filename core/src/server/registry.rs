//! Who is online: user -> device -> the live connection's handle.
//!
//! Delivery never blocks: a message goes into a connection's bounded outbox or not at once;
//! a full outbox marks the connection a slow consumer and kicks it (its messages stay in its
//! inbox and come back by sync after it reconnects).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::task::AtomicWaker;

use crate::proto::KickReason;
use crate::shards::ShardedTable;

/// What other connections queue in a connection's outbox: a message for this device, written
/// as NotifyData and tracked for the device's ack: its seq in the device's inbox and the
/// message's encoding without the seq ([`crate::codec::encode_message_without_seq`]), made
/// once for all its deliveries. (The connection's own replies go straight to its buffer.)
#[derive(Debug)]
pub(crate) struct Outbound {
    pub seq: u64,
    pub message: Bytes,
}

/// What a connection asked for or was given at login, for [`Registry::register`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct SessionOptions {
    /// The outbox holds this many pushes (plus one) before the connection is a slow consumer.
    pub outbox_len_max: usize,
    /// `Login.send_ack_is_copy`: the connection's own sends are not pushed back to it.
    pub send_ack_is_copy: bool,
}

/// A logged-in connection as the whole server sees it: who it is (user, device, connection
/// id, the user's send budget), its outbox, its kill switch and its task's waker, in one
/// allocation shared by the registry, the connection and its frame handlers.
///
/// One allocation of 128 bytes where the identity (an `Arc` of its own, 56 bytes) and the
/// mailbox (104) were two (`bench/conn-memory.sh`). The outbox is a bounded list under a lock
/// rather than a channel: an idle connection's empty list allocates nothing, where futures'
/// bounded channel cost about 190 bytes of resident memory (its shared state, a stub node per
/// queue and its sender's task handle) and a node per message. Its bound is `outbox_len_max`
/// plus one, the capacity the channel had with its one sender. The server's stop reaches
/// logged-in connections through [`Registry::close`], not through a cancellation token of
/// each connection's own (a child token's tree node, 112 bytes on the heap, and its waiter, 72
/// in the connection's future; reading one takes the tree's lock).
#[derive(Debug, Clone)]
pub(crate) struct SessionControl(Arc<Mailbox>);

#[derive(Debug)]
struct Mailbox {
    /// The user's name followed by the device's, in one allocation (two cost 31 bytes more
    /// per connection, `bench/conn-memory.sh`).
    names: Arc<str>,
    /// Where the device's name starts in `names`.
    user_len: u32,
    connection_id: u64,
    /// The user's send budget, shared with the user's other connections.
    budget: Arc<SendBudget>,
    /// [`KILLED`] once killed, and the kick's reason plus one in the low bits (0: none), set
    /// before or with the flag: the first reason wins.
    state: AtomicU32,
    outbox_len_max: u32,
    /// The device takes its SendAcks as its copies of its own messages (`Login`'s
    /// `send_ack_is_copy`): they are not pushed back to this connection.
    send_ack_is_copy: bool,
    /// Pushes waiting for the connection, oldest first.
    outbox: Mutex<Vec<Outbound>>,
    /// The connection's task, woken by a kill or a push.
    waker: AtomicWaker,
}

/// The killed flag in [`Mailbox::state`].
const KILLED: u32 = 1 << 31;

/// The outbox is full: the connection is a slow consumer.
#[derive(Debug)]
pub(crate) struct OutboxFull;

impl SessionControl {
    /// A connection's handle, its outbox bounded by `outbox_len_max` (plus one).
    fn new(
        user: &str,
        device: &str,
        connection_id: u64,
        budget: Arc<SendBudget>,
        options: SessionOptions,
    ) -> SessionControl {
        let names: Arc<str> = [user, device].concat().into();
        SessionControl(Arc::new(Mailbox {
            names,
            user_len: u32::try_from(user.len()).expect("ids are validated short"),
            connection_id,
            budget,
            state: AtomicU32::new(0),
            outbox_len_max: u32::try_from(options.outbox_len_max).unwrap_or(u32::MAX),
            send_ack_is_copy: options.send_ack_is_copy,
            outbox: Mutex::new(Vec::new()),
            waker: AtomicWaker::new(),
        }))
    }

    /// The user logged in.
    pub fn user(&self) -> &str {
        &self.0.names[..self.0.user_len as usize]
    }

    /// The device logged in.
    pub fn device(&self) -> &str {
        &self.0.names[self.0.user_len as usize..]
    }

    /// The connection's id, in accept order: its claim on (user, device) in the registry.
    pub fn connection_id(&self) -> u64 {
        self.0.connection_id
    }

    /// The connection whose sends are not pushed back to it (its device takes each SendAck as
    /// its copy), if this is one.
    pub fn echo_skipped(&self) -> Option<u64> {
        self.0.send_ack_is_copy.then_some(self.0.connection_id)
    }

    /// Asks the connection to close with `reason`; the first reason wins.
    pub fn kick(&self, reason: KickReason) {
        let code = reason as u32 + 1;
        let _ = self
            .0
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |state| {
                (state & !KILLED == 0).then_some(state | code)
            });
        self.kill();
    }

    /// Asks the connection to close without a word (a crash), unless a kick came first.
    pub fn kill(&self) {
        self.0.state.fetch_or(KILLED, Ordering::AcqRel);
        self.0.waker.wake();
    }

    /// True once killed; until then the task of `cx` is woken by a kill.
    pub fn poll_killed(&self, cx: &mut std::task::Context<'_>) -> bool {
        if self.killed() {
            return true;
        }
        self.0.waker.register(cx.waker());
        self.killed()
    }

    fn killed(&self) -> bool {
        self.0.state.load(Ordering::Acquire) & KILLED != 0
    }

    pub fn kick_reason(&self) -> Option<KickReason> {
        let code = self.0.state.load(Ordering::Acquire) & !KILLED;
        let code = i32::try_from(code.checked_sub(1)?).ok()?;
        KickReason::try_from(code).ok()
    }

    /// Queues a push and wakes the connection; `OutboxFull` when `outbox_len_max + 1` wait.
    pub fn push(&self, item: Outbound) -> Result<(), OutboxFull> {
        let mut outbox = self.outbox();
        if outbox.len() > self.0.outbox_len_max as usize {
            return Err(OutboxFull);
        }
        outbox.push(item);
        drop(outbox);
        self.0.waker.wake();
        Ok(())
    }

    /// Takes every push waiting, oldest first; when none waits, the task of `cx` is woken by
    /// the next.
    pub fn poll_pushes(&self, cx: &mut std::task::Context<'_>) -> Vec<Outbound> {
        let mut outbox = self.outbox();
        if outbox.is_empty() {
            // Under the lock: a push after this check finds the waker registered.
            self.0.waker.register(cx.waker());
            return Vec::new();
        }
        // The list's buffer goes with the batch: an idle connection keeps none.
        std::mem::take(&mut outbox)
    }

    /// Takes every push waiting (after the connection left the registry: no more come).
    pub fn take_pushes(&self) -> Vec<Outbound> {
        std::mem::take(&mut self.outbox())
    }

    fn outbox(&self) -> std::sync::MutexGuard<'_, Vec<Outbound>> {
        self.0.outbox.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Counters of the registry, for stats and tests.
#[derive(Debug, Default)]
pub(crate) struct RegistryCounters {
    pub slow_consumer_kicks: AtomicU64,
    pub replaced_kicks: AtomicU64,
}

/// A user's send budget, shared by all of the user's live connections: `rate` sends a second
/// with a burst of one second's worth, as a token bucket refilled continuously would allow.
/// It lives while the user has a connection.
///
/// Kept as the generic cell rate algorithm's one number, the theoretical arrival time of the
/// next send, in an atomic (32 bytes with the allocation's counts; a token count and a
/// timestamp under a lock took 64).
#[derive(Debug)]
pub(crate) struct SendBudget {
    rate: u32,
    /// Nanoseconds since the registry's epoch at which the next send would be on time.
    next_due_ns: AtomicU64,
}

impl SendBudget {
    fn new(rate: u32) -> SendBudget {
        SendBudget {
            rate,
            next_due_ns: AtomicU64::new(0),
        }
    }

    /// Takes one send from the budget at `now_ns` (the registry's clock); false when it is
    /// spent (rate 0 = no limit).
    fn try_take(&self, now_ns: u64) -> bool {
        if self.rate == 0 {
            return true;
        }
        let interval_ns = 1_000_000_000 / u64::from(self.rate);
        // A full budget holds `rate` sends: the next due time may run that far ahead, less one.
        let tolerance_ns = interval_ns * u64::from(self.rate - 1);
        let mut next_due_ns = self.next_due_ns.load(Ordering::Acquire);
        loop {
            let due_ns = next_due_ns.max(now_ns);
            if due_ns - now_ns > tolerance_ns {
                return false;
            }
            match self.next_due_ns.compare_exchange_weak(
                next_due_ns,
                due_ns + interval_ns,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(current) => next_due_ns = current,
            }
        }
    }
}

/// A user with a live connection: their devices' handles, sorted by device, never empty (a
/// user leaves the table with their last device). The user's name and send budget are their
/// handles' (every handle of a user holds the same budget), so an entry is 16 bytes: the only
/// device's handle inline, or a list once there are two.
///
/// The devices are a sorted list, not a map: a user has a few devices, and a map's first node
/// (room for 11 entries) cost about 800 bytes per idle connection (`bench/conn-memory.sh`).
/// Lookups are binary searches either way.
#[derive(Debug)]
enum OnlineUser {
    One(SessionControl),
    #[allow(
        clippy::box_collection,
        reason = "a thin pointer keeps the entry at 16 bytes; a list is rare"
    )]
    Many(Box<Vec<SessionControl>>),
}

impl OnlineUser {
    fn devices(&self) -> &[SessionControl] {
        match self {
            OnlineUser::One(control) => std::slice::from_ref(control),
            OnlineUser::Many(list) => list,
        }
    }

    fn devices_mut(&mut self) -> &mut [SessionControl] {
        match self {
            OnlineUser::One(control) => std::slice::from_mut(control),
            OnlineUser::Many(list) => list,
        }
    }

    fn user(&self) -> &str {
        self.devices()[0].user()
    }

    /// Inserts a device's handle at `i` of the sorted list.
    fn insert(&mut self, i: usize, control: SessionControl) {
        let mut list = match std::mem::replace(self, OnlineUser::Many(Box::default())) {
            OnlineUser::One(first) => vec![first],
            OnlineUser::Many(list) => *list,
        };
        list.insert(i, control);
        *self = OnlineUser::Many(Box::new(list));
    }

    /// Removes the handle at `i` of a user with two devices or more.
    fn remove(&mut self, i: usize) {
        let OnlineUser::Many(list) = self else {
            unreachable!("the only device leaves with its user")
        };
        list.remove(i);
        if let [only] = list.as_slice() {
            *self = OnlineUser::One(only.clone());
        }
    }
}

/// Users with a live connection, by name (the name read from their handles). Hashed (Fx,
/// fixed and unkeyed): every delivery looks a user up, and a `BTreeMap<Box<str>, _>` paid a
/// string comparison per level there (`perf` of `imlab serve` at 8,000 msg/s: 2.7% of its
/// samples). A table of 16-byte entries, where a map from the name to the devices and the
/// budget took 48 per slot (`bench/conn-memory.sh`). Never iterated in an order that
/// matters: closed all (in connection order) at shutdown or a crash.
///
/// In sharded tables under the one lock, each growing alone (see `crate::shards`):
/// one table of 1.8 million users held every login and delivery 230-445 ms as it doubled.
#[derive(Default)]
struct Users {
    table: ShardedTable<OnlineUser>,
    /// Live (user, device) sessions, counted as they come and go (`n_sessions`, read by every
    /// scrape of `/metrics`, was a walk of every user under the lock: 12.6 ms at 2 million).
    sessions: usize,
}

impl Users {
    fn all(&self) -> impl Iterator<Item = &OnlineUser> {
        self.table.iter()
    }
}

/// The users table's hash of a user's name.
fn user_hash(user: &str) -> u64 {
    crate::shards::hash_of(user)
}

#[derive(Default)]
pub(crate) struct Registry {
    online: Mutex<Online>,
    pub counters: RegistryCounters,
    /// The send budgets' time zero: the first registration, so that it is read from the
    /// clock of the runtime that serves the connections (a simulated host's, say).
    epoch: std::sync::OnceLock<tokio::time::Instant>,
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

    /// Takes one send from the budget of `session`'s user; false when it is spent.
    pub fn take_send(&self, session: &SessionControl) -> bool {
        session.0.budget.try_take(self.now_ns())
    }

    /// Nanoseconds since the epoch.
    fn now_ns(&self) -> u64 {
        let epoch = *self.epoch.get_or_init(tokio::time::Instant::now);
        let elapsed = tokio::time::Instant::now().saturating_duration_since(epoch);
        u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX)
    }

    /// Registers connection `connection_id` for (user, device) and returns its handle, whose
    /// outbox holds `options.outbox_len_max` (plus one) pushes; an older connection of the same
    /// device is kicked as replaced. The user's send budget (`send_rate` per second, 0 = no
    /// limit) is shared with the user's other connections.
    pub fn register(
        &self,
        user: &str,
        device: &str,
        connection_id: u64,
        options: SessionOptions,
        send_rate: u32,
    ) -> SessionControl {
        self.epoch.get_or_init(tokio::time::Instant::now);
        let mut guard = self.lock();
        if let Some(closed) = guard.closed {
            drop(guard);
            let budget = Arc::new(SendBudget::new(send_rate));
            let control = SessionControl::new(user, device, connection_id, budget, options);
            close(&control, closed);
            return control;
        }
        let hash = user_hash(user);
        let users = &mut guard.users;
        let sessions = &mut users.sessions;
        let table = &mut users.table;
        let (control, old) = match table.find_mut(hash, |online| online.user() == user) {
            Some(online) => {
                let budget = online.devices()[0].0.budget.clone();
                let control = SessionControl::new(user, device, connection_id, budget, options);
                let old = match online
                    .devices()
                    .binary_search_by(|other| other.device().cmp(control.device()))
                {
                    Ok(i) => Some(std::mem::replace(
                        &mut online.devices_mut()[i],
                        control.clone(),
                    )),
                    Err(i) => {
                        online.insert(i, control.clone());
                        *sessions += 1;
                        None
                    }
                };
                (control, old)
            }
            None => {
                let budget = Arc::new(SendBudget::new(send_rate));
                let control = SessionControl::new(user, device, connection_id, budget, options);
                table.insert_unique(hash, OnlineUser::One(control.clone()), |online| {
                    user_hash(online.user())
                });
                *sessions += 1;
                (control, None)
            }
        };
        drop(guard);
        if let Some(old) = old {
            self.counters.replaced_kicks.fetch_add(1, Ordering::Relaxed);
            old.kick(KickReason::Replaced);
        }
        control
    }

    /// Removes (user, device) if it still belongs to `connection_id`.
    pub fn unregister(&self, user: &str, device: &str, connection_id: u64) {
        let mut guard = self.lock();
        let hash = user_hash(user);
        let users = &mut guard.users;
        let Some(online) = users.table.find_mut(hash, |online| online.user() == user) else {
            return;
        };
        let Ok(i) = online
            .devices()
            .binary_search_by(|other| other.device().cmp(device))
        else {
            return;
        };
        if online.devices()[i].connection_id() != connection_id {
            return;
        }
        if online.devices().len() == 1 {
            users.table.remove(hash, |online| online.user() == user);
        } else {
            online.remove(i);
        }
        users.sessions -= 1;
    }

    /// Offers a message at `seq` to every live device of `user` but connection `skip` (the
    /// sending connection, when its device takes its SendAck as its copy); `message` is its
    /// encoding without the seq. Returns how many devices it was queued for, `None` when the
    /// user has no live device (the caller then pushes).
    pub fn deliver(
        &self,
        user: &str,
        seq: u64,
        message: &Bytes,
        skip: Option<u64>,
    ) -> Option<usize> {
        let guard = self.lock();
        let hash = user_hash(user);
        let online = guard
            .users
            .table
            .find(hash, |online| online.user() == user)?;
        let mut queued = 0;
        for control in online.devices() {
            if skip == Some(control.connection_id()) {
                continue;
            }
            let outbound = Outbound {
                seq,
                message: message.clone(),
            };
            if control.push(outbound).is_err() {
                self.counters
                    .slow_consumer_kicks
                    .fetch_add(1, Ordering::Relaxed);
                control.kick(KickReason::SlowConsumer);
            } else {
                queued += 1;
            }
        }
        Some(queued)
    }

    /// Live (user, device) pairs.
    pub fn n_sessions(&self) -> usize {
        let guard = self.lock();
        debug_assert_eq!(
            guard.users.sessions,
            guard.users.all().map(|online| online.devices().len()).sum(),
            "sessions counted"
        );
        guard.users.sessions
    }

    /// Closes every connection, for shutdown (`Some(reason)`: each is kicked with it) or a
    /// crash (`None`: killed without a word), and every connection that registers from now on.
    ///
    /// In accept order (by connection id), not the map's: the order their tasks wake in is
    /// part of a simulated crash's trace.
    pub fn close(&self, kick: Option<KickReason>) {
        let mut guard = self.lock();
        guard.closed.get_or_insert(kick);
        let mut live: Vec<&SessionControl> = guard
            .users
            .all()
            .flat_map(|online| online.devices().iter())
            .collect();
        live.sort_unstable_by_key(|control| control.connection_id());
        for control in live {
            close(control, kick);
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
    use std::sync::atomic::AtomicBool;

    use super::*;

    /// Registers (user, "phone") as connection `connection_id`, its outbox bounded at 4.
    fn register(registry: &Registry, user: &str, connection_id: u64) -> SessionControl {
        registry.register(user, "phone", connection_id, options(4, false), 0)
    }

    fn options(outbox_len_max: usize, send_ack_is_copy: bool) -> SessionOptions {
        SessionOptions {
            outbox_len_max,
            send_ack_is_copy,
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
        let before = register(&registry, "alice", 1);
        registry.close(Some(KickReason::ServerShutdown));
        assert!(killed(&before));
        assert_eq!(before.kick_reason(), Some(KickReason::ServerShutdown));

        let after = register(&registry, "bob", 2);
        assert!(killed(&after), "registered after the close");
        assert_eq!(after.kick_reason(), Some(KickReason::ServerShutdown));
        assert_eq!(registry.n_sessions(), 1, "only alice, registered before");
    }

    /// The outbox holds `outbox_len_max` pushes plus one (the capacity futures' channel had
    /// with its one sender); past that a push is refused and `deliver` kicks the connection as
    /// a slow consumer. Taking the pushes makes room again, in order, and a push wakes the
    /// connection's task once it found the outbox empty.
    #[test]
    fn the_outbox_is_bounded_and_a_full_one_kicks_a_slow_consumer() {
        let registry = Registry::default();
        let bob = register(&registry, "bob", 1);
        let message = Bytes::from_static(b"hi");
        for seq in 1..=5 {
            assert_eq!(registry.deliver("bob", seq, &message, None), Some(1));
        }
        assert!(!killed(&bob), "4 + 1 pushes fit");
        assert_eq!(
            registry.deliver("bob", 6, &message, None),
            Some(0),
            "refused, not queued"
        );
        assert!(killed(&bob), "the sixth kicks");
        assert_eq!(bob.kick_reason(), Some(KickReason::SlowConsumer));
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
        let seqs: Vec<u64> = bob.poll_pushes(&mut cx).iter().map(|o| o.seq).collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5], "the refused sixth is not queued");
        assert!(bob.poll_pushes(&mut cx).is_empty());
        assert!(!woken.load(Ordering::SeqCst));
        bob.push(Outbound { seq: 7, message }).unwrap();
        assert!(woken.load(Ordering::SeqCst), "a push wakes the connection");
        let seqs: Vec<u64> = bob.take_pushes().iter().map(|o| o.seq).collect();
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

    /// A user's devices come and go in any order: each is delivered to while registered, a
    /// second login of one device replaces it, a stale unregister (an older connection's)
    /// removes nothing, and the user leaves with their last device. All of a user's devices
    /// share one budget.
    #[test]
    fn a_users_devices_come_and_go_in_any_order() {
        let registry = Registry::default();
        let message = Bytes::from_static(b"hi");
        let login = |device: &str, connection_id| {
            registry.register("alice", device, connection_id, options(8, false), 10)
        };
        let phone = login("phone", 1);
        let tablet = login("tablet", 2);
        let laptop = login("laptop", 3);
        let bob = register(&registry, "bob", 4);
        assert_eq!(registry.n_sessions(), 4);
        assert!(Arc::ptr_eq(&phone.0.budget, &laptop.0.budget));
        assert!(!Arc::ptr_eq(&phone.0.budget, &bob.0.budget));
        assert_eq!(registry.deliver("alice", 1, &message, None), Some(3));
        for device in [&phone, &tablet, &laptop] {
            assert_eq!(device.take_pushes().len(), 1, "{}", device.device());
        }
        assert!(bob.take_pushes().is_empty());

        let phone_again = login("phone", 5);
        assert_eq!(phone.kick_reason(), Some(KickReason::Replaced));
        registry.unregister("alice", "phone", 1);
        assert_eq!(
            registry.n_sessions(),
            4,
            "the stale unregister removed nothing"
        );
        registry.unregister("alice", "tablet", 2);
        registry.unregister("alice", "phone", 5);
        assert_eq!(registry.n_sessions(), 2);
        assert_eq!(registry.deliver("alice", 2, &message, None), Some(1));
        assert_eq!(laptop.take_pushes().len(), 1);
        assert!(phone_again.take_pushes().is_empty());
        registry.unregister("alice", "laptop", 3);
        assert_eq!(
            registry.deliver("alice", 3, &message, None),
            None,
            "alice left"
        );
        assert_eq!(registry.n_sessions(), 1);
        let phone_later = login("phone", 6);
        assert!(
            !Arc::ptr_eq(&phone_later.0.budget, &phone.0.budget),
            "a new user entry"
        );
        assert_eq!(registry.deliver("alice", 4, &message, None), Some(1));
        assert_eq!(phone_later.take_pushes().len(), 1);
    }

    /// A device that takes its SendAcks as its copies is skipped when its own send is
    /// delivered, and only for its own sends: the user's other devices get it, and so does the
    /// same device when someone else's message reaches the user. Alone online, the user still
    /// counts as online (no offline push for the sender).
    #[test]
    fn a_send_is_not_pushed_back_to_a_device_that_takes_its_ack_as_its_copy() {
        let registry = Registry::default();
        let message = Bytes::from_static(b"hi");
        let phone = registry.register("alice", "phone", 1, options(8, true), 0);
        let laptop = registry.register("alice", "laptop", 2, options(8, false), 0);
        assert_eq!(phone.echo_skipped(), Some(1));
        assert_eq!(laptop.echo_skipped(), None);

        assert_eq!(
            registry.deliver("alice", 1, &message, phone.echo_skipped()),
            Some(1)
        );
        assert!(phone.take_pushes().is_empty(), "its own send");
        assert_eq!(laptop.take_pushes().len(), 1);

        assert_eq!(registry.deliver("alice", 2, &message, None), Some(2));
        assert_eq!(phone.take_pushes().len(), 1, "someone else's message");
        assert_eq!(laptop.take_pushes().len(), 1);

        registry.unregister("alice", "laptop", 2);
        assert_eq!(
            registry.deliver("alice", 3, &message, phone.echo_skipped()),
            Some(0),
            "the sender is online: no offline push"
        );
        assert!(phone.take_pushes().is_empty());
    }

    /// A connection's handle stays one 128-byte allocation (jemalloc's class; the `Arc`'s two
    /// counts included), the send_ack_is_copy flag in what was padding.
    #[test]
    fn a_connections_handle_fits_in_128_bytes() {
        assert!(
            16 + std::mem::size_of::<Mailbox>() <= 128,
            "{} bytes",
            16 + std::mem::size_of::<Mailbox>()
        );
    }

    /// A budget of 4 a second holds a burst of 4, gains one send every 250 ms, and never holds
    /// more than 4 however long it rests.
    #[test]
    fn a_send_budget_bursts_its_rate_and_refills_at_it() {
        const MS: u64 = 1_000_000;
        let budget = SendBudget::new(4);
        let taken = |at_ns: u64, n: usize| (0..n).filter(|_| budget.try_take(at_ns)).count();
        assert_eq!(taken(0, 6), 4, "a full budget's burst");
        assert_eq!(taken(249 * MS, 1), 0, "not yet refilled");
        assert_eq!(taken(250 * MS, 2), 1, "one send per 250 ms");
        assert_eq!(
            taken(10_000 * MS, 9),
            4,
            "rest refills to the burst, no further"
        );
        assert_eq!(taken(10_500 * MS, 9), 2);
        assert!(SendBudget::new(0).try_take(0), "rate 0: no limit");
    }

    /// A crash kills without a word; a kick that came first keeps its reason.
    #[test]
    fn a_crash_kills_without_a_word_and_a_kill_wakes_the_connection() {
        let registry = Registry::default();
        let quiet = register(&registry, "alice", 1);
        let kicked = register(&registry, "bob", 2);
        kicked.kick(KickReason::SlowConsumer);

        let woken = Arc::new(AtomicBool::new(false));
        let waker = flag_waker(&woken);
        assert!(!quiet.poll_killed(&mut std::task::Context::from_waker(&waker)));

        registry.close(None);
        assert!(
            woken.load(Ordering::SeqCst),
            "the kill woke the connection's task"
        );
        assert!(killed(&quiet));
        assert_eq!(quiet.kick_reason(), None);
        assert_eq!(kicked.kick_reason(), Some(KickReason::SlowConsumer));
    }
}
