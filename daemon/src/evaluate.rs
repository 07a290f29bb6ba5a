//! Evaluation: each watched shipment is re-evaluated from its stored readings
//! whenever its devices send data (at most every `alerts.evaluate_every_s`),
//! and fired conditions become alerts, each exactly once.
//!
//! Everything is computed from the whole stored series in device time, so the
//! same readings arriving live, replayed from a firmware queue or dumped over
//! serial at arrival give the same alarms and the same report (the property is
//! proven on the pure engine in `daemon/tests/alarm_order.rs`). Alerts are
//! stored by (shipment, condition identity) in the same durable step as their
//! outbox entries, so a restart re-evaluates the same data, finds the same
//! identities, and notifies nobody twice; a condition that began while the
//! daemon was down is raised when its data arrives.
//!
//! Channels: a shipment may be watched by several probes; their readings form
//! one series, and where two readings share a timestamp the warmer counts (the
//! cautious choice).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use coldchain_engine::calibration;
use coldchain_proto::{DeviceId, EventKind};
use serde::Serialize;

use crate::alarm::health::{BatteryReading, IntegrityCounts, TimedEvent};
use crate::alarm::{self, Condition, ConditionKind, Sample, SampleValue, Series, ShipmentFacts};
use crate::alert::{Alert, AlertState, Alerts};
use crate::audit::Audit;
use crate::config::Config;
use crate::mkt;
use crate::outbox::Outbox;
use crate::profile::{Profile, Severity};
use crate::shipment::{Shipment, Shipments};
use crate::store::{EventBody, EventRecord, KvStore, Store, key};
use crate::viability::ViabilityOutcome;
use coldchain_engine::holdtime::HoldPrediction;
use coldchain_engine::tracker::{self, Tracker, View};

pub use coldchain_engine::alert::describe;
pub use coldchain_engine::evaluation::{Evaluation, Point};

/// Loads, evaluates, raises.
#[derive(Debug)]
pub struct Evaluator {
    cfg: Config,
    store: Arc<KvStore>,
    /// Shipments.
    pub shipments: Shipments,
    /// Alerts.
    pub alerts: Alerts,
    /// Outbox.
    pub outbox: Outbox,
    audit: Arc<Audit>,
    forward: crate::forward::Forward,
    last_status: HashMap<String, String>,
    /// The daemon's clock: when it learns something.
    clock: Clock,
    /// Per-shipment summaries kept up to date by every evaluation (shared
    /// with the HTTP side's reader): lists read these, never re-evaluate.
    summaries: Summaries,
    /// Live evaluation state by shipment id.
    lives: HashMap<String, Live>,
    /// How many of the newest samples a live tracker keeps unfolded.
    keep: usize,
    /// The shipments in transit or arrived, read once per full pass and
    /// after every command (the evaluator task is the only writer).
    watched: Option<Vec<Shipment>>,
    /// Which shipments this instance evaluates (all of them, unless several
    /// daemons share a PostgreSQL database).
    leases: crate::lease::Leases,
    /// Set when frames stored by other instances may have been missed (the
    /// notification connection dropped): every tracker is rebuilt.
    stale: Arc<std::sync::atomic::AtomicBool>,
    /// On PostgreSQL, the summaries of every instance's shipments (the
    /// `summaries` tree), so any instance's lists show every shipment.
    shared: Option<SharedSummaries>,
}

/// Summaries written to the shared database: at most every
/// [`SHARED_SUMMARY_MS`] per shipment, and at once when its record or its
/// alerts change.
#[derive(Debug)]
struct SharedSummaries {
    tree: crate::kv::Tree,
    /// Per shipment: when last written, and its record and alerts then (JSON).
    written: HashMap<String, (i64, String)>,
}

/// How stale another instance's shipment may look in a list, ms (the
/// dashboard polls every 5 s).
pub const SHARED_SUMMARY_MS: i64 = 5_000;

/// What a list of shipments shows of one shipment, as of its last evaluation.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Summary {
    /// The shipment.
    pub shipment: Shipment,
    /// The status document (`status_json`).
    pub status: serde_json::Value,
    /// Viability window remaining, ms.
    pub remaining_ms: Option<i64>,
    /// Nominal window, ms.
    pub nominal_ms: Option<i64>,
    /// Its alerts.
    pub alerts: Vec<Alert>,
}

/// Summaries by shipment id. Written by the evaluator task after each
/// evaluation and each acknowledgement; read by the HTTP handlers. The lock
/// is never held across an `.await` nor during an evaluation.
pub type Summaries = Arc<std::sync::RwLock<HashMap<String, Summary>>>;

/// The daemon's clock (unix ms), injected so tests can fix it.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> i64 + Send + Sync>);

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Clock(Arc::new(crate::ingest::now_ms))
    }

    /// A clock that always says `ms`.
    pub fn fixed(ms: i64) -> Self {
        Clock(Arc::new(move || ms))
    }

    /// Now, unix ms.
    pub fn now_ms(&self) -> i64 {
        (self.0)()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}

/// The newest sample pushed and the frame it came in (the live silence
/// judges by that frame's arrival).
#[derive(Debug, Clone, Default)]
struct Newest(Option<(i64, DeviceId, coldchain_proto::FrameRef)>);

impl Newest {
    /// Two frames with a sample at the same newest time: the later by
    /// (device, boot, seq), so the choice does not depend on arrival order.
    fn saw(&mut self, t_ms: i64, d: &DeviceId, fr: coldchain_proto::FrameRef) {
        let later = |x: &(i64, DeviceId, coldchain_proto::FrameRef)| {
            (t_ms, d.as_str(), fr.boot, fr.seq) > (x.0, x.1.as_str(), x.2.boot, x.2.seq)
        };
        if self.0.as_ref().is_none_or(later) {
            self.0 = Some((t_ms, d.clone(), fr));
        }
    }
}

/// Frames whose readings a tracker holds, with their newest sample time:
/// a frame announced again after a rebuild already read it is not pushed
/// twice. Only frames that can still be in the tail are kept (pruned at
/// each commit: older ones would be refused as stale anyway).
type Pushed = HashMap<(String, coldchain_proto::FrameRef), i64>;

/// A shipment's data in a tracker.
struct Loaded {
    tracker: Tracker,
    newest: Newest,
    pushed: Pushed,
}

/// The live evaluation state of one shipment, kept between evaluations.
#[derive(Debug)]
struct Live {
    /// What the tracker was built for: another shipment record (new ETA,
    /// departure, arrival, profile, watched probes) means a new tracker.
    shipment: Shipment,
    tracker: Tracker,
    newest: Newest,
    pushed: Pushed,
}

/// How many of the newest samples a live tracker keeps unfolded: data that
/// arrives out of order within them is taken incrementally; older data
/// rebuilds the tracker from the store.
const KEEP_UNFOLDED: usize = 32;

