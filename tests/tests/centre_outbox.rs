//! The outbox shared by two central instances (one PostgreSQL database, one
//! broker; real processes): each alert event goes out once by MQTT and once
//! by webhook, although both instances run delivery tasks over the same
//! items; and when the instance attempting a delivery is killed with -9, the
//! other one delivers it once the dead one's claim ran out.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coldchain_tests::*;
use serde_json::{Value, json};

const H: i64 = 3_600_000;
const DEV: &str = "fridge-ob";
const TOPIC: &str = "coldchain/v1/dev/fridge-ob/up/json";
const ALERTS: &str = "coldchain/v1/ship/+/alert";
/// Shipments of the first part, half created on each instance: enough
/// alert events that both instances' tasks find some of them waiting.
const FIRST: usize = 10;

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    /// 200, after 50 ms (a receiver doing some work: a second deliverer
    /// of the same item would have time to overlap).
    Accept,
    /// 500 at once.
    Refuse,
    /// No answer until the mode changes, then 503 (the sender has given up
    /// by then or been killed: such an attempt never counts as delivered).
    Hold,
}

/// One POST as the receiver saw it: its `webhook-id`, the body, and the
/// status it was answered with (0 while held).
#[derive(Debug, Clone)]
struct Post {
    id: String,
    body: String,
    status: u16,
}

/// A webhook receiver on a real TCP port, one thread per connection.
struct Receiver {
    port: u16,
    mode: Arc<Mutex<Mode>>,
    posts: Arc<Mutex<Vec<Post>>>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mode = Arc::new(Mutex::new(Mode::Accept));
        let posts: Arc<Mutex<Vec<Post>>> = Arc::default();
        let (m, p) = (mode.clone(), posts.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (m, p) = (m.clone(), p.clone());
                std::thread::spawn(move || serve(conn, &m, &p));
            }
        });
        Receiver { port, mode, posts }
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn posts(&self) -> Vec<Post> {
        self.posts.lock().unwrap().clone()
    }
}

fn serve(mut conn: TcpStream, mode: &Mutex<Mode>, posts: &Mutex<Vec<Post>>) {
    let mut r = BufReader::new(conn.try_clone().unwrap());
    let mut headers = BTreeMap::new();
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
    if r.read_exact(&mut body).is_err() {
        return;
    }
    let n = {
        let mut p = posts.lock().unwrap();
        p.push(Post {
            id: headers.get("webhook-id").cloned().unwrap_or_default(),
            body: String::from_utf8_lossy(&body).into_owned(),
            status: 0,
        });
        p.len() - 1
    };
    let now = *mode.lock().unwrap();
    let status = match now {
        Mode::Accept => {
            std::thread::sleep(Duration::from_millis(50));
            200
        }
        Mode::Refuse => 500,
        Mode::Hold => loop {
            std::thread::sleep(Duration::from_millis(50));
            if *mode.lock().unwrap() != Mode::Hold {
                break 503;
            }
        },
    };
    posts.lock().unwrap()[n].status = status;
    let _ = write!(
        conn,
        "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
}

/// A subscriber to every shipment's alert topic with a persistent session
/// (`-c`: what the broker queues for it while it is away reaches it when it
/// comes back), collecting each message's payload.
struct Subscriber {
    child: std::process::Child,
}

impl Subscriber {
    fn start(port: u16, got: Arc<Mutex<Vec<String>>>) -> Subscriber {
        let (child, mut out) = mosquitto_sub(
            port,
            &["-c", "-i", "alert-watcher", "-q", "1", "-v", "-t", ALERTS],
        )
        .unwrap();
        std::thread::spawn(move || {
            let mut line = String::new();
            while out.read_line(&mut line).unwrap_or(0) > 0 {
                if let Some((_, payload)) = line.trim_end().split_once(' ') {
                    got.lock().unwrap().push(payload.to_string());
                }
                line.clear();
            }
        });
        Subscriber { child }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP proxy to the broker's `port` that holds everything it passes for
/// `delay`, each way: a broker some way off, so a publish waits a while for
/// its PUBACK (and two deliverers of the same items would overlap). Returns
/// its port. A connection the broker refuses (while it is down) is closed.
fn slow_link(port: u16, delay: Duration) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let own = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(down) = conn else { continue };
            let Ok(up) = TcpStream::connect(("127.0.0.1", port)) else {
                continue;
            };
            for (from, to) in [
                (down.try_clone().unwrap(), up.try_clone().unwrap()),
                (up, down),
            ] {
                std::thread::spawn(move || pipe(from, to, delay));
            }
        }
    });
    own
}

fn pipe(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let mut buf = [0u8; 16384];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                std::thread::sleep(delay);
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Both);
    let _ = from.shutdown(std::net::Shutdown::Both);
}

