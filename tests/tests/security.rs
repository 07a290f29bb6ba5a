//! Security end to end: the production Mosquitto configuration as shipped
//! (`deploy/mosquitto/prod.conf` and `acl`, paths and ports rewritten into a
//! temporary directory), a CA, broker certificate, device keys and broker
//! passwords made by `deploy/mint-device.sh` (openssl, mosquitto_passwd), the
//! real daemon, and the real `mosquitto_pub` / `mosquitto_sub` as the
//! attackers' and devices' client.
//!
//! The pattern of every negative test: each forbidden attempt carries a frame
//! the daemon *would* store had it arrived; afterwards one permitted frame is
//! published and awaited. Each client waits for its PUBACK before the next one
//! starts and the broker delivers in order, so once the permitted frame is
//! stored, anything the broker had let through would already be there.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use coldchain_proto::codec::{MAX_SIGNED_LEN, encode_signed};
use coldchain_proto::{
    Body, ChannelKind, DeviceId, DeviceKey, Frame, Measurement, Reading, Timestamp,
};
use coldchain_tests::*;

const T: Duration = Duration::from_secs(60);
const DAEMON_USER: &str = "coldchain-daemon";

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(file)
}

/// Runs a deploy script; panics with its output unless it succeeds.
fn script(name: &str, args: &[&str]) -> String {
    let out = Command::new("bash")
        .arg(deploy(name))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run bash");
    assert!(
        out.status.success(),
        "{name} {args:?}: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `KEY=value` lines of a `.secret` file written by mint-device.sh.
fn secrets(file: &Path) -> HashMap<String, String> {
    let text = std::fs::read_to_string(file).unwrap();
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// What a minted device has.
#[derive(Debug, Clone)]
struct Minted {
    id: String,
    key: DeviceKey,
    key_hex: String,
    password: String,
    cert: String,
    cert_key: String,
}

/// A production broker with two minted devices (`dev-a`, `dev-b`) and the
/// daemon's account; the daemon is started by each test as it needs.
struct Site {
    dir: tempfile::TempDir,
    broker: Mosquitto,
    /// The mutual-TLS listener (client certificate = identity).
    cert_port: u16,
    ca: String,
    /// A CA that signed nothing of this site's.
    wrong_ca: String,
    daemon_password: String,
    devs: HashMap<String, Minted>,
}

impl Site {
    fn new() -> Site {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let s = |p: &str| d.join(p).display().to_string();
        let pki = s("pki");
        script(
            "mint-device.sh",
            &["--init-pki", &pki, "--broker-name", "localhost,127.0.0.1"],
        );
        script(
            "mint-device.sh",
            &[
                "--init-pki",
                &s("wrong-pki"),
                "--broker-name",
                "localhost,127.0.0.1",
            ],
        );
        // Devices registered in a config file of their own: the daemon
        // harness writes its config itself, so the test checks this one with
        // `coldchain check-config` and passes the keys on.
        let registry = d.join("registry.toml");
        std::fs::write(&registry, "[daemon]\nid = \"site\"\n").unwrap();
        let passwd = s("broker/passwd");
        std::fs::create_dir_all(d.join("broker")).unwrap();
        let mut devs = HashMap::new();
        for id in ["dev-a", "dev-b"] {
            script(
                "mint-device.sh",
                &[
                    "--config",
                    &registry.display().to_string(),
                    "--passwd",
                    &passwd,
                    "--pki",
                    &pki,
                    "--out",
                    &s("secrets"),
                    "--quiet",
                    id,
                ],
            );
            let sec = secrets(&d.join(format!("secrets/{id}.secret")));
            let key_hex = sec["COLDCHAIN_DEVICE_KEY"].clone();
            devs.insert(
                id.to_string(),
                Minted {
                    id: id.into(),
                    key: DeviceKey::from_hex(&key_hex).unwrap(),
                    key_hex,
                    password: sec["MQTT_PASSWORD"].clone(),
                    cert: sec["MQTT_CLIENT_CERT"].clone(),
                    cert_key: sec["MQTT_CLIENT_KEY"].clone(),
                },
            );
        }
        script(
            "mint-device.sh",
            &[
                "--broker-account",
                DAEMON_USER,
                "--passwd",
                &passwd,
                "--out",
                &s("secrets"),
                "--quiet",
            ],
        );
        let daemon_password =
            secrets(&d.join(format!("secrets/{DAEMON_USER}.secret")))["MQTT_PASSWORD"].clone();
        let check = Command::new(bin("coldchain"))
            .args(["check-config", "--config"])
            .arg(&registry)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "mint-device.sh wrote a config the daemon refuses: {}",
            String::from_utf8_lossy(&check.stderr)
        );
        // Every secret file is the owner's only.
        for e in std::fs::read_dir(d.join("secrets")).unwrap() {
            let e = e.unwrap();
            let mode =
                std::os::unix::fs::PermissionsExt::mode(&e.metadata().unwrap().permissions());
            assert_eq!(mode & 0o077, 0, "{} is mode {mode:o}", e.path().display());
        }

        let broker_dir = d.join("broker");
        for f in ["ca.pem", "broker.pem", "broker.key"] {
            std::fs::copy(d.join("pki").join(f), broker_dir.join(f)).unwrap();
        }
        std::fs::copy(deploy("mosquitto/acl"), broker_dir.join("acl")).unwrap();
        let cert_port = free_port();
        let shipped = std::fs::read_to_string(deploy("mosquitto/prod.conf")).unwrap();
        let bdir = format!("{}/", broker_dir.display());
        let broker = Mosquitto::start_with_config(&broker_dir, |port| {
            let mut conf = shipped.clone();
            for (from, to) in [
                ("/etc/mosquitto/coldchain/", bdir.as_str()),
                ("/var/lib/mosquitto/", bdir.as_str()),
                (
                    "\nlistener 8883\n",
                    &format!("\nlistener {port} 127.0.0.1\n"),
                ),
                (
                    "\nlistener 8884\n",
                    &format!("\nlistener {cert_port} 127.0.0.1\n"),
                ),
                ("\nlog_dest syslog\n", "\nlog_dest stderr\n"),
            ] {
                assert!(conf.contains(from), "prod.conf no longer has {from:?}");
                conf = conf.replace(from, to);
            }
            if nix::unistd::Uid::effective().is_root() {
                conf.push_str("user root\n");
            }
            conf
        });
        Site {
            ca: s("pki/ca.pem"),
            wrong_ca: s("wrong-pki/ca.pem"),
            dir,
            broker,
            cert_port,
            daemon_password,
            devs,
        }
    }

    fn dev(&self, id: &str) -> &Minted {
        &self.devs[id]
    }

    /// The daemon over TLS with the daemon account, trusting `ca`; with the
    /// right CA, once it is connected and subscribed.
    fn daemon(&self, ca: &str) -> Daemon {
        let devices: Vec<DeviceCfg> = self
            .devs
            .values()
            .map(|m| DeviceCfg {
                key: m.key_hex.clone(),
                ..DeviceCfg::new(&m.id)
            })
            .collect();
        let opts = DaemonOpts {
            mqtt: format!(
                "host = \"127.0.0.1\"\nusername = \"{DAEMON_USER}\"\npassword = \"{}\"\nca_file = \"{ca}\"\n",
                self.daemon_password
            ),
            ..DaemonOpts::default()
        };
        let daemon = Daemon::start_with(
            &self.dir.path().join("daemon"),
            self.broker.port,
            &devices,
            &opts,
        );
        if ca == self.ca {
            wait_daemon_online(
                self.broker.port,
                &[
                    "--cafile",
                    &self.ca,
                    "-u",
                    DAEMON_USER,
                    "-P",
                    &self.daemon_password,
                ],
            );
        }
        daemon
    }

    /// mosquitto_pub on the password listener, trusting our CA, as `user`.
    fn pub_as(&self, user: &str, password: &str, topic: &str, payload: &[u8]) -> Output {
        mosquitto_pub_with(
            self.broker.port,
            &["--cafile", &self.ca, "-u", user, "-P", password],
            topic,
            payload,
        )
        .unwrap()
    }

    /// A device publishing with its own credentials.
    fn pub_dev(&self, id: &str, topic: &str, payload: &[u8]) -> Output {
        let d = self.dev(id);
        self.pub_as(&d.id, &d.password, topic, payload)
    }
}

fn frame(dev: &str, boot: u32, seq: u32, milli: i32) -> Frame {
    let r = Reading {
        channel: 0,
        kind: ChannelKind::Rtd,
        dt_ms: 0,
        value: Measurement::Valid(milli),
    };
    Frame {
        device: DeviceId::new(dev).unwrap(),
        boot,
        seq,
        time: Timestamp::Wall(1_763_769_600_000 + u64::from(seq) * 60_000),
        body: Body::Readings(heapless::Vec::from_slice(&[r]).unwrap()),
    }
}

fn signed(f: &Frame, k: &DeviceKey) -> Vec<u8> {
    let mut buf = [0u8; MAX_SIGNED_LEN];
    encode_signed(f, k, &mut buf).unwrap().to_vec()
}

fn up(dev: &str) -> String {
    format!("coldchain/v1/dev/{dev}/up")
}

fn ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Publishes a permitted frame from dev-a and waits for it to be stored;
/// then checks it is the only thing the daemon ever received.
fn only_the_permitted_frame_arrived(site: &Site, daemon: &Daemon, seq: u32) {
    let a = site.dev("dev-a");
    let out = site.pub_dev(
        "dev-a",
        &up("dev-a"),
        &signed(&frame("dev-a", 1, seq, -180_000), &a.key),
    );
    ok(&out, "permitted publish");
    wait_for(T, "the permitted frame acknowledged", || {
        (daemon.stat("acked") >= 1).then_some(())
    });
    let seqs: Vec<u64> = daemon
        .all_readings("dev-a")
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![u64::from(seq)], "logs:\n{}", daemon.logs());
    assert!(daemon.all_readings("dev-b").is_empty());
    assert_eq!(
        daemon.stat("acked"),
        1,
        "the daemon received more than the permitted frame: {}",
        daemon.get("/api/v1/stats")
    );
}

/// (e) The daemon connects over TLS with the right CA and its password, and
/// stores frames from a password device (8883) and a certificate device (8884).
#[test]
fn daemon_over_tls_with_password_stores_frames_from_both_listeners() {
    let site = Site::new();
    let daemon = site.daemon(&site.ca);
    let (a, b) = (site.dev("dev-a"), site.dev("dev-b"));
    for seq in 0..3 {
        let out = site.pub_dev(
            "dev-a",
            &up("dev-a"),
            &signed(&frame("dev-a", 1, seq, -190_000), &a.key),
        );
        ok(&out, "dev-a over TLS with its password");
    }
    let out = mosquitto_pub_with(
        site.cert_port,
        &[
            "--cafile",
            &site.ca,
            "--cert",
            &b.cert,
            "--key",
            &b.cert_key,
        ],
        &up("dev-b"),
        &signed(&frame("dev-b", 1, 0, -185_000), &b.key),
    )
    .unwrap();
    ok(&out, "dev-b with its client certificate");
    wait_for(T, "4 frames stored", || {
        (daemon.stat("readings_stored") >= 4).then_some(())
    });
    assert_eq!(daemon.all_readings("dev-a").len(), 3);
    assert_eq!(daemon.all_readings("dev-b").len(), 1);
    assert!(
        daemon.logs().contains("connected to broker"),
        "{}",
        daemon.logs()
    );
    // The daemon's retained time sync reached dev-a's down topic under the
    // ACL, and dev-a may read it.
    let (mut sub, mut r) = mosquitto_sub(
        site.broker.port,
        &[
            "--cafile",
            &site.ca,
            "-u",
            "dev-a",
            "-P",
            &a.password,
            "-t",
            "coldchain/v1/dev/dev-a/down",
            "-C",
            "1",
            "-W",
            "30",
            "-F",
            "%t",
        ],
    )
    .unwrap();
    let got = read_until(&mut r, |l| !l.is_empty());
    let _ = sub.wait();
    assert_eq!(got.as_deref(), Some("coldchain/v1/dev/dev-a/down"));
}

/// (a) No credentials, a wrong password, plain MQTT on the TLS port, no
/// certificate on the certificate port, a certificate from another CA: the
/// broker refuses every one, and the daemon stores nothing of them.
#[test]
fn clients_without_valid_credentials_cannot_publish() {
    let site = Site::new();
    let daemon = site.daemon(&site.ca);
    let a = site.dev("dev-a");
    let wrong_dir = site.dir.path().join("wrong-pki");
    // A client certificate for dev-a, signed by a CA the broker does not trust.
    let st = Command::new("openssl")
        .args(["req", "-x509", "-nodes", "-newkey", "ec", "-pkeyopt"])
        .args([
            "ec_paramgen_curve:P-256",
            "-days",
            "2",
            "-subj",
            "/CN=dev-a",
        ])
        .arg("-CA")
        .arg(wrong_dir.join("ca.pem"))
        .arg("-CAkey")
        .arg(wrong_dir.join("ca.key"))
        .arg("-keyout")
        .arg(wrong_dir.join("dev-a.key"))
        .arg("-out")
        .arg(wrong_dir.join("dev-a.pem"))
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "openssl req -CA (OpenSSL 3)");
    let forged_cert = wrong_dir.join("dev-a.pem").display().to_string();
    let forged_key = wrong_dir.join("dev-a.key").display().to_string();

    let attempts: Vec<(&str, u16, Vec<&str>)> = vec![
        (
            "no credentials",
            site.broker.port,
            vec!["--cafile", &site.ca],
        ),
        (
            "wrong password",
            site.broker.port,
            vec![
                "--cafile",
                &site.ca,
                "-u",
                "dev-a",
                "-P",
                "not-the-password",
            ],
        ),
        (
            "unknown user",
            site.broker.port,
            vec!["--cafile", &site.ca, "-u", "dev-z", "-P", &a.password],
        ),
        (
            "plain MQTT to the TLS listener",
            site.broker.port,
            vec!["-u", "dev-a", "-P", &a.password],
        ),
        (
            "no client certificate",
            site.cert_port,
            vec!["--cafile", &site.ca],
        ),
        (
            "client certificate from another CA",
            site.cert_port,
            vec![
                "--cafile",
                &site.ca,
                "--cert",
                &forged_cert,
                "--key",
                &forged_key,
            ],
        ),
    ];
    for (seq, (what, port, args)) in attempts.iter().enumerate() {
        let payload = signed(&frame("dev-a", 1, seq as u32 + 1, -170_000), &a.key);
        let out = mosquitto_pub_with(*port, args, &up("dev-a"), &payload).unwrap();
        assert!(
            !out.status.success(),
            "{what}: mosquitto_pub succeeded; broker log:\n{}",
            site.broker.log()
        );
        if what.contains("password") || what.contains("credentials") || what.contains("user") {
            assert!(
                stderr(&out).contains("not authorised"),
                "{what}: {}",
                stderr(&out)
            );
        }
    }
    only_the_permitted_frame_arrived(&site, &daemon, 0);
}

