//! Sites: one shipment, many gateways, one record.
//!
//! A gateway (a daemon with `[upstream]`) forwards every verified frame as
//! the device signed it, and every shipment it creates or changes, under
//! `{edges}/{gateway}/…` on the central broker (`crate::forward`). A centre
//! (a daemon with `[centre]`) subscribes to those topics and to devices'
//! own topics through shared subscriptions (`$share/{group}/…`), so several
//! instances can split the stream:
//!
//! * **Frames: verified, never trusted.** A forwarded frame goes through the
//!   same [`crate::ingest::Ingestor`] as a device's own publish: the device's
//!   HMAC over the original bytes, then exactly-once storage by
//!   `(device, boot, seq)`. A frame a gateway altered fails the tag: it is
//!   refused, recorded as the device's security event (its `source` is the
//!   gateway's topic) and counted against the gateway ([`Paths::refused`]).
//! * **Paths.** At a centre, which way each stored frame came is kept
//!   beside it (`site_frames`: the gateway ids it was forwarded by, `direct`
//!   for the device's own topic, `serial` for a local serial port); every
//!   daemon keeps a summary per device and path (`site_devices`), from which
//!   a shipment's list of sites is read ([`Paths::seen_through`]).
//! * **Shipments travel.** A gateway forwards every shipment record a person
//!   changes on it (`{prefix}/ship/{id}/record`, the whole record as JSON).
//!   The centre merges it into its own ([`merge`]) and publishes the result,
//!   retained, on `coldchain/v1/fleet/ship/{id}`; gateways subscribe to those
//!   on their upstream connection and merge them into theirs, so the
//!   receiving site knows a shipment before its container is docked, and
//!   evaluates it while cut off from the centre.
//!
//! Merge rules (the same on both sides, so every copy converges): the
//! lifecycle only moves forward (the later state of the two wins); a field
//! set on one side only is taken; a field set on both sides with different
//! values is a conflict, which the centre's copy wins (at the centre its own
//! record, at a gateway the record the centre published), logged and written
//! to the audit trail; custody hand-offs are append-only, identified by
//! their content (when, to whom, where, recorded by), and the union of both
//! sides is kept in time order.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use coldchain_proto::codec;
use coldchain_proto::{DeviceId, Frame, FrameRef, Timestamp};
use serde::{Deserialize, Serialize};

use crate::audit::Audit;
use crate::config::{Centre, Config};
use crate::forward::Forward;
use crate::ingest::Inbound;
use crate::outbox::Outbox;
use crate::shipment::{Handoff, Shipment, State};
use crate::store::{Via, key};

pub mod topics;

pub use topics::{FLEET_SHIPMENTS, Incoming, READY_EVERY, ready_topic};
use topics::{Forwarded, parse_forwarded};

/// Path label of a frame published on the device's own topic.
pub const DIRECT: &str = "direct";
/// Path label of a frame received on one of this daemon's serial ports.
pub const SERIAL: &str = "serial";

/// Publishes [`ready_topic`] every [`READY_EVERY`] while the centre's
/// connection is up (its subscriptions are renewed at every connection
/// before `mqtt_connected` is set, and the broker handles one connection's
/// packets in order), until `stop`.
pub async fn announce_ready(
    client: rumqttc::AsyncClient,
    group: String,
    stats: Arc<crate::ingest::Stats>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(READY_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let t = ready_topic(&group);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if stats
            .mqtt_connected
            .load(std::sync::atomic::Ordering::Relaxed)
            == 1
        {
            let _ = client.try_publish(t.clone(), rumqttc::QoS::AtMostOnce, false, "ready");
        }
    }
}

/// The path a message came by: the gateway that forwarded it, [`DIRECT`] or
/// [`SERIAL`].
pub fn label(centre: Option<&Centre>, msg: &Inbound) -> String {
    if msg.via == Via::Serial {
        return SERIAL.into();
    }
    match centre.and_then(|c| parse_forwarded(c, &msg.source)) {
        Some(Forwarded::Uplink { gateway, .. }) => gateway,
        _ => DIRECT.into(),
    }
}