/// A daemon connected to the broker through `link` (a [`slow_link`]).
fn daemon(dir: &std::path::Path, broker: u16, link: u16, client: &str, extra: &str) -> Daemon {
    let opts = DaemonOpts {
        mqtt: format!("client_id = \"{client}\""),
        http: format!("token = \"{TEST_TOKEN}\""),
        extra: format!("[alerts]\nescalate_after_s = 3600\n\n{extra}"),
        ..DaemonOpts::default()
    };
    let d = Daemon::start_with(dir, link, &[DeviceCfg::new(DEV)], &opts);
    wait_daemon_online(broker, &[]);
    d
}

/// The instance name a daemon claims and leases under (from its log).
fn instance(d: &Daemon) -> String {
    let logs = d.logs();
    let at = logs
        .find("instance=")
        .unwrap_or_else(|| panic!("no instance name in the log:\n{logs}"));
    logs[at + "instance=".len()..]
        .split(|c: char| c.is_whitespace())
        .next()
        .unwrap()
        .to_string()
}

fn create_shipment(d: &Daemon, id: &str, t0: i64) {
    let (status, v) = http_post(
        d.http_port,
        "/api/v1/shipments",
        Some(TEST_TOKEN),
        &json!({
            "by": "dispatcher", "id": id, "product": "PBSC", "profile": "fridge",
            "watch": [{"device": DEV, "channel": 0}],
            "origin": "A", "destination": "B", "departure_ms": t0, "window_h": 48.0,
        }),
    );
    assert!((200..300).contains(&status), "create {id} -> {status}: {v}");
}

/// Outbox items waiting whose key starts with `kind` (`m`, `w`, …).
fn waiting(pg: &Postgres, kind: char) -> usize {
    pg.psql(
        "centre",
        &format!(
            "SELECT count(*) FROM kv WHERE tree = 'outbox' AND get_byte(k, 0) = {}",
            kind as u32
        ),
    )
    .unwrap()
    .parse()
    .unwrap()
}

fn shipment_of(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["alert"]["shipment"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn counts<'a>(xs: impl IntoIterator<Item = &'a String>) -> BTreeMap<&'a String, usize> {
    let mut m = BTreeMap::new();
    for x in xs {
        *m.entry(x).or_default() += 1;
    }
    m
}

