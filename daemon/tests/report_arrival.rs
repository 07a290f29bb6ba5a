//! The arrival report from a real store and evaluator: its figures, the golden
//! chart and CSV, the hash (stable, and changing when the data changes), and
//! verification of intact and tampered copies in every form.

use std::sync::Arc;

use coldchain_daemon::alert::AlertState;
use coldchain_daemon::audit::Audit;
use coldchain_daemon::config::Config;
use coldchain_daemon::epcis;
use coldchain_daemon::evaluate::Evaluator;
use coldchain_daemon::report::{self, Format, ReportData};
use coldchain_daemon::shipment::{Decision, Disposition, Handoff, NewShipment, Shipment, Watch};
use coldchain_daemon::store::{
    FrameRecord, KvStore, ReadingRecord, Store, TimeSource, Via, WriteSet,
};
use coldchain_proto::{ChannelKind, DeviceId, FaultKind, FrameRef, Measurement};
use sha2::Digest;

const MIN: i64 = 60_000;
const H: i64 = 3_600_000;
/// 2026-01-01 00:00 UTC.
const T0: i64 = 1_767_225_600_000;
const DEV: &str = "fridge-1";

/// Compares with the committed file; `COLDCHAIN_BLESS=1` rewrites it.
fn check_golden(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("COLDCHAIN_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with COLDCHAIN_BLESS=1 to create it",
            path.display()
        )
    });
    assert!(
        want == actual,
        "{name} changed; if deliberate, rerun with COLDCHAIN_BLESS=1 and review the diff"
    );
}

struct World {
    _dir: tempfile::TempDir,
    store: Arc<KvStore>,
    ev: Evaluator,
    seq: u32,
}

impl World {
    fn new() -> World {
        World::with_config("")
    }

    /// A world whose config ends with `extra` (device entries).
    fn with_config(extra: &str) -> World {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config::parse(&format!(
            "[daemon]\nid = \"t\"\ndata_dir = \"{}\"\n[alerts]\nsettle_s = 0\nsample_interval_s = 300\n{extra}",
            dir.path().display()
        ))
        .unwrap();
        let store = Arc::new(KvStore::open(&dir.path().join("db")).unwrap());
        let audit = Arc::new(Audit::open(store.db()).unwrap());
        let forward = coldchain_daemon::forward::Forward::open(store.db(), None).unwrap();
        let ev = Evaluator::new(cfg, store.clone(), audit, forward)
            .unwrap()
            .with_clock(coldchain_daemon::evaluate::Clock::fixed(T0 + 7 * H));
        World {
            _dir: dir,
            store,
            ev,
            seq: 0,
        }
    }

    /// One frame of readings (m°C or None for a fault).
    fn frame(&mut self, readings: &[(i64, Option<i32>)]) {
        let d = DeviceId::new(DEV).unwrap();
        let r = FrameRef {
            boot: 1,
            seq: self.seq,
        };
        self.seq += 1;
        let mut w = WriteSet::default();
        for (i, &(t, v)) in readings.iter().enumerate() {
            w.reading(
                &d,
                r,
                i as u16,
                &ReadingRecord {
                    channel: 0,
                    kind: ChannelKind::Rtd,
                    value: match v {
                        Some(m) => Measurement::Valid(m),
                        None => Measurement::Fault(FaultKind::OpenCircuit),
                    },
                    time_ms: t,
                    time_source: TimeSource::Device,
                },
            );
        }
        w.frame(
            &d,
            r,
            &FrameRecord {
                received_ms: readings[0].0,
                time_ms: readings[0].0,
                time_source: TimeSource::Device,
                via: Via::MqttJson,
                signed: true,
            },
            // Frames written straight to the store: content digest unused here.
            &[0; 16],
        );
        self.store.apply(w).unwrap();
    }

    fn shipment(&self) -> Shipment {
        let mut s = Shipment::create(
            NewShipment {
                id: "FR <7> & co".into(),
                product: "PBSC, 1 bag".into(),
                din: Some("W1234 26 000007 00 B".into()),
                product_code: Some("S1194".into()),
                profile: "fridge".into(),
                watch: vec![Watch {
                    device: DEV.into(),
                    channel: 0,
                }],
                origin: "Apheresis unit".into(),
                destination: "Cell lab".into(),
                eta_ms: Some(T0 + 6 * H),
                collection_ms: Some(T0 - 2 * H),
                window_h: Some(48.0),
                departure_ms: Some(T0),
            },
            T0 - H,
        )
        .unwrap();
        s.arrive(T0 + 6 * H).unwrap();
        self.ev.shipments.put(&s).unwrap();
        s
    }

    fn report(&mut self, s: &Shipment) -> ReportData {
        self.ev.run_one(s, T0 + 7 * H).unwrap();
        report::for_shipment(&self.ev, &self.store, &s.id, T0 + 7 * H)
            .unwrap()
            .unwrap()
    }
}

/// 6 h every 5 min at 5 °C, except: 9.5 °C from 90 to 130 min (40 min above
/// 8 °C: H1 fires after 30 min), probe faults at 200 and 205 min, no data from
/// 240 to 300 min.
fn journey() -> Vec<(i64, Option<i32>)> {
    (0..=72)
        .map(|i| i * 5)
        .filter(|m| !(241..300).contains(m))
        .map(|m| {
            let v = match m {
                90..130 => Some(9_500),
                200 | 205 => None,
                _ => Some(5_000),
            };
            (T0 + m * MIN, v)
        })
        .collect()
}

