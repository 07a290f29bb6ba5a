//! The MQTT uplink: a small MQTT 3.1.1 client state machine, QoS 1, over a
//! transport of our own ([`Transport`]: `embedded-io-async` plus connect).
//!
//! Why not `minimq`: the version available (0.13) speaks MQTT 5 only, pulls in
//! `embedded-io-async` 0.7 (the workspace is on 0.6) and `embassy-time` (a
//! global time driver, where the firmware passes time in so tests run on a
//! hand-set clock), and it keeps its own RAM copy of unacknowledged messages
//! to resend. Here the flash queue is the only copy: what is resent after a
//! reconnect is read again from flash. What we need of MQTT is five packets.
//!
//! * One QoS 1 PUBLISH in flight: the oldest queued frame, on
//!   `coldchain/v1/dev/{device}/up`. Only its PUBACK removes it from the queue.
//!   A lost connection or a PUBACK that does not come within `ack_timeout_ms`
//!   closes the connection; after reconnecting, the frame is published again
//!   from flash (clean session: the broker keeps nothing for us, and receivers
//!   deduplicate by `(device, boot, seq)`).
//! * Reconnect with back-off doubling from `backoff_min_ms` to `backoff_max_ms`,
//!   reset by a CONNACK.
//! * Presence on `coldchain/v1/dev/{device}/online`: a retained last will
//!   `offline` in CONNECT (the broker publishes it when the device vanishes),
//!   and a retained `online` right after each CONNACK, so a reconnect replaces
//!   the `offline` left by the previous connection; [`MqttUplink::disconnect`]
//!   publishes `offline` itself (a DISCONNECT suppresses the will).
//!   The `online` message goes at QoS 1 with its own packet id, outside the
//!   one-frame-in-flight logic: its PUBACK removes nothing and nothing waits
//!   for it. QoS 1 because MQTT 3.1.1 lets a broker answer a publish it does
//!   not authorise by closing the connection, and mosquitto 2.0 does so for
//!   QoS 0 (seen over TLS), while it PUBACKs a refused QoS 1 publish. Data
//!   comes before presence: a connection lost while the `online` PUBACK is
//!   outstanding makes the next connection go without it (a broker whose ACL
//!   lacks the grant then keeps that connection, and frames flow); the
//!   connection after that tries again.
//! * SUBSCRIBE to `coldchain/v1/dev/{device}/down`; a PUBLISH there is verified
//!   with the device key and handed out as [`Event::Sync`] with its retain
//!   flag, to apply with [`crate::sync::apply_sync`] (which ignores a retained
//!   copy older than the policy allows).
//! * PINGREQ when idle for the keep-alive; a PINGRESP that does not come within
//!   `ack_timeout_ms` closes the connection.
//!
//! Sans-I/O timing as in the serial uplink: [`MqttUplink::poll`] is given
//! `now_ms`, does at most one thing, and never waits for time.

use coldchain_proto::codec::{CodecError, decode_signed};
use coldchain_proto::topic::{self, TopicBuf, device_down, device_online, device_up};
use coldchain_proto::{DeviceId, DeviceKey, Downlink, FrameRef, Settings};
use embedded_io_async::{Read, ReadReady, Write};
use embedded_storage_async::nor_flash::MultiwriteNorFlash;
use sequential_storage::cache::CacheImpl;

use crate::queue::{self, ENTRY_BUF_LEN, Outbox};

/// Largest MQTT packet accepted from the broker.
pub const RX_MAX: usize = 1024;

/// A connection to the broker: a byte stream that can be (re)opened.
#[allow(
    async_fn_in_trait,
    reason = "used on single-threaded embedded executors, as embedded-io-async's own traits are"
)]
pub trait Transport: Read + Write + ReadReady {
    /// Opens a new connection (e.g. a TCP connect), dropping any old one.
    async fn connect(&mut self) -> Result<(), Self::Error>;
    /// Closes the connection.
    fn close(&mut self);
}

