//! The firmware's `Sampler` on the simulated board: per-channel intervals, the
//! alarm-mode interval, plausibility limits and stuck-sensor detection run on
//! simulated data, as on a device.
//!
//! Settings, as the firmware would take them:
//!
//! * A channel the daemon's `Settings::channels` names samples at its
//!   `interval_s` / `alarm_interval_s` with its `high_milli` / `low_milli`
//!   thresholds. Those are device seconds; the simulator runs device time
//!   `--speed` times faster (as the thermal model), so they are divided by
//!   the speed. Reading time stamps stay real time.
//! * Any other channel samples every `period_ms` (from `--interval-ms` and
//!   `--readings-per-frame`), also in alarm mode, with no thresholds (the
//!   alarm interval then only follows a fault).
//! * Stuck detection, [`stuck_after`]: off for the RTD (see there), 30
//!   identical milli-values in a row for the other kinds.

use coldchain_firmware::batch::{BatchError, ReadingBatch};
use coldchain_firmware::sampler::{ChannelConfig, Sampler};
use coldchain_proto::{ChannelKind, FaultKind, Measurement, Settings};

use crate::board::{Board, Channel, SensorFaults};
use crate::thermal::Physical;

/// Identical consecutive milli-values that make a channel "stuck".
///
/// Off (0) for the RTD: behind the MAX31865 its code steps by about 0.03 °C
/// at -196 °C (15 bits over 430 Ω), while a real PT100 in a dry shipper's
/// flat LN2 vapour moves by a few milli-°C: a healthy probe reads the same
/// code for long stretches and would be reported stuck. Its failure modes
/// (open, short, lead faults) are caught by the chip's fault status instead.
/// The thermocouple (MAX31856, 7.8 m°C LSB), the SHT4x temperature and
/// humidity (about 2.7 m°C and 1.9 m%RH steps, repeatability 0.04 °C and
/// 0.08 %RH) and the DS18B20 move in their last digit.
pub fn stuck_after(kind: ChannelKind) -> u16 {
    match kind {
        ChannelKind::Rtd => 0,
        ChannelKind::Thermocouple | ChannelKind::Ambient | ChannelKind::Humidity => 30,
    }
}

/// Every channel's sampling interval without pushed settings, real ms: a
/// frame of `readings_per_frame` readings every `interval`.
pub fn default_period_ms(
    profile: crate::thermal::Profile,
    readings_per_frame: usize,
    interval: std::time::Duration,
) -> u64 {
    let rounds = readings_per_frame
        .div_ceil(crate::board::channels(profile).len())
        .max(1);
    u64::try_from(interval.as_millis()).unwrap_or(u64::MAX) / rounds as u64
}

fn device_s_to_real_ms(s: u32, speed: f64) -> u32 {
    let ms = f64::from(s) * 1000.0 / speed;
    // At least 1 ms (the Sampler's resolution).
    ms.round().clamp(1.0, f64::from(u32::MAX)) as u32
}

/// The sampling settings of `channels`.
pub fn configs(
    channels: &[Channel],
    settings: Option<&Settings>,
    period_ms: u64,
    speed: f64,
) -> Vec<ChannelConfig> {
    let period = u32::try_from(period_ms).unwrap_or(u32::MAX);
    channels
        .iter()
        .map(|ch| {
            let pushed = settings.and_then(|s| s.channels.iter().find(|c| c.channel == ch.number));
            match pushed {
                Some(c) => ChannelConfig {
                    channel: ch.number,
                    kind: ch.kind,
                    interval_ms: device_s_to_real_ms(c.interval_s, speed),
                    alarm_interval_ms: device_s_to_real_ms(c.alarm_interval_s, speed),
                    high_milli: c.high_milli,
                    low_milli: c.low_milli,
                    stuck_after: stuck_after(ch.kind),
                },
                None => ChannelConfig {
                    channel: ch.number,
                    kind: ch.kind,
                    interval_ms: period,
                    alarm_interval_ms: period,
                    high_milli: None,
                    low_milli: None,
                    stuck_after: stuck_after(ch.kind),
                },
            }
        })
        .collect()
}

/// A `Sampler` for `configs`, every channel first due at `now_ms`.
pub fn sampler(configs: &[ChannelConfig], now_ms: u64) -> anyhow::Result<Sampler> {
    let mut s = Sampler::new();
    for c in configs {
        s.add(*c, now_ms)
            .map_err(|c| anyhow::anyhow!("no sampler slot left for channel {}", c.channel))?;
    }
    Ok(s)
}

