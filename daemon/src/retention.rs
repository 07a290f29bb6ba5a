//! Retention: device data held longer than `store.retention_days` is purged,
//! except what a shipment may still need.
//!
//! What is purged, per device: frames (readings, events, the dedupe entry)
//! *received* before the cutoff, sequence-gap records detected before it and
//! security records whose minute ended before it. Age is by receive time (how
//! long we have held it), never by the device's clock alone, so a device with
//! a wrong clock cannot get fresh data purged.
//!
//! The paths those frames came by go with them (`crate::sites`): a purged
//! frame's own list of paths (a centre's `site_frames`) is removed, the
//! per-device, per-path summaries (`site_devices`) lose the purged frames
//! and take the span of the frames kept (a summary left with none is
//! removed), and a path's refusal record (`site_refused`) goes once its
//! latest refusal was received before the cutoff.
//!
//! What is kept whatever its age:
//! - data in the window of any shipment watching the device that is not
//!   closed, or was closed less than the retention period ago (from an hour
//!   before departure, or creation, to a day after arrival: the evaluation
//!   and report windows);
//! - shipments, alerts, the audit trail, and the outbox of items not yet
//!   delivered or forwarded to the centre: retention never removes anything
//!   from those trees (it adds to the outboxes, below).
//!
//! What brokers keep retained for a shipment goes with the protection of its
//! data: once a shipment was closed longer than the retention period ago
//! (its data is no longer kept), a pass queues an empty retained publish,
//! MQTT's way of deleting a retained message, on its status topic
//! (`coldchain/v1/ship/{id}/status`, on this daemon's broker), on its
//! forwarded status (`{prefix}/ship/{id}/status`, on the centre's broker,
//! when forwarding) and, at a centre, on its fleet record
//! (`coldchain/v1/fleet/ship/{id}`, which gateways would otherwise keep
//! receiving forever). Once per shipment (the `retained_cleared` tree); the
//! shipment's own record stays in the store.
//!
//! Each pass that purges anything is recorded in the audit trail with its
//! counts, and each pass that clears retained messages with the shipments. A frame older than the cutoff that arrives after its purge is
//! stored again (the dedupe entry went with it) and purged on the next pass.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use coldchain_proto::DeviceId;

use crate::shipment::{Shipment, State};
use crate::sites::Seen;
use crate::store::{GapRecord, KvStore, SecurityRecord, key};

const H: i64 = 3_600_000;
const DAY: i64 = 24 * H;

/// What a purge pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Purged {
    /// Frames removed (with their readings and events).
    pub frames: u64,
    /// Readings removed.
    pub readings: u64,
    /// Events and status records removed.
    pub events: u64,
    /// Gap records removed.
    pub gaps: u64,
    /// Security records removed.
    pub security: u64,
    /// Frames past the cutoff kept for a shipment.
    pub kept_for_shipments: u64,
    /// Per-frame path lists (`site_frames`, a centre's) removed with their
    /// frames.
    pub site_frames: u64,
    /// Paths' refusal records (`site_refused`) whose latest refusal was
    /// before the cutoff.
    pub site_refused: u64,
}

impl Purged {
    /// Whether anything was removed.
    pub fn any(&self) -> bool {
        self.frames + self.gaps + self.security + self.site_refused > 0
    }
}

/// Device-time windows `[from, to]` that must be kept, per device.
fn protected(shipments: &[Shipment], cutoff_ms: i64, now_ms: i64) -> Vec<(String, i64, i64)> {
    let mut out = Vec::new();
    for s in shipments {
        let needed = match (&s.state, &s.disposition) {
            (State::Closed, Some(d)) => d.at_ms >= cutoff_ms,
            (State::Closed, None) => false,
            _ => true,
        };
        if !needed {
            continue;
        }
        let from = s.departure_ms.unwrap_or(s.created_ms).min(s.created_ms) - H;
        let to = s.arrived_ms.unwrap_or(now_ms).saturating_add(DAY);
        for w in &s.watch {
            out.push((w.device.clone(), from, to));
        }
    }
    out
}

