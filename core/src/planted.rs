//! Deliberate bugs that prove the simulator's invariant checker can fail.
//!
//! Compiled only with the `planted-bugs` feature (tests), switched on per run. Each bug
//! breaks one rule of the timeline model in the way real IM servers and clients have broken
//! it; each must be caught by the invariant it breaks.

/// Which bugs are on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlantedBugs {
    /// The server acks a send at once and stores it a second later (write-behind); a crash
    /// in between loses an acked message. Caught by `no_acked_loss`.
    pub ack_before_store: bool,
    /// The store ignores client message ids, so a retried send is stored twice. Caught by
    /// `idempotent_send`.
    pub skip_dedupe: bool,
    /// The client processes every NotifyData without comparing its seq with the last one
    /// processed. Caught by `no_duplicates` / `seq_monotonic`.
    pub push_skips_seq_check: bool,
}