/// Reads the channels due at `now_ms` from the board into `batch`, up to
/// `limit` readings in it. `Ok(true)`: stopped at the limit with channels
/// still due.
#[allow(
    clippy::too_many_arguments,
    reason = "the device loop's state, passed in"
)]
pub fn sample(
    sampler: &mut Sampler,
    board: &mut Board,
    channels: &[Channel],
    phys: &Physical,
    faults: SensorFaults,
    now_ms: u64,
    batch: &mut ReadingBatch,
    limit: usize,
) -> anyhow::Result<bool> {
    let mut failed: Option<anyhow::Error> = None;
    let r = sampler.poll_up_to(now_ms, batch, limit, |cfg| {
        let Some(ch) = channels.iter().find(|c| c.number == cfg.channel) else {
            return Err(FaultKind::NoResponse);
        };
        match board.measure(ch, phys, faults) {
            Ok(Measurement::Valid(v)) => Ok(v),
            Ok(Measurement::Fault(f)) => Err(f),
            Err(e) => {
                failed.get_or_insert(e);
                Err(FaultKind::NoResponse)
            }
        }
    });
    if let Some(e) = failed {
        return Err(e.context("the simulated board"));
    }
    match r {
        Ok(_) => Ok(false),
        Err(BatchError::Full) => Ok(true),
        Err(e) => Err(anyhow::anyhow!("batch: {e:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::board::{self, Board};
    use crate::thermal::{Container, Profile};

    /// Hours of simulated data through the Sampler at a fast interval, for
    /// every profile, held flat (LN2, dry ice) or drifting: no channel is
    /// ever reported stuck or implausible.
    #[test]
    fn healthy_simulated_sensors_are_never_stuck_or_implausible() {
        for profile in [
            Profile::CryoLn2,
            Profile::Cryo80,
            Profile::Fridge,
            Profile::Ambient,
        ] {
            let channels = board::channels(profile);
            let cfgs = configs(channels, None, 1000, 1.0);
            let mut s = sampler(&cfgs, 0).unwrap();
            let mut board = Board::boot().unwrap();
            let mut c = Container::new(profile, 7);
            let mut n = 0;
            // 20 000 rounds, one every 1 s of model time.
            for i in 0..20_000u64 {
                c.advance(1.0 / 3600.0);
                let phys = c.physical();
                let mut b = ReadingBatch::new();
                let now = i * 1000;
                sample(
                    &mut s,
                    &mut board,
                    channels,
                    &phys,
                    SensorFaults::default(),
                    now,
                    &mut b,
                    32,
                )
                .unwrap();
                for r in b.items() {
                    assert!(
                        matches!(r.value, Measurement::Valid(_)),
                        "{profile:?} channel {} at {now} ms: {:?}",
                        r.channel,
                        r.value
                    );
                    n += 1;
                }
            }
            assert_eq!(n, 20_000 * channels.len());
        }
    }

    /// The checks are the firmware's and they are on: a sensor that stops
    /// moving is reported `Stuck`, an open probe `OpenCircuit`, never a value.
    #[test]
    fn a_frozen_humidity_sensor_is_stuck_and_an_open_probe_a_fault() {
        let channels = board::channels(Profile::Fridge);
        let cfgs = configs(channels, None, 1000, 1.0);
        let mut s = sampler(&cfgs, 0).unwrap();
        let mut board = Board::boot().unwrap();
        let mut c = Container::new(Profile::Fridge, 1);
        let mut phys = c.physical();
        let mut rh = Vec::new();
        for i in 0..40u64 {
            let mut b = ReadingBatch::new();
            let faults = SensorFaults {
                probe_open: i == 39,
                ..SensorFaults::default()
            };
            // The outside humidity frozen at one value; the rest alive.
            let frozen = phys.outside_rh;
            phys = c.physical();
            phys.outside_rh = frozen;
            sample(
                &mut s,
                &mut board,
                channels,
                &phys,
                faults,
                i * 1000,
                &mut b,
                32,
            )
            .unwrap();
            rh.extend(b.items().iter().filter(|r| r.channel == 3).map(|r| r.value));
            if i == 39 {
                assert_eq!(
                    b.items()[0].value,
                    Measurement::Fault(FaultKind::OpenCircuit)
                );
            }
        }
        assert!(rh[..29].iter().all(|m| matches!(m, Measurement::Valid(_))));
        assert!(
            rh[29..]
                .iter()
                .all(|m| *m == Measurement::Fault(FaultKind::Stuck))
        );
    }

    #[test]
    fn pushed_settings_are_device_time_scaled_by_the_speed() {
        let channels = board::channels(Profile::CryoLn2);
        let mut settings = Settings {
            version: 1,
            upload_interval_s: 300,
            status_interval_s: 300,
            tilt_limit_deg: 45,
            channels: heapless::Vec::new(),
        };
        settings
            .channels
            .push(coldchain_proto::ChannelSettings {
                channel: 0,
                interval_s: 60,
                alarm_interval_s: 10,
                high_milli: Some(-150_000),
                low_milli: None,
            })
            .unwrap();
        let cfgs = configs(channels, Some(&settings), 500, 60.0);
        assert_eq!(cfgs[0].interval_ms, 1000);
        assert_eq!(cfgs[0].alarm_interval_ms, 167);
        assert_eq!(cfgs[0].high_milli, Some(-150_000));
        assert_eq!(cfgs[0].stuck_after, 0);
        assert_eq!(cfgs[1].interval_ms, 500);
        assert_eq!(cfgs[3].stuck_after, 30);
    }
}
