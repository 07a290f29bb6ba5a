//! Sampling with a mock clock: exact and instant.

use coldchain_firmware::batch::ReadingBatch;
use coldchain_firmware::clock::{Clock, MockClock};
use coldchain_firmware::sampler::{ChannelConfig, Sampler};
use coldchain_proto::{ChannelKind, FaultKind, Measurement};

fn rtd(interval_ms: u32, alarm_ms: u32) -> ChannelConfig {
    ChannelConfig {
        channel: 0,
        kind: ChannelKind::Rtd,
        interval_ms,
        alarm_interval_ms: alarm_ms,
        high_milli: Some(-150_000),
        low_milli: None,
        stuck_after: 0,
    }
}

/// Runs the sampler from 0 to `until` ms in 1 ms steps; returns (time, channel, value).
fn run(
    s: &mut Sampler,
    clock: &MockClock,
    until: u64,
    mut value: impl FnMut(u64, u8) -> Result<i32, FaultKind>,
) -> Vec<(u64, u8, Measurement)> {
    let mut out = Vec::new();
    while clock.uptime_ms() <= until {
        let now = clock.uptime_ms();
        let mut b = ReadingBatch::new();
        s.poll(now, &mut b, |c| value(now, c.channel)).unwrap();
        out.extend(b.items().iter().map(|r| (now, r.channel, r.value)));
        clock.advance(1);
    }
    out
}

#[test]
fn each_channel_keeps_its_own_interval() {
    let clock = MockClock::new();
    let mut s = Sampler::new();
    s.add(rtd(60_000, 10_000), 0).unwrap();
    let amb = ChannelConfig {
        channel: 2,
        kind: ChannelKind::Ambient,
        interval_ms: 300_000,
        alarm_interval_ms: 300_000,
        high_milli: None,
        low_milli: None,
        stuck_after: 0,
    };
    s.add(amb, 0).unwrap();
    let mut i = 0;
    let got = run(&mut s, &clock, 600_000, |_, _| {
        i += 1;
        Ok(-190_000 + i)
    });
    let t0: Vec<u64> = got.iter().filter(|g| g.1 == 0).map(|g| g.0).collect();
    let t2: Vec<u64> = got.iter().filter(|g| g.1 == 2).map(|g| g.0).collect();
    assert_eq!(t0, (0..=10).map(|k| k * 60_000).collect::<Vec<_>>());
    assert_eq!(t2, [0, 300_000, 600_000]);
    assert_eq!(s.next_due_ms(), Some(660_000));
}

#[test]
fn crossing_the_threshold_switches_to_the_alarm_interval_and_back() {
    let clock = MockClock::new();
    let mut s = Sampler::new();
    s.add(rtd(60_000, 10_000), 0).unwrap();
    // Warm (-140 °C) between 120 s and 150 s.
    let got = run(&mut s, &clock, 300_000, |t, _| {
        Ok(if (120_000..150_000).contains(&t) {
            -140_000
        } else {
            -190_000
        })
    });
    let times: Vec<u64> = got.iter().map(|g| g.0).collect();
    assert_eq!(
        times,
        [
            0, 60_000, 120_000, 130_000, 140_000, 150_000, 210_000, 270_000
        ]
    );
    assert!(!s.in_alarm(0));
}

#[test]
fn implausible_values_are_faults_and_trigger_fast_rechecks() {
    let clock = MockClock::new();
    let mut s = Sampler::new();
    s.add(rtd(60_000, 10_000), 0).unwrap();
    // An open input read without its fault status: -242 °C.
    let got = run(&mut s, &clock, 20_000, |_, _| Ok(-242_000));
    assert_eq!(
        got,
        [
            (0, 0, Measurement::Fault(FaultKind::OutOfRange)),
            (10_000, 0, Measurement::Fault(FaultKind::OutOfRange)),
            (20_000, 0, Measurement::Fault(FaultKind::OutOfRange)),
        ]
    );
    let mut b = ReadingBatch::new();
    let mut s2 = Sampler::new();
    s2.add(
        ChannelConfig {
            kind: ChannelKind::Humidity,
            ..rtd(1, 1)
        },
        0,
    )
    .unwrap();
    s2.poll(0, &mut b, |_| Ok(100_001)).unwrap();
    s2.poll(1, &mut b, |_| Ok(100_000)).unwrap();
    assert_eq!(
        b.items()[0].value,
        Measurement::Fault(FaultKind::OutOfRange)
    );
    assert_eq!(b.items()[1].value, Measurement::Valid(100_000));
}

#[test]
fn a_stuck_sensor_becomes_a_fault_until_it_moves() {
    let mut s = Sampler::new();
    s.add(
        ChannelConfig {
            stuck_after: 3,
            ..rtd(1, 1)
        },
        0,
    )
    .unwrap();
    let mut b = ReadingBatch::new();
    for (t, v) in [
        (0, -190_000),
        (1, -190_000),
        (2, -190_000),
        (3, -190_000),
        (4, -190_001),
    ] {
        s.poll(t, &mut b, |_| Ok(v)).unwrap();
    }
    let vals: Vec<_> = b.items().iter().map(|r| r.value).collect();
    assert_eq!(
        vals,
        [
            Measurement::Valid(-190_000),
            Measurement::Valid(-190_000),
            Measurement::Fault(FaultKind::Stuck),
            Measurement::Fault(FaultKind::Stuck),
            Measurement::Valid(-190_001),
        ]
    );
}

#[test]
fn readings_in_a_batch_carry_offsets_from_the_first() {
    let clock = MockClock::new();
    let mut s = Sampler::new();
    s.add(rtd(1_000, 1_000), 0).unwrap();
    let mut b = ReadingBatch::new();
    for _ in 0..4 {
        s.poll(clock.uptime_ms(), &mut b, |_| Ok(-190_000)).unwrap();
        clock.advance(1_000);
    }
    let dts: Vec<u32> = b.items().iter().map(|r| r.dt_ms).collect();
    assert_eq!(dts, [0, 1_000, 2_000, 3_000]);
    assert_eq!(b.start_ms(), Some(0));
}

/// A frame smaller than a batch: `poll_up_to` stops at the limit and the
/// channels not read stay due for the next frame, none skipped.
#[test]
fn poll_up_to_stops_at_the_limit_and_keeps_the_rest_due() {
    let mut s = Sampler::new();
    for ch in 0..3u8 {
        let mut c = rtd(1000, 1000);
        c.channel = ch;
        c.high_milli = None;
        s.add(c, 0).unwrap();
    }
    let mut b = ReadingBatch::new();
    assert!(s.poll_up_to(0, &mut b, 2, |_| Ok(-190_000)).is_err());
    let chans: Vec<u8> = b.items().iter().map(|r| r.channel).collect();
    assert_eq!(chans, [0, 1]);
    assert_eq!(s.next_due_ms(), Some(0), "channel 2 still due");
    let mut b = ReadingBatch::new();
    assert_eq!(s.poll_up_to(0, &mut b, 2, |_| Ok(-190_000)), Ok(1));
    assert_eq!(b.items()[0].channel, 2);
    assert_eq!(s.next_due_ms(), Some(1000));
}
