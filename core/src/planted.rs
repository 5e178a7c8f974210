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
    /// The client is blind to weak links: it times out a Ping or a send by whole frames only
    /// (bytes of a sync page still arriving do not count as life), and every sync page fills
    /// the frame whatever the link carries.
    /// On a 2G link pages outlast the timeouts and devices livelock. Caught by `convergence`
    /// and `no_acked_loss` (the `gprs-weak-link` scenario).
    pub weak_link_blind: bool,
    /// The client shows a message again when a volatile store's new generation returns it
    /// under a new seq (it dedupes by seq only). Caught by `no_duplicates` and
    /// `sender_order` (the `volatile-crash-storm` scenario).
    pub repeats_shown_again: bool,
    /// The client takes a NotifyData past a gap as the next message (a higher seq pushed
    /// before a lower one, processed anyway): the skipped seqs are never shown. Caught by
    /// `seq_monotonic`.
    pub gap_jumps_ahead: bool,
    /// After a reconnect the client resends its unacked sends newest first, so a
    /// conversation's messages are stored out of order. Caught by `sender_order`.
    pub resends_newest_first: bool,
    /// The client does not sync after logging in: what arrived while it was away appears
    /// only when a later push reveals the gap ("messages sent while a device slept never
    /// appear until refresh"). Caught by `convergence`.
    pub no_sync_on_connect: bool,
}