fn world_with_journey() -> (World, Shipment, ReportData) {
    let mut w = World::new();
    for chunk in journey().chunks(12) {
        w.frame(chunk);
    }
    let s = w.shipment();
    let d = w.report(&s);
    (w, s, d)
}

#[test]
fn figures_of_a_fridge_shipment_with_one_excursion() {
    let (_w, _s, d) = world_with_journey();
    let t = &d.temperature;
    assert_eq!(d.as_of_ms, T0 + 6 * H, "as of the arrival");
    assert_eq!(t.min_milli_c, Some(5_000));
    assert_eq!(t.max_milli_c, Some(9_500));
    assert_eq!(d.data_health.readings, 62);
    assert_eq!(d.data_health.fault_readings, 2);
    assert_eq!(t.valid_readings, 60);
    assert_eq!(d.readings.len(), 62);

    let h1: Vec<_> = t.excursions.iter().filter(|e| e.zone == "H1").collect();
    assert_eq!(h1.len(), 1, "{:?}", t.excursions);
    let e = h1[0];
    assert_eq!(e.start_ms, T0 + 90 * MIN);
    assert_eq!(e.peak_milli_c, Some(9_500));
    assert_eq!(e.beyond_ms, 40 * MIN);
    assert_eq!(
        e.fired_ms,
        Some(T0 + 120 * MIN),
        "fires at the 30 min delay"
    );
    assert_eq!(
        e.end_ms,
        Some(T0 + 130 * MIN),
        "clears at the first reading back"
    );
    let z = t.zones.iter().find(|z| z.zone == "H1").unwrap();
    assert_eq!((z.time_beyond_ms, z.entries, z.fired), (40 * MIN, 1, 1));
    let z2 = t.zones.iter().find(|z| z.zone == "H2").unwrap();
    assert_eq!(
        z2.time_beyond_ms,
        40 * MIN,
        "cumulative zone counts the same time"
    );
    assert_eq!(z2.fired, 0, "below the 2 h cumulative delay");

    let mkt = t.mkt.as_ref().expect("fridge lane has MKT");
    assert!(
        mkt.whole_milli_c > 5_000 && mkt.whole_milli_c < 9_500,
        "{mkt:?}"
    );
    assert_eq!(mkt.window_ms, 24 * H);
    assert!(!mkt.window_full, "6 h of data, 24 h window");

    assert_eq!(d.data_health.faults.len(), 1);
    assert_eq!(d.data_health.faults[0].start_ms, T0 + 200 * MIN);
    assert_eq!(d.data_health.faults[0].end_ms, Some(T0 + 210 * MIN));
    assert!(
        d.data_health
            .silences
            .iter()
            .any(|g| g.start_ms == T0 + 240 * MIN),
        "the hour without data is a silence: {:?}",
        d.data_health.silences
    );
    assert_eq!(d.data_health.devices[0].frames_verified, 6);

    let w = d
        .viability
        .window
        .as_ref()
        .expect("fresh product has a window");
    assert_eq!(w.start_ms, T0 - 2 * H);
    assert_eq!(w.nominal_ms, 48 * H);
    assert!(w.remaining_ms > 0 && w.remaining_ms < 40 * H, "{w:?}");
    assert!(d.viability.warming.is_none());

    assert!(d.alerts.iter().any(|a| a.kind == "H1" && a.state == "open"));
    assert!(
        d.facts
            .iter()
            .any(|f| f.contains("1 excursion alarm(s) (H1)")),
        "{:?}",
        d.facts
    );
    assert!(
        d.facts.iter().any(|f| f.ends_with("of window remaining")),
        "{:?}",
        d.facts
    );
    assert!(d.facts.iter().any(|f| f == "disposition not recorded"));
    assert!(
        !d.facts
            .iter()
            .any(|f| f.contains("accept") || f.contains("pass")),
        "the report never decides: {:?}",
        d.facts
    );
}

#[test]
fn golden_chart_and_csv() {
    let (_w, _s, d) = world_with_journey();
    let svg = report::chart_svg(&d);
    // The chart draws every valid reading, marks the faults and the excursion.
    assert!(svg.contains("data-readings=\"60\""));
    assert!(svg.contains("data-faults=\"2\""));
    let drawn: usize = svg
        .split("class=\"readings\" data-n=\"")
        .skip(1)
        .map(|s| s.split('"').next().unwrap().parse::<usize>().unwrap())
        .sum();
    assert_eq!(drawn, 60);
    assert_eq!(svg.matches("class=\"fault\"").count(), 2);
    assert!(svg.contains("class=\"excursion\" data-zone=\"H1\""));
    assert!(svg.contains("class=\"gap\""));
    assert!(!svg.contains("<7>"), "the shipment id is escaped");
    if let Some(dir) = std::env::var_os("COLDCHAIN_REPORT_OUT") {
        // For looking at: the HTML form of this report.
        std::fs::write(
            std::path::Path::new(&dir).join("report_fridge.html"),
            report::render_html(&d),
        )
        .unwrap();
    }
    check_golden("report_fridge.svg", &svg);
    check_golden("report_fridge.csv", &report::render_csv(&d));
}

