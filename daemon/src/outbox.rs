//! The persisted outbox: alert events, shipment status and webhooks are
//! written here in the same durable step as the alert itself, then delivered
//! at least once, surviving restarts and outages.
//!
//! | key | what |
//! | --- | --- |
//! | `m` ‖ id | an MQTT publish (alert events), in order |
//! | `s` ‖ shipment | the latest retained shipment status (a newer one replaces it) |
//! | `w` ‖ id | a webhook POST |
//! | `f` ‖ shipment | a centre's shipment record for the fleet (retained; a newer one replaces it) |
//!
//! A fleet record (`crate::sites`) may be merged by several instances of a
//! centre sharing one database, each queueing the record it wrote, and two
//! instances' publishes may reach the broker in either order. So, once a
//! fleet record is acknowledged by the broker, the stored shipment is read
//! again: when it is no longer what was published, it is queued again. The
//! last publish of a record is therefore never older than the stored
//! record: whichever publish lands last, its deliverer checked the store
//! after the broker had it, and re-queued anything newer.
//!
//! MQTT items go out on a connection of their own, one at a time, and leave
//! the outbox only when the broker's PUBACK for them has arrived. Webhooks are
//! POSTed as [Standard Webhooks](https://www.standardwebhooks.com/) sign them:
//!
//! * `webhook-id`: `msg_` and 32 random hex digits, chosen when the delivery
//!   is queued and the same on every retry (receivers dedupe on it);
//! * `webhook-timestamp`: the attempt's time, Unix seconds;
//! * `webhook-signature`: `v1,` and the base64 of HMAC-SHA256 with the
//!   webhook's key over `{id}.{timestamp}.{body}`.
//!
//! So a receiver can refuse a stale delivery (its timestamp is signed) and a
//! replayed one (its id is signed); `daemon/examples/webhook_receiver.rs`
//! does both. A failure is retried with exponential backoff up to 5 minutes
//! apart, forever.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tokio::sync::{Notify, mpsc, watch};

use crate::config::{Config, Webhook};
use crate::ingest::now_ms;

/// What to deliver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// An MQTT publish, QoS 1.
    Mqtt {
        /// Topic.
        topic: String,
        /// Payload (JSON text).
        payload: String,
        /// Retained.
        retain: bool,
    },
    /// An HTTP POST of JSON.
    Webhook {
        /// URL.
        url: String,
        /// Body (JSON text).
        body: String,
        /// Index of the webhook in the config (for its secret).
        hook: usize,
        /// The `webhook-id`, the same on every attempt (`None` in items
        /// queued by earlier versions: then derived from the outbox key).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
}

/// An item and its delivery state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// What.
    pub delivery: Delivery,
    /// When queued, ms.
    pub created_ms: i64,
    /// Attempts so far.
    pub attempts: u32,
    /// Not before, ms.
    pub next_ms: i64,
    /// Last failure.
    pub last_error: Option<String>,
}

/// The outbox tree.
#[derive(Debug, Clone)]
pub struct Outbox {
    db: crate::kv::Db,
    tree: crate::kv::Tree,
    shipments: crate::kv::Tree,
    wake: Arc<Notify>,
}

impl Outbox {
    /// Opens the `outbox` tree.
    pub fn open(db: &crate::kv::Db) -> crate::kv::Result<Self> {
        Ok(Outbox {
            db: db.clone(),
            tree: db.open_tree("outbox")?,
            shipments: db.open_tree("shipments")?,
            wake: Arc::new(Notify::new()),
        })
    }

    fn put(&self, key: Vec<u8>, d: Delivery) -> anyhow::Result<()> {
        let now = now_ms();
        let item = Item {
            delivery: d,
            created_ms: now,
            attempts: 0,
            next_ms: now,
            last_error: None,
        };
        self.tree.insert(key, serde_json::to_vec(&item)?)?;
        Ok(())
    }

    /// Queues an MQTT publish (not yet durable: the caller syncs, then calls [`Outbox::wake`]).
    pub fn mqtt(&self, topic: String, payload: String, retain: bool) -> anyhow::Result<()> {
        let mut k = vec![b'm'];
        k.extend_from_slice(&self.db.generate_id()?.to_be_bytes());
        self.put(
            k,
            Delivery::Mqtt {
                topic,
                payload,
                retain,
            },
        )
    }