/// Pushes one stored reading (its time already placed) into a tracker; the
/// sample, when it is part of the record. Stored before ingest checked the
/// physical range (older databases): the same rule here, so no statistic
/// ever sees an implausible value as a temperature.
fn push_reading(
    tracker: &mut Tracker,
    newest: &mut Newest,
    pushed: &mut Pushed,
    d: &DeviceId,
    fr: coldchain_proto::FrameRef,
    rd: &crate::store::ReadingRecord,
    cert: Option<&calibration::Certificate>,
) -> Result<Option<Sample>, tracker::Stale> {
    if !tracker.in_record(rd.time_ms) {
        return Ok(None);
    }
    // Stored as measured; corrected by the channel's calibration certificate.
    let smp = Sample {
        t_ms: rd.time_ms,
        value: SampleValue::from(calibration::apply(cert, rd.kind.checked(rd.value))),
    };
    tracker.push_sample(smp, rd.time_source.is_synced())?;
    newest.saw(rd.time_ms, d, fr);
    let t = pushed
        .entry((d.as_str().to_string(), fr))
        .or_insert(rd.time_ms);
    *t = (*t).max(rd.time_ms);
    Ok(Some(smp))
}

/// The devices watching a shipment, each once, in watch order.
fn watching_devices(s: &Shipment) -> Vec<DeviceId> {
    let mut out: Vec<DeviceId> = Vec::new();
    for w in &s.watch {
        if let Ok(d) = DeviceId::new(&w.device)
            && !out.contains(&d)
        {
            out.push(d);
        }
    }
    out
}

/// Pushes one stored event or status into a tracker.
fn push_event(tracker: &mut Tracker, t_ms: i64, body: EventBody) -> Result<(), tracker::Stale> {
    match body {
        EventBody::Event(kind) => {
            if let EventKind::BatteryLow { mv } = kind {
                tracker.push_battery(BatteryReading { t_ms, mv })?;
            }
            tracker.push_event(TimedEvent { t_ms, kind })
        }
        EventBody::Status(st) => tracker.push_battery(BatteryReading {
            t_ms,
            mv: st.battery_mv,
        }),
    }
}

impl Evaluator {
    /// A new evaluator over the daemon's database.
    pub fn new(
        cfg: Config,
        store: Arc<KvStore>,
        audit: Arc<Audit>,
        forward: crate::forward::Forward,
    ) -> anyhow::Result<Self> {
        let db = store.db().clone();
        let cfg_id = cfg.daemon.id.clone();
        Ok(Evaluator {
            forward,
            cfg,
            shipments: Shipments::open(&db)?,
            alerts: Alerts::open(&db)?,
            outbox: Outbox::open(&db)?,
            audit,
            store,
            last_status: HashMap::new(),
            clock: Clock::system(),
            summaries: Summaries::default(),
            lives: HashMap::new(),
            keep: KEEP_UNFOLDED,
            watched: None,
            leases: crate::lease::Leases::open(&db, cfg_id)?,
            stale: Arc::default(),
            shared: match &db {
                crate::kv::Db::Pg(_) => Some(SharedSummaries {
                    tree: db.open_tree("summaries")?,
                    written: HashMap::new(),
                }),
                crate::kv::Db::Sled(_) => None,
            },
        })
    }

    /// Evaluates only the shipments whose lease `leases` holds (daemons
    /// sharing one database).
    pub fn with_leases(mut self, leases: crate::lease::Leases) -> Self {
        self.leases = leases;
        self
    }

    /// The flag that makes the next evaluation rebuild every tracker from
    /// the store (set by whoever learns frames may have been missed).
    pub fn stale_flag(&self) -> Arc<std::sync::atomic::AtomicBool> {
        self.stale.clone()
    }

    /// The leases this evaluator goes by.
    pub fn leases(&self) -> &crate::lease::Leases {
        &self.leases
    }

    /// Shares `summaries` (the daemon gives the same map to its evaluator
    /// task and to the HTTP side's reader).
    pub fn with_summaries(mut self, summaries: Summaries) -> Self {
        self.summaries = summaries;
        self
    }

    /// Every shipment's summary, as of its last evaluation. A shipment not
    /// evaluated since start (closed before it, say) is evaluated once here.
    pub fn summary_rows(&self, now: i64) -> anyhow::Result<Vec<Summary>> {
        let all = self.shipments.all()?;
        let mut out = Vec::with_capacity(all.len());
        let mut missing = Vec::new();
        {
            let map = self.summaries.read().unwrap_or_else(|e| e.into_inner());
            for sh in all {
                // A summary of an older record (closed, or given a new ETA,
                // since it was made, perhaps through another instance) is
                // not shown: the shipment is evaluated again below.
                match map.get(&sh.id) {
                    Some(s) if s.shipment == sh => out.push(s.clone()),
                    _ => missing.push(sh),
                }
            }
        }
        for sh in missing {
            // Another instance's shipment: its summary as that instance
            // last wrote it (not cached: it moves on there), if it was
            // made from the record as it stands.
            if let Some(shared) = &self.shared
                && let Some(v) = shared.tree.get(&sh.id)?
                && let Ok(s) = serde_json::from_slice::<Summary>(&v)
                && s.shipment == sh
            {
                out.push(s);
                continue;
            }
            let ev = self.evaluate(&sh, now)?;
            let alerts = self.alerts.of_shipment(&sh.id)?;
            let s = summary_of(&ev, alerts);
            self.summaries
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(sh.id.clone(), s.clone());
            out.push(s);
        }
        Ok(out)
    }

    /// Refreshes the alerts of a shipment's summary (after an acknowledgement).
    fn refresh_alerts(&self, shipment: &str) -> anyhow::Result<()> {
        let alerts = self.alerts.of_shipment(shipment)?;
        if let Some(shared) = &self.shared
            && let Some(v) = shared.tree.get(shipment)?
            && let Ok(mut s) = serde_json::from_slice::<Summary>(&v)
        {
            set_alert_counts(&mut s.status, &alerts);
            s.alerts = alerts.clone();
            shared.tree.insert(shipment, serde_json::to_vec(&s)?)?;
        }
        if let Some(s) = self
            .summaries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(shipment)
        {
            set_alert_counts(&mut s.status, &alerts);
            s.alerts = alerts;
        }
        Ok(())
    }

    /// How many of the newest samples live trackers keep unfolded (tests:
    /// a small number folds at almost every evaluation).
    pub fn with_keep(mut self, keep: usize) -> Self {
        self.keep = keep.max(1);
        self
    }

