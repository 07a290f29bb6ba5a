//! Wire-contract tests: round trips in both encodings, golden byte vectors,
//! hostile input into every decoder, and tag verification.

use coldchain_proto::codec::{self, CodecError, MAX_MESSAGE_LEN, MAX_SIGNED_LEN};
use coldchain_proto::serial;
use coldchain_proto::*;
use proptest::prelude::*;

fn key() -> DeviceKey {
    DeviceKey::from_hex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f").unwrap()
}

fn device_id() -> impl Strategy<Value = DeviceId> {
    "[A-Za-z0-9._-]{1,32}".prop_map(|s| DeviceId::new(&s).unwrap())
}

fn timestamp() -> impl Strategy<Value = Timestamp> {
    prop_oneof![
        any::<u64>().prop_map(Timestamp::Wall),
        any::<u64>().prop_map(Timestamp::Uptime)
    ]
}

fn measurement() -> impl Strategy<Value = Measurement> {
    prop_oneof![
        any::<i32>().prop_map(Measurement::Valid),
        prop_oneof![
            Just(FaultKind::OpenCircuit),
            Just(FaultKind::Short),
            Just(FaultKind::OutOfRange),
            Just(FaultKind::Crc),
            Just(FaultKind::NoResponse),
            Just(FaultKind::Stuck)
        ]
        .prop_map(Measurement::Fault)
    ]
}

fn reading() -> impl Strategy<Value = Reading> {
    (
        any::<u8>(),
        prop_oneof![
            Just(ChannelKind::Rtd),
            Just(ChannelKind::Thermocouple),
            Just(ChannelKind::Ambient),
            Just(ChannelKind::Humidity)
        ],
        any::<u32>(),
        measurement(),
    )
        .prop_map(|(channel, kind, dt_ms, value)| Reading {
            channel,
            kind,
            dt_ms,
            value,
        })
}

fn event_kind() -> impl Strategy<Value = EventKind> {
    prop_oneof![
        Just(EventKind::LidOpened),
        Just(EventKind::LidClosed),
        any::<u8>().prop_map(|angle_deg| EventKind::Tilt { angle_deg }),
        Just(EventKind::TiltCleared),
        any::<u32>().prop_map(|peak_mg| EventKind::Shock { peak_mg }),
        any::<u16>().prop_map(|mv| EventKind::BatteryLow { mv }),
        Just(EventKind::Boot),
        (any::<u64>(), any::<u64>())
            .prop_map(|(uptime_ms, unix_ms)| EventKind::ClockSynced { uptime_ms, unix_ms }),
        any::<u32>().prop_map(|dropped| EventKind::QueueOverflow { dropped }),
    ]
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        prop::collection::vec(reading(), 0..=MAX_READINGS)
            .prop_map(|v| Body::Readings(heapless::Vec::from_slice(&v).unwrap())),
        prop::collection::vec(
            (any::<u32>(), event_kind()).prop_map(|(dt_ms, kind)| Event { dt_ms, kind }),
            0..=MAX_EVENTS
        )
        .prop_map(|v| Body::Events(heapless::Vec::from_slice(&v).unwrap())),
        (
            any::<u16>(),
            any::<Option<i16>>(),
            any::<u32>(),
            any::<u32>()
        )
            .prop_map(
                |(battery_mv, signal_dbm, queued, dropped)| Body::Status(Status {
                    battery_mv,
                    signal_dbm,
                    queued,
                    dropped
                })
            ),
    ]
}

fn frame() -> impl Strategy<Value = Frame> {
    (device_id(), any::<u32>(), any::<u32>(), timestamp(), body()).prop_map(
        |(device, boot, seq, time, body)| Frame {
            device,
            boot,
            seq,
            time,
            body,
        },
    )
}

fn settings() -> impl Strategy<Value = Settings> {
    (
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
        any::<u8>(),
        prop::collection::vec(
            (
                any::<u8>(),
                any::<u32>(),
                any::<u32>(),
                any::<Option<i32>>(),
                any::<Option<i32>>(),
            )
                .prop_map(
                    |(channel, interval_s, alarm_interval_s, high_milli, low_milli)| {
                        ChannelSettings {
                            channel,
                            interval_s,
                            alarm_interval_s,
                            high_milli,
                            low_milli,
                        }
                    },
                ),
            0..=MAX_CHANNELS,
        ),
    )
        .prop_map(
            |(version, upload_interval_s, status_interval_s, tilt_limit_deg, ch)| Settings {
                version,
                upload_interval_s,
                status_interval_s,
                tilt_limit_deg,
                channels: heapless::Vec::from_slice(&ch).unwrap(),
            },
        )
}

