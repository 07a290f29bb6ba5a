//! Shipments end to end, through a real Mosquitto into the real daemon:
//! alarms raised from device data, a predictive warning before the critical
//! zone, a probe fault that is not an excursion, acknowledgement, the audit
//! trail, a restart during an active alarm, and webhook delivery to a local
//! HTTP server that fails its first attempts.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coldchain_tests::*;
use serde_json::{Value, json};

const MIN: i64 = 60_000;
const H: i64 = 3_600_000;
const T: Duration = Duration::from_secs(60);

fn start(dir: &std::path::Path, devices: &[&str], extra: &str) -> (Mosquitto, Daemon) {
    let broker = Mosquitto::start(&dir.join("broker"));
    let devs: Vec<DeviceCfg> = devices.iter().map(|d| DeviceCfg::new(d)).collect();
    let opts = DaemonOpts {
        http: format!("token = \"{TEST_TOKEN}\""),
        extra: format!("[alerts]\nescalate_after_s = 3600\n\n{extra}"),
        ..DaemonOpts::default()
    };
    let daemon = Daemon::start_with(&dir.join("daemon"), broker.port, &devs, &opts);
    (broker, daemon)
}

fn post(d: &Daemon, path: &str, body: Value) -> Value {
    let (status, v) = http_post(d.http_port, path, Some(TEST_TOKEN), &body);
    assert!((200..300).contains(&status), "POST {path} -> {status}: {v}");
    v
}

fn create(d: &Daemon, id: &str, profile: &str, device: &str, departure_ms: i64, extra: Value) {
    let mut body = json!({
        "by": "dispatcher anna",
        "id": id,
        "product": "test product",
        "profile": profile,
        "watch": [{"device": device, "channel": 0}],
        "origin": "Site A",
        "destination": "Lab B",
        "departure_ms": departure_ms,
    });
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        body[k] = v;
    }
    post(d, "/api/v1/shipments", body);
}

/// Frames of 12 readings each, from (t, value) pairs.
fn frames(device: &str, first_seq: u32, readings: &[(i64, Option<i32>)]) -> Vec<String> {
    readings
        .chunks(12)
        .enumerate()
        .map(|(i, c)| json_frame(device, 1, first_seq + i as u32, c))
        .collect()
}

