//! Mean kinetic temperature (USP <1160>, <1079.2>).
//!
//! ```text
//! MKT = (ΔH/R) / -ln( Σ tᵢ·exp(-ΔH/(R·Tᵢ)) / Σ tᵢ )      Tᵢ in kelvin
//! ```
//!
//! with ΔH/R = 10 000 K. Each reading is weighted by the time it stands for
//! ([`Series::known_segments`]): readings are not evenly spaced, and unknown time
//! (long gaps, probe faults) carries no weight. Computed over the whole shipment
//! (from departure, settle period included: USP counts excursions in) and over
//! sliding windows of the profile's USP <1079.2> length (24 h for controlled cold,
//! 30 days for controlled room temperature), reporting the warmest window.
//! Not computed on cryogenic lanes, where it means nothing.
//!
//! The exponentials are taken relative to 5 °C to keep sums near 1.
#![deny(missing_docs)]

use serde::{Deserialize, Serialize};

use crate::alarm::{Segment, Series, ShipmentFacts};
use crate::profile::Profile;

/// ΔH/R, kelvin: ΔH = 83.144 kJ/mol, R = 8.3144 J/(mol·K).
pub const DELTA_H_OVER_R_K: f64 = 10_000.0;
pub use crate::arrhenius::{ZERO_C_IN_K, rate_factor};

/// Scaling reference for the exponentials, kelvin (5 °C).
const SCALE_K: f64 = 278.15;

fn scaled_exp(t_c: f64) -> f64 {
    rate_factor(t_c, SCALE_K - ZERO_C_IN_K, DELTA_H_OVER_R_K)
}

fn mkt_from_mean(mean_scaled: f64) -> f64 {
    DELTA_H_OVER_R_K / (DELTA_H_OVER_R_K / SCALE_K - mean_scaled.ln()) - ZERO_C_IN_K
}

/// MKT in °C of `(weight, °C)` pairs; weights are durations in any one unit.
/// `None` when the total weight is not positive or a weight is negative.
pub fn mkt_weighted(points: &[(f64, f64)]) -> Option<f64> {
    let mut w_sum = 0.0;
    let mut e_sum = 0.0;
    for &(w, t) in points {
        if w.is_nan() || w < 0.0 {
            return None;
        }
        w_sum += w;
        e_sum += w * scaled_exp(t);
    }
    (w_sum > 0.0).then(|| mkt_from_mean(e_sum / w_sum))
}

/// MKT in °C of equally weighted temperatures; `None` when empty.
pub fn mkt_equal(celsius: &[f64]) -> Option<f64> {
    let pts: Vec<(f64, f64)> = celsius.iter().map(|&t| (1.0, t)).collect();
    mkt_weighted(&pts)
}

/// MKT over one window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WindowMkt {
    /// Window start, device ms.
    pub start_ms: i64,
    /// Window end, device ms.
    pub end_ms: i64,
    /// MKT, °C.
    pub mkt_c: f64,
    /// Time with a known temperature inside the window, ms.
    pub covered_ms: i64,
    /// False when the data span is shorter than the window length: the window is
    /// then the whole span.
    pub full: bool,
}

/// MKT of a shipment.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MktReport {
    /// MKT over the whole shipment, °C.
    pub whole_c: f64,
    /// Time with a known temperature, ms.
    pub covered_ms: i64,
    /// The USP window length used, ms.
    pub window_ms: i64,
    /// The warmest sliding window.
    pub max_window: WindowMkt,
}

/// The outcome of [`evaluate`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MktOutcome {
    /// The profile has no MKT (a cryogenic lane).
    NotApplicable,
    /// No time with a known temperature yet.
    NoData,
    /// Computed.
    Computed(MktReport),
}

/// MKT of the shipment under the profile's settings.
pub fn evaluate(profile: &Profile, series: &Series, facts: &ShipmentFacts) -> MktOutcome {
    let Some(settings) = profile.mkt.filter(|_| !profile.cryogenic) else {
        return MktOutcome::NotApplicable;
    };
    let segs = series.known_segments(facts.from_ms(), facts.end_ms, facts.max_gap_ms);
    over_segments(&segs, settings.window_ms).map_or(MktOutcome::NoData, MktOutcome::Computed)
}

