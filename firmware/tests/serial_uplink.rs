//! The serial uplink against an in-memory embedded-io port and the
//! sequential-storage mock flash, with a hand-set clock: the "daemon" here is
//! the test, which reads the frames off the line and writes signed replies.

mod common;
use common::block_on;

use std::collections::{BTreeSet, VecDeque};
use std::convert::Infallible;

use coldchain_firmware::batch::{ReadingBatch, SignedFrame};
use coldchain_firmware::queue::{ENTRY_BUF_LEN, Outbox};
use coldchain_firmware::sync::{SettingsState, SyncPolicy, apply_sync};
use coldchain_firmware::uplink::serial::{Event, SerialConfig, SerialUplink};
use coldchain_firmware::{FrameBuilder, TimeBase};
use coldchain_proto::codec::{MAX_SIGNED_LEN, decode_signed, encode_signed};
use coldchain_proto::serial::{Decoder, FrameError, MAX_FRAME_LEN, encode};
use coldchain_proto::{
    ChannelKind, DeviceId, DeviceKey, Downlink, Frame, FrameRef, Measurement, NackReason, Settings,
    Timestamp,
};
use embedded_io_async::{ErrorType, Read, ReadReady, Write};
use sequential_storage::cache::{Cache, Uncached};
use sequential_storage::mock_flash::{MockFlashBase, WriteCountCheck};

type Flash = MockFlashBase<8, 4, 256>;
type Queue = Outbox<Flash, Cache<Uncached, Uncached, Uncached, ()>>;
const RANGE: std::ops::Range<u32> = Flash::FULL_FLASH_RANGE;

fn key() -> DeviceKey {
    DeviceKey::from_bytes([0x42; 32])
}

const CFG: SerialConfig = SerialConfig {
    ack_timeout_ms: 1_000,
    retry_min_ms: 100,
    retry_max_ms: 400,
};

/// An in-memory UART: what the device wrote, and what the other side sent.
#[derive(Debug, Default)]
struct Port {
    to_device: VecDeque<u8>,
    from_device: Vec<u8>,
}

impl ErrorType for Port {
    type Error = Infallible;
}
impl ReadReady for Port {
    fn read_ready(&mut self) -> Result<bool, Infallible> {
        Ok(!self.to_device.is_empty())
    }
}
impl Read for Port {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
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
impl Write for Port {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        self.from_device.extend_from_slice(buf);
        Ok(buf.len())
    }
}

impl Port {
    /// The frames the device put on the line since the last call, verified.
    fn take_frames(&mut self) -> Vec<FrameRef> {
        let mut dec = Decoder::new();
        let mut out = Vec::new();
        for b in std::mem::take(&mut self.from_device) {
            if let Some(r) = dec.push(b) {
                let f: Frame = decode_signed(r.expect("clean line"), &key()).expect("verifies");
                out.push(f.frame_ref());
            }
        }
        out
    }
    fn reply_with(&mut self, msg: &Downlink, k: &DeviceKey) {
        let mut s = [0u8; MAX_SIGNED_LEN];
        let signed = encode_signed(msg, k, &mut s).unwrap();
        let mut line = [0u8; MAX_FRAME_LEN];
        let n = encode(signed, &mut line).unwrap();
        self.to_device.extend(&line[..n]);
    }
    fn reply(&mut self, msg: &Downlink) {
        self.reply_with(msg, &key());
    }
}

fn frames(n: usize, boot: u32) -> Vec<SignedFrame> {
    let mut fb = FrameBuilder::new(DeviceId::new("dock-1").unwrap(), key(), boot);
    let tb = TimeBase::unsynced();
    (0..n)
        .map(|i| {
            let mut b = ReadingBatch::new();
            for k in 0..(i % 4 + 1) {
                b.push_reading(
                    (i * 1000 + k) as u64,
                    k as u8,
                    ChannelKind::Rtd,
                    Measurement::Valid(-190_000 + i as i32),
                )
                .unwrap();
            }
            let f = fb.readings(&mut b, &tb).unwrap();
            fb.sign(&f).unwrap()
        })
        .collect()
}

