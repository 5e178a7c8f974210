//! The run's clients polled in groups: one tokio task polls up to [`GROUP_LEN`] client
//! futures instead of one tokio task per client (fewer in a run too small to give every
//! runtime thread [`GROUPS_A_THREAD`] full groups: a group's clients run one at a time).
//!
//! A tokio task is a cell aligned to 128 bytes (header, scheduler, id, the future's stage and
//! trailer): the client core's 496-byte future took a 640-byte cell. In a group a client is
//! its future in a box of its own (448 bytes in the allocator's class, for the core's future
//! of 448), its slot in the group's task (8: the box), its flag in the group (1: queued) and
//! its share of the group's two index lists (8): about 465 bytes. Its waker allocates
//! nothing: it is one pointer, the group's address with the client's index in its low bits
//! (the group is aligned to [`GROUP_LEN`] bytes), and counts as a reference to the group.
//!
//! Waking a client queues its index once on the group's ready list and wakes the group's
//! task, which polls the queued clients in the order they were woken. The task gives its
//! thread back to the runtime when tokio's cooperative budget for it is spent (the clients it
//! has not reached stay queued, first), so a group shares the runtime as one task did, and
//! a client's I/O is never refused for a budget another client spent. A client that panics
//! ends alone: its future is dropped and the rest of its group goes on, as a tokio task's
//! panic ended only that task.
//!
//! A group is given clients until it holds [`GROUP_LEN`] or the pool is joined or dropped;
//! then it is closed, and its task ends once every future in it has ended. The futures
//! belong to the task, so a task dropped early (the runtime shutting down) drops them with
//! it, wakers held inside them and all.

use std::any::Any;
use std::future::Future;
use std::mem::ManuallyDrop;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};

use futures::task::AtomicWaker;
use tokio::sync::Notify;

/// Clients a group's task polls, at most.
pub const GROUP_LEN: usize = 256;

/// Groups a runtime thread gets in a run too small to fill them ([`ClientPool::for_clients`]).
pub const GROUPS_A_THREAD: usize = 8;

/// Client futures of one run, of whatever one type the run's protocol makes (the first
/// [`ClientPool::spawn`] picks it). What a future returns is dropped: taking any output spares
/// each client's box the adapter (8 bytes) that would turn it into `()`.
pub struct ClientPool {
    group_len: usize,
    pool: OnceLock<Box<dyn AnyPool>>,
}

impl Default for ClientPool {
    fn default() -> ClientPool {
        ClientPool::new()
    }
}

impl ClientPool {
    /// A pool of groups of [`GROUP_LEN`] clients.
    pub fn new() -> ClientPool {
        ClientPool::with_group_len(GROUP_LEN)
    }

    /// A pool for a run of `clients` on the current runtime: groups of at most
    /// [`GROUP_LEN`], and at least [`GROUPS_A_THREAD`] a runtime thread where there are
    /// clients enough, so that a small run still spreads over every thread (a group's
    /// clients run one at a time).
    pub fn for_clients(clients: usize) -> ClientPool {
        let threads = tokio::runtime::Handle::try_current()
            .map_or(1, |runtime| runtime.metrics().num_workers());
        ClientPool::with_group_len(
            clients
                .div_ceil(threads.max(1) * GROUPS_A_THREAD)
                .clamp(1, GROUP_LEN),
        )
    }

    /// A pool whose groups hold `group_len` clients (at least 1, at most [`GROUP_LEN`]).
    pub fn with_group_len(group_len: usize) -> ClientPool {
        ClientPool {
            group_len: group_len.clamp(1, GROUP_LEN),
            pool: OnceLock::new(),
        }
    }

    /// Runs `future` in the pool from now on, in the group being filled; a new group's task is
    /// spawned on the caller's runtime. Panics outside a runtime, if the pool was joined, or
    /// if an earlier spawn had another type.
    pub fn spawn<F>(&self, future: F)
    where
        F: Future + Send + 'static,
    {
        let pool = self
            .pool
            .get_or_init(|| Box::new(Pool::<F>::new(self.group_len)));
        pool.as_any()
            .downcast_ref::<Pool<F>>()
            .expect("a client pool runs futures of one type")
            .spawn(future);
    }