/// (b) Device A cannot publish as device B: the ACL drops A's publishes on B's
/// topics (binary and JSON, password and certificate listeners), whatever they
/// carry (B's own correctly signed frame, or one A signed), and A cannot read
/// B's down topic. The HMAC would stop the forgery too:
/// tests/tests/ingest_mqtt.rs shows the daemon refusing a frame on the wrong
/// topic or with the wrong key.
#[test]
fn a_device_cannot_publish_or_read_as_another() {
    let site = Site::new();
    let daemon = site.daemon(&site.ca);
    let (a, b) = (site.dev("dev-a"), site.dev("dev-b"));
    let b_frame = signed(&frame("dev-b", 1, 0, -160_000), &b.key);
    let a_signed_as_b = signed(&frame("dev-b", 1, 1, -160_000), &a.key);
    // (Unsigned: the daemon would refuse it too; the ACL is what is tested.)
    let json = r#"{"frame":{"device":"dev-b","boot":1,"seq":2,"time":{"unix_ms":1763769600000},"body":{"readings":[{"channel":0,"kind":"rtd","dt_ms":0,"value":{"valid":-160000}}]}}}"#;
    let b_up_json = "coldchain/v1/dev/dev-b/up/json";
    for (topic, payload) in [
        (up("dev-b"), &b_frame),
        (up("dev-b"), &a_signed_as_b),
        (b_up_json.to_string(), &json.as_bytes().to_vec()),
        // Not even the daemon's topics.
        ("coldchain/v1/dev/dev-b/down".to_string(), &b_frame),
        (
            "coldchain/v1/daemon/test/online".to_string(),
            &b"offline".to_vec(),
        ),
        // Nor another device's online status.
        (
            "coldchain/v1/dev/dev-b/online".to_string(),
            &b"offline".to_vec(),
        ),
    ] {
        // MQTT 3.1.1 cannot tell a publisher it was refused: the broker acks
        // and drops. MQTT 5 says so in the PUBACK.
        let out = site.pub_dev("dev-a", &topic, payload);
        ok(&out, "mosquitto_pub (3.1.1) completes");
        let d = site.dev("dev-a");
        let out = mosquitto_pub_with(
            site.broker.port,
            &[
                "--cafile",
                &site.ca,
                "-u",
                &d.id,
                "-P",
                &d.password,
                "-V",
                "mqttv5",
            ],
            &topic,
            payload,
        )
        .unwrap();
        assert!(
            stderr(&out).contains("Not authorized"),
            "MQTT 5 publish to {topic}: {}",
            stderr(&out)
        );
        // The certificate listener: the certificate's CN is the identity.
        let out = mosquitto_pub_with(
            site.cert_port,
            &[
                "--cafile",
                &site.ca,
                "--cert",
                &a.cert,
                "--key",
                &a.cert_key,
            ],
            &topic,
            payload,
        )
        .unwrap();
        ok(&out, "mosquitto_pub with dev-a's certificate completes");
    }
    only_the_permitted_frame_arrived(&site, &daemon, 0);
    assert_eq!(daemon.stat("rejected.device_mismatch"), 0);
    assert_eq!(daemon.stat("rejected.bad_tag"), 0);

    // dev-b's retained sync is on its down topic (dev-b reads it), but dev-a
    // subscribing there gets nothing.
    let read_down = |user: &Minted, timeout: &str| {
        let (mut sub, mut r) = mosquitto_sub(
            site.broker.port,
            &[
                "--cafile",
                &site.ca,
                "-u",
                &user.id,
                "-P",
                &user.password,
                "-t",
                "coldchain/v1/dev/dev-b/down",
                "-C",
                "1",
                "-W",
                timeout,
                "-F",
                "%t",
            ],
        )
        .unwrap();
        let got = read_until(&mut r, |l| !l.is_empty());
        let _ = sub.wait();
        got
    };
    assert_eq!(
        read_down(b, "30").as_deref(),
        Some("coldchain/v1/dev/dev-b/down")
    );
    assert_eq!(read_down(a, "2"), None, "dev-a read dev-b's down topic");
}

