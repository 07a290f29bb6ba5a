//! Exports, streamed: written line by line into a bounded channel as the
//! database is walked, so neither the daemon nor the client ever holds a
//! whole export (a year of readings is gigabytes).
//!
//! * [`backup`]: every tree as `{"tree", "key", "value"}` lines (hex), what
//!   `coldchain import` restores.
//! * [`readings`]: every stored reading as one JSON object a line, for people
//!   and spreadsheets:
//!
//! ```json
//! {"device":"ln2-1","enrollment":0,"boot":1,"seq":0,"index":0,"time_ms":1767225600000,"time":"2026-01-01T00:00:00.000Z","time_source":"device","channel":0,"kind":"rtd","value":-190.123,"unit":"°C"}
//! {"device":"ln2-1","enrollment":0,"boot":1,"seq":0,"index":1,"time_ms":1767225602000,"time":"2026-01-01T00:00:02.000Z","time_source":"device","channel":0,"kind":"rtd","fault":"open_circuit"}
//! ```
//!
//! `boot` is the device's own boot counter and `enrollment` the device's
//! enrollment it belongs to (0 until it is re-enrolled, see
//! `daemon/DESIGN.md`); `index` is the reading's place in its frame, so
//! `(device, enrollment, boot, seq, index)` names one reading. `value` is in
//! °C (`unit`), %RH for humidity channels; a faulted reading has `fault`
//! instead. Sorted by device, then in storage order.

use std::time::{Duration, UNIX_EPOCH};

use coldchain_proto::{ChannelKind, DeviceId, Measurement};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::registry::Registry;
use crate::store::{KvStore, ReadingRecord};

/// A chunk of an export, or why it stopped.
pub type Chunk = Result<axum::body::Bytes, std::io::Error>;

/// Lines are sent in chunks of about this many bytes.
const CHUNK: usize = 64 * 1024;

/// Collects lines into chunks and sends them; false once the reader is gone.
struct Sink {
    tx: mpsc::Sender<Chunk>,
    buf: Vec<u8>,
}

impl Sink {
    fn line(&mut self, v: &Value) -> bool {
        // Writing JSON into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut self.buf, v);
        self.buf.push(b'\n');
        self.buf.len() < CHUNK || self.flush()
    }

    fn flush(&mut self) -> bool {
        if self.buf.is_empty() {
            return true;
        }
        let chunk = std::mem::take(&mut self.buf);
        self.tx.blocking_send(Ok(chunk.into())).is_ok()
    }

    fn fail(&mut self, what: &str, e: impl std::fmt::Display) {
        tracing::error!("export: {what}: {e}");
        let _ = self.flush();
        let _ = self
            .tx
            .blocking_send(Err(std::io::Error::other(format!("{what}: {e}"))));
    }
}

/// Streams the whole database (call from a blocking thread).
pub fn backup(store: &KvStore, tx: mpsc::Sender<Chunk>) {
    let mut out = Sink {
        tx,
        buf: Vec::with_capacity(CHUNK + 1024),
    };
    let names = match store.db().tree_names() {
        Ok(n) => n,
        Err(e) => return out.fail("database", e),
    };
    for name in names {
        let tree = match store.db().open_tree(&name) {
            Ok(t) => t,
            Err(e) => return out.fail("database", e),
        };
        let name = String::from_utf8_lossy(&name).into_owned();
        for kv in tree.iter() {
            let (k, v) = match kv {
                Ok(kv) => kv,
                Err(e) => return out.fail(&format!("database, tree {name}"), e),
            };
            if !out.line(&json!({ "tree": name, "key": hex::encode(k), "value": hex::encode(v) })) {
                return;
            }
        }
    }
    out.flush();
}

/// Streams every stored reading (call from a blocking thread).
pub fn readings(store: &KvStore, registry: &Registry, tx: mpsc::Sender<Chunk>) {
    let mut out = Sink {
        tx,
        buf: Vec::with_capacity(CHUNK + 1024),
    };
    // Every frame, with its readings (inline, or in `frame_readings` for
    // frames stored by earlier versions: `KvStore::frame_items`).
    let tree = match store.db().open_tree("frames") {
        Ok(t) => t,
        Err(e) => return out.fail("database", e),
    };
    let mut offsets: Option<(DeviceId, Vec<u32>)> = None;
    for kv in tree.iter() {
        let (k, v) = match kv {
            Ok(kv) => kv,
            Err(e) => return out.fail("database, tree frames", e),
        };
        let Some((device, boot, seq)) = split_frame_key(&k) else {
            continue;
        };
        let items: Vec<(u16, ReadingRecord)> = match store.frame_items(&k, &v) {
            Ok(i) => i,
            Err(e) => {
                return out.fail(&format!("device {device} boot {boot} seq {seq}"), e);
            }
        };
        if offsets.as_ref().is_none_or(|(d, _)| d.as_str() != device) {
            let Ok(id) = DeviceId::new(device) else {
                continue;
            };
            offsets = Some((id.clone(), registry.boot_offsets(&id)));
        }
        let (enrollment, own_boot) = offsets
            .as_ref()
            .map_or((0, boot), |(_, o)| device_boot(o, boot));
        for (idx, r) in items {
            if !out.line(&reading_line(device, enrollment, own_boot, seq, idx, &r)) {
                return;
            }
        }
    }
    out.flush();
}