/// Longest MQTT user name and password kept.
pub const CREDENTIAL_MAX: usize = 64;

/// Timing and login of the MQTT uplink.
#[derive(Clone, PartialEq, Eq)]
pub struct MqttConfig {
    /// MQTT keep-alive, seconds.
    pub keep_alive_s: u16,
    /// CONNACK, PUBACK and PINGRESP must come within this.
    pub ack_timeout_ms: u64,
    /// First reconnect pause.
    pub backoff_min_ms: u64,
    /// Longest reconnect pause.
    pub backoff_max_ms: u64,
    /// MQTT user name, sent in CONNECT (a broker with a password file or
    /// per-device accounts). On hardware, TLS belongs to the [`Transport`].
    pub username: Option<heapless::String<CREDENTIAL_MAX>>,
    /// MQTT password, sent in CONNECT. Without a `username` it goes with an
    /// empty user name (MQTT 3.1.1 sends a password only after a user name).
    pub password: Option<heapless::Vec<u8, CREDENTIAL_MAX>>,
}

impl core::fmt::Debug for MqttConfig {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("MqttConfig")
            .field("keep_alive_s", &self.keep_alive_s)
            .field("ack_timeout_ms", &self.ack_timeout_ms)
            .field("backoff_min_ms", &self.backoff_min_ms)
            .field("backoff_max_ms", &self.backoff_max_ms)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "(set)"))
            .finish()
    }
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            keep_alive_s: 30,
            ack_timeout_ms: 10_000,
            backoff_min_ms: 250,
            backoff_max_ms: 60_000,
            username: None,
            password: None,
        }
    }
}

/// What one [`MqttUplink::poll`] did.
#[allow(
    clippy::large_enum_variant,
    reason = "no allocator: settings travel inline, as in Downlink"
)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// CONNECT sent.
    Connecting,
    /// CONNACK accepted: online (SUBSCRIBE and the retained `online` sent).
    Connected,
    /// SUBACK: the down topic is subscribed (`granted` false: the broker
    /// refused it, e.g. by its ACL; no sync will come). A broker sends the
    /// retained sync right after this.
    Subscribed {
        /// The broker granted the subscription.
        granted: bool,
    },
    /// The connection is gone (or refused); the next attempt is at `retry_at_ms`.
    Disconnected {
        /// When the next connect is tried.
        retry_at_ms: u64,
    },
    /// The oldest queued frame was published (QoS 1).
    Published(FrameRef),
    /// Its PUBACK came: removed from the queue.
    Acked(FrameRef),
    /// A verified downlink on the down topic.
    Sync {
        /// Wall-clock time, ms since the Unix epoch.
        unix_ms: u64,
        /// Settings.
        settings: Settings,
        /// Delivered as a retained message.
        retained: bool,
    },
    /// A message on the down topic that did not verify: ignored.
    Refused(CodecError),
    /// Any other packet handled (PINGRESP, a downlink that is not a sync).
    Other,
}

/// Why the uplink stopped (connection trouble is not an error: it reconnects).
#[derive(Debug)]
pub enum Error<F> {
    /// The flash queue failed.
    Queue(queue::Error<F>),
}

