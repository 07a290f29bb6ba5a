//! Predictive warning: the temperature is rising towards a limit fast enough
//! to cross it within a horizon.
//!
//! A dry shipper holds its sample flat while liquid nitrogen remains, then the
//! sample warms roughly linearly (docs/domain.md §1). A least-squares line through
//! the valid readings of the last `window` predicts when the limit will be
//! crossed; when that is sooner than `horizon` (and the slope is at least
//! `min_rate`), the condition starts, and it fires at once: its purpose is to
//! warn *before* the critical zone. It clears when the prediction no longer
//! holds or the limit is reached (the zone alarm takes over).
//!
//! Like every evaluation here it is a pure function of the sample set: the
//! start is the first sample time at which the prediction held.

use crate::alarm::{Condition, ConditionKind, SampleValue, Series, ShipmentFacts};
use crate::profile::{Limit, Severity, Side};

/// Parameters of the prediction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrendSpec {
    /// The limit to predict (e.g. the critical `> -135.0` of `cryo-ln2`).
    pub limit: Limit,
    /// Regression window, ms.
    pub window_ms: i64,
    /// Warn when the crossing is predicted within this, ms.
    pub horizon_ms: i64,
    /// Ignore slopes below this, m°C per hour (noise on a flat LN2 plateau).
    pub min_rate_mc_per_h: f64,
    /// Readings needed in the window.
    pub min_points: usize,
    /// The fitted line must rise at least this much across the window's
    /// readings, m°C: a handful of noisy readings seconds apart can show any
    /// slope, but not a real rise.
    pub min_rise_mc: f64,
}

impl TrendSpec {
    /// Defaults for a limit: 60 min window, 12 h horizon, 1 °C/h minimum,
    /// 6 points, a fitted rise of at least 0.5 °C across them.
    pub fn for_limit(limit: Limit) -> Self {
        TrendSpec {
            limit,
            window_ms: 3_600_000,
            horizon_ms: 12 * 3_600_000,
            min_rate_mc_per_h: 1000.0,
            min_points: 6,
            min_rise_mc: 500.0,
        }
    }
}

/// Predicted crossing from the points (t ms, m°C): `Some(ms from the last
/// point to the crossing)` for a rising trend, else `None`.
fn predict(points: &[(i64, i32)], limit_mc: i32) -> Option<(f64, f64)> {
    let n = points.len() as f64;
    let t0 = points.first()?.0;
    let (mut sx, mut sy, mut sxx, mut sxy) = (0.0, 0.0, 0.0, 0.0);
    for &(t, v) in points {
        let x = (t - t0) as f64;
        let y = f64::from(v);
        sx += x;
        sy += y;
        sxx += x * x;
        sxy += x * y;
    }
    let den = n * sxx - sx * sx;
    if den <= 0.0 {
        return None;
    }
    let slope = (n * sxy - sx * sy) / den; // m°C per ms
    let intercept = (sy - slope * sx) / n;
    let last_x = (points.last()?.0 - t0) as f64;
    let fit_now = intercept + slope * last_x;
    if slope <= 0.0 {
        return None;
    }
    let to_cross = (f64::from(limit_mc) - fit_now) / slope;
    Some((to_cross, slope * 3_600_000.0))
}

/// The trend conditions of a series (high-side limits only).
pub fn evaluate(spec: &TrendSpec, series: &Series, facts: &ShipmentFacts) -> Vec<Condition> {
    let mut f = TrendFold::new(*spec);
    for smp in series.iter() {
        f.push(smp.t_ms, smp.value, facts);
    }
    f.finish()
}

/// [`evaluate`] as a fold over samples in time order: it keeps the points
/// of the last window only.
#[derive(Debug, Clone)]
pub struct TrendFold {
    spec: TrendSpec,
    window: std::collections::VecDeque<(i64, i32)>,
    out: Vec<Condition>,
    open: Option<Condition>,
}

impl TrendFold {
    /// Before any sample.
    pub fn new(spec: TrendSpec) -> Self {
        TrendFold {
            spec,
            window: std::collections::VecDeque::new(),
            out: Vec::new(),
            open: None,
        }
    }

