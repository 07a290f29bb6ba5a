//! The simulated sensor board: which channels a profile has, and what each
//! sensor reports for the container's physical state.

use coldchain_proto::{ChannelKind, FaultKind, Measurement};

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

/// What channel `ch` reports for `phys`.
pub fn measure(ch: &Channel, phys: &Physical, faults: SensorFaults) -> Measurement {
    let milli = |v: f64| Measurement::Valid((v * 1000.0).round() as i32);
    match ch.source {
        Source::Probe if faults.probe_open => Measurement::Fault(FaultKind::OpenCircuit),
        Source::Probe if faults.probe_loose => milli(phys.neck_c),
        Source::Probe => milli(phys.probe_c),
        Source::Neck => milli(phys.neck_c),
        Source::OutsideTemp => milli(phys.outside_c),
        Source::OutsideRh => milli(phys.outside_rh),
    }
}
