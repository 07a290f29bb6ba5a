//! The simulated sensor board: which channels a profile has, and what each
//! sensor reports for the container's physical state. The sample probe (a
//! PT100) is read through the firmware's MAX31865 driver, over SPI, from a
//! register model of the chip ([`crate::chips`]); the other channels are
//! taken from the thermal model directly.

use coldchain_firmware::drivers::max31865::{self, Max31865};
use coldchain_proto::{ChannelKind, Measurement};

use std::sync::{Arc, Mutex};

use crate::chips::{NoWait, Rtd, RtdInput, SimMax31865, pt100_ohms};
use crate::thermal::{Physical, Profile};

/// Where a channel looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The sample probe (RTD).
    Probe,
    /// The container's neck / head space (thermocouple or DS18B20).
    Neck,
    /// Outside air temperature (SHT4x).
    OutsideTemp,
    /// Outside relative humidity (SHT4x).
    OutsideRh,
}

/// One channel of the board.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Channel {
    /// Channel number on the wire.
    pub number: u8,
    /// Kind on the wire.
    pub kind: ChannelKind,
    /// What it measures.
    pub source: Source,
}

/// The channels of a profile, channel 0 (the RTD sample probe) first.
pub fn channels(profile: Profile) -> &'static [Channel] {
    const CRYO: &[Channel] = &[
        Channel {
            number: 0,
            kind: ChannelKind::Rtd,
            source: Source::Probe,
        },
        Channel {
            number: 1,
            kind: ChannelKind::Thermocouple,
            source: Source::Neck,
        },
        Channel {
            number: 2,
            kind: ChannelKind::Ambient,
            source: Source::OutsideTemp,
        },
        Channel {
            number: 3,
            kind: ChannelKind::Humidity,
            source: Source::OutsideRh,
        },
    ];
    const BOX: &[Channel] = &[
        Channel {
            number: 0,
            kind: ChannelKind::Rtd,
            source: Source::Probe,
        },
        Channel {
            number: 1,
            kind: ChannelKind::Ambient,
            source: Source::Neck,
        },
        Channel {
            number: 2,
            kind: ChannelKind::Ambient,
            source: Source::OutsideTemp,
        },
        Channel {
            number: 3,
            kind: ChannelKind::Humidity,
            source: Source::OutsideRh,
        },
    ];
    match profile {
        Profile::CryoLn2 | Profile::Cryo80 => CRYO,
        Profile::Fridge | Profile::Ambient => BOX,
    }
}

/// Faults a run can inject into the sensors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SensorFaults {
    /// The RTD is disconnected.
    pub probe_open: bool,
    /// The RTD came loose and reads the head space instead of the sample.
    pub probe_loose: bool,
}

/// The board's chips, with their drivers.
#[derive(Debug)]
pub struct Board {
    rtd: Max31865<SimMax31865>,
    probe: RtdInput,
}

impl Board {
    /// Powers the board up: the MAX31865 driver initialises its chip.
    pub fn boot() -> anyhow::Result<Board> {
        let cfg = max31865::Config::PT100_430;
        let probe: RtdInput = Arc::new(Mutex::new(Rtd::Ohms(pt100_ohms(0.0))));
        let mut rtd = Max31865::new(SimMax31865::new(cfg.r_ref, probe.clone()), cfg);
        rtd.init()
            .map_err(|e| anyhow::anyhow!("MAX31865 init: {e:?}"))?;
        Ok(Board { rtd, probe })
    }

    /// What channel `ch` reports for `phys`.
    pub fn measure(
        &mut self,
        ch: &Channel,
        phys: &Physical,
        faults: SensorFaults,
    ) -> anyhow::Result<Measurement> {
        let milli = |v: f64| Measurement::Valid((v * 1000.0).round() as i32);
        Ok(match ch.source {
            Source::Probe => {
                let input = if faults.probe_open {
                    Rtd::Open
                } else if faults.probe_loose {
                    Rtd::Ohms(pt100_ohms(phys.neck_c))
                } else {
                    Rtd::Ohms(pt100_ohms(phys.probe_c))
                };
                *self.probe.lock().unwrap_or_else(|e| e.into_inner()) = input;
                match self
                    .rtd
                    .read_milli_c(&mut NoWait)
                    .map_err(|e| anyhow::anyhow!("MAX31865: {e:?}"))?
                {
                    Ok(m) => Measurement::Valid(m),
                    Err(f) => Measurement::Fault(f),
                }
            }
            Source::Neck => milli(phys.neck_c),
            Source::OutsideTemp => milli(phys.outside_c),
            Source::OutsideRh => milli(phys.outside_rh),
        })
    }
}
