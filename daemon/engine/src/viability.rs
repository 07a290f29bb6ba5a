//! The viability window of a fresh product: how much of it the journey has used,
//! how much is left, and how much will be left at ETA if the current temperature
//! persists.
//!
//! The nominal window (e.g. 48 h from collection) is defined at the decay model's
//! reference temperature. Time is weighted by the model's rate factor: an hour at
//! 25 °C under Arrhenius with Ea/R = 10 000 K against 5 °C uses 11.15 hours of
//! window; under a loss table it uses `loss(25 °C) / loss(5 °C)` hours. Time with
//! no valid reading (before the first one, long gaps, probe faults) uses the
//! profile's `unknown_rate_factor` (1.0 by default: as at the reference).
//!
//! Two conditions, one of each per shipment at most (their identity's start is
//! the window start, so an updated ETA does not make a new alarm):
//! * [`ConditionKind::ViabilityWarning`]: at some reading, the window predicted to
//!   remain at ETA was at or below the profile's margin, i.e. *before* it ran out.
//!   Checked at every valid reading and at the evaluation horizon.
//! * [`ConditionKind::ViabilityGone`]: the window is used up; fires at the exact
//!   moment the consumed time reaches the nominal window.
#![deny(missing_docs)]

use serde::{Deserialize, Serialize};

use crate::alarm::{
    Condition, ConditionKind, Sample, SampleValue, SegmentRule, Series, ShipmentFacts,
};
use crate::profile::{DecayModel, Profile, Severity};

const HOUR_MS: f64 = 3_600_000.0;

/// Where the shipment stands against its viability window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViabilityReport {
    /// Start of the window (collection, else departure, else first sample), device ms.
    pub window_start_ms: i64,
    /// The moment this report describes (the evaluation horizon or the last
    /// sample), device ms.
    pub as_of_ms: i64,
    /// Nominal window at the reference temperature, ms.
    pub nominal_ms: i64,
    /// Window consumed, reference-equivalent ms (may exceed `nominal_ms`).
    pub consumed_ms: i64,
    /// Window remaining, ms; 0 once gone.
    pub remaining_ms: i64,
    /// Time without a valid reading inside the window, ms.
    pub unknown_ms: i64,
    /// Latest valid temperature, if it still stands at `as_of_ms`, milli-°C.
    pub current_milli_c: Option<i32>,
    /// Rate factor now (of the current temperature, or the unknown factor).
    pub current_rate_factor: f64,
    /// Window predicted to remain at ETA if the current rate persists, ms;
    /// negative when it would run out before ETA. `None` without an ETA.
    pub predicted_at_eta_ms: Option<i64>,
    /// When the window runs out if the current rate persists, device ms;
    /// `None` if it never does (rate 0).
    pub runs_out_ms: Option<i64>,
    /// Loss accumulated so far, %, for a table model.
    pub loss_pct: Option<f64>,
    /// `ViabilityWarning` and `ViabilityGone` conditions, if any.
    pub conditions: Vec<Condition>,
}

/// The outcome of [`evaluate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ViabilityOutcome {
    /// No nominal window for this shipment, or no decay model in the profile
    /// (a cryopreserved product while it stays cold).
    NotApplicable,
    /// Computed.
    Computed(ViabilityReport),
}

/// Consumption of the window as it walks through time.
#[derive(Debug, Clone)]
struct Walk {
    model: DecayModel,
    unknown_factor: f64,
    nominal: f64,
    consumed: f64,
    loss_pct: f64,
    gone_at: Option<i64>,
}

impl Walk {
    fn consume(&mut self, t0: i64, len: i64, factor: f64, loss_per_h: f64) {
        if len <= 0 {
            return;
        }
        let add = len as f64 * factor;
        if self.gone_at.is_none() && self.consumed + add >= self.nominal && factor > 0.0 {
            let dt = ((self.nominal - self.consumed) / factor).ceil().max(0.0);
            #[allow(clippy::cast_possible_truncation)]
            let dt = dt as i64;
            self.gone_at = Some(t0 + dt.min(len));
        }
        self.consumed += add;
        self.loss_pct += len as f64 / HOUR_MS * loss_per_h;
    }

