//! The MQTT uplink of one simulated device.
//!
//! Frames go into an outbox (the stand-in for the device's flash queue) and
//! leave it only when the broker PUBACKs them. rumqttc keeps its own resend
//! queue in memory and drops it when a broker answers `session_present=false`,
//! so this task does not rely on it: after any connection loss it builds a
//! fresh client and republishes every unacknowledged frame, oldest first.
//! Receivers deduplicate by `(device, boot, seq)`, so a resend is always safe.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use anyhow::{Context, bail};
use coldchain_proto::codec::decode_signed;
use coldchain_proto::{DeviceId, DeviceKey, Downlink, FrameRef, topic};
use rumqttc::{AsyncClient, Event, EventLoop, Incoming, MqttOptions, Outgoing, QoS};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Frames in flight (published, not yet acknowledged) at most.
const WINDOW: usize = 16;
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(8);

/// A frame ready to publish.
#[derive(Debug, Clone)]
pub struct Outbound {
    /// Which frame.
    pub frame_ref: FrameRef,
    /// Readings it carries (0 for events and status), for the run summary.
    pub readings: usize,
    /// The MQTT payload.
    pub payload: Vec<u8>,
}

/// A verified downlink and whether it came as a retained copy.
#[derive(Debug, Clone)]
pub struct Received {
    /// The message.
    pub msg: Downlink,
    /// Delivered as a retained message (may be as old as the daemon's refresh interval).
    pub retained: bool,
}

/// Connection settings of one device.
#[derive(Debug, Clone)]
pub struct Config {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// The device.
    pub device: DeviceId,
    /// Its key.
    pub key: DeviceKey,
    /// Publish JSON envelopes on `…/up/json` instead of signed postcard on `…/up`.
    pub json: bool,
}

/// Totals of acknowledged frames.
#[derive(Debug, Clone, Copy, Default)]
pub struct Acked {
    /// Frames the broker acknowledged.
    pub frames: usize,
    /// Frames with readings among them.
    pub reading_frames: usize,
    /// Readings in those frames.
    pub readings: usize,
}

/// Commands from the device to its uplink.
#[derive(Debug)]
pub enum Command {
    /// Queue a frame.
    Send(Outbound),
    /// Drop the connection and stay offline this long (injected outage).
    Outage(Duration),
}

struct Slot {
    out: Outbound,
    sent: bool,
}

fn options(cfg: &Config) -> MqttOptions {
    let mut o = MqttOptions::new(cfg.device.as_str(), cfg.host.clone(), cfg.port);
    o.set_keep_alive(Duration::from_secs(10));
    o.set_clean_session(true);
    o.set_max_packet_size(64 * 1024, 64 * 1024);
    o
}