#[test]
fn rendering_and_hash_are_deterministic_and_follow_the_data() {
    let (mut w, s, d) = world_with_journey();
    let again = w.report(&s);
    assert_eq!(d, again);
    for f in [Format::Html, Format::Csv, Format::Json, Format::Pdf] {
        assert_eq!(report::render(&d, f), report::render(&again, f), "{f:?}");
    }
    let h = report::sha256(&d);
    assert_eq!(h.len(), 64);
    assert_eq!(h, report::sha256(&again));
    for f in [Format::Html, Format::Csv, Format::Json, Format::Pdf] {
        assert!(
            String::from_utf8_lossy(&report::render(&d, f)).contains(&h),
            "{f:?} carries the hash"
        );
    }

    // A late frame with one more reading changes the data and the hash.
    w.frame(&[(T0 + 242 * MIN, Some(5_100))]);
    let more = w.report(&s);
    assert_ne!(report::sha256(&more), h);

    // So does an acknowledgement.
    let mut w2 = world_with_journey();
    let mut a =
        w2.0.ev
            .alerts
            .of_shipment(&w2.1.id)
            .unwrap()
            .into_iter()
            .find(|a| a.state == AlertState::Open)
            .unwrap();
    a.state = AlertState::Acknowledged;
    w2.0.ev.alerts.put(&a).unwrap();
    let acked = w2.0.report(&w2.1);
    assert_ne!(report::sha256(&acked), report::sha256(&w2.2));
}

#[test]
fn verification_of_intact_and_tampered_copies() {
    let (mut w, s, d) = world_with_journey();
    for f in [Format::Html, Format::Csv, Format::Json] {
        let file = String::from_utf8(report::render(&d, f)).unwrap();
        let v = report::verify(&file, &d).unwrap();
        assert!(v.ok, "{f:?}: {v:?}");
        assert_eq!(v.shipment, "FR <7> & co");
        assert_eq!(v.as_of_ms, d.as_of_ms);
        // Saved with Windows line endings: still intact.
        let crlf = file.replace("\r\n", "\n").replace('\n', "\r\n");
        assert!(report::verify(&crlf, &d).unwrap().ok, "{f:?} with CRLF");
    }

    // A figure edited in the HTML (its hash and embedded data left alone).
    let html = report::render_html(&d);
    assert!(html.contains("9.5 °C"));
    let forged = html.replace("9.5 °C", "7.5 °C");
    let v = report::verify(&forged, &d).unwrap();
    assert!(
        !v.ok && v.data_unchanged && v.file_intact == Some(false),
        "{v:?}"
    );

    // A reading edited in the CSV.
    let csv = report::render_csv(&d);
    let forged = csv.replacen(",9.500,", ",7.500,", 1);
    assert_ne!(forged, csv);
    let v = report::verify(&forged, &d).unwrap();
    assert!(!v.ok && v.file_intact == Some(false), "{v:?}");

    // The JSON data edited: its hash no longer matches.
    let json = report::render_json(&d);
    let forged = json.replacen("9500", "7500", 1);
    let v = report::verify(&forged, &d).unwrap();
    assert!(!v.ok && v.file_intact == Some(false), "{v:?}");
    assert!(
        v.data_unchanged,
        "the daemon's data still has the claimed hash"
    );
    assert!(!v.changed_sections.is_empty(), "{v:?}");

    // The daemon's data changed since the copy was made (a late frame).
    w.frame(&[(T0 + 242 * MIN, Some(5_100))]);
    let now = w.report(&s);
    let v = report::verify(&json, &now).unwrap();
    assert!(
        !v.ok && !v.data_unchanged && v.file_intact == Some(true),
        "{v:?}"
    );
    assert!(
        v.changed_sections.contains(&"readings".to_string()),
        "{v:?}"
    );
    let v = report::verify(&csv, &now).unwrap();
    assert!(!v.ok && v.file_intact.is_none(), "{v:?}");

    // Not a report.
    assert!(report::verify("hello", &d).is_err());
    assert!(report::identify("{\"a\":1}").is_err());
}

#[test]
fn html_escapes_user_text() {
    let (_w, _s, d) = world_with_journey();
    let html = report::render_html(&d);
    assert!(!html.contains("FR <7>"), "raw id in HTML");
    assert!(html.contains("FR &lt;7&gt; &amp; co"));
    // The embedded data cannot close its script element.
    let tail = html.split(r#"id="coldchain-report-data">"#).nth(1).unwrap();
    let data = tail.split("</script>").next().unwrap();
    assert!(!data.contains('<'));
    assert!(html.contains("@page{size:A4"));
}

/// The shipment of [`world_with_journey`] handed over once and closed by a
/// person: every kind of EPCIS event appears.
fn closed_journey() -> (World, ReportData) {
    let (mut w, mut s, _) = world_with_journey();
    s.handoff(Handoff {
        to: "Courier B & Co".into(),
        location: "Hub 3".into(),
        at_ms: T0 + 3 * H,
        by: "driver".into(),
    })
    .unwrap();
    s.close(Disposition {
        decision: Decision::Quarantined,
        comment: "H1 excursion, 40 min: QA to review".into(),
        by: "lab qa".into(),
        at_ms: T0 + 6 * H + 20 * MIN,
        signature: None,
    })
    .unwrap();
    w.ev.shipments.put(&s).unwrap();
    let d = w.report(&s);
    (w, d)
}

fn epcis_validator() -> jsonschema::Validator {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/epcis/EPCIS-JSON-Schema.json");
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft7)
        .should_validate_formats(true)
        .build(&schema)
        .expect("GS1's schema compiles")
}