    /// Queues the retained status of a shipment, replacing an undelivered older one.
    pub fn status(&self, shipment: &str, topic: String, payload: String) -> anyhow::Result<()> {
        let mut k = vec![b's'];
        k.extend_from_slice(shipment.as_bytes());
        self.put(
            k,
            Delivery::Mqtt {
                topic,
                payload,
                retain: true,
            },
        )
    }

    /// Queues a centre's shipment record for the fleet (retained on
    /// `topic`), replacing an undelivered older one; see the module docs for
    /// how the last publish is kept the stored record.
    pub fn fleet(&self, shipment: &str, topic: String, payload: String) -> anyhow::Result<()> {
        let mut k = vec![b'f'];
        k.extend_from_slice(shipment.as_bytes());
        self.put(
            k,
            Delivery::Mqtt {
                topic,
                payload,
                retain: true,
            },
        )
    }

    /// After a fleet record was acknowledged: queues the stored shipment
    /// again when it is no longer the record published.
    fn fleet_recheck(&self, key: &[u8], topic: &str, published: &str) -> anyhow::Result<()> {
        let id = String::from_utf8_lossy(&key[1..]);
        let Some(stored) = self.shipments.get(id.as_bytes())? else {
            return Ok(());
        };
        let same = serde_json::from_str::<serde_json::Value>(published).ok()
            == serde_json::from_slice::<serde_json::Value>(&stored).ok();
        if !same {
            self.fleet(&id, topic.to_string(), String::from_utf8(stored.to_vec())?)?;
            self.flush();
        }
        Ok(())
    }

    /// Queues a webhook POST.
    pub fn webhook(&self, hook: usize, url: String, body: String) -> anyhow::Result<()> {
        let mut k = vec![b'w'];
        k.extend_from_slice(&self.db.generate_id()?.to_be_bytes());
        let mut r = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut r);
        self.put(
            k,
            Delivery::Webhook {
                url,
                body,
                hook,
                id: Some(format!("msg_{}", hex::encode(r))),
            },
        )
    }

    /// Wakes the delivery tasks.
    pub fn wake(&self) {
        self.wake.notify_waiters();
    }

    /// Items waiting.
    pub fn depth(&self) -> usize {
        self.tree.len()
    }

    /// Items with the given key prefix that are due, oldest first.
    fn due(&self, prefix: u8, now: i64) -> anyhow::Result<Vec<(crate::kv::IVec, Item)>> {
        let mut out = Vec::new();
        for kv in self.tree.scan_prefix([prefix]) {
            let (k, v) = kv?;
            let item: Item = serde_json::from_slice(&v)?;
            if item.next_ms <= now {
                out.push((k, item));
            }
        }
        Ok(out)
    }

    /// Removes a delivered item, unless it was replaced meanwhile (status).
    fn done(&self, key: &crate::kv::IVec, item: &Item) -> anyhow::Result<()> {
        let cur = self.tree.get(key)?;
        if let Some(cur) = cur {
            let cur: Item = serde_json::from_slice(&cur)?;
            if cur.delivery == item.delivery {
                self.tree.remove(key)?;
            }
        }
        Ok(())
    }

    fn failed(&self, key: &crate::kv::IVec, mut item: Item, err: String) -> anyhow::Result<()> {
        item.attempts += 1;
        let backoff = (1000i64 << item.attempts.min(9)).min(300_000);
        item.next_ms = now_ms() + backoff;
        item.last_error = Some(err);
        // Only if it was not replaced or delivered meanwhile.
        let cur = self.tree.get(key)?;
        if let Some(cur) = cur {
            let cur_item: Item = serde_json::from_slice(&cur)?;
            if cur_item.delivery == item.delivery {
                let _ =
                    self.tree
                        .compare_and_swap(key, Some(cur), Some(serde_json::to_vec(&item)?))?;
            }
        }
        Ok(())
    }

    /// Flushes sled (and fsyncs): used after removals so a restart does not
    /// redeliver too much. Delivery is at least once either way.
    fn flush(&self) {
        let _ = self.db.flush();
    }
}

/// The `webhook-signature` header value of a delivery (Standard Webhooks):
/// `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`.
pub fn signature(key: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    use base64::Engine;
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body.as_bytes());
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

