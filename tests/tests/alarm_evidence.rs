//! Alarms that depend only on the data (issue 11, and issue 10 case 4),
//! through a real Mosquitto into the real daemon, with JSON devices
//! publishing signed frames as a logger uploading its queue would:
//!
//! 1. a backlog uploaded in order, and one whose excursion-ending frame comes
//!    a few seconds late, raise no alarm the complete data does not prove;
//! 2. an excursion delivered newest-first ends with the start and fire time of
//!    the complete data, revised in the open;
//! 3. an unsynced queue stamped with uptime keeps its spacing and raises its alarm;
//! 4. alert text follows the facts (a zone's "for N min", a probe fault's duration);
//! 5. an RTD sentinel (-242 °C) is a counted fault and a probe-fault alarm, never a temperature;
//! 7. an alert is never raised before the frame that proves it was published;
//!
//! and the silence alarm is raised while a device is silent, never for a
//! short gap that is over when it is seen.

use std::io::{BufRead, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coldchain_proto::{
    Body, ChannelKind, DeviceId, DeviceKey, Frame, Measurement, Reading, Timestamp,
};
use coldchain_tests::*;
use serde_json::{Value, json};

const S: i64 = 1_000;
const MIN: i64 = 60_000;
const H: i64 = 3_600_000;
const T: Duration = Duration::from_secs(60);

/// A fridge lane whose H1 needs a full hour above 8 °C, a zero-delay
/// critical zone at 15 °C, and a probe fault that must last 10 min, written
/// as in `coldchain.toml`.
const LANE: &str = r#"
[[profiles]]
name = "fridge-60"
nominal = { min = 2.0, max = 8.0 }

[[profiles.zones]]
id = "H1"
limit = "> 8.0"
kind = "single"
delay = "60m"
severity = "warning"
hysteresis = 0.5

[[profiles.zones]]
id = "H3"
limit = ">= 15.0"
kind = "single"
delay = "0s"
severity = "critical"
hysteresis = 0.5

[profiles.health]
probe_fault_delay = "10m"
"#;

/// A broker and a daemon evaluating every second, with no settle period,
/// the `fridge-60` lane, `devices` (signing with the test key) and `extra`
/// configuration (`[alerts]` keys first, then tables).
fn start(
    dir: &std::path::Path,
    devices: &[&str],
    alerts: &str,
    extra: &str,
) -> (Mosquitto, Daemon) {
    let broker = Mosquitto::start(&dir.join("broker"));
    let devs: Vec<DeviceCfg> = devices.iter().map(|d| DeviceCfg::new(d)).collect();
    let opts = DaemonOpts {
        http: format!("token = \"{TEST_TOKEN}\""),
        extra: format!(
            "[alerts]\nescalate_after_s = 3600\nsettle_s = 0\nevaluate_every_s = 1\n{alerts}\n{LANE}\n{extra}"
        ),
        ..DaemonOpts::default()
    };
    let daemon = Daemon::start_with(&dir.join("daemon"), broker.port, &devs, &opts);
    (broker, daemon)
}

fn create(d: &Daemon, id: &str, profile: &str, device: &str, departure_ms: i64) {
    let body = json!({
        "by": "dispatcher anna",
        "id": id,
        "product": "test product",
        "profile": profile,
        "watch": [{"device": device, "channel": 0}],
        "origin": "Site A",
        "destination": "Lab B",
        "departure_ms": departure_ms,
    });
    let (status, v) = http_post(d.http_port, "/api/v1/shipments", Some(TEST_TOKEN), &body);
    assert!((200..300).contains(&status), "create {id} -> {status}: {v}");
}

fn alerts(d: &Daemon, shipment: &str) -> Vec<Value> {
    d.get(&format!("/api/v1/alerts?shipment={shipment}"))
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn of_kind(alerts: &[Value], kind: &str) -> Vec<Value> {
    alerts
        .iter()
        .filter(|a| alert_kind(a) == kind)
        .cloned()
        .collect()
}

fn report(d: &Daemon, shipment: &str) -> Value {
    d.get(&format!("/api/v1/shipments/{shipment}/report?format=json"))["data"].clone()
}

/// The report's excursion in `zone` (there must be exactly one).
fn excursion(rep: &Value, zone: &str) -> Value {
    let ex: Vec<&Value> = rep["temperature"]["excursions"]
        .as_array()
        .unwrap_or_else(|| panic!("report without excursions: {rep}"))
        .iter()
        .filter(|e| e["zone"] == zone)
        .collect();
    assert_eq!(ex.len(), 1, "one {zone} excursion in the report: {ex:?}");
    ex[0].clone()
}

/// Audit entries `action` about `condition` (e.g. "H1") of `shipment`.
fn audited(d: &Daemon, action: &str, shipment: &str, condition: &str) -> Vec<Value> {
    d.get("/api/v1/audit")
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| {
            e["action"] == action
                && e["subject"] == shipment
                && e["details"]["condition"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with(&format!("{condition}@"))
        })
        .collect()
}

/// Readings of channel 0 every minute from `t0`: `value(i)` for i in `0..n`.
fn minutes(t0: i64, n: i64, value: impl Fn(i64) -> i32) -> Vec<(i64, Option<i32>)> {
    (0..n).map(|i| (t0 + i * MIN, Some(value(i)))).collect()
}

/// Signed JSON frames (boot 1, seq from 0) of `per` readings each.
fn frames(device: &str, readings: &[(i64, Option<i32>)], per: usize) -> Vec<String> {
    readings
        .chunks(per)
        .enumerate()
        .map(|(i, c)| json_frame(device, 1, i as u32, c))
        .collect()
}

/// A signed JSON envelope for `f`.
fn signed_json(f: &Frame) -> String {
    let text = serde_json::to_string(f).expect("frame json");
    let tag = DeviceKey::from_hex(TEST_KEY)
        .expect("key")
        .sign(text.as_bytes());
    format!("{{\"frame\":{text},\"tag\":\"{}\"}}", hex::encode(tag))
}

fn topic(device: &str) -> String {
    format!("coldchain/v1/dev/{device}/up/json")
}

/// One `mosquitto_pub -l` connection (QoS 1): each line sent is one message,
/// published as soon as it is written. Records when each was handed over.
struct LinePub {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl LinePub {
    fn new(port: u16, topic: &str) -> LinePub {
        let mut child = Command::new(which("mosquitto_pub").expect("mosquitto_pub installed"))
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1"])
            .args(["-t", topic, "-l"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("start mosquitto_pub");
        let stdin = child.stdin.take();
        LinePub { child, stdin }
    }

    /// Publishes `line`; returns the wall time (ms) just before it was handed
    /// to the publisher: the message cannot have reached the broker earlier.
    fn send(&mut self, line: &str) -> i64 {
        let at = now_ms();
        let w = self.stdin.as_mut().expect("publisher open");
        writeln!(w, "{line}").expect("write to mosquitto_pub");
        w.flush().expect("flush mosquitto_pub");
        at
    }

    /// Publishes `lines` with `pause` after each.
    fn paced(&mut self, lines: &[String], pause: Duration) {
        for l in lines {
            self.send(l);
            std::thread::sleep(pause);
        }
    }

    /// Closes the connection once everything is published.
    fn finish(mut self) {
        drop(self.stdin.take());
        let st = self.child.wait().expect("wait for mosquitto_pub");
        assert!(st.success(), "mosquitto_pub -l exited with {st}");
    }
}

impl Drop for LinePub {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Everything the daemon publishes about shipments (alert events and the
/// retained status), collected by `mosquitto_sub` from before the first
/// shipment exists.
struct Watch {
    child: Child,
    seen: Arc<Mutex<Vec<(String, Value)>>>,
}

impl Watch {
    fn start(port: u16) -> Watch {
        let (child, out) = mosquitto_sub(port, &["-t", "coldchain/v1/ship/#", "-v"]).unwrap();
        let seen: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
        let into = seen.clone();
        std::thread::spawn(move || {
            for line in out.lines() {
                let Ok(line) = line else { return };
                if let Some((t, body)) = line.split_once(' ') {
                    let v = serde_json::from_str(body).unwrap_or(Value::String(body.into()));
                    into.lock().unwrap().push((t.to_string(), v));
                }
            }
        });
        // Subscribed once our own marker, published after the subscribe, comes back.
        let marker = format!("watch-{}", now_ms());
        wait_for(T, "the watcher's subscription", || {
            mosquitto_pub(port, "coldchain/v1/ship/_watch/status", marker.as_bytes()).ok()?;
            let s = seen.lock().unwrap();
            s.iter()
                .any(|(_, v)| v.as_str() == Some(marker.as_str()))
                .then_some(())
        });
        Watch { child, seen }
    }

    /// Alert events (`{"event", "alert"}`) about `shipment`, in order.
    fn events(&self, shipment: &str) -> Vec<Value> {
        let topic = format!("coldchain/v1/ship/{shipment}/alert");
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| *t == topic)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// `event` ("raised", "revised", ...) about alerts of `kind`.
    fn events_of(&self, shipment: &str, event: &str, kind: &str) -> Vec<Value> {
        self.events(shipment)
            .into_iter()
            .filter(|e| e["event"] == event && alert_kind(&e["alert"]) == kind)
            .collect()
    }

    /// Waits until the evaluator has published a status for `shipment`
    /// whose newest reading is at `t_ms`: it has evaluated the data up to
    /// there, and the alert events of that evaluation came before it.
    fn wait_evaluated(&self, shipment: &str, t_ms: i64) {
        let topic = format!("coldchain/v1/ship/{shipment}/status");
        wait_for(T, &format!("{shipment} evaluated up to {t_ms}"), || {
            self.seen
                .lock()
                .unwrap()
                .iter()
                .any(|(t, v)| *t == topic && v["last"]["t_ms"] == t_ms)
                .then_some(())
        });
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits for `f` to return `Some`; on timeout, panics with `show()`, what
/// there is instead.
fn wait_or_show<T>(
    timeout: Duration,
    what: &str,
    mut f: impl FnMut() -> Option<T>,
    show: impl Fn() -> String,
) -> T {
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!(
                "timed out after {timeout:?} waiting for {what}; instead: {}",
                show()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Case 1. Fridge lane, H1 `> 8.0` for 60 min. A logger uploads its backlog
/// from three hours ago in order, about a frame a second: 5 min at 5 °C,
/// 59 min at 9 °C, 10 min at 5 °C. The data never proves an hour above
/// 8 °C, so no H1 alert is ever raised: not on the alert topic during the
/// upload, not in the audit trail, not in the alert list; the report agrees.
/// The same when everything arrives at once except the frame that ends the
/// excursion, a few seconds late.
#[test]
fn a_backlog_raises_no_alarm_its_data_does_not_prove() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, daemon) = start(dir.path(), &["fr-a", "fr-b"], "", "");
    let watch = Watch::start(broker.port);
    let t0 = now_ms() - 3 * H;
    create(&daemon, "S-ORDER", "fridge-60", "fr-a", t0 - 10 * MIN);
    create(&daemon, "S-LATE", "fridge-60", "fr-b", t0 - 10 * MIN);
    // Minutes 0-4 at 5 °C, 5-63 at 9 °C (59 min: back in range at 64), 64-73 at 5 °C.
    let rs = minutes(t0, 74, |i| if (5..64).contains(&i) { 9_000 } else { 5_000 });
    let last = rs[73].0;

    std::thread::scope(|sc| {
        // In order, a frame (6 readings) a second.
        sc.spawn(|| {
            let mut p = LinePub::new(broker.port, &topic("fr-a"));
            p.paced(&frames("fr-a", &rs, 6), Duration::from_secs(1));
            p.finish();
        });
        // At once, except the frame that ends the excursion: 3 s late.
        sc.spawn(|| {
            let (before, after) = rs.split_at(64);
            let fs = frames("fr-b", before, 12);
            let late = json_frame("fr-b", 1, fs.len() as u32, after);
            let mut p = LinePub::new(broker.port, &topic("fr-b"));
            p.paced(&fs, Duration::ZERO);
            std::thread::sleep(Duration::from_secs(3));
            p.send(&late);
            p.finish();
        });
    });

    let mut problems = Vec::new();
    for s in ["S-ORDER", "S-LATE"] {
        watch.wait_evaluated(s, last);
        let raised = watch.events_of(s, "raised", "H1");
        if !raised.is_empty() {
            problems.push(format!("{s}: H1 raised on the alert topic: {raised:?}"));
        }
        let audit = audited(&daemon, "alert.raise", s, "H1");
        if !audit.is_empty() {
            problems.push(format!("{s}: H1 raised in the audit trail: {audit:?}"));
        }
        let a = of_kind(&alerts(&daemon, s), "H1");
        if !a.is_empty() {
            problems.push(format!("{s}: an H1 alert: {a:?}"));
        }
        // The complete data: 59 min above 8 °C, no zone alarm fired.
        let rep = report(&daemon, s);
        let h1 = rep["temperature"]["zones"]
            .as_array()
            .unwrap()
            .iter()
            .find(|z| z["zone"] == "H1")
            .cloned()
            .unwrap();
        assert_eq!(h1["time_beyond_ms"], 59 * MIN, "{s}: {h1}");
        assert_eq!(h1["fired"], 0, "{s}: {h1}");
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The evidence rule for probe faults. On a lane where a probe fault must
/// last 10 min, a logger's backlog from three hours ago holds a 3-min fault
/// (minutes 10-12, valid again at 13); everything up to the fault arrives
/// first, the rest a few seconds later. Time after the newest reading is
/// unknown for a fault as for a temperature: no probe-fault alarm is ever
/// raised, and the report shows the 3-min fault.
#[test]
fn a_probe_fault_fires_on_evidence_too() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, daemon) = start(dir.path(), &["fr-f"], "", "");
    let watch = Watch::start(broker.port);
    let t0 = now_ms() - 3 * H;
    create(&daemon, "S-FAULT", "fridge-60", "fr-f", t0 - 10 * MIN);
    let rs: Vec<(i64, Option<i32>)> = (0..30)
        .map(|i| (t0 + i * MIN, (!(10..13).contains(&i)).then_some(5_000)))
        .collect();
    let fs = frames("fr-f", &rs, 6);
    let mut p = LinePub::new(broker.port, &topic("fr-f"));
    // Up to minute 11: two fault readings are the newest data.
    p.paced(&fs[..2], Duration::ZERO);
    std::thread::sleep(Duration::from_secs(3));
    p.paced(&fs[2..], Duration::ZERO);
    p.finish();
    watch.wait_evaluated("S-FAULT", rs[29].0);
    let raised = watch.events_of("S-FAULT", "raised", "probe_fault");
    assert!(
        raised.is_empty(),
        "a 3-min fault raised a 10-min probe-fault alarm: {raised:?}"
    );
    let a = alerts(&daemon, "S-FAULT");
    assert!(of_kind(&a, "probe_fault").is_empty(), "{a:?}");
    let faults = report(&daemon, "S-FAULT")["data_health"]["faults"].clone();
    assert_eq!(faults[0]["duration_ms"], 3 * MIN, "{faults}");
}

/// Case 2. A 61-min excursion delivered newest-first, a frame a second: the
/// frames from one minute into it onwards prove an hour above 8 °C on their
/// own, so H1 is raised from E+1; when the frame holding E arrives, the alert
/// is revised in the open to the complete data's start E and fire time
/// E+60 (the earlier facts kept, a "revised" event on the alert topic and in
/// the audit trail), and the report agrees.
#[test]
fn newest_first_delivery_ends_at_the_complete_datas_times() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, daemon) = start(dir.path(), &["fr-c"], "", "");
    let watch = Watch::start(broker.port);
    let t0 = now_ms() - 3 * H;
    create(&daemon, "S-NEWEST", "fridge-60", "fr-c", t0 - 10 * MIN);
    // E = minute 5; 9 °C for minutes 5-65 (back in range at 66: 61 min).
    let rs = minutes(t0, 72, |i| if (5..66).contains(&i) { 9_000 } else { 5_000 });
    let e = rs[5].0;
    // Frames of 6 readings: the second one starts at E+1.
    let fs = frames("fr-c", &rs, 6);
    let mut p = LinePub::new(broker.port, &topic("fr-c"));
    for f in fs[1..].iter().rev() {
        p.send(f);
        std::thread::sleep(Duration::from_secs(1));
    }
    let first = wait_for(T, "H1 from the data from E+1 on", || {
        of_kind(&alerts(&daemon, "S-NEWEST"), "H1").first().cloned()
    });
    assert_eq!(first["condition"]["start_ms"], e + MIN, "{first}");
    assert_eq!(first["fires_ms"], e + 61 * MIN, "{first}");

    // The oldest frame, holding E.
    p.send(&fs[0]);
    p.finish();
    let h1 = wait_or_show(
        Duration::from_secs(30),
        "the H1 alert revised to start at E",
        || {
            let a = of_kind(&alerts(&daemon, "S-NEWEST"), "H1");
            a.iter().find(|a| a["condition"]["start_ms"] == e).cloned()
        },
        || format!("{:?}", alerts(&daemon, "S-NEWEST")),
    );
    let all_h1 = of_kind(&alerts(&daemon, "S-NEWEST"), "H1");
    assert_eq!(all_h1.len(), 1, "one H1 alert, revised: {all_h1:?}");
    assert_eq!(h1["fires_ms"], e + 60 * MIN, "{h1}");
    assert_eq!(h1["beyond_ms"], 61 * MIN, "{h1}");
    assert_eq!(h1["state"], "open", "{h1}");
    // The facts shown before are kept.
    let was = &h1["revisions"][0]["was"];
    assert_eq!(was["start_ms"], e + MIN, "{h1}");
    assert_eq!(was["fires_ms"], e + 61 * MIN, "{h1}");
    // Revised in the open: on the alert topic and in the audit trail.
    let revised = wait_for(T, "a 'revised' event for H1", || {
        let r = watch.events_of("S-NEWEST", "revised", "H1");
        (!r.is_empty()).then_some(r)
    });
    assert_eq!(revised.last().unwrap()["alert"]["fires_ms"], e + 60 * MIN);
    assert_eq!(
        audited(&daemon, "alert.revise", "S-NEWEST", "H1").len(),
        revised.len()
    );
    // The report, from the complete data, says the same.
    let rep = report(&daemon, "S-NEWEST");
    let ex = excursion(&rep, "H1");
    assert_eq!(ex["start_ms"], e, "{ex}");
    assert_eq!(ex["fired_ms"], e + 60 * MIN, "{ex}");
    let entry = rep["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["kind"] == "H1")
        .cloned()
        .unwrap_or_else(|| panic!("no H1 in the report's alerts: {}", rep["alerts"]));
    assert_eq!(entry["fires_ms"], e + 60 * MIN, "{entry}");
}

/// Case 3. A device whose clock was never set uploads its queue in order:
/// 76 frames stamped with uptime, a minute apart (75 minutes), 61 of them at
/// 9 °C. Every reading is stored, none merged with another, placed a minute
/// apart as the device counted, marked as placed from uptime, and the hour
/// above 8 °C raises H1.
#[test]
fn an_unsynced_queue_keeps_its_spacing_and_raises_its_alarm() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, daemon) = start(dir.path(), &["fr-u"], "", "");
    let now = now_ms();
    create(&daemon, "S-UPTIME", "fridge-60", "fr-u", now - 3 * H);
    let lines: Vec<String> = (0..76u32)
        .map(|i| {
            let value = if (5..66).contains(&i) { 9_000 } else { 5_000 };
            let r = Reading {
                channel: 0,
                kind: ChannelKind::Rtd,
                dt_ms: 0,
                value: Measurement::Valid(value),
            };
            signed_json(&Frame {
                device: DeviceId::new("fr-u").unwrap(),
                boot: 1,
                seq: i,
                time: Timestamp::Uptime(600_000 + u64::from(i) * 60_000),
                body: Body::Readings(heapless::Vec::from_slice(&[r]).unwrap()),
            })
        })
        .collect();
    mosquitto_pub_lines(broker.port, &topic("fr-u"), &lines).unwrap();
    wait_for(T, "76 frames stored", || {
        (daemon.stat("frames_stored") == 76).then_some(())
    });

    let mut rows = daemon.all_readings("fr-u");
    assert_eq!(rows.len(), 76, "every reading stored: {rows:?}");
    reading_ids(&rows);
    rows.sort_by_key(|r| r["seq"].as_u64());
    let times: Vec<i64> = rows
        .iter()
        .map(|r| r["time_ms"].as_i64().unwrap())
        .collect();
    for (w, r) in times.windows(2).zip(&rows[1..]) {
        assert_eq!(w[1] - w[0], MIN, "the device's spacing, at {r}");
    }
    assert_eq!(times[75] - times[0], 75 * MIN);
    for r in &rows {
        assert_eq!(r["time_source"], "uptime", "{r}");
    }
    // Placed on the wall clock near when they arrived, not in 1970.
    assert!(
        (times[75] - now).abs() < 10 * MIN,
        "newest at {}",
        times[75]
    );

    let h1 = wait_or_show(
        T,
        "the H1 alarm",
        || {
            let a = of_kind(&alerts(&daemon, "S-UPTIME"), "H1");
            a.iter().find(|a| a["cleared_ms"].is_i64()).cloned()
        },
        || format!("{:?}", alerts(&daemon, "S-UPTIME")),
    );
    assert_eq!(h1["condition"]["start_ms"], times[5], "{h1}");
    assert_eq!(h1["fires_ms"], times[5] + 60 * MIN, "{h1}");
    assert_eq!(h1["beyond_ms"], 61 * MIN, "{h1}");
    let rep = report(&daemon, "S-UPTIME");
    assert_eq!(
        rep["data_health"]["estimated_time_readings"], 76,
        "{}",
        rep["data_health"]
    );
    assert_eq!(rep["temperature"]["valid_readings"], 76);
}

/// Case 4. Alert text follows the facts. On the built-in fridge lane (H1:
/// `> 8.0` for 30 min) a 40-min excursion uploaded in order is raised once
/// 30 min are proven, and once all of it is in its text says 40 min, as its
/// time beyond and the report do. A probe fault whose fault readings were
/// the newest data when it was raised ends with the duration the report
/// gives it.
#[test]
fn alert_text_and_duration_follow_the_facts() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, daemon) = start(dir.path(), &["fr-t", "fr-p"], "", "");
    let watch = Watch::start(broker.port);
    let t0 = now_ms() - 3 * H;
    create(&daemon, "S-TEXT", "fridge", "fr-t", t0 - 10 * MIN);
    create(&daemon, "S-PROBE", "fridge", "fr-p", t0 - 10 * MIN);
    // 9 °C for minutes 5-44: 40 min.
    let rs = minutes(t0, 60, |i| if (5..45).contains(&i) { 9_000 } else { 5_000 });
    let e = rs[5].0;
    let fs = frames("fr-t", &rs, 6);
    // Faults at minutes 10-12, valid again at 13: a 3-min probe fault.
    let ps: Vec<(i64, Option<i32>)> = (0..30)
        .map(|i| (t0 + i * MIN, (!(10..13).contains(&i)).then_some(5_000)))
        .collect();
    let pfs = frames("fr-p", &ps, 6);

    // Up to minute 35: 30 min above 8 °C proven.
    let mut p = LinePub::new(broker.port, &topic("fr-t"));
    p.paced(&fs[..6], Duration::from_millis(500));
    // Up to minute 11: the fault is the newest data.
    let mut pp = LinePub::new(broker.port, &topic("fr-p"));
    pp.paced(&pfs[..2], Duration::ZERO);
    let raised = wait_for(T, "H1 raised on the alert topic", || {
        watch.events_of("S-TEXT", "raised", "H1").first().cloned()
    });
    wait_for(T, "the probe fault raised", || {
        watch
            .events_of("S-PROBE", "raised", "probe_fault")
            .first()
            .cloned()
    });
    // The rest.
    p.paced(&fs[6..], Duration::from_millis(500));
    p.finish();
    pp.paced(&pfs[2..], Duration::ZERO);
    pp.finish();
    watch.wait_evaluated("S-TEXT", rs[59].0);
    watch.wait_evaluated("S-PROBE", ps[29].0);

    let h1 = of_kind(&alerts(&daemon, "S-TEXT"), "H1");
    assert_eq!(h1.len(), 1, "{h1:?}");
    let h1 = &h1[0];
    assert_eq!(h1["beyond_ms"], 40 * MIN, "{h1}");
    assert_eq!(h1["cleared_ms"], e + 40 * MIN, "{h1}");
    assert_eq!(
        h1["message"], "H1: temperature > 8.0 for 40 min (peak 9.0 °C)",
        "raised as {}, now {h1}",
        raised["alert"]["message"]
    );
    assert_ne!(
        raised["alert"]["message"], h1["message"],
        "raised before all the data was in"
    );
    let ex = excursion(&report(&daemon, "S-TEXT"), "H1");
    assert_eq!(ex["beyond_ms"], h1["beyond_ms"], "{ex}");

    let pf = of_kind(&alerts(&daemon, "S-PROBE"), "probe_fault");
    assert_eq!(pf.len(), 1, "{pf:?}");
    let pf = &pf[0];
    let rep = report(&daemon, "S-PROBE");
    let faults = rep["data_health"]["faults"].as_array().unwrap();
    assert_eq!(faults.len(), 1, "{faults:?}");
    assert_eq!(faults[0]["duration_ms"], 3 * MIN, "{faults:?}");
    assert_eq!(pf["beyond_ms"], faults[0]["duration_ms"], "{pf}");
    assert_eq!(pf["cleared_ms"], ps[13].0, "{pf}");
}

/// Case 5. A JSON device reports `{"valid": -242000}` on its RTD (what some
/// front ends report for an open probe) on an LN2 shipment: stored as an
/// out-of-range fault and counted, a probe-fault alarm, and never a
/// temperature: not the report's minimum, not its mean, not a low-zone alarm.
#[test]
fn an_rtd_sentinel_is_a_counted_fault_not_a_temperature() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, daemon) = start(dir.path(), &["ln2-s"], "", "");
    let t0 = now_ms() - 3 * H;
    create(&daemon, "S-SENTINEL", "cryo-ln2", "ln2-s", t0 - 10 * MIN);
    let rs: Vec<(i64, Option<i32>)> = (0..24)
        .map(|i| {
            let v = if (12..14).contains(&i) {
                -242_000
            } else {
                -190_000
            };
            (t0 + i * 5 * MIN, Some(v))
        })
        .collect();
    mosquitto_pub_lines(broker.port, &topic("ln2-s"), &frames("ln2-s", &rs, 6)).unwrap();
    wait_for(T, "24 readings stored", || {
        (daemon.stat("readings_stored") == 24).then_some(())
    });
    assert_eq!(daemon.stat("implausible_readings"), 2);
    let stored = daemon.all_readings("ln2-s");
    let faults: Vec<&Value> = stored
        .iter()
        .filter(|r| r["value"]["valid"].is_null())
        .collect();
    assert_eq!(faults.len(), 2, "{stored:?}");
    for f in &faults {
        assert_eq!(f["value"]["fault"], "out_of_range", "{f}");
    }
    let a = wait_or_show(
        T,
        "the probe-fault alarm",
        || {
            let a = alerts(&daemon, "S-SENTINEL");
            (!of_kind(&a, "probe_fault").is_empty()).then_some(a)
        },
        || format!("{:?}", alerts(&daemon, "S-SENTINEL")),
    );
    assert!(
        of_kind(&a, "L1").is_empty(),
        "a sentinel became a low-zone alarm: {a:?}"
    );
    let t = &report(&daemon, "S-SENTINEL")["temperature"];
    assert_eq!(t["min_milli_c"], -190_000, "{t}");
    assert_eq!(t["mean_milli_c"], -190_000, "{t}");
    assert_eq!(t["valid_readings"], 22, "{t}");
}

/// Case 7, the raise time. Twelve shipments watch one logger (so each
/// evaluation pass takes a while), which streams its readings live, a frame
/// (one reading) at a time: an hour above 8 °C, then a spike to 16 °C. Each
/// alert's `raised_ms` is no earlier than the moment the frame proving it (the
/// first holding a reading at or after its fire time) was handed to the
/// broker: the daemon cannot have known before.
#[test]
fn an_alert_is_never_raised_before_the_frame_that_proves_it() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, daemon) = start(dir.path(), &["fr-r"], "", "");
    let ships: Vec<String> = (0..12).map(|i| format!("S-RAISE-{i}")).collect();
    // Two days of history at 5 °C, then the live part.
    let start = now_ms() - 2 * 24 * H;
    for s in &ships {
        create(&daemon, s, "fridge-60", "fr-r", start - 10 * MIN);
    }
    let live_n = 70;
    let hist_n = 2 * 24 * 60 - live_n - 5;
    let hist = minutes(start, hist_n, |_| 5_000);
    mosquitto_pub_lines(broker.port, &topic("fr-r"), &frames("fr-r", &hist, 32)).unwrap();
    let first_seq = hist.len().div_ceil(32) as u32;
    // Live: 9 °C for 62 min, 16 °C, back to 5 °C.
    let live: Vec<(i64, Option<i32>)> = (0..live_n)
        .map(|i| {
            let v = match i {
                ..2 => 5_000,
                2..64 => 9_000,
                64 => 16_000,
                _ => 5_000,
            };
            (start + (hist_n + i) * MIN, Some(v))
        })
        .collect();
    let mut p = LinePub::new(broker.port, &topic("fr-r"));
    let mut published: Vec<(i64, i64)> = Vec::new();
    for (k, r) in live.iter().enumerate() {
        let at = p.send(&json_frame("fr-r", 1, first_seq + k as u32, &[*r]));
        published.push((r.0, at));
        std::thread::sleep(Duration::from_millis(150));
    }
    p.finish();
    let proving = |fires: i64| {
        published
            .iter()
            .find(|(t, _)| *t >= fires)
            .map(|&(_, at)| at)
            .unwrap_or_else(|| panic!("no frame proves a firing at {fires}"))
    };
    let mut early = Vec::new();
    for s in &ships {
        let a = wait_or_show(
            T,
            &format!("H1 and H3 on {s}"),
            || {
                let a = alerts(&daemon, s);
                (!of_kind(&a, "H1").is_empty() && !of_kind(&a, "H3").is_empty()).then_some(a)
            },
            || format!("{:?}", alerts(&daemon, s)),
        );
        for a in a
            .iter()
            .filter(|a| ["H1", "H3"].contains(&alert_kind(a).as_str()))
        {
            let fires = a["fires_ms"].as_i64().unwrap();
            let raised = a["raised_ms"].as_i64().unwrap();
            let sent = proving(fires);
            if raised < sent {
                early.push(format!(
                    "{s}: {} raised {} ms before the frame proving it was published",
                    alert_kind(a),
                    sent - raised
                ));
            }
        }
    }
    assert!(
        early.is_empty(),
        "raised before the data:\n{}",
        early.join("\n")
    );
}