fn schema_errors(v: &jsonschema::Validator, doc: &serde_json::Value) -> Vec<String> {
    v.iter_errors(doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

#[test]
fn epcis_document_is_valid_epcis_2_and_states_the_report() {
    let (_w, d) = closed_journey();
    let doc = epcis::document(&d);
    let v = epcis_validator();
    let errors = schema_errors(&v, &doc);
    assert!(errors.is_empty(), "not valid EPCIS 2.0: {errors:#?}");

    // The schema check bites: an event without its time zone offset, a
    // sensor report without its type, an unknown disposition, an id
    // that is not a URI (format checks are on).
    for (path, breakage) in [
        ("/epcisBody/eventList/0", "drop eventTimeZoneOffset"),
        (
            "/epcisBody/eventList/1/sensorElementList/0/sensorReport/0",
            "drop type",
        ),
        ("/epcisBody/eventList/0", "bad disposition"),
        ("/epcisBody/eventList/0", "eventID not a URI"),
    ] {
        let mut bad = doc.clone();
        let o = bad.pointer_mut(path).unwrap().as_object_mut().unwrap();
        match breakage {
            "drop eventTimeZoneOffset" => drop(o.remove("eventTimeZoneOffset")),
            "drop type" => drop(o.remove("type")),
            "eventID not a URI" => drop(o.insert("eventID".into(), "sha 256 of it".into())),
            _ => drop(o.insert("disposition".into(), "fine".into())),
        }
        assert!(!schema_errors(&v, &bad).is_empty(), "{breakage} passed");
    }

    let events = doc["epcisBody"]["eventList"].as_array().unwrap();
    let step = |e: &serde_json::Value| e["bizStep"].as_str().unwrap_or("").to_string();
    let report_of = |e: &serde_json::Value| e["sensorElementList"][0]["sensorReport"][0].clone();

    // Hourly summaries: recomputed here from the journey's readings.
    let hours: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| step(e) == "sensor_reporting" && report_of(e)["exception"].is_null())
        .collect();
    let mut want = Vec::new();
    for h in 0..6 {
        let vals: Vec<i32> = journey()
            .into_iter()
            .filter(|(t, _)| (T0 + h * H..T0 + (h + 1) * H).contains(t))
            .filter_map(|(_, v)| v)
            .collect();
        if vals.is_empty() {
            continue;
        }
        let mean = f64::from(vals.iter().sum::<i32>()) / vals.len() as f64 / 1000.0;
        want.push((
            h,
            f64::from(*vals.iter().min().unwrap()) / 1000.0,
            f64::from(*vals.iter().max().unwrap()) / 1000.0,
            (mean * 1000.0).round() / 1000.0,
        ));
    }
    // The hour from 04:00 has only the 04:00 reading (a silence follows);
    // the 06:00 reading (the arrival) makes an hour of its own, clipped at
    // the arrival.
    assert_eq!(hours.len(), want.len() + 1, "{hours:#?}");
    for (e, (h, min, max, mean)) in hours.iter().zip(&want) {
        let r = report_of(e);
        assert_eq!(r["type"], "Temperature");
        assert_eq!(r["uom"], "CEL");
        assert_eq!(r["deviceID"], format!("urn:coldchain:device:{DEV}"));
        assert_eq!(
            (
                r["minValue"].as_f64(),
                r["maxValue"].as_f64(),
                r["meanValue"].as_f64()
            ),
            (Some(*min), Some(*max), Some(*mean)),
            "hour {h}"
        );
        let meta = &e["sensorElementList"][0]["sensorMetadata"];
        assert_eq!(meta["startTime"], epcis_time(T0 + h * H));
        assert_eq!(e["eventTime"], epcis_time(T0 + (h + 1) * H));
    }

    // Every excursion is an alarm condition, every fault stretch an error.
    let alarms: Vec<_> = events
        .iter()
        .filter(|e| report_of(e)["exception"] == "ALARM_CONDITION")
        .collect();
    assert_eq!(alarms.len(), d.temperature.excursions.len());
    let h1 = alarms
        .iter()
        .find(|e| report_of(e)["coldchain:zone"] == "H1")
        .expect("the H1 excursion");
    assert_eq!(report_of(h1)["value"], 9.5);
    assert_eq!(h1["eventTime"], epcis_time(T0 + 90 * MIN));
    assert_eq!(
        h1["sensorElementList"][0]["sensorMetadata"]["endTime"],
        epcis_time(T0 + 130 * MIN)
    );
    let errors: Vec<_> = events
        .iter()
        .filter(|e| report_of(e)["exception"] == "ERROR_CONDITION")
        .collect();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["eventTime"], epcis_time(T0 + 200 * MIN));

    // Journey, custody, arrival and the person's decision, in time order.
    let steps: Vec<String> = events
        .iter()
        .map(step)
        .filter(|s| s != "sensor_reporting")
        .collect();
    assert_eq!(
        steps,
        ["departing", "transporting", "arriving", "inspecting"]
    );
    let handoff = events.iter().find(|e| step(e) == "transporting").unwrap();
    assert_eq!(
        handoff["destinationList"][0],
        serde_json::json!({"type": "possessing_party", "destination": "urn:coldchain:party:Courier%20B%20%26%20Co"})
    );
    let last = events.last().unwrap();
    assert_eq!(last["disposition"], "non_sellable_other");
    assert_eq!(last["coldchain:decision"], "quarantined");
    let times: Vec<&str> = events
        .iter()
        .map(|e| e["eventTime"].as_str().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");

    // ISBT 128 identifiers on every event.
    for e in events {
        assert_eq!(e["coldchain:din"], "W1234 26 000007 00 B");
        assert_eq!(e["coldchain:productCode"], "S1194");
        assert_eq!(
            e["epcList"][0],
            "urn:coldchain:shipment:FR%20%3C7%3E%20%26%20co"
        );
    }

    // Event ids are content hashes: recomputed, unique, and the same for the
    // same data.
    let mut ids = std::collections::BTreeSet::new();
    for e in events {
        let mut without = e.clone();
        without.as_object_mut().unwrap().remove("eventID");
        let h = sha2::Sha256::digest(report::canonical_json(&without).as_bytes());
        assert_eq!(e["eventID"], format!("ni:///sha-256;{}", hex::encode(h)));
        assert!(ids.insert(e["eventID"].as_str().unwrap().to_string()));
    }
    assert_eq!(epcis::document(&d), doc);
}

/// EPCIS time of a moment on the journey's day (2026-01-01).
fn epcis_time(ms: i64) -> String {
    let s = (ms - T0) / 1000;
    assert!((0..86_400).contains(&s));
    format!(
        "2026-01-01T{:02}:{:02}:{:02}.{:03}Z",
        s / 3600,
        s / 60 % 60,
        s % 60,
        (ms - T0) % 1000
    )
}

#[test]
fn golden_epcis_document() {
    let (_w, d) = closed_journey();
    let mut text = serde_json::to_string_pretty(&epcis::document(&d)).unwrap();
    text.push('\n');
    check_golden("epcis_fridge.jsonld", &text);
}

/// The journey's device with a calibration certificate of its channel 0:
/// offset -0.5 °C, class A element, due on `due`.
fn calibrated_world(due: &str) -> (World, Shipment, ReportData) {
    let mut w = World::with_config(&format!(
        "[[devices]]\nid = \"{DEV}\"\nkey = \"{}\"\n\
         [[devices.calibration]]\nchannel = 0\ncertificate = \"CAL-7\"\n\
         date = \"2025-06-01\"\ndue = \"{due}\"\noffset = -0.5\nuncertainty = 0.05\nclass = \"A\"\n",
        "11".repeat(32)
    ));
    for chunk in journey().chunks(12) {
        w.frame(chunk);
    }
    let s = w.shipment();
    let d = w.report(&s);
    (w, s, d)
}

#[test]
fn calibration_corrects_on_evaluation_and_stored_readings_stay_as_measured() {
    // Due 2026-06-01: valid for the whole journey (2026-01-01).
    let (w, s, d) = calibrated_world("2026-06-01");
    let t = &d.temperature;
    assert_eq!(t.min_milli_c, Some(4_500), "5.0 measured, -0.5 corrected");
    assert_eq!(t.max_milli_c, Some(9_000));
    assert!(
        d.readings
            .iter()
            .all(|(_, v)| v.is_none_or(|v| v == 4_500 || v == 9_000))
    );
    assert_eq!(
        t.excursions
            .iter()
            .find(|e| e.zone == "H1")
            .and_then(|e| e.peak_milli_c),
        Some(9_000),
        "the excursion's peak is corrected too"
    );
    // The store keeps what the device measured.
    let stored = w
        .store
        .readings(&DeviceId::new(DEV).unwrap(), None, 1000)
        .unwrap();
    assert!(
        stored
            .iter()
            .any(|r| r.reading.value == Measurement::Valid(9_500))
    );
    assert!(
        !stored
            .iter()
            .any(|r| r.reading.value == Measurement::Valid(9_000))
    );

    let c = &d.calibration[..];
    assert_eq!(c.len(), 1);
    let c = &c[0];
    assert_eq!(
        (c.device.as_str(), c.channel, c.certificate.as_str()),
        (DEV, 0, "CAL-7")
    );
    assert!(!c.expired);
    assert_eq!(c.correction, "offset -0.500 °C");
    assert_eq!(c.uncertainty_milli_c, 50);
    assert_eq!(c.class.as_deref(), Some("A"));
    // IEC 60751 class A: 0.15 + 0.002 |t|: 0.159 at 4.5 °C, 0.168 at 9.0 °C.
    assert_eq!(
        (c.tolerance_at_min_milli_c, c.tolerance_at_max_milli_c),
        (Some(159), Some(168))
    );
    assert_eq!(
        (c.measured_min_milli_c, c.measured_max_milli_c),
        (Some(5_000), Some(9_500))
    );
    assert!(
        !d.data_health
            .other
            .iter()
            .any(|o| o.kind == "calibration_expired"),
        "{:?}",
        d.data_health.other
    );

    let html = report::render_html(&d);
    assert!(
        html.contains("CAL-7") && html.contains("5.000 °C / 9.500 °C"),
        "measured shown"
    );
    assert!(html.contains("IEC 60751 class A ±0.159 °C at the lowest, ±0.168 °C"));
    assert!(!html.contains("(expired)"));
    let csv = report::render_csv(&d);
    assert!(
        csv.contains("calibration,fridge-1,0,CAL-7,2025-06-01,2026-06-01,false,offset -0.500 °C,0.050,A,0.159,0.168,5.000,9.500"),
        "{csv}"
    );
    // Every form of it verifies against the daemon's data.
    for f in [Format::Html, Format::Csv, Format::Json] {
        let v = report::verify(report::render(&d, f), &d).unwrap();
        assert!(v.ok, "{f:?}: {v:?}");
    }
    let _ = s;
}

#[test]
fn an_expired_certificate_is_a_data_health_warning() {
    // Due 2025-12-31: expired at the end of that day, the journey's start.
    let (w, s, d) = calibrated_world("2025-12-31");
    assert!(d.calibration[0].expired);
    let o: Vec<_> = d
        .data_health
        .other
        .iter()
        .filter(|o| o.kind == "calibration_expired")
        .collect();
    assert_eq!(o.len(), 1, "{:?}", d.data_health.other);
    assert_eq!(o[0].severity, "warning");
    assert_eq!(o[0].stretch.start_ms, T0, "from the departure");
    assert!(o[0].fired);
    assert!(
        d.alerts
            .iter()
            .any(|a| a.kind == "calibration_expired" && a.severity == "warning"),
        "raised as an alert: {:?}",
        d.alerts
    );
    assert!(report::render_html(&d).contains("(expired)"));
    // The readings are still corrected by it (the figures say so).
    assert_eq!(d.temperature.max_milli_c, Some(9_000));
    let _ = (w, s);
}

// ---------------------------------------------------------------------------
// The PDF/A form.

/// A report with every section the PDF lays out: the calibrated journey
/// (certificate expired), a hand-off, an alert revised by later data and
/// assessed by QA, one withdrawn, and the disposition signed. The alert
/// history is set on the data (what the evaluator and QA would have added);
/// the signature covers the content SHA-256 of exactly this data.
fn full_report() -> ReportData {
    use coldchain_daemon::shipment::Signature;
    let (mut w, mut s, _) = calibrated_world("2025-12-31");
    s.handoff(Handoff {
        to: "Courier B & Co".into(),
        location: "Hub 3".into(),
        at_ms: T0 + 3 * H,
        by: "driver".into(),
    })
    .unwrap();
    w.ev.shipments.put(&s).unwrap();
    let history = |d: &mut ReportData| {
        let n = d.alerts.len();
        assert!(n >= 2, "{:?}", d.alerts);
        let a = d.alerts.iter_mut().find(|a| a.kind == "H1").unwrap();
        a.revisions.push(report::RevisionEntry {
            at_ms: T0 + 2 * H + 10 * MIN,
            was_message: "H1: above 8.0 °C for 30 min (peak 9.0 °C)".into(),
            was_start_ms: T0 + 90 * MIN,
            was_fires_ms: T0 + 120 * MIN,
        });
        a.assessment = Some(report::AssessmentEntry {
            user: "qa.lee".into(),
            full_name: "Dr. Mei Lee".into(),
            comment: "lid opened at the hub; product within its stability data".into(),
            at_ms: T0 + 6 * H + 10 * MIN,
        });
        let b = d
            .alerts
            .iter_mut()
            .find(|a| a.kind == "probe_fault")
            .unwrap();
        b.state = "withdrawn".into();
        b.withdrawn = Some(report::WithdrawalEntry {
            at_ms: T0 + 6 * H + 5 * MIN,
            reason: "the logger's dump at arrival re-sent 03:20 and 03:25 as valid readings".into(),
        });
    };
    let mut arrived = w.report(&s);
    history(&mut arrived);
    s.close(Disposition {
        decision: Decision::Quarantined,
        comment: "expired probe certificate: QA to review".into(),
        by: "qa.lee".into(),
        at_ms: T0 + 6 * H + 20 * MIN,
        signature: Some(Signature {
            user: "qa.lee".into(),
            full_name: "Dr. Mei Lee".into(),
            signed_ms: T0 + 6 * H + 20 * MIN,
            meaning: "quarantined".into(),
            report_sha256: report::content_sha256(&arrived),
            authentication: "password re-entered".into(),
        }),
    })
    .unwrap();
    w.ev.shipments.put(&s).unwrap();
    let mut d = w.report(&s);
    history(&mut d);
    assert_eq!(
        report::content_sha256(&d),
        d.disposition
            .as_ref()
            .unwrap()
            .signature
            .as_ref()
            .unwrap()
            .report_sha256,
        "the signature covers this content"
    );
    d
}

/// Runs a command from Debian's poppler-utils or qpdf (tests/run.sh installs
/// them) and returns its output.
fn tool(cmd: &str, args: &[&std::ffi::OsStr]) -> std::process::Output {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("{cmd}: {e} (install poppler-utils and qpdf: tests/run.sh does)")
        })
}