/// Delivers MQTT items over a connection of its own until `stop`.
pub async fn run_mqtt(cfg: Config, outbox: Outbox, mut stop: watch::Receiver<bool>) {
    let m = &cfg.mqtt;
    let mut o = MqttOptions::new(format!("{}-out", cfg.client_id()), m.host.clone(), m.port);
    o.set_keep_alive(Duration::from_secs(m.keep_alive_s.max(5)))
        .set_clean_session(true);
    if let Some(u) = &m.username {
        o.set_credentials(u.clone(), m.password.clone().unwrap_or_default());
    }
    if let Some(t) = crate::ingest::mqtt::tls_transport(&cfg) {
        match t {
            Ok(t) => {
                o.set_transport(t);
            }
            Err(e) => {
                tracing::error!("outbox: {e:#}");
                return;
            }
        }
    }
    let (client, mut eventloop) = AsyncClient::new(o, 64);
    let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<u16>();
    let (conn_tx, conn_rx) = watch::channel(false);
    let mut stop2 = stop.clone();
    let poller = tokio::spawn(async move {
        loop {
            tokio::select! {
                ev = eventloop.poll() => match ev {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => { let _ = conn_tx.send(true); }
                    Ok(Event::Incoming(Packet::PubAck(a))) => { let _ = ack_tx.send(a.pkid); }
                    Ok(_) => {}
                    Err(e) => {
                        let _ = conn_tx.send(false);
                        tracing::debug!("outbox connection: {e}");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                },
                r = stop2.changed() => if r.is_err() || *stop2.borrow() { return; },
            }
        }
    });
    loop {
        if *stop.borrow() {
            break;
        }
        let due = outbox
            .due(b'm', now_ms())
            .and_then(|mut v| {
                v.extend(outbox.due(b's', now_ms())?);
                v.extend(outbox.due(b'f', now_ms())?);
                Ok(v)
            })
            .unwrap_or_else(|e| {
                tracing::error!("outbox: {e:#}");
                Vec::new()
            });
        let mut delivered = false;
        for (key, item) in due {
            let Delivery::Mqtt {
                topic,
                payload,
                retain,
            } = &item.delivery
            else {
                continue;
            };
            if !*conn_rx.borrow() {
                break;
            }
            while ack_rx.try_recv().is_ok() {}
            let sent = client
                .publish(
                    topic.clone(),
                    QoS::AtLeastOnce,
                    *retain,
                    payload.clone().into_bytes(),
                )
                .await;
            let acked = sent.is_ok()
                && tokio::time::timeout(Duration::from_secs(10), ack_rx.recv())
                    .await
                    .is_ok_and(|a| a.is_some());
            let r = if acked {
                delivered = true;
                outbox.done(&key, &item).and_then(|()| {
                    if key.first() == Some(&b'f') {
                        outbox.fleet_recheck(&key, topic, payload)
                    } else {
                        Ok(())
                    }
                })
            } else {
                outbox.failed(&key, item.clone(), "no PUBACK from the broker".into())
            };
            if let Err(e) = r {
                tracing::error!("outbox: {e:#}");
            }
        }
        if delivered {
            outbox.flush();
        }
        tokio::select! {
            _ = outbox.wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(1000)) => {}
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_secs(1), poller).await;
}

/// Delivers webhook items until `stop`.
pub async fn run_webhooks(hooks: Vec<Webhook>, outbox: Outbox, mut stop: watch::Receiver<bool>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into();
    loop {
        let due = outbox.due(b'w', now_ms()).unwrap_or_else(|e| {
            tracing::error!("outbox: {e:#}");
            Vec::new()
        });
        for (key, item) in due {
            if *stop.borrow() {
                return;
            }
            let Delivery::Webhook {
                url,
                body,
                hook,
                id,
            } = &item.delivery
            else {
                continue;
            };
            let Some(Ok(secret)) = hooks.get(*hook).map(|h| h.signing_key(*hook)) else {
                // The config changed since it was queued (fewer webhooks, or
                // a bad secret, which check-config refuses): keep it, say so.
                let why = format!("no usable [[webhooks]] entry {hook} in the config");
                tracing::error!(url = %url, "webhook: {why}");
                if let Err(e) = outbox.failed(&key, item.clone(), why) {
                    tracing::error!("outbox: {e:#}");
                }
                continue;
            };
            let delivery_id = id
                .clone()
                .unwrap_or_else(|| format!("msg_{}", hex::encode(&key)));
            let (url, body, agent) = (url.clone(), body.clone(), agent.clone());
            let result = tokio::task::spawn_blocking(move || {
                let ts = now_ms().div_euclid(1000);
                agent
                    .post(&url)
                    .header("Content-Type", "application/json")
                    .header("webhook-id", &delivery_id)
                    .header("webhook-timestamp", &ts.to_string())
                    .header(
                        "webhook-signature",
                        &signature(&secret, &delivery_id, ts, &body),
                    )
                    .send(&body)
                    .map(|r| r.status().as_u16())
            })
            .await;
            let r = match result {
                Ok(Ok(s)) if (200..300).contains(&s) => outbox.done(&key, &item),
                Ok(Ok(s)) => {
                    tracing::warn!(url = %item_url(&item), status = s, attempts = item.attempts + 1, "webhook refused; will retry");
                    outbox.failed(&key, item.clone(), format!("HTTP {s}"))
                }
                Ok(Err(e)) => {
                    tracing::warn!(url = %item_url(&item), attempts = item.attempts + 1, "webhook failed; will retry: {e}");
                    outbox.failed(&key, item.clone(), e.to_string())
                }
                Err(e) => outbox.failed(&key, item.clone(), e.to_string()),
            };
            if let Err(e) = r {
                tracing::error!("outbox: {e:#}");
            }
        }
        tokio::select! {
            _ = outbox.wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

fn item_url(i: &Item) -> &str {
    match &i.delivery {
        Delivery::Webhook { url, .. } => url,
        Delivery::Mqtt { topic, .. } => topic,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_the_standard_webhooks_v1_signature() {
        // The example of the Standard Webhooks reference libraries
        // (standard-webhooks/libraries, python/tests).
        use base64::Engine;
        let key = base64::engine::general_purpose::STANDARD
            .decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .unwrap();
        assert_eq!(
            signature(
                &key,
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1614265330,
                r#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn a_webhook_keeps_its_id_across_retries() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::kv::Db::from(sled::open(dir.path()).unwrap());
        let o = Outbox::open(&db).unwrap();
        o.webhook(0, "http://x".into(), "{}".into()).unwrap();
        o.webhook(0, "http://x".into(), "{}".into()).unwrap();
        let due = o.due(b'w', i64::MAX).unwrap();
        let id = |i: &Item| match &i.delivery {
            Delivery::Webhook { id, .. } => id.clone().unwrap(),
            Delivery::Mqtt { .. } => unreachable!(),
        };
        assert_ne!(id(&due[0].1), id(&due[1].1));
        assert!(id(&due[0].1).starts_with("msg_"));
        let (k, item) = due[0].clone();
        o.failed(&k, item.clone(), "boom".into()).unwrap();
        let again = o.due(b'w', i64::MAX).unwrap();
        assert_eq!(id(&again[0].1), id(&item));
    }

    #[test]
    fn status_replaces_an_undelivered_older_status() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::kv::Db::from(sled::open(dir.path()).unwrap());
        let o = Outbox::open(&db).unwrap();
        o.status("S1", "t".into(), "{\"v\":1}".into()).unwrap();
        o.status("S1", "t".into(), "{\"v\":2}".into()).unwrap();
        o.mqtt("a".into(), "x".into(), false).unwrap();
        let due = o.due(b's', i64::MAX).unwrap();
        assert_eq!(due.len(), 1);
        assert!(
            matches!(&due[0].1.delivery, Delivery::Mqtt { payload, .. } if payload == "{\"v\":2}")
        );
        assert_eq!(o.depth(), 2);
    }

    #[test]
    fn a_failed_item_waits_with_growing_backoff() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::kv::Db::from(sled::open(dir.path()).unwrap());
        let o = Outbox::open(&db).unwrap();
        o.webhook(0, "http://x".into(), "{}".into()).unwrap();
        let (k, item) = o.due(b'w', i64::MAX).unwrap().remove(0);
        o.failed(&k, item, "boom".into()).unwrap();
        let (k, item) = o.due(b'w', i64::MAX).unwrap().remove(0);
        assert_eq!(item.attempts, 1);
        assert!(
            o.due(b'w', now_ms()).unwrap().is_empty(),
            "not due again at once"
        );
        let first = item.next_ms;
        o.failed(&k, item, "boom".into()).unwrap();
        let (_, item) = o.due(b'w', i64::MAX).unwrap().remove(0);
        assert!(item.next_ms - now_ms() > first - now_ms() - 50);
        assert_eq!(item.last_error.as_deref(), Some("boom"));
    }
}
