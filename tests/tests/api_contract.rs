//! The HTTP API as documented, and the CLI as a script would use it: every
//! operation in `/api/v1/openapi.json` is routed by the real server (the
//! other direction, every route documented, is the daemon's
//! `http::openapi` test); the CLI
//! talks to the daemon over real HTTP with reliable exit codes.

use std::process::{Command, Output};
use std::time::Duration;

use coldchain_tests::*;
use serde_json::{Value, json};

fn start(dir: &std::path::Path) -> (Mosquitto, Daemon) {
    let broker = Mosquitto::start(&dir.join("broker"));
    let opts = DaemonOpts {
        http: format!("token = \"{TEST_TOKEN}\""),
        ..DaemonOpts::default()
    };
    let daemon = Daemon::start_with(
        &dir.join("daemon"),
        broker.port,
        &[DeviceCfg::new("dev-1")],
        &opts,
    );
    (broker, daemon)
}

fn raw(port: u16, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("http://127.0.0.1:{port}{path}");
    let r = match method {
        "get" => {
            let mut q = agent.get(&url);
            if let Some(t) = token {
                q = q.header("Authorization", &format!("Bearer {t}"));
            }
            q.call()
        }
        _ => {
            let mut q = agent.post(&url);
            if let Some(t) = token {
                q = q.header("Authorization", &format!("Bearer {t}"));
            }
            q.send_json(json!({}))
        }
    };
    let mut r = r.unwrap();
    let status = r.status().as_u16();
    (status, r.body_mut().read_to_string().unwrap_or_default())
}

/// An unrouted path answers 404 with an empty body; a routed one answers
/// anything else (a resource that does not exist is a 404 *with* a JSON error).
fn routed(status: u16, body: &str) -> bool {
    status != 405 && !(status == 404 && body.is_empty())
}

#[test]
fn every_documented_operation_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let (_broker, daemon) = start(dir.path());
    let doc = daemon.get("/api/v1/openapi.json");
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 20, "{} paths", paths.len());
    let (s, b) = raw(daemon.http_port, "get", "/api/v1/no-such-thing", None);
    assert!(!routed(s, &b), "the routing check must be able to fail");
    let mut checked = 0;
    for (path, ops) in paths {
        // Every path parameter ({id}, {name}) as a value.
        let concrete: String = path
            .split('{')
            .enumerate()
            .map(|(i, part)| match (i, part.split_once('}')) {
                (0, _) | (_, None) => part.to_string(),
                (_, Some((_, rest))) => format!("1{rest}"),
            })
            .collect();
        for (method, op) in ops.as_object().unwrap() {
            let (s, b) = raw(daemon.http_port, method, &concrete, Some(TEST_TOKEN));
            assert!(
                routed(s, &b),
                "{method} {path} is documented but not served: {s} {b:?}"
            );
            // Documented changes need the token.
            if op.get("security").is_some() {
                let (s, _) = raw(daemon.http_port, method, &concrete, None);
                assert_eq!(s, 401, "{method} {path} without a token");
                let (s, _) = raw(
                    daemon.http_port,
                    method,
                    &concrete,
                    Some("wrong-token-wrong-token"),
                );
                assert_eq!(s, 401, "{method} {path} with a wrong token");
            }
            checked += 1;
        }
    }
    assert!(checked >= 40, "{checked} operations checked");
    // Bad requests get a JSON error that says what was wrong.
    let (s, v) = http_post(
        daemon.http_port,
        "/api/v1/shipments",
        Some(TEST_TOKEN),
        &json!({"by": "x", "id": "a/b"}),
    );
    assert_eq!(s, 400);
    assert!(v["error"].as_str().is_some(), "{v}");
    let (s, v) = http_post(
        daemon.http_port,
        "/api/v1/shipments",
        Some(TEST_TOKEN),
        &json!({
        "by": "x", "id": "S1", "product": "p", "profile": "no-such-profile",
        "watch": [{"device": "dev-1", "channel": 0}], "origin": "a", "destination": "b"}),
    );
    assert_eq!(s, 400);
    assert!(v["error"].as_str().unwrap().contains("profile"), "{v}");
    let metrics = daemon.get("/metrics");
    let m = metrics.as_str().unwrap();
    for name in [
        "coldchain_readings_stored_total",
        "coldchain_rejected_total{reason=\"bad_tag\"}",
        "coldchain_store_bytes",
        "coldchain_outbox_depth",
        "coldchain_open_alerts{severity=\"critical\"}",
        "coldchain_ingest_commit_seconds_count",
        "coldchain_ingest_receive_to_durable_seconds_bucket",
        "coldchain_ingest_publish_to_durable_seconds_bucket",
        "coldchain_evaluate_shipment_seconds_count",
    ] {
        assert!(m.contains(name), "metrics lack {name}:\n{m}");
    }
}