/// (c) A replayed frame is dropped: stored once, counted as a duplicate, also
/// after a daemon restart (deduplication is on disk, not in memory).
#[test]
fn a_replayed_frame_is_stored_once_and_counted() {
    let site = Site::new();
    let mut daemon = site.daemon(&site.ca);
    let a = site.dev("dev-a");
    let f = signed(&frame("dev-a", 3, 7, -175_000), &a.key);
    for _ in 0..3 {
        ok(&site.pub_dev("dev-a", &up("dev-a"), &f), "publish");
    }
    wait_for(T, "3 messages acknowledged", || {
        (daemon.stat("acked") >= 3).then_some(())
    });
    assert_eq!(daemon.all_readings("dev-a").len(), 1);
    assert_eq!(daemon.stat("duplicates"), 2);

    let st = daemon.stop();
    assert!(st.success(), "{}", daemon.logs());
    daemon.restart();
    ok(
        &site.pub_dev("dev-a", &up("dev-a"), &f),
        "publish after restart",
    );
    wait_for(T, "the replay after restart acknowledged", || {
        (daemon.stat("duplicates") >= 1).then_some(())
    });
    assert_eq!(daemon.all_readings("dev-a").len(), 1);
    assert_eq!(
        daemon.stat("readings_stored"),
        0,
        "stored again after restart"
    );
}