/// The PDF's pages as PNG files rendered by pdftoppm at `dpi`.
fn pdf_pages(pdf: &[u8], dpi: u32, dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let file = dir.join("report.pdf");
    std::fs::write(&file, pdf).unwrap();
    let prefix = dir.join("page");
    let o = tool(
        "pdftoppm",
        &[
            "-png".as_ref(),
            "-r".as_ref(),
            dpi.to_string().as_ref(),
            file.as_os_str(),
            prefix.as_os_str(),
        ],
    );
    assert!(o.status.success(), "pdftoppm: {o:?}");
    let mut pages: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "png"))
        .collect();
    pages.sort();
    pages
}

/// RGB pixels and size of a PNG.
fn png_rgb(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
    let mut dec = png::Decoder::new(std::io::Cursor::new(bytes));
    dec.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut r = dec.read_info().unwrap();
    let mut buf = vec![0; r.output_buffer_size().unwrap()];
    let info = r.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    let rgb = match info.color_type {
        png::ColorType::Rgb => buf,
        png::ColorType::Rgba => buf.chunks(4).flat_map(|p| [p[0], p[1], p[2]]).collect(),
        png::ColorType::Grayscale => buf.iter().flat_map(|&g| [g, g, g]).collect(),
        png::ColorType::GrayscaleAlpha => buf.chunks(2).flat_map(|p| [p[0], p[0], p[0]]).collect(),
        other => panic!("PNG colour type {other:?}"),
    };
    (info.width, info.height, rgb)
}