/// The path label a frame's own transport names, where no per-frame
/// record says more: [`SERIAL`] or [`DIRECT`].
pub fn via_label(via: Via) -> &'static str {
    match via {
        Via::Serial => SERIAL,
        Via::Mqtt | Via::MqttJson => DIRECT,
    }
}

/// The device time of a frame that was stored (wall time from a synced
/// device clock; else when it was received): what a path's time span is
/// made of.
pub fn frame_time(msg: &Inbound) -> i64 {
    let frame: Option<Frame> = match msg.via {
        Via::MqttJson => crate::ingest::json::Envelope::parse(&msg.payload)
            .ok()
            .and_then(|e| e.frame().ok()),
        Via::Mqtt | Via::Serial => codec::decode_unverified::<Frame>(&msg.payload)
            .ok()
            .map(|(f, _, _)| f),
    };
    match frame {
        Some(f) if !f.time.is_implausible_wall() => match f.time {
            Timestamp::Wall(ms) => ms.min(i64::MAX as u64) as i64,
            Timestamp::Uptime(_) => msg.received_ms,
        },
        _ => msg.received_ms,
    }
}

/// What one path brought of one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Seen {
    /// Frames (each counted once per path, however often it came).
    pub frames: u64,
    /// Earliest frame time, ms ([`frame_time`]).
    pub first_ms: i64,
    /// Latest frame time, ms.
    pub last_ms: i64,
}

/// What a path had refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Refused {
    /// Refusals by reason ([`crate::ingest::Reject::reason`]).
    pub by_reason: BTreeMap<String, u64>,
    /// The latest: when (received), which device, which topic.
    pub last_ms: i64,
    /// Its device, when the frame named one.
    pub last_device: Option<String>,
    /// Its topic.
    pub last_source: String,
}

/// A group's notes of [`Paths::note`], by device and path.
#[derive(Debug, Default)]
pub struct PathBatch(BTreeMap<Vec<u8>, Seen>);

/// The paths frames came by (trees `site_frames`, `site_devices`,
/// `site_refused`). Written by the ingest task only, before the group
/// commit that makes the frames durable: durable exactly when they are.
/// Every change is a compare-and-swap, retried, so instances sharing a
/// database (and retention) do not undo each other's.
#[derive(Debug, Clone)]
pub struct Paths {
    frames: crate::kv::Tree,
    devices: crate::kv::Tree,
    refused: crate::kv::Tree,
    per_frame: bool,
}

/// Read-modify-write of one JSON value with compare-and-swap (atomic
/// across instances on PostgreSQL), retried on a concurrent change: `f`
/// gets the stored value and returns `None` to leave it, `Some(None)` to
/// remove it, `Some(Some(v))` to write `v`. Returns whether it wrote.
fn swap<T: Serialize + serde::de::DeserializeOwned>(
    tree: &crate::kv::Tree,
    k: &[u8],
    mut f: impl FnMut(Option<T>) -> anyhow::Result<Option<Option<T>>>,
) -> anyhow::Result<bool> {
    loop {
        let cur = tree.get(k)?;
        let old: Option<T> = cur
            .as_ref()
            .map(|v| serde_json::from_slice(v))
            .transpose()?;
        let Some(new) = f(old)? else {
            return Ok(false);
        };
        let new = new.map(|v| serde_json::to_vec(&v)).transpose()?;
        if tree.compare_and_swap(k, cur.as_deref(), new)?.is_ok() {
            return Ok(true);
        }
    }
}

fn device_path_key(d: &str, label: &str) -> Vec<u8> {
    let mut k = d.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(label.as_bytes());
    k
}

impl Paths {
    /// Opens the trees.
    pub fn open(db: &crate::kv::Db) -> crate::kv::Result<Self> {
        Ok(Paths {
            frames: db.open_tree("site_frames")?,
            devices: db.open_tree("site_devices")?,
            refused: db.open_tree("site_refused")?,
            per_frame: false,
        })
    }