/// The schema an operation documents for its success answer, as a JSON
/// Schema whose `#/components/...` references resolve in the document.
fn answer_schema(doc: &Value, path: &str, method: &str) -> Value {
    let op = &doc["paths"][path][method];
    let (_, ok) = op["responses"]
        .as_object()
        .unwrap_or_else(|| panic!("{method} {path} not documented"))
        .iter()
        .find(|(c, _)| c.starts_with('2'))
        .unwrap_or_else(|| panic!("{method} {path}: no 2xx answer"));
    let mut schema = ok["content"]["application/json"]["schema"].clone();
    assert!(
        schema.to_string().contains("#/components/schemas/"),
        "{method} {path}: the answer has no named schema: {schema}"
    );
    schema["components"] = doc["components"].clone();
    schema
}

/// Every required property of the object schemas reached from `schema` for
/// `v` (through `$ref`, `allOf` and array items) is present in `v`.
fn required_present(doc: &Value, schema: &Value, v: &Value, at: &str, seen: &mut usize) {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.trim_start_matches("#/components/schemas/");
        return required_present(doc, &doc["components"]["schemas"][name], v, at, seen);
    }
    if let Some(all) = schema["allOf"].as_array() {
        for s in all {
            required_present(doc, s, v, at, seen);
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), v.as_array()) {
        for (i, x) in arr.iter().enumerate() {
            required_present(doc, items, x, &format!("{at}[{i}]"), seen);
        }
    }
    if let Some(obj) = v.as_object() {
        // An optional object (`oneOf` null or it), or one of several: the
        // object branches whose required properties it has (the schema
        // validation above fails when none matches).
        for k in ["oneOf", "anyOf"] {
            for s in schema[k].as_array().into_iter().flatten() {
                let mut b = s;
                while let Some(r) = b["$ref"].as_str() {
                    b = &doc["components"]["schemas"]
                        [r.trim_start_matches("#/components/schemas/")];
                }
                let matches = b["required"]
                    .as_array()
                    .is_some_and(|req| req.iter().all(|r| obj.contains_key(r.as_str().unwrap())));
                if matches {
                    required_present(doc, b, v, at, seen);
                }
            }
        }
        // A map: each value.
        if schema["additionalProperties"].is_object() {
            for (k, x) in obj {
                required_present(
                    doc,
                    &schema["additionalProperties"],
                    x,
                    &format!("{at}.{k}"),
                    seen,
                );
            }
        }
    }
    if let Some(req) = schema["required"].as_array() {
        for r in req {
            let r = r.as_str().unwrap();
            assert!(
                v.get(r).is_some(),
                "{at}: required property {r} missing from the real answer {v}"
            );
            *seen += 1;
            if let Some(p) = schema["properties"].get(r) {
                required_present(doc, p, &v[r], &format!("{at}.{r}"), seen);
            }
        }
    }
}

