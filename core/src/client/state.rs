//! The client's persistent state: what survives a reconnect and an app restart.
//!
//! A real app keeps this in its database. The client core keeps it in a
//! [`SharedClientState`] owned outside any connection, so the simulator can kill the app
//! (dropping everything else) and start a new client core on the same state.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use crate::client::IssuedToken;
use crate::proto::Target;

/// A send the server has not acked yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    /// Reused on every retry so the server stores the message once.
    pub client_msg_id: String,
    /// The conversation.
    pub to: Target,
    /// Payload.
    pub body: Bytes,
    /// Times this message was written to a connection.
    pub n_attempts: u32,
}

/// Persistent client state.
///
/// Kept small: a load generator holds one per client, tens of thousands. The two names share
/// one exact-size string, the token is boxed (absent unless tokens expire) and the window of
/// shown identities is made at the first one, so the shared state takes a 128-byte
/// allocation (160 with a boxed string per name and the window's ring inline; 224 with
/// `String` names and the token inline too).
#[derive(Debug, Clone)]
pub struct ClientState {
    /// This device's user, then the device: [`ClientState::user`] and
    /// [`ClientState::device`].
    names: Box<str>,
    /// Bytes of `names` that are the user's.
    user_len: u32,
    /// Every inbox entry up to this seq has been processed, in order.
    pub last_seq: u64,
    /// Unacked sends, oldest first; resent in this order after every reconnect.
    pub outgoing: VecDeque<OutgoingMessage>,
    /// Sends `outgoing` takes at most: the client's `outgoing_len_max` (at most `u32::MAX`),
    /// set when a client core takes the state. Kept beside the queue rather than in every
    /// handle, a handle is two pointers.
    outgoing_len_max: u32,
    /// Counter behind client message ids (`<device>-<n>`).
    pub next_message_n: u64,
    /// The server store's generation `last_seq` refers to (0: none seen yet).
    pub inbox_epoch: u64,
    /// Identities of the messages processed most recently (see [`ShownIds`]).
    pub shown: ShownIds,
    /// The last login token the app backend issued, when tokens expire
    /// (`ClientConfig::credentials`).
    pub token: Option<Box<IssuedToken>>,
}

/// Fingerprints of the last messages the app was shown, by identity (sender and client
/// message id), oldest first, at most `len_max` of them.
///
/// A store that is volatile by design (in memory) can crash after delivering a message but
/// before its sender heard the ack; the sender then sends it again, and the next store
/// generation stores it under a new seq. Seqs cannot tell those apart, identities can: a
/// message whose identity was shown is consumed (its seq counts) but not shown again. The
/// window only has to cover the messages a sender can still be retrying, which are recent.
///
/// Only identities shown under an earlier generation are looked up: within one generation
/// the server stores a retried send once (its idempotence, which the simulator's
/// `idempotent_send` checks), so a message there is never a repeat of another. Until the
/// first new generation a lookup is free; after one it scans the identities shown before it
/// that the window still holds (a linear scan of up to 1,024 was 5% of a load generator's
/// CPU at 32,000 msg/s).
///
/// The ring is made at the first identity shown: a device that was never shown a message (an
/// idle client of a load run, one of tens of thousands) holds 16 bytes for it, not 40.
#[derive(Debug, Clone, Default)]
pub struct ShownIds {
    ring: Option<Box<ShownRing>>,
    len_max: u32,
}

#[derive(Debug, Clone, Default)]
struct ShownRing {
    fingerprints: VecDeque<u64>,
    /// How many of the oldest `fingerprints` were shown under an earlier generation.
    earlier: u32,
}

impl ShownIds {
    /// Remembers at most `len_max` identities (0: none, and nothing is ever a repeat).
    pub fn new(len_max: usize) -> ShownIds {
        ShownIds {
            ring: None,
            len_max: u32::try_from(len_max).unwrap_or(u32::MAX),
        }
    }

