//! The daemon's ingest hot path on the host, against a real sled database in
//! a temporary directory:
//!
//! * `process`: verify + decode + dedupe lookup + sequence/time tracking +
//!   writes into sled (not yet durable) of one signed 32-reading frame, of a
//!   JSON envelope, and of a duplicate;
//! * `commit`: the group commit (sled flush + fsync of the database files)
//!   after a group of frames, per frame;
//! * the pieces: verify/decode alone, JSON envelope parse alone.
//!
//! `CARGO_TARGET_DIR=target-perf cargo bench -p coldchain-daemon --bench ingest`

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use coldchain_daemon::config::Device;
use coldchain_daemon::ingest::{Inbound, Ingestor, Outcome, Stats, json, now_ms};
use coldchain_daemon::registry::Registry;
use coldchain_daemon::store::{KvStore, Via};
use coldchain_proto::codec::{MAX_SIGNED_LEN, decode_unverified, encode_signed};
use coldchain_proto::{
    Body, ChannelKind, DeviceId, DeviceKey, Frame, Measurement, Reading, Timestamp, topic,
};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

const K: usize = 32;

fn key() -> DeviceKey {
    DeviceKey::from_bytes(core::array::from_fn(|i| i as u8))
}

fn frame(dev: &DeviceId, seq: u32) -> Frame {
    let mut rs = heapless::Vec::new();
    for i in 0..K {
        let _ = rs.push(Reading {
            channel: (i % 4) as u8,
            kind: ChannelKind::Rtd,
            dt_ms: i as u32 * 1000,
            value: Measurement::Valid(-190_123 + i as i32),
        });
    }
    Frame {
        device: dev.clone(),
        boot: 1,
        seq,
        time: Timestamp::Wall(now_ms() as u64),
        body: Body::Readings(rs),
    }
}

fn binary(dev: &DeviceId, seq: u32) -> Inbound {
    let mut buf = [0u8; MAX_SIGNED_LEN];
    let payload = encode_signed(&frame(dev, seq), &key(), &mut buf)
        .unwrap()
        .to_vec();
    Inbound {
        via: Via::Mqtt,
        source: topic::device_up(dev).to_string(),
        claimed: Some(dev.clone()),
        payload,
        oversize: None,
        received_ms: now_ms(),
    }
}

fn json_envelope(dev: &DeviceId, seq: u32) -> Inbound {
    let f = serde_json::to_string(&frame(dev, seq)).unwrap();
    let tag = hex::encode(key().sign(f.as_bytes()));
    Inbound {
        via: Via::MqttJson,
        source: topic::device_up_json(dev).to_string(),
        claimed: Some(dev.clone()),
        payload: format!("{{\"frame\":{f},\"tag\":\"{tag}\"}}").into_bytes(),
        oversize: None,
        received_ms: now_ms(),
    }
}

fn ingestor(dir: &std::path::Path, devs: &[DeviceId]) -> Ingestor<KvStore> {
    let store = Arc::new(KvStore::open(&dir.join("db")).unwrap());
    let registry = Registry::new(devs.iter().map(|d| Device {
        id: d.clone(),
        key: key(),
        allow_unsigned_json: false,
        settings: None,
    }));
    Ingestor::new(store, registry, Arc::new(Stats::default()))
}

fn ingest(c: &mut Criterion) {
    let dev = DeviceId::new("bench-0001").unwrap();
    let jdev = DeviceId::new("bench-json").unwrap();

    let mut g = c.benchmark_group(format!("frame of {K} readings"));
    g.throughput(Throughput::Elements(K as u64));

    let one = binary(&dev, 7);
    g.bench_function("decode_unverified + verify", |b| {
        let k = key();
        b.iter(|| {
            let (f, body, tag) = decode_unverified::<Frame>(black_box(&one.payload)).unwrap();
            assert!(k.verify(body, tag));
            f.seq
        })
    });
    let env = json_envelope(&jdev, 7);
    g.bench_function("JSON envelope parse + frame decode + verify", |b| {
        let k = key();
        b.iter(|| {
            let e = json::Envelope::parse(black_box(&env.payload)).unwrap();
            let f = e.frame().unwrap();
            assert!(k.verify(e.frame_bytes(), &e.tag().unwrap()));
            f.seq
        })
    });

    // process(): a fresh frame each iteration (increasing seq), into real sled.
    let dir = tempfile::tempdir().unwrap();
    let mut ing = ingestor(dir.path(), &[dev.clone(), jdev.clone()]);
    let mut seq = 0u32;
    g.bench_function("process signed frame -> sled (not yet durable)", |b| {
        b.iter_batched(
            || {
                seq += 1;
                binary(&dev, seq)
            },
            |m| {
                let o = ing.process(&m).unwrap();
                debug_assert!(matches!(o, Outcome::Stored { .. }));
                o
            },
            BatchSize::SmallInput,
        )
    });
    let mut jseq = 0u32;
    g.bench_function("process JSON envelope -> sled (not yet durable)", |b| {
        b.iter_batched(
            || {
                jseq += 1;
                json_envelope(&jdev, jseq)
            },
            |m| ing.process(&m).unwrap(),
            BatchSize::SmallInput,
        )
    });
    // The very same message again (a redelivery): stored once first. A frame
    // rebuilt for a stored seq would carry another timestamp, i.e. other
    // content, and be refused as sequence reuse instead.
    let dup = binary(&dev, u32::MAX);
    assert!(matches!(ing.process(&dup).unwrap(), Outcome::Stored { .. }));
    g.bench_function("process duplicate (dedupe hit)", |b| {
        b.iter(|| {
            let o = ing.process(black_box(&dup)).unwrap();
            debug_assert!(matches!(o, Outcome::Duplicate { .. }));
            o
        })
    });
    ing.commit().unwrap();
    g.finish();

    // Group commit: process `n` frames, then one commit; time per frame.
    let mut g = c.benchmark_group(
        "group commit: n frames processed, then one flush + fsync (time per group)",
    );
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    for n in [1usize, 64, 512] {
        g.throughput(Throughput::Elements((n * K) as u64));
        let dir = tempfile::tempdir().unwrap();
        let mut ing = ingestor(dir.path(), std::slice::from_ref(&dev));
        let mut seq = 0u32;
        g.bench_function(format!("n = {n}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let msgs: Vec<Inbound> = (0..n)
                        .map(|_| {
                            seq += 1;
                            binary(&dev, seq)
                        })
                        .collect();
                    let t = Instant::now();
                    for m in &msgs {
                        ing.process(m).unwrap();
                    }
                    ing.commit().unwrap();
                    total += t.elapsed();
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group!(benches, ingest);
criterion_main!(benches);
