//! Whether the app counts as active: Mars' `ActiveLogic`, which strategies use to hold short
//! heartbeats while the user may be looking.
//!
//! Mars treats the app as active in the foreground and for the first 10 minutes after it goes
//! to the background (users often flip back quickly); after that it is inactive and the smart
//! heartbeat may stretch. Our [`AppState::Inactive`] means the OS suspended the app, so it is
//! inactive at once, and going from there to `Background` does not reopen the 10-minute window
//! (the user did not come back).

use super::AppState;

/// How long the app stays active after leaving the foreground (Mars `kInactiveTimeout`).
pub(crate) const BACKGROUND_ACTIVE_MS: u64 = 10 * 60 * 1_000;

/// The app state and when the background window closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Activity {
    app_state: AppState,
    /// In `Background`, the app is active before this time.
    active_until_ms: u64,
}

impl Activity {
    /// The client core starts in the foreground.
    pub(crate) fn new() -> Activity {
        Activity {
            app_state: AppState::Foreground,
            active_until_ms: 0,
        }
    }

    pub(crate) fn on_app_state(&mut self, app_state: AppState, now_ms: u64) {
        if app_state == AppState::Background && self.app_state == AppState::Foreground {
            self.active_until_ms = now_ms.saturating_add(BACKGROUND_ACTIVE_MS);
        }
        self.app_state = app_state;
    }

    pub(crate) fn is_active(&self, now_ms: u64) -> bool {
        match self.app_state {
            AppState::Foreground => true,
            AppState::Background => now_ms < self.active_until_ms,
            AppState::Inactive => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn background_is_active_for_ten_minutes_only_after_the_foreground() {
        let mut activity = Activity::new();
        assert!(activity.is_active(0));
        activity.on_app_state(AppState::Background, 1_000);
        assert!(activity.is_active(1_000 + BACKGROUND_ACTIVE_MS - 1));
        assert!(!activity.is_active(1_000 + BACKGROUND_ACTIVE_MS));
        // A repeated Background event does not reopen the window.
        activity.on_app_state(AppState::Background, 2_000_000);
        assert!(!activity.is_active(2_000_001));
        activity.on_app_state(AppState::Inactive, 3_000_000);
        assert!(!activity.is_active(3_000_000));
        activity.on_app_state(AppState::Background, 3_000_001);
        assert!(!activity.is_active(3_000_002));
        activity.on_app_state(AppState::Foreground, 4_000_000);
        assert!(activity.is_active(4_000_000));
    }
}
