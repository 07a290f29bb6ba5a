//! Hold time at ETA of a dry shipper: when will the product cross its limit,
//! with what uncertainty, and is that before the ETA?
//!
//! A dry shipper holds the sample flat while liquid nitrogen remains, then the
//! sample warms roughly linearly (docs/domain.md §1); a shipper on its side
//! boils off faster, so after a tilt only the readings since the tilt describe
//! the rate. The prediction is a least-squares line through the warming
//! readings: those after the last reading within `plateau_mc` of the window's
//! coldest (the plateau), and after the latest tilt when one started. The
//! crossing of the limit by that line has a standard error from the fit
//! (inverse regression: `s / b · sqrt(1 + 1/n + (L - ȳ)² / (b² Sxx))`, the
//! `1` because the crossing is seen in one noisy reading); the band is three
//! times that plus the median spacing of the readings (a crossing is seen at
//! the first reading after it). Three, not two: a shipper's readings wander
//! around the line rather than scatter independently (measured on the
//! simulator: residuals correlated over tens of readings), so the standard
//! error is optimistic.
//!
//! Pure: the points, the limit, the tilt and the ETA are arguments.

use serde::{Deserialize, Serialize};

use crate::alarm::{Condition, ConditionKind};
use crate::profile::{Profile, Severity};

/// Parameters of the prediction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HoldSpec {
    /// The product's limit, milli-°C (crossing upwards).
    pub limit_mc: i32,
    /// Readings considered, ms back from the newest.
    pub window_ms: i64,
    /// A reading within this of the window's coldest is on the plateau, m°C.
    pub plateau_mc: i32,
    /// Warming readings needed.
    pub min_points: usize,
    /// Slopes below this are no warming trend, m°C per hour.
    pub min_rate_mc_per_h: f64,
    /// Warn when the crossing minus its band is before ETA plus this, ms.
    pub margin_ms: i64,
}

impl HoldSpec {
    /// Defaults for a limit: 24 h window (so the plateau's end stays in it
    /// and the fit's start, the warning's identity, stays put), 0.5 °C
    /// plateau, 6 points, 0.5 °C/h, 2 h margin.
    pub fn for_limit(limit_mc: i32) -> Self {
        HoldSpec {
            limit_mc,
            window_ms: 24 * 3_600_000,
            plateau_mc: 500,
            min_points: 6,
            min_rate_mc_per_h: 500.0,
            margin_ms: 2 * 3_600_000,
        }
    }
}

/// A predicted crossing.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoldPrediction {
    /// The limit, milli-°C.
    pub limit_mc: i32,
    /// When the fitted line crosses it, ms.
    pub crossing_ms: i64,
    /// ± this, ms (three standard errors plus the readings' spacing).
    pub band_ms: i64,
    /// Fitted warming rate, milli-°C per hour.
    pub rate_mc_per_h: i64,
    /// First reading of the fit, ms.
    pub fit_from_ms: i64,
    /// Readings in the fit.
    pub points: usize,
    /// Whether the fit starts at a tilt (the faster rate after it).
    pub after_tilt: bool,
    /// The ETA compared with, ms.
    pub eta_ms: Option<i64>,
    /// ETA minus crossing, ms: positive when the crossing comes first.
    pub before_eta_ms: Option<i64>,
    /// Crossing minus band before ETA plus margin.
    pub warning: bool,
    /// When the readings did cross the limit (the first reading beyond it),
    /// for a prediction made from the readings before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crossed_ms: Option<i64>,
}

impl HoldPrediction {
    /// `crosses -150 °C at 14:20 ± 40 min, 3 h 10 min before ETA` (UTC).
    pub fn sentence(&self) -> String {
        let hm = |ms: i64| {
            let m = ms.div_euclid(60_000);
            format!(
                "{:02}:{:02}",
                m.div_euclid(60).rem_euclid(24),
                m.rem_euclid(60)
            )
        };
        let dur = |ms: i64| {
            let m = ms.abs() / 60_000;
            if m >= 60 {
                format!("{} h {} min", m / 60, m % 60)
            } else {
                format!("{m} min")
            }
        };
        if let Some(t) = self.crossed_ms {
            return format!(
                "crossed {:.0} °C at {} UTC (predicted {} UTC ± {})",
                f64::from(self.limit_mc) / 1000.0,
                hm(t),
                hm(self.crossing_ms),
                dur(self.band_ms.max(60_000))
            );
        }
        let mut s = format!(
            "crosses {:.0} °C at {} UTC ± {}",
            f64::from(self.limit_mc) / 1000.0,
            hm(self.crossing_ms),
            dur(self.band_ms.max(60_000))
        );
        match self.before_eta_ms {
            Some(d) if d >= 0 => s.push_str(&format!(", {} before ETA", dur(d))),
            Some(d) => s.push_str(&format!(", {} after ETA", dur(d))),
            None => s.push_str(" (no ETA)"),
        }
        s
    }
}