/// Purges device data received before `cutoff_ms` that no shipment needs
/// (see the module documentation). Not yet durable: the caller flushes.
pub fn purge(
    store: &KvStore,
    shipments: &[Shipment],
    cutoff_ms: i64,
    now_ms: i64,
) -> anyhow::Result<Purged> {
    use crate::store::Store;
    let db = store.db();
    let frames = db.open_tree("frames")?;
    let readings = db.open_tree("frame_readings")?;
    let events = db.open_tree("events")?;
    let gaps = db.open_tree("gaps")?;
    let security = db.open_tree("security")?;
    let paths = crate::sites::Paths::open(db)?;
    let keep = protected(shipments, cutoff_ms, now_ms);
    let mut p = Purged::default();
    for dev in store.known_devices()? {
        let Ok(d) = DeviceId::new(&dev) else { continue };
        let windows: Vec<(i64, i64)> = keep
            .iter()
            .filter(|k| k.0 == dev)
            .map(|k| (k.1, k.2))
            .collect();
        let prefix = key::device_prefix(&d);
        let mut clocks = std::collections::HashMap::new();
        // Frames purged and the span of those kept, per path (`sites`).
        let mut gone: BTreeMap<String, u64> = BTreeMap::new();
        let mut kept: BTreeMap<String, Seen> = BTreeMap::new();
        for kv in frames.scan_prefix(&prefix) {
            let (k, v) = kv?;
            let stored = crate::store::StoredFrame::parse(&v)?;
            let rec = stored.record;
            let at = key::parse_frame(&k).map(|(_, r)| r);
            let keep_it = rec.received_ms >= cutoff_ms || {
                let boot = at.map_or(0, |r| r.boot);
                let time_ms = store.place(&d, boot, rec.time_ms, rec.time_source, &mut clocks)?;
                let needed = windows
                    .iter()
                    .any(|&(from, to)| (from..=to).contains(&time_ms));
                p.kept_for_shipments += u64::from(needed);
                needed
            };
            if keep_it {
                // The time `sites::frame_time` gave it when it was noted.
                let t = if rec.time_source.is_synced() {
                    rec.time_ms
                } else {
                    rec.received_ms
                };
                let labels = match at {
                    Some(r) => paths.of_frame(&d, r)?,
                    None => BTreeSet::new(),
                };
                let labels = if labels.is_empty() {
                    BTreeSet::from([crate::sites::via_label(rec.via).to_string()])
                } else {
                    labels
                };
                for l in labels {
                    kept.entry(l)
                        .and_modify(|s| {
                            s.first_ms = s.first_ms.min(t);
                            s.last_ms = s.last_ms.max(t);
                        })
                        .or_insert(Seen {
                            frames: 0,
                            first_ms: t,
                            last_ms: t,
                        });
                }
                continue;
            }
            if let Some(r) = at {
                let (labels, had) = paths.forget_frame(&d, r, rec.via)?;
                p.site_frames += u64::from(had);
                for l in labels {
                    *gone.entry(l).or_default() += 1;
                }
            }
            // Inline (this version) or in `frame_readings` (earlier ones).
            let old_layout = readings.remove(&k)?;
            if let Some(list) = stored.readings.or(old_layout.as_deref()) {
                let (n, _) = postcard::take_from_bytes::<u64>(list)?;
                p.readings += n;
            }
            for ek in events.scan_prefix(&k).keys() {
                events.remove(ek?)?;
                p.events += 1;
            }
            frames.remove(&k)?;
            p.frames += 1;
        }
        paths.forget_counts(&dev, &gone, &kept)?;
        for kv in gaps.scan_prefix(&prefix) {
            let (k, v) = kv?;
            let g: GapRecord = postcard::from_bytes(&v)?;
            if g.detected_ms < cutoff_ms {
                gaps.remove(k)?;
                p.gaps += 1;
            }
        }
        for kv in security.scan_prefix(&prefix) {
            let (k, v) = kv?;
            let r: SecurityRecord = postcard::from_bytes(&v)?;
            if r.last_ms < cutoff_ms
                && !windows
                    .iter()
                    .any(|&(from, to)| r.first_ms <= to && r.last_ms >= from)
            {
                security.remove(k)?;
                p.security += 1;
            }
        }
    }
    p.site_refused = paths.forget_refused(cutoff_ms)?;
    Ok(p)
}

