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
//! **One deliverer at a time.** Several instances of a centre share one
//! database, so one outbox, and each runs its own delivery tasks over it.
//! An instance delivers an item only under its claim: a key of the
//! `outbox_claims` tree (the item's key), `{owner, until_ms}` with the
//! instance's name (the one its evaluation leases carry, `crate::lease`),
//! taken with compare-and-swap (atomic across instances on PostgreSQL) when
//! it is free, ran out ([`CLAIM_MS`] after it was taken) or is the
//! instance's own. Under the claim the item is read again (another instance
//! may have delivered it or put it off meanwhile), attempted once, then
//! removed on success or rescheduled on failure, both with compare-and-swap
//! on the exact value attempted, and the claim is given back. So:
//!
//! * two instances never attempt one item at the same time, and an item
//!   delivered is gone before anyone else may claim it: no item is
//!   delivered twice in normal operation;
//! * a claim is held for one attempt only (an attempt is bounded: 10 s for
//!   a PUBACK or an HTTP exchange, well within [`CLAIM_MS`]), never across
//!   the backoff between attempts: an instance whose broker connection or
//!   network path is down holds nothing, and the next attempt of a failing
//!   item goes to whichever instance claims it first;
//! * an instance that dies mid-attempt leaves its claim, which runs out
//!   after at most [`CLAIM_MS`]: then another instance attempts the item
//!   (at least once: when the dead one had delivered but not yet removed
//!   it, the item goes out twice, as after any crash);
//! * a replaceable slot (`s`, `f`) is claimed as a slot: a newer status or
//!   record queued while an older one is being delivered replaces the item
//!   but not the claim, is not removed with the older one (the removal
//!   compares the value), and is delivered after the older one was
//!   acknowledged, so the broker keeps the newer.
//!
//! Claims left by a dead instance for items since removed are swept once
//! they ran out. On sled one daemon owns the database: there are no claims,
//! and nothing is read or written for them.
//!
//! MQTT items go out on a connection of their own, one at a time in key
//! order (queue order for `m`), and leave the outbox only when the broker's
//! PUBACK for them has arrived. Webhooks are
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
use crate::kv::{IVec, Tree};

/// How long a claim on an item lasts, ms: a dead deliverer's items wait at
/// most this long for another instance. Longer than an attempt (10 s).
pub const CLAIM_MS: i64 = 30_000;

/// How often claims that ran out are swept, ms.
const SWEEP_MS: i64 = 60_000;

/// A claim as stored in `outbox_claims`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Claim {
    owner: String,
    until_ms: i64,
}

/// An item taken for one attempt: its value as read under the claim.
#[derive(Debug)]
struct Taken {
    key: IVec,
    raw: IVec,
    item: Item,
    /// The claim as written (`None` on sled).
    claim: Option<Vec<u8>>,
}

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
    tree: Tree,
    shipments: Tree,
    wake: Arc<Notify>,
    /// `outbox_claims`; `None` on sled (one daemon: every item is ours).
    claims: Option<Tree>,
    /// This instance's name in the claims.
    owner: Arc<str>,
}

impl Outbox {
    /// Opens the `outbox` tree (and, on PostgreSQL, `outbox_claims`, under
    /// a random owner name until [`Outbox::with_owner`]).
    pub fn open(db: &crate::kv::Db) -> crate::kv::Result<Self> {
        let claims = match db {
            crate::kv::Db::Sled(_) => None,
            crate::kv::Db::Pg(_) => Some(db.open_tree("outbox_claims")?),
        };
        Ok(Outbox {
            db: db.clone(),
            tree: db.open_tree("outbox")?,
            shipments: db.open_tree("shipments")?,
            wake: Arc::new(Notify::new()),
            claims,
            owner: format!("outbox-{:08x}", rand::random::<u32>()).into(),
        })
    }

