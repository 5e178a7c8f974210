//! Expiring login tokens in the simulation: the app backend that issues them (on the true
//! simulated time, like the server) and each device's wall clock, which a `clock_jump`
//! fault moves. Used when the scenario sets `server.token_lifetime`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use imlab_core::auth::mint_token;
use imlab_core::client::{IssuedCredentials, IssuedToken, TokenIssuer};
use imlab_core::clock::Clock;

use crate::run::EPOCH_UNIX_S;
use crate::world::{Shared, now};

/// The secret the simulated server and app backend share.
pub const SIM_AUTH_SECRET: &str = "imlab-sim-secret";

/// Devices renew a token their clock says expires within this long.
pub const RENEW_BEFORE: Duration = Duration::from_secs(5 * 60);

/// The app backend's token endpoint: tokens valid `lifetime` from the true time.
struct SimTokenIssuer {
    lifetime: Duration,
}

impl TokenIssuer for SimTokenIssuer {
    fn issue(&self, user: &str) -> IssuedToken {
        let expiry_unix_s = EPOCH_UNIX_S + (now() + self.lifetime).as_secs();
        let token = mint_token(SIM_AUTH_SECRET, user, expiry_unix_s)
            .expect("simulated user ids are valid ids");
        IssuedToken {
            token,
            expiry_unix_s,
        }
    }
}

/// A device's wall clock: the true simulated time plus the device's offset.
struct DeviceClock {
    shared: Arc<Shared>,
    device: usize,
}

impl Clock for DeviceClock {
    fn unix_ms(&self) -> u64 {
        let true_ms = (EPOCH_UNIX_S * 1_000 + now().as_millis() as u64) as i64;
        let offset_ms = self.shared.device_clock_offset_ms[self.device].load(Ordering::Relaxed);
        true_ms.saturating_add(offset_ms).max(0) as u64
    }
}

/// The credentials of `device`'s app, or None when the scenario's tokens never expire.
pub fn credentials(shared: &Arc<Shared>, device: usize) -> Option<IssuedCredentials> {
    let lifetime = shared.scenario.server.token_lifetime?;
    Some(IssuedCredentials {
        issuer: Arc::new(SimTokenIssuer { lifetime }),
        device_clock: Arc::new(DeviceClock {
            shared: shared.clone(),
            device,
        }),
        renew_before: RENEW_BEFORE,
    })
}