fn alerts(d: &Daemon, shipment: &str) -> Vec<Value> {
    let enc = shipment.replace(' ', "%20");
    d.get(&format!("/api/v1/alerts?shipment={enc}"))
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn kinds(alerts: &[Value]) -> Vec<String> {
    alerts.iter().map(alert_kind).collect()
}

/// An LN2 dry shipper runs dry mid-journey: flat at -190 °C, then rising
/// about 6 °C/h. The predictive warning is raised from the data of the first
/// hours of the rise, while the product is still below -150 °C and before any
/// critical alarm; the critical alarm follows when -135 °C is crossed.
#[test]
fn ln2_shipper_running_dry_warns_before_the_critical_zone() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, daemon) = start(dir.path(), &["ln2-7"], "");
    let t0 = now_ms() - 24 * H;
    create(
        &daemon,
        "W1234 25 000001",
        "cryo-ln2",
        "ln2-7",
        t0,
        json!({}),
    );
    // Every 5 min: 8 h flat, then +6 °C/h.
    let temp = |t: i64| {
        let h = (t - t0) as f64 / H as f64;
        let v = if h < 8.0 {
            -190.0
        } else {
            -190.0 + (h - 8.0) * 6.0
        };
        Some((v * 1000.0) as i32 + if (t / (5 * MIN)) % 2 == 0 { 50 } else { -50 })
    };
    let all: Vec<(i64, Option<i32>)> = (0..(20 * 12))
        .map(|i| t0 + i * 5 * MIN)
        .map(|t| (t, temp(t)))
        .collect();
    // First the journey up to 10.5 h: 2.5 h into the rise, the product at about -175 °C.
    let (early, late) = all.split_at(10 * 12 + 6);
    let topic = "coldchain/v1/dev/ln2-7/up/json";
    let early_frames = frames("ln2-7", 0, early);
    mosquitto_pub_lines(broker.port, topic, &early_frames).unwrap();
    let warned = wait_for(T, "the predictive warning", || {
        let a = alerts(&daemon, "W1234 25 000001");
        kinds(&a).contains(&"trend".to_string()).then_some(a)
    });
    let k = kinds(&warned);
    assert!(
        !k.iter().any(|k| k == "H2"),
        "critical zone already raised: {k:?}"
    );
    let trend = warned.iter().find(|a| alert_kind(a) == "trend").unwrap();
    assert_eq!(trend["severity"], "warning");
    assert!(
        trend["peak"].as_i64().unwrap() < -150_000,
        "warned while still below -150 °C: {trend}"
    );

    // The rest of the journey: the shipper warms past -135 °C.
    mosquitto_pub_lines(
        broker.port,
        topic,
        &frames("ln2-7", early_frames.len() as u32, late),
    )
    .unwrap();
    let all_alerts = wait_for(T, "the critical zone alarm", || {
        let a = alerts(&daemon, "W1234 25 000001");
        kinds(&a).contains(&"H2".to_string()).then_some(a)
    });
    let h2 = all_alerts.iter().find(|a| alert_kind(a) == "H2").unwrap();
    assert_eq!(h2["severity"], "critical");
    assert!(
        trend["fires_ms"].as_i64().unwrap() + 2 * H < h2["fires_ms"].as_i64().unwrap(),
        "the warning came hours before the critical alarm: {trend} vs {h2}"
    );
    let show = daemon.get("/api/v1/shipments/W1234%2025%20000001");
    let warming = &show["evaluation"]["warming"];
    assert_eq!(warming["events"], 1, "{warming}");
    assert!(warming["time_above_ms"].as_i64().unwrap() > 0);
    assert_eq!(
        show["evaluation"]["mkt"], "not_applicable",
        "no MKT on a cryogenic lane"
    );
}

/// A probe comes loose: the readings are faults. That is a probe-fault alarm,
/// never a temperature excursion (no zone alarm, no -242 °C anywhere).
#[test]
fn a_loose_probe_is_a_fault_alarm_not_an_excursion() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, daemon) = start(dir.path(), &["ln2-8"], "");
    let t0 = now_ms() - 6 * H;
    create(&daemon, "S-LOOSE", "cryo-ln2", "ln2-8", t0, json!({}));
    let rs: Vec<(i64, Option<i32>)> = (0..48)
        .map(|i| (t0 + i * 5 * MIN, if i < 24 { Some(-191_000) } else { None }))
        .collect();
    mosquitto_pub_lines(
        broker.port,
        "coldchain/v1/dev/ln2-8/up/json",
        &frames("ln2-8", 0, &rs),
    )
    .unwrap();
    let a = wait_for(T, "the probe fault alarm", || {
        let a = alerts(&daemon, "S-LOOSE");
        kinds(&a).contains(&"probe_fault".to_string()).then_some(a)
    });
    let k = kinds(&a);
    assert!(
        k.iter().all(|k| !k.starts_with('H') && !k.starts_with('L')),
        "a fault became an excursion: {k:?}"
    );
    let show = daemon.get("/api/v1/shipments/S-LOOSE");
    assert_eq!(show["evaluation"]["faults"], 24);
    assert_eq!(show["evaluation"]["min_milli_c"], -191_000);
    assert_eq!(show["evaluation"]["max_milli_c"], -191_000);
}