    /// Replaces the clock (tests: a fixed or stepped time).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    fn facts(&self, s: &Shipment, profile: &Profile, now: i64) -> ShipmentFacts {
        let a = &self.cfg.alerts;
        ShipmentFacts {
            departure_ms: s.departure_ms,
            settle_ms: profile.settle_ms.unwrap_or(a.settle_s as i64 * 1000),
            end_ms: Some(s.arrived_ms.unwrap_or(now)),
            eta_ms: s.eta_ms,
            collection_ms: s.collection_ms,
            nominal_window_ms: s.window_h.map(|h| (h * 3_600_000.0) as i64),
            max_gap_ms: a.max_gap_s as i64 * 1000,
            sample_interval_ms: Some(a.sample_interval_s as i64 * 1000),
            live: None,
            data_until_ms: None,
        }
    }

    /// A tracker holding all of a shipment's stored data (nothing folded
    /// yet), the series for the report's chart, MKT and warming when
    /// `series` is given, and the newest sample's frame.
    fn load(
        &self,
        s: &Shipment,
        profile: &Profile,
        mut series: Option<&mut Series>,
    ) -> anyhow::Result<Loaded> {
        let mut facts = self.facts(s, profile, 0);
        facts.end_ms = s.arrived_ms;
        let mut tracker = Tracker::new(profile.clone(), facts, s.created_ms);
        let mut newest = Newest::default();
        let mut pushed = Pushed::new();
        let mut devices_seen = HashSet::new();
        for w in &s.watch {
            let Ok(d) = DeviceId::new(&w.device) else {
                continue;
            };
            // Stored as measured; corrected here by the channel's certificate.
            let cert = self.cfg.certificate(&w.device, w.channel);
            let mut after = None;
            loop {
                let page = self.store.readings(&d, after, 5000)?;
                let Some(last) = page.last() else { break };
                after = Some((
                    coldchain_proto::FrameRef {
                        boot: last.boot,
                        seq: last.seq,
                    },
                    last.idx,
                ));
                for r in &page {
                    if r.reading.channel != w.channel {
                        continue;
                    }
                    let fr = coldchain_proto::FrameRef {
                        boot: r.boot,
                        seq: r.seq,
                    };
                    let smp = push_reading(
                        &mut tracker,
                        &mut newest,
                        &mut pushed,
                        &d,
                        fr,
                        &r.reading,
                        cert.as_ref(),
                    )
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                    if let (Some(series), Some(smp)) = (series.as_deref_mut(), smp) {
                        series.insert(smp);
                    }
                }
                if page.len() < 5000 {
                    break;
                }
            }
            if devices_seen.insert(w.device.clone()) {
                for (t_ms, body) in self.events(&d)? {
                    push_event(&mut tracker, t_ms, body).map_err(|e| anyhow::anyhow!("{e}"))?;
                }
            }
        }
        Ok(Loaded {
            tracker,
            newest,
            pushed,
        })
    }

    /// What the live view needs beyond the data: arrivals (for the live
    /// silence) and the integrity counts, and the storage episodes.
    fn live_inputs(
        &self,
        s: &Shipment,
        newest: &Newest,
    ) -> anyhow::Result<(Option<alarm::LiveArrival>, IntegrityCounts)> {
        let mut live = None;
        if s.arrived_ms.is_none()
            && let Some((_, d, fr)) = &newest.0
            && let Some((rec, _)) = self.store.frame(d, *fr)?
        {
            let upload_s = self
                .cfg
                .devices
                .iter()
                .find(|e| e.id == d.as_str())
                .and_then(|e| e.settings.as_ref())
                .map_or(crate::ingest::DEFAULT_UPLOAD_INTERVAL_S, |st| {
                    st.upload_interval_s
                });
            live = Some(alarm::LiveArrival {
                newest_sample_received_ms: rec.received_ms,
                upload_interval_ms: i64::from(upload_s) * 1000,
            });
        }
        let lo = s.departure_ms.unwrap_or(s.created_ms) - tracker::BEFORE_DEPARTURE_MS;
        let hi = s.arrived_ms.unwrap_or(self.clock.now_ms()) + tracker::AHEAD_MS;
        let mut integrity = IntegrityCounts::default();
        for d in watching_devices(s) {
            let sec = self.security_counts(&d, lo, hi)?;
            integrity.bad_tags += sec.bad_tags;
            integrity.sequence_anomalies += sec.sequence_anomalies;
            if let Some(t) = sec.first_ms {
                integrity.first_ms = Some(integrity.first_ms.map_or(t, |f| f.min(t)));
            }
        }
        Ok((live, integrity))
    }

    /// The edge's own storage over budget while the shipment travels: its
    /// data is not being stored (the broker keeps it), so it is watched
    /// blind until space is made.
    fn storage_conditions(&self, s: &Shipment, until_ms: i64) -> anyhow::Result<Vec<Condition>> {
        let mut out = Vec::new();
        for (since, until) in self.store.storage_full_episodes()? {
            let from = s.departure_ms.unwrap_or(s.created_ms);
            if since > until_ms || until.is_some_and(|u| u < from) {
                continue;
            }
            let mut c =
                alarm::Condition::new(ConditionKind::StorageFull, Severity::Critical, since);
            c.fires_ms = Some(since);
            c.cleared_ms = until;
            c.last_ms = until.unwrap_or(until_ms).max(since);
            c.beyond_ms = c.last_ms - since;
            c.excursions = 1;
            out.push(c);
        }
        Ok(out)
    }

    /// A view of a tracker as of `now`, with the storage conditions.
    fn view(
        &self,
        s: &Shipment,
        tracker: &Tracker,
        newest: &Newest,
        now: i64,
    ) -> anyhow::Result<(View, Option<HoldPrediction>)> {
        let (live, integrity) = self.live_inputs(s, newest)?;
        let mut view = tracker.view(now, live, integrity);
        let until_ms = s.arrived_ms.unwrap_or(now);
        view.conditions
            .extend(self.storage_conditions(s, until_ms)?);
        // A certificate that expired before the end of the data: a warning.
        for (_, _, c) in self.certificates(s) {
            let from = s.departure_ms.unwrap_or(s.created_ms);
            view.conditions
                .extend(calibration::expired_condition(&c, from, until_ms));
        }
        view.conditions.sort_by_key(|c| (c.id.start_ms, c.id.kind));
        // Hold time at ETA (dry shippers), and its warning as a condition.
        let margin_ms =
            i64::try_from(self.cfg.alerts.hold_time_margin_s).unwrap_or(i64::MAX / 2) * 1000;
        let hold = coldchain_engine::holdtime::prediction(
            tracker.profile(),
            &view.recent,
            &view.conditions,
            s.eta_ms,
            margin_ms,
        );
        let newest_ms = view.recent.last().map_or(0, |p| p.0);
        if let Some(mut c) = hold
            .as_ref()
            .and_then(|p| coldchain_engine::holdtime::condition(p, newest_ms))
        {
            // One hold-time alarm per shipment, as for the viability window:
            // its identity is the departure, so a fit that moves (a new
            // plateau, a tilt, more readings) revises the alarm instead of
            // withdrawing it and raising another.
            c.id.start_ms = s.departure_ms.unwrap_or(s.created_ms).min(c.id.start_ms);
            view.conditions.push(c);
            view.conditions.sort_by_key(|c| (c.id.start_ms, c.id.kind));
        }
        Ok((view, hold))
    }

    /// The calibration certificates of a shipment's watching channels.
    fn certificates(&self, s: &Shipment) -> Vec<(String, u8, calibration::Certificate)> {
        let mut out: Vec<(String, u8, calibration::Certificate)> = Vec::new();
        for w in &s.watch {
            if let Some(c) = self.cfg.certificate(&w.device, w.channel)
                && !out.iter().any(|x| x.0 == w.device && x.1 == w.channel)
            {
                out.push((w.device.clone(), w.channel, c));
            }
        }
        out
    }

    /// Evaluates one shipment from the store, as of `now` (or its arrival):
    /// everything, for reports and pages. The live path ([`Evaluator::run_one`])
    /// evaluates incrementally and gives the same conditions.
    pub fn evaluate(&self, s: &Shipment, now: i64) -> anyhow::Result<Evaluation> {
        let profile = self.cfg.profile(&s.profile)?;
        let mut series = Series::new();
        let loaded = self.load(s, &profile, Some(&mut series))?;
        let (view, hold_time) = self.view(s, &loaded.tracker, &loaded.newest, now)?;
        let mut facts = self.facts(s, &profile, now);
        facts.data_until_ms = view.data_until_ms;
        let hi = facts.end_ms.unwrap_or(now) + tracker::AHEAD_MS;
        let series: Series = series.range(i64::MIN, hi).collect();
        let warming = alarm::warming::summary(&profile, &series, &facts);
        let mkt = mkt::evaluate(&profile, &series, &facts);
        let points: Vec<Point> = series
            .iter()
            .map(|s| Point {
                t_ms: s.t_ms,
                milli_c: s.value.milli_c(),
            })
            .collect();
        let mut gaps = Vec::new();
        for d in watching_devices(s) {
            for (boot, first, last) in self.store.gaps(&d)? {
                gaps.push((d.as_str().to_string(), boot, first, last));
            }
        }
        Ok(Evaluation {
            as_of_ms: facts.end_ms.unwrap_or(now),
            readings: view.readings,
            faults: view.faults,
            estimated_time: view.estimated,
            last: view.last.map(|p| Point {
                t_ms: p.t_ms,
                milli_c: p.value.milli_c(),
            }),
            min_milli_c: view.min_milli_c,
            max_milli_c: view.max_milli_c,
            mean_milli_c: view.mean_milli_c,
            mkt,
            viability: view.viability,
            warming,
            conditions: view.conditions,
            gaps,
            points,
            calibration: self.certificates(s),
            hold_time,
            profile,
            shipment: s.clone(),
        })
    }

    fn events(&self, d: &DeviceId) -> anyhow::Result<Vec<(i64, EventBody)>> {
        let tree = self.store.db().open_tree("events")?;
        let mut out = Vec::new();
        let mut clocks = HashMap::new();
        for kv in tree.scan_prefix(key::device_prefix(d)) {
            let (k, v) = kv?;
            let e: EventRecord = postcard::from_bytes(&v)?;
            let boot = key::parse_item(&k).map_or(0, |(_, r, _)| r.boot);
            let t = self
                .store
                .place(d, boot, e.time_ms, e.time_source, &mut clocks)?;
            out.push((t, e.body));
        }
        Ok(out)
    }

    /// A device's security events received from `lo` to 24 h after `hi` (a
    /// logger dumped at arrival brings its frames then), as the report counts
    /// them. Bad tags, frames on the wrong topic and unsigned frames count as
    /// bad tags; a reused sequence number with different content as a
    /// sequence anomaly.
    fn security_counts(&self, d: &DeviceId, lo: i64, hi: i64) -> anyhow::Result<IntegrityCounts> {
        use crate::store::SecurityKind;
        let mut c = IntegrityCounts::default();
        for r in self.store.security_in_window(d, lo, hi)? {
            match r.kind {
                SecurityKind::SequenceReuse => c.sequence_anomalies += r.count,
                SecurityKind::BadTag | SecurityKind::DeviceMismatch | SecurityKind::Unsigned => {
                    c.bad_tags += r.count
                }
            }
            c.first_ms = Some(c.first_ms.map_or(r.first_ms, |f| f.min(r.first_ms)));
        }
        Ok(c)
    }

    /// Evaluates a shipment and brings its alerts in line with the data:
    /// raises, keeps (revising when the facts changed), withdraws or clears
    /// them (see `alarm::revision`), and resolves acknowledged ones that
    /// cleared; queues notifications and the retained status. Not yet durable:
    /// the caller syncs the store, then wakes the outbox.
    ///
    /// `now` is the horizon of the evaluation; what the daemon learns is
    /// stamped with its clock when it learns it (`raised_ms` is never earlier
    /// than the data that proves the alarm).
    pub fn run_one(&mut self, s: &Shipment, now: i64) -> anyhow::Result<()> {
        self.lives.remove(&s.id);
        self.run_frames(s, now, &[])
    }

    /// [`Evaluator::run_one`], incrementally: `frames` were stored since the
    /// shipment's last evaluation (any device; those it does not watch are
    /// skipped). The shipment's tracker takes them when it can; data older
    /// than its incremental state, uptime stamps (whose placement can move)
    /// or a changed shipment record build it again from the store.
    pub fn run_frames(
        &mut self,
        s: &Shipment,
        now: i64,
        frames: &[(DeviceId, coldchain_proto::FrameRef)],
    ) -> anyhow::Result<()> {
        if self.stale.swap(false, std::sync::atomic::Ordering::Relaxed) {
            self.lives.clear();
        }
        if !self.leases.hold(&s.id, now) {
            // Another instance evaluates it; when this one takes it over, it
            // starts again from the store. Lists read that instance's
            // summary from the shared database.
            self.lives.remove(&s.id);
            self.summaries
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&s.id);
            return Ok(());
        }
        let started = std::time::Instant::now();
        let mut live = match self.lives.remove(&s.id) {
            Some(l) if l.shipment == *s => match self.take_frames(s, l, frames)? {
                Some(l) => l,
                None => self.build(s)?,
            },
            _ => self.build(s)?,
        };
        live.tracker.commit(self.keep, now);
        let w = live.tracker.watermark_ms();
        live.pushed.retain(|_, t| *t >= w);
        let (view, hold_time) = self.view(s, &live.tracker, &live.newest, now)?;
        let profile = live.tracker.profile().clone();
        if s.is_watched() {
            self.lives.insert(s.id.clone(), live);
        }
        crate::metrics::observe(
            &crate::metrics::timings().evaluate_shipment,
            started.elapsed(),
        );
        let alerts = self.follow(s, &profile, &view.conditions)?;
        let snap = Snapshot {
            shipment: s,
            profile: &profile.name,
            last: view.last.map(|p| Point {
                t_ms: p.t_ms,
                milli_c: p.value.milli_c(),
            }),
            min_milli_c: view.min_milli_c,
            max_milli_c: view.max_milli_c,
            viability: &view.viability,
            hold_time: hold_time.as_ref(),
        };
        self.status(&snap, alerts)
    }

    /// A live state built from everything stored.
    fn build(&self, s: &Shipment) -> anyhow::Result<Live> {
        let profile = self.cfg.profile(&s.profile)?;
        let loaded = self.load(s, &profile, None)?;
        Ok(Live {
            shipment: s.clone(),
            tracker: loaded.tracker,
            newest: loaded.newest,
            pushed: loaded.pushed,
        })
    }

    /// Pushes the watched readings and events of `frames` into a live
    /// state; `None` when it has to be built again.
    fn take_frames(
        &self,
        s: &Shipment,
        mut live: Live,
        frames: &[(DeviceId, coldchain_proto::FrameRef)],
    ) -> anyhow::Result<Option<Live>> {
        use crate::store::TimeSource;
        for (d, fr) in frames {
            let channels: Vec<u8> = s
                .watch
                .iter()
                .filter(|w| w.device == d.as_str())
                .map(|w| w.channel)
                .collect();
            if channels.is_empty() || live.pushed.contains_key(&(d.as_str().to_string(), *fr)) {
                continue;
            }
            let (readings, events) = self.store.frame_contents(d, *fr)?;
            let moves = readings.iter().any(|r| r.time_source == TimeSource::Uptime)
                || events.iter().any(|e| {
                    e.time_source == TimeSource::Uptime
                        || matches!(e.body, EventBody::Event(EventKind::ClockSynced { .. }))
                });
            if moves {
                return Ok(None);
            }
            for r in readings.iter().filter(|r| channels.contains(&r.channel)) {
                let cert = self.cfg.certificate(d.as_str(), r.channel);
                if push_reading(
                    &mut live.tracker,
                    &mut live.newest,
                    &mut live.pushed,
                    d,
                    *fr,
                    r,
                    cert.as_ref(),
                )
                .is_err()
                {
                    return Ok(None);
                }
            }
            for e in events {
                if push_event(&mut live.tracker, e.time_ms, e.body).is_err() {
                    return Ok(None);
                }
            }
        }
        Ok(Some(live))
    }

    /// Forgets the live state of shipments not in `ids` (closed ones).
    pub fn retain_live(&mut self, ids: &HashSet<String>) {
        self.lives.retain(|k, _| ids.contains(k));
    }

    /// Brings a shipment's alerts in line with its conditions: raises, keeps
    /// (revising when the facts changed), withdraws or clears them (see
    /// `alarm::revision`), and resolves acknowledged ones that cleared.
    /// Returns all of the shipment's alerts as they now stand.
    fn follow(
        &mut self,
        s: &Shipment,
        profile: &Profile,
        conditions: &[Condition],
    ) -> anyhow::Result<Vec<Alert>> {
        use crate::alarm::revision::{self, Raised, Step};
        use crate::alert::Change;
        let learned = self.clock.now_ms();
        let fired: Vec<&Condition> = conditions.iter().filter(|c| c.has_fired()).collect();
        let mut all = self.alerts.of_shipment(&s.id)?;
        let standing: Vec<usize> = (0..all.len())
            .filter(|&i| all[i].state != AlertState::Withdrawn)
            .collect();
        let mut alerts: Vec<Alert> = standing.iter().map(|&i| all[i].clone()).collect();
        let mut new_alerts = Vec::new();
        let raised: Vec<Raised> = alerts
            .iter()
            .map(|a| Raised {
                kind: a.condition.kind,
                start_ms: a.condition.start_ms,
                cleared_ms: a.cleared_ms,
                last_ms: a.last_ms.max(a.fires_ms),
            })
            .collect();
        for step in revision::plan(&raised, &fired, conditions) {
            match step {
                Step::Keep { alert, cond } => {
                    let a = &mut alerts[alert];
                    let c = fired[cond];
                    let change = a.take_facts(c, describe(c, profile), learned);
                    let resolved = a.maybe_resolve(learned);
                    if change != Change::None || resolved {
                        self.alerts.put(a)?;
                    }
                    if change == Change::Revised {
                        let was = a.revisions.last().map(|r| r.was.clone());
                        tracing::warn!(shipment = %s.id, alert = a.id, condition = %a.condition, "ALERT REVISED: {}", a.message);
                        self.audit.append(
                            learned,
                            "daemon",
                            "alert.revise",
                            &s.id,
                            serde_json::json!({ "alert": a.id, "condition": a.condition.to_string(), "message": a.message, "was": was }),
                        )?;
                        self.notify(a, "revised")?;
                    }
                    if resolved {
                        self.notify(a, "resolved")?;
                    }
                }
                Step::Raise { cond } => {
                    let c = fired[cond];
                    let a = Alert {
                        id: self.alerts.next_id()?,
                        shipment: s.id.clone(),
                        condition: c.id,
                        severity: c.severity,
                        message: describe(c, profile),
                        state: AlertState::Open,
                        raised_ms: learned,
                        fires_ms: c.fires_ms.unwrap_or(c.id.start_ms),
                        cleared_ms: c.cleared_ms,
                        peak: c.peak,
                        beyond_ms: c.beyond_ms,
                        ack: None,
                        resolved_ms: None,
                        escalations: 0,
                        escalated_ms: None,
                        last_ms: c.last_ms,
                        revisions: Vec::new(),
                        withdrawn: None,
                    };
                    self.alerts.put(&a)?;
                    tracing::warn!(shipment = %s.id, alert = a.id, severity = ?a.severity, condition = %a.condition, "ALERT: {}", a.message);
                    self.audit.append(
                        learned,
                        "daemon",
                        "alert.raise",
                        &s.id,
                        serde_json::json!({ "alert": a.id, "condition": a.condition.to_string(), "severity": a.severity, "message": a.message }),
                    )?;
                    self.notify(&a, "raised")?;
                    new_alerts.push(a);
                }
                Step::Withdraw { alert, reason } => {
                    let a = &mut alerts[alert];
                    a.withdraw(reason.clone(), learned);
                    self.alerts.put(a)?;
                    tracing::warn!(shipment = %s.id, alert = a.id, condition = %a.condition, "ALERT WITHDRAWN: {reason}");
                    self.audit.append(
                        learned,
                        "daemon",
                        "alert.withdraw",
                        &s.id,
                        serde_json::json!({ "alert": a.id, "condition": a.condition.to_string(), "reason": reason }),
                    )?;
                    self.notify(a, "withdrawn")?;
                }
                Step::Clear { alert } => {
                    let a = &mut alerts[alert];
                    if a.cleared_ms.is_some() {
                        continue;
                    }
                    // A live-only alarm (silence): the data that ended it has
                    // arrived. The gap in the record, if any, says until when.
                    let end = conditions
                        .iter()
                        .find(|c| {
                            c.id.kind == a.condition.kind && c.id.start_ms == a.condition.start_ms
                        })
                        .and_then(|c| c.cleared_ms)
                        .unwrap_or(a.last_ms.max(a.fires_ms));
                    a.cleared_ms = Some(end);
                    let resolved = a.maybe_resolve(learned);
                    self.alerts.put(a)?;
                    self.notify(a, "cleared")?;
                    if resolved {
                        self.notify(a, "resolved")?;
                    }
                }
            }
        }
        for (a, i) in alerts.into_iter().zip(standing) {
            all[i] = a;
        }
        all.extend(new_alerts);
        Ok(all)
    }

    /// Queues an alert event to MQTT and every webhook.
    pub fn notify(&self, a: &Alert, event: &str) -> anyhow::Result<()> {
        let body = serde_json::json!({ "event": event, "alert": a }).to_string();
        self.deliver(&a.shipment, body)
    }

    /// Queues an alert event body to the MQTT alert topic, the centre and
    /// every webhook.
    fn deliver(&self, shipment: &str, body: String) -> anyhow::Result<()> {
        if let Ok(topic) = coldchain_proto::topic::shipment_alert(shipment) {
            self.outbox.mqtt(topic.to_string(), body.clone(), false)?;
        }
        self.forward.push(
            &format!("ship/{shipment}/alert"),
            body.clone().into_bytes(),
            false,
        )?;
        for (i, h) in self.cfg.webhooks.iter().enumerate() {
            self.outbox.webhook(i, h.url.clone(), body.clone())?;
        }
        Ok(())
    }

    /// Queues the retained shipment status when it changed, and keeps the
    /// shipment's summary.
    fn status(&mut self, snap: &Snapshot<'_>, alerts: Vec<Alert>) -> anyhow::Result<()> {
        let id = &snap.shipment.id;
        let status = status_doc(snap, &alerts);
        let summary = summary_from(snap, alerts);
        if let Some(shared) = &mut self.shared {
            let now = self.clock.now_ms();
            let facts = serde_json::to_string(&(&summary.shipment, &summary.alerts))?;
            let due = shared
                .written
                .get(id)
                .is_none_or(|(t, a)| now - t >= SHARED_SUMMARY_MS || *a != facts);
            if due {
                shared.tree.insert(id, serde_json::to_vec(&summary)?)?;
                shared.written.insert(id.clone(), (now, facts));
            }
        }
        self.summaries
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), summary);
        let text = status.to_string();
        if self.last_status.get(id) != Some(&text) {
            if let Ok(topic) = coldchain_proto::topic::shipment_status(id) {
                self.outbox.status(id, topic.to_string(), text.clone())?;
            }
            self.forward.push(
                &format!("ship/{id}/status"),
                text.clone().into_bytes(),
                true,
            )?;
            self.last_status.insert(id.clone(), text);
        }
        Ok(())
    }

    /// Escalates open alerts nobody acknowledged in time. Returns how many.
    pub fn escalate(&mut self, now: i64) -> anyhow::Result<usize> {
        let after = self.cfg.alerts.escalate_after_s as i64 * 1000;
        let mut n = 0;
        for mut a in self.alerts.all()? {
            if a.state != AlertState::Open {
                continue;
            }
            let since = a.escalated_ms.unwrap_or(a.raised_ms);
            if now - since >= after && self.leases.hold(&a.shipment, now) {
                a.escalations += 1;
                a.escalated_ms = Some(now);
                self.alerts.put(&a)?;
                tracing::error!(shipment = %a.shipment, alert = a.id, level = a.escalations,
                    "ESCALATION: alert not acknowledged: {}", a.message);
                self.audit.append(
                    now,
                    "daemon",
                    "alert.escalate",
                    &a.shipment,
                    serde_json::json!({ "alert": a.id, "level": a.escalations }),
                )?;
                let body =
                    serde_json::json!({ "event": "escalated", "level": a.escalations, "alert": a })
                        .to_string();
                self.deliver(&a.shipment, body)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Shipments that watch any of `devices` and are still evaluated.
    pub fn watching(&mut self, devices: &HashSet<String>) -> anyhow::Result<Vec<Shipment>> {
        Ok(self
            .watched()?
            .iter()
            .filter(|s| s.watch.iter().any(|w| devices.contains(&w.device)))
            .cloned()
            .collect())
    }

    /// The shipments in transit or arrived (cached; see `refresh_watched`).
    pub fn watched(&mut self) -> anyhow::Result<&[Shipment]> {
        if self.watched.is_none() {
            let v: Vec<Shipment> = self
                .shipments
                .all()?
                .into_iter()
                .filter(Shipment::is_watched)
                .collect();
            self.retain_live(&v.iter().map(|s| s.id.clone()).collect());
            self.watched = Some(v);
        }
        Ok(self.watched.as_deref().unwrap_or_default())
    }

    /// Reads the watched shipments again at the next use.
    pub fn refresh_watched(&mut self) {
        self.watched = None;
    }
}

impl Evaluator {
    /// The configuration it evaluates with.
    pub fn config(&self) -> &Config {
        &self.cfg
    }
}

/// What the status document and the lists show of a shipment.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot<'a> {
    /// The shipment.
    pub shipment: &'a Shipment,
    /// Its profile's name.
    pub profile: &'a str,
    /// Latest valid temperature and its time.
    pub last: Option<Point>,
    /// Lowest valid temperature, milli-°C.
    pub min_milli_c: Option<i32>,
    /// Highest valid temperature, milli-°C.
    pub max_milli_c: Option<i32>,
    /// Viability window.
    pub viability: &'a ViabilityOutcome,
    /// A dry shipper's predicted crossing of its limit against the ETA.
    pub hold_time: Option<&'a HoldPrediction>,
}

impl<'a> From<&'a Evaluation> for Snapshot<'a> {
    /// The part of an evaluation the status document shows.
    fn from(ev: &'a Evaluation) -> Self {
        Snapshot {
            shipment: &ev.shipment,
            profile: &ev.profile.name,
            last: ev.last,
            min_milli_c: ev.min_milli_c,
            max_milli_c: ev.max_milli_c,
            viability: &ev.viability,
            hold_time: ev.hold_time.as_ref(),
        }
    }
}