impl<F> From<queue::Error<F>> for Error<F> {
    fn from(e: queue::Error<F>) -> Self {
        Error::Queue(e)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Offline { retry_at: u64 },
    AwaitConnAck { since: u64 },
    Online,
}

/// The MQTT client state.
#[derive(Debug)]
pub struct MqttUplink {
    device: DeviceId,
    key: DeviceKey,
    cfg: MqttConfig,
    up: TopicBuf,
    down: TopicBuf,
    state: State,
    failures: u32,
    next_pkid: u16,
    inflight: Option<(FrameRef, u16, u64)>,
    /// Packet id of the `online` PUBLISH whose PUBACK has not come.
    online_pkid: Option<u16>,
    /// The last connection was lost before the `online` PUBACK: skip it once.
    skip_online: bool,
    last_tx: u64,
    ping_sent: Option<u64>,
    rx: [u8; RX_MAX],
    rx_len: usize,
}

fn put_str(out: &mut heapless::Vec<u8, 1024>, s: &[u8]) -> Result<(), ()> {
    let n = u16::try_from(s.len()).map_err(|_| ())?;
    out.extend_from_slice(&n.to_be_bytes()).map_err(|_| ())?;
    out.extend_from_slice(s).map_err(|_| ())
}

/// Fixed header + body into one buffer.
fn packet(first: u8, body: &[u8], out: &mut [u8]) -> Option<usize> {
    let mut len = body.len();
    let mut hdr = [0u8; 5];
    hdr[0] = first;
    let mut i = 1;
    loop {
        let mut b = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            b |= 0x80;
        }
        hdr[i] = b;
        i += 1;
        if len == 0 {
            break;
        }
        if i == 5 {
            return None;
        }
    }
    let n = i + body.len();
    out.get_mut(..i)?.copy_from_slice(&hdr[..i]);
    out.get_mut(i..n)?.copy_from_slice(body);
    Some(n)
}

/// Parses a fixed header: (first byte, header length, remaining length).
fn header(b: &[u8]) -> Option<(u8, usize, usize)> {
    let mut len = 0usize;
    for i in 1..5 {
        let byte = *b.get(i)?;
        len |= usize::from(byte & 0x7F) << (7 * (i - 1));
        if byte & 0x80 == 0 {
            return Some((b[0], i + 1, len));
        }
    }
    // A fifth length byte: malformed; report a size that can never fit.
    Some((b[0], 5, usize::MAX / 2))
}

impl MqttUplink {
    /// An offline uplink; the first connect is tried at once.
    pub fn new(device: DeviceId, key: DeviceKey, cfg: MqttConfig) -> Self {
        MqttUplink {
            up: device_up(&device),
            down: device_down(&device),
            device,
            key,
            cfg,
            state: State::Offline { retry_at: 0 },
            failures: 0,
            next_pkid: 1,
            inflight: None,
            online_pkid: None,
            skip_online: false,
            last_tx: 0,
            ping_sent: None,
            rx: [0; RX_MAX],
            rx_len: 0,
        }
    }

    /// True between CONNACK and the loss of the connection.
    pub fn is_online(&self) -> bool {
        self.state == State::Online
    }

    /// The frame published and not yet acknowledged.
    pub fn in_flight(&self) -> Option<FrameRef> {
        self.inflight.map(|(r, _, _)| r)
    }

    /// Leaves cleanly: publishes the retained `offline` itself (the broker
    /// does not publish the last will after a DISCONNECT; QoS 0, as nothing
    /// waits for a PUBACK here and the broker handles it before the
    /// DISCONNECT that follows in the same write), sends DISCONNECT and
    /// closes the transport. What is queued stays in flash for
    /// the next connection. The uplink stays offline until the next
    /// [`MqttUplink::poll`] after `retry_at_ms`.
    pub async fn disconnect<T: Transport>(&mut self, t: &mut T, now_ms: u64, retry_at_ms: u64) {
        if self.state == State::Online {
            let mut b: heapless::Vec<u8, 1024> = heapless::Vec::new();
            let mut out = [0u8; 160];
            let online = device_online(&self.device);
            let ok = put_str(&mut b, online.as_bytes()).is_ok()
                && b.extend_from_slice(topic::OFFLINE.as_bytes()).is_ok();
            let n = if ok { packet(0x31, &b, &mut out) } else { None };
            if let Some(n) = n
                && let Some(end) = out.get_mut(n..n + 2)
            {
                end.copy_from_slice(&[0xE0, 0x00]);
                let _ = self.send(t, &out[..n + 2], now_ms).await;
            }
            info!("mqtt: disconnected");
        }
        t.close();
        self.state = State::Offline {
            retry_at: retry_at_ms,
        };
        self.inflight = None;
        self.online_pkid = None;
        self.ping_sent = None;
        self.rx_len = 0;
    }

