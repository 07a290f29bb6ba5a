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

use crate::alarm::{Condition, ConditionKind, Series, ShipmentFacts};
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

/// Consumption walk state.
struct Walk<'a> {
    model: &'a DecayModel,
    unknown_factor: f64,
    nominal: f64,
    consumed: f64,
    loss_pct: f64,
    gone_at: Option<i64>,
}

impl Walk<'_> {
    /// Consumes `len` ms from `t0` at `factor` (and `loss_per_h` % per hour).
    fn consume(&mut self, t0: i64, len: i64, factor: f64, loss_per_h: f64) {
        if len <= 0 {
            return;
        }
        let add = len as f64 * factor;
        if self.gone_at.is_none() && self.consumed + add >= self.nominal && factor > 0.0 {
            let dt = ((self.nominal - self.consumed) / factor).ceil().max(0.0);
            // dt <= len here, so the cast cannot overflow.
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
        match self.model {
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
    // Durations here are bounded by i64 ms inputs times finite factors.
    #[allow(clippy::cast_possible_truncation)]
    let r = x.round().clamp(i64::MIN as f64, i64::MAX as f64) as i64;
    r
}

/// The viability report of the shipment under the profile's decay model.
pub fn evaluate(profile: &Profile, series: &Series, facts: &ShipmentFacts) -> ViabilityOutcome {
    let (Some(nominal_ms), Some(model)) = (facts.nominal_window_ms, profile.decay.as_ref()) else {
        return ViabilityOutcome::NotApplicable;
    };
    let start = facts
        .collection_ms
        .or(facts.departure_ms)
        .or_else(|| series.iter().next().map(|s| s.t_ms));
    let Some(start) = start else {
        return ViabilityOutcome::NotApplicable;
    };
    let as_of = facts
        .end_ms
        .or_else(|| series.iter().next_back().map(|s| s.t_ms))
        .unwrap_or(start)
        .max(start);
    let settings = profile.viability;
    let segs = series.known_segments(start, Some(as_of), facts.max_gap_ms);
    let factor_of = |milli_c: i32| model.rate_factor(milli_c);
    let loss_of = |milli_c: i32| model.loss_pct_per_hour(milli_c).unwrap_or(0.0);

    let mut walk = Walk {
        model,
        unknown_factor: settings.unknown_rate_factor,
        nominal: nominal_ms as f64,
        consumed: 0.0,
        loss_pct: 0.0,
        gone_at: None,
    };
    let mut warning: Option<Condition> = None;
    let check = |t: i64, remaining: f64, factor: f64, warning: &mut Option<Condition>| {
        let Some(eta) = facts.eta_ms else { return };
        let predicted = remaining - (eta - t).max(0) as f64 * factor;
        let low = predicted <= settings.margin_ms as f64;
        match (warning.as_mut(), low) {
            (None, true) => {
                let mut c =
                    Condition::new(ConditionKind::ViabilityWarning, Severity::Warning, start);
                c.fires_ms = Some(t);
                c.last_ms = t;
                *warning = Some(c);
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
    };

    let mut cursor = start;
    let mut unknown_ms = 0;
    for s in &segs {
        if s.start_ms > cursor {
            walk.unknown(cursor, s.start_ms - cursor);
            unknown_ms += s.start_ms - cursor;
        }
        let f = factor_of(s.milli_c);
        check(s.start_ms, walk.remaining(), f, &mut warning);
        walk.consume(s.start_ms, s.len_ms(), f, loss_of(s.milli_c));
        cursor = cursor.max(s.end_ms);
    }
    if as_of > cursor {
        walk.unknown(cursor, as_of - cursor);
        unknown_ms += as_of - cursor;
    }
    // What to predict with: the newest valid reading, if it is recent (not
    // older than the max gap), else unknown. Consumption up to now counted
    // time after it as unknown (the evidence rule); a prediction is no
    // evidence, and the newest reading is the best guess of the rate to come.
    let current = series
        .at_or_before(as_of)
        .and_then(|s| s.value.milli_c().map(|v| (s.t_ms, v)))
        .filter(|(t, _)| as_of - t <= facts.max_gap_ms)
        .map(|(_, v)| v);
    let current_factor = current.map_or(settings.unknown_rate_factor, factor_of);
    check(as_of, walk.remaining(), current_factor, &mut warning);

    let remaining = walk.remaining();
    let predicted_at_eta_ms = facts
        .eta_ms
        .map(|eta| round_ms(remaining - (eta - as_of).max(0) as f64 * current_factor));
    let runs_out_ms = if remaining <= 0.0 {
        walk.gone_at
    } else if current_factor > 0.0 {
        Some(as_of.saturating_add(round_ms((remaining / current_factor).ceil())))
    } else {
        None
    };
    let mut conditions: Vec<Condition> = warning.into_iter().collect();
    if let Some(t) = walk.gone_at {
        let mut c = Condition::new(ConditionKind::ViabilityGone, Severity::Critical, start);
        c.fires_ms = Some(t);
        c.last_ms = as_of;
        conditions.push(c);
    }
    ViabilityOutcome::Computed(ViabilityReport {
        window_start_ms: start,
        as_of_ms: as_of,
        nominal_ms,
        consumed_ms: round_ms(walk.consumed),
        remaining_ms: round_ms(remaining.max(0.0)),
        unknown_ms,
        current_milli_c: current,
        current_rate_factor: current_factor,
        predicted_at_eta_ms,
        runs_out_ms,
        loss_pct: matches!(model, DecayModel::Table { .. }).then_some(walk.loss_pct),
        conditions,
    })
}

#[cfg(test)]
mod tests;