/// Queues, once per shipment, empty retained publishes that clear what
/// brokers keep for shipments closed before `cutoff_ms` (see the module
/// documentation); returns the shipments cleared now. Not yet durable: the
/// caller flushes.
pub fn clear_retained(
    db: &crate::kv::Db,
    cfg: &crate::config::Config,
    shipments: &[Shipment],
    cutoff_ms: i64,
    now_ms: i64,
) -> anyhow::Result<Vec<String>> {
    let cleared = db.open_tree("retained_cleared")?;
    let outbox = crate::outbox::Outbox::open(db)?;
    let forward = crate::forward::Forward::open(db, cfg.upstream_prefix())?;
    let mut out = Vec::new();
    for s in shipments {
        let expired = match (&s.state, &s.disposition) {
            (State::Closed, Some(d)) => d.at_ms < cutoff_ms,
            (State::Closed, None) => true,
            _ => false,
        };
        if !expired || cleared.contains_key(s.id.as_bytes())? {
            continue;
        }
        // Queued before the mark: a crash in between queues them again.
        if let Ok(topic) = coldchain_proto::topic::shipment_status(&s.id) {
            outbox.status(&s.id, topic.to_string(), String::new())?;
        }
        forward.push(&format!("ship/{}/status", s.id), Vec::new(), true)?;
        if cfg.centre.is_some() {
            outbox.fleet(
                &s.id,
                format!("{}/{}", crate::sites::FLEET_SHIPMENTS, s.id),
                String::new(),
            )?;
        }
        cleared.insert(s.id.as_bytes(), now_ms.to_be_bytes().to_vec())?;
        out.push(s.id.clone());
    }
    Ok(out)
}

/// One pass: purge, and clear the retained messages of shipments closed
/// before the cutoff; when anything went, record it in the audit trail and
/// flush.
pub fn run_pass(
    store: &KvStore,
    shipments: &crate::shipment::Shipments,
    audit: &crate::audit::Audit,
    cfg: &crate::config::Config,
    now_ms: i64,
) -> anyhow::Result<Purged> {
    use crate::store::Store;
    let retention_days = cfg.store.retention_days;
    let cutoff = now_ms - i64::from(retention_days) * DAY;
    let all = shipments.all()?;
    let cleared = clear_retained(store.db(), cfg, &all, cutoff, now_ms)?;
    if !cleared.is_empty() {
        audit.append(
            now_ms,
            "daemon",
            "retention.clear_retained",
            "store",
            serde_json::json!({
                "retention_days": retention_days,
                "closed_before_ms": cutoff,
                "shipments": cleared,
            }),
        )?;
        tracing::info!(
            shipments = ?cleared,
            "retention: clearing the retained status (and fleet record) of shipments closed before the retention period"
        );
        store.sync()?;
    }
    let p = purge(store, &all, cutoff, now_ms)?;
    if p.any() {
        audit.append(
            now_ms,
            "daemon",
            "retention.purge",
            "store",
            serde_json::json!({
                "retention_days": retention_days,
                "received_before_ms": cutoff,
                "purged": p,
            }),
        )?;
        tracing::info!(
            frames = p.frames,
            readings = p.readings,
            events = p.events,
            gaps = p.gaps,
            security = p.security,
            site_frames = p.site_frames,
            site_refused = p.site_refused,
            kept_for_shipments = p.kept_for_shipments,
            retention_days,
            "retention: purged device data older than the retention period"
        );
        store.sync()?;
    }
    Ok(p)
}

/// Runs a pass every hour until `stop`, on a blocking thread (the daemon runs
/// one before intake starts). A pass that purged frames while intake is
/// paused for storage notifies `compact`: sled keeps the file's size after
/// deletes, so the daemon compacts the database to make the space count.
pub async fn task(
    store: Arc<KvStore>,
    shipments: crate::shipment::Shipments,
    audit: Arc<crate::audit::Audit>,
    cfg: crate::config::Config,
    stats: Arc<crate::ingest::Stats>,
    compact: Arc<tokio::sync::Notify>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use std::sync::atomic::Ordering;
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
    // The first tick is immediate: that pass ran before intake started.
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let (st, sh, au, cf) = (store.clone(), shipments.clone(), audit.clone(), cfg.clone());
        let r = tokio::task::spawn_blocking(move || {
            run_pass(&st, &sh, &au, &cf, crate::ingest::now_ms())
        })
        .await;
        match r {
            Ok(Ok(p)) => {
                stats
                    .retention_purged_frames
                    .fetch_add(p.frames, Ordering::Relaxed);
                if p.frames > 0 && stats.storage_full.load(Ordering::Relaxed) == 1 {
                    compact.notify_one();
                }
            }
            Ok(Err(e)) => tracing::error!("retention pass failed (retried in an hour): {e:#}"),
            Err(e) => tracing::error!("retention pass panicked: {e}"),
        }
    }
}
