//! The revision model: how the alarms raised so far are brought in line with a
//! new evaluation of the data, in the open.
//!
//! Every evaluation yields the conditions that have fired, computed from all
//! the data received. The alarms already raised (alerts) were computed from
//! less data. [`plan`] pairs each alarm with the condition it stands for and
//! says, for each, what happens:
//!
//! * a fired condition no alarm stands for is **raised**;
//! * an alarm whose condition is still there is **kept** and takes the
//!   condition's current facts (start, fire time, peak, time beyond, clearing,
//!   text): a change other than an open condition growing is a *revision*, an
//!   event of its own;
//! * an alarm no fired condition stands for any more is **withdrawn**, with
//!   its reason, unless it is a live-only kind (silence, storage full): those
//!   were true when raised and are **cleared** instead.
//!
//! Pairing: a condition and an alarm of the same kind pair when they started
//! at the same moment, else when their spans overlap (late data moved the
//! start); the oldest alarm wins. Because every kept alarm takes its
//! condition's facts, after a plan is carried out the alarms that are not
//! withdrawn are exactly the fired conditions of the evaluation: whatever the
//! order and batching of the data, once all of it has arrived the alarms are
//! those of one evaluation of the complete data.

use super::condition::{Condition, ConditionKind};

/// What [`plan`] needs of an alarm already raised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raised {
    /// What it is about.
    pub kind: ConditionKind,
    /// When its condition started (device ms), as last known.
    pub start_ms: i64,
    /// When its condition cleared, as last known; `None` while active.
    pub cleared_ms: Option<i64>,
    /// The last moment its data covered, device ms.
    pub last_ms: i64,
}

impl Raised {
    fn overlaps(&self, c: &Condition) -> bool {
        let a_end = self.cleared_ms.unwrap_or(i64::MAX).max(self.last_ms);
        let c_end = c.cleared_ms.unwrap_or(c.last_ms).max(c.last_ms);
        self.kind == c.id.kind && self.start_ms <= c_end && c.id.start_ms <= a_end
    }
}

/// One step of a plan. Indices refer to the slices given to [`plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Raise an alarm for `fired[cond]`.
    Raise {
        /// Index into `fired`.
        cond: usize,
    },
    /// `raised[alert]` stands for `fired[cond]`: take its facts.
    Keep {
        /// Index into `raised`.
        alert: usize,
        /// Index into `fired`.
        cond: usize,
    },
    /// `raised[alert]` is disproved by the data: withdraw it.
    Withdraw {
        /// Index into `raised`.
        alert: usize,
        /// Why, for people.
        reason: String,
    },
    /// `raised[alert]` is a live-only alarm whose state is over: clear it.
    Clear {
        /// Index into `raised`.
        alert: usize,
    },
}

/// Live-only kinds: true when raised by what was (not) arriving, so later data
/// ends them, never disproves them.
pub fn is_live_only(kind: ConditionKind) -> bool {
    matches!(kind, ConditionKind::Silent | ConditionKind::StorageFull)
}

/// Pairs the alarms raised so far (not withdrawn) with the fired conditions of
/// a new evaluation. `all` is every condition of that evaluation, fired or not,
/// for the reason of a withdrawal.
pub fn plan(raised: &[Raised], fired: &[&Condition], all: &[Condition]) -> Vec<Step> {
    let mut taken = vec![false; raised.len()];
    let mut pair: Vec<Option<usize>> = vec![None; fired.len()];
    // Same start first, then overlap; the oldest alarm (lowest index) wins.
    for (ci, c) in fired.iter().enumerate() {
        if let Some(ai) = (0..raised.len()).find(|&i| {
            !taken[i] && raised[i].kind == c.id.kind && raised[i].start_ms == c.id.start_ms
        }) {
            taken[ai] = true;
            pair[ci] = Some(ai);
        }
    }
    for (ci, c) in fired.iter().enumerate() {
        if pair[ci].is_some() {
            continue;
        }
        if let Some(ai) = (0..raised.len()).find(|&i| !taken[i] && raised[i].overlaps(c)) {
            taken[ai] = true;
            pair[ci] = Some(ai);
        }
    }
    let mut steps = Vec::new();
    for (ci, p) in pair.iter().enumerate() {
        steps.push(match p {
            Some(ai) => Step::Keep {
                alert: *ai,
                cond: ci,
            },
            None => Step::Raise { cond: ci },
        });
    }
    for (ai, r) in raised.iter().enumerate() {
        if taken[ai] {
            continue;
        }
        if is_live_only(r.kind) {
            steps.push(Step::Clear { alert: ai });
            continue;
        }
        steps.push(Step::Withdraw {
            alert: ai,
            reason: withdrawal_reason(r, fired, all),
        });
    }
    steps
}