    fn unknown(&mut self, t0: i64, len: i64) {
        let loss = self.ref_loss() * self.unknown_factor;
        self.consume(t0, len, self.unknown_factor, loss);
    }

    fn ref_loss(&self) -> f64 {
        match &self.model {
            DecayModel::Table { reference, .. } => {
                self.model.loss_pct_per_hour(reference.0).unwrap_or(0.0)
            }
            DecayModel::Arrhenius { .. } => 0.0,
        }
    }

    fn remaining(&self) -> f64 {
        self.nominal - self.consumed
    }
}

fn round_ms(x: f64) -> i64 {
    #[allow(clippy::cast_possible_truncation)]
    let r = x.round().clamp(i64::MIN as f64, i64::MAX as f64) as i64;
    r
}

/// The viability report of the shipment under the profile's decay model.
pub fn evaluate(profile: &Profile, series: &Series, facts: &ShipmentFacts) -> ViabilityOutcome {
    let Some(mut f) = ViabilityFold::new(profile, facts) else {
        return ViabilityOutcome::NotApplicable;
    };
    let as_of = facts.end_ms.or_else(|| series.last().map(|s| s.t_ms));
    let mut it = series.iter().peekable();
    while let Some(smp) = it.next() {
        let next = it.peek().map(|n| n.t_ms);
        f.push(smp.t_ms, smp.value, next, as_of);
    }
    let newest = as_of.map_or_else(|| series.last(), |t| series.at_or_before(t));
    f.finish(newest, as_of)
}

/// [`evaluate`] as a fold over samples in time order, each with the time of
/// the sample after it.
#[derive(Debug, Clone)]
pub struct ViabilityFold {
    settings: crate::profile::ViabilitySettings,
    nominal_ms: i64,
    eta_ms: Option<i64>,
    max_gap_ms: i64,
    /// Window start (collection, departure or the first sample).
    start: Option<i64>,
    walk: Walk,
    warning: Option<Condition>,
    cursor: i64,
    unknown_ms: i64,
}

impl ViabilityFold {
    /// Before any sample; `None` when the shipment has no window or the
    /// profile no decay model.
    pub fn new(profile: &Profile, facts: &ShipmentFacts) -> Option<Self> {
        let (Some(nominal_ms), Some(model)) = (facts.nominal_window_ms, profile.decay.as_ref())
        else {
            return None;
        };
        let settings = profile.viability;
        let start = facts.collection_ms.or(facts.departure_ms);
        Some(ViabilityFold {
            settings,
            nominal_ms,
            eta_ms: facts.eta_ms,
            max_gap_ms: facts.max_gap_ms,
            start,
            walk: Walk {
                model: model.clone(),
                unknown_factor: settings.unknown_rate_factor,
                nominal: nominal_ms as f64,
                consumed: 0.0,
                loss_pct: 0.0,
                gone_at: None,
            },
            warning: None,
            cursor: start.unwrap_or(i64::MIN),
            unknown_ms: 0,
        })
    }

    fn check(&mut self, start: i64, t: i64, factor: f64) {
        let Some(eta) = self.eta_ms else { return };
        let predicted = self.walk.remaining() - (eta - t).max(0) as f64 * factor;
        let low = predicted <= self.settings.margin_ms as f64;
        match (self.warning.as_mut(), low) {
            (None, true) => {
                let mut c =
                    Condition::new(ConditionKind::ViabilityWarning, Severity::Warning, start);
                c.fires_ms = Some(t);
                c.last_ms = t;
                self.warning = Some(c);
            }
            (Some(c), true) => {
                c.cleared_ms = None;
                c.last_ms = t;
            }
            (Some(c), false) => {
                if c.cleared_ms.is_none() {
                    c.cleared_ms = Some(t);
                }
                c.last_ms = t;
            }
            (None, false) => {}
        }
    }

