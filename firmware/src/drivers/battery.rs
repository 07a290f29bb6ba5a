//! Battery voltage, through a trait of our own (embedded-hal 1.0 has no ADC
//! trait), with a low-battery warning that has hysteresis.

use coldchain_proto::EventKind;

/// Something that measures the battery.
pub trait Battery {
    /// Measurement error.
    type Error;
    /// Battery voltage, millivolts.
    fn millivolts(&mut self) -> Result<u16, Self::Error>;
}

/// Raises `BatteryLow` once when the voltage falls below `low_mv`, and re-arms
/// only after it has risen above `low_mv + hysteresis_mv`.
#[derive(Debug, Clone, Copy)]
pub struct LowBatteryWatch {
    low_mv: u16,
    hysteresis_mv: u16,
    raised: bool,
}

impl LowBatteryWatch {
    /// A watch for `low_mv` with `hysteresis_mv`.
    pub const fn new(low_mv: u16, hysteresis_mv: u16) -> Self {
        LowBatteryWatch {
            low_mv,
            hysteresis_mv,
            raised: false,
        }
    }

    /// Feeds a measurement; returns the event to report, if any.
    pub fn update(&mut self, mv: u16) -> Option<EventKind> {
        if !self.raised && mv < self.low_mv {
            self.raised = true;
            return Some(EventKind::BatteryLow { mv });
        }
        if self.raised && mv > self.low_mv.saturating_add(self.hysteresis_mv) {
            self.raised = false;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn low_battery_fires_once_and_rearms_above_hysteresis() {
        let mut w = LowBatteryWatch::new(3400, 100);
        assert_eq!(w.update(3500), None);
        assert_eq!(w.update(3390), Some(EventKind::BatteryLow { mv: 3390 }));
        assert_eq!(w.update(3380), None);
        assert_eq!(
            w.update(3450),
            None,
            "inside the hysteresis band: still raised"
        );
        assert_eq!(w.update(3399), None);
        assert_eq!(w.update(3501), None);
        assert_eq!(w.update(3399), Some(EventKind::BatteryLow { mv: 3399 }));
    }
}