    /// Groups (tasks) started so far.
    pub fn groups(&self) -> usize {
        self.pool
            .get()
            .map_or(0, |pool| pool.tasks().made.load(Ordering::Acquire))
    }

    /// Closes the pool (no spawn after this) and waits until every future in it has ended.
    /// A join given up (dropped) and called again waits again.
    pub async fn join(&self) {
        let Some(pool) = self.pool.get() else {
            return;
        };
        pool.close();
        let tasks = pool.tasks();
        loop {
            // Made before the count is read, so an end after the read still wakes it.
            let ended = tasks.ended.notified();
            if tasks.alive.load(Ordering::Acquire) == 0 {
                return;
            }
            ended.await;
        }
    }
}

/// A [`Pool`] of any future type.
trait AnyPool: Send + Sync {
    fn as_any(&self) -> &dyn Any;
    fn tasks(&self) -> &Tasks;
    /// Closes the group being filled; nothing more is spawned.
    fn close(&self);
}

/// The groups' tasks, counted: each counts itself out as it is dropped (it ended, or the
/// runtime went).
#[derive(Default)]
struct Tasks {
    made: AtomicUsize,
    alive: AtomicUsize,
    ended: Notify,
}

struct Pool<F> {
    group_len: usize,
    filling: Mutex<Filling<F>>,
    tasks: Arc<Tasks>,
}

struct Filling<F> {
    /// The group being filled.
    group: Option<Arc<Group<F>>>,
    /// Joined: nothing more is spawned.
    closed: bool,
}

impl<F: Future + Send + 'static> Pool<F> {
    fn new(group_len: usize) -> Pool<F> {
        Pool {
            group_len,
            filling: Mutex::new(Filling {
                group: None,
                closed: false,
            }),
            tasks: Arc::default(),
        }
    }

    fn spawn(&self, future: F) {
        let mut filling = lock(&self.filling);
        assert!(!filling.closed, "a client was spawned into a joined pool");
        let group = match &filling.group {
            Some(group) => group.clone(),
            None => {
                let group = Group::new();
                self.tasks.made.fetch_add(1, Ordering::AcqRel);
                self.tasks.alive.fetch_add(1, Ordering::AcqRel);
                // Detached: the join waits on the count.
                drop(tokio::spawn(GroupTask::new(
                    group.clone(),
                    self.group_len,
                    self.tasks.clone(),
                )));
                filling.group = Some(group.clone());
                group
            }
        };
        if group.give(future, self.group_len) {
            filling.group = None;
        }
    }
}

impl<F: Future + Send + 'static> AnyPool for Pool<F> {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn tasks(&self) -> &Tasks {
        &self.tasks
    }

    fn close(&self) {
        let mut filling = lock(&self.filling);
        filling.closed = true;
        if let Some(group) = filling.group.take() {
            group.close();
        }
    }
}

impl<F> Drop for Pool<F> {
    /// A pool dropped without a join (a run that stopped early) still lets its last group's
    /// task end with its futures.
    fn drop(&mut self) {
        let filling = self.filling.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some(group) = filling.group.take() {
            group.close();
        }
    }
}

/// What a group's task shares with the spawner and the slots' wakers. Aligned to
/// [`GROUP_LEN`] bytes, so that a slot's waker is the group's address with the slot's index in
/// its low bits ([`Group::waker`]).
#[repr(align(256))]
struct Group<F> {
    inbox: Mutex<Inbox<F>>,
    /// No client will be given any more.
    closed: AtomicBool,
    /// The group's task.
    task: AtomicWaker,
    /// Each slot's flag: woken and queued on the ready list, not polled since.
    queued: [AtomicBool; GROUP_LEN],
}

// A slot's index fits below the group's alignment.
const _: () = assert!(std::mem::align_of::<Group<()>>() == GROUP_LEN);

