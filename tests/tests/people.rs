//! People, signatures and release, end to end through the real daemon over
//! HTTPS (a local certificate made with openssl, trusted by the test's
//! client and ignored by name in the browser), with headless Chromium for
//! the pages (tests/web/people.mjs).
//!
//! The first admin is made on the command line with the daemon stopped;
//! everyone else by that admin through the API. A viewer sees no
//! acknowledge button and the API refuses them (403); logistics
//! acknowledges with a comment; QA assesses the excursion and signs the
//! release with the password asked again (a wrong one refused and counted);
//! a release without the assessment is refused; lockout after three wrong
//! passwords, an admin's reset; a revoked token is refused; the audit trail
//! names each authenticated person and verifies; the signed report carries
//! the signature and the hash it covers. Screenshots in target/screenshots/.
//!
//! Also: a database written before accounts existed (a backup made with the
//! daemon of that time, tests/fixtures/audit-before-accounts.jsonl) opens,
//! its audit chain verifies, and its entries are shown as legacy typed names.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use coldchain_tests::*;
use serde_json::{Value, json};

const MIN: i64 = 60_000;
const H: i64 = 3_600_000;
const ADA_PW: &str = "ada admin password 1";
const VIC_PW: &str = "vic viewer password 1";
const LOU_PW: &str = "lou logistics password 1";
const QUINN_PW: &str = "quinn qa password 1";

fn screenshot_dir() -> PathBuf {
    let d = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    std::fs::create_dir_all(&d).expect("create target/screenshots");
    d.canonicalize().expect("screenshot dir")
}

fn browser_ready() -> (PathBuf, PathBuf) {
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

/// A local CA and the daemon's HTTPS certificate for 127.0.0.1 and
/// localhost, made by deploy/mint-device.sh as an installation makes them.
/// Returns (CA certificate, certificate, key).
fn make_cert(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let pki = dir.join("pki");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/mint-device.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("--init-pki")
        .arg(&pki)
        .args(["--https-name", "127.0.0.1,localhost"])
        .stdin(Stdio::null())
        .output()
        .expect("run mint-device.sh");
    assert!(
        out.status.success(),
        "mint-device.sh --init-pki: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        pki.join("ca.pem"),
        pki.join("https.pem"),
        pki.join("https.key"),
    )
}

/// An HTTPS client trusting only the test certificate; with a bearer token
/// or a session (cookie and CSRF token).
#[derive(Debug, Clone)]
struct Api {
    agent: ureq::Agent,
    base: String,
    bearer: Option<String>,
    cookie: Option<String>,
    csrf: Option<String>,
}

impl Api {
    fn new(port: u16, cert: &Path) -> Api {
        let pem = std::fs::read(cert).unwrap();
        let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
            .filter_map(|i| match i {
                Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                _ => None,
            })
            .collect();
        // A fresh connection per request: the daemon restarts in the test,
        // and a pooled connection to the process before would be dead.
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_idle_connections(0)
            .tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(certs)))
                    .build(),
            )
            .build()
            .into();
        Api {
            agent,
            base: format!("https://127.0.0.1:{port}"),
            bearer: None,
            cookie: None,
            csrf: None,
        }
    }

    fn with_token(&self, t: &str) -> Api {
        Api {
            bearer: Some(t.into()),
            cookie: None,
            csrf: None,
            ..self.clone()
        }
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        csrf: bool,
    ) -> (u16, Value, Option<String>) {
        let url = format!("{}{path}", self.base);
        let mut b = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(t) = &self.bearer {
            b = b.header("Authorization", format!("Bearer {t}"));
        }
        if let Some(c) = &self.cookie {
            b = b.header("Cookie", c);
        }
        if csrf && let Some(c) = &self.csrf {
            b = b.header("X-CSRF-Token", c);
        }
        let mut resp = match body {
            Some(v) => {
                let req = b
                    .header("Content-Type", "application/json")
                    .body(v.to_string())
                    .unwrap();
                self.agent.run(req)
            }
            None => self.agent.run(b.body(()).unwrap()),
        }
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = resp.status().as_u16();
        let set_cookie = resp
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
            set_cookie,
        )
    }

    fn get(&self, path: &str) -> (u16, Value) {
        let (s, v, _) = self.call("GET", path, None, true);
        (s, v)
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let (s, v, _) = self.call("POST", path, Some(body), true);
        (s, v)
    }

    fn ok_post(&self, path: &str, body: &Value) -> Value {
        let (s, v) = self.post(path, body);
        assert!((200..300).contains(&s), "POST {path} -> {s}: {v}");
        v
    }

    fn ok_get(&self, path: &str) -> Value {
        let (s, v) = self.get(path);
        assert_eq!(s, 200, "GET {path}: {v}");
        v
    }

    /// Logs in; returns the session (status and body on failure).
    fn login(&self, name: &str, pw: &str) -> Result<Api, (u16, Value)> {
        let (s, v, cookie) = self.call(
            "POST",
            "/api/v1/login",
            Some(&json!({"name": name, "password": pw})),
            false,
        );
        if s != 200 {
            return Err((s, v));
        }
        let cookie = cookie.expect("Set-Cookie on login");
        let attrs = cookie.to_ascii_lowercase();
        assert!(
            attrs.contains("httponly")
                && attrs.contains("samesite=strict")
                && attrs.contains("secure"),
            "session cookie attributes: {cookie}"
        );
        Ok(Api {
            bearer: None,
            cookie: Some(cookie.split(';').next().unwrap().to_string()),
            csrf: v["csrf"].as_str().map(str::to_string),
            ..self.clone()
        })
    }
}

