//! When to sample which channel, and what a sample means.
//!
//! * Per-channel intervals, and a faster alarm-mode interval while a channel
//!   is beyond an on-device threshold (or faulted, to see it recover).
//! * Plausibility limits per channel kind: a value the sensor kind cannot
//!   physically produce is a fault (`OutOfRange`), never a reading: a -242 °C
//!   RTD is a broken probe.
//! * Stuck-sensor detection: a real probe's last digit moves; the same exact
//!   milli-value `stuck_after` times in a row is reported as a `Stuck` fault
//!   until the value moves again.
//!
//! Time is passed in (uptime ms from a [`crate::Clock`]), so tests are exact
//! and instant with [`crate::clock::MockClock`].

use coldchain_proto::{ChannelKind, FaultKind, MAX_CHANNELS, Measurement};

use crate::batch::{BatchError, ReadingBatch};

/// Physical limits per channel kind, milli-units, inclusive: the wire
/// contract's table ([`ChannelKind::plausible_range`]), which the daemon
/// applies again to every frame.
pub fn plausible(kind: ChannelKind) -> (i32, i32) {
    kind.plausible_range()
}

/// One channel's sampling settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelConfig {
    /// Channel number on the wire.
    pub channel: u8,
    /// Kind.
    pub kind: ChannelKind,
    /// Normal interval, ms.
    pub interval_ms: u32,
    /// Interval while beyond a threshold or faulted, ms.
    pub alarm_interval_ms: u32,
    /// Alarm mode above this (milli-units).
    pub high_milli: Option<i32>,
    /// Alarm mode below this (milli-units).
    pub low_milli: Option<i32>,
    /// Identical consecutive values that make the sensor "stuck" (0: never).
    pub stuck_after: u16,
}

#[derive(Debug, Clone, Copy)]
struct State {
    cfg: ChannelConfig,
    next_due_ms: u64,
    alarm: bool,
    last: Option<i32>,
    repeats: u16,
}

/// The sampling schedule and checks of up to [`MAX_CHANNELS`] channels.
#[derive(Debug, Clone, Default)]
pub struct Sampler {
    ch: heapless::Vec<State, MAX_CHANNELS>,
}

impl Sampler {
    /// No channels.
    pub const fn new() -> Self {
        Sampler {
            ch: heapless::Vec::new(),
        }
    }

    /// Adds a channel, first due at `now_ms`. Err if all slots are used.
    pub fn add(&mut self, cfg: ChannelConfig, now_ms: u64) -> Result<(), ChannelConfig> {
        self.ch
            .push(State {
                cfg,
                next_due_ms: now_ms,
                alarm: false,
                last: None,
                repeats: 0,
            })
            .map_err(|s| s.cfg)
    }

    /// When the next channel is due (sleep until then).
    pub fn next_due_ms(&self) -> Option<u64> {
        self.ch.iter().map(|s| s.next_due_ms).min()
    }

    /// True if `channel` is in alarm mode.
    pub fn in_alarm(&self, channel: u8) -> bool {
        self.ch.iter().any(|s| s.cfg.channel == channel && s.alarm)
    }

    /// Samples every channel due at `now_ms` with `read`, checks the value,
    /// reschedules, and appends the readings to `batch`. Returns how many were
    /// added. A full batch stops early (the rest stay due: seal and call again).
    pub fn poll(
        &mut self,
        now_ms: u64,
        batch: &mut ReadingBatch,
        read: impl FnMut(&ChannelConfig) -> Result<i32, FaultKind>,
    ) -> Result<usize, BatchError> {
        self.poll_up_to(now_ms, batch, usize::MAX, read)
    }

    /// As [`Sampler::poll`], for frames smaller than a full batch: stops
    /// with `Err(Full)` once `batch` holds `limit` readings (the channels not
    /// read stay due: seal and call again).
    pub fn poll_up_to(
        &mut self,
        now_ms: u64,
        batch: &mut ReadingBatch,
        limit: usize,
        mut read: impl FnMut(&ChannelConfig) -> Result<i32, FaultKind>,
    ) -> Result<usize, BatchError> {
        let mut n = 0;
        for s in self.ch.iter_mut().filter(|s| s.next_due_ms <= now_ms) {
            if batch.is_full() || batch.len() >= limit {
                return Err(BatchError::Full);
            }
            let m = check(s, read(&s.cfg));
            batch.push_reading(now_ms, s.cfg.channel, s.cfg.kind, m)?;
            n += 1;
            s.alarm = match m {
                Measurement::Valid(v) => {
                    s.cfg.high_milli.is_some_and(|h| v > h)
                        || s.cfg.low_milli.is_some_and(|l| v < l)
                }
                Measurement::Fault(_) => true,
            };
            let step = if s.alarm {
                s.cfg.alarm_interval_ms
            } else {
                s.cfg.interval_ms
            };
            // Scheduled from the due time, not from now, so a late poll does not drift.
            s.next_due_ms = (s.next_due_ms + u64::from(step.max(1))).max(now_ms + 1);
        }
        Ok(n)
    }
}

fn check(s: &mut State, raw: Result<i32, FaultKind>) -> Measurement {
    let v = match raw {
        Ok(v) => v,
        Err(f) => {
            s.last = None;
            s.repeats = 0;
            return Measurement::Fault(f);
        }
    };
    if !s.cfg.kind.is_plausible(v) {
        s.last = None;
        s.repeats = 0;
        return Measurement::Fault(FaultKind::OutOfRange);
    }
    if s.last == Some(v) {
        s.repeats = s.repeats.saturating_add(1);
    } else {
        s.last = Some(v);
        s.repeats = 1;
    }
    if s.cfg.stuck_after > 0 && s.repeats >= s.cfg.stuck_after {
        return Measurement::Fault(FaultKind::Stuck);
    }
    Measurement::Valid(v)
}