struct Inbox<F> {
    /// Clients given and not taken by the task yet; each is queued as it is taken.
    new: Vec<Pin<Box<F>>>,
    /// Slots woken, in the order they were woken, each at most once.
    ready: Vec<u32>,
    /// Clients given so far.
    given: usize,
    /// The group's task was dropped: a client given now is dropped at once.
    gone: bool,
}

impl<F: Future + Send + 'static> Group<F> {
    fn new() -> Arc<Group<F>> {
        Arc::new(Group {
            inbox: Mutex::new(Inbox {
                new: Vec::new(),
                ready: Vec::new(),
                given: 0,
                gone: false,
            }),
            closed: AtomicBool::new(false),
            task: AtomicWaker::new(),
            queued: [const { AtomicBool::new(false) }; GROUP_LEN],
        })
    }

    /// Hands `future` to the group's task; true when that filled the group (which is then
    /// closed) or the task is gone (the future is dropped).
    fn give(&self, future: F, len: usize) -> bool {
        let mut inbox = lock(&self.inbox);
        if inbox.gone {
            drop(inbox);
            drop(future);
            return true;
        }
        assert!(inbox.given < len, "a full group was given a client");
        inbox.new.push(Box::pin(future));
        inbox.given += 1;
        let full = inbox.given == len;
        if full {
            self.closed.store(true, Ordering::Release);
        }
        drop(inbox);
        self.task.wake();
        full
    }
}

impl<F> Group<F> {
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.task.wake();
    }
}

// The one unsafe code of the generator: a waker of a slot's own would be an `Arc` a client
// (32 bytes each, tens of thousands of clients), so the group makes its slots' wakers by hand.
#[allow(
    unsafe_code,
    reason = "a slot's waker is the group's pointer tagged with its index"
)]
impl<F: Send + 'static> Group<F> {
    /// Queues slot `index` once on the ready list and wakes the group's task.
    fn wake_slot(&self, index: usize) {
        if self.queued[index].swap(true, Ordering::AcqRel) {
            return;
        }
        lock(&self.inbox).ready.push(index as u32);
        self.task.wake();
    }

    /// Slot `index`'s waker, borrowed from `group` (which the caller keeps alive); a clone of
    /// it holds a reference to the group of its own.
    fn waker(group: &Arc<Group<F>>, index: usize) -> ManuallyDrop<Waker> {
        debug_assert!(index < GROUP_LEN);
        let data = Arc::as_ptr(group).cast::<()>().map_addr(|at| at | index);
        // SAFETY: `data` is the group's `Arc` pointer with `index` in bits the alignment
        // leaves zero, which the vtable's functions take apart again; the waker is not
        // dropped (`ManuallyDrop`), so it gives back no reference it did not take.
        ManuallyDrop::new(unsafe { Waker::from_raw(RawWaker::new(data, Self::vtable())) })
    }

    fn vtable() -> &'static RawWakerVTable {
        &RawWakerVTable::new(
            Self::clone_raw,
            Self::wake_raw,
            Self::wake_by_ref_raw,
            Self::drop_raw,
        )
    }

    /// The group's `Arc` pointer and the slot's index in a waker's data.
    fn parts(data: *const ()) -> (*const Group<F>, usize) {
        (
            data.map_addr(|at| at & !(GROUP_LEN - 1)).cast::<Group<F>>(),
            data.addr() & (GROUP_LEN - 1),
        )
    }

    /// # Safety
    /// `data` is a slot waker's: a live group's pointer and a slot's index.
    unsafe fn clone_raw(data: *const ()) -> RawWaker {
        // SAFETY: the waker being cloned holds (or borrows) a reference to the group.
        unsafe { Arc::increment_strong_count(Self::parts(data).0) };
        RawWaker::new(data, Self::vtable())
    }

    /// # Safety
    /// As [`Group::clone_raw`]; the waker's reference is given up.
    unsafe fn wake_raw(data: *const ()) {
        // SAFETY: the caller's waker is live until the drop below.
        unsafe {
            Self::wake_by_ref_raw(data);
            Self::drop_raw(data);
        }
    }

    /// # Safety
    /// As [`Group::clone_raw`].
    unsafe fn wake_by_ref_raw(data: *const ()) {
        let (group, index) = Self::parts(data);
        // SAFETY: the waker holds (or borrows) a reference, so the group is live.
        unsafe { &*group }.wake_slot(index);
    }

    /// # Safety
    /// As [`Group::clone_raw`], for a waker that owns its reference (a clone).
    unsafe fn drop_raw(data: *const ()) {
        // SAFETY: the reference taken by `clone_raw`.
        unsafe { Arc::decrement_strong_count(Self::parts(data).0) };
    }
}

