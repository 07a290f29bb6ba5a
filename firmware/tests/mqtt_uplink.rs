//! The MQTT uplink's state machine without a network: a mock transport, the
//! test playing the broker, the mock flash and a hand-set clock.

mod common;
use common::block_on;

use std::collections::VecDeque;

use coldchain_firmware::batch::{ReadingBatch, SignedFrame};
use coldchain_firmware::clock::SyncRefused;
use coldchain_firmware::queue::{ENTRY_BUF_LEN, Outbox};
use coldchain_firmware::sync::{SettingsState, SyncPolicy, apply_sync};
use coldchain_firmware::uplink::mqtt::{Event, MqttConfig, MqttUplink, Transport};
use coldchain_firmware::{FrameBuilder, TimeBase};
use coldchain_proto::codec::{MAX_SIGNED_LEN, decode_signed, encode_signed};
use coldchain_proto::{
    ChannelKind, DeviceId, DeviceKey, Downlink, Frame, FrameRef, Measurement, Settings,
};
use embedded_io_async::{ErrorKind, ErrorType, Read, ReadReady, Write};
use sequential_storage::cache::{Cache, Uncached};
use sequential_storage::mock_flash::{MockFlashBase, WriteCountCheck};

type Flash = MockFlashBase<8, 4, 256>;
type Queue = Outbox<Flash, Cache<Uncached, Uncached, Uncached, ()>>;

fn key() -> DeviceKey {
    DeviceKey::from_bytes([0x24; 32])
}
fn dev() -> DeviceId {
    DeviceId::new("box-7").unwrap()
}

const CFG: MqttConfig = MqttConfig {
    keep_alive_s: 30,
    ack_timeout_ms: 5_000,
    backoff_min_ms: 250,
    backoff_max_ms: 2_000,
    username: None,
    password: None,
};

#[derive(Debug)]
struct Down;
impl embedded_io_async::Error for Down {
    fn kind(&self) -> ErrorKind {
        ErrorKind::ConnectionReset
    }
}

/// The network as the device sees it. `up`: the broker accepts connections.
#[derive(Debug, Default)]
struct Net {
    up: bool,
    open: bool,
    connects: u32,
    to_device: VecDeque<u8>,
    from_device: Vec<u8>,
}

impl ErrorType for Net {
    type Error = Down;
}
impl ReadReady for Net {
    fn read_ready(&mut self) -> Result<bool, Down> {
        if !self.open {
            return Err(Down);
        }
        Ok(!self.to_device.is_empty())
    }
}
impl Read for Net {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Down> {
        if !self.open {
            return Err(Down);
        }
        let mut n = 0;
        while n < buf.len()
            && let Some(b) = self.to_device.pop_front()
        {
            buf[n] = b;
            n += 1;
        }
        Ok(n)
    }
}
impl Write for Net {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, Down> {
        if !self.open {
            return Err(Down);
        }
        self.from_device.extend_from_slice(buf);
        Ok(buf.len())
    }
}
impl Transport for Net {
    async fn connect(&mut self) -> Result<(), Down> {
        if !self.up {
            return Err(Down);
        }
        self.open = true;
        self.connects += 1;
        self.to_device.clear();
        Ok(())
    }
    fn close(&mut self) {
        self.open = false;
    }
}

/// A packet the device sent: (first byte, body).
fn packets(bytes: &mut Vec<u8>) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut b = &std::mem::take(bytes)[..];
    while !b.is_empty() {
        let (mut len, mut i) = (0usize, 1);
        loop {
            len |= usize::from(b[i] & 0x7F) << (7 * (i - 1));
            i += 1;
            if b[i - 1] & 0x80 == 0 {
                break;
            }
        }
        out.push((b[0], b[i..i + len].to_vec()));
        b = &b[i + len..];
    }
    out
}

fn mqtt_str(b: &[u8]) -> (String, &[u8]) {
    let n = usize::from(u16::from_be_bytes([b[0], b[1]]));
    (
        String::from_utf8(b[2..2 + n].to_vec()).unwrap(),
        &b[2 + n..],
    )
}

fn enc_len(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let mut x = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            x |= 0x80;
        }
        out.push(x);
        if n == 0 {
            break;
        }
    }
}

