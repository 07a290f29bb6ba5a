//! The live dashboard in a real browser: Debian's chromium driven by
//! playwright-core (tests/web/dashboard.mjs; tests/run.sh installs both).
//! Broker and daemon are real; a fridge shipment warms above 8 °C and raises
//! an H1 alert; the dashboard lists it first, its chart draws every reading,
//! the alert is acknowledged through the page's button by a logistics person
//! who logged in (session cookie, nothing in localStorage), and the API then
//! shows it acknowledged under their full name. Markup in shipment ids,
//! products, names and comments shows as text. Screenshots, desktop and phone,
//! are kept in target/screenshots/.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use coldchain_tests::*;
use serde_json::{Value, json};

const MIN: i64 = 60_000;
const H: i64 = 3_600_000;

fn post(d: &Daemon, path: &str, body: Value) -> Value {
    let (status, v) = http_post(d.http_port, path, Some(TEST_TOKEN), &body);
    assert!((200..300).contains(&status), "POST {path} -> {status}: {v}");
    v
}

fn shipment(id: &str, product: &str, device: &str, departure_ms: i64) -> Value {
    json!({
        "by": "dispatcher anna",
        "id": id,
        "product": product,
        "profile": "fridge",
        "watch": [{"device": device, "channel": 0}],
        "origin": "Apheresis unit",
        "destination": "Cell lab",
        "departure_ms": departure_ms,
        "window_h": 48.0,
        "eta_ms": departure_ms + 8 * H,
    })
}

/// Where screenshots go: `<workspace>/target/screenshots/`.
pub fn screenshot_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    std::fs::create_dir_all(&d).expect("create target/screenshots");
    d.canonicalize().expect("screenshot dir")
}

/// Checks that the browser and the driver are installed, saying how to get them.
pub fn browser_ready() -> (PathBuf, PathBuf) {
    let chromium = which("chromium").unwrap_or_else(|| {
        panic!("chromium not installed: run tests/run.sh, or apt-get install chromium")
    });
    let web = Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    assert!(
        web.join("node_modules/playwright-core").is_dir(),
        "playwright-core missing: run tests/run.sh, or (cd tests/web && npm ci)"
    );
    (chromium, web)
}

