//! MQTT transport (rumqttc): a persistent session with manual acks.
//!
//! * `clean_session = false` and a fixed client id: the broker queues QoS 1
//!   messages for us while we are away.
//! * Manual acks: a PUBACK goes out only after the frame is durable
//!   ([`super::Ingestor::commit`]). Until then the broker still owns it.
//! * Subscriptions are renewed on every ConnAck: rumqttc does not restore them
//!   when the broker has lost our session (`session_present = false`).
//! * The event loop is polled in its own task; on an error it backs off
//!   exponentially, then polling again reconnects.
//! * No message can stall the session. rumqttc closes the connection on a
//!   packet over its incoming limit, and the broker then redelivers that
//!   message to the persistent session at every reconnect, forever. So the
//!   incoming limit is MQTT's own maximum ([`MQTT_MAX_REMAINING_LENGTH`]):
//!   whatever the broker delivers is read. A payload over
//!   [`topic::MAX_UPLINK_PAYLOAD`] is then dropped at once (never copied nor
//!   queued), counted as `too_large` and acknowledged through the ingest
//!   task like any rejection. Memory: such a message is read whole into
//!   rumqttc's read buffer, which keeps that capacity for the rest of the
//!   connection (measured: a 50 MB payload took the daemon's RSS from 45 to
//!   93 MB, and it stayed there; 1 MB payloads cost about 1 MB). The shipped
//!   broker configurations cap packets at [`topic::BROKER_MAX_PACKET_SIZE`]
//!   (65 KiB), which is what bounds this; only a broker without
//!   `max_packet_size` can make it more, up to 256 MiB. The alternative, a
//!   lower rumqttc limit, turns one such message into a reconnect loop.
//! * Connection state is kept in [`super::Stats`] for `/readyz` and `/metrics`.
//! * `coldchain/v1/daemon/{id}/online` is retained `online`, with a retained
//!   last will of `offline`.
//! * Each device's retained `coldchain/v1/dev/{device}/online` (its last will
//!   `offline`) is followed and shown on `/api/v1/devices` and `/metrics`.

use std::time::Duration;

use anyhow::Context;
use coldchain_proto::topic;
use rumqttc::{
    AsyncClient, Event, EventLoop, LastWill, MqttOptions, Packet, QoS, TlsConfiguration, Transport,
};
use tokio::sync::{mpsc, watch};

use super::{Ack, Inbound, Job, now_ms};
use crate::config::Config;
use crate::store::Via;

/// The largest "remaining length" of an MQTT 3.1.1 packet (256 MiB - 1):
/// nothing a broker sends can be larger, so rumqttc never refuses a packet.
pub const MQTT_MAX_REMAINING_LENGTH: usize = 268_435_455;

/// Builds the client and its event loop from the config.
pub fn connect(cfg: &Config) -> anyhow::Result<(AsyncClient, EventLoop)> {
    let m = &cfg.mqtt;
    let mut o = MqttOptions::new(cfg.client_id(), m.host.clone(), m.port);
    o.set_keep_alive(Duration::from_secs(m.keep_alive_s.max(5)))
        .set_clean_session(false)
        .set_manual_acks(true)
        // Incoming: anything the broker can send (see the module docs); the
        // payload limit is applied per message, as a counted rejection.
        // Outgoing: our own publishes (downlinks, status) are small.
        .set_max_packet_size(MQTT_MAX_REMAINING_LENGTH, topic::BROKER_MAX_PACKET_SIZE)
        .set_inflight(100)
        .set_last_will(LastWill::new(
            online_topic(cfg)?,
            topic::OFFLINE,
            QoS::AtLeastOnce,
            true,
        ));
    if let Some(u) = &m.username {
        o.set_credentials(u.clone(), m.password.clone().unwrap_or_default());
    }
    if let Some(t) = tls_transport(cfg) {
        o.set_transport(t?);
    }
    // Room for a whole queue and batch of PUBACKs. When it is full anyway, the
    // ingest task waits for room (it never drops an ack); that cannot
    // deadlock because `pump` never waits on the ingest queue: it holds jobs
    // in its own buffer and keeps polling the event loop, which drains this
    // channel.
    Ok(AsyncClient::new(
        o,
        cfg.store.queue + cfg.store.max_batch + 64,
    ))
}