    fn pkid(&mut self) -> u16 {
        let p = self.next_pkid;
        self.next_pkid = if p == u16::MAX { 1 } else { p + 1 };
        p
    }

    fn drop_link<T: Transport>(&mut self, t: &mut T, now: u64) -> Event {
        t.close();
        self.failures = self.failures.saturating_add(1);
        let shift = (self.failures - 1).min(20);
        let pause = self
            .cfg
            .backoff_min_ms
            .saturating_mul(1 << shift)
            .min(self.cfg.backoff_max_ms);
        let retry_at = now.saturating_add(pause);
        if self.online_pkid.take().is_some() {
            warn!(
                "mqtt: connection lost before the broker acknowledged the online message; the next connection goes without it (check that the broker's ACL grants the device coldchain/v1/dev/<device>/online)"
            );
            self.skip_online = true;
        }
        self.state = State::Offline { retry_at };
        // The frame stays in flash; it is published again after reconnecting.
        self.inflight = None;
        self.ping_sent = None;
        self.rx_len = 0;
        warn!("mqtt: connection lost, retry in {} ms", pause);
        Event::Disconnected {
            retry_at_ms: retry_at,
        }
    }

    async fn send<T: Transport>(&mut self, t: &mut T, bytes: &[u8], now: u64) -> bool {
        let ok = t.write_all(bytes).await.is_ok() && t.flush().await.is_ok();
        self.last_tx = now;
        ok
    }

    fn connect_packet(&self, out: &mut [u8]) -> Option<usize> {
        let will = device_online(&self.device);
        let mut b: heapless::Vec<u8, 1024> = heapless::Vec::new();
        put_str(&mut b, b"MQTT").ok()?;
        let pass = self.cfg.password.as_deref();
        let user = match (&self.cfg.username, pass) {
            (Some(u), _) => Some(u.as_bytes()),
            (None, Some(_)) => Some(&b""[..]),
            (None, None) => None,
        };
        // Level 4 (3.1.1); flags: user name, password, will retain, will QoS 1,
        // will, clean session.
        let mut flags = 0x20 | 0x08 | 0x04 | 0x02;
        if user.is_some() {
            flags |= 0x80;
        }
        if pass.is_some() {
            flags |= 0x40;
        }
        b.extend_from_slice(&[4, flags]).ok()?;
        b.extend_from_slice(&self.cfg.keep_alive_s.to_be_bytes())
            .ok()?;
        put_str(&mut b, self.device.as_str().as_bytes()).ok()?;
        put_str(&mut b, will.as_bytes()).ok()?;
        put_str(&mut b, topic::OFFLINE.as_bytes()).ok()?;
        if let Some(u) = user {
            put_str(&mut b, u).ok()?;
        }
        if let Some(p) = pass {
            put_str(&mut b, p).ok()?;
        }
        packet(0x10, &b, out)
    }