/// Issue 10 case 4. With `alerts.sample_interval_s = 5` and the default
/// upload interval (60 s), a logger silent for 36 s and then back is no
/// silence alarm (the live rule is 3 × max(sample, upload interval) = 180 s).
/// A logger told to upload every 5 s (15 s rule) that goes quiet gets a
/// silent alert while it is still quiet, cleared when it is back.
#[test]
fn silence_is_raised_while_silent_and_a_short_gap_is_none() {
    let dir = tempfile::tempdir().unwrap();
    let settings = "[[devices]]\nid = \"fr-s\"\nkey = \"".to_string()
        + TEST_KEY
        + "\"\n[devices.settings]\nversion = 1\nupload_interval_s = 5\nstatus_interval_s = 60\n\
           tilt_limit_deg = 45\nchannels = [{ channel = 0, interval_s = 5, alarm_interval_s = 5 }]\n";
    let (broker, daemon) = start(dir.path(), &["fr-q"], "sample_interval_s = 5", &settings);
    let watch = Watch::start(broker.port);
    let t0 = now_ms() - 10 * MIN;
    create(&daemon, "S-QUIET", "fridge", "fr-q", t0);
    create(&daemon, "S-SILENT", "fridge", "fr-s", t0);
    // Samples every 5 s from `from` to now (at least the one at `from`).
    let every5 = |from: i64| -> Vec<(i64, Option<i32>)> {
        let now = now_ms();
        (0..)
            .map(|i| from + i * 5 * S)
            .take_while(|t| *t <= now.max(from))
            .map(|t| (t, Some(5_000)))
            .collect()
    };
    // Each device's story in its own thread, joined here so that a failure
    // of one does not hide the other's outcome.
    let (quiet_done, silent_done) = std::thread::scope(|sc| {
        // fr-q: live for a minute, then nothing for 36 s, then back.
        let q = sc.spawn(|| {
            let first = every5(now_ms() - 60 * S);
            let last = first.last().unwrap().0;
            let mut p = LinePub::new(broker.port, &topic("fr-q"));
            p.send(&json_frame("fr-q", 1, 0, &first));
            std::thread::sleep(Duration::from_millis(
                (last + 36 * S - now_ms()).max(0) as u64
            ));
            let back = every5(last + 36 * S);
            p.send(&json_frame("fr-q", 1, 1, &back));
            p.finish();
            watch.wait_evaluated("S-QUIET", back.last().unwrap().0);
        });
        // fr-s: live for a minute, then quiet until its silence is raised.
        let s = sc.spawn(|| {
            let first = every5(now_ms() - 60 * S);
            let last = first.last().unwrap().0;
            let mut p = LinePub::new(broker.port, &topic("fr-s"));
            p.send(&json_frame("fr-s", 1, 0, &first));
            let silent = wait_or_show(
                T,
                "the silent alert while fr-s is quiet",
                || {
                    of_kind(&alerts(&daemon, "S-SILENT"), "silent")
                        .first()
                        .cloned()
                },
                || format!("{:?}", alerts(&daemon, "S-SILENT")),
            );
            // Nothing has been sent since `first`: raised while silent.
            assert_eq!(silent["condition"]["start_ms"], last, "{silent}");
            assert!(silent["cleared_ms"].is_null(), "{silent}");
            assert_eq!(silent["state"], "open", "{silent}");
            // Back: the queued samples since, and the live one.
            p.send(&json_frame("fr-s", 1, 1, &every5(last + 5 * S)));
            p.finish();
            let cleared = wait_for(Duration::from_secs(30), "the silent alert cleared", || {
                watch
                    .events_of("S-SILENT", "cleared", "silent")
                    .first()
                    .cloned()
            });
            assert_eq!(cleared["alert"]["id"], silent["id"]);
            let now = of_kind(&alerts(&daemon, "S-SILENT"), "silent");
            assert_eq!(now.len(), 1, "{now:?}");
            assert!(now[0]["cleared_ms"].is_i64(), "{now:?}");
        });
        (q.join().is_ok(), s.join().is_ok())
    });
    let mut problems = Vec::new();
    let quiet = of_kind(&alerts(&daemon, "S-QUIET"), "silent");
    if !quiet.is_empty() {
        problems.push(format!("a 36 s gap raised a silent alert: {quiet:?}"));
    }
    if !watch.events_of("S-QUIET", "raised", "silent").is_empty()
        || !audited(&daemon, "alert.raise", "S-QUIET", "silent").is_empty()
    {
        problems.push("a 36 s gap raised a silent alert on the topic or in the audit".into());
    }
    if !quiet_done {
        problems.push("fr-q's story failed (its panic is above)".into());
    }
    if !silent_done {
        problems.push("fr-s's story failed (its panic is above)".into());
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
