//! Serial ingest over a real pty pair: a logger docked at the receiving lab
//! dumps its whole flash log; the daemon acknowledges each frame once durable,
//! and the dump merges with what already arrived over MQTT without duplicates.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::{Duration, Instant};

use coldchain_proto::codec::{MAX_SIGNED_LEN, decode_signed, encode_signed};
use coldchain_proto::serial::{self, Decoder};
use coldchain_proto::{
    Body, ChannelKind, DeviceId, DeviceKey, Downlink, Frame, FrameRef, Measurement, Reading,
    Timestamp,
};
use coldchain_tests::*;
use nix::fcntl::{FcntlArg, OFlag, fcntl};

fn key() -> DeviceKey {
    DeviceKey::from_hex(TEST_KEY).unwrap()
}

fn signed_frame(seq: u32) -> Vec<u8> {
    let r = Reading {
        channel: 0,
        kind: ChannelKind::Rtd,
        dt_ms: 0,
        value: Measurement::Valid(-190_000 + seq as i32),
    };
    let f = Frame {
        device: DeviceId::new("logger-1").unwrap(),
        boot: 1,
        seq,
        time: Timestamp::Wall(1_763_769_600_000 + u64::from(seq) * 60_000),
        body: Body::Readings(heapless::Vec::from_slice(&[r]).unwrap()),
    };
    let mut buf = [0u8; MAX_SIGNED_LEN];
    encode_signed(&f, &key(), &mut buf).unwrap().to_vec()
}

fn line(payload: &[u8]) -> Vec<u8> {
    let mut out = [0u8; serial::MAX_FRAME_LEN];
    let n = serial::encode(payload, &mut out).unwrap();
    out[..n].to_vec()
}

/// A pty whose slave is reachable at `link` (a symlink, so the "port" can
/// vanish and come back at the same path, like a USB logger unplugged).
struct Pty {
    master: File,
    _slave: OwnedFd,
}

impl Pty {
    fn open(link: &Path) -> Pty {
        let p = nix::pty::openpty(None, None).unwrap();
        let name = nix::unistd::ttyname(&p.slave).unwrap();
        let _ = std::fs::remove_file(link);
        std::os::unix::fs::symlink(&name, link).unwrap();
        let flags = fcntl(&p.master, FcntlArg::F_GETFL).unwrap();
        fcntl(
            &p.master,
            FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
        )
        .unwrap();
        Pty {
            master: File::from(p.master),
            _slave: p.slave,
        }
    }

    /// Reads acks until `want` distinct acked frames were seen (or the timeout bounds a hang).
    /// Time syncs received go to `syncs` (their `unix_ms`).
    fn acks(
        &mut self,
        want: usize,
        nacks: &mut Vec<FrameRef>,
        syncs: &mut Vec<u64>,
    ) -> BTreeSet<FrameRef> {
        let mut dec = Decoder::new();
        let mut acked = BTreeSet::new();
        let start = Instant::now();
        let mut buf = [0u8; 512];
        while acked.len() < want {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "only {} acks: {acked:?}",
                acked.len()
            );
            match self.master.read(&mut buf) {
                Ok(n) if n > 0 => {
                    for &b in &buf[..n] {
                        if let Some(Ok(p)) = dec.push(b) {
                            match decode_signed::<Downlink>(p, &key())
                                .expect("ack signed with the device key")
                            {
                                Downlink::Ack(r) => {
                                    acked.insert(r);
                                }
                                Downlink::Nack { frame, .. } => nacks.push(frame),
                                Downlink::Sync { unix_ms, .. } => syncs.push(unix_ms),
                            }
                        }
                    }
                }
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        acked
    }
}

#[test]
fn docked_logger_dump_merges_with_mqtt_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Mosquitto::start(&dir.path().join("broker"));
    let link = dir.path().join("ttyLOGGER");
    let daemon = Daemon::start(
        &dir.path().join("daemon"),
        broker.port,
        &[DeviceCfg::new("logger-1")],
        &format!("[[serial]]\npath = \"{}\"\nbaud = 115200\n", link.display()),
    );

    // In transit: frames 0..10 arrived over MQTT.
    for seq in 0..10 {
        mosquitto_pub(
            broker.port,
            "coldchain/v1/dev/logger-1/up",
            &signed_frame(seq),
        )
        .unwrap();
    }
    wait_for(Duration::from_secs(30), "MQTT frames stored", || {
        (daemon.stat("frames_stored") >= 10).then_some(())
    });

    // The port does not exist yet: the daemon keeps retrying. Now the logger is docked.
    let mut pty = Pty::open(&link);
    wait_for(
        Duration::from_secs(30),
        "the daemon to open the port",
        || (daemon.stat("serial.opens") >= 1).then_some(()),
    );
    // The whole flash log, 0..30, with line noise, a damaged copy of 12 and a cut frame.
    let mut wire = Vec::new();
    for seq in 0..30 {
        if seq == 12 {
            let mut bad = line(&signed_frame(12));
            let mid = bad.len() / 2;
            bad[mid] ^= 0x40;
            wire.extend_from_slice(&bad);
            wire.extend_from_slice(b"\x13\x37 noise \xff");
            let cut = line(&signed_frame(13));
            wire.extend_from_slice(&cut[..cut.len() / 3]);
        }
        wire.extend_from_slice(&line(&signed_frame(seq)));
    }
    let before = now_ms() as u64;
    pty.master.write_all(&wire).unwrap();
    let mut nacks = Vec::new();
    let mut syncs = Vec::new();
    let acked = pty.acks(30, &mut nacks, &mut syncs);
    let after = now_ms() as u64;
    let want: BTreeSet<_> = (0..30).map(|seq| FrameRef { boot: 1, seq }).collect();
    assert_eq!(acked, want, "every frame acknowledged once durable");
    assert!(nacks.is_empty());
    // The docked logger is told the time once (signed with its key: checked
    // by decode_signed), not once per frame.
    assert_eq!(syncs.len(), 1, "{syncs:?}");
    assert!(
        (before..=after).contains(&syncs[0]),
        "sync {} not between {before} and {after}",
        syncs[0]
    );
    assert!(
        daemon.stat("serial.damaged_frames") >= 2,
        "the damaged and the cut frame are counted"
    );

    let rows = daemon.all_readings("logger-1");
    let seqs: Vec<u64> = rows.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (0..30).collect::<Vec<_>>(), "one copy of each frame");
    assert_eq!(
        daemon.stat("duplicates"),
        10,
        "the 10 frames already received over MQTT"
    );
    assert!(
        daemon
            .get("/api/v1/devices/logger-1/gaps")
            .as_array()
            .unwrap()
            .is_empty()
    );

    // Unplugged and plugged in again at the same path: the daemon reopens it.
    drop(pty);
    std::thread::sleep(Duration::from_millis(300));
    let mut pty = Pty::open(&link);
    wait_for(
        Duration::from_secs(30),
        "the daemon to reopen the port",
        || (daemon.stat("serial.opens") >= 2).then_some(()),
    );
    pty.master.write_all(&line(&signed_frame(30))).unwrap();
    let acked = pty.acks(1, &mut nacks, &mut syncs);
    assert!(acked.contains(&FrameRef { boot: 1, seq: 30 }));
    assert_eq!(daemon.all_readings("logger-1").len(), 31);
    let logs = daemon.logs();
    assert!(logs.contains("serial port unavailable"), "{logs}");
}