/// The TLS transport from `mqtt.ca_file` (and the client certificate), if TLS is configured.
pub fn tls_transport(cfg: &Config) -> Option<anyhow::Result<Transport>> {
    let m = &cfg.mqtt;
    let ca_file = m.ca_file.as_ref()?;
    Some((|| {
        let ca = std::fs::read(ca_file)
            .with_context(|| format!("key mqtt.ca_file: cannot read {}", ca_file.display()))?;
        let client_auth = match (&m.client_cert_file, &m.client_key_file) {
            (Some(c), Some(k)) => Some((
                std::fs::read(c).with_context(|| {
                    format!("key mqtt.client_cert_file: cannot read {}", c.display())
                })?,
                std::fs::read(k).with_context(|| {
                    format!("key mqtt.client_key_file: cannot read {}", k.display())
                })?,
            )),
            _ => None,
        };
        Ok(Transport::tls_with_config(TlsConfiguration::Simple {
            ca,
            alpn: None,
            client_auth,
        }))
    })())
}

fn online_topic(cfg: &Config) -> anyhow::Result<String> {
    Ok(topic::daemon_online(&cfg.daemon.id)
        .map_err(|e| anyhow::anyhow!("key daemon.id: {e}"))?
        .to_string())
}

/// Where [`pump`] hands what it receives.
#[derive(Debug)]
pub struct Sinks {
    /// Device frames, to the ingest task.
    pub jobs: mpsc::Sender<Job>,
    /// Shipment records gateways forward (a centre's only), to the
    /// evaluator's task ([`crate::sites`]).
    pub records: mpsc::UnboundedSender<crate::sites::topics::Incoming>,
}

