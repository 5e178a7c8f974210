//! Offline push: how the server reaches a user with no live connection.
//!
//! The server calls a [`PushProvider`] when a message lands in the inbox of a user none of
//! whose devices is connected. Real deployments forward to APNs/FCM; `imlab serve` logs; the
//! simulator plugs in its own push-service host.

/// One wake-up for a user who has a new message and no live connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushNotice {
    /// The offline user.
    pub user: String,
    /// The new message's seq in that user's inbox.
    pub seq: u64,
    /// Server-wide id of the message.
    pub msg_id: u64,
    /// Who sent it.
    pub from_user: String,
}

/// Receives offline pushes. `push` is called on the delivery path, so implementations must
/// not block: hand the notice to a bounded queue and drop (and count) what does not fit.
pub trait PushProvider: Send + Sync + 'static {
    /// Delivers (or queues) one wake-up.
    fn push(&self, notice: PushNotice);
}

/// Logs each push at debug level; the default of `imlab serve`.
#[derive(Debug, Default, Clone, Copy)]
pub struct LoggingPushProvider;

impl PushProvider for LoggingPushProvider {
    fn push(&self, notice: PushNotice) {
        tracing::debug!(
            user = %notice.user,
            seq = notice.seq,
            msg_id = notice.msg_id,
            from = %notice.from_user,
            "offline push"
        );
    }
}
