//! The client's persistent state: what survives a reconnect and an app restart.
//!
//! A real app keeps this in its database. The client core keeps it in a
//! [`SharedClientState`] owned outside any connection, so the simulator can kill the app
//! (dropping everything else) and start a new client core on the same state.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

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
#[derive(Debug, Clone)]
pub struct ClientState {
    /// This device's user.
    pub user: String,
    /// This device.
    pub device: String,
    /// Every inbox entry up to this seq has been processed, in order.
    pub last_seq: u64,
    /// Unacked sends, oldest first; resent in this order after every reconnect.
    pub outgoing: VecDeque<OutgoingMessage>,
    /// Counter behind client message ids (`<device>-<n>`).
    pub next_message_n: u64,
    /// The server store's generation `last_seq` refers to (0: none seen yet).
    pub inbox_epoch: u64,
}

/// The state shared between the client core and the app.
pub type SharedClientState = Arc<Mutex<ClientState>>;

impl ClientState {
    /// A device that has processed nothing yet.
    pub fn new(user: impl Into<String>, device: impl Into<String>) -> ClientState {
        ClientState {
            user: user.into(),
            device: device.into(),
            last_seq: 0,
            outgoing: VecDeque::new(),
            next_message_n: 1,
            inbox_epoch: 0,
        }
    }

    /// Wraps the state for sharing.
    pub fn shared(self) -> SharedClientState {
        Arc::new(Mutex::new(self))
    }

    /// A fresh client message id.
    pub fn next_client_msg_id(&mut self) -> String {
        let id = format!("{}-{}", self.device, self.next_message_n);
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