/// The summary of an evaluation and the shipment's alerts.
pub fn summary_of(ev: &Evaluation, alerts: Vec<Alert>) -> Summary {
    summary_from(&Snapshot::from(ev), alerts)
}

fn summary_from(snap: &Snapshot<'_>, alerts: Vec<Alert>) -> Summary {
    let (remaining_ms, nominal_ms) = match snap.viability {
        ViabilityOutcome::Computed(v) => (Some(v.remaining_ms), Some(v.nominal_ms)),
        ViabilityOutcome::NotApplicable => (None, None),
    };
    Summary {
        shipment: snap.shipment.clone(),
        status: status_doc(snap, &alerts),
        remaining_ms,
        nominal_ms,
        alerts,
    }
}

/// The retained status document of a shipment.
pub fn status_json(ev: &Evaluation, alerts: &[Alert]) -> serde_json::Value {
    status_doc(&Snapshot::from(ev), alerts)
}

/// The retained status document of a shipment, from a snapshot.
pub fn status_doc(snap: &Snapshot<'_>, alerts: &[Alert]) -> serde_json::Value {
    let (remaining, predicted) = match snap.viability {
        ViabilityOutcome::Computed(v) => (Some(v.remaining_ms), v.predicted_at_eta_ms),
        ViabilityOutcome::NotApplicable => (None, None),
    };
    let mut status = serde_json::json!({
        "shipment": snap.shipment.id,
        "state": snap.shipment.state,
        "profile": snap.profile,
        "last": snap.last,
        "min_milli_c": snap.min_milli_c,
        "max_milli_c": snap.max_milli_c,
        "window_remaining_ms": remaining,
        "window_predicted_at_eta_ms": predicted,
        "hold_time": coldchain_engine::holdtime::status(snap.hold_time),
    });
    set_alert_counts(&mut status, alerts);
    status
}