fn frames(n: usize) -> Vec<SignedFrame> {
    let mut fb = FrameBuilder::new(dev(), key(), 1);
    let tb = TimeBase::unsynced();
    (0..n)
        .map(|i| {
            let mut b = ReadingBatch::new();
            b.push_reading(i as u64, 0, ChannelKind::Rtd, Measurement::Valid(-190_000))
                .unwrap();
            let f = fb.readings(&mut b, &tb).unwrap();
            fb.sign(&f).unwrap()
        })
        .collect()
}

struct Rig {
    mq: MqttUplink,
    net: Net,
    q: Queue,
    now: u64,
    buf: [u8; ENTRY_BUF_LEN],
}

impl Rig {
    fn new(n: usize) -> Rig {
        let mut q = Outbox::new(
            Flash::new(WriteCountCheck::Twice, None, true),
            Flash::FULL_FLASH_RANGE,
            Cache::new_uncached(),
        );
        let mut buf = [0u8; ENTRY_BUF_LEN];
        for f in frames(n) {
            block_on(q.push(&f, &mut buf)).unwrap();
        }
        Rig {
            mq: MqttUplink::new(dev(), key(), CFG),
            net: Net {
                up: true,
                ..Net::default()
            },
            q,
            now: 0,
            buf,
        }
    }
    fn poll(&mut self) -> Option<Event> {
        block_on(
            self.mq
                .poll(&mut self.net, &mut self.q, self.now, &mut self.buf),
        )
        .unwrap()
    }
    fn queued(&mut self) -> u32 {
        block_on(self.q.len(&mut self.buf)).unwrap()
    }
    fn broker(&mut self, bytes: &[u8]) {
        self.net.to_device.extend(bytes);
    }
    /// Connects: CONNECT checked, CONNACK given, SUBSCRIBE and the retained
    /// `online` checked byte for byte, the `online` PUBACKed (as a broker
    /// does, also for a publish its ACL refuses).
    fn online(&mut self) {
        let pkid = self.connack().expect("an online message");
        self.puback(pkid);
        assert_eq!(self.poll(), Some(Event::Other), "online PUBACK");
    }
    /// Connects and returns the packet id of the retained `online`, if sent
    /// (not acknowledged yet).
    fn connack(&mut self) -> Option<u16> {
        assert_eq!(self.poll(), Some(Event::Connecting));
        let p = packets(&mut self.net.from_device);
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].0, 0x10, "CONNECT");
        self.broker(&[0x20, 0x02, 0x00, 0x00]);
        assert_eq!(self.poll(), Some(Event::Connected));
        let bytes = self.net.from_device.clone();
        let p = packets(&mut self.net.from_device);
        assert_eq!(p[0].0, 0x82, "SUBSCRIBE");
        let (topic, rest) = mqtt_str(&p[0].1[2..]);
        assert_eq!(topic, "coldchain/v1/dev/box-7/down");
        assert_eq!(rest, [1], "QoS 1");
        match p.len() {
            1 => None,
            2 => {
                // PUBLISH, QoS 1, retained, payload "online".
                let (topic, rest) = mqtt_str(&p[1].1);
                assert_eq!(topic, "coldchain/v1/dev/box-7/online");
                let pkid = u16::from_be_bytes([rest[0], rest[1]]);
                let mut online = vec![0x33, 39, 0x00, 29];
                online.extend_from_slice(b"coldchain/v1/dev/box-7/online");
                online.extend_from_slice(&pkid.to_be_bytes());
                online.extend_from_slice(b"online");
                assert!(bytes.ends_with(&online), "retained online: {bytes:02x?}");
                Some(pkid)
            }
            n => panic!("{n} packets after CONNACK"),
        }
    }
    /// The PUBLISHes the device sent: (pkid, frame ref).
    fn published(&mut self) -> Vec<(u16, FrameRef)> {
        packets(&mut self.net.from_device)
            .into_iter()
            .filter(|(f, _)| f >> 4 == 3)
            .map(|(f, body)| {
                assert_eq!(f & 0x06, 0x02, "QoS 1");
                let (topic, rest) = mqtt_str(&body);
                assert_eq!(topic, "coldchain/v1/dev/box-7/up");
                let pkid = u16::from_be_bytes([rest[0], rest[1]]);
                let fr: Frame = decode_signed(&rest[2..], &key()).unwrap();
                (pkid, fr.frame_ref())
            })
            .collect()
    }
    fn puback(&mut self, pkid: u16) {
        let [a, b] = pkid.to_be_bytes();
        self.broker(&[0x40, 0x02, a, b]);
    }
    fn down(&mut self, msg: &Downlink, k: &DeviceKey, retain: bool, pkid: u16) {
        let mut s = [0u8; MAX_SIGNED_LEN];
        let signed = encode_signed(msg, k, &mut s).unwrap();
        let topic = b"coldchain/v1/dev/box-7/down";
        let mut body = Vec::new();
        body.extend_from_slice(&(topic.len() as u16).to_be_bytes());
        body.extend_from_slice(topic);
        body.extend_from_slice(&pkid.to_be_bytes());
        body.extend_from_slice(signed);
        let mut p = vec![0x32 | u8::from(retain)];
        enc_len(body.len(), &mut p);
        p.extend_from_slice(&body);
        self.broker(&p);
    }
}

