//! Login tokens that expire, and the device's wall clock that decides when to renew them.
//!
//! A device either sends a fixed token (`ClientConfig::token`: dev mode, `imlab load`) or
//! gets expiring tokens from its app backend ([`TokenIssuer`], in [`IssuedCredentials`]). It
//! keeps the last issued token with its expiry in its persistent state and, before each
//! login, renews it when its own wall clock (the device's time of day, [`Clock`]) says the
//! token expires within `renew_before`. That clock is the only thing in the client core that
//! reads the time of day: timers (heartbeats, timeouts, backoff) run on the monotonic clock,
//! and ordering runs on the server's seqs, so a clock jump moves nothing but this decision.
//!
//! A device clock that runs late keeps a token the server (whose clock is right) finds
//! expired: the server refuses the login as TOKEN_EXPIRED, and the client drops the token,
//! renews and logs in again at once. A token renewed for that very login and still refused
//! cannot be helped by retrying (the issuer's clock is off): that login is refused for good.
//! A device clock that runs early only renews sooner, and logs in with what the issuer gave
//! it even when its own clock calls it expired (the server's clock is the judge).

use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;

/// A token from the app backend, with the expiry the backend put in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// What the Login carries.
    pub token: String,
    /// When the server will stop accepting it, in Unix seconds (the issuer's clock).
    pub expiry_unix_s: u64,
}

/// The app backend's token endpoint, as the client core sees it.
pub trait TokenIssuer: Send + Sync + 'static {
    /// A fresh token for `user`.
    fn issue(&self, user: &str) -> IssuedToken;
}

/// Expiring credentials: where tokens come from, the device's wall clock, and the margin.
#[derive(Clone)]
pub struct IssuedCredentials {
    /// The app backend.
    pub issuer: Arc<dyn TokenIssuer>,
    /// The device's wall clock (may be wrong: a user set it, a carrier's NITZ jumped it).
    pub device_clock: Arc<dyn Clock>,
    /// Renew a token that expires within this long, by the device's clock.
    pub renew_before: Duration,
}

impl std::fmt::Debug for IssuedCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCredentials")
            .field("device_unix_ms", &self.device_clock.unix_ms())
            .field("renew_before", &self.renew_before)
            .finish_non_exhaustive()
    }
}

/// Why the token a login carries was (or was not) renewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// The device had none (first login, or the last one was refused as expired).
    Missing,
    /// The device's clock says the kept token expires within the margin.
    Expiring,
}

impl IssuedCredentials {
    /// The token for the next login: the kept one, or a new one (and why) when the device
    /// has none or its clock says the kept one is about to expire.
    pub fn token_for_login(
        &self,
        kept: &mut Option<IssuedToken>,
        user: &str,
    ) -> (String, Option<Renewal>) {
        let device_now_s = self.device_clock.unix_ms() / 1_000;
        let renewal = match kept {
            None => Some(Renewal::Missing),
            Some(token)
                if token.expiry_unix_s
                    <= device_now_s.saturating_add(self.renew_before.as_secs()) =>
            {
                Some(Renewal::Expiring)
            }
            Some(_) => None,
        };
        if renewal.is_some() {
            *kept = Some(self.issuer.issue(user));
        }
        let token = kept.as_ref().map(|t| t.token.clone()).unwrap_or_default();
        (token, renewal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    struct FixedClock(AtomicU64);
    impl Clock for FixedClock {
        fn unix_ms(&self) -> u64 {
            self.0.load(Ordering::Relaxed)
        }
    }
    struct Issuer(AtomicU64);
    impl TokenIssuer for Issuer {
        fn issue(&self, user: &str) -> IssuedToken {
            let n = self.0.fetch_add(1, Ordering::Relaxed);
            IssuedToken {
                token: format!("{user}-{n}"),
                expiry_unix_s: 10_000,
            }
        }
    }

    #[test]
    fn renews_by_the_device_clock_only() {
        let clock = Arc::new(FixedClock(AtomicU64::new(1_000_000)));
        let credentials = IssuedCredentials {
            issuer: Arc::new(Issuer(AtomicU64::new(1))),
            device_clock: clock.clone(),
            renew_before: Duration::from_secs(300),
        };
        let mut kept = None;
        let check = |kept: &mut Option<IssuedToken>| credentials.token_for_login(kept, "alice");
        assert_eq!(check(&mut kept), ("alice-1".into(), Some(Renewal::Missing)));
        assert_eq!(
            check(&mut kept),
            ("alice-1".into(), None),
            "kept while valid"
        );
        // The device's clock jumps past expiry minus the margin: renewed.
        clock.0.store(9_700_000, Ordering::Relaxed);
        assert_eq!(
            check(&mut kept),
            ("alice-2".into(), Some(Renewal::Expiring))
        );
        // Its clock says the new token is expired too: used anyway, renewed again next time.
        assert_eq!(
            check(&mut kept),
            ("alice-3".into(), Some(Renewal::Expiring))
        );
        // The clock jumps back: the kept token looks valid again (the server will judge).
        clock.0.store(1_000_000, Ordering::Relaxed);
        assert_eq!(check(&mut kept), ("alice-3".into(), None));
    }
}