/// Pixels that differ by more than a faint anti-aliasing shade.
fn differing_pixels(a: &[u8], b: &[u8]) -> usize {
    a.chunks(3)
        .zip(b.chunks(3))
        .filter(|(p, q)| p.iter().zip(*q).any(|(x, y)| x.abs_diff(*y) > 48))
        .count()
}

#[test]
fn pdf_is_pdf_a_deterministic_and_matches_the_golden_pages() {
    let d = full_report();
    let pdf = report::render_pdf(&d);
    assert!(pdf.starts_with(b"%PDF-1.7"), "PDF/A-3 is PDF 1.7");
    assert_eq!(pdf, report::render_pdf(&d), "the same data, the same bytes");
    assert_eq!(pdf, report::render(&d, Format::Pdf));
    let text = String::from_utf8_lossy(&pdf);
    // The PDF/A-3 claim, the embedded fonts, the attached data; nothing
    // that depends on the clock.
    assert!(
        text.contains("<pdfaid:part>3</pdfaid:part>"),
        "XMP claims PDF/A-3"
    );
    assert!(text.contains("<pdfaid:conformance>U</pdfaid:conformance>"));
    assert!(text.contains("/FontFile2"), "fonts embedded");
    assert!(
        text.contains("/AFRelationship/Data"),
        "the JSON form attached as data"
    );
    // The only date: the moment described (2026-01-01 06:00, the arrival).
    assert_eq!(
        text.matches("(D:20260101060000Z)").count(),
        3,
        "created, modified, the attachment"
    );
    assert_eq!(text.matches("(D:").count(), 3, "no other date");
    assert!(text.contains(&report::sha256(&d)));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("report.pdf");
    std::fs::write(&file, &pdf).unwrap();
    let o = tool("qpdf", &["--check".as_ref(), file.as_os_str()]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "qpdf --check: {o:?}");
    assert!(out.contains("No syntax or stream encoding errors"), "{out}");

    // The text a reader can search and copy (PDF/A level U): the same facts
    // as the HTML form.
    let o = tool("pdftotext", &[file.as_os_str(), "-".as_ref()]);
    // Lines joined: a phrase may wrap.
    let words = String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    for want in [
        "Arrival report",
        "FR <7> & co",
        "W1234 26 000007 00 B",
        "S1194",
        "Courier B & Co",
        "9.0 °C",
        "CAL-7",
        "expired",
        "IEC 60751 class A",
        "revised 2026-01-01 02:10 UTC by later data",
        "withdrawn 2026-01-01 06:05 UTC: the logger's dump",
        "QA assessment",
        "Electronically signed by Dr. Mei Lee (qa.lee)",
        "Meaning of this signature: quarantined.",
        "(this report's content hashes to it)",
        &report::sha256(&d),
    ] {
        assert!(
            words.contains(want),
            "{want:?} not in the PDF's text:\n{words}"
        );
    }

    // The pages as pdftoppm draws them, against the reviewed images.
    let golden = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let pages = pdf_pages(&pdf, 80, dir.path());
    assert!(!pages.is_empty());
    let bless = std::env::var_os("COLDCHAIN_BLESS").is_some();
    for (i, page) in pages.iter().enumerate() {
        let name = format!("report_fridge.pdf-{}.png", i + 1);
        let got = std::fs::read(page).unwrap();
        if bless {
            std::fs::write(golden.join(&name), &got).unwrap();
            continue;
        }
        let want = std::fs::read(golden.join(&name)).unwrap_or_else(|e| {
            panic!("{name}: {e}; run with COLDCHAIN_BLESS=1 to create it, then review it")
        });
        let (w1, h1, a) = png_rgb(&got);
        let (w2, h2, b) = png_rgb(&want);
        assert_eq!((w1, h1), (w2, h2), "{name}: page size");
        let n = differing_pixels(&a, &b);
        // The PDF is deterministic and so is pdftoppm: the same poppler draws
        // the same pixels. Room for a few anti-aliased pixels of another
        // poppler build, not for one changed character (tens of pixels).
        let keep = std::env::temp_dir().join(format!("coldchain-{name}"));
        std::fs::write(&keep, &got).unwrap();
        assert!(
            n <= 8,
            "{name}: {n} pixels differ from the golden page (this render: {}); \
             if deliberate, rerun with COLDCHAIN_BLESS=1 and review the images",
            keep.display()
        );
    }
    if !bless {
        let extra = golden.join(format!("report_fridge.pdf-{}.png", pages.len() + 1));
        assert!(
            !extra.exists(),
            "fewer pages than the golden: {}",
            extra.display()
        );
    }
}