fn queue_with(all: &[SignedFrame]) -> Queue {
    let mut q = Outbox::new(
        Flash::new(WriteCountCheck::Twice, None, true),
        RANGE,
        Cache::new_uncached(),
    );
    let mut buf = [0u8; ENTRY_BUF_LEN];
    for f in all {
        block_on(q.push(f, &mut buf)).unwrap();
    }
    q
}

fn queued(q: &mut Queue) -> u32 {
    let mut buf = [0u8; ENTRY_BUF_LEN];
    block_on(q.len(&mut buf)).unwrap()
}

struct Rig {
    up: SerialUplink,
    port: Port,
    q: Queue,
    now: u64,
    buf: [u8; ENTRY_BUF_LEN],
}

impl Rig {
    fn new(all: &[SignedFrame]) -> Rig {
        Rig {
            up: SerialUplink::new(key(), CFG),
            port: Port::default(),
            q: queue_with(all),
            now: 0,
            buf: [0; ENTRY_BUF_LEN],
        }
    }
    fn poll(&mut self) -> Option<Event> {
        block_on(
            self.up
                .poll(&mut self.port, &mut self.q, self.now, &mut self.buf),
        )
        .unwrap()
    }
}

fn r(seq: u32) -> FrameRef {
    FrameRef { boot: 1, seq }
}

#[test]
fn a_dump_sends_oldest_first_and_removes_each_frame_only_on_its_verified_ack() {
    let all = frames(5, 1);
    let mut rig = Rig::new(&all);
    for seq in 0..5 {
        assert_eq!(rig.poll(), Some(Event::Sent(r(seq))));
        assert_eq!(rig.port.take_frames(), vec![r(seq)]);
        // No answer yet: nothing more is sent and the frame stays queued.
        assert_eq!(rig.poll(), None);
        assert_eq!(queued(&mut rig.q), 5 - seq);
        rig.port.reply(&Downlink::Ack(r(seq)));
        assert_eq!(rig.poll(), Some(Event::Acked(r(seq))));
        assert_eq!(queued(&mut rig.q), 4 - seq);
    }
    assert_eq!(rig.poll(), None, "queue empty: idle");
    assert!(rig.port.from_device.is_empty());
}

#[test]
fn a_nack_or_a_timeout_keeps_the_frame_and_it_is_resent_after_a_back_off() {
    let all = frames(2, 1);
    let mut rig = Rig::new(&all);
    assert_eq!(rig.poll(), Some(Event::Sent(r(0))));
    rig.port.reply(&Downlink::Nack {
        frame: r(0),
        reason: NackReason::Busy,
    });
    assert_eq!(
        rig.poll(),
        Some(Event::Nacked {
            frame: r(0),
            reason: NackReason::Busy
        })
    );
    assert_eq!(queued(&mut rig.q), 2);
    // Back-off: 100 ms after the first failure.
    rig.now = 99;
    assert_eq!(rig.poll(), None);
    rig.now = 100;
    assert_eq!(rig.poll(), Some(Event::Sent(r(0))));
    // No answer within the ack timeout.
    rig.now = 1_099;
    assert_eq!(rig.poll(), None);
    rig.now = 1_100;
    assert_eq!(rig.poll(), Some(Event::TimedOut(r(0))));
    assert_eq!(queued(&mut rig.q), 2);
    assert_eq!(rig.up.failures(), 2);
    // Second failure: 200 ms.
    rig.now = 1_299;
    assert_eq!(rig.poll(), None);
    rig.now = 1_300;
    assert_eq!(rig.poll(), Some(Event::Sent(r(0))));
    assert_eq!(rig.port.take_frames(), vec![r(0), r(0), r(0)]);
    rig.port.reply(&Downlink::Ack(r(0)));
    assert_eq!(rig.poll(), Some(Event::Acked(r(0))));
    assert_eq!(rig.up.failures(), 0);
    assert_eq!(
        rig.poll(),
        Some(Event::Sent(r(1))),
        "no back-off after an ack"
    );
}