    /// The fingerprint of a message's identity: FNV-1a, stable across runs and platforms.
    pub fn fingerprint(from_user: &str, client_msg_id: &str) -> u64 {
        let mut hash = 0xcbf2_9ce4_8422_2325_u64;
        let bytes = from_user.bytes().chain([0]).chain(client_msg_id.bytes());
        for byte in bytes {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        hash
    }

    /// True when the identity was shown under an earlier generation, within the window.
    pub fn contains(&self, fingerprint: u64) -> bool {
        self.ring.as_ref().is_some_and(|ring| {
            ring.fingerprints
                .range(..ring.earlier as usize)
                .any(|shown| *shown == fingerprint)
        })
    }

    /// Remembers a shown identity, forgetting the oldest past the bound.
    pub fn insert(&mut self, fingerprint: u64) {
        if self.len_max == 0 {
            return;
        }
        let ring = self.ring.get_or_insert_default();
        if ring.fingerprints.len() >= self.len_max as usize {
            ring.fingerprints.pop_front();
            ring.earlier = ring.earlier.saturating_sub(1);
        }
        ring.fingerprints.push_back(fingerprint);
    }

    /// The server's store is a new generation: every identity shown so far was shown under an
    /// earlier one.
    pub fn new_generation(&mut self) {
        if let Some(ring) = &mut self.ring {
            ring.earlier = u32::try_from(ring.fingerprints.len()).unwrap_or(u32::MAX);
        }
    }

    /// Identities remembered now.
    pub fn len(&self) -> usize {
        self.ring.as_ref().map_or(0, |ring| ring.fingerprints.len())
    }

    /// True when none is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Identities a client remembers by default: a sender retries at most `outgoing_len_max`
/// (1,024) messages, and the messages that come back after a crash are the newest ones.
pub const SHOWN_IDS_LEN_MAX: usize = 1_024;

/// The state shared between the client core and the app.
pub type SharedClientState = Arc<Mutex<ClientState>>;

impl ClientState {
    /// A device that has processed nothing yet.
    ///
    /// Panics on a user name of 4 GiB or more (the server refuses any over 128 bytes).
    pub fn new(user: impl Into<String>, device: impl AsRef<str>) -> ClientState {
        let mut names = user.into();
        let user_len = u32::try_from(names.len()).expect("a user name under 4 GiB");
        names.push_str(device.as_ref());
        ClientState {
            names: names.into_boxed_str(),
            user_len,
            last_seq: 0,
            outgoing: VecDeque::new(),
            outgoing_len_max: u32::MAX,
            next_message_n: 1,
            inbox_epoch: 0,
            shown: ShownIds::new(SHOWN_IDS_LEN_MAX),
            token: None,
        }
    }

    /// This device's user.
    pub fn user(&self) -> &str {
        &self.names[..self.user_len as usize]
    }

    /// This device.
    pub fn device(&self) -> &str {
        &self.names[self.user_len as usize..]
    }

    /// Sends the outgoing queue takes at most.
    pub fn outgoing_len_max(&self) -> usize {
        self.outgoing_len_max as usize
    }

    /// Takes the send at `index` off the outgoing queue. An emptied queue lets its slots go:
    /// a client that had sent kept at least four (about 400 bytes) for good, and after a
    /// burst queued offline, as many as the burst.
    pub(super) fn take_outgoing(&mut self, index: usize) -> Option<OutgoingMessage> {
        let taken = self.outgoing.remove(index);
        if self.outgoing.is_empty() {
            self.outgoing = VecDeque::new();
        }
        taken
    }

    /// Bounds the outgoing queue (a client core does, from its config).
    pub(super) fn set_outgoing_len_max(&mut self, len_max: usize) {
        self.outgoing_len_max = u32::try_from(len_max).unwrap_or(u32::MAX);
    }

    /// Wraps the state for sharing.
    pub fn shared(self) -> SharedClientState {
        Arc::new(Mutex::new(self))
    }

    /// A fresh client message id.
    pub fn next_client_msg_id(&mut self) -> String {
        let id = format!("{}-{}", self.device(), self.next_message_n);
        self.next_message_n += 1;
        id
    }
}

/// Locks shared client state, surviving a poisoned lock (the state is plain data).
pub fn lock(state: &SharedClientState) -> std::sync::MutexGuard<'_, ClientState> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shared_state_is_one_128_byte_allocation() {
        // An `Arc<Mutex<_>>`'s allocation: two counts (16 bytes) and the mutex. jemalloc's
        // size classes step from 128 to 160; it took 160 bytes with a string per name and the
        // window's ring inline, 200 bytes (class 224) before that.
        let size = 16 + std::mem::size_of::<Mutex<ClientState>>();
        assert!(size <= 128, "the shared client state takes {size} bytes");
        let state = ClientState::new(format!("u{}", 17), format!("run7d{}", 17));
        assert_eq!((state.user(), state.device()), ("u17", "run7d17"));
        let state = ClientState::new("", "d");
        assert_eq!((state.user(), state.device()), ("", "d"));
    }

    #[test]
    fn shown_ids_remember_the_newest_up_to_the_bound() {
        let mut shown = ShownIds::new(2);
        let [a, b, c] = ["d1-1", "d1-2", "d1-3"].map(|id| ShownIds::fingerprint("alice", id));
        assert_ne!(
            a,
            ShownIds::fingerprint("bob", "d1-1"),
            "the sender is part of it"
        );
        assert_ne!(
            ShownIds::fingerprint("ab", "c"),
            ShownIds::fingerprint("a", "bc"),
            "the parts are separated"
        );
        shown.insert(a);
        shown.insert(b);
        assert!(
            !shown.contains(a),
            "within one generation the server's idempotence dedupes"
        );
        shown.new_generation();
        assert!(shown.contains(a) && shown.contains(b) && !shown.contains(c));
        shown.insert(c);
        assert!(!shown.contains(a), "the oldest is forgotten at the bound");
        assert!(
            shown.contains(b),
            "still shown under the earlier generation"
        );
        assert!(!shown.contains(c), "shown under this one");
        assert_eq!(shown.len(), 2);
        shown.new_generation();
        assert!(shown.contains(b) && shown.contains(c));
        let mut off = ShownIds::new(0);
        off.insert(a);
        off.new_generation();
        assert!(!off.contains(a) && off.is_empty());
    }

    #[test]
    fn shown_ids_look_up_the_earlier_generation_across_the_rings_wrap() {
        // The deque's storage wraps once the oldest are popped: the earlier identities then
        // lie in both of its slices.
        let mut shown = ShownIds::new(4);
        let ids: Vec<u64> = (0..6)
            .map(|n| ShownIds::fingerprint("alice", &format!("d1-{n}")))
            .collect();
        for id in &ids {
            shown.insert(*id);
        }
        shown.new_generation();
        for id in &ids[..2] {
            assert!(!shown.contains(*id), "forgotten at the bound");
        }
        for id in &ids[2..] {
            assert!(shown.contains(*id));
        }
        let later = ShownIds::fingerprint("alice", "d1-6");
        shown.insert(later);
        assert!(!shown.contains(ids[2]) && !shown.contains(later));
        for id in &ids[3..] {
            assert!(shown.contains(*id));
        }
    }
}