fn downlink() -> impl Strategy<Value = Downlink> {
    let fref = (any::<u32>(), any::<u32>()).prop_map(|(boot, seq)| FrameRef { boot, seq });
    prop_oneof![
        (any::<u64>(), settings())
            .prop_map(|(unix_ms, settings)| Downlink::Sync { unix_ms, settings }),
        fref.clone().prop_map(Downlink::Ack),
        (
            fref,
            prop_oneof![
                Just(NackReason::Malformed),
                Just(NackReason::BadTag),
                Just(NackReason::UnknownDevice),
                Just(NackReason::Busy)
            ]
        )
            .prop_map(|(frame, reason)| Downlink::Nack { frame, reason }),
    ]
}

proptest! {
    #[test]
    fn frame_round_trips_postcard_signed(f in frame()) {
        let mut buf = [0u8; MAX_SIGNED_LEN];
        let wire = codec::encode_signed(&f, &key(), &mut buf).unwrap();
        prop_assert!(wire.len() <= MAX_SIGNED_LEN);
        let back: Frame = codec::decode_signed(wire, &key()).unwrap();
        prop_assert_eq!(back, f);
    }

    #[test]
    fn frame_round_trips_json(f in frame()) {
        let json = serde_json::to_string(&f).unwrap();
        let back: Frame = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(back, f);
    }

    #[test]
    fn downlink_round_trips_both_encodings(d in downlink()) {
        let mut buf = [0u8; MAX_SIGNED_LEN];
        let wire = codec::encode_signed(&d, &key(), &mut buf).unwrap();
        let back: Downlink = codec::decode_signed(wire, &key()).unwrap();
        prop_assert_eq!(&back, &d);
        let json = serde_json::to_string(&d).unwrap();
        let back: Downlink = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(back, d);
    }

    #[test]
    fn serial_round_trips_any_signed_frame(f in frame()) {
        let mut buf = [0u8; MAX_SIGNED_LEN];
        let wire = codec::encode_signed(&f, &key(), &mut buf).unwrap();
        let mut line = [0u8; serial::MAX_FRAME_LEN];
        let n = serial::encode(wire, &mut line).unwrap();
        let mut dec = serial::Decoder::new();
        let mut got = None;
        for &b in &line[..n] {
            if let Some(r) = dec.push(b) {
                got = Some(codec::decode_signed::<Frame>(r.unwrap(), &key()).unwrap());
            }
        }
        prop_assert_eq!(got, Some(f));
    }

    #[test]
    fn any_single_bit_flip_fails_verification(f in frame(), bit in any::<prop::sample::Index>()) {
        let mut buf = [0u8; MAX_SIGNED_LEN];
        let wire = codec::encode_signed(&f, &key(), &mut buf).unwrap();
        let i = bit.index(wire.len() * 8);
        wire[i / 8] ^= 1 << (i % 8);
        prop_assert!(codec::decode_signed::<Frame>(wire, &key()).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic_any_decoder(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = codec::decode_signed::<Frame>(&bytes, &key());
        let _ = codec::decode_signed::<Downlink>(&bytes, &key());
        let _ = codec::decode_unverified::<Frame>(&bytes);
        let _ = codec::open_frame(&bytes, |_| Some(&KEY));
        let _ = postcard::from_bytes::<Frame>(&bytes);
        let _ = serde_json::from_slice::<Frame>(&bytes);
        let _ = serde_json::from_slice::<Downlink>(&bytes);
        let _ = coldchain_proto::topic::parse_uplink(&String::from_utf8_lossy(&bytes));
        let mut dec = serial::Decoder::new();
        for &b in &bytes {
            let _ = dec.push(b);
        }
    }

    #[test]
    fn serial_decoder_resyncs_after_garbage(garbage in prop::collection::vec(any::<u8>(), 0..1500), f in frame()) {
        let mut buf = [0u8; MAX_SIGNED_LEN];
        let wire = codec::encode_signed(&f, &key(), &mut buf).unwrap();
        let mut line = [0u8; serial::MAX_FRAME_LEN];
        let n = serial::encode(wire, &mut line).unwrap();
        let mut dec = serial::Decoder::new();
        for &b in &garbage {
            let _ = dec.push(b);
        }
        let mut got = Vec::new();
        for &b in &line[..n] {
            if let Some(Ok(p)) = dec.push(b) {
                got.push(codec::decode_signed::<Frame>(p, &key()).unwrap());
            }
        }
        prop_assert_eq!(got, vec![f]);
    }
}

static KEY: std::sync::LazyLock<DeviceKey> = std::sync::LazyLock::new(key);

/// A frame at every bound with the widest varints fits MAX_MESSAGE_LEN.
#[test]
fn largest_frames_fit_the_limits() {
    let dev = DeviceId::new(&"x".repeat(DEVICE_ID_MAX)).unwrap();
    let r = Reading {
        channel: u8::MAX,
        kind: ChannelKind::Humidity,
        dt_ms: u32::MAX,
        value: Measurement::Valid(i32::MIN),
    };
    let e = Event {
        dt_ms: u32::MAX,
        kind: EventKind::ClockSynced {
            uptime_ms: u64::MAX,
            unix_ms: u64::MAX,
        },
    };
    let bodies = [
        Body::Readings(heapless::Vec::from_slice(&[r; MAX_READINGS]).unwrap()),
        Body::Events(heapless::Vec::from_slice(&[e; MAX_EVENTS]).unwrap()),
    ];
    for body in bodies {
        let f = Frame {
            device: dev.clone(),
            boot: u32::MAX,
            seq: u32::MAX,
            time: Timestamp::Wall(u64::MAX),
            body,
        };
        let n = postcard::to_stdvec(&f).unwrap().len();
        assert!(n <= MAX_MESSAGE_LEN, "{n} > {MAX_MESSAGE_LEN}");
    }
    let c = ChannelSettings {
        channel: u8::MAX,
        interval_s: u32::MAX,
        alarm_interval_s: u32::MAX,
        high_milli: Some(i32::MIN),
        low_milli: Some(i32::MIN),
    };
    let d = Downlink::Sync {
        unix_ms: u64::MAX,
        settings: Settings {
            version: u32::MAX,
            upload_interval_s: u32::MAX,
            status_interval_s: u32::MAX,
            tilt_limit_deg: u8::MAX,
            channels: heapless::Vec::from_slice(&[c; MAX_CHANNELS]).unwrap(),
        },
    };
    assert!(postcard::to_stdvec(&d).unwrap().len() <= MAX_MESSAGE_LEN);
}

#[test]
fn wrong_key_and_truncation_are_refused() {
    let f = golden_frames().remove(0).1;
    let mut buf = [0u8; MAX_SIGNED_LEN];
    let wire = codec::encode_signed(&f, &key(), &mut buf).unwrap().to_vec();
    let other = DeviceKey::from_bytes([0xAA; 32]);
    assert_eq!(
        codec::decode_signed::<Frame>(&wire, &other),
        Err(CodecError::BadTag)
    );
    assert!(codec::decode_signed::<Frame>(&wire[..wire.len() - 1], &key()).is_err());
    assert_eq!(
        codec::open_frame(&wire, |_| None),
        Err(codec::OpenError::UnknownDevice(f.device.clone()))
    );
    assert_eq!(
        codec::open_frame(&wire, |_| Some(&other)),
        Err(codec::OpenError::BadTag(f.device.clone()))
    );
    assert_eq!(codec::open_frame(&wire, |_| Some(&KEY)), Ok(f));
}

#[test]
fn device_ids_refuse_topic_breaking_characters() {
    for bad in ["", "a/b", "a+b", "a#", "dev ice", "é", &"x".repeat(33)] {
        assert!(DeviceId::new(bad).is_err(), "{bad:?} accepted");
        let json = format!(
            "{{\"device\":{bad:?},\"boot\":1,\"seq\":0,\"time\":{{\"uptime_ms\":1}},\"body\":{{\"events\":[]}}}}"
        );
        assert!(
            serde_json::from_str::<Frame>(&json).is_err(),
            "{bad:?} accepted in JSON"
        );
    }
}

fn golden_frames() -> Vec<(&'static str, Frame)> {
    let dev = DeviceId::new("shipper-0007").unwrap();
    let readings = [
        Reading {
            channel: 0,
            kind: ChannelKind::Rtd,
            dt_ms: 0,
            value: Measurement::Valid(-196_250),
        },
        Reading {
            channel: 1,
            kind: ChannelKind::Thermocouple,
            dt_ms: 0,
            value: Measurement::Fault(FaultKind::OpenCircuit),
        },
        Reading {
            channel: 2,
            kind: ChannelKind::Ambient,
            dt_ms: 0,
            value: Measurement::Valid(21_500),
        },
        Reading {
            channel: 3,
            kind: ChannelKind::Humidity,
            dt_ms: 0,
            value: Measurement::Valid(45_250),
        },
        Reading {
            channel: 0,
            kind: ChannelKind::Rtd,
            dt_ms: 60_000,
            value: Measurement::Valid(-196_125),
        },
    ];
    vec![
        (
            "readings_wall",
            Frame {
                device: dev.clone(),
                boot: 3,
                seq: 41,
                time: Timestamp::Wall(1_763_769_600_000),
                body: Body::Readings(heapless::Vec::from_slice(&readings).unwrap()),
            },
        ),
        (
            "events_uptime",
            Frame {
                device: dev.clone(),
                boot: 4,
                seq: 0,
                time: Timestamp::Uptime(1_250),
                body: Body::Events(
                    heapless::Vec::from_slice(&[
                        Event {
                            dt_ms: 0,
                            kind: EventKind::Boot,
                        },
                        Event {
                            dt_ms: 900,
                            kind: EventKind::LidOpened,
                        },
                        Event {
                            dt_ms: 5_000,
                            kind: EventKind::Tilt { angle_deg: 62 },
                        },
                        Event {
                            dt_ms: 7_000,
                            kind: EventKind::QueueOverflow { dropped: 12 },
                        },
                    ])
                    .unwrap(),
                ),
            },
        ),
        (
            "status",
            Frame {
                device: dev,
                boot: 4,
                seq: 1,
                time: Timestamp::Wall(1_763_769_660_000),
                body: Body::Status(Status {
                    battery_mv: 3_710,
                    signal_dbm: Some(-71),
                    queued: 2,
                    dropped: 0,
                }),
            },
        ),
    ]
}

fn golden_downlinks() -> Vec<(&'static str, Downlink)> {
    vec![
        (
            "down_sync",
            Downlink::Sync {
                unix_ms: 1_763_769_600_000,
                settings: Settings {
                    version: 2,
                    upload_interval_s: 300,
                    status_interval_s: 900,
                    tilt_limit_deg: 45,
                    channels: heapless::Vec::from_slice(&[ChannelSettings {
                        channel: 0,
                        interval_s: 60,
                        alarm_interval_s: 10,
                        high_milli: Some(-150_000),
                        low_milli: None,
                    }])
                    .unwrap(),
                },
            },
        ),
        ("down_ack", Downlink::Ack(FrameRef { boot: 3, seq: 41 })),
    ]
}

/// Compares `actual` with the committed file; `COLDCHAIN_BLESS=1` rewrites it.
fn check_golden(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("COLDCHAIN_BLESS").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with COLDCHAIN_BLESS=1 to create it",
            path.display()
        )
    });
    assert_eq!(
        want, actual,
        "wire format of {name} changed; if deliberate, rerun with COLDCHAIN_BLESS=1 and commit the diff"
    );
}