    /// The next sample, with the time of the one after it (`None`: the
    /// newest) and the horizon (`as_of`; `None`: up to the newest sample).
    pub fn push(&mut self, t: i64, value: SampleValue, next: Option<i64>, as_of: Option<i64>) {
        let start = *self.start.get_or_insert(t);
        if self.cursor == i64::MIN {
            self.cursor = start;
        }
        let as_of = as_of.unwrap_or(t).max(start);
        let rule = SegmentRule::new(start, Some(as_of), self.max_gap_ms);
        let Some(s) = rule.segment(t, value, next) else {
            return;
        };
        if s.start_ms > self.cursor {
            self.walk.unknown(self.cursor, s.start_ms - self.cursor);
            self.unknown_ms += s.start_ms - self.cursor;
        }
        let f = self.walk.model.rate_factor(s.milli_c);
        self.check(start, s.start_ms, f);
        let loss = self.walk.model.loss_pct_per_hour(s.milli_c).unwrap_or(0.0);
        self.walk.consume(s.start_ms, s.len_ms(), f, loss);
        self.cursor = self.cursor.max(s.end_ms);
    }

    /// The outcome at the horizon `as_of` (`None`: the newest sample), given
    /// the newest sample at or before it.
    pub fn finish(mut self, newest: Option<Sample>, as_of: Option<i64>) -> ViabilityOutcome {
        let Some(start) = self.start else {
            return ViabilityOutcome::NotApplicable;
        };
        if self.cursor == i64::MIN {
            self.cursor = start;
        }
        let as_of = as_of
            .or_else(|| newest.map(|s| s.t_ms))
            .unwrap_or(start)
            .max(start);
        if as_of > self.cursor {
            self.walk.unknown(self.cursor, as_of - self.cursor);
            self.unknown_ms += as_of - self.cursor;
            self.cursor = as_of;
        }
        let current = newest
            .filter(|s| s.t_ms <= as_of)
            .and_then(|s| s.value.milli_c().map(|v| (s.t_ms, v)))
            .filter(|(t, _)| as_of - t <= self.max_gap_ms)
            .map(|(_, v)| v);
        let current_factor = current.map_or(self.settings.unknown_rate_factor, |m| {
            self.walk.model.rate_factor(m)
        });
        self.check(start, as_of, current_factor);
        let walk = &self.walk;
        let remaining = walk.remaining();
        let predicted_at_eta_ms = self
            .eta_ms
            .map(|eta| round_ms(remaining - (eta - as_of).max(0) as f64 * current_factor));
        let runs_out_ms = if remaining <= 0.0 {
            walk.gone_at
        } else if current_factor > 0.0 {
            Some(as_of.saturating_add(round_ms((remaining / current_factor).ceil())))
        } else {
            None
        };
        let mut conditions: Vec<Condition> = self.warning.clone().into_iter().collect();
        if let Some(t) = walk.gone_at {
            let mut c = Condition::new(ConditionKind::ViabilityGone, Severity::Critical, start);
            c.fires_ms = Some(t);
            c.last_ms = as_of;
            conditions.push(c);
        }
        ViabilityOutcome::Computed(ViabilityReport {
            window_start_ms: start,
            as_of_ms: as_of,
            nominal_ms: self.nominal_ms,
            consumed_ms: round_ms(walk.consumed),
            remaining_ms: round_ms(remaining.max(0.0)),
            unknown_ms: self.unknown_ms,
            current_milli_c: current,
            current_rate_factor: current_factor,
            predicted_at_eta_ms,
            runs_out_ms,
            loss_pct: matches!(walk.model, DecayModel::Table { .. }).then_some(walk.loss_pct),
            conditions,
        })
    }
}

#[cfg(test)]
mod tests;