fn r(seq: u32) -> FrameRef {
    FrameRef { boot: 1, seq }
}

#[test]
fn connect_carries_a_last_will_and_a_clean_session() {
    // (The retained "online" after CONNACK: Rig::online.)
    let mut rig = Rig::new(0);
    assert_eq!(rig.poll(), Some(Event::Connecting));
    let p = packets(&mut rig.net.from_device);
    let (proto, rest) = mqtt_str(&p[0].1);
    assert_eq!(proto, "MQTT");
    assert_eq!(rest[0], 4, "MQTT 3.1.1");
    let flags = rest[1];
    assert_eq!(flags & 0x02, 0x02, "clean session");
    assert_eq!(flags & 0x04, 0x04, "will flag");
    assert_eq!(flags & 0x18, 0x08, "will QoS 1");
    assert_eq!(flags & 0x20, 0x20, "will retained");
    assert_eq!(u16::from_be_bytes([rest[2], rest[3]]), 30, "keep-alive");
    let (client, rest) = mqtt_str(&rest[4..]);
    let (will_topic, rest) = mqtt_str(rest);
    let (will_msg, rest) = mqtt_str(rest);
    assert_eq!(client, "box-7");
    assert_eq!(will_topic, "coldchain/v1/dev/box-7/online");
    assert_eq!(will_msg, "offline");
    assert!(rest.is_empty());
}

#[test]
fn frames_leave_the_queue_only_on_their_puback() {
    let mut rig = Rig::new(3);
    rig.online();
    for seq in 0..3 {
        assert_eq!(rig.poll(), Some(Event::Published(r(seq))));
        let p = rig.published();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].1, r(seq));
        assert_eq!(rig.poll(), None, "one in flight");
        assert_eq!(rig.queued(), 3 - seq);
        // A PUBACK for another packet id removes nothing.
        rig.puback(p[0].0.wrapping_add(100));
        assert_eq!(rig.poll(), Some(Event::Other));
        assert_eq!(rig.queued(), 3 - seq);
        rig.puback(p[0].0);
        assert_eq!(rig.poll(), Some(Event::Acked(r(seq))));
        assert_eq!(rig.queued(), 2 - seq);
    }
    assert_eq!(rig.poll(), None);
}