    /// The next sample (outside the zones' range, or a fault: ignored).
    pub fn push(&mut self, t: i64, value: SampleValue, facts: &ShipmentFacts) {
        let spec = self.spec;
        if spec.limit.cmp.side() != Side::High
            || t < facts.zones_from_ms()
            || t > facts.end_ms.unwrap_or(i64::MAX)
        {
            return;
        }
        let Some(v) = value.milli_c() else { return };
        self.window.push_back((t, v));
        while self
            .window
            .front()
            .is_some_and(|p| p.0 < t - spec.window_ms)
        {
            self.window.pop_front();
        }
        let window = self.window.make_contiguous();
        let beyond = spec.limit.is_beyond(v);
        let span_h = (t - window[0].0) as f64 / 3_600_000.0;
        let holds = !beyond
            && window.len() >= spec.min_points
            && predict(window, spec.limit.milli_c).is_some_and(|(to_cross, rate)| {
                rate >= spec.min_rate_mc_per_h
                    && rate * span_h >= spec.min_rise_mc
                    && to_cross <= spec.horizon_ms as f64
            });
        match (&mut self.open, holds) {
            (None, true) => {
                let mut c = Condition::new(ConditionKind::Trend, Severity::Warning, t);
                c.fires_ms = Some(t);
                c.peak = Some(v);
                c.excursions = 1;
                c.last_ms = t;
                self.open = Some(c);
            }
            (Some(c), true) => {
                c.peak = Some(c.peak.unwrap_or(v).max(v));
                c.last_ms = t;
                c.beyond_ms = t - c.id.start_ms;
            }
            (Some(_), false) => {
                if let Some(mut c) = self.open.take() {
                    c.cleared_ms = Some(t);
                    c.last_ms = t;
                    c.beyond_ms = t - c.id.start_ms;
                    self.out.push(c);
                }
            }
            (None, false) => {}
        }
    }

    /// The conditions.
    pub fn finish(self) -> Vec<Condition> {
        let mut out = self.out;
        out.extend(self.open);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alarm::Sample;
    use crate::profile::Comparison;

    const MIN: i64 = 60_000;

    fn spec() -> TrendSpec {
        TrendSpec::for_limit(Limit {
            cmp: Comparison::Above,
            milli_c: -135_000,
        })
    }

    /// Flat at -190 °C for 5 h, then +5 °C/h: with a 12 h horizon the warning
    /// comes once the rise is established, hours before -135 °C is reached.
    #[test]
    fn ln2_running_dry_warns_before_the_critical_limit() {
        let mut s = Series::new();
        for i in 0..(20 * 60 / 5) {
            let t = i * 5 * MIN;
            let h = t as f64 / 3_600_000.0;
            let v = if h < 5.0 {
                -190_000.0
            } else {
                -190_000.0 + (h - 5.0) * 5000.0
            };
            s.insert(Sample::valid(
                t,
                v as i32 + if i % 2 == 0 { 40 } else { -40 },
            ));
        }
        let facts = ShipmentFacts::departing_at(0);
        let c = evaluate(&spec(), &s, &facts);
        assert_eq!(c.len(), 1, "{c:?}");
        let c = &c[0];
        let start_h = c.start_ms() as f64 / 3_600_000.0;
        // -135 °C is reached at 5 h + 55/5 h = 16 h. The warning starts once
        // the crossing is within 12 h: a little after 5 h.
        assert!((5.0..6.5).contains(&start_h), "warning at {start_h} h");
        assert!(c.has_fired());
        assert!(c.fires_ms.unwrap() < 16 * 3_600_000);
    }

    #[test]
    fn a_flat_noisy_plateau_never_warns() {
        let mut s = Series::new();
        for i in 0..500 {
            s.insert(Sample::valid(
                i * MIN,
                -190_000 + ((i * 7919) % 600) as i32 - 300,
            ));
        }
        assert!(evaluate(&spec(), &s, &ShipmentFacts::departing_at(0)).is_empty());
    }

    /// Sampled every 2 s with ±50 m°C of noise (the demo's simulator): six
    /// readings ten seconds apart can fit a slope of tens of °C/h, but never a
    /// rise of 0.5 °C. This warned before `min_rise_mc` existed.
    /// The first minute of 500 shipments (the window is short at the start).
    #[test]
    fn fast_sampling_noise_on_a_plateau_never_warns() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for shipment in 0..500 {
            let mut s = Series::new();
            for i in 0..30 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                s.insert(Sample::valid(i * 2_000, -190_000 + (x % 101) as i32 - 50));
            }
            let facts = ShipmentFacts {
                settle_ms: 0,
                ..ShipmentFacts::departing_at(0)
            };
            let c = evaluate(&spec(), &s, &facts);
            assert!(c.is_empty(), "shipment {shipment}: {c:?}");
        }
    }

    #[test]
    fn a_slow_drift_beyond_the_horizon_does_not_warn() {
        let mut s = Series::new();
        // +1.2 °C/h from -190: -135 is 45 h away, beyond 12 h.
        for i in 0..300 {
            s.insert(Sample::valid(i * MIN, -190_000 + (i * 20) as i32));
        }
        assert!(evaluate(&spec(), &s, &ShipmentFacts::departing_at(0)).is_empty());
    }
}