    /// Does at most one thing and says what. `None`: nothing to do now.
    pub async fn poll<T, S, C>(
        &mut self,
        t: &mut T,
        outbox: &mut Outbox<S, C>,
        now_ms: u64,
        buf: &mut [u8; ENTRY_BUF_LEN],
    ) -> Result<Option<Event>, Error<S::Error>>
    where
        T: Transport,
        S: MultiwriteNorFlash,
        C: CacheImpl<()>,
    {
        let mut out = [0u8; ENTRY_BUF_LEN + 128];
        if let State::Offline { retry_at } = self.state {
            if now_ms < retry_at {
                return Ok(None);
            }
            if t.connect().await.is_err() {
                return Ok(Some(self.drop_link(t, now_ms)));
            }
            self.rx_len = 0;
            let Some(n) = self.connect_packet(&mut out) else {
                return Ok(Some(self.drop_link(t, now_ms)));
            };
            if !self.send(t, &out[..n], now_ms).await {
                return Ok(Some(self.drop_link(t, now_ms)));
            }
            self.state = State::AwaitConnAck { since: now_ms };
            return Ok(Some(Event::Connecting));
        }

        // 1. A whole packet from the broker?
        if let Some(ev) = self.receive(t, outbox, now_ms, buf).await? {
            return Ok(Some(ev));
        }

        // 2. Deadlines.
        let late = |since: u64| now_ms >= since.saturating_add(self.cfg.ack_timeout_ms);
        match self.state {
            State::AwaitConnAck { since } if late(since) => {
                return Ok(Some(self.drop_link(t, now_ms)));
            }
            State::AwaitConnAck { .. } => return Ok(None),
            _ => {}
        }
        if self.inflight.is_some_and(|(_, _, at)| late(at)) || self.ping_sent.is_some_and(late) {
            return Ok(Some(self.drop_link(t, now_ms)));
        }

        // 3. Publish the oldest queued frame.
        if self.inflight.is_none()
            && let Some((r, bytes)) = outbox.oldest(buf).await?
        {
            let pkid = self.pkid();
            let mut b: heapless::Vec<u8, 1024> = heapless::Vec::new();
            let built = put_str(&mut b, self.up.as_bytes())
                .and_then(|_| b.extend_from_slice(&pkid.to_be_bytes()).map_err(|_| ()))
                .and_then(|_| b.extend_from_slice(bytes).map_err(|_| ()));
            let n = built.ok().and_then(|_| packet(0x32, &b, &mut out));
            let Some(n) = n else {
                return Ok(Some(self.drop_link(t, now_ms)));
            };
            if !self.send(t, &out[..n], now_ms).await {
                return Ok(Some(self.drop_link(t, now_ms)));
            }
            self.inflight = Some((r, pkid, now_ms));
            return Ok(Some(Event::Published(r)));
        }

        // 4. Keep-alive.
        let keep = u64::from(self.cfg.keep_alive_s) * 1000;
        if keep > 0 && self.ping_sent.is_none() && now_ms >= self.last_tx.saturating_add(keep) {
            if !self.send(t, &[0xC0, 0x00], now_ms).await {
                return Ok(Some(self.drop_link(t, now_ms)));
            }
            self.ping_sent = Some(now_ms);
        }
        Ok(None)
    }