    /// Keeps each frame's own list of paths (a centre: see [`Paths::note`]).
    pub fn per_frame(mut self, on: bool) -> Self {
        self.per_frame = on;
        self
    }

    /// Notes that the frame stored at `stored` came by `label` (`new`: it
    /// was stored by this message, not a duplicate). With
    /// [`Paths::per_frame`] (a centre, where one frame comes by several paths) the frame's own list
    /// of paths is kept, and a path counts a frame once however often it
    /// brought it; without, only frames stored are counted, by the path that
    /// brought them first (a gateway's frames carry their transport in their
    /// record already), and nothing is written per frame. The per-device
    /// summaries are written by [`Paths::flush`], once per group.
    pub fn note(
        &self,
        batch: &mut PathBatch,
        d: &DeviceId,
        stored: FrameRef,
        label: &str,
        time_ms: i64,
        new: bool,
    ) -> anyhow::Result<()> {
        if self.per_frame {
            let k = key::frame(d, stored);
            // Compare-and-swap: another instance may add a path to the same
            // frame at the same moment (the frame forwarded by two gateways).
            let added = swap(&self.frames, &k, |cur: Option<BTreeSet<String>>| {
                let mut labels = cur.unwrap_or_default();
                Ok(labels.insert(label.to_string()).then_some(Some(labels)))
            })?;
            if !added {
                return Ok(());
            }
        } else if !new {
            return Ok(());
        }
        batch
            .0
            .entry(device_path_key(d.as_str(), label))
            .and_modify(|s| {
                s.frames += 1;
                s.first_ms = s.first_ms.min(time_ms);
                s.last_ms = s.last_ms.max(time_ms);
            })
            .or_insert(Seen {
                frames: 1,
                first_ms: time_ms,
                last_ms: time_ms,
            });
        Ok(())
    }

    /// Adds a group's notes to the per-device summaries (before the group
    /// commit).
    pub fn flush(&self, batch: &mut PathBatch) -> anyhow::Result<()> {
        for (dk, add) in std::mem::take(&mut batch.0) {
            swap(&self.devices, &dk, |cur: Option<Seen>| {
                Ok(Some(Some(match cur {
                    Some(s) => Seen {
                        frames: s.frames + add.frames,
                        first_ms: s.first_ms.min(add.first_ms),
                        last_ms: s.last_ms.max(add.last_ms),
                    },
                    None => add,
                })))
            })?;
        }
        Ok(())
    }

    /// Counts a message refused that came by `label`.
    pub fn refused(
        &self,
        label: &str,
        reason: &str,
        device: Option<&DeviceId>,
        msg: &Inbound,
    ) -> anyhow::Result<()> {
        swap(&self.refused, label.as_bytes(), |cur: Option<Refused>| {
            let mut r = cur.unwrap_or_default();
            *r.by_reason.entry(reason.to_string()).or_default() += 1;
            r.last_ms = msg.received_ms;
            r.last_device = device.map(|d| d.to_string());
            r.last_source.clone_from(&msg.source);
            Ok(Some(Some(r)))
        })?;
        Ok(())
    }

    /// Retention: forgets the paths of a frame it purged (its entry in
    /// `site_frames`), returning them; a frame without one (a gateway keeps
    /// none, or a frame stored before paths were kept) is counted against
    /// the path its transport names (`serial`, else `direct`). Whether an
    /// entry was removed is the second value.
    pub fn forget_frame(
        &self,
        d: &DeviceId,
        stored: FrameRef,
        via: Via,
    ) -> anyhow::Result<(BTreeSet<String>, bool)> {
        Ok(match self.frames.remove(key::frame(d, stored))? {
            Some(v) => (serde_json::from_slice(&v)?, true),
            None => (BTreeSet::from([via_label(via).to_string()]), false),
        })
    }

