//! `coldchain-sim --serial`: a simulated logger dumps its flash queue to the
//! daemon over a serial line, through the firmware's serial uplink.
//!
//! The line is a null-modem cable made of two pty pairs: the daemon opens the
//! slave of pair A (`[[serial]] path`), the simulator opens the slave of pair
//! B (`--serial`), and this test copies bytes between the two masters. Being
//! the cable, the test sees every frame and every ack, and can hold frames
//! back to stop a dump exactly in the middle before "cutting the power"
//! (SIGKILL: RAM gone, the flash file stays).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use coldchain_proto::codec::{decode_signed, decode_unverified};
use coldchain_proto::serial::{self, Decoder};
use coldchain_proto::{DeviceKey, Downlink, Frame, FrameRef};
use coldchain_tests::*;
use nix::sys::termios::{SetArg, cfmakeraw, tcgetattr, tcsetattr};
use serde_json::Value;

const DEVICE: &str = "dock-1";

fn key() -> DeviceKey {
    DeviceKey::from_hex(TEST_KEY).unwrap()
}

/// One pty pair: the master (the test's end) and the slave kept open so the
/// master never sees a hang-up while the real user of the slave restarts.
struct Pair {
    master: File,
    slave_path: PathBuf,
    _slave: OwnedFd,
}

fn pair() -> Pair {
    let p = nix::pty::openpty(None, None).unwrap();
    // Raw from the start: no echo of bytes written before the user sets its mode.
    let mut t = tcgetattr(&p.slave).unwrap();
    cfmakeraw(&mut t);
    tcsetattr(&p.slave, SetArg::TCSANOW, &t).unwrap();
    let slave_path = nix::unistd::ttyname(&p.slave).unwrap();
    Pair {
        master: File::from(p.master),
        slave_path,
        _slave: p.slave,
    }
}

/// What crossed the cable.
#[derive(Default)]
struct Seen {
    /// Frames forwarded logger -> daemon, in order, repeats included.
    forwarded: Vec<FrameRef>,
    /// Frames held back (not forwarded).
    held: Vec<FrameRef>,
    /// Acks daemon -> logger, in order.
    acks: Vec<FrameRef>,
    /// Time syncs daemon -> logger (`unix_ms`), signed with the logger's key.
    syncs: Vec<u64>,
    /// Anything else the daemon sent, or that did not verify.
    other: Vec<String>,
}

/// The cable: forwards whole frames from the logger while `allow` permits
/// (frames beyond it are dropped, as a line cut drops them), and every byte
/// from the daemon.
struct Cable {
    daemon_side: PathBuf,
    logger_side: PathBuf,
    allow: Arc<AtomicUsize>,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    _pairs: (OwnedFd, OwnedFd),
}