fn metric(api: &Api, name: &str) -> f64 {
    let (_, v) = api.get("/metrics");
    let text = v.as_str().unwrap_or_default().to_string();
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|x| x.parse().ok())
        .unwrap_or_else(|| panic!("metric {name} not in /metrics:\n{text}"))
}

#[test]
fn people_sign_a_release_over_https() {
    let (chromium, web) = browser_ready();
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_cert(dir.path());
    let broker = Mosquitto::start(&dir.path().join("broker"));
    let opts = DaemonOpts {
        http: format!(
            "tls_cert = \"{}\"\ntls_key = \"{}\"\nanonymous_reads = false\nlockout_after = 3\n",
            cert.display(),
            key.display()
        ),
        extra: "[alerts]\nescalate_after_s = 3600\n".into(),
        ..DaemonOpts::default()
    };
    let mut daemon = Daemon::start_with(
        &dir.path().join("daemon"),
        broker.port,
        &[DeviceCfg::new("fridge-p1")],
        &opts,
    );
    let anon = Api::new(daemon.http_port, &ca);
    // Nothing without a login, not even reads.
    assert_eq!(anon.get("/api/v1/shipments").0, 401);

    // The first admin, on the gateway's command line, the daemon stopped;
    // the password from standard input, not the command line.
    daemon.stop();
    let mut add = Command::new(bin("coldchain"))
        .args([
            "user",
            "add",
            "ada",
            "--role",
            "admin",
            "--full-name",
            "Ada Admin",
            "--config",
        ])
        .arg(&daemon.config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(add.stdin.take().unwrap(), "{ADA_PW}").unwrap();
    let out = add.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "coldchain user add: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    daemon.restart();

    // Ada logs in; a session change without the CSRF token is refused.
    let ada = anon.login("ada", ADA_PW).expect("ada logs in");
    let (s, v, _) = ada.call(
        "POST",
        "/api/v1/tokens",
        Some(&json!({"label": "x"})),
        false,
    );
    assert_eq!(s, 403, "session change without CSRF token: {v}");
    let ada_t = anon.with_token(
        ada.ok_post("/api/v1/tokens", &json!({"label": "test script"}))["token"]
            .as_str()
            .unwrap(),
    );
    for (name, full, role, pw) in [
        ("vic", "Vic Viewer", "viewer", VIC_PW),
        ("lou", "Lou Logistics", "logistics", LOU_PW),
        ("quinn", "Quinn Q. Assessor", "qa", QUINN_PW),
    ] {
        let u = ada_t.ok_post(
            "/api/v1/users",
            &json!({"name": name, "full_name": full, "role": role, "password": pw}),
        );
        assert_eq!(u["role"], role);
        assert!(u.get("password_hash").is_none(), "{u}");
    }
    let token_of = |user: &str| {
        ada_t.ok_post("/api/v1/tokens", &json!({"label": "script", "user": user}))["token"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let lou_t = anon.with_token(&token_of("lou"));
    // Quinn gets her own first token on the command line: she logs in with
    // her password (standard input), over HTTPS with the local CA.
    let mut create = Command::new(bin("coldchain"))
        .args([
            "token",
            "create",
            "--label",
            "quinn's shell",
            "--login",
            "quinn",
            "--api",
        ])
        .arg(format!("https://127.0.0.1:{}", daemon.http_port))
        .arg("--ca-file")
        .arg(&ca)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(create.stdin.take().unwrap(), "{QUINN_PW}").unwrap();
    let out = create.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "coldchain token create --login: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let quinn_token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(quinn_token.starts_with("cct_"), "{quinn_token}");
    let quinn_t = anon.with_token(&quinn_token);
    assert_eq!(quinn_t.ok_get("/api/v1/me")["user"], "quinn");
    let vic_tok = ada_t.ok_post("/api/v1/tokens", &json!({"label": "kiosk", "user": "vic"}));
    let vic_t = anon.with_token(vic_tok["token"].as_str().unwrap());

    // A viewer may not create shipments; logistics may.
    let t0 = now_ms() - 3 * H;
    let ship = json!({
        "id": "FR-P", "product": "CAR-T, 2 bags", "profile": "fridge",
        "watch": [{"device": "fridge-p1", "channel": 0}],
        "origin": "Apheresis unit", "destination": "Cell lab",
        "departure_ms": t0, "window_h": 48.0, "eta_ms": t0 + 8 * H,
    });
    assert_eq!(vic_t.post("/api/v1/shipments", &ship).0, 403);
    lou_t.ok_post("/api/v1/shipments", &ship);

    // 5 °C, 9.5 °C from 90 to 130 min: an H1 excursion.
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
        .map(|(i, c)| json_frame("fridge-p1", 1, i as u32, c))
        .collect();
    mosquitto_pub_lines(broker.port, "coldchain/v1/dev/fridge-p1/up/json", &frames).unwrap();
    let alert = wait_for(Duration::from_secs(60), "the H1 alert", || {
        vic_t
            .get("/api/v1/alerts?shipment=FR-P")
            .1
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|x| x["condition"]["kind"]["zone"] == "H1")
                    .cloned()
            })
    });
    let alert_id = alert["id"].as_u64().unwrap();

    // The viewer's API acknowledgement: 403, naming the role.
    let (s, v) = vic_t.post(
        &format!("/api/v1/alerts/{alert_id}/ack"),
        &json!({"comment": "seen"}),
    );
    assert_eq!(s, 403, "{v}");
    assert!(v["error"].as_str().unwrap().contains("viewer"), "{v}");

    // A revoked token is refused.
    assert_eq!(vic_t.get("/api/v1/alerts").0, 200);
    ada_t.ok_post(
        &format!("/api/v1/tokens/{}/revoke", vic_tok["id"].as_str().unwrap()),
        &json!({}),
    );
    let (s, v) = vic_t.get("/api/v1/alerts");
    assert_eq!(s, 401, "revoked token: {v}");

    // Arrival; a release cannot be signed before QA assessed the excursion.
    lou_t.ok_post("/api/v1/shipments/FR-P/arrive", &json!({}));
    let (s, v) = quinn_t.post(
        "/api/v1/shipments/FR-P/close",
        &json!({"decision": "accepted", "comment": "ok", "password": QUINN_PW}),
    );
    assert_eq!(s, 409, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("QA assessment")
            && v["error"]
                .as_str()
                .unwrap()
                .contains(&format!("alert {alert_id}")),
        "{v}"
    );
    // Logistics may not sign, nor assess.
    assert_eq!(
        lou_t
            .post(
                &format!("/api/v1/alerts/{alert_id}/assess"),
                &json!({"comment": "fine"})
            )
            .0,
        403
    );

    // The pages, in Chromium, over HTTPS.
    let failures_before = metric(&ada_t, "coldchain_auth_password_failures_total");
    let shots = screenshot_dir();
    let out = Command::new("node")
        .arg(web.join("people.mjs"))
        .current_dir(&web)
        .env("BASE", format!("https://127.0.0.1:{}", daemon.http_port))
        .env("SHIPMENT", "FR-P")
        .env("ALERT", alert_id.to_string())
        .env("VIC_PW", VIC_PW)
        .env("LOU_PW", LOU_PW)
        .env("QUINN_PW", QUINN_PW)
        .env("OUT", &shots)
        .env("CHROMIUM", &chromium)
        .output()
        .expect("run node tests/web/people.mjs");
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

    // Before login the page sent the browser to /login.
    assert!(r["first_url"].as_str().unwrap().contains("/login"), "{r}");
    assert_eq!(
        r["local_storage_keys"],
        json!([]),
        "nothing in localStorage: {r}"
    );
    // The viewer: no button, and the API refuses the page's own request.
    assert_eq!(r["viewer_ack_buttons"], 0, "{r}");
    assert_eq!(r["viewer_ack_status"], 403, "{r}");
    // Logistics acknowledged through the page; no assess or sign button.
    assert_eq!(r["lou_ack_buttons"], 1, "{r}");
    assert_ne!(r["alert_state_after_ack"], "open", "{r}");
    assert_eq!(r["lou_assess_buttons"], 0, "{r}");
    assert_eq!(r["lou_sign_buttons"], 0, "{r}");
    // QA assessed and signed; the wrong password was refused first.
    assert!(
        r["wrong_password_error"]
            .as_str()
            .unwrap()
            .contains("wrong user name or password"),
        "{r}"
    );
    assert!(
        r["signed_text"]
            .as_str()
            .unwrap()
            .contains("Quinn Q. Assessor"),
        "{r}"
    );
    assert_eq!(r["page_errors"], json!([]), "{r}");
    let failures_after = metric(&ada_t, "coldchain_auth_password_failures_total");
    assert!(
        failures_after > failures_before,
        "the wrong signing password is counted: {failures_before} -> {failures_after}"
    );

    // The record.
    let sh = ada_t.ok_get("/api/v1/shipments/FR-P");
    let alerts = sh["alerts"].as_array().unwrap();
    let a = alerts.iter().find(|a| a["id"] == alert_id).unwrap();
    assert_eq!(a["ack"]["by"], "Lou Logistics", "{a}");
    assert_eq!(a["ack"]["comment"], "box closed, cooled again");
    let report = ada_t.ok_get("/api/v1/shipments/FR-P/report?format=json");
    let disp = &report["data"]["disposition"];
    assert_eq!(disp["decision"], "accepted", "{disp}");
    let sig = &disp["signature"];
    assert_eq!(sig["full_name"], "Quinn Q. Assessor", "{sig}");
    assert_eq!(sig["user"], "quinn");
    assert_eq!(sig["meaning"], "released for use");
    assert_eq!(
        sig["report_sha256"], r["signed_sha"],
        "the signature covers the report the signer was shown"
    );
    let assessed = report["data"]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"] == alert_id)
        .unwrap()["assessment"]
        .clone();
    assert_eq!(assessed["user"], "quinn", "{assessed}");
    let (_, html) = ada_t.get("/api/v1/shipments/FR-P/report?format=html");
    let html = html.as_str().unwrap();
    assert!(html.contains("Electronically signed by <strong>Quinn Q. Assessor</strong>"));
    assert!(html.contains(sig["report_sha256"].as_str().unwrap()));
    assert!(
        html.contains("this report's content hashes to it"),
        "{html}"
    );
    let (_, csv) = ada_t.get("/api/v1/shipments/FR-P/report?format=csv");
    assert!(
        csv.as_str()
            .unwrap()
            .contains("signature,Quinn Q. Assessor,quinn,")
    );
    std::fs::write(shots.join("people-signed-report.html"), html).unwrap();

    // Lockout: three wrong passwords; then the right one is refused too.
    let locked_before = metric(&ada_t, "coldchain_auth_lockouts_total");
    for i in 0..3 {
        let (s, v) = anon.login("vic", "not the password").unwrap_err();
        assert_eq!(s, 401, "{v}");
        if i == 2 {
            assert!(v["error"].as_str().unwrap().contains("locked"), "{v}");
        }
    }
    let (s, v) = anon.login("vic", VIC_PW).unwrap_err();
    assert!(
        s == 401 && v["error"].as_str().unwrap().contains("locked"),
        "{v}"
    );
    assert_eq!(
        metric(&ada_t, "coldchain_auth_lockouts_total"),
        locked_before + 1.0
    );
    // The admin's forced reset: a temporary password, a new one required.
    let reset = ada_t.ok_post("/api/v1/users/vic/reset", &json!({}));
    let temp = reset["temporary_password"].as_str().unwrap();
    let vic = anon.login("vic", temp).expect("the temporary password");
    let (s, v) = vic.get("/api/v1/shipments");
    assert_eq!(s, 403, "nothing but a new password first: {v}");
    // In the browser: asked for a new password, then logged in with it.
    let out = Command::new("node")
        .arg(web.join("people-reset.mjs"))
        .current_dir(&web)
        .env("BASE", format!("https://127.0.0.1:{}", daemon.http_port))
        .env("NAME", "vic")
        .env("TEMP_PW", temp)
        .env("NEW_PW", "vic's own new password")
        .env("OUT", &shots)
        .env("CHROMIUM", &chromium)
        .output()
        .expect("run node tests/web/people-reset.mjs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "browser run failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap();
    assert_eq!(r["asked_for_new_password"], true, "{r}");
    assert_eq!(r["rows"], 1, "{r}");
    assert_eq!(r["page_errors"], json!([]), "{r}");
    let vic = anon.login("vic", "vic's own new password").unwrap();
    assert_eq!(vic.get("/api/v1/shipments").0, 200);
    // Disabled: no login.
    ada_t.ok_post("/api/v1/users/vic/disable", &json!({}));
    assert!(anon.login("vic", "vic's own new password").is_err());

    // The audit trail names each authenticated person, and verifies.
    let trail = ada_t.ok_get("/api/v1/audit");
    let entries = trail.as_array().unwrap();
    let by = |action: &str| -> Vec<(String, String)> {
        entries
            .iter()
            .filter(|e| e["action"] == action)
            .map(|e| {
                (
                    e["user"]["id"].as_str().unwrap_or("-").to_string(),
                    e["user"]["full_name"].as_str().unwrap_or("-").to_string(),
                )
            })
            .collect()
    };
    assert_eq!(by("user.add")[0].0, "command-line");
    assert!(by("user.add").contains(&("ada".into(), "Ada Admin".into())));
    assert_eq!(
        by("shipment.create"),
        vec![("lou".into(), "Lou Logistics".into())]
    );
    assert_eq!(
        by("alert.ack"),
        vec![("lou".into(), "Lou Logistics".into())]
    );
    assert_eq!(
        by("alert.assess"),
        vec![("quinn".into(), "Quinn Q. Assessor".into())]
    );
    assert_eq!(
        by("shipment.close"),
        vec![("quinn".into(), "Quinn Q. Assessor".into())]
    );
    assert_eq!(by("token.revoke"), vec![("ada".into(), "Ada Admin".into())]);
    assert!(!by("user.lockout").is_empty());
    assert!(
        entries.iter().all(|e| e["identity"] != "legacy typed name"),
        "no typed names in a new trail"
    );
    let close = entries
        .iter()
        .find(|e| e["action"] == "shipment.close")
        .unwrap();
    assert_eq!(
        close["details"]["signature"]["report_sha256"],
        sig["report_sha256"]
    );
    let v = ada_t.ok_get("/api/v1/audit/verify");
    assert_eq!(v["ok"], true, "{v}");
    // And through the command line, over HTTPS with the local certificate.
    let out = Command::new(bin("coldchain"))
        .args(["audit", "verify", "--api"])
        .arg(format!("https://127.0.0.1:{}", daemon.http_port))
        .arg("--ca-file")
        .arg(&ca)
        .arg("--token")
        .arg(ada_t.bearer.as_deref().unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "coldchain audit verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // An admin who locked themselves out: reset on the gateway's command
    // line, the daemon stopped; a temporary password, a new one required.
    for _ in 0..3 {
        let _ = anon.login("ada", "not ada's password");
    }
    assert!(anon.login("ada", ADA_PW).is_err(), "ada is locked");
    daemon.stop();
    let out = Command::new(bin("coldchain"))
        .args(["user", "reset", "ada", "--config"])
        .arg(&daemon.config)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let temp = said.trim().rsplit(' ').next().unwrap().to_string();
    daemon.restart();
    let ada = anon.login("ada", &temp).expect("the temporary password");
    assert_eq!(ada.get("/api/v1/users").0, 403, "a new password first");
    // Her token too, until she has chosen one.
    assert_eq!(ada_t.get("/api/v1/users").0, 403);
    ada.ok_post(
        "/api/v1/me/password",
        &json!({"old_password": temp, "new_password": "ada's second password"}),
    );
    let v = ada_t.ok_get("/api/v1/audit/verify");
    assert_eq!(v["ok"], true, "{v}");
    let trail = ada_t.ok_get("/api/v1/audit");
    let reset = trail
        .as_array()
        .unwrap()
        .iter()
        .rfind(|e| e["action"] == "user.reset")
        .unwrap()
        .clone();
    assert_eq!(reset["user"]["id"], "command-line", "{reset}");
    assert_eq!(reset["subject"], "ada");
    drop(broker);
}

/// A backup of a database written before accounts existed (made with the
/// daemon of that time: a device added, a shipment created, arrived and
/// closed with typed names through the shared token) is restored into a
/// fresh data directory; the daemon of now opens it, its audit chain
/// verifies, its entries are shown as legacy typed names, the old
/// disposition reads as not signed, and new entries chain on to it.
#[test]
fn a_database_from_before_accounts_opens_and_its_audit_trail_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&dir.path().join("broker"));
    let opts = DaemonOpts {
        http: format!("token = \"{TEST_TOKEN}\""),
        ..DaemonOpts::default()
    };
    let mut daemon = Daemon::start_with(&dir.path().join("daemon"), broker.port, &[], &opts);
    daemon.stop();
    std::fs::remove_dir_all(&daemon.data_dir).unwrap();
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/audit-before-accounts.jsonl");
    let out = Command::new(bin("coldchain"))
        .arg("import")
        .arg("--from")
        .arg(&fixture)
        .arg("--config")
        .arg(&daemon.config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "import: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    daemon.restart();

    let v = daemon.get("/api/v1/audit/verify");
    assert_eq!(v["ok"], true, "{v}");
    let trail = daemon.get("/api/v1/audit");
    let old: Vec<&Value> = trail
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["subject"] == "OLD-1" || e["subject"] == "old-d1")
        .collect();
    assert_eq!(old.len(), 4, "{trail}");
    for e in &old {
        assert_eq!(e["identity"], "legacy typed name", "{e}");
        assert!(e.get("user").is_none(), "{e}");
    }
    assert!(
        old.iter()
            .any(|e| e["who"] == "qa lead" && e["action"] == "shipment.close")
    );
    let report = daemon.get("/api/v1/shipments/OLD-1/report?format=json");
    assert_eq!(report["data"]["disposition"]["by"], "qa lead");
    assert!(report["data"]["disposition"].get("signature").is_none());
    let html = http_get(
        daemon.http_port,
        "/api/v1/shipments/OLD-1/report?format=html",
    )
    .unwrap();
    let html = html.as_str().unwrap();
    assert!(html.contains("qa lead") && !html.contains("Electronically signed"));
    // Report files saved from the daemon of that time still verify: same
    // data, same bytes.
    for f in [
        "report-before-accounts-OLD-1.html",
        "report-before-accounts-OLD-1.csv",
    ] {
        let text = std::fs::read_to_string(fixture.with_file_name(f)).unwrap();
        let v: Value = ureq::post(&format!(
            "http://127.0.0.1:{}/api/v1/reports/verify",
            daemon.http_port
        ))
        .header("Authorization", &format!("Bearer {TEST_TOKEN}"))
        .send(text.as_bytes())
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
        assert_eq!(v["ok"], true, "{f}: {v}");
    }

    // New entries (the legacy token is an audited identity) chain on.
    let (s, v) = http_post(
        daemon.http_port,
        "/api/v1/users",
        Some(TEST_TOKEN),
        &json!({"name": "newbie", "full_name": "New Person", "role": "viewer", "password": "a long enough password"}),
    );
    assert_eq!(s, 201, "{v}");
    let v = daemon.get("/api/v1/audit/verify");
    assert_eq!(v["ok"], true, "{v}");
    let trail = daemon.get("/api/v1/audit");
    let last = trail.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["action"], "user.add");
    assert_eq!(last["user"]["id"], "legacy-token", "{last}");
    assert_eq!(last["identity"], "authenticated");
    // The CLI shows the old entries as legacy typed names.
    let out = Command::new(bin("coldchain"))
        .args(["audit", "list", "--config"])
        .arg(&daemon.config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("qa lead [legacy typed name]"), "{text}");
    assert!(text.contains("legacy-token (shared API token"), "{text}");
    drop(broker);
}