/// `device ‖ 0 ‖ boot ‖ seq` split into its parts.
fn split_frame_key(k: &[u8]) -> Option<(&str, u32, u32)> {
    let z = k.iter().position(|&b| b == 0)?;
    let rest = &k[z + 1..];
    if rest.len() != 8 {
        return None;
    }
    let dev = std::str::from_utf8(&k[..z]).ok()?;
    let boot = u32::from_be_bytes(rest[..4].try_into().ok()?);
    let seq = u32::from_be_bytes(rest[4..].try_into().ok()?);
    Some((dev, boot, seq))
}

/// The enrollment a stored boot belongs to and the device's own boot: the
/// last enrollment whose offset is not above it (offsets never decrease, and
/// each is above every boot stored before it).
pub fn device_boot(offsets: &[u32], stored_boot: u32) -> (usize, u32) {
    let k = offsets.iter().rposition(|&o| o <= stored_boot).unwrap_or(0);
    let o = offsets.get(k).copied().unwrap_or(0);
    (k, stored_boot.saturating_sub(o))
}

/// One reading as an export line.
pub fn reading_line(
    device: &str,
    enrollment: usize,
    boot: u32,
    seq: u32,
    index: u16,
    r: &ReadingRecord,
) -> Value {
    let time = u64::try_from(r.time_ms).ok().map(|ms| {
        humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
    });
    let mut v = json!({
        "device": device,
        "enrollment": enrollment,
        "boot": boot,
        "seq": seq,
        "index": index,
        "time_ms": r.time_ms,
        "time": time,
        "time_source": r.time_source,
        "channel": r.channel,
        "kind": r.kind,
    });
    match r.value {
        Measurement::Valid(m) => {
            v["value"] = json!(f64::from(m) / 1000.0);
            v["unit"] = json!(match r.kind {
                ChannelKind::Humidity => "%RH",
                ChannelKind::Rtd | ChannelKind::Thermocouple | ChannelKind::Ambient => "°C",
            });
        }
        Measurement::Fault(f) => v["fault"] = json!(f),
    }
    v
}

/// A receiver of chunks as a body stream for axum.
#[derive(Debug)]
pub struct ChunkStream(pub mpsc::Receiver<Chunk>);

impl futures_core::Stream for ChunkStream {
    type Item = Chunk;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Chunk>> {
        self.0.poll_recv(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::TimeSource;
    use coldchain_proto::FaultKind;

    #[test]
    fn a_stored_boot_maps_back_to_its_enrollment_and_own_boot() {
        assert_eq!(device_boot(&[0], 3), (0, 3));
        assert_eq!(device_boot(&[0, 4], 3), (0, 3));
        assert_eq!(device_boot(&[0, 4], 5), (1, 1));
        assert_eq!(device_boot(&[0, 4, 4, 9], 6), (2, 2));
        assert_eq!(device_boot(&[0, 4, 9], 10), (2, 1));
    }

    #[test]
    fn a_line_names_the_reading_its_time_and_value_or_fault() {
        let r = ReadingRecord {
            channel: 2,
            kind: ChannelKind::Humidity,
            value: Measurement::Valid(45_250),
            time_ms: 1_767_225_600_123,
            time_source: TimeSource::Estimated,
        };
        let v = reading_line("dev-1", 1, 2, 7, 3, &r);
        assert_eq!(
            v,
            json!({"device": "dev-1", "enrollment": 1, "boot": 2, "seq": 7, "index": 3,
                "time_ms": 1_767_225_600_123_i64, "time": "2026-01-01T00:00:00.123Z",
                "time_source": "estimated", "channel": 2, "kind": "humidity",
                "value": 45.25, "unit": "%RH"})
        );
        let f = ReadingRecord {
            kind: ChannelKind::Rtd,
            value: Measurement::Fault(FaultKind::OpenCircuit),
            ..r
        };
        let v = reading_line("dev-1", 0, 1, 0, 0, &f);
        assert_eq!(v["fault"], "open_circuit");
        assert!(v.get("value").is_none() && v.get("unit").is_none());
    }
}
