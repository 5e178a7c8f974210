//! imlab-sim: the deterministic simulator. imlab-core's server and client cores run unchanged
//! on turmoil hosts, behind carrier proxies that model mobile NATs and links; a run ends with
//! the invariant checker's verdicts, metrics, and a trace hash that replays exactly.
//!
//! Modules:
//! - [`scenario`]: scenario files; [`carrier`]: carrier profiles and presets (imlab-carrier's);
//!   [`presets`]: the presets listed with their parameters and sources;
//! - [`world`]: users, devices and chat groups, and the state hosts share;
//! - [`proxy`]: the carrier proxy (NAT and link); [`push`]: the push service;
//! - [`device`]: one device's app; [`run`]: the driver, faults, heal and quiet;
//!   [`tokens`]: expiring login tokens and the devices' wall clocks;
//!   [`disk`]: the server's simulated disk and its stall and failure windows;
//! - [`ledger`], [`invariants`], [`metrics`], [`trace`]: what a run records and concludes;
//!   [`storm`]: how fast devices return after each server crash;
//! - [`timeline`]: a run's trace laid out as imlab-reports' timeline page;
//! - [`results`]: results.json and metrics.csv; [`sweep`]: many seeds, their spread and
//!   sweep.csv; [`shard`]: a sweep split across machines (`--shard I/N`) and merged;
//! - [`energy`]: the radio energy model (LTE, 3G, Wi-Fi);
//! - [`compare`]: the heartbeat strategy x carrier matrix (`imlab heartbeat compare`);
//! - [`fuzz`]: random scenarios over the whole space and shrinking (`imlab sim fuzz`).
//!
//! Replay needs tokio built with `--cfg tokio_unstable`: only then does turmoil seed tokio's
//! scheduler, and with it the order of any unbiased `select!`. `.cargo/config.toml` sets the
//! flag, but a `RUSTFLAGS` variable in the environment replaces it silently, so a build
//! without it is refused here. Every `select!` the simulation reaches is also `biased`.

#[cfg(not(tokio_unstable))]
compile_error!(
    "imlab-sim must be built with `--cfg tokio_unstable`, or simulations do not replay from \
     their seed (turmoil seeds tokio's scheduler only then). .cargo/config.toml sets it; a \
     RUSTFLAGS environment variable replaces that setting: unset RUSTFLAGS, or add \
     `--cfg tokio_unstable` to it."
);

pub use imlab_carrier::profile as carrier;
pub mod compare;
pub mod device;
pub mod disk;
pub mod energy;
pub mod fuzz;
pub mod invariants;
pub mod ledger;
pub mod metrics;
/// The radio hop's in-memory pipe: imlab-proxy's, which `imlab load --carrier` uses too.
pub use imlab_proxy::pipe;
pub mod presets;
pub mod proxy;
pub mod push;
pub mod queue;
pub mod results;
pub mod run;
pub mod scenario;
pub mod shard;
pub mod storm;
pub mod sweep;
pub mod timeline;
pub mod tokens;
pub mod trace;
pub mod world;

/// Deliberate bugs for proving the invariant checker. All but `volatile_store` (the
/// simulator's own) live in imlab-core and need the `planted-bugs` feature.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Planted {
    /// The server acks before the store has the message (write-behind).
    pub ack_before_store: bool,
    /// The store stores a retried send again.
    pub skip_dedupe: bool,
    /// The durable store trusts its dedupe filter without the ids on its disk at open, so a
    /// retry of a send made before a crash is stored again.
    pub dedupe_filter_unfilled: bool,
    /// The client processes pushes without checking their seq.
    pub push_skips_seq_check: bool,
    /// The durable store's disk is lost on a server crash (the in-memory store is lost
    /// anyway).
    pub volatile_store: bool,
    /// The durable store answers an append before its commit is durable.
    pub ack_before_commit: bool,
    /// The client judges liveness by whole frames and asks for full-frame sync pages.
    pub weak_link_blind: bool,
    /// The client shows a message again when a new store generation returns it.
    pub repeats_shown_again: bool,
    /// The client takes a push past a gap as the next message.
    pub gap_jumps_ahead: bool,
    /// The client resends its unacked sends newest first after a reconnect.
    pub resends_newest_first: bool,
    /// The client does not sync after logging in.
    pub no_sync_on_connect: bool,
}

impl Planted {
    /// Panics when a bug is asked for that this build cannot plant.
    pub fn assert_supported(&self) {
        let needs_feature = self.ack_before_store
            || self.skip_dedupe
            || self.dedupe_filter_unfilled
            || self.push_skips_seq_check
            || self.ack_before_commit
            || self.weak_link_blind
            || self.repeats_shown_again
            || self.gap_jumps_ahead
            || self.resends_newest_first
            || self.no_sync_on_connect;
        assert!(
            cfg!(feature = "planted-bugs") || !needs_feature,
            "planted bugs in imlab-core need the `planted-bugs` feature"
        );
    }
}