#[test]
fn pdf_verification_of_intact_and_tampered_copies() {
    let d = full_report();
    let pdf = report::render_pdf(&d);
    let v = report::verify(&pdf, &d).unwrap();
    assert!(v.ok, "{v:?}");
    assert_eq!(v.format, Format::Pdf);
    assert_eq!(v.shipment, "FR <7> & co");
    assert_eq!(v.as_of_ms, d.as_of_ms);
    assert_eq!(v.sha256_in_file, report::sha256(&d));

    // A figure changed in the attached data (same length, hash left alone).
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
    let at = find(&pdf, b"\"max_milli_c\": 9000").expect("the attached data is readable");
    let mut forged = pdf.clone();
    forged[at + 15] = b'7';
    let v = report::verify(&forged, &d).unwrap();
    assert!(
        !v.ok && v.data_unchanged && v.file_intact == Some(false),
        "{v:?}"
    );

    // An edit appended as an incremental update (how PDF editors save).
    let mut appended = pdf.clone();
    appended.extend_from_slice(b"\n1 0 obj\n<< /Title (Accepted) >>\nendobj\n");
    let v = report::verify(&appended, &d).unwrap();
    assert!(!v.ok && v.file_intact == Some(false), "{v:?}");

    // A page edited: one byte of the first compressed content stream.
    let s = find(&pdf, b"stream\n").unwrap() + 7 + 20;
    let mut edited = pdf.clone();
    edited[s] ^= 0x01;
    let v = report::verify(&edited, &d).unwrap();
    assert!(!v.ok && v.file_intact == Some(false), "{v:?}");

    // The data changed since the copy was made: said so, by section.
    let mut now = d.clone();
    now.alerts[0].ack_by = Some("qa".into());
    let v = report::verify(&pdf, &now).unwrap();
    assert!(
        !v.ok && !v.data_unchanged && v.file_intact == Some(true),
        "{v:?}"
    );
    assert_eq!(v.changed_sections, ["alerts"]);

    // A PDF that is not a Coldchain report.
    let e = report::verify(b"%PDF-1.7\n%%EOF\n", &d).unwrap_err();
    assert!(e.to_string().contains("attached to the PDF"), "{e}");
}

