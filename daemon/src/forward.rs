//! Forwarding to a central broker: every verified frame (its original signed
//! bytes, so the centre can verify the device's tag itself), every alert
//! event and every shipment status, published QoS 1 to an upstream MQTT
//! 3.1.1 broker (any: a Mosquitto, EMQX, HiveMQ or VerneMQ cluster).
//!
//! * **Persisted, in order.** Items wait in the `forward` tree, keyed by a
//!   monotonic id, so per device they leave in the order they were stored.
//!   A frame's entry is written before the group commit that makes the frame
//!   durable, so it is durable exactly when the frame is.
//! * **At least once.** An item leaves the tree only when the upstream
//!   broker's PUBACK for it has arrived. After a crash or a reconnect the
//!   unacknowledged ones are sent again. Duplicates on the wire are possible;
//!   the centre dedupes frames by `(device, boot, seq)`, which every frame
//!   carries (see `deploy/README.md`).
//! * **Outages of days.** The backlog lives on disk; memory holds one page of
//!   it (`PAGE` items) at a time.
//!
//! Topics upstream: `{prefix}/dev/{device}/up` (or `/up/json`) with the
//! device's payload unchanged, `{prefix}/ship/{shipment}/alert`,
//! `{prefix}/ship/{shipment}/status` (retained),
//! `{prefix}/ship/{shipment}/record` (the shipment record, JSON, after each
//! change made here: see `crate::sites`); `prefix` defaults to
//! `coldchain/v1/edge/{daemon.id}`.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc, watch};

use crate::config::Upstream;

const PAGE: usize = 256;

/// One item waiting to go upstream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// Topic (already prefixed).
    pub topic: String,
    /// Payload, unchanged.
    #[serde(with = "hex_bytes")]
    pub payload: Vec<u8>,
    /// Retained.
    pub retain: bool,
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(b))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s).map_err(serde::de::Error::custom)
    }
}

/// The forward queue. Cheap to clone; a no-op when no upstream is configured.
#[derive(Debug, Clone)]
pub struct Forward {
    db: crate::kv::Db,
    tree: crate::kv::Tree,
    prefix: Option<String>,
    wake: std::sync::Arc<Notify>,
}

impl Forward {
    /// Opens the `forward` tree; `prefix` is `None` when forwarding is off.
    pub fn open(db: &crate::kv::Db, prefix: Option<String>) -> crate::kv::Result<Self> {
        Ok(Forward {
            db: db.clone(),
            tree: db.open_tree("forward")?,
            prefix,
            wake: std::sync::Arc::new(Notify::new()),
        })
    }

    /// Whether forwarding is on.
    pub fn enabled(&self) -> bool {
        self.prefix.is_some()
    }

    /// Queues a publish under the upstream prefix (`tail` like `dev/x/up`).
    /// Not yet durable: the caller's next store sync makes it so.
    pub fn push(&self, tail: &str, payload: Vec<u8>, retain: bool) -> anyhow::Result<()> {
        let Some(prefix) = &self.prefix else {
            return Ok(());
        };
        let item = Item {
            topic: format!("{prefix}/{tail}"),
            payload,
            retain,
        };
        self.tree.insert(
            self.db.generate_id()?.to_be_bytes(),
            serde_json::to_vec(&item)?,
        )?;
        Ok(())
    }

    /// Wakes the forwarder.
    pub fn wake(&self) {
        self.wake.notify_waiters();
    }

    /// Items waiting.
    pub fn depth(&self) -> crate::kv::Result<usize> {
        self.tree.len()
    }

    fn page(&self) -> anyhow::Result<Vec<(crate::kv::IVec, Item)>> {
        let mut out = Vec::new();
        for kv in self.tree.iter().take(PAGE) {
            let (k, v) = kv?;
            out.push((k, serde_json::from_slice(&v)?));
        }
        Ok(out)
    }
}