    /// Claims items as `owner`, the instance's name (unique per running
    /// process; the daemon gives the name of its evaluation leases).
    pub fn with_owner(mut self, owner: String) -> Self {
        self.owner = owner.into();
        self
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
    pub fn depth(&self) -> crate::kv::Result<usize> {
        self.tree.len()
    }

    /// Items with the given key prefix that are due, oldest first.
    fn due(&self, prefix: u8, now: i64) -> anyhow::Result<Vec<(IVec, Item)>> {
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

    /// Takes the item at `key` for one attempt: claims it (see the module
    /// docs), then reads it again. `None` when another instance holds it,
    /// or it is gone or no longer due.
    fn take(&self, key: &IVec, now: i64) -> anyhow::Result<Option<Taken>> {
        let claim = match &self.claims {
            None => None,
            Some(claims) => match self.claim(claims, key, now)? {
                Some(c) => Some(c),
                None => return Ok(None),
            },
        };
        let read = || -> anyhow::Result<Option<(IVec, Item)>> {
            let Some(raw) = self.tree.get(key)? else {
                return Ok(None);
            };
            let item: Item = serde_json::from_slice(&raw)?;
            Ok((item.next_ms <= now).then_some((raw, item)))
        };
        match read() {
            Ok(Some((raw, item))) => Ok(Some(Taken {
                key: key.clone(),
                raw,
                item,
                claim,
            })),
            other => {
                self.release(key, claim.as_deref());
                other.map(|_| None)
            }
        }
    }

    /// Takes the claim of `key` when it is free, ran out or is ours; the
    /// claim written, or `None` when another instance holds it.
    fn claim(&self, claims: &Tree, key: &[u8], now: i64) -> anyhow::Result<Option<Vec<u8>>> {
        let mine = serde_json::to_vec(&Claim {
            owner: self.owner.to_string(),
            until_ms: now + CLAIM_MS,
        })?;
        let current = match claims.compare_and_swap(key, None::<&[u8]>, Some(mine.clone()))? {
            Ok(()) => return Ok(Some(mine)),
            Err(e) => e.current,
        };
        let held: Option<Claim> = current
            .as_ref()
            .and_then(|v| serde_json::from_slice(v).ok());
        if held.is_some_and(|c| *c.owner != *self.owner && c.until_ms > now) {
            return Ok(None);
        }
        Ok(claims
            .compare_and_swap(key, current, Some(mine.clone()))?
            .is_ok()
            .then_some(mine))
    }

    /// Gives a claim back (when it is still the one written).
    fn release(&self, key: &[u8], claim: Option<&[u8]>) {
        if let (Some(claims), Some(c)) = (&self.claims, claim)
            && let Err(e) = claims.compare_and_swap(key, Some(c), None::<Vec<u8>>)
        {
            // It runs out by itself.
            tracing::warn!("outbox: cannot give back the claim of an item: {e}");
        }
    }

    /// Removes claims that ran out (left by an instance that died, for items
    /// delivered or not); returns how many.
    fn sweep(&self, now: i64) -> anyhow::Result<usize> {
        let Some(claims) = &self.claims else {
            return Ok(0);
        };
        let mut n = 0;
        for kv in claims.iter() {
            let (k, v) = kv?;
            let ran_out = serde_json::from_slice::<Claim>(&v).map_or(true, |c| c.until_ms <= now);
            if ran_out
                && claims
                    .compare_and_swap(&k, Some(&v), None::<Vec<u8>>)?
                    .is_ok()
            {
                n += 1;
            }
        }
        Ok(n)
    }

    /// A taken item was delivered: removes it unless it was replaced
    /// meanwhile (a newer status or record, delivered next), and gives the
    /// claim back.
    fn done(&self, t: &Taken) -> anyhow::Result<()> {
        let r = self
            .tree
            .compare_and_swap(&t.key, Some(&t.raw), None::<Vec<u8>>);
        self.release(&t.key, t.claim.as_deref());
        // A failed swap: replaced meanwhile, the newer one stays queued.
        let _ = r?;
        Ok(())
    }

    /// A taken item failed: puts it off (growing backoff) unless it was
    /// replaced meanwhile, and gives the claim back.
    fn failed(&self, t: &Taken, err: String) -> anyhow::Result<()> {
        let mut item = t.item.clone();
        item.attempts += 1;
        let backoff = (1000i64 << item.attempts.min(9)).min(300_000);
        item.next_ms = now_ms() + backoff;
        item.last_error = Some(err);
        let r = serde_json::to_vec(&item)
            .map_err(anyhow::Error::from)
            .and_then(|new| {
                self.tree
                    .compare_and_swap(&t.key, Some(&t.raw), Some(new))
                    .map_err(Into::into)
            });
        self.release(&t.key, t.claim.as_deref());
        let _ = r?;
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
        for (key, _) in due {
            if !*conn_rx.borrow() {
                break;
            }
            let t = match outbox.take(&key, now_ms()) {
                Ok(Some(t)) => t,
                Ok(None) => continue,
                Err(e) => {
                    tracing::error!("outbox: {e:#}");
                    continue;
                }
            };
            let Delivery::Mqtt {
                topic,
                payload,
                retain,
            } = &t.item.delivery
            else {
                outbox.release(&t.key, t.claim.as_deref());
                continue;
            };
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
                outbox.done(&t).and_then(|()| {
                    // An empty payload clears the retained record
                    // (retention): nothing to compare with the store.
                    if key.first() == Some(&b'f') && !payload.is_empty() {
                        outbox.fleet_recheck(&key, topic, payload)
                    } else {
                        Ok(())
                    }
                })
            } else {
                outbox.failed(&t, "no PUBACK from the broker".into())
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
    let mut swept = now_ms();
    loop {
        let due = outbox.due(b'w', now_ms()).unwrap_or_else(|e| {
            tracing::error!("outbox: {e:#}");
            Vec::new()
        });
        for (key, _) in due {
            if *stop.borrow() {
                return;
            }
            let t = match outbox.take(&key, now_ms()) {
                Ok(Some(t)) => t,
                Ok(None) => continue,
                Err(e) => {
                    tracing::error!("outbox: {e:#}");
                    continue;
                }
            };
            let Delivery::Webhook {
                url,
                body,
                hook,
                id,
            } = &t.item.delivery
            else {
                outbox.release(&t.key, t.claim.as_deref());
                continue;
            };
            let Some(Ok(secret)) = hooks.get(*hook).map(|h| h.signing_key(*hook)) else {
                // The config changed since it was queued (fewer webhooks, or
                // a bad secret, which check-config refuses): keep it, say so.
                let why = format!("no usable [[webhooks]] entry {hook} in the config");
                tracing::error!(url = %url, "webhook: {why}");
                if let Err(e) = outbox.failed(&t, why) {
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
            let item = &t.item;
            let r = match result {
                Ok(Ok(s)) if (200..300).contains(&s) => outbox.done(&t),
                Ok(Ok(s)) => {
                    tracing::warn!(url = %item_url(item), status = s, attempts = item.attempts + 1, "webhook refused; will retry");
                    outbox.failed(&t, format!("HTTP {s}"))
                }
                Ok(Err(e)) => {
                    tracing::warn!(url = %item_url(item), attempts = item.attempts + 1, "webhook failed; will retry: {e}");
                    outbox.failed(&t, e.to_string())
                }
                Err(e) => outbox.failed(&t, e.to_string()),
            };
            if let Err(e) = r {
                tracing::error!("outbox: {e:#}");
            }
        }
        if now_ms() - swept >= SWEEP_MS {
            swept = now_ms();
            if let Err(e) = outbox.sweep(swept) {
                tracing::warn!("outbox: cannot sweep claims that ran out: {e:#}");
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
        let t = o.take(&k, i64::MAX).unwrap().unwrap();
        o.failed(&t, "boom".into()).unwrap();
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
        assert_eq!(o.depth().unwrap(), 2);
    }

    #[test]
    fn a_failed_item_waits_with_growing_backoff() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::kv::Db::from(sled::open(dir.path()).unwrap());
        let o = Outbox::open(&db).unwrap();
        o.webhook(0, "http://x".into(), "{}".into()).unwrap();
        let (k, _) = o.due(b'w', i64::MAX).unwrap().remove(0);
        let t = o.take(&k, now_ms()).unwrap().unwrap();
        o.failed(&t, "boom".into()).unwrap();
        let (k, item) = o.due(b'w', i64::MAX).unwrap().remove(0);
        assert_eq!(item.attempts, 1);
        assert!(
            o.due(b'w', now_ms()).unwrap().is_empty(),
            "not due again at once"
        );
        assert!(
            o.take(&k, now_ms()).unwrap().is_none(),
            "not taken before it is due"
        );
        let first = item.next_ms;
        let t = o.take(&k, i64::MAX).unwrap().unwrap();
        o.failed(&t, "boom".into()).unwrap();
        let (_, item) = o.due(b'w', i64::MAX).unwrap().remove(0);
        assert!(item.next_ms - now_ms() > first - now_ms() - 50);
        assert_eq!(item.last_error.as_deref(), Some("boom"));
    }

    #[test]
    fn a_status_replaced_during_its_delivery_stays_to_be_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::kv::Db::from(sled::open(dir.path()).unwrap());
        let o = Outbox::open(&db).unwrap();
        o.status("S1", "t".into(), "{\"v\":1}".into()).unwrap();
        let (k, _) = o.due(b's', i64::MAX).unwrap().remove(0);
        let t = o.take(&k, now_ms()).unwrap().unwrap();
        // A newer status is queued while the older one is out.
        o.status("S1", "t".into(), "{\"v\":2}".into()).unwrap();
        o.done(&t).unwrap();
        let due = o.due(b's', i64::MAX).unwrap();
        assert_eq!(due.len(), 1, "the newer status is still queued");
        assert!(
            matches!(&due[0].1.delivery, Delivery::Mqtt { payload, .. } if payload == "{\"v\":2}")
        );
        let t = o.take(&k, now_ms()).unwrap().unwrap();
        o.done(&t).unwrap();
        assert_eq!(o.depth().unwrap(), 0);
    }
}
