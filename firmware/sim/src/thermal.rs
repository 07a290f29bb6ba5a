//! Thermal models of the containers, in model time (hours).
//!
//! * `cryo-ln2`: an LN2 vapour dry shipper. The sample stays flat near -190 °C
//!   while nitrogen remains, then rises roughly linearly (Spijkers, Damas &
//!   Vanapalli, IIR 2023). Hold time varies by unit (up to 40 %), and a shipper
//!   on its side boils off about 2.5 times faster (60 % of hold time lost,
//!   Fisher BioServices 2013).
//! * `cryo-80`: dry ice, flat at -78.5 °C while ice remains, then a linear rise.
//! * `fridge`: a 2-8 °C box held by phase-change packs at 5 °C, then drifting
//!   towards the outside temperature.
//! * `ambient`: a 15-25 °C insulated box following the outside slowly.
//!
//! Lid openings add a warm transient that decays; a loose probe reads the
//! container's head space instead of the sample.

use crate::rng::Rng;

/// Which container is simulated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    /// LN2 vapour dry shipper, <= -150 °C.
    #[value(name = "cryo-ln2")]
    CryoLn2,
    /// Dry ice, -80 °C.
    #[value(name = "cryo-80")]
    Cryo80,
    /// 2-8 °C box.
    Fridge,
    /// 15-25 °C box.
    Ambient,
}

/// What the sensors can see at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Physical {
    /// Temperature at the sample probe, °C.
    pub probe_c: f64,
    /// Temperature in the container's head space / neck, °C.
    pub neck_c: f64,
    /// Outside air temperature, °C.
    pub outside_c: f64,
    /// Outside relative humidity, %.
    pub outside_rh: f64,
    /// Angle of the container from vertical, degrees.
    pub tilt_deg: f64,
    /// Lid open.
    pub lid_open: bool,
    /// Coolant left, 0..1 (LN2, dry ice, or phase-change capacity).
    pub coolant: f64,
}

/// A container with its coolant and its history.
#[derive(Debug, Clone)]
pub struct Container {
    profile: Profile,
    /// Model time, hours.
    t_h: f64,
    /// Coolant left, 0..1.
    coolant: f64,
    /// Hours of coolant when upright and closed.
    hold_h: f64,
    /// Temperature once the coolant is gone, °C (tracks the exhaustion point).
    warm_c: f64,
    /// Warm transient from lid openings, °C above the model.
    lid_transient_c: f64,
    tilt_deg: f64,
    lid_open: bool,
    rng: Rng,
}

impl Profile {
    /// The temperature the coolant holds, °C.
    fn hold_c(self) -> f64 {
        match self {
            Profile::CryoLn2 => -190.0,
            Profile::Cryo80 => -78.5,
            Profile::Fridge => 5.0,
            Profile::Ambient => 22.0,
        }
    }
    /// Nominal hold time of a fresh unit, hours.
    fn nominal_hold_h(self) -> f64 {
        match self {
            Profile::CryoLn2 => 240.0,
            Profile::Cryo80 => 96.0,
            Profile::Fridge => 72.0,
            Profile::Ambient => 96.0,
        }
    }
    /// Linear rise once the coolant is gone, °C per hour.
    fn rise_c_per_h(self) -> f64 {
        match self {
            Profile::CryoLn2 => 3.0,
            Profile::Cryo80 => 1.5,
            Profile::Fridge => 0.6,
            Profile::Ambient => 0.0,
        }
    }
}

fn outside_c(t_h: f64) -> f64 {
    21.0 + 4.0 * (core::f64::consts::TAU * (t_h - 9.0) / 24.0).sin()
}

impl Container {
    /// A container at model time 0, full of coolant. The unit's hold time is
    /// drawn from the seed: 60 % to 100 % of the nominal figure.
    pub fn new(profile: Profile, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let hold_h = profile.nominal_hold_h() * (0.6 + 0.4 * rng.unit());
        Container {
            profile,
            t_h: 0.0,
            coolant: 1.0,
            hold_h,
            warm_c: profile.hold_c(),
            lid_transient_c: 0.0,
            tilt_deg: 2.0 * rng.unit(),
            lid_open: false,
            rng,
        }
    }

    /// The hold time of this unit when kept upright and closed, hours.
    pub fn hold_h(&self) -> f64 {
        self.hold_h
    }

    /// Tips the container to `deg` from vertical (90 = on its side).
    pub fn set_tilt(&mut self, deg: f64) {
        self.tilt_deg = deg.clamp(0.0, 180.0);
    }

    /// Opens or closes the lid.
    pub fn set_lid(&mut self, open: bool) {
        self.lid_open = open;
    }