#[test]
fn golden_vectors_are_stable() {
    for (name, f) in golden_frames() {
        let mut buf = [0u8; MAX_SIGNED_LEN];
        let wire = codec::encode_signed(&f, &key(), &mut buf).unwrap();
        check_golden(
            &format!("{name}.hex"),
            &format!("{}\n", hex::encode(&*wire)),
        );
        let mut line = [0u8; serial::MAX_FRAME_LEN];
        let n = serial::encode(wire, &mut line).unwrap();
        check_golden(
            &format!("{name}.serial.hex"),
            &format!("{}\n", hex::encode(&line[..n])),
        );
        check_golden(
            &format!("{name}.json"),
            &format!("{}\n", serde_json::to_string_pretty(&f).unwrap()),
        );
    }
    for (name, d) in golden_downlinks() {
        let mut buf = [0u8; MAX_SIGNED_LEN];
        let wire = codec::encode_signed(&d, &key(), &mut buf).unwrap();
        check_golden(
            &format!("{name}.hex"),
            &format!("{}\n", hex::encode(&*wire)),
        );
        check_golden(
            &format!("{name}.json"),
            &format!("{}\n", serde_json::to_string_pretty(&d).unwrap()),
        );
    }
}

/// Every ```json block in proto/README.md decodes as a Frame, a Downlink or a JSON uplink envelope.
#[test]
fn readme_json_examples_decode() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let mut count = 0;
    for block in readme.split("```json").skip(1) {
        let json = block.split("```").next().unwrap();
        let v: serde_json::Value = serde_json::from_str(json)
            .unwrap_or_else(|e| panic!("README block is not JSON: {e}\n{json}"));
        let ok = if let Some(frame) = v.get("frame") {
            serde_json::from_value::<Frame>(frame.clone()).is_ok()
        } else {
            serde_json::from_value::<Frame>(v.clone()).is_ok()
                || serde_json::from_value::<Downlink>(v.clone()).is_ok()
        };
        assert!(ok, "README example does not decode:\n{json}");
        count += 1;
    }
    assert!(
        count >= 5,
        "expected the README to carry examples, found {count}"
    );
}