/// One shipment in a shipper's history of warming rates.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShipperRate {
    /// Shipment id.
    pub shipment: String,
    /// When its warming began (the fit's start), ms.
    pub from_ms: i64,
    /// Its warming rate, milli-°C per hour.
    pub rate_mc_per_h: i64,
    /// Faster than `factor` times the mean of the shipper's first shipments.
    pub flagged: bool,
}

/// A shipper's warming rates in time order, each later one flagged when it
/// exceeds `factor` times the mean rate of the first `baseline` shipments
/// (the unit as it was when new): a shipper getting worse shows before it
/// fails. `rates`: (shipment, warming start ms, rate m°C/h), any order.
pub fn shipper_history(
    mut rates: Vec<(String, i64, i64)>,
    baseline: usize,
    factor: f64,
) -> Vec<ShipperRate> {
    rates.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
    let n = baseline.max(1).min(rates.len());
    let mean = if n == 0 {
        0.0
    } else {
        rates[..n].iter().map(|r| r.2 as f64).sum::<f64>() / n as f64
    };
    rates
        .into_iter()
        .enumerate()
        .map(|(i, (shipment, from_ms, rate))| ShipperRate {
            shipment,
            from_ms,
            rate_mc_per_h: rate,
            flagged: i >= n && rate as f64 > factor * mean,
        })
        .collect()
}

/// The `hold_time` warning of a prediction that warns: it starts where the
/// fit starts (the warming it is about) and fires at once; it lasts to the
/// newest reading. When a later ETA or later data no longer warns, the
/// condition is gone (the alert is withdrawn with the reason).
pub fn condition(p: &HoldPrediction, newest_ms: i64) -> Option<Condition> {
    if !p.warning {
        return None;
    }
    let mut c = Condition::new(ConditionKind::HoldTime, Severity::Warning, p.fit_from_ms);
    c.fires_ms = Some(p.fit_from_ms);
    c.last_ms = p.crossed_ms.unwrap_or(newest_ms).max(p.fit_from_ms);
    // Once the limit is reached the zone alarm takes over.
    c.cleared_ms = p.crossed_ms;
    c.beyond_ms = c.last_ms - p.fit_from_ms;
    c.excursions = 1;
    Some(c)
}

/// The prediction from valid readings `(t ms, m°C)` in time order, the start
/// of the latest tilt (if any) and the ETA. `None` when there is no warming
/// trend (flat plateau, too few readings, falling) or the newest reading is
/// already beyond the limit.
pub fn predict(
    spec: &HoldSpec,
    points: &[(i64, i32)],
    tilt_since_ms: Option<i64>,
    eta_ms: Option<i64>,
) -> Option<HoldPrediction> {
    let newest = points.last()?;
    if newest.1 > spec.limit_mc {
        return None;
    }
    let from = newest.0 - spec.window_ms;
    let window: Vec<(i64, i32)> = points.iter().copied().filter(|p| p.0 >= from).collect();
    let coldest = window.iter().map(|p| p.1).min()?;
    let last_plateau = window
        .iter()
        .rposition(|p| p.1 <= coldest + spec.plateau_mc)
        .unwrap_or(0);
    let mut seg = &window[last_plateau..];
    let mut after_tilt = false;
    if let Some(t) = tilt_since_ms
        && let Some(i) = seg.iter().position(|p| p.0 >= t)
        && i > 0
        && seg.len() - i >= spec.min_points
    {
        seg = &seg[i..];
        after_tilt = true;
    }
    if seg.len() < spec.min_points {
        return None;
    }
    let n = seg.len() as f64;
    let t0 = seg[0].0;
    let xs: Vec<f64> = seg.iter().map(|p| (p.0 - t0) as f64).collect();
    let ys: Vec<f64> = seg.iter().map(|p| f64::from(p.1)).collect();
    let mx = xs.iter().sum::<f64>() / n;
    let my = ys.iter().sum::<f64>() / n;
    let sxx: f64 = xs.iter().map(|x| (x - mx) * (x - mx)).sum();
    let sxy: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let b = sxy / sxx; // m°C per ms
    let rate_h = b * 3_600_000.0;
    if rate_h < spec.min_rate_mc_per_h {
        return None;
    }
    let a = my - b * mx;
    let sse: f64 = xs
        .iter()
        .zip(&ys)
        .map(|(x, y)| (y - a - b * x).powi(2))
        .sum();
    let s = (sse / (n - 2.0).max(1.0)).sqrt();
    let l = f64::from(spec.limit_mc);
    let x_cross = (l - a) / b;
    let se = (s / b) * (1.0 + 1.0 / n + (l - my).powi(2) / (b * b * sxx)).sqrt();
    let mut gaps: Vec<i64> = seg.windows(2).map(|w| w[1].0 - w[0].0).collect();
    gaps.sort_unstable();
    let spacing = gaps.get(gaps.len() / 2).copied().unwrap_or(0);
    // The data shows a crossing at the first reading after it: up to one
    // spacing later than the line's.
    let band_ms = (3.0 * se).ceil() as i64 + spacing;
    let crossing_ms = t0 + x_cross.round() as i64;
    let before_eta_ms = eta_ms.map(|e| e - crossing_ms);
    let warning = eta_ms.is_some_and(|e| crossing_ms - band_ms < e + spec.margin_ms);
    Some(HoldPrediction {
        limit_mc: spec.limit_mc,
        crossing_ms,
        band_ms,
        rate_mc_per_h: rate_h.round() as i64,
        fit_from_ms: t0,
        points: seg.len(),
        after_tilt,
        eta_ms,
        before_eta_ms,
        warning,
        crossed_ms: None,
    })
}