impl Cable {
    fn new() -> Cable {
        let a = pair();
        let b = pair();
        let allow = Arc::new(AtomicUsize::new(usize::MAX));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (mut a_read, mut a_write) = (a.master.try_clone().unwrap(), a.master);
        let (mut b_read, mut b_write) = (b.master.try_clone().unwrap(), b.master);
        {
            let (allow, seen, stop) = (allow.clone(), seen.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut dec = Decoder::new();
                let mut buf = [0u8; 1024];
                while !stop.load(Ordering::Relaxed) {
                    let n = match b_read.read(&mut buf) {
                        Ok(n) if n > 0 => n,
                        _ => {
                            std::thread::sleep(Duration::from_millis(5));
                            continue;
                        }
                    };
                    for &byte in &buf[..n] {
                        let Some(Ok(payload)) = dec.push(byte) else {
                            continue;
                        };
                        let r = decode_unverified::<Frame>(payload)
                            .expect("the logger sends frames")
                            .0
                            .frame_ref();
                        let mut s = seen.lock().unwrap();
                        if s.forwarded.len() < allow.load(Ordering::SeqCst) {
                            let mut line = [0u8; serial::MAX_FRAME_LEN];
                            let k = serial::encode(payload, &mut line).unwrap();
                            a_write.write_all(&line[..k]).unwrap();
                            s.forwarded.push(r);
                        } else {
                            s.held.push(r);
                        }
                    }
                }
            });
        }
        {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut dec = Decoder::new();
                let mut buf = [0u8; 1024];
                while !stop.load(Ordering::Relaxed) {
                    let n = match a_read.read(&mut buf) {
                        Ok(n) if n > 0 => n,
                        _ => {
                            std::thread::sleep(Duration::from_millis(5));
                            continue;
                        }
                    };
                    b_write.write_all(&buf[..n]).unwrap();
                    for &byte in &buf[..n] {
                        if let Some(Ok(p)) = dec.push(byte) {
                            let mut s = seen.lock().unwrap();
                            match decode_signed::<Downlink>(p, &key()) {
                                Ok(Downlink::Ack(r)) => s.acks.push(r),
                                Ok(Downlink::Sync { unix_ms, .. }) => s.syncs.push(unix_ms),
                                other => s.other.push(format!("{other:?}")),
                            }
                        }
                    }
                }
            });
        }
        Cable {
            daemon_side: a.slave_path,
            logger_side: b.slave_path,
            allow,
            seen,
            stop,
            _pairs: (a._slave, b._slave),
        }
    }

    fn acked(&self) -> BTreeSet<FrameRef> {
        self.seen.lock().unwrap().acks.iter().copied().collect()
    }
}