fn minutes(ms: i64) -> String {
    let m = ms / 60_000;
    if m == 0 && ms > 0 {
        format!("{} s", ms / 1000)
    } else {
        format!("{m} min")
    }
}

fn withdrawal_reason(r: &Raised, fired: &[&Condition], all: &[Condition]) -> String {
    if let Some(c) = fired.iter().find(|c| r.overlaps(c)) {
        return format!(
            "later data shows this is part of the {} alarm that started at another time (now {})",
            c.id.kind, c.id
        );
    }
    match all.iter().find(|c| !c.has_fired() && r.overlaps(c)) {
        Some(c) => format!(
            "later data shows the condition did not last its delay: {} beyond the limit",
            minutes(c.beyond_ms)
        ),
        None => "later data no longer shows this condition (readings re-timed, \
                 completed or recognised as probe faults)"
            .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{Severity, ZoneId};

    fn cond(start: i64, fires: Option<i64>, last: i64) -> Condition {
        let mut c = Condition::new(
            ConditionKind::Zone(ZoneId::high(1).unwrap()),
            Severity::Warning,
            start,
        );
        c.fires_ms = fires;
        c.last_ms = last;
        c.beyond_ms = last - start;
        c
    }

    fn raised(start: i64, last: i64) -> Raised {
        Raised {
            kind: ConditionKind::Zone(ZoneId::high(1).unwrap()),
            start_ms: start,
            cleared_ms: None,
            last_ms: last,
        }
    }

    #[test]
    fn a_moved_start_keeps_the_alarm_and_a_disproved_one_is_withdrawn() {
        let c = cond(50, Some(110), 120);
        let all = [c.clone()];
        let fired: Vec<&Condition> = all.iter().collect();
        // Raised from a later start; overlaps: kept.
        assert_eq!(
            plan(&[raised(60, 120)], &fired, &all),
            vec![Step::Keep { alert: 0, cond: 0 }]
        );
        // Nothing fired any more: withdrawn, with the reason from the unfired
        // condition that overlaps.
        let unfired = [cond(50, None, 100)];
        let steps = plan(&[raised(60, 120)], &[], &unfired);
        match &steps[..] {
            [Step::Withdraw { alert: 0, reason }] => {
                assert!(reason.contains("did not last its delay"), "{reason}")
            }
            s => panic!("{s:?}"),
        }
    }

    #[test]
    fn two_alarms_merged_by_late_data_keep_the_oldest() {
        let c = cond(0, Some(60), 200);
        let all = [c];
        let fired: Vec<&Condition> = all.iter().collect();
        let steps = plan(&[raised(0, 90), raised(100, 200)], &fired, &all);
        assert_eq!(steps[0], Step::Keep { alert: 0, cond: 0 });
        assert!(
            matches!(&steps[1], Step::Withdraw { alert: 1, reason } if reason.contains("part of"))
        );
    }

    #[test]
    fn live_only_alarms_clear() {
        let r = Raised {
            kind: ConditionKind::Silent,
            start_ms: 0,
            cleared_ms: None,
            last_ms: 10,
        };
        assert_eq!(plan(&[r], &[], &[]), vec![Step::Clear { alert: 0 }]);
    }
}