/// (d) TLS with the wrong CA fails: mosquitto_pub trusting another CA cannot
/// connect, and a daemon trusting another CA does not connect, says why in
/// its log, and receives nothing.
#[test]
fn tls_with_the_wrong_ca_fails() {
    let site = Site::new();
    let a = site.dev("dev-a");
    let f = signed(&frame("dev-a", 1, 0, -175_000), &a.key);
    let out = mosquitto_pub_with(
        site.broker.port,
        &["--cafile", &site.wrong_ca, "-u", "dev-a", "-P", &a.password],
        &up("dev-a"),
        &f,
    )
    .unwrap();
    assert!(
        !out.status.success(),
        "published over TLS with the wrong CA"
    );
    assert!(
        stderr(&out)
            .to_lowercase()
            .contains("certificate verify failed")
            || stderr(&out).contains("TLS"),
        "{}",
        stderr(&out)
    );

    let daemon = site.daemon(&site.wrong_ca);
    // The daemon serves its API but keeps failing to connect, saying why.
    let why = wait_for(T, "the daemon to log a TLS failure", || {
        daemon
            .logs()
            .lines()
            .find(|l| l.contains("broker connection lost") && l.contains("certificate"))
            .map(str::to_string)
    });
    // Both CAs have the same name, so rustls finds "the" issuer and the
    // signature check fails (BadSignature); a CA of another name would give
    // UnknownIssuer. Either way the reason is in the log.
    assert!(
        why.contains("invalid peer certificate"),
        "the log line should say the broker's certificate was refused: {why}"
    );
    // A device publishes for it: it never arrives.
    ok(&site.pub_dev("dev-a", &up("dev-a"), &f), "dev-a publishes");
    let failures = |d: &Daemon| d.logs().matches("broker connection lost").count();
    let before = failures(&daemon);
    wait_for(T, "two more connection attempts", || {
        (failures(&daemon) >= before + 2).then_some(())
    });
    assert!(
        !daemon.logs().contains("connected to broker"),
        "{}",
        daemon.logs()
    );
    assert_eq!(daemon.stat("acked"), 0);
    assert!(daemon.all_readings("dev-a").is_empty());
}

