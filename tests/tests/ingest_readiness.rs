//! `/readyz` tells whether the daemon can take data: 503 with the reason
//! while it is not connected to its broker, 200 once it is back.

use std::time::Duration;

use coldchain_tests::*;

const T: Duration = Duration::from_secs(60);

fn readyz(port: u16) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut r = agent
        .get(&format!("http://127.0.0.1:{port}/readyz"))
        .call()
        .unwrap();
    (
        r.status().as_u16(),
        r.body_mut().read_to_string().unwrap_or_default(),
    )
}

fn metric(d: &Daemon, name: &str) -> Option<u64> {
    let m = d.get("/metrics");
    m.as_str()?
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Issue 10, case 1: /readyz is 503 naming the broker while it is down, 200
/// again once the daemon has reconnected; /metrics shows the connection
/// state and counts the reconnects.
#[test]
fn readyz_is_503_while_the_broker_is_down() {
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Mosquitto::start(&dir.path().join("broker"));
    let daemon = Daemon::start(&dir.path().join("daemon"), broker.port, &[], "");
    let port = daemon.http_port;
    wait_for(T, "/readyz 200 while connected", || {
        (readyz(port).0 == 200).then_some(())
    });
    assert_eq!(metric(&daemon, "coldchain_mqtt_connected"), Some(1));

    broker.stop();
    let body = wait_for(T, "/readyz 503 with the broker down", || {
        let (st, body) = readyz(port);
        (st == 503).then_some(body)
    });
    assert!(
        body.contains(&format!(
            "not connected to the broker at 127.0.0.1:{}",
            broker.port
        )),
        "{body}"
    );
    assert_eq!(metric(&daemon, "coldchain_mqtt_connected"), Some(0));
    assert!(metric(&daemon, "coldchain_mqtt_reconnects_total").unwrap_or(0) >= 1);

    broker.restart();
    wait_for(T, "/readyz 200 after the broker is back", || {
        (readyz(port).0 == 200).then_some(())
    });
    assert_eq!(metric(&daemon, "coldchain_mqtt_connected"), Some(1));
}