    /// Retention: takes the frames it purged off a device's per-path
    /// summaries (`gone`: frames per path), whose span becomes that of the
    /// frames kept (`kept`, when the path still has some). A summary left
    /// with no frame is removed. Each summary is swapped atomically (on
    /// PostgreSQL across instances too), so a concurrent [`Paths::flush`]
    /// on another instance is not undone.
    pub fn forget_counts(
        &self,
        d: &str,
        gone: &BTreeMap<String, u64>,
        kept: &BTreeMap<String, Seen>,
    ) -> anyhow::Result<()> {
        for (label, n) in gone {
            let k = device_path_key(d, label);
            loop {
                let cur = self.devices.get(&k)?;
                let Some(cur_v) = &cur else { break };
                let s: Seen = serde_json::from_slice(cur_v)?;
                let new = (s.frames > *n).then(|| {
                    let span = kept.get(label).copied().unwrap_or(s);
                    Seen {
                        frames: s.frames - n,
                        first_ms: span.first_ms,
                        last_ms: span.last_ms,
                    }
                });
                let new = new.map(|x| serde_json::to_vec(&x)).transpose()?;
                if self
                    .devices
                    .compare_and_swap(&k, cur.as_deref(), new)?
                    .is_ok()
                {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Retention: removes the refusal records of paths whose latest
    /// refusal was received before `cutoff_ms`; returns how many.
    pub fn forget_refused(&self, cutoff_ms: i64) -> anyhow::Result<u64> {
        let mut n = 0;
        for kv in self.refused.iter() {
            let (k, v) = kv?;
            let r: Refused = serde_json::from_slice(&v)?;
            if r.last_ms < cutoff_ms
                && self
                    .refused
                    .compare_and_swap(&k, Some(&v), None::<Vec<u8>>)?
                    .is_ok()
            {
                n += 1;
            }
        }
        Ok(n)
    }

    /// The paths a stored frame came by.
    pub fn of_frame(&self, d: &DeviceId, stored: FrameRef) -> anyhow::Result<BTreeSet<String>> {
        Ok(match self.frames.get(key::frame(d, stored))? {
            Some(v) => serde_json::from_slice(&v)?,
            None => BTreeSet::new(),
        })
    }

    /// The paths each device's frames came by.
    pub fn of_device(&self, d: &str) -> anyhow::Result<Vec<(String, Seen)>> {
        let mut p = d.as_bytes().to_vec();
        p.push(0);
        let mut out = Vec::new();
        for kv in self.devices.scan_prefix(&p) {
            let (k, v) = kv?;
            let label = String::from_utf8_lossy(&k[p.len()..]).into_owned();
            out.push((label, serde_json::from_slice(&v)?));
        }
        Ok(out)
    }

    /// The paths (gateways, `direct`, `serial`) that brought frames of the
    /// shipment's watching devices from within its journey (departure, or
    /// creation, to arrival or `now`), sorted.
    pub fn seen_through(&self, s: &Shipment, now: i64) -> anyhow::Result<Vec<String>> {
        let lo = s.departure_ms.unwrap_or(s.created_ms);
        let hi = s.arrived_ms.unwrap_or(now);
        let mut out = BTreeSet::new();
        let devices: BTreeSet<&str> = s.watch.iter().map(|w| w.device.as_str()).collect();
        for d in devices {
            for (label, seen) in self.of_device(d)? {
                if seen.last_ms >= lo && seen.first_ms <= hi {
                    out.insert(label);
                }
            }
        }
        Ok(out.into_iter().collect())
    }

    /// Every path (gateway id, `direct`, `serial`): the frames it brought
    /// per device, and what it had refused.
    pub fn overview(&self) -> anyhow::Result<BTreeMap<String, PathOverview>> {
        let mut paths: BTreeMap<String, PathOverview> = BTreeMap::new();
        for kv in self.devices.iter() {
            let (k, v) = kv?;
            let Some(i) = k.iter().position(|b| *b == 0) else {
                continue;
            };
            let device = String::from_utf8_lossy(&k[..i]).into_owned();
            let label = String::from_utf8_lossy(&k[i + 1..]).into_owned();
            let seen: Seen = serde_json::from_slice(&v)?;
            let e = paths.entry(label).or_default();
            e.frames += seen.frames;
            e.devices.insert(device, seen);
        }
        for kv in self.refused.iter() {
            let (k, v) = kv?;
            let label = String::from_utf8_lossy(&k).into_owned();
            let r: Refused = serde_json::from_slice(&v)?;
            paths.entry(label).or_default().refused = Some(r);
        }
        Ok(paths)
    }
}

/// One path of [`Paths::overview`] (`GET /api/v1/sites`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PathOverview {
    /// Frames it brought, all devices.
    pub frames: u64,
    /// What it brought of each device, by device id.
    pub devices: BTreeMap<String, Seen>,
    /// What it had refused, if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<Refused>,
}

/// `?site=` of the shipment list: only shipments seen through that path.
#[derive(Debug, Default, Deserialize)]
pub struct SiteFilter {
    /// A gateway id, `direct` or `serial`.
    pub site: Option<String>,
}

impl SiteFilter {
    /// The shipment's paths ([`Paths::seen_through`]) when it passes the
    /// filter, else `None`.
    pub fn select(
        &self,
        paths: &Paths,
        s: &Shipment,
        now: i64,
    ) -> anyhow::Result<Option<Vec<String>>> {
        let seen = paths.seen_through(s, now)?;
        Ok(match &self.site {
            Some(site) if !seen.contains(site) => None,
            _ => Some(seen),
        })
    }
}

fn rank(s: State) -> u8 {
    match s {
        State::Planned => 0,
        State::InTransit => 1,
        State::Arrived => 2,
        State::Closed => 3,
    }
}

fn handoff_key(h: &Handoff) -> (i64, &str, &str, &str) {
    (h.at_ms, &h.to, &h.location, &h.by)
}

/// Merges two copies of a shipment (see the module docs for the rules).
/// `theirs_wins` settles conflicts: true at a gateway taking the centre's
/// record, false at the centre. Returns the merged record and the fields
/// in conflict (the loser's value dropped).
pub fn merge(ours: &Shipment, theirs: &Shipment, theirs_wins: bool) -> (Shipment, Vec<String>) {
    let (win, lose) = if theirs_wins {
        (theirs, ours)
    } else {
        (ours, theirs)
    };
    let mut conflicts = Vec::new();
    let mut m = win.clone();
    // What describes the shipment: the winner's.
    macro_rules! fixed {
        ($($f:ident),*) => {$(
            if win.$f != lose.$f {
                conflicts.push(stringify!($f).to_string());
            }
        )*};
    }
    fixed!(
        product,
        din,
        product_code,
        profile,
        watch,
        origin,
        destination,
        window_h,
        created_ms
    );
    // Set once: taken from whichever side has it.
    macro_rules! once {
        ($($f:ident),*) => {$(
            match (&win.$f, &lose.$f) {
                (None, Some(v)) => m.$f = Some(v.clone()),
                (Some(a), Some(b)) if a != b => conflicts.push(stringify!($f).to_string()),
                _ => {}
            }
        )*};
    }
    once!(departure_ms, arrived_ms, collection_ms, eta_ms, disposition);
    if rank(lose.state) > rank(win.state) {
        m.state = lose.state;
    }
    let mut handoffs = win.handoffs.clone();
    for h in &lose.handoffs {
        if !handoffs.iter().any(|x| handoff_key(x) == handoff_key(h)) {
            handoffs.push(h.clone());
        }
    }
    handoffs.sort_by(|a, b| handoff_key(a).cmp(&handoff_key(b)));
    m.handoffs = handoffs;
    (m, conflicts)
}

/// What the evaluator's task takes from other sites, and how it shares.
#[derive(Debug)]
pub struct Inbox {
    /// Merging and sharing.
    pub sites: Sites,
    /// Records from other sites.
    pub records: tokio::sync::mpsc::UnboundedReceiver<Incoming>,
}

/// The cross-site side of the evaluator's task: takes records from other
/// sites, and shares the records people change here.
#[derive(Debug, Clone)]
pub struct Sites {
    cfg: Config,
    audit: Arc<Audit>,
    forward: Forward,
    outbox: Outbox,
}

impl Sites {
    /// For the evaluator's task.
    pub fn new(cfg: Config, audit: Arc<Audit>, forward: Forward, outbox: Outbox) -> Self {
        Sites {
            cfg,
            audit,
            forward,
            outbox,
        }
    }

    fn is_centre(&self) -> bool {
        self.cfg.centre.is_some()
    }

    /// Shares a shipment record changed here: upstream to the centre (when
    /// forwarding), and, at a centre, retained to every gateway. Not yet
    /// durable: the caller syncs the store.
    pub fn share(&self, s: &Shipment) -> anyhow::Result<()> {
        let json = serde_json::to_vec(s)?;
        self.forward
            .push(&format!("ship/{}/record", s.id), json.clone(), false)?;
        if self.is_centre() {
            self.outbox.fleet(
                &s.id,
                format!("{FLEET_SHIPMENTS}/{}", s.id),
                String::from_utf8(json)?,
            )?;
        }
        Ok(())
    }

    /// Merges a record from another site into `shipments`; returns the
    /// record when this site's copy changed (to evaluate it), `None` when it
    /// was already known as is or is not for this site. A record this site
    /// cannot use (malformed, an unknown profile) is refused with a logged
    /// error and dropped: the sender's copy is unchanged, and a corrected
    /// record is taken when it comes.
    pub fn absorb(
        &self,
        shipments: &crate::shipment::Shipments,
        inc: &Incoming,
        now: i64,
    ) -> anyhow::Result<Option<Shipment>> {
        if inc.payload.is_empty() {
            // The centre's retention cleared its retained record of a
            // shipment closed long ago: this site's copy stays.
            tracing::debug!(from = %inc.from, "a cleared shipment record; nothing to merge");
            return Ok(None);
        }
        let theirs: Shipment = match serde_json::from_slice(&inc.payload) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(from = %inc.from, "shipment record refused: not a shipment record ({e}); dropped");
                return Ok(None);
            }
        };
        if let Err(e) = crate::shipment::check_id(&theirs.id) {
            tracing::error!(from = %inc.from, "shipment record refused: {e}; dropped");
            return Ok(None);
        }
        if let Err(e) = self.cfg.profile(&theirs.profile) {
            tracing::error!(from = %inc.from, shipment = %theirs.id,
                "shipment record refused: profile {:?} is not known here ({e}); configure it in [[profiles]]", theirs.profile);
            return Ok(None);
        }
        let from_centre = !self.is_centre();
        // Read, merge and write in one compare-and-swap, merged again when
        // another instance sharing the database changed the record meanwhile.
        let r = shipments.update(&theirs.id, |ours| {
            let (merged, conflicts) = match ours {
                None => {
                    if let Some(u) = &self.cfg.upstream
                        && from_centre
                        && !u.sites.is_empty()
                        && !u
                            .sites
                            .iter()
                            .any(|x| *x == theirs.origin || *x == theirs.destination)
                    {
                        return Ok(None);
                    }
                    (theirs.clone(), Vec::new())
                }
                Some(o) => merge(o, &theirs, from_centre),
            };
            Ok((ours != Some(&merged)).then_some((merged, conflicts)))
        })?;
        let Some((ours, merged, conflicts)) = r else {
            return Ok(None);
        };
        if !conflicts.is_empty() {
            tracing::warn!(shipment = %merged.id, from = %inc.from, ?conflicts,
                "shipment record: fields differ between sites; the centre's copy is kept");
        }
        self.audit.append(
            now,
            &format!("site {}", inc.from),
            "shipment.sync",
            &merged.id,
            serde_json::json!({
                "from": inc.from,
                "new": ours.is_none(),
                "state": merged.state,
                "handoffs": merged.handoffs.len(),
                "conflicts": conflicts,
            }),
        )?;
        if self.is_centre() {
            self.share(&merged)?;
        }
        Ok(Some(merged))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shipment::{NewShipment, Watch};
    use coldchain_proto::topic::Uplink;

    fn ship() -> Shipment {
        Shipment::create(
            NewShipment {
                id: "S1".into(),
                product: "CAR-T".into(),
                din: None,
                product_code: None,
                profile: "cryo-ln2".into(),
                watch: vec![Watch {
                    device: "d1".into(),
                    channel: 0,
                }],
                origin: "A".into(),
                destination: "B".into(),
                eta_ms: None,
                collection_ms: None,
                window_h: None,
                departure_ms: Some(1_000),
            },
            500,
        )
        .unwrap()
    }

    fn handoff(at: i64, to: &str) -> Handoff {
        Handoff {
            to: to.into(),
            location: "x".into(),
            at_ms: at,
            by: "p".into(),
        }
    }

    #[test]
    fn merge_is_forward_only_and_unions_handoffs() {
        let base = ship();
        let mut a = base.clone();
        a.handoff(handoff(2_000, "courier")).unwrap();
        let mut b = base.clone();
        b.handoff(handoff(3_000, "lab")).unwrap();
        b.arrive(4_000).unwrap();
        for theirs_wins in [false, true] {
            let (m, c) = merge(&a, &b, theirs_wins);
            assert!(c.is_empty(), "{c:?}");
            assert_eq!(m.state, State::Arrived);
            assert_eq!(m.arrived_ms, Some(4_000));
            let to: Vec<&str> = m.handoffs.iter().map(|h| h.to.as_str()).collect();
            assert_eq!(to, ["courier", "lab"]);
            // The other order gives the same record.
            assert_eq!(merge(&b, &a, !theirs_wins).0, m);
            // Merging again changes nothing.
            assert_eq!(merge(&m, &b, theirs_wins).0, m);
        }
    }

    #[test]
    fn conflicts_go_to_the_winner() {
        let a = ship();
        let mut b = ship();
        b.destination = "C".into();
        b.eta_ms = Some(9);
        let mut a2 = a.clone();
        a2.eta_ms = Some(7);
        let (m, c) = merge(&a2, &b, false);
        assert_eq!((m.destination.as_str(), m.eta_ms), ("B", Some(7)));
        assert_eq!(c, ["destination", "eta_ms"]);
        let (m, _) = merge(&a2, &b, true);
        assert_eq!((m.destination.as_str(), m.eta_ms), ("C", Some(9)));
    }

    #[test]
    fn forwarded_topics() {
        let c = Centre::default();
        assert_eq!(
            parse_forwarded(&c, "coldchain/v1/edge/gw-a/dev/d1/up"),
            Some(Forwarded::Uplink {
                gateway: "gw-a".into(),
                uplink: Uplink::Binary(DeviceId::new("d1").unwrap())
            })
        );
        assert_eq!(
            parse_forwarded(&c, "coldchain/v1/edge/gw-b/dev/d1/up/json"),
            Some(Forwarded::Uplink {
                gateway: "gw-b".into(),
                uplink: Uplink::Json(DeviceId::new("d1").unwrap())
            })
        );
        assert_eq!(
            parse_forwarded(&c, "coldchain/v1/edge/gw-b/ship/S 1/record"),
            Some(Forwarded::Record {
                gateway: "gw-b".into()
            })
        );
        for other in [
            "coldchain/v1/dev/d1/up",
            "coldchain/v1/edge/gw-b/ship/S1/status",
            "coldchain/v1/edge/gw-b/dev/d1/down",
            "coldchain/v1/edgy/gw/dev/d1/up",
        ] {
            assert_eq!(parse_forwarded(&c, other), None, "{other}");
        }
    }
}
