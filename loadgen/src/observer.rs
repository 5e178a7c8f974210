//! The client cores' observer: turns each virtual device's events into ledger entries.

use std::sync::{Arc, Mutex};

use imlab_core::client::{ClientEvent, ClientObserver, ClientState};

use crate::causes;
use crate::ledger::LoadLedger;

/// One virtual device's observer.
pub struct Observer {
    /// The run's ledger.
    pub ledger: Arc<Mutex<LoadLedger>>,
    /// The device's number.
    pub client: u32,
    /// Whether its connection is logged in now.
    pub connected: Mutex<bool>,
}

impl ClientObserver for Observer {
    fn on_event(&self, state: &ClientState, event: &ClientEvent<'_>) {
        let mut ledger = self.ledger.lock().unwrap_or_else(|p| p.into_inner());
        match event {
            ClientEvent::Connecting => ledger.connecting(self.client),
            ClientEvent::Connected { max_seq, .. } => {
                *self.connected.lock().unwrap_or_else(|p| p.into_inner()) = true;
                ledger.connected(self.client, *max_seq);
                ledger.processed(self.client, state.last_seq);
            }
            ClientEvent::Disconnected(cause) => {
                let was =
                    std::mem::take(&mut *self.connected.lock().unwrap_or_else(|p| p.into_inner()));
                let text = format!("{cause:?}");
                let kind = text.split(['(', ' ']).next().unwrap_or("").to_string();
                if !was {
                    ledger.last_failure = Some(text);
                    ledger.login_failed(self.client, causes::login_failure(cause));
                }
                ledger.disconnected(self.client, &kind, was);
            }
            ClientEvent::Message(message) => {
                ledger.delivered(self.client, &message.client_msg_id);
                ledger.processed(self.client, state.last_seq);
            }
            ClientEvent::InboxReset { .. } => ledger.processed(self.client, state.last_seq),
            ClientEvent::SendAcked { client_msg_id, .. } => ledger.acked(client_msg_id),
            ClientEvent::SendRefused {
                client_msg_id,
                code,
            } => ledger.send_refused(client_msg_id, causes::error_code(*code)),
            ClientEvent::SendFailed { client_msg_id, .. } => ledger.send_failed(client_msg_id),
            ClientEvent::GroupReply(_) => ledger.groups_created += 1,
            ClientEvent::Stopped(exit) => {
                if let Some(cause) = causes::exit(exit) {
                    ledger.last_failure = Some(format!("{exit:?}"));
                    ledger.login_failed(self.client, cause);
                    ledger.client_stopped(self.client);
                }
            }
            _ => {}
        }
    }
}