#[test]
fn the_back_off_doubles_and_is_capped() {
    let all = frames(1, 1);
    let mut rig = Rig::new(&all);
    for pause in [100, 200, 400, 400, 400] {
        assert_eq!(rig.poll(), Some(Event::Sent(r(0))));
        rig.now += CFG.ack_timeout_ms;
        assert_eq!(rig.poll(), Some(Event::TimedOut(r(0))));
        let t = rig.now;
        rig.now = t + pause - 1;
        assert_eq!(rig.poll(), None, "resent before {pause} ms");
        rig.now = t + pause;
    }
    assert_eq!(rig.poll(), Some(Event::Sent(r(0))));
    assert_eq!(queued(&mut rig.q), 1);
}

#[test]
fn forged_damaged_and_noisy_replies_never_remove_a_frame() {
    let all = frames(2, 1);
    let mut rig = Rig::new(&all);
    assert_eq!(rig.poll(), Some(Event::Sent(r(0))));
    // An ack signed with another key.
    rig.port
        .reply_with(&Downlink::Ack(r(0)), &DeviceKey::from_bytes([0x43; 32]));
    assert!(matches!(rig.poll(), Some(Event::Refused(_))));
    assert_eq!(queued(&mut rig.q), 2);
    // A genuine ack damaged on the line.
    let mut s = [0u8; MAX_SIGNED_LEN];
    let signed = encode_signed(&Downlink::Ack(r(0)), &key(), &mut s).unwrap();
    let mut line = [0u8; MAX_FRAME_LEN];
    let n = encode(signed, &mut line).unwrap();
    line[n / 2] ^= 0x08;
    rig.port.to_device.extend(&line[..n]);
    assert!(matches!(
        rig.poll(),
        Some(Event::Damaged(FrameError::Crc | FrameError::Cobs))
    ));
    assert_eq!(queued(&mut rig.q), 2);
    // Noise, then a good ack: the decoder resynchronises.
    rig.port.to_device.extend(b"\x13\x37garbage\xff");
    rig.port.reply(&Downlink::Ack(r(0)));
    let mut ev = Vec::new();
    while let Some(e) = rig.poll() {
        ev.push(e);
        if matches!(ev.last(), Some(Event::Acked(_))) {
            break;
        }
    }
    assert_eq!(ev.last(), Some(&Event::Acked(r(0))), "{ev:?}");
    assert_eq!(queued(&mut rig.q), 1);
}

#[test]
fn a_late_ack_still_removes_its_frame_and_a_repeated_ack_is_harmless() {
    let all = frames(3, 1);
    let mut rig = Rig::new(&all);
    assert_eq!(rig.poll(), Some(Event::Sent(r(0))));
    rig.now = CFG.ack_timeout_ms;
    assert_eq!(rig.poll(), Some(Event::TimedOut(r(0))));
    // The ack of the first attempt arrives after the timeout.
    rig.port.reply(&Downlink::Ack(r(0)));
    assert_eq!(rig.poll(), Some(Event::Acked(r(0))));
    rig.port.reply(&Downlink::Ack(r(0)));
    assert_eq!(rig.poll(), Some(Event::DuplicateAck(r(0))));
    assert_eq!(queued(&mut rig.q), 2);
    rig.now += CFG.retry_max_ms;
    assert_eq!(rig.poll(), Some(Event::Sent(r(1))));
}