#[test]
fn a_lost_connection_keeps_the_frame_and_reconnects_with_a_capped_back_off() {
    let mut rig = Rig::new(2);
    rig.online();
    assert_eq!(rig.poll(), Some(Event::Published(r(0))));
    rig.published();
    // The broker goes away before the PUBACK.
    rig.net.open = false;
    rig.net.up = false;
    assert_eq!(rig.poll(), Some(Event::Disconnected { retry_at_ms: 250 }));
    assert_eq!(rig.queued(), 2);
    // Refused connects: 250, 500, 1000, 2000, 2000 ms apart.
    let mut t = 250;
    for pause in [500, 1000, 2000, 2000] {
        rig.now = t - 1;
        assert_eq!(rig.poll(), None, "connect tried before {t}");
        rig.now = t;
        assert_eq!(
            rig.poll(),
            Some(Event::Disconnected {
                retry_at_ms: t + pause
            })
        );
        t += pause;
    }
    // Back: reconnect, and the same frame is published again from flash.
    rig.net.up = true;
    rig.now = t;
    rig.online();
    assert_eq!(rig.poll(), Some(Event::Published(r(0))));
    let p = rig.published();
    assert_eq!(p[0].1, r(0));
    rig.puback(p[0].0);
    assert_eq!(rig.poll(), Some(Event::Acked(r(0))));
    // The back-off was reset by the CONNACK.
    rig.net.open = false;
    assert_eq!(
        rig.poll(),
        Some(Event::Disconnected {
            retry_at_ms: t + 250
        })
    );
}

#[test]
fn a_puback_that_never_comes_means_reconnect_and_publish_again() {
    let mut rig = Rig::new(1);
    rig.online();
    assert_eq!(rig.poll(), Some(Event::Published(r(0))));
    rig.published();
    rig.now = CFG.ack_timeout_ms - 1;
    assert_eq!(rig.poll(), None);
    rig.now = CFG.ack_timeout_ms;
    assert!(matches!(rig.poll(), Some(Event::Disconnected { .. })));
    assert_eq!(rig.queued(), 1);
    rig.now += CFG.backoff_min_ms;
    rig.online();
    assert_eq!(rig.poll(), Some(Event::Published(r(0))));
    assert_eq!(rig.net.connects, 2);
}

#[test]
fn a_connack_that_never_comes_or_refuses_means_back_off() {
    let mut rig = Rig::new(1);
    assert_eq!(rig.poll(), Some(Event::Connecting));
    rig.now = CFG.ack_timeout_ms;
    assert_eq!(
        rig.poll(),
        Some(Event::Disconnected {
            retry_at_ms: CFG.ack_timeout_ms + 250
        })
    );
    rig.now += 250;
    assert_eq!(rig.poll(), Some(Event::Connecting));
    rig.broker(&[0x20, 0x02, 0x00, 0x05]); // not authorised
    assert!(matches!(rig.poll(), Some(Event::Disconnected { .. })));
    assert!(!rig.mq.is_online());
    assert_eq!(rig.queued(), 1);
}

#[test]
fn keep_alive_pings_and_a_missing_pingresp_drops_the_link() {
    let mut rig = Rig::new(0);
    rig.online();
    rig.now = 29_999;
    assert_eq!(rig.poll(), None);
    assert!(rig.net.from_device.is_empty());
    rig.now = 30_000;
    assert_eq!(rig.poll(), None);
    assert_eq!(packets(&mut rig.net.from_device), vec![(0xC0, vec![])]);
    rig.broker(&[0xD0, 0x00]);
    assert_eq!(rig.poll(), Some(Event::Other));
    rig.now = 60_000;
    assert_eq!(rig.poll(), None);
    assert_eq!(packets(&mut rig.net.from_device), vec![(0xC0, vec![])]);
    rig.now = 60_000 + CFG.ack_timeout_ms;
    assert!(matches!(rig.poll(), Some(Event::Disconnected { .. })));
}