/// Connects once, waiting for the broker's CONNACK: the start-up check.
pub async fn connect(cfg: &Config) -> anyhow::Result<(AsyncClient, EventLoop)> {
    let (client, mut el) = AsyncClient::new(options(cfg), WINDOW * 2 + 8);
    let deadline = Duration::from_secs(5);
    let r = tokio::time::timeout(deadline, async {
        loop {
            match el.poll().await {
                Ok(Event::Incoming(Incoming::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
    })
    .await;
    match r {
        Ok(Ok(())) => Ok((client, el)),
        Ok(Err(e)) => bail!(
            "cannot connect to the MQTT broker at {}:{} for device {}: {e}",
            cfg.host,
            cfg.port,
            cfg.device
        ),
        Err(_) => bail!(
            "no answer from the MQTT broker at {}:{} within {deadline:?} (device {})",
            cfg.host,
            cfg.port,
            cfg.device
        ),
    }
}

/// Runs the uplink until `rx` is closed and every queued frame is acknowledged.
pub async fn run(
    cfg: Config,
    first: (AsyncClient, EventLoop),
    mut rx: mpsc::Receiver<Command>,
    down: mpsc::Sender<Received>,
) -> anyhow::Result<Acked> {
    let down_topic = topic::device_down(&cfg.device).to_string();
    let up_topic = if cfg.json {
        topic::device_up_json(&cfg.device)
    } else {
        topic::device_up(&cfg.device)
    }
    .to_string();

    let mut outbox: VecDeque<Slot> = VecDeque::new();
    let mut acked = Acked::default();
    let mut conn: Option<(AsyncClient, EventLoop)> = Some(first);
    let mut connected = true;
    subscribe(&conn.as_ref().context("connection")?.0, &down_topic)?;
    let mut awaiting_pkid: VecDeque<FrameRef> = VecDeque::new();
    let mut by_pkid: HashMap<u16, FrameRef> = HashMap::new();
    let mut backoff = BACKOFF_MIN;
    let mut offline_until = Instant::now();
    let mut input_open = true;

    loop {
        if !input_open && outbox.is_empty() {
            if let Some((client, mut el)) = conn.take() {
                let _ = client.try_disconnect();
                // Let the DISCONNECT go out; errors here change nothing.
                let _ = tokio::time::timeout(Duration::from_millis(200), el.poll()).await;
            }
            return Ok(acked);
        }
        if connected && let Some((client, _)) = conn.as_ref() {
            fill_window(client, &up_topic, &mut outbox, &mut awaiting_pkid)?;
        }
        tokio::select! {
            ev = async { conn.as_mut().map(|c| &mut c.1).unwrap().poll().await }, if conn.is_some() => {
                match ev {
                    Ok(Event::Incoming(Incoming::ConnAck(ack))) => {
                        tracing::info!(device = %cfg.device, session_present = ack.session_present, "connected to broker");
                        connected = true;
                        backoff = BACKOFF_MIN;
                        subscribe(&conn.as_ref().context("connection")?.0, &down_topic)?;
                    }
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                        if let Some(fr) = awaiting_pkid.pop_front() {
                            by_pkid.insert(pkid, fr);
                        }
                    }
                    Ok(Event::Incoming(Incoming::PubAck(a))) => {
                        if let Some(fr) = by_pkid.remove(&a.pkid)
                            && let Some(i) = outbox.iter().position(|s| s.out.frame_ref == fr)
                            && let Some(slot) = outbox.remove(i)
                        {
                            acked.frames += 1;
                            if slot.out.readings > 0 {
                                acked.reading_frames += 1;
                                acked.readings += slot.out.readings;
                            }
                            tracing::debug!(device = %cfg.device, boot = fr.boot, seq = fr.seq, "PUBACK: frame removed from the queue");
                        }
                    }
                    Ok(Event::Incoming(Incoming::Publish(p))) if p.topic == down_topic => {
                        match decode_signed::<Downlink>(&p.payload, &cfg.key) {
                            Ok(msg) => {
                                let _ = down.send(Received { msg, retained: p.retain }).await;
                            }
                            Err(e) => tracing::warn!(device = %cfg.device, topic = %p.topic, "ignoring downlink: {e}"),
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(device = %cfg.device, "broker connection lost: {e}; {} frame(s) kept in the queue, retrying in {backoff:?}", outbox.len());
                        conn = None;
                        connected = false;
                        offline_until = Instant::now() + backoff;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                        for s in outbox.iter_mut() {
                            s.sent = false;
                        }
                        awaiting_pkid.clear();
                        by_pkid.clear();
                    }
                }
            }
            _ = tokio::time::sleep_until(offline_until), if conn.is_none() => {
                tracing::debug!(device = %cfg.device, "reconnecting");
                conn = Some(AsyncClient::new(options(&cfg), WINDOW * 2 + 8));
            }
            cmd = rx.recv(), if input_open => match cmd {
                Some(Command::Send(out)) => outbox.push_back(Slot { out, sent: false }),
                Some(Command::Outage(d)) => {
                    tracing::warn!(device = %cfg.device, "injected outage: offline for {d:?}");
                    conn = None;
                    connected = false;
                    offline_until = Instant::now() + d;
                    for s in outbox.iter_mut() {
                        s.sent = false;
                    }
                    awaiting_pkid.clear();
                    by_pkid.clear();
                }
                None => input_open = false,
            },
        }
    }
}

fn subscribe(client: &AsyncClient, down_topic: &str) -> anyhow::Result<()> {
    client
        .try_subscribe(down_topic, QoS::AtLeastOnce)
        .with_context(|| format!("subscribing to {down_topic}"))
}

fn fill_window(
    client: &AsyncClient,
    up_topic: &str,
    outbox: &mut VecDeque<Slot>,
    awaiting: &mut VecDeque<FrameRef>,
) -> anyhow::Result<()> {
    let inflight = outbox.iter().filter(|s| s.sent).count();
    let room = WINDOW.saturating_sub(inflight);
    for slot in outbox.iter_mut().filter(|s| !s.sent).take(room) {
        client
            .try_publish(up_topic, QoS::AtLeastOnce, false, slot.out.payload.clone())
            .context("queueing a publish")?;
        slot.sent = true;
        awaiting.push_back(slot.out.frame_ref);
    }
    Ok(())
}