/// Publishes the queue to the upstream broker until `stop`.
///
/// The same connection subscribes to the shipment records the centre
/// publishes (retained, [`crate::sites::topics::FLEET_SHIPMENTS`]) and hands them
/// to `records`. The session is clean: the retained records come again at
/// every connection, so one lost in a crash before it was merged comes back.
pub async fn run(
    up: Upstream,
    client_id: String,
    fwd: Forward,
    records: mpsc::UnboundedSender<crate::sites::topics::Incoming>,
    mut stop: watch::Receiver<bool>,
) {
    let mut o = MqttOptions::new(client_id, up.host.clone(), up.port);
    o.set_keep_alive(Duration::from_secs(30))
        .set_clean_session(true);
    if let Some(u) = &up.username {
        o.set_credentials(u.clone(), up.password.clone().unwrap_or_default());
    }
    if let Some(ca) = &up.ca_file {
        match std::fs::read(ca) {
            Ok(ca) => {
                o.set_transport(rumqttc::Transport::tls_with_config(
                    rumqttc::TlsConfiguration::Simple {
                        ca,
                        alpn: None,
                        client_auth: None,
                    },
                ));
            }
            Err(e) => {
                tracing::error!("key upstream.ca_file: cannot read {}: {e}", ca.display());
                return;
            }
        }
    }
    let (client, mut eventloop) = AsyncClient::new(o, 64);
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<u16>();
    let (conn_tx, mut conn_rx) = watch::channel(false);
    let mut stop2 = stop.clone();
    let target = format!("{}:{}", up.host, up.port);
    let sub = client.clone();
    let ready = up
        .centre_group
        .as_deref()
        .map(crate::sites::topics::ready_topic);
    let poller = tokio::spawn(async move {
        let mut backoff = Duration::from_millis(250);
        loop {
            tokio::select! {
                ev = eventloop.poll() => match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        tracing::info!(upstream = %target, "forwarding: connected");
                        backoff = Duration::from_millis(250);
                        if let Err(e) = sub.try_subscribe(crate::sites::topics::fleet_filter(), QoS::AtLeastOnce) {
                            tracing::error!("cannot queue the subscription to the centre's shipments: {e}");
                        }
                        match &ready {
                            // Forward once the centre says it is subscribed.
                            Some(t) => {
                                if let Err(e) = sub.try_subscribe(t.clone(), QoS::AtMostOnce) {
                                    tracing::error!("cannot queue the subscription to {t}: {e}");
                                }
                            }
                            None => { let _ = conn_tx.send(true); }
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) if ready.as_deref() == Some(p.topic.as_str()) => {
                        if !*conn_tx.borrow() {
                            tracing::info!(upstream = %target, "forwarding: the centre is subscribed");
                            let _ = conn_tx.send(true);
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(a))) => { let _ = ack_tx.send(a.pkid); }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let _ = records.send(crate::sites::topics::Incoming {
                            from: "centre".into(),
                            payload: p.payload.to_vec(),
                            ack: None,
                        });
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if *conn_tx.borrow() {
                            tracing::warn!(upstream = %target, "forwarding: connection lost, items stay queued on disk: {e}");
                        }
                        let _ = conn_tx.send(false);
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                },
                r = stop2.changed() => if r.is_err() || *stop2.borrow() { return; },
            }
        }
    });
    'outer: loop {
        if *stop.borrow() {
            break;
        }
        if !*conn_rx.borrow() {
            tokio::select! {
                _ = conn_rx.changed() => {}
                r = stop.changed() => if r.is_err() || *stop.borrow() { break; },
            }
            continue;
        }
        let page = match fwd.page() {
            Ok(p) => p,
            Err(e) => {
                tracing::error!("forwarding: {e:#}");
                Vec::new()
            }
        };
        if page.is_empty() {
            tokio::select! {
                _ = fwd.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                r = stop.changed() => if r.is_err() || *stop.borrow() { break; },
            }
            continue;
        }
        for (key, item) in page {
            while ack_rx.try_recv().is_ok() {}
            let sent = client
                .publish(
                    item.topic.clone(),
                    QoS::AtLeastOnce,
                    item.retain,
                    item.payload.clone(),
                )
                .await;
            let acked = sent.is_ok()
                && tokio::time::timeout(Duration::from_secs(10), ack_rx.recv())
                    .await
                    .is_ok_and(|a| a.is_some());
            if !acked {
                // Reconnect and start the page again: order is kept.
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue 'outer;
            }
            if let Err(e) = fwd.tree.remove(&key) {
                tracing::error!("forwarding: {e}");
            }
            if *stop.borrow() {
                break 'outer;
            }
        }
        let _ = fwd.db.flush_async().await;
    }
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_secs(1), poller).await;
}
