//! No single message can stop or stall ingest: payloads over the uplink limit
//! (proto/README.md, "Limits") are refused as `too_large` and acknowledged,
//! also on a broker without `max_packet_size`; a frame over a wire-format
//! limit is refused with a message that names the limit.

use std::time::Duration;

use coldchain_proto::topic::MAX_UPLINK_PAYLOAD;
use coldchain_proto::{DeviceKey, TAG_LEN};
use coldchain_tests::*;

const T: Duration = Duration::from_secs(60);

fn metric(d: &Daemon, line_start: &str) -> Option<u64> {
    let m = d.get("/metrics");
    m.as_str()?
        .lines()
        .find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
}

/// A JSON envelope signed with the test key around `frame` (its exact text).
fn envelope(frame: &str) -> String {
    let tag = DeviceKey::from_hex(TEST_KEY)
        .unwrap()
        .sign(frame.as_bytes());
    assert_eq!(tag.len(), TAG_LEN);
    format!("{{\"frame\":{frame},\"tag\":\"{}\"}}", hex::encode(tag))
}

/// A frame of `n` readings of channel 0, as JSON text.
fn readings_frame(device: &str, seq: u32, n: usize) -> String {
    let r: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "{{\"channel\":0,\"kind\":\"rtd\",\"dt_ms\":{},\"value\":{{\"valid\":5000}}}}",
                i * 1000
            )
        })
        .collect();
    format!(
        "{{\"device\":\"{device}\",\"boot\":1,\"seq\":{seq},\"time\":{{\"unix_ms\":{}}},\"body\":{{\"readings\":[{}]}}}}",
        now_ms(),
        r.join(",")
    )
}

/// Issue 10, case 1: on a broker with no packet limit (like a hand-made
/// one), a 1 MB junk JSON envelope, a 1 MB binary blob and a signed
/// 10,000-reading frame are each counted as `too_large` and acknowledged; a
/// valid frame after them is stored; after a restart nothing comes back and
/// frames keep flowing.
#[test]
fn oversized_messages_are_refused_acknowledged_and_never_stall_ingest() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start_without_packet_limit(&dir.path().join("broker"));
    let mut daemon = Daemon::start(
        &dir.path().join("daemon"),
        broker.port,
        &[DeviceCfg::new("big-1")],
        "",
    );
    let json_topic = "coldchain/v1/dev/big-1/up/json";
    let junk = format!("{{\"frame\":\"{}\"}}", "x".repeat(1_000_000));
    let blob: Vec<u8> = (0..1_000_000u64).map(|i| (i * 7919 % 251) as u8).collect();
    let huge = envelope(&readings_frame("big-1", 0, 10_000));
    assert!(huge.len() > MAX_UPLINK_PAYLOAD, "{} bytes", huge.len());
    mosquitto_pub(broker.port, json_topic, junk.as_bytes()).unwrap();
    mosquitto_pub(broker.port, "coldchain/v1/dev/big-1/up", &blob).unwrap();
    mosquitto_pub(broker.port, json_topic, huge.as_bytes()).unwrap();
    let valid = json_frame("big-1", 1, 1, &[(now_ms(), Some(4_000))]);
    mosquitto_pub(broker.port, json_topic, valid.as_bytes()).unwrap();

    wait_for(T, "the valid frame stored after the oversized ones", || {
        (daemon.stat("frames_stored") == 1).then_some(())
    });
    assert_eq!(daemon.stat("rejected.too_large"), 3, "{}", daemon.logs());
    assert_eq!(
        metric(&daemon, "coldchain_rejected_total{reason=\"too_large\"}"),
        Some(3)
    );
    // The connection never dropped over them.
    assert_eq!(metric(&daemon, "coldchain_mqtt_reconnects_total"), Some(0));
    assert_eq!(metric(&daemon, "coldchain_mqtt_connected"), Some(1));
    assert!(
        daemon
            .logs()
            .contains("bytes: an uplink payload is at most 65536 bytes")
    );
    // Acknowledged only after the commit: wait for the PUBACKs to be out.
    wait_for(T, "every message acknowledged", || {
        (daemon.stat("acked") >= 4).then_some(())
    });

    // A restart: the broker redelivers nothing, new frames flow.
    daemon.stop();
    daemon.restart();
    let next = json_frame("big-1", 1, 2, &[(now_ms(), Some(4_100))]);
    mosquitto_pub(broker.port, json_topic, next.as_bytes()).unwrap();
    wait_for(T, "a frame stored after the restart", || {
        (daemon.stat("frames_stored") == 1).then_some(())
    });
    assert_eq!(daemon.stat("rejected.too_large"), 0, "redelivered");
    let ids = reading_ids(&daemon.all_readings("big-1"));
    assert_eq!(
        ids.into_iter().collect::<Vec<_>>(),
        vec![(1, 1, 0), (1, 2, 0)]
    );
}

/// Issue 10, case 3: a 33-reading frame is refused with a message naming the
/// 32-reading limit, and counted as malformed.
#[test]
fn a_frame_over_the_reading_limit_is_refused_naming_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&dir.path().join("broker"));
    let daemon = Daemon::start(
        &dir.path().join("daemon"),
        broker.port,
        &[DeviceCfg::new("lim-1")],
        "",
    );
    let topic = "coldchain/v1/dev/lim-1/up/json";
    let over = envelope(&readings_frame("lim-1", 0, 33));
    mosquitto_pub(broker.port, topic, over.as_bytes()).unwrap();
    let ok = envelope(&readings_frame("lim-1", 1, 32));
    mosquitto_pub(broker.port, topic, ok.as_bytes()).unwrap();
    wait_for(T, "the 32-reading frame stored", || {
        (daemon.stat("readings_stored") == 32).then_some(())
    });
    assert_eq!(daemon.stat("rejected.malformed"), 1);
    let logs = daemon.logs();
    assert!(
        logs.contains("frame has 33 readings; at most 32 per frame"),
        "{logs}"
    );
}