#[test]
fn dashboard_lists_charts_and_acknowledges_in_chromium() {
    let (chromium, web) = browser_ready();
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
        &[DeviceCfg::new("fridge-d1"), DeviceCfg::new("fridge-d2")],
        &opts,
    );
    let t0 = now_ms() - 3 * H;
    // A quiet shipment first, so the list order is the risk order, not creation order.
    post(
        &daemon,
        "/api/v1/shipments",
        shipment("AA-QUIET", "PBSC, 1 bag", "fridge-d2", t0),
    );
    let xss_id = "X<img src=x onerror=window.__xss=1>";
    post(
        &daemon,
        "/api/v1/shipments",
        shipment(xss_id, "<script>window.__xss=1</script>", "fridge-d2", t0),
    );
    post(
        &daemon,
        "/api/v1/shipments",
        shipment("FR-DASH", "CAR-T, 2 bags", "fridge-d1", t0),
    );

    // Every minute for 150 min: 5 °C, 9.5 °C from 90 to 130 min (box left open).
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
        .map(|(i, c)| json_frame("fridge-d1", 1, i as u32, c))
        .collect();
    mosquitto_pub_lines(broker.port, "coldchain/v1/dev/fridge-d1/up/json", &frames).unwrap();
    let alert = wait_for(Duration::from_secs(60), "the H1 alert", || {
        daemon
            .get("/api/v1/alerts?shipment=FR-DASH")
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|x| x["condition"]["kind"]["zone"] == "H1")
                    .cloned()
            })
    });
    let alert_id = alert["id"].as_u64().unwrap();
    assert_eq!(alert["state"], "open");
    let show = daemon.get("/api/v1/shipments/FR-DASH");
    let readings = show["evaluation"]["readings"].as_u64().unwrap();
    assert_eq!(readings, 150);

    // A logistics person, made by the admin identity of the legacy token;
    // their full name carries markup.
    post(
        &daemon,
        "/api/v1/users",
        json!({"name": "ben", "full_name": "nurse <b>ben</b>", "role": "logistics", "password": "ben's long password"}),
    );
    let shots = screenshot_dir();
    let out = Command::new("node")
        .arg(web.join("dashboard.mjs"))
        .current_dir(&web)
        .env("BASE", format!("http://127.0.0.1:{}", daemon.http_port))
        .env("SHIPMENT", "FR-DASH")
        .env("ALERT", alert_id.to_string())
        .env("XSS_SHIPMENT", xss_id)
        .env("USER", "ben")
        .env("PASSWORD", "ben's long password")
        .env("OUT", &shots)
        .env("CHROMIUM", &chromium)
        .output()
        .expect("run node tests/web/dashboard.mjs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "browser run failed: {}\nstdout: {stdout}\nstderr: {}\ndaemon log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        daemon.logs()
    );
    let r: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("driver output {stdout:?}: {e}"));

    // The list: the shipment with an unacknowledged alert comes first.
    let rows: Vec<&str> = r["list_rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(rows.len(), 3, "{r}");
    assert_eq!(rows[0], "FR-DASH", "riskiest first: {rows:?}");
    assert!(rows.contains(&xss_id), "the id is shown as text: {rows:?}");
    assert!(
        r["list_text"]
            .as_str()
            .unwrap()
            .contains("<script>window.__xss=1</script>")
    );

    // The chart draws every reading.
    assert_eq!(r["chart"]["data_readings"], 150, "{r}");
    assert_eq!(r["chart"]["polyline_points"], 150, "{r}");
    assert_eq!(r["chart"]["data_faults"], 0);
    assert!(r["chart"]["zone_bands"].as_u64().unwrap() >= 3, "{r}");
    assert!(r["chart"]["excursions"].as_u64().unwrap() >= 1, "{r}");
    assert!(r["gauge"].as_str().is_some(), "viability gauge: {r}");

    // The acknowledgement went through the page.
    assert_eq!(r["alert_state_before"], "open");
    assert_eq!(
        r["ack_buttons_anonymous"], 0,
        "nothing offered before login: {r}"
    );
    assert_eq!(r["login_asked"], true);
    assert_eq!(
        r["local_storage_keys"],
        json!([]),
        "no credential kept: {r}"
    );
    assert!(
        r["who"].as_str().unwrap().contains("nurse <b>ben</b>"),
        "the name is shown as text: {r}"
    );
    assert!(
        r["alert_state_after"] == "acknowledged" || r["alert_state_after"] == "resolved",
        "{r}"
    );
    assert!(
        r["ack_text"]
            .as_str()
            .unwrap()
            .contains("<script>window.__xss=1</script>"),
        "the comment is shown as text: {r}"
    );
    let a = daemon.get("/api/v1/alerts?shipment=FR-DASH");
    let acked = a
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"].as_u64() == Some(alert_id))
        .unwrap();
    assert_ne!(acked["state"], "open", "{acked}");
    assert_eq!(acked["ack"]["by"], "nurse <b>ben</b>");
    assert_eq!(
        acked["ack"]["comment"],
        "lid closed <script>window.__xss=1</script>"
    );

    // No injected script ran; the markup-laden id is a title, not an element.
    assert_eq!(r["xss_fired"], false, "{r}");
    assert_eq!(r["xss_title"], xss_id);
    assert!(
        r["page_errors"].as_array().unwrap().is_empty(),
        "page errors: {r}"
    );

    // Readable on a phone: nothing wider than the screen.
    assert!(r["phone_list_overflow_px"].as_i64().unwrap() <= 0, "{r}");
    assert!(
        r["phone_shipment_overflow_px"].as_i64().unwrap() <= 0,
        "{r}"
    );
    for f in [
        "list-desktop.png",
        "shipment-desktop.png",
        "ack-dialog-desktop.png",
        "shipment-acknowledged-desktop.png",
        "list-phone.png",
        "shipment-phone.png",
    ] {
        let p = shots.join(f);
        assert!(
            std::fs::metadata(&p)
                .map(|m| m.len() > 10_000)
                .unwrap_or(false),
            "screenshot {} missing or empty",
            p.display()
        );
    }
    drop(broker);
}