/// A client: its future until it ends.
type Slot<F> = Option<Pin<Box<F>>>;

/// A group's task: owns the group's futures and polls the woken ones until the group is
/// closed and every future in it has ended.
struct GroupTask<F> {
    group: Arc<Group<F>>,
    tasks: Arc<Tasks>,
    slots: Vec<Slot<F>>,
    /// Futures not ended yet.
    live: usize,
    /// The ready list taken, kept for its allocation.
    batch: Vec<u32>,
}

impl<F: Future + Send + 'static> GroupTask<F> {
    fn new(group: Arc<Group<F>>, len: usize, tasks: Arc<Tasks>) -> GroupTask<F> {
        GroupTask {
            group,
            tasks,
            slots: Vec::with_capacity(len),
            live: 0,
            batch: Vec::new(),
        }
    }

    /// Takes the clients given since the last look (each queued to be polled) and the
    /// ready list into `batch`.
    fn take(&mut self) {
        debug_assert!(self.batch.is_empty());
        let mut guard = lock(&self.group.inbox);
        let inbox = &mut *guard;
        // Taken whole, so the list's buffer goes once the ramp is over.
        for future in std::mem::take(&mut inbox.new) {
            let index = self.slots.len();
            self.slots.push(Some(future));
            self.group.queued[index].store(true, Ordering::Release);
            self.live += 1;
            inbox.ready.push(index as u32);
        }
        std::mem::swap(&mut inbox.ready, &mut self.batch);
    }

    /// Polls slot `index` once, if its future has not ended; drops the future when it ends
    /// or panics.
    fn poll_slot(&mut self, index: usize) {
        // Cleared before the poll: a wake during it queues the slot again.
        self.group.queued[index].store(false, Ordering::Release);
        let Some(future) = self.slots[index].as_mut() else {
            return;
        };
        let waker = Group::waker(&self.group, index);
        let mut cx = Context::from_waker(&waker);
        let ended =
            match std::panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(&mut cx))) {
                Ok(Poll::Pending) => false,
                Ok(Poll::Ready(_)) | Err(_) => true,
            };
        if ended {
            self.slots[index] = None;
            self.live -= 1;
        }
    }
}

impl<F: Future + Send + 'static> Future for GroupTask<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        this.group.task.register(cx.waker());
        loop {
            this.take();
            if this.batch.is_empty() {
                // Closed is read after the last take: a client given before the close was
                // taken above.
                let done = this.group.closed.load(Ordering::Acquire)
                    && lock(&this.group.inbox).new.is_empty()
                    && this.live == 0;
                return if done { Poll::Ready(()) } else { Poll::Pending };
            }
            let mut at = 0;
            while at < this.batch.len() {
                let index = this.batch[at] as usize;
                at += 1;
                this.poll_slot(index);
                if !tokio::task::coop::has_budget_remaining() {
                    // The rest stay queued, in their order, ahead of what was woken since.
                    let rest = this.batch.drain(at..);
                    lock(&this.group.inbox).ready.splice(0..0, rest);
                    this.batch.clear();
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
            }
            this.batch.clear();
        }
    }
}