/// A signed disposition is final: once a shipment is closed, acknowledging
/// one of its alerts or adding a QA assessment (through the API, and through
/// the CLI, which calls it) is refused with 409 naming the shipment, and the
/// report's content still hashes to the signed value. Plain HTTP on
/// loopback: the people and the signature are the point here, not TLS.
#[test]
fn a_closed_shipment_takes_no_acknowledgement_or_assessment() {
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
        &[DeviceCfg::new("fridge-c1")],
        &opts,
    );
    let port = daemon.http_port;
    let ok = |token: &str, path: &str, body: Value| {
        let (s, v) = http_post(port, path, Some(token), &body);
        assert!((200..300).contains(&s), "POST {path}: {s} {v}");
        v
    };
    // Quinn (QA) and her token, made by the admin's legacy token.
    ok(
        TEST_TOKEN,
        "/api/v1/users",
        json!({"name": "quinn", "full_name": "Quinn Q. Assessor", "role": "qa", "password": QUINN_PW}),
    );
    let quinn = ok(
        TEST_TOKEN,
        "/api/v1/tokens",
        json!({"label": "script", "user": "quinn"}),
    )["token"]
        .as_str()
        .unwrap()
        .to_string();

    let t0 = now_ms() - 3 * H;
    ok(
        TEST_TOKEN,
        "/api/v1/shipments",
        json!({
            "id": "FR-C", "product": "CAR-T, 1 bag", "profile": "fridge",
            "watch": [{"device": "fridge-c1", "channel": 0}],
            "origin": "Apheresis unit", "destination": "Cell lab",
            "departure_ms": t0, "window_h": 48.0, "eta_ms": t0 + 8 * H,
        }),
    );
    // Two excursions (H1 at 9.5 °C), so two alerts: one to acknowledge and
    // one to assess after the close.
    let rs: Vec<(i64, Option<i32>)> = (0..150)
        .map(|i| {
            let hot = (30..70).contains(&i) || (100..140).contains(&i);
            (t0 + i * MIN, Some(if hot { 9_500 } else { 5_000 }))
        })
        .collect();
    let frames: Vec<String> = rs
        .chunks(12)
        .enumerate()
        .map(|(i, c)| json_frame("fridge-c1", 1, i as u32, c))
        .collect();
    mosquitto_pub_lines(broker.port, "coldchain/v1/dev/fridge-c1/up/json", &frames).unwrap();
    let alerts = wait_for(Duration::from_secs(60), "two H1 alerts", || {
        let v = daemon.get("/api/v1/alerts?shipment=FR-C");
        let ids: Vec<u64> = v
            .as_array()?
            .iter()
            .filter(|x| x["condition"]["kind"]["zone"] == "H1" && x["state"] == "open")
            .filter_map(|x| x["id"].as_u64())
            .collect();
        (ids.len() == 2).then_some(ids)
    });

    // Arrived and signed as quarantined, nothing acknowledged or assessed.
    ok(TEST_TOKEN, "/api/v1/shipments/FR-C/arrive", json!({}));
    let closed = ok(
        &quinn,
        "/api/v1/shipments/FR-C/close",
        json!({"decision": "quarantined", "comment": "two warm stretches", "password": QUINN_PW}),
    );
    assert_eq!(closed["state"], "closed", "{closed}");
    let signed = closed["disposition"]["signature"]["report_sha256"]
        .as_str()
        .unwrap()
        .to_string();
    let audit_before = daemon.get("/api/v1/audit").as_array().unwrap().len();

    // The API refuses both, naming the shipment.
    let (s, v) = http_post(
        port,
        &format!("/api/v1/alerts/{}/ack", alerts[0]),
        Some(TEST_TOKEN),
        &json!({"comment": "called the courier"}),
    );
    assert_eq!(s, 409, "ack after close: {v}");
    let e = v["error"].as_str().unwrap();
    assert!(e.contains("FR-C") && e.contains("closed"), "{v}");
    let (s, v) = http_post(
        port,
        &format!("/api/v1/alerts/{}/assess", alerts[1]),
        Some(&quinn),
        &json!({"comment": "no impact"}),
    );
    assert_eq!(s, 409, "assessment after close: {v}");
    let e = v["error"].as_str().unwrap();
    assert!(e.contains("FR-C") && e.contains("closed"), "{v}");

    // So does the CLI, with the daemon's reason and exit code 1.
    let cli = |token: &str, args: &[&str]| {
        Command::new(bin("coldchain"))
            .args(args)
            .args([
                "--api",
                &format!("http://127.0.0.1:{port}"),
                "--token",
                token,
            ])
            .env("COLDCHAIN_USER", "ignored typed name")
            .output()
            .unwrap()
    };
    let a0 = alerts[0].to_string();
    let a1 = alerts[1].to_string();
    for (token, args) in [
        (
            TEST_TOKEN,
            vec!["ack", &a0, "--comment", "called the courier"],
        ),
        (
            quinn.as_str(),
            vec!["assess", &a1, "--comment", "no impact"],
        ),
    ] {
        let out = cli(token, &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("409") && err.contains("FR-C"),
            "{args:?}: {err}"
        );
    }

    // Nothing changed: the alerts as they were, no audit entry, and the
    // report's content still hashes to what was signed.
    for id in &alerts {
        let a = daemon.get("/api/v1/alerts?shipment=FR-C");
        let a = a
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["id"].as_u64() == Some(*id))
            .unwrap()
            .clone();
        assert_eq!(a["state"], "open", "{a}");
        assert!(a["ack"].is_null(), "{a}");
    }
    assert_eq!(
        daemon.get("/api/v1/audit").as_array().unwrap().len(),
        audit_before
    );
    let report = daemon.get("/api/v1/shipments/FR-C/report?format=json");
    let html = http_get(port, "/api/v1/shipments/FR-C/report?format=html").unwrap();
    let html = html.as_str().unwrap();
    assert!(
        html.contains(&signed) && html.contains("(this report's content hashes to it)"),
        "{}",
        report["data"]["disposition"]
    );
    assert!(
        report["data"]["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|a| a["assessment"].is_null() && a["ack_by"].is_null())
    );
    drop(broker);
}