/// The main answers are documented with their schemas (not "any JSON"), and
/// what the daemon really answers matches them: valid against the schema
/// (JSON Schema 2020-12, as OpenAPI 3.1 says), every required property there.
#[test]
fn documented_answer_schemas_match_real_answers() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, daemon) = start(dir.path());
    let port = daemon.http_port;
    let post = |path: &str, body: Value| {
        let (s, v) = http_post(port, path, Some(TEST_TOKEN), &body);
        assert!((200..300).contains(&s), "POST {path} -> {s}: {v}");
        v
    };
    // A shipment with an H1 excursion (40 min above 8 °C), a person, a token.
    let t0 = now_ms() - 4 * 3_600_000;
    post(
        "/api/v1/shipments",
        json!({
            "by": "dispatcher", "id": "DOC-1", "product": "PBSC", "profile": "fridge",
            "watch": [{"device": "dev-1", "channel": 0}],
            "origin": "A", "destination": "B", "departure_ms": t0, "window_h": 48.0,
        }),
    );
    let rs: Vec<(i64, Option<i32>)> = (0..150)
        .map(|i| {
            (
                t0 + i * 60_000,
                Some(if (90..130).contains(&i) { 9_500 } else { 5_000 }),
            )
        })
        .collect();
    let frames: Vec<String> = rs
        .chunks(12)
        .enumerate()
        .map(|(i, c)| json_frame("dev-1", 1, i as u32, c))
        .collect();
    mosquitto_pub_lines(broker.port, "coldchain/v1/dev/dev-1/up/json", &frames).unwrap();
    let h1 = wait_for(Duration::from_secs(60), "the H1 alert", || {
        daemon
            .get("/api/v1/alerts?shipment=DOC-1")
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|x| x["condition"]["kind"]["zone"] == "H1")
                    .cloned()
            })
    });
    let doc = daemon.get("/api/v1/openapi.json");
    let mut checked = Vec::new();
    // Every operation whose answer is checked here: (method, documented
    // path, concrete path, the real answer).
    let mut answers: Answers = Vec::new();
    let posted = |answers: &mut Answers, documented, concrete: &str, token: &str, body| {
        post_answer(port, answers, documented, concrete, token, body)
    };
    posted(
        &mut answers,
        "/api/v1/users",
        "/api/v1/users",
        TEST_TOKEN,
        json!({"name": "quinn", "full_name": "Quinn Example", "role": "qa", "password": "correct horse battery staple"}),
    );
    let minted = posted(
        &mut answers,
        "/api/v1/tokens",
        "/api/v1/tokens",
        TEST_TOKEN,
        json!({"label": "script", "user": "quinn"}),
    );
    let quinn = minted["token"]
        .as_str()
        .expect("the minted token")
        .to_string();
    // A second shipment through its lifecycle.
    posted(
        &mut answers,
        "/api/v1/shipments",
        "/api/v1/shipments",
        TEST_TOKEN,
        json!({
            "id": "DOC-2", "product": "PBSC", "profile": "fridge",
            "watch": [{"device": "dev-1", "channel": 0}],
            "origin": "A", "destination": "B", "window_h": 48.0,
        }),
    );
    for (documented, concrete, body) in [
        (
            "/api/v1/shipments/{id}/depart",
            "/api/v1/shipments/DOC-2/depart",
            json!({}),
        ),
        (
            "/api/v1/shipments/{id}/eta",
            "/api/v1/shipments/DOC-2/eta",
            json!({"eta_ms": now_ms() + 3_600_000}),
        ),
        (
            "/api/v1/shipments/{id}/handoff",
            "/api/v1/shipments/DOC-2/handoff",
            json!({"to": "courier 7", "location": "airport"}),
        ),
        (
            "/api/v1/shipments/{id}/arrive",
            "/api/v1/shipments/DOC-2/arrive",
            json!({}),
        ),
    ] {
        posted(&mut answers, documented, concrete, TEST_TOKEN, body);
    }
    // The H1 alert acknowledged, assessed by QA, and the release signed.
    let alert = h1["id"].as_u64().expect("the alert's id");
    posted(
        &mut answers,
        "/api/v1/alerts/{id}/ack",
        &format!("/api/v1/alerts/{alert}/ack"),
        TEST_TOKEN,
        json!({"comment": "courier called"}),
    );
    for a in daemon
        .get("/api/v1/alerts?shipment=DOC-1")
        .as_array()
        .unwrap()
    {
        posted(
            &mut answers,
            "/api/v1/alerts/{id}/assess",
            &format!("/api/v1/alerts/{}/assess", a["id"]),
            &quinn,
            json!({"comment": "40 min at 9.5 °C: within the stability data"}),
        );
    }
    post("/api/v1/shipments/DOC-1/arrive", json!({}));
    // Devices: one added (key minted), then re-enrolled with a new key.
    posted(
        &mut answers,
        "/api/v1/devices",
        "/api/v1/devices",
        TEST_TOKEN,
        json!({"id": "dev-9"}),
    );
    posted(
        &mut answers,
        "/api/v1/devices/{id}/reenroll",
        "/api/v1/devices/dev-9/reenroll",
        TEST_TOKEN,
        json!({"reason": "flash replaced", "new_key": true}),
    );
    // The GETs (after the changes, so the shipment shows its audit entries).
    for (path, concrete) in [
        ("/api/v1/alerts", "/api/v1/alerts"),
        ("/api/v1/shipments", "/api/v1/shipments"),
        ("/api/v1/shipments/{id}", "/api/v1/shipments/DOC-1"),
        ("/api/v1/audit", "/api/v1/audit"),
        ("/api/v1/audit/verify", "/api/v1/audit/verify"),
        ("/api/v1/users", "/api/v1/users"),
        ("/api/v1/tokens", "/api/v1/tokens"),
        ("/api/v1/stats", "/api/v1/stats"),
        ("/api/v1/sites", "/api/v1/sites"),
        ("/api/v1/me", "/api/v1/me"),
        ("/api/v1/devices", "/api/v1/devices"),
        (
            "/api/v1/devices/{id}/readings",
            "/api/v1/devices/dev-1/readings?limit=5",
        ),
        (
            "/api/v1/devices/{id}/warming",
            "/api/v1/devices/dev-1/warming",
        ),
    ] {
        let (status, text) = raw(port, "get", concrete, Some(TEST_TOKEN));
        assert_eq!(status, 200, "GET {concrete}: {text}");
        let real: Value = serde_json::from_str(&text).unwrap();
        assert!(
            real.as_array().is_none_or(|a| !a.is_empty()),
            "GET {concrete}: an empty list checks nothing"
        );
        answers.push(("get", path, concrete.to_string(), real));
    }
    // The signature closes DOC-1; then the person's own password change,
    // logging in and out, and an admin's forced reset.
    posted(
        &mut answers,
        "/api/v1/shipments/{id}/close",
        "/api/v1/shipments/DOC-1/close",
        &quinn,
        json!({"decision": "accepted", "comment": "released", "password": "correct horse battery staple"}),
    );
    posted(
        &mut answers,
        "/api/v1/me/password",
        "/api/v1/me/password",
        &quinn,
        json!({"old_password": "correct horse battery staple", "new_password": "another horse battery staple"}),
    );
    posted(
        &mut answers,
        "/api/v1/login",
        "/api/v1/login",
        TEST_TOKEN,
        json!({"name": "quinn", "password": "another horse battery staple"}),
    );
    posted(
        &mut answers,
        "/api/v1/logout",
        "/api/v1/logout",
        TEST_TOKEN,
        json!({}),
    );
    posted(
        &mut answers,
        "/api/v1/users/{name}/reset",
        "/api/v1/users/quinn/reset",
        TEST_TOKEN,
        json!({}),
    );

    for (method, path, concrete, real) in &answers {
        let schema = answer_schema(&doc, path, method);
        let v = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .build(&schema)
            .unwrap_or_else(|e| {
                panic!("{method} {path}: the documented schema does not compile: {e}")
            });
        let errors: Vec<String> = v
            .iter_errors(real)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{method} {concrete} does not match its documented schema:\n{}\nanswer: {real}",
            errors.join("\n")
        );
        let mut seen = 0;
        required_present(&schema, &schema, real, concrete, &mut seen);
        assert!(
            seen >= 1,
            "{method} {concrete}: only {seen} required properties checked"
        );
        declared_only(&schema, &schema, real, concrete);
        checked.push((format!("{method} {concrete}"), seen));
    }
    // Every operation that answers JSON is among them, but for the
    // document itself (and enable/disable/revoke, whose answers are the
    // schemas checked above through GET /users and GET /tokens).
    let mut unchecked = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            let json =
                op["responses"].as_object().unwrap().iter().any(|(c, r)| {
                    c.starts_with('2') && r["content"]["application/json"].is_object()
                });
            if json
                && !answers
                    .iter()
                    .any(|(m, p, _, _)| *m == method.as_str() && *p == path.as_str())
            {
                unchecked.push(format!("{method} {path}"));
            }
        }
    }
    unchecked.sort();
    assert_eq!(
        unchecked,
        [
            "get /api/v1/devices/{id}/gaps",
            "get /api/v1/openapi.json",
            "post /api/v1/reports/verify",
            "post /api/v1/tokens/{id}/revoke",
            "post /api/v1/users/{name}/disable",
            "post /api/v1/users/{name}/enable",
        ],
        "JSON answers not checked against their schema"
    );
    eprintln!("required properties checked: {checked:?}");
}