/// The HTML form, golden: the journey's report as it is, and the closed one
/// with everything a report can show (a signature, an assessment, a
/// revision, a withdrawal, a calibration certificate, warming, no MKT), so
/// any change of its bytes is a reviewed diff. A saved HTML copy is checked
/// byte for byte against a re-rendering (`verify`'s `file_intact`): these
/// bytes are what copies in the field hold.
#[test]
fn golden_html() {
    use serde_json::json;
    let (_w, _s, d) = world_with_journey();
    check_golden("report_fridge.html", &report::render_html(&d));
    let (_w, d) = closed_journey();
    let mut v = serde_json::to_value(&d).unwrap();
    v["identity"]["product_code"] = json!("S1194 <b>");
    v["disposition"]["signature"] = json!({
        "full_name": "Quinn Q. \"Q\" Assessor", "user": "quinn", "signed_ms": T0 + 7 * H,
        "meaning": "quarantined", "report_sha256": report::content_sha256(&d),
    });
    let a = &mut v["alerts"][0];
    a["assessment"] = json!({"user": "quinn", "full_name": "Quinn <QA>", "comment": "no impact & fine", "at_ms": T0 + 6 * H});
    a["revisions"] = json!([{"at_ms": T0 + 2 * H, "was_message": "H1 <was>", "was_start_ms": T0, "was_fires_ms": T0 + H}]);
    a["withdrawn"] = json!({"at_ms": T0 + 3 * H, "reason": "late data & more"});
    a["ack_by"] = json!("Lou <L>");
    a["ack_comment"] = json!("called \"courier\"");
    a["ack_ms"] = json!(T0 + 2 * H);
    v["calibration"] = json!([{
        "device": DEV, "channel": 0, "certificate": "CAL <1>", "date_ms": T0 - 100 * H,
        "due_ms": T0 - H, "expired": true, "correction": "+0.1 °C & more",
        "uncertainty_milli_c": 50, "class": "A", "tolerance_at_min_milli_c": 160,
        "tolerance_at_max_milli_c": 190, "measured_min_milli_c": 4900, "measured_max_milli_c": 9400,
    }]);
    v["viability"]["warming"] = json!({
        "limit": "-150.0", "events": 1, "time_above_ms": 20 * MIN,
        "peak_milli_c": -140_000, "first_ms": T0 + H, "above_now": false,
    });
    v["temperature"]["mkt"] = json!(null);
    v["temperature"]["mkt_note"] = json!("too short <for> MKT");
    let rich: ReportData = serde_json::from_value(v).unwrap();
    check_golden("report_closed.html", &report::render_html(&rich));
}

/// An HTML copy saved before the report was rendered with maud has `'` in
/// text as `&#39;` (maud writes it as it is): it still verifies as intact,
/// and an edited one still does not.
#[test]
fn an_html_copy_with_the_old_apostrophe_escape_still_verifies() {
    let (_w, _s, d) = world_with_journey();
    let mut v = serde_json::to_value(&d).unwrap();
    v["identity"]["product"] = serde_json::json!("Dr O'Neil's CAR-T");
    let d: ReportData = serde_json::from_value(v).unwrap();
    let html = report::render_html(&d);
    assert!(html.contains("<strong>FR &lt;7&gt; &amp; co</strong> · Dr O'Neil's CAR-T"));
    assert!(!html.contains("&#39;"));
    let (page, data) = html
        .split_once("<script type=\"application/json\"")
        .unwrap();
    let old = format!(
        "{}<script type=\"application/json\"{data}",
        page.replace('\'', "&#39;")
    );
    assert!(old.contains("Dr O&#39;Neil&#39;s CAR-T"));
    let r = report::verify(&old, &d).unwrap();
    assert!(r.ok && r.file_intact == Some(true), "{r:?}");
    let edited = old.replace("9.5 °C", "7.5 °C");
    assert_ne!(edited, old);
    let r = report::verify(&edited, &d).unwrap();
    assert_eq!(r.file_intact, Some(false), "{r:?}");
}