/// Polls the event loop until `stop` turns true, forwarding device publishes to `sinks`.
///
/// After `stop`, publishes are no longer forwarded (the broker keeps them for
/// our next session), the loop keeps polling so pending acks go out, then
/// sends DISCONNECT once `disconnect` turns true.
pub async fn pump(
    cfg: Config,
    client: AsyncClient,
    mut eventloop: EventLoop,
    sinks: Sinks,
    mut stop: watch::Receiver<bool>,
    mut disconnect: watch::Receiver<bool>,
    stats: std::sync::Arc<super::Stats>,
) {
    let Sinks { jobs: tx, records } = sinks;
    // A centre takes devices' topics and what gateways forward through
    // shared subscriptions (crate::sites); presence stays unshared.
    let subscriptions: Vec<String> = match &cfg.centre {
        Some(c) => crate::sites::topics::centre_filters(c),
        None => vec![
            topic::ALL_DEVICES_UP.to_string(),
            topic::ALL_DEVICES_UP_JSON.to_string(),
        ],
    };
    let online = match online_topic(&cfg) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!("{e:#}");
            return;
        }
    };
    let min = Duration::from_millis(cfg.mqtt.reconnect_min_ms);
    let max = Duration::from_millis(cfg.mqtt.reconnect_max_ms);
    let mut backoff = min;
    let mut disconnect_sent = false;
    let mut connected_before = false;
    // Dropped at stop: the ingest task then drains what it has and ends.
    let mut tx = Some(tx);
    // Jobs received while the ingest queue is full. Bounded in practice by the
    // broker: it sends at most `max_inflight_messages` unacknowledged QoS 1
    // messages, and nothing here is acknowledged before it is durable.
    let mut held: std::collections::VecDeque<Job> = std::collections::VecDeque::new();
    stats.mqtt.lock().unwrap_or_else(|e| e.into_inner()).broker =
        format!("{}:{}", cfg.mqtt.host, cfg.mqtt.port);
    loop {
        // Hand held jobs to the ingest task as room frees up; never wait for it
        // here, so the event loop keeps being polled and PUBACKs keep flowing.
        let mut closed = false;
        while let (Some(sender), Some(_)) = (&tx, held.front()) {
            match sender.try_reserve() {
                Ok(permit) => {
                    if let Some(job) = held.pop_front() {
                        permit.send(job);
                    }
                }
                Err(mpsc::error::TrySendError::Full(())) => break,
                Err(mpsc::error::TrySendError::Closed(())) => {
                    closed = true;
                    break;
                }
            }
        }
        if closed {
            tracing::error!("ingest task has stopped; no longer forwarding");
            tx = None;
        }
        let room = async {
            match (&tx, held.is_empty()) {
                (Some(s), false) => s.reserve().await.map(drop).unwrap_or(()),
                _ => std::future::pending().await,
            }
        };
        let ev = tokio::select! {
            ev = eventloop.poll() => ev,
            () = room => continue,
            _ = stop.changed(), if tx.is_some() => {
                if *stop.borrow() {
                    tx = None;
                    // Held jobs were never acknowledged: the broker keeps them.
                    held.clear();
                }
                continue;
            }
            _ = disconnect.changed(), if !disconnect_sent => {
                if *disconnect.borrow() {
                    // Retained "offline" first: a clean DISCONNECT suppresses the will.
                    let _ = client.try_publish(online.clone(), QoS::AtLeastOnce, true, topic::OFFLINE);
                    let _ = client.try_disconnect();
                    disconnect_sent = true;
                }
                continue;
            }
        };
        match ev {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                backoff = min;
                tracing::info!(
                    broker = %format!("{}:{}", cfg.mqtt.host, cfg.mqtt.port),
                    session_present = ack.session_present,
                    "connected to broker"
                );
                if connected_before && !ack.session_present {
                    tracing::error!(
                        "the broker has no session for us after a reconnect: QoS 1 messages queued \
                         for us while we were away are lost (check the broker's persistence and \
                         max_queued_messages); sequence gaps will show what is missing"
                    );
                }
                connected_before = true;
                for f in subscriptions
                    .iter()
                    .map(String::as_str)
                    .chain([topic::ALL_DEVICES_ONLINE])
                {
                    if let Err(e) = client.try_subscribe(f, QoS::AtLeastOnce) {
                        tracing::error!("cannot queue subscription to {f}: {e}");
                    }
                }
                // Connected once the subscriptions are queued (a centre says
                // it is ready only then: crate::sites::announce_ready).
                stats
                    .mqtt_connected
                    .store(1, std::sync::atomic::Ordering::Relaxed);
                if let Err(e) =
                    client.try_publish(online.clone(), QoS::AtLeastOnce, true, topic::ONLINE)
                {
                    tracing::warn!("cannot queue online status: {e}");
                }
            }
            Ok(Event::Incoming(Packet::Publish(mut p))) => {
                let Some(sender) = &tx else {
                    // Stopping: not forwarded, not acknowledged; the broker
                    // keeps it for our next session.
                    continue;
                };
                let received_ms = now_ms();
                // The payload leaves the packet: what is kept for the PUBACK
                // (packet id, QoS, topic) does not pin its buffer.
                let body = std::mem::take(&mut p.payload);
                let oversize = (body.len() > topic::MAX_UPLINK_PAYLOAD).then_some(body.len());
                if let Some(d) = topic::parse_device_online(&p.topic) {
                    if let Some(n) = oversize {
                        stats
                            .rejected_too_large
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        tracing::warn!(device = %d, topic = %p.topic, bytes = n,
                            "rejected online status of {n} bytes: expected \"online\" or \"offline\"; acknowledged");
                    } else {
                        presence(&stats, &d, &body, received_ms);
                    }
                    // Nothing to make durable: acknowledged at once.
                    if let Err(e) = client.try_ack(&p) {
                        tracing::warn!("cannot queue PUBACK for {}: {e}", p.topic);
                    }
                    continue;
                }
                let forwarded = cfg
                    .centre
                    .as_ref()
                    .and_then(|c| crate::sites::topics::parse_forwarded(c, &p.topic));
                let uplink = match forwarded {
                    Some(crate::sites::topics::Forwarded::Record { gateway }) => {
                        // A gateway's shipment record: merged by the
                        // evaluator's task, acknowledged once durable.
                        let inc = crate::sites::topics::Incoming {
                            from: gateway,
                            payload: body.to_vec(),
                            ack: Some((client.clone(), p)),
                        };
                        if records.send(inc).is_err() {
                            tracing::error!(
                                "evaluator has stopped; shipment record not acknowledged"
                            );
                        }
                        continue;
                    }
                    Some(crate::sites::topics::Forwarded::Uplink { uplink, .. }) => Some(uplink),
                    None => topic::parse_uplink(&p.topic),
                };
                let (via, claimed) = match uplink {
                    Some(topic::Uplink::Binary(d)) => (Via::Mqtt, Some(d)),
                    Some(topic::Uplink::Json(d)) => (Via::MqttJson, Some(d)),
                    None => {
                        // Our filters only match uplinks; a device id that is
                        // not a valid DeviceId lands here. Ack it through the
                        // store path as malformed so it is counted, not lost.
                        (Via::Mqtt, None)
                    }
                };
                let job = Job {
                    inbound: Inbound {
                        via,
                        source: p.topic.clone(),
                        claimed,
                        payload: if oversize.is_some() {
                            Vec::new()
                        } else {
                            body.to_vec()
                        },
                        oversize,
                        received_ms,
                    },
                    ack: Ack::Mqtt(p),
                };
                if !held.is_empty() {
                    held.push_back(job);
                } else if let Err(e) = sender.try_send(job) {
                    match e {
                        mpsc::error::TrySendError::Full(job) => held.push_back(job),
                        mpsc::error::TrySendError::Closed(_) => {
                            tracing::error!("ingest task has stopped; no longer forwarding");
                            tx = None;
                        }
                    }
                }
            }
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => {
                tracing::info!("disconnected from broker");
                stats
                    .mqtt_connected
                    .store(0, std::sync::atomic::Ordering::Relaxed);
                // Poll once more so the DISCONNECT is flushed, then stop.
                let _ = tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await;
                return;
            }
            Ok(_) => {}
            Err(e) => {
                if disconnect_sent {
                    return;
                }
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "broker connection lost");
                stats.mqtt_lost(e.to_string());
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = disconnect.changed() => {}
                }
                backoff = (backoff * 2).min(max);
            }
        }
    }
}