#[test]
fn two_instances_deliver_each_alert_event_once_and_take_over_a_dead_ones_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start(&dir.path().join("pg"));
    let url = pg.create_db("centre");
    let mut broker = Mosquitto::start(&dir.path().join("broker"));
    let hooks = Receiver::start();
    let cfg = format!(
        "[store]\npostgres_url = \"{url}\"\n\n[centre]\ngroup = \"centre\"\n\n\
         [[webhooks]]\nurl = \"http://127.0.0.1:{}/hook\"\nsecret = \"a webhook secret of some length\"\n",
        hooks.port
    );
    let link = slow_link(broker.port, Duration::from_millis(25));
    let mut a = daemon(&dir.path().join("a"), broker.port, link, "cc-out-a", &cfg);
    let mut b = daemon(&dir.path().join("b"), broker.port, link, "cc-out-b", &cfg);
    let t0 = now_ms() - 6 * H;
    mosquitto_pub_lines(broker.port, TOPIC, &two_excursions(DEV, t0)).unwrap();
    wait_for(Duration::from_secs(60), "every frame stored", || {
        (pg.psql("centre", "SELECT count(*) FROM kv WHERE tree = 'frames'")
            .ok()?
            == "25")
            .then_some(())
    });

    // The subscriber's session exists on the broker (a probe reached it).
    let got: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut sub = Subscriber::start(broker.port, got.clone());
    wait_for(Duration::from_secs(30), "the subscriber", || {
        mosquitto_pub(broker.port, "coldchain/v1/ship/PROBE/alert", b"{}").ok()?;
        std::thread::sleep(Duration::from_millis(200));
        (!got.lock().unwrap().is_empty()).then_some(())
    });
    got.lock().unwrap().clear();

    // 1. The broker is down while the alarms are raised: the alert events
    // wait in the outbox for both instances' MQTT tasks, which publish them
    // when it is back; the webhooks go out meanwhile, from both instances'
    // tasks.
    sub.stop();
    broker.stop();
    for i in 0..FIRST {
        let on = if i % 2 == 0 { &a } else { &b };
        create_shipment(on, &format!("OB-1-{i}"), t0);
    }
    // Every event queued (the same count of events twice, 2 s apart: the evaluation
    // queues them one by one), every webhook delivered, every MQTT event
    // waiting.
    let settled = || {
        let n = hooks
            .posts()
            .into_iter()
            .filter(|p| p.status == 200)
            .map(|p| p.id)
            .collect::<BTreeSet<_>>()
            .len();
        (n > 0 && waiting(&pg, 'w') == 0 && waiting(&pg, 'm') == n).then_some(n)
    };
    let events = wait_for(
        Duration::from_secs(60),
        "the webhooks of the first shipment",
        || {
            let n = settled()?;
            std::thread::sleep(Duration::from_secs(2));
            (settled()? == n).then_some(n)
        },
    );
    broker.restart();
    let mut sub = Subscriber::start(broker.port, got.clone());
    wait_for(
        Duration::from_secs(60),
        "the alert events published",
        || (waiting(&pg, 'm') == 0 && got.lock().unwrap().len() >= events).then_some(()),
    );
    // Both instances' tasks have had several passes over the outbox since.
    std::thread::sleep(Duration::from_secs(3));
    let published = got.lock().unwrap().clone();
    let twice: Vec<_> = counts(published.iter())
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .collect();
    assert!(
        twice.is_empty(),
        "alert events published more than once: {twice:?}"
    );
    let posts = hooks.posts();
    let ids = counts(posts.iter().map(|p| &p.id));
    let twice: Vec<_> = ids.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "webhook ids POSTed more than once: {twice:?}"
    );
    assert_eq!(ids.len(), events);
    let bodies = counts(posts.iter().map(|p| &p.body));
    assert_eq!(
        counts(published.iter()),
        bodies,
        "each alert event published once, the same events as the webhooks"
    );
    assert!(
        bodies.keys().all(|b| shipment_of(b).starts_with("OB-1-"))
            && bodies.values().all(|n| *n == 1),
        "{bodies:?}"
    );

    let events_each = events / FIRST;
    assert_eq!(
        events_each * FIRST,
        events,
        "the same events for each shipment"
    );
    let events = events_each;

    // 2. The receiver refuses: the webhooks of a second shipment with the
    // same data wait, retried.
    hooks.set(Mode::Refuse);
    create_shipment(&b, "OB-2", t0);
    wait_for(
        Duration::from_secs(60),
        "every webhook of the second shipment refused once",
        || {
            let ids: BTreeSet<String> = hooks
                .posts()
                .into_iter()
                .filter(|p| shipment_of(&p.body) == "OB-2")
                .map(|p| p.id)
                .collect();
            (ids.len() == events).then_some(())
        },
    );
    assert_eq!(waiting(&pg, 'w'), events, "nothing delivered, nothing lost");
    // The receiver stops answering: an instance's attempt holds its claim.
    // That instance is killed mid-attempt.
    hooks.set(Mode::Hold);
    let (owner, held) = wait_for(Duration::from_secs(60), "an attempt in flight", || {
        let row = pg
            .psql(
                "centre",
                "SELECT convert_from(c.v, 'UTF8') || ' ' || convert_from(o.v, 'UTF8') \
                 FROM kv c JOIN kv o ON o.tree = 'outbox' AND o.k = c.k \
                 WHERE c.tree = 'outbox_claims' LIMIT 1",
            )
            .ok()?;
        let (claim, item) = row.split_once(' ')?;
        let claim: Value = serde_json::from_str(claim).ok()?;
        let item: Value = serde_json::from_str(item).ok()?;
        Some((
            claim["owner"].as_str()?.to_string(),
            item["delivery"]["webhook"]["id"].as_str()?.to_string(),
        ))
    });
    let dead = if owner == instance(&a) {
        &mut a
    } else {
        assert_eq!(owner, instance(&b), "the claim is one of the instances'");
        &mut b
    };
    dead.kill9();
    hooks.set(Mode::Accept);
    wait_for(
        Duration::from_secs(120),
        "the survivor delivers every webhook",
        || (waiting(&pg, 'w') == 0).then_some(()),
    );
    let accepted: Vec<String> = hooks
        .posts()
        .into_iter()
        .filter(|p| p.status == 200 && shipment_of(&p.body) == "OB-2")
        .map(|p| p.id)
        .collect();
    let accepted = counts(accepted.iter());
    assert_eq!(
        accepted.len(),
        events,
        "every event delivered: {accepted:?}"
    );
    assert!(
        accepted.contains_key(&held),
        "the delivery the killed instance held ({held}) was taken over"
    );
    assert!(
        accepted.values().all(|n| *n == 1),
        "each delivered once: {accepted:?}"
    );
    // Its MQTT events went out too, once each.
    wait_for(
        Duration::from_secs(30),
        "the second shipment's events",
        || {
            let n = got
                .lock()
                .unwrap()
                .iter()
                .filter(|p| shipment_of(p) == "OB-2")
                .count();
            (n >= events).then_some(())
        },
    );
    let published = got.lock().unwrap().clone();
    let of_2: Vec<String> = published
        .into_iter()
        .filter(|p| shipment_of(p) == "OB-2")
        .collect();
    assert!(counts(of_2.iter()).values().all(|n| *n == 1), "{of_2:?}");
    assert_eq!(of_2.len(), events);
    sub.stop();
}