/// A fridge box left open warms above 8 °C for 40 min: one H1 alarm (not one
/// per reading), acknowledged by a person, recorded in the audit trail; a
/// kill -9 and restart during the active alarm raises nothing again and sends
/// no second notification.
#[test]
fn fridge_box_left_open_one_alarm_ack_audit_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, mut daemon) = start(dir.path(), &["fridge-3"], "");
    let (mut sub, mut out) =
        mosquitto_sub(broker.port, &["-t", "coldchain/v1/ship/+/alert", "-v"]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let t0 = now_ms() - 3 * H;
    create(
        &daemon,
        "FR-1",
        "fridge",
        "fridge-3",
        t0,
        json!({"window_h": 48.0, "eta_ms": t0 + 6 * H}),
    );
    // Every minute: 5 °C for 90 min, then 9.5 °C from 90 to 130 min (box open), then back.
    let rs: Vec<(i64, Option<i32>)> = (0..150)
        .map(|i| {
            (
                t0 + i * MIN,
                Some(if (90..130).contains(&i) { 9_500 } else { 5_000 }),
            )
        })
        .collect();
    let lines = frames("fridge-3", 0, &rs);
    // Every frame twice, milliseconds apart: still one alarm.
    let doubled: Vec<String> = lines.iter().flat_map(|l| [l.clone(), l.clone()]).collect();
    mosquitto_pub_lines(broker.port, "coldchain/v1/dev/fridge-3/up/json", &doubled).unwrap();
    let a = wait_for(T, "the H1 alarm", || {
        let a = alerts(&daemon, "FR-1");
        kinds(&a).contains(&"H1".to_string()).then_some(a)
    });
    let h1: Vec<&Value> = a.iter().filter(|x| alert_kind(x) == "H1").collect();
    assert_eq!(h1.len(), 1, "{a:?}");
    let id = h1[0]["id"].as_u64().unwrap();
    assert_eq!(h1[0]["state"], "open");
    assert_eq!(h1[0]["peak"], 9_500);
    let raised = read_until(&mut out, |l| {
        l.contains("\"raised\"") && l.contains("\"H1\"")
    })
    .unwrap();
    assert!(
        raised.starts_with("coldchain/v1/ship/FR-1/alert "),
        "{raised}"
    );

    // The status is retained for anyone who subscribes later.
    let (mut st, mut st_out) = mosquitto_sub(
        broker.port,
        &["-t", "coldchain/v1/ship/FR-1/status", "-C", "1", "-W", "10"],
    )
    .unwrap();
    let status: Value = serde_json::from_str(&read_until(&mut st_out, |_| true).unwrap()).unwrap();
    let _ = st.wait();
    assert_eq!(status["shipment"], "FR-1");
    assert!(status["open_alerts"].as_u64().unwrap() >= 1);

    // Restart during the active alarm: nothing new.
    daemon.kill9();
    daemon.restart();
    std::thread::sleep(Duration::from_secs(3));
    let after = alerts(&daemon, "FR-1");
    assert_eq!(after.len(), a.len(), "alerts after restart: {after:?}");

    // Acknowledge: refused without a token or without a comment; accepted with both.
    let (s, _) = http_post(
        daemon.http_port,
        &format!("/api/v1/alerts/{id}/ack"),
        None,
        &json!({"by": "x", "comment": "y"}),
    );
    assert_eq!(s, 401);
    let (s, e) = http_post(
        daemon.http_port,
        &format!("/api/v1/alerts/{id}/ack"),
        Some(TEST_TOKEN),
        &json!({"by": "nurse ben", "comment": ""}),
    );
    assert_eq!(s, 400, "{e}");
    assert!(e["error"].as_str().unwrap().contains("comment"));
    let acked = post(
        &daemon,
        &format!("/api/v1/alerts/{id}/ack"),
        json!({"by": "nurse ben", "comment": "lid closed, box checked"}),
    );
    // The box was closed long ago: acknowledged and cleared means resolved.
    assert_eq!(acked["state"], "resolved", "{acked}");
    // Recorded as the authenticated identity (the legacy shared token), not
    // the typed name.
    assert_eq!(acked["ack"]["by"], "shared API token (http.token, legacy)");

    let audit = daemon.get("/api/v1/audit");
    // The configuration is recorded once: the restart with the same file adds nothing.
    let config_loads = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "config.load")
        .count();
    assert_eq!(config_loads, 1, "{audit}");
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"shipment.create")
            && actions.contains(&"alert.raise")
            && actions.contains(&"alert.ack"),
        "{actions:?}"
    );
    let h1_raises = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["action"] == "alert.raise"
                && e["details"]["condition"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("H1@")
        })
        .count();
    assert_eq!(h1_raises, 1, "H1 raised once, across the restart: {audit}");
    assert_eq!(daemon.get("/api/v1/audit/verify")["ok"], true);

    // The MQTT alert topic carried exactly one "raised" for H1 across the restart.
    let _ = sub.kill();
    let mut rest = String::new();
    let _ = out.read_to_string(&mut rest);
    let again = rest
        .lines()
        .filter(|l| l.contains("\"raised\"") && l.contains("\"H1\""))
        .count();
    assert_eq!(again, 0, "a second notification after restart:\n{rest}");

    // Arrive and close with a person's disposition.
    post(
        &daemon,
        "/api/v1/shipments/FR-1/arrive",
        json!({"by": "lab"}),
    );
    // Closing is a QA person's electronic signature: the shared token
    // cannot sign; a QA account (made with it, an admin) signs with its
    // personal token and its password.
    let (s, e) = http_post(
        daemon.http_port,
        "/api/v1/shipments/FR-1/close",
        Some(TEST_TOKEN),
        &json!({"decision": "quarantined", "comment": "x", "password": "x"}),
    );
    assert_eq!(s, 403, "{e}");
    post(
        &daemon,
        "/api/v1/users",
        json!({"name": "qa", "full_name": "Quality Lead", "role": "qa", "password": "qa lead password"}),
    );
    let qa_token = post(
        &daemon,
        "/api/v1/tokens",
        json!({"label": "test", "user": "qa"}),
    )["token"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, closed) = http_post(
        daemon.http_port,
        "/api/v1/shipments/FR-1/close",
        Some(&qa_token),
        &json!({"decision": "quarantined", "comment": "40 min above 8 °C, investigate", "password": "qa lead password"}),
    );
    assert_eq!(s, 200, "{closed}");
    assert_eq!(closed["state"], "closed");
    assert_eq!(
        closed["disposition"]["signature"]["full_name"],
        "Quality Lead"
    );
    let (s, e) = http_post(
        daemon.http_port,
        "/api/v1/shipments/FR-1/eta",
        Some(TEST_TOKEN),
        &json!({"by": "x", "eta_ms": 1}),
    );
    assert_eq!(s, 409, "{e}");
}