/// The alert part of a status document: open alerts, the worst open
/// severity, how many nobody acknowledged.
fn set_alert_counts(status: &mut serde_json::Value, alerts: &[Alert]) {
    let open: Vec<&Alert> = alerts.iter().filter(|a| a.is_open()).collect();
    if let Some(o) = status.as_object_mut() {
        o.insert("open_alerts".into(), open.len().into());
        o.insert(
            "worst_open".into(),
            serde_json::to_value(open.iter().map(|a| a.severity).max()).unwrap_or_default(),
        );
        o.insert(
            "unacknowledged".into(),
            open.iter()
                .filter(|a| a.state == AlertState::Open)
                .count()
                .into(),
        );
    }
}

/// A change requested by a person through the API. Every change goes through
/// the evaluator's task, which owns shipments and alerts, so a person's
/// acknowledgement and an evaluation never overwrite each other.
#[derive(Debug)]
pub enum Command {
    /// Create a shipment.
    Create(crate::shipment::NewShipment),
    /// Planned -> in transit.
    Depart {
        /// Departure, ms (default now).
        at_ms: Option<i64>,
    },
    /// New ETA.
    Eta {
        /// ETA, ms.
        eta_ms: i64,
    },
    /// Custody hand-off.
    Handoff {
        /// To whom.
        to: String,
        /// Where.
        location: String,
        /// When, ms (default now).
        at_ms: Option<i64>,
    },
    /// In transit -> arrived.
    Arrive {
        /// Arrival, ms (default now).
        at_ms: Option<i64>,
    },
    /// Arrived -> closed, with the person's disposition.
    Close {
        /// Decision.
        decision: crate::shipment::Decision,
        /// Comment.
        comment: String,
        /// The electronic signature (checked by the API before it asks).
        signature: Option<crate::shipment::Signature>,
    },
    /// Acknowledge an alert.
    Ack {
        /// Alert id.
        alert: u64,
        /// Comment.
        comment: String,
    },
}