    /// Lets `dt_h` hours of model time pass.
    pub fn advance(&mut self, dt_h: f64) {
        // Small steps keep the transient decay and the coolant budget exact enough.
        let mut left = dt_h.max(0.0);
        while left > 0.0 {
            let step = left.min(0.05);
            self.step(step);
            left -= step;
        }
    }

    fn step(&mut self, dt_h: f64) {
        self.t_h += dt_h;
        let tipped = self.tilt_deg > 45.0;
        let mut burn = dt_h / self.hold_h;
        if tipped && matches!(self.profile, Profile::CryoLn2 | Profile::Cryo80) {
            burn *= 2.5;
        }
        if self.lid_open {
            burn *= 4.0;
        }
        if self.profile == Profile::Ambient {
            // An ambient box has no coolant to spend.
            burn = 0.0;
        }
        let outside = outside_c(self.t_h);
        if self.coolant > 0.0 {
            self.coolant = (self.coolant - burn).max(0.0);
            self.warm_c = self.profile.hold_c();
        } else if self.profile == Profile::Fridge {
            // First order towards outside, 10 h time constant.
            self.warm_c += (outside - self.warm_c) * (dt_h / 10.0).min(1.0);
        } else {
            // Linear rise, bounded by the outside temperature.
            self.warm_c = (self.warm_c + self.profile.rise_c_per_h() * dt_h).min(outside);
        }
        if self.profile == Profile::Ambient {
            // An insulated box following the outside with an 8 h time constant.
            self.warm_c += (outside - self.warm_c) * (dt_h / 8.0).min(1.0);
        }
        // Lid: warm air comes in while open; decays with 20 min when closed.
        let span = (outside - self.warm_c).max(0.0);
        if self.lid_open {
            let target = span * 0.4;
            self.lid_transient_c += (target - self.lid_transient_c) * (dt_h / 0.1).min(1.0);
        } else {
            self.lid_transient_c -= self.lid_transient_c * (dt_h / 0.33).min(1.0);
        }
    }

    /// What the sensors see now, with measurement noise: ±0.05 °C at the
    /// probe (so a probe held flat in LN2 still moves by a few codes of the
    /// MAX31865), ±0.1 °C outside, ±0.1 %RH.
    pub fn physical(&mut self) -> Physical {
        let noise = (self.rng.unit() - 0.5) * 0.1;
        let probe = self.warm_c + self.lid_transient_c + noise;
        let outside = outside_c(self.t_h);
        // The head space sits a fifth of the way from the sample towards outside.
        let neck = probe + (outside - probe) * 0.2 + self.lid_transient_c;
        Physical {
            probe_c: probe,
            neck_c: neck,
            outside_c: outside + (self.rng.unit() - 0.5) * 0.2,
            // SHT4x repeatability is about 0.08 %RH: a real humidity
            // reading moves in its last digits (the firmware's stuck
            // detection relies on it).
            outside_rh: 45.0
                + 10.0 * (core::f64::consts::TAU * self.t_h / 24.0).cos()
                + (self.rng.unit() - 0.5) * 0.2,
            tilt_deg: self.tilt_deg,
            lid_open: self.lid_open,
            coolant: self.coolant,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dry_shipper_is_flat_then_rises_linearly() {
        let mut c = Container::new(Profile::CryoLn2, 1);
        let hold = c.hold_h();
        assert!((144.0..=240.0).contains(&hold));
        c.advance(hold * 0.9);
        let flat = c.physical().probe_c;
        assert!((flat + 190.0).abs() < 0.2, "flat while LN2 remains: {flat}");
        c.advance(hold * 0.1 + 1.0);
        let t0 = c.physical().probe_c;
        c.advance(5.0);
        let t5 = c.physical().probe_c;
        let rate = (t5 - t0) / 5.0;
        assert!(
            (rate - 3.0).abs() < 0.2,
            "linear rise of about 3 °C/h: {rate}"
        );
    }

    #[test]
    fn tipped_shipper_loses_its_nitrogen_sooner() {
        let mut up = Container::new(Profile::CryoLn2, 9);
        let mut side = Container::new(Profile::CryoLn2, 9);
        side.set_tilt(90.0);
        let h = up.hold_h() * 0.5;
        up.advance(h);
        side.advance(h);
        assert!(up.physical().coolant > 0.4);
        assert_eq!(side.physical().coolant, 0.0);
    }

    #[test]
    fn lid_opening_warms_a_fridge_box_then_recovers() {
        let mut c = Container::new(Profile::Fridge, 3);
        c.advance(1.0);
        let before = c.physical().probe_c;
        c.set_lid(true);
        c.advance(0.25);
        let open = c.physical().probe_c;
        assert!(open > 8.0, "lid open pushes the box out of 2-8: {open}");
        c.set_lid(false);
        c.advance(3.0);
        let after = c.physical().probe_c;
        assert!(
            (after - before).abs() < 0.5,
            "recovers after closing: {after}"
        );
    }
}
