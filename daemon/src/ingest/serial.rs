//! Serial transport: COBS frames from `coldchain_proto::serial`, acks back.
//!
//! One thread per configured port. It opens the port (retrying every few
//! seconds while it is absent: a logger is docked and undocked at will), feeds
//! bytes to the streaming decoder, hands each whole frame to the ingest task
//! and writes back the signed ack the ingest task produces once the frame is
//! durable, and the signed time and settings (`Downlink::Sync`) after the
//! first ack of each device boot and every 10 minutes after that: a logger
//! that only ever talks over serial learns the time this way. A damaged frame is counted and logged; the device resends what was
//! not acknowledged. A logger that dumps its whole flash log this way merges
//! with what arrived over MQTT: the store keeps one copy per (device, boot, seq).

use std::io::{Read, Write};
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc as std_mpsc};
use std::time::Duration;

use coldchain_proto::serial::Decoder;
use tokio::sync::{mpsc, watch};

use super::{Ack, Inbound, Job, Stats, now_ms};
use crate::config::SerialPort;
use crate::store::Via;

/// Runs one port until `stop` turns true. Blocking: call from a thread.
pub fn run_port(
    cfg: SerialPort,
    tx: mpsc::Sender<Job>,
    stop: watch::Receiver<bool>,
    stats: Arc<Stats>,
) {
    let mut logged_absent = false;
    while !*stop.borrow() {
        let port = serialport::new(&cfg.path, cfg.baud)
            .timeout(Duration::from_millis(200))
            .open();
        let mut port = match port {
            Ok(p) => p,
            Err(e) => {
                if !logged_absent {
                    tracing::warn!(port = %cfg.path, "serial port unavailable, retrying every 2 s: {e}");
                    logged_absent = true;
                }
                std::thread::sleep(Duration::from_secs(2));
                continue;
            }
        };
        logged_absent = false;
        stats.serial_opens.fetch_add(1, Ordering::Relaxed);
        tracing::info!(port = %cfg.path, baud = cfg.baud, "serial port open");
        let mut writer = match port.try_clone() {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(port = %cfg.path, "cannot clone serial port handle: {e}");
                std::thread::sleep(Duration::from_secs(2));
                continue;
            }
        };
        let (reply_tx, reply_rx) = std_mpsc::channel::<Vec<u8>>();
        let path = cfg.path.clone();
        let writer_thread = std::thread::spawn(move || {
            for bytes in reply_rx {
                if let Err(e) = writer.write_all(&bytes).and_then(|_| writer.flush()) {
                    tracing::warn!(port = %path, "cannot write ack: {e}");
                    return;
                }
            }
        });
        let mut dec = Decoder::new();
        let mut buf = [0u8; 1024];
        'read: while !*stop.borrow() {
            let n = match port.read(&mut buf) {
                Ok(0) => {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => continue,
                Err(e) => {
                    tracing::warn!(port = %cfg.path, "serial port lost, reopening: {e}");
                    break 'read;
                }
            };
            for &b in &buf[..n] {
                match dec.push(b) {
                    None => {}
                    Some(Err(e)) => {
                        stats.serial_damaged.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(port = %cfg.path, "damaged serial frame: {e}");
                    }
                    Some(Ok(payload)) => {
                        let job = Job {
                            inbound: Inbound {
                                via: Via::Serial,
                                source: cfg.path.clone(),
                                claimed: None,
                                payload: payload.to_vec(),
                                oversize: None,
                                received_ms: now_ms(),
                            },
                            ack: Ack::Serial(reply_tx.clone()),
                        };
                        if tx.blocking_send(job).is_err() {
                            return;
                        }
                    }
                }
            }
        }
        drop(reply_tx);
        let _ = writer_thread.join();
        std::thread::sleep(Duration::from_millis(500));
    }
}
