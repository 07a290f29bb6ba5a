//! Applying a [`Downlink::Sync`](coldchain_proto::Downlink::Sync): the clock
//! and the settings, shared by both uplinks.
//!
//! * The clock goes through [`TimeBase::sync`] (no 1970, a retained copy never
//!   overrides a live one).
//! * A retained MQTT copy may be old. Once the device has a clock, it measures
//!   the copy's age with its own clock and ignores the whole message when it
//!   is older than `max_retained_age_ms` (see [`SyncPolicy`]). Before the
//!   first sync it cannot measure the age and takes the copy: the staleness
//!   bound is then the daemon's refresh interval (proto/README.md).
//! * Settings carry a monotonic `version`: older or equal versions are ignored.

use coldchain_proto::{EventKind, Settings};

use crate::clock::{SyncRefused, TimeBase};

/// How old a retained sync may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncPolicy {
    /// A retained copy older than this (by the device's own synced clock) is
    /// ignored entirely. Set it above the daemon's `time_refresh_s`.
    pub max_retained_age_ms: u64,
}

impl Default for SyncPolicy {
    fn default() -> Self {
        // Twice the daemon's default refresh interval (5 min).
        SyncPolicy {
            max_retained_age_ms: 10 * 60 * 1000,
        }
    }
}

/// The settings in force: none until the daemon sent some.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SettingsState {
    current: Option<Settings>,
}

impl SettingsState {
    /// No settings received yet.
    pub const fn new() -> Self {
        SettingsState { current: None }
    }
    /// The settings in force.
    pub fn current(&self) -> Option<&Settings> {
        self.current.as_ref()
    }
    /// Takes `s` if its version is newer than what is in force; true if taken.
    pub fn offer(&mut self, s: Settings) -> bool {
        if self
            .current
            .as_ref()
            .is_some_and(|c| s.version <= c.version)
        {
            return false;
        }
        self.current = Some(s);
        true
    }
}

/// What a sync did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncOutcome {
    /// The clock: the `ClockSynced` event to report, or why not.
    pub clock: Result<EventKind, SyncRefused>,
    /// True if the message's settings replaced the ones in force.
    pub settings_changed: bool,
}

/// Applies a sync received at `uptime_ms`. `retained`: delivered as a
/// retained MQTT message (serial syncs are always live).
pub fn apply_sync(
    tb: &mut TimeBase,
    settings: &mut SettingsState,
    policy: &SyncPolicy,
    uptime_ms: u64,
    unix_ms: u64,
    new: Settings,
    retained: bool,
) -> SyncOutcome {
    if retained && let Some(now) = tb.wall_ms(uptime_ms) {
        let age_ms = now.saturating_sub(unix_ms);
        if age_ms > policy.max_retained_age_ms {
            return SyncOutcome {
                clock: Err(SyncRefused::TooOld { age_ms }),
                settings_changed: false,
            };
        }
    }
    let clock = tb.sync(uptime_ms, unix_ms, retained);
    let settings_changed = settings.offer(new);
    SyncOutcome {
        clock,
        settings_changed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_763_769_600_000;

    fn settings(version: u32) -> Settings {
        Settings {
            version,
            upload_interval_s: 300,
            status_interval_s: 900,
            tilt_limit_deg: 45,
            channels: heapless::Vec::new(),
        }
    }

    #[test]
    fn newer_settings_replace_older_and_equal_do_not() {
        let mut s = SettingsState::new();
        assert!(s.offer(settings(2)));
        assert!(!s.offer(settings(1)));
        assert!(!s.offer(settings(2)));
        assert!(s.offer(settings(3)));
        assert_eq!(s.current().map(|c| c.version), Some(3));
    }

    #[test]
    fn a_retained_sync_older_than_the_policy_is_ignored_whole() {
        let p = SyncPolicy {
            max_retained_age_ms: 60_000,
        };
        let mut tb = TimeBase::unsynced();
        let mut s = SettingsState::new();
        // Unsynced: the age cannot be measured, the retained copy is taken.
        let o = apply_sync(&mut tb, &mut s, &p, 1_000, T, settings(1), true);
        assert!(o.clock.is_ok() && o.settings_changed);
        // 2 min later by our clock, a retained copy made at T: too old.
        let o = apply_sync(&mut tb, &mut s, &p, 121_000, T, settings(2), true);
        assert_eq!(o.clock, Err(SyncRefused::TooOld { age_ms: 120_000 }));
        assert!(!o.settings_changed);
        assert_eq!(s.current().map(|c| c.version), Some(1));
        // A fresh retained copy (30 s old) is taken.
        let o = apply_sync(&mut tb, &mut s, &p, 121_000, T + 90_000, settings(2), true);
        assert!(o.clock.is_ok() && o.settings_changed);
        // A live copy is never judged by age.
        let o = apply_sync(&mut tb, &mut s, &p, 500_000, T, settings(3), false);
        assert!(o.clock.is_ok() && o.settings_changed);
    }
}