/// A daemon reachable from the network (bound to 0.0.0.0, plain HTTP
/// allowed explicitly) serves data only to a signed-in person: a phone's
/// browser gets a page without data that sends it to the login page, a wrong
/// password is refused (no session), the right one shows the list, and the
/// session (an HttpOnly, SameSite=Strict cookie, nothing in localStorage)
/// opens the next page's chart at once. Without a session nothing is shown.
#[test]
fn off_loopback_the_dashboard_asks_for_a_login_on_a_phone() {
    let (chromium, web) = browser_ready();
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&dir.path().join("broker"));
    let opts = DaemonOpts {
        http: format!("token = \"{TEST_TOKEN}\"\nallow_plain_http = true"),
        bind_all: true,
        ..DaemonOpts::default()
    };
    let daemon = Daemon::start_with(
        &dir.path().join("daemon"),
        broker.port,
        &[DeviceCfg::new("fridge-l1")],
        &opts,
    );
    let t0 = now_ms() - H;
    post(
        &daemon,
        "/api/v1/shipments",
        shipment("FR-LOCK", "CAR-T, 1 bag", "fridge-l1", t0),
    );
    post(
        &daemon,
        "/api/v1/users",
        json!({"name": "vera", "full_name": "Vera Viewer", "role": "viewer", "password": "vera's long password"}),
    );
    let rs: Vec<(i64, Option<i32>)> = (0..24).map(|i| (t0 + i * MIN, Some(5_000))).collect();
    let frames: Vec<String> = rs
        .chunks(12)
        .enumerate()
        .map(|(i, c)| json_frame("fridge-l1", 1, i as u32, c))
        .collect();
    mosquitto_pub_lines(broker.port, "coldchain/v1/dev/fridge-l1/up/json", &frames).unwrap();
    // Without a session the data stays out of reach: the page shell and the
    // fragment behind it.
    let page = ureq::get(&format!("http://127.0.0.1:{}/", daemon.http_port))
        .call()
        .unwrap()
        .body_mut()
        .read_to_string()
        .unwrap();
    assert!(page.contains("Sign in needed"), "{page}");
    assert!(!page.contains("FR-LOCK"), "{page}");
    let frag = ureq::get(&format!("http://127.0.0.1:{}/ui/list", daemon.http_port)).call();
    assert!(
        matches!(frag, Err(ureq::Error::StatusCode(401))),
        "{frag:?}"
    );
    wait_for(Duration::from_secs(60), "24 readings stored", || {
        let v = ureq::get(&format!(
            "http://127.0.0.1:{}/api/v1/shipments/FR-LOCK",
            daemon.http_port
        ))
        .header("Authorization", &format!("Bearer {TEST_TOKEN}"))
        .call()
        .ok()?
        .body_mut()
        .read_to_string()
        .ok()?;
        let v: Value = serde_json::from_str(&v).ok()?;
        (v["evaluation"]["readings"] == 24).then_some(())
    });

    let out = Command::new("node")
        .arg(web.join("locked.mjs"))
        .current_dir(&web)
        .env("BASE", format!("http://127.0.0.1:{}", daemon.http_port))
        .env("SHIPMENT", "FR-LOCK")
        .env("USER", "vera")
        .env("PASSWORD", "vera's long password")
        .env("OUT", screenshot_dir())
        .env("CHROMIUM", &chromium)
        .output()
        .expect("run node tests/web/locked.mjs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "browser run failed: {}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
    );
    let r: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("driver output {stdout:?}: {e}"));
    assert_eq!(r["first_status"], 200, "{r}");
    assert_eq!(r["rows_before"], 0, "{r}");
    assert!(
        !r["text_before"].as_str().unwrap().contains("FR-LOCK"),
        "{r}"
    );
    assert!(r["login_url"].as_str().unwrap().contains("/login"), "{r}");
    assert!(
        r["wrong_error"]
            .as_str()
            .unwrap()
            .contains("wrong user name or password"),
        "{r}"
    );
    assert_eq!(
        r["cookies_after_wrong"], 0,
        "no session after a wrong password: {r}"
    );
    assert_eq!(r["rows_after"], json!(["FR-LOCK"]), "{r}");
    assert_eq!(
        r["cookie"],
        json!([{"name": "coldchain_session", "httpOnly": true, "sameSite": "Strict"}]),
        "{r}"
    );
    assert_eq!(r["local_storage_keys"], json!([]), "{r}");
    assert_eq!(r["chart_readings"], 24, "{r}");
    assert_eq!(r["page_errors"], json!([]), "{r}");
}
