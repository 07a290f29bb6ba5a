//! Per-sample processing cost on the host: raw RTD code -> Callendar-Van Dusen
//! -> plausibility/stuck checks and scheduling -> into the batch; and per
//! frame: seal + postcard + HMAC-SHA256 sign of a full 32-reading frame.
//! `CARGO_TARGET_DIR=... cargo bench -p coldchain-firmware --bench per_sample`

use std::hint::black_box;

use coldchain_firmware::batch::ReadingBatch;
use coldchain_firmware::drivers::max31865::{Config, convert};
use coldchain_firmware::sampler::{ChannelConfig, Sampler};
use coldchain_firmware::{FrameBuilder, TimeBase};
use coldchain_proto::{ChannelKind, DeviceId, DeviceKey};
use criterion::{Criterion, criterion_group, criterion_main};

fn per_sample(c: &mut Criterion) {
    let cfg = Config::PT100_430;
    c.bench_function("sample: RTD code -> m°C (exact CVD)", |b| {
        b.iter(|| convert(&cfg, black_box(1543 << 1)))
    });
    c.bench_function("sample: convert + checks + schedule + batch", |b| {
        let mut s = Sampler::new();
        s.add(
            ChannelConfig {
                channel: 0,
                kind: ChannelKind::Rtd,
                interval_ms: 1,
                alarm_interval_ms: 1,
                high_milli: Some(-150_000),
                low_milli: None,
                stuck_after: 30,
            },
            0,
        )
        .unwrap();
        let mut batch = ReadingBatch::new();
        let mut t = 0u64;
        let mut code = 1543u16;
        b.iter(|| {
            if batch.is_full() {
                batch = ReadingBatch::new();
            }
            code = if code == 1543 { 1544 } else { 1543 };
            let n = s
                .poll(t, &mut batch, |_| convert(&cfg, black_box(code << 1)))
                .unwrap();
            t += 1;
            n
        })
    });
    c.bench_function("frame: seal + sign 32 readings", |b| {
        let mut fb = FrameBuilder::new(
            DeviceId::new("bench-0001").unwrap(),
            DeviceKey::from_bytes([3; 32]),
            1,
        );
        let tb = TimeBase::unsynced();
        b.iter(|| {
            let mut batch = ReadingBatch::new();
            for i in 0..32u64 {
                batch
                    .push_reading(
                        i * 1000,
                        0,
                        ChannelKind::Rtd,
                        coldchain_proto::Measurement::Valid(-190_000),
                    )
                    .unwrap();
            }
            let f = fb.readings(&mut batch, &tb).unwrap();
            fb.sign(&f).unwrap().bytes.len()
        })
    });
}

criterion_group!(benches, per_sample);
criterion_main!(benches);
