//! The arrival report through the real daemon: a fridge shipment with one
//! excursion arrives; its HTML, CSV, JSON and PDF/A forms state the same
//! figures and carry the same SHA-256; POST /api/v1/reports/verify and
//! `coldchain report --verify` accept each intact copy and refuse a tampered
//! one, and tell when the daemon's data has changed since a copy was made
//! (an acknowledgement added). The PDF comes the same from the API and the
//! CLI, twice byte for byte, passes qpdf --check and renders with pdftoppm
//! (Debian's qpdf and poppler-utils; tests/run.sh installs them).

use coldchain_tests::*;
use serde_json::{Value, json};

const MIN: i64 = 60_000;
const H: i64 = 3_600_000;

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

fn get_text(d: &Daemon, path: &str) -> (u16, String, String) {
    let mut r = agent()
        .get(&format!("http://127.0.0.1:{}{path}", d.http_port))
        .call()
        .unwrap();
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (
        r.status().as_u16(),
        ct,
        r.body_mut().read_to_string().unwrap(),
    )
}

fn get_bytes(d: &Daemon, path: &str) -> (u16, String, Vec<u8>) {
    let mut r = agent()
        .get(&format!("http://127.0.0.1:{}{path}", d.http_port))
        .call()
        .unwrap();
    let ct = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (r.status().as_u16(), ct, r.body_mut().read_to_vec().unwrap())
}

/// Runs qpdf or a poppler-utils tool on a file.
fn tool(cmd: &str, args: &[&std::ffi::OsStr]) -> std::process::Output {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("{cmd}: {e} (install qpdf and poppler-utils: tests/run.sh does)")
        })
}