#[test]
fn downlinks_are_verified_acked_and_a_stale_retained_sync_is_ignored() {
    let mut rig = Rig::new(0);
    rig.online();
    let t = 1_763_769_600_000u64;
    let settings = |version| Settings {
        version,
        upload_interval_s: 300,
        status_interval_s: 900,
        tilt_limit_deg: 45,
        channels: heapless::Vec::new(),
    };
    let mut tb = TimeBase::unsynced();
    let mut st = SettingsState::new();
    let policy = SyncPolicy {
        max_retained_age_ms: 60_000,
    };
    let mut apply = |ev: Option<Event>, now: u64, tb: &mut TimeBase| {
        let Some(Event::Sync {
            unix_ms,
            settings,
            retained,
        }) = ev
        else {
            panic!("expected a sync, got {ev:?}")
        };
        apply_sync(tb, &mut st, &policy, now, unix_ms, settings, retained)
    };

    // The retained copy at subscribe time: the clock is unset, so it is taken.
    rig.down(
        &Downlink::Sync {
            unix_ms: t,
            settings: settings(1),
        },
        &key(),
        true,
        9,
    );
    let ev = rig.poll();
    assert_eq!(
        packets(&mut rig.net.from_device),
        vec![(0x40, vec![0, 9])],
        "QoS 1 downlink PUBACKed"
    );
    let o = apply(ev, 0, &mut tb);
    assert!(o.clock.is_ok() && o.settings_changed);

    // 5 minutes later, the same old retained copy again (a reconnect): too old.
    rig.now = 300_000;
    rig.down(
        &Downlink::Sync {
            unix_ms: t,
            settings: settings(2),
        },
        &key(),
        true,
        10,
    );
    let o = apply(rig.poll(), rig.now, &mut tb);
    assert_eq!(o.clock, Err(SyncRefused::TooOld { age_ms: 300_000 }));
    assert!(!o.settings_changed);

    // A forged one is refused before anything looks at it.
    rig.down(
        &Downlink::Sync {
            unix_ms: t + 300_000,
            settings: settings(3),
        },
        &DeviceKey::from_bytes([1; 32]),
        false,
        11,
    );
    assert!(matches!(rig.poll(), Some(Event::Refused(_))));

    // A live one is applied.
    rig.down(
        &Downlink::Sync {
            unix_ms: t + 300_000,
            settings: settings(3),
        },
        &key(),
        false,
        12,
    );
    let o = apply(rig.poll(), rig.now, &mut tb);
    assert!(o.clock.is_ok() && o.settings_changed);
}

#[test]
fn suback_says_whether_the_down_topic_was_granted() {
    let mut rig = Rig::new(0);
    rig.online();
    rig.broker(&[0x90, 0x03, 0x00, 0x01, 0x01]);
    assert_eq!(rig.poll(), Some(Event::Subscribed { granted: true }));
    // 0x80: the broker refused it (an ACL).
    rig.broker(&[0x90, 0x03, 0x00, 0x01, 0x80]);
    assert_eq!(rig.poll(), Some(Event::Subscribed { granted: false }));
}

#[test]
fn disconnect_says_offline_sends_disconnect_keeps_the_queue_and_reconnects_only_when_told() {
    let mut rig = Rig::new(1);
    rig.online();
    assert_eq!(rig.poll(), Some(Event::Published(r(0))));
    rig.published();
    block_on(rig.mq.disconnect(&mut rig.net, rig.now, 1_000));
    // The retained "offline" first (no will after a DISCONNECT), QoS 0.
    let mut offline = vec![0x31, 38, 0x00, 29];
    offline.extend_from_slice(b"coldchain/v1/dev/box-7/online");
    offline.extend_from_slice(b"offline");
    offline.extend_from_slice(&[0xE0, 0x00]);
    assert_eq!(rig.net.from_device, offline);
    rig.net.from_device.clear();
    assert!(!rig.net.open, "transport closed");
    assert!(!rig.mq.is_online());
    assert_eq!(rig.mq.in_flight(), None);
    assert_eq!(rig.queued(), 1, "the unacknowledged frame stays in flash");
    rig.now = 999;
    assert_eq!(rig.poll(), None);
    rig.now = 1_000;
    assert_eq!(rig.poll(), Some(Event::Connecting));
    // Offline already: nothing to send, the transport is closed again.
    block_on(rig.mq.disconnect(&mut rig.net, rig.now, u64::MAX));
    rig.net.from_device.clear();
    block_on(rig.mq.disconnect(&mut rig.net, rig.now, u64::MAX));
    assert!(rig.net.from_device.is_empty());
}