/// Prefix integrals over sorted, non-overlapping segments.
struct Integrals<'a> {
    segs: &'a [Segment],
    exps: Vec<f64>,
    /// `pre_e[i]`: Σ len·exp over segments before `i`.
    pre_e: Vec<f64>,
    /// `pre_d[i]`: Σ len over segments before `i`.
    pre_d: Vec<i64>,
}

impl<'a> Integrals<'a> {
    fn new(segs: &'a [Segment]) -> Self {
        let exps: Vec<f64> = segs
            .iter()
            .map(|s| scaled_exp(f64::from(s.milli_c) / 1000.0))
            .collect();
        let mut pre_e = vec![0.0];
        let mut pre_d = vec![0];
        for (s, e) in segs.iter().zip(&exps) {
            pre_e.push(pre_e.last().copied().unwrap_or(0.0) + s.len_ms() as f64 * e);
            pre_d.push(pre_d.last().copied().unwrap_or(0) + s.len_ms());
        }
        Integrals {
            segs,
            exps,
            pre_e,
            pre_d,
        }
    }

    /// (∫ exp, ∫ 1) over known time before `x`.
    fn at(&self, x: i64) -> (f64, i64) {
        let i = self.segs.partition_point(|s| s.start_ms <= x);
        if i == 0 {
            return (0.0, 0);
        }
        let s = &self.segs[i - 1];
        let part = x.min(s.end_ms) - s.start_ms;
        (
            self.pre_e[i - 1] + part as f64 * self.exps[i - 1],
            self.pre_d[i - 1] + part,
        )
    }

    fn window(&self, a: i64, b: i64) -> (f64, i64) {
        let (ea, da) = self.at(a);
        let (eb, db) = self.at(b);
        (eb - ea, db - da)
    }
}

/// MKT over the whole of `segs` and the warmest window of `window_ms`.
///
/// The windowed mean of exponentials is, between consecutive segment boundaries,
/// a ratio of two linear functions of the window start, hence monotone: its
/// maximum lies at a window that starts or ends on a segment boundary. Those
/// candidates are all tried, so the maximum is exact, not sampled. Ties go to the
/// earliest window.
pub fn over_segments(segs: &[Segment], window_ms: i64) -> Option<MktReport> {
    let ints = Integrals::new(segs);
    let (first, last) = (segs.first()?.start_ms, segs.last()?.end_ms);
    let (e_all, d_all) = ints.window(first, last);
    if d_all <= 0 {
        return None;
    }
    let whole_c = mkt_from_mean(e_all / d_all as f64);
    let window_ms = window_ms.max(1);
    let max_window = if last - first <= window_ms {
        WindowMkt {
            start_ms: first,
            end_ms: last,
            mkt_c: whole_c,
            covered_ms: d_all,
            full: last - first == window_ms,
        }
    } else {
        let latest_start = last - window_ms;
        let mut cands: Vec<i64> = segs
            .iter()
            .flat_map(|s| [s.start_ms, s.end_ms])
            .flat_map(|p| [p, p - window_ms])
            .map(|p| p.clamp(first, latest_start))
            .collect();
        cands.sort_unstable();
        cands.dedup();
        let mut best: Option<(f64, i64, i64)> = None;
        for s in cands {
            let (e, d) = ints.window(s, s + window_ms);
            if d <= 0 {
                continue;
            }
            let mean = e / d as f64;
            if best.is_none_or(|(m, _, _)| mean > m) {
                best = Some((mean, s, d));
            }
        }
        let (mean, s, d) = best?;
        WindowMkt {
            start_ms: s,
            end_ms: s + window_ms,
            mkt_c: mkt_from_mean(mean),
            covered_ms: d,
            full: true,
        }
    };
    Some(MktReport {
        whole_c,
        covered_ms: d_all,
        window_ms,
        max_window,
    })
}

#[cfg(test)]
mod tests;