fn verify(d: &Daemon, file: impl AsRef<[u8]>, token: Option<&str>) -> (u16, Value) {
    let mut req = agent().post(&format!(
        "http://127.0.0.1:{}/api/v1/reports/verify",
        d.http_port
    ));
    if let Some(t) = token {
        req = req.header("Authorization", &format!("Bearer {t}"));
    }
    let mut r = req.send(file.as_ref()).unwrap();
    let status = r.status().as_u16();
    let text = r.body_mut().read_to_string().unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn cli(d: &Daemon, args: &[&str]) -> std::process::Output {
    std::process::Command::new(bin("coldchain"))
        .args(args)
        .args([
            "--api",
            &format!("http://127.0.0.1:{}", d.http_port),
            "--token",
            TEST_TOKEN,
        ])
        .output()
        .expect("run coldchain")
}

fn post(d: &Daemon, path: &str, body: Value) -> Value {
    let (status, v) = http_post(d.http_port, path, Some(TEST_TOKEN), &body);
    assert!((200..300).contains(&status), "POST {path} -> {status}: {v}");
    v
}

#[test]
fn report_forms_agree_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&dir.path().join("broker"));
    let opts = DaemonOpts {
        http: format!("token = \"{TEST_TOKEN}\""),
        extra: "[alerts]\nescalate_after_s = 3600\n".into(),
        ..DaemonOpts::default()
    };
    let daemon = Daemon::start_with(
        &dir.path().join("daemon"),
        broker.port,
        &[DeviceCfg::new("fridge-r1")],
        &opts,
    );
    let t0 = now_ms() - 4 * H;

    // ISBT 128: a DIN with a wrong check character, or too short, is refused
    // with the reason, by the API and by the CLI; nothing is created.
    let create = |din: &str| {
        http_post(
            daemon.http_port,
            "/api/v1/shipments",
            Some(TEST_TOKEN),
            &json!({
                "by": "dispatcher anna", "id": "BAD DIN", "product": "PBSC", "din": din,
                "profile": "fridge", "watch": [{"device": "fridge-r1", "channel": 0}],
                "origin": "A", "destination": "B",
            }),
        )
    };
    let (s, v) = create("W1234 26 000042 00 6");
    assert_eq!(s, 400, "{v}");
    let msg = v["error"].as_str().unwrap_or_default();
    assert!(
        msg.contains("field din") && msg.contains("check character '6'") && msg.contains("'5'"),
        "{v}"
    );
    let (s, v) = create("W1234 26 00004");
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or_default()
            .contains("expected 16 characters"),
        "{v}"
    );
    let o = cli(
        &daemon,
        &[
            "shipment",
            "create",
            "--id",
            "BAD DIN",
            "--product",
            "PBSC",
            "--profile",
            "fridge",
            "--device",
            "fridge-r1",
            "--origin",
            "A",
            "--destination",
            "B",
            "--din",
            "W1234 26 000042 00 5",
            "--product-code",
            "S11",
            "--by",
            "anna",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("field product_code"),
        "{o:?}"
    );
    let (s, _, _) = get_text(&daemon, "/api/v1/shipments/BAD%20DIN");
    assert_eq!(s, 404, "a refused shipment is not created");

    post(
        &daemon,
        "/api/v1/shipments",
        json!({
            "by": "dispatcher anna", "id": "REP 1", "product": "PBSC, 1 bag",
            "din": "W1234 26 000042 00 5", "product_code": "S1194", "profile": "fridge",
            "watch": [{"device": "fridge-r1", "channel": 0}],
            "origin": "Apheresis unit", "destination": "Cell lab",
            "departure_ms": t0, "window_h": 48.0, "eta_ms": t0 + 3 * H,
        }),
    );
    post(
        &daemon,
        "/api/v1/shipments/REP%201/handoff",
        json!({"by": "driver", "to": "courier b", "location": "hub", "at_ms": t0 + H}),
    );
    let rs: Vec<(i64, Option<i32>)> = (0..150)
        .map(|i| {
            (
                t0 + i * MIN,
                Some(if (90..130).contains(&i) { 9_500 } else { 5_000 }),
            )
        })
        .collect();
    let frames: Vec<String> = rs
        .chunks(12)
        .enumerate()
        .map(|(i, c)| json_frame("fridge-r1", 1, i as u32, c))
        .collect();
    mosquitto_pub_lines(broker.port, "coldchain/v1/dev/fridge-r1/up/json", &frames).unwrap();
    let alert = wait_for(std::time::Duration::from_secs(60), "the H1 alert", || {
        daemon
            .get("/api/v1/alerts?shipment=REP%201")
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|x| x["condition"]["kind"]["zone"] == "H1")
                    .cloned()
            })
    });
    post(
        &daemon,
        "/api/v1/shipments/REP%201/arrive",
        json!({"by": "lab", "at_ms": t0 + 150 * MIN}),
    );

    let base = "/api/v1/shipments/REP%201/report";
    let (s, ct, json_text) = get_text(&daemon, &format!("{base}?format=json"));
    assert_eq!(s, 200, "{json_text}");
    assert!(ct.starts_with("application/json"));
    let doc: Value = serde_json::from_str(&json_text).unwrap();
    let data = &doc["data"];
    let sha = doc["sha256"].as_str().unwrap().to_string();
    assert_eq!(data["as_of_ms"], t0 + 150 * MIN, "as of the arrival");
    assert_eq!(data["identity"]["din"], "W1234 26 000042 00 5");
    assert_eq!(data["identity"]["product_code"], "S1194");
    assert_eq!(data["journey"]["handoffs"][0]["to"], "courier b");
    let t = &data["temperature"];
    assert_eq!(t["min_milli_c"], 5_000);
    assert_eq!(t["max_milli_c"], 9_500);
    let h1: Vec<&Value> = t["excursions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["zone"] == "H1")
        .collect();
    assert_eq!(h1.len(), 1, "{t}");
    assert_eq!(h1[0]["start_ms"], t0 + 90 * MIN);
    assert_eq!(h1[0]["end_ms"], t0 + 130 * MIN);
    assert_eq!(h1[0]["peak_milli_c"], 9_500);
    assert_eq!(h1[0]["beyond_ms"], 40 * MIN);
    assert!(t["mkt"]["whole_milli_c"].as_i64().unwrap() > 5_000);
    assert_eq!(data["data_health"]["readings"], 150);
    assert_eq!(data["data_health"]["devices"][0]["frames_verified"], 13);
    assert!(
        data["viability"]["window"]["remaining_ms"]
            .as_i64()
            .unwrap()
            > 40 * H
    );
    assert_eq!(data["alerts"][0]["id"], alert["id"]);

    let (s, ct, html) = get_text(&daemon, &format!("{base}?format=html"));
    assert_eq!(s, 200);
    assert!(ct.starts_with("text/html"));
    assert!(html.contains(&sha) && html.contains("9.5 °C") && html.contains("courier b"));
    assert!(html.contains("<svg") && html.contains("class=\"excursion\""));
    let (s, ct, csv) = get_text(&daemon, &format!("{base}?format=csv"));
    assert_eq!(s, 200);
    assert!(ct.starts_with("text/csv"));
    assert!(csv.contains(&format!("report,sha256,{sha}")));
    assert!(csv.contains("excursion,H1,warning,"));
    assert_eq!(
        csv.lines().filter(|l| l.starts_with("reading,")).count(),
        150
    );

    // Every intact copy verifies; the verify endpoint is a POST, so it needs the token.
    for file in [&json_text, &html, &csv] {
        let (s, v) = verify(&daemon, file, Some(TEST_TOKEN));
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["ok"], true, "{v}");
        assert_eq!(v["sha256_now"], sha.as_str());
    }
    assert_eq!(verify(&daemon, &html, None).0, 401);

    // A tampered copy does not.
    let forged = html.replace("9.5 °C", "7.5 °C");
    let (s, v) = verify(&daemon, &forged, Some(TEST_TOKEN));
    assert_eq!(s, 200);
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["file_intact"], false, "{v}");
    assert_eq!(v["data_unchanged"], true, "{v}");
    let (s, v) = verify(&daemon, "not a report", Some(TEST_TOKEN));
    assert_eq!(s, 400, "{v}");

    // The PDF/A form: the API's and the CLI's are the same bytes, and the
    // same again when asked twice (deterministic).
    let (s, ct, pdf) = get_bytes(&daemon, &format!("{base}?format=pdf"));
    assert_eq!(s, 200);
    assert_eq!(ct, "application/pdf");
    assert!(pdf.starts_with(b"%PDF-1.7"));
    assert_eq!(get_bytes(&daemon, &format!("{base}?format=pdf")).2, pdf);
    // The dashboard's shipment page links it.
    let (s, _, page) = get_text(&daemon, "/shipments/REP%201");
    assert_eq!(s, 200);
    assert!(
        page.contains(&format!("href=\"{base}?format=pdf\"")),
        "no PDF link on the shipment page: {page}"
    );
    let pdf_file = dir.path().join("REP 1.pdf");
    let o = cli(
        &daemon,
        &[
            "report",
            "REP 1",
            "--format",
            "pdf",
            "--out",
            pdf_file.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{o:?}");
    assert_eq!(
        std::fs::read(&pdf_file).unwrap(),
        pdf,
        "the CLI writes the API's file"
    );
    let o = tool("qpdf", &["--check".as_ref(), pdf_file.as_os_str()]);
    assert!(o.status.success(), "qpdf --check: {o:?}");
    let o = tool("pdftotext", &[pdf_file.as_os_str(), "-".as_ref()]);
    let words = String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    for want in [
        sha.as_str(),
        "9.5 °C",
        "courier b",
        "W1234 26 000042 00 5",
        "S1194",
        "40 min beyond the limits",
    ] {
        assert!(
            words.contains(want),
            "{want:?} not in the PDF's text: {words}"
        );
    }
    let pages = dir.path().join("page");
    let o = tool(
        "pdftoppm",
        &[
            "-png".as_ref(),
            "-r".as_ref(),
            "30".as_ref(),
            pdf_file.as_os_str(),
            pages.as_os_str(),
        ],
    );
    assert!(o.status.success(), "pdftoppm: {o:?}");
    assert!(
        dir.path().join("page-1.png").exists(),
        "pdftoppm drew page 1"
    );
    let (s, v) = verify(&daemon, &pdf, Some(TEST_TOKEN));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["format"], "pdf", "{v}");
    assert_eq!(v["sha256_now"], sha.as_str());
    let o = cli(&daemon, &["report", "--verify", pdf_file.to_str().unwrap()]);
    assert!(o.status.success(), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stdout).contains("matches the daemon's data"));

    // A tampered PDF is refused: the peak in its attached data edited (the
    // hash beside it left alone), and a copy re-saved by another program.
    let needle = b"\"max_milli_c\": 9500,";
    let at = pdf
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the attached data");
    let mut forged = pdf.clone();
    forged[at + 15] = b'7';
    let forged_file = dir.path().join("forged.pdf");
    std::fs::write(&forged_file, &forged).unwrap();
    let o = cli(
        &daemon,
        &["report", "--verify", forged_file.to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(4), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("DOES NOT MATCH"),
        "{o:?}"
    );
    let (_, v) = verify(&daemon, &forged, Some(TEST_TOKEN));
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["file_intact"], false, "{v}");
    // Re-saved by another program (qpdf, linearised, streams kept as they
    // were): the attachment still reads, the file is not the daemon's.
    let resaved = dir.path().join("resaved.pdf");
    let o = tool(
        "qpdf",
        &[
            "--linearize".as_ref(),
            "--stream-data=preserve".as_ref(),
            pdf_file.as_os_str(),
            resaved.as_os_str(),
        ],
    );
    assert!(o.status.success(), "{o:?}");
    let (s, v) = verify(&daemon, std::fs::read(&resaved).unwrap(), Some(TEST_TOKEN));
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(v["data_unchanged"], true, "{v}");
    assert_eq!(
        v["file_intact"], false,
        "not the file the daemon issued: {v}"
    );
    // Re-saved with its streams compressed: the attachment can no longer be
    // read, and the answer says so.
    let o = tool(
        "qpdf",
        &[
            "--compress-streams=y".as_ref(),
            pdf_file.as_os_str(),
            resaved.as_os_str(),
        ],
    );
    assert!(o.status.success(), "{o:?}");
    let (s, v) = verify(&daemon, std::fs::read(&resaved).unwrap(), Some(TEST_TOKEN));
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or_default()
            .contains("re-saved by another program"),
        "{v}"
    );

    // The record changes (the alert is acknowledged): old copies no longer
    // match what the daemon has, and say where.
    post(
        &daemon,
        &format!("/api/v1/alerts/{}/ack", alert["id"]),
        json!({"by": "qa", "comment": "box was open 40 min, product checked"}),
    );
    for file in [json_text.as_bytes(), &pdf] {
        let (_, v) = verify(&daemon, file, Some(TEST_TOKEN));
        assert_eq!(v["ok"], false, "{v}");
        assert_eq!(v["data_unchanged"], false);
        assert_eq!(v["file_intact"], true);
        assert!(
            v["changed_sections"]
                .as_array()
                .unwrap()
                .contains(&json!("alerts")),
            "{v}"
        );
    }
    let (_, _, json2) = get_text(&daemon, &format!("{base}?format=json"));
    let doc2: Value = serde_json::from_str(&json2).unwrap();
    assert_ne!(doc2["sha256"], doc["sha256"]);
    // The authenticated identity (the legacy shared token), not the typed name.
    assert_eq!(
        doc2["data"]["alerts"][0]["ack_by"],
        "shared API token (http.token, legacy)"
    );

    // EPCIS 2.0: the same facts as JSON-LD events (the schema and the golden
    // document are checked in daemon/tests/epcis.rs; here the route and CLI).
    let (s, ct, text) = get_text(&daemon, "/api/v1/shipments/REP%201/epcis");
    assert_eq!(s, 200, "{text}");
    assert_eq!(ct, "application/ld+json");
    let epcis: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(epcis["type"], "EPCISDocument");
    let events = epcis["epcisBody"]["eventList"].as_array().unwrap();
    let steps: Vec<&str> = events
        .iter()
        .filter_map(|e| e["bizStep"].as_str())
        .collect();
    assert_eq!(steps.first(), Some(&"departing"), "{steps:?}");
    assert_eq!(steps.last(), Some(&"arriving"), "{steps:?}");
    assert!(steps.contains(&"transporting"), "the hand-off: {steps:?}");
    let alarms: Vec<&Value> = events
        .iter()
        .filter(|e| {
            let r = &e["sensorElementList"][0]["sensorReport"][0];
            r["exception"] == "ALARM_CONDITION" && r["coldchain:zone"] == "H1"
        })
        .collect();
    assert_eq!(alarms.len(), 1, "the H1 excursion");
    assert_eq!(
        alarms[0]["sensorElementList"][0]["sensorReport"][0]["value"],
        9.5
    );
    assert!(
        events
            .iter()
            .all(|e| e["coldchain:din"] == "W1234 26 000042 00 5"
                && e["coldchain:productCode"] == "S1194")
    );
    let o = cli(&daemon, &["epcis", "REP 1"]);
    assert!(o.status.success(), "{o:?}");
    let from_cli: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(from_cli, epcis, "the CLI writes the API's document");
    let (s, _, _) = get_text(&daemon, "/api/v1/shipments/NOPE/epcis");
    assert_eq!(s, 404);

    let (s, _, _) = get_text(&daemon, &format!("{base}?format=docx"));
    assert_eq!(s, 400);
    let (s, _, _) = get_text(&daemon, "/api/v1/shipments/NOPE/report");
    assert_eq!(s, 404);
}