/// One webhook POST as the receiver saw it.
#[derive(Debug, Clone)]
struct Hook {
    status: u16,
    headers: std::collections::HashMap<String, String>,
    body: String,
    received_s: i64,
}

/// Webhooks follow Standard Webhooks: `webhook-id` (the same on every
/// retry), `webhook-timestamp` (the attempt's time, Unix seconds) and
/// `webhook-signature` = `v1,` base64 HMAC-SHA256 over `id.timestamp.body`
/// with the `whsec_` secret's bytes, checked here independently. Retried with
/// backoff after the receiver fails its first attempts, delivered once it
/// recovers.
#[test]
fn webhook_delivery_survives_a_failing_receiver() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let received: Arc<Mutex<Vec<Hook>>> = Arc::default();
    let rec = received.clone();
    std::thread::spawn(move || {
        for (n, conn) in listener.incoming().enumerate() {
            let Ok(mut conn) = conn else { continue };
            let mut r = BufReader::new(conn.try_clone().unwrap());
            let mut headers = std::collections::HashMap::new();
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 2 {
                if let Some((k, v)) = line.split_once(':') {
                    headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                }
                line.clear();
            }
            let len = headers
                .get("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let mut body = vec![0; len];
            let _ = r.read_exact(&mut body);
            // The first two attempts fail.
            let status = if n < 2 { 500 } else { 200 };
            rec.lock().unwrap().push(Hook {
                status,
                headers,
                body: String::from_utf8_lossy(&body).into_owned(),
                received_s: now_ms() / 1000,
            });
            let _ = write!(
                conn,
                "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    let key = *b"coldchain webhook key, 32 bytes!";
    use base64::Engine;
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    );
    let dir = tempfile::tempdir().unwrap();
    let (broker, daemon) = start(
        dir.path(),
        &["fridge-9"],
        &format!("[[webhooks]]\nurl = \"http://127.0.0.1:{port}/hook\"\nsecret = \"{secret}\"\n"),
    );
    let t0 = now_ms() - 2 * H;
    create(&daemon, "FR-9", "fridge", "fridge-9", t0, json!({}));
    let rs: Vec<(i64, Option<i32>)> = (0..90)
        .map(|i| (t0 + i * MIN, Some(if i >= 30 { 12_000 } else { 5_000 })))
        .collect();
    mosquitto_pub_lines(
        broker.port,
        "coldchain/v1/dev/fridge-9/up/json",
        &frames("fridge-9", 0, &rs),
    )
    .unwrap();
    let got = wait_for(
        Duration::from_secs(90),
        "a successful webhook delivery",
        || {
            let g = received.lock().unwrap().clone();
            g.iter().any(|h| h.status == 200).then_some(g)
        },
    );
    assert!(got.len() >= 3, "two failures, then success: {got:?}");
    assert_eq!(got[0].status, 500);
    let h = |x: &Hook, k: &str| {
        x.headers
            .get(k)
            .cloned()
            .unwrap_or_else(|| panic!("no {k} header: {x:?}"))
    };
    // The retried delivery is the same event with the same id; each attempt
    // has its own timestamp, and every signature verifies over
    // id.timestamp.body.
    let first_id = h(&got[0], "webhook-id");
    let retries: Vec<&Hook> = got
        .iter()
        .filter(|x| h(x, "webhook-id") == first_id)
        .collect();
    assert!(retries.len() >= 3, "{got:?}");
    assert!(retries.iter().all(|x| x.body == got[0].body));
    for x in &got {
        let ts: i64 = h(x, "webhook-timestamp").parse().expect("Unix seconds");
        assert!(
            (ts - x.received_s).abs() <= 5,
            "the timestamp is the attempt's time: {ts} received {}",
            x.received_s
        );
        let want = standard_webhooks_signature(&key, &h(x, "webhook-id"), ts, &x.body);
        assert_eq!(h(x, "webhook-signature"), want, "{x:?}");
        assert!(
            !x.headers.contains_key("x-coldchain-signature"),
            "the body-only signature is gone: {x:?}"
        );
    }
    let ts: Vec<i64> = retries
        .iter()
        .map(|x| h(x, "webhook-timestamp").parse().unwrap())
        .collect();
    assert!(ts.windows(2).all(|w| w[0] <= w[1]), "{ts:?}");
    assert!(
        ts.first() < ts.last(),
        "a retry is signed with its own time: {ts:?}"
    );
    let ok = retries.iter().find(|x| x.status == 200).unwrap();
    let ev: Value = serde_json::from_str(&ok.body).unwrap();
    assert_eq!(ev["event"], "raised");
    assert_eq!(ev["alert"]["shipment"], "FR-9");
}

/// `v1,` base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}"), as the Standard
/// Webhooks specification defines it, computed independently here.
fn standard_webhooks_signature(key: &[u8], id: &str, ts: i64, body: &str) -> String {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let mut m = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).unwrap();
    m.update(format!("{id}.{ts}.{body}").as_bytes());
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes())
    )
}