/// Records a device's online/offline status; logs each change.
fn presence(stats: &super::Stats, d: &coldchain_proto::DeviceId, payload: &[u8], now: i64) {
    let online = match payload {
        p if p == topic::ONLINE.as_bytes() => true,
        p if p == topic::OFFLINE.as_bytes() => false,
        // An empty retained message clears the topic (a device retired).
        [] => {
            let mut m = stats.presence.lock().unwrap_or_else(|e| e.into_inner());
            m.remove(d.as_str());
            return;
        }
        other => {
            tracing::warn!(device = %d, payload = %String::from_utf8_lossy(other),
                "device online topic: expected \"online\" or \"offline\"; ignored");
            return;
        }
    };
    let mut m = stats.presence.lock().unwrap_or_else(|e| e.into_inner());
    if m.len() >= super::PRESENCE_MAX && !m.contains_key(d.as_str()) {
        return;
    }
    let changed = m.get(d.as_str()).is_none_or(|p| p.online != online);
    if changed {
        m.insert(
            d.to_string(),
            super::Presence {
                online,
                since_ms: now,
            },
        );
        if online {
            tracing::info!(device = %d, "device connected to the broker");
        } else {
            tracing::warn!(device = %d, "device offline (it said so on leaving, or the broker published its last will)");
        }
    }
}

/// Publishes a signed, retained [`Downlink::Sync`] (time and settings) on every
/// registered device's down topic, now and every `every`, until `stop`.
///
/// Retained so a device that connects later gets it at once; refreshed so the
/// retained copy is never older than `every` (a device may refuse to set its
/// clock from an older one: see proto/README.md).
pub async fn publish_sync(
    client: AsyncClient,
    registry: crate::registry::Registry,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    use coldchain_proto::codec::{MAX_SIGNED_LEN, encode_signed};
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let unix_ms = now_ms().max(0) as u64;
        for id in registry.ids() {
            let Some(dev) = registry.get(&id) else {
                continue;
            };
            let msg = super::sync_message(&dev, unix_ms);
            let mut buf = [0u8; MAX_SIGNED_LEN];
            let Ok(bytes) = encode_signed(&msg, &dev.key, &mut buf) else {
                tracing::error!(device = %id, "settings do not fit a downlink frame");
                continue;
            };
            let topic = topic::device_down(&id).to_string();
            if let Err(e) = client
                .publish(topic, QoS::AtLeastOnce, true, bytes.to_vec())
                .await
            {
                tracing::warn!(device = %id, "cannot queue time sync: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use coldchain_proto::topic::BROKER_MAX_PACKET_SIZE;

    /// Every broker configuration the project ships caps packets at the size
    /// that fits the daemon's payload limit (a broker without a cap lets one
    /// client make the daemon read a 256 MiB message).
    #[test]
    fn shipped_broker_configs_set_the_packet_limit() {
        let want = format!("max_packet_size {BROKER_MAX_PACKET_SIZE}");
        for (name, text) in [
            (
                "deploy/mosquitto/dev.conf",
                include_str!("../../../deploy/mosquitto/dev.conf"),
            ),
            (
                "deploy/mosquitto/prod.conf",
                include_str!("../../../deploy/mosquitto/prod.conf"),
            ),
            ("deploy/demo.sh", include_str!("../../../deploy/demo.sh")),
        ] {
            let lines: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| l.starts_with("max_packet_size"))
                .collect();
            assert_eq!(lines, vec![want.as_str()], "{name}");
        }
    }
}