/// The whole CONNECT, byte for byte, with and without a login.
#[test]
fn connect_bytes_with_user_name_and_password() {
    let will = b"coldchain/v1/dev/box-7/online";
    let base = |flags: u8, tail: &[u8]| {
        let mut body = vec![0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, flags, 0x00, 30];
        body.extend_from_slice(&[0x00, 0x05]);
        body.extend_from_slice(b"box-7");
        body.extend_from_slice(&[0x00, will.len() as u8]);
        body.extend_from_slice(will);
        body.extend_from_slice(&[0x00, 0x07]);
        body.extend_from_slice(b"offline");
        body.extend_from_slice(tail);
        let mut p = vec![0x10, body.len() as u8];
        p.extend_from_slice(&body);
        p
    };
    let connect = |cfg: MqttConfig| {
        let mut rig = Rig::new(0);
        rig.mq = MqttUplink::new(dev(), key(), cfg);
        assert_eq!(rig.poll(), Some(Event::Connecting));
        std::mem::take(&mut rig.net.from_device)
    };

    // No login: user name and password flags clear, nothing after the will.
    assert_eq!(connect(CFG), base(0x2E, &[]));

    let mut cfg = CFG;
    cfg.username = Some(heapless::String::try_from("box-7-login").unwrap());
    cfg.password = Some(heapless::Vec::from_slice(b"s3cr\xC3\xA9t").unwrap());
    let mut tail = vec![0x00, 11];
    tail.extend_from_slice(b"box-7-login");
    tail.extend_from_slice(&[0x00, 7]);
    tail.extend_from_slice(b"s3cr\xC3\xA9t");
    assert_eq!(connect(cfg.clone()), base(0xEE, &tail));

    // User name only.
    cfg.password = None;
    assert_eq!(connect(cfg), base(0xAE, &tail[..13]));

    // Password only: it goes after an empty user name.
    let mut cfg = CFG;
    cfg.password = Some(heapless::Vec::from_slice(b"pw").unwrap());
    assert_eq!(
        connect(cfg),
        base(0xEE, &[0x00, 0x00, 0x00, 0x02, b'p', b'w'])
    );

    // The password never shows in Debug output (logs).
    let mut cfg = CFG;
    cfg.password = Some(heapless::Vec::from_slice(b"hunter2").unwrap());
    assert!(!format!("{cfg:?}").contains("hunter2"));
}

/// Every CONNACK is followed by a retained `online` (QoS 1, its own packet
/// id), so a reconnect replaces the `offline` the broker published as the last
/// will of the lost connection. Its PUBACK removes no frame.
#[test]
fn each_connection_announces_itself_online_retained() {
    let mut rig = Rig::new(1);
    let online = rig.connack().unwrap();
    // Packet ids: 1 for the SUBSCRIBE, 2 for online, the frame's next.
    assert_eq!(online, 2);
    assert_eq!(rig.poll(), Some(Event::Published(r(0))));
    let p = rig.published();
    assert_eq!(p[0].0, 3);
    rig.puback(online);
    assert_eq!(rig.poll(), Some(Event::Other));
    assert_eq!(rig.queued(), 1, "the online PUBACK removed a frame");
    assert_eq!(rig.mq.in_flight(), Some(r(0)));
    rig.net.open = false;
    assert!(matches!(rig.poll(), Some(Event::Disconnected { .. })));
    rig.now += CFG.backoff_min_ms;
    // online() checks the retained "online" again on the new connection.
    rig.online();
    assert_eq!(rig.poll(), Some(Event::Published(r(0))));
    assert_eq!(rig.queued(), 1);
}

/// MQTT 3.1.1 lets a broker close the connection on a publish its ACL
/// refuses. A connection lost before the `online` PUBACK: the next one goes
/// without it, so frames still flow; the one after tries again.
#[test]
fn a_connection_lost_before_the_online_puback_makes_the_next_go_without_it() {
    let mut rig = Rig::new(1);
    assert!(rig.connack().is_some());
    // The broker closes instead of acknowledging.
    rig.net.open = false;
    assert!(matches!(rig.poll(), Some(Event::Disconnected { .. })));
    rig.now += CFG.backoff_min_ms;
    assert_eq!(rig.connack(), None, "no online message this time");
    assert_eq!(rig.poll(), Some(Event::Published(r(0))));
    let p = rig.published();
    rig.puback(p[0].0);
    assert_eq!(rig.poll(), Some(Event::Acked(r(0))));
    rig.net.open = false;
    assert!(matches!(rig.poll(), Some(Event::Disconnected { .. })));
    rig.now += CFG.backoff_min_ms;
    assert!(rig.connack().is_some(), "tried again");
}