/// Why a command was refused: the status code an API maps it to, and why.
#[derive(Debug)]
pub enum Refusal {
    /// 400: the request is wrong.
    Bad(String),
    /// 404: no such shipment or alert.
    NotFound(String),
    /// 409: not allowed in the current state.
    Conflict(String),
    /// 500: storage failed.
    Internal(String),
}

/// Refuses a change to an alert of a closed shipment (`what`: "acknowledged",
/// "assessed"): the disposition is signed over the report's content, which
/// an acknowledgement or an assessment would change after the signature.
pub fn refuse_if_closed(
    shipments: &Shipments,
    shipment: &str,
    alert: u64,
    what: &str,
) -> Result<(), Refusal> {
    let s = shipments
        .get(shipment)
        .map_err(|e| Refusal::Internal(format!("{e:#}")))?;
    if s.is_some_and(|s| s.state == crate::shipment::State::Closed) {
        return Err(Refusal::Conflict(format!(
            "shipment {shipment} is closed (its disposition is signed over the report's content): alert {alert} can no longer be {what}"
        )));
    }
    Ok(())
}

/// A command addressed to a shipment (or an alert), by a person, with its reply.
#[derive(Debug)]
pub struct Request {
    /// Shipment id (ignored for Create and Ack).
    pub shipment: String,
    /// Who asks: the authenticated person (recorded in the audit trail).
    pub actor: crate::users::Actor,
    /// What.
    pub command: Command,
    /// The result: the shipment or alert as JSON.
    pub reply: tokio::sync::oneshot::Sender<Result<serde_json::Value, Refusal>>,
}