#[test]
fn a_verified_sync_sets_the_clock_and_the_settings() {
    let all = frames(1, 1);
    let mut rig = Rig::new(&all);
    let settings = Settings {
        version: 4,
        upload_interval_s: 60,
        status_interval_s: 600,
        tilt_limit_deg: 30,
        channels: heapless::Vec::new(),
    };
    let t = 1_763_769_600_000;
    rig.port.reply(&Downlink::Sync {
        unix_ms: t,
        settings: settings.clone(),
    });
    rig.now = 5_000;
    let Some(Event::Sync {
        unix_ms,
        settings: got,
    }) = rig.poll()
    else {
        panic!("expected a sync")
    };
    let mut tb = TimeBase::unsynced();
    let mut st = SettingsState::new();
    let o = apply_sync(
        &mut tb,
        &mut st,
        &SyncPolicy::default(),
        rig.now,
        unix_ms,
        got,
        false,
    );
    assert!(o.clock.is_ok() && o.settings_changed);
    assert_eq!(tb.stamp(6_000), Timestamp::Wall(t + 1_000));
    assert_eq!(st.current(), Some(&settings));
    // A sync signed with another key is refused.
    rig.port.reply_with(
        &Downlink::Sync {
            unix_ms: t,
            settings,
        },
        &DeviceKey::from_bytes([1; 32]),
    );
    assert!(matches!(rig.poll(), Some(Event::Refused(_))));
}

/// Runs a dump to completion against a perfect "daemon" that acks every
/// frame it sees, with the flash cut after `cut` byte-steps (then a reboot:
/// the queue and the uplink are rebuilt from what the flash holds). Returns
/// the frames the daemon received, with repeats, and the frames left queued.
fn dump_with_cut(all: &[SignedFrame], cut: Option<u32>) -> (Vec<FrameRef>, u32, bool) {
    let mut rig = Rig::new(all);
    let mut q = {
        let mut flash = std::mem::replace(
            &mut rig.q,
            Outbox::new(Flash::default(), RANGE, Cache::new_uncached()),
        )
        .into_flash();
        flash.bytes_until_shutoff = cut;
        Outbox::new(flash, RANGE, Cache::new_uncached())
    };
    let mut received = Vec::new();
    let mut was_cut = false;
    let mut up = SerialUplink::new(key(), CFG);
    for _ in 0..10_000 {
        match block_on(up.poll(&mut rig.port, &mut q, rig.now, &mut rig.buf)) {
            Ok(Some(Event::Sent(_))) => {
                for f in rig.port.take_frames() {
                    received.push(f);
                    rig.port.reply(&Downlink::Ack(f));
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => {
                if up.in_flight().is_none() && queued(&mut q) == 0 {
                    return (received, 0, was_cut);
                }
                rig.now += 50;
            }
            Err(_) => {
                // Power cut: RAM is lost (uplink state, bytes in the UART),
                // the flash keeps what it holds.
                assert!(!was_cut, "only one cut per run");
                was_cut = true;
                let mut flash = q.into_flash();
                flash.bytes_until_shutoff = None;
                q = Outbox::new(flash, RANGE, Cache::new_uncached());
                up = SerialUplink::new(key(), CFG);
                rig.port.to_device.clear();
                rig.port.from_device.clear();
            }
        }
    }
    let left = queued(&mut q);
    (received, left, was_cut)
}

#[test]
fn a_power_cut_at_every_flash_step_of_a_dump_loses_no_frame() {
    let all = frames(6, 1);
    let want: BTreeSet<FrameRef> = all.iter().map(|f| f.frame_ref).collect();
    let (got, left, cut) = dump_with_cut(&all, None);
    assert!(!cut);
    assert_eq!(left, 0);
    assert_eq!(
        got,
        want.iter().copied().collect::<Vec<_>>(),
        "uncut: each once, in order"
    );
    let mut cuts = 0;
    for step in 0.. {
        let (got, left, cut) = dump_with_cut(&all, Some(step));
        if !cut {
            break;
        }
        cuts += 1;
        assert_eq!(left, 0, "cut at {step}: the dump did not finish");
        let distinct: BTreeSet<FrameRef> = got.iter().copied().collect();
        assert_eq!(
            distinct, want,
            "cut at {step}: a frame never reached the daemon"
        );
        // A cut repeats at most the frame whose ack was being written.
        assert!(
            got.len() <= want.len() + 1,
            "cut at {step}: {} sends for {} frames",
            got.len(),
            want.len()
        );
    }
    println!("{cuts} cut points");
    assert!(cuts > 20, "only {cuts} cut points exercised");
}