/// Real answers to check: (method, documented path, concrete path, answer).
type Answers = Vec<(&'static str, &'static str, String, Value)>;

/// POSTs `body` to `concrete` with `token`, expects a 2xx, and keeps the
/// answer to check against `documented`'s schema.
fn post_answer(
    port: u16,
    answers: &mut Answers,
    documented: &'static str,
    concrete: &str,
    token: &str,
    body: Value,
) -> Value {
    let (s, v) = http_post(port, concrete, Some(token), &body);
    assert!((200..300).contains(&s), "POST {concrete} -> {s}: {v}");
    answers.push(("post", documented, concrete.to_string(), v.clone()));
    v
}

/// The properties an object schema declares (through `$ref`, `allOf`, and
/// the object branches of `oneOf`/`anyOf`), and the schema of a map's
/// values (`additionalProperties`) when it is a map.
fn declared(
    doc: &Value,
    schema: &Value,
    names: &mut Vec<(String, Value)>,
    map: &mut Option<Value>,
) {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.trim_start_matches("#/components/schemas/");
        return declared(doc, &doc["components"]["schemas"][name], names, map);
    }
    for k in ["allOf", "oneOf", "anyOf"] {
        for s in schema[k].as_array().into_iter().flatten() {
            declared(doc, s, names, map);
        }
    }
    if let Some(p) = schema["properties"].as_object() {
        names.extend(p.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    if schema["additionalProperties"].is_object() {
        *map = Some(schema["additionalProperties"].clone());
    }
}

/// Every property of the real answer `v` (and of the objects in it) is
/// declared by its schema: a renamed or undocumented field fails, not only
/// a missing required one.
fn declared_only(doc: &Value, schema: &Value, v: &Value, at: &str) {
    if let Some(arr) = v.as_array() {
        let mut items = schema.clone();
        while let Some(r) = items["$ref"].as_str() {
            let name = r.trim_start_matches("#/components/schemas/");
            items = doc["components"]["schemas"][name].clone();
        }
        // An array, or an optional one (`oneOf` [null, array]).
        let item = items.get("items").cloned().or_else(|| {
            items["oneOf"]
                .as_array()
                .and_then(|o| o.iter().find_map(|s| s.get("items").cloned()))
        });
        if let Some(item) = item {
            for (i, x) in arr.iter().enumerate() {
                declared_only(doc, &item, x, &format!("{at}[{i}]"));
            }
        }
        return;
    }
    let Some(obj) = v.as_object() else { return };
    let (mut names, mut map) = (Vec::new(), None);
    declared(doc, schema, &mut names, &mut map);
    if names.is_empty() && map.is_none() {
        // A free-form object (left untyped on purpose: see the report).
        return;
    }
    for (k, x) in obj {
        let sub = match names.iter().find(|(n, _)| n == k) {
            Some((_, s)) => s.clone(),
            None => map.clone().unwrap_or_else(|| {
                panic!("{at}: property {k} of the real answer is not in its schema: {v}")
            }),
        };
        declared_only(doc, &sub, x, &format!("{at}.{k}"));
    }
}

/// `coldchain ARGS --api … --token …` (the connection flags belong to the
/// subcommand: `coldchain run --help` does not list them).
fn cli(daemon: &Daemon, args: &[&str]) -> Output {
    Command::new(bin("coldchain"))
        .args(args)
        .args([
            "--api",
            &format!("http://127.0.0.1:{}", daemon.http_port),
            "--token",
            TEST_TOKEN,
        ])
        .env("COLDCHAIN_USER", "cli tester")
        .output()
        .unwrap()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}: {}{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn cli_drives_the_daemon_with_reliable_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let (broker, mut daemon) = start(dir.path());
    ok(&cli(
        &daemon,
        &[
            "shipment",
            "create",
            "--id",
            "W1234 25 000042",
            "--product",
            "PBSC",
            "--profile",
            "fridge",
            "--device",
            "dev-1:0",
            "--origin",
            "Clinic",
            "--destination",
            "Lab",
            "--window-h",
            "48",
            "--eta",
            "+6h",
            "--depart",
            "-10m",
        ]
        .iter()
        .map(|s| if *s == "-10m" { "now" } else { s })
        .collect::<Vec<_>>(),
    ));
    // Readings that go above 8 °C for an hour.
    let t0 = now_ms() - 2 * 3_600_000;
    let rs: Vec<(i64, Option<i32>)> = (0..96)
        .map(|i| (t0 + i * 60_000, Some(if i > 20 { 11_000 } else { 5_000 })))
        .collect();
    let lines: Vec<String> = rs
        .chunks(12)
        .enumerate()
        .map(|(i, c)| json_frame("dev-1", 1, i as u32, c))
        .collect();
    // The shipment departed "now": move departure back so the data counts.
    let o = cli(&daemon, &["shipment", "depart", "W1234 25 000042"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "departing twice is refused: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot depart"));
    mosquitto_pub_lines(broker.port, "coldchain/v1/dev/dev-1/up/json", &lines).unwrap();

    let status = ok(&cli(&daemon, &["status"]));
    assert!(
        status.contains("W1234 25 000042") && status.contains("in_transit"),
        "{status}"
    );
    let list: Value = serde_json::from_str(&ok(&cli(&daemon, &["status", "--json"]))).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);

    ok(&cli(
        &daemon,
        &[
            "shipment",
            "handoff",
            "W1234 25 000042",
            "--to",
            "courier 7",
            "--location",
            "airport",
        ],
    ));
    ok(&cli(
        &daemon,
        &["shipment", "eta", "W1234 25 000042", "+8h"],
    ));
    let show = ok(&cli(&daemon, &["shipment", "show", "W1234 25 000042"]));
    assert!(show.contains("courier 7"), "{show}");

    let dev = ok(&cli(&daemon, &["device", "add", "new-dev"]));
    assert!(dev.contains("key (shown once"), "{dev}");
    let devs = ok(&cli(&daemon, &["device", "list"]));
    assert!(devs.contains("new-dev"), "{devs}");

    let verify = ok(&cli(&daemon, &["audit", "verify"]));
    assert!(verify.contains("intact"), "{verify}");
    let audit = ok(&cli(&daemon, &["audit", "list", "--json"]));
    // The authenticated identity (the legacy shared token the CLI took from
    // --config), not the typed --by name.
    assert!(audit.contains("\"who\": \"legacy-token\""), "{audit}");
    assert!(!audit.contains("cli tester"), "{audit}");

    // Wrong token: refused (1). Daemon unreachable: 3.
    let o = Command::new(bin("coldchain"))
        .args([
            "ack",
            "1",
            "--comment",
            "x",
            "--by",
            "me",
            "--api",
            &format!("http://127.0.0.1:{}", daemon.http_port),
            "--token",
            "nope-nope-nope-nope",
        ])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("wrong bearer token"));

    // Backup through the API, restore offline into a new data directory.
    let backup = dir.path().join("backup.ndjson");
    ok(&cli(
        &daemon,
        &["export", "--out", backup.to_str().unwrap()],
    ));
    daemon.stop();
    let o = Command::new(bin("coldchain"))
        .args([
            "status",
            "--api",
            &format!("http://127.0.0.1:{}", daemon.http_port),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3));
    let cfg2 = dir.path().join("restore.toml");
    std::fs::write(
        &cfg2,
        format!(
            "[daemon]\ndata_dir = \"{}\"\n",
            dir.path().join("restored").display()
        ),
    )
    .unwrap();
    let o = Command::new(bin("coldchain"))
        .args([
            "import",
            "--config",
            cfg2.to_str().unwrap(),
            "--from",
            backup.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = Command::new(bin("coldchain"))
        .args([
            "import",
            "--config",
            cfg2.to_str().unwrap(),
            "--from",
            backup.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "restoring over data is refused");
    // The restored database holds the same shipment and readings.
    let db = sled::open(dir.path().join("restored/db")).unwrap();
    assert!(
        db.open_tree("shipments")
            .unwrap()
            .get("W1234 25 000042")
            .unwrap()
            .is_some()
    );
    assert_eq!(
        db.open_tree("frames").unwrap().len(),
        8,
        "the 8 frames of 12 readings"
    );
    std::thread::sleep(Duration::from_millis(10));
}
