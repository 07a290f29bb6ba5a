//! Time: a monotonic uptime behind a trait, and the wall-clock offset learnt
//! from the daemon's `Downlink::Sync`.
//!
//! A device never invents a calendar date (the "1970" failure mode): until it
//! has been told the time, every stamp is [`Timestamp::Uptime`].

use coldchain_proto::{EventKind, MIN_WALL_UNIX_MS, Timestamp};

/// A monotonic millisecond clock that starts at 0 at boot.
pub trait Clock {
    /// Milliseconds since boot. Never goes backwards.
    fn uptime_ms(&self) -> u64;
}

/// A clock advanced by hand, for exact and instant tests (and the simulator's
/// accelerated time).
#[derive(Debug, Default)]
pub struct MockClock {
    now: core::cell::Cell<u64>,
}

impl MockClock {
    /// A clock at uptime 0.
    pub const fn new() -> Self {
        MockClock {
            now: core::cell::Cell::new(0),
        }
    }
    /// Moves the clock forward by `ms`.
    pub fn advance(&self, ms: u64) {
        self.now.set(self.now.get() + ms);
    }
    /// Sets the clock to `ms` if that is not in the past (a clock never goes back).
    pub fn set(&self, ms: u64) {
        if ms > self.now.get() {
            self.now.set(ms);
        }
    }
}

impl Clock for MockClock {
    fn uptime_ms(&self) -> u64 {
        self.now.get()
    }
}

impl<C: Clock + ?Sized> Clock for &C {
    fn uptime_ms(&self) -> u64 {
        (**self).uptime_ms()
    }
}

/// Why a sync was not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncRefused {
    /// The wall time is before [`MIN_WALL_UNIX_MS`]: the sender's clock is broken.
    Implausible,
    /// The clock was already set from a live copy; a retained one is older news.
    StaleRetained,
    /// A retained copy older than the device's policy allows, by its own clock.
    TooOld {
        /// Age of the copy, ms.
        age_ms: u64,
    },
}

/// The mapping from uptime to wall-clock time, once known.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeBase {
    /// `(uptime_ms, unix_ms)` at the moment of the last accepted sync.
    anchor: Option<(u64, u64)>,
    /// The anchor came from a live (not retained) message.
    live: bool,
}

impl TimeBase {
    /// Not synced: every stamp is uptime.
    pub const fn unsynced() -> Self {
        TimeBase {
            anchor: None,
            live: false,
        }
    }

    /// True once a sync has been accepted.
    pub fn is_synced(&self) -> bool {
        self.anchor.is_some()
    }

    /// Applies a sync received at `uptime_ms` that says the time is `unix_ms`.
    ///
    /// `retained` is true for a copy delivered as a retained MQTT message (it
    /// may be as old as the daemon's refresh interval): it sets an unsynced
    /// clock, but never overrides one set from a live copy. Returns the
    /// `ClockSynced` event to report.
    pub fn sync(
        &mut self,
        uptime_ms: u64,
        unix_ms: u64,
        retained: bool,
    ) -> Result<EventKind, SyncRefused> {
        if unix_ms < MIN_WALL_UNIX_MS {
            return Err(SyncRefused::Implausible);
        }
        if retained && self.live {
            return Err(SyncRefused::StaleRetained);
        }
        self.anchor = Some((uptime_ms, unix_ms));
        self.live = !retained;
        Ok(EventKind::ClockSynced { uptime_ms, unix_ms })
    }

    /// The wall-clock time at `uptime_ms`, if synced.
    pub fn wall_ms(&self, uptime_ms: u64) -> Option<u64> {
        match self.stamp(uptime_ms) {
            Timestamp::Wall(ms) => Some(ms),
            Timestamp::Uptime(_) => None,
        }
    }

    /// The stamp for something that happened at `uptime_ms` in this boot.
    ///
    /// Wall time once synced (also for moments before the sync: the uptime
    /// clock is the same monotonic clock), otherwise uptime.
    pub fn stamp(&self, uptime_ms: u64) -> Timestamp {
        match self.anchor {
            Some((u0, w0)) => {
                let wall = if uptime_ms >= u0 {
                    w0.saturating_add(uptime_ms - u0)
                } else {
                    w0.saturating_sub(u0 - uptime_ms)
                };
                if wall < MIN_WALL_UNIX_MS {
                    Timestamp::Uptime(uptime_ms)
                } else {
                    Timestamp::Wall(wall)
                }
            }
            None => Timestamp::Uptime(uptime_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T2025: u64 = 1_763_769_600_000;

    #[test]
    fn unsynced_stamps_are_uptime_never_1970() {
        let tb = TimeBase::unsynced();
        assert_eq!(tb.stamp(1234), Timestamp::Uptime(1234));
    }

    #[test]
    fn sync_maps_uptime_to_wall_both_sides_of_the_anchor() {
        let mut tb = TimeBase::unsynced();
        let ev = tb.sync(10_000, T2025, false).unwrap();
        assert_eq!(
            ev,
            EventKind::ClockSynced {
                uptime_ms: 10_000,
                unix_ms: T2025
            }
        );
        assert_eq!(tb.stamp(10_000), Timestamp::Wall(T2025));
        assert_eq!(tb.stamp(12_500), Timestamp::Wall(T2025 + 2_500));
        assert_eq!(tb.stamp(9_000), Timestamp::Wall(T2025 - 1_000));
    }

    #[test]
    fn a_1970_sync_is_refused() {
        let mut tb = TimeBase::unsynced();
        assert_eq!(tb.sync(5, 1_000, false), Err(SyncRefused::Implausible));
        assert_eq!(tb.stamp(5), Timestamp::Uptime(5));
    }

    #[test]
    fn retained_sync_never_overrides_a_live_one() {
        let mut tb = TimeBase::unsynced();
        tb.sync(0, T2025 - 60_000, true).unwrap();
        assert_eq!(tb.stamp(0), Timestamp::Wall(T2025 - 60_000));
        tb.sync(100, T2025, false).unwrap();
        assert_eq!(
            tb.sync(200, T2025 - 300_000, true),
            Err(SyncRefused::StaleRetained)
        );
        assert_eq!(tb.stamp(100), Timestamp::Wall(T2025));
    }

    #[test]
    fn mock_clock_never_goes_back() {
        let c = MockClock::new();
        c.advance(50);
        c.set(20);
        assert_eq!(c.uptime_ms(), 50);
        c.set(70);
        assert_eq!(c.uptime_ms(), 70);
    }
}