impl<F> Drop for GroupTask<F> {
    /// The task ended, or was dropped before its group ended (the runtime shutting down):
    /// no client is given to it any more, those given and not taken go now, and the taken
    /// ones go with the task's slots. Then it counts itself out.
    fn drop(&mut self) {
        let new = {
            let mut inbox = lock(&self.group.inbox);
            inbox.gone = true;
            std::mem::take(&mut inbox.new)
        };
        drop(new);
        self.slots.clear();
        self.tasks.alive.fetch_sub(1, Ordering::AcqRel);
        self.tasks.ended.notify_waiters();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::oneshot;

    use super::*;

    /// Ten clients in groups of four: three groups, and the join waits for the last client.
    #[tokio::test(start_paused = true)]
    async fn a_join_waits_for_every_client_of_every_group() {
        let pool = ClientPool::with_group_len(4);
        let ended = Arc::new(AtomicUsize::new(0));
        let mut senders = Vec::new();
        for _ in 0..10 {
            let (send, receive) = oneshot::channel::<()>();
            senders.push(send);
            let ended = ended.clone();
            pool.spawn(async move {
                let _ = receive.await;
                ended.fetch_add(1, Ordering::SeqCst);
            });
        }
        assert_eq!(pool.groups(), 3);
        let last = senders.pop().unwrap();
        for send in senders {
            send.send(()).unwrap();
        }
        // The paused clock jumps to the deadline only once nothing else can run.
        let joined = tokio::time::timeout(Duration::from_secs(1), pool.join()).await;
        assert!(
            joined.is_err(),
            "the join returned with a client still waiting"
        );
        assert_eq!(ended.load(Ordering::SeqCst), 9);
        last.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(1), pool.join())
            .await
            .expect("every client ended");
        assert_eq!(ended.load(Ordering::SeqCst), 10);
    }