/// Sequence tampering: a frame that reuses a stored frame's (device, boot,
/// seq) with different content (here a forged cold reading meant to hide a
/// warm one) is refused and counted, the stored frame stands, the shipment
/// gets one critical tamper alarm, and the report counts it. The same frame
/// sent again, as JSON or as binary, stays a harmless duplicate.
#[test]
fn a_reused_sequence_number_with_other_content_is_tampering() {
    use coldchain_proto::codec::{MAX_SIGNED_LEN, encode_signed};
    let dir = tempfile::tempdir().unwrap();
    let (broker, daemon) = start(dir.path(), &["fr-9"], "");
    // Readings up to now, so the device is not silent.
    let t0 = now_ms() - 35 * MIN;
    create(&daemon, "S-SEQ", "fridge", "fr-9", t0, json!({}));
    let rs: Vec<(i64, Option<i32>)> = (0..36).map(|i| (t0 + i * MIN, Some(5_000))).collect();
    let honest = frames("fr-9", 0, &rs);
    let json_topic = "coldchain/v1/dev/fr-9/up/json";
    mosquitto_pub_lines(broker.port, json_topic, &honest).unwrap();
    wait_for(T, "3 frames stored", || {
        (daemon.stat("frames_stored") == 3).then_some(())
    });
    // Resends of frame 1: the same JSON, and the same frame in postcard.
    let env: Value = serde_json::from_str(&honest[1]).unwrap();
    let frame: coldchain_proto::Frame = serde_json::from_value(env["frame"].clone()).unwrap();
    let key = coldchain_proto::DeviceKey::from_hex(TEST_KEY).unwrap();
    let mut buf = [0u8; MAX_SIGNED_LEN];
    let binary = encode_signed(&frame, &key, &mut buf).unwrap().to_vec();
    mosquitto_pub_lines(broker.port, json_topic, &honest[1..2]).unwrap();
    mosquitto_pub(broker.port, "coldchain/v1/dev/fr-9/up", &binary).unwrap();
    wait_for(T, "two duplicates", || {
        (daemon.stat("duplicates") == 2).then_some(())
    });
    assert!(
        alerts(&daemon, "S-SEQ").is_empty(),
        "a resend raised an alert"
    );
    // A forged frame 1, validly signed (the key leaked, or a device bug
    // reset its counters), with other values.
    let forged_rs: Vec<(i64, Option<i32>)> =
        rs[12..24].iter().map(|&(t, _)| (t, Some(3_000))).collect();
    let forged = json_frame("fr-9", 1, 1, &forged_rs);
    assert_ne!(forged, honest[1]);
    mosquitto_pub_lines(broker.port, json_topic, &[forged]).unwrap();
    wait_for(T, "the forged frame refused", || {
        (daemon.stat("rejected.sequence_reuse") == 1).then_some(())
    });
    assert_eq!(daemon.stat("duplicates"), 2);
    assert_eq!(daemon.stat("frames_stored"), 3);
    let stored = daemon.all_readings("fr-9");
    assert_eq!(stored.len(), 36);
    assert!(
        stored.iter().all(|r| r["value"]["valid"] == 5_000),
        "the stored frame was changed: {stored:?}"
    );
    let a = wait_for(T, "the tamper alarm", || {
        let a = alerts(&daemon, "S-SEQ");
        (!a.is_empty()).then_some(a)
    });
    assert_eq!(kinds(&a), vec!["tamper".to_string()], "{a:?}");
    assert_eq!(a[0]["severity"], "critical");
    let metrics = daemon.get("/metrics");
    let metrics = metrics.as_str().unwrap_or("");
    assert!(
        metrics
            .lines()
            .any(|l| l == "coldchain_rejected_total{reason=\"sequence_reuse\"} 1"),
        "{metrics}"
    );
    let rep = daemon.get("/api/v1/shipments/S-SEQ/report?format=json");
    let dev = &rep["data"]["data_health"]["devices"][0];
    assert_eq!(dev["rejected_sequence_reuse"], 1, "{dev}");
    assert_eq!(dev["frames_verified"], 3, "{dev}");
}