/// GET with an optional bearer token; status and body (status 0: no connection).
fn get_with(port: u16, path: &str, token: Option<&str>) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = agent.get(format!("http://127.0.0.1:{port}{path}"));
    if let Some(t) = token {
        req = req.header("Authorization", &format!("Bearer {t}"));
    }
    match req.call() {
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            (status, resp.body_mut().read_to_string().unwrap_or_default())
        }
        // Not listening (yet): status 0.
        Err(e) => (0, e.to_string()),
    }
}

/// The API refuses a change with a missing or wrong token (and changes
/// nothing), refuses every change when no token is configured, and when bound
/// beyond loopback refuses reads without the token too.
#[test]
fn the_api_refuses_a_missing_or_wrong_token() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&dir.path().join("broker"));
    let opts = DaemonOpts {
        http: format!("token = \"{TEST_TOKEN}\""),
        ..DaemonOpts::default()
    };
    let daemon = Daemon::start_with(
        &dir.path().join("daemon"),
        broker.port,
        &[DeviceCfg::new("dev-a")],
        &opts,
    );
    let shipment = |id: &str| {
        serde_json::json!({
            "by": "dispatcher anna",
            "id": id,
            "product": "test product",
            "profile": "cryo-ln2",
            "watch": [{"device": "dev-a", "channel": 0}],
            "origin": "Site A",
            "destination": "Lab B",
            "departure_ms": 1_763_769_600_000i64,
        })
    };
    let wrong_same_length: String = TEST_TOKEN
        .chars()
        .rev()
        .collect::<String>()
        .replace('t', "x");
    assert_eq!(wrong_same_length.len(), TEST_TOKEN.len());
    for (token, why) in [
        (None, "missing"),
        (Some("nope"), "wrong"),
        (Some(wrong_same_length.as_str()), "wrong"),
        (Some(&TEST_TOKEN[..TEST_TOKEN.len() - 1]), "wrong"),
        // ("Bearer " with nothing after it may be trimmed to "Bearer" on the way.)
        (Some(""), "bearer token"),
    ] {
        let (status, body) = http_post(
            daemon.http_port,
            "/api/v1/shipments",
            token,
            &shipment("SHP-X"),
        );
        assert_eq!(status, 401, "token {token:?}: {body}");
        assert!(body.to_string().contains(why), "token {token:?}: {body}");
    }
    let (status, body) = http_post(
        daemon.http_port,
        "/api/v1/shipments",
        Some(TEST_TOKEN),
        &shipment("SHP-1"),
    );
    assert!((200..300).contains(&status), "{status}: {body}");
    // Only the authorised change happened; reads on loopback need no token.
    let list = daemon.get("/api/v1/shipments").to_string();
    assert!(list.contains("SHP-1") && !list.contains("SHP-X"), "{list}");

    // No token configured and no account: no change is possible, whatever
    // is sent (the token is unknown).
    let ro = Daemon::start(
        &dir.path().join("daemon-ro"),
        broker.port,
        &[DeviceCfg::new("dev-a")],
        "",
    );
    let (status, body) = http_post(
        ro.http_port,
        "/api/v1/shipments",
        Some(TEST_TOKEN),
        &shipment("SHP-2"),
    );
    assert_eq!(status, 401, "{body}");

    // Beyond loopback check-config requires TLS (or plain HTTP allowed
    // explicitly), and reads need a credential.
    let cfg_dir = dir.path().join("daemon-open");
    std::fs::create_dir_all(&cfg_dir).unwrap();
    let port = free_port();
    let base = format!(
        "[daemon]\nid = \"open\"\ndata_dir = \"{}\"\n\n[mqtt]\nport = {}\n\n[http]\nbind = \"0.0.0.0:{port}\"\n",
        cfg_dir.join("data").display(),
        broker.port
    );
    let cfg = cfg_dir.join("coldchain.toml");
    std::fs::write(&cfg, &base).unwrap();
    let check = Command::new(bin("coldchain"))
        .args(["check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!check.status.success());
    assert!(
        stderr(&check).contains("http.tls_cert"),
        "{}",
        stderr(&check)
    );
    std::fs::write(
        &cfg,
        format!("{base}token = \"{TEST_TOKEN}\"\nallow_plain_http = true\n"),
    )
    .unwrap();
    let mut cmd = Command::new(bin("coldchain"));
    cmd.arg("run").arg("--config").arg(&cfg);
    let _open = Proc::spawn("coldchain", cmd, &cfg_dir.join("daemon.log"));
    wait_for(T, "the open daemon's /healthz", || {
        (get_with(port, "/healthz", None).0 == 200).then_some(())
    });
    assert_eq!(get_with(port, "/api/v1/stats", None).0, 401);
    assert_eq!(get_with(port, "/api/v1/stats", Some("nope")).0, 401);
    assert_eq!(get_with(port, "/api/v1/stats", Some(TEST_TOKEN)).0, 200);
}

/// `coldchain-sim` as the minted `dev-a`, through the production broker:
/// TLS against the site CA (`--ca-file`), its MQTT password (`--username`,
/// `--password` into the firmware's CONNECT), its last will under the ACL.
/// Every frame is stored, stamped by the device clock (the retained sync was
/// readable and applied). A wrong password and a foreign CA are refused at
/// start with a reason.
#[test]
fn the_simulator_connects_over_tls_with_its_password() {
    let site = Site::new();
    let daemon = site.daemon(&site.ca);
    let a = site.dev("dev-a");
    let broker = format!("127.0.0.1:{}", site.broker.port);
    let sim = |password: &str, ca: &str| {
        Command::new(bin("coldchain-sim"))
            .args(["--broker", &broker, "--device", "dev-a"])
            .args(["--key", &a.key_hex, "--ca-file", ca])
            .args(["--username", "dev-a", "--password", password])
            .args(["--frames", "5", "--interval-ms", "0"])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = sim(&a.password, &site.ca);
    ok(&out, "the simulator over TLS with dev-a's password");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: serde_json::Value =
        serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap();
    assert_eq!(summary["frames"], 5, "{summary}");
    wait_for(T, "20 readings stored", || {
        (daemon.all_readings("dev-a").len() >= 20).then_some(())
    });
    let rows = daemon.all_readings("dev-a");
    assert_eq!(rows.len(), 20);
    for r in &rows {
        assert_eq!(r["time_source"], "device", "{r}");
    }

    // Its online status, read by the daemon account with the real
    // mosquitto_sub: the clean exit of the run above left a retained
    // "offline" (said by the device itself: a DISCONNECT suppresses the will).
    let online_topic = "coldchain/v1/dev/dev-a/online";
    let sub = |extra: &[&str]| {
        let mut args = vec![
            "--cafile",
            &site.ca,
            "-u",
            DAEMON_USER,
            "-P",
            &site.daemon_password,
            "-t",
            online_topic,
        ];
        args.extend_from_slice(extra);
        mosquitto_sub(site.broker.port, &args).unwrap()
    };
    let (mut s, mut r) = sub(&["-C", "1", "-W", "30"]);
    let got = read_until(&mut r, |_| true);
    let _ = s.wait();
    assert_eq!(got.as_deref(), Some("offline"), "after a clean exit");
    // A running simulator is "online" (retained, after its CONNACK); killed
    // with SIGKILL it says nothing more, and the broker publishes its last
    // will "offline" under the ACL.
    let (mut s, mut r) = sub(&["-W", "120"]);
    let mut cmd = Command::new(bin("coldchain-sim"));
    cmd.args(["--broker", &broker, "--device", "dev-a"])
        .args(["--key", &a.key_hex, "--ca-file", &site.ca])
        .args(["--username", "dev-a", "--password", &a.password])
        .args(["--interval-ms", "1000"]);
    let mut running = Proc::spawn(
        "coldchain-sim",
        cmd,
        &site.dir.path().join("sim-running.log"),
    );
    assert_eq!(
        read_until(&mut r, |l| l == "online").as_deref(),
        Some("online"),
        "the running simulator never said online: {}",
        site.broker.log()
    );
    running.kill9();
    assert_eq!(
        read_until(&mut r, |l| l == "offline").as_deref(),
        Some("offline"),
        "no last will after SIGKILL: {}",
        site.broker.log()
    );
    let _ = s.kill();
    let _ = s.wait();

    let out = sim("not-the-password", &site.ca);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("cannot connect to the MQTT broker") && err.contains("dev-a"),
        "{err}"
    );

    let out = sim(&a.password, &site.wrong_ca);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("TLS handshake"), "{err}");
    assert_eq!(daemon.all_readings("dev-a").len(), 20);
}