/// Issue 10, case 3: a batch over its limit is refused naming the count and
/// the limit, in JSON and in postcard; at the limit it decodes.
#[test]
fn batches_over_their_limit_are_refused_naming_the_limit() {
    let reading = r#"{"channel":0,"kind":"rtd","dt_ms":0,"value":{"valid":5000}}"#;
    let frame = |n: usize| {
        format!(
            r#"{{"device":"d","boot":1,"seq":0,"time":{{"uptime_ms":1}},"body":{{"readings":[{}]}}}}"#,
            vec![reading; n].join(",")
        )
    };
    assert!(serde_json::from_str::<Frame>(&frame(MAX_READINGS)).is_ok());
    let e = serde_json::from_str::<Frame>(&frame(33)).unwrap_err();
    assert!(
        e.to_string()
            .contains("frame has 33 readings; at most 32 per frame"),
        "{e}"
    );
    let event = r#"{"dt_ms":0,"kind":"boot"}"#;
    let events = format!(
        r#"{{"device":"d","boot":1,"seq":0,"time":{{"uptime_ms":1}},"body":{{"events":[{}]}}}}"#,
        vec![event; MAX_EVENTS + 1].join(",")
    );
    let e = serde_json::from_str::<Frame>(&events).unwrap_err();
    assert!(
        e.to_string()
            .contains("frame has 17 events; at most 16 per frame"),
        "{e}"
    );
    let e = serde_json::from_str::<Settings>(&format!(
        r#"{{"version":1,"upload_interval_s":60,"status_interval_s":300,"tilt_limit_deg":45,"channels":[{}]}}"#,
        [r#"{"channel":0,"interval_s":60,"alarm_interval_s":10,"high_milli":null,"low_milli":null}"#; 9].join(",")
    ))
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("settings has 9 channels; at most 8 per settings"),
        "{e}"
    );
    // Postcard: the same frame with its length prefix bumped past the limit.
    let f = Frame {
        device: DeviceId::new("d").unwrap(),
        boot: 1,
        seq: 0,
        time: Timestamp::Uptime(1),
        body: Body::Readings(heapless::Vec::new()),
    };
    let mut bytes = postcard::to_stdvec(&f).unwrap();
    assert_eq!(bytes.pop(), Some(0), "empty batch's length prefix is last");
    bytes.push(33);
    assert!(postcard::from_bytes::<Frame>(&bytes).is_err());
    // A device id over its limit says so.
    let long = format!(
        r#"{{"device":"{}","boot":1,"seq":0,"time":{{"uptime_ms":1}},"body":{{"events":[]}}}}"#,
        "x".repeat(DEVICE_ID_MAX + 1)
    );
    let e = serde_json::from_str::<Frame>(&long).unwrap_err();
    assert!(
        e.to_string().contains("device id is longer than 32 bytes"),
        "{e}"
    );
}