impl Evaluator {
    /// Applies a person's command, records it in the audit trail, re-evaluates,
    /// and makes it durable before replying.
    pub fn apply(&mut self, req: &mut Request, now: i64) -> Result<serde_json::Value, Refusal> {
        use crate::shipment::{Disposition, Handoff};
        let internal = |e: anyhow::Error| Refusal::Internal(format!("{e:#}"));
        // Records name the authenticated person, never a typed name.
        let by = req.actor.full_name.clone();
        let actor = req.actor.clone();
        let result = match &req.command {
            Command::Create(new) => {
                self.cfg
                    .profile(&new.profile)
                    .map_err(|e| Refusal::Bad(format!("field profile: {e}")))?;
                let s =
                    Shipment::create(new.clone(), now).map_err(|e| Refusal::Bad(e.to_string()))?;
                if !self.shipments.insert_new(&s).map_err(internal)? {
                    return Err(Refusal::Conflict(format!(
                        "shipment {} already exists",
                        s.id
                    )));
                }
                self.audit
                    .append_by(
                        now,
                        &actor,
                        "shipment.create",
                        &s.id,
                        serde_json::to_value(&s).unwrap_or_default(),
                    )
                    .map_err(internal)?;
                serde_json::to_value(&s).unwrap_or_default()
            }
            Command::Ack { alert, comment } => {
                let mut a = self
                    .alerts
                    .get(*alert)
                    .map_err(internal)?
                    .ok_or_else(|| Refusal::NotFound(format!("no alert {alert}")))?;
                refuse_if_closed(&self.shipments, &a.shipment, *alert, "acknowledged")?;
                if a.state != AlertState::Open {
                    return Err(Refusal::Conflict(format!(
                        "alert {alert} is already {:?}",
                        a.state
                    )));
                }
                if comment.trim().is_empty() {
                    return Err(Refusal::Bad(
                        "field comment: say what was done (must not be empty)".into(),
                    ));
                }
                a.state = AlertState::Acknowledged;
                a.ack = Some(crate::alert::Acknowledgement {
                    by: by.clone(),
                    comment: comment.clone(),
                    at_ms: now,
                });
                a.maybe_resolve(now);
                self.alerts.put(&a).map_err(internal)?;
                self.audit
                    .append_by(
                        now,
                        &actor,
                        "alert.ack",
                        &a.shipment,
                        serde_json::json!({ "alert": a.id, "comment": comment }),
                    )
                    .map_err(internal)?;
                self.notify(&a, "acknowledged").map_err(internal)?;
                self.refresh_alerts(&a.shipment).map_err(internal)?;
                serde_json::to_value(&a).unwrap_or_default()
            }
            cmd => {
                let mut s = self
                    .shipments
                    .get(&req.shipment)
                    .map_err(internal)?
                    .ok_or_else(|| Refusal::NotFound(format!("no shipment {:?}", req.shipment)))?;
                let before = s.clone();
                let conflict = |e: crate::shipment::ShipmentError| match e {
                    crate::shipment::ShipmentError::Transition { .. } => {
                        Refusal::Conflict(e.to_string())
                    }
                    e => Refusal::Bad(e.to_string()),
                };
                let (action, details) = match cmd {
                    Command::Depart { at_ms } => {
                        let at = at_ms.unwrap_or(now);
                        s.depart(at).map_err(conflict)?;
                        ("shipment.depart", serde_json::json!({ "departure_ms": at }))
                    }
                    Command::Eta { eta_ms } => {
                        let old = s.eta_ms;
                        s.set_eta(*eta_ms).map_err(conflict)?;
                        (
                            "shipment.eta",
                            serde_json::json!({ "eta_ms": eta_ms, "was": old }),
                        )
                    }
                    Command::Handoff {
                        to,
                        location,
                        at_ms,
                    } => {
                        let h = Handoff {
                            to: to.clone(),
                            location: location.clone(),
                            at_ms: at_ms.unwrap_or(now),
                            by: by.clone(),
                        };
                        s.handoff(h.clone()).map_err(conflict)?;
                        (
                            "shipment.handoff",
                            serde_json::to_value(&h).unwrap_or_default(),
                        )
                    }
                    Command::Arrive { at_ms } => {
                        let at = at_ms.unwrap_or(now);
                        s.arrive(at).map_err(conflict)?;
                        ("shipment.arrive", serde_json::json!({ "arrived_ms": at }))
                    }
                    Command::Close {
                        decision,
                        comment,
                        signature,
                    } => {
                        let d = Disposition {
                            decision: *decision,
                            comment: comment.clone(),
                            by: by.clone(),
                            at_ms: now,
                            signature: signature.clone(),
                        };
                        s.close(d.clone()).map_err(conflict)?;
                        (
                            "shipment.close",
                            serde_json::to_value(&d).unwrap_or_default(),
                        )
                    }
                    Command::Create(_) | Command::Ack { .. } => unreachable!("handled above"),
                };
                // Written with compare-and-swap: when another instance
                // sharing the database merged a record from a site meanwhile
                // (crate::sites), this change is merged into it (this
                // person's values win a conflict) instead of overwriting it.
                if let Some((_, merged, ())) = self
                    .shipments
                    .update(&s.id, |cur| {
                        Ok(Some(match cur {
                            Some(c) if *c != before => (crate::sites::merge(c, &s, true).0, ()),
                            _ => (s.clone(), ()),
                        }))
                    })
                    .map_err(internal)?
                {
                    s = merged;
                }
                self.audit
                    .append_by(now, &actor, action, &s.id, details)
                    .map_err(internal)?;
                serde_json::to_value(&s).unwrap_or_default()
            }
        };
        Ok(result)
    }
}