    /// A run's groups are sized to give every runtime thread eight of them, up to 256
    /// clients a group.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_small_run_spreads_over_every_thread() {
        let sizes = |clients: usize| {
            let pool = ClientPool::for_clients(clients);
            for _ in 0..clients {
                pool.spawn(async {});
            }
            pool.groups()
        };
        // 100 clients over 16 groups: 7 a group, 15 groups.
        assert_eq!(sizes(100), 15);
        assert_eq!(sizes(3), 3);
        // 10,000 over 16 would be 625 a group: 256 instead, 40 groups.
        assert_eq!(sizes(10_000), 40);
    }

    /// Clients woken from threads outside the runtime, on a runtime of two threads.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn clients_woken_from_other_threads_run() {
        let pool = ClientPool::with_group_len(8);
        let ended = Arc::new(AtomicUsize::new(0));
        let mut senders = Vec::new();
        for _ in 0..100 {
            let (send, receive) = oneshot::channel::<u32>();
            senders.push(send);
            let ended = ended.clone();
            pool.spawn(async move {
                if receive.await == Ok(7) {
                    ended.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
        let wakers = std::thread::spawn(move || {
            for send in senders {
                send.send(7).unwrap();
            }
        });
        tokio::time::timeout(Duration::from_secs(60), pool.join())
            .await
            .expect("every client ended");
        wakers.join().unwrap();
        assert_eq!(ended.load(Ordering::SeqCst), 100);
        assert_eq!(pool.groups(), 13);
    }

    /// A client with endless work gives the thread back when the group's budget is spent:
    /// another task runs before the client is done. (tokio defers a wake from a spent
    /// budget until the task yields, so the group's task yields with nothing queued.)
    #[tokio::test(flavor = "current_thread")]
    async fn a_busy_client_shares_the_thread() {
        let pool = ClientPool::new();
        let (send, mut receive) = tokio::sync::mpsc::unbounded_channel::<()>();
        for _ in 0..10_000 {
            send.send(()).unwrap();
        }
        drop(send);
        let taken = Arc::new(AtomicUsize::new(0));
        let counted = taken.clone();
        pool.spawn(async move {
            while receive.recv().await.is_some() {
                counted.fetch_add(1, Ordering::SeqCst);
            }
        });
        let other = tokio::spawn(async move { taken.load(Ordering::SeqCst) });
        pool.join().await;
        let seen = other.await.unwrap();
        assert!(
            seen < 10_000,
            "the other task ran only after the client was done"
        );
    }

    /// Once a client spent the group's budget, the clients after it wait for the next turn
    /// instead of being polled to be refused: the second client here is polled once, and
    /// takes its ten items in that poll. Without the budget's check it is polled twice.
    #[tokio::test(flavor = "current_thread")]
    async fn no_client_is_polled_in_vain_after_the_budget_is_spent() {
        let pool = ClientPool::new();
        let channel = |n| {
            let (send, receive) = tokio::sync::mpsc::unbounded_channel::<()>();
            for _ in 0..n {
                send.send(()).unwrap();
            }
            receive
        };
        type Client = Pin<Box<dyn Future<Output = ()> + Send>>;
        let mut busy = channel(10_000);
        pool.spawn::<Client>(Box::pin(
            async move { while busy.recv().await.is_some() {} },
        ));
        let mut light = Some(Box::pin(async move {
            let mut light = channel(10);
            for _ in 0..10 {
                light.recv().await;
            }
        }));
        let polls = Arc::new(AtomicUsize::new(0));
        let counted = polls.clone();
        pool.spawn::<Client>(Box::pin(std::future::poll_fn(move |cx| {
            counted.fetch_add(1, Ordering::SeqCst);
            match light.as_mut().map(|light| light.as_mut().poll(cx)) {
                Some(Poll::Pending) => Poll::Pending,
                _ => {
                    light = None;
                    Poll::Ready(())
                }
            }
        })));
        pool.join().await;
        assert_eq!(polls.load(Ordering::SeqCst), 1);
    }

    /// A client that panics ends alone: the others of its group still run to their end.
    #[tokio::test]
    async fn a_panicking_client_ends_alone() {
        let pool = ClientPool::with_group_len(4);
        let ended = Arc::new(AtomicUsize::new(0));
        for n in 0..4 {
            let ended = ended.clone();
            pool.spawn(async move {
                tokio::task::yield_now().await;
                assert_ne!(n, 1, "client 1 panics (planted by the test)");
                ended.fetch_add(1, Ordering::SeqCst);
            });
        }
        tokio::time::timeout(Duration::from_secs(60), pool.join())
            .await
            .expect("the group ended");
        assert_eq!(ended.load(Ordering::SeqCst), 3);
    }

    /// A pool dropped without a join (a run that stopped early) still closes its last,
    /// partly filled group, so the group's task ends once its clients do.
    #[tokio::test]
    async fn a_dropped_pool_lets_its_groups_end() {
        let metrics = tokio::runtime::Handle::current().metrics();
        let pool = ClientPool::with_group_len(4);
        let (send, receive) = oneshot::channel::<()>();
        pool.spawn(async move {
            let _ = receive.await;
        });
        assert_eq!(metrics.num_alive_tasks(), 1);
        drop(pool);
        send.send(()).unwrap();
        for _ in 0..1_000 {
            if metrics.num_alive_tasks() == 0 {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("the group's task outlived its clients");
    }

    /// Clients that never end, each holding its own waker in a timer, go when the runtime
    /// does: the task owns them, so no waker keeps them alive.
    #[test]
    fn clients_go_with_the_runtime() {
        struct Flag(Arc<AtomicUsize>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let dropped = Arc::new(AtomicUsize::new(0));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let pool = ClientPool::with_group_len(4);
        runtime.block_on(async {
            for _ in 0..6 {
                let flag = Flag(dropped.clone());
                pool.spawn(async move {
                    let _flag = flag;
                    tokio::time::sleep(Duration::from_secs(3_600)).await;
                });
            }
            // Every client polled once, its timer holding its waker.
            tokio::task::yield_now().await;
        });
        drop(runtime);
        assert_eq!(dropped.load(Ordering::SeqCst), 6);
        drop(pool);
    }

    /// A client's output is dropped as it ends, whatever its type: the pool needs no
    /// adapter turning it into `()`.
    #[tokio::test]
    async fn a_clients_output_is_dropped_as_it_ends() {
        struct Output(Arc<AtomicUsize>);
        impl Drop for Output {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        type Client = Pin<Box<dyn Future<Output = Output> + Send>>;
        let dropped = Arc::new(AtomicUsize::new(0));
        let pool = ClientPool::with_group_len(4);
        let (send, receive) = oneshot::channel::<()>();
        let last = dropped.clone();
        pool.spawn::<Client>(Box::pin(async move {
            let _ = receive.await;
            Output(last)
        }));
        for _ in 0..5 {
            let dropped = dropped.clone();
            pool.spawn::<Client>(Box::pin(async move {
                tokio::task::yield_now().await;
                Output(dropped)
            }));
        }
        for _ in 0..1_000 {
            if dropped.load(Ordering::SeqCst) == 5 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(
            dropped.load(Ordering::SeqCst),
            5,
            "each ended client's output"
        );
        send.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(60), pool.join())
            .await
            .expect("every client ended");
        assert_eq!(dropped.load(Ordering::SeqCst), 6);
    }

    /// A slot's waker is the group's pointer: each clone holds the group, so a waker kept
    /// past its client, its group's task and the pool still wakes a live group, and the
    /// group goes with the last clone. It wakes its own slot, not a neighbour's.
    #[tokio::test]
    async fn a_slots_waker_holds_its_group_and_wakes_its_own_slot() {
        type Client = Pin<Box<dyn Future<Output = ()> + Send>>;
        let pool = ClientPool::with_group_len(4);
        let kept = Arc::new(Mutex::new(Vec::new()));
        let polls: Arc<[AtomicUsize; 3]> = Arc::new(Default::default());
        for client in 0..3 {
            let (keep, polls) = (kept.clone(), polls.clone());
            let mut parked = false;
            pool.spawn::<Client>(Box::pin(std::future::poll_fn(move |cx| {
                polls[client].fetch_add(1, Ordering::SeqCst);
                if std::mem::replace(&mut parked, true) {
                    return Poll::Ready(());
                }
                keep.lock().unwrap().push((client, cx.waker().clone()));
                Poll::Pending
            })));
        }
        tokio::task::yield_now().await;
        let mut wakers = std::mem::take(&mut *kept.lock().unwrap());
        assert_eq!(wakers.len(), 3, "every client ran once");
        let (_, first) = &wakers[0];
        let group = {
            let (pointer, index) = Group::<Client>::parts(first.data());
            assert_eq!(index, 0);
            // SAFETY (test): the waker holds a reference; a weak one of our own is counted.
            #[allow(unsafe_code, reason = "reads the group the waker points to")]
            let group = unsafe {
                Arc::increment_strong_count(pointer);
                Arc::from_raw(pointer)
            };
            Arc::downgrade(&group)
        };
        // Client 1's waker wakes client 1 only.
        let (client, waker) = wakers.remove(1);
        assert_eq!(client, 1);
        waker.wake();
        for _ in 0..1_000 {
            if polls[1].load(Ordering::SeqCst) == 2 {
                break;
            }
            tokio::task::yield_now().await;
        }
        let counts = polls.each_ref().map(|n| n.load(Ordering::SeqCst));
        assert_eq!(
            counts,
            [1, 2, 1],
            "polls of each client after waking client 1"
        );
        let extra = wakers[0].1.clone();
        for (_, waker) in wakers.drain(..) {
            waker.wake();
        }
        tokio::time::timeout(Duration::from_secs(60), pool.join())
            .await
            .expect("the group ended");
        drop(pool);
        assert!(group.upgrade().is_some(), "a kept waker holds its group");
        extra.wake_by_ref();
        drop(extra);
        assert!(
            group.upgrade().is_none(),
            "the group outlived its last waker"
        );
    }

    /// A waker kept after its client ended may still be woken: nothing is polled.
    #[tokio::test]
    async fn a_waker_outliving_its_client_is_harmless() {
        let pool = ClientPool::with_group_len(4);
        let kept = Arc::new(Mutex::new(None));
        let keep = kept.clone();
        pool.spawn(std::future::poll_fn(move |cx| {
            *keep.lock().unwrap() = Some(cx.waker().clone());
            Poll::Ready(())
        }));
        tokio::task::yield_now().await;
        let waker = kept.lock().unwrap().take().expect("the client ran");
        waker.wake_by_ref();
        waker.wake();
        tokio::time::timeout(Duration::from_secs(60), pool.join())
            .await
            .expect("the group ended");
    }
}