/// The prediction as the status document carries it (`hold_time`): the
/// engine's fields and `sentence`, or `None` without a warming trend.
pub fn status(p: Option<&HoldPrediction>) -> Option<serde_json::Value> {
    let p = p?;
    let mut v = serde_json::to_value(p).ok()?;
    v["sentence"] = p.sentence().into();
    Some(v)
}

/// The prediction with the configured margin from the recent valid readings
/// (`tracker::View::recent`, the last two days), the conditions (the latest
/// tilt) and the ETA, or `None` (not a cryogenic lane with a nominal
/// maximum, or no warming trend).
pub fn prediction(
    profile: &Profile,
    recent: &[(i64, i32)],
    conditions: &[Condition],
    eta_ms: Option<i64>,
    margin_ms: i64,
) -> Option<HoldPrediction> {
    if !profile.cryogenic {
        return None;
    }
    let limit = profile.nominal.max?.0;
    let mut points = recent.to_vec();
    // Already beyond the limit: the prediction as it stood at the last
    // reading before, and when the readings crossed.
    let mut crossed_ms = None;
    if points.last().is_some_and(|p| p.1 > limit) {
        let k = points.iter().rposition(|p| p.1 <= limit)?;
        crossed_ms = Some(points[k + 1].0);
        points.truncate(k + 1);
    }
    let tilt = conditions
        .iter()
        .filter(|c| c.id.kind == ConditionKind::Tilt)
        .map(|c| c.start_ms())
        .max();
    let mut p = predict(
        &HoldSpec {
            margin_ms,
            ..HoldSpec::for_limit(limit)
        },
        &points,
        tilt,
        eta_ms,
    )?;
    p.crossed_ms = crossed_ms;
    Some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000;
    const H: i64 = 3_600_000;

    /// A dry shipper sampled every 5 min: flat at -190 °C until `dry_h`, then
    /// `rate` °C/h, with a deterministic ±0.05 °C wobble; `hours` long.
    fn shipper(dry_h: f64, rate: f64, hours: i64) -> Vec<(i64, i32)> {
        (0..hours * 12)
            .map(|i| {
                let t_h = i as f64 / 12.0;
                let wobble = 0.05 * ((i * 7919) % 13) as f64 / 6.0 - 0.05;
                let c = -190.0 + (t_h - dry_h).max(0.0) * rate + wobble;
                (i * 5 * MIN, (c * 1000.0).round() as i32)
            })
            .collect()
    }

    #[test]
    fn flat_plateau_predicts_nothing() {
        let pts = shipper(100.0, 3.0, 10);
        assert_eq!(
            predict(&HoldSpec::for_limit(-150_000), &pts, None, None),
            None
        );
    }

    #[test]
    fn linear_warming_predicts_the_crossing_within_its_band() {
        // Dry at 10 h, 3 °C/h: -150 °C at 10 h + 40/3 h = 23 h 20 min.
        let pts = shipper(10.0, 3.0, 14);
        let truth = 10 * H + 40 * H / 3;
        let p = predict(&HoldSpec::for_limit(-150_000), &pts, None, Some(30 * H)).unwrap();
        assert!((p.crossing_ms - truth).abs() <= p.band_ms, "{p:?}");
        assert!(p.band_ms >= 5 * MIN, "at least the spacing: {p:?}");
        assert!((p.rate_mc_per_h - 3_000).abs() < 100, "{p:?}");
        assert_eq!(p.fit_from_ms, 10 * H + 5 * MIN, "from the plateau's end");
        assert_eq!(p.before_eta_ms, Some(30 * H - p.crossing_ms));
        assert!(p.warning, "crosses 6 h 40 min before the ETA");
        let s = p.sentence();
        assert!(s.starts_with("crosses -150 °C at 23:"), "{s}");
        assert!(s.ends_with(" before ETA"), "{s}");
        // Arriving at 20 h: crosses 3 h 20 min after, beyond the 2 h margin.
        let p = predict(&HoldSpec::for_limit(-150_000), &pts, None, Some(20 * H)).unwrap();
        assert!(!p.warning, "{p:?}");
        assert!(
            p.sentence().ends_with("3 h 20 min after ETA"),
            "{}",
            p.sentence()
        );
        // Arriving at 22 h: 1 h 20 min to spare is inside the margin.
        let p = predict(&HoldSpec::for_limit(-150_000), &pts, None, Some(22 * H)).unwrap();
        assert!(p.warning);
    }

    #[test]
    fn after_a_tilt_only_the_faster_rate_counts() {
        // 1.5 °C/h from 5 h; tipped at 9 h: 4.5 °C/h from then.
        let pts: Vec<(i64, i32)> = (0..12 * 12)
            .map(|i| {
                let t_h = i as f64 / 12.0;
                let c = if t_h < 5.0 {
                    -190.0
                } else if t_h < 9.0 {
                    -190.0 + (t_h - 5.0) * 1.5
                } else {
                    -184.0 + (t_h - 9.0) * 4.5
                };
                (i * 5 * MIN, (c * 1000.0).round() as i32)
            })
            .collect();
        let spec = HoldSpec::for_limit(-150_000);
        let p = predict(&spec, &pts, Some(9 * H), None).unwrap();
        assert!(p.after_tilt);
        assert!((p.rate_mc_per_h - 4_500).abs() < 50, "{p:?}");
        // -184 + 4.5 (t - 9) = -150: t = 9 h + 7 h 33 min 20 s.
        let truth = 9 * H + (34.0 / 4.5 * H as f64) as i64;
        assert!((p.crossing_ms - truth).abs() <= p.band_ms, "{p:?}");
        let mixed = predict(&spec, &pts, None, None).unwrap();
        assert!(
            mixed.crossing_ms > p.crossing_ms,
            "ignoring the tilt predicts later"
        );
    }

    #[test]
    fn the_warning_condition_starts_with_the_fit_and_clears_at_the_crossing() {
        let pts = shipper(10.0, 3.0, 14);
        let spec = HoldSpec::for_limit(-150_000);
        let mut p = predict(&spec, &pts, None, Some(30 * H)).unwrap();
        let newest = pts.last().unwrap().0;
        let c = condition(&p, newest).unwrap();
        assert_eq!(c.id.kind, ConditionKind::HoldTime);
        assert_eq!(c.start_ms(), p.fit_from_ms);
        assert_eq!(c.fires_ms, Some(p.fit_from_ms));
        assert!(c.is_active());
        p.crossed_ms = Some(p.crossing_ms + MIN);
        let c = condition(&p, newest + H).unwrap();
        assert_eq!(c.cleared_ms, p.crossed_ms, "the zone alarm takes over");
        assert!(
            p.sentence().starts_with("crossed -150 °C at "),
            "{}",
            p.sentence()
        );
        let p = predict(&spec, &pts, None, Some(20 * H)).unwrap();
        assert!(condition(&p, newest).is_none(), "no warning, no condition");
    }

    #[test]
    fn a_shipper_faster_than_its_first_shipments_is_flagged() {
        let r = |s: &str, t: i64, rate: i64| (s.to_string(), t, rate);
        let h = shipper_history(
            vec![
                r("S5", 5, 4_600),
                r("S1", 1, 3_000),
                r("S2", 2, 3_200),
                r("S3", 3, 2_800),
                r("S4", 4, 4_400),
            ],
            3,
            1.5,
        );
        let names: Vec<&str> = h.iter().map(|x| x.shipment.as_str()).collect();
        assert_eq!(names, ["S1", "S2", "S3", "S4", "S5"], "in time order");
        // Baseline 3 000 m°C/h: 4 400 is under 1.5 x, 4 600 over.
        let flags: Vec<bool> = h.iter().map(|x| x.flagged).collect();
        assert_eq!(flags, [false, false, false, false, true]);
        assert!(
            shipper_history(vec![r("S1", 1, 9_000)], 3, 1.5)
                .iter()
                .all(|x| !x.flagged)
        );
        assert!(shipper_history(Vec::new(), 3, 1.5).is_empty());
    }

    #[test]
    fn beyond_the_limit_already_is_not_a_prediction() {
        let pts = shipper(1.0, 30.0, 4);
        assert_eq!(
            predict(&HoldSpec::for_limit(-150_000), &pts, None, None),
            None
        );
    }
}