/// What ingest tells the evaluator after a commit: the frames stored, by
/// device (an empty list: something else about the device changed, such as a
/// security event). An empty map: something about every shipment changed (the
/// store went over or back under its budget).
pub type Touched = HashMap<String, Vec<coldchain_proto::FrameRef>>;

/// The evaluator's task: re-evaluates shipments whose devices sent data
/// (incrementally: the frames just stored), applies people's commands,
/// escalates, and makes each round durable before waking the outbox and
/// replying. Every 30 s every live shipment is looked at again (silence,
/// the viability window running down), at the cost of its newest data.
pub async fn run_task(
    mut ev: Evaluator,
    store: Arc<KvStore>,
    mut touched: tokio::sync::mpsc::UnboundedReceiver<Touched>,
    mut requests: tokio::sync::mpsc::Receiver<Request>,
    every: std::time::Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
    inbox: crate::sites::Inbox,
) {
    let crate::sites::Inbox { sites, mut records } = inbox;
    let mut dirty = Touched::new();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_full = 0i64;
    loop {
        tokio::select! {
            Some(devs) = touched.recv() => {
                if devs.is_empty() {
                    last_full = 0;
                } else {
                    for (d, frames) in devs {
                        dirty.entry(d).or_default().extend(frames);
                    }
                }
            }
            Some(mut req) = requests.recv() => {
                let now = crate::ingest::now_ms();
                let result = tokio::task::block_in_place(|| {
                    let r = ev.apply(&mut req, now);
                    ev.refresh_watched();
                    if r.is_ok() {
                        let id = match &req.command {
                            Command::Create(n) => Some(n.id.clone()),
                            Command::Ack { .. } => None,
                            _ => Some(req.shipment.clone()),
                        };
                        if let Some(s) = id.and_then(|id| ev.shipments.get(&id).ok().flatten()) {
                            if let Err(e) = ev.run_one(&s, now) {
                                tracing::error!(shipment = %s.id, "evaluation failed: {e:#}");
                            }
                            // To the centre, or from the centre to the sites.
                            sites.share(&s).map_err(|e| Refusal::Internal(format!("{e:#}")))?;
                        }
                        store.sync().map_err(|e| Refusal::Internal(e.to_string()))?;
                        // The instance holding the lease evaluates the new
                        // record now (a centre on PostgreSQL).
                        if let Err(e) = store.announce_records_changed() {
                            tracing::warn!("cannot tell the other instances of a changed shipment (they see it at their next full pass): {e}");
                        }
                    }
                    r
                });
                ev.outbox.wake();
                ev.forward.wake();
                let _ = req.reply.send(result);
            }
            Some(inc) = records.recv() => {
                // A shipment record from another site (crate::sites).
                let now = crate::ingest::now_ms();
                let done = tokio::task::block_in_place(|| -> anyhow::Result<()> {
                    let changed = sites.absorb(&ev.shipments, &inc, now)?;
                    if let Some(s) = &changed {
                        ev.refresh_watched();
                        if let Err(e) = ev.run_one(s, now) {
                            tracing::error!(shipment = %s.id, "evaluation failed: {e:#}");
                        }
                    }
                    store.sync()?;
                    if changed.is_some()
                        && let Err(e) = store.announce_records_changed()
                    {
                        tracing::warn!("cannot tell the other instances of a changed shipment (they see it at their next full pass): {e}");
                    }
                    Ok(())
                });
                match done {
                    Ok(()) => {
                        ev.outbox.wake();
                        ev.forward.wake();
                        if let Some((client, publish)) = &inc.ack
                            && let Err(e) = client.ack(publish).await
                        {
                            tracing::warn!("cannot queue PUBACK of a shipment record (the broker will resend): {e}");
                        }
                    }
                    // Not acknowledged: the broker sends it again.
                    Err(e) => tracing::error!(from = %inc.from, "cannot store a shipment record: {e:#}"),
                }
            }
            _ = tick.tick() => {
                let now = crate::ingest::now_ms();
                let full = now - last_full >= 30_000;
                tokio::task::block_in_place(|| {
                    let shipments = if full {
                        last_full = now;
                        ev.refresh_watched();
                        ev.watched().map(<[Shipment]>::to_vec)
                    } else if dirty.is_empty() {
                        Ok(Vec::new())
                    } else {
                        ev.watching(&dirty.keys().cloned().collect())
                    };
                    let frames = std::mem::take(&mut dirty);
                    match shipments {
                        Ok(list) => {
                            for s in list {
                                let mine: Vec<(DeviceId, coldchain_proto::FrameRef)> = s
                                    .watch
                                    .iter()
                                    .map(|w| w.device.as_str())
                                    .collect::<HashSet<_>>()
                                    .into_iter()
                                    .filter_map(|d| {
                                        Some((DeviceId::new(d).ok()?, frames.get(d)?))
                                    })
                                    .flat_map(|(d, fs)| fs.iter().map(move |f| (d.clone(), *f)))
                                    .collect();
                                // Each shipment as of when it is evaluated,
                                // not when the pass began.
                                let now = ev.clock.now_ms();
                                if let Err(e) = ev.run_frames(&s, now, &mine) {
                                    tracing::error!(shipment = %s.id, "evaluation failed: {e:#}");
                                }
                            }
                        }
                        Err(e) => {
                            tracing::error!("cannot list shipments: {e:#}");
                            // The frames just taken reach no tracker: every
                            // tracker starts again from the store.
                            ev.retain_live(&HashSet::new());
                        }
                    }
                    if let Err(e) = ev.escalate(now) {
                        tracing::error!("escalation failed: {e:#}");
                    }
                    if let Err(e) = store.sync() {
                        tracing::error!("cannot make alerts durable: {e}");
                    }
                });
                ev.outbox.wake();
                ev.forward.wake();
            }
            r = stop.changed() => if r.is_err() || *stop.borrow() { return; },
        }
    }
}