impl Drop for Cable {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn sim_args<'a>(cable: &'a Cable, flash: &'a Path, frames: &'a str) -> Vec<String> {
    [
        "--serial",
        cable.logger_side.to_str().unwrap(),
        "--flash",
        flash.to_str().unwrap(),
        "--device",
        DEVICE,
        "--key",
        TEST_KEY,
        "--frames",
        frames,
        "--readings-per-frame",
        "4",
        "--interval-ms",
        "0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn run(args: &[String]) -> Value {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    run_sim(&a)
}

/// The daemon with the cable's daemon side as its serial port, and the broker
/// it also needs (its other ingest path).
fn start_daemon(dir: &Path, cable: &Cable) -> (Daemon, Mosquitto) {
    let broker = Mosquitto::start(&dir.join("broker"));
    let d = Daemon::start(
        &dir.join("daemon"),
        broker.port,
        &[DeviceCfg::new(DEVICE)],
        &format!(
            "[[serial]]\npath = \"{}\"\nbaud = 115200\n",
            cable.daemon_side.display()
        ),
    );
    wait_for(
        Duration::from_secs(30),
        "the daemon to open the port",
        || (d.stat("serial.opens") >= 1).then_some(()),
    );
    (d, broker)
}

/// Stored readings per (boot, seq).
fn stored(d: &Daemon) -> BTreeMap<(u64, u64), usize> {
    let mut m = BTreeMap::new();
    for r in d.all_readings(DEVICE) {
        *m.entry((r["boot"].as_u64().unwrap(), r["seq"].as_u64().unwrap()))
            .or_default() += 1;
    }
    m
}

fn every_frame_once(boot: u64, n: u64) -> BTreeMap<(u64, u64), usize> {
    (0..n).map(|seq| ((boot, seq), 4)).collect()
}

#[test]
fn a_logger_dumps_its_flash_queue_and_every_frame_arrives_once() {
    let dir = tempfile::tempdir().unwrap();
    let cable = Cable::new();
    let (daemon, _broker) = start_daemon(dir.path(), &cable);
    let flash = dir.path().join("logger.flash");

    let t = std::time::Instant::now();
    let sum = run(&sim_args(&cable, &flash, "40"));
    // Informational (not asserted): the stop-and-wait dump rate.
    println!("dump of 40 frames: {:?}", t.elapsed());
    assert_eq!(sum["frames"], 40, "{sum}");
    assert_eq!(sum["readings"], 160, "{sum}");
    assert_eq!(sum["boot"], 1, "blank flash: first boot");
    assert_eq!(sum["queued"], 0, "the flash queue is empty after the dump");
    assert_eq!(stored(&daemon), every_frame_once(1, 40));
    let want: BTreeSet<FrameRef> = (0..40).map(|seq| FrameRef { boot: 1, seq }).collect();
    assert_eq!(cable.acked(), want);
    assert!(cable.seen.lock().unwrap().other.is_empty());
    // The logger was told the time once in this boot, not once per frame.
    assert_eq!(cable.seen.lock().unwrap().syncs.len(), 1);

    // The next boot counts on in flash and finds nothing left to send.
    let sum = run(&sim_args(&cable, &flash, "0"));
    assert_eq!(
        (sum["boot"].as_u64(), sum["found"].as_u64()),
        (Some(2), Some(0)),
        "{sum}"
    );
    assert_eq!(
        (sum["sent"].as_u64(), sum["queued"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(stored(&daemon).len(), 40);
}

#[test]
fn a_power_cut_mid_dump_loses_nothing_and_the_next_boot_finishes_the_dump() {
    let dir = tempfile::tempdir().unwrap();
    let cable = Cable::new();
    let (daemon, _broker) = start_daemon(dir.path(), &cable);
    let flash = dir.path().join("logger.flash");

    // The cable passes 20 frames, then goes quiet: the dump stops in the middle.
    cable.allow.store(20, Ordering::SeqCst);
    let log = dir.path().join("sim1.log");
    let mut cmd = Command::new(bin("coldchain-sim"));
    cmd.args(sim_args(&cable, &flash, "60"))
        .env("COLDCHAIN_LOG", "info");
    let mut sim = Proc::spawn("coldchain-sim", cmd, &log);
    wait_for(
        Duration::from_secs(60),
        "20 acks and all 60 frames in flash",
        || {
            let made = std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("sampling done");
            (made && cable.acked().len() >= 20 && !cable.seen.lock().unwrap().held.is_empty())
                .then_some(())
        },
    );
    // Power cut: SIGKILL. RAM (the frame in flight, the uplink) is gone.
    sim.kill9();
    let first: BTreeSet<FrameRef> = (0..20).map(|seq| FrameRef { boot: 1, seq }).collect();
    assert_eq!(cable.acked(), first);
    assert_eq!(stored(&daemon), every_frame_once(1, 20));
    let held_before = cable.seen.lock().unwrap().forwarded.len();

    // Power back: the next boot finds the 40 unacknowledged frames in flash.
    cable.allow.store(usize::MAX, Ordering::SeqCst);
    let sum = run(&sim_args(&cable, &flash, "0"));
    assert_eq!(sum["boot"], 2, "{sum}");
    assert_eq!(
        sum["found"], 40,
        "exactly the unacknowledged frames survived: {sum}"
    );
    assert_eq!(sum["frames"], 40, "{sum}");
    assert_eq!(sum["queued"], 0, "{sum}");
    assert_eq!(
        stored(&daemon),
        every_frame_once(1, 60),
        "every frame exactly once"
    );
    let want: BTreeSet<FrameRef> = (0..60).map(|seq| FrameRef { boot: 1, seq }).collect();
    assert_eq!(cable.acked(), want);
    let seen = cable.seen.lock().unwrap();
    let after: BTreeSet<FrameRef> = seen.forwarded[held_before..].iter().copied().collect();
    let rest: BTreeSet<FrameRef> = (20..60).map(|seq| FrameRef { boot: 1, seq }).collect();
    assert_eq!(
        after, rest,
        "the second boot sends only what was not acknowledged"
    );
    drop(seen);

    // And a third boot has nothing left.
    let sum = run(&sim_args(&cable, &flash, "0"));
    assert_eq!(
        (sum["boot"].as_u64(), sum["found"].as_u64()),
        (Some(3), Some(0)),
        "{sum}"
    );
}
