//! The app's way into a running client core: its bounded command queue, the signal that
//! sends are waiting, the handles' count and the request id counter, in one allocation.
//!
//! This replaced a futures channel (its shared state, two stub nodes and its sender's task
//! handle), the mutex its one sender was shared behind, a `Notify` and an `Arc<AtomicU64>`:
//! 351 bytes allocated per client in a heap profile of a load generator, where this takes 80
//! (and a queue while commands wait).
//! It keeps their wake-ups exactly, because the simulator's traces follow which task is
//! polled when:
//! - a command wakes the task that last waited for one, as a channel's receiver is woken,
//!   even when that wait has been dropped since;
//! - the "sends are waiting" signal wakes only a wait that is being polled now, and a signal
//!   that finds none is kept for the next wait, as `Notify::notify_one` keeps a permit.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use super::Command;

/// Shared by the core and every clone of its handle.
#[derive(Debug)]
pub(super) struct Mailbox {
    inner: Mutex<Inner>,
    next_request_id: AtomicU64,
}

#[derive(Debug)]
#[allow(
    clippy::box_collection,
    reason = "8 bytes in every client's mailbox while no command waits, where the queue takes 32"
)]
struct Inner {
    /// Queued commands, boxed only while any wait: 8 bytes in every client's mailbox where
    /// the queue inline took 32 (commands are rare: app states, networks, groups, the end).
    commands: Option<Box<VecDeque<Command>>>,
    /// At most this many queue (at most `u16::MAX`: 2 bytes, so that the mailbox with its
    /// `Arc`'s counts is 80 bytes, jemalloc's 80 class).
    commands_len_max: u16,
    /// The task that last waited for a command; taken by the wake.
    command_waker: Option<Waker>,
    sends_waiting: bool,
    /// The task waiting for sends now; cleared when the wait is dropped.
    sends_waker: Option<Waker>,
    /// Live handles. At 0 the core, once the queue is drained, sees the end of its commands.
    handles: u32,
    /// The core is gone: nothing takes commands any more.
    core_dropped: bool,
}

/// Why a command was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Refused;