/// The daemon rereads its certificate and key on SIGHUP: after the files are
/// replaced by a certificate from another CA and the signal is sent, a client
/// trusting only the new CA connects, and one trusting only the old CA is
/// refused. A plain-HTTP daemon beyond loopback is refused at start, naming
/// the key.
#[test]
fn the_https_certificate_is_reloaded_on_sighup() {
    let dir = tempfile::tempdir().unwrap();
    let (ca1, cert1, key1) = make_cert(&dir.path().join("one"));
    let (ca2, cert2, key2) = make_cert(&dir.path().join("two"));
    let (cert, key) = (dir.path().join("https.pem"), dir.path().join("https.key"));
    std::fs::copy(&cert1, &cert).unwrap();
    std::fs::copy(&key1, &key).unwrap();
    let broker = Mosquitto::start(&dir.path().join("broker"));
    let opts = DaemonOpts {
        http: format!(
            "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
            cert.display(),
            key.display()
        ),
        ..DaemonOpts::default()
    };
    let daemon = Daemon::start_with(&dir.path().join("daemon"), broker.port, &[], &opts);
    let healthz = |ca: &Path| {
        let api = Api::new(daemon.http_port, ca);
        let url = format!("{}/healthz", api.base);
        api.agent.get(&url).call().map(|r| r.status().as_u16())
    };
    assert_eq!(healthz(&ca1).unwrap(), 200);
    assert!(healthz(&ca2).is_err(), "the second CA is not trusted yet");

    std::fs::copy(&cert2, &cert).unwrap();
    std::fs::copy(&key2, &key).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.pid().unwrap() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    wait_for(
        Duration::from_secs(20),
        "the new certificate served",
        || healthz(&ca2).ok().filter(|s| *s == 200),
    );
    assert!(
        healthz(&ca1).is_err(),
        "the old certificate is no longer served"
    );
    assert!(daemon.logs().contains("TLS certificate and key reloaded"));

    // Beyond loopback without TLS: refused at start, naming the key.
    let cfg = dir.path().join("open.toml");
    std::fs::write(
        &cfg,
        format!(
            "[daemon]\nid = \"open\"\ndata_dir = \"{}\"\n\n[http]\nbind = \"0.0.0.0:0\"\n",
            dir.path().join("open").display()
        ),
    )
    .unwrap();
    let out = Command::new(bin("coldchain"))
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("http.tls_cert") && err.contains("allow_plain_http"),
        "{err}"
    );
    drop(broker);
}
