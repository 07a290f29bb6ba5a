//! Dashboard sessions are kept in the store, through real processes and
//! real HTTP: a session survives a daemon restart, a disabled person's
//! session is refused at once, a logout ends it, and on PostgreSQL a session
//! made through one daemon instance is accepted by another sharing the
//! database (and ended there by a logout on the first).

use coldchain_tests::*;
use serde_json::{Value, json};

const PW: &str = "correct horse battery staple";

/// One request; a fresh connection each time (daemons restart in the tests).
fn call(
    port: u16,
    method: &str,
    path: &str,
    auth: &Auth,
    body: Option<&Value>,
) -> (u16, Value, Option<String>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_idle_connections(0)
        .build()
        .into();
    let url = format!("http://127.0.0.1:{port}{path}");
    let mut b = ureq::http::Request::builder().method(method).uri(&url);
    match auth {
        Auth::None => {}
        Auth::Token => b = b.header("Authorization", format!("Bearer {TEST_TOKEN}")),
        Auth::Session { cookie, csrf } => {
            b = b.header("Cookie", cookie).header("X-CSRF-Token", csrf);
        }
    }
    let mut resp = match body {
        Some(v) => agent.run(
            b.header("Content-Type", "application/json")
                .body(v.to_string())
                .unwrap(),
        ),
        None => agent.run(b.body(()).unwrap()),
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

enum Auth {
    None,
    Token,
    Session { cookie: String, csrf: String },
}

fn add_user(port: u16, name: &str) {
    let (s, v, _) = call(
        port,
        "POST",
        "/api/v1/users",
        &Auth::Token,
        Some(&json!({"name": name, "full_name": name, "role": "logistics", "password": PW})),
    );
    assert_eq!(s, 201, "add {name}: {v}");
}

fn login(port: u16, name: &str) -> Auth {
    let (s, v, set) = call(
        port,
        "POST",
        "/api/v1/login",
        &Auth::None,
        Some(&json!({"name": name, "password": PW})),
    );
    assert_eq!(s, 200, "login {name}: {v}");
    Auth::Session {
        cookie: set.expect("Set-Cookie").split(';').next().unwrap().into(),
        csrf: v["csrf"].as_str().unwrap().into(),
    }
}

/// GET /api/v1/me with the session: its status and the user it names.
fn me(port: u16, a: &Auth) -> (u16, Value) {
    let (s, v, _) = call(port, "GET", "/api/v1/me", a, None);
    (s, v["user"].clone())
}

fn start(dir: &std::path::Path, broker: u16, extra: &str) -> Daemon {
    let opts = DaemonOpts {
        http: format!("token = \"{TEST_TOKEN}\""),
        extra: extra.into(),
        ..DaemonOpts::default()
    };
    Daemon::start_with(dir, broker, &[], &opts)
}

/// Daemons sharing one database, each with its own broker.
fn start_on_pg(dir: &std::path::Path, store: &str) -> (Mosquitto, Daemon) {
    let broker = Mosquitto::start(&dir.join("broker"));
    let d = start(&dir.join("daemon"), broker.port, store);
    (broker, d)
}

#[test]
fn a_session_survives_a_restart_and_ends_at_disable_and_logout() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&dir.path().join("broker"));
    let mut d = start(&dir.path().join("d"), broker.port, "");
    add_user(d.http_port, "kim");
    add_user(d.http_port, "lou");
    let kim = login(d.http_port, "kim");
    let lou = login(d.http_port, "lou");
    assert_eq!(me(d.http_port, &kim), (200, json!("kim")));

    d.stop();
    d.restart();
    // The same cookie after the restart: still logged in, and the session's
    // CSRF token still opens changes.
    assert_eq!(me(d.http_port, &kim), (200, json!("kim")));
    let (s, v, _) = call(
        d.http_port,
        "POST",
        "/api/v1/tokens",
        &kim,
        Some(&json!({"label": "after restart"})),
    );
    assert_eq!(s, 201, "a change with the session's CSRF token: {v}");

    // Disabled: refused at once; enabled again, the old session stays ended.
    let (s, v, _) = call(
        d.http_port,
        "POST",
        "/api/v1/users/kim/disable",
        &Auth::Token,
        Some(&json!({})),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(me(d.http_port, &kim).0, 401);
    let (s, v, _) = call(
        d.http_port,
        "POST",
        "/api/v1/users/kim/enable",
        &Auth::Token,
        Some(&json!({})),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(me(d.http_port, &kim).0, 401);
    assert_eq!(me(d.http_port, &lou), (200, json!("lou")));

    // Logout ends it, also after another restart.
    let (s, _, _) = call(
        d.http_port,
        "POST",
        "/api/v1/logout",
        &lou,
        Some(&json!({})),
    );
    assert_eq!(s, 200);
    assert_eq!(me(d.http_port, &lou).0, 401);
    d.stop();
    d.restart();
    assert_eq!(me(d.http_port, &lou).0, 401);
}

#[test]
fn on_postgres_a_session_made_on_one_instance_is_accepted_by_another() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start(&dir.path().join("pg"));
    let url = pg.create_db("centre");
    let store = format!("[store]\npostgres_url = \"{url}\"\n");
    let (_broker_a, a) = start_on_pg(&dir.path().join("a"), &store);
    let (_broker_b, b) = start_on_pg(&dir.path().join("b"), &store);
    add_user(a.http_port, "max");
    let max = login(a.http_port, "max");
    assert_eq!(me(a.http_port, &max), (200, json!("max")));
    assert_eq!(me(b.http_port, &max), (200, json!("max")));
    // Stored under a hash of the secret, never the secret.
    let Auth::Session { cookie, .. } = &max else {
        unreachable!()
    };
    let secret = cookie.split_once('=').unwrap().1;
    let rows = pg
        .psql(
            "centre",
            &format!(
                "SELECT count(*) FROM kv WHERE tree = 'sessions' AND position('{secret}'::bytea in v) = 0 AND k <> '{secret}'::bytea"
            ),
        )
        .unwrap();
    assert_eq!(rows, "1", "one stored session, its secret nowhere");

    // A change through B with the session made on A.
    let (s, v, _) = call(
        b.http_port,
        "POST",
        "/api/v1/tokens",
        &max,
        Some(&json!({"label": "on b"})),
    );
    assert_eq!(s, 201, "{v}");
    // Logout on B ends it on A too.
    let (s, _, _) = call(
        b.http_port,
        "POST",
        "/api/v1/logout",
        &max,
        Some(&json!({})),
    );
    assert_eq!(s, 200);
    assert_eq!(me(a.http_port, &max).0, 401);
    assert_eq!(me(b.http_port, &max).0, 401);

    // Disabled through A: B refuses the person's new session at once.
    let max = login(b.http_port, "max");
    assert_eq!(me(a.http_port, &max).0, 200);
    let (s, v, _) = call(
        a.http_port,
        "POST",
        "/api/v1/users/max/disable",
        &Auth::Token,
        Some(&json!({})),
    );
    assert_eq!(s, 200, "{v}");
    assert_eq!(me(b.http_port, &max).0, 401);
}