impl Mailbox {
    /// A mailbox with one handle, holding at most `commands_len_max` commands.
    pub(super) fn new(commands_len_max: usize) -> Arc<Mailbox> {
        Arc::new(Mailbox {
            inner: Mutex::new(Inner {
                commands: None,
                commands_len_max: u16::try_from(commands_len_max).unwrap_or(u16::MAX),
                command_waker: None,
                sends_waiting: false,
                sends_waker: None,
                handles: 1,
                core_dropped: false,
            }),
            next_request_id: AtomicU64::new(1),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Plain data, each change whole under the lock: a panic elsewhere leaves it usable.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues a command for the core, or refuses it when the queue is full or the core gone.
    pub(super) fn command(&self, command: Command) -> Result<(), Refused> {
        let mut inner = self.lock();
        let queued = inner.commands.as_ref().map_or(0, |commands| commands.len());
        if inner.core_dropped || queued >= usize::from(inner.commands_len_max) {
            return Err(Refused);
        }
        inner.commands.get_or_insert_default().push_back(command);
        let waker = inner.command_waker.take();
        drop(inner);
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }

    /// Tells the connection that sends are waiting in the client's state.
    pub(super) fn sends_waiting(&self) {
        let mut inner = self.lock();
        inner.sends_waiting = true;
        let waker = inner.sends_waker.take();
        drop(inner);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// The next request id.
    pub(super) fn request_id(&self) -> u64 {
        self.next_request_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(super) fn handle_cloned(&self) {
        let mut inner = self.lock();
        inner.handles = inner
            .handles
            .checked_add(1)
            .expect("fewer than 2^32 handles");
    }

    pub(super) fn handle_dropped(&self) {
        let mut inner = self.lock();
        inner.handles -= 1;
        let waker = if inner.handles == 0 {
            inner.command_waker.take()
        } else {
            None
        };
        drop(inner);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// The next command; `None` once every handle is dropped and the queue drained.
    pub(super) fn poll_command(&self, cx: &mut Context<'_>) -> Poll<Option<Command>> {
        let mut inner = self.lock();
        if let Some(commands) = &mut inner.commands
            && let Some(command) = commands.pop_front()
        {
            if commands.is_empty() {
                // Commands are rare (app states, networks, groups): an idle client holds no
                // buffer for them (four slots were 224 bytes a client, kept for good).
                inner.commands = None;
            }
            return Poll::Ready(Some(command));
        }
        if inner.handles == 0 {
            return Poll::Ready(None);
        }
        match &mut inner.command_waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Waits for the next command (see [`Mailbox::poll_command`]).
    pub(super) fn next_command(&self) -> impl Future<Output = Option<Command>> + '_ {
        std::future::poll_fn(|cx| self.poll_command(cx))
    }

    /// Waits until sends are waiting (at once if a signal came while nothing waited).
    pub(super) fn sends(&self) -> Sends<'_> {
        Sends { mailbox: self }
    }
}

/// The core's end of the mailbox: dropping it (the core stopped) refuses later commands.
#[derive(Debug)]
pub(super) struct CoreEnd(pub(super) Arc<Mailbox>);

impl Drop for CoreEnd {
    fn drop(&mut self) {
        let mut inner = self.0.lock();
        inner.core_dropped = true;
        // Nothing will take them; free them now rather than with the last handle.
        inner.commands = None;
    }
}

/// A wait for sends, registered only while it is polled.
#[derive(Debug)]
pub(super) struct Sends<'a> {
    mailbox: &'a Mailbox,
}

impl Future for Sends<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut inner = self.mailbox.lock();
        if std::mem::take(&mut inner.sends_waiting) {
            inner.sends_waker = None;
            return Poll::Ready(());
        }
        match &mut inner.sends_waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl Sends<'_> {
    /// The next command, as [`Mailbox::poll_command`]: one wait covers both (the core's
    /// wait for anything, in one pointer).
    pub(super) fn poll_command(&self, cx: &mut Context<'_>) -> Poll<Option<Command>> {
        self.mailbox.poll_command(cx)
    }
}

impl Drop for Sends<'_> {
    fn drop(&mut self) {
        self.mailbox.lock().sends_waker = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    #[derive(Default)]
    struct CountWakes(AtomicUsize);

    impl Wake for CountWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn waker() -> (Arc<CountWakes>, Waker) {
        let count = Arc::new(CountWakes::default());
        (count.clone(), Waker::from(count))
    }

    fn wakes(count: &CountWakes) -> usize {
        count.0.load(Ordering::SeqCst)
    }

    #[test]
    fn a_mailbox_is_one_80_byte_allocation() {
        // An `Arc`'s two counts and the mailbox: jemalloc's 80-byte class (112 with the
        // queue inline and a 4-byte bound, 128 before the bound and the handles' count were
        // 4 bytes each).
        let size = 16 + std::mem::size_of::<Mailbox>();
        assert!(size <= 80, "a mailbox takes {size} bytes");
    }

    #[test]
    fn commands_come_in_order_up_to_the_bound_and_wake_the_last_waiter() {
        let mailbox = Mailbox::new(3);
        let (count, waker) = waker();
        let mut cx = Context::from_waker(&waker);
        assert_eq!(mailbox.poll_command(&mut cx), Poll::Pending);
        mailbox.command(Command::GoOffline).unwrap();
        // The wait was registered by the poll, and stays registered after it: one wake.
        assert_eq!(wakes(&count), 1);
        mailbox.command(Command::GoOnline).unwrap();
        mailbox.command(Command::Shutdown).unwrap();
        assert_eq!(wakes(&count), 1, "the wake is taken: no second wake");
        assert_eq!(mailbox.command(Command::GoOffline), Err(Refused));
        assert_eq!(
            mailbox.poll_command(&mut cx),
            Poll::Ready(Some(Command::GoOffline))
        );
        // Taking one makes room for one.
        mailbox.command(Command::GoOffline).unwrap();
        assert_eq!(mailbox.command(Command::GoOffline), Err(Refused));
        let taken: Vec<_> = std::iter::from_fn(|| match mailbox.poll_command(&mut cx) {
            Poll::Ready(command) => command,
            Poll::Pending => None,
        })
        .collect();
        assert_eq!(
            taken,
            [Command::GoOnline, Command::Shutdown, Command::GoOffline]
        );
        assert!(
            mailbox.lock().commands.is_none(),
            "a drained queue holds no buffer"
        );
    }

    #[test]
    fn the_last_handle_dropped_ends_the_commands_after_the_queued_ones() {
        let mailbox = Mailbox::new(4);
        mailbox.handle_cloned();
        let (count, waker) = waker();
        let mut cx = Context::from_waker(&waker);
        assert_eq!(mailbox.poll_command(&mut cx), Poll::Pending);
        mailbox.handle_dropped();
        assert_eq!(wakes(&count), 0, "one handle is left");
        assert_eq!(mailbox.poll_command(&mut cx), Poll::Pending);
        mailbox.command(Command::GoOnline).unwrap();
        assert_eq!(wakes(&count), 1);
        assert_eq!(
            mailbox.poll_command(&mut cx),
            Poll::Ready(Some(Command::GoOnline))
        );
        assert_eq!(mailbox.poll_command(&mut cx), Poll::Pending);
        mailbox.handle_dropped();
        assert_eq!(wakes(&count), 2, "the last handle's drop wakes the core");
        assert_eq!(mailbox.poll_command(&mut cx), Poll::Ready(None));
    }

    #[test]
    fn a_dropped_core_refuses_commands() {
        let mailbox = Mailbox::new(4);
        mailbox.command(Command::GoOnline).unwrap();
        drop(CoreEnd(mailbox.clone()));
        assert_eq!(mailbox.command(Command::GoOffline), Err(Refused));
    }

    #[test]
    fn a_sends_signal_wakes_a_polled_wait_or_is_kept_for_the_next() {
        let mailbox = Mailbox::new(4);
        let (count, waker) = waker();
        let mut cx = Context::from_waker(&waker);

        // A wait being polled is woken, and the signal completes it.
        let mut wait = Box::pin(mailbox.sends());
        assert_eq!(wait.as_mut().poll(&mut cx), Poll::Pending);
        mailbox.sends_waiting();
        assert_eq!(wakes(&count), 1);
        assert_eq!(wait.as_mut().poll(&mut cx), Poll::Ready(()));
        drop(wait);

        // A wait dropped before the signal is not woken; the signal is kept, once.
        let mut wait = Box::pin(mailbox.sends());
        assert_eq!(wait.as_mut().poll(&mut cx), Poll::Pending);
        drop(wait);
        mailbox.sends_waiting();
        mailbox.sends_waiting();
        assert_eq!(wakes(&count), 1, "no wait was registered");
        let mut wait = Box::pin(mailbox.sends());
        assert_eq!(wait.as_mut().poll(&mut cx), Poll::Ready(()));
        let mut wait = Box::pin(mailbox.sends());
        assert_eq!(
            wait.as_mut().poll(&mut cx),
            Poll::Pending,
            "two signals are one"
        );
    }
}