    async fn receive<T, S, C>(
        &mut self,
        t: &mut T,
        outbox: &mut Outbox<S, C>,
        now_ms: u64,
        buf: &mut [u8; ENTRY_BUF_LEN],
    ) -> Result<Option<Event>, Error<S::Error>>
    where
        T: Transport,
        S: MultiwriteNorFlash,
        C: CacheImpl<()>,
    {
        // Read what is there, up to one whole packet.
        loop {
            if let Some((_, h, len)) = header(&self.rx[..self.rx_len]) {
                if h + len > RX_MAX {
                    warn!("mqtt: packet too large from the broker");
                    return Ok(Some(self.drop_link(t, now_ms)));
                }
                if self.rx_len >= h + len {
                    break;
                }
            }
            match t.read_ready() {
                Ok(true) => {}
                Ok(false) => return Ok(None),
                Err(_) => return Ok(Some(self.drop_link(t, now_ms))),
            }
            let want = match header(&self.rx[..self.rx_len]) {
                Some((_, h, len)) => h + len,
                None => self.rx_len + 1,
            };
            match t.read(&mut self.rx[self.rx_len..want]).await {
                Ok(0) | Err(_) => return Ok(Some(self.drop_link(t, now_ms))),
                Ok(n) => self.rx_len += n,
            }
        }
        let Some((first, h, len)) = header(&self.rx[..self.rx_len]) else {
            return Ok(None);
        };
        let mut pkt = [0u8; RX_MAX];
        pkt[..len].copy_from_slice(&self.rx[h..h + len]);
        let body = &pkt[..len];
        self.rx.copy_within(h + len..self.rx_len, 0);
        self.rx_len -= h + len;

        match first >> 4 {
            // CONNACK
            2 => {
                if !matches!(self.state, State::AwaitConnAck { .. }) {
                    return Ok(Some(Event::Other));
                }
                if body.get(1) != Some(&0) {
                    warn!("mqtt: connection refused by the broker");
                    return Ok(Some(self.drop_link(t, now_ms)));
                }
                self.state = State::Online;
                self.failures = 0;
                // SUBSCRIBE to the down topic, then the retained `online`
                // (QoS 1, see the module notes), in one write.
                let pkid = self.pkid();
                let mut b: heapless::Vec<u8, 1024> = heapless::Vec::new();
                let mut out = [0u8; 320];
                let ok = b.extend_from_slice(&pkid.to_be_bytes()).is_ok()
                    && put_str(&mut b, self.down.as_bytes()).is_ok()
                    && b.push(1).is_ok();
                let mut n = if ok { packet(0x82, &b, &mut out) } else { None };
                if core::mem::take(&mut self.skip_online) {
                    info!("mqtt: this connection goes without the online message");
                } else if let Some(sub) = n {
                    let pkid = self.pkid();
                    b.clear();
                    let online = device_online(&self.device);
                    let ok = put_str(&mut b, online.as_bytes()).is_ok()
                        && b.extend_from_slice(&pkid.to_be_bytes()).is_ok()
                        && b.extend_from_slice(topic::ONLINE.as_bytes()).is_ok();
                    n = if ok {
                        packet(0x33, &b, &mut out[sub..]).map(|m| sub + m)
                    } else {
                        None
                    };
                    self.online_pkid = Some(pkid);
                }
                match n {
                    Some(n) if self.send(t, &out[..n], now_ms).await => {}
                    _ => return Ok(Some(self.drop_link(t, now_ms))),
                }
                info!("mqtt: connected");
                Ok(Some(Event::Connected))
            }
            // PUBLISH
            3 => {
                let qos = (first >> 1) & 3;
                let retained = first & 1 == 1;
                let Some(tl) = body
                    .get(..2)
                    .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
                else {
                    return Ok(Some(self.drop_link(t, now_ms)));
                };
                let mut at = 2 + tl;
                let topic_ok = body.get(2..at) == Some(self.down.as_bytes());
                if qos > 0 {
                    let Some(id) = body.get(at..at + 2) else {
                        return Ok(Some(self.drop_link(t, now_ms)));
                    };
                    let ack = [0x40, 0x02, id[0], id[1]];
                    at += 2;
                    if !self.send(t, &ack, now_ms).await {
                        return Ok(Some(self.drop_link(t, now_ms)));
                    }
                }
                if !topic_ok {
                    return Ok(Some(Event::Other));
                }
                let payload = body.get(at..).unwrap_or(&[]);
                Ok(Some(match decode_signed::<Downlink>(payload, &self.key) {
                    Ok(Downlink::Sync { unix_ms, settings }) => Event::Sync {
                        unix_ms,
                        settings,
                        retained,
                    },
                    Ok(_) => Event::Other,
                    Err(e) => {
                        warn!("mqtt: a downlink did not verify with the device key");
                        Event::Refused(e)
                    }
                }))
            }
            // PUBACK
            4 => {
                let id = body.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]));
                match self.inflight {
                    Some((r, pkid, _)) if Some(pkid) == id => {
                        self.inflight = None;
                        outbox.ack(r, buf).await?;
                        Ok(Some(Event::Acked(r)))
                    }
                    _ => {
                        if id.is_some() && id == self.online_pkid {
                            self.online_pkid = None;
                        }
                        Ok(Some(Event::Other))
                    }
                }
            }
            // PINGRESP
            13 => {
                self.ping_sent = None;
                Ok(Some(Event::Other))
            }
            // SUBACK: packet id, then one return code (0x80: failure).
            9 => {
                let granted = body.get(2).is_some_and(|&c| c != 0x80);
                if !granted {
                    warn!("mqtt: the broker refused the subscription to the down topic");
                }
                Ok(Some(Event::Subscribed { granted }))
            }
            // Anything else.
            _ => Ok(Some(Event::Other)),
        }
    }
}
