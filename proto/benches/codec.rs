//! Hot paths of the wire contract on the host: postcard + HMAC-SHA256 signing
//! and verifying of a full 32-reading frame, and the COBS + CRC serial framing.
//! `CARGO_TARGET_DIR=target-perf cargo bench -p coldchain-proto --bench codec`

use std::hint::black_box;

use coldchain_proto::codec::{MAX_SIGNED_LEN, decode_signed, decode_unverified, encode_signed};
use coldchain_proto::serial::{Decoder, MAX_FRAME_LEN, encode};
use coldchain_proto::{
    Body, ChannelKind, DeviceId, DeviceKey, Frame, Measurement, Reading, Timestamp,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn frame(k: usize) -> Frame {
    let mut rs = heapless::Vec::new();
    for i in 0..k {
        let _ = rs.push(Reading {
            channel: (i % 4) as u8,
            kind: ChannelKind::Rtd,
            dt_ms: i as u32 * 1000,
            value: Measurement::Valid(-190_123 + i as i32),
        });
    }
    Frame {
        device: DeviceId::new("bench-0001").unwrap(),
        boot: 3,
        seq: 123_456,
        time: Timestamp::Wall(1_767_225_600_000),
        body: Body::Readings(rs),
    }
}

fn codec(c: &mut Criterion) {
    let key = DeviceKey::from_bytes(core::array::from_fn(|i| i as u8));
    for k in [4usize, 32] {
        let f = frame(k);
        let mut buf = [0u8; MAX_SIGNED_LEN];
        let signed = encode_signed(&f, &key, &mut buf).unwrap().to_vec();
        let mut g = c.benchmark_group(format!(
            "frame of {k} readings ({} bytes signed)",
            signed.len()
        ));
        g.throughput(Throughput::Elements(k as u64));
        g.bench_function("encode_signed", |b| {
            let mut buf = [0u8; MAX_SIGNED_LEN];
            b.iter(|| encode_signed(black_box(&f), &key, &mut buf).map(|s| s.len()))
        });
        g.bench_function("decode_signed (verify + decode)", |b| {
            b.iter(|| decode_signed::<Frame>(black_box(&signed), &key).unwrap())
        });
        g.bench_function("decode_unverified", |b| {
            b.iter(|| decode_unverified::<Frame>(black_box(&signed)).unwrap().0)
        });
        g.bench_function("verify tag only", |b| {
            let (body, tag) = signed.split_at(signed.len() - coldchain_proto::TAG_LEN);
            b.iter(|| key.verify(black_box(body), black_box(tag)))
        });
        let mut line = [0u8; MAX_FRAME_LEN];
        let n = encode(&signed, &mut line).unwrap();
        let line = line[..n].to_vec();
        g.bench_function("serial encode (CRC + COBS)", |b| {
            let mut out = [0u8; MAX_FRAME_LEN];
            b.iter(|| encode(black_box(&signed), &mut out).unwrap())
        });
        g.bench_function("serial decoder, byte by byte", |b| {
            let mut d = Decoder::new();
            b.iter(|| {
                let mut got = 0;
                for &byte in black_box(&line) {
                    if let Some(Ok(p)) = d.push(byte) {
                        got = p.len();
                    }
                }
                got
            })
        });
        g.finish();
    }
}

criterion_group!(benches, codec);
criterion_main!(benches);
